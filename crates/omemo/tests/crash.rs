//! Crash safety (docs/security-tests.md line 15, issue "adversarial suite"): an `omemo-shim` keeping its
//! state in SQLite is killed with SIGKILL at random points during 200 message exchanges — between
//! requests and in the middle of an encrypt or decrypt — and restarted from its database. No
//! session is lost, every later message decrypts, duplicates stay refused, and no message key is
//! ever used twice. The seed is printed; `SHIELDCALL_CRASH_SEED=N` replays a run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Kind, Peer};
use serde_json::json;
use shieldcall_omemo::wire::{PreKeySignalMessage, SignalMessage};
use shieldcall_omemo::xml::EncryptedElement;

const A: &str = "alice@localhost";
const B: &str = "bob@localhost";
const EXCHANGES: usize = 200;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// (ratchet key, counter) of the Signal message in the only `<key>`: identifies the message key.
fn message_key_id(xml: &str) -> (Vec<u8>, u32) {
    let e = EncryptedElement::from_xml(xml).unwrap();
    let k = &e.keys[0];
    let m = if k.prekey {
        PreKeySignalMessage::parse(&k.data).unwrap().message
    } else {
        SignalMessage::parse(&k.data).unwrap()
    };
    (m.ratchet_key.serialize().to_vec(), m.counter)
}

fn start_alice(db: &str) -> Peer {
    let mut a = Peer::spawn(Kind::Ours, "alice");
    a.ok(json!({"op":"open","db": db}));
    a
}

#[test]
fn sigkill_at_random_points_loses_no_session() {
    let seed = std::env::var("SHIELDCALL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: {seed} (SHIELDCALL_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir
        .path()
        .join("alice.sqlite")
        .to_string_lossy()
        .into_owned();

    let mut alice = Peer::spawn(Kind::Ours, "alice");
    let a_dev = alice.ok(json!({"op":"init","jid": A, "db": db}))["device_id"]
        .as_u64()
        .unwrap();
    let mut bob = Peer::spawn(Kind::Ours, "bob");
    let b_dev = bob.ok(json!({"op":"init","jid": B}))["device_id"]
        .as_u64()
        .unwrap();
    let bundle = bob.ok(json!({"op":"bundle"}))["bundle_xml"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut used_keys: HashSet<(Vec<u8>, u32)> = HashSet::new();
    let mut delivered_to_alice: Vec<String> = Vec::new();
    let mut kills = 0;
    let (mut committed_then_killed, mut killed_before_commit) = (0, 0);
    let mut first = true;
    for n in 0..EXCHANGES {
        // Alice → Bob, sometimes killed in the middle of the encrypt.
        let text = format!("a{n}");
        let mut rcpt = json!({"jid": B, "device_id": b_dev});
        if first {
            rcpt["bundle_xml"] = json!(bundle);
        }
        let req = json!({"op":"encrypt","recipients":[rcpt],"plaintext_b64": B64.encode(&text)});
        if rng.below(20) == 0 {
            alice.send_only(req);
            std::thread::sleep(Duration::from_micros(rng.below(400)));
            alice.kill();
            kills += 1;
            alice = start_alice(&db);
            // Whatever was committed or not, the session must still work: fall through to a fresh send.
        } else {
            let xml = alice.encrypt(B, b_dev, first.then_some(bundle.as_str()), text.as_bytes());
            assert!(
                used_keys.insert(message_key_id(&xml)),
                "message key used twice (exchange {n})"
            );
            let d = bob.decrypt(A, &xml);
            assert_eq!(d["ok"], json!(true), "bob could not decrypt a{n}: {d}");
            first = false;
        }
        if first {
            continue; // the session is not established until one message went through
        }

        // Bob → Alice, sometimes Alice is killed in the middle of the decrypt.
        let text = format!("b{n}");
        let xml = bob.encrypt(A, a_dev, None, text.as_bytes());
        if rng.below(15) == 0 {
            alice.send_only(json!({"op":"decrypt","from_jid": B,"encrypted_xml": xml}));
            std::thread::sleep(Duration::from_micros(rng.below(400)));
            alice.kill();
            kills += 1;
            alice = start_alice(&db);
            // Either the step was committed (then it is a duplicate now) or it was not (then it
            // decrypts now). Never anything else.
            let r = alice.decrypt(B, &xml);
            if r["ok"] == json!(true) {
                assert_eq!(
                    B64.decode(r["plaintext_b64"].as_str().unwrap()).unwrap(),
                    text.as_bytes()
                );
                delivered_to_alice.push(xml);
                killed_before_commit += 1;
            } else {
                let err = r["error"].as_str().unwrap();
                assert!(
                    err.contains("duplicate"),
                    "after a crash mid-decrypt: {err}"
                );
                committed_then_killed += 1;
            }
        } else {
            let r = alice.decrypt(B, &xml);
            assert_eq!(r["ok"], json!(true), "alice could not decrypt b{n}: {r}");
            delivered_to_alice.push(xml);
        }

        // A quiet kill between requests now and then.
        if rng.below(25) == 0 {
            alice.kill();
            kills += 1;
            alice = start_alice(&db);
        }
        // Re-delivery of an old message is refused, also after restarts.
        if n % 17 == 0 && !delivered_to_alice.is_empty() {
            let old = &delivered_to_alice[rng.below(delivered_to_alice.len() as u64) as usize];
            assert_eq!(
                alice.decrypt(B, old)["ok"],
                json!(false),
                "duplicate accepted after restart"
            );
        }
    }
    assert!(
        kills >= 5,
        "the run killed alice only {kills} times (seed {seed})"
    );
    // Still healthy at the end, in both directions.
    let xml = alice.encrypt(B, b_dev, None, b"last");
    assert!(used_keys.insert(message_key_id(&xml)));
    assert_eq!(bob.decrypt(A, &xml)["ok"], json!(true));
    let xml = bob.encrypt(A, a_dev, None, b"last back");
    assert_eq!(alice.decrypt(B, &xml)["ok"], json!(true));
    eprintln!(
        "crash test: {EXCHANGES} exchanges, {kills} kills ({committed_then_killed} mid-decrypt after \
         the commit, {killed_before_commit} before it), {} distinct message keys",
        used_keys.len()
    );
}
