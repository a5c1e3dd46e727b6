//! How calls end (one place: [`Op::forget`]) and the shield that decides when media may play.

use super::contents::*;
use super::*;

impl Op<'_> {
    /// Ends a call because of `error`: the peer receives `error.reason()`.
    pub(super) fn abort(&mut self, sid: &str, error: CallError) {
        let reason = error.to_reason_element();
        self.end(sid, Some(reason), CallEnd::Failed(error));
    }

    /// Tells the peer (in the way that fits the call's stage) and forgets the call.
    pub(super) fn end(&mut self, sid: &str, reason: Option<ReasonElement>, end: CallEnd) {
        let Some(call) = self.e.calls.get(sid).cloned() else {
            return;
        };
        let failure = matches!(end, CallEnd::Failed(_));
        match call.state {
            State::Proposed => {
                // Conversations' retract carries no reason unless something failed.
                let reason = if failure { reason } else { None };
                self.send_jmi(
                    Jid::from(call.peer_bare.clone()),
                    JingleMessage::Retract(Retract {
                        id: sid.to_owned(),
                        reason,
                    }),
                    None,
                    false,
                );
                if self.e.recent_retracts.len() >= MAX_RECENT_RETRACTS {
                    self.e.recent_retracts.pop_front();
                }
                self.e
                    .recent_retracts
                    .push_back((sid.to_owned(), call.peer_bare.clone()));
            }
            State::AwaitingLocalOffer => {
                // Proceed received but no session yet: a retract to the proceeding device.
                if let Some(peer) = call.peer.clone() {
                    self.send_jmi(
                        Jid::from(peer),
                        JingleMessage::Retract(Retract {
                            id: sid.to_owned(),
                            reason,
                        }),
                        None,
                        false,
                    );
                }
            }
            State::Ringing | State::Proceeded => {
                if let Some(peer) = call.peer.clone() {
                    let reason = if failure { reason } else { None };
                    self.send_jmi(
                        Jid::from(peer),
                        JingleMessage::Reject(Reject {
                            id: sid.to_owned(),
                            reason,
                        }),
                        None,
                        false,
                    );
                }
            }
            State::Initiated
            | State::IncomingSession
            | State::AwaitingLocalAnswer
            | State::Active => {
                if let Some(peer) = call.peer.clone() {
                    let reason = reason.unwrap_or_else(|| reason_element(Reason::Decline, None));
                    let mut j = JingleEnvelope::new(Action::SessionTerminate, sid);
                    j.reason = Some(reason.clone());
                    let mut iq = iq_set(&Jid::from(peer.clone()), &self.fresh_id());
                    iq.append_child(j.to_element());
                    self.send(iq);
                    if call.jmi {
                        // docs/protocol.md §5.1/§7.8: finish after every terminate
                        // (Conversations ≥ 2.14).
                        let mut finish =
                            xml::with_attrs("finish", ns::JINGLE_MESSAGE, &[("id", sid)]);
                        finish.append_child(Element::from(reason));
                        let mut m = message_to(&Jid::from(peer), &self.fresh_id());
                        m.append_child(finish);
                        m.append_child(xml::bare("store", ns::HINTS));
                        self.send(m);
                    }
                }
            }
        }
        self.forget(sid, end);
    }

    /// The one place a call ends: it is forgotten and [`Event::Ended`] says how. What the peer
    /// is told before, if anything, is [`Op::end`]'s; a call ended by the peer or elsewhere goes
    /// here directly. Nothing happens for a call already gone.
    pub(super) fn forget(&mut self, sid: &str, end: CallEnd) {
        if self.e.calls.remove(sid).is_some() {
            self.event(Event::Ended {
                sid: sid.to_owned(),
                end,
            });
        }
    }

    /// Recomputes the shield; reports changes; enforces `require_verified`; allows media once
    /// DTLS is proven and both directions are known.
    pub(super) fn evaluate_shield(&mut self, sid: &str) {
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        if !call.dtls_proven || call.answer.is_none() {
            return;
        }
        let session = call.encrypted_session();
        let shield = verification::shield_for(
            &*self.crypto,
            &call.peer_bare,
            call.offer.map(Sealed::mode),
            call.answer.map(Sealed::mode),
            session.as_ref().map(|(_, identity)| identity),
            call.dtls_proven && call.jmi,
        );
        let device = session.map(|(device, _)| device);
        let changed = call.shield != Some(shield);
        let first = !call.media_allowed;
        if self.requires_verified(&call.peer_bare) && shield != Shield::Verified {
            self.abort(sid, VerificationError::NotVerifiable.into());
            return;
        }
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.shield = Some(shield);
            call.media_allowed = true;
        }
        if changed {
            self.event(Event::Shield {
                sid: sid.to_owned(),
                shield,
                device,
            });
        }
        if first {
            self.event(Event::PlayMedia {
                sid: sid.to_owned(),
            });
        }
    }

    /// `require_verified` for everyone, or the contact's own policy.
    pub(super) fn requires_verified(&self, peer: &BareJid) -> bool {
        self.e.config.require_verified || self.crypto.contact_policy(peer).require_verified
    }

    /// Reports a [`Event::Downgrade`] once per call, when the contact had been verified and our
    /// own OMEMO is on (a call made with OMEMO switched off here is the user's choice).
    pub(super) fn report_downgrade(&mut self, sid: &str, kind: Downgrade, device: Option<u32>) {
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        if call.downgrade_reported
            || self.crypto.own_device_id().is_none()
            || !self.crypto.contact_policy(&call.peer_bare).expect_verified
        {
            return;
        }
        let peer = call.peer_bare.clone();
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.downgrade_reported = true;
        }
        self.event(Event::Downgrade {
            sid: sid.to_owned(),
            peer,
            kind,
            device,
        });
    }
}
