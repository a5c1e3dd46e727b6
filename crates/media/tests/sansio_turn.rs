//! STUN and TURN in the sans-IO core with injected time: a small in-memory TURN server (written
//! here from RFC 8656, long-term credentials, allocations, refreshes, permissions, channels,
//! Send/Data indications, expiry) and sessions driven by hand over minutes and hours of
//! simulated time, in milliseconds of real time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shieldcall_media::audio::FRAME_DURATION;
use shieldcall_media::audio::FRAME_SAMPLES;
use shieldcall_media::gather::{STUN_INITIAL_RTO, stun_budget};
use shieldcall_media::session::FailReason;
use shieldcall_media::{
    CandidateType, IceServer, IceServerKind, IceServerState, IceTransport, JingleRole, MediaEvent,
    MediaSession, RemoteParams, ResolvedIceServer, Secret, SessionConfig, SessionOutput, StreamId,
};
use turn_client_proto::stun::types::attribute::{
    ErrorCode, Nonce, Realm, Username, XorMappedAddress,
};
use turn_client_proto::stun::types::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageWrite,
    MessageWriteExt, MessageWriteVec,
};
use turn_client_proto::types::attribute::{
    ChannelNumber, Data, Lifetime, XorPeerAddress, XorRelayedAddress,
};
use turn_client_proto::types::message::{
    ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND,
};

const TURN: &str = "203.0.113.1:3478";
const A: &str = "192.0.2.10:10000";
const B: &str = "198.51.100.20:20000";
/// Our end of a TCP connection to the server.
const A_TCP: &str = "192.0.2.10:40001";
const USER: &str = "1700000000:alice";
const PASSWORD: &str = "hunter2";
const REALM: &str = "example.org";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// What the fake server did, for the assertions.
#[derive(Debug, Clone, PartialEq)]
enum Log {
    Binding,
    Unauthorized,
    Allocate,
    Refresh(u32),
    Permission(IpAddr),
    Channel(SocketAddr),
    Send,
    ChannelData,
    Expired,
}

struct Alloc {
    client: SocketAddr,
    relayed: SocketAddr,
    expires: Instant,
    perms: Vec<(IpAddr, Instant)>,
    channels: Vec<(u16, SocketAddr, Instant)>,
}

/// A TURN server in memory: RFC 8656 with a 300 s permission and 600 s channel lifetime, and
/// the allocation lifetime it is told (coturn's `max-allocate-lifetime`).
struct FakeTurn {
    addr: SocketAddr,
    lifetime: u32,
    password: String,
    allocs: Vec<Alloc>,
    next_port: u16,
    log: Vec<(Instant, Log)>,
    /// Answers nothing (an unreachable server).
    silent: bool,
    /// Stops answering REFRESH only (a server that forgot us).
    refuse_refresh: bool,
    /// The address Binding answers report (a NAT in front of the client).
    nat: Option<SocketAddr>,
}

impl FakeTurn {
    fn new(lifetime: u32) -> Self {
        Self {
            addr: addr(TURN),
            lifetime,
            password: PASSWORD.into(),
            allocs: Vec::new(),
            next_port: 50_000,
            log: Vec::new(),
            silent: false,
            refuse_refresh: false,
            nat: None,
        }
    }

    fn expire(&mut self, now: Instant) {
        let before = self.allocs.len();
        self.allocs.retain(|a| a.expires > now);
        for _ in self.allocs.len()..before {
            self.log.push((now, Log::Expired));
        }
    }

    fn count(&self, f: impl Fn(&Log) -> bool) -> usize {
        self.log.iter().filter(|(_, l)| f(l)).count()
    }

