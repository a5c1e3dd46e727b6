//! The call state machine for both roles (docs/protocol.md §5, §8, §10), sans-IO.
//!
//! Inputs: [`Engine::handle_stanza`], [`Engine::handle_user`], [`Engine::handle_media`],
//! [`Engine::handle_trust_change`], [`Engine::handle_timeout`]. Outputs: [`Engine::poll_output`]
//! (stanzas to send, events) and [`Engine::poll_timeout`] (the next deadline). No clock, socket or
//! thread: `now` is passed in, so every case is a deterministic test.
//!
//! This file holds the public types, the per-call state and the [`Engine`]; the work is done by
//! `Op` (the engine with the OMEMO borrowed for one input), split by concern: `user` (user
//! actions, timers, trust changes), `offer_answer` (our contents into the offer or the answer),
//! `jmi` (messages: JMI, carbons, bounces), `session` (Jingle IQs), `content_add` (contents
//! added mid-call), `ending` (the one place calls end, and the shield), `output` (stanzas out)
//! and `contents` (free helpers over content maps).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::jingle::{Action, Creator, Reason, ReasonElement, Senders};
use xmpp_parsers::jingle_dtls_srtp::{Fingerprint, Setup};
use xmpp_parsers::jingle_grouping::{Content as GroupContent, Group, Semantics};
use xmpp_parsers::jingle_ice_udp::Candidate;
use xmpp_parsers::jingle_rtp::Description as RtpDescription;

use crate::fingerprint::SHA256_LEN;
use crate::jingle::{JingleEnvelope, RtpContent};
use crate::jmi::{Accept, DeviceClaim, JingleMessage, Proceed, Propose, Reject, Retract, Ringing};
use crate::reason::{CallError, reason_element};
use crate::transport::{IceUdpTransport, MAX_CANDIDATES_PER_CONTENT, TransportFingerprint};
use crate::verification::{
    self, Downgrade, Expectation, IdentityKey, Mode, OmemoCrypto, Shield, Trust, VerificationError,
};
use crate::{ns, xml};

// The engine's inputs, by concern; each adds to `impl Op` and reads the types above.
mod content_add;
mod contents;
mod ending;
mod jmi;
mod offer_answer;
mod output;
mod restart;
mod session;
#[cfg(test)]
mod tests;
mod user;

/// How long a proposal rings before it is given up, on both sides (Conversations' 30 s,
/// docs/protocol.md §5.2 step 1). A `<propose/>` delayed by at least this much is stale.
pub const RING_TIMEOUT: Duration = Duration::from_secs(30);
/// Most calls (ringing, proposed or running) tracked at once. One person rarely has more than
/// one; the cap bounds what a flood of `<propose/>`s can make us hold. Excess proposals are
/// rejected with `<busy/>`.
pub const MAX_CALLS: usize = 8;
/// How many retracted proposals are remembered to answer a late `<proceed/>` with a `<retract/>`
/// (the proceed/retract race, docs/protocol.md §5.2 step 5).
pub const MAX_RECENT_RETRACTS: usize = 16;
/// Most outstanding IQs we sent and wait an answer for.
pub const MAX_PENDING_IQS: usize = 64;
/// How many ICE restarts one call may make (ours and the peer's together): each one makes
/// media gather and check again, so a peer cannot make us do that without end.
pub const MAX_ICE_RESTARTS: u32 = 16;

/// Static configuration of an engine.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our own full JID.
    pub own_jid: FullJid,
    /// Refuse or end every call that cannot be [`Shield::Verified`].
    pub require_verified: bool,
    /// Ring timeout; [`RING_TIMEOUT`] unless a test shortens it.
    pub ring_timeout: Duration,
    /// Send `<ringing/>` and the receipt for a proposal (Conversations only does that for
    /// roster contacts, docs/protocol.md §5.1; the client decides).
    pub send_ringing: bool,
}

impl Config {
    /// Defaults: no `require_verified`, 30 s ring timeout, send ringing.
    pub fn new(own_jid: FullJid) -> Self {
        Config {
            own_jid,
            require_verified: false,
            ring_timeout: RING_TIMEOUT,
            send_ringing: true,
        }
    }
}

/// A medium of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Media {
    /// `media='audio'`
    Audio,
    /// `media='video'`
    Video,
}

impl Media {
    /// The `media` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Media::Audio => "audio",
            Media::Video => "video",
        }
    }

    fn parse(s: &str) -> Option<Media> {
        match s {
            "audio" => Some(Media::Audio),
            "video" => Some(Media::Video),
            _ => None,
        }
    }
}

