//! The malicious server operator of issue #5: `tests/python/xmpp_mitm.py`, a proxy between the
//! clients and a real Prosody that sees and rewrites every stanza. Here: (a) its unit tests (every
//! rewrite on the golden stanzas, byte-exact forwarding over sockets); (b) two real `shieldcall`
//! clients exchanging an OMEMO message through it in `passthrough` mode, the proxy's log showing
//! the `<encrypted/>` stanza in both directions; (c) the table of `docs/security.md`, enforced:
//! one test per row, each a real call between two `shieldcall` clients that verified each other,
//! through the proxy running the row's attack (aimed at the caller's or the callee's side), the
//! media man-in-the-middle (`media-mitm`, an aiortc endpoint of the attacker's) included. Each row
//! test fails when the shield or `ended` reason of either side differs from its row or when the
//! attack did not happen; the suite stops at once when a side shows `shield=verified` where its
//! row does not say so, and `table_and_tests_match` fails when a row has no test, a test no row,
//! or a row says `verified` under an attack on fingerprints, devices or the DTLS endpoint.
//!
//! Needs the interpreter named by `SHIELDCALL_PYTHON` (scripts/test sets it) and Prosody; fails,
//! never skips, without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use common::{Listener, Prosody, User, XmppServer, run_with_timeout};
use serde_json::Value;
use shieldcall_localserver::wav::Recording;

const WAIT: Duration = Duration::from_secs(30);
/// Bound on one call from `call` to its exit.
const CALL_BOUND: Duration = Duration::from_secs(45);
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
        shieldcall_localserver::process::forward_lines(stdout, move |l| tx.send(l).is_ok(), || {});
        let first = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("xmpp_mitm.py printed no {\"listening\": PORT} line");
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        let port = u16::try_from(v["listening"].as_u64().unwrap()).unwrap();
        Mitm { child, port, lines }
    }

    /// SIGTERM, then its exit status and every JSON line it printed after `listening`.
    fn stop(mut self) -> (ExitStatus, Vec<serde_json::Value>) {
        common::signal(self.child.id(), "TERM");
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
    let p = Prosody::start_for_proxy(&["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("mitm.jsonl");
    let mitm = Mitm::start(p.port, &log, &["--scenario", "passthrough"]);
    let via = Via(mitm.port);
    let alice = User::new(&via, "alice", tmp.path().join("alice"));
    let bob = User::new(&via, "bob", tmp.path().join("bob"));

    let secret = "through the operator's proxy, secret";
    // --tone/--record: calls (none here) would use no sound device, so none is opened.
    let rec = tmp.path().join("bob.wav").display().to_string();
    let mut bob_listen = bob.start(&["listen", "--tone", "440", "--record", &rec], true);
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

// ---- (c) the table of docs/security.md, enforced --------------------------------------------------
//
// Every row of the table in `docs/security.md` (between `<!-- security-table -->` and the end of the
// table) is one scenario: a real Prosody, the proxy running the attack, alice (verified bob) calling
// bob (verified alice), and the shield and `ended` reason each side reports compared with the row.
// Each row is its own `#[test]`, generated with its spec by `scenarios!` below; `table_and_tests_match`
// fails when a row has no test or a test no row. The calls of all selected rows run at once in
// background threads (`SHIELDCALL_MITM_PARALLEL`, default 8, bounds how many), started by the first
// row test; each row test waits for its own. A side that shows `shield=verified` where its row does
// not say `verified` stops that call at once and fails every row test still waiting.

const TABLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/security.md");
const TABLE_MARK: &str = "<!-- security-table -->";
const TABLE_HEADER: [&str; 6] = [
    "scenario",
    "victim",
    "caller shield",
    "caller reason",
    "callee shield",
    "callee reason",
];

/// Attacks that change a fingerprint, a device or where DTLS terminates: their rows may never say
/// `verified` on either side (checked on the table itself, before any call).
const KEY_ATTACKS: &[&str] = &[
    "strip-device",
    "change-device",
    "encrypted-to-plain",
    "add-plain-before",
    "add-plain-after",
    "flip-setup",
    "replay-fingerprint",
    "media-mitm-plain",
    "media-mitm-verified",
    "media-mitm-require-verified",
    "inject-message",
];

/// One row of the table: what each side must report.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    scenario: String,
    victim: String,
    caller: (String, String),
    callee: (String, String),
}

fn read_table() -> Vec<Row> {
    let text = std::fs::read_to_string(TABLE_PATH)
        .unwrap_or_else(|e| panic!("cannot read {TABLE_PATH}: {e}"));
    let start = text
        .find(TABLE_MARK)
        .unwrap_or_else(|| panic!("{TABLE_PATH} has no {TABLE_MARK} line"));
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').trim().to_owned())
            .collect()
    };
    let mut lines = text[start + TABLE_MARK.len()..]
        .lines()
        .skip_while(|l| l.trim().is_empty());
    let header = cells(lines.next().expect("no table after the mark"));
    assert_eq!(header, TABLE_HEADER, "{TABLE_PATH}: table header changed");
    let sep = lines.next().unwrap_or("");
    assert!(
        sep.trim_start().starts_with("|-") || sep.trim_start().starts_with("| -"),
        "{TABLE_PATH}: no separator line under the header: {sep:?}"
    );
    let mut rows = Vec::new();
    for l in lines.take_while(|l| l.trim_start().starts_with('|')) {
        let c = cells(l);
        assert_eq!(c.len(), 6, "{TABLE_PATH}: row without 6 cells: {l:?}");
        for (i, v) in c.iter().enumerate().skip(2) {
            let ok = if i % 2 == 0 {
                ["verified", "encrypted", "none", "-"].contains(&v.as_str())
            } else {
                !v.is_empty() && !v.contains(' ')
            };
            assert!(ok, "{TABLE_PATH}: bad cell {v:?} in {l:?}");
        }
        assert!(
            ["caller", "callee", "both", "-"].contains(&c[1].as_str()),
            "{TABLE_PATH}: bad victim in {l:?}"
        );
        rows.push(Row {
            scenario: c[0].clone(),
            victim: c[1].clone(),
            caller: (c[2].clone(), c[3].clone()),
            callee: (c[4].clone(), c[5].clone()),
        });
    }
    assert!(!rows.is_empty(), "{TABLE_PATH}: empty table");
    rows
}

/// Which side a proof of the attack is about.
#[derive(Clone, Copy, Debug)]
enum Side {
    Caller,
    Callee,
}

impl Side {
    fn jid(self) -> &'static str {
        match self {
            Side::Caller => "alice@localhost/",
            Side::Callee => "bob@localhost/",
        }
    }
}

