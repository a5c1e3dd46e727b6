//! `RunOptions::hold_media`: nothing is sent or played after DTLS verified the certificate until
//! the call engine allows media, and a run without a media duration neither busy-loops nor ends
//! by itself. Two endpoints on 127.0.0.1, on a current-thread runtime (as the `shieldcall`
//! binary uses), watched from a plain thread so that a starved runtime fails the test instead of
//! hanging it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use shieldcall_media::MediaEvent;
use shieldcall_media::audio::sink::MemorySink;
use shieldcall_media::audio::source::ToneSource;
use shieldcall_media::driver::{CallReport, DriverCommand, MediaEndpoint, RunOptions};
use tokio::sync::{mpsc, oneshot};

struct Side {
    commands: mpsc::UnboundedSender<DriverCommand>,
    stop: oneshot::Sender<()>,
    events: mpsc::UnboundedReceiver<MediaEvent>,
    run: tokio::task::JoinHandle<CallReport>,
}

async fn pair() -> (Side, Side) {
    let (a, b) = common::exchanged_pair().await;
    let start = |ep: MediaEndpoint, hz: f64| {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let run = tokio::spawn(async move {
            ep.run(
                Box::new(ToneSource::new(hz, 0.5)),
                Box::new(MemorySink::new()),
                RunOptions {
                    connect_timeout: Duration::from_secs(8),
                    media_duration: None,
                    events: Some(ev_tx),
                    stop: Some(stop_rx),
                    commands: Some(cmd_rx),
                    hold_media: true,
                },
            )
            .await
            .unwrap()
        });
        Side {
            commands: cmd_tx,
            stop: stop_tx,
            events: ev_rx,
            run,
        }
    };
    (start(a, 440.0), start(b, 880.0))
}

async fn verified(side: &mut Side) {
    loop {
        match side.events.recv().await {
            Some(MediaEvent::DtlsVerified { .. }) => return,
            Some(MediaEvent::Failed(f)) => panic!("failed: {f:?}"),
            Some(_) => {}
            None => panic!("run ended before DTLS was verified"),
        }
    }
}

/// Runs `f` on a current-thread runtime in its own thread; fails if it takes over `limit`.
fn bounded<F: std::future::Future<Output = ()> + Send + 'static>(limit: Duration, f: F) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f);
        let _ = tx.send(());
    });
    rx.recv_timeout(limit)
        .expect("the runtime was starved or the test hung");
}

#[test]
fn held_media_sends_and_plays_nothing_until_allowed() {
    bounded(Duration::from_secs(20), async {
        let (mut a, mut b) = pair().await;
        verified(&mut a).await;
        verified(&mut b).await;
        // Verified, but not allowed: half a second of nothing.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = a.stop.send(());
        let _ = b.stop.send(());
        for r in [a.run.await.unwrap(), b.run.await.unwrap()] {
            assert!(r.failure.is_none(), "{:?}", r.failure);
            assert_eq!(r.frames_from_source, 0);
            assert_eq!(r.frames_to_sink, 0);
            assert_eq!(r.stats.packets_sent, 0);
        }
    });
}

#[test]
fn allowed_media_flows_without_a_duration_and_without_busy_looping() {
    bounded(Duration::from_secs(20), async {
        let (mut a, mut b) = pair().await;
        verified(&mut a).await;
        verified(&mut b).await;
        a.commands.send(DriverCommand::AllowMedia).unwrap();
        b.commands.send(DriverCommand::AllowMedia).unwrap();
        // This timer only fires if the media tasks yield (current-thread runtime).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = a.stop.send(());
        let _ = b.stop.send(());
        for r in [a.run.await.unwrap(), b.run.await.unwrap()] {
            assert!(r.failure.is_none(), "{:?}", r.failure);
            // ~50 frames in one second at 20 ms; a busy loop would send thousands.
            assert!(
                (35..=70).contains(&r.frames_from_source),
                "{} frames sent in one second",
                r.frames_from_source
            );
            assert!(r.frames_to_sink > 20, "{} frames played", r.frames_to_sink);
        }
    });
}
