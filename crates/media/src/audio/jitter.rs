//! A small jitter buffer for 20 ms Opus packets, keyed by extended RTP sequence number.
//!
//! Good for loopback and modest loss: it waits [`PLAYOUT_DELAY_FRAMES`] before starting, plays
//! one packet per 20 ms tick, reorders within its window, and reports a missing packet as
//! [`Playout::Lost`] (with the following packet, if any, so the decoder can use Opus in-band
//! FEC, else its loss concealment). All state is bounded by the constants below.

use std::collections::BTreeMap;

/// Most packets held at once (one second of 20 ms frames).
pub const JITTER_CAPACITY: usize = 50;

/// Frames buffered before playout starts (60 ms), the reordering window at steady state.
pub const PLAYOUT_DELAY_FRAMES: usize = 3;

/// When more than this many frames are queued (drift, burst after a stall), the oldest are
/// skipped so latency stays bounded.
pub const MAX_QUEUED_FRAMES: usize = 15;

/// Consecutive ticks without any packet after which playout stops and re-buffers.
pub const MAX_CONCEALED_RUN: u32 = 25;

/// Largest payload accepted from the peer (an Opus frame is at most 1275 bytes).
pub const MAX_PAYLOAD: usize = 1500;

/// What the sink gets for one 20 ms tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Not playing yet (buffering, or nothing received).
    Buffering,
    /// The packet for this tick.
    Packet(Vec<u8>),
    /// The packet for this tick is missing; `next` is the one after it, if already here.
    Lost {
        /// Following packet, for in-band FEC recovery.
        next: Option<Vec<u8>>,
    },
}

/// Counters of what the buffer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted into the buffer.
    pub accepted: u64,
    /// Packets that came after their tick had passed.
    pub late: u64,
    /// Packets seen twice.
    pub duplicate: u64,
    /// Packets dropped because the buffer was full or too large.
    pub dropped: u64,
    /// Ticks played from a received packet.
    pub played: u64,
    /// Ticks concealed (FEC or PLC).
    pub concealed: u64,
}

/// The buffer. See the module docs.
#[derive(Debug, Default)]
pub struct JitterBuffer {
    packets: BTreeMap<u64, Vec<u8>>,
    next: Option<u64>,
    concealed_run: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets currently held.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Adds a packet from the peer.
    pub fn insert(&mut self, seq: u64, payload: &[u8]) {
        if payload.len() > MAX_PAYLOAD {
            self.stats.dropped += 1;
            return;
        }
        if let Some(next) = self.next {
            if seq < next {
                self.stats.late += 1;
                return;
            }
            if seq >= next + JITTER_CAPACITY as u64 {
                // A jump far ahead: the peer restarted or we stalled. Start over from here.
                self.stats.dropped += self.packets.len() as u64;
                self.packets.clear();
                self.next = None;
            }
        }
        if self.packets.contains_key(&seq) {
            self.stats.duplicate += 1;
            return;
        }
        self.packets.insert(seq, payload.to_vec());
        self.stats.accepted += 1;
        while self.packets.len() > JITTER_CAPACITY {
            self.packets.pop_first();
            self.stats.dropped += 1;
        }
    }

    /// Takes what should play in this 20 ms tick.
    pub fn pop(&mut self) -> Playout {
        let next = match self.next {
            Some(n) => n,
            None => {
                if self.packets.len() < PLAYOUT_DELAY_FRAMES {
                    return Playout::Buffering;
                }
                match self.packets.first_key_value() {
                    Some((k, _)) => *k,
                    None => return Playout::Buffering,
                }
            }
        };
        let mut next = next;
        while self.packets.len() > MAX_QUEUED_FRAMES {
            if let Some((k, _)) = self.packets.pop_first() {
                self.stats.dropped += 1;
                next = next.max(k + 1);
            }
        }
        self.next = Some(next + 1);
        if let Some(p) = self.packets.remove(&next) {
            self.concealed_run = 0;
            self.stats.played += 1;
            return Playout::Packet(p);
        }
        self.concealed_run += 1;
        if self.concealed_run > MAX_CONCEALED_RUN && self.packets.is_empty() {
            // The peer went quiet: stop concealing and re-buffer when it comes back.
            self.next = None;
            self.concealed_run = 0;
            return Playout::Buffering;
        }
        self.stats.concealed += 1;
        Playout::Lost {
            next: self.packets.get(&(next + 1)).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> Vec<u8> {
        vec![n]
    }

    #[test]
    fn buffers_then_plays_in_order_despite_reordering() {
        let mut j = JitterBuffer::new();
        j.insert(11, &p(11));
        j.insert(10, &p(10));
        assert_eq!(j.pop(), Playout::Buffering);
        j.insert(12, &p(12));
        assert_eq!(j.pop(), Playout::Packet(p(10)));
        assert_eq!(j.pop(), Playout::Packet(p(11)));
        assert_eq!(j.pop(), Playout::Packet(p(12)));
    }

    #[test]
    fn loss_is_reported_with_next_packet_for_fec() {
        let mut j = JitterBuffer::new();
        for s in [1, 3, 4] {
            j.insert(s, &p(s as u8));
        }
        assert_eq!(j.pop(), Playout::Packet(p(1)));
        assert_eq!(j.pop(), Playout::Lost { next: Some(p(3)) });
        assert_eq!(j.pop(), Playout::Packet(p(3)));
        j.insert(2, &p(2));
        assert_eq!(j.stats().late, 1);
        assert_eq!(j.stats().concealed, 1);
    }

    #[test]
    fn duplicates_and_oversized_are_dropped() {
        let mut j = JitterBuffer::new();
        j.insert(1, &p(1));
        j.insert(1, &p(1));
        j.insert(2, &vec![0; MAX_PAYLOAD + 1]);
        assert_eq!(j.stats().duplicate, 1);
        assert_eq!(j.stats().dropped, 1);
        assert_eq!(j.len(), 1);
    }

    #[test]
    fn capacity_is_bounded() {
        let mut j = JitterBuffer::new();
        for s in 0..(JITTER_CAPACITY as u64 * 3) {
            j.insert(s * 7, &p(0));
        }
        assert!(j.len() <= JITTER_CAPACITY);
    }

    #[test]
    fn far_jump_restarts_and_queue_length_is_bounded() {
        let mut j = JitterBuffer::new();
        for s in 0..40 {
            j.insert(s, &p(0));
        }
        // Playing drops the backlog down to the bound.
        assert!(matches!(j.pop(), Playout::Packet(_)));
        assert!(j.len() <= MAX_QUEUED_FRAMES);
        j.insert(1_000_000, &p(9));
        assert_eq!(j.len(), 1);
        assert_eq!(j.pop(), Playout::Buffering);
    }

    #[test]
    fn silence_from_peer_stops_concealment() {
        let mut j = JitterBuffer::new();
        for s in 0..3 {
            j.insert(s, &p(0));
        }
        for _ in 0..3 {
            assert!(matches!(j.pop(), Playout::Packet(_)));
        }
        let mut lost = 0;
        for _ in 0..(MAX_CONCEALED_RUN + 5) {
            if matches!(j.pop(), Playout::Lost { .. }) {
                lost += 1;
            }
        }
        assert_eq!(lost, MAX_CONCEALED_RUN);
    }
}
