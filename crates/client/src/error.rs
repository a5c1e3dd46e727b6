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
    /// Local storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A call did not connect or did not end normally (the events said why).
    #[error("the call did not succeed")]
    CallFailed,
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// A call with this contact must be verified (require-verified, by option or the
    /// contact's policy), and this one cannot be: OMEMO is off.
    #[error("this call cannot be verified (OMEMO is off), and calls with {0} must be")]
    NotVerifiable(xmpp_parsers::jid::BareJid),
    /// Another process is online with this account and device (see `lock.rs`).
    #[error("{0}")]
    InUse(String),
}

impl From<shieldcall_omemo::error::StoreError> for ClientError {
    fn from(e: shieldcall_omemo::error::StoreError) -> Self {
        Self::Storage(e.to_string())
    }
}
