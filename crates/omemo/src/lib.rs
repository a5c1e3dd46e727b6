//! Legacy OMEMO (XEP-0384 v0.3, namespace `eu.siacs.conversations.axolotl`), byte-compatible with
//! Conversations, Dino (libomemo-c) and python-oldmemo.
//!
//! The crate is sans-IO: it never touches the network or a clock of its own. Callers hand it
//! bundles and `<encrypted/>` elements and get back elements and plaintexts; every state change
//! goes through a [`Store`] in one atomic [`store::Changes`] batch, committed *before* a plaintext
//! or a ciphertext leaves the engine (so a crash can lose a message but never reuse a key).
//!
//! Layers, bottom up:
//! * [`keys`] — Curve25519 keys in libsignal's 33-byte form, X25519 that rejects
//!   non-contributory results, XEdDSA signatures.
//! * [`wire`] — Signal v3 `SignalMessage` / `PreKeySignalMessage` framing.
//! * [`x3dh`], [`ratchet`], [`session`] — session set-up, the Double Ratchet, and session records
//!   that keep previous states (as libsignal does) for simultaneous initiation.
//! * [`message`] — the OMEMO payload (AES-128-GCM, key‖tag per device).
//! * [`xml`] — bundle, device list and `<encrypted/>` elements.
//! * [`trust`], [`fingerprint`] — trust levels with Conversations' BTBV policy, fingerprint
//!   display and `xmpp:…?omemo-sid-N=…` verification URIs.
//! * [`account`] — the engine tying it together over a [`Store`].

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod account;
pub mod error;
pub mod fingerprint;
pub mod keys;
pub mod message;
pub mod ns;
pub mod ratchet;
pub mod secret;
pub mod session;
pub mod store;
pub mod trust;
pub mod wire;
pub mod x3dh;
pub mod xml;

pub use account::{Account, Decrypted, Recipient};
pub use error::Error;
pub use keys::{IdentityKey, KeyPair, PrivateKey, PublicKey};
pub use store::{MemoryStore, SqliteStore, Store};
pub use trust::TrustLevel;
