//! Calls across NATs (issue 14), in the network-namespace lab (docs/lab.md): Prosody with
//! `mod_turn_external` and coturn on the lab's internet segment, `shieldcall` in the home
//! networks behind their NAT routers. Needs root, iproute2, nftables, prosody and coturn
//! (`scripts/test` installs them); without them the tests fail, never skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use shieldcall_localserver::cli::CliAccount;
use shieldcall_localserver::lab::{Home, Lab, Namespace, NatKind};
use shieldcall_localserver::{
    Coturn, CoturnConfig, Ejabberd, EjabberdConfig, InNamespace, Prosody, ProsodyConfig, StunDisco,
    StunDiscoService, StunDiscoTransport, StunDiscoType, TurnExternal, process,
};

const BIN: &str = env!("CARGO_BIN_EXE_shieldcall");
const BOUND: Duration = Duration::from_secs(30);

/// The XMPP server of a [`World`], handing out coturn's services (XEP-0215).
enum Xmpp {
    /// Prosody 0.12 with `mod_turn_external`.
    Prosody(Prosody),
    /// ejabberd 23.01 with `mod_stun_disco`.
    Ejabberd(Ejabberd),
}

impl Xmpp {
    fn server(&self) -> String {
        match self {
            Xmpp::Prosody(p) => p.server(),
            Xmpp::Ejabberd(e) => e.server(),
        }
    }

    fn ca_file(&self) -> std::path::PathBuf {
        match self {
            Xmpp::Prosody(p) => p.ca_file(),
            Xmpp::Ejabberd(e) => e.ca_file(),
        }
    }

    fn log(&self) -> String {
        match self {
            Xmpp::Prosody(p) => p.log(),
            Xmpp::Ejabberd(e) => e.log(),
        }
    }

    fn register(&self, user: &str, password: &str) {
        match self {
            Xmpp::Prosody(p) => p.register(user, password).unwrap(),
            Xmpp::Ejabberd(e) => e.register(user, password).unwrap(),
        }
    }
}

/// The lab, coturn and a TLS XMPP server handing out coturn's services, on the internet
/// segment.
pub(crate) struct World {
    xmpp: Xmpp,
    coturn: Coturn,
    lab: Lab,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    /// Run each `shieldcall` with `--log trace`, its standard error to `DIR/USER.log`.
    trace: bool,
}

/// What a test changes in the servers of its [`World`].
#[derive(Default)]
pub(crate) struct Servers {
    /// coturn's settings (its addresses are the lab's).
    coturn: CoturnConfig,
    /// The secret the XMPP server signs TURN credentials with, when not coturn's (a
    /// misconfiguration).
    xmpp_secret: Option<String>,
    /// ejabberd instead of Prosody.
    ejabberd: bool,
}

impl World {
    pub(crate) fn new(kind: NatKind, users: &[&str]) -> World {
        World::with(kind, users, Servers::default())
    }

