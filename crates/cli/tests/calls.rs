//! Calls end to end: two (or three) `shieldcall` processes against a real Prosody on loopback,
//! real UDP media on 127.0.0.1, tones recorded to WAV and analysed.
//!
//! Each test is one scenario of issue "verified calls end to end"; the shield and the reasons
//! are read from the `--json` events the user would see.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Listener, Prosody, User};
use serde_json::Value;
use shieldcall_localserver::wav::Recording;

/// Bound on one call from `call` to its exit.
const CALL_BOUND: Duration = Duration::from_secs(40);
/// Bound on waiting for one event.
const EVENT_BOUND: Duration = Duration::from_secs(30);

struct World {
    _prosody: Prosody,
    dir: tempfile::TempDir,
    users: Vec<User>,
}

impl World {
    fn new(names: &[&str]) -> World {
        let prosody = Prosody::start(names);
        let dir = tempfile::tempdir().unwrap();
        let users = names
            .iter()
            .map(|n| User::new(&prosody, n, dir.path().join(n)))
            .collect();
        World {
            _prosody: prosody,
            dir,
            users,
        }
    }

    fn user(&self, i: usize) -> &User {
        &self.users[i]
    }

    /// Another device of user `i` (own data dir, own OMEMO device).
    fn second_device(&self, i: usize) -> User {
        let u = &self.users[i];
        User {
            jid: u.jid.clone(),
            password: u.password.clone(),
            data: self.dir.path().join(format!("{}-2", u.jid)),
            server: u.server.clone(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A recording path nobody analyses (each process its own file: "NULL" in the arguments).
fn discard(u: &User) -> String {
    u.data
        .with_file_name(format!(
            "{}-discard-{}.wav",
            u.data.file_name().unwrap().to_string_lossy(),
            DISCARDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
        .display()
        .to_string()
}

static DISCARDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn with_discard(u: &User, base: Vec<&str>, extra: &[&str]) -> Vec<String> {
    let null = discard(u);
    base.into_iter()
        .chain(extra.iter().copied())
        .map(|a| {
            if a == "NULL" {
                null.clone()
            } else {
                a.to_owned()
            }
        })
        .collect()
}

fn listen(u: &User, extra: &[&str]) -> Listener {
    let args = with_discard(u, vec!["listen", "--media-ip", "127.0.0.1"], extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    u.start(&args, true)
}

fn call(u: &User, to: &User, extra: &[&str]) -> Listener {
    let args = with_discard(u, vec!["call", &to.jid, "--media-ip", "127.0.0.1"], extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    u.start(&args, false)
}

/// Runs a call to its end and returns the caller's process events and exit success.
fn finish(mut caller: Listener) -> (Listener, bool) {
    let status = caller
        .wait_exit(CALL_BOUND)
        .unwrap_or_else(|| panic!("call did not end; seen: {:?}", caller.seen));
    (caller, status.success())
}

fn shield(l: &Listener) -> Vec<String> {
    l.events("shield")
        .iter()
        .map(|v| v["state"].as_str().unwrap().to_owned())
        .collect()
}

fn ended(l: &Listener) -> String {
    let e = l.events("ended");
    assert_eq!(e.len(), 1, "one ended event: {:?}", l.seen);
    e[0]["reason"].as_str().unwrap().to_owned()
}

fn stats(l: &Listener) -> Value {
    let s = l.events("stats");
    assert_eq!(s.len(), 1, "one stats event: {:?}", l.seen);
    s[0].clone()
}

/// Dominant frequency and number of samples of a recording.
fn analyse(path: &Path) -> (f64, usize) {
    // A complete 48 kHz mono 16-bit WAV (hound checks the header's sizes against the data).
    let r = Recording::read(path).unwrap_or_else(|e| panic!("not a complete WAV file: {e}"));
    (r.dominant_frequency(), r.samples().len())
}

fn assert_no_media(l: &Listener) {
    assert!(
        !l.events("call").iter().any(|v| v["state"] == "connected"),
        "no media may flow: {:?}",
        l.seen
    );
    let s = l.events("stats");
    for st in s {
        for k in [
            "frames_sent",
            "frames_played",
            "frames_recorded",
            "packets_sent",
        ] {
            assert!(
                st[k].is_null() || st[k] == 0,
                "{k} must be 0 without verification: {st}"
            );
        }
    }
}

#[test]
fn verified_call_shows_the_shield_on_both_sides_and_carries_both_tones() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    let bob_device = alice.verify(bob);
    let alice_device = bob.verify(alice);
    let (a_wav, b_wav) = (w.path("alice.wav"), w.path("bob.wav"));

    let mut callee = listen(
        bob,
        &[
            "--auto-answer",
            "--tone",
            "880",
            "--record",
            b_wav.to_str().unwrap(),
        ],
    );
    let caller = call(
        alice,
        bob,
        &[
            "--tone",
            "440",
            "--record",
            a_wav.to_str().unwrap(),
            "--duration",
            "2",
        ],
    );
    let (caller, ok) = finish(caller);
    assert!(ok, "call failed: {:?}", caller.seen);
    callee.wait_for(|v| v["event"] == "stats", EVENT_BOUND);

    assert_eq!(shield(&caller), ["verified"], "{:?}", caller.seen);
    assert_eq!(shield(&callee), ["verified"], "{:?}", callee.seen);
    assert_eq!(caller.events("shield")[0]["device"], bob_device);
    assert_eq!(callee.events("shield")[0]["device"], alice_device);
    assert_eq!(ended(&caller), "success");
    assert_eq!(ended(&callee), "success");
    let states: Vec<Value> = caller
        .events("call")
        .iter()
        .map(|v| v["state"].clone())
        .collect();
    for s in [
        "proposing",
        "proceeding",
        "connecting",
        "connected",
        "ended",
    ] {
        assert!(states.contains(&Value::from(s)), "{s} missing: {states:?}");
    }

    let (fa, na) = analyse(&a_wav);
    let (fb, nb) = analyse(&b_wav);
    assert!((fa - 880.0).abs() <= 10.0, "alice heard {fa} Hz");
    assert!((fb - 440.0).abs() <= 10.0, "bob heard {fb} Hz");
    // Two seconds of call: at least 1.5 s recorded each side.
    assert!(na >= 72_000 && nb >= 72_000, "{na} {nb} samples");
    let s = stats(&caller);
    assert!(s["packets_received"].as_u64().unwrap() > 50, "{s}");
    assert!(s["ms_to_shield"].as_u64().is_some(), "{s}");

    // The callee keeps listening after the call; SIGTERM ends it cleanly.
    let status = callee.stop_with("TERM").expect("listen exits on SIGTERM");
    assert!(status.success());
}

#[test]
fn unverified_calls_are_encrypted_or_plain_and_say_so() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    // Never talked, nothing verified: the caller builds the OMEMO session from bob's bundle on
    // <proceed/>, both trust blindly (BTBV) → encrypted, not verified.
    let b_wav = w.path("bob.wav");
    let mut callee = listen(
        bob,
        &[
            "--auto-answer",
            "--tone",
            "880",
            "--record",
            b_wav.to_str().unwrap(),
        ],
    );
    let (caller, ok) = finish(call(
        alice,
        bob,
        &["--tone", "440", "--record", "NULL", "--duration", "1"],
    ));
    assert!(ok, "{:?}", caller.seen);
    callee.wait_for(|v| v["event"] == "stats", EVENT_BOUND);
    assert_eq!(shield(&caller), ["encrypted"], "{:?}", caller.seen);
    assert_eq!(shield(&callee), ["encrypted"], "{:?}", callee.seen);
    let proceeding = caller
        .events("call")
        .into_iter()
        .find(|v| v["state"] == "proceeding")
        .unwrap();
    assert!(proceeding["device"].is_u64(), "{proceeding}");
    let (fb, _) = analyse(&b_wav);
    assert!((fb - 440.0).abs() <= 10.0, "bob heard {fb} Hz");
    callee.stop_with("TERM");

    // The callee does not use OMEMO: no <device/> in <proceed/> → plain fingerprints, no shield.
    let mut callee = listen(
        bob,
        &[
            "--auto-answer",
            "--tone",
            "880",
            "--record",
            "NULL",
            "--no-omemo",
        ],
    );
    let (caller, ok) = finish(call(
        alice,
        bob,
        &["--tone", "440", "--record", "NULL", "--duration", "1"],
    ));
    assert!(ok, "{:?}", caller.seen);
    callee.wait_for(|v| v["event"] == "stats", EVENT_BOUND);
    assert_eq!(shield(&caller), ["none"], "{:?}", caller.seen);
    assert_eq!(shield(&callee), ["none"], "{:?}", callee.seen);
    let proceeding = caller
        .events("call")
        .into_iter()
        .find(|v| v["state"] == "proceeding")
        .unwrap();
    assert!(proceeding["device"].is_null(), "{proceeding}");
    callee.stop_with("TERM");
}

#[test]
fn require_verified_refuses_every_unverified_call_before_media() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));

    // 1. Caller requires verification, bob is only blindly trusted.
    let mut callee = listen(bob, &["--auto-answer", "--tone", "880", "--record", "NULL"]);
    let (caller, ok) = finish(call(
        alice,
        bob,
        &["--tone", "440", "--record", "NULL", "--require-verified"],
    ));
    assert!(!ok, "an unverified call must fail: {:?}", caller.seen);
    assert_eq!(ended(&caller), "security-error", "{:?}", caller.seen);
    assert!(shield(&caller).is_empty());
    assert_no_media(&caller);
    callee.wait_for(|v| v["event"] == "ended", EVENT_BOUND);
    assert_no_media(&callee);
    callee.stop_with("TERM");

    // 2. Caller requires verification, the callee has OMEMO off (no device in proceed).
    let mut callee = listen(
        bob,
        &[
            "--auto-answer",
            "--tone",
            "880",
            "--record",
            "NULL",
            "--no-omemo",
        ],
    );
    let (caller, ok) = finish(call(
        alice,
        bob,
        &["--tone", "440", "--record", "NULL", "--require-verified"],
    ));
    assert!(!ok);
    assert_eq!(ended(&caller), "security-error", "{:?}", caller.seen);
    assert_no_media(&caller);
    callee.wait_for(|v| v["event"] == "ended", EVENT_BOUND);
    assert_no_media(&callee);
    callee.stop_with("TERM");

    // 3. The callee requires verification; alice is only blindly trusted by bob.
    let mut callee = listen(
        bob,
        &[
            "--auto-answer",
            "--tone",
            "880",
            "--record",
            "NULL",
            "--require-verified",
        ],
    );
    let (caller, ok) = finish(call(
        alice,
        bob,
        &["--tone", "440", "--record", "NULL", "--duration", "1"],
    ));
    assert!(!ok, "{:?}", caller.seen);
    callee.wait_for(|v| v["event"] == "ended", EVENT_BOUND);
    assert_eq!(ended(&callee), "security-error", "{:?}", callee.seen);
    assert_no_media(&caller);
    assert_no_media(&callee);
    let text = callee.events("ended")[0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!text.is_empty());
    callee.stop_with("TERM");
}

#[test]
fn second_device_stops_ringing_when_one_answers_and_both_stop_on_retract() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    let bob2 = w.second_device(1);

    // bob's first device answers, the second only rings (asks on its terminal).
    let mut first = listen(bob, &["--auto-answer", "--tone", "880", "--record", "NULL"]);
    let mut second = listen(&bob2, &["--tone", "880", "--record", "NULL"]);
    let caller = call(
        alice,
        bob,
        &["--tone", "440", "--record", "NULL", "--duration", "1"],
    );
    second.wait_for(
        |v| v["event"] == "call" && v["state"] == "ringing",
        EVENT_BOUND,
    );
    let end = second.wait_for(|v| v["event"] == "ended", EVENT_BOUND);
    assert_eq!(end["reason"], "answered-elsewhere", "{end}");
    let (caller, ok) = finish(caller);
    assert!(ok, "{:?}", caller.seen);
    first.wait_for(|v| v["event"] == "stats", EVENT_BOUND);
    assert_eq!(ended(&first), "success");
    assert_no_media(&second);
    first.stop_with("TERM");

    // Both devices only ring; the caller hangs up (SIGTERM) before anyone answers.
    let mut first = listen(bob, &["--tone", "880", "--record", "NULL"]);
    let mut caller = call(alice, bob, &["--tone", "440", "--record", "NULL"]);
    first.wait_for(
        |v| v["event"] == "call" && v["state"] == "ringing",
        EVENT_BOUND,
    );
    second.wait_for(
        |v| v["event"] == "call" && v["state"] == "ringing",
        EVENT_BOUND,
    );
    caller.wait_for(
        |v| v["event"] == "call" && v["state"] == "proposing",
        EVENT_BOUND,
    );
    caller.signal("TERM");
    let status = caller
        .wait_exit(CALL_BOUND)
        .expect("caller exits on SIGTERM");
    assert!(!status.success(), "an unanswered call is not a success");
    for l in [&mut first, &mut second] {
        let end = l.wait_for(|v| v["event"] == "ended", EVENT_BOUND);
        assert_eq!(end["reason"], "retracted", "{end}");
    }
}

#[test]
fn signals_hang_up_cleanly_and_leave_complete_recordings() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    alice.verify(bob);
    bob.verify(alice);
    let (a_wav, b_wav) = (w.path("alice.wav"), w.path("bob.wav"));
    let mut callee = listen(
        bob,
        &[
            "--auto-answer",
            "--tone",
            "660",
            "--record",
            b_wav.to_str().unwrap(),
        ],
    );
    // No --duration: the call runs until the caller gets SIGINT (Ctrl-C).
    let mut caller = call(
        alice,
        bob,
        &["--tone", "330", "--record", a_wav.to_str().unwrap()],
    );
    caller.wait_for(|v| v["event"] == "audio", EVENT_BOUND);
    std::thread::sleep(Duration::from_millis(1500));
    caller.signal("INT");
    let status = caller
        .wait_exit(CALL_BOUND)
        .expect("caller exits on SIGINT");
    assert!(
        status.success(),
        "hanging up a connected call is a success: {:?}",
        caller.seen
    );
    assert_eq!(ended(&caller), "success");
    let end = callee.wait_for(|v| v["event"] == "ended", EVENT_BOUND);
    assert_eq!(end["reason"], "success", "{end}");
    callee.wait_for(|v| v["event"] == "stats", EVENT_BOUND);
    // Every JSON line was a complete object (the reader parsed them), and both WAV files are
    // complete (hound checks the header's sizes against the data).
    let (fa, na) = analyse(&a_wav);
    let (fb, nb) = analyse(&b_wav);
    assert!(
        (fa - 660.0).abs() <= 10.0 && (fb - 330.0).abs() <= 10.0,
        "{fa} {fb}"
    );
    assert!(na >= 48_000 && nb >= 48_000, "{na} {nb}");

    // A second call to the same listener, ended by SIGTERM on the callee's side this time.
    let mut caller = call(alice, bob, &["--tone", "330", "--record", "NULL"]);
    caller.wait_for(|v| v["event"] == "audio", EVENT_BOUND);
    callee.wait_for(|v| v["event"] == "audio", EVENT_BOUND);
    std::thread::sleep(Duration::from_millis(1000));
    let status = callee.stop_with("TERM").expect("listen exits on SIGTERM");
    assert!(status.success());
    let status = caller
        .wait_exit(CALL_BOUND)
        .expect("the caller sees the hang-up");
    assert!(status.success(), "{:?}", caller.seen);
    assert_eq!(ended(&caller), "success");
    // The listener's second recording got its own name.
    let second = b_wav.with_file_name("bob-2.wav");
    let (f2, n2) = analyse(&second);
    assert!((f2 - 330.0).abs() <= 10.0 && n2 > 0, "{f2} {n2}");
}

/// `call` as a person runs it (no `--json`), tones and a discarded recording, 0.5 s.
fn human_call(alice: &User, bob: &User) -> std::process::Command {
    let rec = discard(alice);
    let mut c = std::process::Command::new(common::BIN);
    c.args([
        "--insecure-loopback",
        "--server",
        &alice.server,
        "--account",
        &alice.jid,
    ])
    .arg("--data-dir")
    .arg(&alice.data)
    .args(["call", &bob.jid, "--media-ip", "127.0.0.1", "--tone", "440"])
    .args(["--record", &rec, "--duration", "0.5"])
    .env("SHIELDCALL_PASSWORD", &alice.password)
    .stdin(std::process::Stdio::null());
    c
}

/// `listen` without --auto-answer asks: a "y" typed on its stdin answers the ringing call (it
/// connects, verified), an "n" declines the next one (the caller sees `decline`).
#[test]
fn typed_answers_accept_and_decline() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    alice.verify(bob);
    bob.verify(alice);
    let mut callee = listen(bob, &["--tone", "880", "--record", "NULL"]);
    for (answer, accepted) in [("y", true), ("n", false)] {
        let args = ["--tone", "440", "--record", "NULL", "--duration", "1"];
        let caller = call(alice, bob, &args);
        let ringing = callee.wait_for(
            |v| v["event"] == "call" && v["state"] == "ringing",
            EVENT_BOUND,
        );
        callee.say(answer);
        let (caller, ok) = finish(caller);
        assert_eq!(ok, accepted, "answer {answer}: {:?}", caller.seen);
        let end = callee.wait_for(
            |v| v["event"] == "ended" && v["sid"] == ringing["sid"],
            EVENT_BOUND,
        );
        if accepted {
            assert_eq!(shield(&caller), ["verified"], "{:?}", caller.seen);
            assert_eq!(end["reason"], "success", "{:?}", callee.seen);
        } else {
            assert!(shield(&caller).is_empty(), "{:?}", caller.seen);
            assert_eq!(ended(&caller), "decline", "{:?}", caller.seen);
        }
        callee.wait_for(
            |v| v["event"] == "stats" && v["sid"] == ringing["sid"],
            EVENT_BOUND,
        );
    }
    callee.stop();
}

