//! Calls a contact, sends a tone, records what comes back, prints every event and exits with
//! whether the call connected and ended normally. From the environment: `CALL_JID`,
//! `CALL_PASSWORD`, `CALL_DATA_DIR`, `CALL_TO` (bare JID), `CALL_RECORD` (WAV to write);
//! optional `CALL_SERVER` (host:port), `CALL_SECONDS` (default 10), `CALL_REQUIRE_VERIFIED=1`.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use shieldcall_client::agent::{AudioIn, AudioOut, CallAgent, CallOptions, Mode};
use shieldcall_client::connection::ConnectOptions;
use shieldcall_client::session::{Role, SessionOptions, sign_in};
use xmpp_parsers::jid::BareJid;

type Error = Box<dyn std::error::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let connect = ConnectOptions {
        jid: var("CALL_JID")?.parse::<BareJid>()?.into(),
        password: var("CALL_PASSWORD")?,
        server: std::env::var("CALL_SERVER").ok(),
        insecure_loopback: false,
        direct_tls: false,
    };
    let role = Role::Exclusive { command: "call example", calls: true };
    let session = sign_in(SessionOptions { connect, data_dir: var("CALL_DATA_DIR")?.into(), role });
    let session = session.await?;
    let seconds = std::env::var("CALL_SECONDS").map_or(Ok(10), |s| s.parse())?;
    let options = CallOptions {
        require_verified: std::env::var("CALL_REQUIRE_VERIFIED").is_ok_and(|v| v == "1"),
        input: AudioIn::Tone(440.0),
        output: AudioOut::Wav(var("CALL_RECORD")?.into()),
        duration: Some(Duration::from_secs(seconds)),
        ..CallOptions::default()
    };
    let to: BareJid = var("CALL_TO")?.parse()?;
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    // No commands: the call ends after CALL_SECONDS, or when the peer hangs up.
    let (_, commands_rx) = tokio::sync::mpsc::unbounded_channel();
    let agent = CallAgent::new(session.omemo, Mode::Call(to), options, events_tx);
    let printer = async {
        while let Some(ev) = events.recv().await {
            println!("{ev:?}");
        }
    };
    let (ok, ()) = tokio::join!(agent.run(session.incoming, commands_rx), printer);
    if ok? { Ok(()) } else { Err("the call did not succeed".into()) }
}