/// Which side of the call we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We called.
    Initiator,
    /// We were called.
    Responder,
}

/// What the user does.
#[derive(Debug, Clone, PartialEq)]
pub enum UserAction {
    /// Call `peer` through JMI (`<propose/>` to the bare JID). `sid` must be unguessable
    /// (Conversations: 16 random bytes, base64, docs/protocol.md §5.1); the client draws it.
    Call {
        /// Callee bare JID.
        peer: BareJid,
        /// New session id.
        sid: String,
        /// Proposed media.
        media: Vec<Media>,
    },
    /// Call one full JID directly with `session-initiate`, without JMI: never verified
    /// (docs/protocol.md §5.2), hence refused under `require_verified`.
    CallDirect {
        /// Callee full JID.
        peer: FullJid,
        /// New session id.
        sid: String,
        /// Media.
        media: Vec<Media>,
    },
    /// Answer a ringing call.
    Accept {
        /// Session id.
        sid: String,
    },
    /// Decline a ringing call.
    Reject {
        /// Session id.
        sid: String,
    },
    /// Decline the peer's `content-add` (answered with `content-reject`).
    RejectContent {
        /// Session id.
        sid: String,
    },
    /// End or cancel a call in any state.
    HangUp {
        /// Session id.
        sid: String,
    },
}

/// What media prepared locally for one content.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalContent {
    /// Content name (`0` like Conversations or `audio` like Dino).
    pub name: String,
    /// `senders`.
    pub senders: Senders,
    /// Our RTP description.
    pub description: RtpDescription,
    /// ICE ufrag.
    pub ufrag: String,
    /// ICE pwd.
    pub pwd: String,
    /// Candidates known so far (more may follow as `transport-info`).
    pub candidates: Vec<Candidate>,
    /// Our DTLS certificate fingerprint; `setup` must be `actpass` as initiator and `active` or
    /// `passive` as responder.
    pub fingerprint: Fingerprint,
}

/// ICE credentials of one content (RFC 8445 ufrag and pwd), as an ICE restart changes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// Content name.
    pub content: String,
    /// `ufrag`.
    pub ufrag: String,
    /// `pwd`.
    pub pwd: String,
}

/// What the peer sent for one content, with the fingerprint media must see in DTLS (decrypted
/// when it travelled encrypted).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteContent {
    /// Content name.
    pub name: String,
    /// RTP description (SDES `<encryption/>` already dropped: never used).
    pub description: Option<RtpDescription>,
    /// ICE ufrag.
    pub ufrag: Option<String>,
    /// ICE pwd.
    pub pwd: Option<String>,
    /// Candidates in the offer/answer.
    pub candidates: Vec<Candidate>,
    /// The expected DTLS peer fingerprint.
    pub fingerprint: Fingerprint,
    /// How it travelled.
    pub mode: Mode,
}

/// What media reports.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// Answer to [`Event::MediaNeeded`]: our descriptions, transports and fingerprint.
    LocalContents(Vec<LocalContent>),
    /// Add contents to a running call (`content-add`, docs/protocol.md §2.4: full transports,
    /// encrypted like the offer when the session is verified). The fingerprint must be the one
    /// of the running DTLS association (BUNDLE).
    AddContents(Vec<LocalContent>),
    /// Media restarted ICE with new local credentials (a network change, or the answer to the
    /// peer's [`Event::IceRestart`] offer); no candidates yet, they follow as
    /// [`MediaEvent::LocalCandidate`] with the new credentials. Our own restart goes out as
    /// a `transport-info` with the new credentials and no candidate (Conversations' restart
    /// offer, docs/protocol.md §2.4); as an answer nothing goes out until the first candidate.
    /// The DTLS association, its fingerprints and so the shield stay as they are.
    IceRestarted {
        /// The new local credentials, one per content.
        credentials: Vec<IceCredentials>,
    },
    /// A new local candidate to trickle (sent as `transport-info`, never with a fingerprint).
    LocalCandidate {
        /// Content name.
        content: String,
        /// The candidate.
        candidate: Candidate,
    },
    /// The DTLS peer certificate digest media saw.
    PeerDigest {
        /// Hash algorithm.
        hash: Algo,
        /// Digest bytes.
        value: Vec<u8>,
    },
    /// ICE and DTLS are up.
    Connected,
    /// ICE or DTLS failed.
    Failed(String),
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEnd {
    /// We hung up or cancelled.
    LocalHangup,
    /// We declined.
    LocalReject,
    /// The peer ended the session; its reason.
    PeerTerminated(Reason),
    /// The callee declined our proposal.
    Declined,
    /// The caller withdrew the proposal.
    Retracted,
    /// Nobody answered in time.
    Timeout,
    /// Another device of our account accepted (own `<accept/>` or carbon `<proceed/>`).
    AnsweredElsewhere,
    /// Another device of our account declined.
    RejectedElsewhere,
    /// Simultaneous proposals: the peer's proposal (this sid) wins (docs/protocol.md §5.2 step 8).
    Superseded(String),
    /// The engine ended the call; the peer received `error.reason()`.
    Failed(CallError),
    /// The peer answered one of our IQs with an error.
    PeerError,
}