#[test]
fn human_output_shows_state_shield_symbol_and_device() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    let bob_device = alice.verify(bob);
    bob.verify(alice);
    let _callee = listen(bob, &["--auto-answer", "--tone", "880", "--record", "NULL"]);
    let c = human_call(alice, bob);
    let out = common::run_with_timeout(c, CALL_BOUND);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "call with bob@localhost: proposing".to_owned(),
        "connected".to_owned(),
        format!("\u{1F6E1} verified — bob@localhost, device {bob_device}"),
        "call ended: success".to_owned(),
        "stats: sent".to_owned(),
    ] {
        assert!(text.contains(&want), "{want:?} missing from:\n{text}");
    }
}

// ---- trust × shield, downgrades and per-contact policies (security hardening) --------------------

/// The `downgrade` events of a side: (kind, device), each checked to come before `connected`
/// (before any media plays) and to carry its text.
fn downgrades(l: &Listener) -> Vec<(String, Option<u64>)> {
    let connected = l
        .seen
        .iter()
        .position(|v| v["event"] == "call" && v["state"] == "connected");
    l.seen
        .iter()
        .enumerate()
        .filter(|(_, v)| v["event"] == "downgrade")
        .map(|(i, v)| {
            assert!(
                connected.is_none_or(|c| i < c),
                "downgrade after media started: {:?}",
                l.seen
            );
            let text = v["text"].as_str().unwrap_or("");
            assert!(text.starts_with("NOT VERIFIED"), "{v}");
            assert!(v["peer"].as_str().is_some_and(|p| !p.contains('/')), "{v}");
            (v["kind"].as_str().unwrap().to_owned(), v["device"].as_u64())
        })
        .collect()
}