/// How to run one row.
struct Spec {
    scenario: &'static str,
    victim: &'static str,
    /// Proxy arguments (after `--upstream`, `--log`).
    mitm: &'static [&'static str],
    caller_extra: &'static [&'static str],
    callee_extra: &'static [&'static str],
    /// Calls in a row on the same accounts; the last one is the one the row is about.
    calls: usize,
    /// The proof that the attack happened: a rewrite of this stanza delivered to this side.
    rewrote: &'static [(&'static str, Side)],
    /// Checks beyond the table (recordings, devices, the attacker's reports).
    extra: fn(&[CallSeen]),
    /// Ends by a timeout: started first.
    slow: bool,
    /// Before the (last) call: this side sends the other one an OMEMO chat message with this
    /// text (`send`; the caller is offline then, so its message waits in offline storage).
    message: Option<(Side, &'static str)>,
    /// The caller's `--duration`.
    duration: &'static str,
    /// Runs with no other row beside it (it measures the call's audio, which seven other calls
    /// on two cores would disturb more than the attack): started first, before the others.
    alone: bool,
}

/// The attacker's tone (the clients send 440 and 880 Hz).
const ATTACKER_TONE: &str = "660";

macro_rules! scenarios {
    ($($test:ident => $spec:expr;)*) => {
        const SPECS: &[(&str, Spec)] = &[$((stringify!($test), $spec)),*];
        $(#[test] fn $test() { run_row(stringify!($test)); })*
    };
}

fn nothing(_: &[CallSeen]) {}

const fn spec(scenario: &'static str, victim: &'static str, mitm: &'static [&'static str]) -> Spec {
    Spec {
        scenario,
        victim,
        mitm,
        caller_extra: &[],
        callee_extra: &[],
        calls: 1,
        rewrote: &[],
        extra: nothing,
        slow: false,
        message: None,
        duration: "1",
        alone: false,
    }
}

const PROCEED_TO_CALLER: &[(&str, Side)] = &[("proceed", Side::Caller)];
const ACCEPT_TO_CALLER: &[(&str, Side)] = &[("session-accept", Side::Caller)];
const INITIATE_TO_CALLEE: &[(&str, Side)] = &[("session-initiate", Side::Callee)];
const BOTH_WAYS: &[(&str, Side)] = &[
    ("session-initiate", Side::Callee),
    ("session-accept", Side::Caller),
];
const WITHHELD_TO_CALLEE: &[(&str, Side)] = &[
    ("message", Side::Callee),
    ("session-initiate", Side::Callee),
];
const WITHHELD_TO_CALLER: &[(&str, Side)] =
    &[("message", Side::Caller), ("session-accept", Side::Caller)];
const FLOOD_TO_CALLEE: &[(&str, Side)] = &[("message", Side::Callee)];

/// The chat message a server operator withholds and injects as a call fingerprint (the
/// decryption-oracle attack): no stanza either client sends may contain any of it.
const SECRET: &str = "the launch code is 7421-alpha-zulu";

