//! Must-show 1, 2 and 4: two endpoints on 127.0.0.1 over real UDP sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{CallSetup, RelayConfig, analyse, call};
use shieldcall_media::MediaEvent;
use shieldcall_media::session::FailReason;

/// Every test ends within this bound, whatever happens.
const TEST_BOUND: Duration = Duration::from_secs(30);

fn frames_arrived(sent: u64, received: u64) -> f64 {
    received as f64 / sent.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tone_both_ways_for_three_seconds() {
    let r = tokio::time::timeout(
        TEST_BOUND,
        call(
            "tone",
            CallSetup {
                wrong_fingerprint_at_responder: false,
                relay: None,
                media: Duration::from_secs(3),
            },
        ),
    )
    .await
    .expect("bounded");
    for rep in [&r.initiator, &r.responder] {
        assert!(rep.failure.is_none(), "{:?}", rep.failure);
        assert!(
            rep.events
                .iter()
                .any(|e| matches!(e, MediaEvent::DtlsVerified { .. }))
        );
        assert!(rep.stats.first_audio.is_some());
        eprintln!("{:?}", rep.stats);
    }
    let (f_resp, n_resp) = analyse(&r.responder_wav);
    let (f_init, n_init) = analyse(&r.initiator_wav);
    assert!((f_resp - 440.0).abs() <= 5.0, "responder heard {f_resp} Hz");
    assert!((f_init - 880.0).abs() <= 5.0, "initiator heard {f_init} Hz");
    assert!(
        n_resp >= 140 && n_init >= 140,
        "{n_resp} {n_init} frames recorded"
    );
    let to_resp = frames_arrived(
        r.initiator.frames_from_source,
        r.responder.stats.packets_received,
    );
    let to_init = frames_arrived(
        r.responder.frames_from_source,
        r.initiator.stats.packets_received,
    );
    assert!(to_resp >= 0.9 && to_init >= 0.9, "{to_resp} {to_init}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expected_fingerprint_refuses_the_connection() {
    let r = tokio::time::timeout(
        TEST_BOUND,
        call(
            "mismatch",
            CallSetup {
                wrong_fingerprint_at_responder: true,
                relay: None,
                media: Duration::from_secs(1),
            },
        ),
    )
    .await
    .expect("bounded");
    // The responder (who expected another certificate) says why.
    assert_eq!(r.responder.failure, Some(FailReason::FingerprintMismatch));
    assert!(r.responder.events.iter().any(|e| matches!(
        e,
        MediaEvent::FingerprintMismatch { actual: Some(a), expected } if a != expected
    )));
    // The initiator never completes DTLS and gives up.
    assert!(r.initiator.failure.is_some());
    for rep in [&r.initiator, &r.responder] {
        assert_eq!(rep.frames_to_sink, 0);
        assert_eq!(rep.frames_from_source, 0);
        assert_eq!(rep.stats.packets_sent, 0);
        assert_eq!(rep.stats.packets_received, 0);
        assert!(
            !rep.events
                .iter()
                .any(|e| matches!(e, MediaEvent::DtlsVerified { .. }))
        );
    }
    assert_eq!(analyse(&r.initiator_wav).1, 0);
    assert_eq!(analyse(&r.responder_wav).1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tone_survives_lossy_reordering_relay() {
    let r = tokio::time::timeout(
        TEST_BOUND,
        call(
            "lossy",
            CallSetup {
                wrong_fingerprint_at_responder: false,
                relay: Some(RelayConfig {
                    drop_ratio: 0.05,
                    reorder_ratio: 0.05,
                    seed: 7,
                }),
                media: Duration::from_secs(3),
            },
        ),
    )
    .await
    .expect("bounded");
    for rep in [&r.initiator, &r.responder] {
        assert!(rep.failure.is_none(), "{:?}", rep.failure);
        eprintln!("{:?}", rep.stats);
        assert!(
            rep.stats.frames_concealed > 0
                || rep.stats.packets_late > 0
                || rep.stats.frames_played > 0
        );
    }
    let (f_resp, _) = analyse(&r.responder_wav);
    let (f_init, _) = analyse(&r.initiator_wav);
    assert!((f_resp - 440.0).abs() <= 5.0, "responder heard {f_resp} Hz");
    assert!((f_init - 880.0).abs() <= 5.0, "initiator heard {f_init} Hz");
}
