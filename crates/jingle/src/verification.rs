//! The OMEMO DTLS-SRTP verification draft (docs/protocol.md §2–§4): the small trait through which
//! the engine reaches OMEMO, the target-device and all-or-none rules, and the [`Shield`].
//!
//! Session set-up is the client's job: before it hands the engine a `<proceed/>` with a
//! `<device/>`, the client makes sure an OMEMO session with that device exists (building it from
//! the PEP bundle when missing, like Conversations ≥ 2.10, docs/protocol.md §3.4). The engine calls
//! [`OmemoCrypto::encrypt`] synchronously; any failure is a [`CryptoError`] and leads to the plain
//! fallback (or to refusing the call under `require_verified`).

use jid::BareJid;
use minidom::Element;
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::jingle_dtls_srtp::{Fingerprint, Setup};

use crate::fingerprint::{self, EncryptedFingerprint, FingerprintError};
use crate::jingle::RtpContent;
use crate::transport::TransportFingerprint;

/// An OMEMO identity public key as the engine compares and reports it: its 33-byte serialised
/// form (`0x05` ‖ the 32-byte Curve25519 key, docs/protocol.md §6.2). A type of its own, so a
/// key is never confused with other 33 bytes (a fingerprint, a prekey) and prints short.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdentityKey([u8; 33]);

impl IdentityKey {
    /// The key of these serialised bytes (`shieldcall_omemo::PublicKey::serialize`).
    pub const fn from_bytes(bytes: [u8; 33]) -> Self {
        Self(bytes)
    }

    /// The serialised bytes.
    pub const fn as_bytes(&self) -> &[u8; 33] {
        &self.0
    }
}

impl From<[u8; 33]> for IdentityKey {
    fn from(bytes: [u8; 33]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for IdentityKey {
    /// The first bytes in hex: enough to tell keys apart in a log (a public key, not a secret).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey(")?;
        for b in self.0.iter().take(6) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The result of [`OmemoCrypto::encrypt`].
#[derive(Debug, Clone, PartialEq)]
pub struct Encrypted {
    /// The complete `<encrypted xmlns='eu.siacs.conversations.axolotl'/>` element, one `<key/>`
    /// for the target device only (docs/protocol.md §2.3).
    pub element: Element,
    /// Identity key of the session used: the answer must come from the same one
    /// (docs/protocol.md §4.1).
    pub identity_key: IdentityKey,
}

/// The result of [`OmemoCrypto::decrypt`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decrypted {
    /// The plaintext: the fingerprint text, e.g. `3A:9F:…`.
    pub plaintext: Vec<u8>,
    /// The sender device id (the `<header sid/>`).
    pub device: u32,
    /// Identity key of the session that decrypted it.
    pub identity_key: IdentityKey,
}

/// Trust the user (or policy) gives an identity key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Verified by QR code or URI: the only level that yields [`Shield::Verified`].
    Verified,
    /// Trusted without verification (blind trust under BTBV, before any key of the contact was
    /// verified): at most [`Shield::Encrypted`].
    Trusted,
    /// Never decided (under BTBV: a new key of a contact who has a verified key, which is also
    /// what a server injecting its own device looks like): [`Shield::None`].
    Undecided,
    /// Explicitly distrusted: [`Shield::None`], and our fingerprint is never encrypted to it.
    Untrusted,
}

/// What the user decided about calls with one contact, and what they saw before; the engine
/// asks [`OmemoCrypto::contact_policy`] whenever it decides (so a change made meanwhile, also by
/// another process, counts at the next [`crate::Engine::handle_trust_change`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContactPolicy {
    /// Every call with this contact must be [`Shield::Verified`], as with
    /// [`crate::Config::require_verified`] for all contacts.
    pub require_verified: bool,
    /// The contact has a key the user verified, or an earlier call with them was verified: a
    /// call that ends up less than verified is a [`Downgrade`] to report.
    pub expect_verified: bool,
}

/// Why a call with a contact that had been verified is less than verified
/// ([`crate::Event::Downgrade`], reported before any media is played).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downgrade {
    /// The fingerprints travel OMEMO-encrypted, but with a device whose key is not verified
    /// (a new device, or one the user distrusted).
    UnverifiedDevice,
    /// The peer sent plain XEP-0320 fingerprints although we offered OMEMO.
    PlainFingerprints,
    /// The peer's `<proceed/>` named no (usable) OMEMO device: nothing can be encrypted.
    NoDevice,
    /// Our OMEMO could not encrypt to the device the peer named (no session, no bundle, …):
    /// the fingerprints went plain.
    OmemoFailed,
}