scenarios! {
    control_passthrough => Spec { extra: check_passthrough, ..spec("passthrough", "-", &["--scenario", "passthrough"]) };
    strip_device_at_caller => Spec { rewrote: PROCEED_TO_CALLER, extra: check_downgrade_no_device,
        ..spec("strip-device", "caller", &["--scenario", "strip-device", "--victim", "caller"]) };
    change_device_at_caller => Spec { rewrote: PROCEED_TO_CALLER, extra: check_downgrade_omemo_failed,
        ..spec("change-device", "caller", &["--scenario", "change-device", "--victim", "caller"]) };
    encrypted_to_plain_at_caller => Spec { rewrote: ACCEPT_TO_CALLER,
        ..spec("encrypted-to-plain", "caller", &["--scenario", "encrypted-to-plain", "--victim", "caller"]) };
    encrypted_to_plain_at_callee => Spec { rewrote: INITIATE_TO_CALLEE,
        ..spec("encrypted-to-plain", "callee", &["--scenario", "encrypted-to-plain", "--victim", "callee"]) };
    add_plain_before_at_caller => Spec { rewrote: ACCEPT_TO_CALLER,
        ..spec("add-plain-before", "caller", &["--scenario", "add-plain-before", "--victim", "caller"]) };
    add_plain_before_at_callee => Spec { rewrote: INITIATE_TO_CALLEE,
        ..spec("add-plain-before", "callee", &["--scenario", "add-plain-before", "--victim", "callee"]) };
    add_plain_after_at_caller => Spec { rewrote: ACCEPT_TO_CALLER,
        ..spec("add-plain-after", "caller", &["--scenario", "add-plain-after", "--victim", "caller"]) };
    add_plain_after_at_callee => Spec { rewrote: INITIATE_TO_CALLEE,
        ..spec("add-plain-after", "callee", &["--scenario", "add-plain-after", "--victim", "callee"]) };
    flip_setup_at_caller => Spec { rewrote: ACCEPT_TO_CALLER, slow: true,
        ..spec("flip-setup", "caller", &["--scenario", "flip-setup", "--victim", "caller"]) };
    flip_setup_at_callee => Spec { rewrote: INITIATE_TO_CALLEE,
        ..spec("flip-setup", "callee", &["--scenario", "flip-setup", "--victim", "callee"]) };
    replay_fingerprint_at_caller => Spec { rewrote: ACCEPT_TO_CALLER, calls: 2, extra: check_first_call_verified,
        ..spec("replay-fingerprint", "caller", &["--scenario", "replay-fingerprint", "--victim", "caller"]) };
    replay_fingerprint_at_callee => Spec { rewrote: INITIATE_TO_CALLEE, calls: 2, extra: check_first_call_verified,
        ..spec("replay-fingerprint", "callee", &["--scenario", "replay-fingerprint", "--victim", "callee"]) };
    drop_session_accept_at_caller => Spec { rewrote: ACCEPT_TO_CALLER, slow: true,
        ..spec("drop-session-accept", "caller", &["--scenario", "drop-session-accept", "--victim", "caller"]) };
    forge_accept_from_other_resource_at_caller => Spec { rewrote: ACCEPT_TO_CALLER, extra: check_shield_devices,
        ..spec("forge-session-accept-other-resource", "caller",
            &["--scenario", "forge-from-resource", "--victim", "caller", "--stanza", "session-accept"]) };
    forge_accept_from_other_jid_beside_genuine_at_caller => Spec { rewrote: ACCEPT_TO_CALLER, extra: check_shield_devices,
        ..spec("forge-session-accept-other-jid", "caller",
            &["--scenario", "forge-from-jid", "--victim", "caller", "--stanza", "session-accept"]) };
    forge_accept_from_other_jid_instead_at_caller => Spec { rewrote: ACCEPT_TO_CALLER, slow: true,
        ..spec("forge-session-accept-other-jid-only", "caller",
            &["--scenario", "forge-from-jid", "--victim", "caller", "--stanza", "session-accept", "--original", "drop"]) };
    forge_proceed_from_other_resource_at_caller => Spec { rewrote: PROCEED_TO_CALLER, slow: true,
        ..spec("forge-proceed-other-resource", "caller",
            &["--scenario", "forge-from-resource", "--victim", "caller", "--stanza", "proceed"]) };
    forge_proceed_from_other_jid_beside_genuine_at_caller => Spec { rewrote: PROCEED_TO_CALLER, extra: check_shield_devices,
        ..spec("forge-proceed-other-jid", "caller",
            &["--scenario", "forge-from-jid", "--victim", "caller", "--stanza", "proceed"]) };
    forge_proceed_from_other_jid_instead_at_caller => Spec { rewrote: PROCEED_TO_CALLER, slow: true,
        ..spec("forge-proceed-other-jid-only", "caller",
            &["--scenario", "forge-from-jid", "--victim", "caller", "--stanza", "proceed", "--original", "drop"]) };
    forge_initiate_from_other_resource_at_callee => Spec { rewrote: INITIATE_TO_CALLEE, extra: check_shield_devices,
        ..spec("forge-session-initiate-other-resource", "callee",
            &["--scenario", "forge-from-resource", "--victim", "callee", "--stanza", "session-initiate"]) };
    forge_initiate_from_other_jid_beside_genuine_at_callee => Spec { rewrote: INITIATE_TO_CALLEE, extra: check_shield_devices,
        ..spec("forge-session-initiate-other-jid", "callee",
            &["--scenario", "forge-from-jid", "--victim", "callee", "--stanza", "session-initiate"]) };
    forge_initiate_from_other_jid_instead_at_callee => Spec { rewrote: INITIATE_TO_CALLEE, slow: true,
        ..spec("forge-session-initiate-other-jid-only", "callee",
            &["--scenario", "forge-from-jid", "--victim", "callee", "--stanza", "session-initiate", "--original", "drop"]) };
    replace_candidates_at_caller => Spec { rewrote: ACCEPT_TO_CALLER, extra: check_shield_devices,
        ..spec("replace-candidates", "caller", &["--scenario", "replace-candidates", "--victim", "caller"]) };
    replace_candidates_at_callee => Spec { rewrote: INITIATE_TO_CALLEE, extra: check_shield_devices,
        ..spec("replace-candidates", "callee", &["--scenario", "replace-candidates", "--victim", "callee"]) };
    media_mitm_plain_call => Spec { rewrote: BOTH_WAYS, caller_extra: &["--no-omemo"], extra: check_media_intercepted,
        ..spec("media-mitm-plain", "both", &["--scenario", "media-mitm", "--tone", ATTACKER_TONE]) };
    media_mitm_verified_call => Spec { rewrote: BOTH_WAYS, extra: check_media_blocked,
        ..spec("media-mitm-verified", "both", &["--scenario", "media-mitm", "--tone", ATTACKER_TONE]) };
    media_mitm_require_verified => Spec { rewrote: BOTH_WAYS, extra: check_media_blocked,
        caller_extra: &["--require-verified"], callee_extra: &["--require-verified"],
        ..spec("media-mitm-require-verified", "both", &["--scenario", "media-mitm", "--tone", ATTACKER_TONE]) };
    inject_withheld_message_as_fingerprint_at_callee => Spec { rewrote: WITHHELD_TO_CALLEE,
        message: Some((Side::Caller, SECRET)), extra: check_nothing_leaked,
        ..spec("inject-message", "callee",
            &["--scenario", "inject-message", "--victim", "callee", "--withhold-to", "bob@localhost"]) };
    inject_withheld_message_as_fingerprint_at_caller => Spec { rewrote: WITHHELD_TO_CALLER,
        message: Some((Side::Callee, SECRET)), extra: check_nothing_leaked,
        ..spec("inject-message", "caller",
            &["--scenario", "inject-message", "--victim", "caller", "--withhold-to", "alice@localhost"]) };
    flood_of_costly_messages_during_a_call => Spec { rewrote: FLOOD_TO_CALLEE, extra: check_audio_under_flood,
        duration: "4", alone: true,
        ..spec("flood", "callee",
            &["--scenario", "flood", "--victim", "callee", "--flood-rate", "50", "--flood-seconds", "3"]) };
}

