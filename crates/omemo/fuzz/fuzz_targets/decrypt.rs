//! `Account::decrypt` on hostile `<encrypted/>` elements, against a fixed in-memory account
//! pair with an established session (plus a third account's fresh PreKeySignalMessage).
//!
//! The input picks one of the valid messages the fixture holds and mutates it (key bytes,
//! prekey flag, sid/rid, IV, payload), or is read as `<encrypted/>` text. Asserted for every
//! input: no panic; on `Err` the store is exactly as before (sessions, prekeys, identity, trust);
//! on `Ok` any plaintext is the one that was sent (the MAC and GCM tag admit nothing else).
//!
//! The fixture's keys are drawn at start-up (the crate has no seeded RNG), so a crash that
//! depends on key bytes may need a few runs to reproduce; structural ones reproduce directly.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shieldcall_omemo::store::{OwnIdentity, PreKeyRecord, SignedPreKeyRecord};
use shieldcall_omemo::xml::EncryptedElement;
use shieldcall_omemo::{Account, MemoryStore, PublicKey, Recipient, Store, TrustLevel};

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const CAROL: &str = "carol@example.org";
const ALICE_DEV: u32 = 1111;
const BOB_DEV: u32 = 2222;
const CAROL_DEV: u32 = 3333;

struct Sent {
    from: &'static str,
    element: EncryptedElement,
    plaintext: Option<Vec<u8>>,
}

struct Fixture {
    /// Bob after receiving Alice's first (PreKey) message and answering it.
    bob: MemoryStore,
    messages: Vec<Sent>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let new = |jid, dev| Account::create(MemoryStore::new(), jid, Some(dev), 0).unwrap();
        let mut alice = new(ALICE, ALICE_DEV);
        let mut bob = new(BOB, BOB_DEV);
        let mut carol = new(CAROL, CAROL_DEV);
        let to_bob = [Recipient::new(BOB, BOB_DEV)];
        alice.build_session(BOB, BOB_DEV, &bob.bundle().unwrap()).unwrap();
        let m0 = alice.encrypt(&to_bob, b"first").unwrap();
        assert!(m0.keys[0].prekey);
        bob.decrypt(ALICE, &m0).unwrap();
        let r0 = bob.encrypt(&[Recipient::new(ALICE, ALICE_DEV)], b"reply").unwrap();
        alice.decrypt(BOB, &r0).unwrap();
        let fp = b"3A:9F:0C:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:01:02:03:04:05:06:07:08:09:0A:0B:0C:C1";
        let m1 = alice.encrypt(&to_bob, fp).unwrap();
        let m2 = alice.encrypt(&to_bob, b"second").unwrap();
        let m3 = alice.encrypt_key_transport(&to_bob).unwrap();
        carol.build_session(BOB, BOB_DEV, &bob.bundle().unwrap()).unwrap();
        let p = carol.encrypt(&to_bob, b"from carol").unwrap();
        assert!(p.keys[0].prekey);
        let sent = |from, element, pt: Option<&[u8]>| Sent {
            from,
            element,
            plaintext: pt.map(<[u8]>::to_vec),
        };
        Fixture {
            bob: bob.into_store(),
            messages: vec![
                sent(ALICE, m0, Some(b"first")), // a replay: must fail
                sent(ALICE, m1, Some(fp)),
                sent(ALICE, m2, Some(b"second")),
                sent(ALICE, m3, None),
                sent(CAROL, p, Some(b"from carol")),
            ],
        }
    })
}

type Snapshot = (
    Option<OwnIdentity>,
    Vec<Option<Vec<u8>>>,
    Vec<PreKeyRecord>,
    Vec<SignedPreKeyRecord>,
    Vec<Vec<(PublicKey, TrustLevel)>>,
);

fn snapshot(s: &MemoryStore, sid: u32) -> Snapshot {
    let mut sessions = Vec::new();
    for jid in [ALICE, CAROL] {
        for dev in [ALICE_DEV, CAROL_DEV, sid] {
            sessions.push(s.session(jid, dev).unwrap().map(|r| r.to_bytes()));
        }
    }
    (
        s.own().unwrap(),
        sessions,
        s.pre_keys().unwrap(),
        s.signed_pre_keys().unwrap(),
        vec![s.identities(ALICE).unwrap(), s.identities(CAROL).unwrap()],
    )
}

