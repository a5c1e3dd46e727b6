//! The call state machine for both roles (docs/protocol.md §5, §8, §10), sans-IO.
//!
//! Inputs: [`Engine::handle_stanza`], [`Engine::handle_user`], [`Engine::handle_media`],
//! [`Engine::handle_trust_change`], [`Engine::handle_timeout`]. Outputs: [`Engine::poll_output`]
//! (stanzas to send, events) and [`Engine::poll_timeout`] (the next deadline). No clock, socket or
//! thread: `now` is passed in, so every case is a deterministic test.

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

impl Op<'_> {
    // ----------------------------------------------------------------------------------------
    // user

    /// Handles a user action.
    fn handle_user(&mut self, now: Instant, action: UserAction) -> Result<(), ApiError> {
        match action {
            UserAction::Call { peer, sid, media } => self.user_call(now, peer, sid, media),
            UserAction::CallDirect { peer, sid, media } => {
                if self.requires_verified(&peer.to_bare()) {
                    return Err(ApiError::NotVerifiable);
                }
                let media = normalise_media(media)?;
                self.check_new_sid(&sid)?;
                let mut call = Call::new(
                    Role::Initiator,
                    false,
                    peer.to_bare(),
                    media.clone(),
                    State::AwaitingLocalOffer,
                );
                call.peer = Some(peer);
                self.e.calls.insert(sid.clone(), call);
                self.event(Event::MediaNeeded {
                    sid,
                    role: Role::Initiator,
                    media,
                });
                Ok(())
            }
            UserAction::Accept { sid } => self.user_accept(now, sid),
            UserAction::Reject { sid } => {
                let call = self.e.calls.get(&sid).ok_or(ApiError::UnknownSession)?;
                if !matches!(call.state, State::Ringing | State::IncomingSession) {
                    return Err(ApiError::WrongState);
                }
                self.end(&sid, None, CallEnd::LocalReject);
                Ok(())
            }
            UserAction::RejectContent { sid } => {
                let call = self.e.calls.get_mut(&sid).ok_or(ApiError::UnknownSession)?;
                let (Some(contents), Some(peer)) = (call.incoming_add.take(), call.peer.clone())
                else {
                    return Err(ApiError::WrongState);
                };
                call.incoming_add_remote.clear();
                let mut reject = JingleEnvelope::new(Action::ContentReject, &sid);
                reject.contents = strip(contents);
                reject.reason = Some(reason_element(Reason::Decline, None));
                self.send_iq_set(peer, &sid, reject);
                Ok(())
            }
            UserAction::HangUp { sid } => {
                let call = self.e.calls.get(&sid).ok_or(ApiError::UnknownSession)?;
                let reason = if call.state == State::Active {
                    Reason::Success
                } else {
                    Reason::Cancel
                };
                self.end(
                    &sid,
                    Some(reason_element(reason, None)),
                    CallEnd::LocalHangup,
                );
                Ok(())
            }
        }
    }

    fn check_new_sid(&self, sid: &str) -> Result<(), ApiError> {
        if sid.is_empty() || self.e.calls.contains_key(sid) {
            return Err(ApiError::SessionExists);
        }
        if self.e.calls.len() >= MAX_CALLS {
            return Err(ApiError::TooManyCalls);
        }
        Ok(())
    }

    fn user_call(
        &mut self,
        now: Instant,
        peer: BareJid,
        sid: String,
        media: Vec<Media>,
    ) -> Result<(), ApiError> {
        // Without OMEMO we can never encrypt the offer.
        if self.requires_verified(&peer) && self.crypto.own_device_id().is_none() {
            return Err(ApiError::NotVerifiable);
        }
        let media = normalise_media(media)?;
        self.check_new_sid(&sid)?;
        let mut call = Call::new(
            Role::Initiator,
            true,
            peer.clone(),
            media.clone(),
            State::Proposed,
        );
        call.deadline = Some(now + self.e.config.ring_timeout);
        self.e.calls.insert(sid.clone(), call);
        // docs/protocol.md §5.1/§7.1: chat, bare JID, id jm-propose-SID, receipt request,
        // store hint.
        let propose = Propose {
            id: sid.clone(),
            descriptions: media
                .iter()
                .map(|m| RtpDescription::new(m.as_str().to_owned()))
                .collect(),
        };
        self.send_jmi(
            Jid::from(peer),
            JingleMessage::Propose(propose),
            Some(format!("jm-propose-{sid}")),
            true,
        );
        Ok(())
    }

    fn user_accept(&mut self, now: Instant, sid: String) -> Result<(), ApiError> {
        let call = self.e.calls.get(&sid).ok_or(ApiError::UnknownSession)?;
        match call.state {
            State::Ringing => {
                let own_device = self.crypto.own_device_id();
                if self.requires_verified(&call.peer_bare) && own_device.is_none() {
                    // Refuse to proceed: without a device nobody can encrypt to us.
                    self.abort(
                        &sid,
                        CallError::Verification(VerificationError::NotVerifiable),
                    );
                    return Err(ApiError::NotVerifiable);
                }
                let Some(peer) = call.peer.clone() else {
                    return Err(ApiError::WrongState);
                };
                // docs/protocol.md §5.2 step 2: accept to our own bare JID first (other devices
                // stop ringing), then proceed with <device/> to the caller's full JID.
                let own_bare = self.e.config.own_jid.to_bare();
                self.send_jmi(
                    Jid::from(own_bare),
                    JingleMessage::Accept(Accept { id: sid.clone() }),
                    None,
                    false,
                );
                self.send_jmi(
                    Jid::from(peer),
                    JingleMessage::Proceed(Proceed::new(sid.clone(), own_device)),
                    Some(format!("jm-proceed-{sid}")),
                    false,
                );
                if let Some(call) = self.e.calls.get_mut(&sid) {
                    call.state = State::Proceeded;
                    call.deadline = Some(now + self.e.config.ring_timeout);
                }
                Ok(())
            }
            State::IncomingSession => {
                let media = call.media.clone();
                let remote = call.remote.clone();
                if let Some(call) = self.e.calls.get_mut(&sid) {
                    call.state = State::AwaitingLocalAnswer;
                    call.deadline = None;
                }
                self.event(Event::RemoteMedia {
                    sid: sid.clone(),
                    contents: remote,
                });
                self.event(Event::MediaNeeded {
                    sid,
                    role: Role::Responder,
                    media,
                });
                Ok(())
            }
            _ => Err(ApiError::WrongState),
        }
    }

    // ----------------------------------------------------------------------------------------
    // media

    /// Handles a media report for call `sid`.
    fn handle_media(&mut self, now: Instant, sid: &str, event: MediaEvent) -> Result<(), ApiError> {
        let call = self.e.calls.get(sid).ok_or(ApiError::UnknownSession)?;
        match event {
            MediaEvent::LocalContents(contents) if call.state != State::Active => {
                validate_local(&contents, call.role)?;
                match (call.role, call.state) {
                    (Role::Initiator, State::AwaitingLocalOffer) => {
                        self.send_offer(now, sid, contents);
                        Ok(())
                    }
                    (Role::Responder, State::AwaitingLocalAnswer) => {
                        self.send_answer(sid, contents);
                        Ok(())
                    }
                    _ => Err(ApiError::WrongState),
                }
            }
            MediaEvent::LocalContents(contents) if call.incoming_add.is_some() => {
                validate_added(call, &contents)?;
                self.send_content_accept(sid, contents);
                Ok(())
            }
            MediaEvent::LocalContents(_) => Err(ApiError::WrongState),
            MediaEvent::AddContents(contents) => {
                if call.state != State::Active || call.outgoing_add.is_some() {
                    return Err(ApiError::WrongState);
                }
                validate_added(call, &contents)?;
                self.send_content_add(sid, contents);
                Ok(())
            }
            MediaEvent::LocalCandidate { content, candidate } => {
                if !matches!(call.state, State::Initiated | State::Active) {
                    return Err(ApiError::WrongState);
                }
                let Some(local) = call.local.iter().find(|l| l.name == content) else {
                    return Err(ApiError::InvalidLocal("unknown content"));
                };
                let Some(peer) = call.peer.clone() else {
                    return Err(ApiError::WrongState);
                };
                // docs/protocol.md §2.4: transport-info never carries a fingerprint.
                let transport = IceUdpTransport {
                    ufrag: Some(local.ufrag.clone()),
                    pwd: Some(local.pwd.clone()),
                    candidates: vec![candidate],
                    ..Default::default()
                };
                let mut j = JingleEnvelope::new(Action::TransportInfo, sid);
                j.contents.push(RtpContent {
                    creator: Creator::Initiator,
                    name: content,
                    senders: Senders::Both,
                    description: None,
                    transport: Some(transport),
                });
                self.send_iq_set(peer, sid, j);
                Ok(())
            }
            MediaEvent::PeerDigest { hash, value } => {
                if call.remote.is_empty() {
                    return Err(ApiError::WrongState);
                }
                // One DTLS association (BUNDLE): its certificate must match every content's
                // expected fingerprint, compared by value (docs/security-tests.md lines 4, 6).
                let matches = call
                    .remote
                    .iter()
                    .all(|r| r.fingerprint.hash == hash && r.fingerprint.value == value);
                if !matches {
                    self.abort(sid, VerificationError::DigestMismatch.into());
                    return Ok(());
                }
                if let Some(call) = self.e.calls.get_mut(sid) {
                    call.dtls_proven = true;
                }
                self.evaluate_shield(sid);
                Ok(())
            }
            MediaEvent::Connected => {
                if call.remote.is_empty() {
                    return Err(ApiError::WrongState);
                }
                if !call.dtls_proven {
                    self.abort(sid, VerificationError::DigestMissing.into());
                }
                Ok(())
            }
            MediaEvent::Failed(why) => {
                self.abort(sid, CallError::MediaFailed(why));
                Ok(())
            }
        }
    }

    fn send_offer(&mut self, now: Instant, sid: &str, local: Vec<LocalContent>) {
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        let (peer, peer_bare, target) = (
            call.peer.clone(),
            call.peer_bare.clone(),
            call.proceed_device,
        );
        let Some(peer) = peer else {
            self.abort(
                sid,
                CallError::Internal("offer without the peer's full JID"),
            );
            return;
        };
        let plain: Vec<Fingerprint> = local.iter().map(|l| l.fingerprint.clone()).collect();
        // docs/protocol.md §10 caller 3: encrypt every content to the proceed device, or none.
        let mut encrypted = None;
        let mut downgrade = None;
        let mut failure = None;
        if let Some(device) = target {
            // Never to a device whose key the user distrusted: then the fingerprints go plain.
            let known = self.crypto.session_identity(&peer_bare, device);
            if known.is_some_and(|id| self.crypto.trust(&peer_bare, &id) == Trust::Untrusted) {
                downgrade = Some(Downgrade::UnverifiedDevice);
            } else {
                match verification::encrypt_local(&mut *self.crypto, &peer_bare, device, &plain) {
                    Ok((fps, identity)) => match self.crypto.trust(&peer_bare, &identity) {
                        // Learnt only now (no session before): the ciphertext is not sent.
                        Trust::Untrusted => downgrade = Some(Downgrade::UnverifiedDevice),
                        trust => {
                            if trust != Trust::Verified {
                                downgrade = Some(Downgrade::UnverifiedDevice);
                            }
                            encrypted = Some((fps, identity));
                        }
                    },
                    Err(e) => {
                        // The draft's silent fallback to plain (docs/protocol.md §3.6), reported
                        // as a downgrade, and never taken under require-verified.
                        downgrade = Some(Downgrade::OmemoFailed);
                        failure = Some(e);
                    }
                }
            }
        }
        if let Some(kind) = downgrade {
            self.report_downgrade(sid, kind, target);
        }
        if self.requires_verified(&peer_bare) && (encrypted.is_none() || downgrade.is_some()) {
            let error = match failure {
                Some(e) => VerificationError::Encryption(e),
                None => VerificationError::NotVerifiable,
            };
            self.abort(sid, error.into());
            return;
        }
        let sealed = match (&encrypted, target) {
            (Some((_, identity)), Some(device)) => Sealed::Encrypted((device, *identity)),
            _ => Sealed::Plain,
        };
        let mut j = JingleEnvelope::new(Action::SessionInitiate, sid);
        j.initiator = Some(self.e.config.own_jid.to_string());
        j.contents = build_contents(&local, encrypted.as_ref().map(|(f, _)| f.as_slice()));
        j.group = Some(bundle(&local));
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.offer = Some(sealed);
            call.local = local;
            call.state = State::Initiated;
            call.deadline = Some(now + self.e.config.ring_timeout);
        }
        self.send_iq_set(peer, sid, j);
    }

    fn send_answer(&mut self, sid: &str, local: Vec<LocalContent>) {
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        let (peer, peer_bare, offer) = (call.peer.clone(), call.peer_bare.clone(), call.offer);
        let Some(peer) = peer else {
            self.abort(
                sid,
                CallError::Internal("answer without the peer's full JID"),
            );
            return;
        };
        let plain: Vec<Fingerprint> = local.iter().map(|l| l.fingerprint.clone()).collect();
        let mut encrypted = None;
        // A caller whose key the user distrusted gets no encrypted fingerprint of ours: the
        // answer goes plain (a draft caller then ends the call; it is never shielded).
        let to = match offer {
            Some(Sealed::Encrypted((device, identity)))
                if self.crypto.trust(&peer_bare, &identity) != Trust::Untrusted =>
            {
                Some((device, identity))
            }
            _ => None,
        };
        if let Some((device, identity)) = to {
            // docs/protocol.md §2.5: answer encrypted to the header sid of the offer; never
            // downgrade (docs/protocol.md §10 callee 3).
            match verification::encrypt_local(&mut *self.crypto, &peer_bare, device, &plain) {
                Ok((fps, id)) if id == identity => encrypted = Some(fps),
                Ok(_) => {
                    self.abort(sid, VerificationError::IdentityMismatch.into());
                    return;
                }
                Err(e) => {
                    self.abort(sid, VerificationError::Encryption(e).into());
                    return;
                }
            }
        }
        let sealed = match (encrypted.is_some(), to) {
            (true, Some(session)) => Sealed::Encrypted(session),
            _ => Sealed::Plain,
        };
        let mut j = JingleEnvelope::new(Action::SessionAccept, sid);
        j.contents = build_contents(&local, encrypted.as_deref());
        if call.offer_had_group {
            j.group = Some(bundle(&local));
        }
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.answer = Some(sealed);
            call.local = local;
            call.state = State::Active;
            call.deadline = None;
        }
        self.send_iq_set(peer, sid, j);
        self.evaluate_shield(sid);
    }

    // ----------------------------------------------------------------------------------------
    // trust and timers

    /// Re-evaluates every running call's shield after the client changed a trust level
    /// (docs/security-tests.md line 7).
    fn handle_trust_change(&mut self, _now: Instant) {
        let sids: Vec<String> = self.e.calls.keys().cloned().collect();
        for sid in sids {
            self.evaluate_shield(&sid);
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<String> = self
            .e
            .calls
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(s, _)| s.clone())
            .collect();
        for sid in due {
            let Some(call) = self.e.calls.get(&sid) else {
                continue;
            };
            match call.state {
                // A ringing proposal just stops ringing here; the caller times out itself.
                State::Ringing | State::Proceeded => {
                    self.forget(&sid, CallEnd::Timeout);
                }
                _ => self.end(
                    &sid,
                    Some(reason_element(Reason::Timeout, None)),
                    CallEnd::Timeout,
                ),
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // stanzas

    /// Handles an incoming stanza. `wall_clock` is only used to age delayed `<propose/>`s.
    fn handle_stanza(&mut self, now: Instant, wall_clock: SystemTime, stanza: &Element) -> Handled {
        if stanza.is("message", ns::JABBER_CLIENT) {
            self.handle_message(now, wall_clock, stanza)
        } else if stanza.is("iq", ns::JABBER_CLIENT) {
            self.handle_iq(now, stanza)
        } else {
            Handled::NotMine
        }
    }

    fn handle_message(&mut self, now: Instant, wall: SystemTime, msg: &Element) -> Handled {
        let Some(from) = msg.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return Handled::NotMine;
        };
        if msg.attr("type") == Some("error") {
            return self.handle_message_error(msg, &from);
        }
        let carbon = msg
            .children()
            .find(|c| c.ns() == ns::CARBONS && (c.name() == "sent" || c.name() == "received"));
        if let Some(carbon) = carbon {
            // Only our own server may hand us carbons; anything else is forged (RFC: XEP-0280 §11).
            if from.as_str() != self.e.config.own_jid.to_bare().as_str() {
                return Handled::NotMine;
            }
            let inner = carbon
                .get_child("forwarded", ns::FORWARD)
                .and_then(|f| f.get_child("message", ns::JABBER_CLIENT));
            let Some(inner) = inner else {
                return Handled::NotMine;
            };
            if JingleMessage::from_message(inner).is_none() {
                return Handled::NotMine;
            }
            let Some(inner_from) = inner.attr("from").and_then(|f| Jid::new(f).ok()) else {
                return Handled::Consumed;
            };
            let kind = if carbon.name() == "sent" {
                Carbon::Sent
            } else {
                Carbon::Received
            };
            return self.handle_jmi(now, wall, inner, inner_from, kind);
        }
        self.handle_jmi(now, wall, msg, from, Carbon::None)
    }

    fn handle_jmi(
        &mut self,
        now: Instant,
        wall: SystemTime,
        msg: &Element,
        from: Jid,
        carbon: Carbon,
    ) -> Handled {
        let jmi = match JingleMessage::from_message(msg) {
            None => return self.handle_receipt(msg, &from),
            Some(Err(_)) => return Handled::Consumed, // malformed: dropped, never panics
            Some(Ok(j)) => j,
        };
        let own_bare = self.e.config.own_jid.to_bare();
        let from_own_account = from.to_bare() == own_bare;
        let from_self = from.as_str() == self.e.config.own_jid.as_str();
        let sid = jmi.id().to_owned();
        match jmi {
            JingleMessage::Propose(p) => {
                if carbon == Carbon::None && !from_own_account {
                    self.incoming_propose(now, wall, msg, from, p);
                }
            }
            JingleMessage::Ringing(_) => {
                if carbon == Carbon::None {
                    self.peer_ringing(&sid, &from);
                }
            }
            JingleMessage::Proceed(p) => match carbon {
                // Our other device proceeded (carbon of its <proceed/>): answered elsewhere.
                Carbon::Sent => self.elsewhere(&sid, CallEnd::AnsweredElsewhere),
                Carbon::Received => {}
                Carbon::None if from_own_account => {
                    if !from_self {
                        self.elsewhere(&sid, CallEnd::AnsweredElsewhere);
                    }
                }
                Carbon::None => self.incoming_proceed(&sid, from, &p),
            },
            JingleMessage::Accept(_) => {
                if from_own_account && !from_self && carbon != Carbon::Received {
                    self.elsewhere(&sid, CallEnd::AnsweredElsewhere);
                }
            }
            JingleMessage::Reject(_) => {
                if carbon == Carbon::Sent || (carbon == Carbon::None && from_own_account) {
                    if !from_self {
                        self.elsewhere(&sid, CallEnd::RejectedElsewhere);
                    }
                } else if carbon == Carbon::None {
                    let ok = self.e.calls.get(&sid).is_some_and(|c| {
                        c.role == Role::Initiator
                            && c.peer_bare == from.to_bare()
                            && matches!(c.state, State::Proposed)
                    });
                    if ok {
                        self.forget(&sid, CallEnd::Declined);
                    }
                }
            }
            JingleMessage::Retract(_) => {
                if carbon == Carbon::None {
                    let ok = self.e.calls.get(&sid).is_some_and(|c| {
                        c.role == Role::Responder
                            && c.jmi
                            && c.peer_bare == from.to_bare()
                            && matches!(c.state, State::Ringing | State::Proceeded)
                    });
                    if ok {
                        self.forget(&sid, CallEnd::Retracted);
                    }
                }
            }
            JingleMessage::Finish(f) => {
                // The session-terminate normally ended the call already; a finish alone ends it.
                if carbon == Carbon::None
                    && self.e.calls.get(&sid).is_some_and(|c| c.is_peer(&from))
                {
                    let reason = f.reason.map(|r| r.reason).unwrap_or(Reason::Success);
                    self.forget(&sid, CallEnd::PeerTerminated(reason));
                }
            }
        }
        Handled::Consumed
    }

    /// A bounced JMI message is never a request. A bounce of our `<propose/>` (or of the
    /// `<proceed/>` we sent) from the peer's account ends that call, as Conversations maps
    /// message errors back by the `jm-propose-`/`jm-proceed-` ids (docs/protocol.md §5.1).
    fn handle_message_error(&mut self, msg: &Element, from: &Jid) -> Handled {
        let id = msg.attr("id").unwrap_or_default();
        let sid = id
            .strip_prefix("jm-propose-")
            .or_else(|| id.strip_prefix("jm-proceed-"))
            .map(str::to_owned)
            .or_else(|| {
                JingleMessage::from_message(msg)
                    .and_then(|r| r.ok())
                    .map(|j| j.id().to_owned())
            });
        let Some(sid) = sid else {
            return Handled::NotMine;
        };
        let ours = self.e.calls.get(&sid).is_some_and(|c| {
            c.peer_bare == from.to_bare()
                && matches!(c.state, State::Proposed | State::Proceeded | State::Ringing)
        });
        if ours {
            self.forget(&sid, CallEnd::PeerError);
        }
        Handled::Consumed
    }

    fn handle_receipt(&mut self, msg: &Element, from: &Jid) -> Handled {
        let Some(received) = msg.get_child("received", ns::RECEIPTS) else {
            return Handled::NotMine;
        };
        let Some(sid) = received
            .attr("id")
            .and_then(|id| id.strip_prefix("jm-propose-"))
        else {
            return Handled::NotMine;
        };
        let sid = sid.to_owned();
        self.peer_ringing(&sid, from);
        Handled::Consumed
    }

    fn peer_ringing(&mut self, sid: &str, from: &Jid) {
        let Some(call) = self.e.calls.get_mut(sid) else {
            return;
        };
        if call.role == Role::Initiator
            && call.state == State::Proposed
            && call.peer_bare == from.to_bare()
            && !call.peer_ringing
        {
            call.peer_ringing = true;
            self.event(Event::PeerRinging {
                sid: sid.to_owned(),
            });
        }
    }

    fn elsewhere(&mut self, sid: &str, end: CallEnd) {
        let ringing = self
            .e
            .calls
            .get(sid)
            .is_some_and(|c| c.role == Role::Responder && c.state == State::Ringing);
        if ringing {
            self.forget(sid, end);
        }
    }

    fn incoming_propose(
        &mut self,
        now: Instant,
        wall: SystemTime,
        msg: &Element,
        from: Jid,
        propose: Propose,
    ) {
        let Ok(from) = from.try_into_full() else {
            return;
        };
        // docs/security-tests.md line 8: a delayed (offline/MAM) proposal older than the ring
        // timeout does not ring.
        if let Some(stamp) = delay_stamp(msg) {
            let age = wall.duration_since(stamp).unwrap_or(Duration::ZERO);
            if age >= self.e.config.ring_timeout {
                return;
            }
        }
        let mut media = Vec::new();
        for d in &propose.descriptions {
            match Media::parse(&d.media) {
                Some(m) => media.push(m),
                None => return, // unknown media: ignored like Conversations
            }
        }
        let Ok(media) = normalise_media(media) else {
            return;
        };
        let sid = propose.id;
        if self.e.calls.contains_key(&sid) {
            return; // re-delivery
        }
        // docs/protocol.md §5.2 step 8: simultaneous proposals between the same two accounts.
        let ours = self
            .e
            .calls
            .iter()
            .find(|(_, c)| {
                c.role == Role::Initiator
                    && c.state == State::Proposed
                    && c.peer_bare == from.to_bare()
            })
            .map(|(s, _)| s.clone());
        if let Some(our_sid) = ours {
            if proposal_wins(
                &our_sid,
                self.e.config.own_jid.as_str(),
                &sid,
                from.as_str(),
            ) {
                return; // the peer retracts theirs
            }
            let peer_bare = from.to_bare();
            self.send_jmi(
                Jid::from(peer_bare),
                JingleMessage::Retract(Retract {
                    id: our_sid.clone(),
                    reason: None,
                }),
                None,
                false,
            );
            self.forget(&our_sid, CallEnd::Superseded(sid.clone()));
        }
        if self.e.calls.len() >= MAX_CALLS {
            self.send_jmi(
                Jid::from(from),
                JingleMessage::Reject(Reject {
                    id: sid,
                    reason: Some(reason_element(Reason::Busy, None)),
                }),
                None,
                false,
            );
            return;
        }
        let mut call = Call::new(
            Role::Responder,
            true,
            from.to_bare(),
            media.clone(),
            State::Ringing,
        );
        call.peer = Some(from.clone());
        call.deadline = Some(now + self.e.config.ring_timeout);
        self.e.calls.insert(sid.clone(), call);
        if self.e.config.send_ringing {
            self.send_jmi(
                Jid::from(from.clone()),
                JingleMessage::Ringing(Ringing { id: sid.clone() }),
                None,
                false,
            );
            if let (Some(_), Some(id)) = (msg.get_child("request", ns::RECEIPTS), msg.attr("id")) {
                let mut m = message_to(&Jid::from(from.clone()), &self.fresh_id());
                m.append_child(xml::with_attrs("received", ns::RECEIPTS, &[("id", id)]));
                m.append_child(xml::bare("store", ns::HINTS));
                self.send(m);
            }
        }
        self.event(Event::IncomingCall {
            sid,
            from,
            media,
            jmi: true,
        });
    }

    fn incoming_proceed(&mut self, sid: &str, from: Jid, proceed: &Proceed) {
        let Ok(from) = from.try_into_full() else {
            return;
        };
        // The proceed/retract race: we retracted, the callee proceeded meanwhile.
        if !self.e.calls.contains_key(sid)
            && self
                .e
                .recent_retracts
                .iter()
                .any(|(s, b)| s == sid && *b == from.to_bare())
        {
            self.send_jmi(
                Jid::from(from),
                JingleMessage::Retract(Retract {
                    id: sid.to_owned(),
                    reason: None,
                }),
                None,
                false,
            );
            return;
        }
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        // docs/security-tests.md line 9: only the callee's account may proceed, and only once.
        if call.role != Role::Initiator || call.state != State::Proposed {
            return;
        }
        if call.peer_bare != from.to_bare() {
            return;
        }
        // docs/protocol.md §2.5: use the device only if OMEMO is on here (Conversations uses it
        // only when OMEMO is the chat's encryption).
        let device = match proceed.device() {
            DeviceClaim::Valid(d) if self.crypto.own_device_id().is_some() => Some(d),
            _ => None,
        };
        let media = call.media.clone();
        let peer_bare = call.peer_bare.clone();
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.peer = Some(from);
            call.proceed_device = device;
            call.state = State::AwaitingLocalOffer;
            call.deadline = None;
        }
        if device.is_none() {
            self.report_downgrade(sid, Downgrade::NoDevice, None);
        }
        if self.requires_verified(&peer_bare) && device.is_none() {
            // docs/security-tests.md line 1: refuse a proceed that offers no verification.
            self.abort(sid, VerificationError::NotVerifiable.into());
            return;
        }
        self.event(Event::Proceeding {
            sid: sid.to_owned(),
            device,
        });
        self.event(Event::MediaNeeded {
            sid: sid.to_owned(),
            role: Role::Initiator,
            media,
        });
    }

    fn handle_iq(&mut self, now: Instant, iq: &Element) -> Handled {
        let Some(from) = iq.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return Handled::NotMine;
        };
        let id = iq.attr("id").unwrap_or_default().to_owned();
        match iq.attr("type") {
            Some("set") => {
                let Some(jingle) = iq.get_child("jingle", ns::JINGLE) else {
                    return Handled::NotMine;
                };
                self.handle_jingle(now, from, &id, jingle);
                Handled::Consumed
            }
            Some(t @ ("result" | "error")) => {
                let Some((sid, action)) = self.e.pending_iqs.get(&id).cloned() else {
                    return Handled::NotMine;
                };
                let is_peer = self.e.calls.get(&sid).is_some_and(|c| c.is_peer(&from));
                if !is_peer && self.e.calls.contains_key(&sid) {
                    return Handled::Consumed; // someone else answering our IQ: ignored
                }
                self.e.pending_iqs.remove(&id);
                if t == "error" && matches!(action, Action::SessionInitiate | Action::SessionAccept)
                {
                    self.forget(&sid, CallEnd::PeerError);
                }
                Handled::Consumed
            }
            _ => Handled::NotMine,
        }
    }

    fn handle_jingle(&mut self, now: Instant, from: Jid, id: &str, el: &Element) {
        let sid = el.attr("sid").unwrap_or_default().to_owned();
        let envelope = match JingleEnvelope::parse(el) {
            Ok(j) => j,
            Err(e) => {
                self.send_iq_error(&from, id, "modify", "bad-request", None);
                // A malformed offer/answer from the real peer ends the call it belongs to (we
                // cannot go on without it); other malformed actions only get the IQ error.
                let is_peer = self.e.calls.get(&sid).is_some_and(|c| c.is_peer(&from));
                let vital = matches!(
                    el.attr("action"),
                    Some("session-initiate" | "session-accept")
                );
                if is_peer && vital {
                    self.abort(&sid, CallError::InvalidJingle(e));
                }
                return;
            }
        };
        let Ok(from_full) = from.clone().try_into_full() else {
            self.send_iq_error(&from, id, "cancel", "bad-request", None);
            return;
        };
        let Some(call) = self.e.calls.get(&sid) else {
            if envelope.action == Action::SessionInitiate {
                self.incoming_direct(now, from_full, id, envelope);
            } else {
                self.send_iq_error(
                    &from,
                    id,
                    "cancel",
                    "item-not-found",
                    Some("unknown-session"),
                );
            }
            return;
        };
        // docs/security-tests.md line 9: Jingle from anyone but the session's peer never touches it.
        if !call.is_peer(&from) {
            self.send_iq_error(
                &from,
                id,
                "cancel",
                "item-not-found",
                Some("unknown-session"),
            );
            return;
        }
        let (role, state) = (call.role, call.state);
        match (envelope.action.clone(), role, state) {
            (Action::SessionInitiate, Role::Responder, State::Proceeded) => {
                self.send_iq_result(&from, id);
                self.pre_approved_initiate(&sid, envelope);
            }
            (Action::SessionAccept, Role::Initiator, State::Initiated) => {
                self.send_iq_result(&from, id);
                self.session_accept(&sid, envelope);
            }
            (Action::TransportInfo, _, s) if s.has_session() => {
                self.transport_info(&from, id, &sid, envelope);
            }
            (Action::SessionTerminate, _, _) => {
                self.send_iq_result(&from, id);
                let reason = envelope.reason.map(|r| r.reason).unwrap_or(Reason::Success);
                self.forget(&sid, CallEnd::PeerTerminated(reason));
            }
            (Action::SessionInfo, _, s) if s.has_session() => self.send_iq_result(&from, id),
            (Action::ContentAdd, _, State::Active) => {
                self.send_iq_result(&from, id);
                self.content_add(&sid, envelope);
            }
            (Action::ContentAccept, _, State::Active) if call.outgoing_add.is_some() => {
                self.send_iq_result(&from, id);
                self.content_accept(&sid, envelope);
            }
            (Action::ContentReject, _, State::Active) if call.outgoing_add.is_some() => {
                self.send_iq_result(&from, id);
                if let Some(call) = self.e.calls.get_mut(&sid) {
                    call.outgoing_add = None;
                }
                self.event(Event::ContentRejected { sid });
            }
            (Action::TransportReplace, _, _) => {
                // docs/security-tests.md line 4: a transport (and its fingerprint) is never replaced.
                self.send_iq_error(&from, id, "cancel", "feature-not-implemented", None);
            }
            _ => {
                self.send_iq_error(
                    &from,
                    id,
                    "wait",
                    "unexpected-request",
                    Some("out-of-order"),
                );
            }
        }
    }

    fn incoming_direct(&mut self, now: Instant, from: FullJid, id: &str, j: JingleEnvelope) {
        let from_jid = Jid::from(from.clone());
        if from.to_bare() == self.e.config.own_jid.to_bare() || self.e.calls.len() >= MAX_CALLS {
            self.send_iq_error(&from_jid, id, "cancel", "not-acceptable", None);
            return;
        }
        self.send_iq_result(&from_jid, id);
        let sid = j.sid.clone();
        let media = match content_media(&j.contents) {
            Ok(m) => m,
            Err(e) => {
                self.terminate_unknown(&from, &sid, &e);
                return;
            }
        };
        let mut call = Call::new(
            Role::Responder,
            false,
            from.to_bare(),
            media.clone(),
            State::IncomingSession,
        );
        call.peer = Some(from.clone());
        call.deadline = Some(now + self.e.config.ring_timeout);
        self.e.calls.insert(sid.clone(), call);
        if let Err(e) = self.read_offer(&sid, &j) {
            self.abort(&sid, e);
            return;
        }
        self.event(Event::IncomingCall {
            sid,
            from,
            media,
            jmi: false,
        });
    }

    /// Terminates a session we never tracked (a broken direct initiate).
    fn terminate_unknown(&mut self, to: &FullJid, sid: &str, e: &CallError) {
        let mut j = JingleEnvelope::new(Action::SessionTerminate, sid);
        j.reason = Some(e.to_reason_element());
        let mut iq = iq_set(&Jid::from(to.clone()), &self.fresh_id());
        iq.append_child(j.to_element());
        self.send(iq);
    }

    fn pre_approved_initiate(&mut self, sid: &str, j: JingleEnvelope) {
        let Some(call) = self.e.calls.get_mut(sid) else {
            return;
        };
        // From here on a session exists: failures end it with session-terminate.
        call.state = State::AwaitingLocalAnswer;
        call.deadline = None;
        let proposed = call.media.clone();
        // docs/protocol.md §5.2 step 7: pre-approval only covers exactly the proposed media.
        let media = match content_media(&j.contents) {
            Ok(m) => m,
            Err(e) => {
                self.abort(sid, e);
                return;
            }
        };
        if media != proposed {
            self.abort(
                sid,
                CallError::MediaMismatch {
                    proposed: proposed.iter().map(|m| m.as_str().to_owned()).collect(),
                    initiated: media.iter().map(|m| m.as_str().to_owned()).collect(),
                },
            );
            return;
        }
        if let Err(e) = self.read_offer(sid, &j) {
            self.abort(sid, e);
            return;
        }
        let remote = self
            .e
            .calls
            .get(sid)
            .map(|c| c.remote.clone())
            .unwrap_or_default();
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.state = State::AwaitingLocalAnswer;
            call.deadline = None;
        }
        self.event(Event::RemoteMedia {
            sid: sid.to_owned(),
            contents: remote,
        });
        self.event(Event::MediaNeeded {
            sid: sid.to_owned(),
            role: Role::Responder,
            media,
        });
    }

    /// Callee: applies the draft to an offer and records the result in the call.
    fn read_offer(&mut self, sid: &str, j: &JingleEnvelope) -> Result<(), CallError> {
        let Some(call) = self.e.calls.get(sid) else {
            return Ok(());
        };
        let peer_bare = call.peer_bare.clone();
        let jmi = call.jmi;
        let remote = verification::read_remote(
            &mut *self.crypto,
            &peer_bare,
            &j.contents,
            Expectation::Offer,
        )?;
        let downgrade = match (remote.mode, remote.sender, jmi) {
            (Mode::Plain, _, _) => Some((Downgrade::PlainFingerprints, None)),
            // Encrypted without JMI: no device was ever agreed on, it can never be verified.
            (Mode::Encrypted, sender, false) => Some((Downgrade::NoDevice, sender.map(|s| s.0))),
            (Mode::Encrypted, Some((device, id)), true)
                if self.crypto.trust(&peer_bare, &id) != Trust::Verified =>
            {
                Some((Downgrade::UnverifiedDevice, Some(device)))
            }
            (Mode::Encrypted, _, true) => None,
        };
        if let Some((kind, device)) = downgrade {
            self.report_downgrade(sid, kind, device);
        }
        if self.requires_verified(&peer_bare) {
            // docs/security-tests.md line 2: a plain offer, a direct call, or an identity that is not
            // verified can never become Verified.
            let verified_identity = remote.sender.is_some_and(|(_, id)| {
                self.crypto.trust(&peer_bare, &id) == verification::Trust::Verified
            });
            if remote.mode == Mode::Plain || !jmi || !verified_identity {
                return Err(VerificationError::NotVerifiable.into());
            }
        }
        let contents = remote_contents(&j.contents, &remote);
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.offer = Some(Sealed::read(&remote));
            call.offer_had_group = j.group.is_some();
            for c in &contents {
                call.candidates_seen
                    .insert(c.name.clone(), c.candidates.len());
            }
            call.remote = contents;
        }
        Ok(())
    }

    fn session_accept(&mut self, sid: &str, j: JingleEnvelope) {
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        let peer_bare = call.peer_bare.clone();
        let expect = match call.offer {
            Some(Sealed::Encrypted((device, identity))) => {
                Expectation::EncryptedAnswer { device, identity }
            }
            _ => Expectation::PlainAnswer,
        };
        // The answer must cover exactly our contents.
        let mut names: Vec<&str> = j.contents.iter().map(|c| c.name.as_str()).collect();
        let mut ours: Vec<&str> = call.local.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        ours.sort_unstable();
        if names != ours {
            self.abort(sid, CallError::UnsupportedApplication);
            return;
        }
        let remote =
            match verification::read_remote(&mut *self.crypto, &peer_bare, &j.contents, expect) {
                Ok(r) => r,
                Err(e) => {
                    self.abort(sid, e.into());
                    return;
                }
            };
        let contents = remote_contents(&j.contents, &remote);
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.answer = Some(Sealed::read(&remote));
            call.state = State::Active;
            call.deadline = None;
            for c in &contents {
                call.candidates_seen
                    .insert(c.name.clone(), c.candidates.len());
            }
            call.remote = contents.clone();
        }
        self.event(Event::RemoteMedia {
            sid: sid.to_owned(),
            contents,
        });
    }

    fn transport_info(&mut self, from: &Jid, id: &str, sid: &str, j: JingleEnvelope) {
        let Some(call) = self.e.calls.get_mut(sid) else {
            return;
        };
        // Validate everything before using anything: fingerprints never travel here
        // (docs/protocol.md §2.4), so one is an attempt to change it (docs/security-tests.md line 4).
        for c in &j.contents {
            let Some(t) = &c.transport else {
                continue;
            };
            if !t.fingerprints.is_empty() {
                self.send_iq_error(from, id, "cancel", "not-acceptable", None);
                return;
            }
            let seen = call.candidates_seen.get(&c.name).copied();
            match seen {
                None => {
                    self.send_iq_error(from, id, "cancel", "item-not-found", None);
                    return;
                }
                Some(n) if n + t.candidates.len() > MAX_CANDIDATES_PER_CONTENT => {
                    self.send_iq_error(from, id, "wait", "resource-constraint", None);
                    return;
                }
                Some(_) => {}
            }
        }
        let mut events = Vec::new();
        for c in j.contents {
            let Some(t) = c.transport else {
                continue;
            };
            if let Some(n) = call.candidates_seen.get_mut(&c.name) {
                *n += t.candidates.len();
            }
            if !t.candidates.is_empty() {
                events.push(Event::RemoteCandidates {
                    sid: sid.to_owned(),
                    content: c.name,
                    candidates: t.candidates,
                });
            }
        }
        self.send_iq_result(from, id);
        for e in events {
            self.event(e);
        }
    }

    /// The peer's `content-add`: full transports are checked like an answer of this session
    /// (encrypted by the same device and identity when the session is verified,
    /// docs/protocol.md §2.4 column S), stub transports ride on the BUNDLE transport, and no
    /// fingerprint may differ from the running association (docs/security-tests.md line 4).
    fn content_add(&mut self, sid: &str, j: JingleEnvelope) {
        let pending = self
            .e
            .calls
            .get(sid)
            .is_some_and(|c| c.incoming_add.is_some() || c.outgoing_add.is_some());
        if pending {
            // One modification at a time: a crossing content-add is refused.
            if let Some(peer) = self.e.calls.get(sid).and_then(|c| c.peer.clone()) {
                let mut reject = JingleEnvelope::new(Action::ContentReject, sid);
                reject.contents = strip(j.contents);
                reject.reason = Some(reason_element(Reason::FailedApplication, None));
                self.send_iq_set(peer, sid, reject);
            }
            return;
        }
        match self.check_added(sid, &j.contents) {
            Err(e) => self.abort(sid, e),
            Ok(remote) => {
                if let Some(call) = self.e.calls.get_mut(sid) {
                    call.incoming_add = Some(j.contents);
                    call.incoming_add_remote = remote.clone();
                }
                self.event(Event::ContentAdd {
                    sid: sid.to_owned(),
                    contents: remote,
                });
            }
        }
    }

    /// The peer's `content-accept` of our `content-add`, checked the same way.
    fn content_accept(&mut self, sid: &str, j: JingleEnvelope) {
        let Some(ours) = self.e.calls.get(sid).and_then(|c| c.outgoing_add.clone()) else {
            return;
        };
        let mut names: Vec<&str> = j.contents.iter().map(|c| c.name.as_str()).collect();
        let mut wanted: Vec<&str> = ours.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        wanted.sort_unstable();
        if names != wanted {
            self.abort(sid, CallError::UnsupportedApplication);
            return;
        }
        match self.check_added(sid, &j.contents) {
            Err(e) => self.abort(sid, e),
            Ok(remote) => {
                if let Some(call) = self.e.calls.get_mut(sid) {
                    call.outgoing_add = None;
                    for c in &remote {
                        call.candidates_seen
                            .insert(c.name.clone(), c.candidates.len());
                    }
                    call.remote.extend(remote.iter().cloned());
                    call.local.extend(ours);
                }
                self.event(Event::ContentAccepted {
                    sid: sid.to_owned(),
                    contents: remote,
                });
            }
        }
    }

    /// Applies the draft to contents added mid-call; returns them with the fingerprint media
    /// must see (the running association's).
    fn check_added(
        &mut self,
        sid: &str,
        contents: &[RtpContent],
    ) -> Result<Vec<RemoteContent>, CallError> {
        let Some(call) = self.e.calls.get(sid) else {
            return Ok(Vec::new());
        };
        content_media(contents)?;
        let Some(established) = call.remote.first().map(|r| r.fingerprint.clone()) else {
            return Err(CallError::UnsupportedApplication);
        };
        let session = call.encrypted_session();
        let session_mode = if session.is_some() {
            Mode::Encrypted
        } else {
            Mode::Plain
        };
        let expect = match session {
            Some((device, identity)) => Expectation::EncryptedAnswer { device, identity },
            None => Expectation::PlainAnswer,
        };
        let peer_bare = call.peer_bare.clone();
        let with_fp: Vec<RtpContent> = contents
            .iter()
            .filter(|c| {
                c.transport
                    .as_ref()
                    .is_some_and(|t| !t.fingerprints.is_empty())
            })
            .cloned()
            .collect();
        let mut read = if with_fp.is_empty() {
            Vec::new().into_iter()
        } else {
            let r = verification::read_remote_any_setup(
                &mut *self.crypto,
                &peer_bare,
                &with_fp,
                expect,
            )?;
            if r.fingerprints.iter().any(|f| f.value != established.value) {
                return Err(VerificationError::FingerprintChanged.into());
            }
            r.fingerprints.into_iter()
        };
        let mut out = Vec::with_capacity(contents.len());
        for c in contents {
            let t = c.transport.clone().unwrap_or_default();
            let fingerprint = if t.fingerprints.is_empty() {
                established.clone()
            } else {
                read.next().unwrap_or_else(|| established.clone())
            };
            out.push(RemoteContent {
                name: c.name.clone(),
                description: c.description.clone(),
                ufrag: t.ufrag,
                pwd: t.pwd,
                candidates: t.candidates,
                fingerprint,
                mode: session_mode,
            });
        }
        Ok(out)
    }

    /// Our fingerprints for contents added mid-call, encrypted like the session (never
    /// downgraded: a verified session whose encryption fails ends with security-error).
    fn added_contents(
        &mut self,
        sid: &str,
        local: &[LocalContent],
    ) -> Result<Vec<RtpContent>, CallError> {
        let Some(call) = self.e.calls.get(sid) else {
            return Ok(Vec::new());
        };
        let (peer_bare, session) = (call.peer_bare.clone(), call.encrypted_session());
        let creator = match call.role {
            Role::Initiator => Creator::Initiator,
            Role::Responder => Creator::Responder,
        };
        let fps = match session {
            Some((device, identity)) => {
                let plain: Vec<Fingerprint> = local.iter().map(|l| l.fingerprint.clone()).collect();
                let (fps, id) =
                    verification::encrypt_local(&mut *self.crypto, &peer_bare, device, &plain)
                        .map_err(VerificationError::Encryption)?;
                if id != identity {
                    return Err(VerificationError::IdentityMismatch.into());
                }
                Some(fps)
            }
            _ => None,
        };
        let mut contents = build_contents(local, fps.as_deref());
        for c in &mut contents {
            c.creator = creator.clone();
        }
        Ok(contents)
    }

    fn send_content_add(&mut self, sid: &str, local: Vec<LocalContent>) {
        let contents = match self.added_contents(sid, &local) {
            Ok(c) => c,
            Err(e) => {
                self.abort(sid, e);
                return;
            }
        };
        let Some(peer) = self.e.calls.get(sid).and_then(|c| c.peer.clone()) else {
            return;
        };
        let mut j = JingleEnvelope::new(Action::ContentAdd, sid);
        j.contents = contents;
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.outgoing_add = Some(local);
        }
        self.send_iq_set(peer, sid, j);
    }

    fn send_content_accept(&mut self, sid: &str, local: Vec<LocalContent>) {
        let Some(theirs) = self.e.calls.get(sid).and_then(|c| c.incoming_add.clone()) else {
            return;
        };
        let mut contents = match self.added_contents(sid, &local) {
            Ok(c) => c,
            Err(e) => {
                self.abort(sid, e);
                return;
            }
        };
        // The answer keeps the creator of each added content.
        for c in &mut contents {
            if let Some(t) = theirs.iter().find(|t| t.name == c.name) {
                c.creator = t.creator.clone();
            }
        }
        let Some(peer) = self.e.calls.get(sid).and_then(|c| c.peer.clone()) else {
            return;
        };
        let mut j = JingleEnvelope::new(Action::ContentAccept, sid);
        j.contents = contents;
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.incoming_add = None;
            let remote = core::mem::take(&mut call.incoming_add_remote);
            for c in &remote {
                call.candidates_seen
                    .insert(c.name.clone(), c.candidates.len());
            }
            call.remote.extend(remote);
            call.local.extend(local);
        }
        self.send_iq_set(peer, sid, j);
    }

    // ----------------------------------------------------------------------------------------
    // ending

    /// Ends a call because of `error`: the peer receives `error.reason()`.
    fn abort(&mut self, sid: &str, error: CallError) {
        let reason = error.to_reason_element();
        self.end(sid, Some(reason), CallEnd::Failed(error));
    }

    /// Tells the peer (in the way that fits the call's stage) and forgets the call.
    fn end(&mut self, sid: &str, reason: Option<ReasonElement>, end: CallEnd) {
        let Some(call) = self.e.calls.get(sid).cloned() else {
            return;
        };
        let failure = matches!(end, CallEnd::Failed(_));
        match call.state {
            State::Proposed => {
                // Conversations' retract carries no reason unless something failed.
                let reason = if failure { reason } else { None };
                self.send_jmi(
                    Jid::from(call.peer_bare.clone()),
                    JingleMessage::Retract(Retract {
                        id: sid.to_owned(),
                        reason,
                    }),
                    None,
                    false,
                );
                if self.e.recent_retracts.len() >= MAX_RECENT_RETRACTS {
                    self.e.recent_retracts.pop_front();
                }
                self.e
                    .recent_retracts
                    .push_back((sid.to_owned(), call.peer_bare.clone()));
            }
            State::AwaitingLocalOffer => {
                // Proceed received but no session yet: a retract to the proceeding device.
                if let Some(peer) = call.peer.clone() {
                    self.send_jmi(
                        Jid::from(peer),
                        JingleMessage::Retract(Retract {
                            id: sid.to_owned(),
                            reason,
                        }),
                        None,
                        false,
                    );
                }
            }
            State::Ringing | State::Proceeded => {
                if let Some(peer) = call.peer.clone() {
                    let reason = if failure { reason } else { None };
                    self.send_jmi(
                        Jid::from(peer),
                        JingleMessage::Reject(Reject {
                            id: sid.to_owned(),
                            reason,
                        }),
                        None,
                        false,
                    );
                }
            }
            State::Initiated
            | State::IncomingSession
            | State::AwaitingLocalAnswer
            | State::Active => {
                if let Some(peer) = call.peer.clone() {
                    let reason = reason.unwrap_or_else(|| reason_element(Reason::Decline, None));
                    let mut j = JingleEnvelope::new(Action::SessionTerminate, sid);
                    j.reason = Some(reason.clone());
                    let mut iq = iq_set(&Jid::from(peer.clone()), &self.fresh_id());
                    iq.append_child(j.to_element());
                    self.send(iq);
                    if call.jmi {
                        // docs/protocol.md §5.1/§7.8: finish after every terminate
                        // (Conversations ≥ 2.14).
                        let mut finish =
                            xml::with_attrs("finish", ns::JINGLE_MESSAGE, &[("id", sid)]);
                        finish.append_child(Element::from(reason));
                        let mut m = message_to(&Jid::from(peer), &self.fresh_id());
                        m.append_child(finish);
                        m.append_child(xml::bare("store", ns::HINTS));
                        self.send(m);
                    }
                }
            }
        }
        self.forget(sid, end);
    }

    /// The one place a call ends: it is forgotten and [`Event::Ended`] says how. What the peer
    /// is told before, if anything, is [`Op::end`]'s; a call ended by the peer or elsewhere goes
    /// here directly. Nothing happens for a call already gone.
    fn forget(&mut self, sid: &str, end: CallEnd) {
        if self.e.calls.remove(sid).is_some() {
            self.event(Event::Ended {
                sid: sid.to_owned(),
                end,
            });
        }
    }

    /// Recomputes the shield; reports changes; enforces `require_verified`; allows media once
    /// DTLS is proven and both directions are known.
    fn evaluate_shield(&mut self, sid: &str) {
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        if !call.dtls_proven || call.answer.is_none() {
            return;
        }
        let session = call.encrypted_session();
        let shield = verification::shield_for(
            &*self.crypto,
            &call.peer_bare,
            call.offer.map(Sealed::mode),
            call.answer.map(Sealed::mode),
            session.as_ref().map(|(_, identity)| identity),
            call.dtls_proven && call.jmi,
        );
        let device = session.map(|(device, _)| device);
        let changed = call.shield != Some(shield);
        let first = !call.media_allowed;
        if self.requires_verified(&call.peer_bare) && shield != Shield::Verified {
            self.abort(sid, VerificationError::NotVerifiable.into());
            return;
        }
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.shield = Some(shield);
            call.media_allowed = true;
        }
        if changed {
            self.event(Event::Shield {
                sid: sid.to_owned(),
                shield,
                device,
            });
        }
        if first {
            self.event(Event::PlayMedia {
                sid: sid.to_owned(),
            });
        }
    }

    /// `require_verified` for everyone, or the contact's own policy.
    fn requires_verified(&self, peer: &BareJid) -> bool {
        self.e.config.require_verified || self.crypto.contact_policy(peer).require_verified
    }

    /// Reports a [`Event::Downgrade`] once per call, when the contact had been verified and our
    /// own OMEMO is on (a call made with OMEMO switched off here is the user's choice).
    fn report_downgrade(&mut self, sid: &str, kind: Downgrade, device: Option<u32>) {
        let Some(call) = self.e.calls.get(sid) else {
            return;
        };
        if call.downgrade_reported
            || self.crypto.own_device_id().is_none()
            || !self.crypto.contact_policy(&call.peer_bare).expect_verified
        {
            return;
        }
        let peer = call.peer_bare.clone();
        if let Some(call) = self.e.calls.get_mut(sid) {
            call.downgrade_reported = true;
        }
        self.event(Event::Downgrade {
            sid: sid.to_owned(),
            peer,
            kind,
            device,
        });
    }

    // ----------------------------------------------------------------------------------------
    // output helpers

    fn fresh_id(&mut self) -> String {
        self.e.next_id += 1;
        format!("sc{}", self.e.next_id)
    }

    fn send(&mut self, mut el: Element) {
        xml::strip_empty_lang(&mut el);
        self.e.outputs.push_back(Output::Send(el));
    }

    fn event(&mut self, e: Event) {
        self.e.outputs.push_back(Output::Event(e));
    }

    /// JMI messages: type chat so they are carbon-copied, `<store/>` hint (docs/protocol.md §5.1).
    fn send_jmi(&mut self, to: Jid, jmi: JingleMessage, id: Option<String>, receipt: bool) {
        let id = id.unwrap_or_else(|| self.fresh_id());
        let mut m = message_to(&to, &id);
        m.append_child(jmi.to_element());
        if receipt {
            m.append_child(xml::bare("request", ns::RECEIPTS));
        }
        m.append_child(xml::bare("store", ns::HINTS));
        self.send(m);
    }

    fn send_iq_set(&mut self, to: FullJid, sid: &str, j: JingleEnvelope) {
        let id = self.fresh_id();
        if self.e.pending_iqs.len() >= MAX_PENDING_IQS {
            self.e.pending_iqs.pop_first();
        }
        self.e
            .pending_iqs
            .insert(id.clone(), (sid.to_owned(), j.action.clone()));
        let mut iq = iq_set(&Jid::from(to), &id);
        iq.append_child(j.to_element());
        self.send(iq);
    }

    fn send_iq_result(&mut self, to: &Jid, id: &str) {
        let iq = xml::with_attrs(
            "iq",
            ns::JABBER_CLIENT,
            &[("type", "result"), ("to", to.as_str()), ("id", id)],
        );
        self.send(iq);
    }

    fn send_iq_error(
        &mut self,
        to: &Jid,
        id: &str,
        kind: &str,
        condition: &str,
        jingle_condition: Option<&str>,
    ) {
        let mut iq = xml::with_attrs(
            "iq",
            ns::JABBER_CLIENT,
            &[("type", "error"), ("to", to.as_str()), ("id", id)],
        );
        let mut error = xml::with_attrs("error", ns::JABBER_CLIENT, &[("type", kind)]);
        error.append_child(xml::bare(condition, ns::STANZAS));
        if let Some(jc) = jingle_condition {
            error.append_child(xml::bare(jc, ns::JINGLE_ERRORS));
        }
        iq.append_child(error);
        self.send(iq);
    }
}

