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
            other => panic!("no TCP without TURN servers: {other:?}"),
        }
    }
}

fn peer(role: JingleRole, port: u16, freq: f64, now: Instant) -> Peer {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    Peer {
        // Injected randomness: each peer's SSRC, CNAME, … follow from its port.
        s: MediaSession::new(SessionConfig::new(role, vec![addr], u64::from(port)), now).unwrap(),
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
        blackout: false,
        usernames: Vec::new(),
    }
}

struct Sim {
    a: Peer,
    b: Peer,
    now: Instant,
    next_tick: Instant,
    net: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Every datagram is lost while set (a router dropping everything).
    blackout: bool,
    /// The USERNAME of every STUN Binding request that went over the wire.
    usernames: Vec<String>,
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
                if self.blackout {
                    continue;
                }
                if let Some(u) = binding_username(&data) {
                    self.usernames.push(u);
                }
                let to = if dst == a.addr {
                    &mut *a
                } else if dst == b.addr {
                    &mut *b
                } else {
                    continue; // an address nobody has any more
                };
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
        SessionConfig::new(
            JingleRole::Responder,
            vec!["127.0.0.1:40000".parse().unwrap()],
            2,
        ),
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
            SessionOutput::Timeout(_) => break,
            _ => {}
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
        SessionConfig::new(
            JingleRole::Initiator,
            vec!["127.0.0.1:40002".parse().unwrap()],
            3,
        ),
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
        SessionConfig::new(
            JingleRole::Responder,
            vec!["127.0.0.1:40004".parse().unwrap()],
            4,
        ),
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
            SessionOutput::Timeout(_) => break,
            _ => {}
        }
    }
    assert!(to_late > 0);
}

/// A short outage (every datagram lost for 7 s, both ways): the session reports the loss and
/// the return, stays verified, and audio resumes by itself.
#[test]
fn a_short_outage_is_survived() {
    let mut sim = setup(false);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.a.s.is_verified() && sim.b.s.is_verified());
    let before = (sim.a.played_frames, sim.b.s.stats().packets_received);
    sim.blackout = true;
    sim.run_for(Duration::from_secs(7));
    sim.blackout = false;
    let during = sim.b.s.stats().packets_received;
    sim.run_for(Duration::from_secs(4));
    for p in [&sim.a, &sim.b] {
        assert!(p.s.is_verified(), "{:?} {:?}", p.s.phase(), p.events);
        assert!(
            !p.events.iter().any(|e| matches!(e, MediaEvent::Failed(_))),
            "{:?}",
            p.events
        );
    }
    // Packets flow again after the outage.
    let after = sim.b.s.stats().packets_received;
    assert!(after > during + 100, "{before:?} {during} {after}");
    assert!(sim.a.played_frames > before.0 + 150);
    let lost = |p: &Peer| p.events.contains(&MediaEvent::ConnectivityLost);
    let back = |p: &Peer| {
        p.events
            .iter()
            .any(|e| matches!(e, MediaEvent::ConnectivityRestored { .. }))
    };
    // 7 s of silence is more than CONNECTIVITY_SILENCE: both noticed, both saw it come back.
    for p in [&sim.a, &sim.b] {
        assert!(lost(p), "{:?}", p.events);
        assert_eq!(lost(p), back(p), "{:?}", p.events);
        assert_eq!(p.s.stats().outages_survived, u32::from(lost(p)));
    }
}

/// An outage longer than the grace ends the session ICE_DISCONNECT_GRACE after the peer was
/// last heard (injected time: to the 20 ms step of the simulation).
#[test]
fn an_outage_longer_than_the_grace_fails_the_session() {
    use shieldcall_media::session::{FailReason, ICE_DISCONNECT_GRACE};
    let mut sim = setup(false);
    sim.run_for(Duration::from_secs(2));
    sim.blackout = true;
    let t_out = sim.now;
    let mut lost_at = None;
    let mut failed_at = None;
    for _ in 0..(30_000 / 20) {
        sim.run_for(Duration::from_millis(20));
        if lost_at.is_none() && sim.a.events.contains(&MediaEvent::ConnectivityLost) {
            lost_at = Some(sim.now);
        }
        if sim.a.s.phase() == &Phase::Failed(FailReason::IceDisconnected) {
            failed_at = Some(sim.now);
            break;
        }
    }
    let (lost_at, failed_at) = (
        lost_at.expect("lost"),
        failed_at.unwrap_or_else(|| {
            panic!(
                "not failed: lost after {:?}, {:?} {:?}",
                lost_at.map(|l| l - t_out),
                sim.a.s.phase(),
                sim.a.events
            )
        }),
    );
    use shieldcall_media::session::CONNECTIVITY_SILENCE;
    let noticed = lost_at - t_out;
    let failed = failed_at - t_out;
    let step = Duration::from_millis(40);
    assert!(
        noticed >= CONNECTIVITY_SILENCE - step && noticed <= CONNECTIVITY_SILENCE + step,
        "{noticed:?}"
    );
    assert!(
        failed >= ICE_DISCONNECT_GRACE - step && failed <= ICE_DISCONNECT_GRACE + step,
        "{failed:?}"
    );
    drain(&mut sim.a, &mut sim.net);
    assert!(
        sim.a
            .events
            .contains(&MediaEvent::Failed(FailReason::IceDisconnected))
    );
    eprintln!("loss noticed {noticed:?} after the blackout began; failed after {failed:?}");
}

/// The USERNAME (`theirs:ours` ufrags) of a STUN Binding request.
fn binding_username(data: &[u8]) -> Option<String> {
    use turn_client_proto::stun::types::attribute::Username;
    use turn_client_proto::stun::types::message::{BINDING, Message, MessageClass};
    let m = Message::from_bytes(data).ok()?;
    if !m.has_method(BINDING) || !m.has_class(MessageClass::Request) {
        return None;
    }
    Some(m.attribute::<Username>().ok()?.username().to_owned())
}

