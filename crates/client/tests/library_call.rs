//! A verified call between two `shieldcall-client` instances in one test process, through the
//! library API only (sign-in, the OMEMO account, the call agent's events and commands), over a
//! real Prosody with real UDP media on 127.0.0.1; each side hears the other's tone (alice into a
//! WAV file, bob through a sink of the embedder's own).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shieldcall_client::agent::{AgentCommand, AgentEvent, Answer, AudioIn, AudioOut, CallAgent};
use shieldcall_client::agent::{CallOptions, Mode};
use shieldcall_client::connection::ConnectOptions;
use shieldcall_client::omemo_service::{Received, open_account};
use shieldcall_client::session::{Role, Session, SessionOptions, sign_in};
use shieldcall_jingle::Shield;
use shieldcall_localserver::wav::Recording;
use shieldcall_localserver::{Prosody, ProsodyConfig, process};
use shieldcall_media::audio::Frame;
use shieldcall_media::audio::sink::AudioSink;
use shieldcall_omemo::TrustLevel;
use tokio::sync::{mpsc, oneshot};
use xmpp_parsers::jid::BareJid;

/// Bound on the whole call, from bob's sign-in to both agents' end.
const BOUND: Duration = Duration::from_secs(60);

fn options(tone: f64, output: AudioOut, duration: Option<Duration>) -> CallOptions {
    CallOptions {
        require_verified: true,
        media_ips: vec!["127.0.0.1".parse().unwrap()],
        input: AudioIn::Tone(tone),
        output,
        duration,
        ..CallOptions::default()
    }
}

/// An embedder's sink: every frame it hears goes over a channel (AudioOut::Custom).
struct ChannelSink(std::sync::mpsc::Sender<Vec<i16>>);

impl AudioSink for ChannelSink {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), shieldcall_media::audio::AudioError> {
        let _ = self.0.send(frame.to_vec());
        Ok(())
    }
}

async fn session(server: &Prosody, jid: &BareJid, data_dir: &Path) -> Session {
    let connect = ConnectOptions {
        jid: jid.clone().into(),
        password: format!("pw-{}", jid.node().unwrap()),
        server: Some(server.server()),
        insecure_loopback: true,
        direct_tls: false,
    };
    let role = Role::Exclusive {
        command: "test",
        calls: true,
    };
    let data_dir = data_dir.to_owned();
    sign_in(SessionOptions {
        connect,
        data_dir,
        role,
    })
    .await
    .unwrap()
}

/// The devices of the `Shield` events, with their state.
fn shields(events: &[AgentEvent]) -> Vec<(Shield, Option<u32>)> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Shield { shield, device, .. } => Some((*shield, *device)),
            _ => None,
        })
        .collect()
}

/// The dominant frequency of a recording of at least a second.
fn tone_of(r: &Recording) -> f64 {
    assert!(r.seconds() > 1.0, "only {} s recorded", r.seconds());
    r.dominant_frequency()
}

/// A Prosody with alice and bob (password `pw-NAME`) and a data directory for each.
struct Accounts {
    dir: tempfile::TempDir,
    server: Prosody,
    alice: BareJid,
    bob: BareJid,
    alice_dir: std::path::PathBuf,
    bob_dir: std::path::PathBuf,
}

