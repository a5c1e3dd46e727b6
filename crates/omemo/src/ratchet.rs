//! The Double Ratchet as libsignal v3 runs it: root, chain and message keys, one sending chain,
//! a bounded set of receiving chains, and bounded storage of skipped message keys.
//!
//! Key derivations (docs/protocol.md §6.3):
//! * root step: HKDF-SHA256(ikm = DH(their ratchet, our ratchet), salt = root key,
//!   info = `WhisperRatchet`) → new root key ‖ chain key;
//! * message keys: HKDF(ikm = HMAC(chain key, 0x01), salt = 32 zero bytes,
//!   info = `WhisperMessageKeys`) → AES-256 key ‖ MAC key ‖ CBC IV (80 bytes);
//! * next chain key: HMAC(chain key, 0x02).

use std::collections::VecDeque;

use aes::Aes256;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::Error;
use crate::keys::{KeyPair, PublicKey};
use crate::secret::Secret;
use crate::wire::{CiphertextMessage, PreKeySignalMessage, SignalMessage};

/// Largest jump ahead within one receiving chain that a single message may cause
/// (libsignal refuses "over 2000 messages into the future"). A larger gap is an error.
pub const MAX_MESSAGE_GAP: u32 = 2000;
/// Skipped message keys kept per session state, over all its receiving chains; beyond this the
/// oldest are dropped (their messages then fail to decrypt), so memory stays bounded.
pub const MAX_SKIPPED_KEYS: usize = 2000;
/// Receiving chains kept per session state (libsignal keeps 5); the oldest is dropped.
pub const MAX_RECEIVER_CHAINS: usize = 5;

/// What decrypting one stanza may still cost: chain steps (each two HMACs and an HKDF), shared
/// by every key and session state the stanza makes us try. A message whose walk would exceed
/// it is refused before walking, so a flood of forged messages costs bounded CPU each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Chain steps left.
    pub chain_steps: u32,
    /// The stanza's whole budget (for the error).
    pub max: u32,
}

impl Budget {
    /// A budget of `chain_steps`.
    pub fn new(chain_steps: u32) -> Self {
        Self {
            chain_steps,
            max: chain_steps,
        }
    }

    /// Enough for any single message [`MAX_MESSAGE_GAP`] allows (and no more).
    pub fn one_message() -> Self {
        Self::new(MAX_MESSAGE_GAP + 1)
    }

    fn spend(&mut self, steps: u32) -> Result<(), Error> {
        if steps > self.chain_steps {
            return Err(Error::ChainStepBudgetExhausted { max: self.max });
        }
        self.chain_steps -= steps;
        Ok(())
    }
}

const INFO_RATCHET: &[u8] = b"WhisperRatchet";
const INFO_MESSAGE_KEYS: &[u8] = b"WhisperMessageKeys";

/// HKDF-SHA256 to `N` bytes.
pub(crate) fn hkdf<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> Secret<N> {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut okm = [0u8; N];
    // N ≤ 80 here, far below HKDF-SHA256's limit of 8160 bytes, so expand cannot fail.
    let _ = hk.expand(info, &mut okm);
    let s = Secret::new(okm);
    zeroize::Zeroize::zeroize(&mut okm);
    s
}

fn finish(mut mac: Hmac<Sha256>, data: &[u8]) -> Secret<32> {
    mac.update(data);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    let s = Secret::new(out);
    zeroize::Zeroize::zeroize(&mut out);
    s
}

/// HKDF-SHA256 with the all-zero salt libsignal uses for message keys, to 80 bytes. The HMAC
/// keyed with that constant salt is prepared once per thread.
fn hkdf_zero_salt_80(ikm: &[u8], info: &[u8]) -> Secret<80> {
    thread_local! {
        static ZERO_SALT: Option<Hmac<Sha256>> = <Hmac<Sha256> as KeyInit>::new_from_slice(&[0u8; 32]).ok();
    }
    let prk = ZERO_SALT.with(|z| z.clone().map(|m| finish(m, ikm)));
    let Some(prk) = prk else {
        return hkdf::<80>(&[0u8; 32], ikm, info);
    };
    let mut okm = [0u8; 80];
    // A 32-byte PRK is always valid and 80 bytes are far below the expand limit.
    if let Ok(hk) = Hkdf::<Sha256>::from_prk(prk.expose()) {
        let _ = hk.expand(info, &mut okm);
    }
    let s = Secret::new(okm);
    zeroize::Zeroize::zeroize(&mut okm);
    s
}

