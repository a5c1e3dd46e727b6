//! The OMEMO engine through its public API: sessions, every OMEMO-layer line (11–15) of
//! docs/security-tests.md, and durability in SQLite. Interop (line 16) is in `interop.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(feature = "sqlite")]
use shieldcall_omemo::SqliteStore;
use shieldcall_omemo::error::{Error, KeyError, StoreError};
use shieldcall_omemo::fingerprint::VerificationUri;
use shieldcall_omemo::keys::PublicKey;
use shieldcall_omemo::ratchet::{MAX_MESSAGE_GAP, MAX_RECEIVER_CHAINS, MAX_SKIPPED_KEYS};
use shieldcall_omemo::store::{Changes, OwnIdentity, PreKeyRecord, SignedPreKeyRecord};
use shieldcall_omemo::wire::PreKeySignalMessage;
use shieldcall_omemo::xml::EncryptedElement;
use shieldcall_omemo::{Account, MemoryStore, Recipient, Store, TrustLevel};

const A: &str = "alice@example.org";
const B: &str = "bob@example.org";
const DAY: u64 = 24 * 3600;

fn account(jid: &str) -> Account<MemoryStore> {
    Account::create(MemoryStore::new(), jid, None, 0).unwrap()
}

fn to(acc: &Account<impl Store>) -> Vec<Recipient> {
    vec![Recipient::new(acc.jid().to_owned(), acc.device_id())]
}

fn send<S: Store, T: Store>(
    from: &mut Account<S>,
    to_acc: &Account<T>,
    text: &str,
) -> EncryptedElement {
    from.encrypt(&to(to_acc), text.as_bytes()).unwrap()
}

fn recv<S: Store>(at: &mut Account<S>, from: &str, e: &EncryptedElement) -> Vec<u8> {
    at.decrypt(from, e).unwrap().plaintext.unwrap()
}

/// Alice builds from Bob's bundle and both have sent once: an acknowledged session.
fn established() -> (Account<MemoryStore>, Account<MemoryStore>) {
    let mut a = account(A);
    let mut b = account(B);
    a.build_session(B, b.device_id(), &b.bundle().unwrap())
        .unwrap();
    let m = send(&mut a, &b, "hi");
    assert_eq!(recv(&mut b, A, &m), b"hi");
    let r = send(&mut b, &a, "hello");
    assert_eq!(recv(&mut a, B, &r), b"hello");
    (a, b)
}

fn record<S: Store>(
    acc: &Account<S>,
    jid: &str,
    dev: u32,
) -> shieldcall_omemo::session::SessionRecord {
    acc.store().session(jid, dev).unwrap().unwrap()
}

#[test]
fn first_message_is_prekey_then_plain() {
    let mut a = account(A);
    let mut b = account(B);
    a.build_session(B, b.device_id(), &b.bundle().unwrap())
        .unwrap();
    let m1 = send(&mut a, &b, "one");
    let m2 = send(&mut a, &b, "two");
    assert!(
        m1.keys[0].prekey && m2.keys[0].prekey,
        "PreKey until answered"
    );
    assert_eq!(recv(&mut b, A, &m2), b"two");
    assert_eq!(recv(&mut b, A, &m1), b"one");
    let r = send(&mut b, &a, "back");
    assert!(!r.keys[0].prekey);
    recv(&mut a, B, &r);
    assert!(!send(&mut a, &b, "three").keys[0].prekey);
}

#[test]
fn one_payload_for_many_devices() {
    let mut a = account(A);
    let mut peers: Vec<_> = (0..5)
        .map(|i| account(&format!("p{i}@example.org")))
        .collect();
    let mut rs = Vec::new();
    for p in &peers {
        a.build_session(p.jid(), p.device_id(), &p.bundle().unwrap())
            .unwrap();
        rs.extend(to(p));
    }
    let e = a.encrypt(&rs, b"to everyone").unwrap();
    assert_eq!(e.keys.len(), 5);
    for p in &mut peers {
        assert_eq!(recv(p, A, &e), b"to everyone");
    }
}

