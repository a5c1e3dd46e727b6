//! The call service: joins the call engine (`shieldcall-jingle`), the media engine
//! (`shieldcall-media`) and the OMEMO service into calls on a live connection.
//!
//! One task owns everything: the engine (which owns the OMEMO service through [`CallCrypto`]),
//! the calls' media endpoints and the connection's incoming stanzas. Each running media endpoint
//! is its own task; it reports events and its final report back over channels. Nothing here
//! decides about security: the engine decides what is verified and when media may play; the
//! media gate checks the DTLS certificate; this module carries their inputs and outputs.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use minidom::Element;
use serde_json::{Value, json};
use shieldcall_jingle::verification::{CryptoError, Decrypted, Encrypted, Trust};
use shieldcall_jingle::{
    CallEnd, Config, ContactPolicy, Downgrade, Engine, Event, Handled, IdentityKey, Media,
    MediaEvent as EngineMedia, OmemoCrypto, Output, RemoteContent, Role, Shield, UserAction,
};
use shieldcall_media as media;
use shieldcall_media::audio::sink::{AudioSink, NullSink, WavSink};
use shieldcall_media::audio::source::{AudioSource, SilenceSource, ToneSource, WavSource};
use shieldcall_media::driver::{CallReport, DriverCommand, DriverError, MediaEndpoint, RunOptions};
use shieldcall_omemo::account::DecryptLimits;
use shieldcall_omemo::xml::EncryptedElement;
use shieldcall_omemo::{Recipient, Store as _, TrustLevel};
use tokio::sync::{mpsc, oneshot};
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::message::Message;
use xmpp_parsers::stanza::Stanza;

use crate::connection::Incoming;
use crate::error::ClientError;
use crate::media_params;
use crate::omemo_service::OmemoService;
use crate::output::Output as Printer;
use crate::presence;

/// How long ICE + DTLS may take once both sides know each other's parameters.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a hang-up on SIGINT/SIGTERM may take before we leave anyway.
pub const HANGUP_GRACE: Duration = Duration::from_secs(3);
/// How long going offline may wait for the server (each of: ping answer, stream close).
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long we wait for a stopped media endpoint's final report.
pub const MEDIA_STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// Ring timeout of `listen` (only its own proposals would use it).
pub const DEFAULT_RING_TIMEOUT: f64 = 30.0;
/// Tone amplitude (of full scale) for `--tone`.
pub const TONE_AMPLITUDE: f64 = 0.3;
/// How often a running call looks for trust or policy changes made by another process
/// (`shieldcall trust` in another terminal): well within the second it must take.
pub const TRUST_POLL: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// OMEMO for the engine

/// The engine's OMEMO: the account's sessions, one device at a time, and the user's call
/// policies.
///
/// Encrypting needs an existing session; the service builds it from the peer's bundle on
/// `<proceed/>` before the engine encrypts (see [`CallService`]). With OMEMO switched off
/// (`--no-omemo`) there is no own device id, so the engine never asks for verification.
/// An encrypted fingerprint must carry exactly one key for us ([`DecryptLimits::SINGLE_KEY`]).
#[derive(Debug)]
pub struct CallCrypto {
    svc: OmemoService,
    enabled: bool,
    /// A PreKeySignalMessage consumed a prekey: the bundle must be republished.
    bundle_changed: bool,
}

impl CallCrypto {
    /// Wraps the OMEMO service; `enabled = false` announces no device (plain calls only).
    pub fn new(svc: OmemoService, enabled: bool) -> Self {
        Self {
            svc,
            enabled,
            bundle_changed: false,
        }
    }

    /// Whether the user verified a key of `peer`.
    fn has_verified_key(
        &self,
        peer: &BareJid,
    ) -> Result<bool, shieldcall_omemo::error::StoreError> {
        Ok(self
            .svc
            .account()
            .store()
            .identities(peer.as_str())?
            .iter()
            .any(|(_, t)| *t == TrustLevel::Verified))
    }

    /// The OMEMO service.
    pub fn service(&mut self) -> &mut OmemoService {
        &mut self.svc
    }
}

fn trust_for_engine(t: TrustLevel) -> Trust {
    match t {
        TrustLevel::Verified => Trust::Verified,
        TrustLevel::BlindlyTrusted => Trust::Trusted,
        TrustLevel::Undecided => Trust::Undecided,
        TrustLevel::Distrusted => Trust::Untrusted,
    }
}

impl OmemoCrypto for CallCrypto {
    fn own_device_id(&self) -> Option<u32> {
        self.enabled.then(|| self.svc.account().device_id())
    }

    fn encrypt(
        &mut self,
        peer: &BareJid,
        device: u32,
        plaintext: &[u8],
    ) -> Result<Encrypted, CryptoError> {
        if !self.enabled {
            return Err(CryptoError::Other("OMEMO is switched off".into()));
        }
        let account = self.svc.account_mut();
        let identity = account
            .session_identity(peer.as_str(), device)
            .map_err(|e| CryptoError::Other(e.to_string()))?
            .ok_or(CryptoError::NoSession(device))?;
        let encrypted = account
            .encrypt(&[Recipient::new(peer.as_str(), device)], plaintext)
            .map_err(|e| CryptoError::Other(e.to_string()))?;
        Ok(Encrypted {
            element: encrypted.to_element(),
            identity_key: identity.serialize(),
        })
    }

    fn decrypt(&mut self, peer: &BareJid, encrypted: &Element) -> Result<Decrypted, CryptoError> {
        if !self.enabled {
            return Err(CryptoError::Other("OMEMO is switched off".into()));
        }
        let parsed = EncryptedElement::from_element(encrypted)
            .map_err(|e| CryptoError::InvalidMessage(e.to_string()))?;
        let d = self
            .svc
            .account_mut()
            .decrypt_with(peer.as_str(), &parsed, &DecryptLimits::SINGLE_KEY)
            .map_err(|e| match e {
                shieldcall_omemo::Error::NotForThisDevice { .. } => CryptoError::NotForThisDevice,
                other => CryptoError::InvalidMessage(other.to_string()),
            })?;
        self.bundle_changed |= d.bundle_changed;
        let plaintext = d
            .plaintext
            .ok_or_else(|| CryptoError::InvalidMessage("no payload".into()))?;
        Ok(Decrypted {
            plaintext,
            device: d.sender_device,
            identity_key: d.sender_identity.serialize(),
        })
    }

    fn trust(&self, peer: &BareJid, identity_key: &[u8; 33]) -> Trust {
        let Ok(key) = shieldcall_omemo::PublicKey::from_bytes("identity", identity_key) else {
            return Trust::Untrusted;
        };
        match self.svc.account().trust(peer.as_str(), &key) {
            Ok(t) => trust_for_engine(t),
            // A storage failure must never look like trust.
            Err(_) => Trust::Untrusted,
        }
    }

