//! The ICE-UDP transport (XEP-0176) with readable fields that keeps what it does not know.
//!
//! xmpp-parsers' `jingle_ice_udp::Transport` hides its fields and drops unknown children, which
//! would silently drop the draft's encrypted fingerprint and Conversations' `<ice-options/>`.
//! Candidates reuse xmpp-parsers' `Candidate`.

use minidom::Element;
use xmpp_parsers::jingle_dtls_srtp::Fingerprint;
use xmpp_parsers::jingle_ice_udp::Candidate;

use crate::fingerprint::{self, EncryptedFingerprint, FingerprintError};
use crate::ns;
use crate::xml;

/// Most candidates accepted per content, in one transport and accumulated over
/// `transport-info`s. Real clients send fewer than 20 (two components × a few interfaces);
/// the cap keeps a hostile peer from growing our state.
pub const MAX_CANDIDATES_PER_CONTENT: usize = 64;

/// A fingerprint child of a transport, in either form.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportFingerprint {
    /// XEP-0320 `urn:xmpp:jingle:apps:dtls:0`.
    Plain(Fingerprint),
    /// The verification draft's element.
    Encrypted(EncryptedFingerprint),
}

/// `<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'/>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IceUdpTransport {
    /// ICE username fragment.
    pub ufrag: Option<String>,
    /// ICE password.
    pub pwd: Option<String>,
    /// Candidates, in document order.
    pub candidates: Vec<Candidate>,
    /// Every fingerprint child, plain or encrypted, in document order. More than one is
    /// ambiguous and rejected by the verification layer (docs/security-tests.md line 5).
    pub fingerprints: Vec<TransportFingerprint>,
    /// Unknown children (e.g. `<ice-options/>`, `<remote-candidate/>`), kept verbatim.
    pub other: Vec<Element>,
}

/// Why a transport could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Not `<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'/>`.
    #[error("not an ICE-UDP transport")]
    NotIceUdp,
    /// A `<candidate/>` that xmpp-parsers rejects; the message says why.
    #[error("invalid candidate: {0}")]
    InvalidCandidate(String),
    /// More than [`MAX_CANDIDATES_PER_CONTENT`] candidates.
    #[error("more than {MAX_CANDIDATES_PER_CONTENT} candidates")]
    TooManyCandidates,
    /// A fingerprint child that cannot be read.
    #[error("fingerprint: {0}")]
    Fingerprint(#[from] FingerprintError),
}

impl IceUdpTransport {
    /// Parses a transport element.
    pub fn parse(el: &Element) -> Result<Self, TransportError> {
        if !el.is("transport", ns::JINGLE_ICE_UDP) {
            return Err(TransportError::NotIceUdp);
        }
        let mut t = IceUdpTransport {
            ufrag: el.attr("ufrag").map(str::to_owned),
            pwd: el.attr("pwd").map(str::to_owned),
            ..Default::default()
        };
        for child in el.children() {
            if child.is("candidate", ns::JINGLE_ICE_UDP) {
                if t.candidates.len() >= MAX_CANDIDATES_PER_CONTENT {
                    return Err(TransportError::TooManyCandidates);
                }
                let c = Candidate::try_from(child.clone())
                    .map_err(|e| TransportError::InvalidCandidate(e.to_string()))?;
                t.candidates.push(c);
            } else if child.is("fingerprint", ns::JINGLE_DTLS) {
                t.fingerprints
                    .push(TransportFingerprint::Plain(fingerprint::parse_plain(
                        child,
                    )?));
            } else if child.is("fingerprint", ns::OMEMO_DTLS_SRTP_VERIFICATION) {
                t.fingerprints.push(TransportFingerprint::Encrypted(
                    EncryptedFingerprint::parse(child)?,
                ));
            } else {
                t.other.push(child.clone());
            }
        }
        Ok(t)
    }

    /// Serialises the transport: attributes, then fingerprints, candidates and unknown children.
    pub fn to_element(&self) -> Element {
        let mut el = xml::bare("transport", ns::JINGLE_ICE_UDP);
        if let Some(u) = &self.ufrag {
            xml::set_attr(&mut el, "ufrag", u.as_str());
        }
        if let Some(p) = &self.pwd {
            xml::set_attr(&mut el, "pwd", p.as_str());
        }
        for fp in &self.fingerprints {
            el.append_child(match fp {
                TransportFingerprint::Plain(p) => fingerprint::plain_to_element(p),
                TransportFingerprint::Encrypted(e) => e.to_element(),
            });
        }
        for c in &self.candidates {
            el.append_child(Element::from(c.clone()));
        }
        for o in &self.other {
            el.append_child(o.clone());
        }
        el
    }

    /// The same transport without any fingerprint: what `transport-info` carries
    /// (docs/protocol.md §2.4: never a fingerprint there).
    pub fn without_fingerprints(&self) -> Self {
        IceUdpTransport {
            fingerprints: Vec::new(),
            ..self.clone()
        }
    }
}
