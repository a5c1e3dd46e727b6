//! Candidate gathering beyond host addresses, driven by the session with injected time:
//! server-reflexive addresses from STUN Binding requests sent from each host socket (RFC 8489,
//! retransmits bounded by [`STUN_TRANSMISSIONS`]), and relayed addresses from TURN allocations
//! over UDP, TCP and TLS ([`crate::turn`]). No sockets here: datagrams and stream bytes go out
//! through the session's [`crate::SessionOutput`] and come back through its `handle_*` calls.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use tracing::{debug, warn};
use turn_client_proto::stun::agent::{StunAgent, StunAgentPollRet};
use turn_client_proto::stun::types::TransportType;
use turn_client_proto::stun::types::attribute::{ErrorCode, XorMappedAddress};
use turn_client_proto::stun::types::message::{
    BINDING, Message, MessageClass, MessageWrite, MessageWriteExt, MessageWriteVec, TransactionId,
};

use crate::ice_servers::{IceServerKind, RelayTransport, ResolvedIceServer, TlsTrust};
use crate::stats::{IceServerReport, IceServerState};
use crate::transaction::Clock;
pub use crate::transaction::{
    STUN_FINAL_WAIT, STUN_INITIAL_RTO, STUN_MAX_RTO, STUN_TRANSMISSIONS, stun_budget,
};
use crate::turn::{LinkConfig, LinkEvent, LinkOutput, LinkRecv, StreamId, TurnLink};

/// Most STUN/TURN servers used for one call; more are reported as ignored.
pub const MAX_ICE_SERVERS: usize = 8;

/// What gathering found or lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GatherEvent {
    /// `addr` is how `server` sees host socket `base`.
    Reflexive {
        base: SocketAddr,
        addr: SocketAddr,
        server: usize,
    },
    /// A TURN allocation: peers reach us at `relayed`; `local` is our end towards the server.
    Relayed {
        server: usize,
        relayed: SocketAddr,
        local: SocketAddr,
    },
    /// An allocation ended (its candidate no longer works).
    RelayLost { server: usize, relayed: SocketAddr },
    /// A server gave nothing (or its allocation ended): why, in words without secrets.
    ServerFailed { server: usize, reason: String },
    /// Every server has answered or failed.
    Complete,
}

/// What became of a datagram offered to gathering.
#[derive(Debug)]
pub(crate) enum GatherRecv {
    /// Not STUN/TURN traffic of ours: for ICE.
    NotMine,
    /// Consumed (a STUN or TURN answer).
    Handled,
    /// Peer data that arrived at relayed address `relayed`.
    Relayed {
        relayed: SocketAddr,
        data: Vec<(SocketAddr, Vec<u8>)>,
    },
}

#[derive(Debug)]
struct Probe {
    server: usize,
    local: SocketAddr,
    to: SocketAddr,
    agent: StunAgent,
    transaction: Option<TransactionId>,
    done: bool,
    /// `poll` (from `next_timeout`) already reported the transaction's timeout.
    expired: bool,
}

#[derive(Debug)]
struct ServerEntry {
    label: String,
    state: IceServerState,
}

/// Gathering for one session.
#[derive(Debug)]
pub(crate) struct Gatherer {
    clock: Clock,
    started: Instant,
    servers: Vec<ServerEntry>,
    resolved: Vec<ResolvedIceServer>,
    probes: Vec<Probe>,
    links: Vec<(usize, TurnLink)>,
    next_stream: u32,
    relay_only: bool,
    outputs: VecDeque<LinkOutput>,
    events: VecDeque<GatherEvent>,
    complete: bool,
    /// Server-reflexive addresses found so far (base, address), for de-duplication.
    reflexive: Vec<(SocketAddr, SocketAddr)>,
}