fn policy(u: &User, contact: &str, on: &str) {
    let out = u.run(&["policy", contact, "--require-verified", on]);
    assert!(out.status.success(), "{out:?}");
    let v = &common::json_lines(&out)[0];
    assert_eq!(v["require_verified"], on == "on", "{v}");
}

/// One call from `caller` to `callee` (auto-answer), tones both ways; both sides' events.
fn one_call(
    caller: &User,
    callee: &User,
    caller_extra: &[&str],
    callee_extra: &[&str],
) -> (Listener, Listener) {
    let mut listen_args = vec!["--auto-answer", "--tone", "880", "--record", "NULL"];
    listen_args.extend_from_slice(callee_extra);
    let mut l = listen(callee, &listen_args);
    let mut call_args = vec!["--tone", "440", "--record", "NULL", "--duration", "0.5"];
    call_args.extend_from_slice(caller_extra);
    let (c, _) = finish(call(caller, callee, &call_args));
    l.wait_for(|v| v["event"] == "stats", EVENT_BOUND);
    l.signal("TERM");
    let _ = l.wait_exit(EVENT_BOUND);
    (c, l)
}

/// Alice verified bob's first device; bob answers (or calls) from a second one she never
/// verified: a lock would be exactly what a server injecting its own device gets.
#[test]
fn new_device_of_a_verified_contact_gives_no_shield_and_a_downgrade_in_both_roles() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    let bob2 = w.second_device(1);
    alice.verify(bob);
    bob.verify(alice);
    let bob2_device = bob2.fingerprint()["device_id"].as_u64().unwrap();

    // Alice calls; bob's new device answers.
    let (caller, callee) = one_call(alice, &bob2, &[], &[]);
    assert_eq!(shield(&caller), ["none"], "{:?}", caller.seen);
    assert_eq!(
        downgrades(&caller),
        [("unverified-device".to_owned(), Some(bob2_device))]
    );
    // Bob's new device has verified nothing: blind trust (BTBV) gives it the lock, honestly.
    assert_eq!(shield(&callee), ["encrypted"], "{:?}", callee.seen);
    assert!(downgrades(&callee).is_empty());

    // The new device calls alice.
    let (caller, callee) = one_call(&bob2, alice, &[], &[]);
    assert_eq!(shield(&callee), ["none"], "{:?}", callee.seen);
    assert_eq!(
        downgrades(&callee),
        [("unverified-device".to_owned(), Some(bob2_device))]
    );
    assert_eq!(shield(&caller), ["encrypted"]);

    // With alice's policy for bob, both are refused before any media.
    policy(alice, "bob@localhost", "on");
    let (caller, callee) = one_call(alice, &bob2, &[], &[]);
    assert_eq!(ended(&caller), "security-error", "{:?}", caller.seen);
    assert_no_media(&caller);
    assert_no_media(&callee);
    let (caller, callee) = one_call(&bob2, alice, &[], &[]);
    assert_eq!(ended(&callee), "security-error", "{:?}", callee.seen);
    assert_no_media(&callee);
    assert_no_media(&caller);
}

