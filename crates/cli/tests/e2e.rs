//! End-to-end tests of the CLI against a real Prosody (started by the test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Prosody, User, XmppServer, json_lines};

const WAIT: Duration = Duration::from_secs(30);
const FALLBACK_START: &str = "I sent you an OMEMO encrypted message but your client doesn";

/// Must-show 1: two accounts publish device list and bundle with access_model=open (a third
/// account without any roster relation fetches them) and exchange OMEMO messages both ways
/// through the CLI; what the server stores carries no plaintext but the fallback text.
#[test]
fn two_accounts_exchange_omemo_messages_both_ways() {
    let p = Prosody::start(&["alice", "bob", "carol"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let bob = User::new(&p, "bob", tmp.path().join("bob"));
    let carol = User::new(&p, "carol", tmp.path().join("carol"));
    let fa = alice.fingerprint();
    let fb = bob.fingerprint();
    assert!(
        fa["uri"]
            .as_str()
            .unwrap()
            .starts_with("xmpp:alice@localhost?omemo-sid-")
    );

    let mut bob_listen = bob.listen();
    let out = alice.run(&["send", "bob@localhost", "hello bob, secret one"]);
    assert!(out.status.success(), "{out:?}");
    let m = bob_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(m["from"], "alice@localhost");
    assert_eq!(m["body"], "hello bob, secret one");
    assert_eq!(m["device"], fa["device_id"]);
    assert_eq!(m["trust"], "trusted");
    let onlines = bob_listen
        .seen
        .iter()
        .filter(|v| v["event"] == "online")
        .count();
    assert_eq!(
        onlines, 1,
        "one online event per session: {:?}",
        bob_listen.seen
    );

    let mut alice_listen = alice.listen();
    let out = bob.run(&["send", "alice@localhost", "hi alice, secret two"]);
    assert!(out.status.success(), "{out:?}");
    let m = alice_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(m["from"], "bob@localhost");
    assert_eq!(m["body"], "hi alice, secret two");
    assert_eq!(m["device"], fb["device_id"]);

    // Carol is in nobody's roster, yet sees both devices and their bundles (access model open).
    for (who, f) in [("alice@localhost", &fa), ("bob@localhost", &fb)] {
        let out = carol.run(&["devices", who]);
        assert!(out.status.success(), "{out:?}");
        let devs = json_lines(&out);
        assert_eq!(devs.len(), 1, "{devs:?}");
        assert_eq!(devs[0]["device"], f["device_id"]);
        assert_eq!(
            devs[0]["fingerprint"], f["fingerprint"],
            "bundle of {who} fetched by a stranger"
        );
        assert!(devs[0]["problem"].is_null());
    }

    // What the server stores for an offline recipient: OMEMO and the fallback, no plaintext.
    bob_listen.stop();
    let out = alice.run(&["send", "bob@localhost", "offline secret three"]);
    assert!(out.status.success(), "{out:?}");
    let stored = p.stored_data();
    assert!(
        stored.contains("eu.siacs.conversations.axolotl"),
        "no OMEMO message stored"
    );
    assert!(stored.contains(FALLBACK_START), "no fallback body stored");
    assert!(stored.contains("urn:xmpp:eme:0"));
    for secret in ["secret one", "secret two", "secret three"] {
        assert!(
            !stored.contains(secret),
            "plaintext '{secret}' reached the server"
        );
    }
    let mut bob_listen = bob.listen();
    let m = bob_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(m["body"], "offline secret three");
    // Ctrl-C: clean shutdown, exit status 0.
    assert!(
        alice_listen.stop().is_some_and(|s| s.success()),
        "listen did not exit cleanly on SIGINT"
    );
    bob_listen.stop();
}

/// Must-show 4 (part): a wrong password, an unreachable server and a malformed URI each give
/// one JSON error line and a non-zero exit, and leave the stored identity alone.
#[test]
fn bad_input_gives_one_error_line() {
    let p = Prosody::start(&["alice"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut alice = User::new(&p, "alice", tmp.path().join("alice"));
    let before = alice.fingerprint();

    alice.password = "wrong".into();
    let out = alice.run(&["send", "bob@localhost", "x"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "error");
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .contains("wrong password"),
        "{lines:?}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{out:?}"
    );

    alice.password = common::password("alice");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    alice.server = format!("127.0.0.1:{closed}");
    let out = alice.run(&["devices", "alice@localhost"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot connect"),
        "{lines:?}"
    );

    for bad in [
        "mailto:x@y",
        "xmpp:bob@localhost?omemo-sid-1=abcd",
        "xmpp:bob@localhost",
    ] {
        let out = alice.run(&["trust", bad]);
        assert_ne!(out.status.code(), Some(0), "{out:?}");
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["event"], "error");
    }
    assert_eq!(alice.fingerprint(), before, "stored identity changed");

    // Plaintext only to loopback.
    alice.server = "192.0.2.1:5222".into();
    let out = alice.run(&["devices", "alice@localhost"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// `trust URI` marks a contact's key verified, and `devices` then shows it so.
#[test]
fn trust_uri_then_devices_shows_verified() {
    let p = Prosody::start(&["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let bob = User::new(&p, "bob", tmp.path().join("bob"));
    let fb = bob.fingerprint();
    let out = bob.run(&["devices", "bob@localhost"]); // publishes bob's device
    assert!(out.status.success(), "{out:?}");
    let out = alice.run(&["trust", fb["uri"].as_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let t = json_lines(&out);
    assert_eq!(t[0]["event"], "trusted");
    assert_eq!(t[0]["jid"], "bob@localhost");
    assert_eq!(t[0]["device"], fb["device_id"]);
    assert_eq!(t[0]["fingerprint"], fb["fingerprint"]);
    let out = alice.run(&["devices", "bob@localhost"]);
    let d = json_lines(&out);
    assert_eq!(d[0]["trust"], "verified", "{d:?}");

    // The same through a QR code image, for a second account.
    let png = tmp.path().join("bob.png");
    let out = bob.run(&["fingerprint", "--png", png.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let carol_dir = tmp.path().join("carol");
    let mut p = p;
    p.register("carol");
    let carol = User::new(&p, "carol", carol_dir);
    let out = carol.run(&["trust", "--qr", png.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let t = json_lines(&out);
    assert_eq!(t[0]["fingerprint"], fb["fingerprint"]);
    assert_eq!(t[0]["previous"], "undecided");
}

/// Must-show 2: one account on two devices. A message sent from device 1 is readable on device 2
/// (sent carbon, encrypted for our own other device); a contact sees the new device through the
/// device-list notification and in `devices`.
#[test]
fn one_account_two_devices() {
    let p = Prosody::start(&["alice", "bob"]);
    p.befriend("alice", "bob");
    let tmp = tempfile::tempdir().unwrap();
    let a1 = User::new(&p, "alice", tmp.path().join("alice-1"));
    let a2 = User::new(&p, "alice", tmp.path().join("alice-2"));
    let bob = User::new(&p, "bob", tmp.path().join("bob"));
    let f1 = a1.fingerprint();
    let f2 = a2.fingerprint();
    assert_ne!(f1["device_id"], f2["device_id"]);
    let out = a1.run(&["devices", "alice@localhost"]); // publishes device 1
    assert!(out.status.success(), "{out:?}");

    let mut bob_listen = bob.listen();
    let mut a2_listen = a2.listen(); // publishes device 2 next to device 1
    let n = bob_listen.wait_for(
        |v| {
            v["event"] == "devicelist"
                && v["jid"] == "alice@localhost"
                && v["devices"]
                    .as_array()
                    .is_some_and(|d| d.contains(&f2["device_id"]))
        },
        WAIT,
    );
    assert!(
        n["devices"].as_array().unwrap().contains(&f1["device_id"]),
        "{n}"
    );
    let out = bob.run(&["devices", "alice@localhost"]);
    let ids: Vec<_> = json_lines(&out)
        .iter()
        .map(|d| d["device"].clone())
        .collect();
    assert!(
        ids.contains(&f1["device_id"]) && ids.contains(&f2["device_id"]),
        "{ids:?}"
    );

    let out = a1.run(&["send", "bob@localhost", "from device one"]);
    assert!(out.status.success(), "{out:?}");
    let m = bob_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(m["body"], "from device one");
    assert_eq!(m["device"], f1["device_id"]);
    let c = a2_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(c["from"], "alice@localhost");
    assert_eq!(c["to"], "bob@localhost");
    assert_eq!(c["device"], f1["device_id"]);
    assert_eq!(c["body"], "from device one");

    // Bob's reply reaches device 2 (device 1 is offline).
    let out = bob.run(&["send", "alice@localhost", "reply to both"]);
    assert!(out.status.success(), "{out:?}");
    let r = a2_listen.wait_for(
        |v| v["event"] == "message" && v["from"] == "bob@localhost",
        WAIT,
    );
    assert_eq!(r["body"], "reply to both");
    bob_listen.stop();
    a2_listen.stop();
}

/// A contact outside the roster: after the first message to it we are subscribed to its device
/// list, so its new device reaches our `listen` as a notification.
#[test]
fn stranger_new_device_is_notified_after_first_contact() {
    let p = Prosody::start(&["alice", "carol"]);
    let tmp = tempfile::tempdir().unwrap();
    let a1 = User::new(&p, "alice", tmp.path().join("alice-1"));
    let a2 = User::new(&p, "alice", tmp.path().join("alice-2"));
    let carol = User::new(&p, "carol", tmp.path().join("carol"));
    assert!(a1.run(&["devices", "alice@localhost"]).status.success());
    let out = carol.run(&["send", "alice@localhost", "hello stranger"]);
    assert!(out.status.success(), "{out:?}");
    let mut carol_listen = carol.listen();
    let f2 = a2.fingerprint();
    let a2_listen = a2.listen();
    carol_listen.wait_for(
        |v| {
            v["event"] == "devicelist"
                && v["jid"] == "alice@localhost"
                && v["devices"]
                    .as_array()
                    .is_some_and(|d| d.contains(&f2["device_id"]))
        },
        WAIT,
    );
    a2_listen.stop();
    carol_listen.stop();
}

/// The server goes away and comes back: `listen` reconnects with backoff, goes online again
/// (presence, carbons) and keeps receiving.
#[test]
fn listen_reconnects_after_server_restart() {
    let mut p = Prosody::start(&["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let bob = User::new(&p, "bob", tmp.path().join("bob"));
    assert!(alice.run(&["devices", "alice@localhost"]).status.success());
    let mut bob_listen = bob.listen();
    p.restart();
    bob_listen.wait_for(|v| v["event"] == "online", WAIT);
    let out = alice.run(&["send", "bob@localhost", "after the restart"]);
    assert!(out.status.success(), "{out:?}");
    let m = bob_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(m["body"], "after the restart");
    bob_listen.stop();
}

/// BTBV at the CLI: once Alice verified Bob's first device, Bob's new device stays undecided and
/// gets no key from Alice's `send` (with a warning); before verification new devices are trusted.
/// Also: the password can come from --password-file; without any password the exit is 2.
#[test]
fn btbv_new_device_after_verification_gets_no_key() {
    let p = Prosody::start(&["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let b1 = User::new(&p, "bob", tmp.path().join("bob-1"));
    let b2 = User::new(&p, "bob", tmp.path().join("bob-2"));
    let f1 = b1.fingerprint();
    let f2 = b2.fingerprint();
    assert!(b1.run(&["devices", "bob@localhost"]).status.success());
    assert!(
        alice
            .run(&["trust", f1["uri"].as_str().unwrap()])
            .status
            .success()
    );
    assert!(b2.run(&["devices", "bob@localhost"]).status.success()); // bob's new device appears

    let out = alice.run(&["send", "bob@localhost", "verified only"]);
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    let sent = lines.iter().find(|v| v["event"] == "sent").unwrap();
    assert_eq!(
        sent["devices"],
        serde_json::json!([f1["device_id"]]),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|v| v["event"] == "warning"
            && v["message"]
                .as_str()
                .unwrap()
                .contains(&f2["device_id"].to_string())
            && v["message"].as_str().unwrap().contains("undecided")),
        "{lines:?}"
    );

    // Password from a file; no password at all is a usage error.
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, format!("{}\n", common::password("alice"))).unwrap();
    let mut c = alice.cmd(&[
        "--password-file",
        pw.to_str().unwrap(),
        "devices",
        "alice@localhost",
    ]);
    c.env_remove("SHIELDCALL_PASSWORD");
    let out = common::run_with_timeout(c, WAIT);
    assert!(out.status.success(), "{out:?}");
    let mut c = alice.cmd(&["devices", "alice@localhost"]);
    c.env_remove("SHIELDCALL_PASSWORD");
    let out = common::run_with_timeout(c, WAIT);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        json_lines(&out)[0]["message"]
            .as_str()
            .unwrap()
            .contains("SHIELDCALL_PASSWORD")
    );
}

/// TLS for real servers: STARTTLS and direct TLS verify the server certificate against the
/// system's roots (here: a test CA handed over through SSL_CERT_FILE, which rustls-native-certs
/// reads); an unknown issuer and a server without STARTTLS are refused with one error line.
#[test]
fn tls_is_verified_and_never_downgraded() {
    let tls = Prosody::start_tls(&["alice"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&tls, "alice", tmp.path().join("alice"));
    let run = |args: &[&str], ca: Option<&std::path::Path>| {
        let mut c = std::process::Command::new(common::BIN);
        c.args(["--json", "--account", "alice@localhost", "--data-dir"])
            .arg(&alice.data)
            .args(args)
            .env("SHIELDCALL_PASSWORD", &alice.password);
        match ca {
            Some(ca) => c.env("SSL_CERT_FILE", ca),
            None => c
                .env("SSL_CERT_FILE", "/nonexistent")
                .env("SSL_CERT_DIR", "/nonexistent"),
        };
        common::run_with_timeout(c, WAIT)
    };
    let starttls = tls.server();
    let direct = format!("127.0.0.1:{}", tls.tls_port());
    let ca = tls.ca_file();
    for args in [
        vec!["--server", starttls.as_str(), "devices", "alice@localhost"],
        vec![
            "--server",
            direct.as_str(),
            "--direct-tls",
            "devices",
            "alice@localhost",
        ],
    ] {
        let out = run(&args, Some(&ca));
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(json_lines(&out)[0]["event"], "device");
        let out = run(&args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0]["message"]
                .as_str()
                .unwrap()
                .contains("certificate"),
            "{lines:?}"
        );
    }

    // A server that offers no STARTTLS: refused unless --insecure-loopback.
    let plain = Prosody::start(&["alice"]);
    let out = run(
        &["--server", &plain.server(), "devices", "alice@localhost"],
        Some(&ca),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = json_lines(&out);
    assert!(
        lines[0]["message"].as_str().unwrap().contains("STARTTLS"),
        "{lines:?}"
    );
}

/// Without --json: short human lines on stdout, one `error: …` line on stderr on failure.
#[test]
fn human_output() {
    let p = Prosody::start(&["alice"]);
    let tmp = tempfile::tempdir().unwrap();
    let human = |args: &[&str], password: &str| {
        let mut c = std::process::Command::new(common::BIN);
        c.args([
            "--insecure-loopback",
            "--server",
            &p.server(),
            "--account",
            "alice@localhost",
            "--data-dir",
        ])
        .arg(tmp.path())
        .args(args)
        .env("SHIELDCALL_PASSWORD", password);
        common::run_with_timeout(c, WAIT)
    };
    let out = human(&["fingerprint"], "x");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("device ") && text.contains("xmpp:alice@localhost?omemo-sid-"),
        "{text}"
    );
    assert!(
        text.contains('█') || text.contains('▀'),
        "no QR code drawn: {text}"
    );

    let out = human(&["send", "bob@localhost", "x"], "wrong");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: login failed"), "{err}");
}

/// `chat JID`: lines on stdin go out encrypted, replies come in on the same process; end of
/// input ends it cleanly after everything was delivered.
#[test]
fn chat_sends_lines_and_receives_replies() {
    let p = Prosody::start(&["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let bob = User::new(&p, "bob", tmp.path().join("bob"));
    let mut bob_listen = bob.listen();
    let mut chat = alice.chat("bob@localhost");
    chat.say("line one");
    chat.wait_for(|v| v["event"] == "sent", WAIT);
    let m = bob_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(m["body"], "line one");
    let out = bob.run(&["send", "alice@localhost", "answer"]);
    assert!(out.status.success(), "{out:?}");
    let r = chat.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(r["body"], "answer");
    chat.say("last line");
    assert!(chat.end_input().is_some_and(|s| s.success()));
    let m = bob_listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(m["body"], "last line");
    bob_listen.stop();
}

/// docs/events.md is what every test holds the CLI's JSON lines against (common::events): it
/// parses, and it tells a good line from a wrong value, a missing or an unknown field.
#[test]
fn the_event_document_judges_lines() {
    use common::events::mismatch;
    use serde_json::json;
    assert!(common::events::count() > 20);
    let good = json!({"event": "shield", "sid": "s", "state": "verified", "device": 7});
    assert_eq!(mismatch(&good), None);
    let forwarded =
        json!({"event": "shield", "sid": "s", "state": "none", "device": null, "side": "bob"});
    assert_eq!(mismatch(&forwarded), None);
    let value = json!({"event": "shield", "sid": "s", "state": "green", "device": 7});
    assert!(mismatch(&value).is_some_and(|w| w.contains("state")));
    let missing = json!({"event": "shield", "sid": "s", "state": "none"});
    assert!(mismatch(&missing).is_some_and(|w| w.contains("device")));
    let unknown = json!({"event": "shield", "sid": "s", "state": "none", "device": 1, "x": 1});
    assert!(mismatch(&unknown).is_some_and(|w| w.contains("\"x\"")));
    let fraction = json!({"event": "audio", "sid": "s", "state": "first", "ms": 1.5});
    assert!(mismatch(&fraction).is_some_and(|w| w.contains("ms")));
    assert!(mismatch(&json!({"event": "nonsense"})).is_some());
}
