//! Must-show 3: interop with aiortc, an independent DTLS-SRTP and Opus implementation, on
//! loopback. Both sides check the other's fingerprint; audio flows both ways.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod aiortc_interop;
mod common;

use std::time::{Duration, Instant};

use aiortc_interop::{
    description_from_json, description_to_json, spawn, transport_from_json, transport_to_json,
};
use common::{LOOPBACK, analyse, corrupt, temp_dir};
use serde_json::json;
use shieldcall_media::audio::sink::WavSink;
use shieldcall_media::audio::source::ToneSource;
use shieldcall_media::driver::{CallReport, MediaEndpoint, RunOptions};
use shieldcall_media::{JingleRole, MediaEvent, RemoteParams};

const TEST_BOUND: Duration = Duration::from_secs(40);

struct Outcome {
    ours: CallReport,
    theirs: serde_json::Value,
    we_heard: std::path::PathBuf,
    they_heard: std::path::PathBuf,
}

/// Runs one call with aiortc. `we_initiate`: we send the offer (actpass), aiortc answers.
/// `lie_to_aiortc`: aiortc is told a wrong fingerprint for us (its check must refuse).
async fn call_aiortc(
    name: &str,
    we_initiate: bool,
    lie_to_aiortc: bool,
    lie_to_us: bool,
) -> Outcome {
    let dir = temp_dir(name);
    let we_heard = dir.join("we-heard.wav");
    let they_heard = dir.join("aiortc-heard.wav");
    let role = if we_initiate { "answer" } else { "offer" };
    let mut peer = spawn(&[
        "--role",
        role,
        "--tone",
        "880",
        "--record",
        they_heard.to_str().unwrap(),
        "--seconds",
        "3",
        "--timeout",
        "10",
    ]);
    let our_role = if we_initiate {
        JingleRole::Initiator
    } else {
        JingleRole::Responder
    };
    let mut ep = MediaEndpoint::bind(our_role, &[LOOPBACK]).await.unwrap();

    let our_params = |ep: &mut MediaEndpoint| {
        let desc = ep.session().local_description().unwrap();
        let tr = ep.session().local_transport().unwrap();
        let mut dtls = tr.dtls.unwrap();
        if lie_to_aiortc {
            dtls.fingerprint = corrupt(dtls.fingerprint);
        }
        json!({"description": description_to_json(&desc), "transport": transport_to_json(&tr, &dtls)})
    };

    if we_initiate {
        let offer = our_params(&mut ep);
        peer.send(json!({"type": "offer", "params": offer})).await;
        let answer = peer.recv().await;
        assert_eq!(answer["type"], "answer");
        let (transport, mut expected) = transport_from_json(&answer["params"]["transport"]);
        if lie_to_us {
            expected.fingerprint = corrupt(expected.fingerprint);
        }
        assert_eq!(
            expected.setup.as_str(),
            "active",
            "aiortc answers actpass with active"
        );
        ep.session()
            .set_remote(
                RemoteParams {
                    description: description_from_json(&answer["params"]["description"]),
                    transport,
                    expected,
                },
                Instant::now(),
            )
            .unwrap();
    } else {
        let offer = peer.recv().await;
        assert_eq!(offer["type"], "offer");
        let (transport, expected) = transport_from_json(&offer["params"]["transport"]);
        assert_eq!(expected.setup.as_str(), "actpass");
        ep.session()
            .set_remote(
                RemoteParams {
                    description: description_from_json(&offer["params"]["description"]),
                    transport,
                    expected,
                },
                Instant::now(),
            )
            .unwrap();
        let answer = our_params(&mut ep);
        peer.send(json!({"type": "answer", "params": answer})).await;
    }

    let ours = ep
        .run(
            Box::new(ToneSource::new(440.0, 0.5)),
            Box::new(WavSink::create(&we_heard).unwrap()),
            RunOptions {
                connect_timeout: Duration::from_secs(8),
                media_duration: Some(Duration::from_secs(4)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let theirs = peer.recv().await;
    assert_eq!(theirs["type"], "done");
    let _ = peer.child.wait().await;
    Outcome {
        ours,
        theirs,
        we_heard,
        they_heard,
    }
}

fn assert_audio_both_ways(o: &Outcome) {
    assert!(o.ours.failure.is_none(), "{:?}", o.ours.failure);
    assert!(
        o.ours
            .events
            .iter()
            .any(|e| matches!(e, MediaEvent::DtlsVerified { .. })),
        "our fingerprint check passed"
    );
    eprintln!("ours: {:?}\naiortc: {}", o.ours.stats, o.theirs);
    let (we, n_we) = analyse(&o.we_heard);
    let (they, n_they) = analyse(&o.they_heard);
    assert!((we - 880.0).abs() <= 5.0, "we heard {we} Hz from aiortc");
    assert!(
        (they - 440.0).abs() <= 5.0,
        "aiortc heard {they} Hz from us"
    );
    assert!(n_we >= 100, "{n_we} frames from aiortc");
    assert!(n_they >= 100, "{n_they} frames at aiortc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_answers_our_offer_audio_both_ways() {
    let o = tokio::time::timeout(TEST_BOUND, call_aiortc("aiortc-answer", true, false, false))
        .await
        .expect("bounded");
    assert_audio_both_ways(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_answer_aiortc_offer_audio_both_ways() {
    let o = tokio::time::timeout(TEST_BOUND, call_aiortc("aiortc-offer", false, false, false))
        .await
        .expect("bounded");
    assert_audio_both_ways(&o);
}

/// aiortc does its own check too: told a wrong fingerprint for us, it refuses the handshake,
/// and we (whose expectation was right) never get to media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_refuses_a_wrong_fingerprint_for_us() {
    let o = tokio::time::timeout(TEST_BOUND, call_aiortc("aiortc-lied", true, true, false))
        .await
        .expect("bounded");
    eprintln!(
        "ours: {:?} {:?}\naiortc: {}",
        o.ours.failure, o.ours.stats, o.theirs
    );
    assert_eq!(o.theirs["frames_received"], 0);
    assert_eq!(o.theirs["connection_state"], "failed");
    // aiortc (DTLS client here) checks after its last flight, so our side may complete the
    // handshake; it still never receives a frame from aiortc, and aiortc records nothing.
    assert_eq!(o.ours.frames_to_sink, 0);
    assert_eq!(o.ours.stats.packets_received, 0);
    assert!(!o.they_heard.exists() || analyse(&o.they_heard).1 == 0);
}

/// Our check against aiortc: expecting another certificate than aiortc's, we refuse with
/// `FingerprintMismatch`; nothing is played on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_refuse_aiortc_with_unexpected_fingerprint() {
    let o = tokio::time::timeout(
        TEST_BOUND,
        call_aiortc("aiortc-unexpected", true, false, true),
    )
    .await
    .expect("bounded");
    eprintln!(
        "ours: {:?} {:?}\naiortc: {}",
        o.ours.failure, o.ours.stats, o.theirs
    );
    assert_eq!(
        o.ours.failure,
        Some(shieldcall_media::session::FailReason::FingerprintMismatch)
    );
    assert!(
        o.ours
            .events
            .iter()
            .any(|e| matches!(e, MediaEvent::FingerprintMismatch { .. }))
    );
    assert_eq!(o.ours.frames_to_sink, 0);
    assert_eq!(o.ours.stats.packets_sent, 0);
    assert_eq!(o.theirs["frames_received"], 0);
    assert!(!o.they_heard.exists() || analyse(&o.they_heard).1 == 0);
    assert_eq!(analyse(&o.we_heard).1, 0);
}
