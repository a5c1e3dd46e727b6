//! shieldcall-media: the media engine of a shieldcall call.
//!
//! It moves Opus audio over ICE-UDP and DTLS-SRTP using str0m's direct API (no SDP), driven
//! by Jingle-shaped parameters ([`params`]). It refuses to send or play a single frame until
//! the DTLS peer certificate matches the fingerprint the call engine expects
//! ([`session::MediaSession`]); a mismatch yields [`session::MediaEvent::FingerprintMismatch`].
//!
//! Layers: [`params`] (Jingle ⇄ str0m), [`session`] (sans-IO core), [`gather`] and [`turn`]
//! (server-reflexive and relayed candidates: STUN Binding, TURN over UDP, TCP and TLS, inside
//! the core), [`audio`] (Opus, sources, sinks, jitter buffer), [`stats`], [`ice_servers`] (the
//! STUN/TURN servers the client hands over) and the thin tokio [`driver`].
//!
//! # Example: the sans-IO run loop
//!
//! Two sessions in one process, datagrams passed by hand (the addresses are only labels):
//! exchange the Jingle parameters, then loop — drain [`MediaSession::poll_output`] until its
//! [`SessionOutput::Timeout`], deliver datagrams with `handle_receive`, advance time with
//! `handle_timeout` — until DTLS has proved each side's expected certificate.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use shieldcall_media::audio::FRAME_SAMPLES;
//! use shieldcall_media::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let t0 = Instant::now();
//! let addrs: [std::net::SocketAddr; 2] = ["127.0.0.1:10000".parse()?, "127.0.0.1:20000".parse()?];
//! // The seed of each session's own random values (SSRC, CNAME, …): fixed here, fresh per call
//! // in the driver (`driver::fresh_seed`).
//! let new = |role, addr| MediaSession::new(SessionConfig::new(role, vec![addr], 7), t0);
//! let mut peers = [new(JingleRole::Initiator, addrs[0])?, new(JingleRole::Responder, addrs[1])?];
//!
//! // session-initiate carries 0's parameters to 1, session-accept 1's answer back to 0.
//! // `expected` is the fingerprint the call engine took from the (OMEMO-decrypted) element.
//! for (from, to) in [(0, 1), (1, 0)] {
//!     let description = peers[from].local_description()?;
//!     let transport = peers[from].local_transport()?;
//!     let expected = transport.dtls.clone().ok_or("no fingerprint")?;
//!     peers[to].set_remote(RemoteParams { description, transport, expected }, t0)?;
//! }
//! let silence = [0i16; FRAME_SAMPLES];
//! assert!(!peers[0].send_frame(t0, &silence)?, "no media before the certificate is proven");
//!
//! let (mut now, mut wire, mut events) = (t0, Vec::new(), Vec::new());
//! while !peers.iter().all(MediaSession::is_verified) {
//!     assert!(now < t0 + Duration::from_secs(10), "no connection: {events:?}");
//!     let mut wake = now + Duration::from_secs(1);
//!     for p in &mut peers {
//!         loop {
//!             match p.poll_output() {
//!                 // A real driver: socket(source).send_to(contents, destination).
//!                 SessionOutput::Transmit { source, destination, contents } => {
//!                     wire.push((source, destination, contents))
//!                 }
//!                 SessionOutput::Event(e) => events.push(e), // to the call engine
//!                 SessionOutput::Timeout(t) => {
//!                     wake = wake.min(t);
//!                     break;
//!                 }
//!                 // TCP connections to TURN servers (none here: no `ice_servers`).
//!                 SessionOutput::StreamConnect { .. }
//!                 | SessionOutput::StreamSend { .. }
//!                 | SessionOutput::StreamClose { .. } => {}
//!             }
//!         }
//!     }
//!     if wire.is_empty() {
//!         now = now.max(wake); // a real driver sleeps until `wake` (or a datagram)
//!         peers.iter_mut().for_each(|p| p.handle_timeout(now));
//!     }
//!     for (src, dst, data) in wire.drain(..) {
//!         let to = if dst == addrs[0] { 0 } else { 1 }; // the socket it arrived on
//!         peers[to].handle_receive(now, src, dst, &data);
//!     }
//! }
//! assert!(events.iter().any(|e| matches!(e, MediaEvent::DtlsVerified { .. })));
//! // Now the 20 ms audio clock runs: send_frame our audio, play_frame the peer's.
//! assert!(peers[0].send_frame(now, &silence)?);
//! # Ok(())
//! # }
//! ```
//!
//! # Example: the tokio driver
//!
//! [`driver::MediaEndpoint`] runs that loop over real UDP sockets and a 20 ms audio clock
//! (`no_run`: it binds sockets and needs a peer).
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use shieldcall_media::audio::{sink::NullSink, source::ToneSource};
//! use shieldcall_media::driver::{MediaEndpoint, RunOptions};
//! use shieldcall_media::{JingleRole, RemoteParams};
//! # fn remote_from_session_accept() -> RemoteParams { unimplemented!() }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut ep = MediaEndpoint::bind_usable(JingleRole::Initiator).await?;
//! let _offer = (ep.session().local_description()?, ep.session().local_transport()?);
//! // ... session-initiate goes out, session-accept comes back, its fingerprint is checked ...
//! ep.session().set_remote(remote_from_session_accept(), Instant::now())?;
//! let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let options = RunOptions {
//!     events: Some(events), // IceConnected, DtlsVerified, FingerprintMismatch, ...
//!     media_duration: Some(Duration::from_secs(10)),
//!     ..RunOptions::default()
//! };
//! let (source, sink) = (Box::new(ToneSource::new(440.0, 0.5)), Box::new(NullSink::default()));
//! let run = ep.run(source, sink, options);
//! let report = run.await?; // events arrive on `rx` meanwhile (spawn `run` to watch them live)
//! while let Ok(event) = rx.try_recv() {
//!     println!("{event:?}");
//! }
//! println!("{:?} {:?}", report.failure, report.stats);
//! # Ok(())
//! # }
//! ```

pub mod audio;
pub mod driver;
pub mod gather;
pub mod ice_servers;
pub mod params;
pub mod session;
pub mod stats;
mod transaction;
pub mod turn;

pub use ice_servers::{
    IceServer, IceServerKind, IceTransport, RelayTransport, ResolvedIceServer, Secret, TlsTrust,
};
pub use params::{
    CandidateType, DtlsParams, Fingerprint, IceCandidate, IceUdpTransport, JingleRole, ParamsError,
    PayloadType, RtpDescription, RtpHdrext, RtpSource, Setup,
};
pub use session::{MediaEvent, MediaSession, RemoteParams, SessionConfig, SessionOutput};
pub use stats::{CallStats, IceServerReport, IceServerState, SelectedPair};
pub use turn::StreamId;

/// Does the process's one-time cryptography set-up now (str0m's DTLS crypto provider,
/// measured at about 40 ms on a 2-core machine, against about 1.3 ms for every session after
/// it): call it once at start, off the async runtime (`spawn_blocking`), so that the first
/// call does not pay it between its proposal and its shield. Calling it more often is
/// harmless.
pub fn warm_up() {
    drop(str0m::Rtc::builder().build(std::time::Instant::now()));
}