#[test]
fn message_not_for_us_names_the_devices() {
    let (mut a, _) = established();
    let c = account("carol@example.org");
    a.build_session(c.jid(), c.device_id(), &c.bundle().unwrap())
        .unwrap();
    let e = send(&mut a, &c, "x");
    let mut other = account("dave@example.org");
    match other.decrypt(A, &e) {
        Err(Error::NotForThisDevice { own, rids }) => {
            assert_eq!(own, other.device_id());
            assert_eq!(rids, vec![c.device_id()]);
        }
        r => panic!("{r:?}"),
    }
}

/// Both ends build a session from the other's bundle at the same time: libsignal keeps both
/// states and no message is lost.
#[test]
fn simultaneous_initiation_loses_no_message() {
    let mut a = account(A);
    let mut b = account(B);
    a.build_session(B, b.device_id(), &b.bundle().unwrap())
        .unwrap();
    b.build_session(A, a.device_id(), &a.bundle().unwrap())
        .unwrap();
    let a1 = send(&mut a, &b, "a1");
    let b1 = send(&mut b, &a, "b1");
    assert_eq!(recv(&mut b, A, &a1), b"a1");
    assert_eq!(recv(&mut a, B, &b1), b"b1");
    for n in 0..10 {
        let x = send(&mut a, &b, &format!("a{n}"));
        let y = send(&mut b, &a, &format!("b{n}"));
        assert_eq!(recv(&mut b, A, &x), format!("a{n}").as_bytes());
        assert_eq!(recv(&mut a, B, &y), format!("b{n}").as_bytes());
    }
    assert!(record(&a, B, b.device_id()).archived_len() >= 1);
}

/// The peer starts a new session while a message of the old one is still in flight.
#[test]
fn new_session_from_peer_keeps_old_state_usable() {
    let (mut a, mut b) = established();
    let old = send(&mut b, &a, "from the old session");
    b.build_session(A, a.device_id(), &a.bundle().unwrap())
        .unwrap();
    let new = send(&mut b, &a, "from the new session");
    assert!(new.keys[0].prekey);
    assert_eq!(recv(&mut a, B, &new), b"from the new session");
    assert_eq!(recv(&mut a, B, &old), b"from the old session");
    // And A's answer reaches B in whichever state A now uses.
    let r = send(&mut a, &b, "answer");
    assert_eq!(recv(&mut b, A, &r), b"answer");
}

#[test]
fn prekey_message_with_another_identity_is_rejected_and_changes_nothing() {
    let (a, mut b) = established();
    let before = record(&b, A, a.device_id());
    // Mallory claims Alice's JID and device id with her own identity key.
    let mut mallory = Account::create(MemoryStore::new(), A, Some(a.device_id()), 0).unwrap();
    mallory
        .build_session(B, b.device_id(), &b.bundle().unwrap())
        .unwrap();
    let forged = send(&mut mallory, &b, "it's me, alice");
    assert_eq!(
        b.decrypt(A, &forged),
        Err(Error::IdentityMismatch {
            jid: A.into(),
            device: a.device_id()
        })
    );
    assert_eq!(record(&b, A, a.device_id()), before);
}

/// docs/security-tests.md line 11.
#[test]
fn non_contributory_keys_are_rejected() {
    let a_keys = account(A);
    let mut a = a_keys;
    let b = account(B);
    // A bundle whose signed prekey is a low-order point, correctly signed by the identity key.
    let mut bundle = b.bundle().unwrap();
    let low = PublicKey::from_montgomery([0u8; 32]);
    let b_own = b.store().own().unwrap().unwrap();
    bundle.signed_pre_key = low;
    bundle.signature = b_own
        .identity
        .private
        .sign(&low.serialize())
        .unwrap()
        .to_vec();
    assert_eq!(
        a.build_session(B, b.device_id(), &bundle),
        Err(Error::Key(KeyError::NonContributory))
    );
    assert!(!a.has_session(B, b.device_id()).unwrap());

    // A PreKeySignalMessage whose base key has low order.
    let mut b = b;
    a.build_session(B, b.device_id(), &b.bundle().unwrap())
        .unwrap();
    let mut e = send(&mut a, &b, "x");
    let mut pk = PreKeySignalMessage::parse(&e.keys[0].data).unwrap();
    pk.base_key = PublicKey::from_montgomery({
        let mut u = [0u8; 32];
        u[0] = 1;
        u
    });
    e.keys[0].data = pk.serialize();
    assert_eq!(b.decrypt(A, &e), Err(Error::Key(KeyError::NonContributory)));
    assert_eq!(
        b.bundle().unwrap().pre_keys.len(),
        100,
        "no prekey consumed"
    );
}

