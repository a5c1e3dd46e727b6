//! The sans-IO core of a call's media: str0m's `Rtc` (direct API, RTP mode) plus Opus and a
//! jitter buffer, behind a gate that opens only when the DTLS peer certificate matches the
//! fingerprint the call engine expects.
//!
//! The caller feeds datagrams and timeouts with the current time, drains [`MediaSession::poll_output`]
//! until it yields a timeout, and calls [`MediaSession::send_frame`] / [`MediaSession::play_frame`]
//! once per 20 ms. No sockets, threads or clocks here.
//!
//! With STUN/TURN servers ([`SessionConfig::ice_servers`]) the session also gathers
//! server-reflexive and relayed candidates ([`crate::gather`]): it asks the driver for datagrams
//! from its host sockets and for TCP connections to TURN servers
//! ([`SessionOutput::StreamConnect`]), reports each new local candidate
//! ([`MediaEvent::LocalCandidate`]) for Jingle `transport-info`, and carries str0m's datagrams
//! from a relayed candidate through the TURN allocation.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionMap, ExtensionValues, RtpWrite, SeqNo, Ssrc};
use str0m::{Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcError};
use tracing::{debug, warn};

use crate::audio::jitter::{JitterBuffer, Playout};
use crate::audio::opus::{OpusDecoder, OpusEncoder};
use crate::audio::{AudioError, FRAME_SAMPLES, Frame};
use crate::gather::{GatherEvent, GatherRecv, Gatherer};
use crate::ice_servers::{RelayTransport, ResolvedIceServer, TlsTrust};
use crate::params::CandidateType;
use crate::params::{
    DtlsParams, Fingerprint, IceCandidate, IceUdpTransport, JingleRole, OpusSettings, ParamsError,
    RtpDescription, Setup, dtls_active, local_setup,
};
use crate::stats::CallStats;
use crate::stats::{RelayPath, SelectedPair};
use crate::transaction::Clock;
use crate::turn::{LinkOutput, StreamId};

/// How long a connected session may hear nothing from the peer before it fails with
/// [`FailReason::IceDisconnected`]. Long enough for a short outage (a Wi-Fi hiccup, a router
/// dropping everything for a few seconds), short enough that a dead call ends.
pub const ICE_DISCONNECT_GRACE: Duration = Duration::from_secs(10);

/// Silence from the peer after which connectivity counts as lost
/// ([`MediaEvent::ConnectivityLost`]). Audio arrives every 20 ms, but with media held only ICE
/// consent checks do, at most 3 s apart (str0m's `max_rto`); str0m itself reports
/// `Disconnected` only after some 15 s of silence, too late for the grace above.
pub const CONNECTIVITY_SILENCE: Duration = Duration::from_secs(5);

/// Ta of RFC 8445 §14.2 until a candidate pair works and DTLS went over it: one connectivity
/// check every 5 ms, the smallest value the RFC allows (str0m's own pacing is 50 ms). A call
/// between NATs has a dozen pairs or more (host, server-reflexive and relayed candidates on both
/// sides) and the one that works is usually among the last by priority: at 50 ms its check came
/// 150–200 ms late in the lab (`scripts/bench-nat`, docs/nat.md).
pub const ICE_CHECK_PACING: Duration = Duration::from_millis(5);

/// The first retransmission of a connectivity check (doubling from there, up to 3 s). Across
/// NATs the first check in each direction is usually dropped by the other side's NAT or TURN
/// server, before the other side's own check or permission opened the way; the retry is what
/// gets through. 50 ms is about libwebrtc's interval for pairs not yet working (str0m's
/// default: 250 ms). A pair then times out after about 15 s of silence instead of 21.5 s.
pub const ICE_CHECK_RTO: Duration = Duration::from_millis(50);

/// Most remote SSRCs we latch onto when the peer does not announce its `<source/>` (Dino).
pub const MAX_REMOTE_SSRCS: usize = 4;

/// Most remote candidates held (initial plus trickled).
pub const MAX_TOTAL_REMOTE_CANDIDATES: usize = 64;

/// How often str0m reports statistics.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// RTCP sender/receiver report interval, short enough to give an RTT within a few seconds.
pub const RTCP_INTERVAL: Duration = Duration::from_secs(1);

/// The internal mid of the one audio content (not sent on the wire: we map no mid extension).
const AUDIO_MID: &str = "audio";

/// What we need to know before a session can be created.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our Jingle role: initiator offers `actpass` and controls ICE.
    pub role: JingleRole,
    /// Local socket addresses to announce as host candidates (the driver's bound sockets).
    pub local_addrs: Vec<SocketAddr>,
    /// Where the session's own random values come from (SSRC, CNAME, first sequence number
    /// and RTP timestamp, candidate ids): the driver injects a fresh one per call, a test a
    /// fixed one. (The DTLS certificate and the ICE credentials are str0m's, from the OS.)
    pub seed: u64,
    /// STUN and TURN servers to gather server-reflexive and relayed candidates with, already
    /// resolved by the driver (empty: host candidates only).
    pub ice_servers: Vec<ResolvedIceServer>,
    /// Announce and use relayed candidates only: no host candidates, no STUN (the peer learns
    /// none of our addresses, only the TURN server's).
    pub relay_only: bool,
    /// Trust anchors for `turns:` servers (the driver loads the system roots or a CA file).
    pub tls_trust: Option<TlsTrust>,
}

impl SessionConfig {
    /// Host candidates only, no STUN/TURN servers.
    pub fn new(role: JingleRole, local_addrs: Vec<SocketAddr>, seed: u64) -> Self {
        Self {
            role,
            local_addrs,
            seed,
            ice_servers: Vec::new(),
            relay_only: false,
            tls_trust: None,
        }
    }
}

/// The session's random values, drawn from [`SessionConfig::seed`] (SplitMix64). RFC 3550 asks
/// these to be unpredictable to others on the path, not secret: the media keys come from DTLS.
struct Draw(u64);

impl Draw {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 32) as u32
    }
}

/// The peer's side as the call engine hands it over after session-initiate/accept.
#[derive(Debug, Clone)]
pub struct RemoteParams {
    /// The peer's RTP description.
    pub description: RtpDescription,
    /// The peer's ICE-UDP transport (ufrag, pwd, candidates). Its `dtls` field is ignored:
    /// only `expected` below counts.
    pub transport: IceUdpTransport,
    /// The fingerprint the DTLS peer must prove, and the peer's `setup`. The call engine takes
    /// it from the OMEMO-decrypted (or plain, in fallback) fingerprint element.
    pub expected: DtlsParams,
}

/// Where the session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Created; remote parameters not yet set.
    New,
    /// ICE and DTLS in progress.
    Connecting,
    /// DTLS done and the peer certificate matched: media flows.
    Verified,
    /// Ended for the given reason; no media ever again.
    Failed(FailReason),
    /// Closed by us.
    Closed,
}

