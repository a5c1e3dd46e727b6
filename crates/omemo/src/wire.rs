//! Signal v3 message framing (libsignal-protocol-java 2.6, `WhisperTextProtocol.proto`).
//!
//! * `SignalMessage` = version byte ‖ protobuf ‖ 8-byte MAC, the MAC being the first 8 bytes of
//!   HMAC-SHA256(macKey, senderIdentity(33) ‖ receiverIdentity(33) ‖ version ‖ protobuf).
//! * `PreKeySignalMessage` = version byte ‖ protobuf (no outer MAC; the inner message has one).
//!
//! The version byte is `0x33`: message version 3 in the high nibble, current version 3 in the low.

use hmac::{Hmac, KeyInit, Mac};
use prost::Message;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::WireError;
use crate::keys::PublicKey;

/// The only message version spoken: 3 (OMEMO clients cannot parse v4/PQXDH).
pub const MESSAGE_VERSION: u8 = 3;
/// Version byte on the wire.
pub const VERSION_BYTE: u8 = (MESSAGE_VERSION << 4) | MESSAGE_VERSION;
/// Truncated MAC length.
pub const MAC_LEN: usize = 8;

#[derive(Clone, PartialEq, Message)]
struct SignalMessageProto {
    #[prost(bytes = "vec", optional, tag = "1")]
    ratchet_key: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "2")]
    counter: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    previous_counter: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    ciphertext: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct PreKeySignalMessageProto {
    #[prost(uint32, optional, tag = "5")]
    registration_id: Option<u32>,
    #[prost(uint32, optional, tag = "1")]
    pre_key_id: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    signed_pre_key_id: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "2")]
    base_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    identity_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    message: Option<Vec<u8>>,
}

/// A parsed `SignalMessage` whose MAC has not been checked yet (that needs the ratchet's MAC key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalMessage {
    /// Sender's current ratchet public key.
    pub ratchet_key: PublicKey,
    /// Index in the sender's chain.
    pub counter: u32,
    /// Length of the sender's previous chain.
    pub previous_counter: u32,
    /// AES-256-CBC ciphertext.
    pub ciphertext: Vec<u8>,
    /// Everything the MAC covers after the identities: version byte ‖ protobuf.
    serialized_without_mac: Vec<u8>,
    mac: [u8; MAC_LEN],
}

fn check_version(what: &'static str, bytes: &[u8], min_len: usize) -> Result<(), WireError> {
    let Some(&byte) = bytes.first() else {
        return Err(WireError::TooShort { what, len: 0 });
    };
    if bytes.len() < min_len {
        return Err(WireError::TooShort {
            what,
            len: bytes.len(),
        });
    }
    if byte >> 4 != MESSAGE_VERSION {
        return Err(WireError::UnsupportedVersion {
            what,
            version: byte >> 4,
            byte,
        });
    }
    Ok(())
}

fn mac(mac_key: &[u8; 32], sender: &PublicKey, receiver: &PublicKey, data: &[u8]) -> [u8; MAC_LEN] {
    // HMAC accepts keys of any length, so construction cannot fail for 32 bytes.
    let Ok(mut m) = <Hmac<Sha256> as KeyInit>::new_from_slice(mac_key) else {
        return [0u8; MAC_LEN];
    };
    m.update(&sender.serialize());
    m.update(&receiver.serialize());
    m.update(data);
    let full = m.finalize().into_bytes();
    let mut out = [0u8; MAC_LEN];
    for (o, f) in out.iter_mut().zip(full.iter()) {
        *o = *f;
    }
    out
}

impl SignalMessage {
    /// Builds and MACs a message.
    pub fn new(
        mac_key: &[u8; 32],
        ratchet_key: PublicKey,
        counter: u32,
        previous_counter: u32,
        ciphertext: Vec<u8>,
        sender_identity: &PublicKey,
        receiver_identity: &PublicKey,
    ) -> Self {
        let proto = SignalMessageProto {
            ratchet_key: Some(ratchet_key.serialize().to_vec()),
            counter: Some(counter),
            previous_counter: Some(previous_counter),
            ciphertext: Some(ciphertext.clone()),
        };
        let mut serialized_without_mac = Vec::with_capacity(1 + proto.encoded_len());
        serialized_without_mac.push(VERSION_BYTE);
        proto.encode_raw(&mut serialized_without_mac);
        let mac = mac(
            mac_key,
            sender_identity,
            receiver_identity,
            &serialized_without_mac,
        );
        Self {
            ratchet_key,
            counter,
            previous_counter,
            ciphertext,
            serialized_without_mac,
            mac,
        }
    }

