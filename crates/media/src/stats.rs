//! Call statistics: traffic each way, loss, jitter, RTT, and the setup milestones.

use std::time::Duration;

/// What a call did so far. Times are measured from the creation of the session.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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
}