/// An ICE restart both ways (ours, then the peer's answer): new credentials are used for the
/// checks from then on, DTLS and so the fingerprint are untouched, audio goes on.
#[test]
fn ice_restart_changes_credentials_and_keeps_the_call() {
    let mut sim = setup(false);
    sim.run_for(Duration::from_secs(2));
    let old_a = sim.a.s.local_transport().unwrap();
    let old_b = sim.b.s.local_transport().unwrap();
    let fingerprints = (
        old_a.dtls.unwrap().fingerprint,
        old_b.dtls.unwrap().fingerprint,
    );

    let now = sim.now;
    let new_a = sim.a.s.restart_ice(now).unwrap();
    assert_ne!((&new_a.ufrag, &new_a.pwd), (&old_a.ufrag, &old_a.pwd));
    assert_eq!(new_a.dtls.unwrap().fingerprint, fingerprints.0);
    assert!(new_a.candidates.iter().all(|c| c.generation == 1));
    sim.b.s.accept_remote_restart(&new_a, now).unwrap();
    let new_b = sim.b.s.restart_ice(now).unwrap();
    assert_ne!(new_b.ufrag, old_b.ufrag);
    assert_eq!(new_b.dtls.unwrap().fingerprint, fingerprints.1);
    sim.a.s.accept_remote_restart(&new_b, now).unwrap();

    sim.usernames.clear();
    let played = sim.a.played_frames;
    sim.run_for(Duration::from_secs(8));
    for p in [&sim.a, &sim.b] {
        assert!(p.s.is_verified(), "{:?}", p.s.phase());
        assert_eq!(p.s.stats().ice_restarts, 2);
    }
    assert!(
        sim.a.played_frames > played + 350,
        "{played} {}",
        sim.a.played_frames
    );
    let a_checks = format!("{}:{}", new_b.ufrag, new_a.ufrag);
    let b_checks = format!("{}:{}", new_a.ufrag, new_b.ufrag);
    assert!(sim.usernames.contains(&a_checks), "{:?}", sim.usernames);
    assert!(sim.usernames.contains(&b_checks), "{:?}", sim.usernames);
    assert!(
        !sim.usernames
            .iter()
            .any(|u| u.contains(&old_a.ufrag) || u.contains(&old_b.ufrag)),
        "old credentials after the restart: {:?}",
        sim.usernames
    );
}

/// A restart that brings another fingerprint is refused and changes nothing.
#[test]
fn ice_restart_with_another_fingerprint_is_refused() {
    use shieldcall_media::session::SessionError;
    let mut sim = setup(false);
    sim.run_for(Duration::from_secs(1));
    let now = sim.now;
    let mut forged = sim.a.s.restart_ice(now).unwrap();
    let mut dtls = forged.dtls.unwrap();
    let real = dtls.fingerprint;
    let mut bytes = *dtls.fingerprint.as_bytes();
    bytes[7] ^= 0x10;
    dtls.fingerprint = Fingerprint::from_bytes(&bytes).unwrap();
    forged.dtls = Some(dtls);
    let err = sim.b.s.accept_remote_restart(&forged, now).unwrap_err();
    match err {
        SessionError::RestartChangesFingerprint { expected, offered } => {
            assert_eq!(expected, real);
            assert_eq!(offered, dtls.fingerprint);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.b.s.stats().ice_restarts, 0);
    // Before the remote is set there is nothing to restart.
    let mut fresh = MediaSession::new(
        SessionConfig::new(
            JingleRole::Initiator,
            vec!["127.0.0.1:40010".parse().unwrap()],
            9,
        ),
        now,
    )
    .unwrap();
    assert!(matches!(
        fresh.restart_ice(now),
        Err(SessionError::NotStarted)
    ));
}

/// Must-show 4 in miniature: the initiator's address changes during the call (the old one is
/// gone), an ICE restart with the new host candidate brings the audio back within 2 s, over
/// the same DTLS session (verified once, same fingerprint).
#[test]
fn a_new_host_address_is_recovered_by_an_ice_restart() {
    let mut sim = setup(false);
    sim.run_for(Duration::from_secs(2));
    let old = sim.a.addr;
    let new: SocketAddr = "127.0.0.1:10001".parse().unwrap();
    sim.a.addr = new;
    sim.a.s.set_host_addrs(vec![new]).unwrap();
    let now = sim.now;
    let ta = sim.a.s.restart_ice(now).unwrap();
    let addrs: Vec<SocketAddr> = ta.candidates.iter().map(|c| c.addr()).collect();
    assert_eq!(addrs, vec![new]);
    sim.b.s.accept_remote_restart(&ta, now).unwrap();
    let tb = sim.b.s.restart_ice(now).unwrap();
    sim.a.s.accept_remote_restart(&tb, now).unwrap();
    let got = sim.b.s.stats().packets_received;
    sim.run_for(Duration::from_secs(2));
    let resumed = sim.b.s.stats().packets_received - got;
    assert!(
        resumed > 50,
        "{resumed} packets in the 2 s after the restart"
    );
    for p in [&sim.a, &sim.b] {
        assert!(p.s.is_verified(), "{:?}", p.s.phase());
        let verified = p
            .events
            .iter()
            .filter(|e| matches!(e, MediaEvent::DtlsVerified { .. }))
            .count();
        assert_eq!(verified, 1, "one DTLS session: {:?}", p.events);
    }
    let pair = sim.b.s.stats().selected_pair.unwrap();
    assert_eq!(pair.remote_addr, new, "{pair:?} (old {old})");
}