/// A root key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootKey(pub(crate) Secret<32>);

impl RootKey {
    /// One DH ratchet step: derive the next root key and a fresh chain.
    pub fn create_chain(
        &self,
        their_ratchet: &PublicKey,
        ours: &KeyPair,
    ) -> Result<(RootKey, ChainKey), Error> {
        let shared = ours.private.agree(their_ratchet)?;
        let out = hkdf::<64>(self.0.expose(), shared.expose(), INFO_RATCHET);
        let (root, chain) = out.expose().split_at(32);
        Ok((
            RootKey(Secret::from_slice(root).unwrap_or_else(|| Secret::new([0; 32]))),
            ChainKey {
                key: Secret::from_slice(chain).unwrap_or_else(|| Secret::new([0; 32])),
                index: 0,
            },
        ))
    }
}

/// A symmetric chain key with its index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainKey {
    pub(crate) key: Secret<32>,
    pub(crate) index: u32,
}

impl ChainKey {
    /// The message keys at this index.
    pub fn message_keys(&self) -> MessageKeys {
        self.step().0
    }

    /// The next chain key.
    pub fn next(&self) -> ChainKey {
        let Ok(mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.expose()) else {
            // HMAC takes keys of any length; this branch cannot be reached.
            return self.clone();
        };
        ChainKey {
            key: finish(mac, &[0x02]),
            index: self.index.saturating_add(1),
        }
    }

    /// This index's message keys and the next chain key, sharing one HMAC key set-up:
    /// seed = HMAC(ck, 0x01), next = HMAC(ck, 0x02).
    pub fn step(&self) -> (MessageKeys, ChainKey) {
        let Ok(mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.expose()) else {
            // HMAC takes keys of any length; this branch cannot be reached.
            return (MessageKeys::zero(self.index), self.clone());
        };
        let seed = finish(mac.clone(), &[0x01]);
        let next = ChainKey {
            key: finish(mac, &[0x02]),
            index: self.index.saturating_add(1),
        };
        let out = hkdf_zero_salt_80(seed.expose(), INFO_MESSAGE_KEYS);
        let b = out.expose();
        let (cipher, rest) = b.split_at(32);
        let (mac_key, iv) = rest.split_at(32);
        let keys = MessageKeys {
            cipher_key: Secret::from_slice(cipher).unwrap_or_else(|| Secret::new([0; 32])),
            mac_key: Secret::from_slice(mac_key).unwrap_or_else(|| Secret::new([0; 32])),
            iv: Secret::from_slice(iv).unwrap_or_else(|| Secret::new([0; 16])),
            counter: self.index,
        };
        (keys, next)
    }
}

/// Keys for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageKeys {
    pub(crate) cipher_key: Secret<32>,
    pub(crate) mac_key: Secret<32>,
    pub(crate) iv: Secret<16>,
    pub(crate) counter: u32,
}

impl MessageKeys {
    fn zero(counter: u32) -> Self {
        Self {
            cipher_key: Secret::new([0; 32]),
            mac_key: Secret::new([0; 32]),
            iv: Secret::new([0; 16]),
            counter,
        }
    }
}

/// A receiving chain: the peer's ratchet key and our chain key for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverChain {
    pub(crate) ratchet_key: PublicKey,
    pub(crate) chain_key: ChainKey,
}

/// The X3DH values a PreKeySignalMessage must repeat until the peer answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingPreKey {
    /// One-time prekey id used (always present for sessions we build).
    pub pre_key_id: Option<u32>,
    /// Signed prekey id used.
    pub signed_pre_key_id: u32,
    /// Our X3DH base key.
    pub base_key: PublicKey,
}