    fn session_identity(&self, peer: &BareJid, device: u32) -> Option<IdentityKey> {
        self.svc
            .account()
            .session_identity(peer.as_str(), device)
            .ok()
            .flatten()
            .map(|k| k.serialize())
    }

    fn contact_policy(&self, peer: &BareJid) -> ContactPolicy {
        let settings = self.svc.policies().contact(peer.as_str());
        match (settings, self.has_verified_key(peer)) {
            (Ok(s), Ok(verified_key)) => ContactPolicy {
                require_verified: s.require_verified(),
                expect_verified: verified_key || s.last_verified_call.is_some(),
            },
            // A storage failure must never relax a policy: refuse what cannot be verified.
            _ => ContactPolicy {
                require_verified: true,
                expect_verified: true,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// options

/// What we send.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioIn {
    /// A sine tone of this frequency in Hz.
    Tone(f64),
    /// A WAV file (looped; see `WavSource`).
    Wav(PathBuf),
    /// A capture device: the default one, or the one of this name (`audio-devices` lists them).
    Device(Option<String>),
    /// Silence.
    Silence,
}

/// Where what we hear goes.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioOut {
    /// A 16-bit PCM mono 48 kHz WAV file; later calls of one `listen` get `-2`, `-3`… suffixes.
    Wav(PathBuf),
    /// A playback device: the default one, or the one of this name.
    Device(Option<String>),
    /// Nowhere.
    Discard,
}

/// How `listen` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Accept every call (one at a time; others are declined while busy).
    Auto,
    /// Decline every call.
    Reject,
    /// Ask on the terminal.
    Ask,
}

/// What the service does.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Call this contact, then end.
    Call(BareJid),
    /// Wait for calls (and messages) until a signal.
    Listen(Answer),
}

/// Options of `call` and `listen`.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Refuse or end every call that cannot be verified.
    pub require_verified: bool,
    /// Use OMEMO for the fingerprints (announce our device in `<proceed/>`).
    pub omemo: bool,
    /// Local addresses for media (host candidates); empty = every usable interface.
    pub media_ips: Vec<IpAddr>,
    /// What we send.
    pub input: AudioIn,
    /// Where what we hear goes.
    pub output: AudioOut,
    /// Hang up this long after media started (`call`).
    pub duration: Option<Duration>,
    /// Give up a proposal nobody answers after this long.
    pub ring_timeout: Duration,
    /// Why the audio device cannot be used, if it cannot: incoming calls are declined.
    pub audio_unavailable: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// per-call state

struct Running {
    commands: mpsc::UnboundedSender<DriverCommand>,
    stop: Option<oneshot::Sender<()>>,
}

struct CallState {
    peer: String,
    peer_bare: BareJid,
    started: Instant,
    endpoint: Option<MediaEndpoint>,
    remote: Vec<RemoteContent>,
    running: Option<Running>,
    shield_at: Option<Duration>,
    first_audio_at: Option<Duration>,
    connected: bool,
    hangup_at: Option<Instant>,
    /// The engine has ended the call; we wait for the media report to print the stats.
    ended: Option<(String, String)>,
    ended_at: Option<Instant>,
    recording: Option<PathBuf>,
    /// Last state and shield with its device, for the live status line.
    state: String,
    shield: Option<Shield>,
    device: Option<u32>,
    connected_at: Option<Instant>,
}

impl CallState {
    fn new(peer: String, peer_bare: BareJid, now: Instant) -> Self {
        Self {
            peer,
            peer_bare,
            started: now,
            endpoint: None,
            remote: Vec::new(),
            running: None,
            shield_at: None,
            first_audio_at: None,
            connected: false,
            hangup_at: None,
            ended: None,
            ended_at: None,
            recording: None,
            state: String::new(),
            shield: None,
            device: None,
            connected_at: None,
        }
    }
}

/// Words and a symbol for a shield (the status line and `--help` use the same).
pub fn shield_words(s: Shield) -> (&'static str, &'static str, &'static str) {
    match s {
        Shield::Verified => ("verified", "\u{1F6E1}", "verified"),
        Shield::Encrypted => ("encrypted", "\u{1F512}", "encrypted, not verified"),
        Shield::None => ("none", "\u{26A0}", "not verified"),
    }
}

fn reason_name(r: &xmpp_parsers::jingle::Reason) -> String {
    Element::from(r.clone()).name().to_owned()
}

/// The `reason` and `text` of the `ended` event.
pub fn end_reason(end: &CallEnd) -> (String, String) {
    match end {
        CallEnd::LocalHangup => ("success".into(), "you hung up".into()),
        CallEnd::LocalReject => ("decline".into(), "you declined".into()),
        CallEnd::PeerTerminated(r) => (reason_name(r), "the peer ended the call".into()),
        CallEnd::Declined => ("decline".into(), "the callee declined".into()),
        CallEnd::Retracted => (
            "retracted".into(),
            "the caller hung up before the answer".into(),
        ),
        CallEnd::Timeout => ("timeout".into(), "nobody answered".into()),
        CallEnd::AnsweredElsewhere => (
            "answered-elsewhere".into(),
            "answered on another device of this account".into(),
        ),
        CallEnd::RejectedElsewhere => (
            "rejected-elsewhere".into(),
            "declined on another device of this account".into(),
        ),
        CallEnd::Superseded(other) => (
            "superseded".into(),
            format!("both called at once; the other call ({other}) goes on"),
        ),
        CallEnd::Failed(e) => (reason_name(&e.reason()), e.to_string()),
        CallEnd::PeerError => (
            "failed-application".into(),
            "the peer answered with an error".into(),
        ),
    }
}