/// docs/security-tests.md line 12.
#[test]
fn bad_bundle_signature_rejects_the_bundle() {
    let mut a = account(A);
    let b = account(B);
    let mut bundle = b.bundle().unwrap();
    bundle.signature[10] ^= 0x40;
    assert_eq!(
        a.build_session(B, b.device_id(), &bundle),
        Err(Error::Key(KeyError::BadSignature {
            what: "signedPreKeySignature"
        }))
    );
    assert!(!a.has_session(B, b.device_id()).unwrap());
    // A signature by another identity is just as bad.
    let mut bundle = b.bundle().unwrap();
    bundle.identity_key = account("eve@example.org").identity_key();
    assert!(a.build_session(B, b.device_id(), &bundle).is_err());
}

/// docs/security-tests.md line 13: the gap one message may open.
#[test]
fn cap_on_the_gap_in_one_message() {
    let (mut a, mut b) = established();
    let msgs: Vec<_> = (0..=MAX_MESSAGE_GAP + 1)
        .map(|n| send(&mut a, &b, &format!("m{n}")))
        .collect();
    let before = record(&b, A, a.device_id());
    let last = msgs.last().unwrap();
    assert!(matches!(
        b.decrypt(A, last),
        Err(Error::GapTooLarge {
            max: MAX_MESSAGE_GAP,
            ..
        })
    ));
    assert_eq!(
        record(&b, A, a.device_id()),
        before,
        "a refused message changes nothing"
    );
    // Exactly the cap is still fine.
    let at_cap = &msgs[MAX_MESSAGE_GAP as usize];
    assert_eq!(
        recv(&mut b, A, at_cap),
        format!("m{MAX_MESSAGE_GAP}").as_bytes()
    );
    assert_eq!(
        record(&b, A, a.device_id()).skipped_keys(),
        MAX_SKIPPED_KEYS.min(MAX_MESSAGE_GAP as usize)
    );
}

/// docs/security-tests.md line 13: skipped keys stored per session stay bounded; the oldest go first.
#[test]
fn cap_on_stored_skipped_keys() {
    let (mut a, mut b) = established();
    // Chain 1: skip MAX_MESSAGE_GAP keys (the most one message may skip).
    let chain1: Vec<_> = (0..=MAX_MESSAGE_GAP)
        .map(|n| send(&mut a, &b, &format!("c1 {n}")))
        .collect();
    recv(&mut b, A, chain1.last().unwrap());
    // New chain: B answers, A sends 11 more of which only the last is delivered first.
    let r = send(&mut b, &a, "turn");
    recv(&mut a, B, &r);
    let chain2: Vec<_> = (0..11)
        .map(|n| send(&mut a, &b, &format!("c2 {n}")))
        .collect();
    recv(&mut b, A, chain2.last().unwrap());
    let rec = record(&b, A, a.device_id());
    assert_eq!(rec.skipped_keys(), MAX_SKIPPED_KEYS, "bounded");
    // 2000 + 10 skipped, cap 2000: the 10 oldest of chain 1 were dropped.
    assert!(b.decrypt(A, &chain1[0]).is_err());
    assert!(b.decrypt(A, &chain1[9]).is_err());
    assert_eq!(recv(&mut b, A, &chain1[10]), b"c1 10");
    assert_eq!(recv(&mut b, A, &chain2[0]), b"c2 0");
}

