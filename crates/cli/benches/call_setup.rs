//! Call set-up time on loopback, verified vs plain, in one run (issue: verified calls end to end,
//! must-show 4).
//!
//! A real Prosody, two accounts that verified each other, `shieldcall listen --auto-answer` as
//! the callee and `shieldcall call` as the caller, media on 127.0.0.1. Each sample is one call;
//! verified and plain calls alternate so that both see the same machine state. Plain means the
//! callee announces no OMEMO device (`--no-omemo`), so the fingerprints travel unencrypted.
//!
//! Printed per kind, median of N (default 5, `CALL_BENCH_N`):
//! * `start→shield`: from spawning `shieldcall call` (login, key publishing, proposal, answer,
//!   ICE, DTLS) to its `shield` event;
//! * `start→audio`: from spawning to its first received audio frame (`audio` event);
//! * `propose→shield`, `propose→audio`: the same from the moment the proposal went out, as the
//!   client measures it (`ms_to_shield` in `stats`, `ms` in `audio`).
//!
//! Run: `cargo bench -p shieldcall --bench call_setup` (needs prosody; `scripts/bench-calls`
//! installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Prosody, User};

const BOUND: Duration = Duration::from_secs(30);

struct Sample {
    start_shield: f64,
    start_audio: f64,
    propose_shield: f64,
    propose_audio: f64,
    shield: String,
    /// Each set-up stage of the caller's and the callee's call, ms from its own start.
    stages: [Vec<(String, f64)>; 2],
    /// Each OMEMO operation (`encrypt`, `decrypt`) of both sides, ms.
    omemo: Vec<(String, f64)>,
}

/// Named times in ms.
type Timings = Vec<(String, f64)>;