#[test]
fn distrusted_device_gets_no_shield_and_none_of_our_encrypted_fingerprints() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    let uri = bob.fingerprint()["uri"].as_str().unwrap().to_owned();
    let out = alice.run(&["distrust", &uri]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(common::json_lines(&out)[0]["event"], "distrusted");

    // Alice calls: she sends plain fingerprints, the call goes on unverified on both sides.
    let (caller, callee) = one_call(alice, bob, &[], &[]);
    assert_eq!(shield(&caller), ["none"], "{:?}", caller.seen);
    assert_eq!(shield(&callee), ["none"], "{:?}", callee.seen);
    assert!(
        caller
            .events("call")
            .iter()
            .any(|v| v["state"] == "connected")
    );

    // Bob calls: alice answers plain, bob's client (which encrypted) ends the call; no lock ever.
    let (caller, callee) = one_call(bob, alice, &[], &[]);
    assert!(
        shield(&callee).iter().all(|s| s == "none"),
        "{:?}",
        callee.seen
    );
    assert_eq!(ended(&caller), "security-error", "{:?}", caller.seen);
    assert_no_media(&callee);

    // With alice's policy for bob, her call to the distrusted device is refused, with no media.
    policy(alice, "bob@localhost", "on");
    let (caller, callee) = one_call(alice, bob, &[], &[]);
    assert_eq!(ended(&caller), "security-error", "{:?}", caller.seen);
    assert_no_media(&caller);
    assert_no_media(&callee);
}

