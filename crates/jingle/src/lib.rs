//! shieldcall-jingle: sans-IO signalling for 1:1 XMPP audio calls whose DTLS-SRTP fingerprints
//! are verified with OMEMO, wire-compatible with Conversations, Dino and Monal.
//!
//! * [`jmi`]: Jingle Message Initiation (XEP-0353) elements, `<device/>` in `<proceed/>`.
//! * [`jingle`], [`transport`], [`fingerprint`]: the Jingle envelope, ICE-UDP transport and the
//!   plain / encrypted DTLS fingerprints.
//! * [`verification`]: the [`OmemoCrypto`] trait, the draft's rules, the [`Shield`].
//! * [`call`]: the [`Engine`] — inputs `handle_*`, outputs `poll_output`/`poll_timeout`.
//! * [`reason`]: errors and the `<reason/>` each one sends.
//!
//! The engine never does I/O, never reads a clock, and reaches OMEMO only through
//! [`OmemoCrypto`] (docs: `crates/jingle/README.md`, protocol notes: `docs/protocol.md`).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod call;
pub mod fingerprint;
pub mod jingle;
pub mod jmi;
pub mod ns;
pub mod reason;
pub mod transport;
pub mod verification;
mod xml;

pub use call::{
    ApiError, CallEnd, Config, Engine, Event, Handled, LocalContent, Media, MediaEvent, Output,
    RING_TIMEOUT, RemoteContent, Role, UserAction,
};
pub use reason::CallError;
pub use verification::{
    ContactPolicy, CryptoError, Decrypted, Downgrade, Encrypted, IdentityKey, Mode, OmemoCrypto,
    Shield, Trust, VerificationError,
};
