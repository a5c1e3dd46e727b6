//! The call agent: joins the call engine (`shieldcall-jingle`), the media engine
//! (`shieldcall-media`) and the OMEMO service into calls on a live connection. It reports one
//! ordered stream of [`AgentEvent`]s and takes [`AgentCommand`]s; it never prints, reads stdin
//! or installs signal handlers (the `shieldcall` CLI's presenter does that with its events).
//!
//! One task owns everything: the engine, the OMEMO service (in [`CallCrypto`], beside the engine,
//! which borrows it for each input that may need it: ownership runs one way), the calls' media
//! endpoints and the connection's incoming stanzas. Each running media endpoint
//! is its own task (`MediaEndpoint::start`); all of them report on one channel, tagged with the
//! call, each its events in order and then its report, so nothing waits for or races another
//! channel. Nothing here
//! decides about security: the engine decides what is verified and when media may play; the
//! media gate checks the DTLS certificate; this module carries their inputs and outputs.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use minidom::Element;
use shieldcall_jingle::verification::{CryptoError, Decrypted, Encrypted, Trust};
use shieldcall_jingle::{
    CallEnd, Config, ContactPolicy, Downgrade, Engine, Event, Handled, IdentityKey, Media,
    MediaEvent as EngineMedia, OmemoCrypto, Output, RemoteContent, Role, Shield, UserAction,
};
use shieldcall_media as media;
use shieldcall_media::IceServer;
use shieldcall_media::audio::sink::{AudioSink, NullSink, WavSink};
use shieldcall_media::audio::source::{AudioSource, SilenceSource, ToneSource, WavSource};
use shieldcall_media::driver::{
    CallReport, DriverCommand, DriverError, MediaEndpoint, MediaHandle, MediaNetConfig,
    MediaUpdate, StartOptions,
};
use shieldcall_omemo::account::DecryptLimits;
use shieldcall_omemo::xml::EncryptedElement;
use shieldcall_omemo::{Recipient, Store as _, TrustLevel};
use tokio::sync::mpsc;
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid};
use xmpp_parsers::message::Message;
use xmpp_parsers::stanza::Stanza;

use crate::connection::Incoming;
use crate::error::ClientError;
use crate::extdisco;
use crate::media_params;
use crate::omemo_service::{OmemoService, Received};
use crate::presence;

/// How long ICE + DTLS may take once both sides know each other's parameters.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a hang-up on SIGINT/SIGTERM may take before we leave anyway.
pub const HANGUP_GRACE: Duration = Duration::from_secs(3);
/// How long going offline may wait for the server (each of: ping answer, stream close).
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long we wait for a stopped media endpoint's final report.
pub const MEDIA_STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// Tone amplitude (of full scale) for `--tone`.
pub const TONE_AMPLITUDE: f64 = 0.3;
/// How often a running call looks for trust or policy changes made by another process
/// (`shieldcall trust` in another terminal): well within the second it must take.
pub const TRUST_POLL: Duration = Duration::from_millis(300);
/// How long a call about to open its media waits for a STUN/TURN discovery still under way
/// (it started when the agent went online, so it has mostly answered long before).
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// OMEMO for the engine

/// The engine's OMEMO: the account's sessions, one device at a time, and the user's call
/// policies.
///
/// Encrypting needs an existing session; the service builds it from the peer's bundle on
/// `<proceed/>` before the engine encrypts (see [`CallAgent`]). With OMEMO switched off
/// (`--no-omemo`) there is no own device id, so the engine never asks for verification.
/// An encrypted fingerprint must carry exactly one key for us ([`DecryptLimits::SINGLE_KEY`]).
#[derive(Debug)]
pub struct CallCrypto {
    svc: OmemoService,
    enabled: bool,
    /// A PreKeySignalMessage consumed a prekey: the bundle must be republished.
    bundle_changed: bool,
    /// How long each OMEMO operation of the engine took (with its database commit), since
    /// the last [`CallCrypto::take_timings`]; at most [`MAX_TIMINGS`].
    timings: Vec<(&'static str, Duration)>,
}

/// Most OMEMO operations timed between two calls' stats.
const MAX_TIMINGS: usize = 16;

impl CallCrypto {
    /// Wraps the OMEMO service; `enabled = false` announces no device (plain calls only).
    pub fn new(svc: OmemoService, enabled: bool) -> Self {
        Self {
            svc,
            enabled,
            bundle_changed: false,
            timings: Vec::new(),
        }
    }

    /// The OMEMO operations timed since the last call, in order.
    fn take_timings(&mut self) -> Vec<(&'static str, Duration)> {
        std::mem::take(&mut self.timings)
    }

    fn timed(&mut self, op: &'static str, since: Instant) {
        if self.timings.len() < MAX_TIMINGS {
            self.timings.push((op, since.elapsed()));
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

    fn encrypt_now(
        &mut self,
        peer: &BareJid,
        device: u32,
        plaintext: &[u8],
    ) -> Result<Encrypted, CryptoError> {
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
            identity_key: IdentityKey::from_bytes(identity.serialize()),
        })
    }

