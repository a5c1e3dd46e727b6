//! The sans-IO core of a call's media: str0m's `Rtc` (direct API, RTP mode) plus Opus and a
//! jitter buffer, behind a gate that opens only when the DTLS peer certificate matches the
//! fingerprint the call engine expects.
//!
//! The caller feeds datagrams and timeouts with the current time, drains [`MediaSession::poll_output`]
//! until it yields a timeout, and calls [`MediaSession::send_frame`] / [`MediaSession::play_frame`]
//! once per 20 ms. No sockets, threads or clocks here.

use std::collections::VecDeque;
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
use crate::params::{
    DtlsParams, Fingerprint, IceCandidate, IceUdpTransport, JingleRole, OpusSettings, ParamsError,
    RtpDescription, Setup, dtls_active, local_setup,
};
use crate::stats::CallStats;

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
    /// ICE could not connect or lost the connection.
    IceDisconnected,
}

impl std::fmt::Display for FailReason {
    /// One line for a person (the call's stats, the CLI's messages).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FingerprintMismatch => {
                f.write_str("the peer's DTLS certificate does not match the fingerprint")
            }
            Self::Transport(t) => f.write_str(t),
            Self::IceDisconnected => f.write_str("no connectivity (ICE)"),
        }
    }
}

/// Something the call engine should know about.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// ICE found a working pair.
    IceConnected,
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
    /// Nothing more until this time (or new input).
    Timeout(Instant),
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
    remote_candidates: usize,
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
}

impl MediaSession {
    /// Creates the session: a fresh DTLS certificate and ICE credentials, host candidates for
    /// `config.local_addrs`.
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
        let rtc = build_rtc(
            &cert,
            &ice_creds,
            ExtensionMap::empty(),
            None,
            &config.local_addrs,
            now,
        );
        let local_ssrc = draw.next_u32().max(1);
        Ok(Self {
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
            cname: format!("{:08x}{:08x}", draw.next_u32(), draw.next_u32()),
            remote: None,
            opus: None,
            remote_candidates: 0,
            early_candidates: Vec::new(),
            remote_ssrcs: Vec::new(),
            playing_ssrc: None,
            fingerprint_checked: false,
            events: VecDeque::new(),
            encoder: OpusEncoder::new()?,
            decoder: OpusDecoder::new()?,
            jitter: JitterBuffer::new(),
            next_seq: u64::from(draw.next_u32() & 0x7fff),
            rtp_time: draw.next_u32(),
            stats: CallStats::default(),
        })
    }

    /// Our certificate's fingerprint, to be sent (OMEMO-encrypted) to the peer.
    pub fn local_fingerprint(&mut self) -> Result<Fingerprint, SessionError> {
        Ok(Fingerprint::from_str0m(
            self.rtc.direct_api().local_dtls_fingerprint(),
        )?)
    }

    /// Our ICE-UDP transport with fingerprint and `setup`, for session-initiate/accept.
    pub fn local_transport(&mut self) -> Result<IceUdpTransport, SessionError> {
        let creds = self.rtc.direct_api().local_ice_credentials();
        let remote_setup = self.remote.as_ref().map(|r| r.expected.setup);
        Ok(IceUdpTransport {
            ufrag: creds.ufrag,
            pwd: creds.pass,
            candidates: self.local_candidates.clone(),
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

    /// The socket addresses this session announces.
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
        self.rtc = build_rtc(
            &self.cert,
            &self.ice_creds,
            exts,
            Some(opus),
            &self.local_addrs,
            now,
        );

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
    pub fn add_remote_candidate(&mut self, c: &IceCandidate) {
        if self.remote_candidates + self.early_candidates.len() >= MAX_TOTAL_REMOTE_CANDIDATES {
            return;
        }
        if self.phase == Phase::New {
            // A transport-info that overtook session-accept: kept for `set_remote`, which
            // builds the `Rtc` that will use it.
            self.early_candidates.push(c.clone());
            return;
        }
        if let Some(c) = c.to_str0m_remote() {
            self.rtc.add_remote_candidate(c);
            self.remote_candidates += 1;
        }
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
            ..self.stats
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
        if self.is_verified() {
            self.latch_remote_ssrc(data);
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
            if self.is_ended() || self.phase == Phase::New {
                return SessionOutput::Timeout(self.last_now + Duration::from_secs(3600));
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
                Output::Timeout(t) => return SessionOutput::Timeout(t),
                Output::Transmit(t) => {
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
    pub fn close(&mut self) {
        if !self.is_ended() {
            self.rtc.disconnect();
            self.phase = Phase::Closed;
        }
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
            Event::IceConnectionStateChange(state) => match state {
                IceConnectionState::Connected | IceConnectionState::Completed
                    if self.stats.ice_connected.is_none() =>
                {
                    self.stats.ice_connected = Some(since_start);
                    self.events.push_back(MediaEvent::IceConnected);
                }
                IceConnectionState::Disconnected => self.fail(FailReason::IceDisconnected),
                _ => {}
            },
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

/// The Jingle `setup` we answer with, re-exported for the call engine's convenience.
pub fn answer_setup(remote: Setup) -> Setup {
    local_setup(JingleRole::Responder, Some(remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(seed: u64) -> MediaSession {
        let config = SessionConfig {
            role: JingleRole::Initiator,
            local_addrs: vec!["127.0.0.1:40000".parse().unwrap()],
            seed,
        };
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
            "no connectivity (ICE)"
        );
        assert_eq!(
            FailReason::Transport("dtls: bad record".into()).to_string(),
            "dtls: bad record"
        );
    }
}