/// Why a session failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// The DTLS peer certificate did not match the expected fingerprint.
    FingerprintMismatch,
    /// str0m reported an error (ICE, DTLS, SRTP).
    Transport(String),
    /// ICE lost the connection and did not get it back within [`ICE_DISCONNECT_GRACE`].
    IceDisconnected,
    /// ICE and DTLS did not complete within the driver's connect timeout; `ice_servers` names
    /// each STUN/TURN server that gave nothing, and why (labels only, never credentials).
    ConnectTimeout {
        /// `turn:host:port?transport=udp: authentication failed (401 …)`, …
        ice_servers: Vec<String>,
    },
    /// Relayed candidates only ([`SessionConfig::relay_only`]), and gathering ended without
    /// one: nothing could ever connect, so the session ends at once instead of at the connect
    /// timeout. `ice_servers` as in [`FailReason::ConnectTimeout`] (empty: no TURN server).
    NoRelay {
        /// Each TURN server and why it gave no relayed address.
        ice_servers: Vec<String>,
    },
}

impl std::fmt::Display for FailReason {
    /// One line for a person (the call's stats, the CLI's messages).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FingerprintMismatch => {
                f.write_str("the peer's DTLS certificate does not match the fingerprint")
            }
            Self::Transport(t) => f.write_str(t),
            Self::IceDisconnected => write!(
                f,
                "connectivity lost (ICE) for more than {} s",
                ICE_DISCONNECT_GRACE.as_secs()
            ),
            Self::ConnectTimeout { ice_servers } => {
                f.write_str("connect timeout")?;
                for s in ice_servers {
                    write!(f, "; {s}")?;
                }
                Ok(())
            }
            Self::NoRelay { ice_servers } if ice_servers.is_empty() => {
                f.write_str("relayed candidates only, and no TURN server to ask")
            }
            Self::NoRelay { ice_servers } => {
                f.write_str("relayed candidates only, and no TURN server gave one")?;
                for s in ice_servers {
                    write!(f, "; {s}")?;
                }
                Ok(())
            }
        }
    }
}

/// Something the call engine should know about.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// ICE found a working pair.
    IceConnected,
    /// A local candidate found after the transport was built (server-reflexive or relayed):
    /// send it to the peer in a Jingle `transport-info` (never with a fingerprint).
    LocalCandidate(IceCandidate),
    /// Every STUN/TURN server has answered or failed: no more [`MediaEvent::LocalCandidate`]
    /// until an ICE restart.
    GatheringComplete,
    /// A STUN/TURN server gave nothing, or its allocation ended. The call goes on with the other
    /// candidates.
    IceServerFailed {
        /// The server's label (`turn:host:port?transport=udp`; never credentials).
        server: String,
        /// Why, in words.
        reason: String,
    },
    /// ICE lost connectivity after having had it; the session waits up to
    /// [`ICE_DISCONNECT_GRACE`] for it to come back before it fails.
    ConnectivityLost,
    /// Connectivity came back after [`MediaEvent::ConnectivityLost`].
    ConnectivityRestored {
        /// How long it was gone.
        after: Duration,
    },
    /// The driver restarted ICE on request (`DriverCommand::RestartIce`): send this transport
    /// (new ufrag/pwd, the candidates so far, the same fingerprint) in a `transport-info`.
    IceRestarted(IceUdpTransport),
    /// The peer's ICE restart was refused (`DriverCommand::RemoteIceRestart`); the call goes
    /// on with the old ICE state.
    IceRestartRefused {
        /// Why, in words.
        reason: String,
        /// It brought another DTLS fingerprint than the verified one: end the call with
        /// `security-error`.
        fingerprint_changed: bool,
    },
    /// DTLS completed and the peer proved the expected certificate; media starts now.
    DtlsVerified {
        /// The verified peer fingerprint.
        fingerprint: Fingerprint,
    },
    /// The peer's certificate is not the one expected: the call must end with
    /// `security-error`. No media was or will be sent or played.
    FingerprintMismatch {
        /// What the call engine expected.
        expected: Fingerprint,
        /// What the DTLS peer presented (`None` if its digest was unusable).
        actual: Option<Fingerprint>,
    },
    /// The first frame of peer audio was played.
    FirstAudio,
    /// The session failed for another reason.
    Failed(FailReason),
}

/// What the driver must do next.
#[derive(Debug)]
pub enum SessionOutput {
    /// Send a datagram.
    Transmit {
        /// Local socket to send from.
        source: SocketAddr,
        /// Peer address.
        destination: SocketAddr,
        /// The datagram.
        contents: Vec<u8>,
    },
    /// Report an event.
    Event(MediaEvent),
    /// Open a TCP connection to a TURN server and answer with
    /// [`MediaSession::handle_stream_connected`] (or [`MediaSession::handle_stream_closed`]).
    StreamConnect {
        /// The connection's id in later calls.
        stream: StreamId,
        /// The server.
        destination: SocketAddr,
    },
    /// Write bytes to a TCP connection (in order; TLS is inside the session).
    StreamSend {
        /// Which connection.
        stream: StreamId,
        /// The bytes.
        contents: Vec<u8>,
    },
    /// Close a TCP connection.
    StreamClose {
        /// Which connection.
        stream: StreamId,
    },
    /// Nothing more until this time (or new input).
    Timeout(Instant),
}

impl From<LinkOutput> for SessionOutput {
    fn from(o: LinkOutput) -> Self {
        match o {
            LinkOutput::Datagram { from, to, data } => Self::Transmit {
                source: from,
                destination: to,
                contents: data,
            },
            LinkOutput::StreamConnect { stream, to } => Self::StreamConnect {
                stream,
                destination: to,
            },
            LinkOutput::StreamSend { stream, data } => Self::StreamSend {
                stream,
                contents: data,
            },
            LinkOutput::StreamClose { stream } => Self::StreamClose { stream },
        }
    }
}

/// Errors of the session API (not of the peer: peer trouble becomes events).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Parameters were invalid.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// str0m refused a call.
    #[error("str0m: {0}")]
    Rtc(#[from] RtcError),
    /// Opus setup or encoding failed.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// `set_remote` called twice.
    #[error("remote parameters were already set")]
    RemoteAlreadySet,
    /// The crypto provider could not make a DTLS certificate.
    #[error("could not generate a DTLS certificate")]
    Certificate,
    /// A local address is not usable as a host candidate.
    #[error("local address {0} is not usable as a host candidate")]
    BadLocalAddr(SocketAddr),
    /// An ICE restart before the remote parameters were set.
    #[error("ICE has not started yet (no remote parameters)")]
    NotStarted,
    /// The peer's ICE restart carried another DTLS fingerprint than the one verified: refused,
    /// the session keeps its old ICE state.
    #[error(
        "the ICE restart brings another DTLS fingerprint ({offered}) than the verified one ({expected})"
    )]
    RestartChangesFingerprint {
        /// The fingerprint the call was set up with.
        expected: Fingerprint,
        /// The one the restart carried.
        offered: Fingerprint,
    },
}

