//! `cargo bench -p shieldcall-omemo`: the three interop-shim operations (setup, steady, fan-out)
//! through the public API, plus the pieces they are made of, to see where time goes.

#![allow(missing_docs)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use shieldcall_omemo::account::{
    MAX_CHAIN_STEPS_PER_STANZA, MAX_KEYS_FOR_OWN_DEVICE, MAX_STATES_TRIED_PER_KEY,
};
use shieldcall_omemo::keys::{KeyPair, PublicKey};
use shieldcall_omemo::session::MAX_ARCHIVED_STATES;
use shieldcall_omemo::wire::{PreKeySignalMessage, SignalMessage};
use shieldcall_omemo::xml::{Bundle, EncryptedElement, KeyElement};
use shieldcall_omemo::{Account, MemoryStore, Recipient};

const MESSAGE: [u8; 95] = [b'A'; 95];

fn fresh(jid: &str) -> Account<MemoryStore> {
    Account::create(MemoryStore::new(), jid, None, 0).unwrap()
}

fn established() -> (Account<MemoryStore>, Account<MemoryStore>) {
    let mut alice = fresh("alice@bench");
    let mut bob = fresh("bob@bench");
    alice
        .build_session("bob@bench", bob.device_id(), &bob.bundle().unwrap())
        .unwrap();
    let first = alice
        .encrypt(&[Recipient::new("bob@bench", bob.device_id())], &MESSAGE)
        .unwrap();
    bob.decrypt("alice@bench", &first).unwrap();
    let reply = bob
        .encrypt(
            &[Recipient::new("alice@bench", alice.device_id())],
            &MESSAGE,
        )
        .unwrap();
    alice.decrypt("bob@bench", &reply).unwrap();
    (alice, bob)
}

fn operations(c: &mut Criterion) {
    c.bench_function(
        "setup (parse bundle, X3DH, PreKey message, peer decrypts)",
        |b| {
            b.iter_batched(
                || {
                    let bob = fresh("bob@bench");
                    let xml = bob.bundle().unwrap().to_xml();
                    (fresh("alice@bench"), bob, xml)
                },
                |(mut alice, mut bob, xml)| {
                    let bundle = Bundle::from_xml(&xml).unwrap();
                    alice
                        .build_session("bob@bench", bob.device_id(), &bundle)
                        .unwrap();
                    let enc = alice
                        .encrypt(&[Recipient::new("bob@bench", bob.device_id())], &MESSAGE)
                        .unwrap()
                        .to_xml();
                    bob.decrypt("alice@bench", &EncryptedElement::from_xml(&enc).unwrap())
                        .unwrap()
                },
                BatchSize::SmallInput,
            )
        },
    );

    let (mut alice, mut bob) = established();
    let to_bob = [Recipient::new("bob@bench", bob.device_id())];
    c.bench_function(
        "steady (encrypt 95 B + XML, peer parses and decrypts)",
        |b| {
            b.iter(|| {
                let xml = alice.encrypt(&to_bob, &MESSAGE).unwrap().to_xml();
                bob.decrypt("alice@bench", &EncryptedElement::from_xml(&xml).unwrap())
                    .unwrap()
            })
        },
    );

    let mut sender = fresh("alice@bench");
    let recipients: Vec<Recipient> = (0..100)
        .map(|i| {
            let jid = format!("peer{i}@bench");
            let peer = fresh(&jid);
            sender
                .build_session(&jid, peer.device_id(), &peer.bundle().unwrap())
                .unwrap();
            Recipient::new(jid, peer.device_id())
        })
        .collect();
    c.bench_function("fanout (encrypt 95 B for 100 devices + XML)", |b| {
        b.iter(|| sender.encrypt(&recipients, &MESSAGE).unwrap().to_xml())
    });
}

fn pieces(c: &mut Criterion) {
    let a = KeyPair::generate().unwrap();
    let b = KeyPair::generate().unwrap();
    c.bench_function("x25519 agreement", |bn| {
        bn.iter(|| a.private.agree(&b.public).unwrap())
    });
    c.bench_function("key pair generation", |bn| {
        bn.iter(|| KeyPair::generate().unwrap())
    });
    c.bench_function("HMAC-SHA256 of 1 byte", |bn| {
        use hmac::{KeyInit, Mac};
        bn.iter(|| {
            let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&[7u8; 32]).unwrap();
            m.update(&[1]);
            m.finalize().into_bytes()
        })
    });
    c.bench_function("HKDF-SHA256 to 80 bytes", |bn| {
        bn.iter(|| {
            let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(&[0u8; 32]), &[7u8; 32]);
            let mut out = [0u8; 80];
            hk.expand(b"WhisperMessageKeys", &mut out).unwrap();
            out
        })
    });
    c.bench_function("getrandom 16 bytes", |bn| {
        bn.iter(|| {
            let mut b = [0u8; 16];
            getrandom::fill(&mut b).unwrap();
            b
        })
    });
    let sig = a.private.sign(b"m").unwrap();
    c.bench_function("xeddsa verify", |bn| {
        bn.iter(|| a.public.verify("x", b"m", &sig).unwrap())
    });
    let (mut alice, bob) = established();
    let enc = alice
        .encrypt(&[Recipient::new("bob@bench", bob.device_id())], &MESSAGE)
        .unwrap();
    let xml = enc.to_xml();
    c.bench_function("encrypted element to XML", |bn| bn.iter(|| enc.to_xml()));
    c.bench_function("encrypted element from XML", |bn| {
        bn.iter(|| EncryptedElement::from_xml(&xml).unwrap())
    });
    c.bench_function("rxml events only", |bn| {
        bn.iter(|| {
            use rxml::Parse;
            let mut p = rxml::Parser::new();
            let mut doc = xml.as_bytes();
            let mut n = 0;
            while let Ok(Some(_ev)) = p.parse(&mut doc, true) {
                n += 1;
            }
            n
        })
    });
    let el = enc.to_element();
    c.bench_function("encrypted element from minidom Element", |bn| {
        bn.iter(|| EncryptedElement::from_element(&el).unwrap())
    });
    let bundle_xml = bob.bundle().unwrap().to_xml();
    c.bench_function("bundle (100 prekeys) from XML", |bn| {
        bn.iter(|| Bundle::from_xml(&bundle_xml).unwrap())
    });
}

