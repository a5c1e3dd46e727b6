//! The thin tokio driver: UDP sockets, TCP connections to TURN servers, name resolution, timers,
//! the 20 ms audio clock and clean shutdown around a [`MediaSession`]. All protocol decisions
//! (STUN, TURN, TLS, ICE, DTLS) stay in the session.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;
use tracing::{debug, warn};

use crate::audio::sink::AudioSink;
use crate::audio::source::AudioSource;
use crate::audio::{AudioError, FRAME_DURATION, FRAME_SAMPLES};
use crate::ice_servers::{IceServer, IceServerKind, ResolvedIceServer, TlsTrust};
use crate::params::{IceCandidate, IceUdpTransport, JingleRole};
use crate::session::{
    FailReason, MediaEvent, MediaSession, Phase, SessionConfig, SessionError, SessionOutput,
};
use crate::stats::CallStats;
use crate::turn::StreamId;

/// Largest datagram we read; larger ones are truncated by the OS and then fail to parse.
pub const MAX_DATAGRAM: usize = 2048;

/// Default bound on ICE + DTLS before the call is given up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Datagrams queued from the socket tasks to the session before the oldest are dropped.
pub const RECV_QUEUE: usize = 256;

/// If the audio clock falls this many frames behind (a stalled runtime), it skips ahead
/// instead of bursting.
pub const MAX_AUDIO_CATCH_UP: u32 = 5;

/// Longest wait for a STUN/TURN server's name to resolve; after it the server counts as failed.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait for a TCP connection to a TURN server.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Chunks queued towards one TCP connection before it is given up (a stalled server).
pub const STREAM_QUEUE: usize = 256;

/// Outputs drained after the session closed (TURN deallocations, stream closes).
const CLOSE_DRAIN: usize = 64;

/// How an endpoint reaches the network beyond its host addresses: what
/// [`MediaEndpoint::bind_with`] takes. The client fills it from XEP-0215 (or `--stun`/`--turn`).
#[derive(Debug, Clone, Default)]
pub struct MediaNetConfig {
    /// STUN servers (server-reflexive candidates) and TURN servers (relayed candidates over
    /// UDP, TCP or TLS). Names are resolved when binding (at most [`RESOLVE_TIMEOUT`] each);
    /// servers whose credentials expired, or that do not resolve, are reported as failed in the
    /// stats and events, and the call goes on without them.
    pub ice_servers: Vec<IceServer>,
    /// For `turns:` servers: trust the CA certificates in this PEM file instead of the system
    /// roots (tests: `Coturn::ca_file()`).
    pub ca_file: Option<PathBuf>,
    /// Use relayed candidates only: no host or server-reflexive candidate is announced or used,
    /// so the peer learns only the TURN server's address.
    pub relay_only: bool,
}

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A socket operation failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The session refused something.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// An audio source or sink failed.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// No local address was given.
    #[error("no local address to bind")]
    NoLocalAddress,
}

/// What the owner of a running endpoint can tell it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DriverCommand {
    /// A remote candidate that arrived after the run started (Jingle `transport-info`).
    AddRemoteCandidate(IceCandidate),
    /// The call engine allows media (its `PlayMedia`): with [`RunOptions::hold_media`], no frame
    /// is sent or played before this, even once DTLS proved the expected certificate.
    AllowMedia,
    /// Restart ICE from our side (to answer the peer's restart, or when paths broke): the new
    /// transport comes back as [`MediaEvent::IceRestarted`], to send in a `transport-info`.
    RestartIce,
    /// The host's addresses changed (Wi-Fi to mobile, a new DHCP lease): keep the sockets of
    /// the IPs still listed, bind one for each new IP, close the others, then restart ICE with
    /// the new host candidates (UDP TURN allocations of closed sockets are made again from a
    /// new one). The transport comes back as [`MediaEvent::IceRestarted`].
    RestartIceOn(Vec<IpAddr>),
    /// The peer restarted ICE (its `transport-info` with a new ufrag/pwd): take its new
    /// credentials and candidates. Refused ([`MediaEvent::IceRestartRefused`]) when it carries
    /// another fingerprint. To answer a peer's restart, send [`DriverCommand::RestartIce`] after
    /// this one.
    RemoteIceRestart(IceUdpTransport),
}