/// What the engine tells the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A call rings (JMI proposal, or a direct `session-initiate` when `jmi` is false).
    IncomingCall {
        /// Session id.
        sid: String,
        /// Caller full JID.
        from: FullJid,
        /// Proposed media.
        media: Vec<Media>,
        /// Whether it came through JMI.
        jmi: bool,
    },
    /// The callee's device rings (receipt or `<ringing/>`).
    PeerRinging {
        /// Session id.
        sid: String,
    },
    /// The callee accepted; `device` is the OMEMO device we will encrypt to, if any.
    Proceeding {
        /// Session id.
        sid: String,
        /// Target device.
        device: Option<u32>,
    },
    /// Media must prepare local contents and answer with [`MediaEvent::LocalContents`].
    MediaNeeded {
        /// Session id.
        sid: String,
        /// Our role (decides the DTLS `setup`).
        role: Role,
        /// The media.
        media: Vec<Media>,
    },
    /// The peer's descriptions, transports and the fingerprints DTLS must present.
    RemoteMedia {
        /// Session id.
        sid: String,
        /// Contents.
        contents: Vec<RemoteContent>,
    },
    /// The peer restarted ICE: new remote credentials for these contents (its candidates follow
    /// as [`Event::RemoteCandidates`]). With `offer`, restart ours too and report
    /// [`MediaEvent::IceRestarted`]; without, this is the peer's answer to our restart. The
    /// fingerprints, the DTLS association and the shield do not change.
    IceRestart {
        /// Session id.
        sid: String,
        /// The peer's new credentials.
        remote: Vec<IceCredentials>,
        /// The peer's restart (answer it) rather than its answer to ours.
        offer: bool,
    },
    /// More remote candidates.
    RemoteCandidates {
        /// Session id.
        sid: String,
        /// Content name.
        content: String,
        /// Candidates.
        candidates: Vec<Candidate>,
    },
    /// The peer wants to add contents; answer with [`MediaEvent::LocalContents`] (accept) or
    /// [`UserAction::RejectContent`].
    ContentAdd {
        /// Session id.
        sid: String,
        /// The checked remote contents.
        contents: Vec<RemoteContent>,
    },
    /// The peer accepted our [`MediaEvent::AddContents`].
    ContentAccepted {
        /// Session id.
        sid: String,
        /// The peer's side of the added contents.
        contents: Vec<RemoteContent>,
    },
    /// The peer rejected our [`MediaEvent::AddContents`].
    ContentRejected {
        /// Session id.
        sid: String,
    },
    /// DTLS presented the expected certificate (and policy allows): media may now be played.
    PlayMedia {
        /// Session id.
        sid: String,
    },
    /// The shield changed (first reported once DTLS is proven).
    Shield {
        /// Session id.
        sid: String,
        /// New state.
        shield: Shield,
        /// The peer's OMEMO device this call's fingerprints travelled with (None for plain
        /// fingerprints): the device to show beside the shield, this call's and no other's.
        device: Option<u32>,
    },
    /// The contact had been verified (a verified key, or an earlier verified call), and this
    /// call is less than verified. Reported once per call, as soon as it is known and always
    /// before [`Event::PlayMedia`]; under a require-verified policy the call then ends.
    Downgrade {
        /// Session id.
        sid: String,
        /// The contact.
        peer: BareJid,
        /// What went wrong.
        kind: Downgrade,
        /// The peer's device concerned, when one is known.
        device: Option<u32>,
    },
    /// The call is over; the engine forgot it.
    Ended {
        /// Session id.
        sid: String,
        /// Why.
        end: CallEnd,
    },
}

/// One output of [`Engine::poll_output`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A stanza to send (`<message/>` or `<iq/>` in `jabber:client`).
    Send(Element),
    /// An event for the client.
    Event(Event),
}

