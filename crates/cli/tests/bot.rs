//! The client library's example `answering_bot` (crates/client/examples/answering_bot.rs, the
//! very file, compiled in here) against a real Prosody: `shieldcall call` from a contact the bot
//! verified shows the verified shield and records the bot's WAV; a call from an account the bot
//! never verified is declined.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

// Formatted as the example it is (crates/client/examples/rustfmt.toml), not from here.
#[rustfmt::skip]
#[path = "../../client/examples/answering_bot.rs"]
mod answering_bot;

use std::path::Path;
use std::time::Duration;

use common::{Prosody, User};
use shieldcall_client::agent::{AgentEvent, AudioIn, AudioOut, CallOptions};
use shieldcall_client::connection::ConnectOptions;
use shieldcall_client::session::{Role, SessionOptions};
use shieldcall_localserver::wav::Recording;

fn write_tone(path: &Path, hz: f64, seconds: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..48_000 * seconds {
        let t = f64::from(i) / 48_000.0;
        w.write_sample((8000.0 * (std::f64::consts::TAU * hz * t).sin()) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

fn heard(path: &Path) -> f64 {
    Recording::read(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .dominant_frequency()
}

#[test]
fn the_answering_bot_takes_verified_calls_and_declines_the_others() {
    let p = Prosody::start(&["bot", "alice", "mallory"]);
    let tmp = tempfile::tempdir().unwrap();
    let user = |name: &str| User::new(&p, name, tmp.path().join(name));
    let (bot, alice, mallory) = (user("bot"), user("alice"), user("mallory"));
    bot.verify(&alice);
    alice.verify(&bot);
    let (play, record) = (
        tmp.path().join("bot-says.wav"),
        tmp.path().join("bot-heard.wav"),
    );
    write_tone(&play, 660.0, 2);
    // What Bot::from_env reads from BOT_* variables, built directly.
    let connect = ConnectOptions {
        jid: bot
            .jid
            .parse::<xmpp_parsers::jid::BareJid>()
            .unwrap()
            .into(),
        password: bot.password.clone(),
        server: Some(bot.server.clone()),
        insecure_loopback: true,
        direct_tls: false,
    };
    let role = Role::Exclusive {
        command: "answering_bot",
        calls: true,
    };
    let session = SessionOptions {
        connect,
        data_dir: bot.data.clone(),
        role,
    };
    let calls = CallOptions {
        require_verified: true,
        media_ips: vec!["127.0.0.1".parse().unwrap()],
        input: AudioIn::Wav(play.clone()),
        output: AudioOut::Wav(record.clone()),
        ..CallOptions::default()
    };
    let answering = answering_bot::Bot { session, calls };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (events_tx, events) = std::sync::mpsc::channel::<String>();
    let bot_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(answering.run(
            async {
                let _ = stop_rx.await;
            },
            move |ev: &AgentEvent| {
                let _ = events_tx.send(format!("{ev:?}"));
            },
        ))
        .map_err(|e| e.to_string())
    });
    let mut seen = Vec::new();
    let mut wait_for = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ev = events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("the bot never reported {what}: {seen:?}"));
            let hit = ev.starts_with(what);
            seen.push(ev);
            if hit {
                return;
            }
        }
    };
    wait_for("Online");

    // A verified contact: answered, verified, each hears the other.
    let alice_wav = tmp.path().join("alice.wav");
    let (call, ok) = call_bot(&alice, &bot, &alice_wav);
    assert!(ok, "{:?}", call.seen);
    let shields: Vec<_> = call
        .events("shield")
        .iter()
        .map(|v| v["state"].clone())
        .collect();
    assert_eq!(shields, ["verified"], "{:?}", call.seen);
    wait_for("Stats");
    let (a, b) = (heard(&alice_wav), heard(&record));
    assert!(
        (a - 660.0).abs() <= 10.0,
        "alice heard {a} Hz, not the bot's WAV (660 Hz)"
    );
    assert!(
        (b - 440.0).abs() <= 10.0,
        "the bot recorded {b} Hz, not alice's 440 Hz"
    );

    // An account the bot never verified: declined before any media.
    let (call, ok) = call_bot(&mallory, &bot, &tmp.path().join("mallory.wav"));
    assert!(!ok, "{:?}", call.seen);
    let ended = call.events("ended");
    assert_eq!(ended.len(), 1, "{:?}", call.seen);
    assert_eq!(ended[0]["reason"], "decline", "{:?}", call.seen);
    assert!(call.events("shield").is_empty(), "{:?}", call.seen);

    stop_tx.send(()).unwrap();
    bot_thread.join().unwrap().unwrap();
}

/// `from` calls the bot for 2 s with a 440 Hz tone, recording to `record`; returns the caller's
/// events and whether its call succeeded.
fn call_bot(from: &User, bot: &User, record: &Path) -> (common::Listener, bool) {
    let record = record.to_str().unwrap();
    let args = [
        "call",
        &bot.jid,
        "--media-ip",
        "127.0.0.1",
        "--tone",
        "440",
        "--duration",
        "2",
    ];
    let mut call = from.start(&[&args[..], &["--record", record]].concat(), false);
    let status = call
        .wait_exit(Duration::from_secs(40))
        .expect("the call ends");
    (call, status.success())
}