/// How long to run and whom to tell.
#[derive(Debug)]
pub struct RunOptions {
    /// Give up if DTLS is not verified by then.
    pub connect_timeout: Duration,
    /// Stop this long after media started (`None`: until stopped).
    pub media_duration: Option<Duration>,
    /// Events as they happen.
    pub events: Option<mpsc::UnboundedSender<MediaEvent>>,
    /// Resolve (or drop the sender) to hang up.
    pub stop: Option<oneshot::Receiver<()>>,
    /// Commands while running (late candidates, media allowed).
    pub commands: Option<mpsc::UnboundedReceiver<DriverCommand>>,
    /// Send and play nothing until [`DriverCommand::AllowMedia`]: the media gate checks the
    /// certificate, the call engine decides whether policy allows the call (`require_verified`).
    pub hold_media: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            media_duration: None,
            events: None,
            stop: None,
            commands: None,
            hold_media: false,
        }
    }
}

/// How a started endpoint runs ([`MediaEndpoint::start`]).
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Give up if DTLS is not verified by then.
    pub connect_timeout: Duration,
    /// Stop this long after media started (`None`: until stopped).
    pub media_duration: Option<Duration>,
    /// Send and play nothing until [`DriverCommand::AllowMedia`] (see [`RunOptions::hold_media`]).
    pub hold_media: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            media_duration: None,
            hold_media: false,
        }
    }
}

/// What a started endpoint reports, in order on one channel: its events as they happen, then
/// exactly one [`MediaUpdate::Ended`]. Nothing follows `Ended`, and no event of the run comes
/// after it, so the owner never has to look into the report for an event it may have missed.
#[derive(Debug)]
pub enum MediaUpdate {
    /// An event of the session (also kept in the report's `events`).
    Event(MediaEvent),
    /// The run is over: its report, or why it could not run to its end.
    Ended(Box<Result<CallReport, DriverError>>),
}

/// Control of a started endpoint; dropping it hangs up.
#[derive(Debug)]
pub struct MediaHandle {
    commands: mpsc::UnboundedSender<DriverCommand>,
    stop: Option<oneshot::Sender<()>>,
}

impl MediaHandle {
    /// Tells the running endpoint something; `false` once it has ended.
    pub fn send(&self, command: DriverCommand) -> bool {
        self.commands.send(command).is_ok()
    }

    /// Hangs up; the endpoint closes DTLS and its [`MediaUpdate::Ended`] follows. Idempotent.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// Final statistics.
    pub stats: CallStats,
    /// Every event, in order.
    pub events: Vec<MediaEvent>,
    /// Why it ended, if not by stop or duration.
    pub failure: Option<FailReason>,
    /// Frames handed to the sink.
    pub frames_to_sink: u64,
    /// Frames taken from the source and sent.
    pub frames_from_source: u64,
    /// Times the driver woke up (datagram, timer or audio tick): a measure of its overhead.
    pub wakeups: u64,
    /// What the capture device did, when the source was one.
    pub capture: Option<crate::audio::DeviceReport>,
    /// What the playback device did, when the sink was one.
    pub playback: Option<crate::audio::DeviceReport>,
}

/// A session with its bound sockets, before and while it runs.
pub struct MediaEndpoint {
    session: MediaSession,
    sockets: Vec<Arc<UdpSocket>>,
}

impl MediaEndpoint {
    /// Binds one UDP socket per local IP (port chosen by the OS) and creates the session that
    /// announces them as host candidates. Tests use `[127.0.0.1]`. No STUN/TURN servers: see
    /// [`MediaEndpoint::bind_with`].
    pub async fn bind(role: JingleRole, ips: &[IpAddr]) -> Result<Self, DriverError> {
        Self::bind_with(role, ips, MediaNetConfig::default()).await
    }

