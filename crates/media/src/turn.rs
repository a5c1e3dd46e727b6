//! One TURN allocation (RFC 8656) for the media core: `turn-client-proto`'s sans-IO client over
//! UDP (from one of our host sockets) or over a TCP stream the driver opens (plain, or TLS
//! through rustls in memory), with what the call needs around it:
//!
//! * a bounded time to allocate ([`ALLOCATE_DEADLINE`]) and bounded retransmits
//!   ([`crate::transaction::STUN_TRANSMISSIONS`]), so an unreachable server fails, never hangs;
//! * a wrong secret named as such at the second `401` (the library would wait for its
//!   retransmits to run out);
//! * permissions for every remote candidate's IP (the library refreshes them every 240 s,
//!   before the 300 s of RFC 8656 §9) and a channel for the pair that carries media (UDP only:
//!   `turn-types` 0.7 frames TCP without the ChannelData padding of RFC 8656 §12.5, which
//!   coturn sends, so over TCP and TLS we stay with Send/Data indications);
//! * allocations shorter than RFC 8656's 10-minute default, which `turn-client-proto` 0.7.3
//!   deliberately refuses to refresh (ystreet/turn-proto#88): the session refreshes those
//!   itself, on the same 5-tuple with the same long-term credentials, and shows the library
//!   the default lifetime in the server's answers, re-signed (`ShortLifetime` in the source).

use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use turn_client_proto::api::{TurnClientApi, TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::client::TurnClient;
use turn_client_proto::stun::agent::{StunAgent, StunAgentPollRet, Transmit};
use turn_client_proto::stun::types::attribute::{
    Attribute, AttributeStaticType, ErrorCode, Fingerprint, MessageIntegrity,
    MessageIntegritySha256, Nonce, Realm, Username, XorMappedAddress,
};
use turn_client_proto::stun::types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageType, MessageWrite,
    MessageWriteExt, MessageWriteVec, TransactionId,
};
use turn_client_proto::tcp::TurnClientTcp;
use turn_client_proto::types::attribute::Lifetime;
use turn_client_proto::types::message::{ALLOCATE, REFRESH};
use turn_client_proto::types::{TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

use crate::ice_servers::{RelayTransport, Secret, TlsTrust};
use crate::transaction::{
    Clock, STUN_FINAL_WAIT, STUN_INITIAL_RTO, STUN_MAX_RTO, STUN_TRANSMISSIONS,
};

/// An allocation must exist this long after we started asking, or the server counts as failed
/// (covers the TCP connect, the TLS handshake, the 401 round and the Allocate itself).
pub const ALLOCATE_DEADLINE: Duration = Duration::from_secs(10);

/// RFC 8656's default allocation lifetime; `turn-client-proto` ignores Refresh answers below it.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// Most IPs we ask permissions for on one allocation (remote candidates are capped at 64).
pub const MAX_PERMISSIONS: usize = 64;

/// Datagrams held per allocation while their permission is being created (the first ICE checks
/// towards a new peer), sent once the server confirms it; older ones are dropped beyond this.
pub const MAX_HELD_SENDS: usize = 16;

/// Longest a new allocation is kept unannounced while the permissions for the peer's known
/// addresses are created: the peer's first checks to our relayed address would be dropped by
/// the server before they exist (and retransmitted 250 ms later), so the candidate goes out
/// once they are there.
pub const ANNOUNCE_HOLD: Duration = Duration::from_millis(500);

/// Most stale-nonce (438) answers in a row to our own Refresh before the allocation is given up.
const MAX_STALE_NONCE: u32 = 4;

/// Largest STUN message or ChannelData frame we accept from a stream (length fields are 16 bit).
const MAX_FRAME: usize = 20 + 65_535;

/// Most plaintext bytes buffered from a stream while a frame is incomplete.
const MAX_STREAM_BUFFER: usize = 2 * MAX_FRAME;

/// Passes of the library's poll loop per input, against a misbehaving state machine.
const MAX_PUMP: usize = 16;

/// Identifies one TCP connection the driver opens for the core ([`crate::SessionOutput`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

/// What a link asks the driver to do.
#[derive(Debug)]
pub(crate) enum LinkOutput {
    /// A UDP datagram from one of our host sockets.
    Datagram {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    /// Open a TCP connection.
    StreamConnect { stream: StreamId, to: SocketAddr },
    /// Bytes for a TCP connection.
    StreamSend { stream: StreamId, data: Vec<u8> },
    /// Close a TCP connection.
    StreamClose { stream: StreamId },
}

/// What happened to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    /// The allocation exists: `relayed` is the relayed transport address, `mapped` our address
    /// as the server saw it (a server-reflexive address when the link is UDP).
    Allocated {
        relayed: SocketAddr,
        mapped: Option<SocketAddr>,
    },
    /// No allocation was made (the reason names no secret).
    Failed(String),
    /// The allocation existed and ended.
    Lost(String),
}

/// Where a link is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Waiting for the driver's TCP connection.
    Connecting,
    /// Asking for the allocation.
    Allocating,
    /// Allocated.
    Ready(SocketAddr),
    /// Failed or ended; does nothing any more.
    Dead,
}

