//! Connect-time and CPU benchmark, run beside aiortc in the same run (these machines are noisy,
//! so only a same-run comparison means anything).
//!
//! `cargo bench -p shieldcall-media --bench media` (or `crates/media/bench/run.sh`). Prints:
//! * ours: start → DTLS connected (fingerprint verified) and → first audio frame played, for
//!   two endpoints on 127.0.0.1 created from scratch (sockets, certificates, ICE, DTLS);
//! * aiortc: the same two marks for two aiortc peers on 127.0.0.1 (`aiortc_peer.py --role pair`);
//! * CPU time of a two-way call (both ends in this process) per second of call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shieldcall_media::audio::sink::NullSink;
use shieldcall_media::audio::source::ToneSource;
use shieldcall_media::driver::{CallReport, MediaEndpoint, RunOptions};
use shieldcall_media::{JingleRole, MediaEvent, RemoteParams};
use tokio::sync::mpsc;

const RUNS: usize = 7;
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Marks {
    dtls: Duration,
    first_audio: Duration,
}

/// One call from scratch; returns the initiator's marks measured from before binding.
async fn one_call(media: Duration) -> (Marks, CallReport, CallReport) {
    let t0 = Instant::now();
    let mut a = MediaEndpoint::bind(JingleRole::Initiator, &[LOOPBACK])
        .await
        .unwrap();
    let mut b = MediaEndpoint::bind(JingleRole::Responder, &[LOOPBACK])
        .await
        .unwrap();
    let a_desc = a.session().local_description().unwrap();
    let a_tr = a.session().local_transport().unwrap();
    let a_dtls = a_tr.dtls.unwrap();
    b.session()
        .set_remote(
            RemoteParams {
                description: a_desc,
                transport: a_tr,
                expected: a_dtls,
            },
            Instant::now(),
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
            Instant::now(),
        )
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let opts = |events| RunOptions {
        media_duration: Some(media),
        events,
        ..Default::default()
    };
    let ta = tokio::spawn(a.run(
        Box::new(ToneSource::new(440.0, 0.5)),
        Box::new(NullSink::default()),
        opts(Some(tx)),
    ));
    let tb = tokio::spawn(b.run(
        Box::new(ToneSource::new(880.0, 0.5)),
        Box::new(NullSink::default()),
        opts(None),
    ));
    let (mut dtls, mut first) = (None, None);
    while let Some(e) = rx.recv().await {
        match e {
            MediaEvent::DtlsVerified { .. } => dtls = Some(t0.elapsed()),
            MediaEvent::FirstAudio => first = Some(t0.elapsed()),
            _ => {}
        }
        if dtls.is_some() && first.is_some() {
            break;
        }
    }
    let ra = ta.await.unwrap().unwrap();
    let rb = tb.await.unwrap().unwrap();
    (
        Marks {
            dtls: dtls.unwrap(),
            first_audio: first.unwrap(),
        },
        ra,
        rb,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// utime + stime of this process, from /proc (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn aiortc_pair(python: &str) -> Option<(f64, f64)> {
    let harness = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/aiortc_peer.py");
    let out = std::process::Command::new(python)
        .arg(harness)
        .args(["--role", "pair", "--timeout", "20"])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last()?).ok()?;
    Some((v["connected_s"].as_f64()?, v["first_audio_s"].as_f64()?))
}

fn main() {
    // `cargo bench` passes `--bench`. `cargo test --all-targets` runs this binary without it:
    // figures never come from a timed test run, so say how to get them and stop.
    if !std::env::args().any(|a| a == "--bench") {
        println!("media benchmark: run `cargo bench -p shieldcall-media --bench media`");
        return;
    }
    // One thread carries both ends, as a client's runtime would carry its one call.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Warm-up (first certificate generation, page faults).
    rt.block_on(one_call(Duration::from_millis(200)));

    let mut ours_dtls = Vec::new();
    let mut ours_first = Vec::new();
    for _ in 0..RUNS {
        let (m, _, _) = rt.block_on(one_call(Duration::from_millis(200)));
        ours_dtls.push(m.dtls.as_secs_f64() * 1e3);
        ours_first.push(m.first_audio.as_secs_f64() * 1e3);
    }

    let python = std::env::var("SHIELDCALL_PYTHON").ok();
    let mut theirs_conn = Vec::new();
    let mut theirs_first = Vec::new();
    if let Some(py) = &python {
        for _ in 0..RUNS {
            if let Some((c, f)) = aiortc_pair(py) {
                theirs_conn.push(c * 1e3);
                theirs_first.push(f * 1e3);
            }
        }
    }

    // CPU: one two-way call of 10 s of media, both ends in this process.
    let call_secs = 10.0;
    let cpu0 = cpu_time();
    let wall0 = Instant::now();
    let (_, ra, rb) = rt.block_on(one_call(Duration::from_secs_f64(call_secs)));
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    let wall = wall0.elapsed().as_secs_f64();

    println!("shieldcall-media benchmark, median of {RUNS} runs, loopback 127.0.0.1");
    println!(
        "  ours   : start -> DTLS connected+verified {:7.1} ms, -> first audio frame {:7.1} ms",
        median(ours_dtls.clone()),
        median(ours_first.clone())
    );
    if theirs_conn.is_empty() {
        println!("  aiortc : not run (set SHIELDCALL_PYTHON to a Python with aiortc)");
    } else {
        let (c, f) = (median(theirs_conn), median(theirs_first));
        println!(
            "  aiortc : start -> connected              {c:7.1} ms, -> first audio frame {f:7.1} ms"
        );
        println!(
            "  ratio ours/aiortc: connect {:.2}, first audio {:.2}",
            median(ours_dtls) / c,
            median(ours_first) / f
        );
    }
    println!(
        "  CPU, two-way call ({:.1} s wall, {} + {} packets sent): {:.2} % of one core for both ends, {:.2} % per end",
        wall,
        ra.stats.packets_sent,
        rb.stats.packets_sent,
        100.0 * cpu / wall,
        50.0 * cpu / wall
    );
    // What part of that is Opus itself: 100 s of audio encoded and decoded, in CPU time.
    let mut enc = shieldcall_media::audio::opus::OpusEncoder::new().unwrap();
    let mut dec = shieldcall_media::audio::opus::OpusDecoder::new().unwrap();
    let mut tone = ToneSource::new(440.0, 0.5);
    let mut frame = [0i16; shieldcall_media::audio::FRAME_SAMPLES];
    let cpu_opus0 = cpu_time();
    for _ in 0..5000 {
        use shieldcall_media::audio::source::AudioSource;
        tone.next_frame(&mut frame).unwrap();
        let p = enc.encode(&frame).unwrap().to_vec();
        dec.decode(&p, &mut frame).unwrap();
    }
    println!(
        "  of which Opus encode+decode+tone: {:.2} % of one core per end",
        100.0 * (cpu_time() - cpu_opus0).as_secs_f64() / 100.0
    );
    println!(
        "  driver wake-ups per second per end: {:.0}",
        (ra.wakeups + rb.wakeups) as f64 / 2.0 / wall
    );
}