    /// Like [`MediaEndpoint::bind`], with STUN and TURN servers: resolves their names (tokio's
    /// `lookup_host`, bounded by [`RESOLVE_TIMEOUT`]), loads the trust for `turns:` servers
    /// (`net.ca_file`, else the system roots), and creates the session, which gathers
    /// server-reflexive and relayed candidates once the endpoint runs: each arrives as
    /// [`MediaEvent::LocalCandidate`], to trickle in a Jingle `transport-info`. A server that
    /// cannot be resolved, reached or authenticated with never fails the call: it is named in
    /// [`MediaEvent::IceServerFailed`], in [`CallStats::ice_servers`] and, if nothing connects,
    /// in the [`FailReason::ConnectTimeout`] of the report.
    ///
    /// ```no_run
    /// # use shieldcall_media::driver::{MediaEndpoint, MediaNetConfig};
    /// # use shieldcall_media::{IceServer, IceServerKind, IceTransport, JingleRole, Secret};
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let turn = IceServer {
    ///     kind: IceServerKind::Turn,
    ///     host: "turn.example.org".into(),
    ///     port: 3478,
    ///     transport: IceTransport::Udp,
    ///     username: Some("1700000000:alice".into()),
    ///     password: Some(Secret::new("from XEP-0215")),
    ///     expires: None,
    /// };
    /// let net = MediaNetConfig { ice_servers: vec![turn], ..MediaNetConfig::default() };
    /// let ips = shieldcall_media::driver::usable_host_ips()?;
    /// let mut ep = MediaEndpoint::bind_with(JingleRole::Initiator, &ips, net).await?;
    /// let _offer = ep.session().local_transport()?; // host candidates; the rest trickles
    /// # Ok(()) }
    /// ```
    pub async fn bind_with(
        role: JingleRole,
        ips: &[IpAddr],
        net: MediaNetConfig,
    ) -> Result<Self, DriverError> {
        if ips.is_empty() {
            return Err(DriverError::NoLocalAddress);
        }
        let mut sockets = Vec::new();
        for ip in ips {
            sockets.push(Arc::new(UdpSocket::bind(SocketAddr::new(*ip, 0)).await?));
        }
        let local_addrs = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        let mut ice_servers = resolve_servers(&net.ice_servers, &local_addrs).await;
        let mut tls_trust = None;
        if net
            .ice_servers
            .iter()
            .any(|s| s.kind == IceServerKind::Turns)
        {
            let trust = match &net.ca_file {
                Some(path) => TlsTrust::from_ca_file(path),
                None => TlsTrust::system(),
            };
            match trust {
                Ok(t) => tls_trust = Some(t),
                Err(e) => {
                    for s in ice_servers
                        .iter_mut()
                        .filter(|s| s.server.kind == IceServerKind::Turns)
                    {
                        s.addr = Err(format!("TLS trust: {e}"));
                    }
                }
            }
        }
        let config = SessionConfig {
            role,
            local_addrs,
            seed: fresh_seed(),
            ice_servers,
            relay_only: net.relay_only,
            tls_trust,
        };
        let session = MediaSession::new(config, Instant::now())?;
        Ok(Self { session, sockets })
    }

    /// Like [`MediaEndpoint::bind`] on every usable interface ([`usable_host_ips`]).
    pub async fn bind_usable(role: JingleRole) -> Result<Self, DriverError> {
        Self::bind(role, &usable_host_ips()?).await
    }

    /// The session, for `local_transport`, `local_description`, `set_remote` and candidates.
    pub fn session(&mut self) -> &mut MediaSession {
        &mut self.session
    }

    /// Starts the call on its own tokio task and returns its handle. Everything it reports goes
    /// to `updates`, tagged with `tag` (so one channel serves all calls of a client), in order:
    /// the events, then one [`MediaUpdate::Ended`] with the report.
    ///
    /// The source is not read and the sink gets nothing until the peer is verified (and, with
    /// [`StartOptions::hold_media`], until [`DriverCommand::AllowMedia`]).
    pub fn start<T: Clone + Send + 'static>(
        self,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
        options: StartOptions,
        updates: mpsc::UnboundedSender<(T, MediaUpdate)>,
        tag: T,
    ) -> MediaHandle {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel();
        let run = RunOptions {
            connect_timeout: options.connect_timeout,
            media_duration: options.media_duration,
            events: None,
            stop: Some(stop_rx),
            commands: Some(commands_rx),
            hold_media: options.hold_media,
        };
        tokio::spawn(async move {
            let events = updates.clone();
            let event_tag = tag.clone();
            let emit = move |e: MediaEvent| {
                let _ = events.send((event_tag.clone(), MediaUpdate::Event(e)));
            };
            let report = self.run_with(source, sink, run, emit).await;
            let _ = updates.send((tag, MediaUpdate::Ended(Box::new(report))));
        });
        MediaHandle {
            commands,
            stop: Some(stop),
        }
    }

