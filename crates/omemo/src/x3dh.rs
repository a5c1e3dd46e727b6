//! X3DH as libsignal v3 runs it (`RatchetingSession`), with and without a one-time prekey.
//!
//! Master secret = HKDF-SHA256(salt = 32 zero bytes, ikm = 0xFF×32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4],
//! info = `WhisperText`) → root key ‖ chain key. Every DH refuses a non-contributory result.

use std::collections::VecDeque;

use crate::error::Error;
use crate::keys::{KeyPair, PublicKey};
use crate::ratchet::{ChainKey, PendingPreKey, ReceiverChain, RootKey, SessionState, hkdf};
use crate::secret::Secret;

const INFO_TEXT: &[u8] = b"WhisperText";

fn derive(dhs: &[Secret<32>]) -> (RootKey, ChainKey) {
    let mut ikm = zeroize::Zeroizing::new(Vec::with_capacity(32 * (dhs.len() + 1)));
    ikm.extend_from_slice(&[0xFF; 32]);
    for dh in dhs {
        ikm.extend_from_slice(dh.expose());
    }
    let out = hkdf::<64>(&[0u8; 32], &ikm, INFO_TEXT);
    let (root, chain) = out.expose().split_at(32);
    (
        RootKey(Secret::from_slice(root).unwrap_or_else(|| Secret::new([0; 32]))),
        ChainKey {
            key: Secret::from_slice(chain).unwrap_or_else(|| Secret::new([0; 32])),
            index: 0,
        },
    )
}

/// What the session initiator ("Alice") knows from the peer's bundle.
pub struct AliceParameters<'a> {
    /// Our identity key pair.
    pub our_identity: &'a KeyPair,
    /// Our fresh base (ephemeral) key pair.
    pub our_base_key: &'a KeyPair,
    /// Their identity key (signature over the signed prekey already verified).
    pub their_identity: PublicKey,
    /// Their signed prekey and its id.
    pub their_signed_pre_key: (u32, PublicKey),
    /// Their one-time prekey and its id.
    pub their_one_time_pre_key: Option<(u32, PublicKey)>,
    /// Our registration id (legacy OMEMO: our device id).
    pub our_registration_id: u32,
    /// Their registration id (legacy OMEMO: their device id).
    pub their_registration_id: u32,
}

/// Builds the initiator's session state; its messages are PreKeySignalMessages until answered.
pub fn initialize_alice(p: &AliceParameters<'_>) -> Result<SessionState, Error> {
    let (spk_id, spk) = p.their_signed_pre_key;
    let mut dhs = vec![
        p.our_identity.private.agree(&spk)?,
        p.our_base_key.private.agree(&p.their_identity)?,
        p.our_base_key.private.agree(&spk)?,
    ];
    if let Some((_, opk)) = p.their_one_time_pre_key {
        dhs.push(p.our_base_key.private.agree(&opk)?);
    }
    let (root, chain) = derive(&dhs);
    let sending_ratchet = KeyPair::generate()?;
    let (root, sending_chain) = root.create_chain(&spk, &sending_ratchet)?;
    Ok(SessionState {
        local_identity: p.our_identity.public,
        remote_identity: p.their_identity,
        root_key: root,
        previous_counter: 0,
        sender_ratchet: sending_ratchet,
        sender_chain: sending_chain,
        receiver_chains: VecDeque::from([ReceiverChain {
            ratchet_key: spk,
            chain_key: chain,
        }]),
        skipped: VecDeque::new(),
        pending_prekey: Some(PendingPreKey {
            pre_key_id: p.their_one_time_pre_key.map(|(id, _)| id),
            signed_pre_key_id: spk_id,
            base_key: p.our_base_key.public,
        }),
        local_registration_id: p.our_registration_id,
        remote_registration_id: p.their_registration_id,
        base_key: p.our_base_key.public,
    })
}