/// What became of data from the network offered to a link.
#[derive(Debug)]
pub(crate) enum LinkRecv {
    /// Not from this link's server (or not for it): someone else's.
    NotMine,
    /// Handled inside (a TURN response, an indication without data, …).
    Handled,
    /// Data a peer sent to our relayed address, unwrapped.
    Peer(Vec<(SocketAddr, Vec<u8>)>),
}

/// Everything needed to create a link.
#[derive(Debug, Clone)]
pub(crate) struct LinkConfig {
    pub label: String,
    pub transport: RelayTransport,
    pub server: SocketAddr,
    pub username: String,
    pub password: Secret,
    /// The name the TLS certificate must carry (the `host` of the server).
    pub tls_name: String,
    pub tls: Option<TlsTrust>,
}

/// The refreshes `turn-client-proto` 0.7.3 will not make.
///
/// The library refuses a Refresh answer whose LIFETIME is under the 600 s default (it reads
/// RFC 8656 §7.2 as binding servers never to grant less), so an allocation of a coturn with
/// `max-allocate-lifetime=30` dies after its first 30 s. When a server grants less, we keep it
/// alive ourselves: our own Refresh requests (same 5-tuple, long-term credentials with the
/// server's realm and current nonce) at half the granted lifetime, answered to us alone; and
/// the library is shown, re-signed with the same credentials, [`DEFAULT_LIFETIME`] in the
/// server's ALLOCATE and REFRESH successes, so it neither expires the allocation early nor
/// refreshes it more often than every 540 s.
#[derive(Debug)]
struct ShortLifetime {
    /// What the server really grants.
    granted: Duration,
    /// When our next Refresh goes out.
    next: Instant,
    /// Our outstanding Refresh.
    pending: Option<TransactionId>,
    /// 438 answers in a row.
    stale: u32,
    agent: StunAgent,
}

/// One TURN allocation and the connection to its server.
#[derive(Debug)]
pub(crate) struct TurnLink {
    config: LinkConfig,
    clock: Clock,
    stage: Stage,
    stream: Option<StreamId>,
    local: Option<SocketAddr>,
    client: Option<TurnClient>,
    tls: Option<Box<rustls::ClientConnection>>,
    plaintext: Vec<u8>,
    started: Instant,
    /// The transaction of the first (unsigned) Allocate: a 401 to it is the challenge, a 401
    /// to anything later means the credentials are wrong.
    first_request: Option<TransactionId>,
    realm: Option<String>,
    nonce: Option<String>,
    last_error: Option<String>,
    /// Anything came from the server at all (else failures read "no answer").
    heard: bool,
    mapped: Option<SocketAddr>,
    permissions: BTreeSet<IpAddr>,
    channels: BTreeSet<SocketAddr>,
    /// Datagrams waiting for their permission.
    held: VecDeque<(SocketAddr, Vec<u8>)>,
    /// An allocation not yet announced: the permissions it waits for, and until when at most.
    unannounced: Option<(BTreeSet<IpAddr>, Instant)>,
    short: Option<ShortLifetime>,
    wake: Option<Instant>,
    outputs: VecDeque<LinkOutput>,
    events: VecDeque<LinkEvent>,
}

impl TurnLink {
    /// A link over UDP from the host socket `local`.
    pub(crate) fn udp(config: LinkConfig, local: SocketAddr, clock: Clock, now: Instant) -> Self {
        let mut link = Self::new(config, clock, now);
        link.local = Some(local);
        link.client = Some(TurnClient::Udp(TurnClientUdp::allocate(
            local,
            link.config.server,
            link.turn_config(),
        )));
        link.stage = Stage::Allocating;
        link.pump(now);
        link
    }

    /// A link over a TCP connection the driver opens (`stream`), TLS inside when configured.
    pub(crate) fn stream(config: LinkConfig, stream: StreamId, clock: Clock, now: Instant) -> Self {
        let mut link = Self::new(config, clock, now);
        link.stream = Some(stream);
        link.outputs.push_back(LinkOutput::StreamConnect {
            stream,
            to: link.config.server,
        });
        link
    }

