//! Errors, one enum per layer, each naming the field and the rule that failed.
//!
//! Peer input never panics: every malformed byte ends up in one of these.

use thiserror::Error as ThisError;

/// A key or signature that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
#[non_exhaustive]
pub enum KeyError {
    /// The serialized key has the wrong length.
    #[error("{field}: expected {expected} bytes, got {got}")]
    WrongLength {
        /// Which key.
        field: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A 33-byte key whose first byte is not the Curve25519 type byte 0x05.
    #[error("{field}: key type byte must be 0x05, got 0x{got:02x}")]
    WrongType {
        /// Which key.
        field: &'static str,
        /// The byte found.
        got: u8,
    },
    /// X25519 gave the all-zero result: the peer's key has low order (non-contributory).
    #[error("non-contributory X25519 result: the peer's public key has low order")]
    NonContributory,
    /// An XEdDSA signature did not verify.
    #[error("signature of {what} does not verify")]
    BadSignature {
        /// What was signed.
        what: &'static str,
    },
}

/// Signal v3 message framing problems.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than version byte (+ MAC).
    #[error("{what}: {len} bytes is too short")]
    TooShort {
        /// Which message type.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// Version byte other than 3 (libsignal's v3; v4/PQXDH is not understood by the OMEMO clients).
    #[error(
        "{what}: unsupported message version {version} (version byte 0x{byte:02x}); only 3 is spoken"
    )]
    UnsupportedVersion {
        /// Which message type.
        what: &'static str,
        /// High nibble.
        version: u8,
        /// The whole byte.
        byte: u8,
    },
    /// The protobuf did not decode.
    #[error("{what}: protobuf does not decode: {reason}")]
    Protobuf {
        /// Which message type.
        what: &'static str,
        /// prost's reason.
        reason: String,
    },
    /// A required protobuf field is absent.
    #[error("{what}: required field {field} is missing")]
    MissingField {
        /// Which message type.
        what: &'static str,
        /// The field.
        field: &'static str,
    },
    /// The 8-byte truncated HMAC does not match.
    #[error("SignalMessage MAC does not verify")]
    BadMac,
    /// A key inside the message is malformed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Problems in an XML element.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
