//! The OMEMO DTLS-SRTP verification draft (protocol.md §2–§4): the small trait through which the
//! engine reaches OMEMO, the target-device and all-or-none rules, and the [`Shield`].
//!
//! Session set-up is the client's job: before it hands the engine a `<proceed/>` with a
//! `<device/>`, the client makes sure an OMEMO session with that device exists (building it from
//! the PEP bundle when missing, like Conversations ≥ 2.10, protocol.md §3.4). The engine calls
//! [`OmemoCrypto::encrypt`] synchronously; any failure is a [`CryptoError`] and leads to the plain
//! fallback (or to refusing the call under `require_verified`).

use jid::BareJid;
use minidom::Element;
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::jingle_dtls_srtp::{Fingerprint, Setup};

use crate::fingerprint::{self, EncryptedFingerprint, FingerprintError};
use crate::jingle::RtpContent;
use crate::transport::TransportFingerprint;

/// A serialised 33-byte Curve25519 identity public key (`0x05` ‖ 32 bytes, protocol.md §6.2).
pub type IdentityKey = [u8; 33];

/// The result of [`OmemoCrypto::encrypt`].
#[derive(Debug, Clone, PartialEq)]
pub struct Encrypted {
    /// The complete `<encrypted xmlns='eu.siacs.conversations.axolotl'/>` element, one `<key/>`
    /// for the target device only (protocol.md §2.3).
    pub element: Element,
    /// Identity key of the session used: the answer must come from the same one (§4.1).
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
    /// Trusted without verification (blind trust / TOFU).
    Trusted,
    /// Never decided.
    Undecided,
    /// Explicitly distrusted: no shield at all.
    Untrusted,
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
}

/// What the call shows (security-tests.md preamble).
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
/// (protocol.md §3.6, §4.4) through [`VerificationError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerificationError {
    /// A content without any DTLS fingerprint: DTLS-SRTP is required (§3.6).
    #[error("DTLS fingerprint missing")]
    MissingFingerprint,
    /// A transport with more than one fingerprint (plain + encrypted, or two of either).
    #[error("ambiguous fingerprints in one transport")]
    AmbiguousFingerprints,
    /// Some contents encrypted, some plain (§2.3: all or none).
    #[error("some contents encrypted, some plain")]
    MixedContents,
    /// We sent an encrypted offer and got a plain answer (§3.6, text as Conversations).
    #[error("DTLS fingerprint was unexpectedly not verifiable")]
    UnexpectedlyPlain,
    /// We sent a plain offer and got an encrypted answer (§3.6: `failed-application`).
    #[error("encrypted answer to a plain offer")]
    UnexpectedlyEncrypted,
    /// Encrypted by another device than the one this call targets (§3.6: `failed-application`).
    #[error("Device Ids did not match: expected {expected}, got {got}")]
    DeviceMismatch {
        /// The device of this call.
        expected: u32,
        /// The device that encrypted.
        got: u32,
    },
    /// Encrypted by another identity key than the one of this call (§3.6).
    #[error("Session Fingerprints did not match")]
    IdentityMismatch,
    /// OMEMO could not decrypt (not for us, replayed, bad MAC, …).
    #[error("could not decrypt fingerprint: {0}")]
    Decryption(CryptoError),
    /// OMEMO could not encrypt our answer; the callee never downgrades (§10 callee 3).
    #[error("could not encrypt fingerprint: {0}")]
    Encryption(CryptoError),
    /// A malformed fingerprint element or decrypted plaintext.
    #[error("malformed fingerprint: {0}")]
    Malformed(FingerprintError),
    /// `hash` other than `sha-256` (security-tests.md line 6).
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
    /// A later stanza tried to change an established fingerprint (security-tests.md line 4).
    #[error("fingerprint changed during the call")]
    FingerprintChanged,
}

impl VerificationError {
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
    /// Callee reading an offer: whatever it is; plain is fine (§3.6).
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

/// Applies the draft's receive rules to `contents` (protocol.md §2.3, §3.5, §3.6, §4.4) and
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
        let text = core::str::from_utf8(&d.plaintext).map_err(|_| {
            VerificationError::Malformed(FingerprintError::InvalidHex(String::new()))
        })?;
        let value = fingerprint::parse_hex(text, &e.hash).map_err(VerificationError::Malformed)?;
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

/// Encrypts each local fingerprint to (peer, device): one OMEMO message per content
/// (protocol.md §3.2). All contents or none: the first failure fails the whole map, so the
/// caller falls back to *all* plain (never Dino's mixed stanza, §3.6).
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
/// the certificate, and the identity is VERIFIED now (security-tests.md lines 3, 7).
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
                Trust::Trusted | Trust::Undecided => Shield::Encrypted,
                Trust::Untrusted => Shield::None,
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
    // Conversations requires actpass from the initiator (protocol.md §3.1); the responder picks
    // a role, so actpass from it (or anything else from the initiator) is inconsistent.
    match (is_offer, setup) {
        (true, Setup::Actpass) | (false, Setup::Active | Setup::Passive) => Ok(()),
        (_, s) => Err(VerificationError::BadSetup(fingerprint::setup_str(s))),
    }
}