    pub(crate) fn with(kind: NatKind, users: &[&str], servers: Servers) -> World {
        let lab = Lab::build(kind).unwrap_or_else(|e| panic!("the lab: {e}"));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let coturn_config = CoturnConfig {
            addresses: vec![lab.server()],
            ..servers.coturn
        };
        let coturn = Coturn::launch(
            &dir.join("coturn"),
            &coturn_config,
            Some((&lab, Namespace::Internet)),
        )
        .unwrap_or_else(|e| panic!("coturn: {e}"));
        let secret = servers
            .xmpp_secret
            .unwrap_or_else(|| coturn.secret().to_owned());
        let in_lab = InNamespace {
            name: lab.name(Namespace::Internet),
            address: lab.server(),
        };
        let xmpp = if servers.ejabberd {
            let service = |kind, transport, port, restricted| StunDiscoService {
                host: lab.server().to_string(),
                port,
                kind,
                transport,
                restricted,
            };
            let (p, tls) = (coturn.port(), coturn.tls_port().unwrap());
            let config = EjabberdConfig {
                stun_disco: Some(StunDisco {
                    secret,
                    services: vec![
                        service(StunDiscoType::Stun, StunDiscoTransport::Udp, p, false),
                        service(StunDiscoType::Turn, StunDiscoTransport::Udp, p, true),
                        service(StunDiscoType::Turn, StunDiscoTransport::Tcp, p, true),
                        service(StunDiscoType::Turns, StunDiscoTransport::Tcp, tls, true),
                    ],
                    credentials_lifetime: Duration::from_secs(600),
                }),
                namespace: Some(in_lab),
            };
            let dir = dir.join("ejabberd");
            std::fs::create_dir_all(&dir).unwrap();
            Xmpp::Ejabberd(
                Ejabberd::launch_with(&dir, &config)
                    .unwrap_or_else(|e| panic!("ejabberd in the lab: {e}")),
            )
        } else {
            let turn = TurnExternal {
                secret,
                host: lab.server().to_string(),
                port: coturn.port(),
                tcp: true,
                tls_port: coturn.tls_port(),
                ttl: Duration::from_secs(600),
            };
            let config = ProsodyConfig {
                tls: true,
                turn: Some(turn),
                namespace: Some(in_lab),
                ..ProsodyConfig::default()
            };
            Xmpp::Prosody(
                Prosody::launch(&dir.join("prosody"), &config, &process::never)
                    .unwrap_or_else(|e| panic!("Prosody in the lab: {e}")),
            )
        };
        for u in users {
            xmpp.register(u, &format!("pw-{u}"));
        }
        // Clients trust both throw-away CAs: the XMPP server's and coturn's (turns).
        let mut bundle = std::fs::read(xmpp.ca_file()).unwrap();
        bundle.extend(std::fs::read(coturn.ca_file().unwrap()).unwrap());
        std::fs::write(dir.join("ca-bundle.pem"), bundle).unwrap();
        World {
            xmpp,
            coturn,
            lab,
            _dir: tmp,
            dir,
            trace: false,
        }
    }
}

/// A failed test shows what coturn saw (its log names each allocation, permission and
/// relayed send): the first place to look when a call across the lab does not connect.
impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- coturn's log ---\n{}", self.coturn.log());
            let xmpp = self.xmpp.log();
            let tail: Vec<&str> = xmpp.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- the XMPP server's log (its end) ---\n{}",
                tail.join("\n")
            );
        }
    }
}

impl World {
    fn log_of(&self, user: &str) -> std::path::PathBuf {
        self.dir.join(format!("{user}.log"))
    }

    /// `shieldcall ARGS` for `user`, run in `home`'s host namespace, trusting the lab's CA.
    fn spawn(&self, user: &str, home: Home, args: &[&str]) -> Running {
        let jid = format!("{user}@localhost");
        let (data, password, server) = (
            self.dir.join(user),
            format!("pw-{user}"),
            self.xmpp.server(),
        );
        let cli = CliAccount {
            exe: Path::new(BIN),
            server: &server,
            insecure_loopback: false,
            jid: &jid,
            data: &data,
            password: &password,
        };
        let mut c = cli.command_in(self.lab.exec(Namespace::Host(home)), args);
        c.env("SSL_CERT_FILE", self.dir.join("ca-bundle.pem"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if self.trace {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_of(user))
                .unwrap();
            c.env("SHIELDCALL_LOG", "trace").stderr(log);
        }
        let mut child = c.spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        process::forward_lines(out, move |l| tx.send(l).is_ok(), || {});
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }
}

/// A `shieldcall` process in the lab, killed when dropped.
pub(crate) struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub(crate) seen: Vec<Value>,
}