impl Gatherer {
    /// Starts gathering from `hosts` with `servers`; `relay_only` skips STUN (a reflexive
    /// address would reveal where we are) and only allocates relays.
    pub(crate) fn new(
        servers: Vec<ResolvedIceServer>,
        hosts: &[SocketAddr],
        relay_only: bool,
        tls: Option<TlsTrust>,
        clock: Clock,
        now: Instant,
    ) -> Self {
        let mut g = Self {
            clock,
            started: now,
            servers: Vec::new(),
            resolved: Vec::new(),
            probes: Vec::new(),
            links: Vec::new(),
            next_stream: 0,
            relay_only,
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            complete: false,
            reflexive: Vec::new(),
        };
        for (i, s) in servers.into_iter().enumerate() {
            let label = s.server.label();
            let state = if i >= MAX_ICE_SERVERS {
                IceServerState::Failed(format!("ignored: more than {MAX_ICE_SERVERS} servers"))
            } else if relay_only && s.server.kind == IceServerKind::Stun {
                IceServerState::Unused
            } else {
                match &s.addr {
                    Ok(_) => IceServerState::Pending,
                    Err(why) => IceServerState::Failed(why.clone()),
                }
            };
            if let IceServerState::Failed(why) = &state {
                g.events.push_back(GatherEvent::ServerFailed {
                    server: i,
                    reason: why.clone(),
                });
            }
            g.servers.push(ServerEntry { label, state });
            g.resolved.push(s);
        }
        for i in 0..g.resolved.len() {
            if g.servers[i].state != IceServerState::Pending {
                continue;
            }
            let (server, addr) = match &g.resolved[i].addr {
                Ok(a) => (g.resolved[i].server.clone(), *a),
                Err(_) => continue,
            };
            match server.relay_transport() {
                None => g.start_probes(i, addr, hosts, now),
                Some(transport) => {
                    let (Some(username), Some(password)) =
                        (server.username.clone(), server.password.clone())
                    else {
                        g.server_failed(i, "no TURN credentials".to_owned());
                        continue;
                    };
                    let config = LinkConfig {
                        label: server.label(),
                        transport,
                        server: addr,
                        username,
                        password,
                        tls_name: server.host.clone(),
                        tls: tls.clone(),
                    };
                    let link = match transport {
                        RelayTransport::Udp => {
                            let Some(local) = hosts.iter().find(|h| h.is_ipv4() == addr.is_ipv4())
                            else {
                                g.server_failed(
                                    i,
                                    "no host socket of the server's address family".to_owned(),
                                );
                                continue;
                            };
                            TurnLink::udp(config, *local, clock, now)
                        }
                        RelayTransport::Tcp | RelayTransport::Tls => {
                            let id = StreamId(g.next_stream);
                            g.next_stream += 1;
                            TurnLink::stream(config, id, clock, now)
                        }
                    };
                    g.links.push((i, link));
                }
            }
        }
        g.collect(now);
        g
    }

    fn start_probes(&mut self, server: usize, to: SocketAddr, hosts: &[SocketAddr], now: Instant) {
        let mut any = false;
        for local in hosts.iter().filter(|h| h.is_ipv4() == to.is_ipv4()) {
            let mut agent = StunAgent::builder(TransportType::Udp, *local)
                .remote_addr(to)
                .request_retransmits(
                    STUN_INITIAL_RTO,
                    STUN_MAX_RTO,
                    STUN_TRANSMISSIONS,
                    STUN_FINAL_WAIT,
                )
                .build();
            let mut msg = Message::builder_request(BINDING, MessageWriteVec::new());
            if msg.add_fingerprint().is_err() {
                continue;
            }
            let transaction = msg.transaction_id();
            let bytes = msg.finish();
            let Ok(t) = agent.send_request(&bytes, to, self.clock.io(now)) else {
                continue;
            };
            self.outputs.push_back(LinkOutput::Datagram {
                from: *local,
                to,
                data: t.data.as_ref().to_vec(),
            });
            self.probes.push(Probe {
                server,
                local: *local,
                to,
                agent,
                transaction: Some(transaction),
                done: false,
                expired: false,
            });
            any = true;
        }
        if !any {
            self.server_failed(
                server,
                "no host socket of the server's address family".to_owned(),
            );
        }
    }

    fn server_failed(&mut self, server: usize, why: String) {
        if let Some(entry) = self.servers.get_mut(server) {
            entry.state = IceServerState::Failed(why.clone());
            self.events.push_back(GatherEvent::ServerFailed {
                server,
                reason: why,
            });
        }
    }