/// A verified call happened; later the contact's side falls back to plain: a downgrade in the
/// words of what each side sees (the callee gets plain fingerprints, the caller an answer
/// without device), refused once the policy is on.
#[test]
fn plain_fallback_after_a_verified_call_is_a_downgrade_in_both_roles() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    let bob_device = alice.verify(bob);
    bob.verify(alice);
    let (caller, callee) = one_call(alice, bob, &[], &[]);
    assert_eq!(
        (shield(&caller), shield(&callee)),
        (vec!["verified".to_owned()], vec!["verified".to_owned()])
    );
    let out = alice.run(&["policy", "bob@localhost"]);
    let v = &common::json_lines(&out)[0];
    assert_eq!(v["last_verified_call"]["device"], bob_device, "{v}");
    assert_eq!(v["require_verified"], false);

    // Alice calls without OMEMO: bob sees plain fingerprints.
    let (_, callee) = one_call(alice, bob, &["--no-omemo"], &[]);
    assert_eq!(shield(&callee), ["none"]);
    assert_eq!(
        downgrades(&callee),
        [("plain-fingerprints".to_owned(), None)]
    );
    // Bob answers without OMEMO: alice's answer names no device.
    let (caller, _) = one_call(alice, bob, &[], &["--no-omemo"]);
    assert_eq!(shield(&caller), ["none"]);
    assert_eq!(downgrades(&caller), [("no-device".to_owned(), None)]);

    // Policies on: both refused, nothing flows.
    policy(bob, "alice@localhost", "on");
    let (_, callee) = one_call(alice, bob, &["--no-omemo"], &[]);
    assert_eq!(ended(&callee), "security-error", "{:?}", callee.seen);
    assert_no_media(&callee);
    // (Bob's own policy would make him refuse to answer without OMEMO at all.)
    policy(bob, "alice@localhost", "off");
    policy(alice, "bob@localhost", "on");
    let (caller, _) = one_call(alice, bob, &[], &["--no-omemo"]);
    assert_eq!(ended(&caller), "security-error", "{:?}", caller.seen);
    assert_no_media(&caller);
    // The default for all contacts does the same for a contact without a setting of its own.
    policy(alice, "bob@localhost", "off");
    let out = alice.run(&["policy", "--default", "--require-verified", "on"]);
    assert!(out.status.success(), "{out:?}");
    let (caller, _) = one_call(alice, bob, &[], &["--no-omemo"]);
    assert_eq!(downgrades(&caller), [("no-device".to_owned(), None)]);
    assert!(
        caller.events("ended")[0]["reason"] != "security-error",
        "bob's own setting (off) wins over the default: {:?}",
        caller.seen
    );
}

