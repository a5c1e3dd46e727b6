//! A real user's first hour (issue "live audio"): two PulseAudio daemons, the sound servers of
//! two desktops, each with a steady tone as its microphone and a null sink as its speaker, ALSA's
//! default device routed to them as on a desktop. A verified call with the default devices on
//! both sides (no --tone, --play or --record); what each speaker played, recorded from its sink
//! monitor, must carry the other side's tone in at least 90 % of its 20 ms frames, both ways.
//!
//! Needs `pulseaudio`, `pulseaudio-utils` and `libasound2-plugins` (scripts/test installs them);
//! fails, never skips, without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{Prosody, PulseAudio};
use shieldcall_localserver::wav::Recording;

/// Seconds the call lasts once connected.
const CALL_SECONDS: u64 = 4;

/// 20 ms frames of a raw 48 kHz mono s16le recording that carry `hz`, and all its frames.
/// The 20 ms frames of a raw s16le recording (parec's) that carry `hz`, of how many (the
/// first 200 ms, before the call, do not count).
fn tone_frames(raw: &Path, hz: f64) -> (usize, usize) {
    let bytes = std::fs::read(raw).unwrap();
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    Recording::from_samples(samples).tone_frames(hz)
}

#[test]
fn a_verified_call_through_two_sound_servers_is_heard_both_ways() {
    let p = Prosody::start(&["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let (alice, bob) = common::verified_pair(&p, tmp.path());
    let (pa_alice, pa_bob) = (PulseAudio::start(440), PulseAudio::start(880));
    let (alice_heard, bob_heard) = (tmp.path().join("alice.raw"), tmp.path().join("bob.raw"));
    let mut rec_alice = pa_alice.record_speaker(&alice_heard);
    let mut rec_bob = pa_bob.record_speaker(&bob_heard);

    let (caller, callee) = alice.loopback_call(&bob, CALL_SECONDS, &pa_alice.env(), &pa_bob.env());
    for r in [&mut rec_alice, &mut rec_bob] {
        let _ = r.kill();
        let _ = r.wait();
    }
    for (who, side) in [("alice", &caller), ("bob", &callee)] {
        let shields: Vec<String> = side
            .events("shield")
            .iter()
            .map(|v| v["state"].as_str().unwrap_or("?").to_owned())
            .collect();
        assert_eq!(shields, ["verified"], "{who}: {:?}", side.seen);
        let stats = &side.events("stats")[0];
        for dev in ["capture", "playback"] {
            let d = &stats[dev];
            assert!(d.is_object(), "{who}: no {dev} device report: {stats}");
            assert_eq!(d["errors"], 0, "{who} {dev}: {d}");
            eprintln!("{who} {dev}: {d}");
        }
    }
    let expected = (CALL_SECONDS * 50) as usize;
    for (who, raw, hz) in [
        ("alice heard bob's 880 Hz", &alice_heard, 880.0),
        ("bob heard alice's 440 Hz", &bob_heard, 440.0),
    ] {
        let (with, total) = tone_frames(raw, hz);
        eprintln!("{who} in {with} of {total} recorded frames ({expected} frames of call)");
        assert!(
            with * 10 >= expected * 9,
            "{who}: the tone in only {with} frames of {expected}\n{}",
            if who.starts_with("alice") {
                pa_alice.log()
            } else {
                pa_bob.log()
            }
        );
    }
}