    /// Runs the call in place until stop, the media duration, a failure or the connect
    /// timeout; events go to [`RunOptions::events`] as they happen. (A client with several
    /// calls uses [`MediaEndpoint::start`].)
    ///
    /// The source is not read and the sink gets nothing until the peer is verified.
    pub async fn run(
        self,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
        mut options: RunOptions,
    ) -> Result<CallReport, DriverError> {
        let events = options.events.take();
        let emit = move |e: MediaEvent| {
            if let Some(ev) = &events {
                let _ = ev.send(e);
            }
        };
        self.run_with(source, sink, options, emit).await
    }

    async fn run_with(
        self,
        mut source: Box<dyn AudioSource>,
        mut sink: Box<dyn AudioSink>,
        mut options: RunOptions,
        mut emit: impl FnMut(MediaEvent) + Send,
    ) -> Result<CallReport, DriverError> {
        let Self {
            mut session,
            mut sockets,
        } = self;
        let mut local_addrs = session.local_addrs().to_vec();
        let (tx, mut rx) = mpsc::channel::<(Vec<u8>, SocketAddr, SocketAddr)>(RECV_QUEUE);
        let mut readers = Vec::new();
        for socket in &sockets {
            readers.push(tokio::spawn(read_socket(socket.clone(), tx.clone())));
        }

        let (stream_tx, mut stream_rx) = mpsc::channel::<(StreamId, StreamIn)>(RECV_QUEUE);
        let mut streams: HashMap<StreamId, mpsc::Sender<Vec<u8>>> = HashMap::new();

        let start = Instant::now();
        let connect_deadline = start + options.connect_timeout;
        let mut media_end: Option<Instant> = None;
        let mut media_started = false;
        let mut next_tick = start + FRAME_DURATION;
        let mut frame = [0i16; FRAME_SAMPLES];
        // The peer's audio has started playing: from here on every tick reaches the sink.
        let mut playing = false;
        let mut report = CallReport {
            stats: CallStats::default(),
            events: Vec::new(),
            failure: None,
            frames_to_sink: 0,
            frames_from_source: 0,
            wakeups: 0,
            capture: None,
            playback: None,
        };
        let mut stop = options.stop.take();
        let mut commands = options.commands.take();
        let mut allowed = !options.hold_media;

        'call: loop {
            report.wakeups += 1;
            // Drain the session.
            let timeout = loop {
                match session.poll_output() {
                    SessionOutput::Transmit {
                        source,
                        destination,
                        contents,
                    } => {
                        send_datagram(&sockets, &local_addrs, source, destination, &contents).await
                    }
                    SessionOutput::Event(e) => {
                        debug!(?e, "media event");
                        emit(e.clone());
                        report.events.push(e);
                    }
                    SessionOutput::StreamConnect {
                        stream,
                        destination,
                    } => {
                        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                        streams.insert(stream, tx);
                        tokio::spawn(run_stream(stream, destination, rx, stream_tx.clone()));
                    }
                    SessionOutput::StreamSend { stream, contents } => {
                        let sent = streams.get(&stream).map(|tx| tx.try_send(contents));
                        if let Some(Err(_)) = sent {
                            // A stream that cannot keep up is given up, not buffered forever.
                            streams.remove(&stream);
                            session.handle_stream_closed(
                                Instant::now(),
                                stream,
                                "the TCP connection stalled",
                            );
                        }
                    }
                    SessionOutput::StreamClose { stream } => {
                        streams.remove(&stream);
                    }
                    SessionOutput::Timeout(t) => break t,
                }
            };
            let now = Instant::now();
            match session.phase() {
                Phase::Failed(reason) => {
                    report.failure = Some(reason.clone());
                    break;
                }
                // The peer closed DTLS (close_notify): the call is over.
                Phase::Closed => break,
                _ => {}
            }
            let media_on = session.is_verified() && allowed;
            if media_on {
                // Once: without a media duration, media_end stays None, and resetting the audio
                // clock on every wake-up would send frames in a busy loop.
                if !media_started {
                    media_started = true;
                    media_end = options.media_duration.map(|d| now + d);
                    next_tick = now;
                }
            } else if !session.is_verified() && now >= connect_deadline {
                report.failure = Some(session.connect_failure());
                break;
            }
            if media_end.is_some_and(|end| now >= end) {
                break;
            }

            // Audio clock: one frame each way per 20 ms, only once verified and allowed.
            if media_on && now >= next_tick {
                if now.saturating_duration_since(next_tick) > FRAME_DURATION * MAX_AUDIO_CATCH_UP {
                    next_tick = now;
                }
                source.next_frame(&mut frame)?;
                if session.send_frame(now, &frame)? {
                    report.frames_from_source += 1;
                }
                if session.play_frame(now, &mut frame) {
                    sink.write_frame(&frame)?;
                    report.frames_to_sink += 1;
                    playing = true;
                } else if playing {
                    // Nothing to play in the middle of a call (an outage, a network change):
                    // the sink gets silence in real time, so a recording keeps the call's
                    // timeline and a speaker is not starved.
                    frame.fill(0);
                    sink.write_frame(&frame)?;
                }
                next_tick += FRAME_DURATION;
                continue 'call;
            }

            let mut wake = timeout;
            if !session.is_verified() {
                wake = wake.min(connect_deadline.max(now));
            }
            if media_on {
                wake = wake.min(next_tick);
            }
            if let Some(end) = media_end {
                wake = wake.min(end);
            }
            let stop_signal = async {
                match stop.as_mut() {
                    Some(rx) => {
                        let _ = rx.await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let command = async {
                match commands.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = command => match cmd {
                    Some(DriverCommand::AddRemoteCandidate(c)) => session.add_remote_candidate(&c),
                    Some(DriverCommand::AllowMedia) => allowed = true,
                    Some(DriverCommand::RestartIce) => match session.restart_ice(Instant::now()) {
                        Ok(t) => session.push_event(MediaEvent::IceRestarted(t)),
                        Err(e) => warn!(%e, "ICE restart not possible"),
                    },
                    Some(DriverCommand::RestartIceOn(ips)) => {
                        match rebind(&ips, &mut sockets, &mut readers, &tx).await {
                            Ok(addrs) => {
                                local_addrs = addrs.clone();
                                let restarted = session
                                    .set_host_addrs(addrs)
                                    .and_then(|()| session.restart_ice(Instant::now()));
                                match restarted {
                                    Ok(t) => session.push_event(MediaEvent::IceRestarted(t)),
                                    Err(e) => warn!(%e, "ICE restart not possible"),
                                }
                            }
                            Err(e) => warn!(%e, "cannot bind the new host addresses"),
                        }
                    }
                    Some(DriverCommand::RemoteIceRestart(t)) => {
                        if let Err(e) = session.accept_remote_restart(&t, Instant::now()) {
                            let fingerprint_changed =
                                matches!(e, SessionError::RestartChangesFingerprint { .. });
                            session.push_event(MediaEvent::IceRestartRefused {
                                reason: e.to_string(),
                                fingerprint_changed,
                            });
                        }
                    }
                    // The owner went away without a stop: keep running until stop or the end.
                    None => commands = None,
                },
                datagram = rx.recv() => match datagram {
                    Some((data, from, to)) => session.handle_receive(Instant::now(), from, to, &data),
                    None => break 'call,
                },
                Some((stream, input)) = stream_rx.recv() => {
                    let now = Instant::now();
                    match input {
                        StreamIn::Connected(local) => session.handle_stream_connected(now, stream, local),
                        StreamIn::Data(data) => session.handle_stream_data(now, stream, &data),
                        StreamIn::Closed(why) => {
                            streams.remove(&stream);
                            session.handle_stream_closed(now, stream, &why);
                        }
                    }
                },
                _ = sleep_until(tokio::time::Instant::from_std(wake)) => {
                    session.handle_timeout(Instant::now());
                }
                _ = stop_signal => break 'call,
            }
        }

        session.close();
        // Release the TURN allocations and close the streams (bounded; nothing is awaited back).
        for _ in 0..CLOSE_DRAIN {
            match session.poll_output() {
                SessionOutput::Transmit {
                    source,
                    destination,
                    contents,
                } => send_datagram(&sockets, &local_addrs, source, destination, &contents).await,
                SessionOutput::StreamSend { stream, contents } => {
                    if let Some(tx) = streams.get(&stream) {
                        let _ = tx.try_send(contents);
                    }
                }
                SessionOutput::StreamClose { stream } => {
                    streams.remove(&stream);
                }
                SessionOutput::Event(e) => report.events.push(e),
                SessionOutput::StreamConnect { .. } => {}
                SessionOutput::Timeout(_) => break,
            }
        }
        drop(streams); // each stream task writes what it has queued, then ends
        for r in readers {
            r.abort();
        }
        sink.finish()?;
        report.stats = session.stats();
        report.capture = source.device_report();
        report.playback = sink.device_report();
        Ok(report)
    }
}

/// What a TCP connection task tells the run loop.
#[derive(Debug)]
enum StreamIn {
    Connected(SocketAddr),
    Data(Vec<u8>),
    Closed(String),
}

/// Makes the sockets those of `ips` (kept where the IP already has one, bound anew where not),
/// with a reader each; returns their addresses, in order.
async fn rebind(
    ips: &[IpAddr],
    sockets: &mut Vec<Arc<UdpSocket>>,
    readers: &mut Vec<tokio::task::JoinHandle<()>>,
    tx: &mpsc::Sender<(Vec<u8>, SocketAddr, SocketAddr)>,
) -> Result<Vec<SocketAddr>, DriverError> {
    if ips.is_empty() {
        return Err(DriverError::NoLocalAddress);
    }
    let mut fresh = Vec::new();
    for ip in ips {
        let kept = sockets
            .iter()
            .position(|s| s.local_addr().is_ok_and(|a| a.ip() == *ip));
        match kept {
            Some(i) => fresh.push((sockets[i].clone(), None)),
            None => {
                let s = Arc::new(UdpSocket::bind(SocketAddr::new(*ip, 0)).await?);
                let reader = tokio::spawn(read_socket(s.clone(), tx.clone()));
                fresh.push((s, Some(reader)));
            }
        }
    }
    let mut old_readers = std::mem::take(readers).into_iter();
    let old_sockets = std::mem::take(sockets);
    for s in old_sockets {
        let reader = old_readers.next();
        let still = fresh.iter().any(|(f, _)| Arc::ptr_eq(f, &s));
        match (still, reader) {
            (true, Some(r)) => {
                if let Some(slot) = fresh.iter_mut().find(|(f, _)| Arc::ptr_eq(f, &s)) {
                    slot.1 = Some(r);
                }
            }
            (false, Some(r)) => r.abort(),
            _ => {}
        }
    }
    let mut addrs = Vec::new();
    for (s, r) in fresh {
        addrs.push(s.local_addr()?);
        sockets.push(s);
        if let Some(r) = r {
            readers.push(r);
        }
    }
    Ok(addrs)
}

/// Sends a datagram from the socket bound to `source` (the first one if none is).
async fn send_datagram(
    sockets: &[Arc<UdpSocket>],
    local_addrs: &[SocketAddr],
    source: SocketAddr,
    destination: SocketAddr,
    contents: &[u8],
) {
    let socket = local_addrs
        .iter()
        .position(|a| *a == source)
        .and_then(|i| sockets.get(i))
        .or(sockets.first());
    if let Some(s) = socket {
        // Loss on send is like loss on the wire; ICE and Opus cope.
        let _ = s.send_to(contents, destination).await;
    }
}

/// One TCP connection to a TURN server: connects (bounded), then copies bytes both ways until
/// either side ends. TLS, framing and TURN are the session's.
async fn run_stream(
    id: StreamId,
    to: SocketAddr,
    mut writes: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<(StreamId, StreamIn)>,
) {
    let conn = match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(to)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let _ = events
                .send((id, StreamIn::Closed(format!("TCP connection failed: {e}"))))
                .await;
            return;
        }
        Err(_) => {
            let why = format!(
                "no TCP connection within {} s",
                TCP_CONNECT_TIMEOUT.as_secs()
            );
            let _ = events.send((id, StreamIn::Closed(why))).await;
            return;
        }
    };
    let _ = conn.set_nodelay(true);
    let local = match conn.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = events
                .send((id, StreamIn::Closed(format!("TCP: {e}"))))
                .await;
            return;
        }
    };
    if events.send((id, StreamIn::Connected(local))).await.is_err() {
        return;
    }
    let (mut read, mut write) = conn.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = read.read(&mut buf) => {
                let input = match n {
                    Ok(0) => StreamIn::Closed("the server closed the TCP connection".into()),
                    Ok(n) => StreamIn::Data(buf[..n].to_vec()),
                    Err(e) => StreamIn::Closed(format!("TCP: {e}")),
                };
                let end = matches!(input, StreamIn::Closed(_));
                if events.send((id, input)).await.is_err() || end {
                    return;
                }
            }
            data = writes.recv() => match data {
                Some(d) => {
                    if let Err(e) = write.write_all(&d).await {
                        let _ = events.send((id, StreamIn::Closed(format!("TCP: {e}")))).await;
                        return;
                    }
                }
                None => {
                    let _ = write.shutdown().await;
                    return;
                }
            },
        }
    }
}

