//! What the STUN client (`gather`) and the TURN links (`turn`) share: the retransmission
//! timing of one STUN transaction (RFC 8489 §6.2.1, bounded for calls) and the clock that maps
//! the session's `Instant` to the STUN/TURN crates' own.

use std::time::{Duration, Instant};

/// First retransmission timeout of a STUN transaction (RFC 8489 §6.2.1's 500 ms).
pub const STUN_INITIAL_RTO: Duration = Duration::from_millis(500);

/// Longest wait between two transmissions of one request (RFC 8489 lets it grow unbounded; a
/// call cannot wait that long).
pub const STUN_MAX_RTO: Duration = Duration::from_secs(2);

/// Transmissions of one request over UDP (RFC 8489's Rc is 7): at 0, 0.5, 1.5, 3.5 and 5.5 s.
pub const STUN_TRANSMISSIONS: u32 = 5;

/// Wait after the last transmission before the transaction fails: 7.5 s in all (over TCP one
/// transmission, and the same 7.5 s).
pub const STUN_FINAL_WAIT: Duration = Duration::from_secs(2);

/// Maps the session's `std::time::Instant` to the `sans-io-time` instants of the STUN/TURN
/// crates: nanoseconds since the session's creation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new(epoch: Instant) -> Self {
        Self { epoch }
    }

    pub(crate) fn io(&self, now: Instant) -> turn_client_proto::types::Instant {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        turn_client_proto::types::Instant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    pub(crate) fn std(&self, t: turn_client_proto::types::Instant) -> Instant {
        let nanos = u64::try_from(t.as_nanos()).unwrap_or(0);
        self.epoch + Duration::from_nanos(nanos)
    }
}

/// How long a STUN transaction may take in all with the constants above.
pub fn stun_budget() -> Duration {
    let mut total = Duration::ZERO;
    let mut rto = STUN_INITIAL_RTO;
    for _ in 1..STUN_TRANSMISSIONS {
        total += rto.min(STUN_MAX_RTO);
        rto *= 2;
    }
    total + STUN_FINAL_WAIT
}
