//! In-memory reference store (tests, the interop shim).

use std::collections::{BTreeMap, HashMap};

use super::{Changes, OwnIdentity, PreKeyRecord, SignedPreKeyRecord, Store};
use crate::error::StoreError;
use crate::keys::PublicKey;
use crate::session::SessionRecord;
use crate::trust::TrustLevel;

/// Everything in maps; `apply` cannot fail half-way.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    own: Option<OwnIdentity>,
    sessions: HashMap<(String, u32), SessionRecord>,
    pre_keys: BTreeMap<u32, PreKeyRecord>,
    signed_pre_keys: BTreeMap<u32, SignedPreKeyRecord>,
    trust: HashMap<String, Vec<(PublicKey, TrustLevel)>>,
    device_lists: HashMap<String, Vec<u32>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn own(&self) -> Result<Option<OwnIdentity>, StoreError> {
        Ok(self.own.clone())
    }

    fn session(&self, jid: &str, device: u32) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.sessions.get(&(jid.to_owned(), device)).cloned())
    }

    fn session_devices(&self, jid: &str) -> Result<Vec<u32>, StoreError> {
        let mut v: Vec<u32> = self
            .sessions
            .keys()
            .filter(|(j, _)| j == jid)
            .map(|(_, d)| *d)
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    fn pre_key(&self, id: u32) -> Result<Option<PreKeyRecord>, StoreError> {
        Ok(self.pre_keys.get(&id).cloned())
    }

    fn pre_keys(&self) -> Result<Vec<PreKeyRecord>, StoreError> {
        Ok(self.pre_keys.values().cloned().collect())
    }

    fn signed_pre_keys(&self) -> Result<Vec<SignedPreKeyRecord>, StoreError> {
        Ok(self.signed_pre_keys.values().cloned().collect())
    }

    fn identities(&self, jid: &str) -> Result<Vec<(PublicKey, TrustLevel)>, StoreError> {
        Ok(self.trust.get(jid).cloned().unwrap_or_default())
    }

    fn device_list(&self, jid: &str) -> Result<Option<Vec<u32>>, StoreError> {
        Ok(self.device_lists.get(jid).cloned())
    }

    fn apply(&mut self, c: Changes) -> Result<(), StoreError> {
        if let Some(own) = c.own {
            self.own = Some(own);
        }
        for (jid, device, record) in c.sessions {
            self.sessions.insert((jid, device), record);
        }
        for id in c.pre_keys_removed {
            self.pre_keys.remove(&id);
        }
        for pk in c.pre_keys_added {
            self.pre_keys.insert(pk.id, pk);
        }
        for id in c.signed_pre_keys_removed {
            self.signed_pre_keys.remove(&id);
        }
        for spk in c.signed_pre_keys {
            self.signed_pre_keys.insert(spk.id, spk);
        }
        for (jid, key, level) in c.trust {
            let entry = self.trust.entry(jid).or_default();
            match entry.iter_mut().find(|(k, _)| *k == key) {
                Some(e) => e.1 = level,
                None => entry.push((key, level)),
            }
        }
        for (jid, list) in c.device_lists {
            self.device_lists.insert(jid, list);
        }
        Ok(())
    }
}