/// The media side of one call. See the module docs.
pub struct MediaSession {
    rtc: Rtc,
    cert: DtlsCert,
    ice_creds: IceCreds,
    role: JingleRole,
    start: Instant,
    last_now: Instant,
    phase: Phase,
    local_addrs: Vec<SocketAddr>,
    local_candidates: Vec<IceCandidate>,
    local_ssrc: u32,
    cname: String,
    remote: Option<RemoteParams>,
    opus: Option<OpusSettings>,
    remote_candidates: Vec<(IceCandidate, str0m::Candidate)>,
    early_candidates: Vec<IceCandidate>,
    remote_ssrcs: Vec<u32>,
    playing_ssrc: Option<u32>,
    fingerprint_checked: bool,
    events: VecDeque<MediaEvent>,
    encoder: OpusEncoder,
    decoder: OpusDecoder,
    jitter: JitterBuffer,
    next_seq: u64,
    rtp_time: u32,
    stats: CallStats,
    draw: Draw,
    relay_only: bool,
    gatherer: Gatherer,
    gathered: Vec<Gathered>,
    generation: u32,
    /// When connectivity was lost: the last time the peer was heard before the loss.
    lost_since: Option<Instant>,
    /// When a datagram from the peer last reached str0m.
    last_heard: Option<Instant>,
    /// str0m's last ICE state.
    ice_state: IceConnectionState,
    media_path: Option<(SocketAddr, SocketAddr)>,
    channels: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Every relayed address we had, with its server (the stats name it after the call, when
    /// the allocation is gone).
    relays: Vec<(SocketAddr, RelayPath)>,
    /// How the peer sees us on a path (the XOR-MAPPED-ADDRESS of its Binding answers):
    /// (our address, its address, the address it saw). What tells a host pair from a
    /// server-reflexive or peer-reflexive one behind a NAT. At most [`MAX_PEER_MAPPINGS`].
    peer_mapped: VecDeque<(SocketAddr, SocketAddr, SocketAddr)>,
}

/// Paths whose mapped address (as the peer saw us) is remembered for the stats.
const MAX_PEER_MAPPINGS: usize = 16;

/// A server-reflexive or relayed candidate of ours.
#[derive(Debug, Clone)]
struct Gathered {
    ice: IceCandidate,
    str0m: str0m::Candidate,
}

impl MediaSession {
    /// Creates the session: a fresh DTLS certificate and ICE credentials, host candidates for
    /// `config.local_addrs` (none announced with `relay_only`), and gathering with
    /// `config.ice_servers` starts (its first datagrams come out of
    /// [`MediaSession::poll_output`]).
    pub fn new(config: SessionConfig, now: Instant) -> Result<Self, SessionError> {
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or(SessionError::Certificate)?;
        let ice_creds = IceCreds::new();
        for addr in &config.local_addrs {
            str0m::Candidate::host(*addr, "udp").map_err(|_| SessionError::BadLocalAddr(*addr))?;
        }
        let mut draw = Draw(config.seed);
        let local_candidates = config
            .local_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| IceCandidate {
                id: format!("{:08x}", draw.next_u32()),
                ..IceCandidate::local_host(*a, i)
            })
            .collect();
        let host_addrs: &[SocketAddr] = if config.relay_only {
            &[]
        } else {
            &config.local_addrs
        };
        let rtc = build_rtc(
            &cert,
            &ice_creds,
            ExtensionMap::empty(),
            None,
            host_addrs,
            now,
        );
        let local_ssrc = draw.next_u32().max(1);
        let cname = format!("{:08x}{:08x}", draw.next_u32(), draw.next_u32());
        let next_seq = u64::from(draw.next_u32() & 0x7fff);
        let rtp_time = draw.next_u32();
        let gatherer = Gatherer::new(
            config.ice_servers,
            &config.local_addrs,
            config.relay_only,
            config.tls_trust,
            Clock::new(now),
            now,
        );
        let mut session = Self {
            rtc,
            cert,
            ice_creds,
            role: config.role,
            start: now,
            last_now: now,
            phase: Phase::New,
            local_addrs: config.local_addrs,
            local_candidates,
            local_ssrc,
            cname,
            remote: None,
            opus: None,
            remote_candidates: Vec::new(),
            early_candidates: Vec::new(),
            remote_ssrcs: Vec::new(),
            playing_ssrc: None,
            fingerprint_checked: false,
            events: VecDeque::new(),
            encoder: OpusEncoder::new()?,
            decoder: OpusDecoder::new()?,
            jitter: JitterBuffer::new(),
            next_seq,
            rtp_time,
            stats: CallStats::default(),
            draw,
            relay_only: config.relay_only,
            gatherer,
            gathered: Vec::new(),
            generation: 0,
            lost_since: None,
            last_heard: None,
            ice_state: IceConnectionState::New,
            media_path: None,
            channels: BTreeSet::new(),
            relays: Vec::new(),
            peer_mapped: VecDeque::new(),
        };
        session.stats.ice_servers = session.gatherer.report();
        Ok(session)
    }

    /// Our certificate's fingerprint, to be sent (OMEMO-encrypted) to the peer.
    pub fn local_fingerprint(&mut self) -> Result<Fingerprint, SessionError> {
        Ok(Fingerprint::from_str0m(
            self.rtc.direct_api().local_dtls_fingerprint(),
        )?)
    }

    /// Our ICE-UDP transport with fingerprint and `setup`, for session-initiate/accept (and,
    /// after [`MediaSession::restart_ice`], for the restart's `transport-info`): the host
    /// candidates (none with `relay_only`) and every candidate gathered so far. Candidates it
    /// carries are not reported again as [`MediaEvent::LocalCandidate`].
    pub fn local_transport(&mut self) -> Result<IceUdpTransport, SessionError> {
        let creds = self.rtc.direct_api().local_ice_credentials();
        let remote_setup = self.remote.as_ref().map(|r| r.expected.setup);
        let mut candidates: Vec<IceCandidate> = if self.relay_only {
            Vec::new()
        } else {
            self.local_candidates.clone()
        };
        candidates.extend(self.gathered.iter().map(|g| g.ice.clone()));
        for c in &mut candidates {
            c.generation = self.generation;
        }
        // Whoever sends this transport announces them: no trickle of the same ones later.
        self.events.retain(|e| match e {
            MediaEvent::LocalCandidate(c) => !candidates.iter().any(|k| k.addr() == c.addr()),
            _ => true,
        });
        Ok(IceUdpTransport {
            ufrag: creds.ufrag,
            pwd: creds.pass,
            candidates,
            dtls: Some(DtlsParams {
                fingerprint: self.local_fingerprint()?,
                setup: local_setup(self.role, remote_setup),
            }),
        })
    }

    /// Our RTP description: an offer before the remote is known, else the answer to it.
    pub fn local_description(&self) -> Result<RtpDescription, SessionError> {
        match &self.remote {
            Some(r) => Ok(RtpDescription::answer_to(
                &r.description,
                self.local_ssrc,
                &self.cname,
            )?),
            None => Ok(RtpDescription::local_audio(self.local_ssrc, &self.cname)),
        }
    }

