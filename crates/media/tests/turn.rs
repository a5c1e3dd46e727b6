//! STUN and TURN against a real coturn on 127.0.0.1 (Debian's `turnserver`, started by
//! `shieldcall_localserver::Coturn` with time-limited REST credentials): allocations over UDP,
//! TCP and TLS (the certificate checked against coturn's throw-away CA), a whole call over a
//! relay, and wrong credentials that neither hang nor end a call that has another way.
//!
//! coturn refuses peers on loopback addresses unless told otherwise (`allow-loopback-peers`,
//! which `CoturnConfig` does not set), so the calls put the side that is not relayed on this
//! machine's first non-loopback IPv4 address (`usable_host_ips`); coturn itself stays on
//! 127.0.0.1. Without such an address the call tests fail and say so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use shieldcall_localserver::process::free_port;
use shieldcall_localserver::{Coturn, CoturnConfig, WorkDir};
use shieldcall_media::audio::sink::WavSink;
use shieldcall_media::audio::source::ToneSource;
use shieldcall_media::driver::{
    CallReport, DriverCommand, MediaEndpoint, MediaNetConfig, MediaUpdate, RunOptions, StartOptions,
};
use shieldcall_media::session::FailReason;
use shieldcall_media::{
    CandidateType, IceServer, IceServerKind, IceServerState, IceTransport, JingleRole, MediaEvent,
    RelayTransport, Secret,
};
use tokio::sync::mpsc;

use common::{LOOPBACK, analyse};

/// Every test ends within this bound, whatever happens.
const TEST_BOUND: Duration = Duration::from_secs(40);

struct Turn {
    server: Coturn,
    _dir: WorkDir,
}

/// A coturn on 127.0.0.1 with ports of its own (its "alternative" ports, one above each, are
/// left free as well).
fn coturn() -> Turn {
    let port = free_port().unwrap();
    let _alt = free_port().unwrap();
    let tls = free_port().unwrap();
    let _alt_tls = free_port().unwrap();
    let dir = WorkDir::create("media-turn", false).unwrap();
    let config = CoturnConfig {
        port,
        tls_port: Some(tls),
        ..CoturnConfig::default()
    };
    let server = Coturn::launch(dir.path(), &config, None).unwrap();
    Turn { server, _dir: dir }
}

impl Turn {
    fn ice_server(&self, transport: RelayTransport, password: Option<&str>) -> IceServer {
        let creds = self.server.credentials("alice", Duration::from_secs(600));
        let (kind, t, port) = match transport {
            RelayTransport::Udp => (IceServerKind::Turn, IceTransport::Udp, self.server.port()),
            RelayTransport::Tcp => (IceServerKind::Turn, IceTransport::Tcp, self.server.port()),
            RelayTransport::Tls => (
                IceServerKind::Turns,
                IceTransport::Tcp,
                self.server.tls_port().unwrap(),
            ),
        };
        IceServer {
            kind,
            host: "127.0.0.1".into(),
            port,
            transport: t,
            username: Some(creds.username),
            password: Some(Secret::new(password.unwrap_or(&creds.password))),
            expires: None,
        }
    }

    fn stun(&self) -> IceServer {
        IceServer {
            kind: IceServerKind::Stun,
            host: "127.0.0.1".into(),
            port: self.server.port(),
            transport: IceTransport::Udp,
            username: None,
            password: None,
            expires: None,
        }
    }

    fn net(&self, servers: Vec<IceServer>, relay_only: bool) -> MediaNetConfig {
        MediaNetConfig {
            ice_servers: servers,
            ca_file: self.server.ca_file(),
            relay_only,
        }
    }
}

/// The first non-loopback IPv4 address of this machine (coturn relays only to those).
fn outside_ip() -> IpAddr {
    shieldcall_media::driver::usable_host_ips()
        .unwrap()
        .into_iter()
        .find(IpAddr::is_ipv4)
        .expect("the relayed call needs a non-loopback IPv4 address on this machine")
}