/// What one call through the proxy showed.
#[derive(Clone, Debug)]
struct CallSeen {
    caller: Vec<Value>,
    callee: Vec<Value>,
    caller_ok: bool,
    /// Every JSON line the proxy printed (rewrites, media reports): those of all calls of the
    /// row, attached to its last call.
    rewrites: Vec<Value>,
    /// Each side's own device (from `fingerprint`): (alice's, bob's).
    devices: (Value, Value),
    /// What each side recorded: (dominant frequency, samples) for (alice, bob).
    heard: ((f64, usize), (f64, usize)),
    /// 20 ms frames carrying the other's tone, of all frames recorded: (alice's recording of
    /// bob's 880 Hz, bob's of alice's 440 Hz).
    tone_frames: ((usize, usize), (usize, usize)),
    /// The proxy's log of every stanza (JSON lines), for the last call.
    log: String,
}

impl CallSeen {
    fn events<'a>(side: &'a [Value], event: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        side.iter().filter(move |v| v["event"] == event)
    }

    fn shields(side: &[Value]) -> Vec<String> {
        Self::events(side, "shield")
            .map(|v| v["state"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// The table's shield cell for a side: the shield states shown, in order, or `-`.
    fn shield_cell(side: &[Value]) -> String {
        let s = Self::shields(side);
        if s.is_empty() {
            "-".into()
        } else {
            s.join(",")
        }
    }

    /// The table's reason cell: the first `ended` reason, or `-`.
    fn reason_cell(side: &[Value]) -> String {
        Self::events(side, "ended")
            .map(|v| v["reason"].as_str().unwrap_or("?").to_owned())
            .next()
            .unwrap_or_else(|| "-".into())
    }

    fn connected(side: &[Value]) -> bool {
        Self::events(side, "call").any(|v| v["state"] == "connected")
    }

    fn shield_device(side: &[Value]) -> Option<Value> {
        Self::events(side, "shield")
            .next()
            .map(|v| v["device"].clone())
    }

    fn rewrote(&self, stanza: &str, to: Side) -> bool {
        self.rewrites.iter().any(|r| {
            r["stanza"] == stanza
                && r["direction"] == "to-client"
                && r["client"].as_str().unwrap_or("").starts_with(to.jid())
        })
    }

    fn media_reports<'a>(&'a self, side: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.rewrites.iter().filter(move |r| r["side"] == side)
    }
}

/// `a` verifies `b`'s device by its URI, as a QR scan would; returns b's device id.
fn verify(a: &User, b: &User) -> Value {
    Value::from(a.verify(b))
}

fn discard(dir: &Path, name: &str) -> String {
    dir.join(format!("{name}.wav")).display().to_string()
}

/// Dominant frequency and number of samples of a recording (none: (0, 0)).
fn analyse(path: &str) -> (f64, usize) {
    let r = Recording::read_or_empty(Path::new(path));
    (r.dominant_frequency(), r.samples().len())
}

/// Set (once) when a side showed `shield=verified` where its row does not allow it.
static VERIFIED_UNDER_ATTACK: OnceLock<String> = OnceLock::new();

/// Another row showed a forbidden `verified`: every row stops where it is (and drops its
/// processes, so nothing outlives the test binary).
fn aborted() -> Result<(), String> {
    match VERIFIED_UNDER_ATTACK.get() {
        Some(m) => Err(format!(
            "stopped: another row showed a forbidden verified ({m})"
        )),
        None => Ok(()),
    }
}

/// A side's events so far include a `verified` its row forbids: the message.
fn forbidden_verified(who: &str, side: &[Value], allowed: bool) -> Option<String> {
    (!allowed && CallSeen::shields(side).iter().any(|s| s == "verified"))
        .then(|| format!("{who} showed shield=verified, which its row does not allow: {side:?}"))
}

/// Runs one row's calls; the caller's and callee's events are polled together, so a forbidden
/// `verified` on either side stops the call at once.
fn run_calls(spec: &Spec, row: &Row) -> Result<Vec<CallSeen>, String> {
    let p = Prosody::start_for_proxy(&["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let mitm = Mitm::start(p.port, &tmp.path().join("mitm.jsonl"), spec.mitm);
    let via = Via(mitm.port);
    let alice = User::new(&via, "alice", tmp.path().join("alice"));
    let bob = User::new(&via, "bob", tmp.path().join("bob"));
    let bob_device = verify(&alice, &bob);
    let alice_device = verify(&bob, &alice);
    let mut seen = Vec::new();
    for i in 0..spec.calls {
        aborted()?;
        let last = i + 1 == spec.calls;
        // Earlier calls of a row (replay: the call recorded) are not attacked: verified is fine.
        let allow = |cell: &str| !last || cell == "verified";
        let (allow_caller, allow_callee) = (allow(&row.caller.0), allow(&row.callee.0));
        let b_rec = discard(tmp.path(), &format!("bob-{i}"));
        let a_rec = discard(tmp.path(), &format!("alice-{i}"));
        let mut listen_args = vec![
            "listen",
            "--auto-answer",
            "--media-ip",
            "127.0.0.1",
            "--tone",
            "880",
            "--record",
            &b_rec,
        ];
        listen_args.extend_from_slice(spec.callee_extra);
        let mut callee = bob.start(&listen_args, true);
        if let (true, Some((from, text))) = (last, spec.message) {
            let (sender, to) = match from {
                Side::Caller => (&alice, "bob@localhost"),
                Side::Callee => (&bob, "alice@localhost"),
            };
            // Alice has only been offline so far: she publishes her keys first.
            let out = alice.run(&["devices", "alice@localhost"]);
            if !out.status.success() {
                return Err(format!("alice could not publish her keys: {out:?}"));
            }
            let out = sender.run(&["send", to, text]);
            if !out.status.success() {
                return Err(format!("sending the message to withhold failed: {out:?}"));
            }
        }
        let mut call_args = vec![
            "call",
            "bob@localhost",
            "--media-ip",
            "127.0.0.1",
            "--tone",
            "440",
            "--record",
            &a_rec,
            "--duration",
            spec.duration,
            "--ring-timeout",
            "10",
        ];
        call_args.extend_from_slice(spec.caller_extra);
        let mut caller: Listener = alice.start(&call_args, false);
        let started = Instant::now();
        let mut caller_status = None;
        let mut callee_ended_at = None;
        loop {
            if caller_status.is_none() {
                caller_status = caller.wait_exit(Duration::from_millis(50));
            }
            if callee.wait_exit(Duration::from_millis(50)).is_some() {
                return Err(format!("listen exited during the call: {:?}", callee.seen));
            }
            aborted()?;
            for (who, side, allowed) in [
                ("caller", &caller.seen, allow_caller),
                ("callee", &callee.seen, allow_callee),
            ] {
                if let Some(msg) = forbidden_verified(who, side, allowed) {
                    let msg = format!("{} (call {i}): {msg}", row.scenario);
                    let _ = VERIFIED_UNDER_ATTACK.set(msg.clone());
                    return Err(msg);
                }
            }
            if callee_ended_at.is_none() && CallSeen::events(&callee.seen, "ended").next().is_some()
            {
                callee_ended_at = Some(Instant::now());
            }
            if caller_status.is_some() && callee_ended_at.is_some() {
                break;
            }
            // A caller that failed before its call began (cannot connect, say) leaves the
            // callee waiting forever: say so now, with what the proxy and the server saw.
            if caller_status.is_some_and(|s| !s.success())
                && CallSeen::events(&caller.seen, "call").next().is_none()
            {
                let log =
                    std::fs::read_to_string(tmp.path().join("mitm.jsonl")).unwrap_or_default();
                let proxy_errors: Vec<&str> =
                    log.lines().filter(|l| l.contains("\"error\"")).collect();
                return Err(format!(
                    "call {i}: the caller failed before calling: {:?}\nproxy errors: {proxy_errors:?}\nProsody: {}",
                    caller.seen,
                    shieldcall_localserver::process::last_lines(&p.log(), 10)
                ));
            }
            if started.elapsed() > CALL_BOUND {
                return Err(format!(
                    "call {i} did not end on both sides within {CALL_BOUND:?}\ncaller: {:?}\ncallee: {:?}",
                    caller.seen, callee.seen
                ));
            }
        }
        let callee_seen = callee.seen.clone();
        if !callee.stop_with("TERM").is_some_and(|s| s.success()) {
            return Err("listen did not exit cleanly on SIGTERM".into());
        }
        seen.push(CallSeen {
            caller: caller.seen.clone(),
            callee: callee_seen,
            caller_ok: caller_status.is_some_and(|s| s.success()),
            rewrites: Vec::new(),
            devices: (alice_device.clone(), bob_device.clone()),
            heard: (analyse(&a_rec), analyse(&b_rec)),
            tone_frames: (tone_frames(&a_rec, 880.0), tone_frames(&b_rec, 440.0)),
            log: String::new(),
        });
    }
    let (status, rewrites) = mitm.stop();
    if !status.success() {
        return Err(format!("proxy exit status {status}"));
    }
    let last = seen.last_mut().unwrap();
    last.rewrites = rewrites;
    last.log = std::fs::read_to_string(tmp.path().join("mitm.jsonl")).unwrap_or_default();
    Ok(seen)
}

/// Runs one row and checks it against the table; Err says what disagreed.
fn check_row(spec: &Spec, row: &Row) -> Result<Duration, String> {
    let t = Instant::now();
    let calls = run_calls(spec, row)?;
    let c = calls.last().unwrap();
    let observed = (
        (
            CallSeen::shield_cell(&c.caller),
            CallSeen::reason_cell(&c.caller),
        ),
        (
            CallSeen::shield_cell(&c.callee),
            CallSeen::reason_cell(&c.callee),
        ),
    );
    if observed != (row.caller.clone(), row.callee.clone()) {
        return Err(format!(
            "behaviour and docs/security.md disagree for {} (victim {}):\n  table:    caller {} / {}, callee {} / {}\n  observed: caller {} / {}, callee {} / {}\ncaller: {:?}\ncallee: {:?}\nproxy: {:?}",
            row.scenario,
            row.victim,
            row.caller.0,
            row.caller.1,
            row.callee.0,
            row.callee.1,
            observed.0.0,
            observed.0.1,
            observed.1.0,
            observed.1.1,
            c.caller,
            c.callee,
            c.rewrites
        ));
    }
    eprintln!(
        "| {} | {} | {} | {} | {} | {} |  (observed; caller: {}; callee: {})",
        row.scenario,
        row.victim,
        observed.0.0,
        observed.0.1,
        observed.1.0,
        observed.1.1,
        ended_text(&c.caller),
        ended_text(&c.callee)
    );
    for &(stanza, to) in spec.rewrote {
        if !c.rewrote(stanza, to) {
            return Err(format!(
                "the attack did not happen: no rewrite of a {stanza} delivered to {}: {:?}",
                to.jid(),
                c.rewrites
            ));
        }
    }
    // An abort (security-error) means: no media sent or played on that side.
    for (who, side, cell) in [
        ("caller", &c.caller, &row.caller),
        ("callee", &c.callee, &row.callee),
    ] {
        if cell.1 == "security-error" {
            if CallSeen::connected(side) {
                return Err(format!(
                    "{who} ended with security-error but had connected: {side:?}"
                ));
            }
            for st in CallSeen::events(side, "stats") {
                for k in ["frames_sent", "frames_played"] {
                    if !(st[k].is_null() || st[k] == 0) {
                        return Err(format!(
                            "{who} aborted with security-error but {k} = {}: {st}",
                            st[k]
                        ));
                    }
                }
            }
        }
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (spec.extra)(&calls)))
        .map_err(|e| panic_text(&*e))?;
    Ok(t.elapsed())
}

/// The `text` of a side's `ended` event (why it ended, for the log).
fn ended_text(side: &[Value]) -> String {
    CallSeen::events(side, "ended")
        .next()
        .map(|v| v["text"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".into())
}

type Outcome = Arc<(Mutex<Option<Result<Duration, String>>>, Condvar)>;

/// The background runs, by test name.
struct Runner {
    outcomes: Mutex<HashMap<&'static str, Outcome>>,
    table: Vec<Row>,
    /// Free slots for concurrent calls.
    slots: Arc<(Mutex<usize>, Condvar)>,
    /// All slots.
    parallel: usize,
}

fn runner() -> &'static Runner {
    static RUNNER: OnceLock<Runner> = OnceLock::new();
    RUNNER.get_or_init(|| {
        let parallel = std::env::var("SHIELDCALL_MITM_PARALLEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8usize)
            .max(1);
        let r = Runner {
            outcomes: Mutex::new(HashMap::new()),
            table: read_table(),
            slots: Arc::new((Mutex::new(parallel), Condvar::new())),
            parallel,
        };
        // Start every row this test binary was asked to run (libtest's name filters: substring
        // match, all rows without one), the slow ones first.
        // (`--skip F` and `--exact` as libtest reads them; a row that is started but not awaited
        // would leave its processes behind.)
        let args: Vec<String> = std::env::args().skip(1).collect();
        let exact = args.iter().any(|a| a == "--exact");
        let (mut filters, mut skips) = (Vec::new(), Vec::new());
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--skip" {
                skips.extend(it.next().cloned());
            } else if let Some(v) = a.strip_prefix("--skip=") {
                skips.push(v.to_owned());
            } else if !a.starts_with('-') {
                filters.push(a.clone());
            }
        }
        let hit = |n: &str, f: &String| {
            if exact {
                n == f
            } else {
                n.contains(f.as_str())
            }
        };
        let mut names: Vec<&'static str> = SPECS
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| filters.is_empty() || filters.iter().any(|f| hit(n, f)))
            .filter(|n| !skips.iter().any(|f| hit(n, f)))
            .collect();
        // The rows that run alone first, each to its end; then the others, the slow ones first.
        names.sort_by_key(|n| (!spec_of(n).alone, !spec_of(n).slow));
        for n in names.iter().filter(|n| spec_of(n).alone) {
            let (m, cv) = &*r.start(n);
            let mut done = m.lock().unwrap();
            while done.is_none() {
                done = cv.wait_timeout(done, Duration::from_millis(200)).unwrap().0;
            }
        }
        for n in names {
            r.start(n);
        }
        r
    })
}

fn spec_of(name: &str) -> &'static Spec {
    &SPECS.iter().find(|(n, _)| *n == name).unwrap().1
}