/// One Double Ratchet session state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    pub(crate) local_identity: PublicKey,
    pub(crate) remote_identity: PublicKey,
    pub(crate) root_key: RootKey,
    pub(crate) previous_counter: u32,
    pub(crate) sender_ratchet: KeyPair,
    pub(crate) sender_chain: ChainKey,
    pub(crate) receiver_chains: VecDeque<ReceiverChain>,
    /// Skipped message keys, oldest first, with the ratchet key of their chain.
    pub(crate) skipped: VecDeque<(PublicKey, MessageKeys)>,
    pub(crate) pending_prekey: Option<PendingPreKey>,
    pub(crate) local_registration_id: u32,
    pub(crate) remote_registration_id: u32,
    /// The X3DH base key that created this state (ours as Alice, theirs as Bob): identifies it.
    pub(crate) base_key: PublicKey,
}

impl SessionState {
    /// The peer's identity key.
    pub fn remote_identity(&self) -> &PublicKey {
        &self.remote_identity
    }

    /// The X3DH base key that created this state.
    pub fn base_key(&self) -> &PublicKey {
        &self.base_key
    }

    /// True while our messages must be PreKeySignalMessages (nothing received in this state yet).
    pub fn has_pending_prekey(&self) -> bool {
        self.pending_prekey.is_some()
    }