/// Reads little pieces of the input.
struct Input<'a>(&'a [u8]);
impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.byte()?) << 8 | u16::from(self.byte()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u16()?) << 16 | u32::from(self.u16()?))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

fn mutate(e: &mut EncryptedElement, input: &mut Input) -> Option<()> {
    for _ in 0..16 {
        let op = input.byte()?;
        let k = usize::from(op >> 4) % e.keys.len().max(1);
        match op & 0x0f {
            0 | 1 | 2 => {
                // Overwrite one byte of a key (most likely to hit a field, then the MAC).
                let key = e.keys.get_mut(k)?;
                let at = usize::from(input.u16()?);
                let v = input.byte()?;
                if !key.data.is_empty() {
                    let n = key.data.len();
                    key.data[at % n] = v;
                }
            }
            3 => {
                let key = e.keys.get_mut(k)?;
                let len = usize::from(input.u16()?);
                key.data.truncate(len);
            }
            4 => {
                let key = e.keys.get_mut(k)?;
                let at = usize::from(input.u16()?) % (key.data.len() + 1);
                let n = usize::from(input.byte()?);
                let ins = input.bytes(n).to_vec();
                key.data.splice(at..at, ins);
            }
            5 => {
                let key = e.keys.get_mut(k)?;
                key.prekey = !key.prekey;
            }
            6 => e.sid = input.u32()?,
            7 => {
                let rid = input.u32()?;
                e.keys.get_mut(k)?.rid = rid;
            }
            8 => {
                let at = usize::from(input.byte()?);
                let v = input.byte()?;
                if e.iv.is_empty() {
                    e.iv.push(v);
                } else {
                    let n = e.iv.len();
                    e.iv[at % n] = v;
                }
            }
            9 => {
                let len = usize::from(input.byte()?);
                e.iv.truncate(len);
            }
            10 => {
                let at = usize::from(input.u16()?);
                let v = input.byte()?;
                match &mut e.payload {
                    Some(p) if !p.is_empty() => {
                        let n = p.len();
                        p[at % n] = v;
                    }
                    _ => e.payload = Some(vec![v]),
                }
            }
            11 => {
                let len = usize::from(input.u16()?);
                if let Some(p) = &mut e.payload {
                    p.truncate(len);
                }
            }
            12 => e.payload = None,
            13 => {
                // The rest of the input becomes the key bytes.
                let rest = input.bytes(usize::MAX).to_vec();
                e.keys.get_mut(k)?.data = rest;
            }
            14 => {
                let dup = e.keys.get(k)?.clone();
                e.keys.push(dup);
            }
            _ => {
                if e.keys.len() > 1 {
                    e.keys.remove(k);
                }
            }
        }
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut input = Input(data);
    let Some(pick) = input.byte() else {
        return;
    };
    let (from, element, expected) = if pick == 0xff {
        let Ok(text) = std::str::from_utf8(input.0) else {
            return;
        };
        let Ok(e) = EncryptedElement::from_xml(text) else {
            return;
        };
        (ALICE, e, None)
    } else {
        let sent = &f.messages[usize::from(pick) % f.messages.len()];
        let mut e = sent.element.clone();
        let _ = mutate(&mut e, &mut input);
        (sent.from, e, Some(sent.plaintext.clone()))
    };

    let mut bob = Account::open(f.bob.clone()).unwrap();
    let before = snapshot(bob.store(), element.sid);
    match bob.decrypt(from, &element) {
        Ok(d) => {
            // Dropping <payload/> turns a message into key transport (legacy OMEMO does not
            // bind the payload to the key); any plaintext must be the one that was sent.
            if let (Some(expected), Some(got)) = (expected, &d.plaintext) {
                assert_eq!(Some(got), expected.as_ref(), "decrypted what was never sent");
            }
        }
        Err(_) => {
            let after = snapshot(bob.store(), element.sid);
            assert!(before == after, "a failed decrypt changed the store");
        }
    }
});