    /// The host socket addresses of this session (announced unless `relay_only`).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Hands over the peer's parameters and starts ICE and DTLS.
    pub fn set_remote(&mut self, remote: RemoteParams, now: Instant) -> Result<(), SessionError> {
        if self.remote.is_some() {
            return Err(SessionError::RemoteAlreadySet);
        }
        remote.transport.check_credentials()?;
        let opus = OpusSettings::from_remote(&remote.description)?;
        if !remote.description.rtcp_mux {
            return Err(ParamsError::NoRtcpMux.into());
        }
        let active = dtls_active(self.role, remote.expected.setup)?;
        self.last_now = self.last_now.max(now);

        // Header extensions are fixed when an `Rtc` is built, so build it now that they are
        // negotiated; same certificate and ICE credentials as announced, nothing was sent yet.
        let answer = RtpDescription::answer_to(&remote.description, self.local_ssrc, &self.cname)?;
        let mut exts = ExtensionMap::empty();
        for h in &answer.hdrexts {
            if let Some(ext) = h.to_str0m() {
                exts.set(h.id, ext);
            }
        }
        let host_addrs: &[SocketAddr] = if self.relay_only {
            &[]
        } else {
            &self.local_addrs
        };
        self.rtc = build_rtc(
            &self.cert,
            &self.ice_creds,
            exts,
            Some(opus),
            host_addrs,
            now,
        );
        for g in &self.gathered {
            self.rtc.add_local_candidate(g.str0m.clone());
        }

        let mid: Mid = AUDIO_MID.into();
        let mut api = self.rtc.direct_api();
        api.set_ice_controlling(self.role == JingleRole::Initiator);
        api.set_remote_ice_credentials(IceCreds {
            ufrag: remote.transport.ufrag.clone(),
            pass: remote.transport.pwd.clone(),
        });
        // str0m insists on a remote fingerprint before DTLS even with its check off; ours is
        // the one that decides, as soon as the peer certificate is seen (`check_fingerprint`).
        api.set_remote_fingerprint(remote.expected.fingerprint.to_str0m());
        api.declare_media(mid, MediaKind::Audio);
        api.declare_stream_tx(Ssrc::from(self.local_ssrc), None, mid, None);
        for s in remote.description.sources.iter().take(MAX_REMOTE_SSRCS) {
            api.expect_stream_rx(Ssrc::from(s.ssrc), None, mid, None);
            self.remote_ssrcs.push(s.ssrc);
        }
        api.start_dtls(active)?;

        self.opus = Some(opus);
        self.phase = Phase::Connecting;
        let early = std::mem::take(&mut self.early_candidates);
        for c in remote.transport.candidates.iter().chain(early.iter()) {
            self.add_remote_candidate(c);
        }
        self.remote = Some(remote);
        debug!(?self.role, active, "media session started");
        Ok(())
    }

    /// Adds a trickled candidate (transport-info). Unusable or excess candidates are ignored.
    /// Every TURN allocation gets a permission for its IP.
    pub fn add_remote_candidate(&mut self, c: &IceCandidate) {
        if self.remote_candidates.len() + self.early_candidates.len() >= MAX_TOTAL_REMOTE_CANDIDATES
        {
            return;
        }
        if self.phase == Phase::New {
            // A transport-info that overtook session-accept: kept for `set_remote`, which
            // builds the `Rtc` that will use it.
            self.early_candidates.push(c.clone());
            return;
        }
        if self
            .remote_candidates
            .iter()
            .any(|(k, _)| same_candidate(k, c))
        {
            return;
        }
        if let Some(s) = c.to_str0m_remote() {
            self.rtc.add_remote_candidate(s.clone());
            self.remote_candidates.push((c.clone(), s));
            self.gatherer.permit(c.ip, self.last_now);
        }
    }

    /// Our host addresses changed (a network change: the driver bound new sockets): the new
    /// ones become host candidates (announced with the next [`MediaSession::restart_ice`]), the
    /// ones gone are withdrawn from str0m, and UDP TURN allocations made from a vanished socket
    /// are made again from a new one at the restart. Call [`MediaSession::restart_ice`] next.
    pub fn set_host_addrs(&mut self, addrs: Vec<SocketAddr>) -> Result<(), SessionError> {
        for a in &addrs {
            str0m::Candidate::host(*a, "udp").map_err(|_| SessionError::BadLocalAddr(*a))?;
        }
        let (keep, gone): (Vec<IceCandidate>, Vec<IceCandidate>) =
            std::mem::take(&mut self.local_candidates)
                .into_iter()
                .partition(|c| addrs.contains(&c.addr()));
        for c in &gone {
            if let Ok(h) = str0m::Candidate::host(c.addr(), "udp") {
                self.rtc.direct_api().invalidate_candidate(&h);
            }
        }
        self.local_candidates = keep;
        for a in &addrs {
            if self.local_candidates.iter().any(|c| c.addr() == *a) {
                continue;
            }
            let index = self.local_candidates.len() + gone.len() + self.generation as usize;
            self.local_candidates.push(IceCandidate {
                id: format!("{:08x}", self.draw.next_u32()),
                ..IceCandidate::local_host(*a, index)
            });
            if !self.relay_only
                && let Ok(h) = str0m::Candidate::host(*a, "udp")
            {
                self.rtc.add_local_candidate(h);
            }
        }
        // Server-reflexive candidates of a vanished socket are gone with it.
        let (keep, gone): (Vec<Gathered>, Vec<Gathered>) = std::mem::take(&mut self.gathered)
            .into_iter()
            .partition(|g| {
                g.ice.kind != CandidateType::ServerReflexive
                    || g.ice.related.is_none_or(|base| addrs.contains(&base))
            });
        for g in &gone {
            self.rtc.direct_api().invalidate_candidate(&g.str0m);
        }
        self.gathered = keep;
        self.local_addrs = addrs;
        Ok(())
    }

    /// Restarts ICE from our side (a network change, or to answer the peer's restart): new
    /// local ufrag and pwd, Binding requests to the STUN servers again (new server-reflexive
    /// candidates arrive as [`MediaEvent::LocalCandidate`]); TURN allocations, DTLS and so the
    /// fingerprint stay. Returns the transport to send in a `transport-info` (the peer answers
    /// with its own restart, [`MediaSession::accept_remote_restart`]). Media keeps flowing on
    /// the old pair until the new credentials are in use on both sides.
    ///
    /// str0m 0.25 offers a restart only through its SDP API (`SdpApi::ice_restart`); on the
    /// direct API this is new credentials with `set_local_ice_credentials` and, for the peer's
    /// side, `set_remote_ice_credentials` plus `invalidate_candidate` for the candidates it
    /// no longer has: checks then run with the new credentials on existing and new pairs.
    pub fn restart_ice(&mut self, now: Instant) -> Result<IceUdpTransport, SessionError> {
        if self.remote.is_none() || self.is_ended() {
            return Err(SessionError::NotStarted);
        }
        self.last_now = self.last_now.max(now);
        self.ice_creds = IceCreds::new();
        self.rtc
            .direct_api()
            .set_local_ice_credentials(self.ice_creds.clone());
        self.generation += 1;
        self.stats.ice_restarts += 1;
        let hosts = self.local_addrs.clone();
        self.gatherer.restart(&hosts, self.last_now);
        debug!(generation = self.generation, "ICE restart (ours)");
        self.local_transport()
    }

