//! ICE restarts during a running call, as Conversations makes them (docs/protocol.md §2.4): the
//! side that restarts sends a `transport-info` with new `ufrag`/`pwd` and no candidate (the
//! offer); the other side answers the IQ, restarts too, and its candidates with its own new
//! credentials are the answer. Two offers at once: the initiator keeps its own and answers the
//! responder's with a `tie-break` error. Nothing here touches fingerprints (a `transport-info`
//! with one is refused before this), so a restart never changes the DTLS association or the
//! shield.

use super::*;

/// The contents of a `transport-info` whose credentials differ from the peer's current ones.
pub(super) fn changed_credentials(call: &Call, j: &JingleEnvelope) -> Vec<IceCredentials> {
    j.contents
        .iter()
        .filter_map(|c| {
            let t = c.transport.as_ref()?;
            let (ufrag, pwd) = (t.ufrag.as_deref()?, t.pwd.as_deref()?);
            let known = call.remote.iter().find(|r| r.name == c.name)?;
            let same = known.ufrag.as_deref() == Some(ufrag) && known.pwd.as_deref() == Some(pwd);
            (!same).then(|| IceCredentials {
                content: c.name.clone(),
                ufrag: ufrag.to_owned(),
                pwd: pwd.to_owned(),
            })
        })
        .collect()
}

/// What an incoming restart is.
pub(super) enum Incoming {
    /// The peer restarts: answer it.
    Offer,
    /// The peer's candidates with new credentials: the answer to our restart (or its answer
    /// to nothing we asked, which ICE simply uses).
    Answer,
    /// Both restarted at once and we are the initiator: ours stands, theirs gets `tie-break`.
    TieBreak,
    /// Too many restarts in this call.
    TooMany,
}

impl Op<'_> {
    /// Classifies a `transport-info` that changes credentials (`changed` non-empty).
    pub(super) fn incoming_restart(&self, call: &Call, j: &JingleEnvelope) -> Incoming {
        let offer = j
            .contents
            .iter()
            .all(|c| c.transport.as_ref().is_none_or(|t| t.candidates.is_empty()));
        let answers_ours = !offer && call.restart_offered.is_some();
        if call.restarts >= MAX_ICE_RESTARTS && !answers_ours {
            Incoming::TooMany
        } else if offer && call.restart_offered.is_some() && call.role == Role::Initiator {
            Incoming::TieBreak
        } else if offer {
            Incoming::Offer
        } else {
            Incoming::Answer
        }
    }

    /// Applies the peer's new credentials (the IQ is answered by the caller).
    pub(super) fn apply_remote_restart(
        &mut self,
        sid: &str,
        changed: Vec<IceCredentials>,
        offer: bool,
    ) {
        let Some(call) = self.e.calls.get_mut(sid) else {
            return;
        };
        for c in &changed {
            if let Some(r) = call.remote.iter_mut().find(|r| r.name == c.content) {
                r.ufrag = Some(c.ufrag.clone());
                r.pwd = Some(c.pwd.clone());
                // The old candidates are gone with the old credentials: the cap counts anew.
                r.candidates.clear();
            }
            call.candidates_seen.insert(c.content.clone(), 0);
        }
        if offer {
            call.restarts += 1;
            call.restart_asked = true;
            // Theirs wins over ours (we are the responder, or ours was never sent).
            call.restart_offered = None;
        } else {
            // An answer to nothing we offered still costs a restart of the checks.
            if call.restart_offered.take().is_none() {
                call.restarts += 1;
            }
        }
        self.event(Event::IceRestart {
            sid: sid.to_owned(),
            remote: changed,
            offer,
        });
    }

    /// Media restarted ICE ([`MediaEvent::IceRestarted`]).
    pub(super) fn local_restart(
        &mut self,
        sid: &str,
        credentials: Vec<IceCredentials>,
    ) -> Result<(), ApiError> {
        let call = self.e.calls.get_mut(sid).ok_or(ApiError::UnknownSession)?;
        if call.state != State::Active {
            return Err(ApiError::WrongState);
        }
        let names: Vec<&str> = call.local.iter().map(|l| l.name.as_str()).collect();
        let covers = credentials.len() == names.len()
            && credentials
                .iter()
                .all(|c| names.contains(&c.content.as_str()));
        if !covers
            || credentials
                .iter()
                .any(|c| c.ufrag.is_empty() || c.pwd.is_empty())
        {
            return Err(ApiError::InvalidLocal(
                "a restart gives new credentials for every content",
            ));
        }
        let answering = std::mem::take(&mut call.restart_asked);
        if !answering {
            if call.restarts >= MAX_ICE_RESTARTS || call.restart_offered.is_some() {
                return Err(ApiError::WrongState);
            }
            call.restarts += 1;
        }
        for c in &credentials {
            if let Some(l) = call.local.iter_mut().find(|l| l.name == c.content) {
                l.ufrag = c.ufrag.clone();
                l.pwd = c.pwd.clone();
                l.candidates.clear();
            }
        }
        if answering {
            // Our first candidate with the new credentials is the answer.
            return Ok(());
        }
        let Some(peer) = call.peer.clone() else {
            return Err(ApiError::WrongState);
        };
        let mut j = JingleEnvelope::new(Action::TransportInfo, sid);
        for c in credentials {
            j.contents.push(RtpContent {
                creator: Creator::Initiator,
                name: c.content,
                senders: Senders::Both,
                description: None,
                transport: Some(IceUdpTransport {
                    ufrag: Some(c.ufrag),
                    pwd: Some(c.pwd),
                    ..Default::default()
                }),
            });
        }
        let id = self.send_iq_set(peer, sid, j);
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.restart_offered = Some(id);
        }
        Ok(())
    }

    /// An error answer to one of our `transport-info`s: a `tie-break` to our restart offer means
    /// the peer's offer stands (we answer that one); any other refusal of a restart ends the
    /// call, which cannot recover its connectivity otherwise.
    pub(super) fn transport_info_refused(&mut self, sid: &str, id: &str, tie_break: bool) {
        let ours = self
            .e
            .calls
            .get(sid)
            .is_some_and(|c| c.restart_offered.as_deref() == Some(id));
        if !ours {
            return;
        }
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.restart_offered = None;
        }
        if !tie_break {
            self.abort(
                sid,
                CallError::MediaFailed("the peer refused our ICE restart".into()),
            );
        }
    }
}