    /// An ICE restart from `hosts` (our addresses may have moved): new Binding requests to the
    /// STUN servers; a UDP TURN allocation whose host socket is gone is released, reported lost
    /// and made anew from a socket that is there.
    pub(crate) fn restart(&mut self, hosts: &[SocketAddr], now: Instant) {
        self.probes.clear();
        self.reflexive.clear();
        if !self.relay_only {
            let stun: Vec<(usize, SocketAddr)> = (0..self.resolved.len().min(MAX_ICE_SERVERS))
                .filter(|&i| self.resolved[i].server.kind == IceServerKind::Stun)
                .filter_map(|i| self.resolved[i].addr.as_ref().ok().map(|a| (i, *a)))
                .collect();
            for (i, addr) in stun {
                self.servers[i].state = IceServerState::Pending;
                self.start_probes(i, addr, hosts, now);
            }
        }
        for i in 0..self.links.len() {
            let (server, link) = &mut self.links[i];
            let server = *server;
            if link.transport() != RelayTransport::Udp
                || link.local().is_none_or(|l| hosts.contains(&l))
            {
                continue;
            }
            let old = link.relayed();
            let config = link.config().clone();
            let permitted = link.permitted();
            link.close(now);
            while let Some(o) = link.poll_output() {
                self.outputs.push_back(o);
            }
            if let Some(relayed) = old {
                self.events
                    .push_back(GatherEvent::RelayLost { server, relayed });
            }
            let family = config.server.is_ipv4();
            if let Some(local) = hosts.iter().find(|h| h.is_ipv4() == family) {
                self.servers[server].state = IceServerState::Pending;
                let mut fresh = TurnLink::udp(config, *local, self.clock, now);
                for ip in permitted {
                    fresh.permit(ip, now); // asked for as soon as it is allocated
                }
                self.links[i] = (server, fresh);
            }
        }
        self.complete = false;
        self.collect(now);
    }