/// Resolves each server to an address of a family we have a socket for; what does not resolve
/// (or whose credentials expired) keeps the reason instead.
async fn resolve_servers(servers: &[IceServer], local: &[SocketAddr]) -> Vec<ResolvedIceServer> {
    let mut out = Vec::with_capacity(servers.len());
    for server in servers {
        let addr = resolve_one(server, local).await;
        if let Err(why) = &addr {
            warn!(server = %server.label(), %why, "ICE server unusable");
        }
        out.push(ResolvedIceServer {
            server: server.clone(),
            addr,
        });
    }
    out
}

async fn resolve_one(server: &IceServer, local: &[SocketAddr]) -> Result<SocketAddr, String> {
    if server.expires.is_some_and(|e| e <= SystemTime::now()) {
        return Err("its credentials expired".to_owned());
    }
    let lookup = tokio::net::lookup_host((server.host.as_str(), server.port));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => return Err(format!("cannot resolve {}: {e}", server.host)),
        Err(_) => {
            return Err(format!(
                "no answer resolving {} within {} s",
                server.host,
                RESOLVE_TIMEOUT.as_secs()
            ));
        }
    };
    // The first address of a family one of our sockets has (in our sockets' order).
    local
        .iter()
        .find_map(|l| addrs.iter().find(|a| a.is_ipv4() == l.is_ipv4()).copied())
        .ok_or_else(|| format!("{} has no address of our address families", server.host))
}

