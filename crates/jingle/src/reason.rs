//! Errors of the call layer and how they map to the `<reason/>` the peer receives.
//!
//! What a peer (and every server on the way) receives is a condition and a **fixed** text per
//! condition ([`CallError::peer_text`], a `&'static str`): never the error's `Display`, which may
//! name decrypted bytes, OMEMO counters, prekey ids or parser details. A server that injects a
//! withheld chat message's `<encrypted/>` as a call fingerprint must learn nothing from our
//! answer (docs/security-tests.md line 17). The detail stays local, in the `Ended` event.

use xmpp_parsers::jingle::{Reason, ReasonElement};

use crate::jingle::JingleError;
use crate::transport::TransportError;
use crate::verification::{FINGERPRINT_UNUSABLE, VerificationError};

/// Why the engine ends (or refuses) a call. [`CallError::reason`] is what the peer receives,
/// the way rustls maps an `InvalidMessage` to a TLS alert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The draft's rules failed (security-error or failed-application).
    #[error(transparent)]
    Verification(#[from] VerificationError),
    /// The session-initiate's media differ from the JMI proposal (docs/protocol.md §5.2 step 7).
    #[error(
        "Your session proposal (Jingle Message Initiation) included media {proposed:?} but your session-initiate was {initiated:?}"
    )]
    MediaMismatch {
        /// Media of the `<propose/>`.
        proposed: Vec<String>,
        /// Media of the `session-initiate`.
        initiated: Vec<String>,
    },
    /// A content without an RTP description or with unknown media.
    #[error("unsupported application")]
    UnsupportedApplication,
    /// A malformed Jingle element inside an otherwise routable IQ.
    #[error("invalid jingle: {0}")]
    InvalidJingle(#[from] JingleError),
    /// Media (ICE/DTLS) failed.
    #[error("media failed: {0}")]
    MediaFailed(String),
    /// Nobody answered in time.
    #[error("timed out")]
    Timeout,
    /// The engine's own bookkeeping lacks what this step needs (a bug, never peer input): the
    /// call ends instead of hanging.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl CallError {
    /// The Jingle reason condition for this error.
    pub fn reason(&self) -> Reason {
        match self {
            CallError::Verification(v) => v.reason(),
            CallError::MediaMismatch { .. } => Reason::SecurityError,
            CallError::UnsupportedApplication => Reason::UnsupportedApplications,
            CallError::InvalidJingle(JingleError::UnsupportedTransport(_)) => {
                Reason::UnsupportedTransports
            }
            // A fingerprint that cannot be read is a verification failure, not a format quirk
            // (docs/security-tests.md line 5: two <encrypted/>, text inside the draft element, …).
            CallError::InvalidJingle(JingleError::Transport(TransportError::Fingerprint(_))) => {
                Reason::SecurityError
            }
            CallError::InvalidJingle(_) => Reason::FailedApplication,
            CallError::MediaFailed(_) => Reason::ConnectivityError,
            CallError::Timeout => Reason::Timeout,
            CallError::Internal(_) => Reason::GeneralError,
        }
    }

    /// The text the peer receives with [`CallError::reason`]: one fixed sentence per kind of
    /// failure, revealing nothing of what was received, decrypted or stored. (Conversations'
    /// own texts where it has one for the case, docs/protocol.md §3.6.)
    pub fn peer_text(&self) -> &'static str {
        match self {
            CallError::Verification(v) => v.peer_text(),
            CallError::MediaMismatch { .. } => {
                "the session-initiate does not carry the media that were proposed"
            }
            CallError::UnsupportedApplication => "unsupported application",
            CallError::InvalidJingle(JingleError::UnsupportedTransport(_)) => {
                "unsupported transport"
            }
            CallError::InvalidJingle(JingleError::Transport(TransportError::Fingerprint(_))) => {
                FINGERPRINT_UNUSABLE
            }
            CallError::InvalidJingle(_) => "malformed jingle element",
            CallError::MediaFailed(_) => "media could not be established",
            CallError::Timeout => "timed out",
            CallError::Internal(_) => "internal error",
        }
    }

    /// The `<reason/>` element: the condition and the fixed [`CallError::peer_text`]
    /// (Conversations adds `<text/>` only when non-empty, docs/protocol.md §3.6).
    pub fn to_reason_element(&self) -> ReasonElement {
        reason_element(self.reason(), Some(self.peer_text()))
    }
}

/// Builds `<reason><condition/>[<text/>]</reason>`. The text is `'static` on purpose: only
/// fixed sentences may travel to a peer, never anything built from received or decrypted data.
pub fn reason_element(reason: Reason, text: Option<&'static str>) -> ReasonElement {
    let mut texts = std::collections::BTreeMap::new();
    if let Some(t) = text.filter(|t| !t.is_empty()) {
        texts.insert(String::new(), t.to_owned());
    }
    ReasonElement { reason, texts }
}