    /// A datagram (or a whole frame of a stream) from client `from`; answers to the client and
    /// relayed data to peers, as (source, destination, data).
    fn on_client(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        self.expire(now);
        if self.silent {
            return vec![];
        }
        if data.first().is_some_and(|b| b >> 6 == 1) {
            let id = u16::from_be_bytes([data[0], data[1]]);
            let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
            let Some(a) = self.allocs.iter().find(|a| a.client == from) else {
                return vec![];
            };
            let Some((_, peer, _)) = a.channels.iter().find(|c| c.0 == id && c.2 > now) else {
                return vec![];
            };
            let out = (a.relayed, *peer, data[4..4 + len].to_vec());
            self.log.push((now, Log::ChannelData));
            return vec![out];
        }
        let Ok(m) = Message::from_bytes(data) else {
            return vec![];
        };
        if m.has_method(SEND) && m.has_class(MessageClass::Indication) {
            let txid = m.transaction_id();
            let (Ok(p), Ok(d)) = (m.attribute::<XorPeerAddress>(), m.attribute::<Data>()) else {
                return vec![];
            };
            let peer = p.addr(txid);
            let Some(a) = self.allocs.iter().find(|a| a.client == from) else {
                return vec![];
            };
            if !a.perms.iter().any(|(ip, t)| *ip == peer.ip() && *t > now) {
                return vec![];
            }
            self.log.push((now, Log::Send));
            return vec![(a.relayed, peer, d.data().to_vec())];
        }
        if !m.has_class(MessageClass::Request) {
            return vec![];
        }
        let reply = |b: MessageWriteVec| vec![(self.addr, from, b.finish())];
        if m.has_method(BINDING) {
            self.log.push((now, Log::Binding));
            let mut b = Message::builder_success(&m, MessageWriteVec::new());
            let seen = self.nat.unwrap_or(from);
            b.add_attribute(&XorMappedAddress::new(seen, m.transaction_id()))
                .unwrap();
            return reply(b);
        }
        // Long-term credentials (RFC 8489 §9.2): a 401 with realm and nonce to anything unsigned
        // or signed with the wrong key.
        let key = LongTermKeyCredentials::new(USER.into(), self.password.clone(), REALM.into());
        let signed = m
            .attribute::<Username>()
            .is_ok_and(|u| u.username() == USER)
            && m.attribute::<Nonce>().is_ok_and(|n| n.nonce() == "n0nce")
            && m.validate_integrity(&key.clone().into()).is_ok();
        if !signed {
            self.log.push((now, Log::Unauthorized));
            let mut b = Message::builder_error(&m, MessageWriteVec::new());
            b.add_attribute(&ErrorCode::builder(ErrorCode::UNAUTHORIZED).build().unwrap())
                .unwrap();
            b.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
            b.add_attribute(&Nonce::new("n0nce").unwrap()).unwrap();
            return reply(b);
        }
        let txid = m.transaction_id();
        let mut b = Message::builder_success(&m, MessageWriteVec::new());
        if m.has_method(ALLOCATE) {
            self.log.push((now, Log::Allocate));
            let relayed = SocketAddr::new(self.addr.ip(), self.next_port);
            self.next_port += 1;
            self.allocs.retain(|a| a.client != from);
            self.allocs.push(Alloc {
                client: from,
                relayed,
                expires: now + Duration::from_secs(u64::from(self.lifetime)),
                perms: vec![],
                channels: vec![],
            });
            b.add_attribute(&XorRelayedAddress::new(relayed, txid))
                .unwrap();
            b.add_attribute(&XorMappedAddress::new(from, txid)).unwrap();
            b.add_attribute(&Lifetime::new(self.lifetime)).unwrap();
        } else if m.has_method(REFRESH) {
            if self.refuse_refresh {
                return vec![];
            }
            let asked = m
                .attribute::<Lifetime>()
                .map(|l| l.seconds())
                .unwrap_or(600);
            let granted = asked.min(self.lifetime);
            self.log.push((now, Log::Refresh(granted)));
            let lifetime = self.lifetime;
            let Some(a) = self.allocs.iter_mut().find(|a| a.client == from) else {
                let mut e = Message::builder_error(&m, MessageWriteVec::new());
                e.add_attribute(
                    &ErrorCode::builder(ErrorCode::ALLOCATION_MISMATCH)
                        .build()
                        .unwrap(),
                )
                .unwrap();
                return reply(e);
            };
            a.expires = now + Duration::from_secs(u64::from(asked.min(lifetime)));
            if asked == 0 {
                self.allocs.retain(|a| a.client != from);
            }
            b.add_attribute(&Lifetime::new(granted)).unwrap();
        } else if m.has_method(CREATE_PERMISSION) {
            let Some(a) = self.allocs.iter_mut().find(|a| a.client == from) else {
                return vec![];
            };
            let peer = m.attribute::<XorPeerAddress>().unwrap().addr(txid);
            a.perms.retain(|(ip, _)| *ip != peer.ip());
            a.perms.push((peer.ip(), now + Duration::from_secs(300)));
            self.log.push((now, Log::Permission(peer.ip())));
        } else if m.has_method(CHANNEL_BIND) {
            let Some(a) = self.allocs.iter_mut().find(|a| a.client == from) else {
                return vec![];
            };
            let peer = m.attribute::<XorPeerAddress>().unwrap().addr(txid);
            let id = m.attribute::<ChannelNumber>().unwrap().channel();
            a.channels.retain(|c| c.0 != id);
            a.channels.push((id, peer, now + Duration::from_secs(600)));
            a.perms.retain(|(ip, _)| *ip != peer.ip());
            a.perms.push((peer.ip(), now + Duration::from_secs(300)));
            self.log.push((now, Log::Channel(peer)));
        } else {
            return vec![];
        }
        b.add_message_integrity(&key.into(), IntegrityAlgorithm::Sha1)
            .unwrap();
        b.add_fingerprint().unwrap();
        reply(b)
    }

