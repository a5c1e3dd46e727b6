//! Session records as libsignal keeps them: the current state plus a bounded list of previous
//! states. When both ends start a session at once, or a peer starts a new one, the old state is
//! archived rather than dropped; a message that only an archived state can decrypt promotes it.

use std::collections::VecDeque;

use prost::Message;

use crate::error::{Error, StoreError};
use crate::keys::{KeyPair, PrivateKey, PublicKey};
use crate::ratchet::{
    Budget, ChainKey, MessageKeys, PendingPreKey, ReceiverChain, RootKey, SessionState,
};
use crate::secret::Secret;
use crate::wire::{CiphertextMessage, SignalMessage};

/// Previous states kept per record (libsignal's `ARCHIVED_STATES_MAX_LENGTH`).
pub const MAX_ARCHIVED_STATES: usize = 40;

/// All session states with one peer device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionRecord {
    current: Option<SessionState>,
    previous: VecDeque<SessionState>,
}

impl SessionRecord {
    /// A record holding one fresh state.
    pub fn new(state: SessionState) -> Self {
        Self {
            current: Some(state),
            previous: VecDeque::new(),
        }
    }

    /// The state used for sending.
    pub fn current(&self) -> Option<&SessionState> {
        self.current.as_ref()
    }

    /// Skipped message keys held by the current state.
    pub fn skipped_keys(&self) -> usize {
        self.current.as_ref().map_or(0, |s| s.skipped.len())
    }

    /// Receiving chains held by the current state.
    pub fn receiver_chains(&self) -> usize {
        self.current.as_ref().map_or(0, |s| s.receiver_chains.len())
    }

    /// Number of archived states.
    pub fn archived_len(&self) -> usize {
        self.previous.len()
    }

    /// True when some state (current or archived) was created by this X3DH base key: a repeated
    /// PreKeySignalMessage of an existing session must not run X3DH again.
    pub fn has_state_with_base_key(&self, base_key: &PublicKey) -> bool {
        self.current
            .iter()
            .chain(self.previous.iter())
            .any(|s| s.base_key() == base_key)
    }

    /// Makes `state` current, archiving the old current state (bounded).
    pub fn promote(&mut self, state: SessionState) {
        if let Some(old) = self.current.take() {
            self.previous.push_front(old);
            self.previous.truncate(MAX_ARCHIVED_STATES);
        }
        self.current = Some(state);
    }

    /// Encrypts with the current state.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<CiphertextMessage, Error> {
        match self.current.as_mut() {
            Some(state) => state.encrypt(plaintext),
            None => Err(Error::NoSession {
                jid: String::new(),
                device: 0,
            }),
        }
    }

    /// Decrypts with the current state, else with the archived ones (promoting the one that
    /// works), with the budget of one message and every state tried. Nothing changes when every
    /// state refuses.
    pub fn decrypt(&mut self, message: &SignalMessage) -> Result<Vec<u8>, Error> {
        self.decrypt_within(message, &mut Budget::one_message(), usize::MAX)
    }

    /// As [`Self::decrypt`], trying at most `max_states` states (current first, then the newest
    /// archived ones) and spending their chain walks from `budget`; an exhausted budget ends the
    /// attempt at once.
    pub fn decrypt_within(
        &mut self,
        message: &SignalMessage,
        budget: &mut Budget,
        max_states: usize,
    ) -> Result<Vec<u8>, Error> {
        // States change only on success (see `SessionState::decrypt`), so they are tried in place.
        let mut tried = 0;
        let first_error = match self.current.as_mut() {
            Some(s) if max_states > 0 => {
                tried += 1;
                match s.decrypt_within(message, budget) {
                    Ok(pt) => return Ok(pt),
                    // A duplicate in the current chain is reported as such (libsignal does the
                    // same); so is a message the stanza cannot afford.
                    Err(
                        e @ (Error::DuplicateMessage { .. }
                        | Error::GapTooLarge { .. }
                        | Error::ChainStepBudgetExhausted { .. }),
                    ) => return Err(e),
                    Err(e) => Some(e),
                }
            }
            _ => None,
        };
        for i in 0..self.previous.len() {
            if tried >= max_states {
                return Err(Error::SessionStatesExhausted { tried });
            }
            let Some(state) = self.previous.get_mut(i) else {
                break;
            };
            tried += 1;
            match state.decrypt_within(message, budget) {
                Ok(pt) => {
                    if let Some(state) = self.previous.remove(i) {
                        self.promote(state);
                    }
                    return Ok(pt);
                }
                Err(e @ Error::ChainStepBudgetExhausted { .. }) => return Err(e),
                Err(_) => {}
            }
        }
        Err(Error::NoValidState(Box::new(
            first_error.unwrap_or(Error::BadCiphertext),
        )))
    }

    /// Serializes for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        let proto = RecordProto {
            current: self.current.as_ref().map(state_to_proto),
            previous: self.previous.iter().map(state_to_proto).collect(),
        };
        proto.encode_to_vec()
    }

    /// Parses stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            what: "session record",
            reason,
        };
        let proto = RecordProto::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
        Ok(Self {
            current: proto
                .current
                .as_ref()
                .map(state_from_proto)
                .transpose()
                .map_err(corrupt)?,
            previous: proto
                .previous
                .iter()
                .map(state_from_proto)
                .collect::<Result<_, _>>()
                .map_err(corrupt)?,
        })
    }
}

