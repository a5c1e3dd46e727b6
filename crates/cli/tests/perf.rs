//! Performance figures of issue #7, printed (run by `crates/cli/scripts/perf.sh` in release
//! mode; ignored in the normal suite): `send` from process start to delivery at a listening
//! contact on a warm loopback Prosody (median of 10, target ≤ 300 ms) and the resident memory of
//! `listen` (target ≤ 30 MB).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Prosody, User};

#[test]
#[ignore = "performance figures: run crates/cli/scripts/perf.sh"]
fn send_latency_and_listen_memory() {
    let p = Prosody::start(&["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let alice = User::new(&p, "alice", tmp.path().join("alice"));
    let bob = User::new(&p, "bob", tmp.path().join("bob"));
    let mut listen = bob.listen();
    // Warm up: sessions built, bundles published, Prosody's caches filled.
    for i in 0..2 {
        assert!(
            alice
                .run(&["send", "bob@localhost", &format!("warm {i}")])
                .status
                .success()
        );
        listen.wait_for(|v| v["event"] == "message", Duration::from_secs(30));
    }
    let mut times = Vec::new();
    for i in 0..10 {
        let body = format!("timed {i}");
        let t0 = Instant::now();
        let mut c = alice.cmd(&["send", "bob@localhost", &body]);
        let mut child = c.stdout(std::process::Stdio::null()).spawn().unwrap();
        listen.wait_for(
            |v| v["event"] == "message" && v["body"] == body.as_str(),
            Duration::from_secs(30),
        );
        times.push(t0.elapsed());
        child.wait().unwrap();
    }
    times.sort();
    let median = (times[4] + times[5]) / 2;
    let rss_mb = listen.rss_kib() as f64 / 1024.0;
    println!(
        "send to delivery, median of 10: {} ms (min {} ms, max {} ms; target <= 300 ms)",
        median.as_millis(),
        times[0].as_millis(),
        times[9].as_millis()
    );
    println!("listen resident memory: {rss_mb:.1} MB (target <= 30 MB)");
    listen.stop();
}