    /// A datagram from a peer to a relayed address.
    fn on_peer(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        relayed: SocketAddr,
        data: &[u8],
    ) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        self.expire(now);
        let a = self.allocs.iter().find(|a| a.relayed == relayed)?;
        if !a.perms.iter().any(|(ip, t)| *ip == peer.ip() && *t > now) {
            return None;
        }
        if let Some((id, _, _)) = a.channels.iter().find(|c| c.1 == peer && c.2 > now) {
            let mut out = id.to_be_bytes().to_vec();
            out.extend((data.len() as u16).to_be_bytes());
            out.extend_from_slice(data);
            return Some((self.addr, a.client, out));
        }
        let mut b = Message::builder_indication(DATA, MessageWriteVec::new());
        let txid = b.transaction_id();
        b.add_attribute(&XorPeerAddress::new(peer, txid)).unwrap();
        b.add_attribute(&Data::new(data)).unwrap();
        Some((self.addr, a.client, b.finish()))
    }

    fn is_relayed(&self, a: SocketAddr) -> bool {
        a.ip() == self.addr.ip() && a != self.addr
    }
}

fn turn_server(transport: IceTransport, password: &str) -> ResolvedIceServer {
    ResolvedIceServer {
        server: IceServer {
            kind: IceServerKind::Turn,
            host: "203.0.113.1".into(),
            port: 3478,
            transport,
            username: Some(USER.into()),
            password: Some(Secret::new(password)),
            expires: None,
        },
        addr: Ok(addr(TURN)),
    }
}

fn stun_server() -> ResolvedIceServer {
    ResolvedIceServer {
        server: IceServer {
            kind: IceServerKind::Stun,
            host: "203.0.113.1".into(),
            port: 3478,
            transport: IceTransport::Udp,
            username: None,
            password: None,
            expires: None,
        },
        addr: Ok(addr(TURN)),
    }
}

struct Peer {
    s: MediaSession,
    addr: SocketAddr,
    events: Vec<MediaEvent>,
    timeout: Instant,
    /// Bytes the session wrote to its TCP connection, not yet cut into frames.
    stream_out: Vec<u8>,
    stream: Option<StreamId>,
    played: usize,
}

/// Two sessions, a fake TURN server and an in-memory network; TCP streams to the server are
/// delivered in `chunk`-byte pieces to exercise the framing.
struct World {
    peers: Vec<Peer>,
    turn: FakeTurn,
    now: Instant,
    net: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Bytes from the server to peer 0's TCP connection, not yet delivered.
    stream_in: VecDeque<u8>,
    chunk: usize,
    next_tick: Instant,
    /// Binding requests the server received, with when (for the retransmit test).
    sent_to_server: Vec<Instant>,
    /// A NAT in front of a peer: (its private address, the public one everybody else sees).
    nat: Option<(SocketAddr, SocketAddr)>,
}

impl World {
    fn new(turn: FakeTurn, configs: Vec<SessionConfig>) -> Self {
        let now = Instant::now();
        let peers = configs
            .into_iter()
            .map(|c| Peer {
                addr: c.local_addrs[0],
                s: MediaSession::new(c, now).unwrap(),
                events: vec![],
                timeout: now,
                stream_out: vec![],
                stream: None,
                played: 0,
            })
            .collect();
        Self {
            peers,
            turn,
            now,
            net: VecDeque::new(),
            stream_in: VecDeque::new(),
            chunk: 7,
            next_tick: now,
            sent_to_server: vec![],
            nat: None,
        }
    }

    fn drain(&mut self, i: usize) {
        loop {
            match self.peers[i].s.poll_output() {
                SessionOutput::Transmit {
                    source,
                    destination,
                    contents,
                } => self.net.push_back((source, destination, contents)),
                SessionOutput::Event(e) => self.peers[i].events.push(e),
                SessionOutput::Timeout(t) => {
                    self.peers[i].timeout = t;
                    return;
                }
                SessionOutput::StreamConnect {
                    stream,
                    destination,
                } => {
                    assert_eq!(destination, self.turn.addr);
                    self.peers[i].stream = Some(stream);
                    let now = self.now;
                    self.peers[i]
                        .s
                        .handle_stream_connected(now, stream, addr(A_TCP));
                }
                SessionOutput::StreamSend { contents, .. } => {
                    self.peers[i].stream_out.extend(contents);
                }
                SessionOutput::StreamClose { .. } => self.peers[i].stream = None,
            }
        }
    }