fn message_to(to: &Jid, id: &str) -> Element {
    xml::with_attrs(
        "message",
        ns::JABBER_CLIENT,
        &[("type", "chat"), ("to", to.as_str()), ("id", id)],
    )
}

fn iq_set(to: &Jid, id: &str) -> Element {
    xml::with_attrs(
        "iq",
        ns::JABBER_CLIENT,
        &[("type", "set"), ("to", to.as_str()), ("id", id)],
    )
}

fn normalise_media(mut media: Vec<Media>) -> Result<Vec<Media>, ApiError> {
    media.sort_unstable();
    media.dedup();
    if media.is_empty() {
        return Err(ApiError::NoMedia);
    }
    Ok(media)
}

/// docs/protocol.md §5.2 step 8: both sides must pick the same survivor. We keep the proposal with
/// the greater session id, and on equal ids the one from the greater full JID.
pub fn proposal_wins(our_sid: &str, our_jid: &str, their_sid: &str, their_jid: &str) -> bool {
    (our_sid, our_jid) > (their_sid, their_jid)
}

fn delay_stamp(msg: &Element) -> Option<SystemTime> {
    let delay = msg.get_child("delay", ns::DELAY)?;
    let d = xmpp_parsers::delay::Delay::try_from(delay.clone()).ok()?;
    let secs = d.stamp.0.timestamp();
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
    } else {
        Some(SystemTime::UNIX_EPOCH)
    }
}

