//! DTLS fingerprints: the plain XEP-0320 element and the draft's encrypted one
//! (docs/protocol.md §2.3).
//!
//! Parsing is hand-written over `minidom` instead of derived, because the security checks of
//! docs/security-tests.md line 5 need to *see* what a derive would silently discard: text inside
//! the draft element, a second `<encrypted/>`, unknown children.

use minidom::Element;
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::jingle_dtls_srtp::{Fingerprint, Setup};

use crate::ns;
use crate::xml;

/// Length of a SHA-256 certificate digest, the only hash any client uses (docs/protocol.md §3.1).
pub const SHA256_LEN: usize = 32;

/// Why a fingerprint element or text is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// `hash` attribute missing.
    #[error("fingerprint without hash attribute")]
    MissingHash,
    /// `setup` attribute missing.
    #[error("fingerprint without setup attribute")]
    MissingSetup,
    /// `setup` is not `active`, `passive` or `actpass`.
    #[error("invalid setup {0:?}")]
    InvalidSetup(String),
    /// Hex text is not colon-separated pairs of hex digits. Only its length is kept: the text
    /// may be a decrypted plaintext, which must not travel on in an error.
    #[error("fingerprint text of {len} bytes is not colon-separated hex")]
    InvalidHex {
        /// Length of the text in bytes.
        len: usize,
    },
    /// A `sha-256` digest that is not 32 bytes.
    #[error("sha-256 fingerprint of {0} bytes")]
    WrongLength(usize),
    /// The draft element carries text; the plaintext must only travel encrypted.
    #[error("text inside the encrypted fingerprint")]
    TextInEncrypted,
    /// The draft element has no `<encrypted/>` child.
    #[error("encrypted fingerprint without <encrypted/>")]
    MissingEncrypted,
    /// The draft element has more than one `<encrypted/>` child (Monal calls that an attack,
    /// docs/protocol.md §3.3).
    #[error("encrypted fingerprint with several <encrypted/>")]
    SeveralEncrypted,
    /// Any other child in the draft element.
    #[error("unexpected <{0}/> inside the encrypted fingerprint")]
    UnexpectedChild(String),
    /// `<encrypted/>` without a `<header sid=…/>` holding a device id.
    #[error("<encrypted/> without a valid <header sid/>")]
    MissingHeaderSid,
}

/// `<fingerprint xmlns='http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification' hash setup>`
/// whose only child is an OMEMO 0.3 `<encrypted/>` element (docs/protocol.md §2.3).
#[derive(Debug, Clone, PartialEq)]
pub struct EncryptedFingerprint {
    /// Clear-text `hash` attribute, copied from the plain fingerprint (not authenticated).
    pub hash: Algo,
    /// Clear-text `setup` attribute (not authenticated, docs/protocol.md §11.9).
    pub setup: Setup,
    /// The `<encrypted xmlns='eu.siacs.conversations.axolotl'/>` element.
    pub encrypted: Element,
}

impl EncryptedFingerprint {
    /// The `sid` of the `<header/>`: the sender's device id, read before decrypting so that a
    /// wrong device is reported as such (docs/protocol.md §3.6, docs/security-tests.md line 3).
    pub fn header_sid(&self) -> Result<u32, FingerprintError> {
        self.encrypted
            .get_child("header", ns::LEGACY_OMEMO)
            .and_then(|h| h.attr("sid"))
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or(FingerprintError::MissingHeaderSid)
    }

    /// Reads a draft element, strictly.
    pub fn parse(el: &Element) -> Result<Self, FingerprintError> {
        let (hash, setup) = parse_hash_setup(el)?;
        if !el.text().trim().is_empty() {
            return Err(FingerprintError::TextInEncrypted);
        }
        let mut encrypted = None;
        for child in el.children() {
            if child.is("encrypted", ns::LEGACY_OMEMO) {
                if encrypted.is_some() {
                    return Err(FingerprintError::SeveralEncrypted);
                }
                encrypted = Some(child.clone());
            } else {
                return Err(FingerprintError::UnexpectedChild(child.name().to_owned()));
            }
        }
        let encrypted = encrypted.ok_or(FingerprintError::MissingEncrypted)?;
        Ok(EncryptedFingerprint {
            hash,
            setup,
            encrypted,
        })
    }

    /// Writes the draft element.
    pub fn to_element(&self) -> Element {
        let mut el = xml::with_attrs(
            "fingerprint",
            ns::OMEMO_DTLS_SRTP_VERIFICATION,
            &[
                ("hash", &String::from(self.hash.clone())),
                ("setup", setup_str(&self.setup)),
            ],
        );
        el.append_child(self.encrypted.clone());
        el
    }
}

/// Reads a plain XEP-0320 `<fingerprint/>` (xmpp-parsers' type), with precise errors and
/// case-insensitive hex (docs/security-tests.md line 6).
pub fn parse_plain(el: &Element) -> Result<Fingerprint, FingerprintError> {
    let (hash, setup) = parse_hash_setup(el)?;
    let value = parse_hex(&el.text(), &hash)?;
    Ok(Fingerprint { hash, setup, value })
}

/// Writes a plain XEP-0320 `<fingerprint/>` with upper-case colon-separated hex, the format of
/// both libwebrtc and Dino (docs/protocol.md §3.1).
pub fn plain_to_element(fp: &Fingerprint) -> Element {
    let mut el = xml::with_attrs(
        "fingerprint",
        ns::JINGLE_DTLS,
        &[
            ("hash", &String::from(fp.hash.clone())),
            ("setup", setup_str(&fp.setup)),
        ],
    );
    el.append_text(to_hex(&fp.value));
    el
}

/// Upper-case, colon-separated hex: the exact plaintext that gets encrypted
/// (docs/protocol.md §3.1).
pub fn to_hex(value: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(value.len() * 3);
    for (i, b) in value.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// Parses colon-separated hex, case-insensitively; a `sha-256` value must be 32 bytes.
///
/// The text is taken as it is apart from surrounding whitespace (Conversations uses the
/// decrypted plaintext untrimmed, docs/protocol.md §3.1; trimming only makes us more tolerant).
pub fn parse_hex(text: &str, hash: &Algo) -> Result<Vec<u8>, FingerprintError> {
    let text = text.trim();
    let bad = || FingerprintError::InvalidHex { len: text.len() };
    let mut value = Vec::with_capacity(SHA256_LEN);
    for pair in text.split(':') {
        if pair.len() != 2 || !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        value.push(u8::from_str_radix(pair, 16).map_err(|_| bad())?);
    }
    if *hash == Algo::Sha_256 && value.len() != SHA256_LEN {
        return Err(FingerprintError::WrongLength(value.len()));
    }
    Ok(value)
}

/// The attribute value of a `setup`.
pub fn setup_str(setup: &Setup) -> &'static str {
    match setup {
        Setup::Active => "active",
        Setup::Passive => "passive",
        Setup::Actpass => "actpass",
    }
}

fn parse_hash_setup(el: &Element) -> Result<(Algo, Setup), FingerprintError> {
    let hash = el.attr("hash").ok_or(FingerprintError::MissingHash)?;
    let hash = hash
        .parse::<Algo>()
        .map_err(|_| FingerprintError::MissingHash)?;
    let setup = match el.attr("setup").ok_or(FingerprintError::MissingSetup)? {
        "active" => Setup::Active,
        "passive" => Setup::Passive,
        "actpass" => Setup::Actpass,
        other => return Err(FingerprintError::InvalidSetup(other.to_owned())),
    };
    Ok((hash, setup))
}