    /// Parses the wire form; checks version and fields, not the MAC.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "SignalMessage";
        check_version(WHAT, bytes, 1 + MAC_LEN)?;
        let (body, mac_bytes) = bytes.split_at(bytes.len() - MAC_LEN);
        let proto = SignalMessageProto::decode(body.get(1..).unwrap_or_default()).map_err(|e| {
            WireError::Protobuf {
                what: WHAT,
                reason: e.to_string(),
            }
        })?;
        let missing = |field| WireError::MissingField { what: WHAT, field };
        let ratchet_key = PublicKey::from_bytes(
            "ratchetKey",
            &proto.ratchet_key.ok_or(missing("ratchetKey"))?,
        )?;
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(mac_bytes);
        Ok(Self {
            ratchet_key,
            counter: proto.counter.ok_or(missing("counter"))?,
            previous_counter: proto.previous_counter.unwrap_or(0),
            ciphertext: proto.ciphertext.ok_or(missing("ciphertext"))?,
            serialized_without_mac: body.to_vec(),
            mac,
        })
    }

    /// Constant-time MAC check.
    pub fn verify_mac(
        &self,
        mac_key: &[u8; 32],
        sender: &PublicKey,
        receiver: &PublicKey,
    ) -> Result<(), WireError> {
        let expected = mac(mac_key, sender, receiver, &self.serialized_without_mac);
        if bool::from(expected.ct_eq(&self.mac)) {
            Ok(())
        } else {
            Err(WireError::BadMac)
        }
    }

    /// The wire form.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.serialized_without_mac.len() + MAC_LEN);
        out.extend_from_slice(&self.serialized_without_mac);
        out.extend_from_slice(&self.mac);
        out
    }
}

/// A parsed `PreKeySignalMessage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeySignalMessage {
    /// Sender's registration id (legacy OMEMO: its device id).
    pub registration_id: u32,
    /// One-time prekey used; `None` is refused by the session layer (Conversations requires it).
    pub pre_key_id: Option<u32>,
    /// Signed prekey used.
    pub signed_pre_key_id: u32,
    /// Sender's X3DH base (ephemeral) key.
    pub base_key: PublicKey,
    /// Sender's identity key.
    pub identity_key: PublicKey,
    /// The embedded `SignalMessage`.
    pub message: SignalMessage,
}

impl PreKeySignalMessage {
    /// Parses the wire form.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "PreKeySignalMessage";
        check_version(WHAT, bytes, 1)?;
        let proto =
            PreKeySignalMessageProto::decode(bytes.get(1..).unwrap_or_default()).map_err(|e| {
                WireError::Protobuf {
                    what: WHAT,
                    reason: e.to_string(),
                }
            })?;
        let missing = |field| WireError::MissingField { what: WHAT, field };
        Ok(Self {
            registration_id: proto.registration_id.unwrap_or(0),
            pre_key_id: proto.pre_key_id,
            signed_pre_key_id: proto.signed_pre_key_id.ok_or(missing("signedPreKeyId"))?,
            base_key: PublicKey::from_bytes("baseKey", &proto.base_key.ok_or(missing("baseKey"))?)?,
            identity_key: PublicKey::from_bytes(
                "identityKey",
                &proto.identity_key.ok_or(missing("identityKey"))?,
            )?,
            message: SignalMessage::parse(&proto.message.ok_or(missing("message"))?)?,
        })
    }

    /// The wire form.
    pub fn serialize(&self) -> Vec<u8> {
        let proto = PreKeySignalMessageProto {
            registration_id: Some(self.registration_id),
            pre_key_id: self.pre_key_id,
            signed_pre_key_id: Some(self.signed_pre_key_id),
            base_key: Some(self.base_key.serialize().to_vec()),
            identity_key: Some(self.identity_key.serialize().to_vec()),
            message: Some(self.message.serialize()),
        };
        let mut out = Vec::with_capacity(1 + proto.encoded_len());
        out.push(VERSION_BYTE);
        proto.encode_raw(&mut out);
        out
    }
}