fn random_sid() -> Result<String, ClientError> {
    use base64::Engine as _;
    let bytes = shieldcall_omemo::secret::random_bytes::<16>()?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    if n <= 1 {
        return path.to_owned();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    path.with_file_name(name)
}

// ---------------------------------------------------------------------------------------------
// the service

/// What woke the service's loop.
enum Wake {
    Signal,
    Incoming(Option<Incoming>),
    Media(String, media::MediaEvent),
    MediaDone(String, Box<Result<CallReport, DriverError>>),
    Line(String),
    Timer,
}

/// Calls on one connection: see the module docs.
pub struct CallService {
    engine: Engine<CallCrypto>,
    opts: CallOptions,
    out: Printer,
    mode: Mode,
    calls: BTreeMap<String, CallState>,
    media_tx: mpsc::UnboundedSender<(String, media::MediaEvent)>,
    media_rx: mpsc::UnboundedReceiver<(String, media::MediaEvent)>,
    done_tx: mpsc::UnboundedSender<(String, Result<CallReport, DriverError>)>,
    done_rx: mpsc::UnboundedReceiver<(String, Result<CallReport, DriverError>)>,
    /// Reports of media that stopped before the engine ended the call.
    pending_reports: BTreeMap<String, Result<CallReport, DriverError>>,
    /// Calls taken so far (numbers recordings).
    answered: usize,
    /// `call`: our call ended with success after media flowed.
    outcome: Option<bool>,
    /// Waiting for the user's yes/no on this call.
    asking: Option<String>,
    tty: bool,
    /// The live status line is on screen (see [`CallService::draw_status`]).
    status_shown: bool,
}

impl std::fmt::Debug for CallService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallService")
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

impl CallService {
    /// A service for the account of `svc`, announcing call support when it goes online.
    pub fn new(svc: OmemoService, mode: Mode, opts: CallOptions, out: Printer) -> Self {
        let own = svc.xmpp().jid.clone();
        let mut config = Config::new(own);
        config.require_verified = opts.require_verified;
        config.ring_timeout = opts.ring_timeout;
        let engine = Engine::new(config, CallCrypto::new(svc, opts.omemo));
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            engine,
            opts,
            out,
            mode,
            calls: BTreeMap::new(),
            media_tx,
            media_rx,
            done_tx,
            done_rx,
            pending_reports: BTreeMap::new(),
            answered: 0,
            outcome: None,
            asking: None,
            tty: std::io::stdout().is_terminal(),
            status_shown: false,
        }
    }

    fn svc(&mut self) -> &mut OmemoService {
        self.engine.crypto_mut().service()
    }

    /// Runs until the call ends (`call`) or a signal (`listen`). Returns whether a `call`
    /// connected and ended normally (always `true` for `listen`).
    pub async fn run(
        mut self,
        mut incoming: mpsc::UnboundedReceiver<Incoming>,
    ) -> Result<bool, ClientError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigint =
            signal(SignalKind::interrupt()).map_err(|e| ClientError::Io(e.to_string()))?;
        let mut sigterm =
            signal(SignalKind::terminate()).map_err(|e| ClientError::Io(e.to_string()))?;

        presence::go_online(self.svc().xmpp(), true).await?;
        let jid = self.svc().xmpp().jid.to_string();
        self.out.event("online", json!({ "jid": jid }), || {
            format!("online as {jid}")
        });

        // Answers typed on the terminal (listen without --auto-answer/--reject).
        let (line_tx, mut lines) = mpsc::unbounded_channel::<String>();
        if matches!(self.mode, Mode::Listen(Answer::Ask)) {
            std::thread::spawn(move || {
                for line in std::io::stdin().lines().map_while(Result::ok) {
                    if line_tx.send(line).is_err() {
                        return;
                    }
                }
            });
        } else {
            drop(line_tx);
        }

        if let Mode::Call(peer) = self.mode.clone() {
            let sid = random_sid()?;
            let now = Instant::now();
            self.calls.insert(
                sid.clone(),
                CallState::new(peer.to_string(), peer.clone(), now),
            );
            let action = UserAction::Call {
                peer: peer.clone(),
                sid: sid.clone(),
                media: vec![Media::Audio],
            };
            if let Err(e) = self.engine.handle_user(now, action) {
                self.calls.remove(&sid);
                let why = match e {
                    shieldcall_jingle::ApiError::NotVerifiable => format!(
                        "this call cannot be verified (OMEMO is off), and calls with {peer} must \
                         be (--require-verified, or `shieldcall policy`)"
                    ),
                    other => other.to_string(),
                };
                return Err(ClientError::Usage(why));
            }
            self.state(&sid, "proposing", json!({}));
        }

        let mut quit_at: Option<Instant> = None;
        // Start counting trust and policy changes now: one made from here on counts.
        self.check_trust_elsewhere();
        let mut next_trust_check = Instant::now() + TRUST_POLL;
        loop {
            self.clear_status();
            if !self.calls.is_empty() && Instant::now() >= next_trust_check {
                next_trust_check = Instant::now() + TRUST_POLL;
                self.check_trust_elsewhere();
            }
            self.flush().await;
            if let Some(done) = self.outcome
                && self.calls.is_empty()
                && matches!(self.mode, Mode::Call(_))
            {
                self.leave().await;
                return Ok(done);
            }
            if quit_at.is_some() && self.calls.is_empty() {
                self.leave().await;
                return Ok(self.outcome.unwrap_or(matches!(self.mode, Mode::Listen(_))));
            }
            let mut wake = self.engine.poll_timeout();
            for c in self.calls.values() {
                for t in [c.hangup_at, c.ended_at.map(|t| t + MEDIA_STOP_TIMEOUT)]
                    .into_iter()
                    .flatten()
                {
                    wake = Some(wake.map_or(t, |w| w.min(t)));
                }
            }
            if let Some(q) = quit_at {
                wake = Some(wake.map_or(q, |w| w.min(q)));
            }
            if !self.calls.is_empty() {
                wake = Some(wake.map_or(next_trust_check, |w| w.min(next_trust_check)));
            }
            if self.live() && self.calls.values().any(|c| c.ended.is_none()) {
                // Redraw the status line's clock every second.
                let tick = Instant::now() + Duration::from_secs(1);
                wake = Some(wake.map_or(tick, |w| w.min(tick)));
            }
            self.draw_status();
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            // Receive first, then clear the status line, then handle: whatever the handlers
            // print starts on a clean line.
            let woke = tokio::select! {
                _ = sigint.recv() => Wake::Signal,
                _ = sigterm.recv() => Wake::Signal,
                ev = incoming.recv() => Wake::Incoming(ev),
                Some((sid, ev)) = self.media_rx.recv() => Wake::Media(sid, ev),
                Some((sid, report)) = self.done_rx.recv() => Wake::MediaDone(sid, Box::new(report)),
                Some(line) = lines.recv() => Wake::Line(line),
                _ = sleep => Wake::Timer,
            };
            self.clear_status();
            match woke {
                Wake::Signal => quit_at = Some(self.hang_up_all(quit_at)),
                Wake::Incoming(Some(Incoming::Stanza(st))) => self.on_stanza(*st).await,
                Wake::Incoming(Some(Incoming::Online(jid))) => {
                    if let Err(e) = presence::go_online(self.svc().xmpp(), true).await {
                        self.out.error(&e.to_string());
                    }
                    self.out
                        .event("online", json!({ "jid": jid.to_string() }), || {
                            format!("online again as {jid}")
                        });
                }
                Wake::Incoming(Some(Incoming::Closed(why))) => {
                    self.stop_all_media();
                    return Err(ClientError::Connect(why));
                }
                Wake::Incoming(None) => {
                    self.stop_all_media();
                    return Err(ClientError::Disconnected);
                }
                Wake::Media(sid, ev) => self.on_media(&sid, ev),
                Wake::MediaDone(sid, report) => self.on_media_done(&sid, *report),
                Wake::Line(line) => self.on_answer_line(&line),
                Wake::Timer => {
                    let now = Instant::now();
                    if quit_at.is_some_and(|q| now >= q) {
                        // The grace period is over: leave even if a peer never answered.
                        self.stop_all_media();
                        let sids: Vec<String> = self.calls.keys().cloned().collect();
                        for sid in sids {
                            self.finish_call(&sid, None);
                        }
                        continue;
                    }
                    self.on_timer(now);
                }
            }
        }
    }

    /// Another process committed to the account database (`shieldcall trust`, `distrust` or
    /// `policy` in another terminal): the engine re-decides every running call's shield.
    fn check_trust_elsewhere(&mut self) {
        match self.svc().trust_or_policy_changed() {
            Ok(true) => self.engine.handle_trust_change(Instant::now()),
            Ok(false) => {}
            Err(e) => self
                .out
                .warning(&format!("cannot read the account database: {e}")),
        }
    }

    fn on_timer(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        let due: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.hangup_at.is_some_and(|t| now >= t))
            .map(|(s, _)| s.clone())
            .collect();
        for sid in due {
            if let Some(c) = self.calls.get_mut(&sid) {
                c.hangup_at = None;
            }
            let _ = self.engine.handle_user(now, UserAction::HangUp { sid });
        }
        let stale: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.ended_at.is_some_and(|t| now >= t + MEDIA_STOP_TIMEOUT))
            .map(|(s, _)| s.clone())
            .collect();
        for sid in stale {
            self.finish_call(&sid, None);
        }
    }

    /// Hangs up every call; returns when to give up waiting.
    fn hang_up_all(&mut self, already: Option<Instant>) -> Instant {
        let now = Instant::now();
        let sids: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.ended.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        for sid in sids {
            let _ = self.engine.handle_user(now, UserAction::HangUp { sid });
        }
        already.unwrap_or(now + HANGUP_GRACE)
    }

    /// Goes offline: unavailable presence, a ping round trip (the server has processed all we
    /// sent when it answers), stream close.
    async fn leave(&mut self) {
        let xmpp = self.svc().xmpp().clone();
        let unavailable =
            xmpp_parsers::presence::Presence::new(xmpp_parsers::presence::Type::Unavailable);
        let _ = xmpp.send(unavailable);
        let ping = Element::builder("ping", presence::PING).build();
        // Bounded: with the server gone (reconnecting), a signal must still end us promptly.
        let _ = tokio::time::timeout(LEAVE_TIMEOUT, xmpp.iq(None, false, ping)).await;
        let _ = tokio::time::timeout(LEAVE_TIMEOUT, xmpp.close()).await;
    }

    fn state(&mut self, sid: &str, state: &str, extra: Value) {
        let peer = match self.calls.get_mut(sid) {
            Some(c) => {
                c.state = state.to_owned();
                if state == "connected" {
                    c.connected_at = Some(Instant::now());
                }
                c.peer.clone()
            }
            None => String::new(),
        };
        let mut fields = json!({ "state": state, "sid": sid, "peer": peer });
        if let (Some(f), Value::Object(e)) = (fields.as_object_mut(), extra) {
            f.extend(e);
        }
        self.out
            .event("call", fields, || format!("call with {peer}: {state}"));
    }

    /// Whether the live status line is used: a terminal, human output, not asking a question.
    fn live(&self) -> bool {
        self.tty && !self.out.json && self.asking.is_none()
    }

    /// The live status line of the running call: state, time, shield in words and symbol, peer
    /// and device.
    fn status_text(&self) -> Option<String> {
        let (_, c) = self.calls.iter().find(|(_, c)| c.ended.is_none())?;
        let elapsed = c
            .connected_at
            .map(|t| {
                let s = t.elapsed().as_secs();
                format!(" {:02}:{:02}", s / 60, s % 60)
            })
            .unwrap_or_default();
        let shield = match c.shield {
            Some(sh) => {
                let (_, symbol, words) = shield_words(sh);
                format!("{symbol} {words}")
            }
            None => "shield: not yet known".to_owned(),
        };
        let device = match c.device {
            Some(d) => format!(", device {d}"),
            None => String::new(),
        };
        Some(format!(
            "\u{25CF} {}{elapsed} | {shield} | {}{device}",
            c.state, c.peer
        ))
    }

    /// Removes the live status line before other output.
    fn clear_status(&mut self) {
        if self.status_shown {
            print!("\r\x1b[2K");
            let _ = std::io::stdout().flush();
            self.status_shown = false;
        }
    }

    /// Draws the live status line (no newline: it is redrawn in place).
    fn draw_status(&mut self) {
        if !self.live() {
            return;
        }
        if let Some(text) = self.status_text() {
            print!("\r\x1b[2K{text}");
            let _ = std::io::stdout().flush();
            self.status_shown = true;
        }
    }

    /// Sends the engine's stanzas and handles its events until it has nothing more.
    async fn flush(&mut self) {
        loop {
            let Some(output) = self.engine.poll_output() else {
                break;
            };
            match output {
                Output::Send(el) => self.send_element(el),
                Output::Event(ev) => self.on_event(ev).await,
            }
        }
        if self.engine.crypto().bundle_changed {
            self.engine.crypto_mut().bundle_changed = false;
            if let Err(e) = self.svc().publish_bundle().await {
                self.out
                    .warning(&format!("republishing our OMEMO bundle failed: {e}"));
            }
        }
    }

    fn send_element(&mut self, el: Element) {
        let stanza: Option<Stanza> = match el.name() {
            "message" => Message::try_from(el).ok().map(Stanza::from),
            "iq" => Iq::try_from(el).ok().map(Stanza::from),
            _ => None,
        };
        match stanza {
            Some(st) => {
                if let Err(e) = self.svc().xmpp().send(st) {
                    self.out.error(&e.to_string());
                }
            }
            None => self
                .out
                .error("internal: the call engine produced a stanza that does not parse"),
        }
    }

    async fn on_stanza(&mut self, st: Stanza) {
        let now = Instant::now();
        match st {
            Stanza::Message(m) => {
                let el = Element::from(m.clone());
                if self.engine.handle_stanza(now, SystemTime::now(), &el) == Handled::NotMine {
                    let received = self.svc().handle_message(m).await;
                    for r in received {
                        crate::output::report(self.out, r);
                    }
                }
            }
            Stanza::Iq(iq) => {
                let el = Element::from(iq.clone());
                if self.engine.handle_stanza(now, SystemTime::now(), &el) == Handled::NotMine
                    && let Some(answer) = presence::answer_iq(&iq, true)
                {
                    let _ = self.svc().xmpp().send(answer);
                }
            }
            Stanza::Presence(_) => {}
        }
    }

    async fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::IncomingCall {
                sid,
                from,
                media,
                jmi,
            } => {
                self.calls.insert(
                    sid.clone(),
                    CallState::new(from.to_string(), from.to_bare(), now),
                );
                self.state(&sid, "ringing", json!({ "jmi": jmi }));
                let busy = self
                    .calls
                    .iter()
                    .any(|(s, c)| s != &sid && c.ended.is_none());
                let video = media.contains(&Media::Video);
                let no_audio = self.opts.audio_unavailable.clone();
                let decision = match &self.mode {
                    _ if video || no_audio.is_some() => Some(false),
                    Mode::Call(_) => Some(false),
                    Mode::Listen(_) if busy => Some(false),
                    Mode::Listen(Answer::Auto) => Some(true),
                    Mode::Listen(Answer::Reject) => Some(false),
                    Mode::Listen(Answer::Ask) => None,
                };
                if video {
                    self.out
                        .warning("declining a video call: shieldcall does audio only so far");
                }
                if let Some(why) = no_audio {
                    self.out.warning(&format!("declining the call: {why}"));
                }
                match decision {
                    Some(true) => {
                        let _ = self.engine.handle_user(now, UserAction::Accept { sid });
                    }
                    Some(false) => {
                        let _ = self.engine.handle_user(now, UserAction::Reject { sid });
                    }
                    None => {
                        if !self.out.json {
                            print!("incoming call from {from} — answer? [y/N] ");
                            let _ = std::io::stdout().flush();
                        }
                        self.asking = Some(sid);
                    }
                }
            }
            Event::PeerRinging { sid } => self.state(&sid, "ringing", json!({})),
            Event::Proceeding { sid, device } => {
                self.state(&sid, "proceeding", json!({ "device": device }));
                // The engine encrypts our fingerprint to that device as soon as media answers
                // below: make sure a session exists, building it from the bundle if needed.
                if let Some(d) = device
                    && self.opts.omemo
                    && let Mode::Call(peer) = self.mode.clone()
                {
                    let (ok, problems) = self.svc().ensure_sessions(&peer, &[d]).await;
                    if ok.is_empty() {
                        for p in problems {
                            self.out.warning(&format!(
                                "no OMEMO session with {peer} device {d}: {p}; the fingerprint would go unencrypted"
                            ));
                        }
                    }
                }
            }
            Event::MediaNeeded { sid, role, media } => self.prepare_media(&sid, role, &media).await,
            Event::RemoteMedia { sid, contents } => {
                if let Some(c) = self.calls.get_mut(&sid) {
                    c.remote = contents;
                }
                // The initiator learns the remote side last: start now. The responder starts
                // when its answer is ready (MediaNeeded follows).
                if self.calls.get(&sid).is_some_and(|c| c.endpoint.is_some()) {
                    self.start_media(&sid);
                }
            }
            Event::RemoteCandidates {
                sid, candidates, ..
            } => {
                if let Some(c) = self.calls.get_mut(&sid) {
                    for cand in &candidates {
                        let mc = media_params::candidate_to_media(cand);
                        if let Some(r) = &c.running {
                            let _ = r.commands.send(DriverCommand::AddRemoteCandidate(mc));
                        } else if let Some(ep) = c.endpoint.as_mut() {
                            ep.session().add_remote_candidate(&mc);
                        }
                    }
                }
            }
            Event::ContentAdd { sid, .. } => {
                self.out
                    .warning("declining the peer's added content (video): audio only so far");
                let _ = self
                    .engine
                    .handle_user(now, UserAction::RejectContent { sid });
            }
            Event::ContentAccepted { .. } | Event::ContentRejected { .. } => {}
            Event::Downgrade {
                sid,
                peer,
                kind,
                device,
            } => self.on_downgrade(&sid, &peer, kind, device),
            Event::PlayMedia { sid } => {
                let duration = self.opts.duration;
                if let Some(c) = self.calls.get_mut(&sid) {
                    c.connected = true;
                    if let Some(r) = &c.running {
                        let _ = r.commands.send(DriverCommand::AllowMedia);
                    }
                    if matches!(self.mode, Mode::Call(_)) {
                        c.hangup_at = duration.map(|d| now + d);
                    }
                }
                self.state(&sid, "connected", json!({}));
            }
            Event::Shield {
                sid,
                shield,
                device,
            } => {
                let (state, symbol, words) = shield_words(shield);
                let (peer, peer_bare) = match self.calls.get_mut(&sid) {
                    Some(c) => {
                        c.shield = Some(shield);
                        c.device = device;
                        if c.shield_at.is_none() {
                            c.shield_at = Some(now.duration_since(c.started));
                        }
                        (c.peer.clone(), Some(c.peer_bare.clone()))
                    }
                    None => (String::new(), None),
                };
                // Remembered: a later call with this contact that is less than verified is a
                // downgrade to warn about.
                if let (Shield::Verified, Some(d), Some(bare)) = (shield, device, &peer_bare)
                    && let Err(e) = self.svc().policies().record_verified_call(
                        bare.as_str(),
                        d,
                        crate::omemo_service::now(),
                    )
                {
                    self.out
                        .warning(&format!("cannot remember the verified call: {e}"));
                }
                self.out.event(
                    "shield",
                    json!({ "sid": sid, "state": state, "device": device }),
                    || match device {
                        Some(d) => format!("{symbol} {words} — {peer}, device {d}"),
                        None => format!("{symbol} {words} — {peer}"),
                    },
                );
            }
            Event::Ended { sid, end } => {
                let (reason, text) = end_reason(&end);
                let success = matches!(
                    end,
                    CallEnd::LocalHangup
                        | CallEnd::PeerTerminated(xmpp_parsers::jingle::Reason::Success)
                );
                if matches!(self.mode, Mode::Call(_)) && !matches!(end, CallEnd::Superseded(_)) {
                    let connected = self.calls.get(&sid).is_some_and(|c| c.connected);
                    self.outcome = Some(success && connected);
                }
                if self.asking.as_deref() == Some(sid.as_str()) {
                    self.asking = None;
                    if !self.out.json {
                        println!();
                    }
                }
                self.state(&sid, "ended", json!({}));
                self.out.event(
                    "ended",
                    json!({ "sid": sid, "reason": reason, "text": text }),
                    || format!("call ended: {reason} ({text})"),
                );
                if let Some(c) = self.calls.get_mut(&sid) {
                    c.ended = Some((reason, text));
                    c.ended_at = Some(now);
                    c.endpoint = None;
                    match c.running.as_mut() {
                        // The stats follow with the media report (on_media_done).
                        Some(r) => {
                            if let Some(stop) = r.stop.take() {
                                let _ = stop.send(());
                            }
                        }
                        None => self.finish_call(&sid, None),
                    }
                }
            }
        }
    }

    /// A call with a contact that had been verified is less than verified: said where a person
    /// cannot miss it, before any media plays.
    fn on_downgrade(&mut self, sid: &str, peer: &BareJid, kind: Downgrade, device: Option<u32>) {
        let refused = self.opts.require_verified
            || self
                .svc()
                .policies()
                .contact(peer.as_str())
                .map_or(true, |s| s.require_verified());
        let text = downgrade_text(peer, kind, device, refused);
        self.out.alarm(
            "downgrade",
            json!({ "sid": sid, "kind": kind.as_str(), "peer": peer.to_string(), "device": device, "text": text }),
            &text,
        );
    }

    fn on_answer_line(&mut self, line: &str) {
        let Some(sid) = self.asking.take() else {
            return;
        };
        let now = Instant::now();
        let yes = matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes");
        let action = if yes {
            UserAction::Accept { sid }
        } else {
            UserAction::Reject { sid }
        };
        if let Err(e) = self.engine.handle_user(now, action) {
            self.out.error(&format!("cannot answer: {e}"));
        }
    }

    fn media_ips(&self) -> Vec<IpAddr> {
        if !self.opts.media_ips.is_empty() {
            return self.opts.media_ips.clone();
        }
        match media::driver::usable_host_ips() {
            Ok(ips) if !ips.is_empty() => ips,
            _ => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        }
    }

    async fn prepare_media(&mut self, sid: &str, role: Role, requested: &[Media]) {
        let now = Instant::now();
        self.state(sid, "connecting", json!({}));
        if requested.iter().any(|m| *m != Media::Audio) {
            self.fail_media(sid, "only audio is supported".into());
            return;
        }
        let media_role = match role {
            Role::Initiator => media::JingleRole::Initiator,
            Role::Responder => media::JingleRole::Responder,
        };
        let mut ep = match MediaEndpoint::bind(media_role, &self.media_ips()).await {
            Ok(ep) => ep,
            Err(e) => {
                self.fail_media(sid, format!("cannot open media sockets: {e}"));
                return;
            }
        };
        let remote = self
            .calls
            .get(sid)
            .map(|c| c.remote.clone())
            .unwrap_or_default();
        let name = match role {
            Role::Initiator => "0".to_owned(),
            Role::Responder => match remote.first() {
                Some(r) => r.name.clone(),
                None => {
                    self.fail_media(sid, "no remote content to answer".into());
                    return;
                }
            },
        };
        if role == Role::Responder {
            // media answers an offer: it must know the offer first.
            let params = remote.first().map(media_params::remote_params);
            match params {
                Some(Ok(p)) => {
                    if let Err(e) = ep.session().set_remote(p, now) {
                        self.fail_media(sid, format!("unusable offer: {e}"));
                        return;
                    }
                }
                Some(Err(e)) => {
                    self.fail_media(sid, format!("unusable offer: {e}"));
                    return;
                }
                None => {}
            }
        }
        let local = ep
            .session()
            .local_description()
            .map_err(|e| e.to_string())
            .and_then(|d| {
                let t = ep.session().local_transport().map_err(|e| e.to_string())?;
                media_params::local_content(&name, &d, &t).map_err(|e| e.to_string())
            });
        let local = match local {
            Ok(l) => l,
            Err(e) => {
                self.fail_media(sid, format!("media set-up failed: {e}"));
                return;
            }
        };
        if let Some(c) = self.calls.get_mut(sid) {
            c.endpoint = Some(ep);
        }
        if let Err(e) = self
            .engine
            .handle_media(now, sid, EngineMedia::LocalContents(vec![local]))
        {
            self.out
                .error(&format!("call engine refused our media: {e}"));
        }
        if role == Role::Responder && self.calls.get(sid).is_some_and(|c| c.ended.is_none()) {
            self.start_media(sid);
        }
    }

    fn fail_media(&mut self, sid: &str, why: String) {
        let _ = self
            .engine
            .handle_media(Instant::now(), sid, EngineMedia::Failed(why));
    }

    fn make_source(&self) -> Result<Box<dyn AudioSource>, String> {
        Ok(match &self.opts.input {
            AudioIn::Tone(hz) => Box::new(ToneSource::new(*hz, TONE_AMPLITUDE)),
            AudioIn::Wav(p) => Box::new(
                WavSource::open(p).map_err(|e| format!("cannot play {}: {e}", p.display()))?,
            ),
            AudioIn::Silence => Box::new(SilenceSource),
            AudioIn::Device(name) => live_source(name.as_deref())?,
        })
    }

    fn make_sink(&mut self) -> Result<(Box<dyn AudioSink>, Option<PathBuf>), String> {
        Ok(match &self.opts.output {
            AudioOut::Wav(p) => {
                let path = numbered(p, self.answered);
                let sink = WavSink::create(&path)
                    .map_err(|e| format!("cannot record to {}: {e}", path.display()))?;
                (Box::new(sink), Some(path))
            }
            AudioOut::Device(name) => (live_sink(name.as_deref())?, None),
            AudioOut::Discard => (Box::new(NullSink::default()), None),
        })
    }

    fn start_media(&mut self, sid: &str) {
        let now = Instant::now();
        let Some(call) = self.calls.get_mut(sid) else {
            return;
        };
        let Some(mut ep) = call.endpoint.take() else {
            return;
        };
        if ep.session().phase() == &media::session::Phase::New {
            // Initiator: the answer just arrived.
            let params = call.remote.first().map(media_params::remote_params);
            match params {
                Some(Ok(p)) => {
                    if let Err(e) = ep.session().set_remote(p, now) {
                        self.fail_media(sid, format!("unusable answer: {e}"));
                        return;
                    }
                }
                Some(Err(e)) => {
                    self.fail_media(sid, format!("unusable answer: {e}"));
                    return;
                }
                None => {
                    self.fail_media(sid, "no remote content".into());
                    return;
                }
            }
        }
        self.answered += 1;
        let source = self.make_source();
        let sink = self.make_sink();
        let (source, (sink, recording)) = match (source, sink) {
            (Ok(s), Ok(k)) => (s, k),
            (Err(e), _) | (_, Err(e)) => {
                self.fail_media(sid, e);
                return;
            }
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let forward = self.media_tx.clone();
        let tag = sid.to_owned();
        tokio::spawn(async move {
            while let Some(ev) = ev_rx.recv().await {
                if forward.send((tag.clone(), ev)).is_err() {
                    return;
                }
            }
        });
        let done = self.done_tx.clone();
        let tag = sid.to_owned();
        let options = RunOptions {
            connect_timeout: CONNECT_TIMEOUT,
            media_duration: None,
            events: Some(ev_tx),
            stop: Some(stop_rx),
            commands: Some(cmd_rx),
            hold_media: true,
        };
        tokio::spawn(async move {
            let report = ep.run(source, sink, options).await;
            let _ = done.send((tag, report));
        });
        if let Some(call) = self.calls.get_mut(sid) {
            call.recording = recording;
            call.running = Some(Running {
                commands: cmd_tx,
                stop: Some(stop_tx),
            });
        }
    }

    fn on_media(&mut self, sid: &str, ev: media::MediaEvent) {
        let now = Instant::now();
        let Some(call) = self.calls.get_mut(sid) else {
            return;
        };
        if call.ended.is_some() {
            return;
        }
        let result = match ev {
            media::MediaEvent::IceConnected => Ok(()),
            media::MediaEvent::DtlsVerified { fingerprint } => {
                let digest = EngineMedia::PeerDigest {
                    hash: Algo::Sha_256,
                    value: fingerprint.as_bytes().to_vec(),
                };
                let r = self.engine.handle_media(now, sid, digest);
                if r.is_ok() {
                    let _ = self.engine.handle_media(now, sid, EngineMedia::Connected);
                }
                r
            }
            media::MediaEvent::FingerprintMismatch { actual, .. } => match actual {
                Some(a) => self.engine.handle_media(
                    now,
                    sid,
                    EngineMedia::PeerDigest {
                        hash: Algo::Sha_256,
                        value: a.as_bytes().to_vec(),
                    },
                ),
                None => self.engine.handle_media(
                    now,
                    sid,
                    EngineMedia::Failed("the peer's DTLS certificate is unusable".into()),
                ),
            },
            media::MediaEvent::FirstAudio => {
                if call.first_audio_at.is_none() {
                    let after = now.duration_since(call.started);
                    call.first_audio_at = Some(after);
                    let ms = after.as_millis() as u64;
                    self.out.event(
                        "audio",
                        json!({ "sid": sid, "state": "first", "ms": ms }),
                        || format!("first audio from the peer after {ms} ms"),
                    );
                }
                Ok(())
            }
            media::MediaEvent::Failed(reason) => self.engine.handle_media(
                now,
                sid,
                EngineMedia::Failed(format!("media failed: {}", fail_text(&reason))),
            ),
        };
        // UnknownSession: the engine ended the call meanwhile; nothing to tell it.
        let _ = result;
    }

    fn on_media_done(&mut self, sid: &str, report: Result<CallReport, DriverError>) {
        if let Some(c) = self.calls.get_mut(sid) {
            c.running = None;
        }
        let ended = |me: &Self| me.calls.get(sid).is_none_or(|c| c.ended.is_some());
        if !ended(self) {
            // Media stopped on its own. Its events travel on another channel and may not have
            // been handled yet: a certificate mismatch must reach the engine as the digest it
            // is (security-error), not as a generic media failure.
            if let Ok(r) = &report
                && let Some(mismatch) = r
                    .events
                    .iter()
                    .find(|e| matches!(e, media::MediaEvent::FingerprintMismatch { .. }))
            {
                self.on_media(sid, mismatch.clone());
            }
        }
        if !ended(self) {
            let why = match &report {
                Ok(r) => match &r.failure {
                    Some(f) => format!("media failed: {}", fail_text(f)),
                    None => "media ended".to_owned(),
                },
                Err(e) => format!("media failed: {e}"),
            };
            let _ = self
                .engine
                .handle_media(Instant::now(), sid, EngineMedia::Failed(why));
        }
        if self.calls.get(sid).is_some_and(|c| c.ended.is_none()) {
            // The stats follow once the engine reports the end (its Ended event).
            self.pending_reports.insert(sid.to_owned(), report);
            if let Some(c) = self.calls.get_mut(sid) {
                c.ended_at.get_or_insert(Instant::now());
            }
            return;
        }
        self.finish_call(sid, Some(report));
    }

    /// Prints the stats of an ended call and forgets it.
    fn finish_call(&mut self, sid: &str, report: Option<Result<CallReport, DriverError>>) {
        let report = report.or_else(|| self.pending_reports.remove(sid));
        let Some(call) = self.calls.remove(sid) else {
            return;
        };
        if let Some(mut r) = call.running
            && let Some(stop) = r.stop.take()
        {
            let _ = stop.send(());
        }
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        let mut fields = json!({
            "sid": sid,
            "peer": call.peer,
            "ms_to_shield": ms(call.shield_at),
            "ms_to_first_audio": ms(call.first_audio_at),
            "recording": call.recording.as_ref().map(|p| p.display().to_string()),
        });
        let mut human;
        match report {
            Some(Ok(r)) => {
                let s = &r.stats;
                if let Value::Object(f) = &mut fields {
                    f.extend(
                        json!({
                            "packets_sent": s.packets_sent,
                            "packets_received": s.packets_received,
                            "bytes_sent": s.bytes_sent,
                            "bytes_received": s.bytes_received,
                            "frames_sent": r.frames_from_source,
                            "frames_played": s.frames_played,
                            "frames_concealed": s.frames_concealed,
                            "frames_recorded": r.frames_to_sink,
                            "loss": s.local_loss,
                            "remote_loss": s.remote_loss,
                            "jitter_ms": s.jitter_ms(),
                            "rtt_ms": s.rtt.map(|d| d.as_secs_f64() * 1000.0),
                            "media_ms_to_dtls": ms(s.dtls_connected),
                            "capture": r.capture.as_ref().map(device_json),
                            "playback": r.playback.as_ref().map(device_json),
                        })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    );
                }
                human = format!(
                    "stats: sent {} packets, received {}, played {} frames ({} concealed), loss {}, jitter {}, rtt {}; shield after {}, first audio after {}",
                    s.packets_sent,
                    s.packets_received,
                    s.frames_played,
                    s.frames_concealed,
                    s.local_loss
                        .map_or("n/a".into(), |l| format!("{:.1} %", l * 100.0)),
                    s.jitter_ms().map_or("n/a".into(), |j| format!("{j:.1} ms")),
                    s.rtt.map_or("n/a".into(), |d| format!(
                        "{:.1} ms",
                        d.as_secs_f64() * 1000.0
                    )),
                    ms(call.shield_at).map_or("-".into(), |m| format!("{m} ms")),
                    ms(call.first_audio_at).map_or("-".into(), |m| format!("{m} ms")),
                );
                for (what, d) in [("microphone", &r.capture), ("speaker", &r.playback)] {
                    if let Some(d) = d {
                        human.push_str(&format!(
                            "\n{what} {}: {} Hz, {} ch, {} samples dropped (overruns), {} underruns, {} errors{}",
                            d.name,
                            d.sample_rate,
                            d.channels,
                            d.overrun_samples,
                            d.underruns,
                            d.errors,
                            d.last_error.as_ref().map_or(String::new(), |e| format!(" (last: {e})"))
                        ));
                    }
                }
            }
            Some(Err(e)) => {
                human = format!("stats: media failed: {e}");
                if let Value::Object(f) = &mut fields {
                    f.insert("media_error".into(), Value::String(e.to_string()));
                }
            }
            None => human = "stats: no media ran".to_owned(),
        }
        self.out.event("stats", fields, || human);
    }

    fn stop_all_media(&mut self) {
        for c in self.calls.values_mut() {
            if let Some(r) = c.running.as_mut()
                && let Some(stop) = r.stop.take()
            {
                let _ = stop.send(());
            }
        }
    }
}

