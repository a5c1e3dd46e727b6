//! Bounded work per stanza (docs/security-tests.md line 19) and one account used by several processes
//! at once (line 15): each cap of `DecryptLimits` just under (passes) and just over (fails fast
//! with its precise error, nothing stored changes), and two connections to one SQLite file
//! racing on prekeys and on one session.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use shieldcall_omemo::account::{
    DecryptLimits, MAX_CHAIN_STEPS_PER_STANZA, MAX_KEYS_FOR_OWN_DEVICE, MAX_STATES_TRIED_PER_KEY,
};
use shieldcall_omemo::keys::PublicKey;
use shieldcall_omemo::ratchet::MAX_MESSAGE_GAP;
use shieldcall_omemo::session::SessionRecord;
use shieldcall_omemo::wire::SignalMessage;
use shieldcall_omemo::xml::{EncryptedElement, KeyElement};
use shieldcall_omemo::{Account, Error, MemoryStore, Recipient, Store};
// For the tests on one SQLite file (the last section).
#[cfg(feature = "sqlite")]
use {
    shieldcall_omemo::SqliteStore,
    shieldcall_omemo::account::{PRE_KEY_COUNT, SIGNED_PRE_KEY_ROTATION},
    std::collections::BTreeSet,
    std::sync::{Arc, Barrier},
};

const ALICE: &str = "alice@limits";
const BOB: &str = "bob@limits";

fn fresh(jid: &str) -> Account<MemoryStore> {
    Account::create(MemoryStore::new(), jid, None, 0).unwrap()
}

fn rcpt(jid: &str, device: u32) -> Vec<Recipient> {
    vec![Recipient::new(jid, device)]
}

/// Alice and Bob with a session acknowledged both ways (Alice's messages are SignalMessages).
fn established() -> (Account<MemoryStore>, Account<MemoryStore>) {
    let mut alice = fresh(ALICE);
    let mut bob = fresh(BOB);
    alice
        .build_session(BOB, bob.device_id(), &bob.bundle().unwrap())
        .unwrap();
    let first = alice
        .encrypt(&rcpt(BOB, bob.device_id()), b"hello")
        .unwrap();
    bob.decrypt(ALICE, &first).unwrap();
    let reply = bob.encrypt(&rcpt(ALICE, alice.device_id()), b"hi").unwrap();
    alice.decrypt(BOB, &reply).unwrap();
    (alice, bob)
}

/// Everything Bob stores that a decrypt could change.
fn snapshot(bob: &Account<MemoryStore>, alice_dev: u32) -> (Option<SessionRecord>, Vec<u32>) {
    let s = bob.store();
    (
        s.session(ALICE, alice_dev).unwrap(),
        s.pre_keys().unwrap().iter().map(|p| p.id).collect(),
    )
}

/// The Signal message of the (only) key in `el`.
fn signal_message(el: &EncryptedElement) -> SignalMessage {
    assert!(!el.keys[0].prekey);
    SignalMessage::parse(&el.keys[0].data).unwrap()
}

/// A forged SignalMessage on `ratchet_key` at `counter` (random MAC key: it never verifies), the
/// way an attacker makes the receiver walk a chain before the MAC fails.
fn forged_key(
    rid: u32,
    ratchet_key: PublicKey,
    counter: u32,
    alice: &PublicKey,
    bob: &PublicKey,
) -> KeyElement {
    let mac_key: [u8; 32] = shieldcall_omemo::secret::random_bytes().unwrap();
    let m = SignalMessage::new(&mac_key, ratchet_key, counter, 0, vec![7u8; 48], alice, bob);
    KeyElement {
        rid,
        prekey: false,
        data: m.serialize(),
    }
}

