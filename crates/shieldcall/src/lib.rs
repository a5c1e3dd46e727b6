//! shieldcall client core: the XMPP connection (tokio-xmpp), PEP, the OMEMO service on top of
//! the `shieldcall-omemo` engine, and the call service that joins it with the call engine
//! (`shieldcall-jingle`) and the media engine (`shieldcall-media`). The `shieldcall` binary's CLI
//! lives in `cli.rs`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

/// An owned attribute name for minidom's builder, checked at compile time.
macro_rules! nc {
    ($name:literal) => {
        rxml::xml_ncname!($name).to_owned()
    };
}

pub mod call_service;
pub mod cli;
pub mod connection;
pub mod connectors;
pub mod demo;
pub mod error;
pub mod lock;
pub mod media_params;
pub mod omemo_service;
pub mod output;
pub mod pep;
pub mod policy;
pub mod presence;

pub use error::ClientError;