// Storage format: protobuf, private to this crate. Secrets are zeroized when the protos drop.

#[derive(Clone, PartialEq, Message)]
struct RecordProto {
    #[prost(message, optional, tag = "1")]
    current: Option<StateProto>,
    #[prost(message, repeated, tag = "2")]
    previous: Vec<StateProto>,
}

#[derive(Clone, PartialEq, Message)]
struct ChainProto {
    #[prost(bytes = "vec", tag = "1")]
    ratchet_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    chain_key: Vec<u8>,
    #[prost(uint32, tag = "3")]
    index: u32,
}

#[derive(Clone, PartialEq, Message)]
struct SkippedProto {
    #[prost(bytes = "vec", tag = "1")]
    ratchet_key: Vec<u8>,
    #[prost(uint32, tag = "2")]
    counter: u32,
    #[prost(bytes = "vec", tag = "3")]
    cipher_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    mac_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    iv: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct StateProto {
    #[prost(bytes = "vec", tag = "1")]
    local_identity: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    remote_identity: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    root_key: Vec<u8>,
    #[prost(uint32, tag = "4")]
    previous_counter: u32,
    #[prost(bytes = "vec", tag = "5")]
    sender_ratchet_private: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    sender_chain_key: Vec<u8>,
    #[prost(uint32, tag = "7")]
    sender_chain_index: u32,
    #[prost(message, repeated, tag = "8")]
    receiver_chains: Vec<ChainProto>,
    #[prost(message, repeated, tag = "9")]
    skipped: Vec<SkippedProto>,
    #[prost(bool, tag = "10")]
    has_pending: bool,
    #[prost(uint32, optional, tag = "11")]
    pending_pre_key_id: Option<u32>,
    #[prost(uint32, tag = "12")]
    pending_signed_pre_key_id: u32,
    #[prost(bytes = "vec", tag = "13")]
    pending_base_key: Vec<u8>,
    #[prost(uint32, tag = "14")]
    local_registration_id: u32,
    #[prost(uint32, tag = "15")]
    remote_registration_id: u32,
    #[prost(bytes = "vec", tag = "16")]
    base_key: Vec<u8>,
}

impl Drop for StateProto {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.root_key.zeroize();
        self.sender_ratchet_private.zeroize();
        self.sender_chain_key.zeroize();
        for c in &mut self.receiver_chains {
            c.chain_key.zeroize();
        }
        for s in &mut self.skipped {
            s.cipher_key.zeroize();
            s.mac_key.zeroize();
            s.iv.zeroize();
        }
    }
}

