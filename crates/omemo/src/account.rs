//! The OMEMO engine of one account and device, over a [`Store`].
//!
//! Sans-IO: it never fetches a bundle or sends a message itself, and time comes in as an argument.
//! Every operation that changes state builds one [`Changes`] batch and applies it before
//! returning its result, so what leaves the engine is always backed by committed state.
//!
//! Several processes may use one account's store at once (`listen` in one terminal, `trust` or
//! `send` in another): every read-modify-write runs between [`Store::begin`] and the
//! [`Store::apply`] that commits it, so what it read (a session record, the next prekey id) is
//! still current when its result is written, and no prekey id is ever given to two keys.
//!
//! Decryption work per `<encrypted/>` is bounded ([`DecryptLimits`]): a peer or server sending
//! many keys for us, or keys that make us try every archived state with a long chain walk,
//! gets a fast, precise error instead of seconds of CPU (docs/security-tests.md line 19).

use crate::error::{Error, KeyError, StoreError};
use crate::fingerprint::VerificationUri;
use crate::keys::{KeyPair, PublicKey};
use crate::message::{decrypt_payload, encrypt_payload, key_transport_material};
use crate::ratchet::{Budget, MAX_MESSAGE_GAP, SessionState};
use crate::secret::random_in;
use crate::session::SessionRecord;
use crate::store::{Changes, OwnIdentity, PreKeyRecord, SignedPreKeyRecord, Store};
use crate::trust::{TrustLevel, initial_trust};
use crate::wire::{CiphertextMessage, PreKeySignalMessage, SignalMessage};
use crate::x3dh::{AliceParameters, BobParameters, initialize_alice, initialize_bob};
use crate::xml::{Bundle, EncryptedElement, KeyElement};

/// One-time prekeys kept published (Conversations keeps 100).
pub const PRE_KEY_COUNT: usize = 100;
/// Largest device id (libsignal registration ids are 31-bit).
pub const MAX_DEVICE_ID: u32 = 0x7FFF_FFFF;
/// A signed prekey older than this is replaced by [`Account::maintain`] (seconds).
pub const SIGNED_PRE_KEY_ROTATION: u64 = 7 * 24 * 3600;
/// A replaced signed prekey still accepts PreKeySignalMessages for this long (seconds), since
/// peers may hold our old bundle.
pub const SIGNED_PRE_KEY_GRACE: u64 = 30 * 24 * 3600;

/// Most `<key>`s addressed to our device that one chat message may make us try. Clients send
/// one per device; a second one covers a sender that re-encrypted for us. More is refused
/// unread.
pub const MAX_KEYS_FOR_OWN_DEVICE: usize = 2;
/// Session states (the current one, then the newest archived ones) tried per key. libsignal
/// tries all 40; the ones that matter in practice (simultaneous initiation, a peer that rebuilt
/// its session) are the newest few.
pub const MAX_STATES_TRIED_PER_KEY: usize = 4;
/// Chain steps one `<encrypted/>` may make us walk over all its keys and states: one message
/// at the largest gap [`MAX_MESSAGE_GAP`] allows, plus a quarter of that for the attempts
/// before it.
pub const MAX_CHAIN_STEPS_PER_STANZA: u32 = MAX_MESSAGE_GAP + 1 + MAX_MESSAGE_GAP / 4;

/// What one `<encrypted/>` may cost to decrypt; over a cap, [`Account::decrypt_with`] fails
/// fast with a precise error and stores nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptLimits {
    /// Keys for our device tried (more: [`Error::TooManyKeysForDevice`] before any crypto).
    pub keys_for_own_device: usize,
    /// Session states tried per key ([`Error::SessionStatesExhausted`]).
    pub states_per_key: usize,
    /// Chain steps for the whole element ([`Error::ChainStepBudgetExhausted`]).
    pub chain_steps: u32,
}