    fn decrypt_now(
        &mut self,
        peer: &BareJid,
        encrypted: &Element,
    ) -> Result<Decrypted, CryptoError> {
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
            identity_key: IdentityKey::from_bytes(d.sender_identity.serialize()),
        })
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
        let t0 = Instant::now();
        let done = self.encrypt_now(peer, device, plaintext);
        self.timed("encrypt", t0);
        done
    }

    fn decrypt(&mut self, peer: &BareJid, encrypted: &Element) -> Result<Decrypted, CryptoError> {
        if !self.enabled {
            return Err(CryptoError::Other("OMEMO is switched off".into()));
        }
        let t0 = Instant::now();
        let done = self.decrypt_now(peer, encrypted);
        self.timed("decrypt", t0);
        done
    }
    fn trust(&self, peer: &BareJid, identity_key: &IdentityKey) -> Trust {
        let Ok(key) = shieldcall_omemo::PublicKey::from_bytes("identity", identity_key.as_bytes())
        else {
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
            .map(|k| IdentityKey::from_bytes(k.serialize()))
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

/// Makes the source of each call's audio: the embedder's own [`AudioSource`] (a callback, a
/// channel of PCM frames, a synthesiser); an `Err` fails that call's media with its text.
pub type SourceFactory = Arc<dyn Fn() -> Result<Box<dyn AudioSource>, String> + Send + Sync>;

/// Makes the sink of each call's audio, as [`SourceFactory`] does the source.
pub type SinkFactory = Arc<dyn Fn() -> Result<Box<dyn AudioSink>, String> + Send + Sync>;

/// What we send.
#[derive(Clone)]
pub enum AudioIn {
    /// A sine tone of this frequency in Hz.
    Tone(f64),
    /// A WAV file (looped; see `WavSource`).
    Wav(PathBuf),
    /// A capture device: the default one, or the one of this name (`audio-devices` lists them).
    Device(Option<String>),
    /// Silence.
    Silence,
    /// 20 ms frames of 48 kHz mono PCM from the embedder, a new source per call.
    Custom(SourceFactory),
}

impl std::fmt::Debug for AudioIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tone(hz) => f.debug_tuple("Tone").field(hz).finish(),
            Self::Wav(p) => f.debug_tuple("Wav").field(p).finish(),
            Self::Device(d) => f.debug_tuple("Device").field(d).finish(),
            Self::Silence => f.write_str("Silence"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Where what we hear goes.
#[derive(Clone)]
pub enum AudioOut {
    /// A 16-bit PCM mono 48 kHz WAV file; later calls of one `listen` get `-2`, `-3`… suffixes.
    Wav(PathBuf),
    /// A playback device: the default one, or the one of this name.
    Device(Option<String>),
    /// Nowhere.
    Discard,
    /// The embedder's sink (20 ms frames of 48 kHz mono PCM), a new one per call.
    Custom(SinkFactory),
}

impl std::fmt::Debug for AudioOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Wav(p) => f.debug_tuple("Wav").field(p).finish(),
            Self::Device(d) => f.debug_tuple("Device").field(d).finish(),
            Self::Discard => f.write_str("Discard"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
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
    /// The user's own STUN and TURN servers (`--stun`, `--turn`), used before the discovered
    /// ones. No third-party server is used by default: it would learn who calls whom.
    pub ice_servers: Vec<IceServer>,
    /// Ask the account's own server for its STUN and TURN services (XEP-0215) after going
    /// online, and again before their credentials expire.
    pub discover_ice: bool,
    /// Announce and use relayed candidates only: the peer learns the TURN server's address,
    /// never ours (needs a TURN server; without one no call connects).
    pub relay_only: bool,
    /// For `turns:` servers: trust the CA certificates in this PEM file instead of the
    /// system's roots (a test's throw-away CA).
    pub turn_ca_file: Option<PathBuf>,
}

impl Default for CallOptions {
    /// Verified where possible but not required, OMEMO on, every usable interface, silence out
    /// and nothing recorded, no time limit, the engine's ring timeout, STUN/TURN servers from
    /// the account's server only.
    fn default() -> Self {
        Self {
            require_verified: false,
            omemo: true,
            media_ips: Vec::new(),
            input: AudioIn::Silence,
            output: AudioOut::Discard,
            duration: None,
            ring_timeout: shieldcall_jingle::RING_TIMEOUT,
            audio_unavailable: None,
            ice_servers: Vec::new(),
            discover_ice: true,
            relay_only: false,
            turn_ca_file: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// what the agent reports and takes

/// Where a call is, in the order a call goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPhase {
    /// We propose (XEP-0353) and wait.
    Proposing,
    /// The peer's phone rings (outgoing), or a call rings here (incoming).
    Ringing,
    /// The callee accepted; `<proceed/>` arrived.
    Proceeding,
    /// Media is being set up (ICE, DTLS).
    Connecting,
    /// Media may play.
    Connected,
    /// Over.
    Ended,
}

impl CallPhase {
    /// The lower-case name (`call` event `state`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposing => "proposing",
            Self::Ringing => "ringing",
            Self::Proceeding => "proceeding",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Ended => "ended",
        }
    }
}

/// What a call did, reported once it ended.
#[derive(Debug)]
pub struct CallSummary {
    /// The call.
    pub sid: String,
    /// The peer's full JID (or bare, for a call we placed and nobody answered).
    pub peer: String,
    /// From the call's start to its first shield.
    pub shield_after: Option<Duration>,
    /// From the call's start to the first audio from the peer.
    pub first_audio_after: Option<Duration>,
    /// The WAV written, if any.
    pub recording: Option<PathBuf>,
    /// The media report; `None` when no media ran, `Err` when it failed.
    pub media: Option<Result<CallReport, DriverError>>,
    /// When each stage of the set-up was first reached, from the call's start, in order:
    /// the call's phases (`proposing`, `ringing`, `proceeding`, `connecting`, `connected`),
    /// `omemo-session` (a session with the callee's device was ready), `media-prepared`
    /// (sockets bound, gathering; `ice-servers-known` just before, once a STUN/TURN discovery
    /// still under way answered or [`DISCOVERY_WAIT`] passed), `media-started` (the peer's
    /// description known), `ice-connected`, `dtls-verified` (the peer's certificate matched),
    /// `shield`, `first-audio`; all on the agent's clock, as its events arrive.
    pub stages: Vec<(&'static str, Duration)>,
    /// How long each OMEMO operation of the call took, with its database commit (`encrypt`,
    /// `decrypt`), in order.
    pub omemo: Vec<(&'static str, Duration)>,
}

/// Everything the agent reports, in order, on one stream.
#[derive(Debug)]
pub enum AgentEvent {
    /// Online (again, after a reconnect) with this full JID.
    Online {
        /// The bound JID.
        jid: FullJid,
        /// After a reconnect.
        again: bool,
    },
    /// A message, device list or undecryptable message from the OMEMO service.
    Received(Received),
    /// A call changed phase.
    Call {
        /// The call.
        sid: String,
        /// The peer (empty if not known yet).
        peer: String,
        /// The new phase.
        phase: CallPhase,
        /// Incoming `Ringing`: whether it came as a XEP-0353 propose.
        jmi: Option<bool>,
        /// `Proceeding`: the device the callee named in `<proceed/>` (inner `None`: none).
        device: Option<Option<u32>>,
    },
    /// An incoming call waits for [`AgentCommand::Answer`] (with [`Answer::Ask`]).
    Asking {
        /// The call.
        sid: String,
        /// Who calls.
        from: FullJid,
        /// The user verified a device key of the caller (the call may still turn out
        /// unverified: this is about the contact, the shield about the call).
        caller_verified: bool,
    },
    /// A call's shield, again whenever it changes.
    Shield {
        /// The call.
        sid: String,
        /// The peer's full JID.
        peer: String,
        /// The shield.
        shield: Shield,
        /// The peer's device of this call.
        device: Option<u32>,
    },
    /// A call with a contact once verified is less than verified (before media plays).
    Downgrade {
        /// The call.
        sid: String,
        /// The contact.
        peer: BareJid,
        /// What went wrong.
        kind: Downgrade,
        /// The device concerned.
        device: Option<u32>,
        /// Whether the call is refused for it (require-verified).
        refused: bool,
    },
    /// The first audio from the peer.
    FirstAudio {
        /// The call.
        sid: String,
        /// Since the call's start.
        after: Duration,
    },
    /// A call ended.
    Ended {
        /// The call.
        sid: String,
        /// How.
        end: CallEnd,
    },
    /// What an ended call did.
    Stats(Box<CallSummary>),
    /// The STUN and TURN servers calls use from now on (the user's first, then those the
    /// account's server offers), after going online and whenever they change.
    IceServers {
        /// Each server's [`IceServer::label`]: never credentials.
        servers: Vec<String>,
    },
    /// An [`AgentCommand::Send`] went out.
    Sent {
        /// The contact.
        to: BareJid,
        /// The devices it was encrypted for.
        devices: Vec<u32>,
    },
    /// An [`AgentCommand::Trust`] changed a device's trust.
    Trusted {
        /// Whose device.
        jid: String,
        /// The device.
        device: u32,
        /// Its identity key, as [`crate::omemo_service::fingerprint`] writes it.
        fingerprint: String,
        /// Its trust now.
        level: TrustLevel,
        /// Its trust before.
        previous: TrustLevel,
    },
    /// A call lost its network path (`lost_for: None`; it waits a few seconds for it) or got it
    /// back (`lost_for`: how long it was gone).
    Connectivity {
        /// The call.
        sid: String,
        /// How long the path was gone, once it is back.
        lost_for: Option<Duration>,
    },
    /// Something skipped or degraded; the agent goes on.
    Warning(String),
    /// Something failed; the agent goes on.
    Error(String),
}

/// What the embedder tells a running agent.
#[derive(Debug, Clone)]
pub enum AgentCommand {
    /// Answers the call an [`AgentEvent::Asking`] named.
    Answer {
        /// The call.
        sid: String,
        /// Accept (else decline).
        accept: bool,
    },
    /// Calls `peer` (a listening agent places calls too); the call's events follow as for any
    /// other, with a new `sid`. A call that cannot be made is an [`AgentEvent::Error`].
    Call {
        /// The contact.
        peer: BareJid,
    },
    /// Hangs up one call (or stops it ringing).
    HangUp {
        /// The call.
        sid: String,
    },
    /// Sends `body` OMEMO-encrypted to every trusted device of `to` and our other devices;
    /// [`AgentEvent::Sent`] or an [`AgentEvent::Error`] follows.
    Send {
        /// The contact.
        to: BareJid,
        /// The message.
        body: String,
    },
    /// Applies a verification URI (`xmpp:JID?omemo-sid-ID=HEX`, what a QR code holds) at
    /// `level`; [`AgentEvent::Trusted`] follows per device, and running calls with that contact
    /// show their new shield.
    Trust {
        /// The URI.
        uri: String,
        /// Verified, or distrusted.
        level: TrustLevel,
    },
    /// Hangs up every call and ends the agent once they are over (Ctrl-C in the CLI).
    HangUpAll,
}

// ---------------------------------------------------------------------------------------------
// per-call state

struct CallState {
    peer: String,
    peer_bare: BareJid,
    started: Instant,
    endpoint: Option<MediaEndpoint>,
    remote: Vec<RemoteContent>,
    /// The name of its one content, once media was prepared.
    content: Option<String>,
    /// The running media endpoint (its updates arrive on the agent's one media channel).
    running: Option<MediaHandle>,
    shield_at: Option<Duration>,
    first_audio_at: Option<Duration>,
    connected: bool,
    hangup_at: Option<Instant>,
    /// The engine has ended the call; we wait for the media report to print the stats.
    ended: Option<CallEnd>,
    ended_at: Option<Instant>,
    recording: Option<PathBuf>,
    /// Each set-up stage's first time, from `started` ([`CallSummary::stages`]).
    stages: Vec<(&'static str, Duration)>,
}

/// Most set-up stages remembered per call.
const MAX_STAGES: usize = 16;

impl CallState {
    /// Notes that the call reached `stage` now (the first time only).
    fn mark(&mut self, stage: &'static str, now: Instant) {
        if self.stages.len() < MAX_STAGES && !self.stages.iter().any(|(s, _)| *s == stage) {
            self.stages
                .push((stage, now.saturating_duration_since(self.started)));
        }
    }
}

impl CallState {
    fn new(peer: String, peer_bare: BareJid, now: Instant) -> Self {
        Self {
            peer,
            peer_bare,
            started: now,
            endpoint: None,
            remote: Vec::new(),
            content: None,
            running: None,
            shield_at: None,
            first_audio_at: None,
            connected: false,
            hangup_at: None,
            ended: None,
            ended_at: None,
            recording: None,
            stages: Vec::new(),
        }
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
    Command(Option<AgentCommand>),
    Incoming(Option<Incoming>),
    Media(String, MediaUpdate),
    IceServers(Result<Vec<IceServer>, ClientError>),
    Timer,
}

/// A STUN/TURN discovery under way ([`extdisco::discover`] on a clone of the connection).
type Discovery = Pin<Box<dyn Future<Output = Result<Vec<IceServer>, ClientError>> + Send>>;

/// Calls on one connection: see the module docs.
pub struct CallAgent {
    engine: Engine,
    /// The account's OMEMO, beside the engine: lent to it for each input that may need it.
    crypto: CallCrypto,
    opts: CallOptions,
    events: mpsc::UnboundedSender<AgentEvent>,
    mode: Mode,
    calls: BTreeMap<String, CallState>,
    /// Every media endpoint's updates, tagged with its call: events in order, then the report.
    media_tx: mpsc::UnboundedSender<(String, MediaUpdate)>,
    media_rx: mpsc::UnboundedReceiver<(String, MediaUpdate)>,
    /// Reports of media that stopped before the engine ended the call.
    pending_reports: BTreeMap<String, Result<CallReport, DriverError>>,
    /// Calls taken so far (numbers recordings).
    answered: usize,
    /// `call`: our call ended with success after media flowed.
    outcome: Option<bool>,
    /// Waiting for the embedder's answer on this call.
    asking: Option<String>,
    /// The host's usable addresses when last looked at during a call (a change restarts ICE).
    host_ips: Option<Vec<IpAddr>>,
    /// The STUN and TURN servers new calls use: the user's, then the discovered ones.
    ice_servers: Vec<IceServer>,
    /// The labels last reported ([`AgentEvent::IceServers`]).
    ice_shown: Option<Vec<String>>,
    /// When to discover again (the credentials' expiry, or a retry after a failure).
    ice_refresh_at: Option<Instant>,
    /// The discovery under way.
    discovery: Option<Discovery>,
}

impl std::fmt::Debug for CallAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallAgent")
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

impl CallAgent {
    /// A service for the account of `svc`, announcing call support when it goes online.
    /// Everything it reports goes to `events`, in order.
    pub fn new(
        svc: OmemoService,
        mode: Mode,
        opts: CallOptions,
        events: mpsc::UnboundedSender<AgentEvent>,
    ) -> Self {
        let own = svc.xmpp().jid.clone();
        let mut config = Config::new(own);
        config.require_verified = opts.require_verified;
        config.ring_timeout = opts.ring_timeout;
        let engine = Engine::new(config);
        let crypto = CallCrypto::new(svc, opts.omemo);
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        Self {
            engine,
            crypto,
            events,
            mode,
            calls: BTreeMap::new(),
            media_tx,
            media_rx,
            pending_reports: BTreeMap::new(),
            answered: 0,
            outcome: None,
            asking: None,
            host_ips: None,
            ice_servers: opts.ice_servers.clone(),
            ice_shown: None,
            ice_refresh_at: None,
            discovery: None,
            opts,
        }
    }

    /// The STUN and TURN servers a call started now would use: the user's
    /// ([`CallOptions::ice_servers`]), then the ones the account's server offered in the last
    /// discovery (none before the agent runs).
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.ice_servers
    }

    /// Reports to the embedder (who may have stopped listening: then nobody is told).
    fn emit(&self, ev: AgentEvent) {
        let _ = self.events.send(ev);
    }

    fn warn(&self, text: String) {
        self.emit(AgentEvent::Warning(text));
    }

    fn svc(&mut self) -> &mut OmemoService {
        self.crypto.service()
    }

    /// Runs until the call ends (`call`) or [`AgentCommand::HangUpAll`] (`listen`; dropping the
    /// command sender only means no more commands). Returns whether a `call` connected and ended normally
    /// (always `true` for `listen`).
    pub async fn run(
        mut self,
        mut incoming: mpsc::UnboundedReceiver<Incoming>,
        mut commands: mpsc::UnboundedReceiver<AgentCommand>,
    ) -> Result<bool, ClientError> {
        // The first call would otherwise pay the DTLS crypto set-up between its proposal and
        // its shield.
        let warming = tokio::task::spawn_blocking(media::warm_up);
        presence::go_online(self.svc().xmpp(), true).await?;
        let jid = self.svc().xmpp().jid.clone();
        self.emit(AgentEvent::Online { jid, again: false });
        self.start_discovery();
        let mut commands_open = true;

        if let Mode::Call(peer) = self.mode.clone() {
            // Usually done already (login took longer); proposing first would only move the
            // wait to the media set-up.
            let _ = warming.await;
            self.place_call(peer)?;
        }

        let mut quit_at: Option<Instant> = None;
        // Start counting trust and policy changes now: one made from here on counts.
        self.check_trust_elsewhere();
        let mut next_trust_check = Instant::now() + TRUST_POLL;
        loop {
            if !self.calls.is_empty() && Instant::now() >= next_trust_check {
                next_trust_check = Instant::now() + TRUST_POLL;
                self.check_trust_elsewhere();
                self.check_host_addresses();
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
            if let Some(t) = self.ice_refresh_at {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                c = commands.recv(), if commands_open => Wake::Command(c),
                ev = incoming.recv() => Wake::Incoming(ev),
                Some((sid, ev)) = self.media_rx.recv() => Wake::Media(sid, ev),
                Some(found) = poll_discovery(&mut self.discovery) => Wake::IceServers(found),
                _ = sleep => Wake::Timer,
            };
            match woke {
                Wake::Command(Some(AgentCommand::HangUpAll)) => {
                    quit_at = Some(self.hang_up_all(quit_at));
                }
                Wake::Command(Some(AgentCommand::Answer { sid, accept })) => {
                    self.on_answer(sid, accept);
                }
                Wake::Command(Some(AgentCommand::Call { peer })) => {
                    if let Err(e) = self.place_call(peer) {
                        self.emit(AgentEvent::Error(e.to_string()));
                    }
                }
                Wake::Command(Some(AgentCommand::HangUp { sid })) => {
                    let now = Instant::now();
                    let hang_up = UserAction::HangUp { sid: sid.clone() };
                    if self
                        .engine
                        .handle_user(&mut self.crypto, now, hang_up)
                        .is_err()
                    {
                        self.warn(format!("no call {sid} to hang up"));
                    }
                }
                Wake::Command(Some(AgentCommand::Send { to, body })) => {
                    match self.svc().send_message(&to, &body).await {
                        Ok((devices, warnings)) => {
                            for w in warnings {
                                self.warn(w);
                            }
                            self.emit(AgentEvent::Sent { to, devices });
                        }
                        Err(e) => self.emit(AgentEvent::Error(e.to_string())),
                    }
                }
                Wake::Command(Some(AgentCommand::Trust { uri, level })) => self.trust(&uri, level),
                Wake::Command(None) => {
                    // No more commands: calls go on to their own end (a `call` ends; `listen`
                    // runs until the connection does).
                    commands_open = false;
                }
                Wake::Incoming(Some(Incoming::Stanza(st))) => self.on_stanza(*st).await,
                Wake::Incoming(Some(Incoming::Online(jid))) => {
                    if let Err(e) = presence::go_online(self.svc().xmpp(), true).await {
                        self.emit(AgentEvent::Error(e.to_string()));
                    }
                    self.emit(AgentEvent::Online { jid, again: true });
                    // Another session: the credentials may be new (a restarted server).
                    self.start_discovery();
                }
                Wake::Incoming(Some(Incoming::Closed(why))) => {
                    self.stop_all_media();
                    return Err(ClientError::Connect(why));
                }
                Wake::Incoming(None) => {
                    self.stop_all_media();
                    return Err(ClientError::Disconnected);
                }
                Wake::Media(sid, MediaUpdate::Event(ev)) => self.on_media(&sid, ev),
                Wake::Media(sid, MediaUpdate::Ended(report)) => self.on_media_done(&sid, *report),
                Wake::IceServers(found) => {
                    self.discovery = None;
                    self.on_discovered(found);
                }
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
                    if self.ice_refresh_at.is_some_and(|t| now >= t) {
                        self.start_discovery();
                    }
                    self.on_timer(now);
                }
            }
        }
    }

    /// Starts a STUN/TURN discovery with the account's server, unless one runs or the options
    /// say no (then only the user's servers are reported, once).
    fn start_discovery(&mut self) {
        self.ice_refresh_at = None;
        if !self.opts.discover_ice {
            self.show_ice_servers();
            return;
        }
        if self.discovery.is_none() {
            let xmpp = self.svc().xmpp().clone();
            self.discovery = Some(Box::pin(async move { extdisco::discover(&xmpp).await }));
        }
    }

    /// A discovery ended: the servers new calls use, and when to ask again. A failure keeps
    /// the servers found before and tries again later.
    fn on_discovered(&mut self, found: Result<Vec<IceServer>, ClientError>) {
        match found {
            Ok(found) => {
                self.ice_refresh_at =
                    extdisco::refresh_at(&found, SystemTime::now()).and_then(instant_at);
                self.ice_servers = self.opts.ice_servers.iter().cloned().chain(found).collect();
            }
            Err(e) => {
                self.ice_refresh_at = Instant::now().checked_add(extdisco::RETRY_AFTER_FAILURE);
                self.warn(format!(
                    "cannot get the server's STUN/TURN services, calls use {}: {e}",
                    if self.ice_servers.is_empty() {
                        "host addresses only"
                    } else {
                        "the servers known before"
                    }
                ));
            }
        }
        self.show_ice_servers();
    }

    /// Reports the servers, unless the same labels were reported last.
    fn show_ice_servers(&mut self) {
        let servers: Vec<String> = self.ice_servers.iter().map(IceServer::label).collect();
        if self.ice_shown.as_ref() != Some(&servers) {
            self.ice_shown = Some(servers.clone());
            self.emit(AgentEvent::IceServers { servers });
        }
    }

    /// A call is about to open its media: a discovery still under way gets a moment to finish
    /// ([`DISCOVERY_WAIT`]), so that the call has the servers it brings.
    async fn await_discovery(&mut self) {
        let Some(running) = self.discovery.as_mut() else {
            return;
        };
        if let Ok(found) = tokio::time::timeout(DISCOVERY_WAIT, running).await {
            self.discovery = None;
            self.on_discovered(found);
        }
    }

    /// The host's addresses changed during a call (Wi-Fi to mobile, a new lease): media
    /// rebinds and restarts ICE, which goes to the peer as Conversations' restart. Only when the
    /// media addresses are the host's (no `media_ips` given).
    fn check_host_addresses(&mut self) {
        if !self.opts.media_ips.is_empty() {
            return;
        }
        let Ok(now) = media::driver::usable_host_ips() else {
            return;
        };
        if self.host_ips.as_ref() == Some(&now) {
            return;
        }
        if self.host_ips.is_some() && !now.is_empty() {
            // The XMPP connection went with the old address: make it again first, so that the
            // restarts' transport-info reach the peers (queued until it is back).
            self.svc().xmpp().reconnect_now();
            for c in self.calls.values() {
                if let Some(r) = &c.running {
                    r.send(DriverCommand::RestartIceOn(now.clone()));
                }
            }
            self.warn(format!(
                "the host's addresses changed ({now:?}): restarting ICE for the running calls"
            ));
        }
        self.host_ips = Some(now);
    }

    /// Another process committed to the account database (`shieldcall trust`, `distrust` or
    /// `policy` in another terminal): the engine re-decides every running call's shield.
    fn check_trust_elsewhere(&mut self) {
        match self.svc().trust_or_policy_changed() {
            Ok(true) => self
                .engine
                .handle_trust_change(&mut self.crypto, Instant::now()),
            Ok(false) => {}
            Err(e) => self.warn(format!("cannot read the account database: {e}")),
        }
    }

    fn on_timer(&mut self, now: Instant) {
        self.engine.handle_timeout(&mut self.crypto, now);
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
            let _ = self
                .engine
                .handle_user(&mut self.crypto, now, UserAction::HangUp { sid });
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
            let _ = self
                .engine
                .handle_user(&mut self.crypto, now, UserAction::HangUp { sid });
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

    fn state(
        &mut self,
        sid: &str,
        phase: CallPhase,
        jmi: Option<bool>,
        device: Option<Option<u32>>,
    ) {
        let peer = match self.calls.get_mut(sid) {
            Some(c) => {
                c.mark(phase.as_str(), Instant::now());
                c.peer.clone()
            }
            None => String::new(),
        };
        self.emit(AgentEvent::Call {
            sid: sid.to_owned(),
            peer,
            phase,
            jmi,
            device,
        });
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
        if self.crypto.bundle_changed {
            self.crypto.bundle_changed = false;
            if let Err(e) = self.svc().publish_bundle().await {
                self.warn(format!("republishing our OMEMO bundle failed: {e}"));
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
                    self.emit(AgentEvent::Error(e.to_string()));
                }
            }
            None => self.emit(AgentEvent::Error(
                "internal: the call engine produced a stanza that does not parse".into(),
            )),
        }
    }

    async fn on_stanza(&mut self, st: Stanza) {
        let now = Instant::now();
        match st {
            Stanza::Message(m) => {
                let el = Element::from(m.clone());
                if self
                    .engine
                    .handle_stanza(&mut self.crypto, now, SystemTime::now(), &el)
                    == Handled::NotMine
                {
                    let received = self.svc().handle_message(m).await;
                    for r in received {
                        self.emit(AgentEvent::Received(r));
                    }
                }
            }
            Stanza::Iq(iq) => {
                let el = Element::from(iq.clone());
                if self
                    .engine
                    .handle_stanza(&mut self.crypto, now, SystemTime::now(), &el)
                    == Handled::NotMine
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
                self.state(&sid, CallPhase::Ringing, Some(jmi), None);
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
                    self.warn("declining a video call: shieldcall does audio only so far".into());
                }
                if let Some(why) = no_audio {
                    self.warn(format!("declining the call: {why}"));
                }
                match decision {
                    Some(true) => {
                        let _ = self.engine.handle_user(
                            &mut self.crypto,
                            now,
                            UserAction::Accept { sid },
                        );
                    }
                    Some(false) => {
                        let _ = self.engine.handle_user(
                            &mut self.crypto,
                            now,
                            UserAction::Reject { sid },
                        );
                    }
                    None => {
                        self.asking = Some(sid.clone());
                        let caller_verified = self
                            .crypto
                            .has_verified_key(&from.to_bare())
                            .unwrap_or(false);
                        self.emit(AgentEvent::Asking {
                            sid,
                            from,
                            caller_verified,
                        });
                    }
                }
            }
            Event::PeerRinging { sid } => self.state(&sid, CallPhase::Ringing, None, None),
            Event::Proceeding { sid, device } => {
                self.state(&sid, CallPhase::Proceeding, None, Some(device));
                // The engine encrypts our fingerprint to that device as soon as media answers
                // below: make sure a session exists, building it from the bundle if needed.
                if let Some(d) = device
                    && self.opts.omemo
                    && let Mode::Call(peer) = self.mode.clone()
                {
                    let (ok, problems) = self.svc().ensure_sessions(&peer, &[d]).await;
                    if let Some(c) = self.calls.get_mut(&sid) {
                        c.mark("omemo-session", Instant::now());
                    }
                    if ok.is_empty() {
                        for p in problems {
                            self.warn(format!(
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
            // The peer restarted ICE (or answered our restart): media takes its new
            // credentials; to its offer media restarts too, and reports IceRestarted.
            Event::IceRestart { sid, remote, offer } => {
                if let Some(r) = self.calls.get(&sid).and_then(|c| c.running.as_ref()) {
                    for cred in remote {
                        // No fingerprint: a restart keeps the DTLS association (the engine
                        // refused any transport-info carrying one).
                        let transport = media::IceUdpTransport {
                            ufrag: cred.ufrag,
                            pwd: cred.pwd,
                            candidates: Vec::new(),
                            dtls: None,
                        };
                        r.send(DriverCommand::RemoteIceRestart(transport));
                    }
                    if offer {
                        r.send(DriverCommand::RestartIce);
                    }
                }
            }
            Event::RemoteCandidates {
                sid, candidates, ..
            } => {
                if let Some(c) = self.calls.get_mut(&sid) {
                    for cand in &candidates {
                        let mc = media_params::candidate_to_media(cand);
                        if let Some(r) = &c.running {
                            r.send(DriverCommand::AddRemoteCandidate(mc));
                        } else if let Some(ep) = c.endpoint.as_mut() {
                            ep.session().add_remote_candidate(&mc);
                        }
                    }
                }
            }
            Event::ContentAdd { sid, .. } => {
                self.warn("declining the peer's added content (video): audio only so far".into());
                let _ = self.engine.handle_user(
                    &mut self.crypto,
                    now,
                    UserAction::RejectContent { sid },
                );
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
                        r.send(DriverCommand::AllowMedia);
                    }
                    if matches!(self.mode, Mode::Call(_)) {
                        c.hangup_at = duration.map(|d| now + d);
                    }
                }
                self.state(&sid, CallPhase::Connected, None, None);
            }
            Event::Shield {
                sid,
                shield,
                device,
            } => {
                let (peer, peer_bare) = match self.calls.get_mut(&sid) {
                    Some(c) => {
                        if c.shield_at.is_none() {
                            c.shield_at = Some(now.duration_since(c.started));
                        }
                        c.mark("shield", now);
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
                    self.warn(format!("cannot remember the verified call: {e}"));
                }
                self.emit(AgentEvent::Shield {
                    sid,
                    peer,
                    shield,
                    device,
                });
            }
            Event::Ended { sid, end } => {
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
                }
                self.state(&sid, CallPhase::Ended, None, None);
                self.emit(AgentEvent::Ended {
                    sid: sid.clone(),
                    end: end.clone(),
                });
                if let Some(c) = self.calls.get_mut(&sid) {
                    c.ended = Some(end);
                    c.ended_at = Some(now);
                    c.endpoint = None;
                    match c.running.as_mut() {
                        // The stats follow with the media report (on_media_done).
                        Some(r) => r.stop(),
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
        self.emit(AgentEvent::Downgrade {
            sid: sid.to_owned(),
            peer: peer.clone(),
            kind,
            device,
            refused,
        });
    }

    /// The embedder's answer to [`AgentEvent::Asking`]; ignored for any other call (answered
    /// meanwhile, ended, or never asked about).
    /// Sends local candidates found during the call to the peer (`transport-info`).
    fn trickle(
        &mut self,
        sid: &str,
        candidates: &[media::IceCandidate],
    ) -> Result<(), shieldcall_jingle::ApiError> {
        let content = self.content_of(sid);
        for c in candidates {
            let candidate = media_params::candidate_to_jingle(c);
            let content = content.clone();
            let ev = EngineMedia::LocalCandidate { content, candidate };
            self.engine
                .handle_media(&mut self.crypto, Instant::now(), sid, ev)?;
        }
        Ok(())
    }

    /// The call's one content name (`0` as Conversations names it, or the offer's).
    fn content_of(&self, sid: &str) -> String {
        self.calls
            .get(sid)
            .and_then(|c| c.content.clone())
            .unwrap_or_else(|| "0".to_owned())
    }

    /// Proposes a call to `peer` (a fresh, unguessable sid) and reports it as proposing.
    fn place_call(&mut self, peer: BareJid) -> Result<String, ClientError> {
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
        if let Err(e) = self.engine.handle_user(&mut self.crypto, now, action) {
            self.calls.remove(&sid);
            return Err(match e {
                shieldcall_jingle::ApiError::NotVerifiable => ClientError::NotVerifiable(peer),
                other => ClientError::Usage(other.to_string()),
            });
        }
        self.state(&sid, CallPhase::Proposing, None, None);
        Ok(sid)
    }

    /// Applies a verification URI and lets running calls show their new shield.
    fn trust(&mut self, uri: &str, level: TrustLevel) {
        if !matches!(level, TrustLevel::Verified | TrustLevel::Distrusted) {
            self.emit(AgentEvent::Error(
                "trust: a URI makes a device verified or distrusted".into(),
            ));
            return;
        }
        let parsed = match shieldcall_omemo::fingerprint::VerificationUri::parse(uri) {
            Ok(p) => p,
            Err(e) => return self.emit(AgentEvent::Error(format!("trust: {e}"))),
        };
        let changed = self
            .svc()
            .account_mut()
            .apply_verification_uri_as(&parsed, level);
        match changed {
            Ok(devices) => {
                for (device, key, previous) in devices {
                    self.emit(AgentEvent::Trusted {
                        jid: parsed.jid.clone(),
                        device,
                        fingerprint: crate::omemo_service::fingerprint(&key),
                        level,
                        previous,
                    });
                }
                // Counted as a change made here, not elsewhere: the next poll sees none.
                let _ = self.svc().trust_or_policy_changed();
                self.engine
                    .handle_trust_change(&mut self.crypto, Instant::now());
            }
            Err(e) => self.emit(AgentEvent::Error(format!("trust: {e}"))),
        }
    }

    fn on_answer(&mut self, sid: String, accept: bool) {
        if self.asking.as_deref() != Some(sid.as_str()) {
            return;
        }
        self.asking = None;
        let now = Instant::now();
        let action = if accept {
            UserAction::Accept { sid }
        } else {
            UserAction::Reject { sid }
        };
        if let Err(e) = self.engine.handle_user(&mut self.crypto, now, action) {
            self.emit(AgentEvent::Error(format!("cannot answer: {e}")));
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
        self.state(sid, CallPhase::Connecting, None, None);
        if requested.iter().any(|m| *m != Media::Audio) {
            self.fail_media(sid, "only audio is supported".into());
            return;
        }
        let media_role = match role {
            Role::Initiator => media::JingleRole::Initiator,
            Role::Responder => media::JingleRole::Responder,
        };
        self.await_discovery().await;
        if let Some(c) = self.calls.get_mut(sid) {
            c.mark("ice-servers-known", Instant::now());
        }
        // Host candidates, and server-reflexive and relayed ones with the STUN/TURN servers
        // (the user's, then the account server's): gathered while media runs, trickled.
        let net = MediaNetConfig {
            ice_servers: self.ice_servers.clone(),
            ca_file: self.opts.turn_ca_file.clone(),
            relay_only: self.opts.relay_only,
        };
        let mut ep = match MediaEndpoint::bind_with(media_role, &self.media_ips(), net).await {
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
            c.content = Some(name.clone());
        }
        if let Some(c) = self.calls.get_mut(sid) {
            c.endpoint = Some(ep);
            c.mark("media-prepared", Instant::now());
        }
        if let Err(e) = self.engine.handle_media(
            &mut self.crypto,
            now,
            sid,
            EngineMedia::LocalContents(vec![local]),
        ) {
            self.emit(AgentEvent::Error(format!(
                "call engine refused our media: {e}"
            )));
        }
        if role == Role::Responder && self.calls.get(sid).is_some_and(|c| c.ended.is_none()) {
            self.start_media(sid);
        }
    }

    fn fail_media(&mut self, sid: &str, why: String) {
        let _ = self.engine.handle_media(
            &mut self.crypto,
            Instant::now(),
            sid,
            EngineMedia::Failed(why),
        );
    }

    fn make_source(&self) -> Result<Box<dyn AudioSource>, String> {
        Ok(match &self.opts.input {
            AudioIn::Tone(hz) => Box::new(ToneSource::new(*hz, TONE_AMPLITUDE)),
            AudioIn::Wav(p) => Box::new(
                WavSource::open(p).map_err(|e| format!("cannot play {}: {e}", p.display()))?,
            ),
            AudioIn::Silence => Box::new(SilenceSource),
            AudioIn::Device(name) => live_source(name.as_deref())?,
            AudioIn::Custom(make) => make()?,
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
            AudioOut::Custom(make) => (make()?, None),
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
        let options = StartOptions {
            connect_timeout: CONNECT_TIMEOUT,
            media_duration: None,
            hold_media: true,
        };
        let handle = ep.start(source, sink, options, self.media_tx.clone(), sid.to_owned());
        if let Some(call) = self.calls.get_mut(sid) {
            call.recording = recording;
            call.running = Some(handle);
            call.mark("media-started", Instant::now());
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
            media::MediaEvent::IceConnected => {
                call.mark("ice-connected", now);
                Ok(())
            }
            media::MediaEvent::DtlsVerified { fingerprint } => {
                call.mark("dtls-verified", now);
                let digest = EngineMedia::PeerDigest {
                    hash: Algo::Sha_256,
                    value: fingerprint.as_bytes().to_vec(),
                };
                let r = self.engine.handle_media(&mut self.crypto, now, sid, digest);
                if r.is_ok() {
                    let _ = self.engine.handle_media(
                        &mut self.crypto,
                        now,
                        sid,
                        EngineMedia::Connected,
                    );
                }
                r
            }
            media::MediaEvent::FingerprintMismatch { actual, .. } => match actual {
                Some(a) => self.engine.handle_media(
                    &mut self.crypto,
                    now,
                    sid,
                    EngineMedia::PeerDigest {
                        hash: Algo::Sha_256,
                        value: a.as_bytes().to_vec(),
                    },
                ),
                None => self.engine.handle_media(
                    &mut self.crypto,
                    now,
                    sid,
                    EngineMedia::Failed("the peer's DTLS certificate is unusable".into()),
                ),
            },
            media::MediaEvent::FirstAudio => {
                if call.first_audio_at.is_none() {
                    let after = now.duration_since(call.started);
                    call.first_audio_at = Some(after);
                    call.mark("first-audio", now);
                    let sid = sid.to_owned();
                    self.emit(AgentEvent::FirstAudio { sid, after });
                }
                Ok(())
            }
            media::MediaEvent::Failed(reason) => self.engine.handle_media(
                &mut self.crypto,
                now,
                sid,
                // The engine's error says "media failed: " itself.
                EngineMedia::Failed(reason.to_string()),
            ),
            media::MediaEvent::LocalCandidate(c) => self.trickle(sid, &[c]),
            media::MediaEvent::GatheringComplete => Ok(()),
            media::MediaEvent::IceServerFailed { server, reason } => {
                self.warn(format!("{server}: {reason}"));
                Ok(())
            }
            media::MediaEvent::ConnectivityLost => {
                let sid = sid.to_owned();
                self.emit(AgentEvent::Connectivity {
                    sid,
                    lost_for: None,
                });
                Ok(())
            }
            media::MediaEvent::ConnectivityRestored { after } => {
                let sid = sid.to_owned();
                self.emit(AgentEvent::Connectivity {
                    sid,
                    lost_for: Some(after),
                });
                Ok(())
            }
            media::MediaEvent::IceRestarted(transport) => {
                let credentials = vec![shieldcall_jingle::IceCredentials {
                    content: self.content_of(sid),
                    ufrag: transport.ufrag.clone(),
                    pwd: transport.pwd.clone(),
                }];
                let restarted = EngineMedia::IceRestarted { credentials };
                self.engine
                    .handle_media(&mut self.crypto, now, sid, restarted)
                    .and_then(|()| self.trickle(sid, &transport.candidates))
            }
            media::MediaEvent::IceRestartRefused {
                reason,
                fingerprint_changed,
            } => {
                if fingerprint_changed {
                    // A restart never changes the DTLS association (the engine refuses a
                    // transport-info with a fingerprint before media sees it): defence in depth.
                    let failed = EngineMedia::Failed(format!("ICE restart refused: {reason}"));
                    self.engine.handle_media(&mut self.crypto, now, sid, failed)
                } else {
                    self.warn(format!("the peer's ICE restart was refused: {reason}"));
                    Ok(())
                }
            }
            other => {
                self.warn(format!(
                    "media reported something this agent does not know: {other:?}"
                ));
                Ok(())
            }
        };
        // UnknownSession: the engine ended the call meanwhile; nothing to tell it.
        let _ = result;
    }

    fn on_media_done(&mut self, sid: &str, report: Result<CallReport, DriverError>) {
        if let Some(c) = self.calls.get_mut(sid) {
            c.running = None;
        }
        // Media stopped on its own: every event of the run (a certificate mismatch reaches the
        // engine as the digest it is, security-error) was handled before this report.
        if self.calls.get(sid).is_some_and(|c| c.ended.is_none()) {
            let why = match &report {
                Ok(r) => match &r.failure {
                    Some(f) => f.to_string(),
                    None => "media ended".to_owned(),
                },
                Err(e) => e.to_string(),
            };
            let _ = self.engine.handle_media(
                &mut self.crypto,
                Instant::now(),
                sid,
                EngineMedia::Failed(why),
            );
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
        if self.calls.is_empty() {
            // The next call binds on the addresses of its day: look at them afresh.
            self.host_ips = None;
        }
        if let Some(mut r) = call.running {
            r.stop();
        }
        let mut stages = call.stages;
        stages.sort_by_key(|(_, t)| *t);
        let omemo = self.crypto.take_timings();
        self.emit(AgentEvent::Stats(Box::new(CallSummary {
            sid: sid.to_owned(),
            peer: call.peer,
            shield_after: call.shield_at,
            first_audio_after: call.first_audio_at,
            recording: call.recording,
            media: report,
            stages,
            omemo,
        })));
    }

    fn stop_all_media(&mut self) {
        for c in self.calls.values_mut() {
            if let Some(r) = c.running.as_mut() {
                r.stop();
            }
        }
    }
}

/// The discovery under way, if any; pending forever without one (a `select!` branch).
async fn poll_discovery(
    discovery: &mut Option<Discovery>,
) -> Option<Result<Vec<IceServer>, ClientError>> {
    match discovery.as_mut() {
        Some(running) => Some(running.await),
        None => std::future::pending().await,
    }
}

/// The monotonic instant of a wall-clock time (now, if it has passed); `None` beyond what the
/// clock can hold.
fn instant_at(at: SystemTime) -> Option<Instant> {
    let wait = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now().checked_add(wait)
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
pub fn audio_devices() -> Result<Vec<media::audio::live::DeviceInfo>, ClientError> {
    media::audio::live::list_devices().map_err(ClientError::Audio)
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
}
