//! Arbitrary datagrams (STUN, DTLS, RTP, RTCP, garbage: RFC 7983 demultiplexing is the
//! session's job) into a `MediaSession`, with injected time. Two situations, by the first byte:
//!
//! * even: a call that is up. A pair of sessions (initiator A, responder B) verified once per
//!   process over an in-memory network; the datagrams are injected into A as if from B's
//!   address, between B's genuine traffic, with frames sent and played every 20 ms. Asserted:
//!   A stays verified, and has received no more packets than B really sent (totals) (unauthenticated RTP is
//!   never played) — as `tests/sansio.rs` promises for random input. The pair is kept between
//!   inputs (state carries over: e.g. latched SSRCs), and rebuilt if the process is restarted.
//! * odd: a fresh initiator in the handshake (DTLS server, `expected` a certificate nobody has)
//!   fed the datagrams from its only candidate. Asserted: never verified, nothing played.
//!
//! Then records: `[delay ms][len hi][len lo][bytes…]`, at most 32.
#![no_main]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use shieldcall_media::audio::{FRAME_DURATION, FRAME_SAMPLES};
use shieldcall_media::{
    DtlsParams, Fingerprint, JingleRole, MediaEvent, MediaSession, RemoteParams, SessionConfig,
    SessionOutput,
};

type Net = VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>;

struct Peer {
    s: MediaSession,
    addr: SocketAddr,
    timeout: Instant,
}

fn drain(p: &mut Peer, net: &mut Net) {
    for _ in 0..10_000 {
        match p.s.poll_output() {
            SessionOutput::Transmit {
                source,
                destination,
                contents,
            } => net.push_back((source, destination, contents)),
            SessionOutput::Event(e) => {
                assert!(!matches!(e, MediaEvent::FingerprintMismatch { .. }), "{e:?}");
            }
            SessionOutput::Timeout(t) => {
                p.timeout = t;
                return;
            }
            // No TURN servers here: no TCP.
            SessionOutput::StreamConnect { .. }
            | SessionOutput::StreamSend { .. }
            | SessionOutput::StreamClose { .. } => {}
        }
    }
}

fn peer(role: JingleRole, port: u16, now: Instant) -> Peer {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = MediaSession::new(SessionConfig::new(role, vec![addr], u64::from(port)), now)
        .expect("session");
    Peer {
        s,
        addr,
        timeout: now,
    }
}

struct Sim {
    a: Peer,
    b: Peer,
    now: Instant,
    next_tick: Instant,
    net: Net,
}

impl Sim {
    fn new() -> Self {
        let t0 = Instant::now();
        let mut a = peer(JingleRole::Initiator, 10_000, t0);
        let mut b = peer(JingleRole::Responder, 20_000, t0);
        let a_desc = a.s.local_description().expect("offer");
        let a_tr = a.s.local_transport().expect("transport");
        let a_dtls = a_tr.dtls.expect("dtls");
        b.s.set_remote(
            RemoteParams {
                description: a_desc,
                transport: a_tr,
                expected: a_dtls,
            },
            t0,
        )
        .expect("b remote");
        let b_desc = b.s.local_description().expect("answer");
        let b_tr = b.s.local_transport().expect("transport");
        let b_dtls = b_tr.dtls.expect("dtls");
        a.s.set_remote(
            RemoteParams {
                description: b_desc,
                transport: b_tr,
                expected: b_dtls,
            },
            t0,
        )
        .expect("a remote");
        let mut sim = Sim {
            a,
            b,
            now: t0,
            next_tick: t0,
            net: VecDeque::new(),
        };
        sim.run_for(Duration::from_millis(500));
        assert!(sim.a.s.is_verified() && sim.b.s.is_verified(), "fixture");
        sim
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let (a, b, net) = (&mut self.a, &mut self.b, &mut self.net);
        let mut now = self.now;
        let mut frame = [0i16; FRAME_SAMPLES];
        while now < end {
            drain(a, net);
            drain(b, net);
            while let Some((src, dst, data)) = net.pop_front() {
                let to = if dst == a.addr { &mut *a } else { &mut *b };
                to.s.handle_receive(now, src, dst, &data);
                drain(a, net);
                drain(b, net);
            }
            now = a.timeout.min(b.timeout).min(self.next_tick).max(now).min(end);
            if now >= self.next_tick {
                for (i, p) in [&mut *a, &mut *b].into_iter().enumerate() {
                    frame.iter_mut().enumerate().for_each(|(k, x)| {
                        *x = ((k * (i + 3)) % 200) as i16 * 50;
                    });
                    p.s.send_frame(now, &frame).expect("send");
                    p.s.play_frame(now, &mut frame);
                }
                self.next_tick += FRAME_DURATION;
            }
            a.s.handle_timeout(now);
            b.s.handle_timeout(now);
            if now >= end {
                break;
            }
        }
        self.now = now;
    }
}