/// What a person reads about a downgrade (also the JSON `text`).
pub fn downgrade_text(
    peer: &BareJid,
    kind: Downgrade,
    device: Option<u32>,
    refused: bool,
) -> String {
    let device = device.map_or_else(String::new, |d| format!(" {d}"));
    let what = match kind {
        Downgrade::UnverifiedDevice => format!(
            "this call uses {peer}'s device{device}, whose key you have not verified (a new device, \
             or one you distrusted)"
        ),
        Downgrade::PlainFingerprints => format!(
            "{peer}'s side sent its call keys (DTLS fingerprints) unencrypted, without OMEMO"
        ),
        Downgrade::NoDevice => format!(
            "{peer}'s answer names no OMEMO device, so the call keys cannot travel encrypted"
        ),
        Downgrade::OmemoFailed => format!(
            "OMEMO could not encrypt the call keys to {peer}'s device{device}, so they travel \
             unencrypted"
        ),
    };
    let then = if refused {
        "The call is refused: calls with this contact must be verified.".to_owned()
    } else {
        format!(
            "The call is NOT verified: a server operator could be listening in. To refuse such \
             calls: shieldcall policy {peer} --require-verified on"
        )
    };
    format!("NOT VERIFIED: you verified {peer} before, but {what}. {then}")
}