#[non_exhaustive]
pub enum XmlError {
    /// The document is not well-formed XML.
    #[error("not well-formed XML: {0}")]
    NotWellFormed(String),
    /// Another element than expected.
    #[error("expected <{expected} xmlns='{ns}'>, got <{got} xmlns='{got_ns}'>")]
    WrongElement {
        /// Expected local name.
        expected: &'static str,
        /// Expected namespace.
        ns: &'static str,
        /// Found local name.
        got: String,
        /// Found namespace.
        got_ns: String,
    },
    /// A required attribute is absent.
    #[error("<{element}> lacks attribute '{attribute}'")]
    MissingAttribute {
        /// Element.
        element: &'static str,
        /// Attribute.
        attribute: &'static str,
    },
    /// An attribute value breaks its rule.
    #[error("<{element} {attribute}='{value}'>: {rule}")]
    BadAttribute {
        /// Element.
        element: &'static str,
        /// Attribute.
        attribute: &'static str,
        /// The value (truncated to 64 chars).
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A required child is absent.
    #[error("<{element}> lacks child <{child}>")]
    MissingChild {
        /// Parent.
        element: &'static str,
        /// Child.
        child: &'static str,
    },
    /// A child that may occur once occurs more often.
    #[error("<{element}> has more than one <{child}>")]
    DuplicateChild {
        /// Parent.
        element: &'static str,
        /// Child.
        child: &'static str,
    },
    /// Text content is not standard base64.
    #[error("<{element}> text is not valid base64")]
    Base64 {
        /// Element.
        element: &'static str,
    },
    /// Decoded content breaks a rule (length, count).
    #[error("<{element}>: {rule}")]
    BadContent {
        /// Element.
        element: &'static str,
        /// The rule.
        rule: String,
    },
    /// A key inside the element is malformed.
    #[error("<{element}>: {source}")]
    Key {
        /// Element.
        element: &'static str,
        /// What is wrong with the key.
        source: KeyError,
    },
}

/// Storage failures.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("database: {0}")]
    Database(String),
    /// Stored bytes do not decode (corruption or a newer format).
    #[error("stored {what} does not decode: {reason}")]
    Corrupt {
        /// Record kind.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// No identity has been created in this store yet.
    #[error("no OMEMO identity in this store: create one first")]
    NoIdentity,
}

/// Everything the OMEMO engine can refuse.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
#[non_exhaustive]
pub enum Error {
    /// A key or signature.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Signal framing.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// XML.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operating system's random generator failed.
    #[error("operating system random generator failed")]
    Rng,
    /// No session with this device, and the message cannot start one.
    #[error("no session with {jid} device {device}")]
    NoSession {
        /// Peer bare JID.
        jid: String,
        /// Peer device.
        device: u32,
    },
    /// The message counter was already used (replay or duplicate delivery).
    #[error("duplicate message: counter {counter} of this chain was already received")]
    DuplicateMessage {
        /// The counter.
        counter: u32,
    },
    /// The message is further ahead in its chain than [`crate::ratchet::MAX_MESSAGE_GAP`].
    #[error("message counter {counter} is {gap} ahead of the chain; at most {max} are allowed")]
    GapTooLarge {
        /// Counter in the message.
        counter: u32,
        /// Distance from the chain's next counter.
        gap: u32,
        /// The cap.
        max: u32,
    },
    /// No session state could decrypt the message (bad MAC in every state, unknown ratchet).
    #[error("no session state decrypts this message ({0})")]
    NoValidState(Box<Error>),
    /// The AES-CBC layer of a Signal message failed (bad padding).
    #[error("Signal message ciphertext does not decrypt (bad padding)")]
    BadCiphertext,
    /// A PreKeySignalMessage without the preKeyId field (Conversations rejects those too).
    #[error("PreKeySignalMessage without preKeyId is refused")]
    MissingPreKeyId,
    /// A PreKeySignalMessage names a one-time prekey we do not have (used already or never ours).
    #[error("unknown one-time prekey id {0}")]
    UnknownPreKey(u32),
    /// A PreKeySignalMessage names a signed prekey we do not have.
    #[error("unknown signed prekey id {0}")]
    UnknownSignedPreKey(u32),
    /// A PreKeySignalMessage whose identity key differs from the one of the existing session.
    #[error("identity key of {jid} device {device} changed: refusing the new session")]
    IdentityMismatch {
        /// Peer bare JID.
        jid: String,
        /// Peer device.
        device: u32,
    },
    /// A bundle without one-time prekeys (Conversations requires a preKeyId, so we always use one).
    #[error("bundle has no one-time prekeys")]
    BundleWithoutPreKeys,
    /// The `<encrypted/>` element carries no `<key>` for our device.
    #[error("message is not encrypted for this device ({own}); keys for: {rids:?}")]
    NotForThisDevice {
        /// Our device id.
        own: u32,
        /// The devices it is for.
        rids: Vec<u32>,
    },
    /// The transported key material is shorter than the 16-byte key (32 with the tag).
    #[error("transported key is {0} bytes; at least 32 (key and tag) are needed for a payload")]
    KeyMaterialTooShort(usize),
    /// `<iv>` length other than 12 or 16 bytes.
    #[error("IV of {0} bytes; 12 or 16 are accepted")]
    BadIvLength(usize),
    /// The AES-GCM payload does not authenticate.
    #[error("payload does not authenticate (AES-GCM tag mismatch)")]
    PayloadAuthentication,
    /// Nothing to encrypt for: no recipient had a session.
    #[error("no recipients")]
    NoRecipients,
    /// A verification URI is malformed.
    #[error("verification URI: {0}")]
    Uri(String),
    /// More `<key>`s for our device in one `<encrypted/>` than are tried
    /// ([`crate::account::DecryptLimits`]); nothing was tried or stored.
    #[error("{keys} keys for this device in one message; at most {max} are tried")]
    TooManyKeysForDevice {
        /// Keys for our device found.
        keys: usize,
        /// The cap.
        max: usize,
    },
    /// Every session state that may be tried for one key failed, and older ones exist that were
    /// not tried ([`crate::account::MAX_STATES_TRIED_PER_KEY`]).
    #[error(
        "none of the {tried} newest session states decrypts this message; older ones are not tried"
    )]
    SessionStatesExhausted {
        /// States tried.
        tried: usize,
    },
    /// Trying the message would walk more chain steps than one stanza may cost
    /// ([`crate::account::MAX_CHAIN_STEPS_PER_STANZA`]); it was refused before the walk.
    #[error("decrypting this message needs more than the {max} chain steps one message may cost")]
    ChainStepBudgetExhausted {
        /// The budget of one stanza.
        max: u32,
    },
}