thread_local! {
    static SIM: RefCell<Option<Sim>> = const { RefCell::new(None) };
}

fn records(mut data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while out.len() < 32 {
        let [delay, hi, lo, rest @ ..] = data else {
            break;
        };
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(rest.len());
        let (d, r) = rest.split_at(len);
        out.push((*delay, d));
        data = r;
    }
    if out.is_empty() && !data.is_empty() {
        out.push((0, data));
    }
    out
}

fn verified_call(data: &[u8]) {
    SIM.with(|cell| {
        let mut slot = cell.borrow_mut();
        let sim = slot.get_or_insert_with(Sim::new);
        let played_before = sim.a.s.stats().packets_received;
        let sent_before = sim.b.s.stats().packets_sent;
        let (from, to) = (sim.b.addr, sim.a.addr);
        for (delay, d) in records(data) {
            sim.a.s.handle_receive(sim.now, from, to, d);
            sim.run_for(Duration::from_millis(u64::from(delay % 40)));
        }
        sim.run_for(Duration::from_millis(60));
        // Totals since the call began: packets B sent in one window may arrive in the next.
        let _ = (played_before, sent_before);
        let genuine = sim.b.s.stats().packets_sent;
        let got = sim.a.s.stats().packets_received;
        assert!(got <= genuine, "{got} received, {genuine} genuine sent");
        assert!(sim.a.s.is_verified(), "{:?}", sim.a.s.phase());
    });
}

fn handshake(data: &[u8]) {
    let t0 = Instant::now();
    let mut a = peer(JingleRole::Initiator, 10_000, t0);
    let peer_addr = SocketAddr::from(([127, 0, 0, 1], 20_000));
    let mut b = peer(JingleRole::Responder, 20_000, t0);
    // B's real parameters (so ICE has a candidate and credentials), but a certificate nobody
    // holds as the expectation: A may never verify, whatever arrives.
    let b_desc = b.s.local_description().expect("answer");
    let b_tr = b.s.local_transport().expect("transport");
    let mut b_dtls = b_tr.dtls.expect("dtls");
    b_dtls.fingerprint = Fingerprint::from_bytes(&[0x5a; 32]).expect("32 bytes");
    a.s.set_remote(
        RemoteParams {
            description: b_desc,
            transport: b_tr,
            expected: DtlsParams { ..b_dtls },
        },
        t0,
    )
    .expect("a remote");
    let mut net = VecDeque::new();
    let mut now = t0;
    let mut frame = [0i16; FRAME_SAMPLES];
    for (delay, d) in records(data) {
        now += Duration::from_millis(u64::from(delay));
        a.s.handle_receive(now, peer_addr, a.addr, d);
        a.s.handle_timeout(now);
        drain(&mut a, &mut net);
        net.clear();
        assert!(!a.s.is_verified());
        assert!(!a.s.play_frame(now, &mut frame));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        verified_call(rest);
    } else {
        handshake(rest);
    }
});
