//! The sans-IO core driven with simulated time and an in-memory network: no sockets, no sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shieldcall_media::audio::analysis::dominant_frequency;
use shieldcall_media::audio::source::{AudioSource, ToneSource};
use shieldcall_media::audio::{FRAME_DURATION, FRAME_SAMPLES};
use shieldcall_media::session::Phase;
use shieldcall_media::{
    DtlsParams, Fingerprint, JingleRole, MediaEvent, MediaSession, RemoteParams, SessionConfig,
    SessionOutput,
};

struct Peer {
    s: MediaSession,
    addr: SocketAddr,
    timeout: Instant,
    events: Vec<MediaEvent>,
    tone: ToneSource,
    heard: Vec<i16>,
    played_frames: usize,
}

fn drain(p: &mut Peer, net: &mut VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>) {
    loop {
        match p.s.poll_output() {
            SessionOutput::Transmit {
                source,
                destination,
                contents,
            } => net.push_back((source, destination, contents)),
            SessionOutput::Event(e) => p.events.push(e),
            SessionOutput::Timeout(t) => {
                p.timeout = t;
                return;
            }
        }
    }
}

fn peer(role: JingleRole, port: u16, freq: f64, now: Instant) -> Peer {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    Peer {
        s: MediaSession::new(
            SessionConfig {
                role,
                local_addrs: vec![addr],
                // Injected randomness: each peer's SSRC, CNAME, … follow from its port.
                seed: u64::from(port),
            },
            now,
        )
        .unwrap(),
        addr,
        timeout: now,
        events: vec![],
        tone: ToneSource::new(freq, 0.5),
        heard: vec![],
        played_frames: 0,
    }
}

/// Runs `secs` of call after the exchange.
fn run_call(wrong_fingerprint_at_initiator: bool, secs: u64) -> (Peer, Peer) {
    let mut sim = setup(wrong_fingerprint_at_initiator);
    sim.run_for(Duration::from_secs(secs));
    (sim.a, sim.b)
}

/// Exchanges Jingle-shaped parameters as the call engine would.
fn setup(wrong_fingerprint_at_initiator: bool) -> Sim {
    setup_with(wrong_fingerprint_at_initiator, None)
}

/// `initiator_setup_seen_by_responder`: overrides the initiator's `actpass` as the responder
/// sees it (to drive the responder into `passive`).
fn setup_with(
    wrong_fingerprint_at_initiator: bool,
    initiator_setup_seen_by_responder: Option<shieldcall_media::Setup>,
) -> Sim {
    let t0 = Instant::now();
    let mut a = peer(JingleRole::Initiator, 10_000, 440.0, t0);
    let mut b = peer(JingleRole::Responder, 20_000, 880.0, t0);

    // session-initiate: a's description and transport go to b.
    let a_desc = a.s.local_description().unwrap();
    let a_tr = a.s.local_transport().unwrap();
    let mut a_dtls = a_tr.dtls.unwrap();
    if let Some(setup) = initiator_setup_seen_by_responder {
        a_dtls.setup = setup;
    }
    b.s.set_remote(
        RemoteParams {
            description: a_desc,
            transport: a_tr,
            expected: a_dtls,
        },
        t0,
    )
    .unwrap();
    // session-accept: b's answer goes back to a.
    let b_desc = b.s.local_description().unwrap();
    let b_tr = b.s.local_transport().unwrap();
    let mut b_dtls = b_tr.dtls.unwrap();
    let want = if initiator_setup_seen_by_responder.is_some() {
        "passive"
    } else {
        "active"
    };
    assert_eq!(b_dtls.setup.as_str(), want);
    if wrong_fingerprint_at_initiator {
        let mut bytes = *b_dtls.fingerprint.as_bytes();
        bytes[0] ^= 0x01;
        b_dtls = DtlsParams {
            fingerprint: Fingerprint::from_bytes(&bytes).unwrap(),
            ..b_dtls
        };
    }
    a.s.set_remote(
        RemoteParams {
            description: b_desc,
            transport: b_tr,
            expected: b_dtls,
        },
        t0,
    )
    .unwrap();

    Sim {
        a,
        b,
        now: t0,
        next_tick: t0,
        net: VecDeque::new(),
    }
}