/// A forged SignalMessage: a fresh ratchet key (every state tried must do a DH ratchet step),
/// `counter` steps into the new chain, a MAC that never verifies.
fn forged(counter: u32, alice: &PublicKey, bob: &PublicKey) -> SignalMessage {
    let ratchet = KeyPair::generate().unwrap().public;
    SignalMessage::new(&[9u8; 32], ratchet, counter, 0, vec![7u8; 48], alice, bob)
}

/// The most expensive `<encrypted/>` the caps still let through to the ratchet (docs/omemo.md,
/// "Bounded work per stanza"): Bob's session with Alice holds every archived state libsignal
/// keeps, and the element carries the most keys for Bob that are tried. Each must fail (the
/// state stays unchanged, so every iteration costs the same).
fn limits(c: &mut Criterion) {
    let mut alice = fresh("alice@bench");
    let mut bob = fresh("bob@bench");
    let bob_dev = bob.device_id();
    for _ in 0..=MAX_ARCHIVED_STATES {
        alice
            .build_session("bob@bench", bob_dev, &bob.bundle().unwrap())
            .unwrap();
        let m = alice
            .encrypt(&[Recipient::new("bob@bench", bob_dev)], &MESSAGE)
            .unwrap();
        bob.decrypt("alice@bench", &m).unwrap();
    }
    let (ak, bk) = (alice.identity_key(), bob.identity_key());
    let element = |keys: Vec<KeyElement>| EncryptedElement {
        sid: alice.device_id(),
        keys,
        iv: vec![0; 12],
        payload: Some(vec![0; 95]),
    };
    // Every key × state tried, each walking an equal share of the chain-step budget.
    let trials = (MAX_KEYS_FOR_OWN_DEVICE * MAX_STATES_TRIED_PER_KEY) as u32;
    let share = MAX_CHAIN_STEPS_PER_STANZA / trials;
    let spread = element(
        (0..MAX_KEYS_FOR_OWN_DEVICE)
            .map(|_| KeyElement {
                rid: bob_dev,
                prekey: false,
                data: forged(share - 1, &ak, &bk).serialize(),
            })
            .collect(),
    );
    c.bench_function(
        "worst case within the caps: SignalMessages (2 keys x 4 states, DH step and 312 chain steps each)",
        |bn| bn.iter(|| assert!(bob.decrypt("alice@bench", &spread).is_err())),
    );
    // One key at the largest gap, then the budget refuses the next trial (after its DH step).
    let deep = element(
        (0..MAX_KEYS_FOR_OWN_DEVICE)
            .map(|_| KeyElement {
                rid: bob_dev,
                prekey: false,
                data: forged(2000, &ak, &bk).serialize(),
            })
            .collect(),
    );
    c.bench_function(
        "worst case within the caps: SignalMessages (2 keys at the largest gap)",
        |bn| bn.iter(|| assert!(bob.decrypt("alice@bench", &deep).is_err())),
    );
    // PreKeySignalMessages naming a real prekey: an X3DH each before the ratchet.
    let bundle = bob.bundle().unwrap();
    let prekeys = element(
        (0..MAX_KEYS_FOR_OWN_DEVICE)
            .map(|i| KeyElement {
                rid: bob_dev,
                prekey: true,
                data: PreKeySignalMessage {
                    registration_id: alice.device_id(),
                    pre_key_id: Some(bundle.pre_keys[i].0),
                    signed_pre_key_id: bundle.signed_pre_key_id,
                    base_key: KeyPair::generate().unwrap().public,
                    identity_key: ak,
                    message: forged(MAX_CHAIN_STEPS_PER_STANZA / 2 - 1, &ak, &bk),
                }
                .serialize(),
            })
            .collect(),
    );
    c.bench_function(
        "worst case within the caps: PreKeySignalMessages (2 keys, X3DH and 1250 chain steps each)",
        |bn| bn.iter(|| assert!(bob.decrypt("alice@bench", &prekeys).is_err())),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = operations, pieces, limits
}
criterion_main!(benches);