/// A fresh seed for a session's random values ([`SessionConfig::seed`]), from the std hasher's
/// OS-seeded keys and the clock (no extra dependency for values that need not be secret).
pub fn fresh_seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Host addresses worth announcing as candidates: up interfaces, not loopback, not
/// link-local (Jingle peers are never on-link by IPv6 scope id), IPv4 and IPv6.
pub fn usable_host_ips() -> Result<Vec<IpAddr>, DriverError> {
    let ips = if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| i.ip())
        .collect::<Vec<_>>();
    Ok(filter_usable(ips))
}

fn filter_usable(ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in ips {
        let usable = match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
            IpAddr::V6(v6) => {
                !v6.is_loopback()
                    && !v6.is_unspecified()
                    && !v6.is_unicast_link_local()
                    && !v6.is_multicast()
            }
        };
        if usable && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

async fn read_socket(socket: Arc<UdpSocket>, tx: mpsc::Sender<(Vec<u8>, SocketAddr, SocketAddr)>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                // Full queue: drop, as a congested network would.
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    tx.try_send((buf[..n].to_vec(), from, local))
                {
                    return;
                }
            }
            // ICMP port unreachable and the like surface here on Linux: keep reading.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_addresses_exclude_loopback_and_link_local() {
        let ips = [
            "127.0.0.1",
            "169.254.1.1",
            "192.0.2.7",
            "::1",
            "fe80::1",
            "2001:db8::5",
            "192.0.2.7",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let got = filter_usable(ips);
        let want: Vec<IpAddr> = vec!["192.0.2.7".parse().unwrap(), "2001:db8::5".parse().unwrap()];
        assert_eq!(got, want);
    }

    #[test]
    fn enumerating_interfaces_works_here() {
        // Whatever this machine has, the call succeeds and never yields loopback.
        let ips = usable_host_ips().unwrap();
        assert!(ips.iter().all(|ip| !ip.is_loopback()));
    }

    async fn lone_endpoint() -> MediaEndpoint {
        MediaEndpoint::bind(JingleRole::Initiator, &[IpAddr::from([127, 0, 0, 1])])
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn stop_ends_the_run_promptly() {
        use crate::audio::sink::NullSink;
        use crate::audio::source::SilenceSource;
        let (tx, rx) = oneshot::channel();
        let t = Instant::now();
        let run = tokio::spawn(lone_endpoint().await.run(
            Box::new(SilenceSource),
            Box::new(NullSink::default()),
            RunOptions {
                stop: Some(rx),
                ..Default::default()
            },
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(()).unwrap();
        let report = run.await.unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(report.failure.is_none());
        assert_eq!(report.frames_to_sink + report.frames_from_source, 0);
    }

    #[tokio::test]
    async fn no_peer_ends_at_the_connect_timeout() {
        use crate::audio::sink::NullSink;
        use crate::audio::source::SilenceSource;
        let report = lone_endpoint()
            .await
            .run(
                Box::new(SilenceSource),
                Box::new(NullSink::default()),
                RunOptions {
                    connect_timeout: Duration::from_millis(200),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            report.failure,
            Some(FailReason::ConnectTimeout {
                ice_servers: vec![]
            })
        );
    }

    #[tokio::test]
    async fn binding_nothing_is_an_error() {
        assert!(matches!(
            MediaEndpoint::bind(JingleRole::Initiator, &[]).await,
            Err(DriverError::NoLocalAddress)
        ));
    }
}