impl Downgrade {
    /// Stable name (JSON `kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Downgrade::UnverifiedDevice => "unverified-device",
            Downgrade::PlainFingerprints => "plain-fingerprints",
            Downgrade::NoDevice => "no-device",
            Downgrade::OmemoFailed => "omemo-failed",
        }
    }
}

/// Why OMEMO could not encrypt or decrypt. The engine only needs to know *that* it failed
/// (fallback or `security-error`); the variants help the client's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// No session with that device (and none could be built).
    #[error("no OMEMO session with device {0}")]
    NoSession(u32),
    /// The message has no `<key/>` for our device.
    #[error("not encrypted for this device")]
    NotForThisDevice,
    /// The message is malformed, replayed, or fails authentication.
    #[error("invalid OMEMO message: {0}")]
    InvalidMessage(String),
    /// Anything else (storage, …).
    #[error("OMEMO failure: {0}")]
    Other(String),
}

/// The engine's only way to OMEMO. Implemented by the client over `shieldcall-omemo`; tests use
/// a deterministic double.
pub trait OmemoCrypto {
    /// Own OMEMO device id, put into `<proceed/>` (None = OMEMO off → no `<device/>`).
    fn own_device_id(&self) -> Option<u32>;
    /// Encrypts `plaintext` (the fingerprint text) to exactly one device of `peer` (bare JID).
    fn encrypt(
        &mut self,
        peer: &BareJid,
        device: u32,
        plaintext: &[u8],
    ) -> Result<Encrypted, CryptoError>;
    /// Decrypts an `<encrypted/>` element from `peer`.
    fn decrypt(&mut self, peer: &BareJid, encrypted: &Element) -> Result<Decrypted, CryptoError>;
    /// Current trust of (peer, identity key).
    fn trust(&self, peer: &BareJid, identity_key: &IdentityKey) -> Trust;
    /// The identity key of our session with (peer, device), if there is one: the engine never
    /// encrypts its fingerprint to a device whose key is distrusted.
    fn session_identity(&self, _peer: &BareJid, _device: u32) -> Option<IdentityKey> {
        None
    }
    /// The user's policy for calls with `peer` and whether they were verified before.
    fn contact_policy(&self, _peer: &BareJid) -> ContactPolicy {
        ContactPolicy::default()
    }
}

/// What the call shows (docs/security-tests.md preamble).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shield {
    /// Plain XEP-0320 fallback, not yet proven by DTLS, or an untrusted identity.
    None,
    /// Both fingerprints travelled OMEMO-encrypted with one device, DTLS proved the certificate,
    /// but the identity is not verified.
    Encrypted,
    /// As `Encrypted`, and the identity key is VERIFIED.
    Verified,
}

