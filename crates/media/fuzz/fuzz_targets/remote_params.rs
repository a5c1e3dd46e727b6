//! A `MediaSession` handed a peer's parameters (format: `common/lines.rs`): `set_remote` with
//! whatever description, transport and expected fingerprint the peer sent, trickled candidates
//! (`add_remote_candidate`), before and after, then a few rounds of `poll_output` /
//! `handle_timeout` so that str0m acts on them. Asserted: no panic; a session never reports
//! DTLS verified (no peer holds the certificate), and sends only to announced candidates.
#![no_main]

#[path = "common/lines.rs"]
mod lines;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use shieldcall_media::{
    DtlsParams, Fingerprint, IceUdpTransport, JingleRole, MediaEvent, MediaSession, RemoteParams,
    SessionConfig, SessionOutput, Setup,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let l = lines::parse(text);
    let role = if mode & 1 == 0 {
        JingleRole::Responder
    } else {
        JingleRole::Initiator
    };
    let now = Instant::now();
    let local: SocketAddr = "192.0.2.1:40000".parse().expect("static address");
    let Ok(mut s) = MediaSession::new(
        SessionConfig::new(role, vec![local], 1),
        now,
    ) else {
        return;
    };
    let fingerprint = l
        .fingerprint
        .as_ref()
        .and_then(|(h, v)| Fingerprint::parse(h, v).ok())
        .unwrap_or_else(|| Fingerprint::from_bytes(&[7; 32]).expect("32 bytes"));
    let setup = l
        .setup
        .as_deref()
        .and_then(|s| Setup::parse(s).ok())
        .unwrap_or(Setup::ActPass);
    if mode & 2 != 0 {
        for c in &l.trickled {
            s.add_remote_candidate(c); // transport-info that overtook the session-accept
        }
    }
    let mut allowed: BTreeSet<SocketAddr> = BTreeSet::new();
    allowed.extend(l.candidates.iter().chain(&l.trickled).map(|c| c.addr()));
    allowed.extend(l.candidates.iter().chain(&l.trickled).filter_map(|c| c.related));
    let remote = RemoteParams {
        description: l.description.clone(),
        transport: IceUdpTransport {
            ufrag: l.ufrag.clone().unwrap_or_default(),
            pwd: l.pwd.clone().unwrap_or_default(),
            candidates: l.candidates.clone(),
            dtls: None,
        },
        expected: DtlsParams { fingerprint, setup },
    };
    let accepted = s.set_remote(remote, now).is_ok();
    if accepted {
        let _ = s.local_description();
        let _ = s.local_transport();
    }
    if mode & 2 == 0 {
        for c in &l.trickled {
            s.add_remote_candidate(c);
        }
    }
    let mut t = now;
    for _ in 0..4 {
        for _ in 0..64 {
            match s.poll_output() {
                SessionOutput::Transmit { destination, .. } => {
                    assert!(allowed.contains(&destination), "sent to {destination}");
                }
                SessionOutput::Event(e) => {
                    assert!(!matches!(e, MediaEvent::DtlsVerified { .. }));
                }
                SessionOutput::Timeout(_) => break,
                SessionOutput::StreamConnect { .. }
                | SessionOutput::StreamSend { .. }
                | SessionOutput::StreamClose { .. } => {}
            }
        }
        t += Duration::from_millis(50);
        s.handle_timeout(t);
    }
    assert!(!s.is_verified());
});