fn content_media(contents: &[RtpContent]) -> Result<Vec<Media>, CallError> {
    let mut media = Vec::new();
    for c in contents {
        let m = c
            .description
            .as_ref()
            .and_then(|d| Media::parse(&d.media))
            .ok_or(CallError::UnsupportedApplication)?;
        if c.transport.is_none() {
            return Err(CallError::UnsupportedApplication);
        }
        media.push(m);
    }
    normalise_media(media).map_err(|_| CallError::UnsupportedApplication)
}

fn remote_contents(
    contents: &[RtpContent],
    remote: &verification::RemoteFingerprints,
) -> Vec<RemoteContent> {
    contents
        .iter()
        .zip(remote.fingerprints.iter())
        .map(|(c, fp)| {
            let t = c.transport.clone().unwrap_or_default();
            RemoteContent {
                name: c.name.clone(),
                description: c.description.clone(),
                ufrag: t.ufrag,
                pwd: t.pwd,
                candidates: t.candidates,
                fingerprint: fp.clone(),
                mode: remote.mode,
            }
        })
        .collect()
}

fn build_contents(
    local: &[LocalContent],
    encrypted: Option<&[crate::fingerprint::EncryptedFingerprint]>,
) -> Vec<RtpContent> {
    local
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let fp = match encrypted.and_then(|e| e.get(i)) {
                Some(e) => TransportFingerprint::Encrypted(e.clone()),
                None => TransportFingerprint::Plain(l.fingerprint.clone()),
            };
            RtpContent {
                creator: Creator::Initiator,
                name: l.name.clone(),
                senders: l.senders.clone(),
                description: Some(l.description.clone()),
                transport: Some(IceUdpTransport {
                    ufrag: Some(l.ufrag.clone()),
                    pwd: Some(l.pwd.clone()),
                    candidates: l.candidates.clone(),
                    fingerprints: vec![fp],
                    other: Vec::new(),
                }),
            }
        })
        .collect()
}