#[test]
fn keys_for_own_device_cap() {
    let (mut alice, mut bob) = established();
    let (bob_dev, alice_dev) = (bob.device_id(), alice.device_id());
    let (ak, bk) = (alice.identity_key(), bob.identity_key());
    // A real message for Bob with `garbage` forged keys for his device before the real one.
    let mut with_garbage = |garbage: usize| {
        let mut el = alice.encrypt(&rcpt(BOB, bob_dev), b"payload").unwrap();
        let m = signal_message(&el);
        let real = el.keys.remove(0);
        el.keys = (0..garbage)
            .map(|i| forged_key(bob_dev, m.ratchet_key, m.counter + 1 + i as u32, &ak, &bk))
            .collect();
        el.keys.push(real);
        el
    };
    // Over the cap: refused before any crypto, nothing stored changes.
    let over = with_garbage(MAX_KEYS_FOR_OWN_DEVICE);
    let under = with_garbage(MAX_KEYS_FOR_OWN_DEVICE - 1);
    let two = with_garbage(1);
    let before = snapshot(&bob, alice_dev);
    assert_eq!(
        bob.decrypt(ALICE, &over),
        Err(Error::TooManyKeysForDevice {
            keys: MAX_KEYS_FOR_OWN_DEVICE + 1,
            max: MAX_KEYS_FOR_OWN_DEVICE
        })
    );
    assert_eq!(snapshot(&bob, alice_dev), before);
    // The draft's single-key limit: one key for us, no more.
    assert_eq!(
        bob.decrypt_with(ALICE, &two, &DecryptLimits::SINGLE_KEY),
        Err(Error::TooManyKeysForDevice { keys: 2, max: 1 })
    );
    assert_eq!(snapshot(&bob, alice_dev), before);
    // At the cap: the forged keys fail, the real one decrypts.
    assert_eq!(
        bob.decrypt(ALICE, &under).unwrap().plaintext.as_deref(),
        Some(&b"payload"[..])
    );
}

/// Bob's record with Alice holds `newer` states above the one `old_alice` still sends with.
fn archived_below(newer: usize) -> (Account<MemoryStore>, Account<MemoryStore>, u32) {
    let mut alice = fresh(ALICE);
    let mut bob = fresh(BOB);
    let bob_dev = bob.device_id();
    alice
        .build_session(BOB, bob_dev, &bob.bundle().unwrap())
        .unwrap();
    let m = alice.encrypt(&rcpt(BOB, bob_dev), b"first").unwrap();
    bob.decrypt(ALICE, &m).unwrap();
    let old_alice = Account::open(alice.store().clone()).unwrap();
    for _ in 0..newer {
        // Alice rebuilds her session (a reinstall, a healing session): Bob archives the old one.
        alice
            .build_session(BOB, bob_dev, &bob.bundle().unwrap())
            .unwrap();
        let m = alice.encrypt(&rcpt(BOB, bob_dev), b"again").unwrap();
        bob.decrypt(ALICE, &m).unwrap();
    }
    assert_eq!(
        bob.store()
            .session(ALICE, alice.device_id())
            .unwrap()
            .unwrap()
            .archived_len(),
        newer
    );
    let dev = alice.device_id();
    (old_alice, bob, dev)
}

#[test]
fn session_states_per_key_cap() {
    // The state that decrypts is the last one tried: passes.
    let (mut old_alice, mut bob, _) = archived_below(MAX_STATES_TRIED_PER_KEY - 1);
    let m = old_alice
        .encrypt(&rcpt(BOB, bob.device_id()), b"late")
        .unwrap();
    assert_eq!(
        bob.decrypt(ALICE, &m).unwrap().plaintext.as_deref(),
        Some(&b"late"[..])
    );
    // One state deeper: refused, nothing stored changes.
    let (mut old_alice, mut bob, alice_dev) = archived_below(MAX_STATES_TRIED_PER_KEY);
    let m = old_alice
        .encrypt(&rcpt(BOB, bob.device_id()), b"too late")
        .unwrap();
    let before = snapshot(&bob, alice_dev);
    assert_eq!(
        bob.decrypt(ALICE, &m),
        Err(Error::SessionStatesExhausted {
            tried: MAX_STATES_TRIED_PER_KEY
        })
    );
    assert_eq!(snapshot(&bob, alice_dev), before);
}