    pub(crate) fn poll_output(&mut self) -> Option<LinkOutput> {
        self.outputs.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<GatherEvent> {
        self.events.pop_front()
    }

    pub(crate) fn next_timeout(&mut self, now: Instant) -> Option<Instant> {
        let io = self.clock.io(now);
        let mut t: Option<Instant> = None;
        for p in self.probes.iter_mut().filter(|p| !p.done) {
            if p.expired {
                t = Some(now);
                continue;
            }
            match p.agent.poll(io) {
                StunAgentPollRet::WaitUntil(w) => {
                    let w = self.clock.std(w);
                    t = Some(t.map_or(w, |t| t.min(w)));
                }
                StunAgentPollRet::TransactionTimedOut(x)
                | StunAgentPollRet::TransactionCancelled(x) => {
                    // `poll` forgot the transaction: remember for `handle_timeout`.
                    p.expired |= p.transaction == Some(x);
                    t = Some(now);
                }
            }
        }
        for (_, l) in &self.links {
            if let Some(w) = l.next_timeout() {
                t = Some(t.map_or(w, |t| t.min(w)));
            }
        }
        t
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let io = self.clock.io(now);
        for i in 0..self.probes.len() {
            let p = &mut self.probes[i];
            if p.done {
                continue;
            }
            let timed_out = p.expired
                || match p.agent.poll(io) {
                    StunAgentPollRet::TransactionTimedOut(t)
                    | StunAgentPollRet::TransactionCancelled(t) => p.transaction == Some(t),
                    StunAgentPollRet::WaitUntil(_) => false,
                };
            let mut resend = Vec::new();
            while let Some(t) = p.agent.poll_transmit(io) {
                resend.push(t.data.to_vec());
            }
            let (local, to, server) = (p.local, p.to, p.server);
            for data in resend {
                self.outputs.push_back(LinkOutput::Datagram {
                    from: local,
                    to,
                    data,
                });
            }
            if timed_out {
                self.probes[i].done = true;
                self.probe_failed(
                    server,
                    format!(
                        "no answer to STUN Binding within {:.1} s",
                        stun_budget().as_secs_f64()
                    ),
                );
            }
        }
        for (_, l) in &mut self.links {
            l.handle_timeout(now);
        }
        self.collect(now);
    }

    /// A datagram from `from` that arrived on host socket `to`.
    pub(crate) fn datagram(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> GatherRecv {
        if let Some(i) = self
            .probes
            .iter()
            .position(|p| !p.done && p.to == from && p.local == to)
            && let Ok(msg) = Message::from_bytes(data)
            && msg.is_response()
            && self.probes[i].transaction == Some(msg.transaction_id())
        {
            self.probe_answer(i, &msg, now);
            self.collect(now);
            return GatherRecv::Handled;
        }
        let mut result = GatherRecv::NotMine;
        for (_, l) in &mut self.links {
            match l.datagram(from, to, data, now) {
                LinkRecv::NotMine => continue,
                LinkRecv::Handled => result = GatherRecv::Handled,
                LinkRecv::Peer(d) => {
                    result = match l.relayed() {
                        Some(relayed) => GatherRecv::Relayed { relayed, data: d },
                        None => GatherRecv::Handled,
                    }
                }
            }
            break;
        }
        self.collect(now);
        result
    }

    pub(crate) fn stream_connected(&mut self, stream: StreamId, local: SocketAddr, now: Instant) {
        if let Some((_, l)) = self.link_for(stream) {
            l.stream_connected(local, now);
        }
        self.collect(now);
    }

    pub(crate) fn stream_data(
        &mut self,
        stream: StreamId,
        data: &[u8],
        now: Instant,
    ) -> GatherRecv {
        let mut result = GatherRecv::Handled;
        if let Some((_, l)) = self.link_for(stream)
            && let LinkRecv::Peer(d) = l.stream_data(data, now)
            && let Some(relayed) = l.relayed()
        {
            result = GatherRecv::Relayed { relayed, data: d };
        }
        self.collect(now);
        result
    }

    pub(crate) fn stream_closed(&mut self, stream: StreamId, why: &str, now: Instant) {
        if let Some((_, l)) = self.link_for(stream) {
            l.stream_closed(why, now);
        }
        self.collect(now);
    }

    fn link_for(&mut self, stream: StreamId) -> Option<&mut (usize, TurnLink)> {
        self.links
            .iter_mut()
            .find(|(_, l)| l.stream_id() == Some(stream))
    }

    /// Sends `data` to `peer` from relayed address `relayed`; `false` when no allocation has it.
    pub(crate) fn send_relayed(
        &mut self,
        relayed: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> bool {
        let Some((_, l)) = self
            .links
            .iter_mut()
            .find(|(_, l)| l.relayed() == Some(relayed))
        else {
            return false;
        };
        l.send(peer, data, now);
        self.collect(now);
        true
    }

    /// Whether `addr` is one of our relayed addresses.
    pub(crate) fn is_relayed(&self, addr: SocketAddr) -> bool {
        self.links.iter().any(|(_, l)| l.relayed() == Some(addr))
    }

    /// The server behind relayed address `relayed`: its label and how we reach it.
    pub(crate) fn relay_of(&self, relayed: SocketAddr) -> Option<(String, RelayTransport)> {
        self.links
            .iter()
            .find(|(_, l)| l.relayed() == Some(relayed))
            .map(|(_, l)| (l.label().to_owned(), l.transport()))
    }

    /// Permissions for a remote candidate's IP on every allocation (made once allocated).
    pub(crate) fn permit(&mut self, ip: std::net::IpAddr, now: Instant) {
        for (_, l) in &mut self.links {
            if ip.is_ipv4() == l.server().is_ipv4() {
                l.permit(ip, now);
            }
        }
        self.collect(now);
    }

    /// A channel for the pair that carries media through `relayed`.
    pub(crate) fn bind_channel(&mut self, relayed: SocketAddr, peer: SocketAddr, now: Instant) {
        if let Some((_, l)) = self
            .links
            .iter_mut()
            .find(|(_, l)| l.relayed() == Some(relayed))
        {
            l.bind_channel(peer, now);
        }
        self.collect(now);
    }

    /// Releases every allocation.
    pub(crate) fn close(&mut self, now: Instant) {
        for (_, l) in &mut self.links {
            l.close(now);
        }
        self.probes.iter_mut().for_each(|p| p.done = true);
        self.collect(now);
    }

    /// The label of server `i`.
    pub(crate) fn label(&self, i: usize) -> String {
        self.servers
            .get(i)
            .map(|s| s.label.clone())
            .unwrap_or_default()
    }

    /// The servers and how they did.
    pub(crate) fn report(&self) -> Vec<IceServerReport> {
        self.servers
            .iter()
            .map(|s| IceServerReport {
                label: s.label.clone(),
                state: s.state.clone(),
            })
            .collect()
    }

    /// One line naming each server that failed and why (for a call that did not connect).
    pub(crate) fn problems(&self) -> Vec<String> {
        self.servers
            .iter()
            .filter_map(|s| match &s.state {
                IceServerState::Failed(why) | IceServerState::Lost(why) => {
                    Some(format!("{}: {why}", s.label))
                }
                _ => None,
            })
            .collect()
    }

    fn probe_answer(&mut self, i: usize, msg: &Message<'_>, now: Instant) {
        let io = self.clock.io(now);
        let p = &mut self.probes[i];
        let _ = p.agent.handle_stun_message_with_time(msg, p.to, io);
        p.done = true;
        let (server, base) = (p.server, p.local);
        if msg.has_class(MessageClass::Success) {
            match msg.attribute::<XorMappedAddress>() {
                Ok(x) => {
                    let addr = x.addr(msg.transaction_id());
                    self.reflexive_found(server, base, addr, now);
                }
                Err(_) => self.probe_failed(
                    server,
                    "the STUN answer had no XOR-MAPPED-ADDRESS".to_owned(),
                ),
            }
        } else {
            let code = msg
                .attribute::<ErrorCode>()
                .map(|e| format!("{} {}", e.code(), e.reason()))
                .unwrap_or_else(|_| "an error".to_owned());
            self.probe_failed(server, format!("the STUN server answered {code}"));
        }
    }

    fn reflexive_found(&mut self, server: usize, base: SocketAddr, addr: SocketAddr, now: Instant) {
        let after = now.saturating_duration_since(self.started);
        if let Some(entry) = self.servers.get_mut(server)
            && !matches!(entry.state, IceServerState::Ready { .. })
        {
            entry.state = IceServerState::Ready {
                after,
                address: addr,
            };
        }
        // The same address as the host socket (no NAT) or one we already have: nothing new.
        if addr == base || self.reflexive.contains(&(base, addr)) {
            return;
        }
        debug!(%base, %addr, "server-reflexive address");
        self.reflexive.push((base, addr));
        self.events
            .push_back(GatherEvent::Reflexive { base, addr, server });
    }

    fn probe_failed(&mut self, server: usize, why: String) {
        // One probe per host socket: the server failed when none of them got an answer.
        let others_pending = self.probes.iter().any(|p| p.server == server && !p.done);
        let Some(entry) = self.servers.get_mut(server) else {
            return;
        };
        if matches!(entry.state, IceServerState::Ready { .. }) || others_pending {
            return;
        }
        warn!(server = %entry.label, %why, "STUN");
        entry.state = IceServerState::Failed(why.clone());
        self.events.push_back(GatherEvent::ServerFailed {
            server,
            reason: why,
        });
    }

    /// Moves link outputs and events up, and notices when gathering is complete.
    fn collect(&mut self, now: Instant) {
        let after = now.saturating_duration_since(self.started);
        let mut found = Vec::new();
        for (server, l) in &mut self.links {
            while let Some(o) = l.poll_output() {
                self.outputs.push_back(o);
            }
            while let Some(e) = l.poll_event() {
                found.push((*server, e, l.local(), l.relayed()));
            }
        }
        for (server, e, local, relayed) in found {
            match e {
                LinkEvent::Allocated { relayed, mapped } => {
                    if let Some(entry) = self.servers.get_mut(server) {
                        entry.state = IceServerState::Ready {
                            after,
                            address: relayed,
                        };
                    }
                    // Over UDP the Allocate answer also says how the server sees our socket.
                    if let (Some(mapped), Some(base)) = (mapped, local) {
                        self.reflexive_found(server, base, mapped, now);
                    }
                    if let Some(local) = local {
                        self.events.push_back(GatherEvent::Relayed {
                            server,
                            relayed,
                            local,
                        });
                    }
                }
                LinkEvent::Failed(why) => {
                    if let Some(entry) = self.servers.get_mut(server) {
                        entry.state = IceServerState::Failed(why.clone());
                    }
                    self.events.push_back(GatherEvent::ServerFailed {
                        server,
                        reason: why,
                    });
                }
                LinkEvent::Lost(why) => {
                    let was = relayed.or_else(|| self.last_relayed(server));
                    if let Some(entry) = self.servers.get_mut(server) {
                        entry.state = IceServerState::Lost(why.clone());
                    }
                    self.events.push_back(GatherEvent::ServerFailed {
                        server,
                        reason: why,
                    });
                    if let Some(relayed) = was {
                        self.events
                            .push_back(GatherEvent::RelayLost { server, relayed });
                    }
                }
            }
        }
        if !self.complete
            && self
                .servers
                .iter()
                .all(|s| s.state != IceServerState::Pending)
        {
            self.complete = true;
            self.events.push_back(GatherEvent::Complete);
        }
    }

    fn last_relayed(&self, server: usize) -> Option<SocketAddr> {
        match self.servers.get(server).map(|s| &s.state) {
            Some(IceServerState::Ready { address, .. }) => Some(*address),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_transactions_end_within_seven_and_a_half_seconds() {
        assert_eq!(stun_budget(), std::time::Duration::from_millis(7_500));
    }
}
