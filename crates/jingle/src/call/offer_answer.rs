//! Media reports: our contents become the offer or the answer, our fingerprints encrypted to
//! the session's one device or sent plain (docs/protocol.md §3.2, §10).

use super::contents::*;
use super::*;

impl Op<'_> {
    /// Handles a media report for call `sid`.
    pub(super) fn handle_media(
        &mut self,
        now: Instant,
        sid: &str,
        event: MediaEvent,
    ) -> Result<(), ApiError> {
        let call = self.e.calls.get(sid).ok_or(ApiError::UnknownSession)?;
        match event {
            MediaEvent::LocalContents(contents) if call.state != State::Active => {
                validate_local(&contents, call.role)?;
                match (call.role, call.state) {
                    (Role::Initiator, State::AwaitingLocalOffer) => {
                        self.send_offer(now, sid, contents);
                        Ok(())
                    }
                    (Role::Responder, State::AwaitingLocalAnswer) => {
                        self.send_answer(sid, contents);
                        Ok(())
                    }
                    _ => Err(ApiError::WrongState),
                }
            }
            MediaEvent::LocalContents(contents) if call.incoming_add.is_some() => {
                validate_added(call, &contents)?;
                self.send_content_accept(sid, contents);
                Ok(())
            }
            MediaEvent::LocalContents(_) => Err(ApiError::WrongState),
            MediaEvent::AddContents(contents) => {
                if call.state != State::Active || call.outgoing_add.is_some() {
                    return Err(ApiError::WrongState);
                }
                validate_added(call, &contents)?;
                self.send_content_add(sid, contents);
                Ok(())
            }
            MediaEvent::IceRestarted { credentials } => self.local_restart(sid, credentials),
            MediaEvent::LocalCandidate { content, candidate } => {
                if !matches!(call.state, State::Initiated | State::Active) {
                    return Err(ApiError::WrongState);
                }
                let Some(local) = call.local.iter().find(|l| l.name == content) else {
                    return Err(ApiError::InvalidLocal("unknown content"));
                };
                let Some(peer) = call.peer.clone() else {
                    return Err(ApiError::WrongState);
                };
                // docs/protocol.md §2.4: transport-info never carries a fingerprint.
                let transport = IceUdpTransport {
                    ufrag: Some(local.ufrag.clone()),
                    pwd: Some(local.pwd.clone()),
                    candidates: vec![candidate],
                    ..Default::default()
                };
                let mut j = JingleEnvelope::new(Action::TransportInfo, sid);
                j.contents.push(RtpContent {
                    creator: Creator::Initiator,
                    name: content,
                    senders: Senders::Both,
                    description: None,
                    transport: Some(transport),
                });
                self.send_iq_set(peer, sid, j);
                Ok(())
            }
            MediaEvent::PeerDigest { hash, value } => {
                if call.remote.is_empty() {
                    return Err(ApiError::WrongState);
                }
                // One DTLS association (BUNDLE): its certificate must match every content's
                // expected fingerprint, compared by value (docs/security-tests.md lines 4, 6).
                let matches = call
                    .remote
                    .iter()
                    .all(|r| r.fingerprint.hash == hash && r.fingerprint.value == value);
                if !matches {
                    self.abort(sid, VerificationError::DigestMismatch.into());
                    return Ok(());
                }
                if let Some(call) = self.e.calls.get_mut(sid) {
                    call.dtls_proven = true;
                }
                self.evaluate_shield(sid);
                Ok(())
            }
            MediaEvent::Connected => {
                if call.remote.is_empty() {
                    return Err(ApiError::WrongState);
                }
                if !call.dtls_proven {
                    self.abort(sid, VerificationError::DigestMissing.into());
                }
                Ok(())
            }
            MediaEvent::Failed(why) => {
                self.abort(sid, CallError::MediaFailed(why));
                Ok(())
            }
        }
    }

    pub(super) fn send_offer(&mut self, now: Instant, sid: &str, local: Vec<LocalContent>) {
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        let (peer, peer_bare, target) = (
            call.peer.clone(),
            call.peer_bare.clone(),
            call.proceed_device,
        );
        let Some(peer) = peer else {
            self.abort(
                sid,
                CallError::Internal("offer without the peer's full JID"),
            );
            return;
        };
        let plain: Vec<Fingerprint> = local.iter().map(|l| l.fingerprint.clone()).collect();
        // docs/protocol.md §10 caller 3: encrypt every content to the proceed device, or none.
        let mut encrypted = None;
        let mut downgrade = None;
        let mut failure = None;
        if let Some(device) = target {
            // Never to a device whose key the user distrusted: then the fingerprints go plain.
            let known = self.crypto.session_identity(&peer_bare, device);
            if known.is_some_and(|id| self.crypto.trust(&peer_bare, &id) == Trust::Untrusted) {
                downgrade = Some(Downgrade::UnverifiedDevice);
            } else {
                match verification::encrypt_local(&mut *self.crypto, &peer_bare, device, &plain) {
                    Ok((fps, identity)) => match self.crypto.trust(&peer_bare, &identity) {
                        // Learnt only now (no session before): the ciphertext is not sent.
                        Trust::Untrusted => downgrade = Some(Downgrade::UnverifiedDevice),
                        trust => {
                            if trust != Trust::Verified {
                                downgrade = Some(Downgrade::UnverifiedDevice);
                            }
                            encrypted = Some((fps, identity));
                        }
                    },
                    Err(e) => {
                        // The draft's silent fallback to plain (docs/protocol.md §3.6), reported
                        // as a downgrade, and never taken under require-verified.
                        downgrade = Some(Downgrade::OmemoFailed);
                        failure = Some(e);
                    }
                }
            }
        }
        if let Some(kind) = downgrade {
            self.report_downgrade(sid, kind, target);
        }
        if self.requires_verified(&peer_bare) && (encrypted.is_none() || downgrade.is_some()) {
            let error = match failure {
                Some(e) => VerificationError::Encryption(e),
                None => VerificationError::NotVerifiable,
            };
            self.abort(sid, error.into());
            return;
        }
        let sealed = match (&encrypted, target) {
            (Some((_, identity)), Some(device)) => Sealed::Encrypted((device, *identity)),
            _ => Sealed::Plain,
        };
        let mut j = JingleEnvelope::new(Action::SessionInitiate, sid);
        j.initiator = Some(self.e.config.own_jid.to_string());
        j.contents = build_contents(&local, encrypted.as_ref().map(|(f, _)| f.as_slice()));
        j.group = Some(bundle(&local));
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.offer = Some(sealed);
            call.local = local;
            call.state = State::Initiated;
            call.deadline = Some(now + self.e.config.ring_timeout);
        }
        self.send_iq_set(peer, sid, j);
    }

    pub(super) fn send_answer(&mut self, sid: &str, local: Vec<LocalContent>) {
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        let (peer, peer_bare, offer) = (call.peer.clone(), call.peer_bare.clone(), call.offer);
        let Some(peer) = peer else {
            self.abort(
                sid,
                CallError::Internal("answer without the peer's full JID"),
            );
            return;
        };
        let plain: Vec<Fingerprint> = local.iter().map(|l| l.fingerprint.clone()).collect();
        let mut encrypted = None;
        // A caller whose key the user distrusted gets no encrypted fingerprint of ours: the
        // answer goes plain (a draft caller then ends the call; it is never shielded).
        let to = match offer {
            Some(Sealed::Encrypted((device, identity)))
                if self.crypto.trust(&peer_bare, &identity) != Trust::Untrusted =>
            {
                Some((device, identity))
            }
            _ => None,
        };
        if let Some((device, identity)) = to {
            // docs/protocol.md §2.5: answer encrypted to the header sid of the offer; never
            // downgrade (docs/protocol.md §10 callee 3).
            match verification::encrypt_local(&mut *self.crypto, &peer_bare, device, &plain) {
                Ok((fps, id)) if id == identity => encrypted = Some(fps),
                Ok(_) => {
                    self.abort(sid, VerificationError::IdentityMismatch.into());
                    return;
                }
                Err(e) => {
                    self.abort(sid, VerificationError::Encryption(e).into());
                    return;
                }
            }
        }
        let sealed = match (encrypted.is_some(), to) {
            (true, Some(session)) => Sealed::Encrypted(session),
            _ => Sealed::Plain,
        };
        let mut j = JingleEnvelope::new(Action::SessionAccept, sid);
        j.contents = build_contents(&local, encrypted.as_deref());
        if call.offer_had_group {
            j.group = Some(bundle(&local));
        }
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.answer = Some(sealed);
            call.local = local;
            call.state = State::Active;
            call.deadline = None;
        }
        self.send_iq_set(peer, sid, j);
        self.evaluate_shield(sid);
    }
}