fn accounts() -> Accounts {
    let dir = tempfile::tempdir().unwrap();
    let config = ProsodyConfig::default();
    let server = Prosody::launch(&dir.path().join("prosody"), &config, &process::never).unwrap();
    for name in ["alice", "bob"] {
        server.register(name, &format!("pw-{name}")).unwrap();
    }
    Accounts {
        alice: "alice@localhost".parse().unwrap(),
        bob: "bob@localhost".parse().unwrap(),
        alice_dir: dir.path().join("alice"),
        bob_dir: dir.path().join("bob"),
        server,
        dir,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn two_library_instances_make_a_verified_call() {
    let Accounts {
        dir,
        server,
        alice,
        bob,
        alice_dir,
        bob_dir,
    } = accounts();
    // Each verifies the other's device, as a QR scan would (the account API, offline).
    let (alice_device, bob_device) = {
        let mut a = open_account(&alice_dir, &alice).unwrap();
        let mut b = open_account(&bob_dir, &bob).unwrap();
        a.apply_verification_uri_as(&b.verification_uri(), TrustLevel::Verified)
            .unwrap();
        b.apply_verification_uri_as(&a.verification_uri(), TrustLevel::Verified)
            .unwrap();
        (a.device_id(), b.device_id())
    };
    let alice_wav = dir.path().join("alice.wav");
    // Bob hears through a sink of the embedder's own, alice into a WAV file.
    let (frames_tx, bob_frames) = std::sync::mpsc::channel();
    let bob_sink = AudioOut::Custom(Arc::new(move || {
        Ok(Box::new(ChannelSink(frames_tx.clone())) as Box<dyn AudioSink>)
    }));

    let run = async {
        let bob_session = session(&server, &bob, &bob_dir).await;
        let (bob_tx, mut bob_events) = mpsc::unbounded_channel();
        let (bob_commands, bob_commands_rx) = mpsc::unbounded_channel();
        let bob_options = options(880.0, bob_sink, None);
        let bob_agent = CallAgent::new(
            bob_session.omemo,
            Mode::Listen(Answer::Auto),
            bob_options,
            bob_tx,
        )
        .run(bob_session.incoming, bob_commands_rx);
        let (online_tx, online) = oneshot::channel();
        let bob_seen = async {
            let (mut seen, mut online_tx) = (Vec::new(), Some(online_tx));
            while let Some(ev) = bob_events.recv().await {
                if matches!(ev, AgentEvent::Online { .. })
                    && let Some(t) = online_tx.take()
                {
                    let _ = t.send(());
                }
                seen.push(ev);
            }
            seen
        };
        let alice_side = async {
            online.await.unwrap();
            let s = session(&server, &alice, &alice_dir).await;
            let (tx, mut events) = mpsc::unbounded_channel();
            let (_commands, commands_rx) = mpsc::unbounded_channel::<AgentCommand>();
            let alice_options = options(
                440.0,
                AudioOut::Wav(alice_wav.clone()),
                Some(Duration::from_secs(2)),
            );
            let agent = CallAgent::new(s.omemo, Mode::Call(bob.clone()), alice_options, tx)
                .run(s.incoming, commands_rx);
            let seen = async {
                let mut seen = Vec::new();
                while let Some(ev) = events.recv().await {
                    seen.push(ev);
                }
                seen
            };
            let (outcome, seen) = tokio::join!(agent, seen);
            let _ = bob_commands.send(AgentCommand::HangUpAll);
            (outcome, seen)
        };
        tokio::join!(bob_agent, bob_seen, alice_side)
    };
    let (bob_outcome, bob_seen, (alice_outcome, alice_seen)) = tokio::time::timeout(BOUND, run)
        .await
        .expect("the call ends within its bound");

    assert!(
        alice_outcome.unwrap(),
        "alice's call did not succeed: {alice_seen:?}"
    );
    assert!(bob_outcome.unwrap(), "{bob_seen:?}");
    assert_eq!(
        shields(&alice_seen),
        [(Shield::Verified, Some(bob_device))],
        "{alice_seen:?}"
    );
    assert_eq!(
        shields(&bob_seen),
        [(Shield::Verified, Some(alice_device))],
        "{bob_seen:?}"
    );
    for (who, seen) in [("alice", &alice_seen), ("bob", &bob_seen)] {
        assert!(
            seen.iter().any(|e| matches!(e, AgentEvent::Stats(_))),
            "{who}: no stats: {seen:?}"
        );
    }
    let bob_heard: Vec<i16> = bob_frames.try_iter().flatten().collect();
    let alice_heard = Recording::read(&alice_wav).unwrap();
    let (a, b) = (
        tone_of(&alice_heard),
        tone_of(&Recording::from_samples(bob_heard)),
    );
    assert!(
        (a - 880.0).abs() <= 10.0,
        "alice heard {a} Hz, not bob's 880"
    );
    assert!(
        (b - 440.0).abs() <= 10.0,
        "bob heard {b} Hz, not alice's 440"
    );
}

/// The commands an embedder gives a listening agent, through the library API only: `Trust`
/// (a scanned URI) makes bob's device verified, `Send` delivers an OMEMO message bob reads,
/// `Call` places a call that becomes verified with bob's device, `HangUp` ends it.
#[tokio::test(flavor = "current_thread")]
async fn a_listening_agent_trusts_sends_calls_and_hangs_up_on_command() {
    let Accounts {
        dir,
        server,
        alice,
        bob,
        alice_dir,
        bob_dir,
    } = accounts();
    // Bob verified alice before (offline); alice verifies bob by command below.
    let (bob_uri, bob_device) = {
        let a = open_account(&alice_dir, &alice).unwrap();
        let mut b = open_account(&bob_dir, &bob).unwrap();
        b.apply_verification_uri_as(&a.verification_uri(), TrustLevel::Verified)
            .unwrap();
        (b.verification_uri().to_string(), b.device_id())
    };
    let wav = |n: &str| AudioOut::Wav(dir.path().join(n));

    let run = async {
        let bob_session = session(&server, &bob, &bob_dir).await;
        let (bob_tx, mut bob_events) = mpsc::unbounded_channel();
        let (bob_commands, bob_commands_rx) = mpsc::unbounded_channel();
        let bob_agent = CallAgent::new(
            bob_session.omemo,
            Mode::Listen(Answer::Auto),
            options(880.0, wav("bob.wav"), None),
            bob_tx,
        )
        .run(bob_session.incoming, bob_commands_rx);
        let (online_tx, online) = oneshot::channel();
        let (message_tx, message) = oneshot::channel();
        let bob_seen = async {
            let (mut seen, mut online_tx, mut message_tx) =
                (Vec::new(), Some(online_tx), Some(message_tx));
            while let Some(ev) = bob_events.recv().await {
                match &ev {
                    AgentEvent::Online { .. } => {
                        if let Some(t) = online_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    AgentEvent::Received(Received::Message { body, .. }) => {
                        if let Some(t) = message_tx.take() {
                            let _ = t.send(body.clone());
                        }
                    }
                    _ => {}
                }
                seen.push(ev);
            }
            seen
        };
        let alice_side = async {
            online.await.unwrap();
            let s = session(&server, &alice, &alice_dir).await;
            let (tx, mut events) = mpsc::unbounded_channel();
            let (commands, commands_rx) = mpsc::unbounded_channel::<AgentCommand>();
            let agent = CallAgent::new(
                s.omemo,
                Mode::Listen(Answer::Reject),
                options(440.0, wav("alice.wav"), None),
                tx,
            )
            .run(s.incoming, commands_rx);
            let script = async {
                let mut seen = Vec::new();
                let ev = &mut events;
                wait_for(ev, &mut seen, |e| matches!(e, AgentEvent::Online { .. })).await;
                let trust = AgentCommand::Trust {
                    uri: bob_uri.clone(),
                    level: TrustLevel::Verified,
                };
                commands.send(trust).unwrap();
                let trusted =
                    wait_for(ev, &mut seen, |e| matches!(e, AgentEvent::Trusted { .. })).await;
                let send = AgentCommand::Send {
                    to: bob.clone(),
                    body: "hello bob".into(),
                };
                commands.send(send).unwrap();
                let sent = wait_for(ev, &mut seen, |e| matches!(e, AgentEvent::Sent { .. })).await;
                commands
                    .send(AgentCommand::Call { peer: bob.clone() })
                    .unwrap();
                let shield =
                    wait_for(ev, &mut seen, |e| matches!(e, AgentEvent::Shield { .. })).await;
                let AgentEvent::Shield { sid, .. } = &shield else {
                    unreachable!()
                };
                wait_for(ev, &mut seen, |e| {
                    matches!(e, AgentEvent::FirstAudio { .. })
                })
                .await;
                let hang_up = AgentCommand::HangUp { sid: sid.clone() };
                commands.send(hang_up).unwrap();
                let ended =
                    wait_for(ev, &mut seen, |e| matches!(e, AgentEvent::Ended { .. })).await;
                commands.send(AgentCommand::HangUpAll).unwrap();
                while let Some(e) = ev.recv().await {
                    seen.push(format!("{e:?}"));
                }
                (trusted, sent, shield, ended, seen)
            };
            let (outcome, script) = tokio::join!(agent, script);
            let _ = bob_commands.send(AgentCommand::HangUpAll);
            (outcome, script)
        };
        tokio::join!(bob_agent, bob_seen, alice_side, async {
            message.await.ok()
        })
    };
    let (bob_outcome, bob_seen, (alice_outcome, script), message) =
        tokio::time::timeout(BOUND, run)
            .await
            .expect("all within the bound");
    let (trusted, sent, shield, ended, alice_seen) = script;
    assert!(
        alice_outcome.is_ok() && bob_outcome.is_ok(),
        "{alice_seen:?}\n{bob_seen:?}"
    );
    assert!(
        matches!(trusted, AgentEvent::Trusted { device, level: TrustLevel::Verified, .. } if device == bob_device),
        "{trusted:?}"
    );
    assert!(
        matches!(&sent, AgentEvent::Sent { devices, .. } if devices.contains(&bob_device)),
        "{sent:?}"
    );
    assert_eq!(message.as_deref(), Some("hello bob"), "{bob_seen:?}");
    assert!(
        matches!(shield, AgentEvent::Shield { shield: Shield::Verified, device: Some(d), .. } if d == bob_device),
        "{alice_seen:?}"
    );
    assert!(
        matches!(
            &ended,
            AgentEvent::Ended {
                end: shieldcall_jingle::CallEnd::LocalHangup,
                ..
            }
        ),
        "{ended:?}"
    );
}

/// The next event matching `pred` (every event on the way is kept in `seen`, as text).
async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<AgentEvent>,
    seen: &mut Vec<String>,
    pred: impl Fn(&AgentEvent) -> bool,
) -> AgentEvent {
    loop {
        let ev = events
            .recv()
            .await
            .unwrap_or_else(|| panic!("the agent ended early: {seen:?}"));
        seen.push(format!("{ev:?}"));
        if pred(&ev) {
            return ev;
        }
    }
}