/// Why a set of fingerprints is unacceptable. Each maps to the reason Conversations sends
/// (docs/protocol.md §3.6, §4.4) through [`VerificationError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerificationError {
    /// A content without any DTLS fingerprint: DTLS-SRTP is required (docs/protocol.md §3.6).
    #[error("DTLS fingerprint missing")]
    MissingFingerprint,
    /// A transport with more than one fingerprint (plain + encrypted, or two of either).
    #[error("ambiguous fingerprints in one transport")]
    AmbiguousFingerprints,
    /// Some contents encrypted, some plain (docs/protocol.md §2.3: all or none).
    #[error("some contents encrypted, some plain")]
    MixedContents,
    /// We sent an encrypted offer and got a plain answer (docs/protocol.md §3.6, text as
    /// Conversations).
    #[error("DTLS fingerprint was unexpectedly not verifiable")]
    UnexpectedlyPlain,
    /// We sent a plain offer and got an encrypted answer (docs/protocol.md §3.6:
    /// `failed-application`).
    #[error("encrypted answer to a plain offer")]
    UnexpectedlyEncrypted,
    /// Encrypted by another device than the one this call targets (docs/protocol.md §3.6:
    /// `failed-application`).
    #[error("Device Ids did not match: expected {expected}, got {got}")]
    DeviceMismatch {
        /// The device of this call.
        expected: u32,
        /// The device that encrypted.
        got: u32,
    },
    /// Encrypted by another identity key than the one of this call (docs/protocol.md §3.6).
    #[error("Session Fingerprints did not match")]
    IdentityMismatch,
    /// OMEMO could not decrypt (not for us, replayed, bad MAC, …).
    #[error("could not decrypt fingerprint: {0}")]
    Decryption(CryptoError),
    /// OMEMO could not encrypt our answer; the callee never downgrades
    /// (docs/protocol.md §10 callee 3).
    #[error("could not encrypt fingerprint: {0}")]
    Encryption(CryptoError),
    /// A malformed fingerprint element.
    #[error("malformed fingerprint: {0}")]
    Malformed(FingerprintError),
    /// The draft fingerprint decrypted, but not to a SHA-256 fingerprint text: whatever it is
    /// (a server may inject a withheld chat message here), it is neither shown nor echoed.
    #[error(
        "the encrypted fingerprint decrypted to {len} bytes that are not a SHA-256 fingerprint"
    )]
    NotAFingerprint {
        /// Length of the plaintext (its content is never kept).
        len: usize,
    },
    /// `hash` other than `sha-256` (docs/security-tests.md line 6).
    #[error("unsupported fingerprint hash {0}")]
    UnsupportedHash(String),
    /// `setup` not `actpass` in an offer, or not `active`/`passive` in an answer.
    #[error("setup {0} is inconsistent with the sender's role")]
    BadSetup(&'static str),
    /// `require_verified` is on and this call cannot be Verified.
    #[error("call cannot be verified")]
    NotVerifiable,
    /// The DTLS peer certificate digest differs from the expected fingerprint.
    #[error("DTLS certificate does not match the fingerprint")]
    DigestMismatch,
    /// Media connected without reporting the peer's certificate digest.
    #[error("DTLS certificate digest not reported")]
    DigestMissing,
    /// A later stanza tried to change an established fingerprint (docs/security-tests.md line 4).
    #[error("fingerprint changed during the call")]
    FingerprintChanged,
}

/// The fixed text for every fingerprint that cannot be used (malformed, undecryptable, or
/// decrypting to something that is not a fingerprint): the peer learns that, nothing more.
pub(crate) const FINGERPRINT_UNUSABLE: &str = "DTLS fingerprint could not be verified";

impl VerificationError {
    /// The fixed text the peer receives (see [`crate::CallError::peer_text`]).
    pub fn peer_text(&self) -> &'static str {
        match self {
            VerificationError::MissingFingerprint => "DTLS fingerprint missing",
            VerificationError::AmbiguousFingerprints => "ambiguous DTLS fingerprints",
            VerificationError::MixedContents => "some contents encrypted, some plain",
            VerificationError::UnexpectedlyPlain => {
                "DTLS fingerprint was unexpectedly not verifiable"
            }
            VerificationError::UnexpectedlyEncrypted => "encrypted answer to a plain offer",
            VerificationError::DeviceMismatch { .. } => "Device Ids did not match",
            VerificationError::IdentityMismatch => "Session Fingerprints did not match",
            VerificationError::Decryption(_)
            | VerificationError::Malformed(_)
            | VerificationError::NotAFingerprint { .. } => FINGERPRINT_UNUSABLE,
            VerificationError::Encryption(_) => "DTLS fingerprint could not be encrypted",
            VerificationError::UnsupportedHash(_) => "unsupported fingerprint hash",
            VerificationError::BadSetup(_) => "setup inconsistent with the sender's role",
            VerificationError::NotVerifiable => "call cannot be verified",
            VerificationError::DigestMismatch => "DTLS certificate does not match the fingerprint",
            VerificationError::DigestMissing => "DTLS certificate was not verified",
            VerificationError::FingerprintChanged => "fingerprint changed during the call",
        }
    }

    /// The Jingle reason the peer receives.
    pub fn reason(&self) -> xmpp_parsers::jingle::Reason {
        use xmpp_parsers::jingle::Reason;
        match self {
            VerificationError::UnexpectedlyEncrypted | VerificationError::DeviceMismatch { .. } => {
                Reason::FailedApplication
            }
            _ => Reason::SecurityError,
        }
    }
}

/// How one direction's fingerprints travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain XEP-0320.
    Plain,
    /// The draft: OMEMO-encrypted.
    Encrypted,
}

/// The remote fingerprints of a content map after the draft rules, plaintext when they were
/// encrypted: what media must see in the DTLS handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteFingerprints {
    /// Plain or encrypted.
    pub mode: Mode,
    /// Per content (same order), the plain fingerprint to expect.
    pub fingerprints: Vec<Fingerprint>,
    /// For encrypted: (device, identity key) shared by all contents.
    pub sender: Option<(u32, IdentityKey)>,
}