    /// Moves everything in flight; `true` if anything moved.
    fn deliver(&mut self) -> bool {
        let mut moved = false;
        // Whole frames the session wrote to its stream go to the server.
        while let Some(frame) = take_frame(&mut self.peers[0].stream_out) {
            moved = true;
            for (_, _, d) in self.turn.on_client(self.now, addr(A_TCP), &frame) {
                self.stream_in.extend(d);
            }
        }
        while let Some((mut src, mut dst, data)) = self.net.pop_front() {
            moved = true;
            let now = self.now;
            if let Some((private, public)) = self.nat {
                if src == private {
                    src = public; // out through the NAT (endpoint-independent mapping)
                } else if dst == public {
                    dst = private; // an answer back in
                } else if dst == private {
                    continue; // a private address is not reachable from outside
                }
            }
            if dst == self.turn.addr {
                self.sent_to_server.push(now);
                let out = self.turn.on_client(now, src, &data);
                for (s, d, x) in out {
                    if d == addr(A_TCP) {
                        self.stream_in.extend(x);
                    } else {
                        self.net.push_back((s, d, x));
                    }
                }
            } else if self.turn.is_relayed(dst) {
                if let Some((s, d, x)) = self.turn.on_peer(now, src, dst, &data) {
                    if d == addr(A_TCP) {
                        self.stream_in.extend(x);
                    } else {
                        self.net.push_back((s, d, x));
                    }
                }
            } else if let Some(p) = self.peers.iter_mut().find(|p| p.addr == dst) {
                p.s.handle_receive(now, src, dst, &data);
            }
        }
        if !self.stream_in.is_empty() {
            moved = true;
            let n = self.chunk.min(self.stream_in.len());
            let piece: Vec<u8> = self.stream_in.drain(..n).collect();
            if let Some(stream) = self.peers[0].stream {
                let now = self.now;
                self.peers[0].s.handle_stream_data(now, stream, &piece);
            }
        }
        moved
    }

    /// Runs for `d` of simulated time, with the 20 ms audio clock when `audio`.
    fn run_for(&mut self, d: Duration, audio: bool) {
        let end = self.now + d;
        let mut frame = [0i16; FRAME_SAMPLES];
        for _ in 0..10_000_000 {
            for i in 0..self.peers.len() {
                self.drain(i);
            }
            if self.deliver() {
                continue;
            }
            if self.now >= end {
                return;
            }
            let mut next = self.peers.iter().map(|p| p.timeout).min().unwrap_or(end);
            if audio {
                next = next.min(self.next_tick);
            }
            self.now = next.min(end).max(self.now);
            if audio && self.now >= self.next_tick {
                for p in &mut self.peers {
                    let tone: Vec<i16> = (0..FRAME_SAMPLES)
                        .map(|i| ((i as f64 / 10.0).sin() * 8000.0) as i16)
                        .collect();
                    frame.copy_from_slice(&tone);
                    p.s.send_frame(self.now, &frame).unwrap();
                    if p.s.play_frame(self.now, &mut frame) {
                        p.played += 1;
                    }
                }
                self.next_tick += FRAME_DURATION;
            }
            let now = self.now;
            for p in &mut self.peers {
                p.s.handle_timeout(now);
            }
        }
        panic!("the simulation did not advance");
    }

    /// session-initiate from 0 to 1, session-accept back; trickled candidates are forwarded by
    /// [`World::trickle`].
    fn exchange(&mut self) {
        let now = self.now;
        let (a, b) = self.peers.split_at_mut(1);
        let (a, b) = (&mut a[0].s, &mut b[0].s);
        let d = a.local_description().unwrap();
        let t = a.local_transport().unwrap();
        let e = t.dtls.unwrap();
        b.set_remote(
            RemoteParams {
                description: d,
                transport: t,
                expected: e,
            },
            now,
        )
        .unwrap();
        let d = b.local_description().unwrap();
        let t = b.local_transport().unwrap();
        let e = t.dtls.unwrap();
        a.set_remote(
            RemoteParams {
                description: d,
                transport: t,
                expected: e,
            },
            now,
        )
        .unwrap();
    }

    /// Hands every LocalCandidate event of one peer to the other (transport-info).
    fn trickle(&mut self) {
        for i in 0..2 {
            let found: Vec<_> = self.peers[i]
                .events
                .iter()
                .filter_map(|e| match e {
                    MediaEvent::LocalCandidate(c) => Some(c.clone()),
                    _ => None,
                })
                .collect();
            self.peers[i]
                .events
                .retain(|e| !matches!(e, MediaEvent::LocalCandidate(_)));
            for c in found {
                self.peers[1 - i].s.add_remote_candidate(&c);
            }
        }
    }