    /// Takes the peer's ICE restart (a `transport-info` with a new ufrag/pwd): its new
    /// credentials and candidates replace the old ones. A fingerprint in it must be the one the
    /// call was verified with, else [`SessionError::RestartChangesFingerprint`] and nothing
    /// changes. The same ufrag/pwd is no restart: its candidates are added as trickle.
    pub fn accept_remote_restart(
        &mut self,
        transport: &IceUdpTransport,
        now: Instant,
    ) -> Result<(), SessionError> {
        let Some(remote) = self.remote.as_ref() else {
            return Err(SessionError::NotStarted);
        };
        transport.check_credentials()?;
        let expected = remote.expected.fingerprint;
        if let Some(d) = &transport.dtls
            && d.fingerprint != expected
        {
            warn!(?expected, offered = ?d.fingerprint, "ICE restart with another fingerprint refused");
            return Err(SessionError::RestartChangesFingerprint {
                expected,
                offered: d.fingerprint,
            });
        }
        self.last_now = self.last_now.max(now);
        let same =
            remote.transport.ufrag == transport.ufrag && remote.transport.pwd == transport.pwd;
        if !same {
            self.rtc.direct_api().set_remote_ice_credentials(IceCreds {
                ufrag: transport.ufrag.clone(),
                pass: transport.pwd.clone(),
            });
            // Candidates the peer no longer lists are gone; the others keep their pairs.
            let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.remote_candidates)
                .into_iter()
                .partition(|(k, _)| transport.candidates.iter().any(|c| same_candidate(k, c)));
            for (_, s) in &gone {
                self.rtc.direct_api().invalidate_candidate(s);
            }
            self.remote_candidates = keep;
            if let Some(r) = self.remote.as_mut() {
                r.transport.ufrag = transport.ufrag.clone();
                r.transport.pwd = transport.pwd.clone();
            }
            self.stats.ice_restarts += 1;
            debug!("ICE restart (the peer's)");
        }
        for c in &transport.candidates {
            self.add_remote_candidate(c);
        }
        Ok(())
    }

    /// Queues an event of the driver's own making (restart results) in the session's order.
    pub(crate) fn push_event(&mut self, e: MediaEvent) {
        self.events.push_back(e);
    }

    /// Where the session is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// True once the peer certificate matched and DTLS is up: only then does media flow.
    pub fn is_verified(&self) -> bool {
        self.phase == Phase::Verified
    }

    /// Statistics so far.
    pub fn stats(&self) -> CallStats {
        let j = self.jitter.stats();
        CallStats {
            frames_played: j.played,
            frames_concealed: j.concealed,
            packets_late: j.late,
            selected_pair: self.selected_pair(),
            ice_servers: self.gatherer.report(),
            ..self.stats.clone()
        }
    }

    /// Why a call that never connected did not: names each STUN/TURN server that gave nothing
    /// (the driver ends with this at its connect timeout).
    pub fn connect_failure(&self) -> FailReason {
        FailReason::ConnectTimeout {
            ice_servers: self.gatherer.problems(),
        }
    }

    /// Feeds a datagram received on one of our sockets.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        if self.is_ended() {
            return;
        }
        self.last_now = self.last_now.max(now);
        match self
            .gatherer
            .datagram(source, destination, data, self.last_now)
        {
            GatherRecv::NotMine => self.deliver(source, destination, data),
            GatherRecv::Handled => {}
            GatherRecv::Relayed { relayed, data } => {
                for (peer, d) in data {
                    self.deliver(peer, relayed, &d);
                }
            }
        }
    }

    /// The driver's TCP connection `stream` is up; `local` is our end of it.
    pub fn handle_stream_connected(&mut self, now: Instant, stream: StreamId, local: SocketAddr) {
        if self.is_ended() {
            return;
        }
        self.last_now = self.last_now.max(now);
        self.gatherer.stream_connected(stream, local, self.last_now);
    }

    /// Bytes read from the TCP connection `stream`.
    pub fn handle_stream_data(&mut self, now: Instant, stream: StreamId, data: &[u8]) {
        if self.is_ended() {
            return;
        }
        self.last_now = self.last_now.max(now);
        if let GatherRecv::Relayed { relayed, data } =
            self.gatherer.stream_data(stream, data, self.last_now)
        {
            for (peer, d) in data {
                self.deliver(peer, relayed, &d);
            }
        }
    }

    /// The TCP connection `stream` could not be opened or ended (`why`, for the stats).
    pub fn handle_stream_closed(&mut self, now: Instant, stream: StreamId, why: &str) {
        if self.is_ended() {
            return;
        }
        self.last_now = self.last_now.max(now);
        self.gatherer.stream_closed(stream, why, self.last_now);
    }

    /// A datagram for str0m: from a peer to one of our host sockets or relayed addresses.
    fn deliver(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if self.is_verified() {
            self.latch_remote_ssrc(data);
        }
        if data.first().is_some_and(|b| *b < 2) {
            self.note_peer_mapping(source, destination, data);
        }
        if self.phase != Phase::New {
            self.last_heard = Some(self.last_now);
            if self.lost_since.is_some() && self.ice_state.is_connected() {
                self.connectivity_restored();
            }
        }
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, data) else {
            return; // not STUN/DTLS/RTP: ignore
        };
        if let Err(e) = self
            .rtc
            .handle_input(Input::Receive(self.last_now, receive))
        {
            self.fail(FailReason::Transport(e.to_string()));
        }
    }

    /// Advances time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_ended() {
            return;
        }
        self.last_now = self.last_now.max(now);
        self.gatherer.handle_timeout(self.last_now);
        self.check_connectivity();
        if self.is_ended() {
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(self.last_now)) {
            self.fail(FailReason::Transport(e.to_string()));
        }
    }

    /// The next thing to do. Drain until [`SessionOutput::Timeout`].
    pub fn poll_output(&mut self) -> SessionOutput {
        loop {
            if let Some(e) = self.events.pop_front() {
                return SessionOutput::Event(e);
            }
            if let Some(o) = self.gatherer.poll_output() {
                return o.into();
            }
            if self.gather_events() {
                continue;
            }
            let far = self.last_now + Duration::from_secs(3600);
            if self.is_ended() {
                return SessionOutput::Timeout(far);
            }
            let gather_wake = self.gatherer.next_timeout(self.last_now).unwrap_or(far);
            if self.phase == Phase::New {
                return SessionOutput::Timeout(gather_wake);
            }
            let out = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    self.fail(FailReason::Transport(e.to_string()));
                    continue;
                }
            };
            // Check as soon as str0m has seen the peer certificate, before the datagram that
            // would finish our side of the handshake leaves: a mismatch then never completes
            // DTLS for either side, so neither sends media.
            if !self.fingerprint_checked
                && self.rtc.direct_api().remote_dtls_fingerprint().is_some()
            {
                self.check_fingerprint();
                if self.is_ended() {
                    continue; // drops `out`, whatever it was
                }
            }
            match out {
                Output::Timeout(t) => {
                    let watch = self.connectivity_wake().unwrap_or(far);
                    // str0m sends one check per timeout it is given and asks for the next
                    // only 50 ms on; until a pair works and DTLS went over it, wake it at our
                    // own Ta (the controlling side is connected before its nomination is out).
                    let pace = if self.ice_state.is_connected() && self.is_verified() {
                        far
                    } else {
                        self.last_now + ICE_CHECK_PACING
                    };
                    return SessionOutput::Timeout(t.min(gather_wake).min(watch).min(pace));
                }
                Output::Transmit(t) => {
                    let media = is_dtls_or_rtp(&t.contents);
                    if media {
                        self.media_path = Some((t.source, t.destination));
                    }
                    if self.gatherer.is_relayed(t.source) {
                        // From a relayed candidate: through its TURN allocation. A channel
                        // saves 32 bytes a packet on the pair that carries media.
                        let now = self.last_now;
                        if media && self.channels.insert((t.source, t.destination)) {
                            self.gatherer.bind_channel(t.source, t.destination, now);
                        }
                        self.gatherer
                            .send_relayed(t.source, t.destination, &t.contents, now);
                        continue;
                    }
                    if self.relay_only {
                        continue; // never from a host socket
                    }
                    return SessionOutput::Transmit {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.to_vec(),
                    };
                }
                Output::Event(e) => self.handle_event(e),
            }
        }
    }

    /// Remembers the address a Binding success from the peer says it saw us at.
    fn note_peer_mapping(&mut self, peer: SocketAddr, ours: SocketAddr, data: &[u8]) {
        use turn_client_proto::stun::types::attribute::XorMappedAddress;
        use turn_client_proto::stun::types::message::{BINDING, Message, MessageClass};
        let Ok(m) = Message::from_bytes(data) else {
            return;
        };
        if !m.has_method(BINDING) || !m.has_class(MessageClass::Success) {
            return;
        }
        let Ok(x) = m.attribute::<XorMappedAddress>() else {
            return;
        };
        let seen = x.addr(m.transaction_id());
        self.peer_mapped
            .retain(|(o, p, _)| !(*o == ours && *p == peer));
        if self.peer_mapped.len() >= MAX_PEER_MAPPINGS {
            self.peer_mapped.pop_front();
        }
        self.peer_mapped.push_back((ours, peer, seen));
    }

    /// Notices a silent peer (lost) and a peer silent for too long (failed).
    fn check_connectivity(&mut self) {
        if self.stats.ice_connected.is_none() {
            return; // the driver's connect timeout bounds the time to the first connection
        }
        let Some(heard) = self.last_heard else {
            return;
        };
        let silent = self.last_now.saturating_duration_since(heard);
        if self.lost_since.is_none() && silent >= CONNECTIVITY_SILENCE {
            self.connectivity_lost(heard);
        }
        if self.lost_since.is_some() && silent >= ICE_DISCONNECT_GRACE {
            self.fail(FailReason::IceDisconnected);
        }
    }

    /// When [`MediaSession::check_connectivity`] has something to decide.
    fn connectivity_wake(&self) -> Option<Instant> {
        self.stats.ice_connected?;
        let heard = self.last_heard?;
        Some(match self.lost_since {
            None => heard + CONNECTIVITY_SILENCE,
            Some(_) => heard + ICE_DISCONNECT_GRACE,
        })
    }

    fn connectivity_lost(&mut self, heard: Instant) {
        warn!(
            "connectivity lost; waiting up to {:?} for it to come back",
            ICE_DISCONNECT_GRACE
        );
        self.lost_since = Some(heard);
        self.events.push_back(MediaEvent::ConnectivityLost);
    }

    fn connectivity_restored(&mut self) {
        if let Some(since) = self.lost_since.take() {
            let after = self.last_now.saturating_duration_since(since);
            debug!(?after, "connectivity restored");
            self.stats.outages_survived += 1;
            self.events
                .push_back(MediaEvent::ConnectivityRestored { after });
        }
    }

    /// Turns what gathering found into local candidates and events; `true` if any.
    fn gather_events(&mut self) -> bool {
        let mut any = false;
        let since_start = self.last_now.saturating_duration_since(self.start);
        while let Some(e) = self.gatherer.poll_event() {
            any = true;
            match e {
                GatherEvent::Reflexive { base, addr, server } => {
                    if self.relay_only {
                        continue;
                    }
                    let Ok(c) = str0m::Candidate::server_reflexive(addr, base, "udp") else {
                        continue;
                    };
                    let server_ip = self
                        .stats
                        .ice_servers
                        .get(server)
                        .map(|s| s.label.clone())
                        .unwrap_or_default();
                    if self.add_gathered(c, CandidateType::ServerReflexive, base, &server_ip) {
                        self.stats.gathering.srflx.get_or_insert(since_start);
                    }
                }
                GatherEvent::Relayed {
                    server,
                    relayed,
                    local,
                } => {
                    let Ok(c) = str0m::Candidate::relayed(relayed, local, "udp") else {
                        continue;
                    };
                    let label = self.gatherer.label(server);
                    let transport = self.gatherer.relay_of(relayed).map(|(_, t)| t);
                    if let Some(transport) = transport {
                        let path = RelayPath {
                            server: label.clone(),
                            transport,
                        };
                        self.relays.push((relayed, path));
                    }
                    if self.add_gathered(c, CandidateType::Relay, local, &label) {
                        let g = &mut self.stats.gathering;
                        let slot = match transport {
                            Some(RelayTransport::Tcp) => &mut g.relay_tcp,
                            Some(RelayTransport::Tls) => &mut g.relay_tls,
                            _ => &mut g.relay_udp,
                        };
                        slot.get_or_insert(since_start);
                    }
                    // Permissions for every remote candidate known so far.
                    let ips: Vec<_> = self.remote_candidates.iter().map(|(c, _)| c.ip).collect();
                    for ip in ips {
                        self.gatherer.permit(ip, self.last_now);
                    }
                }
                GatherEvent::RelayLost { relayed, .. } => {
                    if let Some(i) = self.gathered.iter().position(|g| g.str0m.addr() == relayed) {
                        let g = self.gathered.remove(i);
                        self.rtc.direct_api().invalidate_candidate(&g.str0m);
                    }
                }
                GatherEvent::ServerFailed { server, reason } => {
                    self.events.push_back(MediaEvent::IceServerFailed {
                        server: self.gatherer.label(server),
                        reason,
                    });
                }
                GatherEvent::Complete => {
                    self.stats.gathering.complete.get_or_insert(since_start);
                    self.events.push_back(MediaEvent::GatheringComplete);
                    let relayed = self
                        .gathered
                        .iter()
                        .any(|g| g.ice.kind == CandidateType::Relay);
                    if self.relay_only && !relayed {
                        self.fail(FailReason::NoRelay {
                            ice_servers: self.gatherer.problems(),
                        });
                    }
                }
            }
        }
        self.stats.ice_servers = self.gatherer.report();
        any
    }

    /// Adds a gathered candidate to str0m and announces it; `false` if str0m found it redundant.
    fn add_gathered(
        &mut self,
        c: str0m::Candidate,
        kind: CandidateType,
        base: SocketAddr,
        server: &str,
    ) -> bool {
        // Found again (an ICE restart asks the STUN servers anew): announced already.
        if self.gathered.iter().any(|g| g.str0m.addr() == c.addr()) {
            return false;
        }
        let Some(added) = self.rtc.add_local_candidate(c.clone()) else {
            return false;
        };
        let priority = added.prio();
        let addr = c.addr();
        let ice = IceCandidate {
            foundation: foundation(kind, base, server),
            component: 1,
            protocol: "udp".to_owned(),
            priority,
            ip: addr.ip(),
            port: addr.port(),
            kind,
            generation: self.generation,
            id: format!("{:08x}", self.draw.next_u32()),
            related: match kind {
                CandidateType::ServerReflexive => Some(base),
                _ => None, // a relay need not tell the peer where we are
            },
        };
        debug!(kind = kind.as_str(), %addr, "local candidate");
        self.gathered.push(Gathered {
            ice: ice.clone(),
            str0m: c,
        });
        self.events.push_back(MediaEvent::LocalCandidate(ice));
        true
    }

    /// The pair media last went out on, with the kinds of both candidates.
    fn selected_pair(&self) -> Option<SelectedPair> {
        let (source, destination) = self.media_path?;
        let relay = self
            .relays
            .iter()
            .rev()
            .find(|(a, _)| *a == source)
            .map(|(_, p)| p.clone());
        // Our side of a host socket is what the peer sees: our own address (host), a
        // server-reflexive one we found with STUN (srflx), or another NAT mapping (prflx).
        let seen = self
            .peer_mapped
            .iter()
            .find(|(o, p, _)| *o == source && *p == destination)
            .map(|(_, _, seen)| *seen);
        let local = match (relay.is_some(), seen) {
            (true, _) => CandidateType::Relay,
            (false, None) => CandidateType::Host,
            (false, Some(seen)) if seen == source => CandidateType::Host,
            (false, Some(seen)) => {
                let srflx = self
                    .gathered
                    .iter()
                    .any(|g| g.ice.kind == CandidateType::ServerReflexive && g.ice.addr() == seen);
                if srflx {
                    CandidateType::ServerReflexive
                } else {
                    CandidateType::PeerReflexive
                }
            }
        };
        let remote = self
            .remote_candidates
            .iter()
            .find(|(c, _)| c.addr() == destination)
            .map_or(CandidateType::PeerReflexive, |(c, _)| c.kind);
        let local_addr = match local {
            CandidateType::ServerReflexive | CandidateType::PeerReflexive => seen.unwrap_or(source),
            _ => source,
        };
        Some(SelectedPair {
            local,
            local_addr,
            remote,
            remote_addr: destination,
            relay,
        })
    }

    /// Encodes and sends one frame of our audio. Returns `false` (and sends nothing) unless
    /// the peer has been verified.
    pub fn send_frame(&mut self, now: Instant, frame: &Frame) -> Result<bool, SessionError> {
        if !self.is_verified() {
            return Ok(false);
        }
        let Some(opus) = self.opus else {
            return Ok(false);
        };
        self.last_now = self.last_now.max(now);
        let payload = self.encoder.encode(frame)?.to_vec();
        let seq: SeqNo = self.next_seq.into();
        let marker = self.stats.packets_sent == 0;
        let time = self.rtp_time;
        self.next_seq += 1;
        self.rtp_time = self.rtp_time.wrapping_add(FRAME_SAMPLES as u32);
        let len = payload.len() as u64;
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx(&Ssrc::from(self.local_ssrc)) else {
            return Ok(false);
        };
        let write = RtpWrite::new(opus.payload_type.into(), seq, time, self.last_now, payload)
            .marker(marker)
            .ext_vals(ExtensionValues {
                audio_level: Some(-30),
                voice_activity: Some(true),
                ..Default::default()
            });
        tx.write_rtp(write);
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += len;
        Ok(true)
    }

    /// Produces one 20 ms frame of peer audio into `out`. Returns `false` when there is
    /// nothing to play (not verified, or still buffering): the sink then gets nothing.
    pub fn play_frame(&mut self, now: Instant, out: &mut Frame) -> bool {
        if !self.is_verified() {
            return false;
        }
        let decoded = match self.jitter.pop() {
            Playout::Buffering => return false,
            Playout::Packet(p) => self.decoder.decode(&p, out),
            Playout::Lost { next: Some(n) } => self.decoder.decode_fec(&n, out),
            Playout::Lost { next: None } => self.decoder.conceal(out),
        };
        if let Err(e) = decoded {
            // Undecodable peer data: conceal instead (never panic on peer input).
            debug!(%e, "opus decode failed, concealing");
            if self.decoder.conceal(out).is_err() {
                out.fill(0);
            }
        }
        if self.stats.first_audio.is_none() {
            self.stats.first_audio = Some(now.saturating_duration_since(self.start));
            self.events.push_back(MediaEvent::FirstAudio);
        }
        true
    }

    /// Ends the session (DTLS close_notify is not sent; the call engine sends session-terminate).
    /// TURN allocations are released: drain [`MediaSession::poll_output`] once more to send
    /// that and close the TCP connections.
    pub fn close(&mut self) {
        if !self.is_ended() {
            self.rtc.disconnect();
            self.phase = Phase::Closed;
        }
        self.gatherer.close(self.last_now);
    }

    fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Failed(_) | Phase::Closed)
    }

    fn fail(&mut self, reason: FailReason) {
        if self.is_ended() {
            return;
        }
        warn!(?reason, "media session failed");
        self.rtc.disconnect();
        self.gatherer.close(self.last_now);
        self.phase = Phase::Failed(reason.clone());
        if reason != FailReason::FingerprintMismatch {
            self.events.push_back(MediaEvent::Failed(reason));
        }
    }

    /// Compares the DTLS peer certificate with the expected fingerprint; a mismatch ends the
    /// session for good.
    fn check_fingerprint(&mut self) {
        self.fingerprint_checked = true;
        let Some(expected) = self.remote.as_ref().map(|r| r.expected.fingerprint) else {
            return self.fail(FailReason::FingerprintMismatch);
        };
        let actual = self
            .rtc
            .direct_api()
            .remote_dtls_fingerprint()
            .and_then(|f| Fingerprint::from_str0m(f).ok());
        if actual == Some(expected) {
            debug!("DTLS peer certificate matches the expected fingerprint");
            return;
        }
        warn!(?expected, ?actual, "DTLS peer certificate does not match");
        self.fail(FailReason::FingerprintMismatch);
        self.events
            .push_back(MediaEvent::FingerprintMismatch { expected, actual });
    }

    fn handle_event(&mut self, e: Event) {
        let since_start = self.last_now.saturating_duration_since(self.start);
        match e {
            Event::IceConnectionStateChange(state) => {
                self.ice_state = state;
                match state {
                    IceConnectionState::Connected | IceConnectionState::Completed => {
                        if self.stats.ice_connected.is_none() {
                            self.stats.ice_connected = Some(since_start);
                            self.last_heard = Some(self.last_now);
                            self.events.push_back(MediaEvent::IceConnected);
                        }
                        let recent = self.last_heard.is_some_and(|h| {
                            self.last_now.saturating_duration_since(h) < CONNECTIVITY_SILENCE
                        });
                        if recent {
                            self.connectivity_restored();
                        }
                    }
                    // Before the first connection, `Disconnected` only means "no pair works
                    // yet": candidates may still trickle in, and the driver's connect timeout
                    // bounds it. After it, an outage: wait for connectivity, bounded.
                    IceConnectionState::Disconnected
                        if self.stats.ice_connected.is_some() && self.lost_since.is_none() =>
                    {
                        let heard = self.last_heard.unwrap_or(self.last_now);
                        self.connectivity_lost(heard);
                    }
                    _ => {}
                }
            }
            Event::Connected => {
                if !self.fingerprint_checked {
                    self.check_fingerprint();
                }
                if self.is_ended() {
                    return;
                }
                let Some(fingerprint) = self.remote.as_ref().map(|r| r.expected.fingerprint) else {
                    return;
                };
                self.phase = Phase::Verified;
                self.stats.dtls_connected = Some(since_start);
                self.events
                    .push_back(MediaEvent::DtlsVerified { fingerprint });
            }
            Event::RtpPacket(p) => {
                // Only authenticated (SRTP) packets reach here; play them only once verified.
                if !self.is_verified() {
                    return;
                }
                let ssrc = *p.header.ssrc;
                let playing = *self.playing_ssrc.get_or_insert(ssrc);
                if ssrc != playing {
                    return;
                }
                self.stats.packets_received += 1;
                self.stats.bytes_received += p.payload.len() as u64;
                self.jitter.insert(*p.seq_no, &p.payload);
            }
            Event::MediaIngressStats(s) => {
                self.stats.jitter = Some(s.jitter);
                self.stats.local_loss = s.loss.or(self.stats.local_loss);
                self.stats.rtt = s.rtt.or(self.stats.rtt);
            }
            Event::MediaEgressStats(s) => {
                self.stats.remote_loss = s.loss.or(self.stats.remote_loss);
                self.stats.rtt = s.rtt.or(self.stats.rtt);
            }
            Event::PeerStats(s) => {
                self.stats.rtt = s.rtt.or(self.stats.rtt);
            }
            Event::Closed => self.close(),
            _ => {}
        }
    }

    /// Peers like Dino announce no `<source/>`: accept the SSRC of the first RTP packets
    /// (SRTP still authenticates them). Bounded by [`MAX_REMOTE_SSRCS`].
    fn latch_remote_ssrc(&mut self, data: &[u8]) {
        if data.len() < 12 || !(128..=191).contains(&data[0]) {
            return; // not RTP/RTCP (RFC 7983 demultiplexing)
        }
        if (64..=95).contains(&(data[1] & 0x7f)) {
            return; // RTCP
        }
        let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        if self.remote_ssrcs.contains(&ssrc) || self.remote_ssrcs.len() >= MAX_REMOTE_SSRCS {
            return;
        }
        self.remote_ssrcs.push(ssrc);
        self.rtc
            .direct_api()
            .expect_stream_rx(Ssrc::from(ssrc), None, AUDIO_MID.into(), None);
    }
}

