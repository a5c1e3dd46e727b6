//! Shared helpers for the socket tests: Jingle-shaped exchange between two endpoints, an
//! optional lossy relay, and WAV checks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shieldcall_media::audio::analysis::dominant_frequency;
use shieldcall_media::audio::sink::WavSink;
use shieldcall_media::audio::source::ToneSource;
use shieldcall_media::driver::{CallReport, MediaEndpoint, RunOptions};
use shieldcall_media::{
    DtlsParams, Fingerprint, IceCandidate, IceUdpTransport, JingleRole, RemoteParams,
};
use tokio::net::UdpSocket;

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shieldcall-media-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Replaces a transport's candidates by one host candidate at `addr` (the relay).
pub fn via(mut t: IceUdpTransport, addr: SocketAddr) -> IceUdpTransport {
    t.candidates = vec![IceCandidate::local_host(addr, 0)];
    t
}

pub fn corrupt(f: Fingerprint) -> Fingerprint {
    let mut b = *f.as_bytes();
    b[31] ^= 0x80;
    Fingerprint::from_bytes(&b).unwrap()
}

pub struct CallSetup {
    pub wrong_fingerprint_at_responder: bool,
    pub relay: Option<RelayConfig>,
    pub media: Duration,
}

#[derive(Clone, Copy)]
pub struct RelayConfig {
    pub drop_ratio: f64,
    pub reorder_ratio: f64,
    pub seed: u64,
}

pub struct CallResult {
    pub initiator: CallReport,
    pub responder: CallReport,
    /// WAV recorded at the initiator (it hears the responder's 880 Hz).
    pub initiator_wav: PathBuf,
    /// WAV recorded at the responder (it hears the initiator's 440 Hz).
    pub responder_wav: PathBuf,
}

/// A bound initiator and responder on 127.0.0.1 that know each other's parameters directly
/// (offer to the responder, answer to the initiator), ready to run.
pub async fn exchanged_pair() -> (MediaEndpoint, MediaEndpoint) {
    let mut a = MediaEndpoint::bind(JingleRole::Initiator, &[LOOPBACK])
        .await
        .unwrap();
    let mut b = MediaEndpoint::bind(JingleRole::Responder, &[LOOPBACK])
        .await
        .unwrap();
    exchange(&mut a, &mut b);
    (a, b)
}

/// The offer of initiator `a` to responder `b` and `b`'s answer back, each expecting the
/// other's own fingerprint (what Jingle would carry).
pub fn exchange(a: &mut MediaEndpoint, b: &mut MediaEndpoint) {
    let a_desc = a.session().local_description().unwrap();
    let a_tr = a.session().local_transport().unwrap();
    let a_dtls = a_tr.dtls.unwrap();
    let now = std::time::Instant::now();
    b.session()
        .set_remote(
            RemoteParams {
                description: a_desc,
                transport: a_tr,
                expected: a_dtls,
            },
            now,
        )
        .unwrap();
    let b_desc = b.session().local_description().unwrap();
    let b_tr = b.session().local_transport().unwrap();
    let b_dtls = b_tr.dtls.unwrap();
    a.session()
        .set_remote(
            RemoteParams {
                description: b_desc,
                transport: b_tr,
                expected: b_dtls,
            },
            now,
        )
        .unwrap();
}

