//! `StartOptions::hold_media`: nothing is sent or played after DTLS verified the certificate until
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
use shieldcall_media::driver::{
    CallReport, DriverCommand, MediaEndpoint, MediaHandle, MediaUpdate, StartOptions,
};
use tokio::sync::mpsc;

/// One started endpoint: its handle and its one channel of updates.
struct Side {
    /// `None` once dropped (which hangs up).
    handle: Option<MediaHandle>,
    tag: &'static str,
    updates: mpsc::UnboundedReceiver<(&'static str, MediaUpdate)>,
    /// Every event received so far, in order.
    seen: Vec<MediaEvent>,
}

impl Side {
    /// The next update; panics when the channel closed without `Ended`.
    async fn next(&mut self) -> MediaUpdate {
        let (tag, u) = self
            .updates
            .recv()
            .await
            .expect("the channel closed before Ended");
        assert_eq!(tag, self.tag);
        if let MediaUpdate::Event(e) = &u {
            self.seen.push(e.clone());
        }
        u
    }

    fn send(&self, command: DriverCommand) -> bool {
        self.handle.as_ref().is_some_and(|h| h.send(command))
    }

    /// Stops the endpoint and returns its report (see [`Side::ended`]).
    async fn stop(mut self) -> (CallReport, Vec<MediaEvent>) {
        if let Some(h) = self.handle.as_mut() {
            h.stop();
        }
        self.ended().await
    }

    /// Drops the handle, which hangs up, and returns the report.
    async fn drop_handle(mut self) -> (CallReport, Vec<MediaEvent>) {
        self.handle = None;
        self.ended().await
    }

    /// Waits for the report: the last update, and no event follows it.
    async fn ended(mut self) -> (CallReport, Vec<MediaEvent>) {
        loop {
            if let MediaUpdate::Ended(r) = self.next().await {
                assert!(self.updates.recv().await.is_none(), "an update after Ended");
                return ((*r).unwrap(), self.seen);
            }
        }
    }
}

async fn pair() -> (Side, Side) {
    let (a, b) = common::exchanged_pair().await;
    let start = |ep: MediaEndpoint, hz: f64, tag: &'static str| {
        let (tx, updates) = mpsc::unbounded_channel();
        let options = StartOptions {
            connect_timeout: Duration::from_secs(8),
            media_duration: None,
            hold_media: true,
        };
        let source = Box::new(ToneSource::new(hz, 0.5));
        let handle = ep.start(source, Box::new(MemorySink::new()), options, tx, tag);
        Side {
            handle: Some(handle),
            tag,
            updates,
            seen: Vec::new(),
        }
    };
    (start(a, 440.0, "a"), start(b, 880.0, "b"))
}

async fn verified(side: &mut Side) {
    loop {
        match side.next().await {
            MediaUpdate::Event(MediaEvent::DtlsVerified { .. }) => return,
            MediaUpdate::Event(MediaEvent::Failed(f)) => panic!("failed: {f:?}"),
            MediaUpdate::Event(_) => {}
            MediaUpdate::Ended(r) => panic!("run ended before DTLS was verified: {r:?}"),
        }
    }
}

/// Both verified and allowed: media flows.
async fn flowing() -> (Side, Side) {
    let (mut a, mut b) = pair().await;
    verified(&mut a).await;
    verified(&mut b).await;
    assert!(a.send(DriverCommand::AllowMedia));
    assert!(b.send(DriverCommand::AllowMedia));
    (a, b)
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
        for (r, _) in [a.stop().await, b.stop().await] {
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
        let (a, b) = flowing().await;
        // This timer only fires if the media tasks yield (current-thread runtime).
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (r, _) in [a.stop().await, b.stop().await] {
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

/// One ordered stream per endpoint: every event of the run arrives before its report, the
/// report lists exactly the events received, and nothing follows it; a dropped handle hangs up.
/// (A peer's end does not end our run: str0m sends no DTLS close_notify; the Jingle
/// session-terminate ends calls.)
#[test]
fn updates_are_the_events_in_order_then_the_report() {
    bounded(Duration::from_secs(20), async {
        let (a, b) = flowing().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (report, seen) = a.stop().await;
        assert_eq!(format!("{:?}", report.events), format!("{seen:?}"));
        assert!(
            seen.iter().any(|e| matches!(e, MediaEvent::FirstAudio)),
            "{seen:?}"
        );
        // Dropping b's handle hangs up: its report again last.
        let (report, seen) = b.drop_handle().await;
        assert_eq!(format!("{:?}", report.events), format!("{seen:?}"));
    });
}
