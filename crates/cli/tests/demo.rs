//! `shieldcall demo` end to end: it starts its own Prosody (the Debian package must be installed;
//! the test fails, never skips, without it), and must report the verified shield on both sides
//! and each side hearing the other's tone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(dead_code)]
#[path = "common/events.rs"]
mod events;

const BIN: &str = env!("CARGO_BIN_EXE_shieldcall");

/// Set-up, messages both ways and a 2 s call take a few seconds; this is generous for a loaded
/// 2-core machine running the debug build.
const LIMIT: Duration = Duration::from_secs(180);

fn require_prosody() {
    let found = ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        .iter()
        .any(|d| std::path::Path::new(d).join("prosody").exists());
    assert!(
        found,
        "prosody is not installed; the demo needs it: apt-get install -y prosody \
         (scripts/demo and scripts/test install it)"
    );
}

/// Runs `shieldcall --json demo ARGS` with a time limit; returns exit success, events, stderr.
/// Its temporary directory goes under `tmp` (TMPDIR).
fn demo(args: &[&str], tmp: &std::path::Path) -> (bool, Vec<Value>, String) {
    let mut child = Command::new(BIN)
        .args(["--json", "demo"])
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("SHIELDCALL_ACCOUNT")
        .env_remove("SHIELDCALL_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            // The demo's own children and Prosody get SIGINT/SIGKILL from its drop guards only
            // when it exits normally; SIGKILL skips them, so report loudly.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "demo did not finish within {LIMIT:?}; output so far:\n{}",
                out.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap();
    let events = stdout.lines().map(events::parse_line).collect();
    (status.success(), events, err.join().unwrap())
}

fn find(events: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    events.iter().filter(|v| pred(v)).collect()
}

#[test]
fn demo_shows_the_verified_shield_on_both_sides_and_matching_audio() {
    require_prosody();
    let tmp = tempfile::tempdir().unwrap();
    let (ok, events, stderr) = demo(&["--seconds", "2"], tmp.path());
    let show = format!("events: {events:#?}\nstderr: {stderr}");
    assert!(ok, "demo failed; {show}");

    let server = find(&events, |v| v["event"] == "server");
    assert_eq!(server.len(), 1, "{show}");
    assert!(
        server[0]["server"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    // Both devices were verified through the other's URI, and the messages arrived verified.
    let fps = find(&events, |v| v["event"] == "fingerprint");
    assert_eq!(fps.len(), 2, "{show}");
    let device = |side: &str| {
        fps.iter()
            .find(|v| v["side"] == side)
            .and_then(|v| v["device_id"].as_u64())
            .unwrap()
    };
    let (alice_dev, bob_dev) = (device("alice"), device("bob"));
    for (side, peer_dev) in [("alice", bob_dev), ("bob", alice_dev)] {
        assert!(
            !find(&events, |v| v["event"] == "trusted"
                && v["side"] == side
                && v["device"] == peer_dev)
            .is_empty(),
            "{side} did not verify the peer's device; {show}"
        );
        let msgs = find(&events, |v| v["event"] == "message" && v["side"] == side);
        assert_eq!(msgs.len(), 1, "{show}");
        assert_eq!(msgs[0]["trust"], "verified", "{show}");
        assert_eq!(msgs[0]["device"], peer_dev, "{show}");
    }

    // The call: each side shows the verified shield for the other's device.
    for (side, peer_dev) in [("alice", bob_dev), ("bob", alice_dev)] {
        let shields = find(&events, |v| v["event"] == "shield" && v["side"] == side);
        let last = shields
            .last()
            .unwrap_or_else(|| panic!("{side} showed no shield; {show}"));
        assert_eq!(last["state"], "verified", "{show}");
        assert_eq!(last["device"], peer_dev, "{show}");
        assert!(
            !find(&events, |v| v["event"] == "stats" && v["side"] == side).is_empty(),
            "no stats from {side}; {show}"
        );
    }
    let alice_stats = find(&events, |v| v["event"] == "stats" && v["side"] == "alice");
    assert!(
        alice_stats[0]["packets_received"].as_u64().unwrap() > 0,
        "{show}"
    );

    // Each recording holds the other's tone (defaults: alice 440 Hz, bob 880 Hz).
    for (side, expected) in [("alice", 880.0), ("bob", 440.0)] {
        let audio = find(&events, |v| v["event"] == "heard" && v["side"] == side);
        assert_eq!(audio.len(), 1, "{show}");
        assert_eq!(audio[0]["ok"], true, "{show}");
        let hz = audio[0]["heard_hz"].as_f64().unwrap();
        assert!(
            (hz - expected).abs() <= 10.0,
            "{side} heard {hz} Hz; {show}"
        );
    }
    let result = find(&events, |v| v["event"] == "result");
    assert_eq!(result.len(), 1, "{show}");
    assert_eq!(result[0]["ok"], true, "{show}");
    assert_eq!(result[0]["shield"]["alice"], "verified", "{show}");
    assert_eq!(result[0]["shield"]["bob"], "verified", "{show}");

    assert_cleaned_up(&events, tmp.path(), &show);
}

/// Prosody no longer listens, the temp dir is gone, and the demo said so.
fn assert_cleaned_up(events: &[Value], tmp: &std::path::Path, show: &str) {
    let server = find(events, |v| v["event"] == "server");
    let addr = server[0]["server"].as_str().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "Prosody still listens on {addr}"
    );
    let cleaned = find(events, |v| v["event"] == "cleaned_up");
    assert_eq!(cleaned.len(), 1, "{show}");
    assert_eq!(cleaned[0]["removed"], true, "{show}");
    let left: Vec<_> = std::fs::read_dir(tmp).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Without verification the messages arrive only blindly trusted, the caller's
/// --require-verified refuses the call, and the demo fails — after cleaning up.
#[test]
fn demo_without_verification_fails_and_cleans_up() {
    require_prosody();
    let tmp = tempfile::tempdir().unwrap();
    let (ok, events, stderr) = demo(&["--seconds", "1", "--skip-verification"], tmp.path());
    let show = format!("events: {events:#?}\nstderr: {stderr}");
    assert!(!ok, "demo succeeded without verification; {show}");
    assert!(
        find(&events, |v| v["event"] == "trusted").is_empty(),
        "{show}"
    );
    let msgs = find(&events, |v| v["event"] == "message");
    assert_eq!(msgs.len(), 2, "{show}");
    assert!(msgs.iter().all(|m| m["trust"] == "trusted"), "{show}");
    assert!(
        find(&events, |v| v["event"] == "shield"
            && v["state"] == "verified")
        .is_empty(),
        "{show}"
    );
    let result = find(&events, |v| v["event"] == "result");
    assert_eq!(result.len(), 1, "{show}");
    assert_eq!(result[0]["ok"], false, "{show}");
    let problems = result[0]["problems"].to_string();
    assert!(problems.contains("shield"), "{show}");
    let errors = find(&events, |v| v["event"] == "error");
    assert!(
        errors
            .last()
            .is_some_and(|e| e["message"].as_str().unwrap().contains("demo failed")),
        "{show}"
    );
    assert_cleaned_up(&events, tmp.path(), &show);
}

#[test]
fn demo_rejects_tones_too_close_to_tell_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, events, _) = demo(&["--tone-a", "440", "--tone-b", "445"], tmp.path());
    assert!(!ok);
    let errors = find(&events, |v| v["event"] == "error");
    assert_eq!(errors.len(), 1, "{events:?}");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("differ"),
        "{events:?}"
    );
}