    fn events(&self, i: usize) -> &[MediaEvent] {
        &self.peers[i].events
    }
}

/// One STUN message or (padded) ChannelData frame from the front of a stream buffer.
fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    if buf.len() < 4 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (total, keep) = if buf[0] >> 6 == 1 {
        ((4 + len).div_ceil(4) * 4, 4 + len)
    } else {
        (20 + len, 20 + len)
    };
    if buf.len() < total {
        return None;
    }
    let mut f: Vec<u8> = buf.drain(..total).collect();
    f.truncate(keep);
    Some(f)
}

fn config(
    role: JingleRole,
    host: &str,
    servers: Vec<ResolvedIceServer>,
    relay_only: bool,
) -> SessionConfig {
    SessionConfig {
        ice_servers: servers,
        relay_only,
        ..SessionConfig::new(role, vec![addr(host)], 11)
    }
}

fn relayed(events: &[MediaEvent]) -> Vec<SocketAddr> {
    events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::LocalCandidate(c) if c.kind == CandidateType::Relay => Some(c.addr()),
            _ => None,
        })
        .collect()
}

fn lone(servers: Vec<ResolvedIceServer>, turn: FakeTurn) -> World {
    World::new(turn, vec![config(JingleRole::Initiator, A, servers, false)])
}

/// The default 600 s allocation: the library refreshes it 60 s before it ends, for hours.
#[test]
fn allocations_are_refreshed_before_they_expire() {
    let mut w = lone(
        vec![turn_server(IceTransport::Udp, PASSWORD)],
        FakeTurn::new(600),
    );
    w.run_for(Duration::from_secs(1), false);
    assert_eq!(relayed(w.events(0)).len(), 1, "{:?}", w.events(0));
    w.run_for(Duration::from_secs(2 * 3600), false);
    assert_eq!(w.turn.count(|l| *l == Log::Expired), 0, "{:?}", w.turn.log);
    let refreshes: Vec<Instant> = w
        .turn
        .log
        .iter()
        .filter(|(_, l)| matches!(l, Log::Refresh(_)))
        .map(|(t, _)| *t)
        .collect();
    assert!(refreshes.len() >= 13, "{}", refreshes.len());
    let allocated = w
        .turn
        .log
        .iter()
        .find(|(_, l)| *l == Log::Allocate)
        .unwrap()
        .0;
    let mut last = allocated;
    for t in refreshes {
        assert!(t - last < Duration::from_secs(600), "{:?}", t - last);
        last = t;
    }
    assert!(
        !w.events(0)
            .iter()
            .any(|e| matches!(e, MediaEvent::IceServerFailed { .. })),
        "{:?}",
        w.events(0)
    );
}

/// A server that grants only 30 s (coturn's `max-allocate-lifetime=30`, as in the lab):
/// `turn-client-proto` will not refresh that, so the session does, every 15 s.
#[test]
fn short_allocations_are_kept_alive() {
    let mut w = lone(
        vec![turn_server(IceTransport::Udp, PASSWORD)],
        FakeTurn::new(30),
    );
    w.run_for(Duration::from_secs(600), false);
    assert_eq!(relayed(w.events(0)).len(), 1);
    assert_eq!(w.turn.count(|l| *l == Log::Expired), 0, "{:?}", w.turn.log);
    let n = w.turn.count(|l| matches!(l, Log::Refresh(30)));
    assert!((38..=41).contains(&n), "{n} refreshes in 600 s");
    assert!(
        !w.events(0)
            .iter()
            .any(|e| matches!(e, MediaEvent::IceServerFailed { .. })),
        "{:?}",
        w.events(0)
    );
}

/// The same over TCP, the server's bytes arriving 7 at a time.
#[test]
fn tcp_allocations_survive_fragmented_streams() {
    let mut w = lone(
        vec![turn_server(IceTransport::Tcp, PASSWORD)],
        FakeTurn::new(30),
    );
    w.run_for(Duration::from_secs(1), false);
    assert_eq!(relayed(w.events(0)).len(), 1, "{:?}", w.events(0));
    w.run_for(Duration::from_secs(120), false);
    assert_eq!(w.turn.count(|l| *l == Log::Expired), 0);
    assert!(w.turn.count(|l| matches!(l, Log::Refresh(30))) >= 7);
    let s = w.peers[0].s.stats();
    assert!(s.gathering.relay_tcp.is_some(), "{:?}", s.gathering);
}

