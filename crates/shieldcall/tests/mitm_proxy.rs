//! The malicious server operator of issue #5: `tests/python/xmpp_mitm.py`, a proxy between the
//! clients and a real Prosody that sees and rewrites every stanza. Here: (a) its unit tests (every
//! rewrite on the golden stanzas, byte-exact forwarding over sockets) and (b) two real `shieldcall`
//! clients exchanging an OMEMO message through it in `passthrough` mode, the proxy's log showing
//! the `<encrypted/>` stanza in both directions.
//!
//! Needs the interpreter named by `SHIELDCALL_PYTHON` (scripts/test sets it); fails, never skips,
//! without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Prosody, User, XmppServer, run_with_timeout};

const WAIT: Duration = Duration::from_secs(30);
const PY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/python");

fn python() -> PathBuf {
    match std::env::var_os("SHIELDCALL_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "SHIELDCALL_PYTHON is not set: run the tests through scripts/test (it builds .venv and \
             sets SHIELDCALL_PYTHON), or set SHIELDCALL_PYTHON to that venv's python"
        ),
    }
}

/// The proxy process, stopped by pid when dropped.
struct Mitm {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
}

impl Mitm {
    fn start(upstream: u16, log: &Path, args: &[&str]) -> Mitm {
        let mut child = Command::new(python())
            .arg(format!("{PY_DIR}/xmpp_mitm.py"))
            .arg("--upstream")
            .arg(format!("127.0.0.1:{upstream}"))
            .arg("--log")
            .arg(log)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("xmpp_mitm.py printed no {\"listening\": PORT} line");
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        let port = u16::try_from(v["listening"].as_u64().unwrap()).unwrap();
        Mitm { child, port, lines }
    }

    /// SIGTERM, then its exit status and every JSON line it printed after `listening`.
    fn stop(mut self) -> (ExitStatus, Vec<serde_json::Value>) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            assert!(Instant::now() < deadline, "xmpp_mitm.py ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            out.push(
                serde_json::from_str(&l).unwrap_or_else(|e| panic!("non-JSON line {l:?}: {e}")),
            );
        }
        (status, out)
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy as the clients' `--server`.
struct Via(u16);

impl XmppServer for Via {
    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.0)
    }
}

/// (a) The proxy's own unit tests: each scenario's rewrite on the golden stanzas, the byte-exact
/// stream splitter, the role bookkeeping, and the proxy process between a scripted client and
/// server.
#[test]
fn proxy_unit_tests_pass() {
    let mut c = Command::new(python());
    c.args([
        "-m",
        "unittest",
        "discover",
        "-v",
        "-s",
        PY_DIR,
        "-p",
        "test_xmpp_mitm.py",
    ])
    .current_dir(PY_DIR)
    .stdin(Stdio::null());
    let out = run_with_timeout(c, Duration::from_secs(180));
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python unit tests of xmpp_mitm.py failed:\n{report}"
    );
    let ran: usize = report
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(ran >= 20, "too few tests ran ({ran}):\n{report}");
}

/// (b) Two real clients through the proxy in front of a real Prosody: an OMEMO message gets
/// through, the proxy rewrote nothing, and its log shows the `<encrypted/>` stanza leaving
/// alice's connection and reaching bob's (so it really sat in the path), never the plaintext.
#[test]
fn omemo_message_passes_through_the_passthrough_proxy() {
    let p = Prosody::start(&["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("mitm.jsonl");
    let mitm = Mitm::start(p.port, &log, &["--scenario", "passthrough"]);
    let via = Via(mitm.port);
    let alice = User::new(&via, "alice", tmp.path().join("alice"));
    let bob = User::new(&via, "bob", tmp.path().join("bob"));

    let secret = "through the operator's proxy, secret";
    let mut bob_listen = bob.listen();
    let out = alice.run(&["send", "bob@localhost", secret]);
    assert!(out.status.success(), "{out:?}");
    let m = bob_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(m["from"], "alice@localhost");
    assert_eq!(m["body"], secret);
    assert!(bob_listen.stop().is_some_and(|s| s.success()));

    let (status, rewrites) = mitm.stop();
    assert!(status.success(), "proxy exit status {status}");
    assert!(rewrites.is_empty(), "passthrough rewrote: {rewrites:?}");

    let text = std::fs::read_to_string(&log).unwrap();
    let entries: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        entries.iter().all(|e| e["action"] == "forwarded"),
        "passthrough did something else than forward: {:?}",
        entries.iter().find(|e| e["action"] != "forwarded")
    );
    let encrypted_message = |direction: &str, client: &str| {
        entries.iter().any(|e| {
            let xml = e["xml"].as_str().unwrap_or("");
            e["direction"] == direction
                && e["client"].as_str().unwrap_or("").starts_with(client)
                && xml.starts_with("<message")
                && xml.contains("<encrypted")
                && xml.contains("eu.siacs.conversations.axolotl")
                && xml.contains("<payload>")
        })
    };
    assert!(
        encrypted_message("to-server", "alice@localhost/"),
        "proxy log shows no <encrypted/> message from alice's connection:\n{text}"
    );
    assert!(
        encrypted_message("to-client", "bob@localhost/"),
        "proxy log shows no <encrypted/> message delivered to bob's connection:\n{text}"
    );
    assert!(
        !text.contains(secret),
        "plaintext crossed the server operator's proxy"
    );
}