/// Either kind, as carried in a `<key>` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CiphertextMessage {
    /// Normal ratchet message.
    Signal(SignalMessage),
    /// Session-establishing message (`prekey='true'`).
    PreKey(PreKeySignalMessage),
}

impl CiphertextMessage {
    /// Wire bytes.
    pub fn serialize(&self) -> Vec<u8> {
        match self {
            Self::Signal(m) => m.serialize(),
            Self::PreKey(m) => m.serialize(),
        }
    }

    /// True for the `prekey='true'` kind.
    pub fn is_prekey(&self) -> bool {
        matches!(self, Self::PreKey(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    fn sample() -> (SignalMessage, [u8; 32], PublicKey, PublicKey) {
        let rk = KeyPair::generate().unwrap().public;
        let a = KeyPair::generate().unwrap().public;
        let b = KeyPair::generate().unwrap().public;
        let key = [7u8; 32];
        (
            SignalMessage::new(&key, rk, 4, 2, vec![1; 48], &a, &b),
            key,
            a,
            b,
        )
    }

    #[test]
    fn signal_message_round_trip_and_layout() {
        let (m, key, a, b) = sample();
        let bytes = m.serialize();
        assert_eq!(bytes[0], 0x33);
        // docs/protocol.md §6.3: a 32-byte payload gives 48 bytes of ciphertext and a
        // 98-byte message.
        assert_eq!(bytes.len(), 98);
        let p = SignalMessage::parse(&bytes).unwrap();
        assert_eq!(p, m);
        p.verify_mac(&key, &a, &b).unwrap();
        assert_eq!(p.verify_mac(&key, &b, &a), Err(WireError::BadMac));
    }

    #[test]
    fn version_and_length_errors() {
        assert_eq!(
            SignalMessage::parse(&[]),
            Err(WireError::TooShort {
                what: "SignalMessage",
                len: 0
            })
        );
        assert_eq!(
            SignalMessage::parse(&[0x33, 1, 2]),
            Err(WireError::TooShort {
                what: "SignalMessage",
                len: 3
            })
        );
        let (m, ..) = sample();
        let mut bytes = m.serialize();
        bytes[0] = 0x44;
        assert_eq!(
            SignalMessage::parse(&bytes),
            Err(WireError::UnsupportedVersion {
                what: "SignalMessage",
                version: 4,
                byte: 0x44
            })
        );
        bytes[0] = 0x22;
        assert!(matches!(
            SignalMessage::parse(&bytes),
            Err(WireError::UnsupportedVersion { version: 2, .. })
        ));
    }

    #[test]
    fn missing_fields_are_named() {
        let proto = SignalMessageProto {
            ratchet_key: None,
            counter: Some(1),
            previous_counter: None,
            ciphertext: Some(vec![]),
        };
        let mut bytes = vec![0x33];
        proto.encode_raw(&mut bytes);
        bytes.extend_from_slice(&[0; 8]);
        assert_eq!(
            SignalMessage::parse(&bytes),
            Err(WireError::MissingField {
                what: "SignalMessage",
                field: "ratchetKey"
            })
        );
    }

    #[test]
    fn prekey_message_round_trip() {
        let (m, ..) = sample();
        let pk = PreKeySignalMessage {
            registration_id: 1234,
            pre_key_id: Some(77),
            signed_pre_key_id: 1,
            base_key: KeyPair::generate().unwrap().public,
            identity_key: KeyPair::generate().unwrap().public,
            message: m,
        };
        let bytes = pk.serialize();
        assert_eq!(bytes[0], 0x33);
        assert_eq!(PreKeySignalMessage::parse(&bytes).unwrap(), pk);
    }
}