#[test]
fn demo_help_explains_the_steps() {
    let out = Command::new(BIN).args(["demo", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for s in [
        "--seconds",
        "--keep",
        "--tone-a",
        "--tone-b",
        "apt-get install -y prosody",
        "verified shield",
    ] {
        assert!(help.contains(s), "{s} missing from demo --help:\n{help}");
    }
}

/// SIGTERM in the middle of the call: the demo stops its children and Prosody, removes its
/// directory and exits with an error saying it was interrupted.
#[test]
fn demo_interrupted_during_the_call_cleans_up() {
    require_prosody();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--json", "demo", "--seconds", "30"])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v = events::parse_line(&line);
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    let mut events = Vec::new();
    let deadline = Instant::now() + LIMIT;
    // Wait until both sides are in the call.
    while find(&events, |v| v["event"] == "shield").len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => events.push(v),
            Err(_) => {
                let _ = child.kill();
                panic!("no shields on both sides; {events:#?}");
            }
        }
    }
    let term = Command::new("/bin/sh")
        .args(["-c", "kill -TERM \"$1\"", "sh"])
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let started = Instant::now();
    while let Ok(v) = rx.recv_timeout(Duration::from_secs(30)) {
        events.push(v);
    }
    let status = child.wait().unwrap();
    let show = format!("events: {events:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?} to stop; {show}",
        started.elapsed()
    );
    assert!(!status.success(), "{show}");
    let errors = find(&events, |v| v["event"] == "error");
    assert!(
        errors
            .last()
            .is_some_and(|e| e["message"].as_str().unwrap().contains("interrupted")),
        "{show}"
    );
    assert_cleaned_up(&events, tmp.path(), &show);
    // No process of the demo is left: none has its directory on its command line.
    let dir = tmp.path().to_str().unwrap().as_bytes().to_vec();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            assert!(
                !cmdline.windows(dir.len()).any(|w| w == dir.as_slice()),
                "left running: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            );
        }
    }
}
