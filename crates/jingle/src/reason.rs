//! Errors of the call layer and how they map to the `<reason/>` the peer receives.

use xmpp_parsers::jingle::{Reason, ReasonElement};

use crate::jingle::JingleError;
use crate::transport::TransportError;
use crate::verification::VerificationError;

/// Why the engine ends (or refuses) a call. [`CallError::reason`] is what the peer receives,
/// the way rustls maps an `InvalidMessage` to a TLS alert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The draft's rules failed (security-error or failed-application).
    #[error(transparent)]
    Verification(#[from] VerificationError),
    /// The session-initiate's media differ from the JMI proposal (protocol.md §5.2 step 7).
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
            // (security-tests.md line 5: two <encrypted/>, text inside the draft element, …).
            CallError::InvalidJingle(JingleError::Transport(TransportError::Fingerprint(_))) => {
                Reason::SecurityError
            }
            CallError::InvalidJingle(_) => Reason::FailedApplication,
            CallError::MediaFailed(_) => Reason::ConnectivityError,
            CallError::Timeout => Reason::Timeout,
        }
    }

    /// The `<reason/>` element, with this error's text (Conversations adds `<text/>` only
    /// when non-empty, protocol.md §3.6).
    pub fn to_reason_element(&self) -> ReasonElement {
        reason_element(self.reason(), Some(self.to_string()))
    }
}

/// Builds `<reason><condition/>[<text/>]</reason>`.
pub fn reason_element(reason: Reason, text: Option<String>) -> ReasonElement {
    let mut texts = std::collections::BTreeMap::new();
    if let Some(t) = text.filter(|t| !t.is_empty()) {
        texts.insert(String::new(), t);
    }
    ReasonElement { reason, texts }
}