/// docs/security-tests.md line 13: receiving chains kept per session.
#[test]
fn cap_on_receiving_chains() {
    let (mut a, mut b) = established();
    let held = send(&mut a, &b, "held back");
    let mut held_after_cap = None;
    for turn in 0..=MAX_RECEIVER_CHAINS {
        let r = send(&mut b, &a, "ping");
        recv(&mut a, B, &r);
        let m = send(&mut a, &b, "pong");
        recv(&mut b, A, &m);
        if turn == MAX_RECEIVER_CHAINS - 2 {
            held_after_cap = Some(send(&mut a, &b, "held in a recent chain"));
        }
    }
    assert_eq!(
        record(&b, A, a.device_id()).receiver_chains(),
        MAX_RECEIVER_CHAINS
    );
    assert!(b.decrypt(A, &held).is_err(), "its chain was dropped");
    // A message from a chain that is still kept decrypts.
    assert_eq!(
        recv(&mut b, A, &held_after_cap.unwrap()),
        b"held in a recent chain"
    );
}

/// docs/security-tests.md line 14: no preKeyId, prekeys consumed and refilled, old signed prekey.
#[test]
fn prekey_message_without_pre_key_id_is_refused() {
    let mut a = account(A);
    let mut b = account(B);
    a.build_session(B, b.device_id(), &b.bundle().unwrap())
        .unwrap();
    let mut e = send(&mut a, &b, "x");
    let mut pk = PreKeySignalMessage::parse(&e.keys[0].data).unwrap();
    pk.pre_key_id = None;
    e.keys[0].data = pk.serialize();
    assert_eq!(b.decrypt(A, &e), Err(Error::MissingPreKeyId));
}

#[test]
fn one_time_prekeys_are_consumed_and_refilled() {
    let mut a = account(A);
    let mut b = account(B);
    let bundle = b.bundle().unwrap();
    assert_eq!(bundle.pre_keys.len(), 100);
    a.build_session(B, b.device_id(), &bundle).unwrap();
    let e = send(&mut a, &b, "x");
    let used = PreKeySignalMessage::parse(&e.keys[0].data)
        .unwrap()
        .pre_key_id
        .unwrap();
    let d = b.decrypt(A, &e).unwrap();
    assert!(d.bundle_changed);
    let after = b.bundle().unwrap();
    assert_eq!(after.pre_keys.len(), 100);
    assert!(!after.pre_keys.iter().any(|(id, _)| *id == used));
    assert!(
        after.pre_keys.iter().any(|(id, _)| *id == 101),
        "a fresh id, never a reused one"
    );
    // A replay of that PreKeySignalMessage is a duplicate, not a second session.
    assert!(matches!(
        b.decrypt(A, &e),
        Err(Error::DuplicateMessage { .. })
    ));
    // A second peer using the consumed prekey id (from the stale bundle) is refused.
    let mut c = account("carol@example.org");
    let mut stale = bundle.clone();
    stale.pre_keys.retain(|(id, _)| *id == used);
    c.build_session(B, b.device_id(), &stale).unwrap();
    let e = send(&mut c, &b, "y");
    assert_eq!(
        b.decrypt("carol@example.org", &e),
        Err(Error::UnknownPreKey(used))
    );
}

#[test]
fn previous_signed_prekey_stays_usable_for_a_while() {
    let mut a = account(A);
    let mut b = account(B);
    let old_bundle = b.bundle().unwrap();
    assert!(!b.maintain(DAY).unwrap(), "nothing to do after a day");
    assert!(b.maintain(8 * DAY).unwrap(), "rotated after a week");
    assert_eq!(b.bundle().unwrap().signed_pre_key_id, 2);
    a.build_session(B, b.device_id(), &old_bundle).unwrap();
    let e = send(&mut a, &b, "with the old signed prekey");
    assert_eq!(recv(&mut b, A, &e), b"with the old signed prekey");
    // After the grace period the old one is gone.
    assert!(b.maintain(8 * DAY + 31 * DAY).unwrap());
    let mut c = account("carol@example.org");
    c.build_session(B, b.device_id(), &old_bundle).unwrap();
    let e = send(&mut c, &b, "too late");
    assert_eq!(
        b.decrypt("carol@example.org", &e),
        Err(Error::UnknownSignedPreKey(1))
    );
}

