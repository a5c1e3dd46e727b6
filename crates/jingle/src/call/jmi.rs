//! Messages: Jingle Message Initiation (propose, ringing, proceed, accept, reject, retract,
//! finish), carbons of our other devices, bounces and receipts (docs/protocol.md §5).

use super::contents::*;
use super::*;

impl Op<'_> {
    /// Handles an incoming stanza. `wall_clock` is only used to age delayed `<propose/>`s.
    pub(super) fn handle_stanza(
        &mut self,
        now: Instant,
        wall_clock: SystemTime,
        stanza: &Element,
    ) -> Handled {
        if stanza.is("message", ns::JABBER_CLIENT) {
            self.handle_message(now, wall_clock, stanza)
        } else if stanza.is("iq", ns::JABBER_CLIENT) {
            self.handle_iq(now, stanza)
        } else {
            Handled::NotMine
        }
    }

    pub(super) fn handle_message(
        &mut self,
        now: Instant,
        wall: SystemTime,
        msg: &Element,
    ) -> Handled {
        let Some(from) = msg.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return Handled::NotMine;
        };
        if msg.attr("type") == Some("error") {
            return self.handle_message_error(msg, &from);
        }
        let carbon = msg
            .children()
            .find(|c| c.ns() == ns::CARBONS && (c.name() == "sent" || c.name() == "received"));
        if let Some(carbon) = carbon {
            // Only our own server may hand us carbons; anything else is forged (RFC: XEP-0280 §11).
            if from.as_str() != self.e.config.own_jid.to_bare().as_str() {
                return Handled::NotMine;
            }
            let inner = carbon
                .get_child("forwarded", ns::FORWARD)
                .and_then(|f| f.get_child("message", ns::JABBER_CLIENT));
            let Some(inner) = inner else {
                return Handled::NotMine;
            };
            if JingleMessage::from_message(inner).is_none() {
                return Handled::NotMine;
            }
            let Some(inner_from) = inner.attr("from").and_then(|f| Jid::new(f).ok()) else {
                return Handled::Consumed;
            };
            let kind = if carbon.name() == "sent" {
                Carbon::Sent
            } else {
                Carbon::Received
            };
            return self.handle_jmi(now, wall, inner, inner_from, kind);
        }
        self.handle_jmi(now, wall, msg, from, Carbon::None)
    }

    pub(super) fn handle_jmi(
        &mut self,
        now: Instant,
        wall: SystemTime,
        msg: &Element,
        from: Jid,
        carbon: Carbon,
    ) -> Handled {
        let jmi = match JingleMessage::from_message(msg) {
            None => return self.handle_receipt(msg, &from),
            Some(Err(_)) => return Handled::Consumed, // malformed: dropped, never panics
            Some(Ok(j)) => j,
        };
        let own_bare = self.e.config.own_jid.to_bare();
        let from_own_account = from.to_bare() == own_bare;
        let from_self = from.as_str() == self.e.config.own_jid.as_str();
        let sid = jmi.id().to_owned();
        match jmi {
            JingleMessage::Propose(p) => {
                if carbon == Carbon::None && !from_own_account {
                    self.incoming_propose(now, wall, msg, from, p);
                }
            }
            JingleMessage::Ringing(_) => {
                if carbon == Carbon::None {
                    self.peer_ringing(&sid, &from);
                }
            }
            JingleMessage::Proceed(p) => match carbon {
                // Our other device proceeded (carbon of its <proceed/>): answered elsewhere.
                Carbon::Sent => self.elsewhere(&sid, CallEnd::AnsweredElsewhere),
                Carbon::Received => {}
                Carbon::None if from_own_account => {
                    if !from_self {
                        self.elsewhere(&sid, CallEnd::AnsweredElsewhere);
                    }
                }
                Carbon::None => self.incoming_proceed(&sid, from, &p),
            },
            JingleMessage::Accept(_) => {
                if from_own_account && !from_self && carbon != Carbon::Received {
                    self.elsewhere(&sid, CallEnd::AnsweredElsewhere);
                }
            }
            JingleMessage::Reject(_) => {
                if carbon == Carbon::Sent || (carbon == Carbon::None && from_own_account) {
                    if !from_self {
                        self.elsewhere(&sid, CallEnd::RejectedElsewhere);
                    }
                } else if carbon == Carbon::None {
                    let ok = self.e.calls.get(&sid).is_some_and(|c| {
                        c.role == Role::Initiator
                            && c.peer_bare == from.to_bare()
                            && matches!(c.state, State::Proposed)
                    });
                    if ok {
                        self.forget(&sid, CallEnd::Declined);
                    }
                }
            }
            JingleMessage::Retract(_) => {
                if carbon == Carbon::None {
                    let ok = self.e.calls.get(&sid).is_some_and(|c| {
                        c.role == Role::Responder
                            && c.jmi
                            && c.peer_bare == from.to_bare()
                            && matches!(c.state, State::Ringing | State::Proceeded)
                    });
                    if ok {
                        self.forget(&sid, CallEnd::Retracted);
                    }
                }
            }
            JingleMessage::Finish(f) => {
                // The session-terminate normally ended the call already; a finish alone ends it.
                if carbon == Carbon::None
                    && self.e.calls.get(&sid).is_some_and(|c| c.is_peer(&from))
                {
                    let reason = f.reason.map(|r| r.reason).unwrap_or(Reason::Success);
                    self.forget(&sid, CallEnd::PeerTerminated(reason));
                }
            }
        }
        Handled::Consumed
    }

    /// A bounced JMI message is never a request. A bounce of our `<propose/>` (or of the
    /// `<proceed/>` we sent) from the peer's account ends that call, as Conversations maps
    /// message errors back by the `jm-propose-`/`jm-proceed-` ids (docs/protocol.md §5.1).
    pub(super) fn handle_message_error(&mut self, msg: &Element, from: &Jid) -> Handled {
        let id = msg.attr("id").unwrap_or_default();
        let sid = id
            .strip_prefix("jm-propose-")
            .or_else(|| id.strip_prefix("jm-proceed-"))
            .map(str::to_owned)
            .or_else(|| {
                JingleMessage::from_message(msg)
                    .and_then(|r| r.ok())
                    .map(|j| j.id().to_owned())
            });
        let Some(sid) = sid else {
            return Handled::NotMine;
        };
        let ours = self.e.calls.get(&sid).is_some_and(|c| {
            c.peer_bare == from.to_bare()
                && matches!(c.state, State::Proposed | State::Proceeded | State::Ringing)
        });
        if ours {
            self.forget(&sid, CallEnd::PeerError);
        }
        Handled::Consumed
    }

    pub(super) fn handle_receipt(&mut self, msg: &Element, from: &Jid) -> Handled {
        let Some(received) = msg.get_child("received", ns::RECEIPTS) else {
            return Handled::NotMine;
        };
        let Some(sid) = received
            .attr("id")
            .and_then(|id| id.strip_prefix("jm-propose-"))
        else {
            return Handled::NotMine;
        };
        let sid = sid.to_owned();
        self.peer_ringing(&sid, from);
        Handled::Consumed
    }

    pub(super) fn peer_ringing(&mut self, sid: &str, from: &Jid) {
        let Some(call) = self.e.calls.get_mut(sid) else {
            return;
        };
        if call.role == Role::Initiator
            && call.state == State::Proposed
            && call.peer_bare == from.to_bare()
            && !call.peer_ringing
        {
            call.peer_ringing = true;
            self.event(Event::PeerRinging {
                sid: sid.to_owned(),
            });
        }
    }

    pub(super) fn elsewhere(&mut self, sid: &str, end: CallEnd) {
        let ringing = self
            .e
            .calls
            .get(sid)
            .is_some_and(|c| c.role == Role::Responder && c.state == State::Ringing);
        if ringing {
            self.forget(sid, end);
        }
    }

    pub(super) fn incoming_propose(
        &mut self,
        now: Instant,
        wall: SystemTime,
        msg: &Element,
        from: Jid,
        propose: Propose,
    ) {
        let Ok(from) = from.try_into_full() else {
            return;
        };
        // docs/security-tests.md line 8: a delayed (offline/MAM) proposal older than the ring
        // timeout does not ring.
        if let Some(stamp) = delay_stamp(msg) {
            let age = wall.duration_since(stamp).unwrap_or(Duration::ZERO);
            if age >= self.e.config.ring_timeout {
                return;
            }
        }
        let mut media = Vec::new();
        for d in &propose.descriptions {
            match Media::parse(&d.media) {
                Some(m) => media.push(m),
                None => return, // unknown media: ignored like Conversations
            }
        }
        let Ok(media) = normalise_media(media) else {
            return;
        };
        let sid = propose.id;
        if self.e.calls.contains_key(&sid) {
            return; // re-delivery
        }
        // docs/protocol.md §5.2 step 8: simultaneous proposals between the same two accounts.
        let ours = self
            .e
            .calls
            .iter()
            .find(|(_, c)| {
                c.role == Role::Initiator
                    && c.state == State::Proposed
                    && c.peer_bare == from.to_bare()
            })
            .map(|(s, _)| s.clone());
        if let Some(our_sid) = ours {
            if proposal_wins(
                &our_sid,
                self.e.config.own_jid.as_str(),
                &sid,
                from.as_str(),
            ) {
                return; // the peer retracts theirs
            }
            let peer_bare = from.to_bare();
            self.send_jmi(
                Jid::from(peer_bare),
                JingleMessage::Retract(Retract {
                    id: our_sid.clone(),
                    reason: None,
                }),
                None,
                false,
            );
            self.forget(&our_sid, CallEnd::Superseded(sid.clone()));
        }
        if self.e.calls.len() >= MAX_CALLS {
            self.send_jmi(
                Jid::from(from),
                JingleMessage::Reject(Reject {
                    id: sid,
                    reason: Some(reason_element(Reason::Busy, None)),
                }),
                None,
                false,
            );
            return;
        }
        let mut call = Call::new(
            Role::Responder,
            true,
            from.to_bare(),
            media.clone(),
            State::Ringing,
        );
        call.peer = Some(from.clone());
        call.deadline = Some(now + self.e.config.ring_timeout);
        self.e.calls.insert(sid.clone(), call);
        if self.e.config.send_ringing {
            self.send_jmi(
                Jid::from(from.clone()),
                JingleMessage::Ringing(Ringing { id: sid.clone() }),
                None,
                false,
            );
            if let (Some(_), Some(id)) = (msg.get_child("request", ns::RECEIPTS), msg.attr("id")) {
                let mut m = message_to(&Jid::from(from.clone()), &self.fresh_id());
                m.append_child(xml::with_attrs("received", ns::RECEIPTS, &[("id", id)]));
                m.append_child(xml::bare("store", ns::HINTS));
                self.send(m);
            }
        }
        self.event(Event::IncomingCall {
            sid,
            from,
            media,
            jmi: true,
        });
    }

    pub(super) fn incoming_proceed(&mut self, sid: &str, from: Jid, proceed: &Proceed) {
        let Ok(from) = from.try_into_full() else {
            return;
        };
        // The proceed/retract race: we retracted, the callee proceeded meanwhile.
        if !self.e.calls.contains_key(sid)
            && self
                .e
                .recent_retracts
                .iter()
                .any(|(s, b)| s == sid && *b == from.to_bare())
        {
            self.send_jmi(
                Jid::from(from),
                JingleMessage::Retract(Retract {
                    id: sid.to_owned(),
                    reason: None,
                }),
                None,
                false,
            );
            return;
        }
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        // docs/security-tests.md line 9: only the callee's account may proceed, and only once.
        if call.role != Role::Initiator || call.state != State::Proposed {
            return;
        }
        if call.peer_bare != from.to_bare() {
            return;
        }
        // docs/protocol.md §2.5: use the device only if OMEMO is on here (Conversations uses it
        // only when OMEMO is the chat's encryption).
        let device = match proceed.device() {
            DeviceClaim::Valid(d) if self.crypto.own_device_id().is_some() => Some(d),
            _ => None,
        };
        let media = call.media.clone();
        let peer_bare = call.peer_bare.clone();
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.peer = Some(from);
            call.proceed_device = device;
            call.state = State::AwaitingLocalOffer;
            call.deadline = None;
        }
        if device.is_none() {
            self.report_downgrade(sid, Downgrade::NoDevice, None);
        }
        if self.requires_verified(&peer_bare) && device.is_none() {
            // docs/security-tests.md line 1: refuse a proceed that offers no verification.
            self.abort(sid, VerificationError::NotVerifiable.into());
            return;
        }
        self.event(Event::Proceeding {
            sid: sid.to_owned(),
            device,
        });
        self.event(Event::MediaNeeded {
            sid: sid.to_owned(),
            role: Role::Initiator,
            media,
        });
    }
}
