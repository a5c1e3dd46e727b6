//! Errors of the client layer, one line each for the user.

use thiserror::Error as ThisError;

/// Everything the client can fail with.
#[derive(Debug, ThisError)]
#[non_exhaustive]
pub enum ClientError {
    /// The command line or configuration is wrong.
    #[error("{0}")]
    Usage(String),
    /// The server refused our credentials.
    #[error("login failed: {0}")]
    Auth(String),
    /// The server could not be reached or the stream failed before login.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The connection is gone.
    #[error("disconnected from the server")]
    Disconnected,
    /// The server or a peer answered with an error or malformed data.
    #[error("{0}")]
    Protocol(String),
    /// The OMEMO engine refused something.
    #[error("OMEMO: {0}")]
    Omemo(#[from] shieldcall_omemo::Error),
    /// The account database failed (the OMEMO store).
    #[error("storage: {0}")]
    Store(#[source] shieldcall_omemo::error::StoreError),
    /// The client's own tables in the account database failed.
    #[error("storage: {0}")]
    Database(#[from] rusqlite::Error),
    /// The account database at `path` belongs to another account.
    #[error("{} belongs to {owner}, not {expected}", path.display())]
    AccountMismatch {
        /// The database file.
        path: std::path::PathBuf,
        /// The account it belongs to.
        owner: String,
        /// The account asked for.
        expected: String,
    },
    /// A call did not connect or did not end normally (the events said why).
    #[error("the call did not succeed")]
    CallFailed,
    /// A file, directory or process could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (names the file).
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The sound system failed (listing or opening devices).
    #[error("audio: {0}")]
    Audio(#[source] shieldcall_media::audio::AudioError),
    /// An embedder's own failure (the `shieldcall` CLI's: a local server that would not
    /// start, say), with its cause kept.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
    /// A call with this contact must be verified (require-verified, by option or the
    /// contact's policy), and this one cannot be: OMEMO is off.
    #[error("this call cannot be verified (OMEMO is off), and calls with {0} must be")]
    NotVerifiable(xmpp_parsers::jid::BareJid),
    /// Another process is online with this account and device (see `lock.rs`).
    #[error("{0}")]
    InUse(String),
    /// The server's answer to STUN/TURN service discovery (XEP-0215) is unusable.
    #[error("STUN/TURN service discovery (XEP-0215): {0}")]
    Extdisco(#[from] ExtdiscoError),
}

/// Why an answer to STUN/TURN service discovery ([`crate::extdisco`], XEP-0215) is unusable.
/// No variant carries a value the server sent (a password must never reach a log through an
/// error).
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
#[non_exhaustive]
pub enum ExtdiscoError {
    /// The result has no payload.
    #[error("the server's answer is empty")]
    EmptyAnswer,
    /// The payload is not the element asked for.
    #[error("the server's answer is not <{expected} xmlns='urn:xmpp:extdisco:2'/>")]
    WrongPayload {
        /// The element expected.
        expected: &'static str,
    },
    /// More `<service/>` elements than [`MAX_SERVICES`](crate::extdisco::MAX_SERVICES).
    #[error("the server lists more than {max} services")]
    TooManyServices {
        /// The cap.
        max: usize,
    },
    /// A service lacks a required attribute.
    #[error("service {service}: no '{attribute}'")]
    MissingAttribute {
        /// The service's position among the `<service/>` elements, from 0.
        service: usize,
        /// The attribute.
        attribute: &'static str,
    },
    /// An attribute's value is not what XEP-0215 allows.
    #[error("service {service}: invalid '{attribute}'")]
    InvalidAttribute {
        /// The service's position, from 0.
        service: usize,
        /// The attribute.
        attribute: &'static str,
    },
    /// An attribute is longer than its cap.
    #[error("service {service}: '{attribute}' longer than {max} characters")]
    TooLong {
        /// The service's position, from 0.
        service: usize,
        /// The attribute.
        attribute: &'static str,
        /// The cap.
        max: usize,
    },
}

impl From<shieldcall_omemo::error::StoreError> for ClientError {
    fn from(e: shieldcall_omemo::error::StoreError) -> Self {
        Self::Store(e)
    }
}

impl ClientError {
    /// [`ClientError::Io`] for `what` (which names the file or process).
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// [`ClientError::Other`] around any error (or a message).
    pub fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Other(e.into())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// A failure names what was done and keeps its cause for the embedder to inspect.
    #[test]
    fn errors_keep_their_sources() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, "x").unwrap();
        let jid = "alice@localhost".parse().unwrap();
        let e = crate::omemo_service::open_account(&not_a_dir.join("data"), &jid).unwrap_err();
        assert!(matches!(e, ClientError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("cannot create"), "{e}");
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert!(io.is_some(), "{e:?}");

        let other = ClientError::other(std::io::Error::other("inner"));
        assert_eq!(other.to_string(), "inner");
        assert!(
            other.source().is_none(),
            "transparent: the inner error is the error"
        );
    }
}
