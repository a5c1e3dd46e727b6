//! Call statistics: traffic each way, loss, jitter, RTT, the setup milestones, the path media
//! takes (the selected candidate pair) and how each STUN/TURN server did.

use std::net::SocketAddr;
use std::time::Duration;

use crate::ice_servers::RelayTransport;
use crate::params::CandidateType;

/// What a call did so far. Times are measured from the creation of the session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallStats {
    /// RTP packets we sent.
    pub packets_sent: u64,
    /// RTP payload bytes we sent.
    pub bytes_sent: u64,
    /// Authenticated RTP packets received from the peer (after the fingerprint check).
    pub packets_received: u64,
    /// Their payload bytes.
    pub bytes_received: u64,
    /// Playout ticks filled from a real packet.
    pub frames_played: u64,
    /// Playout ticks that had to be concealed (FEC or PLC).
    pub frames_concealed: u64,
    /// Packets that came too late to play.
    pub packets_late: u64,
    /// Fraction of our packets the peer reports lost (RTCP receiver reports), 0..=1.
    pub remote_loss: Option<f32>,
    /// Fraction of the peer's packets lost on the way to us, 0..=1, from str0m's receive stats.
    pub local_loss: Option<f32>,
    /// Interarrival jitter of the peer's stream (RFC 3550), in RTP clock units (48 kHz).
    pub jitter: Option<u32>,
    /// Round-trip time from RTCP, once known.
    pub rtt: Option<Duration>,
    /// From session creation to ICE connected.
    pub ice_connected: Option<Duration>,
    /// From session creation to DTLS connected with the fingerprint verified.
    pub dtls_connected: Option<Duration>,
    /// From session creation to the first audio frame from the peer played.
    pub first_audio: Option<Duration>,
    /// The pair media (DTLS, SRTP) last went out on: what kind of path the call uses.
    pub selected_pair: Option<SelectedPair>,
    /// From session creation to the first candidate of each kind.
    pub gathering: GatheringTimes,
    /// Each STUN/TURN server given to the session and what became of it (labels only: no
    /// credentials).
    pub ice_servers: Vec<IceServerReport>,
    /// ICE restarts made (ours and the peer's).
    pub ice_restarts: u32,
    /// Times connectivity was lost (ICE `Disconnected` after having connected) and came back
    /// within [`crate::session::ICE_DISCONNECT_GRACE`].
    pub outages_survived: u32,
}

/// The candidate pair a call sends media on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedPair {
    /// Our candidate's kind: `host`, `srflx` or `relay` (`prflx` behind a NAT whose mapping no
    /// STUN server told us: the peer's Binding answers say how it sees us).
    pub local: CandidateType,
    /// Our candidate's address: the host socket, the reflexive address the peer reaches us at,
    /// or the relayed address on the TURN server.
    pub local_addr: SocketAddr,
    /// The peer's candidate kind (`prflx` when it was learnt from its checks).
    pub remote: CandidateType,
    /// The peer's address media goes to.
    pub remote_addr: SocketAddr,
    /// For a relayed local candidate: the TURN server and how we reach it.
    pub relay: Option<RelayPath>,
}

/// The TURN server a relayed pair goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPath {
    /// The server's label (`turn:host:port?transport=…`).
    pub server: String,
    /// UDP, TCP or TLS between us and the server.
    pub transport: RelayTransport,
}

impl std::fmt::Display for SelectedPair {
    /// `relay (tls via turns:example.org:5349?transport=tcp) -> host`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.local.as_str())?;
        if let Some(r) = &self.relay {
            write!(f, " ({} via {})", r.transport, r.server)?;
        }
        write!(f, " -> {}", self.remote.as_str())
    }
}

/// From session creation to the first local candidate of each kind (host candidates exist from
/// the start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatheringTimes {
    /// The first server-reflexive candidate.
    pub srflx: Option<Duration>,
    /// The first relayed candidate through TURN over UDP.
    pub relay_udp: Option<Duration>,
    /// … over TCP.
    pub relay_tcp: Option<Duration>,
    /// … over TLS.
    pub relay_tls: Option<Duration>,
    /// Every server answered or failed.
    pub complete: Option<Duration>,
}

/// One STUN/TURN server of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServerReport {
    /// `stun:host:port?transport=udp`, `turn:…`, `turns:…` (never credentials).
    pub label: String,
    /// What became of it.
    pub state: IceServerState,
}

/// What became of a STUN/TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceServerState {
    /// Still asking.
    Pending,
    /// Not asked (a STUN server of a relay-only session).
    Unused,
    /// Answered: `address` is the reflexive (STUN) or relayed (TURN) address it gave.
    Ready {
        /// From session creation.
        after: Duration,
        /// What it gave.
        address: SocketAddr,
    },
    /// Never gave an address: why (unresolvable, unreachable, wrong credentials, …).
    Failed(String),
    /// Gave a relayed address that stopped working: why.
    Lost(String),
}

impl CallStats {
    /// Interarrival jitter in milliseconds (RTP clock of Opus: 48 kHz).
    pub fn jitter_ms(&self) -> Option<f64> {
        self.jitter.map(|j| f64::from(j) / 48.0)
    }

    /// Share of playout ticks filled by real packets (1.0 when nothing was concealed).
    pub fn arrival_ratio(&self) -> f64 {
        let total = self.frames_played + self.frames_concealed;
        if total == 0 {
            return 0.0;
        }
        self.frames_played as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_ratio_counts_concealment() {
        let s = CallStats {
            frames_played: 90,
            frames_concealed: 10,
            ..Default::default()
        };
        assert!((s.arrival_ratio() - 0.9).abs() < 1e-9);
        assert_eq!(CallStats::default().arrival_ratio(), 0.0);
        let j = CallStats {
            jitter: Some(480),
            ..Default::default()
        };
        assert_eq!(j.jitter_ms(), Some(10.0));
    }

    #[test]
    fn a_relayed_pair_reads_as_its_path() {
        let p = SelectedPair {
            local: CandidateType::Relay,
            local_addr: "192.0.2.1:50000".parse().unwrap(),
            remote: CandidateType::Host,
            remote_addr: "192.0.2.2:4000".parse().unwrap(),
            relay: Some(RelayPath {
                server: "turns:turn.example.org:5349?transport=tcp".into(),
                transport: RelayTransport::Tls,
            }),
        };
        assert_eq!(
            p.to_string(),
            "relay (tls via turns:turn.example.org:5349?transport=tcp) -> host"
        );
    }
}