impl Runner {
    /// Waits (at most `limit`) until every started row has finished, so that their processes
    /// are gone before the test binary exits.
    fn wait_all(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let all: Vec<Outcome> = self.outcomes.lock().unwrap().values().cloned().collect();
        for o in all {
            let (m, cv) = &*o;
            let mut g = m.lock().unwrap();
            while g.is_none() && Instant::now() < deadline {
                g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
            }
        }
    }

    fn row(&self, spec: &Spec) -> Option<Row> {
        self.table
            .iter()
            .find(|r| r.scenario == spec.scenario && r.victim == spec.victim)
            .cloned()
    }

    fn start(&self, name: &'static str) -> Outcome {
        let mut map = self.outcomes.lock().unwrap();
        if let Some(o) = map.get(name) {
            return o.clone();
        }
        let outcome: Outcome = Arc::new((Mutex::new(None), Condvar::new()));
        map.insert(name, outcome.clone());
        let spec = spec_of(name);
        let row = self.row(spec);
        let slots = self.slots.clone();
        let take = if spec.alone { self.parallel } else { 1 };
        let o = outcome.clone();
        std::thread::spawn(move || {
            let result = match row {
                None => Err(format!(
                    "{name}: no row `{} | {}` in docs/security.md",
                    spec.scenario, spec.victim
                )),
                Some(row) => {
                    {
                        let (m, cv) = &*slots;
                        let mut free = m.lock().unwrap();
                        while *free < take && VERIFIED_UNDER_ATTACK.get().is_none() {
                            free = cv.wait_timeout(free, Duration::from_millis(200)).unwrap().0;
                        }
                        *free = free.saturating_sub(take);
                    }
                    let r = aborted().and_then(|()| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            check_row(spec, &row)
                        }))
                        .unwrap_or_else(|e| Err(panic_text(&*e)))
                    });
                    let (m, cv) = &*slots;
                    *m.lock().unwrap() += take;
                    cv.notify_all();
                    r
                }
            };
            let (m, cv) = &*o;
            *m.lock().unwrap() = Some(result);
            cv.notify_all();
        });
        outcome
    }
}

