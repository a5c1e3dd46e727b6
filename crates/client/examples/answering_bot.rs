//! A bot that answers only calls it can verify, plays a WAV file to the caller, records the
//! caller and prints every event. From the environment: `BOT_JID`, `BOT_PASSWORD`,
//! `BOT_DATA_DIR`, `BOT_PLAY` (48 kHz mono WAV), `BOT_RECORD`; optional `BOT_SERVER` (host:port),
//! `BOT_MEDIA_IP`, `BOT_INSECURE_LOOPBACK=1` (plaintext to 127.0.0.1). Ctrl-C stops it. Verify
//! its callers first: `shieldcall --data-dir $BOT_DATA_DIR --account $BOT_JID trust URI`.
#![allow(clippy::print_stdout, dead_code, missing_docs)]

use std::future::Future;

use shieldcall_client::agent::{AgentCommand, AgentEvent, Answer, AudioIn, AudioOut, CallAgent};
use shieldcall_client::agent::{CallOptions, Mode};
use shieldcall_client::connection::ConnectOptions;
use shieldcall_client::session::{Role, SessionOptions, sign_in};
use xmpp_parsers::jid::BareJid;

type Error = Box<dyn std::error::Error>;
const ROLE: Role = Role::Exclusive { command: "answering_bot", calls: true };

/// How the bot signs in, and its calls' options (what it plays and records).
pub struct Bot {
    pub session: SessionOptions,
    pub calls: CallOptions,
}

impl Bot {
    pub fn from_env() -> Result<Bot, Error> {
        let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
        let connect = ConnectOptions {
            jid: var("BOT_JID")?.parse::<BareJid>()?.into(),
            password: var("BOT_PASSWORD")?,
            server: std::env::var("BOT_SERVER").ok(),
            insecure_loopback: std::env::var("BOT_INSECURE_LOOPBACK").is_ok_and(|v| v == "1"),
            direct_tls: false,
        };
        let data_dir = var("BOT_DATA_DIR")?.into();
        let session = SessionOptions { connect, data_dir, role: ROLE };
        let media_ips =
            std::env::var("BOT_MEDIA_IP").iter().map(|ip| ip.parse()).collect::<Result<_, _>>()?;
        let calls = CallOptions {
            // Even an accepted call ends, with no media, unless both fingerprints went
            // OMEMO-encrypted with a verified device.
            require_verified: true,
            media_ips,
            input: AudioIn::Wav(var("BOT_PLAY")?.into()),
            output: AudioOut::Wav(var("BOT_RECORD")?.into()),
            ..CallOptions::default()
        };
        Ok(Bot { session, calls })
    }

    /// Runs until `stop` completes, then hangs up and signs off; `on_event` sees each event.
    pub async fn run(
        self,
        stop: impl Future<Output = ()>,
        mut on_event: impl FnMut(&AgentEvent),
    ) -> Result<(), Error> {
        let session = sign_in(self.session).await?;
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let (commands, commands_rx) = tokio::sync::mpsc::unbounded_channel();
        let agent = CallAgent::new(session.omemo, Mode::Listen(Answer::Ask), self.calls, events_tx)
            .run(session.incoming, commands_rx);
        let bot = async {
            tokio::pin!(stop);
            let mut stopping = false;
            loop {
                tokio::select! {
                    ev = events.recv() => {
                        let Some(ev) = ev else { return };
                        on_event(&ev);
                        // Answer only callers with a verified device; decline the others.
                        if let AgentEvent::Asking { sid, caller_verified, .. } = ev {
                            let _ = commands.send(AgentCommand::Answer { sid, accept: caller_verified });
                        }
                    }
                    () = &mut stop, if !stopping => {
                        stopping = true;
                        let _ = commands.send(AgentCommand::HangUpAll);
                    }
                }
            }
        };
        let (outcome, ()) = tokio::join!(agent, bot);
        outcome?;
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let stop = async { drop(tokio::signal::ctrl_c().await) };
    Bot::from_env()?.run(stop, |ev| println!("{ev:?}")).await
}