#[test]
fn chain_steps_per_stanza_cap() {
    // One element with two keys for Bob: a forged one that makes him walk `walk` steps before
    // its MAC fails, then a real one at the largest gap allowed (MAX_MESSAGE_GAP + 1 steps).
    let real_steps = MAX_MESSAGE_GAP + 1;
    let budget_left = MAX_CHAIN_STEPS_PER_STANZA - real_steps;
    for (walk, passes) in [(budget_left, true), (budget_left + 1, false)] {
        let (mut alice, mut bob) = established();
        let (bob_dev, alice_dev) = (bob.device_id(), alice.device_id());
        let (ak, bk) = (alice.identity_key(), bob.identity_key());
        let delivered = alice.encrypt(&rcpt(BOB, bob_dev), b"x").unwrap();
        bob.decrypt(ALICE, &delivered).unwrap();
        let next = signal_message(&delivered).counter + 1;
        // Alice sends MAX_MESSAGE_GAP + 1 more; only the last arrives.
        let mut last = None;
        for _ in 0..real_steps {
            last = Some(alice.encrypt(&rcpt(BOB, bob_dev), b"far ahead").unwrap());
        }
        let real = last.unwrap();
        let m = signal_message(&real);
        assert_eq!(m.counter - next, MAX_MESSAGE_GAP);
        let mut el = real.clone();
        el.keys.insert(
            0,
            forged_key(bob_dev, m.ratchet_key, next + walk - 1, &ak, &bk),
        );
        let before = snapshot(&bob, alice_dev);
        let got = bob.decrypt(ALICE, &el);
        if passes {
            assert_eq!(got.unwrap().plaintext.as_deref(), Some(&b"far ahead"[..]));
        } else {
            assert_eq!(
                got,
                Err(Error::ChainStepBudgetExhausted {
                    max: MAX_CHAIN_STEPS_PER_STANZA
                })
            );
            assert_eq!(snapshot(&bob, alice_dev), before);
            // The real message alone still decrypts.
            assert!(bob.decrypt(ALICE, &real).is_ok());
        }
    }
}

// ---- several processes on one SQLite file ------------------------------------------------------

/// Two connections to one database, as two processes of one account have.
#[cfg(feature = "sqlite")]
fn two_connections(dir: &std::path::Path) -> (Account<SqliteStore>, Account<SqliteStore>) {
    let path = dir.join("bob.sqlite");
    let (first, created) =
        Account::open_or_create(SqliteStore::open(&path).unwrap(), BOB, 0).unwrap();
    assert!(created);
    let (second, created) =
        Account::open_or_create(SqliteStore::open(&path).unwrap(), BOB, 0).unwrap();
    assert!(!created);
    assert_eq!(first.device_id(), second.device_id());
    (first, second)
}