/// Whether [`Engine::handle_stanza`] took the stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The stanza concerned calls (answered, used or deliberately dropped).
    Consumed,
    /// Not a call stanza: the client should route it elsewhere.
    NotMine,
}

/// Misuse of the API by the client (never caused by peer input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No call with that sid.
    #[error("unknown session")]
    UnknownSession,
    /// The action does not fit the call's state.
    #[error("action not allowed in this state")]
    WrongState,
    /// [`MAX_CALLS`] reached.
    #[error("too many calls")]
    TooManyCalls,
    /// The sid is already in use.
    #[error("session id in use")]
    SessionExists,
    /// No media given.
    #[error("no media")]
    NoMedia,
    /// `require_verified` forbids this call (no OMEMO, direct call, …).
    #[error("call cannot be verified")]
    NotVerifiable,
    /// Local contents media supplied are unusable.
    #[error("invalid local contents: {0}")]
    InvalidLocal(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Caller: `<propose/>` sent.
    Proposed,
    /// Caller: `<proceed/>` received or direct call; waiting for local contents.
    AwaitingLocalOffer,
    /// Caller: `session-initiate` sent.
    Initiated,
    /// Callee: ringing for a proposal.
    Ringing,
    /// Callee: `<accept/>` and `<proceed/>` sent; waiting for the `session-initiate`.
    Proceeded,
    /// Callee: direct `session-initiate` received, ringing.
    IncomingSession,
    /// Callee: `session-initiate` accepted; waiting for local contents.
    AwaitingLocalAnswer,
    /// Both: offer and answer exchanged.
    Active,
}

impl State {
    fn has_session(self) -> bool {
        matches!(
            self,
            State::Initiated | State::IncomingSession | State::AwaitingLocalAnswer | State::Active
        )
    }
}

#[derive(Debug, Clone)]
struct Call {
    role: Role,
    jmi: bool,
    peer_bare: BareJid,
    peer: Option<FullJid>,
    media: Vec<Media>,
    state: State,
    deadline: Option<Instant>,
    /// Caller: the device named in `<proceed/>`, to which the offer is encrypted.
    proceed_device: Option<u32>,
    /// How the offer's fingerprints travelled, once it was sent or read.
    offer: Option<Sealed>,
    /// How the answer's fingerprints travelled, once it was sent or read.
    answer: Option<Sealed>,
    remote: Vec<RemoteContent>,
    offer_had_group: bool,
    local: Vec<LocalContent>,
    candidates_seen: BTreeMap<String, usize>,
    dtls_proven: bool,
    shield: Option<Shield>,
    media_allowed: bool,
    peer_ringing: bool,
    /// A `content-add` from the peer awaiting our answer: its contents as received.
    incoming_add: Option<Vec<RtpContent>>,
    /// Remote contents of that `content-add`, already checked.
    incoming_add_remote: Vec<RemoteContent>,
    /// Our `content-add` awaiting the peer's answer.
    outgoing_add: Option<Vec<LocalContent>>,
    /// A [`Event::Downgrade`] was reported for this call.
    downgrade_reported: bool,
    /// Our ICE restart offer is out (the id of its `transport-info`) and not yet answered.
    restart_offered: Option<String>,
    /// The peer offered an ICE restart and media has not restarted yet.
    restart_asked: bool,
    /// ICE restarts so far, both sides ([`MAX_ICE_RESTARTS`]).
    restarts: u32,
}

impl Call {
    fn new(role: Role, jmi: bool, peer_bare: BareJid, media: Vec<Media>, state: State) -> Self {
        Call {
            role,
            jmi,
            peer_bare,
            peer: None,
            media,
            state,
            deadline: None,
            proceed_device: None,
            offer: None,
            answer: None,
            remote: Vec::new(),
            offer_had_group: false,
            local: Vec::new(),
            candidates_seen: BTreeMap::new(),
            dtls_proven: false,
            shield: None,
            media_allowed: false,
            peer_ringing: false,
            incoming_add: None,
            incoming_add_remote: Vec::new(),
            outgoing_add: None,
            downgrade_reported: false,
            restart_offered: None,
            restart_asked: false,
            restarts: 0,
        }
    }

    /// The (device, identity key) of an encrypted session: offer and answer both encrypted
    /// with the same ones (docs/protocol.md §4.1: one session per call, written once).
    fn encrypted_session(&self) -> Option<(u32, IdentityKey)> {
        match (self.offer, self.answer) {
            (Some(Sealed::Encrypted(o)), Some(Sealed::Encrypted(a))) if o == a => Some(o),
            _ => None,
        }
    }