fn bundle(local: &[LocalContent]) -> Group {
    Group {
        semantics: Semantics::Bundle,
        contents: local.iter().map(|l| GroupContent::new(&l.name)).collect(),
    }
}

fn validate_local(contents: &[LocalContent], role: Role) -> Result<(), ApiError> {
    if contents.is_empty() {
        return Err(ApiError::InvalidLocal("no contents"));
    }
    for c in contents {
        if c.fingerprint.hash != Algo::Sha_256 || c.fingerprint.value.len() != SHA256_LEN {
            return Err(ApiError::InvalidLocal("fingerprint must be sha-256"));
        }
        let ok = match role {
            Role::Initiator => c.fingerprint.setup == Setup::Actpass,
            Role::Responder => matches!(c.fingerprint.setup, Setup::Active | Setup::Passive),
        };
        if !ok {
            return Err(ApiError::InvalidLocal("setup inconsistent with role"));
        }
    }
    Ok(())
}

/// Contents without description and transport, for `content-reject`.
fn strip(contents: Vec<RtpContent>) -> Vec<RtpContent> {
    contents
        .into_iter()
        .map(|c| RtpContent {
            description: None,
            transport: None,
            ..c
        })
        .collect()
}

/// Local contents added mid-call: names must match a pending `content-add` if any, be new
/// otherwise, and the fingerprint must be our running DTLS certificate's (BUNDLE).
fn validate_added(call: &Call, contents: &[LocalContent]) -> Result<(), ApiError> {
    if contents.is_empty() {
        return Err(ApiError::InvalidLocal("no contents"));
    }
    let ours = call.local.first().map(|l| l.fingerprint.value.clone());
    for c in contents {
        if c.fingerprint.hash != Algo::Sha_256 || Some(&c.fingerprint.value) != ours.as_ref() {
            return Err(ApiError::InvalidLocal(
                "fingerprint must be the running certificate's",
            ));
        }
        if call.local.iter().any(|l| l.name == c.name) {
            return Err(ApiError::InvalidLocal("content name already in use"));
        }
    }
    if let Some(pending) = &call.incoming_add {
        let mut a: Vec<&str> = pending.iter().map(|c| c.name.as_str()).collect();
        let mut b: Vec<&str> = contents.iter().map(|c| c.name.as_str()).collect();
        a.sort_unstable();
        b.sort_unstable();
        if a != b {
            return Err(ApiError::InvalidLocal("names differ from the content-add"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verification::{CryptoError, Decrypted, Encrypted, Trust};

    /// Never used for crypto here: these tests only exercise bookkeeping.
    struct NoOmemo;
    impl OmemoCrypto for NoOmemo {
        fn own_device_id(&self) -> Option<u32> {
            None
        }
        fn encrypt(&mut self, _: &BareJid, d: u32, _: &[u8]) -> Result<Encrypted, CryptoError> {
            Err(CryptoError::NoSession(d))
        }
        fn decrypt(&mut self, _: &BareJid, _: &Element) -> Result<Decrypted, CryptoError> {
            Err(CryptoError::NotForThisDevice)
        }
        fn trust(&self, _: &BareJid, _: &IdentityKey) -> Trust {
            Trust::Undecided
        }
    }

    fn engine() -> Engine {
        let own = FullJid::new("romeo@montague.example/phone").unwrap();
        Engine::new(Config::new(own))
    }

    #[test]
    fn pending_iqs_are_capped() {
        let mut e = engine();
        let peer = FullJid::new("juliet@capulet.example/laptop").unwrap();
        for _ in 0..(MAX_PENDING_IQS + 10) {
            let mut op = Op {
                e: &mut e,
                crypto: &mut NoOmemo,
            };
            op.send_iq_set(
                peer.clone(),
                "s",
                JingleEnvelope::new(Action::TransportInfo, "s"),
            );
        }
        assert_eq!(e.pending_iqs.len(), MAX_PENDING_IQS);
        // The oldest were dropped, the newest kept.
        assert!(!e.pending_iqs.contains_key("sc1"));
        assert!(
            e.pending_iqs
                .contains_key(&format!("sc{}", MAX_PENDING_IQS + 10))
        );
    }

    #[test]
    fn bounced_propose_ends_the_call_and_never_rings() {
        let mut e = engine();
        let now = Instant::now();
        e.handle_user(
            &mut NoOmemo,
            now,
            UserAction::Call {
                peer: BareJid::new("juliet@capulet.example").unwrap(),
                sid: "s1".into(),
                media: vec![Media::Audio],
            },
        )
        .unwrap();
        while e.poll_output().is_some() {}
        let bounce: Element = "<message xmlns='jabber:client' type='error' from='juliet@capulet.example/laptop' id='jm-propose-s1'><propose xmlns='urn:xmpp:jingle-message:0' id='s1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
            .parse()
            .unwrap();
        assert_eq!(
            e.handle_stanza(&mut NoOmemo, now, SystemTime::now(), &bounce),
            Handled::Consumed
        );
        assert_eq!(
            e.poll_output(),
            Some(Output::Event(Event::Ended {
                sid: "s1".into(),
                end: CallEnd::PeerError
            }))
        );
        assert!(e.poll_output().is_none());
        assert_eq!(e.call_count(), 0);
    }

    #[test]
    fn proposal_winner_is_antisymmetric() {
        assert!(proposal_wins("b", "x", "a", "y"));
        assert!(!proposal_wins("a", "y", "b", "x"));
        assert!(proposal_wins("a", "z@x/y", "a", "a@x/y"));
    }
}