impl DecryptLimits {
    /// Chat messages.
    pub const MESSAGE: DecryptLimits = DecryptLimits {
        keys_for_own_device: MAX_KEYS_FOR_OWN_DEVICE,
        states_per_key: MAX_STATES_TRIED_PER_KEY,
        chain_steps: MAX_CHAIN_STEPS_PER_STANZA,
    };
    /// Elements meant for exactly one device, such as the call verification draft's encrypted
    /// DTLS fingerprints (docs/protocol.md §2.3: one `<key/>`, for the target device only).
    pub const SINGLE_KEY: DecryptLimits = DecryptLimits {
        keys_for_own_device: 1,
        ..Self::MESSAGE
    };
}

/// A device to encrypt for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Bare JID.
    pub jid: String,
    /// Device id.
    pub device: u32,
}

impl Recipient {
    /// Shorthand.
    pub fn new(jid: impl Into<String>, device: u32) -> Self {
        Self {
            jid: jid.into(),
            device,
        }
    }
}

/// The result of a successful decrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The plaintext; `None` for a key-transport (empty) message.
    pub plaintext: Option<Vec<u8>>,
    /// Sender device (header `sid`).
    pub sender_device: u32,
    /// Sender's identity key, from the session that decrypted.
    pub sender_identity: PublicKey,
    /// Current trust of that identity.
    pub trust: TrustLevel,
    /// A one-time prekey was used up (and replaced): republish the bundle.
    pub bundle_changed: bool,
}

/// One account's OMEMO device.
#[derive(Debug)]
pub struct Account<S: Store> {
    store: S,
    own: OwnIdentity,
}

fn new_signed_pre_key(identity: &KeyPair, id: u32, now: u64) -> Result<SignedPreKeyRecord, Error> {
    let pair = KeyPair::generate()?;
    let signature = identity.private.sign(&pair.public.serialize())?.to_vec();
    Ok(SignedPreKeyRecord {
        id,
        pair,
        signature,
        created_at: now,
        replaced_at: None,
    })
}

