//! Mouth-to-ear latency of a verified call through real sound-server devices (issue "a real
//! user's first hour", must-show 1): from a tone burst entering alice's microphone to it leaving
//! bob's speaker, on loopback.
//!
//! One PulseAudio daemon (Debian `pulseaudio`) holds both ends, so that one recording has both
//! in one clock: a stereo null sink `mix`; alice's microphone is its left channel
//! (`module-remap-source` of `mix.monitor`), bob's speaker writes its right channel
//! (`module-remap-sink`). A `pacat` plays tone bursts into the left channel; a `parec` of
//! `mix.monitor` records both: left is what alice's microphone heard, right what bob's speaker
//! played. Each process reaches its devices as on a desktop: ALSA's default device, routed to
//! PulseAudio by `libasound2-plugins`, with `PULSE_SOURCE`/`PULSE_SINK` naming its devices.
//!
//! Printed: the latency of every burst after the first second of call, their median and
//! maximum, against the target of 150 ms. Everything between the two channels counts: capture
//! period and queue, Opus encoding, UDP, the jitter buffer and playout delay, decoding, the
//! playback queue and period.
//!
//! Run: `scripts/bench-audio` (= `cargo bench -p shieldcall --bench audio_latency`): an 8 s call.
//! Without `--bench` (`cargo test --all-targets` runs it so) a 4 s call, as a quick check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::{Prosody, PulseAudio};

const RATE: usize = 48_000;
/// One burst each this many samples (0.5 s), 100 ms of 1 kHz, silence between.
const PERIOD: usize = RATE / 2;
const BURST: usize = RATE / 10;

/// Sample indices where a channel goes from silence to a burst (5 ms windows above 0.05 of
/// full scale after 50 ms below).
fn onsets(ch: &[i16]) -> Vec<usize> {
    const W: usize = 240;
    let mut out = Vec::new();
    let mut quiet = 0;
    for (i, w) in ch.chunks(W).enumerate() {
        let loud = w.iter().map(|s| i32::from(*s).abs()).max().unwrap_or(0) > 1600;
        if loud && quiet >= 10 {
            // Refine to the first loud sample of the window.
            let first = w
                .iter()
                .position(|s| i32::from(*s).abs() > 1600)
                .unwrap_or(0);
            out.push(i * W + first);
        }
        quiet = if loud { 0 } else { quiet + 1 };
    }
    out
}

fn main() {
    let call_seconds: usize = if std::env::args().any(|a| a == "--bench") {
        8
    } else {
        4
    };
    let pa = PulseAudio::start_with(
        "load-module module-null-sink sink_name=mix rate=48000 channels=2 channel_map=front-left,front-right\n\
         load-module module-remap-source source_name=alice_mic master=mix.monitor channels=1 master_channel_map=front-left channel_map=mono remix=no\n\
         load-module module-remap-sink sink_name=bob_ear master=mix channels=1 master_channel_map=front-right channel_map=mono remix=no\n\
         load-module module-null-sink sink_name=alice_ear rate=48000 channels=1\n\
         load-module module-null-sink sink_name=quiet rate=48000 channels=1\n",
        "mix",
    );
    let p = Prosody::start(&["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let (alice, bob) = common::verified_pair(&p, tmp.path());
    let env = |source: &str, sink: &str| {
        let mut e = pa.env();
        e.push(("PULSE_SOURCE".into(), source.into()));
        e.push(("PULSE_SINK".into(), sink.into()));
        e
    };

    // The bursts, played into the left channel for the whole call.
    let mut mouth = Command::new("pacat")
        .args([
            "-d",
            "mix",
            "--rate=48000",
            "--channels=2",
            "--format=s16le",
            "--raw",
        ])
        .args(["--latency-msec=10"])
        .envs(pa.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = mouth.stdin.take().unwrap();
    std::thread::spawn(move || {
        let mut n = 0usize;
        let mut buf = Vec::with_capacity(RATE * 4 / 10);
        loop {
            buf.clear();
            for _ in 0..RATE / 10 {
                let t = n % PERIOD;
                let s = if t < BURST {
                    (12000.0 * (std::f64::consts::TAU * 1000.0 * t as f64 / RATE as f64).sin())
                        as i16
                } else {
                    0
                };
                buf.extend_from_slice(&s.to_le_bytes());
                buf.extend_from_slice(&0i16.to_le_bytes());
                n += 1;
            }
            if stdin.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let mut rec = Command::new("parec")
        .args([
            "-d",
            "mix.monitor",
            "--rate=48000",
            "--channels=2",
            "--format=s16le",
            "--raw",
        ])
        .args(["--latency-msec=5"])
        .envs(pa.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut rec_out = rec.stdout.take().unwrap();
    let recorder = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = rec_out.read_to_end(&mut all);
        all
    });

    let (caller, callee) = alice.loopback_call(
        &bob,
        call_seconds as u64,
        &env("alice_mic", "alice_ear"),
        &env("quiet.monitor", "bob_ear"),
    );
    let _ = rec.kill();
    let _ = rec.wait();
    let _ = mouth.kill();
    let _ = mouth.wait();
    let raw = recorder.join().unwrap();
    let samples: Vec<i16> = raw
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let (said, heard) = (onsets(&left), onsets(&right));
    // Each burst heard belongs to the latest burst said before it (bursts are 500 ms apart).
    let first_heard = heard.first().copied().unwrap_or(usize::MAX);
    let mut latencies: Vec<f64> = heard
        .iter()
        .filter(|h| **h >= first_heard + RATE) // after the first second of audio
        .filter_map(|h| {
            let s = said.iter().rev().find(|s| *s <= h)?;
            Some((h - s) as f64 * 1000.0 / RATE as f64)
        })
        .collect();
    assert!(
        latencies.len() >= (call_seconds - 2) * 2 - 2,
        "only {} bursts measured (said {}, heard {}):\n{:?}",
        latencies.len(),
        said.len(),
        heard.len(),
        caller.seen
    );
    println!(
        "mouth-to-ear latency, verified call on loopback through PulseAudio (ALSA pulse plugin)"
    );
    println!(
        "bursts: {}",
        latencies
            .iter()
            .map(|l| format!("{l:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    latencies.sort_by(|a, b| a.total_cmp(b));
    let median = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    println!("median {median:.0} ms, max {max:.0} ms (target <= 150 ms)");
    for (who, side) in [("alice", &caller), ("bob", &callee)] {
        if let Some(st) = side.events("stats").first() {
            println!(
                "{who}: capture {} playback {}",
                st["capture"], st["playback"]
            );
        }
    }
}