/// The `stages_ms` and `omemo_ms` of a `stats` event.
fn breakdown(stats: &serde_json::Value) -> (Timings, Timings) {
    let stages = stats["stages_ms"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let omemo = stats["omemo_ms"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| Some((o["op"].as_str()?.to_owned(), o["ms"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    (stages, omemo)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn one_call(dir: &std::path::Path, alice: &User, bob: &User, plain: bool, i: usize) -> Sample {
    let rec = |who: &str| dir.join(format!("{who}-{i}.wav")).display().to_string();
    let (b_rec, a_rec) = (rec("bob"), rec("alice"));
    let mut args = vec![
        "listen",
        "--auto-answer",
        "--media-ip",
        "127.0.0.1",
        "--tone",
        "880",
        "--record",
        &b_rec,
    ];
    if plain {
        args.push("--no-omemo");
    }
    let mut callee = bob.start(&args, true);
    let t0 = Instant::now();
    let mut caller = alice.start(
        &[
            "call",
            &bob.jid,
            "--media-ip",
            "127.0.0.1",
            "--tone",
            "440",
            "--record",
            &a_rec,
            "--duration",
            "0.3",
        ],
        false,
    );
    let shield = caller.wait_for(|v| v["event"] == "shield", BOUND);
    let start_shield = ms(t0.elapsed());
    let audio = caller.wait_for(|v| v["event"] == "audio", BOUND);
    let start_audio = ms(t0.elapsed());
    let stats = caller.wait_for(|v| v["event"] == "stats", BOUND);
    let status = caller.wait_exit(BOUND).expect("call ends");
    assert!(status.success(), "{:?}", caller.seen);
    let callee_stats = callee.wait_for(|v| v["event"] == "stats", BOUND);
    callee.stop_with("TERM");
    let (caller_stages, mut omemo) = breakdown(&stats);
    let (callee_stages, callee_omemo) = breakdown(&callee_stats);
    omemo.extend(callee_omemo);
    Sample {
        start_shield,
        start_audio,
        propose_shield: stats["ms_to_shield"].as_f64().expect("shield time"),
        propose_audio: audio["ms"].as_f64().expect("audio time"),
        shield: shield["state"].as_str().unwrap_or("?").to_owned(),
        stages: [caller_stages, callee_stages],
        omemo,
    }
}

fn main() {
    // `cargo bench` passes --bench; run without it (the binary directly), it makes one call of
    // each kind as a quick check, no warm-up.
    let bench = support::benching();
    let n = support::samples("CALL_BENCH_N");
    let prosody = Prosody::start(&["alice", "bob"]);
    let dir = tempfile::tempdir().unwrap();
    let alice = User::new(&prosody, "alice", dir.path().join("alice"));
    let bob = User::new(&prosody, "bob", dir.path().join("bob"));
    // Verify each other by URI, as a QR scan would.
    for (a, b) in [(&alice, &bob), (&bob, &alice)] {
        let fp = common::json_lines(&b.run(&["fingerprint"])).remove(0);
        let out = a.run(&["trust", fp["uri"].as_str().unwrap()]);
        assert!(out.status.success());
    }
    // One warm-up call of each kind (first session set-up, page cache), not counted.
    if bench {
        one_call(dir.path(), &alice, &bob, false, 1000);
        one_call(dir.path(), &alice, &bob, true, 1001);
    }

    let mut verified = Vec::new();
    let mut plain = Vec::new();
    for i in 0..n {
        verified.push(one_call(dir.path(), &alice, &bob, false, 2 * i));
        plain.push(one_call(dir.path(), &alice, &bob, true, 2 * i + 1));
    }
    for s in &verified {
        assert_eq!(s.shield, "verified");
    }
    for s in &plain {
        assert_eq!(s.shield, "none");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "call set-up on loopback (real Prosody, UDP on 127.0.0.1), median of {n}, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let row = |name: &str, v: &[Sample]| {
        let m = |f: fn(&Sample) -> f64| support::median(v.iter().map(f).collect());
        let r = [
            m(|s| s.start_shield),
            m(|s| s.start_audio),
            m(|s| s.propose_shield),
            m(|s| s.propose_audio),
        ];
        println!(
            "{name:<8} | {:>9.1} ms | {:>8.1} ms | {:>11.1} ms | {:>10.1} ms",
            r[0], r[1], r[2], r[3]
        );
        r
    };
    // Where the time goes: each stage's median, caller and callee, verified and plain.
    let stage = |v: &[Sample], side: usize, name: &str| -> Option<f64> {
        let t: Vec<f64> = v
            .iter()
            .filter_map(|s| {
                s.stages[side]
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| *t)
            })
            .collect();
        (!t.is_empty()).then(|| support::median(t))
    };
    let mut names: Vec<String> = Vec::new();
    for s in verified.iter().chain(&plain) {
        for side in &s.stages {
            for (n, _) in side {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
    }
    names.sort_by(|a, b| {
        let at = |n: &str| {
            stage(&verified, 0, n)
                .or(stage(&verified, 1, n))
                .unwrap_or(f64::MAX)
        };
        at(a).total_cmp(&at(b))
    });
    println!();
    println!(
        "stage (ms from each side's call start) | caller verified | caller plain | callee verified | callee plain"
    );
    println!(
        "----------------------------------------|-----------------|--------------|-----------------|-------------"
    );
    let cell = |t: Option<f64>| t.map_or("-".to_owned(), |t| format!("{t:.1}"));
    for n in &names {
        println!(
            "{n:<39} | {:>15} | {:>12} | {:>15} | {:>12}",
            cell(stage(&verified, 0, n)),
            cell(stage(&plain, 0, n)),
            cell(stage(&verified, 1, n)),
            cell(stage(&plain, 1, n)),
        );
    }
    for op in ["encrypt", "decrypt"] {
        let t: Vec<f64> = verified
            .iter()
            .flat_map(|s| s.omemo.iter().filter(|(o, _)| o == op).map(|(_, t)| *t))
            .collect();
        if !t.is_empty() {
            println!(
                "OMEMO {op} of a fingerprint (with its database commit), both sides: median {:.2} ms of {}",
                support::median(t.clone()),
                t.len()
            );
        }
    }
    println!();
    println!("kind     | start→shield | start→audio | propose→shield | propose→audio");
    println!("---------|--------------|-------------|----------------|--------------");
    let v = row("verified", &verified);
    let p = row("plain", &plain);
    println!(
        "ratio verified/plain: start→shield {:.2}, start→audio {:.2}, propose→shield {:.2}, propose→audio {:.2}",
        v[0] / p[0],
        v[1] / p[1],
        v[2] / p[2],
        v[3] / p[3]
    );
}
