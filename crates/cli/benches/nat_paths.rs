//! Call set-up time per path in the network-namespace lab (issue 14, must-show 6): proposal →
//! shield and proposal → first audio for a `host` pair (both ends in home A), a `srflx` pair
//! (endpoint-independent NATs) and a `relay` pair (symmetric NATs, all candidates offered), in
//! one run, with the relay/host ratio (target ≤ 1.5). Each sample is one verified call of
//! `shieldcall call` (home B, or A for host) to `shieldcall listen --auto-answer` (home A);
//! the times are the caller's own (`ms_to_shield`, `ms_to_first_audio` of its `stats`).
//!
//! Run: `scripts/bench-nat` (root; installs iproute2, nftables, prosody, coturn), or
//! `cargo bench -p shieldcall --bench nat_paths` with `NAT_BENCH_N` samples per path
//! (default 5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[allow(dead_code, unused_imports)]
#[path = "../tests/nat.rs"]
mod nat;

use nat::{World, events, start_call_from};
use shieldcall_localserver::lab::{Home, NatKind};

struct Sample {
    shield: f64,
    audio: f64,
    path: String,
}

/// One verified call from `bob_home` to alice in home A, as the caller measured it.
fn one(w: &World, bob_home: Home) -> Sample {
    let c = start_call_from(w, bob_home, &[], 1).finish();
    let shields: Vec<_> = events(&c.bob, "shield")
        .map(|v| v["state"].clone())
        .collect();
    assert_eq!(shields, ["verified"], "{:?}", c.bob.seen);
    let stats = events(&c.bob, "stats").next().unwrap();
    let p = &stats["path"];
    Sample {
        shield: stats["ms_to_shield"].as_f64().expect("a shield time"),
        audio: stats["ms_to_first_audio"].as_f64().expect("an audio time"),
        path: format!(
            "{}-{}{}",
            p["local"].as_str().unwrap_or("?"),
            p["remote"].as_str().unwrap_or("?"),
            p["relay"]["transport"]
                .as_str()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default()
        ),
    }
}

fn main() {
    let n = support::samples("NAT_BENCH_N");
    let mut rows: Vec<(&str, Vec<Sample>)> = Vec::new();
    {
        let w = World::new(NatKind::EndpointIndependent, &["alice", "bob"]);
        let _warm = one(&w, Home::A);
        rows.push(("host", (0..n).map(|_| one(&w, Home::A)).collect()));
        rows.push(("srflx", (0..n).map(|_| one(&w, Home::B)).collect()));
    }
    {
        let w = World::new(NatKind::Symmetric, &["alice", "bob"]);
        let _warm = one(&w, Home::B);
        rows.push(("relay", (0..n).map(|_| one(&w, Home::B)).collect()));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "verified call set-up per path in the lab (Prosody + coturn on the internet segment), median of {n}, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("path  | pairs seen                  | propose→shield | propose→first audio");
    println!("------|-----------------------------|----------------|--------------------");
    let mut medians = Vec::new();
    for (name, samples) in &rows {
        let mut paths: Vec<String> = samples.iter().map(|s| s.path.clone()).collect();
        paths.sort();
        paths.dedup();
        let shield = support::median(samples.iter().map(|s| s.shield).collect());
        let audio = support::median(samples.iter().map(|s| s.audio).collect());
        println!(
            "{name:<5} | {:<27} | {shield:>11.1} ms | {audio:>15.1} ms",
            paths.join(", ")
        );
        medians.push((shield, audio));
    }
    let (host, relay) = (medians[0], medians[2]);
    println!(
        "ratio relay/host: propose→shield {:.2}, propose→first audio {:.2} (target ≤ 1.5)",
        relay.0 / host.0,
        relay.1 / host.1
    );
}