fn build_rtc(
    cert: &DtlsCert,
    creds: &IceCreds,
    exts: ExtensionMap,
    opus: Option<OpusSettings>,
    local_addrs: &[SocketAddr],
    now: Instant,
) -> Rtc {
    let mut config = Rtc::builder()
        .set_rtp_mode(true)
        // Our check decides (against the expected fingerprint the call engine hands us);
        // str0m's own would abort with a vaguer error before we could report why.
        .set_fingerprint_verification(false)
        .set_dtls_cert(cert.clone())
        .set_local_ice_credentials(creds.clone())
        .clear_codecs()
        .set_extension_map(exts)
        .set_stats_interval(Some(STATS_INTERVAL))
        .set_rtcp_report_interval_audio(RTCP_INTERVAL);
    config.set_initial_stun_rto(ICE_CHECK_RTO);
    if let Some(opus) = opus {
        config.codec_config().add_config(
            opus.payload_type.into(),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            str0m::format::FormatParams {
                min_p_time: Some(10),
                use_inband_fec: Some(true),
                ..Default::default()
            },
        );
    }
    let mut rtc = config.build(now);
    for addr in local_addrs {
        if let Ok(c) = str0m::Candidate::host(*addr, "udp") {
            rtc.add_local_candidate(c);
        }
    }
    rtc
}