struct Sim {
    a: Peer,
    b: Peer,
    now: Instant,
    next_tick: Instant,
    net: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Sim {
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let (a, b, net) = (&mut self.a, &mut self.b, &mut self.net);
        let mut now = self.now;
        let mut next_tick = self.next_tick;
        let mut frame = [0i16; FRAME_SAMPLES];
        while now < end {
            drain(a, net);
            drain(b, net);
            while let Some((src, dst, data)) = net.pop_front() {
                let to = if dst == a.addr { &mut *a } else { &mut *b };
                to.s.handle_receive(now, src, dst, &data);
                drain(a, net);
                drain(b, net);
            }
            now = a.timeout.min(b.timeout).min(next_tick).max(now);
            if now >= next_tick {
                for p in [&mut *a, &mut *b] {
                    p.tone.next_frame(&mut frame).unwrap();
                    p.s.send_frame(now, &frame).unwrap();
                    if p.s.play_frame(now, &mut frame) {
                        p.heard.extend_from_slice(&frame);
                        p.played_frames += 1;
                    }
                }
                next_tick += FRAME_DURATION;
            }
            a.s.handle_timeout(now);
            b.s.handle_timeout(now);
        }
        self.now = now;
        self.next_tick = next_tick;
    }
}

#[test]
fn tone_flows_both_ways_with_simulated_time() {
    let (a, b) = run_call(false, 3);
    for p in [&a, &b] {
        assert!(p.s.is_verified(), "{:?}", p.s.phase());
        assert!(
            p.events
                .iter()
                .any(|e| matches!(e, MediaEvent::DtlsVerified { .. }))
        );
        assert!(p.events.contains(&MediaEvent::FirstAudio));
        let st = p.s.stats();
        assert!(st.dtls_connected.is_some() && st.first_audio.is_some());
        assert!(st.arrival_ratio() > 0.95, "{st:?}");
    }
    let fa = dominant_frequency(&a.heard, 48_000);
    let fb = dominant_frequency(&b.heard, 48_000);
    assert!((fa - 880.0).abs() <= 5.0, "initiator heard {fa}");
    assert!((fb - 440.0).abs() <= 5.0, "responder heard {fb}");
    assert!(a.played_frames > 120, "{}", a.played_frames);
}

#[test]
fn wrong_expected_fingerprint_blocks_all_media() {
    let (a, b) = run_call(true, 3);
    assert_eq!(
        a.s.phase(),
        &Phase::Failed(shieldcall_media::session::FailReason::FingerprintMismatch)
    );
    let mismatch = a
        .events
        .iter()
        .find_map(|e| match e {
            MediaEvent::FingerprintMismatch { expected, actual } => Some((*expected, *actual)),
            _ => None,
        })
        .expect("mismatch event");
    assert_ne!(Some(mismatch.0), mismatch.1);
    assert!(mismatch.1.is_some());
    for p in [&a, &b] {
        assert_eq!(p.played_frames, 0);
        assert!(p.heard.is_empty());
        assert_eq!(p.s.stats().packets_received, 0);
        assert!(!p.events.contains(&MediaEvent::FirstAudio));
    }
    // The side with the wrong expectation never sent a media packet.
    assert_eq!(a.s.stats().packets_sent, 0);
}