/// A server that stops answering refreshes: the allocation ends when it expires, the session
/// says which server, and nothing hangs.
#[test]
fn a_lost_allocation_is_reported() {
    let mut w = lone(
        vec![turn_server(IceTransport::Udp, PASSWORD)],
        FakeTurn::new(600),
    );
    w.run_for(Duration::from_secs(1), false);
    w.turn.refuse_refresh = true;
    w.run_for(Duration::from_secs(700), false);
    let failed = w.events(0).iter().find_map(|e| match e {
        MediaEvent::IceServerFailed { server, reason } => Some((server.clone(), reason.clone())),
        _ => None,
    });
    let (server, reason) = failed.expect("the lost allocation is reported");
    assert_eq!(server, "turn:203.0.113.1:3478?transport=udp");
    assert!(!reason.contains(PASSWORD));
    let s = w.peers[0].s.stats();
    assert!(
        matches!(s.ice_servers[0].state, IceServerState::Lost(_)),
        "{:?}",
        s.ice_servers
    );
}

/// Eleven minutes of a call through the relay (one side relay-only): permissions for the
/// peer's IP refreshed within their 300 s, a channel for the pair media takes (ChannelData,
/// not Send indications), media both ways all along.
#[test]
fn a_call_through_the_relay_keeps_permissions_and_uses_a_channel() {
    let turn = FakeTurn::new(600);
    let mut w = World::new(
        turn,
        vec![
            config(
                JingleRole::Initiator,
                A,
                vec![turn_server(IceTransport::Udp, PASSWORD)],
                true,
            ),
            config(JingleRole::Responder, B, vec![], false),
        ],
    );
    w.exchange();
    for _ in 0..200 {
        w.run_for(Duration::from_millis(20), true);
        w.trickle();
    }
    for p in &w.peers {
        assert!(p.s.is_verified(), "{:?} {:?}", p.s.phase(), p.events);
    }
    w.run_for(Duration::from_secs(11 * 60), true);
    for p in &w.peers {
        assert!(p.s.is_verified(), "{:?}", p.s.phase());
        assert!(p.played > 50 * 60 * 10, "{}", p.played);
    }
    let b_ip = addr(B).ip();
    let perms: Vec<Instant> = w
        .turn
        .log
        .iter()
        .filter(|(_, l)| {
            *l == Log::Permission(b_ip) || matches!(l, Log::Channel(p) if p.ip() == b_ip)
        })
        .map(|(t, _)| *t)
        .collect();
    assert!(perms.len() >= 3, "{perms:?}");
    for w2 in perms.windows(2) {
        assert!(
            w2[1] - w2[0] < Duration::from_secs(300),
            "{:?}",
            w2[1] - w2[0]
        );
    }
    // A channel to B was bound, and media went as ChannelData rather than Send indications.
    assert!(
        w.turn.count(|l| *l == Log::Channel(addr(B))) >= 1,
        "{:?}",
        &w.turn.log[..20]
    );
    assert!(w.turn.count(|l| *l == Log::ChannelData) > 50 * 60 * 10);
    let pair = w.peers[0].s.stats().selected_pair.unwrap();
    assert_eq!(pair.local, CandidateType::Relay);
    assert_eq!(pair.remote_addr, addr(B));
    assert_eq!(
        pair.relay.unwrap().server,
        "turn:203.0.113.1:3478?transport=udp"
    );
    // The relay-only side never sent from its host socket to the peer.
    let b_pair = w.peers[1].s.stats().selected_pair.unwrap();
    assert!(w.turn.is_relayed(b_pair.remote_addr), "{b_pair:?}");
}