/// DTLS (first byte 20..=63) or RTP/RTCP (128..=191), RFC 7983: what only a working pair carries.
fn is_dtls_or_rtp(data: &[u8]) -> bool {
    data.first()
        .is_some_and(|b| (20..=63).contains(b) || (128..=191).contains(b))
}

/// Two Jingle candidates for the same transport address and kind.
fn same_candidate(a: &IceCandidate, b: &IceCandidate) -> bool {
    a.addr() == b.addr() && a.kind == b.kind && a.component == b.component
}

/// RFC 8445 §5.1.1.3: candidates share a foundation when type, base IP and server agree (str0m
/// keeps its own `foundation()` crate-private). FNV-1a over those, in hex.
fn foundation(kind: CandidateType, base: SocketAddr, server: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in kind
        .as_str()
        .bytes()
        .chain(base.ip().to_string().into_bytes())
        .chain(server.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:x}")
}

/// The Jingle `setup` we answer with, re-exported for the call engine's convenience.
pub fn answer_setup(remote: Setup) -> Setup {
    local_setup(JingleRole::Responder, Some(remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(seed: u64) -> MediaSession {
        let config = SessionConfig::new(
            JingleRole::Initiator,
            vec!["127.0.0.1:40000".parse().unwrap()],
            seed,
        );
        MediaSession::new(config, Instant::now()).unwrap()
    }

    /// What the session draws itself (SSRC, CNAME, candidate ids, RTP counters) is the seed's,
    /// so a test can fix it and the driver can make it fresh.
    #[test]
    fn own_random_values_come_from_the_injected_seed() {
        let ids = |s: &mut MediaSession| {
            let t = s.local_transport().unwrap();
            let c: Vec<String> = t.candidates.iter().map(|c| c.id.clone()).collect();
            (s.local_ssrc, s.cname.clone(), s.next_seq, s.rtp_time, c)
        };
        let (mut a, mut b, mut c) = (session(42), session(42), session(43));
        assert_eq!(ids(&mut a), ids(&mut b));
        let (x, y) = (ids(&mut a), ids(&mut c));
        assert_ne!((x.0, &x.1, x.3, &x.4), (y.0, &y.1, y.3, &y.4));
    }

    #[test]
    fn failure_reasons_read_as_sentences() {
        assert_eq!(
            FailReason::FingerprintMismatch.to_string(),
            "the peer's DTLS certificate does not match the fingerprint"
        );
        assert_eq!(
            FailReason::IceDisconnected.to_string(),
            "connectivity lost (ICE) for more than 10 s"
        );
        assert_eq!(
            FailReason::ConnectTimeout {
                ice_servers: vec![
                    "turn:192.0.2.1:3478?transport=udp: authentication failed".into()
                ]
            }
            .to_string(),
            "connect timeout; turn:192.0.2.1:3478?transport=udp: authentication failed"
        );
        assert_eq!(
            FailReason::Transport("dtls: bad record".into()).to_string(),
            "dtls: bad record"
        );
    }
}