#[cfg(feature = "sqlite")]
#[test]
fn two_processes_never_give_one_prekey_id_to_two_keys() {
    const SENDERS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (bob_a, bob_b) = two_connections(dir.path());
    let bob_dev = bob_a.device_id();
    let bundle = bob_a.bundle().unwrap();
    // Fresh devices each start a session from the bundle (each consumes a distinct prekey).
    let mut messages = Vec::new();
    let mut used = BTreeSet::new();
    while messages.len() < SENDERS {
        let mut s = fresh(&format!("s{}@limits", messages.len()));
        s.build_session(BOB, bob_dev, &bundle).unwrap();
        let m = s.encrypt(&rcpt(BOB, bob_dev), b"new session").unwrap();
        let pk = match shieldcall_omemo::account::parse_key(&m.keys[0]).unwrap() {
            shieldcall_omemo::wire::CiphertextMessage::PreKey(p) => p.pre_key_id.unwrap(),
            _ => panic!("not a prekey message"),
        };
        if used.insert(pk) {
            messages.push((s.jid().to_owned(), m));
        }
    }
    // Both "processes" decrypt half each, at the same time.
    let barrier = Arc::new(Barrier::new(2));
    let halves: Vec<Vec<(String, EncryptedElement)>> =
        messages.chunks(SENDERS / 2).map(<[_]>::to_vec).collect();
    let handles: Vec<_> = [bob_a, bob_b]
        .into_iter()
        .zip(halves)
        .map(|(mut bob, half)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for (from, m) in half {
                    bob.decrypt(&from, &m).unwrap();
                }
                bob
            })
        })
        .collect();
    let bobs: Vec<Account<SqliteStore>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Each consumed prekey was replaced under a new id: still PRE_KEY_COUNT keys, the ids of the
    // first bundle minus the used ones plus exactly SENDERS fresh ids, none seen before.
    let stored: BTreeSet<u32> = bobs[0]
        .store()
        .pre_keys()
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(stored.len(), PRE_KEY_COUNT);
    let first: BTreeSet<u32> = bundle.pre_keys.iter().map(|(id, _)| *id).collect();
    let fresh_ids: BTreeSet<u32> = stored.difference(&first).copied().collect();
    assert_eq!(fresh_ids.len(), SENDERS);
    assert!(fresh_ids.is_disjoint(&used));
    let expected: BTreeSet<u32> =
        (PRE_KEY_COUNT as u32 + 1..=(PRE_KEY_COUNT + SENDERS) as u32).collect();
    assert_eq!(fresh_ids, expected);
    // The bundle either connection publishes now is what is stored.
    for bob in &bobs {
        let published: BTreeSet<u32> = bob
            .bundle()
            .unwrap()
            .pre_keys
            .iter()
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(published, stored);
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn two_processes_sending_on_one_session_never_reuse_a_message_key() {
    const EACH: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let (mut bob_a, bob_b) = two_connections(dir.path());
    let mut alice = fresh(ALICE);
    alice
        .build_session(BOB, bob_a.device_id(), &bob_a.bundle().unwrap())
        .unwrap();
    let m = alice.encrypt(&rcpt(BOB, bob_a.device_id()), b"hi").unwrap();
    bob_a.decrypt(ALICE, &m).unwrap();
    let alice_dev = alice.device_id();
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = [bob_a, bob_b]
        .into_iter()
        .enumerate()
        .map(|(n, mut bob)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..EACH)
                    .map(|i| {
                        bob.encrypt(&rcpt(ALICE, alice_dev), format!("{n}:{i}").as_bytes())
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let sent: Vec<EncryptedElement> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let mut keys = BTreeSet::new();
    for m in &sent {
        let s = signal_message(m);
        assert!(
            keys.insert((s.ratchet_key.serialize(), s.counter)),
            "message key (counter {}) used twice",
            s.counter
        );
    }
    // Alice reads every one of them, in any order.
    for m in &sent {
        assert!(alice.decrypt(BOB, m).is_ok());
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acct.sqlite");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (mut acct, _) = Account::open_or_create(SqliteStore::open(&path).unwrap(), BOB, 0).unwrap();
    acct.maintain(1).unwrap();
    for f in ["acct.sqlite", "acct.sqlite-wal", "acct.sqlite-shm"] {
        let p = dir.path().join(f);
        if p.exists() {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}: {mode:o}");
        }
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn a_trust_change_elsewhere_is_noticed_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = two_connections(dir.path());
    let key = fresh(ALICE).identity_key();
    assert!(!a.trust_changed().unwrap());
    b.maintain(SIGNED_PRE_KEY_ROTATION + 1).unwrap(); // a commit, but no trust change
    assert!(!a.trust_changed().unwrap());
    b.set_trust(ALICE, &key, shieldcall_omemo::TrustLevel::Verified)
        .unwrap();
    assert!(a.trust_changed().unwrap());
    assert!(!a.trust_changed().unwrap());
    assert_eq!(
        a.trust(ALICE, &key).unwrap(),
        shieldcall_omemo::TrustLevel::Verified
    );
}