/// Wrong credentials are known at the second 401, not after the retransmits run out.
#[test]
fn wrong_credentials_fail_at_once() {
    let mut w = lone(
        vec![turn_server(IceTransport::Udp, "wrong")],
        FakeTurn::new(600),
    );
    w.run_for(Duration::from_millis(200), false);
    let failed = w.events(0).iter().find_map(|e| match e {
        MediaEvent::IceServerFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    let reason = failed.expect("failed within 200 ms");
    assert!(reason.contains("authentication failed (401"), "{reason}");
    assert_eq!(w.turn.count(|l| *l == Log::Unauthorized), 2);
    assert!(w.events(0).contains(&MediaEvent::GatheringComplete));
    assert_eq!(
        w.peers[0].s.connect_failure(),
        FailReason::ConnectTimeout {
            ice_servers: vec![format!("turn:203.0.113.1:3478?transport=udp: {reason}")]
        }
    );
}

/// Relayed candidates only, and the one TURN server refuses the credentials: nothing could
/// connect, so the session fails at once (not at the connect timeout), naming the server.
#[test]
fn relay_only_without_any_relay_fails_at_once_naming_the_server() {
    let servers = vec![turn_server(IceTransport::Udp, "wrong")];
    let mut w = World::new(
        FakeTurn::new(600),
        vec![config(JingleRole::Initiator, A, servers, true)],
    );
    w.run_for(Duration::from_millis(200), false);
    let failed = w.events(0).iter().find_map(|e| match e {
        MediaEvent::Failed(why) => Some(why.clone()),
        _ => None,
    });
    let Some(FailReason::NoRelay { ice_servers }) = failed else {
        panic!("no NoRelay failure within 200 ms: {:?}", w.events(0));
    };
    assert_eq!(ice_servers.len(), 1, "{ice_servers:?}");
    assert!(
        ice_servers[0].starts_with("turn:203.0.113.1:3478?transport=udp: authentication failed"),
        "{ice_servers:?}"
    );
    let text = FailReason::NoRelay { ice_servers }.to_string();
    assert!(
        !text.contains('\n') && text.contains("no TURN server gave one"),
        "{text}"
    );

    // With a TURN server that works, relay-only gathers its candidate and goes on.
    let servers = vec![turn_server(IceTransport::Udp, PASSWORD)];
    let mut w = World::new(
        FakeTurn::new(600),
        vec![config(JingleRole::Initiator, A, servers, true)],
    );
    w.run_for(Duration::from_millis(500), false);
    assert_eq!(relayed(w.events(0)).len(), 1, "{:?}", w.events(0));
    assert!(
        !w.events(0)
            .iter()
            .any(|e| matches!(e, MediaEvent::Failed(_))),
        "{:?}",
        w.events(0)
    );
}

/// STUN Binding to a server that never answers: five transmissions at 0, 0.5, 1.5, 3.5 and
/// 5.5 s, then failure at 7.5 s; the same bound for an Allocate.
#[test]
fn retransmits_are_bounded() {
    for server in [stun_server(), turn_server(IceTransport::Udp, PASSWORD)] {
        let mut turn = FakeTurn::new(600);
        turn.silent = true;
        let mut w = lone(vec![server.clone()], turn);
        let t0 = w.now;
        w.run_for(Duration::from_secs(20), false);
        let sent: Vec<Duration> = w.sent_to_server.iter().map(|t| *t - t0).collect();
        let want: Vec<Duration> = [0, 500, 1500, 3500, 5500]
            .into_iter()
            .map(Duration::from_millis)
            .collect();
        assert_eq!(sent, want, "{:?}", server.server.kind);
        assert_eq!(STUN_INITIAL_RTO, Duration::from_millis(500));
        let s = w.peers[0].s.stats();
        match &s.ice_servers[0].state {
            IceServerState::Failed(why) => assert!(why.contains("no answer"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.gathering.complete,
            Some(stun_budget()),
            "{:?}",
            server.server.kind
        );
    }
}

/// STUN from the host socket behind a "NAT" (the server reports another address): a
/// server-reflexive candidate whose base is the host socket.
#[test]
fn stun_gives_a_server_reflexive_candidate_with_its_base() {
    let mut turn = FakeTurn::new(600);
    turn.nat = Some(addr("203.0.113.99:61000"));
    let mut w = lone(vec![stun_server()], turn);
    w.run_for(Duration::from_millis(100), false);
    let srflx: Vec<_> = w
        .events(0)
        .iter()
        .filter_map(|e| match e {
            MediaEvent::LocalCandidate(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let [c] = &srflx[..] else {
        panic!("{:?}", w.events(0))
    };
    assert_eq!(c.kind, CandidateType::ServerReflexive);
    assert_eq!(c.addr(), addr("203.0.113.99:61000"));
    assert_eq!(c.related, Some(addr(A)));
    let s = w.peers[0].s.stats();
    assert!(s.gathering.srflx.is_some());
    assert_eq!(w.turn.count(|l| *l == Log::Binding), 1);
    assert!(w.events(0).contains(&MediaEvent::GatheringComplete));
    // It is part of the transport built afterwards.
    let t = w.peers[0].s.local_transport().unwrap();
    assert!(t.candidates.iter().any(|k| k.addr() == c.addr()));
}

/// Bounded state: at most MAX_ICE_SERVERS servers are used, the rest reported as ignored.
#[test]
fn servers_beyond_the_cap_are_ignored() {
    use shieldcall_media::gather::MAX_ICE_SERVERS;
    let servers: Vec<_> = (0..=MAX_ICE_SERVERS).map(|_| stun_server()).collect();
    let mut w = lone(servers, FakeTurn::new(600));
    w.run_for(Duration::from_millis(100), false);
    let s = w.peers[0].s.stats();
    assert_eq!(s.ice_servers.len(), MAX_ICE_SERVERS + 1);
    assert_eq!(w.turn.count(|l| *l == Log::Binding), MAX_ICE_SERVERS);
    match &s.ice_servers[MAX_ICE_SERVERS].state {
        IceServerState::Failed(why) => assert!(why.starts_with("ignored"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// A stream that delivers more than a frame can hold at once ends that server's link, nothing
/// else (the buffer is bounded).
#[test]
fn an_oversized_stream_input_ends_the_link() {
    let mut w = lone(
        vec![turn_server(IceTransport::Tcp, PASSWORD)],
        FakeTurn::new(600),
    );
    w.run_for(Duration::from_millis(500), false);
    let stream = w.peers[0].stream.expect("connected");
    let now = w.now;
    w.peers[0]
        .s
        .handle_stream_data(now, stream, &vec![0x01; 200_000]);
    w.drain(0);
    let failed = w.events(0).iter().find_map(|e| match e {
        MediaEvent::IceServerFailed { server, reason } => Some((server.clone(), reason.clone())),
        _ => None,
    });
    let (server, reason) = failed.expect("the link ended");
    assert_eq!(server, "turn:203.0.113.1:3478?transport=tcp");
    assert!(reason.contains("oversized"), "{reason}");
    assert!(w.peers[0].stream.is_none(), "the stream was closed");
}

/// Everything every crate logs (our TURN link, `turn-client-proto`, `stun-proto`, str0m) at
/// every level, captured while allocations, short-lifetime refreshes and a wrong secret run:
/// the password appears nowhere.
#[test]
fn turn_passwords_are_never_logged() {
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    struct Text<'a>(&'a mut String);
    impl Visit for Text<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
    }
    struct Capture(Arc<Mutex<String>>, std::sync::atomic::AtomicU64);
    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            span.record(&mut Text(&mut self.0.lock().unwrap()));
            Id::from_u64(1 + self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        }
        fn record(&self, _: &Id, values: &Record<'_>) {
            values.record(&mut Text(&mut self.0.lock().unwrap()));
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut s = self.0.lock().unwrap();
            s.push('\n');
            event.record(&mut Text(&mut s));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    let log = Arc::new(Mutex::new(String::new()));
    let capture = Capture(log.clone(), std::sync::atomic::AtomicU64::new(0));
    tracing::subscriber::with_default(capture, || {
        for (transport, password) in [
            (IceTransport::Udp, PASSWORD),
            (IceTransport::Tcp, PASSWORD),
            (IceTransport::Udp, "hunter3-wrong"),
        ] {
            let mut w = lone(vec![turn_server(transport, password)], FakeTurn::new(30));
            w.run_for(Duration::from_secs(40), false);
            let shown = format!("{:?} {:?}", w.events(0), w.peers[0].s.stats());
            assert!(!shown.contains("hunter"), "{shown}");
        }
    });
    let log = log.lock().unwrap();
    assert!(log.len() > 1000, "the capture works: {} bytes", log.len());
    assert!(
        log.contains("1700000000:alice") || log.contains("TURN"),
        "{}",
        &log[..500]
    );
    assert!(!log.contains("hunter"), "a password in the logs");
}

/// Behind an endpoint-independent NAT: the STUN server's answer gives a server-reflexive
/// candidate, the peer reaches us only there, and both sides' stats name the srflx pair (ours
/// from the peer's Binding answers, which say how it sees us).
#[test]
fn a_call_behind_a_nat_goes_over_the_server_reflexive_pair() {
    let mut w = World::new(
        FakeTurn::new(600),
        vec![
            config(JingleRole::Initiator, A, vec![stun_server()], false),
            config(JingleRole::Responder, B, vec![], false),
        ],
    );
    let public = addr("203.0.113.50:30000");
    w.nat = Some((addr(A), public));
    w.exchange();
    for _ in 0..150 {
        w.run_for(Duration::from_millis(20), true);
        w.trickle();
    }
    w.run_for(Duration::from_secs(2), true);
    for p in &w.peers {
        assert!(p.s.is_verified(), "{:?} {:?}", p.s.phase(), p.events);
    }
    let a = w.peers[0].s.stats().selected_pair.unwrap();
    assert_eq!(a.local, CandidateType::ServerReflexive, "{a:?}");
    assert_eq!(a.local_addr, public);
    let b = w.peers[1].s.stats().selected_pair.unwrap();
    assert_eq!(
        (b.remote, b.remote_addr),
        (CandidateType::ServerReflexive, public),
        "{b:?}"
    );
    assert_eq!(b.local, CandidateType::Host, "{b:?}");
    assert!(w.peers[0].s.stats().gathering.srflx.is_some());
}