#[test]
fn human_output_shows_a_downgrade_in_a_line_nobody_misses() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    alice.verify(bob);
    bob.verify(alice);
    let callee = listen(
        bob,
        &[
            "--auto-answer",
            "--tone",
            "880",
            "--record",
            "NULL",
            "--no-omemo",
        ],
    );
    let human = human_call(alice, bob);
    let out = common::run_with_timeout(human, CALL_BOUND);
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("NOT VERIFIED"))
        .unwrap_or_else(|| panic!("no downgrade line on stderr:\n{err}"));
    assert!(
        line.contains("bob@localhost") && line.contains("no OMEMO device"),
        "{line}"
    );
    assert!(
        line.contains("shieldcall policy bob@localhost --require-verified on"),
        "{line}"
    );
    assert!(line.starts_with("\u{26A0}\u{26A0}\u{26A0}"), "{line}");
    callee.stop_with("TERM");
}

// ---- one account, several processes --------------------------------------------------------------

#[test]
fn a_second_online_process_is_refused_and_offline_commands_work_beside_it() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    let first = listen(bob, &["--reject"]);
    let rec = w.path("second.wav").display().to_string();
    for cmd in [
        vec!["listen", "--reject"],
        vec![
            "call",
            "alice@localhost",
            "--tone",
            "440",
            "--record",
            rec.as_str(),
        ],
    ] {
        let out = bob.run(&cmd);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {out:?}");
        let err = common::json_lines(&out)
            .into_iter()
            .find(|v| v["event"] == "error")
            .unwrap_or_else(|| panic!("{cmd:?}: no error: {out:?}"));
        let msg = err["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("`shieldcall listen` (pid {})", first.pid()))
                && msg.contains("already online as bob@localhost"),
            "{msg}"
        );
    }
    // Offline commands work while it runs; so does a short online one (as a guest).
    let alice_uri = alice.fingerprint()["uri"].as_str().unwrap().to_owned();
    let out = alice.run(&["devices", "alice@localhost"]); // alice publishes her keys
    assert!(out.status.success(), "{out:?}");
    for cmd in [
        vec!["fingerprint"],
        vec!["trust", alice_uri.as_str()],
        vec!["devices", "--offline", "alice@localhost"],
        vec!["policy", "alice@localhost"],
        vec!["send", "alice@localhost", "from a second terminal"],
    ] {
        let out = bob.run(&cmd);
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    }
    // Owner-only files: the data dir 0700, the database and the lock 0600.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&bob.data), 0o700);
    for f in ["bob@localhost.sqlite", "bob@localhost.lock"] {
        assert_eq!(mode(&bob.data.join(f)), 0o600, "{f}");
    }
    assert!(first.stop().is_some_and(|s| s.success()));
    // Once it stopped, another may go online.
    let again = listen(bob, &["--reject"]);
    assert!(again.stop().is_some_and(|s| s.success()));
}

