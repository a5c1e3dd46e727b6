//! Jingle IQs: session-initiate, session-accept, transport-info, session-terminate and the
//! answers to our own IQs (docs/protocol.md §7, §8).

use super::contents::*;
use super::*;

impl Op<'_> {
    pub(super) fn handle_iq(&mut self, now: Instant, iq: &Element) -> Handled {
        let Some(from) = iq.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return Handled::NotMine;
        };
        let id = iq.attr("id").unwrap_or_default().to_owned();
        match iq.attr("type") {
            Some("set") => {
                let Some(jingle) = iq.get_child("jingle", ns::JINGLE) else {
                    return Handled::NotMine;
                };
                self.handle_jingle(now, from, &id, jingle);
                Handled::Consumed
            }
            Some(t @ ("result" | "error")) => {
                let Some((sid, action)) = self.e.pending_iqs.get(&id).cloned() else {
                    return Handled::NotMine;
                };
                let is_peer = self.e.calls.get(&sid).is_some_and(|c| c.is_peer(&from));
                if !is_peer && self.e.calls.contains_key(&sid) {
                    return Handled::Consumed; // someone else answering our IQ: ignored
                }
                self.e.pending_iqs.remove(&id);
                if t == "error" && matches!(action, Action::SessionInitiate | Action::SessionAccept)
                {
                    self.forget(&sid, CallEnd::PeerError);
                } else if t == "error" && action == Action::TransportInfo {
                    let tie_break = iq
                        .get_child("error", ns::JABBER_CLIENT)
                        .is_some_and(|e| e.get_child("tie-break", ns::JINGLE_ERRORS).is_some());
                    self.transport_info_refused(&sid, &id, tie_break);
                }
                Handled::Consumed
            }
            _ => Handled::NotMine,
        }
    }

    pub(super) fn handle_jingle(&mut self, now: Instant, from: Jid, id: &str, el: &Element) {
        let sid = el.attr("sid").unwrap_or_default().to_owned();
        let envelope = match JingleEnvelope::parse(el) {
            Ok(j) => j,
            Err(e) => {
                self.send_iq_error(&from, id, "modify", "bad-request", None);
                // A malformed offer/answer from the real peer ends the call it belongs to (we
                // cannot go on without it); other malformed actions only get the IQ error.
                let is_peer = self.e.calls.get(&sid).is_some_and(|c| c.is_peer(&from));
                let vital = matches!(
                    el.attr("action"),
                    Some("session-initiate" | "session-accept")
                );
                if is_peer && vital {
                    self.abort(&sid, CallError::InvalidJingle(e));
                }
                return;
            }
        };
        let Ok(from_full) = from.clone().try_into_full() else {
            self.send_iq_error(&from, id, "cancel", "bad-request", None);
            return;
        };
        let Some(call) = self.e.calls.get(&sid) else {
            if envelope.action == Action::SessionInitiate {
                self.incoming_direct(now, from_full, id, envelope);
            } else {
                self.send_iq_error(
                    &from,
                    id,
                    "cancel",
                    "item-not-found",
                    Some("unknown-session"),
                );
            }
            return;
        };
        // docs/security-tests.md line 9: Jingle from anyone but the session's peer never touches it.
        if !call.is_peer(&from) {
            self.send_iq_error(
                &from,
                id,
                "cancel",
                "item-not-found",
                Some("unknown-session"),
            );
            return;
        }
        let (role, state) = (call.role, call.state);
        match (envelope.action.clone(), role, state) {
            (Action::SessionInitiate, Role::Responder, State::Proceeded) => {
                self.send_iq_result(&from, id);
                self.pre_approved_initiate(&sid, envelope);
            }
            (Action::SessionAccept, Role::Initiator, State::Initiated) => {
                self.send_iq_result(&from, id);
                self.session_accept(&sid, envelope);
            }
            (Action::TransportInfo, _, s) if s.has_session() => {
                self.transport_info(&from, id, &sid, envelope);
            }
            (Action::SessionTerminate, _, _) => {
                self.send_iq_result(&from, id);
                let reason = envelope.reason.map(|r| r.reason).unwrap_or(Reason::Success);
                self.forget(&sid, CallEnd::PeerTerminated(reason));
            }
            (Action::SessionInfo, _, s) if s.has_session() => self.send_iq_result(&from, id),
            (Action::ContentAdd, _, State::Active) => {
                self.send_iq_result(&from, id);
                self.content_add(&sid, envelope);
            }
            (Action::ContentAccept, _, State::Active) if call.outgoing_add.is_some() => {
                self.send_iq_result(&from, id);
                self.content_accept(&sid, envelope);
            }
            (Action::ContentReject, _, State::Active) if call.outgoing_add.is_some() => {
                self.send_iq_result(&from, id);
                if let Some(call) = self.e.calls.get_mut(&sid) {
                    call.outgoing_add = None;
                }
                self.event(Event::ContentRejected { sid });
            }
            (Action::TransportReplace, _, _) => {
                // docs/security-tests.md line 4: a transport (and its fingerprint) is never replaced.
                self.send_iq_error(&from, id, "cancel", "feature-not-implemented", None);
            }
            _ => {
                self.send_iq_error(
                    &from,
                    id,
                    "wait",
                    "unexpected-request",
                    Some("out-of-order"),
                );
            }
        }
    }

    pub(super) fn incoming_direct(
        &mut self,
        now: Instant,
        from: FullJid,
        id: &str,
        j: JingleEnvelope,
    ) {
        let from_jid = Jid::from(from.clone());
        if from.to_bare() == self.e.config.own_jid.to_bare() || self.e.calls.len() >= MAX_CALLS {
            self.send_iq_error(&from_jid, id, "cancel", "not-acceptable", None);
            return;
        }
        self.send_iq_result(&from_jid, id);
        let sid = j.sid.clone();
        let media = match content_media(&j.contents) {
            Ok(m) => m,
            Err(e) => {
                self.terminate_unknown(&from, &sid, &e);
                return;
            }
        };
        let mut call = Call::new(
            Role::Responder,
            false,
            from.to_bare(),
            media.clone(),
            State::IncomingSession,
        );
        call.peer = Some(from.clone());
        call.deadline = Some(now + self.e.config.ring_timeout);
        self.e.calls.insert(sid.clone(), call);
        if let Err(e) = self.read_offer(&sid, &j) {
            self.abort(&sid, e);
            return;
        }
        self.event(Event::IncomingCall {
            sid,
            from,
            media,
            jmi: false,
        });
    }

    /// Terminates a session we never tracked (a broken direct initiate).
    pub(super) fn terminate_unknown(&mut self, to: &FullJid, sid: &str, e: &CallError) {
        let mut j = JingleEnvelope::new(Action::SessionTerminate, sid);
        j.reason = Some(e.to_reason_element());
        let mut iq = iq_set(&Jid::from(to.clone()), &self.fresh_id());
        iq.append_child(j.to_element());
        self.send(iq);
    }

    pub(super) fn pre_approved_initiate(&mut self, sid: &str, j: JingleEnvelope) {
        let Some(call) = self.e.calls.get_mut(sid) else {
            return;
        };
        // From here on a session exists: failures end it with session-terminate.
        call.state = State::AwaitingLocalAnswer;
        call.deadline = None;
        let proposed = call.media.clone();
        // docs/protocol.md §5.2 step 7: pre-approval only covers exactly the proposed media.
        let media = match content_media(&j.contents) {
            Ok(m) => m,
            Err(e) => {
                self.abort(sid, e);
                return;
            }
        };
        if media != proposed {
            self.abort(
                sid,
                CallError::MediaMismatch {
                    proposed: proposed.iter().map(|m| m.as_str().to_owned()).collect(),
                    initiated: media.iter().map(|m| m.as_str().to_owned()).collect(),
                },
            );
            return;
        }
        if let Err(e) = self.read_offer(sid, &j) {
            self.abort(sid, e);
            return;
        }
        let remote = self
            .e
            .calls
            .get(sid)
            .map(|c| c.remote.clone())
            .unwrap_or_default();
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.state = State::AwaitingLocalAnswer;
            call.deadline = None;
        }
        self.event(Event::RemoteMedia {
            sid: sid.to_owned(),
            contents: remote,
        });
        self.event(Event::MediaNeeded {
            sid: sid.to_owned(),
            role: Role::Responder,
            media,
        });
    }

    /// Callee: applies the draft to an offer and records the result in the call.
    pub(super) fn read_offer(&mut self, sid: &str, j: &JingleEnvelope) -> Result<(), CallError> {
        let Some(call) = self.e.calls.get(sid) else {
            return Ok(());
        };
        let peer_bare = call.peer_bare.clone();
        let jmi = call.jmi;
        let remote = verification::read_remote(
            &mut *self.crypto,
            &peer_bare,
            &j.contents,
            Expectation::Offer,
        )?;
        let downgrade = match (remote.mode, remote.sender, jmi) {
            (Mode::Plain, _, _) => Some((Downgrade::PlainFingerprints, None)),
            // Encrypted without JMI: no device was ever agreed on, it can never be verified.
            (Mode::Encrypted, sender, false) => Some((Downgrade::NoDevice, sender.map(|s| s.0))),
            (Mode::Encrypted, Some((device, id)), true)
                if self.crypto.trust(&peer_bare, &id) != Trust::Verified =>
            {
                Some((Downgrade::UnverifiedDevice, Some(device)))
            }
            (Mode::Encrypted, _, true) => None,
        };
        if let Some((kind, device)) = downgrade {
            self.report_downgrade(sid, kind, device);
        }
        if self.requires_verified(&peer_bare) {
            // docs/security-tests.md line 2: a plain offer, a direct call, or an identity that is not
            // verified can never become Verified.
            let verified_identity = remote.sender.is_some_and(|(_, id)| {
                self.crypto.trust(&peer_bare, &id) == verification::Trust::Verified
            });
            if remote.mode == Mode::Plain || !jmi || !verified_identity {
                return Err(VerificationError::NotVerifiable.into());
            }
        }
        let contents = remote_contents(&j.contents, &remote);
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.offer = Some(Sealed::read(&remote));
            call.offer_had_group = j.group.is_some();
            for c in &contents {
                call.candidates_seen
                    .insert(c.name.clone(), c.candidates.len());
            }
            call.remote = contents;
        }
        Ok(())
    }

    pub(super) fn session_accept(&mut self, sid: &str, j: JingleEnvelope) {
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        let peer_bare = call.peer_bare.clone();
        let expect = match call.offer {
            Some(Sealed::Encrypted((device, identity))) => {
                Expectation::EncryptedAnswer { device, identity }
            }
            _ => Expectation::PlainAnswer,
        };
        // The answer must cover exactly our contents.
        let mut names: Vec<&str> = j.contents.iter().map(|c| c.name.as_str()).collect();
        let mut ours: Vec<&str> = call.local.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        ours.sort_unstable();
        if names != ours {
            self.abort(sid, CallError::UnsupportedApplication);
            return;
        }
        let remote =
            match verification::read_remote(&mut *self.crypto, &peer_bare, &j.contents, expect) {
                Ok(r) => r,
                Err(e) => {
                    self.abort(sid, e.into());
                    return;
                }
            };
        let contents = remote_contents(&j.contents, &remote);
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.answer = Some(Sealed::read(&remote));
            call.state = State::Active;
            call.deadline = None;
            for c in &contents {
                call.candidates_seen
                    .insert(c.name.clone(), c.candidates.len());
            }
            call.remote = contents.clone();
        }
        self.event(Event::RemoteMedia {
            sid: sid.to_owned(),
            contents,
        });
    }

    pub(super) fn transport_info(&mut self, from: &Jid, id: &str, sid: &str, j: JingleEnvelope) {
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        // Validate everything before using anything: fingerprints never travel here
        // (docs/protocol.md §2.4), so one is an attempt to change it (docs/security-tests.md line 4),
        // also in an ICE restart.
        if j.contents.iter().any(|c| {
            c.transport
                .as_ref()
                .is_some_and(|t| !t.fingerprints.is_empty())
        }) {
            self.send_iq_error(from, id, "cancel", "not-acceptable", None);
            return;
        }
        // New credentials in a running call: an ICE restart (restart.rs).
        let changed = if call.state == State::Active {
            restart::changed_credentials(call, &j)
        } else {
            Vec::new()
        };
        let restart = (!changed.is_empty()).then(|| self.incoming_restart(call, &j));
        match restart {
            Some(restart::Incoming::TieBreak) => {
                self.send_iq_error(from, id, "cancel", "conflict", Some("tie-break"));
                return;
            }
            Some(restart::Incoming::TooMany) => {
                self.send_iq_error(from, id, "wait", "resource-constraint", None);
                return;
            }
            _ => {}
        }
        for c in &j.contents {
            let Some(t) = &c.transport else {
                continue;
            };
            let restarted = changed.iter().any(|r| r.content == c.name);
            let seen = match call.candidates_seen.get(&c.name).copied() {
                Some(_) if restarted => Some(0),
                other => other,
            };
            match seen {
                None => {
                    self.send_iq_error(from, id, "cancel", "item-not-found", None);
                    return;
                }
                Some(n) if n + t.candidates.len() > MAX_CANDIDATES_PER_CONTENT => {
                    self.send_iq_error(from, id, "wait", "resource-constraint", None);
                    return;
                }
                Some(_) => {}
            }
        }
        self.send_iq_result(from, id);
        if let Some(kind) = restart {
            let offer = matches!(kind, restart::Incoming::Offer);
            self.apply_remote_restart(sid, changed, offer);
        }
        let mut events = Vec::new();
        let Some(call) = self.e.calls.get_mut(sid) else {
            return;
        };
        for c in j.contents {
            let Some(t) = c.transport else {
                continue;
            };
            if let Some(n) = call.candidates_seen.get_mut(&c.name) {
                *n += t.candidates.len();
            }
            if !t.candidates.is_empty() {
                events.push(Event::RemoteCandidates {
                    sid: sid.to_owned(),
                    content: c.name,
                    candidates: t.candidates,
                });
            }
        }
        for e in events {
            self.event(e);
        }
    }
}
