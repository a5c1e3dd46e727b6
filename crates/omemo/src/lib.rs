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
//!
//! # Features
//!
//! Both are on by default; with `default-features = false` the crate is the engine, the
//! [`Store`] trait and [`MemoryStore`], for an embedder that brings its own storage.
//!
//! * `sqlite` — `SqliteStore` (with `store::BUSY_TIMEOUT`): the store in one
//!   SQLite file (rusqlite, bundled SQLite), safe for several processes of one account.
//! * `shim` — the `omemo-shim` binary, which drives the engine over JSON lines for the interop
//!   and crash tests (serde, serde_json); it needs `sqlite` too. The library does not use it.
//!
//! # Example
//!
//! Bob publishes his bundle; Alice fetches it, builds a session and encrypts; Bob decrypts.
//! Every XMPP hop (PEP publish, fetch, `<message/>`) is the caller's: here it is just the XML
//! text handed across.
//!
//! ```
//! use shieldcall_omemo::xml::{Bundle, EncryptedElement};
//! use shieldcall_omemo::{Account, MemoryStore, Recipient, TrustLevel};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = 0; // Unix seconds; the crate has no clock of its own.
//! let mut alice = Account::create(MemoryStore::new(), "alice@example.org", None, now)?;
//! let mut bob = Account::create(MemoryStore::new(), "bob@example.org", None, now)?;
//!
//! // Bob publishes `<bundle/>` to the PEP node for his device id; Alice fetches and parses it.
//! let published = bob.bundle()?.to_xml();
//! let bundle = Bundle::from_xml(&published)?;
//! alice.build_session("bob@example.org", bob.device_id(), &bundle)?;
//!
//! // Alice encrypts once, with a key for each recipient device, and sends the element.
//! let to_bob = [Recipient::new("bob@example.org", bob.device_id())];
//! let wire = alice.encrypt(&to_bob, b"hello, bob")?.to_xml();
//!
//! // Bob parses the `<encrypted/>` element from the `<message/>` and decrypts it.
//! let received = EncryptedElement::from_xml(&wire)?;
//! let decrypted = bob.decrypt("alice@example.org", &received)?;
//! assert_eq!(decrypted.plaintext.as_deref(), Some(&b"hello, bob"[..]));
//! assert_eq!(decrypted.sender_device, alice.device_id());
//! // A first contact is trusted blindly (BTBV) until the user verifies the fingerprint.
//! assert_eq!(decrypted.trust, TrustLevel::BlindlyTrusted);
//! // Alice's PreKey message used up one of Bob's one-time prekeys: he republishes.
//! assert!(decrypted.bundle_changed);
//! # Ok(())
//! # }
//! ```

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
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{MemoryStore, Store};
pub use trust::TrustLevel;
