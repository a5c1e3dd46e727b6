//! Contents added mid-call (`content-add` / `content-accept`), fingerprints encrypted like
//! the session's and never downgraded.

use super::contents::*;
use super::*;

impl Op<'_> {
    /// The peer's `content-add`: full transports are checked like an answer of this session
    /// (encrypted by the same device and identity when the session is verified,
    /// docs/protocol.md §2.4 column S), stub transports ride on the BUNDLE transport, and no
    /// fingerprint may differ from the running association (docs/security-tests.md line 4).
    pub(super) fn content_add(&mut self, sid: &str, j: JingleEnvelope) {
        let pending = self
            .e
            .calls
            .get(sid)
            .is_some_and(|c| c.incoming_add.is_some() || c.outgoing_add.is_some());
        if pending {
            // One modification at a time: a crossing content-add is refused.
            if let Some(peer) = self.e.calls.get(sid).and_then(|c| c.peer.clone()) {
                let mut reject = JingleEnvelope::new(Action::ContentReject, sid);
                reject.contents = strip(j.contents);
                reject.reason = Some(reason_element(Reason::FailedApplication, None));
                self.send_iq_set(peer, sid, reject);
            }
            return;
        }
        match self.check_added(sid, &j.contents) {
            Err(e) => self.abort(sid, e),
            Ok(remote) => {
                if let Some(call) = self.e.calls.get_mut(sid) {
                    call.incoming_add = Some(j.contents);
                    call.incoming_add_remote = remote.clone();
                }
                self.event(Event::ContentAdd {
                    sid: sid.to_owned(),
                    contents: remote,
                });
            }
        }
    }

    /// The peer's `content-accept` of our `content-add`, checked the same way.
    pub(super) fn content_accept(&mut self, sid: &str, j: JingleEnvelope) {
        let Some(ours) = self.e.calls.get(sid).and_then(|c| c.outgoing_add.clone()) else {
            return;
        };
        let mut names: Vec<&str> = j.contents.iter().map(|c| c.name.as_str()).collect();
        let mut wanted: Vec<&str> = ours.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        wanted.sort_unstable();
        if names != wanted {
            self.abort(sid, CallError::UnsupportedApplication);
            return;
        }
        match self.check_added(sid, &j.contents) {
            Err(e) => self.abort(sid, e),
            Ok(remote) => {
                if let Some(call) = self.e.calls.get_mut(sid) {
                    call.outgoing_add = None;
                    for c in &remote {
                        call.candidates_seen
                            .insert(c.name.clone(), c.candidates.len());
                    }
                    call.remote.extend(remote.iter().cloned());
                    call.local.extend(ours);
                }
                self.event(Event::ContentAccepted {
                    sid: sid.to_owned(),
                    contents: remote,
                });
            }
        }
    }

    /// Applies the draft to contents added mid-call; returns them with the fingerprint media
    /// must see (the running association's).
    pub(super) fn check_added(
        &mut self,
        sid: &str,
        contents: &[RtpContent],
    ) -> Result<Vec<RemoteContent>, CallError> {
        let Some(call) = self.e.calls.get(sid) else {
            return Ok(Vec::new());
        };
        content_media(contents)?;
        let Some(established) = call.remote.first().map(|r| r.fingerprint.clone()) else {
            return Err(CallError::UnsupportedApplication);
        };
        let session = call.encrypted_session();
        let session_mode = if session.is_some() {
            Mode::Encrypted
        } else {
            Mode::Plain
        };
        let expect = match session {
            Some((device, identity)) => Expectation::EncryptedAnswer { device, identity },
            None => Expectation::PlainAnswer,
        };
        let peer_bare = call.peer_bare.clone();
        let with_fp: Vec<RtpContent> = contents
            .iter()
            .filter(|c| {
                c.transport
                    .as_ref()
                    .is_some_and(|t| !t.fingerprints.is_empty())
            })
            .cloned()
            .collect();
        let mut read = if with_fp.is_empty() {
            Vec::new().into_iter()
        } else {
            let r = verification::read_remote_any_setup(
                &mut *self.crypto,
                &peer_bare,
                &with_fp,
                expect,
            )?;
            if r.fingerprints.iter().any(|f| f.value != established.value) {
                return Err(VerificationError::FingerprintChanged.into());
            }
            r.fingerprints.into_iter()
        };
        let mut out = Vec::with_capacity(contents.len());
        for c in contents {
            let t = c.transport.clone().unwrap_or_default();
            let fingerprint = if t.fingerprints.is_empty() {
                established.clone()
            } else {
                read.next().unwrap_or_else(|| established.clone())
            };
            out.push(RemoteContent {
                name: c.name.clone(),
                description: c.description.clone(),
                ufrag: t.ufrag,
                pwd: t.pwd,
                candidates: t.candidates,
                fingerprint,
                mode: session_mode,
            });
        }
        Ok(out)
    }

    /// Our fingerprints for contents added mid-call, encrypted like the session (never
    /// downgraded: a verified session whose encryption fails ends with security-error).
    pub(super) fn added_contents(
        &mut self,
        sid: &str,
        local: &[LocalContent],
    ) -> Result<Vec<RtpContent>, CallError> {
        let Some(call) = self.e.calls.get(sid) else {
            return Ok(Vec::new());
        };
        let (peer_bare, session) = (call.peer_bare.clone(), call.encrypted_session());
        let creator = match call.role {
            Role::Initiator => Creator::Initiator,
            Role::Responder => Creator::Responder,
        };
        let fps = match session {
            Some((device, identity)) => {
                let plain: Vec<Fingerprint> = local.iter().map(|l| l.fingerprint.clone()).collect();
                let (fps, id) =
                    verification::encrypt_local(&mut *self.crypto, &peer_bare, device, &plain)
                        .map_err(VerificationError::Encryption)?;
                if id != identity {
                    return Err(VerificationError::IdentityMismatch.into());
                }
                Some(fps)
            }
            _ => None,
        };
        let mut contents = build_contents(local, fps.as_deref());
        for c in &mut contents {
            c.creator = creator.clone();
        }
        Ok(contents)
    }

    pub(super) fn send_content_add(&mut self, sid: &str, local: Vec<LocalContent>) {
        let contents = match self.added_contents(sid, &local) {
            Ok(c) => c,
            Err(e) => {
                self.abort(sid, e);
                return;
            }
        };
        let Some(peer) = self.e.calls.get(sid).and_then(|c| c.peer.clone()) else {
            return;
        };
        let mut j = JingleEnvelope::new(Action::ContentAdd, sid);
        j.contents = contents;
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.outgoing_add = Some(local);
        }
        self.send_iq_set(peer, sid, j);
    }

    pub(super) fn send_content_accept(&mut self, sid: &str, local: Vec<LocalContent>) {
        let Some(theirs) = self.e.calls.get(sid).and_then(|c| c.incoming_add.clone()) else {
            return;
        };
        let mut contents = match self.added_contents(sid, &local) {
            Ok(c) => c,
            Err(e) => {
                self.abort(sid, e);
                return;
            }
        };
        // The answer keeps the creator of each added content.
        for c in &mut contents {
            if let Some(t) = theirs.iter().find(|t| t.name == c.name) {
                c.creator = t.creator.clone();
            }
        }
        let Some(peer) = self.e.calls.get(sid).and_then(|c| c.peer.clone()) else {
            return;
        };
        let mut j = JingleEnvelope::new(Action::ContentAccept, sid);
        j.contents = contents;
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.incoming_add = None;
            let remote = core::mem::take(&mut call.incoming_add_remote);
            for c in &remote {
                call.candidates_seen
                    .insert(c.name.clone(), c.candidates.len());
            }
            call.remote.extend(remote);
            call.local.extend(local);
        }
        self.send_iq_set(peer, sid, j);
    }
}