/// Runs a lone endpoint (no peer) until it reports a candidate of `kind`, then stops it.
async fn gather_until(ep: MediaEndpoint, kind: CandidateType) -> (CallReport, Option<Duration>) {
    let (events, mut rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let t0 = Instant::now();
    let run = tokio::spawn(ep.run(
        Box::new(shieldcall_media::audio::source::SilenceSource),
        Box::new(shieldcall_media::audio::sink::NullSink::default()),
        RunOptions {
            connect_timeout: Duration::from_secs(15),
            events: Some(events),
            stop: Some(stop_rx),
            ..Default::default()
        },
    ));
    let mut found = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        match e {
            MediaEvent::LocalCandidate(c) if c.kind == kind => {
                found = Some(t0.elapsed());
                break;
            }
            MediaEvent::GatheringComplete => break,
            _ => {}
        }
    }
    let _ = stop.send(());
    (run.await.unwrap().unwrap(), found)
}

async fn allocates_over(transport: RelayTransport) {
    let turn = coturn();
    let net = turn.net(vec![turn.ice_server(transport, None)], false);
    let ep = MediaEndpoint::bind_with(JingleRole::Initiator, &[LOOPBACK], net)
        .await
        .unwrap();
    let (report, found) = gather_until(ep, CandidateType::Relay).await;
    let after = found.unwrap_or_else(|| {
        panic!(
            "no relayed candidate over {transport}: {:?}\n{}",
            report.stats.ice_servers,
            turn.server.log()
        )
    });
    let s = &report.stats;
    let at = match transport {
        RelayTransport::Udp => s.gathering.relay_udp,
        RelayTransport::Tcp => s.gathering.relay_tcp,
        RelayTransport::Tls => s.gathering.relay_tls,
    };
    assert!(at.is_some(), "{:?}", s.gathering);
    let [server] = &s.ice_servers[..] else {
        panic!("{:?}", s.ice_servers)
    };
    let IceServerState::Ready { address, .. } = &server.state else {
        panic!("{server:?}")
    };
    // coturn relays from its listening address.
    assert_eq!(address.ip(), IpAddr::from([127, 0, 0, 1]));
    eprintln!(
        "TURN over {transport}: relayed {address} after {:.1} ms (stats: {:.1} ms)",
        after.as_secs_f64() * 1e3,
        at.unwrap_or_default().as_secs_f64() * 1e3
    );
    // No secret anywhere in what the stats or events say.
    let shown = format!("{:?} {:?}", report.stats, report.events);
    let password = turn
        .server
        .credentials("alice", Duration::from_secs(600))
        .password;
    assert!(!shown.contains(&password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocates_over_udp() {
    tokio::time::timeout(TEST_BOUND, allocates_over(RelayTransport::Udp))
        .await
        .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocates_over_tcp() {
    tokio::time::timeout(TEST_BOUND, allocates_over(RelayTransport::Tcp))
        .await
        .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocates_over_tls_checking_the_certificate() {
    tokio::time::timeout(TEST_BOUND, allocates_over(RelayTransport::Tls))
        .await
        .expect("bounded");
}

/// A CA that did not sign coturn's certificate: the TLS allocation fails, naming the server and
/// what TLS said, and does not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_wrong_ca_fails_fast_and_says_why() {
    tokio::time::timeout(TEST_BOUND, async {
        let turn = coturn();
        let other = coturn(); // its CA signed another certificate
        let mut net = turn.net(vec![turn.ice_server(RelayTransport::Tls, None)], false);
        net.ca_file = other.server.ca_file();
        let ep = MediaEndpoint::bind_with(JingleRole::Initiator, &[LOOPBACK], net)
            .await
            .unwrap();
        let t0 = Instant::now();
        let (report, found) = gather_until(ep, CandidateType::Relay).await;
        assert!(found.is_none());
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let failed = report.events.iter().find_map(|e| match e {
            MediaEvent::IceServerFailed { server, reason } => Some((server, reason)),
            _ => None,
        });
        let (server, reason) = failed.expect("IceServerFailed");
        assert!(server.starts_with("turns:127.0.0.1:"), "{server}");
        assert!(
            reason.contains("TLS") && reason.contains("certificate"),
            "{reason}"
        );
    })
    .await
    .expect("bounded");
}

/// STUN Binding from the media socket: on loopback coturn sees our own address, so there is no
/// new candidate, but the server answered (and says so in the stats).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_binding_answers_with_our_address() {
    tokio::time::timeout(TEST_BOUND, async {
        let turn = coturn();
        let net = turn.net(vec![turn.stun()], false);
        let mut ep = MediaEndpoint::bind_with(JingleRole::Initiator, &[LOOPBACK], net)
            .await
            .unwrap();
        let host = ep.session().local_addrs()[0];
        let (report, _) = gather_until(ep, CandidateType::ServerReflexive).await;
        let [server] = &report.stats.ice_servers[..] else {
            panic!("{:?}", report.stats.ice_servers)
        };
        match &server.state {
            IceServerState::Ready { address, after } => {
                assert_eq!(*address, host);
                eprintln!("STUN answered after {:.1} ms", after.as_secs_f64() * 1e3);
            }
            other => panic!("{other:?}"),
        }
        assert!(report.events.contains(&MediaEvent::GatheringComplete));
    })
    .await
    .expect("bounded");
}

struct Side {
    role: JingleRole,
    ips: Vec<IpAddr>,
    net: MediaNetConfig,
    tone: f64,
}

struct Outcome {
    reports: [CallReport; 2],
    wavs: [std::path::PathBuf; 2],
}

/// A call between two endpoints configured only through Jingle-shaped parameters: each side's
/// candidates found while running (LocalCandidate) are trickled to the other
/// (AddRemoteCandidate), as the client does with `transport-info`.
async fn relayed_call(name: &str, sides: [Side; 2], media: Duration, connect: Duration) -> Outcome {
    let dir = common::temp_dir(name);
    let mut eps = Vec::new();
    for s in &sides {
        eps.push(
            MediaEndpoint::bind_with(s.role, &s.ips, s.net.clone())
                .await
                .unwrap(),
        );
    }
    let [mut a, mut b]: [MediaEndpoint; 2] = eps.try_into().ok().unwrap();
    common::exchange(&mut a, &mut b);

    let wavs = [dir.join("a-heard.wav"), dir.join("b-heard.wav")];
    let (updates, mut rx) = mpsc::unbounded_channel();
    let options = StartOptions {
        connect_timeout: connect,
        media_duration: Some(media),
        hold_media: false,
    };
    let mut handles = Vec::new();
    for (i, ep) in [a, b].into_iter().enumerate() {
        handles.push(ep.start(
            Box::new(ToneSource::new(sides[i].tone, 0.5)),
            Box::new(WavSink::create(&wavs[i]).unwrap()),
            options.clone(),
            updates.clone(),
            i,
        ));
    }
    drop(updates);
    let mut reports: [Option<CallReport>; 2] = [None, None];
    while let Some((i, u)) = rx.recv().await {
        match u {
            MediaUpdate::Event(MediaEvent::LocalCandidate(c)) => {
                handles[1 - i].send(DriverCommand::AddRemoteCandidate(c));
            }
            MediaUpdate::Event(_) => {}
            MediaUpdate::Ended(r) => {
                reports[i] = Some((*r).unwrap());
                if reports.iter().all(Option::is_some) {
                    break;
                }
            }
        }
    }
    Outcome {
        reports: reports.map(Option::unwrap),
        wavs,
    }
}

/// Must-show: a whole call where one side uses relayed candidates only (TURN over UDP, then TCP
/// and TLS): the other side talks to coturn's relayed address, both tones arrive, and the
/// stats name the relayed pair, its transport and the server.
async fn call_through_relay(transport: RelayTransport) {
    let turn = coturn();
    let outside = outside_ip();
    let sides = [
        Side {
            role: JingleRole::Initiator,
            ips: vec![LOOPBACK],
            net: turn.net(vec![turn.ice_server(transport, None)], true),
            tone: 440.0,
        },
        Side {
            role: JingleRole::Responder,
            ips: vec![outside],
            net: MediaNetConfig::default(),
            tone: 880.0,
        },
    ];
    let name = format!("relay-{transport}");
    let out = relayed_call(
        &name,
        sides,
        Duration::from_secs(3),
        Duration::from_secs(15),
    )
    .await;
    let [a, b] = &out.reports;
    for r in [a, b] {
        assert!(
            r.failure.is_none(),
            "{:?}\n{}",
            r.failure,
            turn.server.log()
        );
    }
    let pair = a.stats.selected_pair.clone().expect("selected pair");
    assert_eq!(pair.local, CandidateType::Relay, "{pair:?}");
    let relay = pair.relay.clone().expect("relay path");
    assert_eq!(relay.transport, transport);
    assert!(relay.server.contains("127.0.0.1"), "{relay:?}");
    let b_pair = b.stats.selected_pair.clone().expect("responder's pair");
    assert_eq!(
        b_pair.remote_addr, pair.local_addr,
        "the responder sends to the relay"
    );
    assert_eq!(b_pair.remote, CandidateType::Relay, "{b_pair:?}");
    // The relay-only side announced no host candidate: its only local candidates were relayed.
    for e in &a.events {
        if let MediaEvent::LocalCandidate(c) = e {
            assert_eq!(c.kind, CandidateType::Relay, "{c:?}");
        }
    }
    let (f_a, n_a) = analyse(&out.wavs[0]);
    let (f_b, n_b) = analyse(&out.wavs[1]);
    assert!((f_a - 880.0).abs() <= 5.0, "relayed side heard {f_a} Hz");
    assert!((f_b - 440.0).abs() <= 5.0, "host side heard {f_b} Hz");
    assert!(n_a >= 130 && n_b >= 130, "{n_a} {n_b} frames recorded");
    let ratio = |sent: u64, got: u64| got as f64 / sent.max(1) as f64;
    let to_b = ratio(a.frames_from_source, b.stats.packets_received);
    let to_a = ratio(b.frames_from_source, a.stats.packets_received);
    assert!(to_a >= 0.9 && to_b >= 0.9, "{to_a} {to_b}");
    eprintln!(
        "relayed call over {transport}: pair {pair}; relay gathered after {:?}, ICE connected after {:?} (other side {:?}), DTLS verified after {:?}, first audio after {:?}",
        a.stats.gathering,
        a.stats.ice_connected,
        b.stats.ice_connected,
        a.stats.dtls_connected,
        a.stats.first_audio
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_through_a_udp_relay_carries_both_tones() {
    tokio::time::timeout(TEST_BOUND, call_through_relay(RelayTransport::Udp))
        .await
        .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_through_a_tcp_relay_carries_both_tones() {
    tokio::time::timeout(TEST_BOUND, call_through_relay(RelayTransport::Tcp))
        .await
        .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_through_a_tls_relay_carries_both_tones() {
    tokio::time::timeout(TEST_BOUND, call_through_relay(RelayTransport::Tls))
        .await
        .expect("bounded");
}

/// Must-show 5: a wrong TURN secret does not hang or end a call that has host candidates: it
/// connects over them, and the stats name the TURN server and why it gave nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_still_connects_over_host_candidates() {
    tokio::time::timeout(TEST_BOUND, async {
        let turn = coturn();
        let bad = turn.ice_server(RelayTransport::Udp, Some("not-the-password"));
        let sides = [
            Side {
                role: JingleRole::Initiator,
                ips: vec![LOOPBACK],
                net: turn.net(vec![bad], false),
                tone: 440.0,
            },
            Side {
                role: JingleRole::Responder,
                ips: vec![LOOPBACK],
                net: MediaNetConfig::default(),
                tone: 880.0,
            },
        ];
        let out = relayed_call(
            "wrong-secret",
            sides,
            Duration::from_secs(2),
            Duration::from_secs(8),
        )
        .await;
        let [a, b] = &out.reports;
        assert!(
            a.failure.is_none() && b.failure.is_none(),
            "{:?} {:?}",
            a.failure,
            b.failure
        );
        let pair = a.stats.selected_pair.clone().unwrap();
        assert_eq!(pair.local, CandidateType::Host);
        let [server] = &a.stats.ice_servers[..] else {
            panic!("{:?}", a.stats.ice_servers)
        };
        assert!(server.label.starts_with("turn:127.0.0.1:"), "{server:?}");
        match &server.state {
            IceServerState::Failed(why) => assert!(why.contains("401"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{:?}", a).contains("not-the-password"));
        let (f_b, _) = analyse(&out.wavs[1]);
        assert!((f_b - 440.0).abs() <= 5.0, "{f_b}");
    })
    .await
    .expect("bounded");
}

/// Nothing but a relay with a wrong secret: the call ends at its connect timeout (no hang), and
/// the reason names the TURN server, never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_with_a_wrong_secret_fails_naming_the_server() {
    tokio::time::timeout(TEST_BOUND, async {
        let turn = coturn();
        let bad = turn.ice_server(RelayTransport::Udp, Some("not-the-password"));
        let sides = [
            Side {
                role: JingleRole::Initiator,
                ips: vec![LOOPBACK],
                net: turn.net(vec![bad], true),
                tone: 440.0,
            },
            Side {
                role: JingleRole::Responder,
                ips: vec![LOOPBACK],
                net: MediaNetConfig::default(),
                tone: 880.0,
            },
        ];
        let t0 = Instant::now();
        let out = relayed_call(
            "wrong-secret-only",
            sides,
            Duration::from_secs(1),
            Duration::from_secs(3),
        )
        .await;
        // Nothing could connect without a relayed candidate: that side fails at once
        // (`NoRelay`, not `ConnectTimeout`); the run ends when the other side's 3 s connect
        // timeout has passed too.
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        let failure = out.reports[0].failure.clone().expect("a failure");
        let FailReason::NoRelay { ice_servers } = &failure else {
            panic!("{failure:?}")
        };
        assert_eq!(ice_servers.len(), 1, "{ice_servers:?}");
        let line = failure.to_string();
        assert!(
            line.starts_with(
                "relayed candidates only, and no TURN server gave one; turn:127.0.0.1:"
            ),
            "{line}"
        );
        assert!(line.contains("authentication failed (401"), "{line}");
        assert!(!line.contains("not-the-password"));
    })
    .await
    .expect("bounded");
}

/// A TURN server nobody listens on (TCP refused, UDP unanswered): bounded, named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_turn_servers_fail_within_their_bounds() {
    tokio::time::timeout(TEST_BOUND, async {
        let port = free_port().unwrap();
        let dead = |transport: IceTransport| IceServer {
            kind: IceServerKind::Turn,
            host: "127.0.0.1".into(),
            port,
            transport,
            username: Some("1:alice".into()),
            password: Some(Secret::new("x")),
            expires: None,
        };
        let net = MediaNetConfig {
            ice_servers: vec![dead(IceTransport::Udp), dead(IceTransport::Tcp)],
            ..Default::default()
        };
        let ep = MediaEndpoint::bind_with(JingleRole::Initiator, &[LOOPBACK], net)
            .await
            .unwrap();
        let t0 = Instant::now();
        let (report, found) = gather_until(ep, CandidateType::Relay).await;
        assert!(found.is_none());
        assert!(report.events.contains(&MediaEvent::GatheringComplete));
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(11), "{took:?}");
        for s in &report.stats.ice_servers {
            assert!(matches!(s.state, IceServerState::Failed(_)), "{s:?}");
        }
        eprintln!(
            "unreachable servers given up after {took:?}: {:?}",
            report.stats.ice_servers
        );
    })
    .await
    .expect("bounded");
}
