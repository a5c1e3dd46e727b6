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
        World {
            prosody,
            coturn,
            lab,
            _dir: tmp,
            dir,
        }
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
        c.env("SSL_CERT_FILE", self.prosody.ca_file())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
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