fn fail_text(f: &media::session::FailReason) -> String {
    use media::session::FailReason;
    match f {
        FailReason::FingerprintMismatch => {
            "the peer's DTLS certificate does not match the fingerprint".to_owned()
        }
        FailReason::Transport(t) => t.clone(),
        FailReason::IceDisconnected => "no connectivity (ICE)".to_owned(),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

/// The live devices of a build with `live-audio`; `None`: the default one.
#[cfg(feature = "live-audio")]
fn device_choice(name: Option<&str>) -> media::audio::live::DeviceChoice {
    match name {
        Some(n) => media::audio::live::DeviceChoice::Named(n.to_owned()),
        None => media::audio::live::DeviceChoice::Default,
    }
}

/// A microphone (feature `live-audio`): the default one, or the one named.
#[cfg(feature = "live-audio")]
pub fn live_source(name: Option<&str>) -> Result<Box<dyn AudioSource>, String> {
    media::audio::live::CaptureSource::open(&device_choice(name))
        .map(|s| Box::new(s) as Box<dyn AudioSource>)
        .map_err(|e| format!("no microphone: {e} (use --tone HZ or --play WAV)"))
}

/// Without `live-audio` there is no microphone.
#[cfg(not(feature = "live-audio"))]
pub fn live_source(_: Option<&str>) -> Result<Box<dyn AudioSource>, String> {
    Err("built without live audio: use --tone HZ or --play WAV".into())
}

/// A speaker (feature `live-audio`): the default one, or the one named.
#[cfg(feature = "live-audio")]
pub fn live_sink(name: Option<&str>) -> Result<Box<dyn AudioSink>, String> {
    media::audio::live::PlaybackSink::open(&device_choice(name))
        .map(|s| Box::new(s) as Box<dyn AudioSink>)
        .map_err(|e| format!("no speaker: {e} (use --record WAV)"))
}

/// Without `live-audio` there is no speaker.
#[cfg(not(feature = "live-audio"))]
pub fn live_sink(_: Option<&str>) -> Result<Box<dyn AudioSink>, String> {
    Err("built without live audio: use --record WAV".into())
}

/// The audio devices (feature `live-audio`).
#[cfg(feature = "live-audio")]
pub fn audio_devices() -> Result<Vec<media::audio::live::DeviceInfo>, String> {
    media::audio::live::list_devices().map_err(|e| e.to_string())
}

/// What a live device did, for the `stats` event.
fn device_json(d: &media::audio::DeviceReport) -> Value {
    json!({
        "device": d.name,
        "rate": d.sample_rate,
        "channels": d.channels,
        "period_frames": d.period_frames,
        "overrun_samples": d.overrun_samples,
        "underruns": d.underruns,
        "errors": d.errors,
        "last_error": d.last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_of_later_calls_get_a_suffix() {
        let p = Path::new("/tmp/x/rec.wav");
        assert_eq!(numbered(p, 1), p);
        assert_eq!(numbered(p, 2), Path::new("/tmp/x/rec-2.wav"));
        assert_eq!(numbered(Path::new("out"), 3), Path::new("out-3"));
    }

    #[test]
    fn sids_are_long_and_distinct() {
        let a = random_sid().unwrap();
        let b = random_sid().unwrap();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
    }

    #[test]
    fn end_reasons_use_the_jingle_names() {
        use xmpp_parsers::jingle::Reason;
        assert_eq!(end_reason(&CallEnd::LocalHangup).0, "success");
        assert_eq!(
            end_reason(&CallEnd::PeerTerminated(Reason::SecurityError)).0,
            "security-error"
        );
        assert_eq!(end_reason(&CallEnd::Declined).0, "decline");
        assert_eq!(end_reason(&CallEnd::Timeout).0, "timeout");
    }
}