/// Who must have encrypted the remote fingerprints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// Callee reading an offer: whatever it is; plain is fine (docs/protocol.md §3.6).
    Offer,
    /// Caller reading the answer to a plain offer.
    PlainAnswer,
    /// Caller reading the answer to an encrypted offer made to `device` with `identity`.
    EncryptedAnswer {
        /// Target device from `<proceed/>`.
        device: u32,
        /// Identity key the offer was encrypted with.
        identity: IdentityKey,
    },
}

/// Applies the draft's receive rules to `contents` (docs/protocol.md §2.3, §3.5, §3.6, §4.4) and
/// decrypts. Returns the fingerprints media must expect.
pub fn read_remote(
    crypto: &mut dyn OmemoCrypto,
    peer: &BareJid,
    contents: &[RtpContent],
    expect: Expectation,
) -> Result<RemoteFingerprints, VerificationError> {
    let is_offer = matches!(expect, Expectation::Offer);
    read_remote_inner(crypto, peer, contents, expect, Some(is_offer))
}

/// As [`read_remote`], for mid-call contents (`content-add`) where either side may send and
/// `setup` follows the existing association: only the hash is checked, not `setup`.
pub fn read_remote_any_setup(
    crypto: &mut dyn OmemoCrypto,
    peer: &BareJid,
    contents: &[RtpContent],
    expect: Expectation,
) -> Result<RemoteFingerprints, VerificationError> {
    read_remote_inner(crypto, peer, contents, expect, None)
}

fn read_remote_inner(
    crypto: &mut dyn OmemoCrypto,
    peer: &BareJid,
    contents: &[RtpContent],
    expect: Expectation,
    expected_setup_is_offer: Option<bool>,
) -> Result<RemoteFingerprints, VerificationError> {
    // Classify first: every content exactly one fingerprint, all of one kind.
    let mut plain = Vec::new();
    let mut encrypted = Vec::new();
    for content in contents {
        let fps = content
            .transport
            .as_ref()
            .map(|t| t.fingerprints.as_slice())
            .unwrap_or_default();
        match fps {
            [] => return Err(VerificationError::MissingFingerprint),
            [TransportFingerprint::Plain(p)] => plain.push(p),
            [TransportFingerprint::Encrypted(e)] => encrypted.push(e),
            _ => return Err(VerificationError::AmbiguousFingerprints),
        }
    }
    if contents.is_empty() {
        return Err(VerificationError::MissingFingerprint);
    }
    if !plain.is_empty() && !encrypted.is_empty() {
        return Err(VerificationError::MixedContents);
    }
    if !plain.is_empty() {
        if let Expectation::EncryptedAnswer { .. } = expect {
            return Err(VerificationError::UnexpectedlyPlain);
        }
        for p in &plain {
            check_attrs(&p.hash, &p.setup, expected_setup_is_offer)?;
        }
        return Ok(RemoteFingerprints {
            mode: Mode::Plain,
            fingerprints: plain.into_iter().cloned().collect(),
            sender: None,
        });
    }
    if expect == Expectation::PlainAnswer {
        return Err(VerificationError::UnexpectedlyEncrypted);
    }
    let mut sender: Option<(u32, IdentityKey)> = None;
    let mut fingerprints = Vec::with_capacity(encrypted.len());
    for e in encrypted {
        check_attrs(&e.hash, &e.setup, expected_setup_is_offer)?;
        let header_sid = e.header_sid().map_err(VerificationError::Malformed)?;
        // The device is checked before decrypting: a different device is Conversations'
        // "Device Ids did not match" (failed-application), whatever the ciphertext.
        let wanted_device = match (expect, sender) {
            (Expectation::EncryptedAnswer { device, .. }, _) => Some(device),
            (_, Some((device, _))) => Some(device),
            _ => None,
        };
        if let Some(expected) = wanted_device
            && expected != header_sid
        {
            return Err(VerificationError::DeviceMismatch {
                expected,
                got: header_sid,
            });
        }
        let d = crypto
            .decrypt(peer, &e.encrypted)
            .map_err(VerificationError::Decryption)?;
        if d.device != header_sid {
            return Err(VerificationError::DeviceMismatch {
                expected: header_sid,
                got: d.device,
            });
        }
        let wanted_identity = match (expect, sender) {
            (Expectation::EncryptedAnswer { identity, .. }, _) => Some(identity),
            (_, Some((_, identity))) => Some(identity),
            _ => None,
        };
        if let Some(identity) = wanted_identity
            && identity != d.identity_key
        {
            return Err(VerificationError::IdentityMismatch);
        }
        sender = Some((d.device, d.identity_key));
        let value = decrypted_fingerprint(d.plaintext, &e.hash)?;
        fingerprints.push(Fingerprint {
            hash: e.hash.clone(),
            setup: e.setup.clone(),
            value,
        });
    }
    Ok(RemoteFingerprints {
        mode: Mode::Encrypted,
        fingerprints,
        sender,
    })
}