/// Peer input never panics, and unauthenticated RTP (right SSRC, no SRTP) is never played.
#[test]
fn forged_and_garbage_datagrams_are_harmless() {
    use rand::{Rng, SeedableRng};
    let mut sim = setup(false);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.a.s.is_verified());
    let b_ssrc = sim.b.s.local_description().unwrap().sources[0].ssrc;
    let before = sim.a.s.stats().packets_received;
    let sent_before = sim.b.s.stats().packets_sent;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (from, to) = (sim.b.addr, sim.a.addr);
    for i in 0..500u32 {
        // A plain RTP packet for b's SSRC with a payload of noise.
        let mut rtp = vec![0x80, 111];
        rtp.extend_from_slice(&(60_000u16.wrapping_add(i as u16)).to_be_bytes());
        rtp.extend_from_slice(&(i * 960).to_be_bytes());
        rtp.extend_from_slice(&b_ssrc.to_be_bytes());
        rtp.extend((0..rng.random_range(0..200)).map(|_| rng.random::<u8>()));
        sim.a.s.handle_receive(sim.now, from, to, &rtp);
        // Random bytes of random length, first byte across all demux ranges.
        let garbage: Vec<u8> = (0..rng.random_range(0..1600))
            .map(|_| rng.random())
            .collect();
        sim.a.s.handle_receive(sim.now, from, to, &garbage);
    }
    sim.run_for(Duration::from_millis(500));
    let genuine = sim.b.s.stats().packets_sent - sent_before;
    let got = sim.a.s.stats().packets_received - before;
    assert!(got <= genuine, "{got} received, {genuine} genuine sent");
    assert!(sim.a.s.is_verified(), "{:?}", sim.a.s.phase());
}

/// The parameters of Dino 0.4.2's session-initiate (crates/jingle/tests/fixtures/dino-0.4.2/
/// caller-05-out-session-initiate.xml), as the call engine would hand them over.
fn dino_initiate() -> RemoteParams {
    use shieldcall_media::{
        CandidateType, IceCandidate, IceUdpTransport, PayloadType, RtpDescription, Setup,
    };
    let pt = |id, name: &str, clockrate, channels, parameters: Vec<(String, String)>| PayloadType {
        id,
        name: name.into(),
        clockrate,
        channels,
        parameters,
    };
    let cand = |foundation: &str, component, id: &str, ip: &str, port, priority| IceCandidate {
        foundation: foundation.into(),
        component,
        protocol: "udp".into(),
        priority,
        ip: ip.parse().unwrap(),
        port,
        kind: CandidateType::Host,
        generation: 0,
        id: id.into(),
        related: None,
    };
    RemoteParams {
        description: RtpDescription {
            media: "audio".into(),
            payload_types: vec![
                pt(111, "opus", 48000, 2, vec![("useinbandfec".into(), "1".into())]),
                pt(112, "speex", 32000, 1, vec![]),
                pt(113, "speex", 16000, 1, vec![]),
                pt(114, "speex", 8000, 1, vec![]),
                pt(0, "PCMU", 8000, 1, vec![]),
                pt(8, "PCMA", 8000, 1, vec![]),
            ],
            rtcp_mux: true,
            sources: vec![],
            hdrexts: vec![],
        },
        transport: IceUdpTransport {
            ufrag: "ngHQ".into(),
            pwd: "7VWmh2Euosn+aj6/BNJlyb".into(),
            candidates: vec![
                cand("1", 1, "e82b89ab", "192.0.2.2", 41054, 2015363327),
                cand("2", 1, "dbad1e7a", "fd00::2", 39264, 2015363583),
                cand("1", 2, "c6d30cc5", "192.0.2.2", 55429, 2015363326),
                cand("2", 2, "4ea1fdf7", "fd00::2", 57547, 2015363582),
            ],
            dtls: None,
        },
        expected: DtlsParams {
            fingerprint: Fingerprint::parse(
                "sha-256",
                "3A:9F:0C:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:01:02:03:04:05:06:07:08:09:0A:0B:0C:C1",
            )
            .unwrap(),
            setup: Setup::ActPass,
        },
    }
}

