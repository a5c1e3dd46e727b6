//! What a TURN server (or whoever speaks from its address) sends: arbitrary datagrams to the
//! host socket from a UDP TURN server's address, and arbitrary bytes on the TCP connection to
//! a TCP TURN server (STUN/ChannelData framing, RFC 8656 §12.5 padding, the short-lifetime
//! re-signing, the 401 handling all parse them), with injected time.
//!
//! Records: `[kind][delay ms][len hi][len lo][bytes…]`, at most 32; `kind` even: a datagram,
//! odd: stream bytes. Asserted: no panic, bounded output, and no relayed candidate (nothing in
//! the input can carry the MESSAGE-INTEGRITY of the long-term key the fuzzer does not know).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use shieldcall_media::{
    CandidateType, IceServer, IceServerKind, IceTransport, JingleRole, MediaEvent, MediaSession,
    ResolvedIceServer, Secret, SessionConfig, SessionOutput,
};

const UDP_TURN: ([u8; 4], u16) = ([203, 0, 113, 1], 3478);
const TCP_TURN: ([u8; 4], u16) = ([203, 0, 113, 2], 3478);

fn server(transport: IceTransport, at: ([u8; 4], u16)) -> ResolvedIceServer {
    ResolvedIceServer {
        server: IceServer {
            kind: IceServerKind::Turn,
            host: "turn.example.org".into(),
            port: at.1,
            transport,
            username: Some("1700000000:alice".into()),
            password: Some(Secret::new("secret")),
            expires: None,
        },
        addr: Ok(SocketAddr::from(at)),
    }
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let host = SocketAddr::from(([192, 0, 2, 10], 10_000));
    let config = SessionConfig {
        ice_servers: vec![
            server(IceTransport::Udp, UDP_TURN),
            server(IceTransport::Tcp, TCP_TURN),
        ],
        ..SessionConfig::new(JingleRole::Initiator, vec![host], 5)
    };
    let Ok(mut s) = MediaSession::new(config, t0) else {
        return;
    };
    let mut now = t0;
    let mut stream = None;
    let drain = |s: &mut MediaSession, now: Instant, stream: &mut Option<_>| {
        for _ in 0..10_000 {
            match s.poll_output() {
                SessionOutput::Timeout(_) => return,
                SessionOutput::StreamConnect { stream: id, .. } => {
                    *stream = Some(id);
                    s.handle_stream_connected(now, id, SocketAddr::from(([192, 0, 2, 10], 40_000)));
                }
                SessionOutput::Event(MediaEvent::LocalCandidate(c)) => {
                    assert_ne!(c.kind, CandidateType::Relay, "{c:?}");
                }
                _ => {}
            }
        }
        panic!("the session produced output without end");
    };
    drain(&mut s, now, &mut stream);
    let mut rest = data;
    for _ in 0..32 {
        let [kind, delay, hi, lo, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        now += Duration::from_millis(u64::from(*delay));
        if kind % 2 == 0 {
            s.handle_receive(now, SocketAddr::from(UDP_TURN), host, bytes);
        } else if let Some(id) = stream {
            s.handle_stream_data(now, id, bytes);
        }
        s.handle_timeout(now);
        drain(&mut s, now, &mut stream);
    }
    let _ = s.stats();
});