/// What the responder ("Bob") uses when a PreKeySignalMessage arrives.
pub struct BobParameters<'a> {
    /// Our identity key pair.
    pub our_identity: &'a KeyPair,
    /// Our signed prekey pair the message names.
    pub our_signed_pre_key: &'a KeyPair,
    /// Our one-time prekey pair the message names.
    pub our_one_time_pre_key: Option<&'a KeyPair>,
    /// Their identity key from the message.
    pub their_identity: PublicKey,
    /// Their base key from the message.
    pub their_base_key: PublicKey,
    /// Our registration id.
    pub our_registration_id: u32,
    /// Their registration id from the message.
    pub their_registration_id: u32,
}

/// Builds the responder's session state.
pub fn initialize_bob(p: &BobParameters<'_>) -> Result<SessionState, Error> {
    let mut dhs = vec![
        p.our_signed_pre_key.private.agree(&p.their_identity)?,
        p.our_identity.private.agree(&p.their_base_key)?,
        p.our_signed_pre_key.private.agree(&p.their_base_key)?,
    ];
    if let Some(opk) = p.our_one_time_pre_key {
        dhs.push(opk.private.agree(&p.their_base_key)?);
    }
    let (root, chain) = derive(&dhs);
    Ok(SessionState {
        local_identity: p.our_identity.public,
        remote_identity: p.their_identity,
        root_key: root,
        previous_counter: 0,
        sender_ratchet: p.our_signed_pre_key.clone(),
        sender_chain: chain,
        receiver_chains: VecDeque::new(),
        skipped: VecDeque::new(),
        pending_prekey: None,
        local_registration_id: p.our_registration_id,
        remote_registration_id: p.their_registration_id,
        base_key: p.their_base_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CiphertextMessage;

    fn pair(with_opk: bool) -> (SessionState, SessionState) {
        pair_with(with_opk, with_opk)
    }

    fn pair_with(alice_uses_opk: bool, bob_uses_opk: bool) -> (SessionState, SessionState) {
        let alice_id = KeyPair::generate().unwrap();
        let bob_id = KeyPair::generate().unwrap();
        let bob_spk = KeyPair::generate().unwrap();
        let bob_opk = KeyPair::generate().unwrap();
        let base = KeyPair::generate().unwrap();
        let alice = initialize_alice(&AliceParameters {
            our_identity: &alice_id,
            our_base_key: &base,
            their_identity: bob_id.public,
            their_signed_pre_key: (1, bob_spk.public),
            their_one_time_pre_key: alice_uses_opk.then_some((5, bob_opk.public)),
            our_registration_id: 11,
            their_registration_id: 22,
        })
        .unwrap();
        let bob = initialize_bob(&BobParameters {
            our_identity: &bob_id,
            our_signed_pre_key: &bob_spk,
            our_one_time_pre_key: bob_uses_opk.then_some(&bob_opk),
            their_identity: alice_id.public,
            their_base_key: base.public,
            our_registration_id: 22,
            their_registration_id: 11,
        })
        .unwrap();
        (alice, bob)
    }

    fn inner(m: CiphertextMessage) -> crate::wire::SignalMessage {
        match m {
            CiphertextMessage::PreKey(p) => p.message,
            CiphertextMessage::Signal(s) => s,
        }
    }

    #[test]
    fn both_variants_agree_and_ratchet() {
        for with_opk in [true, false] {
            let (mut alice, mut bob) = pair(with_opk);
            let m1 = alice.encrypt(b"hello bob").unwrap();
            assert!(m1.is_prekey());
            assert_eq!(bob.decrypt(&inner(m1)).unwrap(), b"hello bob");
            let r1 = bob.encrypt(b"hi alice").unwrap();
            assert!(!r1.is_prekey());
            assert_eq!(alice.decrypt(&inner(r1)).unwrap(), b"hi alice");
            // Acknowledged: Alice now sends plain SignalMessages.
            assert!(!alice.encrypt(b"again").unwrap().is_prekey());
        }
    }

    #[test]
    fn one_time_prekey_matters() {
        let (mut alice, mut bob_without) = pair_with(true, false);
        let m = alice.encrypt(b"x").unwrap();
        assert!(bob_without.decrypt(&inner(m)).is_err());
    }
}