    /// Encrypts one message and advances the sending chain.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<CiphertextMessage, Error> {
        let (keys, next_chain) = self.sender_chain.step();
        let ciphertext =
            cbc::Encryptor::<Aes256>::new(keys.cipher_key.expose().into(), keys.iv.expose().into())
                .encrypt_padded_vec::<Pkcs7>(plaintext);
        let message = SignalMessage::new(
            keys.mac_key.expose(),
            self.sender_ratchet.public,
            self.sender_chain.index,
            self.previous_counter,
            ciphertext,
            &self.local_identity,
            &self.remote_identity,
        );
        self.sender_chain = next_chain;
        Ok(match &self.pending_prekey {
            Some(p) => CiphertextMessage::PreKey(PreKeySignalMessage {
                registration_id: self.local_registration_id,
                pre_key_id: p.pre_key_id,
                signed_pre_key_id: p.signed_pre_key_id,
                base_key: p.base_key,
                identity_key: self.local_identity,
                message,
            }),
            None => CiphertextMessage::Signal(message),
        })
    }

    /// Decrypts one message (with the budget of one message, [`Budget::one_message`]).
    pub fn decrypt(&mut self, message: &SignalMessage) -> Result<Vec<u8>, Error> {
        self.decrypt_within(message, &mut Budget::one_message())
    }

    /// Decrypts one message, spending its chain walk from `budget`. Everything is computed into
    /// locals first and `self` changes only after the MAC and the padding checked out, so a
    /// forged or replayed message leaves the state exactly as it was (and no copy of the state
    /// is needed to try it).
    pub fn decrypt_within(
        &mut self,
        message: &SignalMessage,
        budget: &mut Budget,
    ) -> Result<Vec<u8>, Error> {
        let existing = self
            .receiver_chains
            .iter()
            .position(|c| c.ratchet_key == message.ratchet_key);
        let step = match existing {
            Some(_) => None,
            None => Some(self.plan_ratchet_step(&message.ratchet_key)?),
        };
        let chain_key = match (&step, existing.and_then(|p| self.receiver_chains.get(p))) {
            (Some(step), _) => &step.receiver_chain,
            (None, Some(chain)) => &chain.chain_key,
            (None, None) => return Err(Error::BadCiphertext),
        };
        let counter = message.counter;
        let mut skipped_used = None;
        let mut skip_from: Option<ChainKey> = None;
        let mut next_chain = None;
        let keys = if counter < chain_key.index {
            let found = self
                .skipped
                .iter()
                .position(|(k, mk)| *k == message.ratchet_key && mk.counter == counter);
            let Some((i, (_, keys))) = found.and_then(|i| self.skipped.get(i).map(|e| (i, e)))
            else {
                return Err(Error::DuplicateMessage { counter });
            };
            skipped_used = Some(i);
            keys.clone()
        } else {
            let gap = counter - chain_key.index;
            if gap > MAX_MESSAGE_GAP {
                return Err(Error::GapTooLarge {
                    counter,
                    gap,
                    max: MAX_MESSAGE_GAP,
                });
            }
            budget.spend(gap + 1)?;
            // Only the chain keys on the way (one HMAC each): the message keys of the skipped
            // ones are derived after the MAC checked out, so a forged message far ahead costs a
            // fifth of the walk an authentic one does.
            let mut ck = chain_key.clone();
            while ck.index < counter {
                ck = ck.next();
            }
            skip_from = Some(chain_key.clone());
            let (keys, next) = ck.step();
            next_chain = Some(next);
            keys
        };
        message.verify_mac(
            keys.mac_key.expose(),
            &self.remote_identity,
            &self.local_identity,
        )?;
        let plaintext =
            cbc::Decryptor::<Aes256>::new(keys.cipher_key.expose().into(), keys.iv.expose().into())
                .decrypt_padded_vec::<Pkcs7>(&message.ciphertext)
                .map_err(|_| Error::BadCiphertext)?;

        // Authentic: commit, with the message keys of the messages skipped on the way.
        let mut newly_skipped = Vec::new();
        if let Some(mut ck) = skip_from {
            while ck.index < counter {
                let (keys, next) = ck.step();
                newly_skipped.push(keys);
                ck = next;
            }
        }
        if let Some(i) = skipped_used {
            self.skipped.remove(i);
        }
        let pos = match step {
            Some(step) => self.apply_ratchet_step(message.ratchet_key, step),
            None => existing.unwrap_or(0),
        };
        if let (Some(next), Some(chain)) = (next_chain, self.receiver_chains.get_mut(pos)) {
            chain.chain_key = next;
        }
        self.skipped
            .extend(newly_skipped.into_iter().map(|k| (message.ratchet_key, k)));
        while self.skipped.len() > MAX_SKIPPED_KEYS {
            self.skipped.pop_front();
        }
        // The peer has answered in this state: the session is acknowledged.
        self.pending_prekey = None;
        Ok(plaintext)
    }

    /// The DH ratchet step a new peer ratchet key causes, computed without touching `self`.
    fn plan_ratchet_step(&self, their_ratchet: &PublicKey) -> Result<RatchetStep, Error> {
        let (root, receiver_chain) = self
            .root_key
            .create_chain(their_ratchet, &self.sender_ratchet)?;
        let sender_ratchet = KeyPair::generate()?;
        let (root_key, sender_chain) = root.create_chain(their_ratchet, &sender_ratchet)?;
        Ok(RatchetStep {
            root_key,
            receiver_chain,
            sender_ratchet,
            sender_chain,
        })
    }

    /// Applies a planned step; returns the new receiving chain's position.
    fn apply_ratchet_step(&mut self, their_ratchet: PublicKey, step: RatchetStep) -> usize {
        self.root_key = step.root_key;
        self.receiver_chains.push_back(ReceiverChain {
            ratchet_key: their_ratchet,
            chain_key: step.receiver_chain,
        });
        while self.receiver_chains.len() > MAX_RECEIVER_CHAINS {
            if let Some(old) = self.receiver_chains.pop_front() {
                self.skipped.retain(|(k, _)| *k != old.ratchet_key);
            }
        }
        self.previous_counter = self.sender_chain.index.saturating_sub(1);
        self.sender_ratchet = step.sender_ratchet;
        self.sender_chain = step.sender_chain;
        self.receiver_chains.len() - 1
    }
}

struct RatchetStep {
    root_key: RootKey,
    receiver_chain: ChainKey,
    sender_ratchet: KeyPair,
    sender_chain: ChainKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_key_derivation_is_deterministic_and_advances() {
        let ck = ChainKey {
            key: Secret::new([1u8; 32]),
            index: 0,
        };
        let a = ck.message_keys();
        let b = ck.message_keys();
        assert_eq!(a, b);
        let n = ck.next();
        assert_eq!(n.index, 1);
        assert_ne!(n.message_keys().cipher_key, a.cipher_key);
        assert_eq!(n.message_keys().counter, 1);
    }

    #[test]
    fn message_keys_debug_is_redacted() {
        let ck = ChainKey {
            key: Secret::new([0xAB; 32]),
            index: 3,
        };
        let s = format!("{:?} {:?}", ck, ck.message_keys());
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("abab"),
            "{s}"
        );
    }
}
