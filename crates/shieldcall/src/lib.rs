//! shieldcall client core: the XMPP connection (tokio-xmpp), PEP, and the OMEMO service on top of
//! the `shieldcall-omemo` engine. The `shieldcall` binary's CLI lives in `cli.rs`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

/// An owned attribute name for minidom's builder, checked at compile time.
macro_rules! nc {
    ($name:literal) => {
        rxml::xml_ncname!($name).to_owned()
    };
}

pub mod cli;
pub mod connection;
pub mod error;
pub mod omemo_service;
pub mod output;
pub mod pep;
pub mod presence;

pub use error::ClientError;
