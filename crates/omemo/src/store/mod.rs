//! Storage behind a trait, in the manner of libsignal's stores: the engine reads through it and
//! writes only by handing it one [`Changes`] batch, which an implementation must apply atomically.
//! That is what makes "a decrypt commits its ratchet state together with handing out the
//! plaintext" hold: the engine returns a plaintext only after `apply` succeeded.
//!
//! [`MemoryStore`] is always built; `SqliteStore` (and `BUSY_TIMEOUT`) only with the
//! `sqlite` feature (on by default).

mod memory;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::{BUSY_TIMEOUT, SqliteStore};

use crate::error::StoreError;
use crate::keys::{KeyPair, PublicKey};
use crate::session::SessionRecord;
use crate::trust::TrustLevel;

/// Our own account and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnIdentity {
    /// Our bare JID.
    pub jid: String,
    /// Our device id (libsignal registration id).
    pub device_id: u32,
    /// Our identity key pair.
    pub identity: KeyPair,
    /// Next one-time prekey id to hand out (ids are never reused).
    pub next_pre_key_id: u32,
}

/// A one-time prekey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreKeyRecord {
    /// Its id.
    pub id: u32,
    /// The pair.
    pub pair: KeyPair,
}

/// A signed prekey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPreKeyRecord {
    /// Its id.
    pub id: u32,
    /// The pair.
    pub pair: KeyPair,
    /// XEdDSA signature by our identity key over the 33-byte public key.
    pub signature: Vec<u8>,
    /// When it was made (seconds since the Unix epoch, as the caller's clock says).
    pub created_at: u64,
    /// When a newer one replaced it; it stays usable for a grace period after that.
    pub replaced_at: Option<u64>,
}

/// One atomic batch of writes. Upserts replace existing rows with the same key.
#[derive(Debug, Default)]
pub struct Changes {
    /// Replace our identity row.
    pub own: Option<OwnIdentity>,
    /// Upsert session records `(bare JID, device, record)`.
    pub sessions: Vec<(String, u32, SessionRecord)>,
    /// Upsert one-time prekeys.
    pub pre_keys_added: Vec<PreKeyRecord>,
    /// Delete one-time prekeys.
    pub pre_keys_removed: Vec<u32>,
    /// Upsert signed prekeys.
    pub signed_pre_keys: Vec<SignedPreKeyRecord>,
    /// Delete signed prekeys.
    pub signed_pre_keys_removed: Vec<u32>,
    /// Upsert trust `(bare JID, identity key, level)`.
    pub trust: Vec<(String, PublicKey, TrustLevel)>,
    /// Replace a contact's cached device list.
    pub device_lists: Vec<(String, Vec<u32>)>,
}

impl Changes {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.own.is_none()
            && self.sessions.is_empty()
            && self.pre_keys_added.is_empty()
            && self.pre_keys_removed.is_empty()
            && self.signed_pre_keys.is_empty()
            && self.signed_pre_keys_removed.is_empty()
            && self.trust.is_empty()
            && self.device_lists.is_empty()
    }
}

/// What the OMEMO engine needs from storage.
pub trait Store {
    /// Our identity, if one was created.
    fn own(&self) -> Result<Option<OwnIdentity>, StoreError>;
    /// The session record with one device.
    fn session(&self, jid: &str, device: u32) -> Result<Option<SessionRecord>, StoreError>;
    /// Devices of `jid` we hold sessions with.
    fn session_devices(&self, jid: &str) -> Result<Vec<u32>, StoreError>;
    /// One one-time prekey.
    fn pre_key(&self, id: u32) -> Result<Option<PreKeyRecord>, StoreError>;
    /// All one-time prekeys, by id.
    fn pre_keys(&self) -> Result<Vec<PreKeyRecord>, StoreError>;
    /// All signed prekeys, by id.
    fn signed_pre_keys(&self) -> Result<Vec<SignedPreKeyRecord>, StoreError>;
    /// Known identity keys of `jid` with their trust.
    fn identities(&self, jid: &str) -> Result<Vec<(PublicKey, TrustLevel)>, StoreError>;
    /// Cached device list of `jid`.
    fn device_list(&self, jid: &str) -> Result<Option<Vec<u32>>, StoreError>;
    /// Applies a batch atomically: all of it or, on error, none of it. After [`Store::begin`]
    /// this commits the transaction begun there (or, on error, rolls it back).
    fn apply(&mut self, changes: Changes) -> Result<(), StoreError>;
    /// Begins a read-modify-write: until the next [`Store::apply`] or [`Store::rollback`], reads
    /// see the latest committed state and nobody else (no other connection, no other process)
    /// commits. A store only one connection uses needs nothing here.
    fn begin(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// As [`Store::begin`], for a change that may be lost in a power cut without harm: its
    /// commit need not wait for the disk. The engine uses it for the ratchet step of a
    /// decrypt that consumed no prekey: lost, the message can only be decrypted once more.
    /// Any later ordinary commit (an encrypt before its ciphertext leaves) makes it durable
    /// too. A store without such a distinction begins as usual.
    fn begin_deferred_sync(&mut self) -> Result<(), StoreError> {
        self.begin()
    }
    /// Ends what [`Store::begin`] began, writing nothing.
    fn rollback(&mut self) {}
    /// True when trust levels changed since the last call (the first call only starts
    /// counting), whoever changed them: another connection, another process, or this one.
    fn trust_changed(&mut self) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// A boxed store is a store, so one engine type can run over a store chosen at run time.
impl<S: Store + ?Sized> Store for Box<S> {
    fn own(&self) -> Result<Option<OwnIdentity>, StoreError> {
        (**self).own()
    }
    fn session(&self, jid: &str, device: u32) -> Result<Option<SessionRecord>, StoreError> {
        (**self).session(jid, device)
    }
    fn session_devices(&self, jid: &str) -> Result<Vec<u32>, StoreError> {
        (**self).session_devices(jid)
    }
    fn pre_key(&self, id: u32) -> Result<Option<PreKeyRecord>, StoreError> {
        (**self).pre_key(id)
    }
    fn pre_keys(&self) -> Result<Vec<PreKeyRecord>, StoreError> {
        (**self).pre_keys()
    }
    fn signed_pre_keys(&self) -> Result<Vec<SignedPreKeyRecord>, StoreError> {
        (**self).signed_pre_keys()
    }
    fn identities(&self, jid: &str) -> Result<Vec<(PublicKey, TrustLevel)>, StoreError> {
        (**self).identities(jid)
    }
    fn device_list(&self, jid: &str) -> Result<Option<Vec<u32>>, StoreError> {
        (**self).device_list(jid)
    }
    fn apply(&mut self, changes: Changes) -> Result<(), StoreError> {
        (**self).apply(changes)
    }
    fn begin(&mut self) -> Result<(), StoreError> {
        (**self).begin()
    }
    fn begin_deferred_sync(&mut self) -> Result<(), StoreError> {
        (**self).begin_deferred_sync()
    }
    fn rollback(&mut self) {
        (**self).rollback()
    }
    fn trust_changed(&mut self) -> Result<bool, StoreError> {
        (**self).trust_changed()
    }
}
