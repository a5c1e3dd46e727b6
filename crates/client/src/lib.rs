//! shieldcall's XMPP client library: the connection (tokio-xmpp, STARTTLS or direct TLS),
//! presence and disco, carbons, PEP, the account server's STUN/TURN services (XEP-0215,
//! [`extdisco`]), the OMEMO service on top of the `shieldcall-omemo` engine
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
//! A complete run loop: sign in, call a contact with a tone for ten seconds, print every event
//! (see `examples/answering_bot.rs` for answering):
//!
//! ```no_run
//! use std::time::Duration;
//! use shieldcall_client::agent::{AgentEvent, AudioIn, CallAgent, CallOptions, Mode};
//! use shieldcall_client::connection::ConnectOptions;
//! use shieldcall_client::session::{Role, SessionOptions, sign_in};
//! use shieldcall_jingle::Shield;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let connect = ConnectOptions {
//!     jid: "alice@example.org".parse::<xmpp_parsers::jid::BareJid>()?.into(),
//!     password: std::env::var("PASSWORD")?,
//!     server: None,
//!     insecure_loopback: false,
//!     direct_tls: false,
//! };
//! let role = Role::Exclusive { command: "example", calls: true };
//! let session = sign_in(SessionOptions { connect, data_dir: "/tmp/alice".into(), role }).await?;
//! let options = CallOptions {
//!     input: AudioIn::Tone(440.0),
//!     duration: Some(Duration::from_secs(10)),
//!     ..CallOptions::default()
//! };
//! let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
//! let (_commands, commands_rx) = tokio::sync::mpsc::unbounded_channel();
//! let bob = "bob@example.org".parse()?;
//! let agent = CallAgent::new(session.omemo, Mode::Call(bob), options, events_tx);
//! let show = async {
//!     while let Some(ev) = events.recv().await {
//!         if let AgentEvent::Shield { shield: Shield::Verified, device, .. } = &ev {
//!             println!("verified with bob's device {device:?}");
//!         }
//!     }
//! };
//! let (connected_and_ended_well, ()) = tokio::join!(agent.run(session.incoming, commands_rx), show);
//! println!("call ok: {}", connected_and_ended_well?);
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
pub mod extdisco;
pub mod lock;
pub mod media_params;
pub mod omemo_service;
pub mod pep;
pub mod policy;
pub mod presence;
pub mod session;

pub use error::ClientError;
