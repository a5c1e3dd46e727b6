//! shieldcall's XMPP client library: the connection (tokio-xmpp, STARTTLS or direct TLS),
//! presence and disco, carbons, PEP, the OMEMO service on top of the `shieldcall-omemo` engine
//! (messages, device lists, bundles, trust), the call policies and verified-call memory, the
//! online lock that keeps one online process per account device, and the bridge from Jingle
//! contents to media parameters.
//!
//! It never prints, never reads stdin and never installs signal handlers: errors are
//! [`ClientError`] values, and what arrives is handed over as values. The `shieldcall` CLI is one
//! consumer. The call agent ([`agent::CallAgent`]) joins this with the call engine
//! (`shieldcall-jingle`) and the media engine (`shieldcall-media`): commands in, one ordered
//! stream of typed events out (see its docs).
//!
//! ```no_run
//! use shieldcall_client::connection::ConnectOptions;
//! use shieldcall_client::session::{Role, SessionOptions, sign_in};
//! # async fn run() -> Result<(), shieldcall_client::ClientError> {
//! let jid: xmpp_parsers::jid::BareJid = "alice@example.org".parse().map_err(|_| {
//!     shieldcall_client::ClientError::Usage("bad JID".into())
//! })?;
//! let connect = ConnectOptions {
//!     jid: jid.clone().into(),
//!     password: std::env::var("PASSWORD").unwrap_or_default(),
//!     server: None,
//!     insecure_loopback: false,
//!     direct_tls: false,
//! };
//! let role = Role::Guest { command: "example" };
//! let mut s = sign_in(SessionOptions { connect, data_dir: "/tmp/alice".into(), role }).await?;
//! let bob = "bob@example.org".parse().map_err(|_| shieldcall_client::ClientError::Usage("bad JID".into()))?;
//! let (devices, _warnings) = s.omemo.send_message(&bob, "hello").await?;
//! println!("encrypted to bob's devices {devices:?}");
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

/// An owned attribute name for minidom's builder, checked at compile time.
macro_rules! nc {
    ($name:literal) => {
        rxml::xml_ncname!($name).to_owned()
    };
}

pub mod agent;
pub mod connection;
pub mod connectors;
pub mod error;
pub mod lock;
pub mod media_params;
pub mod omemo_service;
pub mod pep;
pub mod policy;
pub mod presence;
pub mod session;

pub use error::ClientError;