#[test]
fn duplicates_and_tampering_are_refused_without_changing_state() {
    let (mut a, mut b) = established();
    let e = send(&mut a, &b, "once");
    recv(&mut b, A, &e);
    assert!(matches!(
        b.decrypt(A, &e),
        Err(Error::DuplicateMessage { .. })
    ));
    let next = send(&mut a, &b, "next");
    let before = record(&b, A, a.device_id());
    let mut bad_payload = next.clone();
    bad_payload.payload.as_mut().unwrap()[0] ^= 1;
    assert_eq!(
        b.decrypt(A, &bad_payload),
        Err(Error::PayloadAuthentication)
    );
    let mut bad_key = next.clone();
    let l = bad_key.keys[0].data.len();
    bad_key.keys[0].data[l - 1] ^= 1;
    assert!(matches!(
        b.decrypt(A, &bad_key),
        Err(Error::NoValidState(_))
    ));
    let mut truncated = next.clone();
    truncated.keys[0].data.truncate(5);
    assert!(matches!(b.decrypt(A, &truncated), Err(Error::Wire(_))));
    let mut bad_iv = next.clone();
    bad_iv.iv.truncate(7);
    assert_eq!(b.decrypt(A, &bad_iv), Err(Error::BadIvLength(7)));
    assert_eq!(
        b.decrypt("stranger@example.org", &next),
        Err(Error::NoSession {
            jid: "stranger@example.org".into(),
            device: a.device_id()
        })
    );
    assert_eq!(
        record(&b, A, a.device_id()),
        before,
        "no refused input changed the session"
    );
    assert_eq!(recv(&mut b, A, &next), b"next");
}

#[test]
fn key_transport_messages_both_ways() {
    let (mut a, mut b) = established();
    let kt = a.encrypt_key_transport(&to(&b)).unwrap();
    assert!(kt.payload.is_none());
    let d = b.decrypt(A, &kt).unwrap();
    assert_eq!(d.plaintext, None);
    assert_eq!(d.sender_identity, a.identity_key());
    let kt = b.encrypt_key_transport(&to(&a)).unwrap();
    assert_eq!(a.decrypt(B, &kt).unwrap().plaintext, None);
}

#[test]
fn btbv_and_verification_uri() {
    let (mut a, mut b) = established();
    // Bob's first key was trusted blindly when Alice first heard from him.
    assert_eq!(
        a.trust(B, &b.identity_key()).unwrap(),
        TrustLevel::BlindlyTrusted
    );
    let uri = VerificationUri::parse(&b.verification_uri().to_string()).unwrap();
    let changed = a.apply_verification_uri(&uri).unwrap();
    assert_eq!(
        changed,
        vec![(b.device_id(), b.identity_key(), TrustLevel::BlindlyTrusted)]
    );
    assert_eq!(a.trust(B, &b.identity_key()).unwrap(), TrustLevel::Verified);
    let m = send(&mut b, &a, "verified now");
    assert_eq!(a.decrypt(B, &m).unwrap().trust, TrustLevel::Verified);
    // Bob's new device: after a verification, new keys are not trusted blindly any more.
    let mut b2 = account(B);
    b2.build_session(A, a.device_id(), &a.bundle().unwrap())
        .unwrap();
    let m = send(&mut b2, &a, "new phone");
    let d = a.decrypt(B, &m).unwrap();
    assert_eq!(d.trust, TrustLevel::Undecided);
    // The Debug form of an account prints no private key bytes.
    let own: OwnIdentity = a.store().own().unwrap().unwrap();
    let dbg = format!("{a:?}");
    let hex: String = own
        .identity
        .private
        .to_bytes()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    let dec: String = format!("{:?}", own.identity.private.to_bytes().as_slice());
    assert!(
        !dbg.contains(&hex[..16]) && !dbg.contains(&dec[..20]),
        "private key bytes in Debug output"
    );
}

