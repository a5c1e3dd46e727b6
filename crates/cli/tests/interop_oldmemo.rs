//! Must-show 3: interop over a real Prosody with an OMEMO client nobody here wrote — a
//! python-oldmemo peer on a raw XMPP stream (`tests/python/oldmemo_xmpp_peer.py`, test-time only).
//! Needs the interpreter named by `SHIELDCALL_PYTHON` (scripts/test sets it up) or the workspace's
//! `.venv`; fails, never skips, without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Prosody, User, XmppServer, json_lines, password};

const WAIT: Duration = Duration::from_secs(30);

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SHIELDCALL_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/python"
    ));
    if venv.exists() {
        return venv;
    }
    panic!(
        "no Python with python-oldmemo: run scripts/test (it creates .venv from tests/python/requirements.txt \
         and sets SHIELDCALL_PYTHON), or set SHIELDCALL_PYTHON to such an interpreter"
    );
}

struct PyPeer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<serde_json::Value>,
}

impl PyPeer {
    fn start(p: &Prosody, name: &str) -> PyPeer {
        Self::start_with(p, name, &[])
    }

    fn start_with(p: &Prosody, name: &str, extra: &[&str]) -> PyPeer {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/python/oldmemo_xmpp_peer.py"
        );
        let mut child = Command::new(python())
            .arg(script)
            .args([
                "--jid",
                &format!("{name}@localhost"),
                "--password",
                &password(name),
                "--server",
                &p.server(),
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        PyPeer {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn wait_for(&mut self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("python peer: no matching event; seen {:?}", self.seen));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            self.seen.push(v.clone());
            assert_ne!(v["event"], "error", "python peer reported {v}");
            if pred(&v) {
                return v;
            }
        }
    }

    fn command(&mut self, cmd: serde_json::Value) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn python_oldmemo_peer_reads_our_message_and_we_read_its_reply() {
    let p = Prosody::start(&["alice", "pybob"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let fa = json_lines(&alice.run(&["fingerprint"]))[0].clone();
    let out = alice.run(&["devices", "alice@localhost"]); // publishes alice's device and bundle
    assert!(out.status.success(), "{out:?}");

    let mut py = PyPeer::start(&p, "pybob");
    let ready = py.wait_for(|v| v["event"] == "ready");

    let out = alice.run(&["send", "pybob@localhost", "hello python-oldmemo"]);
    assert!(out.status.success(), "{out:?}");
    let sent = json_lines(&out);
    assert_eq!(
        sent.last().unwrap()["devices"],
        serde_json::json!([ready["device_id"]])
    );
    let m = py.wait_for(|v| v["event"] == "message");
    assert_eq!(m["from"], "alice@localhost");
    assert_eq!(m["device"], fa["device_id"]);
    assert_eq!(m["body"], "hello python-oldmemo");

    let mut listen = alice.listen();
    py.command(
        serde_json::json!({"op": "send", "to": "alice@localhost", "text": "hello shieldcall"}),
    );
    py.wait_for(|v| v["event"] == "sent");
    let r = listen.wait_for(
        |v| v["event"] == "message" && v["body"] == "hello shieldcall",
        WAIT,
    );
    assert_eq!(r["from"], "pybob@localhost");
    assert_eq!(r["device"], ready["device_id"]);
    assert_eq!(r["trust"], "trusted");
    assert!(
        !listen.seen.iter().any(|v| v["event"] == "error"),
        "errors while listening: {:?}",
        listen.seen
    );
    listen.stop();
}

/// Must-show 4 (peer input): a peer's malformed device list or bundle makes `send` fail with one
/// error line and no stored change; a message not encrypted for us and a malformed `<encrypted/>`
/// are reported by `listen`, which keeps going and still reads the next good message.
#[test]
fn malformed_peer_input_is_reported_not_fatal() {
    let p = Prosody::start(&["alice", "pybob"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let before = json_lines(&alice.run(&["fingerprint"]))[0].clone();
    assert!(alice.run(&["devices", "alice@localhost"]).status.success());
    let mut py = PyPeer::start(&p, "pybob");
    let ready = py.wait_for(|v| v["event"] == "ready");
    let dev = ready["device_id"].as_u64().unwrap();
    let ax = "eu.siacs.conversations.axolotl";

    // Message not encrypted for us, then a malformed one, then a good one.
    let mut listen = alice.listen();
    let not_for_us = format!(
        "<encrypted xmlns='{ax}'><header sid='{dev}'><key rid='12345'>AAAA</key><iv>AAAAAAAAAAAAAAAA</iv></header><payload>AAAA</payload></encrypted>"
    );
    py.command(serde_json::json!({"op": "send_raw", "to": "alice@localhost", "xml": not_for_us}));
    let e = listen.wait_for(|v| v["event"] == "error", WAIT);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("not encrypted for this device"),
        "{e}"
    );
    let malformed = format!("<encrypted xmlns='{ax}'><header sid='x'/></encrypted>");
    py.command(serde_json::json!({"op": "send_raw", "to": "alice@localhost", "xml": malformed}));
    let e = listen.wait_for(|v| v["event"] == "error", WAIT);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("malformed OMEMO element"),
        "{e}"
    );
    py.command(serde_json::json!({"op": "send", "to": "alice@localhost", "text": "still fine"}));
    let m = listen.wait_for(|v| v["event"] == "message", WAIT);
    assert_eq!(m["body"], "still fine");
    listen.stop();

    // Malformed bundle: send finds no usable device.
    let bundle_node = format!("{ax}.bundles:{dev}");
    py.command(serde_json::json!({"op": "publish_raw", "node": bundle_node, "xml": format!("<bundle xmlns='{ax}'><identityKey>!!</identityKey></bundle>")}));
    py.wait_for(|v| v["event"] == "done");
    // (alice already has a session with pybob's device from the good message: use a new account.)
    let mut p = p;
    p.register("carol");
    let carol = User::new(&p, "carol", tmp.path().join("carol"));
    let out = carol.run(&["send", "pybob@localhost", "x"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = json_lines(&out);
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "error");
    assert!(
        last["message"].as_str().unwrap().contains("malformed"),
        "{lines:?}"
    );

    // Malformed device list: one error line, exit 1.
    py.command(serde_json::json!({"op": "publish_raw", "node": format!("{ax}.devicelist"), "xml": format!("<list xmlns='{ax}'><device id='-5'/></list>")}));
    py.wait_for(|v| v["event"] == "done");
    let out = alice.run(&["send", "pybob@localhost", "x"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .contains("device list of pybob@localhost is malformed"),
        "{lines:?}"
    );

    let after = json_lines(&alice.run(&["fingerprint"]))[0].clone();
    assert_eq!(before, after, "stored identity changed");
}

/// Another client of the same account created the device-list node with the server's default
/// access model (Prosody: presence): our publish with `access_model=open` gets
/// `precondition-not-met`, reconfigures the node and publishes again, keeping the other device;
/// a stranger can then read the list.
#[test]
fn precondition_not_met_reconfigures_the_node() {
    let p = Prosody::start(&["pybob", "carol"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut py = PyPeer::start_with(&p, "pybob", &["--no-publish"]);
    let ready = py.wait_for(|v| v["event"] == "ready");
    let ax = "eu.siacs.conversations.axolotl";
    let node = format!("{ax}.devicelist");
    // Recreate the node as a client without publish-options would leave it.
    py.command(
        serde_json::json!({"op": "publish_raw", "node": node, "options": false,
        "xml": format!("<list xmlns='{ax}'><device id='{}'/></list>", ready["device_id"])}),
    );
    py.wait_for(|v| v["event"] == "done");
    let carol = User::new(&p, "carol", tmp.path().join("carol"));
    let before = json_lines(&carol.run(&["devices", "pybob@localhost"]));
    let visible_before = before.iter().any(|d| d["event"] == "device");

    let bob2 = User::new(&p, "pybob", tmp.path().join("pybob-2"));
    let f2 = json_lines(&bob2.run(&["fingerprint"]))[0].clone();
    let out = bob2.run(&["devices", "pybob@localhost"]);
    assert!(out.status.success(), "{out:?}");
    let own: Vec<_> = json_lines(&out)
        .iter()
        .map(|d| d["device"].clone())
        .collect();
    assert!(
        own.contains(&ready["device_id"]) && own.contains(&f2["device_id"]),
        "{own:?}"
    );

    let out = carol.run(&["devices", "pybob@localhost"]);
    assert!(out.status.success(), "{out:?}");
    let seen: Vec<_> = json_lines(&out)
        .iter()
        .map(|d| d["device"].clone())
        .collect();
    assert!(
        seen.contains(&f2["device_id"]) && seen.contains(&ready["device_id"]),
        "{seen:?}"
    );
    assert!(
        !visible_before,
        "the node was readable by a stranger before: the test proves nothing"
    );
}

fn pre_key_ids(bundle_xml: &str) -> Vec<u32> {
    bundle_xml
        .split("preKeyId=")
        .skip(1)
        .filter_map(|s| s.get(1..)?.split(['"', '\'']).next()?.parse().ok())
        .collect()
}

/// A one-time prekey used by a peer's first message is replaced and the bundle republished.
#[test]
fn consumed_prekey_is_replaced_and_republished() {
    let p = Prosody::start(&["alice", "pybob"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let fa = json_lines(&alice.run(&["fingerprint"]))[0].clone();
    let mut listen = alice.listen();
    let mut py = PyPeer::start(&p, "pybob");
    py.wait_for(|v| v["event"] == "ready");
    let node = format!("eu.siacs.conversations.axolotl.bundles:{}", fa["device_id"]);
    py.command(serde_json::json!({"op": "fetch", "jid": "alice@localhost", "node": node}));
    let before = pre_key_ids(
        py.wait_for(|v| v["event"] == "fetched")["xml"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(before.len(), 100, "{before:?}");

    py.command(serde_json::json!({"op": "send", "to": "alice@localhost", "text": "first"}));
    listen.wait_for(|v| v["event"] == "message", WAIT);
    // The republish follows the decrypt; poll briefly.
    let deadline = Instant::now() + WAIT;
    let after = loop {
        py.command(serde_json::json!({"op": "fetch", "jid": "alice@localhost", "node": node}));
        let after = pre_key_ids(
            py.wait_for(|v| v["event"] == "fetched")["xml"]
                .as_str()
                .unwrap(),
        );
        if after != before || Instant::now() > deadline {
            break after;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let gone: Vec<_> = before.iter().filter(|id| !after.contains(id)).collect();
    let new: Vec<_> = after.iter().filter(|id| !before.contains(id)).collect();
    assert_eq!(
        (gone.len(), new.len(), after.len()),
        (1, 1, 100),
        "gone {gone:?} new {new:?}"
    );
    listen.stop();
}

/// Another client of our account publishes a device list without us: `listen` sees the
/// notification and puts its device back (keeping the other client's).
#[test]
fn own_device_dropped_from_list_is_put_back() {
    let p = Prosody::start(&["alice", "carol"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let carol = User::new(&p, "carol", tmp.path().join("carol"));
    let fa = json_lines(&alice.run(&["fingerprint"]))[0].clone();
    let mut listen = alice.listen();
    let mut py = PyPeer::start(&p, "alice"); // a second client of the same account
    let ready = py.wait_for(|v| v["event"] == "ready");
    let ax = "eu.siacs.conversations.axolotl";
    py.command(
        serde_json::json!({"op": "publish_raw", "node": format!("{ax}.devicelist"),
        "xml": format!("<list xmlns='{ax}'><device id='{}'/></list>", ready["device_id"])}),
    );
    py.wait_for(|v| v["event"] == "done");
    listen.wait_for(
        |v| {
            v["event"] == "devicelist"
                && v["devices"]
                    .as_array()
                    .is_some_and(|d| !d.contains(&fa["device_id"]))
        },
        WAIT,
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let out = carol.run(&["devices", "alice@localhost"]);
        let ids: Vec<_> = json_lines(&out)
            .iter()
            .map(|d| d["device"].clone())
            .collect();
        if ids.contains(&fa["device_id"]) && ids.contains(&ready["device_id"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "own device not put back: {ids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    listen.stop();
}

/// A contact listing more than MAX_SESSION_DEVICES devices: only that many are tried, with a
/// warning, and the message still reaches the real device.
#[test]
fn huge_device_list_is_capped() {
    let p = Prosody::start(&["alice", "pybob"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let mut py = PyPeer::start(&p, "pybob");
    let ready = py.wait_for(|v| v["event"] == "ready");
    let ax = "eu.siacs.conversations.axolotl";
    let mut list = format!("<list xmlns='{ax}'><device id='{}'/>", ready["device_id"]);
    for id in 1..=200 {
        list.push_str(&format!("<device id='{id}'/>"));
    }
    list.push_str("</list>");
    py.command(
        serde_json::json!({"op": "publish_raw", "node": format!("{ax}.devicelist"), "xml": list}),
    );
    py.wait_for(|v| v["event"] == "done");
    let out = alice.run(&["send", "pybob@localhost", "capped"]);
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    let cap = shieldcall::omemo_service::MAX_SESSION_DEVICES.to_string();
    assert!(
        lines.iter().any(|v| v["event"] == "warning"
            && v["message"]
                .as_str()
                .unwrap()
                .contains(&format!("only the first {cap}"))),
        "{lines:?}"
    );
    let no_bundle = lines
        .iter()
        .filter(|v| {
            v["event"] == "warning" && v["message"].as_str().unwrap().contains("has no bundle")
        })
        .count();
    assert_eq!(
        no_bundle,
        shieldcall::omemo_service::MAX_SESSION_DEVICES - 1,
        "{lines:?}"
    );
    let m = py.wait_for(|v| v["event"] == "message");
    assert_eq!(m["body"], "capped");
}

/// One account, several processes (security hardening, must-show 4): 200 messages reach `listen`
/// while another process works on the same data dir in a loop (`trust`, `devices --offline`, and
/// `send` as a guest, which ratchets the very session the messages arrive on), and fresh devices
/// of other accounts start sessions (each using up one of bob's one-time prekeys). Every message
/// decrypts exactly once, nothing is lost either way, no prekey id is given to two keys, and the
/// bundle an independent client (python-oldmemo) fetches is exactly what bob's database holds.
#[test]
fn messages_decrypt_once_while_another_process_uses_the_account() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const MESSAGES: usize = 200;
    const FRESH: usize = 6;
    let mut names = vec!["alice".to_owned(), "bob".to_owned(), "pyobs".to_owned()];
    names.extend((0..FRESH).map(|k| format!("fresh{k}")));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let p = Prosody::start(&refs);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let bob = User::new(&p, "bob", tmp.path().join("bob"));
    let alice_uri = json_lines(&alice.run(&["fingerprint"]))[0]["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bob_listen = bob.listen();
    let mut chat = alice.chat("bob@localhost");

    // The other terminal: bob's data dir, in a loop until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let stop = stop.clone();
        let bob = User {
            jid: bob.jid.clone(),
            password: bob.password.clone(),
            data: bob.data.clone(),
            server: bob.server.clone(),
        };
        std::thread::spawn(move || {
            let mut sent = Vec::new();
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("loop {n}");
                for cmd in [
                    vec!["trust", alice_uri.as_str()],
                    vec!["devices", "--offline", "alice@localhost"],
                    vec!["send", "alice@localhost", text.as_str()],
                ] {
                    let out = bob.run(&cmd);
                    if !out.status.success() {
                        failures.push(format!("{cmd:?}: {out:?}"));
                    }
                }
                sent.push(text);
                n += 1;
            }
            (sent, failures)
        })
    };
    for i in 0..MESSAGES {
        chat.say(&format!("msg {i}"));
    }
    let fresh: Vec<User> = (0..FRESH)
        .map(|k| {
            User::new(
                &p,
                &format!("fresh{k}"),
                tmp.path().join(format!("fresh{k}")),
            )
        })
        .collect();
    for (k, f) in fresh.iter().enumerate() {
        let out = f.run(&["send", "bob@localhost", &format!("fresh {k}")]);
        assert!(out.status.success(), "{out:?}");
    }
    // Everything arrives at bob, each once.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut bodies: BTreeMap<String, usize> = BTreeMap::new();
    while bodies.len() < MESSAGES + FRESH {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {} arrived",
            bodies.len(),
            MESSAGES + FRESH
        );
        let m = bob_listen.wait_for(|v| v["event"] == "message" || v["event"] == "error", left);
        assert_eq!(m["event"], "message", "bob: {m}");
        *bodies
            .entry(m["body"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let (loop_sent, failures) = looper.join().unwrap();
    assert!(
        failures.is_empty(),
        "the other process failed: {failures:#?}"
    );
    assert!(loop_sent.len() >= 2, "the loop hardly ran: {loop_sent:?}");
    eprintln!(
        "the other process ran its loop {} times during the messages",
        loop_sent.len()
    );
    for i in 0..MESSAGES {
        assert_eq!(bodies.get(&format!("msg {i}")), Some(&1), "msg {i}");
    }
    for k in 0..FRESH {
        assert_eq!(bodies.get(&format!("fresh {k}")), Some(&1), "fresh {k}");
    }
    // Alice got every message the other process sent, each once, and no error.
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < loop_sent.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "alice got {got:?} of {loop_sent:?}");
        let m = chat.wait_for(|v| v["event"] == "message" || v["event"] == "error", left);
        assert_eq!(m["event"], "message", "alice: {m}");
        *got.entry(m["body"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(got.values().all(|n| *n == 1), "{got:?}");
    assert!(
        bob_listen.events("error").is_empty(),
        "{:?}",
        bob_listen.seen
    );

    // Prekeys: still 100, the used ones replaced by ids never seen before, and the published
    // bundle (as an independent client fetches it) is what the database holds.
    let db = shieldcall_omemo::SqliteStore::open(bob.data.join("bob@localhost.sqlite")).unwrap();
    let (device, next_id, stored) = {
        use shieldcall_omemo::Store as _;
        let own = db.own().unwrap().unwrap();
        let ids: Vec<u32> = db.pre_keys().unwrap().iter().map(|k| k.id).collect();
        (own.device_id, own.next_pre_key_id, ids)
    };
    assert_eq!(stored.len(), 100);
    // One new id per prekey message bob decrypted: every fresh device's, and alice's first
    // unless bob's loop reached her first (then her first message needs no prekey of his).
    let allocated = next_id - 101;
    assert!(
        allocated == FRESH as u32 || allocated == FRESH as u32 + 1,
        "{allocated} ids allocated for {FRESH} or {} new sessions",
        FRESH + 1
    );
    assert!(
        stored.iter().all(|id| *id < next_id),
        "{stored:?} (next {next_id})"
    );
    let mut py = PyPeer::start_with(&p, "pyobs", &["--no-publish"]);
    py.wait_for(|v| v["event"] == "ready");
    let node = format!("eu.siacs.conversations.axolotl.bundles:{device}");
    let deadline = Instant::now() + WAIT;
    loop {
        py.command(serde_json::json!({"op": "fetch", "jid": "bob@localhost", "node": node}));
        let mut published = pre_key_ids(
            py.wait_for(|v| v["event"] == "fetched")["xml"]
                .as_str()
                .unwrap(),
        );
        published.sort_unstable();
        if published == stored {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "published {published:?}\nstored {stored:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    chat.end_input();
    bob_listen.stop();
}