impl<S: Store> Account<S> {
    /// Creates a new identity in an empty store: identity key, device id (random in
    /// 1..=2³¹−1 unless given), signed prekey 1 and [`PRE_KEY_COUNT`] one-time prekeys.
    pub fn create(
        mut store: S,
        jid: &str,
        device_id: Option<u32>,
        now: u64,
    ) -> Result<Self, Error> {
        let device_id = match device_id {
            Some(d) => d,
            None => random_in(1, MAX_DEVICE_ID)?,
        };
        let identity = KeyPair::generate()?;
        let spk = new_signed_pre_key(&identity, 1, now)?;
        let pre_keys = (1..=PRE_KEY_COUNT as u32)
            .map(|id| {
                Ok(PreKeyRecord {
                    id,
                    pair: KeyPair::generate()?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let own = OwnIdentity {
            jid: jid.to_owned(),
            device_id,
            identity,
            next_pre_key_id: PRE_KEY_COUNT as u32 + 1,
        };
        store.apply(Changes {
            own: Some(own.clone()),
            pre_keys_added: pre_keys,
            signed_pre_keys: vec![spk],
            ..Changes::default()
        })?;
        Ok(Self { store, own })
    }

    /// Opens the identity in `store`, or creates one (as [`Self::create`]) when it has none,
    /// in one transaction: two processes starting on a new store at once get one identity.
    /// The flag says whether it was created.
    pub fn open_or_create(mut store: S, jid: &str, now: u64) -> Result<(Self, bool), Error> {
        store.begin()?;
        match store.own() {
            Ok(Some(own)) => {
                store.rollback();
                Ok((Self { store, own }, false))
            }
            // `create`'s apply commits the transaction begun here.
            Ok(None) => Self::create(store, jid, None, now).map(|a| (a, true)),
            Err(e) => {
                store.rollback();
                Err(e.into())
            }
        }
    }

    /// Opens the identity already in `store`.
    pub fn open(store: S) -> Result<Self, Error> {
        let own = store.own()?.ok_or(StoreError::NoIdentity)?;
        Ok(Self { store, own })
    }

    /// The store (read access, e.g. for listing sessions).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// True when trust levels changed since the last call, also by another process (for
    /// example `shieldcall trust` while a call runs); the first call only starts counting.
    pub fn trust_changed(&mut self) -> Result<bool, Error> {
        Ok(self.store.trust_changed()?)
    }

    /// Our device id.
    pub fn device_id(&self) -> u32 {
        self.own.device_id
    }

    /// Our bare JID.
    pub fn jid(&self) -> &str {
        &self.own.jid
    }

    /// Our identity public key.
    pub fn identity_key(&self) -> PublicKey {
        self.own.identity.public
    }

    /// Our verification URI with this device only (what Dino's QR code carries).
    pub fn verification_uri(&self) -> VerificationUri {
        VerificationUri {
            jid: self.own.jid.clone(),
            devices: vec![(self.own.device_id, self.own.identity.public)],
        }
    }

    /// Our bundle: the newest signed prekey and all one-time prekeys.
    pub fn bundle(&self) -> Result<Bundle, Error> {
        let spks = self.store.signed_pre_keys()?;
        let spk = spks
            .iter()
            .filter(|s| s.replaced_at.is_none())
            .max_by_key(|s| s.id)
            .or(spks.last());
        let spk = spk.ok_or(StoreError::Corrupt {
            what: "signed pre keys",
            reason: "none stored".into(),
        })?;
        Ok(Bundle {
            signed_pre_key_id: spk.id,
            signed_pre_key: spk.pair.public,
            signature: spk.signature.clone(),
            identity_key: self.own.identity.public,
            pre_keys: self
                .store
                .pre_keys()?
                .into_iter()
                .map(|p| (p.id, p.pair.public))
                .collect(),
        })
    }

    /// True when a session with that device exists.
    pub fn has_session(&self, jid: &str, device: u32) -> Result<bool, Error> {
        Ok(self
            .store
            .session(jid, device)?
            .and_then(|r| r.current().cloned())
            .is_some())
    }

    /// The identity key of our current session with a device.
    pub fn session_identity(&self, jid: &str, device: u32) -> Result<Option<PublicKey>, Error> {
        Ok(self
            .store
            .session(jid, device)?
            .and_then(|r| r.current().map(|s| *s.remote_identity())))
    }

    /// Trust of a contact's identity key (`Undecided` when never seen).
    pub fn trust(&self, jid: &str, key: &PublicKey) -> Result<TrustLevel, Error> {
        Ok(self
            .store
            .identities(jid)?
            .into_iter()
            .find(|(k, _)| k == key)
            .map_or(TrustLevel::Undecided, |(_, t)| t))
    }

    /// Sets the trust of a contact's identity key.
    pub fn set_trust(
        &mut self,
        jid: &str,
        key: &PublicKey,
        level: TrustLevel,
    ) -> Result<(), Error> {
        self.store.apply(Changes {
            trust: vec![(jid.to_owned(), *key, level)],
            ..Changes::default()
        })?;
        Ok(())
    }

    /// Caches `jid`'s device list (as last fetched or notified), replacing the one cached
    /// before, so that a client can list a contact's devices without connecting; it reads it
    /// back with [`Store::device_list`]. The engine itself never reads it: which devices a
    /// message goes to is the caller's choice.
    pub fn cache_device_list(&mut self, jid: &str, devices: &[u32]) -> Result<(), Error> {
        self.store.apply(Changes {
            device_lists: vec![(jid.to_owned(), devices.to_vec())],
            ..Changes::default()
        })?;
        Ok(())
    }

    /// Runs a read-modify-write in one store transaction: `f` reads through `self` (seeing the
    /// latest committed state, with no other writer until it ends) and returns its result and
    /// the changes, which are committed before the result is returned. On error nothing is
    /// written. Our identity row is re-read first: another process may have allocated prekey
    /// ids since.
    fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(T, Changes), Error>,
    ) -> Result<T, Error> {
        self.transaction(false, f)
    }

    /// One read-modify-write; `deferred_sync`: its commit need not wait for the disk
    /// ([`Store::begin_deferred_sync`]).
    fn transaction<T>(
        &mut self,
        deferred_sync: bool,
        f: impl FnOnce(&mut Self) -> Result<(T, Changes), Error>,
    ) -> Result<T, Error> {
        if deferred_sync {
            self.store.begin_deferred_sync()?;
        } else {
            self.store.begin()?;
        }
        let result = self.refresh_own().and_then(|()| f(self));
        match result {
            Ok((value, changes)) => {
                let own = changes.own.clone();
                self.store.apply(changes)?;
                if let Some(own) = own {
                    self.own = own;
                }
                Ok(value)
            }
            Err(e) => {
                self.store.rollback();
                Err(e)
            }
        }
    }

    fn refresh_own(&mut self) -> Result<(), Error> {
        if let Some(own) = self.store.own()? {
            self.own = own;
        }
        Ok(())
    }

    /// Marks every key of a verification URI as verified (as a QR scan does). Like Conversations,
    /// the device ids in the URI are informative only: trust belongs to (JID, identity key).
    /// Returns each key with its previous level.
    pub fn apply_verification_uri(
        &mut self,
        uri: &VerificationUri,
    ) -> Result<Vec<(u32, PublicKey, TrustLevel)>, Error> {
        self.apply_verification_uri_as(uri, TrustLevel::Verified)
    }

    /// As [`Self::apply_verification_uri`], giving the keys `level` (e.g. distrusting them).
    pub fn apply_verification_uri_as(
        &mut self,
        uri: &VerificationUri,
        level: TrustLevel,
    ) -> Result<Vec<(u32, PublicKey, TrustLevel)>, Error> {
        self.in_transaction(|acct| {
            let mut before = Vec::new();
            for (device, key) in &uri.devices {
                before.push((*device, *key, acct.trust(&uri.jid, key)?));
            }
            let changes = Changes {
                trust: uri
                    .devices
                    .iter()
                    .map(|(_, k)| (uri.jid.clone(), *k, level))
                    .collect(),
                ..Changes::default()
            };
            Ok((before, changes))
        })
    }

    /// BTBV for a key seen in a new session: record it if it is new.
    fn note_identity(
        &self,
        jid: &str,
        key: &PublicKey,
        changes: &mut Changes,
    ) -> Result<TrustLevel, Error> {
        let known = self.store.identities(jid)?;
        if let Some((_, t)) = known.iter().find(|(k, _)| k == key) {
            return Ok(*t);
        }
        if let Some((_, _, t)) = changes.trust.iter().find(|(j, k, _)| j == jid && k == key) {
            return Ok(*t);
        }
        let level = initial_trust(known.iter().map(|(_, t)| *t));
        changes.trust.push((jid.to_owned(), *key, level));
        Ok(level)
    }

    /// Builds a session with a device from its bundle (X3DH as initiator). The signed prekey's
    /// signature must verify; a random one-time prekey is always used, since Conversations
    /// refuses PreKeySignalMessages without one. Returns the device's identity key.
    pub fn build_session(
        &mut self,
        jid: &str,
        device: u32,
        bundle: &Bundle,
    ) -> Result<PublicKey, Error> {
        bundle.identity_key.verify(
            "signedPreKeySignature",
            &bundle.signed_pre_key.serialize(),
            &bundle.signature,
        )?;
        if bundle.pre_keys.is_empty() {
            return Err(Error::BundleWithoutPreKeys);
        }
        let pick = random_in(0, bundle.pre_keys.len() as u32 - 1)? as usize;
        let (opk_id, opk) = *bundle
            .pre_keys
            .get(pick)
            .ok_or(Error::BundleWithoutPreKeys)?;
        let base = KeyPair::generate()?;
        let state = initialize_alice(&AliceParameters {
            our_identity: &self.own.identity,
            our_base_key: &base,
            their_identity: bundle.identity_key,
            their_signed_pre_key: (bundle.signed_pre_key_id, bundle.signed_pre_key),
            their_one_time_pre_key: Some((opk_id, opk)),
            our_registration_id: self.own.device_id,
            their_registration_id: device,
        })?;
        self.in_transaction(|acct| {
            let mut record = acct.store.session(jid, device)?.unwrap_or_default();
            record.promote(state);
            let mut changes = Changes::default();
            acct.note_identity(jid, &bundle.identity_key, &mut changes)?;
            changes.sessions.push((jid.to_owned(), device, record));
            Ok((bundle.identity_key, changes))
        })
    }

    /// Encrypts `plaintext` once and its key for every recipient (each must have a session).
    /// `<key prekey='true'>` is set exactly for PreKeySignalMessages.
    pub fn encrypt(
        &mut self,
        recipients: &[Recipient],
        plaintext: &[u8],
    ) -> Result<EncryptedElement, Error> {
        let payload = encrypt_payload(plaintext)?;
        let keys = self.encrypt_keys(recipients, payload.key_material.expose())?;
        Ok(EncryptedElement {
            sid: self.own.device_id,
            keys,
            iv: payload.iv.to_vec(),
            payload: Some(payload.ciphertext),
        })
    }

    /// An empty OMEMO message (key transport): a header, no payload. Used to complete or
    /// heal sessions.
    pub fn encrypt_key_transport(
        &mut self,
        recipients: &[Recipient],
    ) -> Result<EncryptedElement, Error> {
        let material = key_transport_material()?;
        let keys = self.encrypt_keys(recipients, material.expose())?;
        let iv = crate::secret::random_bytes::<{ crate::message::IV_LEN }>()?;
        Ok(EncryptedElement {
            sid: self.own.device_id,
            keys,
            iv: iv.to_vec(),
            payload: None,
        })
    }

    fn encrypt_keys(
        &mut self,
        recipients: &[Recipient],
        material: &[u8],
    ) -> Result<Vec<KeyElement>, Error> {
        if recipients.is_empty() {
            return Err(Error::NoRecipients);
        }
        // Committed before the ciphertext leaves: a crash may lose this message, never reuse its
        // key; and read in the same transaction, so another process's ratchet step is not lost.
        self.in_transaction(|acct| {
            let mut changes = Changes::default();
            let mut keys = Vec::with_capacity(recipients.len());
            for r in recipients {
                let no_session = || Error::NoSession {
                    jid: r.jid.clone(),
                    device: r.device,
                };
                let mut record = acct
                    .store
                    .session(&r.jid, r.device)?
                    .ok_or_else(no_session)?;
                if record.current().is_none() {
                    return Err(no_session());
                }
                let msg = record.encrypt(material)?;
                keys.push(KeyElement {
                    rid: r.device,
                    prekey: msg.is_prekey(),
                    data: msg.serialize(),
                });
                changes.sessions.push((r.jid.clone(), r.device, record));
            }
            Ok((keys, changes))
        })
    }

    /// Decrypts an `<encrypted/>` element from `from_jid` (a bare JID) within
    /// [`DecryptLimits::MESSAGE`]. Tries each `<key>` for our device. On any error nothing is
    /// stored.
    pub fn decrypt(
        &mut self,
        from_jid: &str,
        encrypted: &EncryptedElement,
    ) -> Result<Decrypted, Error> {
        self.decrypt_with(from_jid, encrypted, &DecryptLimits::MESSAGE)
    }

    /// As [`Self::decrypt`], within `limits`.
    pub fn decrypt_with(
        &mut self,
        from_jid: &str,
        encrypted: &EncryptedElement,
        limits: &DecryptLimits,
    ) -> Result<Decrypted, Error> {
        let own = self.own.device_id;
        let ours: Vec<&KeyElement> = encrypted.keys.iter().filter(|k| k.rid == own).collect();
        if ours.is_empty() {
            return Err(Error::NotForThisDevice {
                own,
                rids: encrypted.keys.iter().map(|k| k.rid).take(32).collect(),
            });
        }
        if ours.len() > limits.keys_for_own_device {
            return Err(Error::TooManyKeysForDevice {
                keys: ours.len(),
                max: limits.keys_for_own_device,
            });
        }
        // A ratchet step of an existing session may be lost in a power cut: the message
        // could then be decrypted once more, nothing worse, and the commit of our next
        // encrypt makes it durable anyway. So it does not wait for the disk (SQLite's fsync
        // was most of each operation: docs/calls.md). A PreKeySignalMessage consumes a
        // one-time prekey, which must stay consumed: that commit waits as every other does.
        // (`<key prekey='true'>` is what makes a key a PreKeySignalMessage: decrypt_key.)
        let consumes_prekey = ours.iter().any(|k| k.prekey);
        let attempt = |acct: &mut Self| {
            let mut budget = Budget::new(limits.chain_steps);
            let mut last_error = None;
            for key in ours {
                match acct.decrypt_key(from_jid, encrypted, key, &mut budget, limits) {
                    Ok(done) => return Ok(done),
                    Err(e @ Error::ChainStepBudgetExhausted { .. }) => return Err(e),
                    Err(e) => last_error = Some(e),
                }
            }
            Err(last_error.unwrap_or(Error::BadCiphertext))
        };
        self.transaction(!consumes_prekey, attempt)
    }

    /// One key: the decrypted message and the changes to commit with it.
    fn decrypt_key(
        &mut self,
        jid: &str,
        enc: &EncryptedElement,
        key: &KeyElement,
        budget: &mut Budget,
        limits: &DecryptLimits,
    ) -> Result<(Decrypted, Changes), Error> {
        let sid = enc.sid;
        let mut changes = Changes::default();
        let record = self.store.session(jid, sid)?;
        let (record, material, bundle_changed) = if key.prekey {
            self.decrypt_prekey_message(
                jid,
                sid,
                record,
                &PreKeySignalMessage::parse(&key.data)?,
                budget,
                limits,
                &mut changes,
            )?
        } else {
            let mut record = record.ok_or(Error::NoSession {
                jid: jid.to_owned(),
                device: sid,
            })?;
            let material = record.decrypt_within(
                &SignalMessage::parse(&key.data)?,
                budget,
                limits.states_per_key,
            )?;
            (record, material, false)
        };
        let material = zeroize::Zeroizing::new(material);
        let plaintext = match &enc.payload {
            Some(ct) => Some(decrypt_payload(&material, &enc.iv, ct)?),
            None => None,
        };
        let sender_identity =
            record
                .current()
                .map(|s| *s.remote_identity())
                .ok_or(Error::NoSession {
                    jid: jid.to_owned(),
                    device: sid,
                })?;
        let trust = self.note_identity(jid, &sender_identity, &mut changes)?;
        changes.sessions.push((jid.to_owned(), sid, record));
        Ok((
            Decrypted {
                plaintext,
                sender_device: sid,
                sender_identity,
                trust,
                bundle_changed,
            },
            changes,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn decrypt_prekey_message(
        &mut self,
        jid: &str,
        sid: u32,
        record: Option<SessionRecord>,
        msg: &PreKeySignalMessage,
        budget: &mut Budget,
        limits: &DecryptLimits,
        changes: &mut Changes,
    ) -> Result<(SessionRecord, Vec<u8>, bool), Error> {
        let mut record = record.unwrap_or_default();
        if let Some(current) = record.current()
            && current.remote_identity() != &msg.identity_key
        {
            return Err(Error::IdentityMismatch {
                jid: jid.to_owned(),
                device: sid,
            });
        }
        if record.has_state_with_base_key(&msg.base_key) {
            // A repeat of a session we already built from this message: no second X3DH.
            let pt = record.decrypt_within(&msg.message, budget, limits.states_per_key)?;
            return Ok((record, pt, false));
        }
        let pre_key_id = msg.pre_key_id.ok_or(Error::MissingPreKeyId)?;
        let spk = self
            .store
            .signed_pre_keys()?
            .into_iter()
            .find(|s| s.id == msg.signed_pre_key_id)
            .ok_or(Error::UnknownSignedPreKey(msg.signed_pre_key_id))?;
        let opk = self
            .store
            .pre_key(pre_key_id)?
            .ok_or(Error::UnknownPreKey(pre_key_id))?;
        let state: SessionState = initialize_bob(&BobParameters {
            our_identity: &self.own.identity,
            our_signed_pre_key: &spk.pair,
            our_one_time_pre_key: Some(&opk.pair),
            their_identity: msg.identity_key,
            their_base_key: msg.base_key,
            our_registration_id: self.own.device_id,
            their_registration_id: msg.registration_id,
        })?;
        record.promote(state);
        // Only the new state can decrypt the message that created it.
        let pt = record.decrypt_within(&msg.message, budget, 1)?;
        // The one-time prekey is used up: replace it in the same commit, under the next id as
        // committed (read in this transaction), so no id is ever given to two keys.
        let mut own = self.own.clone();
        changes.pre_keys_removed.push(pre_key_id);
        changes.pre_keys_added.push(PreKeyRecord {
            id: own.next_pre_key_id,
            pair: KeyPair::generate()?,
        });
        own.next_pre_key_id = own.next_pre_key_id.wrapping_add(1).max(1);
        changes.own = Some(own);
        Ok((record, pt, true))
    }

    /// Keeps the key material healthy: tops one-time prekeys up to [`PRE_KEY_COUNT`], rotates the
    /// signed prekey after [`SIGNED_PRE_KEY_ROTATION`] and forgets replaced ones after
    /// [`SIGNED_PRE_KEY_GRACE`]. Returns true when the bundle changed (republish it).
    pub fn maintain(&mut self, now: u64) -> Result<bool, Error> {
        self.in_transaction(|acct| acct.maintenance(now))
    }

    fn maintenance(&mut self, now: u64) -> Result<(bool, Changes), Error> {
        let mut changes = Changes::default();
        let mut own = self.own.clone();
        let have = self.store.pre_keys()?.len();
        for _ in have..PRE_KEY_COUNT {
            changes.pre_keys_added.push(PreKeyRecord {
                id: own.next_pre_key_id,
                pair: KeyPair::generate()?,
            });
            own.next_pre_key_id = own.next_pre_key_id.wrapping_add(1).max(1);
        }
        let spks = self.store.signed_pre_keys()?;
        let current = spks
            .iter()
            .filter(|s| s.replaced_at.is_none())
            .max_by_key(|s| s.id);
        if current.is_none_or(|c| now.saturating_sub(c.created_at) >= SIGNED_PRE_KEY_ROTATION) {
            let next_id = spks
                .iter()
                .map(|s| s.id)
                .max()
                .unwrap_or(0)
                .wrapping_add(1)
                .max(1);
            if let Some(c) = current {
                let mut old = c.clone();
                old.replaced_at = Some(now);
                changes.signed_pre_keys.push(old);
            }
            changes
                .signed_pre_keys
                .push(new_signed_pre_key(&self.own.identity, next_id, now)?);
        }
        for s in &spks {
            if s.replaced_at
                .is_some_and(|t| now.saturating_sub(t) >= SIGNED_PRE_KEY_GRACE)
            {
                changes.signed_pre_keys_removed.push(s.id);
            }
        }
        if changes.is_empty() {
            return Ok((false, changes));
        }
        if !changes.pre_keys_added.is_empty() {
            changes.own = Some(own);
        }
        Ok((true, changes))
    }

    /// Hands the store back.
    pub fn into_store(self) -> S {
        self.store
    }
}

/// Signature check of a bundle on its own (for clients that vet bundles before storing them).
pub fn verify_bundle(bundle: &Bundle) -> Result<(), KeyError> {
    bundle.identity_key.verify(
        "signedPreKeySignature",
        &bundle.signed_pre_key.serialize(),
        &bundle.signature,
    )
}

/// For tests and diagnostics: the wire kind of a `<key>`'s bytes.
pub fn parse_key(key: &KeyElement) -> Result<CiphertextMessage, Error> {
    Ok(if key.prekey {
        CiphertextMessage::PreKey(PreKeySignalMessage::parse(&key.data)?)
    } else {
        CiphertextMessage::Signal(SignalMessage::parse(&key.data)?)
    })
}