/// The fingerprint a decrypted draft element carries. Anything else is refused without keeping
/// or quoting it: the plaintext is wiped here, whatever it was (docs/security-tests.md line 17).
fn decrypted_fingerprint(
    mut plaintext: Vec<u8>,
    hash: &Algo,
) -> Result<Vec<u8>, VerificationError> {
    let len = plaintext.len();
    let value = core::str::from_utf8(&plaintext)
        .ok()
        .and_then(|text| fingerprint::parse_hex(text, hash).ok())
        .filter(|v| v.len() == fingerprint::SHA256_LEN);
    zeroize::Zeroize::zeroize(&mut plaintext);
    value.ok_or(VerificationError::NotAFingerprint { len })
}

/// Encrypts each local fingerprint to (peer, device): one OMEMO message per content
/// (docs/protocol.md §3.2). All contents or none: the first failure fails the whole map, so the
/// caller falls back to *all* plain (never Dino's mixed stanza, docs/protocol.md §3.6).
pub fn encrypt_local(
    crypto: &mut dyn OmemoCrypto,
    peer: &BareJid,
    device: u32,
    local: &[Fingerprint],
) -> Result<(Vec<EncryptedFingerprint>, IdentityKey), CryptoError> {
    let mut out = Vec::with_capacity(local.len());
    let mut identity: Option<IdentityKey> = None;
    for fp in local {
        let text = fingerprint::to_hex(&fp.value);
        let enc = crypto.encrypt(peer, device, text.as_bytes())?;
        match identity {
            Some(id) if id != enc.identity_key => {
                return Err(CryptoError::Other(
                    "identity changed between contents".into(),
                ));
            }
            _ => identity = Some(enc.identity_key),
        }
        out.push(EncryptedFingerprint {
            hash: fp.hash.clone(),
            setup: fp.setup.clone(),
            encrypted: enc.element,
        });
    }
    let identity = identity.ok_or(CryptoError::Other("no content to encrypt".into()))?;
    Ok((out, identity))
}

/// The shield for a call whose both directions are known.
///
/// `Verified` needs: offer and answer encrypted, one (device, identity) for both, DTLS proved
/// the certificate, and the identity is VERIFIED now (docs/security-tests.md lines 3, 7).
/// `Encrypted` needs the same with a key the user trusts (blindly, under BTBV); an undecided or
/// distrusted key gives `None`: a lock must never be shown for a key nobody trusted.
pub fn shield_for(
    crypto: &dyn OmemoCrypto,
    peer: &BareJid,
    offer: Option<Mode>,
    answer: Option<Mode>,
    identity: Option<&IdentityKey>,
    dtls_proven: bool,
) -> Shield {
    match (offer, answer, identity, dtls_proven) {
        (Some(Mode::Encrypted), Some(Mode::Encrypted), Some(id), true) => {
            match crypto.trust(peer, id) {
                Trust::Verified => Shield::Verified,
                Trust::Trusted => Shield::Encrypted,
                Trust::Undecided | Trust::Untrusted => Shield::None,
            }
        }
        _ => Shield::None,
    }
}

fn check_attrs(
    hash: &Algo,
    setup: &Setup,
    is_offer: Option<bool>,
) -> Result<(), VerificationError> {
    if *hash != Algo::Sha_256 {
        return Err(VerificationError::UnsupportedHash(String::from(
            hash.clone(),
        )));
    }
    let Some(is_offer) = is_offer else {
        return Ok(());
    };
    // Conversations requires actpass from the initiator (docs/protocol.md §3.1); the responder
    // picks a role, so actpass from it (or anything else from the initiator) is inconsistent.
    match (is_offer, setup) {
        (true, Setup::Actpass) | (false, Setup::Active | Setup::Passive) => Ok(()),
        (_, s) => Err(VerificationError::BadSetup(fingerprint::setup_str(s))),
    }
}
