//! shieldcall-media: the media engine of a shieldcall call.
//!
//! It moves Opus audio over ICE-UDP and DTLS-SRTP using str0m's direct API (no SDP), driven
//! by Jingle-shaped parameters ([`params`]). It refuses to send or play a single frame until
//! the DTLS peer certificate matches the fingerprint the call engine expects
//! ([`session::MediaSession`]); a mismatch yields [`session::MediaEvent::FingerprintMismatch`].
//!
//! Layers: [`params`] (Jingle ⇄ str0m), [`session`] (sans-IO core), [`audio`] (Opus, sources,
//! sinks, jitter buffer), [`stats`], and the thin tokio [`driver`].

pub mod audio;
pub mod driver;
pub mod params;
pub mod session;
pub mod stats;

pub use params::{
    CandidateType, DtlsParams, Fingerprint, IceCandidate, IceUdpTransport, JingleRole, ParamsError,
    PayloadType, RtpDescription, RtpHdrext, RtpSource, Setup,
};
pub use session::{MediaEvent, MediaSession, RemoteParams, SessionConfig, SessionOutput};
pub use stats::CallStats;