fn state_to_proto(s: &SessionState) -> StateProto {
    let pending = s.pending_prekey.as_ref();
    StateProto {
        local_identity: s.local_identity.serialize().to_vec(),
        remote_identity: s.remote_identity.serialize().to_vec(),
        root_key: s.root_key.0.expose().to_vec(),
        previous_counter: s.previous_counter,
        sender_ratchet_private: s.sender_ratchet.private.to_bytes().to_vec(),
        sender_chain_key: s.sender_chain.key.expose().to_vec(),
        sender_chain_index: s.sender_chain.index,
        receiver_chains: s
            .receiver_chains
            .iter()
            .map(|c| ChainProto {
                ratchet_key: c.ratchet_key.serialize().to_vec(),
                chain_key: c.chain_key.key.expose().to_vec(),
                index: c.chain_key.index,
            })
            .collect(),
        skipped: s
            .skipped
            .iter()
            .map(|(k, mk)| SkippedProto {
                ratchet_key: k.serialize().to_vec(),
                counter: mk.counter,
                cipher_key: mk.cipher_key.expose().to_vec(),
                mac_key: mk.mac_key.expose().to_vec(),
                iv: mk.iv.expose().to_vec(),
            })
            .collect(),
        has_pending: pending.is_some(),
        pending_pre_key_id: pending.and_then(|p| p.pre_key_id),
        pending_signed_pre_key_id: pending.map_or(0, |p| p.signed_pre_key_id),
        pending_base_key: pending.map_or_else(Vec::new, |p| p.base_key.serialize().to_vec()),
        local_registration_id: s.local_registration_id,
        remote_registration_id: s.remote_registration_id,
        base_key: s.base_key.serialize().to_vec(),
    }
}

fn secret<const N: usize>(field: &str, b: &[u8]) -> Result<Secret<N>, String> {
    Secret::from_slice(b).ok_or_else(|| format!("{field}: expected {N} bytes, got {}", b.len()))
}

fn key(field: &'static str, b: &[u8]) -> Result<PublicKey, String> {
    PublicKey::from_bytes(field, b).map_err(|e| e.to_string())
}

fn state_from_proto(p: &StateProto) -> Result<SessionState, String> {
    let private = PrivateKey::from_bytes(
        *secret::<32>("sender_ratchet_private", &p.sender_ratchet_private)?.expose(),
    );
    Ok(SessionState {
        local_identity: key("local_identity", &p.local_identity)?,
        remote_identity: key("remote_identity", &p.remote_identity)?,
        root_key: RootKey(secret("root_key", &p.root_key)?),
        previous_counter: p.previous_counter,
        sender_ratchet: KeyPair::from_private(private),
        sender_chain: ChainKey {
            key: secret("sender_chain_key", &p.sender_chain_key)?,
            index: p.sender_chain_index,
        },
        receiver_chains: p
            .receiver_chains
            .iter()
            .map(|c| {
                Ok(ReceiverChain {
                    ratchet_key: key("ratchet_key", &c.ratchet_key)?,
                    chain_key: ChainKey {
                        key: secret("chain_key", &c.chain_key)?,
                        index: c.index,
                    },
                })
            })
            .collect::<Result<_, String>>()?,
        skipped: p
            .skipped
            .iter()
            .map(|s| {
                Ok((
                    key("ratchet_key", &s.ratchet_key)?,
                    MessageKeys {
                        cipher_key: secret("cipher_key", &s.cipher_key)?,
                        mac_key: secret("mac_key", &s.mac_key)?,
                        iv: secret("iv", &s.iv)?,
                        counter: s.counter,
                    },
                ))
            })
            .collect::<Result<_, String>>()?,
        pending_prekey: if p.has_pending {
            Some(PendingPreKey {
                pre_key_id: p.pending_pre_key_id,
                signed_pre_key_id: p.pending_signed_pre_key_id,
                base_key: key("pending_base_key", &p.pending_base_key)?,
            })
        } else {
            None
        },
        local_registration_id: p.local_registration_id,
        remote_registration_id: p.remote_registration_id,
        base_key: key("base_key", &p.base_key)?,
    })
}