/// The body of every row test: waits for its row's run; fails on its failure, and at once when
/// any row showed a forbidden `verified`.
fn run_row(name: &'static str) {
    let outcome = runner().start(name);
    let (m, cv) = &*outcome;
    let mut done = m.lock().unwrap();
    loop {
        if let Some(msg) = VERIFIED_UNDER_ATTACK.get() {
            drop(done);
            runner().wait_all(Duration::from_secs(60));
            panic!("SHIELD UNDER ATTACK, the suite stops: {msg}");
        }
        if let Some(r) = done.as_ref() {
            match r {
                Ok(took) => {
                    eprintln!(
                        "{name}: as in docs/security.md ({:.1} s)",
                        took.as_secs_f64()
                    );
                    return;
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
        done = cv.wait_timeout(done, Duration::from_millis(200)).unwrap().0;
    }
}

/// Every table row has a test and every test a row, once; the table keeps `verified` off every
/// attack on fingerprints, devices or the DTLS endpoint.
#[test]
fn table_and_tests_match() {
    let table = read_table();
    let mut problems = Vec::new();
    for (i, r) in table.iter().enumerate() {
        if table[..i]
            .iter()
            .any(|o| o.scenario == r.scenario && o.victim == r.victim)
        {
            problems.push(format!("row `{} | {}` twice", r.scenario, r.victim));
        }
        if !SPECS
            .iter()
            .any(|(_, s)| s.scenario == r.scenario && s.victim == r.victim)
        {
            problems.push(format!("row `{} | {}` has no test", r.scenario, r.victim));
        }
        if KEY_ATTACKS.contains(&r.scenario.as_str())
            && (r.caller.0 == "verified" || r.callee.0 == "verified")
        {
            problems.push(format!(
                "row `{} | {}` says verified under an attack on fingerprints or devices",
                r.scenario, r.victim
            ));
        }
    }
    for (name, s) in SPECS {
        if !table
            .iter()
            .any(|r| r.scenario == s.scenario && r.victim == s.victim)
        {
            problems.push(format!(
                "test {name} (`{} | {}`) has no row",
                s.scenario, s.victim
            ));
        }
        if SPECS
            .iter()
            .filter(|(_, o)| o.scenario == s.scenario && o.victim == s.victim)
            .count()
            > 1
        {
            problems.push(format!("two tests for `{} | {}`", s.scenario, s.victim));
        }
    }
    // Every scenario the proxy knows is used by some row (new scenarios need a row).
    let out = Command::new(python())
        .args([
            "-c",
            "import xmpp_mitm, json; print(json.dumps(xmpp_mitm.SCENARIOS))",
        ])
        .current_dir(PY_DIR)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let known: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    for k in &known {
        if !SPECS
            .iter()
            .any(|(_, s)| s.mitm.windows(2).any(|w| w == ["--scenario", k.as_str()]))
        {
            problems.push(format!("proxy scenario {k} is used by no row"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/security.md and mitm_proxy.rs disagree:\n{}",
        problems.join("\n")
    );
    assert!(table.len() >= 20, "{} rows only", table.len());
}

// ---- checks beyond the table ------------------------------------------------------------------

/// The control: the proxy itself breaks nothing; both shields name the peer's own device.
fn check_passthrough(calls: &[CallSeen]) {
    let c = &calls[0];
    assert!(
        c.rewrites.is_empty(),
        "passthrough rewrote: {:?}",
        c.rewrites
    );
    check_shield_devices(calls);
    assert!(c.caller_ok);
}

/// A verified side's shield names the genuine peer device (never a forger's).
fn check_shield_devices(calls: &[CallSeen]) {
    let c = calls.last().unwrap();
    for (who, side, peer) in [
        ("caller", &c.caller, &c.devices.1),
        ("callee", &c.callee, &c.devices.0),
    ] {
        if CallSeen::shields(side).iter().any(|s| s == "verified") {
            assert_eq!(
                CallSeen::shield_device(side).as_ref(),
                Some(peer),
                "{who}: {side:?}"
            );
        }
    }
}

/// replay: the recorded call A really was verified on both sides (so B replays a genuine
/// encrypted fingerprint).
fn check_first_call_verified(calls: &[CallSeen]) {
    let a = &calls[0];
    assert_eq!(
        CallSeen::shields(&a.caller),
        ["verified"],
        "call A caller: {:?}",
        a.caller
    );
    assert_eq!(
        CallSeen::shields(&a.callee),
        ["verified"],
        "call A callee: {:?}",
        a.callee
    );
}

/// Issue #5 must-show 2, fallback: the attacker's endpoint had audio from both sides and each side
/// recorded the attacker's tone, not the other's.
fn check_media_intercepted(calls: &[CallSeen]) {
    let c = &calls[0];
    assert!(CallSeen::connected(&c.caller) && CallSeen::connected(&c.callee));
    for side in ["caller", "callee"] {
        assert!(
            c.media_reports(side).any(|r| r["media"] == "audio"),
            "no audio from the {side} reached the attacker: {:?}",
            c.rewrites
        );
    }
    let ((fa, na), (fb, nb)) = c.heard;
    // One second of call: at least half a second recorded each side.
    assert!(na > 24_000 && nb > 24_000, "{na} {nb} samples recorded");
    assert!(
        (fa - 660.0).abs() <= 10.0,
        "alice heard {fa} Hz, not the attacker"
    );
    assert!(
        (fb - 660.0).abs() <= 10.0,
        "bob heard {fb} Hz, not the attacker"
    );
}

/// Issue #5 must-show 2, verified: nothing connected, no frame or packet sent or played, no audio
/// reached the attacker, nothing recorded at either end.
fn check_media_blocked(calls: &[CallSeen]) {
    let c = &calls[0];
    assert!(!c.caller_ok, "{:?}", c.caller);
    for (who, side) in [("caller", &c.caller), ("callee", &c.callee)] {
        assert!(!CallSeen::connected(side), "{who}: {side:?}");
        for st in CallSeen::events(side, "stats") {
            for k in ["frames_sent", "frames_played", "packets_sent"] {
                assert!(st[k].is_null() || st[k] == 0, "{who}: {k} must be 0: {st}");
            }
        }
    }
    for side in ["caller", "callee"] {
        assert!(
            !c.media_reports(side).any(|r| r["media"] == "audio"),
            "audio from the {side} reached the attacker: {:?}",
            c.rewrites
        );
    }
    let ((_, na), (_, nb)) = c.heard;
    assert_eq!((na, nb), (0, 0), "something was recorded");
}

/// The decryption oracle (docs/security-tests.md line 17): the victim decrypted the withheld chat
/// message the operator put in as a fingerprint, and nothing either client sent afterwards (or
/// ever) holds any 8 bytes of it; neither does what the victim shows its own user.
fn check_nothing_leaked(calls: &[CallSeen]) {
    let c = calls.last().unwrap();
    let windows: Vec<&str> = (0..=SECRET.len() - 8).map(|i| &SECRET[i..i + 8]).collect();
    let mut sent = 0;
    for line in c.log.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if e["direction"] != "to-server" {
            continue;
        }
        sent += 1;
        let xml = e["xml"].as_str().unwrap_or("");
        for w in &windows {
            assert!(!xml.contains(w), "{} sent {w:?}: {xml}", e["client"]);
        }
    }
    assert!(
        sent > 20,
        "the proxy logged only {sent} stanzas from the clients"
    );
    for side in [&c.caller, &c.callee] {
        for v in side {
            let text = v.to_string();
            assert!(
                !windows.iter().any(|w| text.contains(w)),
                "shown locally: {text}"
            );
        }
    }
}

/// How many 20 ms frames of a recording (after the first 200 ms) carry `hz`, of how many.
fn tone_frames(path: &str, hz: f64) -> (usize, usize) {
    Recording::read_or_empty(Path::new(path)).tone_frames(hz)
}

/// Bounded work (docs/security-tests.md line 19): while the operator floods the callee with 50
/// worst-case OMEMO messages a second "from" the caller, the call stays verified and at least
/// 90 % of the 20 ms frames each side recorded carry the other's tone.
fn check_audio_under_flood(calls: &[CallSeen]) {
    let c = calls.last().unwrap();
    let done = c
        .rewrites
        .iter()
        .find(|r| r["flood"] == "done")
        .unwrap_or_else(|| panic!("the flood did not run: {:?}", c.rewrites));
    let sent = done["sent"].as_u64().unwrap();
    assert!(sent >= 135, "only {sent} forged messages in 3 s: {done}");
    // Each reached bob's OMEMO and was refused there (the work was done, and said).
    let refused = CallSeen::events(&c.callee, "error")
        .filter(|v| {
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains("cannot decrypt")
        })
        .count() as u64;
    assert!(
        refused + 5 >= sent,
        "bob refused {refused} of {sent}: {:?}",
        c.callee
    );
    for (who, (with, total)) in [
        ("bob (flooded) heard alice", c.tone_frames.1),
        ("alice heard bob (flooded)", c.tone_frames.0),
    ] {
        eprintln!("flood: {who} in {with} of {total} frames ({sent} forged messages)");
        assert!(total >= 100, "{who}: only {total} frames recorded");
        assert!(
            with * 10 >= total * 9,
            "{who}: the tone in only {with} of {total} frames"
        );
    }
}

/// The same attack with a withheld message whose text is a well-formed fingerprint (another
/// call's certificate): the victim decrypts it as its peer's fingerprint, DTLS then meets the
/// real certificate, and the victim ends the call with security-error before any media; nothing
/// either client sends holds the fingerprint. (Not a table row: the other side, whose own
/// exchange was genuine, may see its verified DTLS peer for the moment before the victim's
/// terminate arrives, so its cells are not fixed. No interception is possible either way.)
#[test]
fn injected_fingerprint_of_another_call_gives_no_shield_and_reveals_nothing() {
    const OTHER_CALL: &str = "6F:1C:54:9A:3B:E2:07:D8:91:4A:C3:5E:22:B0:7F:18:9D:E6:43:0A:B5:71:2C:F8:0E:93:D4:66:1B:A7:58:C9";
    const AT_CALLEE: &[&str] = &[
        "--scenario",
        "inject-message",
        "--victim",
        "callee",
        "--withhold-to",
        "bob@localhost",
    ];
    const AT_CALLER: &[&str] = &[
        "--scenario",
        "inject-message",
        "--victim",
        "caller",
        "--withhold-to",
        "alice@localhost",
    ];
    for (victim, other, sender, mitm) in [
        ("callee", "caller", Side::Caller, AT_CALLEE),
        ("caller", "callee", Side::Callee, AT_CALLER),
    ] {
        let spec = Spec {
            message: Some((sender, OTHER_CALL)),
            ..spec("inject-message", "-", mitm)
        };
        let dash = ("-".to_owned(), "security-error".to_owned());
        let ok = ("verified".to_owned(), "security-error".to_owned());
        let row = Row {
            scenario: "inject-fingerprint".into(),
            victim: victim.into(),
            caller: if victim == "caller" {
                dash.clone()
            } else {
                ok.clone()
            },
            callee: if victim == "callee" { dash } else { ok },
        };
        let calls = run_calls(&spec, &row).unwrap_or_else(|e| panic!("{victim}: {e}"));
        let c = calls.last().unwrap();
        let v = if victim == "caller" {
            &c.caller
        } else {
            &c.callee
        };
        let o = if other == "caller" {
            &c.caller
        } else {
            &c.callee
        };
        assert!(
            CallSeen::shields(v).is_empty(),
            "{victim} showed a shield: {v:?}"
        );
        assert_eq!(
            CallSeen::reason_cell(v),
            "security-error",
            "{victim}: {v:?}"
        );
        assert!(!CallSeen::connected(v), "{victim}: {v:?}");
        for st in CallSeen::events(v, "stats") {
            for k in ["frames_sent", "frames_played"] {
                assert!(st[k].is_null() || st[k] == 0, "{victim}: {k}: {st}");
            }
        }
        assert!(
            ["security-error", "success"].contains(&CallSeen::reason_cell(o).as_str()),
            "{other}: {o:?}"
        );
        assert!(
            c.rewrites.iter().any(|r| r["stanza"] == "message"),
            "{:?}",
            c.rewrites
        );
        let windows: Vec<&str> = (0..=OTHER_CALL.len() - 8)
            .map(|i| &OTHER_CALL[i..i + 8])
            .collect();
        for line in c.log.lines() {
            let e: Value = serde_json::from_str(line).unwrap();
            if e["direction"] == "to-server" {
                let xml = e["xml"].as_str().unwrap_or("");
                assert!(
                    !windows.iter().any(|w| xml.contains(w)),
                    "{} sent it: {xml}",
                    e["client"]
                );
            }
        }
    }
}

/// The caller, who verified bob, is told before media that this call is not verified.
fn check_downgrade(calls: &[CallSeen], kind: &str) {
    let c = calls.last().unwrap();
    let d: Vec<&Value> = CallSeen::events(&c.caller, "downgrade").collect();
    assert_eq!(d.len(), 1, "{:?}", c.caller);
    assert_eq!(d[0]["kind"], kind, "{}", d[0]);
    let downgrade = c.caller.iter().position(|v| v["event"] == "downgrade");
    let connected = c
        .caller
        .iter()
        .position(|v| v["event"] == "call" && v["state"] == "connected");
    assert!(
        downgrade.is_some() && connected.is_some() && downgrade < connected,
        "{:?}",
        c.caller
    );
}

fn check_downgrade_no_device(calls: &[CallSeen]) {
    check_downgrade(calls, "no-device");
}

fn check_downgrade_omemo_failed(calls: &[CallSeen]) {
    check_downgrade(calls, "omemo-failed");
}