#[test]
fn answering_dino_gives_what_dino_accepts() {
    let now = Instant::now();
    let mut s = MediaSession::new(
        SessionConfig {
            role: JingleRole::Responder,
            local_addrs: vec!["127.0.0.1:40000".parse().unwrap()],
            seed: 2,
        },
        now,
    )
    .unwrap();
    s.set_remote(dino_initiate(), now).unwrap();
    let d = s.local_description().unwrap();
    assert_eq!(d.payload_types.len(), 1);
    assert_eq!(
        (d.payload_types[0].id, d.payload_types[0].name.as_str()),
        (111, "opus")
    );
    assert!(d.rtcp_mux);
    let t = s.local_transport().unwrap();
    let dtls = t.dtls.unwrap();
    assert_eq!(dtls.setup.as_str(), "active");
    assert_eq!(dtls.fingerprint.to_jingle_value().len(), 95);
    assert_eq!(t.candidates.len(), 1);
    assert!(t.ufrag.len() >= 4 && t.pwd.len() >= 22);
    // It starts ICE towards Dino's RTP candidates right away.
    let mut transmits = 0;
    s.handle_timeout(now + Duration::from_millis(50));
    loop {
        match s.poll_output() {
            SessionOutput::Transmit { destination, .. } => {
                assert!(destination.port() == 41054 || destination.port() == 39264);
                transmits += 1;
            }
            SessionOutput::Event(_) => {}
            SessionOutput::Timeout(_) => break,
        }
    }
    assert!(transmits > 0);
    assert!(matches!(
        s.set_remote(dino_initiate(), now),
        Err(shieldcall_media::session::SessionError::RemoteAlreadySet)
    ));
}

#[test]
fn initiator_refuses_actpass_in_session_accept() {
    let now = Instant::now();
    let mut s = MediaSession::new(
        SessionConfig {
            role: JingleRole::Initiator,
            local_addrs: vec!["127.0.0.1:40002".parse().unwrap()],
            seed: 3,
        },
        now,
    )
    .unwrap();
    assert_eq!(
        s.local_transport().unwrap().dtls.unwrap().setup.as_str(),
        "actpass"
    );
    let err = s.set_remote(dino_initiate(), now).unwrap_err();
    assert!(
        matches!(
            err,
            shieldcall_media::session::SessionError::Params(
                shieldcall_media::ParamsError::SetupConflict { .. }
            )
        ),
        "{err:?}"
    );
    assert_eq!(s.phase(), &Phase::New);
}

/// A responder answering `passive` is accepted: the initiator then is the DTLS client.
#[test]
fn passive_responder_is_accepted() {
    let mut sim = setup_with(false, Some(shieldcall_media::Setup::Active));
    sim.run_for(Duration::from_secs(1));
    for p in [&sim.a, &sim.b] {
        assert!(p.s.is_verified(), "{:?}", p.s.phase());
        assert!(p.played_frames > 20);
    }
}

/// A transport-info that overtakes session-accept is not lost.
#[test]
fn candidates_before_set_remote_are_kept() {
    let now = Instant::now();
    let mut s = MediaSession::new(
        SessionConfig {
            role: JingleRole::Responder,
            local_addrs: vec!["127.0.0.1:40004".parse().unwrap()],
            seed: 4,
        },
        now,
    )
    .unwrap();
    let mut remote = dino_initiate();
    let late = remote.transport.candidates.remove(0); // 192.0.2.2:41054
    remote.transport.candidates.retain(|c| c.component == 2); // only unusable ones left
    s.add_remote_candidate(&late);
    s.set_remote(remote, now).unwrap();
    s.handle_timeout(now + Duration::from_millis(50));
    let mut to_late = 0;
    loop {
        match s.poll_output() {
            SessionOutput::Transmit { destination, .. } => {
                assert_eq!(destination, late.addr());
                to_late += 1;
            }
            SessionOutput::Event(_) => {}
            SessionOutput::Timeout(_) => break,
        }
    }
    assert!(to_late > 0);
}
