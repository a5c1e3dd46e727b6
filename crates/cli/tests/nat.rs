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
    Coturn, CoturnConfig, InNamespace, Prosody, ProsodyConfig, TurnExternal, process,
};

const BIN: &str = env!("CARGO_BIN_EXE_shieldcall");
const BOUND: Duration = Duration::from_secs(30);

/// The lab, coturn and a TLS Prosody handing out coturn's services, on the internet segment.
struct World {
    prosody: Prosody,
    coturn: Coturn,
    lab: Lab,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    /// Run each `shieldcall` with `--log trace`, its standard error to `DIR/USER.log`.
    trace: bool,
}

impl World {
    fn new(kind: NatKind, users: &[&str]) -> World {
        let lab = Lab::build(kind).unwrap_or_else(|e| panic!("the lab: {e}"));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let coturn_config = CoturnConfig {
            addresses: vec![lab.server()],
            ..CoturnConfig::default()
        };
        let coturn = Coturn::launch(
            &dir.join("coturn"),
            &coturn_config,
            Some((&lab, Namespace::Internet)),
        )
        .unwrap_or_else(|e| panic!("coturn: {e}"));
        let turn = TurnExternal {
            secret: coturn.secret().to_owned(),
            host: lab.server().to_string(),
            port: coturn.port(),
            tcp: true,
            tls_port: coturn.tls_port(),
            ttl: Duration::from_secs(600),
        };
        let config = ProsodyConfig {
            tls: true,
            turn: Some(turn),
            namespace: Some(InNamespace {
                name: lab.name(Namespace::Internet),
                address: lab.server(),
            }),
            ..ProsodyConfig::default()
        };
        let prosody = Prosody::launch(&dir.join("prosody"), &config, &process::never)
            .unwrap_or_else(|e| panic!("Prosody in the lab: {e}"));
        for u in users {
            prosody.register(u, &format!("pw-{u}")).unwrap();
        }
        // Clients trust both throw-away CAs: Prosody's (XMPP over TLS) and coturn's (turns).
        let mut bundle = std::fs::read(prosody.ca_file()).unwrap();
        bundle.extend(std::fs::read(coturn.ca_file().unwrap()).unwrap());
        std::fs::write(dir.join("ca-bundle.pem"), bundle).unwrap();
        World {
            prosody,
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
            self.prosody.server(),
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
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
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
struct Crossed {
    alice: Running,
    bob: Running,
    alice_heard: shieldcall_localserver::wav::Recording,
    bob_heard: shieldcall_localserver::wav::Recording,
}

/// Alice (home A, `listen --auto-answer`, 880 Hz) and bob (home B, `call`, 440 Hz for 3 s)
/// verified each other; bob calls alice. `extra` goes to both.
fn verified_call_across(w: &World, extra: &[&str]) -> Crossed {
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
    let mut call = vec![
        "call",
        "alice@localhost",
        "--tone",
        "440",
        "--record",
        &b_wav_s,
        "--duration",
        "3",
    ];
    call.extend_from_slice(extra);
    let mut bob = w.spawn("bob", Home::B, &call);
    bob.wait_for("stats", |v| v["event"] == "stats");
    alice.wait_for("stats", |v| v["event"] == "stats");
    let alice_heard = shieldcall_localserver::wav::Recording::read(&a_wav).unwrap();
    let bob_heard = shieldcall_localserver::wav::Recording::read(&b_wav).unwrap();
    Crossed {
        alice,
        bob,
        alice_heard,
        bob_heard,
    }
}

fn events<'a>(r: &'a Running, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    r.seen.iter().filter(move |v| v["event"] == name)
}

/// Both sides verified, each heard the other's tone, and each side's selected path.
fn check_verified_and_heard(c: &Crossed) -> (Value, Value) {
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
        assert!(leaked.is_empty(), "{who} logged: {:?}", &leaked[..leaked.len().min(3)]);
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
