//! A network change during a real call on loopback: the initiator's host address moves from
//! 127.0.0.1 to 127.0.0.2 (its old socket is closed), the call engine's part is played by the
//! test (each side's `IceRestarted` transport goes to the other as `RemoteIceRestart`, the
//! responder answers with its own restart), and the audio comes back over the same DTLS session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{analyse, exchanged_pair, temp_dir};
use shieldcall_media::MediaEvent;
use shieldcall_media::audio::sink::WavSink;
use shieldcall_media::audio::source::ToneSource;
use shieldcall_media::driver::{CallReport, DriverCommand, MediaUpdate, StartOptions};
use tokio::sync::mpsc;

const TEST_BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_address_is_recovered_by_an_ice_restart() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = temp_dir("restart");
        let (a, b) = exchanged_pair().await;
        let wavs = [dir.join("a.wav"), dir.join("b.wav")];
        let (updates, mut rx) = mpsc::unbounded_channel();
        let options = StartOptions {
            connect_timeout: Duration::from_secs(8),
            media_duration: Some(Duration::from_secs(6)),
            hold_media: false,
        };
        let handles = [
            a.start(
                Box::new(ToneSource::new(440.0, 0.5)),
                Box::new(WavSink::create(&wavs[0]).unwrap()),
                options.clone(),
                updates.clone(),
                0usize,
            ),
            b.start(
                Box::new(ToneSource::new(880.0, 0.5)),
                Box::new(WavSink::create(&wavs[1]).unwrap()),
                options,
                updates.clone(),
                1usize,
            ),
        ];
        drop(updates);
        let moved = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let change = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(change);
        let mut changed = false;
        let mut reports: [Option<CallReport>; 2] = [None, None];
        loop {
            tokio::select! {
                _ = &mut change, if !changed => {
                    changed = true;
                    assert!(handles[0].send(DriverCommand::RestartIceOn(vec![moved])));
                }
                u = rx.recv() => match u {
                    Some((i, MediaUpdate::Event(MediaEvent::IceRestarted(t)))) => {
                        if i == 0 {
                            let addrs: Vec<_> = t.candidates.iter().map(|c| c.ip).collect();
                            assert_eq!(addrs, vec![moved], "{t:?}");
                        }
                        // transport-info to the peer; the responder answers with its restart.
                        handles[1 - i].send(DriverCommand::RemoteIceRestart(t));
                        if i == 0 {
                            handles[1].send(DriverCommand::RestartIce);
                        }
                    }
                    Some((_, MediaUpdate::Event(_))) => {}
                    Some((i, MediaUpdate::Ended(r))) => {
                        reports[i] = Some((*r).unwrap());
                        if reports.iter().all(Option::is_some) {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        let [ra, rb] = reports.map(Option::unwrap);
        for r in [&ra, &rb] {
            assert!(r.failure.is_none(), "{:?}", r.failure);
            assert_eq!(r.stats.ice_restarts, 2, "{:?}", r.stats);
            let verified = r
                .events
                .iter()
                .filter(|e| matches!(e, MediaEvent::DtlsVerified { .. }))
                .count();
            assert_eq!(verified, 1, "the same DTLS session throughout");
        }
        let pair = rb.stats.selected_pair.clone().unwrap();
        assert_eq!(pair.remote_addr.ip(), moved, "{pair:?}");
        let pair = ra.stats.selected_pair.clone().unwrap();
        assert_eq!(pair.local_addr.ip(), moved, "{pair:?}");
        // 6 s of media; at most a second lost around the change.
        let heard_by_b = rb.stats.packets_received;
        assert!(heard_by_b >= 250, "responder heard {heard_by_b} of {}", ra.frames_from_source);
        let (f_b, _) = analyse(&wavs[1]);
        let (f_a, _) = analyse(&wavs[0]);
        assert!((f_b - 440.0).abs() <= 5.0 && (f_a - 880.0).abs() <= 5.0, "{f_a} {f_b}");
        let missed = rb.frames_from_source.saturating_sub(ra.stats.packets_received);
        assert!(missed <= 50, "the initiator missed {missed} packets");
        eprintln!(
            "address change after 2 s: responder heard {heard_by_b} of {} packets, initiator {} of {} ({missed} missed, {} ms of audio)",
            ra.frames_from_source,
            ra.stats.packets_received,
            rb.frames_from_source,
            missed * 20
        );
    })
    .await
    .expect("bounded");
}