/// A store whose commits can be made to fail: the engine must then hand out nothing.
#[derive(Debug)]
struct FlakyStore {
    inner: MemoryStore,
    fail: bool,
}

impl Store for FlakyStore {
    fn own(&self) -> Result<Option<OwnIdentity>, StoreError> {
        self.inner.own()
    }
    fn session(
        &self,
        j: &str,
        d: u32,
    ) -> Result<Option<shieldcall_omemo::session::SessionRecord>, StoreError> {
        self.inner.session(j, d)
    }
    fn session_devices(&self, j: &str) -> Result<Vec<u32>, StoreError> {
        self.inner.session_devices(j)
    }
    fn pre_key(&self, id: u32) -> Result<Option<PreKeyRecord>, StoreError> {
        self.inner.pre_key(id)
    }
    fn pre_keys(&self) -> Result<Vec<PreKeyRecord>, StoreError> {
        self.inner.pre_keys()
    }
    fn signed_pre_keys(&self) -> Result<Vec<SignedPreKeyRecord>, StoreError> {
        self.inner.signed_pre_keys()
    }
    fn identities(&self, j: &str) -> Result<Vec<(PublicKey, TrustLevel)>, StoreError> {
        self.inner.identities(j)
    }
    fn device_list(&self, j: &str) -> Result<Option<Vec<u32>>, StoreError> {
        self.inner.device_list(j)
    }
    fn apply(&mut self, c: Changes) -> Result<(), StoreError> {
        if self.fail {
            return Err(StoreError::Database("disk full".into()));
        }
        self.inner.apply(c)
    }
}

/// docs/security-tests.md line 15: a failed commit hands out no plaintext and changes nothing, so the
/// message decrypts once the store works again; an encrypt whose commit fails releases nothing.
#[test]
fn no_plaintext_without_a_commit() {
    let (mut a, b) = established();
    let mut b = Account::open(FlakyStore {
        inner: b.into_store(),
        fail: true,
    })
    .unwrap();
    let e = a
        .encrypt(&[Recipient::new(B, b.device_id())], b"important")
        .unwrap();
    assert_eq!(
        b.decrypt(A, &e),
        Err(Error::Store(StoreError::Database("disk full".into())))
    );
    assert!(
        b.encrypt(&[Recipient::new(A, a.device_id())], b"x")
            .is_err()
    );
    let mut b = Account::open(FlakyStore {
        inner: b.into_store().inner,
        fail: false,
    })
    .unwrap();
    assert_eq!(b.decrypt(A, &e).unwrap().plaintext.unwrap(), b"important");
    assert!(matches!(
        b.decrypt(A, &e),
        Err(Error::DuplicateMessage { .. })
    ));
}

/// A client's device-list cache is written through the account, into the account's store.
#[test]
fn device_list_cache_through_the_account() {
    let mut a = account(A);
    assert_eq!(a.store().device_list(B).unwrap(), None);
    a.cache_device_list(B, &[3, 1]).unwrap();
    a.cache_device_list(B, &[7]).unwrap();
    assert_eq!(a.store().device_list(B).unwrap(), Some(vec![7]));
    a.cache_device_list(B, &[]).unwrap();
    assert_eq!(a.store().device_list(B).unwrap(), Some(vec![]));
}