#[test]
fn trust_and_policy_in_another_terminal_reach_a_running_call_within_a_second() {
    let w = World::new(&["alice", "bob"]);
    let (alice, bob) = (w.user(0), w.user(1));
    let bob_uri = bob.fingerprint()["uri"].as_str().unwrap().to_owned();
    let callee = listen(bob, &["--auto-answer", "--tone", "880", "--record", "NULL"]);
    let mut caller = call(
        alice,
        bob,
        &["--tone", "440", "--record", "NULL", "--duration", "6"],
    );
    // Nothing verified yet: blind trust, the lock.
    caller.wait_for(|v| v["event"] == "shield", EVENT_BOUND);
    assert_eq!(shield(&caller), ["encrypted"]);
    // Alice scans bob's code in another terminal while the call runs.
    let out = alice.run(&["trust", &bob_uri]);
    assert!(out.status.success(), "{out:?}");
    let trusted = std::time::Instant::now();
    caller.wait_for(
        |v| v["event"] == "shield" && v["state"] == "verified",
        Duration::from_secs(5),
    );
    let took = trusted.elapsed();
    eprintln!(
        "shield verified {} ms after `trust` exited",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(1), "the shield took {took:?}");
    // Distrusting it again takes the shield (and the lock) away ...
    let out = alice.run(&["distrust", &bob_uri]);
    assert!(out.status.success(), "{out:?}");
    caller.wait_for(
        |v| v["event"] == "shield" && v["state"] == "none",
        Duration::from_secs(2),
    );
    // ... and a require-verified policy set now ends the call that is no longer verified.
    let out = alice.run(&["policy", "bob@localhost", "--require-verified", "on"]);
    assert!(out.status.success(), "{out:?}");
    let set = std::time::Instant::now();
    let ended_ev = caller.wait_for(|v| v["event"] == "ended", Duration::from_secs(2));
    assert!(
        set.elapsed() < Duration::from_secs(1),
        "{:?}",
        set.elapsed()
    );
    assert_eq!(ended_ev["reason"], "security-error", "{ended_ev}");
    let (caller, ok) = finish(caller);
    assert!(!ok, "{:?}", caller.seen);
    assert_eq!(shield(&caller), ["encrypted", "verified", "none"]);
    callee.stop_with("TERM");
}