    fn is_peer(&self, from: &Jid) -> bool {
        self.peer
            .as_ref()
            .is_some_and(|p| p.as_str() == from.as_str())
    }
}

/// How one direction's fingerprints travelled; an encrypted one always names the device and
/// identity key of its OMEMO session, so no code path can hold "encrypted" without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sealed {
    /// Plain XEP-0320 (or OMEMO failed and the call fell back).
    Plain,
    /// The draft: OMEMO-encrypted to or from this (device, identity key).
    Encrypted((u32, IdentityKey)),
}

impl Sealed {
    fn mode(self) -> Mode {
        match self {
            Sealed::Plain => Mode::Plain,
            Sealed::Encrypted(_) => Mode::Encrypted,
        }
    }

    /// What was read: encrypted only with its sender.
    fn read(remote: &verification::RemoteFingerprints) -> Sealed {
        match (remote.mode, remote.sender) {
            (Mode::Encrypted, Some(sender)) => Sealed::Encrypted(sender),
            _ => Sealed::Plain,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carbon {
    None,
    Sent,
    Received,
}

/// The sans-IO call engine: all calls of one account resource.
///
/// It holds no OMEMO: each input that may need it (to encrypt our fingerprint, decrypt the
/// peer's, look up trust or the contact's policy) borrows the client's [`OmemoCrypto`] for that
/// one call, so the client keeps its OMEMO service for everything else (messages, trust).
pub struct Engine {
    config: Config,
    calls: BTreeMap<String, Call>,
    outputs: VecDeque<Output>,
    pending_iqs: BTreeMap<String, (String, Action)>,
    recent_retracts: VecDeque<(String, BareJid)>,
    next_id: u64,
}

impl Engine {
    /// A new engine.
    pub fn new(config: Config) -> Self {
        Engine {
            config,
            calls: BTreeMap::new(),
            outputs: VecDeque::new(),
            pending_iqs: BTreeMap::new(),
            recent_retracts: VecDeque::new(),
            next_id: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of calls tracked.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// The current shield of a call (None before it is known).
    pub fn shield(&self, sid: &str) -> Option<Shield> {
        self.calls.get(sid).and_then(|c| c.shield)
    }

    /// Next output, or None when drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest deadline; call [`Engine::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls.values().filter_map(|c| c.deadline).min()
    }

    // ----------------------------------------------------------------------------------------
    // user

    /// Handles a user action.
    pub fn handle_user(
        &mut self,
        crypto: &mut dyn OmemoCrypto,
        now: Instant,
        action: UserAction,
    ) -> Result<(), ApiError> {
        Op { e: self, crypto }.handle_user(now, action)
    }

    // ----------------------------------------------------------------------------------------
    // media

    /// Handles a media report for call `sid`.
    pub fn handle_media(
        &mut self,
        crypto: &mut dyn OmemoCrypto,
        now: Instant,
        sid: &str,
        event: MediaEvent,
    ) -> Result<(), ApiError> {
        Op { e: self, crypto }.handle_media(now, sid, event)
    }

    // ----------------------------------------------------------------------------------------
    // trust and timers

    /// Re-evaluates every running call's shield after the client changed a trust level
    /// (docs/security-tests.md line 7).
    pub fn handle_trust_change(&mut self, crypto: &mut dyn OmemoCrypto, _now: Instant) {
        Op { e: self, crypto }.handle_trust_change(_now)
    }

    /// Fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, crypto: &mut dyn OmemoCrypto, now: Instant) {
        Op { e: self, crypto }.handle_timeout(now)
    }

    // ----------------------------------------------------------------------------------------
    // stanzas

    /// Handles an incoming stanza. `wall_clock` is only used to age delayed `<propose/>`s.
    pub fn handle_stanza(
        &mut self,
        crypto: &mut dyn OmemoCrypto,
        now: Instant,
        wall_clock: SystemTime,
        stanza: &Element,
    ) -> Handled {
        Op { e: self, crypto }.handle_stanza(now, wall_clock, stanza)
    }
}

/// One operation of the engine with the OMEMO it borrowed for that operation.
struct Op<'a> {
    e: &'a mut Engine,
    crypto: &'a mut dyn OmemoCrypto,
}

/// docs/protocol.md §5.2 step 8: both sides must pick the same survivor. We keep the proposal with
/// the greater session id, and on equal ids the one from the greater full JID.
pub fn proposal_wins(our_sid: &str, our_jid: &str, their_sid: &str, their_jid: &str) -> bool {
    (our_sid, our_jid) > (their_sid, their_jid)
}