/// An embedder's own table lives on the store's one connection: it sees the engine's commits
/// at once, its own transaction does not stand in the engine's way, and both are in the file.
#[cfg(feature = "sqlite")]
#[test]
fn an_embedders_table_shares_the_store_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bob.sqlite");
    let mut b = Account::create(SqliteStore::open(&path).unwrap(), B, None, 0).unwrap();
    let conn = b.store().connection();
    conn.execute_batch(
        "CREATE TABLE notes (jid TEXT PRIMARY KEY, note TEXT NOT NULL);
         BEGIN IMMEDIATE; INSERT INTO notes VALUES ('alice', 'met at FOSDEM'); COMMIT;",
    )
    .unwrap();
    b.cache_device_list(A, &[5, 6]).unwrap();
    let devices: String = b
        .store()
        .connection()
        .query_row(
            "SELECT devices FROM device_lists WHERE jid = ?1",
            [A],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(devices, "5,6");
    drop(b);
    let b = Account::open(SqliteStore::open(&path).unwrap()).unwrap();
    assert_eq!(b.store().device_list(A).unwrap(), Some(vec![5, 6]));
    let note: String = b
        .store()
        .connection()
        .query_row("SELECT note FROM notes WHERE jid = 'alice'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(note, "met at FOSDEM");
}

/// docs/security-tests.md line 15 with SQLite: sessions, prekeys and trust survive a restart, and a
/// message decrypted before the restart is still a duplicate after it.
#[cfg(feature = "sqlite")]
#[test]
fn sqlite_sessions_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bob.sqlite");
    let mut a = account(A);
    let mut b = Account::create(SqliteStore::open(&path).unwrap(), B, None, 0).unwrap();
    let bundle = b.bundle().unwrap();
    a.build_session(B, b.device_id(), &bundle).unwrap();
    let m1 = send(&mut a, &b, "before restart");
    assert_eq!(recv(&mut b, A, &m1), b"before restart");
    let r = send(&mut b, &a, "reply");
    recv(&mut a, B, &r);
    let m2 = send(&mut a, &b, "skipped over the restart");
    let m3 = send(&mut a, &b, "after restart");
    assert_eq!(recv(&mut b, A, &m3), b"after restart");
    let dev = b.device_id();
    let bundle_before = b.bundle().unwrap();
    drop(b);

    let mut b = Account::open(SqliteStore::open(&path).unwrap()).unwrap();
    assert_eq!(b.device_id(), dev);
    assert_eq!(b.bundle().unwrap(), bundle_before);
    assert!(matches!(
        b.decrypt(A, &m1),
        Err(Error::DuplicateMessage { .. })
    ));
    assert!(matches!(
        b.decrypt(A, &m3),
        Err(Error::DuplicateMessage { .. })
    ));
    assert_eq!(recv(&mut b, A, &m2), b"skipped over the restart");
    let r = send(&mut b, &a, "still talking");
    assert_eq!(recv(&mut a, B, &r), b"still talking");
    assert_eq!(
        b.trust(A, &a.identity_key()).unwrap(),
        TrustLevel::BlindlyTrusted
    );
}

#[test]
fn open_without_identity_is_a_clear_error() {
    assert_eq!(
        Account::open(MemoryStore::new()).unwrap_err(),
        Error::Store(StoreError::NoIdentity)
    );
}

/// A transaction begun with `begin_deferred_sync` commits with `synchronous=NORMAL` (in the
/// WAL, on the disk with the next FULL commit) and leaves the connection at FULL again, whether
/// it commits, rolls back or cannot begin; what it wrote is there for the next process.
#[cfg(feature = "sqlite")]
#[test]
fn a_deferred_sync_transaction_commits_and_restores_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bob.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    let level = |s: &SqliteStore| -> i64 {
        s.connection()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    };
    const NORMAL: i64 = 1;
    const FULL: i64 = 2;
    assert_eq!(level(&store), FULL);

    store.begin_deferred_sync().unwrap();
    assert_eq!(level(&store), NORMAL);
    let changes = Changes {
        device_lists: vec![(A.to_owned(), vec![5, 6])],
        ..Default::default()
    };
    store.apply(changes).unwrap();
    assert_eq!(level(&store), FULL);

    store.begin_deferred_sync().unwrap();
    store.rollback();
    assert_eq!(level(&store), FULL);

    store.begin().unwrap();
    assert!(store.begin_deferred_sync().is_err());
    assert_eq!(level(&store), FULL);
    store.rollback();

    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.device_list(A).unwrap(), Some(vec![5, 6]));
}
