//! What the user does (call, accept, reject, hang up, add media) and the timers and trust
//! changes that act on running calls.

use super::contents::*;
use super::*;

impl Op<'_> {
    /// Handles a user action.
    pub(super) fn handle_user(&mut self, now: Instant, action: UserAction) -> Result<(), ApiError> {
        match action {
            UserAction::Call { peer, sid, media } => self.user_call(now, peer, sid, media),
            UserAction::CallDirect { peer, sid, media } => {
                if self.requires_verified(&peer.to_bare()) {
                    return Err(ApiError::NotVerifiable);
                }
                let media = normalise_media(media)?;
                self.check_new_sid(&sid)?;
                let mut call = Call::new(
                    Role::Initiator,
                    false,
                    peer.to_bare(),
                    media.clone(),
                    State::AwaitingLocalOffer,
                );
                call.peer = Some(peer);
                self.e.calls.insert(sid.clone(), call);
                self.event(Event::MediaNeeded {
                    sid,
                    role: Role::Initiator,
                    media,
                });
                Ok(())
            }
            UserAction::Accept { sid } => self.user_accept(now, sid),
            UserAction::Reject { sid } => {
                let call = self.e.calls.get(&sid).ok_or(ApiError::UnknownSession)?;
                if !matches!(call.state, State::Ringing | State::IncomingSession) {
                    return Err(ApiError::WrongState);
                }
                self.end(&sid, None, CallEnd::LocalReject);
                Ok(())
            }
            UserAction::RejectContent { sid } => {
                let call = self.e.calls.get_mut(&sid).ok_or(ApiError::UnknownSession)?;
                let (Some(contents), Some(peer)) = (call.incoming_add.take(), call.peer.clone())
                else {
                    return Err(ApiError::WrongState);
                };
                call.incoming_add_remote.clear();
                let mut reject = JingleEnvelope::new(Action::ContentReject, &sid);
                reject.contents = strip(contents);
                reject.reason = Some(reason_element(Reason::Decline, None));
                self.send_iq_set(peer, &sid, reject);
                Ok(())
            }
            UserAction::HangUp { sid } => {
                let call = self.e.calls.get(&sid).ok_or(ApiError::UnknownSession)?;
                let reason = if call.state == State::Active {
                    Reason::Success
                } else {
                    Reason::Cancel
                };
                self.end(
                    &sid,
                    Some(reason_element(reason, None)),
                    CallEnd::LocalHangup,
                );
                Ok(())
            }
        }
    }

    pub(super) fn check_new_sid(&self, sid: &str) -> Result<(), ApiError> {
        if sid.is_empty() || self.e.calls.contains_key(sid) {
            return Err(ApiError::SessionExists);
        }
        if self.e.calls.len() >= MAX_CALLS {
            return Err(ApiError::TooManyCalls);
        }
        Ok(())
    }

    pub(super) fn user_call(
        &mut self,
        now: Instant,
        peer: BareJid,
        sid: String,
        media: Vec<Media>,
    ) -> Result<(), ApiError> {
        // Without OMEMO we can never encrypt the offer.
        if self.requires_verified(&peer) && self.crypto.own_device_id().is_none() {
            return Err(ApiError::NotVerifiable);
        }
        let media = normalise_media(media)?;
        self.check_new_sid(&sid)?;
        let mut call = Call::new(
            Role::Initiator,
            true,
            peer.clone(),
            media.clone(),
            State::Proposed,
        );
        call.deadline = Some(now + self.e.config.ring_timeout);
        self.e.calls.insert(sid.clone(), call);
        // docs/protocol.md §5.1/§7.1: chat, bare JID, id jm-propose-SID, receipt request,
        // store hint.
        let propose = Propose {
            id: sid.clone(),
            descriptions: media
                .iter()
                .map(|m| RtpDescription::new(m.as_str().to_owned()))
                .collect(),
        };
        self.send_jmi(
            Jid::from(peer),
            JingleMessage::Propose(propose),
            Some(format!("jm-propose-{sid}")),
            true,
        );
        Ok(())
    }

    pub(super) fn user_accept(&mut self, now: Instant, sid: String) -> Result<(), ApiError> {
        let call = self.e.calls.get(&sid).ok_or(ApiError::UnknownSession)?;
        match call.state {
            State::Ringing => {
                let own_device = self.crypto.own_device_id();
                if self.requires_verified(&call.peer_bare) && own_device.is_none() {
                    // Refuse to proceed: without a device nobody can encrypt to us.
                    self.abort(
                        &sid,
                        CallError::Verification(VerificationError::NotVerifiable),
                    );
                    return Err(ApiError::NotVerifiable);
                }
                let Some(peer) = call.peer.clone() else {
                    return Err(ApiError::WrongState);
                };
                // docs/protocol.md §5.2 step 2: accept to our own bare JID first (other devices
                // stop ringing), then proceed with <device/> to the caller's full JID.
                let own_bare = self.e.config.own_jid.to_bare();
                self.send_jmi(
                    Jid::from(own_bare),
                    JingleMessage::Accept(Accept { id: sid.clone() }),
                    None,
                    false,
                );
                self.send_jmi(
                    Jid::from(peer),
                    JingleMessage::Proceed(Proceed::new(sid.clone(), own_device)),
                    Some(format!("jm-proceed-{sid}")),
                    false,
                );
                if let Some(call) = self.e.calls.get_mut(&sid) {
                    call.state = State::Proceeded;
                    call.deadline = Some(now + self.e.config.ring_timeout);
                }
                Ok(())
            }
            State::IncomingSession => {
                let media = call.media.clone();
                let remote = call.remote.clone();
                if let Some(call) = self.e.calls.get_mut(&sid) {
                    call.state = State::AwaitingLocalAnswer;
                    call.deadline = None;
                }
                self.event(Event::RemoteMedia {
                    sid: sid.clone(),
                    contents: remote,
                });
                self.event(Event::MediaNeeded {
                    sid,
                    role: Role::Responder,
                    media,
                });
                Ok(())
            }
            _ => Err(ApiError::WrongState),
        }
    }

    /// Re-evaluates every running call's shield after the client changed a trust level
    /// (docs/security-tests.md line 7).
    pub(super) fn handle_trust_change(&mut self, _now: Instant) {
        let sids: Vec<String> = self.e.calls.keys().cloned().collect();
        for sid in sids {
            self.evaluate_shield(&sid);
        }
    }
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<String> = self
            .e
            .calls
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(s, _)| s.clone())
            .collect();
        for sid in due {
            let Some(call) = self.e.calls.get(&sid) else {
                continue;
            };
            match call.state {
                // A ringing proposal just stops ringing here; the caller times out itself.
                State::Ringing | State::Proceeded => {
                    self.forget(&sid, CallEnd::Timeout);
                }
                _ => self.end(
                    &sid,
                    Some(reason_element(Reason::Timeout, None)),
                    CallEnd::Timeout,
                ),
            }
        }
    }
}