    fn new(config: LinkConfig, clock: Clock, now: Instant) -> Self {
        Self {
            config,
            clock,
            stage: Stage::Connecting,
            stream: None,
            local: None,
            client: None,
            tls: None,
            plaintext: Vec::new(),
            started: now,
            first_request: None,
            realm: None,
            nonce: None,
            last_error: None,
            heard: false,
            mapped: None,
            permissions: BTreeSet::new(),
            channels: BTreeSet::new(),
            held: VecDeque::new(),
            unannounced: None,
            short: None,
            wake: None,
            outputs: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn turn_config(&self) -> TurnConfig {
        let credentials =
            TurnCredentials::new(&self.config.username, self.config.password.expose());
        let mut c = TurnConfig::new(credentials);
        c.set_request_retransmits(
            STUN_INITIAL_RTO,
            STUN_MAX_RTO,
            STUN_TRANSMISSIONS,
            STUN_FINAL_WAIT,
        );
        c
    }

    /// The IPs it was asked to permit.
    pub(crate) fn permitted(&self) -> Vec<IpAddr> {
        self.permissions.iter().copied().collect()
    }

    /// What the link was made with.
    pub(crate) fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The server's label (`turn:host:port?transport=…`).
    pub(crate) fn label(&self) -> &str {
        &self.config.label
    }

    /// How we reach the server.
    pub(crate) fn transport(&self) -> RelayTransport {
        self.config.transport
    }

    /// The server's address.
    pub(crate) fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// The relayed address, once allocated.
    pub(crate) fn relayed(&self) -> Option<SocketAddr> {
        match self.stage {
            Stage::Ready(a) => Some(a),
            _ => None,
        }
    }

    /// Our side of the connection to the server (host socket or TCP local address).
    pub(crate) fn local(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The TCP connection, for stream links.
    pub(crate) fn stream_id(&self) -> Option<StreamId> {
        self.stream
    }

    pub(crate) fn poll_output(&mut self) -> Option<LinkOutput> {
        self.outputs.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// When [`TurnLink::handle_timeout`] wants to run next.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        if self.stage == Stage::Dead {
            return None;
        }
        let deadline = match self.stage {
            Stage::Ready(_) => None,
            _ => Some(self.started + ALLOCATE_DEADLINE),
        };
        let hold = self.unannounced.as_ref().map(|(_, until)| *until);
        [
            self.wake,
            deadline,
            hold,
            self.short.as_ref().map(|s| s.next),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The driver connected the TCP stream: `local` is our end of it.
    pub(crate) fn stream_connected(&mut self, local: SocketAddr, now: Instant) {
        if self.stage != Stage::Connecting {
            return;
        }
        self.local = Some(local);
        if self.config.transport == RelayTransport::Tls {
            let Some(trust) = self.config.tls.clone() else {
                return self.fail("no TLS trust anchors were configured for TURN over TLS");
            };
            let name = match rustls_pki_types::ServerName::try_from(self.config.tls_name.clone()) {
                Ok(n) => n,
                Err(_) => return self.fail("the server name is not usable for TLS"),
            };
            match rustls::ClientConnection::new(trust.0.clone(), name) {
                Ok(c) => self.tls = Some(Box::new(c)),
                Err(e) => return self.fail(&format!("TLS: {e}")),
            }
        }
        self.client = Some(TurnClient::Tcp(TurnClientTcp::allocate(
            local,
            self.config.server,
            self.turn_config(),
        )));
        self.stage = Stage::Allocating;
        self.pump(now);
        self.flush_tls();
    }

    /// The TCP connection ended (or never came up).
    pub(crate) fn stream_closed(&mut self, why: &str, now: Instant) {
        let _ = now;
        if self.stage == Stage::Dead {
            return;
        }
        let reason = match &self.last_error {
            Some(e) if self.stage != Stage::Connecting => format!("{why} ({e})"),
            _ => why.to_owned(),
        };
        self.end(&reason, false);
    }

    /// Bytes from the TCP stream.
    pub(crate) fn stream_data(&mut self, data: &[u8], now: Instant) -> LinkRecv {
        if self.stage == Stage::Dead || self.local.is_none() {
            return LinkRecv::Handled;
        }
        match self.tls.as_mut() {
            Some(tls) => {
                let mut input = data;
                while !input.is_empty() {
                    match tls.read_tls(&mut input) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => {
                            self.fail(&format!("TLS: {e}"));
                            return LinkRecv::Handled;
                        }
                    }
                    match tls.process_new_packets() {
                        Ok(state) => {
                            let mut plain = vec![0u8; state.plaintext_bytes_to_read()];
                            if !plain.is_empty() && tls.reader().read_exact(&mut plain).is_ok() {
                                self.plaintext.extend_from_slice(&plain);
                            }
                            if state.peer_has_closed() {
                                self.flush_tls();
                                self.stream_closed("the server closed TLS", now);
                                return LinkRecv::Handled;
                            }
                        }
                        Err(e) => {
                            // Certificate errors land here: say what TLS said.
                            self.flush_tls();
                            self.fail(&format!("TLS: {e}"));
                            return LinkRecv::Handled;
                        }
                    }
                }
                self.flush_tls();
            }
            None => self.plaintext.extend_from_slice(data),
        }
        if self.plaintext.len() > MAX_STREAM_BUFFER {
            self.fail("the server sent an oversized frame");
            return LinkRecv::Handled;
        }
        let mut peer = Vec::new();
        loop {
            match next_frame(&mut self.plaintext) {
                Ok(Some(frame)) => {
                    if let LinkRecv::Peer(p) = self.receive(frame, TransportType::Tcp, now) {
                        peer.extend(p);
                    }
                }
                Ok(None) => break,
                Err(()) => {
                    self.fail("the server sent something that is neither STUN nor ChannelData");
                    break;
                }
            }
        }
        self.pump(now);
        self.flush_tls();
        if peer.is_empty() {
            LinkRecv::Handled
        } else {
            LinkRecv::Peer(peer)
        }
    }

    /// A datagram that arrived on host socket `to` from `from`.
    pub(crate) fn datagram(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> LinkRecv {
        if self.config.transport != RelayTransport::Udp
            || from != self.config.server
            || Some(to) != self.local
            || self.stage == Stage::Dead
        {
            return LinkRecv::NotMine;
        }
        let r = self.receive(data.to_vec(), TransportType::Udp, now);
        self.pump(now);
        r
    }

    /// Hands one whole message or ChannelData from the server to the library.
    fn receive(&mut self, frame: Vec<u8>, transport: TransportType, now: Instant) -> LinkRecv {
        let Some(frame) = self.inspect(frame, now) else {
            return LinkRecv::Handled;
        };
        let (Some(local), Some(client)) = (self.local, self.client.as_mut()) else {
            return LinkRecv::Handled;
        };
        let io = self.clock.io(now);
        let transmit = Transmit::new(frame, transport, self.config.server, local);
        let mut peer = Vec::new();
        match client.recv(transmit, io) {
            TurnRecvRet::PeerData(d) => peer.push((d.peer, d.data().to_vec())),
            TurnRecvRet::Ignored(_) => {
                if transport == TransportType::Udp {
                    return LinkRecv::NotMine;
                }
            }
            TurnRecvRet::Handled | TurnRecvRet::PeerIcmp { .. } => {}
        }
        while let Some(d) = client.poll_recv(io) {
            peer.push((d.peer, d.data().to_vec()));
        }
        if peer.is_empty() {
            LinkRecv::Handled
        } else {
            LinkRecv::Peer(peer)
        }
    }

    /// Looks at a message from the server before the library does: learns realm, nonce and
    /// errors, names a wrong secret, answers our own Refresh, and shows the library a lifetime
    /// it accepts. `None`: consumed here.
    fn inspect(&mut self, frame: Vec<u8>, now: Instant) -> Option<Vec<u8>> {
        self.heard = true;
        let Ok(msg) = Message::from_bytes(&frame) else {
            return Some(frame); // ChannelData
        };
        if !msg.is_response() {
            return Some(frame);
        }
        if let Ok(n) = msg.attribute::<Nonce>() {
            self.nonce = Some(n.nonce().to_owned());
        }
        if let Ok(r) = msg.attribute::<Realm>() {
            self.realm = Some(r.realm().to_owned());
        }
        let txid = msg.transaction_id();
        if self.short.as_ref().and_then(|s| s.pending) == Some(txid) {
            self.own_refresh_answer(&msg, now);
            return None;
        }
        if msg.has_class(MessageClass::Error) {
            let code = msg.attribute::<ErrorCode>().ok();
            let (c, reason) = code
                .as_ref()
                .map_or((0, String::new()), |e| (e.code(), e.reason().to_owned()));
            if c == ErrorCode::UNAUTHORIZED && Some(txid) != self.first_request {
                self.fail(
                    "authentication failed (401 Unauthorized): wrong or expired TURN credentials",
                );
                return None;
            }
            if c != ErrorCode::UNAUTHORIZED && c != ErrorCode::STALE_NONCE {
                self.last_error = Some(format!("{c} {reason}").trim().to_owned());
            }
            return Some(frame);
        }
        if !msg.has_class(MessageClass::Success)
            || !(msg.has_method(ALLOCATE) || msg.has_method(REFRESH))
        {
            return Some(frame);
        }
        if msg.has_method(ALLOCATE)
            && let Ok(m) = msg.attribute::<XorMappedAddress>()
        {
            self.mapped = Some(m.addr(txid));
        }
        let Ok(lifetime) = msg.attribute::<Lifetime>() else {
            return Some(frame);
        };
        let granted = Duration::from_secs(u64::from(lifetime.seconds()));
        if granted.is_zero() || granted >= DEFAULT_LIFETIME {
            return Some(frame);
        }
        // A short allocation: keep it alive ourselves, and let the library believe the default.
        if self.short.is_none() {
            let agent =
                StunAgent::builder(transport_type(self.config.transport), self.local_or_any())
                    .remote_addr(self.config.server)
                    .request_retransmits(
                        STUN_INITIAL_RTO,
                        STUN_MAX_RTO,
                        STUN_TRANSMISSIONS,
                        STUN_FINAL_WAIT,
                    )
                    .build();
            self.short = Some(ShortLifetime {
                granted,
                next: now + granted / 2,
                pending: None,
                stale: 0,
                agent,
            });
        }
        let Some(short) = self.short.as_mut() else {
            return Some(frame);
        };
        short.granted = granted;
        if msg.has_method(ALLOCATE) {
            short.next = now + granted / 2;
            debug!(server = %self.config.label, ?granted, "short TURN allocation: refreshing it ourselves");
        }
        match self.resign_with_lifetime(&msg, DEFAULT_LIFETIME) {
            Some(rewritten) => Some(rewritten),
            None => Some(frame),
        }
    }

    fn local_or_any(&self) -> SocketAddr {
        self.local
            .unwrap_or_else(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0))
    }

    fn key(&self) -> Option<LongTermKeyCredentials> {
        Some(LongTermKeyCredentials::new(
            self.config.username.clone(),
            self.config.password.expose().to_owned(),
            self.realm.clone()?,
        ))
    }

    /// The same response with another LIFETIME, signed again with our long-term key.
    fn resign_with_lifetime(&self, msg: &Message<'_>, lifetime: Duration) -> Option<Vec<u8>> {
        let key = self.key()?;
        let mtype = MessageType::from_class_method(msg.class(), msg.method());
        let mut b = Message::builder(mtype, msg.transaction_id(), MessageWriteVec::new());
        let mut fingerprint = false;
        let mut integrity = None;
        for (_, attr) in msg.iter_attributes() {
            let t = attr.get_type();
            if t == Fingerprint::TYPE {
                fingerprint = true;
            } else if t == MessageIntegrity::TYPE {
                integrity = integrity.or(Some(IntegrityAlgorithm::Sha1));
            } else if t == MessageIntegritySha256::TYPE {
                integrity = Some(IntegrityAlgorithm::Sha256);
            } else if t == Lifetime::TYPE {
                let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
                b.add_attribute(&Lifetime::new(secs)).ok()?;
            } else if integrity.is_none() {
                b.add_attribute(&attr).ok()?;
            }
        }
        b.add_message_integrity(&key.into(), integrity.unwrap_or(IntegrityAlgorithm::Sha1))
            .ok()?;
        if fingerprint {
            b.add_fingerprint().ok()?;
        }
        Some(b.finish())
    }

    /// The answer to our own Refresh.
    fn own_refresh_answer(&mut self, msg: &Message<'_>, now: Instant) {
        let io = self.clock.io(now);
        let from = self.config.server;
        let Some(short) = self.short.as_mut() else {
            return;
        };
        let _ = short.agent.handle_stun_message_with_time(msg, from, io);
        short.pending = None;
        if msg.has_class(MessageClass::Success) {
            if let Ok(l) = msg.attribute::<Lifetime>() {
                let granted = Duration::from_secs(u64::from(l.seconds()));
                if !granted.is_zero() {
                    short.granted = granted;
                }
            }
            short.stale = 0;
            short.next = now + short.granted / 2;
            debug!(server = %self.config.label, granted = ?short.granted, "TURN allocation refreshed");
            return;
        }
        let code = msg.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0);
        if code == ErrorCode::STALE_NONCE && short.stale < MAX_STALE_NONCE {
            short.stale += 1;
            short.next = now; // again at once, with the new nonce
            return;
        }
        self.end(
            &format!("the server refused to refresh the allocation ({code})"),
            true,
        );
    }

    /// Sends our own Refresh when one is due.
    fn own_refresh(&mut self, now: Instant) {
        let io = self.clock.io(now);
        let (Some(key), Some(nonce)) = (self.key(), self.nonce.clone()) else {
            return;
        };
        let username = self.config.username.clone();
        let realm = key.realm().to_owned();
        let Some(short) = self.short.as_mut() else {
            return;
        };
        if short.pending.is_some() || now < short.next || !matches!(self.stage, Stage::Ready(_)) {
            return;
        }
        let secs = u32::try_from(short.granted.as_secs()).unwrap_or(u32::MAX);
        let mut b = Message::builder_request(REFRESH, MessageWriteVec::new());
        let built = (|| {
            b.add_attribute(&Lifetime::new(secs)).ok()?;
            b.add_attribute(&Username::new(&username).ok()?).ok()?;
            b.add_attribute(&Realm::new(&realm).ok()?).ok()?;
            b.add_attribute(&Nonce::new(&nonce).ok()?).ok()?;
            b.add_message_integrity(&key.into(), IntegrityAlgorithm::Sha1)
                .ok()?;
            b.add_fingerprint().ok()
        })();
        if built.is_none() {
            return;
        }
        let txid = b.transaction_id();
        let bytes = b.finish();
        let Ok(t) = short.agent.send_request(&bytes, self.config.server, io) else {
            return;
        };
        let data = t.data.to_vec();
        short.pending = Some(txid);
        // Retry no earlier than the agent's own timeout (it reports one through `poll`).
        short.next = now + short.granted;
        self.write(data);
    }

    /// Sends `data` from our relayed address to `peer`. Without a permission yet, asks for one
    /// and drops the datagram (ICE retransmits; media follows a checked pair).
    pub(crate) fn send(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        if !matches!(self.stage, Stage::Ready(_)) {
            return;
        }
        let io = self.clock.io(now);
        let Some(client) = self.client.as_mut() else {
            return;
        };
        match client.send_to(TransportType::Udp, peer, data, io) {
            Ok(Some(t)) => {
                let t = t.build();
                self.write_from(t.from, t.to, t.data);
            }
            Ok(None) => {}
            Err(_) => {
                // No permission yet: ask, and hold the datagram until it is there (one RTT,
                // instead of the ICE retransmit 250 ms later).
                if self.held.len() >= MAX_HELD_SENDS {
                    self.held.pop_front();
                }
                self.held.push_back((peer, data.to_vec()));
                self.permit(peer.ip(), now);
            }
        }
        self.pump(now);
        self.flush_tls();
    }

    /// Sends what waited for the permission for `ip`.
    fn release_held(&mut self, ip: IpAddr, now: Instant) {
        let (ready, wait): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(p, _)| p.ip() == ip);
        self.held = wait;
        let io = self.clock.io(now);
        for (peer, data) in ready {
            let Some(client) = self.client.as_mut() else {
                return;
            };
            if let Ok(Some(t)) = client.send_to(TransportType::Udp, peer, &data[..], io) {
                let t = t.build();
                self.write_from(t.from, t.to, t.data);
            }
        }
    }

    /// Asks for a permission for `ip` (once; the library refreshes it).
    pub(crate) fn permit(&mut self, ip: IpAddr, now: Instant) {
        if self.permissions.len() >= MAX_PERMISSIONS && !self.permissions.contains(&ip) {
            return;
        }
        self.permissions.insert(ip);
        if !matches!(self.stage, Stage::Ready(_)) {
            return; // asked for once allocated
        }
        let io = self.clock.io(now);
        if let Some(client) = self.client.as_mut() {
            let _ = client.create_permission(TransportType::Udp, ip, io);
        }
        self.pump(now);
        self.flush_tls();
    }

    /// Binds a channel to `peer` (UDP links only: see the module docs).
    pub(crate) fn bind_channel(&mut self, peer: SocketAddr, now: Instant) {
        if self.config.transport != RelayTransport::Udp
            || !matches!(self.stage, Stage::Ready(_))
            || !self.channels.insert(peer)
        {
            return;
        }
        let io = self.clock.io(now);
        if let Some(client) = self.client.as_mut()
            && client.have_permission(TransportType::Udp, peer.ip())
        {
            let _ = client.bind_channel(TransportType::Udp, peer, io);
        } else {
            self.channels.remove(&peer); // again once the permission is there
        }
        self.pump(now);
        self.flush_tls();
    }

    /// Releases the allocation (a Refresh with lifetime 0) and closes the stream.
    pub(crate) fn close(&mut self, now: Instant) {
        if matches!(self.stage, Stage::Ready(_)) {
            let io = self.clock.io(now);
            if let Some(client) = self.client.as_mut() {
                let _ = client.delete(io);
            }
            self.pump(now);
            if let Some(tls) = self.tls.as_mut() {
                tls.send_close_notify();
            }
            self.flush_tls();
        }
        self.stage = Stage::Dead;
        self.short = None;
        if let Some(stream) = self.stream {
            self.outputs.push_back(LinkOutput::StreamClose { stream });
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.stage == Stage::Dead {
            return;
        }
        if !matches!(self.stage, Stage::Ready(_)) && now >= self.started + ALLOCATE_DEADLINE {
            let why = match &self.last_error {
                Some(e) => format!(
                    "no allocation within {} s ({e})",
                    ALLOCATE_DEADLINE.as_secs()
                ),
                None => format!(
                    "no answer from the TURN server within {} s",
                    ALLOCATE_DEADLINE.as_secs()
                ),
            };
            return self.fail(&why);
        }
        self.announce_when_permitted(None, now);
        self.poll_short(now);
        self.own_refresh(now);
        self.pump(now);
        self.flush_tls();
    }

    /// Retransmits and timeouts of our own Refresh.
    fn poll_short(&mut self, now: Instant) {
        let io = self.clock.io(now);
        let Some(short) = self.short.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        let timed_out = match short.agent.poll(io) {
            StunAgentPollRet::TransactionTimedOut(t)
            | StunAgentPollRet::TransactionCancelled(t) => short.pending == Some(t),
            StunAgentPollRet::WaitUntil(_) => false,
        };
        while let Some(t) = short.agent.poll_transmit(io) {
            out.push(t.data.to_vec());
        }
        for d in out {
            self.write(d);
        }
        if timed_out {
            self.end("the server stopped answering refreshes", true);
        }
    }

    /// Drives the library: its events, transmits and timer.
    fn pump(&mut self, now: Instant) {
        let io = self.clock.io(now);
        let mut wake = None;
        for _ in 0..MAX_PUMP {
            let Some(client) = self.client.as_mut() else {
                return;
            };
            let mut events = Vec::new();
            while let Some(e) = client.poll_event() {
                events.push(e);
            }
            let poll = client.poll(io);
            let mut sent = Vec::new();
            while let Some(t) = client.poll_transmit(io) {
                sent.push((t.from, t.to, t.data.to_vec()));
            }
            while let Some(e) = client.poll_event() {
                events.push(e);
            }
            for (from, to, data) in sent {
                if self.first_request.is_none()
                    && let Ok(m) = Message::from_bytes(&data)
                    && m.has_class(MessageClass::Request)
                {
                    self.first_request = Some(m.transaction_id());
                }
                self.write_from(from, to, data);
            }
            // Events may queue requests (permissions on a new allocation): poll again before
            // trusting the timer this round's `poll` gave.
            let again = !events.is_empty();
            for e in events {
                self.turn_event(e, now);
            }
            if self.stage == Stage::Dead {
                return;
            }
            if again && !matches!(poll, TurnPollRet::Closed) {
                continue;
            }
            match poll {
                TurnPollRet::WaitUntil(t) if t > io => {
                    wake = Some(self.clock.std(t).max(now + Duration::from_millis(1)));
                    break;
                }
                TurnPollRet::WaitUntil(_) => continue,
                TurnPollRet::Closed => {
                    let why = match self.stage {
                        Stage::Ready(_) => match &self.last_error {
                            Some(e) => format!("the allocation ended ({e})"),
                            None => "the allocation expired".to_owned(),
                        },
                        _ => self.refusal(),
                    };
                    let lost = matches!(self.stage, Stage::Ready(_));
                    self.end(&why, lost);
                    return;
                }
                // TCP allocations (RFC 6062) are never asked for.
                TurnPollRet::AllocateTcpSocket { .. } | TurnPollRet::TcpClose { .. } => continue,
            }
        }
        self.wake = wake;
    }

    /// Announces the allocation once the permissions it waits for are answered (`settled`: the
    /// one just answered), or when [`ANNOUNCE_HOLD`] is over.
    fn announce_when_permitted(&mut self, settled: Option<IpAddr>, now: Instant) {
        let Some((waiting, until)) = self.unannounced.as_mut() else {
            return;
        };
        if let Some(ip) = settled {
            waiting.remove(&ip);
        }
        if !waiting.is_empty() && now < *until {
            return;
        }
        self.unannounced = None;
        let Stage::Ready(relayed) = self.stage else {
            return;
        };
        let mapped = match self.config.transport {
            RelayTransport::Udp => self.mapped,
            _ => None,
        };
        self.events
            .push_back(LinkEvent::Allocated { relayed, mapped });
    }

    /// Why no allocation was made, from what the server said (or did not).
    fn refusal(&self) -> String {
        match (&self.last_error, self.heard) {
            (Some(e), _) => format!("the TURN server refused the allocation: {e}"),
            (None, true) => "the TURN server refused the allocation".to_owned(),
            (None, false) => format!(
                "no answer from the TURN server within {:.1} s",
                crate::transaction::stun_budget().as_secs_f64()
            ),
        }
    }

    fn turn_event(&mut self, e: TurnEvent, now: Instant) {
        match e {
            TurnEvent::AllocationCreated(_, relayed) => {
                if matches!(self.stage, Stage::Ready(_)) {
                    return;
                }
                self.stage = Stage::Ready(relayed);
                debug!(server = %self.config.label, %relayed, "TURN allocation");
                if let Some(s) = self.short.as_mut() {
                    s.next = now + s.granted / 2;
                }
                let io = self.clock.io(now);
                let wanted: BTreeSet<IpAddr> = self.permissions.clone();
                if let Some(client) = self.client.as_mut() {
                    for ip in &wanted {
                        let _ = client.create_permission(TransportType::Udp, *ip, io);
                    }
                }
                self.unannounced = Some((wanted, now + ANNOUNCE_HOLD));
                self.announce_when_permitted(None, now);
            }
            TurnEvent::AllocationCreateFailed(_) => {
                if !matches!(self.stage, Stage::Ready(_)) {
                    let why = self.refusal();
                    self.fail(&why);
                }
            }
            TurnEvent::PermissionCreated(_, ip) => {
                self.release_held(ip, now);
                self.announce_when_permitted(Some(ip), now);
            }
            TurnEvent::PermissionCreateFailed(_, ip) => {
                self.held.retain(|(p, _)| p.ip() != ip);
                self.announce_when_permitted(Some(ip), now);
                warn!(server = %self.config.label, %ip, error = ?self.last_error, "TURN permission refused");
            }
            TurnEvent::ChannelCreateFailed(_, peer) => {
                debug!(server = %self.config.label, %peer, "TURN channel refused");
            }
            TurnEvent::ChannelCreated(..)
            | TurnEvent::TcpConnected(_)
            | TurnEvent::TcpConnectFailed(_) => {}
        }
    }

    /// Bytes towards the server: a datagram, or the stream (through TLS when there is one).
    fn write(&mut self, data: Vec<u8>) {
        if let (Some(local), RelayTransport::Udp) = (self.local, self.config.transport) {
            self.outputs.push_back(LinkOutput::Datagram {
                from: local,
                to: self.config.server,
                data,
            });
            return;
        }
        let Some(stream) = self.stream else {
            return;
        };
        match self.tls.as_mut() {
            Some(tls) => {
                if tls.writer().write_all(&data).is_err() {
                    warn!(server = %self.config.label, "TLS buffer full, dropped");
                }
                self.flush_tls();
            }
            None => self
                .outputs
                .push_back(LinkOutput::StreamSend { stream, data }),
        }
    }

    fn write_from(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if self.config.transport == RelayTransport::Udp {
            self.outputs
                .push_back(LinkOutput::Datagram { from, to, data });
        } else {
            self.write(data);
        }
    }

    /// TLS records rustls has ready, to the stream.
    fn flush_tls(&mut self) {
        let (Some(tls), Some(stream)) = (self.tls.as_mut(), self.stream) else {
            return;
        };
        let mut out = Vec::new();
        while tls.wants_write() {
            if tls.write_tls(&mut out).is_err() {
                break;
            }
        }
        if !out.is_empty() {
            self.outputs
                .push_back(LinkOutput::StreamSend { stream, data: out });
        }
    }

    fn fail(&mut self, why: &str) {
        self.end(why, false);
    }

    fn end(&mut self, why: &str, was_allocated: bool) {
        if self.stage == Stage::Dead {
            return;
        }
        let allocated = was_allocated || matches!(self.stage, Stage::Ready(_));
        warn!(server = %self.config.label, why, "TURN");
        self.stage = Stage::Dead;
        self.short = None;
        self.client = None;
        self.events.push_back(if allocated {
            LinkEvent::Lost(why.to_owned())
        } else {
            LinkEvent::Failed(why.to_owned())
        });
        if let Some(stream) = self.stream {
            self.outputs.push_back(LinkOutput::StreamClose { stream });
        }
    }
}

fn transport_type(t: RelayTransport) -> TransportType {
    match t {
        RelayTransport::Udp => TransportType::Udp,
        RelayTransport::Tcp | RelayTransport::Tls => TransportType::Tcp,
    }
}

/// Cuts one STUN message or ChannelData frame off the front of a stream buffer (RFC 8656 §12.5:
/// ChannelData is padded to 4 bytes on streams). `Err`: the stream cannot be STUN/TURN.
pub(crate) fn next_frame(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, ()> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (total, keep) = match buf[0] >> 6 {
        // STUN: 20-byte header plus the attributes.
        0 => (20 + len, 20 + len),
        // ChannelData: 4-byte header, data, padding to a multiple of 4.
        1 => ((4 + len).div_ceil(4) * 4, 4 + len),
        _ => return Err(()),
    };
    if total > MAX_FRAME + 3 {
        return Err(());
    }
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame: Vec<u8> = buf.drain(..total).collect();
    frame.truncate(keep);
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_frames_are_cut_with_channel_padding() {
        // A STUN header (Binding success, no attributes), then ChannelData of 5 bytes padded
        // to 8, then half of another frame.
        let mut buf = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        buf.extend([0u8; 12]);
        buf.extend([0x40, 0x00, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]);
        buf.extend([0x40, 0x01, 0, 8, 9]);
        let a = next_frame(&mut buf).unwrap().unwrap();
        assert_eq!(a.len(), 20);
        let b = next_frame(&mut buf).unwrap().unwrap();
        assert_eq!(b, vec![0x40, 0x00, 0, 5, 1, 2, 3, 4, 5]);
        assert_eq!(next_frame(&mut buf), Ok(None));
        assert_eq!(buf.len(), 5);
        let mut bad = vec![0xc0, 0, 0, 0];
        assert_eq!(next_frame(&mut bad), Err(()));
    }
}