impl Running {
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!("no {what} within {BOUND:?}; seen: {:?}", self.seen);
            };
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            self.seen.push(v.clone());
            if pred(&v) {
                return v;
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client behind a NAT logs in to the server on the internet segment over TLS and learns
/// the server's STUN and TURN services (XEP-0215, Prosody's mod_turn_external with coturn's
/// secret); nothing it prints carries a TURN password.
#[test]
fn a_client_behind_a_nat_signs_in_and_discovers_the_turn_service() {
    let w = World::new(NatKind::EndpointIndependent, &["alice"]);
    let mut alice = w.spawn("alice", Home::A, &["listen", "--reject"]);
    let online = alice.wait_for("online", |v| v["event"] == "online");
    assert!(
        online["jid"]
            .as_str()
            .unwrap()
            .starts_with("alice@localhost/")
    );
    let ice = alice.wait_for("ice-servers", |v| v["event"] == "ice-servers");
    let servers: Vec<&str> = ice["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let host = w.lab.server();
    let port = w.coturn.port();
    for want in [
        format!("stun:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ] {
        assert!(
            servers.contains(&want.as_str()),
            "{want} not in {servers:?}"
        );
    }
    let printed = format!("{:?}", alice.seen);
    assert!(!printed.contains(w.coturn.secret()), "{printed}");
    assert!(!printed.to_lowercase().contains("password"), "{printed}");
}

/// `shieldcall fingerprint` of `user` (offline): its device id and URI.
fn device(w: &World, user: &str) -> (u64, String) {
    let mut r = w.spawn(user, Home::A, &["fingerprint"]);
    let v = r.wait_for("fingerprint", |v| v["event"] == "fingerprint");
    let _ = r.child.wait();
    (
        v["device_id"].as_u64().unwrap(),
        v["uri"].as_str().unwrap().to_owned(),
    )
}

/// `user` verifies a device by its URI (offline, as a QR scan).
fn trust(w: &World, user: &str, uri: &str) {
    let mut r = w.spawn(user, Home::A, &["trust", uri]);
    r.wait_for("trusted", |v| v["event"] == "trusted");
    let _ = r.child.wait();
}

/// What one verified call across the lab showed: each side's shields, stats and what it heard.
pub(crate) struct Crossed {
    pub(crate) alice: Running,
    pub(crate) bob: Running,
    alice_heard: shieldcall_localserver::wav::Recording,
    bob_heard: shieldcall_localserver::wav::Recording,
}

/// A call across the lab under way: alice listens in home A, bob calls from home B.
pub(crate) struct Calling {
    alice: Running,
    bob: Running,
    wavs: [std::path::PathBuf; 2],
}

/// Alice (home A, `listen --auto-answer`, 880 Hz) and bob (home B, `call`, 440 Hz for
/// `seconds`) verified each other; bob calls alice. `extra` goes to both.
pub(crate) fn start_call_across(w: &World, extra: &[&str], seconds: u32) -> Calling {
    start_call_from(w, Home::B, extra, seconds)
}

/// [`start_call_across`] with bob in `bob_home` (home A too: a call on one network).
pub(crate) fn start_call_from(w: &World, bob_home: Home, extra: &[&str], seconds: u32) -> Calling {
    let (_, alice_uri) = device(w, "alice");
    let (_, bob_uri) = device(w, "bob");
    trust(w, "alice", &bob_uri);
    trust(w, "bob", &alice_uri);
    let (a_wav, b_wav) = (w.dir.join("alice.wav"), w.dir.join("bob.wav"));
    let (a_wav_s, b_wav_s) = (a_wav.display().to_string(), b_wav.display().to_string());
    let mut listen = vec![
        "listen",
        "--auto-answer",
        "--tone",
        "880",
        "--record",
        &a_wav_s,
    ];
    listen.extend_from_slice(extra);
    let mut alice = w.spawn("alice", Home::A, &listen);
    alice.wait_for("online", |v| v["event"] == "online");
    alice.wait_for("ice-servers", |v| v["event"] == "ice-servers");
    let duration = seconds.to_string();
    let mut call = vec![
        "call",
        "alice@localhost",
        "--tone",
        "440",
        "--record",
        &b_wav_s,
        "--duration",
        &duration,
    ];
    call.extend_from_slice(extra);
    let bob = w.spawn("bob", bob_home, &call);
    Calling {
        alice,
        bob,
        wavs: [a_wav, b_wav],
    }
}

impl Calling {
    /// Waits until bob's call is connected.
    fn connected(&mut self) {
        self.bob.wait_for("connected", |v| {
            v["event"] == "call" && v["state"] == "connected"
        });
    }

    /// Waits for the end of a call that cannot connect: both sides end it with
    /// `connectivity-error`; returns the `text` of bob's end, then alice's.
    fn both_fail_to_connect(&mut self, started: Instant) -> [String; 2] {
        [("bob", &mut self.bob), ("alice", &mut self.alice)].map(|(who, r)| {
            let ended = r.wait_for("the end of the call", |v| v["event"] == "ended");
            eprintln!("{who}'s call ended after {:?}: {ended}", started.elapsed());
            assert_eq!(ended["reason"], "connectivity-error", "{who}: {ended}");
            ended["text"].as_str().unwrap().to_owned()
        })
    }

    /// Waits for the end of the call on both sides and reads what each heard.
    pub(crate) fn finish(mut self) -> Crossed {
        self.bob.wait_for("stats", |v| v["event"] == "stats");
        self.alice.wait_for("stats", |v| v["event"] == "stats");
        let [a_wav, b_wav] = &self.wavs;
        Crossed {
            alice_heard: shieldcall_localserver::wav::Recording::read(a_wav).unwrap(),
            bob_heard: shieldcall_localserver::wav::Recording::read(b_wav).unwrap(),
            alice: self.alice,
            bob: self.bob,
        }
    }
}

/// [`start_call_across`] for 3 s, to its end.
pub(crate) fn verified_call_across(w: &World, extra: &[&str]) -> Crossed {
    start_call_across(w, extra, 3).finish()
}

pub(crate) fn events<'a>(r: &'a Running, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    r.seen.iter().filter(move |v| v["event"] == name)
}

/// Both sides verified, each heard the other's tone, and each side's selected path.
pub(crate) fn check_verified_and_heard(c: &Crossed) -> (Value, Value) {
    for (who, r) in [("alice", &c.alice), ("bob", &c.bob)] {
        let shields: Vec<&Value> = events(r, "shield").map(|v| &v["state"]).collect();
        assert_eq!(shields, ["verified"], "{who}: {:?}", r.seen);
    }
    for (who, heard, hz) in [
        ("alice", &c.alice_heard, 440.0),
        ("bob", &c.bob_heard, 880.0),
    ] {
        let (with, of) = heard.tone_frames(hz);
        assert!(
            of > 50 && with * 10 >= of * 8,
            "{who} heard {hz} Hz in {with} of {of} frames"
        );
    }
    let path = |r: &Running| events(r, "stats").next().unwrap()["path"].clone();
    (path(&c.alice), path(&c.bob))
}

/// Must-show 1: both ends behind endpoint-independent NATs call each other verified, with
/// audio both ways, over server-reflexive candidates (no relay).
#[test]
fn a_verified_call_between_two_nats_goes_over_server_reflexive_candidates() {
    let w = World::new(NatKind::EndpointIndependent, &["alice", "bob"]);
    let c = verified_call_across(&w, &[]);
    let (a, b) = check_verified_and_heard(&c);
    for (who, p) in [("alice", &a), ("bob", &b)] {
        assert!(p["relay"].is_null(), "{who} went through a relay: {p}");
        let kinds = [p["local"].as_str().unwrap(), p["remote"].as_str().unwrap()];
        assert!(
            kinds.iter().any(|k| matches!(*k, "srflx" | "prflx")),
            "{who}: no reflexive candidate in the pair {p}"
        );
        assert!(
            !kinds.contains(&"host"),
            "{who}: a host pair cannot cross the NATs: {p}"
        );
    }
}

/// Must-show 2: behind symmetric NATs no reflexive pair works; the call goes through the TURN
/// server, still verified, audio both ways.
#[test]
fn a_verified_call_between_two_symmetric_nats_goes_through_the_relay() {
    let w = World::new(NatKind::Symmetric, &["alice", "bob"]);
    let c = verified_call_across(&w, &[]);
    let (a, b) = check_verified_and_heard(&c);
    let relayed = [&a, &b]
        .iter()
        .any(|p| p["local"] == "relay" || p["remote"] == "relay");
    assert!(relayed, "no relay in {a} / {b}");
}

/// Must-show 2, relay: behind symmetric NATs, with relayed candidates only (`--relay-only`),
/// the call goes through coturn over UDP, verified, audio both ways. Both sides log everything
/// (`--log trace`, tens of thousands of lines): not one names a password or coturn's secret.
#[test]
fn a_relay_only_call_between_two_symmetric_nats_is_verified() {
    let mut w = World::new(NatKind::Symmetric, &["alice", "bob"]);
    w.trace = true;
    let c = verified_call_across(&w, &["--relay-only"]);
    for who in ["alice", "bob"] {
        let log = std::fs::read_to_string(w.log_of(who)).unwrap();
        assert!(
            log.lines().count() > 1000 && log.contains("TRACE"),
            "{who}: no trace log ({} lines)",
            log.lines().count()
        );
        let leaked: Vec<&str> = log
            .lines()
            .filter(|l| l.to_lowercase().contains("password") || l.contains(w.coturn.secret()))
            .collect();
        assert!(
            leaked.is_empty(),
            "{who} logged: {:?}",
            &leaked[..leaked.len().min(3)]
        );
    }
    let (a, b) = check_verified_and_heard(&c);
    for (who, p) in [("alice", &a), ("bob", &b)] {
        assert_eq!(
            (&p["local"], &p["remote"]),
            (&Value::from("relay"), &Value::from("relay")),
            "{who}: {p}"
        );
        assert_eq!(p["relay"]["transport"], "udp", "{who}: {p}");
    }
}

/// Must-show 2, TCP: UDP is dropped at alice's router; her allocation goes over TCP (or TLS,
/// the certificate checked against coturn's CA), bob's over UDP; verified, audio both ways.
#[test]
fn with_udp_blocked_at_one_router_the_relay_is_reached_over_tcp() {
    let w = World::new(NatKind::Symmetric, &["alice", "bob"]);
    w.lab.block_udp(Home::A).unwrap();
    let c = verified_call_across(&w, &["--relay-only"]);
    let (a, b) = check_verified_and_heard(&c);
    assert_eq!(a["local"], "relay", "{a}");
    assert!(
        matches!(a["relay"]["transport"].as_str(), Some("tcp" | "tls")),
        "alice's relay transport: {a}"
    );
    assert_eq!(b["relay"]["transport"], "udp", "{b}");
    // Alice's TURN over TLS was allocated too (coturn's certificate verified), never used.
    let stats = events(&c.alice, "stats").next().unwrap();
    let turns = stats["ice_servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server"].as_str().unwrap().starts_with("turns:"))
        .unwrap();
    assert_eq!(turns["state"], "ready", "{stats}");
}

/// Must-show 4, outage: every packet dropped at alice's router for 3 s in the middle of a
/// call over server-reflexive candidates. The call goes on and audio resumes by itself: each
/// side hears the other's tone in at least 90 % of the frames outside the outage.
#[test]
fn a_three_second_outage_at_one_router_does_not_end_the_call() {
    let w = World::new(NatKind::EndpointIndependent, &["alice", "bob"]);
    let mut calling = start_call_across(&w, &[], 9);
    calling.connected();
    std::thread::sleep(Duration::from_secs(2));
    w.lab.blackout(Home::A, true).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    w.lab.blackout(Home::A, false).unwrap();
    let c = calling.finish();
    for (who, r) in [("alice", &c.alice), ("bob", &c.bob)] {
        let shields: Vec<&Value> = events(r, "shield").map(|v| &v["state"]).collect();
        assert_eq!(shields, ["verified"], "{who}: {:?}", r.seen);
        assert!(
            events(r, "error").next().is_none(),
            "{who} reported an error: {:?}",
            r.seen
        );
    }
    // The recordings keep the call's timeline (silence where nothing came): outside the 3 s
    // of the outage, 90 % of the frames carry the tone, and the sound came back right after.
    let outage = 3 * 50;
    for (who, heard, hz) in [
        ("alice", &c.alice_heard, 440.0),
        ("bob", &c.bob_heard, 880.0),
    ] {
        let (with, of) = heard.tone_frames(hz);
        let outside = of.saturating_sub(outage);
        let gap = heard.longest_gap(hz);
        eprintln!(
            "{who}: {hz} Hz in {with} of {of} frames ({:.1} s), {outside} outside the outage; longest gap {gap:?}",
            heard.seconds()
        );
        assert!(
            outside > 250 && with * 10 >= outside * 9,
            "{who} heard {hz} Hz in {with} of the {outside} frames outside the outage"
        );
        assert!(
            gap >= Duration::from_millis(2500) && gap <= Duration::from_millis(3600),
            "{who}: the gap was {gap:?}, the outage 3 s"
        );
    }
}

/// Must-show 4, network change: alice's host gets a new address during the call (her old one
/// vanishes). The agent notices, restarts ICE (new credentials and candidates in
/// `transport-info`, no fingerprint), and audio resumes within 2 s; the shield stays
/// verified, and both sides count the restart.
#[test]
fn a_new_host_address_during_the_call_restarts_ice_and_keeps_the_shield() {
    let mut w = World::new(NatKind::EndpointIndependent, &["alice", "bob"]);
    let mut calling = start_call_across(&w, &[], 8);
    calling.connected();
    std::thread::sleep(Duration::from_secs(2));
    let new = w.lab.renumber(Home::A).unwrap();
    eprintln!("alice's host is now {new}");
    let c = calling.finish();
    for (who, r) in [("alice", &c.alice), ("bob", &c.bob)] {
        let shields: Vec<&Value> = events(r, "shield").map(|v| &v["state"]).collect();
        assert_eq!(shields, ["verified"], "{who}: {:?}", r.seen);
        let stats = events(r, "stats").next().unwrap();
        assert!(
            stats["ice_restarts"].as_u64().unwrap_or(0) >= 1,
            "{who}: no ICE restart in {stats}"
        );
    }
    for (who, heard, hz) in [
        ("alice", &c.alice_heard, 440.0),
        ("bob", &c.bob_heard, 880.0),
    ] {
        let gap = heard.longest_gap(hz);
        let (with, of) = heard.tone_frames(hz);
        eprintln!("{who}: {hz} Hz in {with} of {of} frames, longest gap {gap:?}");
        assert!(gap <= Duration::from_secs(2), "{who}: a gap of {gap:?}");
        assert!(with > 200, "{who} heard {hz} Hz in only {with} frames");
    }
}

/// Must-show 2, TLS: UDP and TCP to port 3478 are dropped at alice's router; only TURN over
/// TLS (port 5349, coturn's certificate checked against its CA) is left, and the call goes
/// through it, verified, audio both ways.
#[test]
fn with_only_tls_open_at_one_router_the_relay_is_reached_over_tls() {
    let w = World::new(NatKind::Symmetric, &["alice", "bob"]);
    w.lab.block_udp(Home::A).unwrap();
    w.lab.block_tcp_port(Home::A, w.coturn.port()).unwrap();
    let c = verified_call_across(&w, &["--relay-only"]);
    let (a, b) = check_verified_and_heard(&c);
    assert_eq!(a["local"], "relay", "{a}");
    assert_eq!(a["relay"]["transport"], "tls", "alice's relay: {a}");
    assert!(
        a["relay"]["server"].as_str().unwrap().starts_with("turns:"),
        "{a}"
    );
    assert_eq!(b["relay"]["transport"], "udp", "{b}");
}

/// Must-show 3, refreshes: coturn grants allocations for 5 s only; a relayed call of 12 s
/// keeps its audio, both ways, because the client refreshes the allocation before it lapses.
/// (Permissions last 300 s by RFC 8656, which the TURN library assumes; coturn's shorter
/// `permission-lifetime` is non-standard and not tested here.)
#[test]
fn a_relayed_call_outlives_the_servers_short_allocation_lifetime() {
    let short = Some(Duration::from_secs(5));
    let w = World::with(
        NatKind::Symmetric,
        &["alice", "bob"],
        Servers {
            coturn: CoturnConfig {
                max_allocate_lifetime: short,
                ..CoturnConfig::default()
            },
            ..Servers::default()
        },
    );
    let c = start_call_across(&w, &["--relay-only"], 12).finish();
    check_verified_and_heard(&c);
    let expected = 12 * 50 - 10;
    for (who, heard, hz) in [
        ("alice", &c.alice_heard, 440.0),
        ("bob", &c.bob_heard, 880.0),
    ] {
        let (with, of) = heard.tone_frames(hz);
        let gap = heard.longest_gap(hz);
        eprintln!(
            "{who}: {hz} Hz in {with} of {of} frames (of {expected} expected), longest gap {gap:?}"
        );
        assert!(
            with * 10 >= expected * 9 && gap < Duration::from_millis(500),
            "{who} heard {hz} Hz in {with} of {expected} frames, longest gap {gap:?}"
        );
    }
    let log = w.coturn.log();
    assert!(
        log.contains("REFRESH processed, success"),
        "no refresh in coturn's log"
    );
}

/// Must-show 5: Prosody hands out TURN credentials signed with a secret coturn does not have.
/// Between endpoint-independent NATs the call still connects over the other candidates; with
/// relayed candidates only between symmetric NATs nothing can work, and the call ends with
/// `connectivity-error` and a reason that names the TURN server, well within the bound.
#[test]
fn a_wrong_turn_secret_leaves_the_other_paths_and_fails_clearly_without_them() {
    let wrong = || Servers {
        xmpp_secret: Some("not-coturns-secret".to_owned()),
        ..Servers::default()
    };
    let w = World::with(NatKind::EndpointIndependent, &["alice", "bob"], wrong());
    let c = verified_call_across(&w, &[]);
    let (a, _) = check_verified_and_heard(&c);
    assert!(a["relay"].is_null(), "{a}");
    drop(c);
    drop(w);

    let w = World::with(NatKind::Symmetric, &["alice", "bob"], wrong());
    let started = Instant::now();
    let mut calling = start_call_across(&w, &["--relay-only"], 3);
    let turn = format!("turn:{}:{}", w.lab.server(), w.coturn.port());
    let texts = calling.both_fail_to_connect(started);
    let mut warned_sides = 0;
    for (who, r) in [("bob", &calling.bob), ("alice", &calling.alice)] {
        // A side names what failed on its own side before the end; a side whose TURN servers
        // had not answered yet when the other gave up (their refusal takes milliseconds) says
        // that the peer ended the call.
        let warned =
            events(r, "warning").any(|v| v["message"].as_str().unwrap().starts_with(&turn));
        let peer_ended =
            events(r, "ended").any(|v| v["text"].as_str() == Some("the peer ended the call"));
        assert!(
            warned || peer_ended,
            "{who} has no warning naming {turn} and did not hear the peer end: {:?}",
            r.seen
        );
        warned_sides += usize::from(warned);
        let printed = format!("{:?}", r.seen);
        assert!(!printed.contains("not-coturns-secret"), "{printed}");
    }
    assert!(warned_sides >= 1, "no side named {turn}");
    let took = started.elapsed();
    // The side that gave up first says why in one line; the other says the peer ended it.
    assert!(
        texts
            .iter()
            .any(|t| t.contains(&turn) && t.contains("authentication failed") && !t.contains('\n')),
        "no one-line reason naming {turn}: {texts:?}"
    );
    assert!(took < BOUND, "{took:?}");
}

/// Must-show 3, ejabberd: the same lab with ejabberd (`mod_stun_disco`, STARTTLS) instead of
/// Prosody. The clients get coturn's services and credentials from it, and a call between
/// symmetric NATs goes through the relay, verified, audio both ways.
#[test]
fn with_ejabberd_the_credentials_come_from_mod_stun_disco_and_the_relay_works() {
    let w = World::with(
        NatKind::Symmetric,
        &["alice", "bob"],
        Servers {
            ejabberd: true,
            ..Servers::default()
        },
    );
    let c = verified_call_across(&w, &[]);
    let (a, b) = check_verified_and_heard(&c);
    let relayed = [&a, &b]
        .iter()
        .any(|p| p["local"] == "relay" || p["remote"] == "relay");
    assert!(relayed, "no relay in {a} / {b}");
    let servers = events(&c.alice, "ice-servers").next().unwrap()["servers"].clone();
    let want = format!(
        "turns:{}:{}?transport=tcp",
        w.lab.server(),
        w.coturn.tls_port().unwrap()
    );
    assert!(
        servers
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == &Value::from(want.as_str())),
        "{want} not in {servers}"
    );
    let stats = events(&c.alice, "stats").next().unwrap();
    let ready = stats["ice_servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "ready")
        .count();
    assert!(ready >= 4, "not every server of ejabberd's worked: {stats}");
}

/// Must-show 5, unreachable: the only TURN server given (`--turn`, no discovery) is an address
/// of the internet segment where nothing answers. With relayed candidates only, the call ends
/// with `connectivity-error` once the Allocate's retransmits ran out (7.5 s), naming that
/// server in one line; no hang.
#[test]
fn an_unreachable_turn_server_ends_a_relay_only_call_naming_it() {
    let w = World::new(NatKind::Symmetric, &["alice", "bob"]);
    let nobody = w.lab.servers()[1];
    let turn = format!("turn:{nobody}:3478?transport=udp");
    let creds = w.dir.join("turn-credentials");
    std::fs::write(&creds, "someone\nsomething\n").unwrap();
    let creds = creds.display().to_string();
    let flags = [
        "--relay-only",
        "--no-ice-discovery",
        "--turn",
        &turn,
        "--turn-credentials",
        &creds,
    ];
    let started = Instant::now();
    let mut calling = start_call_across(&w, &flags, 3);
    let texts = calling.both_fail_to_connect(started);
    assert!(
        texts.iter().any(|t| t.contains(&turn) && !t.contains('\n')),
        "no one-line reason naming {turn}: {texts:?}"
    );
    assert!(!format!("{texts:?}").contains("something"), "{texts:?}");
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
}