/// Two endpoints on 127.0.0.1, configured only through Jingle-shaped parameters: the
/// initiator sends 440 Hz, the responder 880 Hz, each records what it hears to a WAV file.
pub async fn call(name: &str, setup: CallSetup) -> CallResult {
    let dir = temp_dir(name);
    let mut a = MediaEndpoint::bind(JingleRole::Initiator, &[LOOPBACK])
        .await
        .unwrap();
    let mut b = MediaEndpoint::bind(JingleRole::Responder, &[LOOPBACK])
        .await
        .unwrap();

    // session-initiate (a -> b)
    let a_desc = a.session().local_description().unwrap();
    let mut a_tr = a.session().local_transport().unwrap();
    let a_dtls: DtlsParams = a_tr.dtls.unwrap();
    assert_eq!(a_dtls.setup.as_str(), "actpass");
    let a_real = a_tr.candidates[0].addr();

    let b_real_placeholder = b.session().local_addrs()[0];
    let mut relay_task = None;
    let (a_seen_at, b_seen_at) = match setup.relay {
        Some(cfg) => {
            let (to_a, to_b, task) = spawn_relay(a_real, b_real_placeholder, cfg).await;
            relay_task = Some(task);
            (to_a, to_b)
        }
        None => (a_real, b_real_placeholder),
    };
    a_tr = via(a_tr, a_seen_at);

    let mut expected_a = a_dtls;
    if setup.wrong_fingerprint_at_responder {
        expected_a.fingerprint = corrupt(expected_a.fingerprint);
    }
    b.session()
        .set_remote(
            RemoteParams {
                description: a_desc,
                transport: a_tr,
                expected: expected_a,
            },
            std::time::Instant::now(),
        )
        .unwrap();

    // session-accept (b -> a)
    let b_desc = b.session().local_description().unwrap();
    let b_tr = b.session().local_transport().unwrap();
    let b_dtls = b_tr.dtls.unwrap();
    assert_eq!(b_dtls.setup.as_str(), "active");
    let b_tr = via(b_tr, b_seen_at);
    a.session()
        .set_remote(
            RemoteParams {
                description: b_desc,
                transport: b_tr,
                expected: b_dtls,
            },
            std::time::Instant::now(),
        )
        .unwrap();

    let initiator_wav = dir.join("initiator-heard.wav");
    let responder_wav = dir.join("responder-heard.wav");
    let opts = || RunOptions {
        connect_timeout: Duration::from_secs(8),
        media_duration: Some(setup.media),
        ..Default::default()
    };
    let ta = tokio::spawn(a.run(
        Box::new(ToneSource::new(440.0, 0.5)),
        Box::new(WavSink::create(&initiator_wav).unwrap()),
        opts(),
    ));
    let tb = tokio::spawn(b.run(
        Box::new(ToneSource::new(880.0, 0.5)),
        Box::new(WavSink::create(&responder_wav).unwrap()),
        opts(),
    ));
    let initiator = ta.await.unwrap().unwrap();
    let responder = tb.await.unwrap().unwrap();
    if let Some(t) = relay_task {
        t.abort();
    }
    CallResult {
        initiator,
        responder,
        initiator_wav,
        responder_wav,
    }
}

/// A UDP relay between `a` and `b`: returns (address a is told b is at ... i.e. where b sees
/// a, where a sees b). Drops and reorders datagrams at random with a fixed seed.
async fn spawn_relay(
    a: SocketAddr,
    b: SocketAddr,
    cfg: RelayConfig,
) -> (SocketAddr, SocketAddr, tokio::task::JoinHandle<()>) {
    // `face_b` is where b sends (b believes a is there); `face_a` is where a sends.
    let face_b = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let face_a = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let a_sees_b = face_a.local_addr().unwrap();
    let b_sees_a = face_b.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut held_ab: Option<Vec<u8>> = None;
        let mut held_ba: Option<Vec<u8>> = None;
        let mut buf_a = vec![0u8; 2048];
        let mut buf_b = vec![0u8; 2048];
        loop {
            // Datagrams from a (arriving at face_a) go to b from face_b, and vice versa.
            let (data, from_a) = tokio::select! {
                r = face_a.recv_from(&mut buf_a) => match r { Ok((n, _)) => (buf_a[..n].to_vec(), true), Err(_) => continue },
                r = face_b.recv_from(&mut buf_b) => match r { Ok((n, _)) => (buf_b[..n].to_vec(), false), Err(_) => continue },
            };
            if rng.random::<f64>() < cfg.drop_ratio {
                continue;
            }
            let (out, dest, held) = if from_a {
                (&face_b, b, &mut held_ab)
            } else {
                (&face_a, a, &mut held_ba)
            };
            if held.is_none() && rng.random::<f64>() < cfg.reorder_ratio {
                *held = Some(data); // send after the next one
                continue;
            }
            let _ = out.send_to(&data, dest).await;
            if let Some(h) = held.take() {
                let _ = out.send_to(&h, dest).await;
            }
        }
    });
    (b_sees_a, a_sees_b, task)
}

pub fn read_wav(path: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).unwrap();
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}

/// Dominant frequency of a recording and its length in 20 ms frames.
pub fn analyse(path: &Path) -> (f64, usize) {
    let s = read_wav(path);
    (dominant_frequency(&s, 48_000), s.len() / 960)
}
