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
//!
//! # Example
//!
//! The run loop of a caller: feed inputs with the current time, drain [`Engine::poll_output`]
//! (stanzas to the XMPP connection, events to the UI), and wake at [`Engine::poll_timeout`].
//! Here OMEMO is off, so the call can never get a shield; the client implements
//! [`OmemoCrypto`] over `shieldcall-omemo`.
//!
//! ```
//! use std::time::{Instant, SystemTime};
//! use shieldcall_jingle::*;
//! # use jid::{BareJid, FullJid};
//! # use minidom::Element;
//! struct NoOmemo;
//! impl OmemoCrypto for NoOmemo {
//!     fn own_device_id(&self) -> Option<u32> { None } // no <device/>: plain fingerprints
//!     fn encrypt(&mut self, _: &BareJid, d: u32, _: &[u8]) -> Result<Encrypted, CryptoError> {
//!         Err(CryptoError::NoSession(d))
//!     }
//!     fn decrypt(&mut self, _: &BareJid, _: &Element) -> Result<Decrypted, CryptoError> {
//!         Err(CryptoError::NotForThisDevice)
//!     }
//!     fn trust(&self, _: &BareJid, _: &IdentityKey) -> Trust { Trust::Untrusted }
//! }
//! /// One turn of the loop: stanzas go to the connection, events to the UI.
//! fn pump(engine: &mut Engine, sent: &mut Vec<Element>, events: &mut Vec<Event>) {
//!     while let Some(output) = engine.poll_output() {
//!         match output {
//!             Output::Send(stanza) => sent.push(stanza), // connection.send(stanza)
//!             Output::Event(event) => events.push(event), // ui.show(event)
//!         }
//!     }
//! }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let own: FullJid = "romeo@montague.example/phone".parse()?;
//! let mut engine = Engine::new(Config::new(own));
//! // The engine keeps no OMEMO: each input borrows the client's for that one call.
//! let mut omemo = NoOmemo;
//! let (mut sent, mut events) = (Vec::new(), Vec::new());
//!
//! // The user calls Juliet: a JMI <propose/> to her bare JID (the sid must be unguessable).
//! let sid = "xT3kq8Rf2VbN0yHcLw9aEQ".to_owned();
//! let peer: BareJid = "juliet@capulet.example".parse()?;
//! let media = vec![Media::Audio];
//! engine.handle_user(&mut omemo, Instant::now(), UserAction::Call { peer, sid: sid.clone(), media })?;
//! pump(&mut engine, &mut sent, &mut events);
//! assert!(sent[0].is("message", ns::JABBER_CLIENT));
//! assert!(sent[0].get_child("propose", ns::JINGLE_MESSAGE).is_some());
//!
//! // Every stanza received goes to handle_stanza; NotMine means "not about calls".
//! let ringing: Element = format!(
//!     "<message xmlns='jabber:client' from='juliet@capulet.example/laptop' \
//!       to='romeo@montague.example/phone'>\
//!       <ringing xmlns='urn:xmpp:jingle-message:0' id='{sid}'/></message>"
//! )
//! .parse()?;
//! let handled = engine.handle_stanza(&mut omemo, Instant::now(), SystemTime::now(), &ringing);
//! assert_eq!(handled, Handled::Consumed);
//! pump(&mut engine, &mut sent, &mut events);
//! assert!(matches!(&events[0], Event::PeerRinging { .. }));
//!
//! // Nobody answers: sleep until poll_timeout, then handle_timeout (the call retracts).
//! let deadline = engine.poll_timeout().ok_or("no timer")?;
//! engine.handle_timeout(&mut omemo, deadline);
//! pump(&mut engine, &mut sent, &mut events);
//! assert!(matches!(events.last(), Some(Event::Ended { end: CallEnd::Timeout, .. })));
//! # Ok(())
//! # }
//! ```

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
    ApiError, CallEnd, Config, Engine, Event, Handled, IceCredentials, LocalContent, Media,
    MediaEvent, Output, RING_TIMEOUT, RemoteContent, Role, UserAction,
};
pub use reason::CallError;
pub use verification::{
    ContactPolicy, CryptoError, Decrypted, Downgrade, Encrypted, IdentityKey, Mode, OmemoCrypto,
    Shield, Trust, VerificationError,
};
