//! The command line: `shieldcall [global options] <command>`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;
use shieldcall_client::extdisco;
use shieldcall_media::{IceServer, IceServerKind, IceTransport, Secret};
use shieldcall_omemo::TrustLevel;
use shieldcall_omemo::fingerprint::VerificationUri;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::stanza::Stanza;

use crate::agent::{self, Answer, AudioIn, AudioOut, CallAgent, CallOptions, Mode};
use crate::connection::{ConnectOptions, Incoming};
use crate::error::ClientError;
use crate::lock::OnlineLock;
use crate::omemo_service::{self, OmemoService, contact_jid, fingerprint, open_account};
use crate::output::Output;
use crate::policy::{Policies, Setting};
use crate::presence;
use crate::present::{self, Presenter};
use crate::session::{Role, SessionOptions, sign_in};

const AFTER_HELP: &str = "\
Getting started with a real account:
  export SHIELDCALL_PASSWORD=…                      (or --password-file FILE)
  shieldcall --account alice@example.org fingerprint  (your device's fingerprint, URI and QR code)
  Let your contact scan that QR code in Conversations or Dino, and scan theirs: save their QR
  code as a PNG and run `trust --qr FILE.png`, or paste the xmpp: URI they show:
  shieldcall --account alice@example.org trust 'xmpp:bob@example.org?omemo-sid-123=<64 hex>'
  shieldcall --account alice@example.org devices bob@example.org
  shieldcall --account alice@example.org send bob@example.org 'hello'

Calls:
  shieldcall --account alice@example.org call bob@example.org
  shieldcall --account alice@example.org call bob@example.org --require-verified
  shieldcall --account bob@example.org listen                 (asks before answering)
  shieldcall --account bob@example.org listen --auto-answer --tone 440 --record in.wav
  shieldcall audio-devices                    (microphones and speakers; --mic NAME, --speaker NAME)
  Ctrl-C (or SIGTERM) hangs up cleanly; recordings are complete 16-bit PCM WAV files.
  Without --tone/--play/--record the default microphone and speaker are used (on a desktop the
  sound server's); the `stats` event reports their overruns, underruns and errors.

The shield (shown in words and a symbol for the whole call):
  \u{1F6E1} verified                 both DTLS fingerprints travelled OMEMO-encrypted between you and
                             exactly one device of the contact, you verified that device's key
                             (QR code or URI), and DTLS proved that certificate: not even the
                             XMPP servers' operators can listen in.
  \u{1F512} encrypted, not verified  the same, but you have not verified the key (trusted blindly):
                             safe against server operators only if that key is really theirs.
  \u{26A0} not verified             plain fingerprints (the contact's client does not use OMEMO for
                             calls, or OMEMO failed): the call is encrypted, but a server operator
                             could intercept it. --require-verified refuses such calls.
  The shield says nothing about the contact's device itself (malware, someone else holding it),
  and shieldcall does audio only so far; a peer's video offer is declined.

Trust: keys of a contact are trusted blindly until you verify one of them (BTBV, as
Conversations does); after that, new keys stay undecided and get no messages until verified.
Only a trusted key gets the \u{1F512}; an undecided (new) or distrusted key gives \u{26A0}, and
shieldcall never encrypts its call keys to a distrusted device.

Downgrades: once you verified a contact (or had a verified call with them), a call with them
that is less than verified (a device you have not verified, plain fingerprints, an answer
without OMEMO device, OMEMO failing) is announced before any audio plays, in red on stderr and
as a `downgrade` event. To refuse such calls for good:
  shieldcall --account alice@example.org policy bob@example.org --require-verified on
  shieldcall --account alice@example.org policy --default --require-verified on   (all contacts)

STUN and TURN (calls across NATs): no third-party STUN server is used by default, as it would
tell a stranger who calls whom. The STUN and TURN servers come from your own XMPP server
(XEP-0215, e.g. Prosody's mod_turn_external or ejabberd's mod_stun_disco, with credentials it
makes for you), which knows who you call anyway; the `ice-servers` event lists them. Add your
own, used first, with:
  shieldcall --account alice@example.org call bob@example.org --stun stun.example.org:3478
  shieldcall --account alice@example.org call bob@example.org \\
      --turn 'turns:turn.example.org:5349' --turn-credentials ~/.config/turn.txt
  (the credentials file: the username on its first line, the password on its second)
  --no-ice-discovery asks your server for nothing: only your own servers, or none.

One account, several terminals: only one online process (listen, call, chat) per account and
data dir; a second one is refused with the pid of the first. fingerprint, trust, distrust,
policy and devices --offline work beside it, and a running call takes a trust change made
there into account within a second (verifying the contact turns its shield to verified).

With --json, one object per line, each flushed as it happens, e.g.:
  {\"event\":\"fingerprint\",\"device_id\":N,\"fingerprint\":\"…\",\"uri\":\"xmpp:…\"}
  {\"event\":\"online\",\"jid\":\"alice@example.org/res\"}
  {\"event\":\"message\",\"from\":\"bob@example.org\",\"device\":N,\"body\":\"…\",\"trust\":\"verified|trusted|undecided|untrusted\"}
  {\"event\":\"trusted\",\"jid\":\"…\",\"device\":N,\"fingerprint\":\"…\"}
  {\"event\":\"ice-servers\",\"servers\":[\"stun:HOST:PORT?transport=udp\",\"turn:HOST:PORT?transport=udp\",…]}
  {\"event\":\"call\",\"state\":\"proposing|ringing|proceeding|connecting|connected|ended\",\"sid\":\"…\",\"peer\":\"JID\"}
  {\"event\":\"shield\",\"sid\":\"…\",\"state\":\"verified|encrypted|none\",\"device\":N}
  {\"event\":\"downgrade\",\"sid\":\"…\",\"kind\":\"unverified-device|plain-fingerprints|no-device|omemo-failed\",\"peer\":\"JID\",\"device\":N,\"text\":\"…\"}
  {\"event\":\"audio\",\"sid\":\"…\",\"state\":\"first\",\"ms\":N}
  {\"event\":\"ended\",\"sid\":\"…\",\"reason\":\"success|security-error|failed-application|decline|timeout|retracted|answered-elsewhere|…\",\"text\":\"…\"}
  {\"event\":\"stats\",\"sid\":\"…\",\"packets_sent\":N,\"packets_received\":N,\"frames_played\":N,\"loss\":F,\"jitter_ms\":F,\"rtt_ms\":F,\"ms_to_shield\":N,\"ms_to_first_audio\":N,…}
  {\"event\":\"error\",\"message\":\"…\"}
Exit status: 0 success, 1 failure (also: a call that did not connect or end normally),
2 usage error.";

/// XMPP audio calls and messages with OMEMO, compatible with Conversations, Dino and Monal: a
/// call shows a shield when its DTLS-SRTP keys were exchanged OMEMO-encrypted with a verified device.
///
/// The password is read from the SHIELDCALL_PASSWORD environment variable or from
/// --password-file; it is never taken from the command line and never printed.
/// Keys, sessions and trust decisions live in one SQLite file per account under the data dir.
#[derive(Debug, Parser)]
#[command(name = "shieldcall", version, about, long_about, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// Your account, e.g. alice@example.org (or set SHIELDCALL_ACCOUNT).
    #[arg(long, global = true, env = "SHIELDCALL_ACCOUNT")]
    pub account: Option<String>,
    /// Connect to HOST:PORT instead of looking up the domain's SRV records.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Allow an unencrypted connection, only to a loopback --server (tests, local servers).
    #[arg(long, global = true)]
    pub insecure_loopback: bool,
    /// Use direct TLS (XEP-0368, usually port 5223) instead of STARTTLS.
    #[arg(long, global = true)]
    pub direct_tls: bool,
    /// Where account databases live [default: $XDG_DATA_HOME/shieldcall or ~/.local/share/shieldcall].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// File whose first line is the password (instead of SHIELDCALL_PASSWORD).
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Print every result and event as one JSON object per line.
    #[arg(long, global = true)]
    pub json: bool,
    /// Diagnostic log on standard error: a level (error, warn, info, debug, trace) or
    /// per-module levels such as `shieldcall_media=debug,is=debug` (`is` is str0m's ICE agent).
    /// For finding out why a call does not connect. It names addresses, servers and the
    /// call's ICE credentials (which the XMPP servers see anyway), never OMEMO or DTLS keys,
    /// TURN passwords or message text. Off by default.
    #[arg(long, global = true, value_name = "FILTER", env = "SHIELDCALL_LOG")]
    pub log: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show this device's id, its fingerprint, the xmpp: verification URI and its QR code
    /// (scan it with Conversations or Dino to verify this device). Works offline.
    Fingerprint {
        /// Also write the QR code as a PNG image to this file.
        #[arg(long, value_name = "FILE.png")]
        png: Option<PathBuf>,
    },
    /// Mark the fingerprints of a verification URI (xmpp:JID?omemo-sid-N=HEX…, as Conversations
    /// and Dino show in their QR codes) as verified. Works offline.
    Trust(KeysToTrust),
    /// Mark the fingerprints of a verification URI (or QR code) as distrusted: that key never
    /// gets a shield or a lock, nor shieldcall's encrypted call keys or messages. Works offline.
    Distrust(KeysToTrust),
    /// List the OMEMO devices of a contact (or of your own account) with fingerprints and trust.
    Devices {
        /// The contact's JID, or your own.
        jid: String,
        /// Do not connect: show what the account database knows (works beside a running
        /// listen or call).
        #[arg(long)]
        offline: bool,
    },
    /// Show or set whether calls must be verified: `--require-verified on` makes every call
    /// with the contact (or, with --default, with every contact without a setting of its own)
    /// behave as with `call/listen --require-verified`. Without --require-verified it shows
    /// the settings and the last verified call. Works offline; a running listen or call takes
    /// a change into account within a second.
    Policy {
        /// The contact's JID.
        #[arg(required_unless_present_any = ["default", "list"])]
        jid: Option<String>,
        /// The default for all contacts without a setting of their own.
        #[arg(long, conflicts_with_all = ["jid", "list"])]
        default: bool,
        /// List every contact with a setting and the default.
        #[arg(long, conflicts_with = "require_verified")]
        list: bool,
        /// on: refuse every call that cannot be verified; off: allow unverified calls.
        #[arg(long, value_name = "on|off")]
        require_verified: Option<OnOff>,
    },
    /// Send an OMEMO-encrypted message to all trusted devices of a contact and your other devices.
    Send {
        /// The contact's JID.
        jid: String,
        /// The message.
        text: String,
    },
    /// Call a contact (audio). Shows the call's state and its shield; ends after --duration, when
    /// the peer hangs up, or on Ctrl-C/SIGTERM (the call is hung up cleanly either way).
    Call {
        /// The contact's JID (bare: every device of the contact rings).
        jid: String,
        /// Hang up this many seconds after the call connected [default: stay until hung up].
        #[arg(long, value_name = "S")]
        duration: Option<f64>,
        /// Give up after this many seconds without an answer.
        #[arg(long, value_name = "S", default_value_t = shieldcall_jingle::RING_TIMEOUT.as_secs_f64())]
        ring_timeout: f64,
        /// Audio and security options.
        #[command(flatten)]
        audio: CallArgs,
    },
    /// Stay online: print incoming messages and take calls until Ctrl-C/SIGTERM. Without
    /// --auto-answer or --reject, each call is asked about: answer `y` (or `n`) and Enter on
    /// standard input (with --json too, after the `ringing` event).
    Listen {
        /// Answer every call (one at a time; calls while busy are declined).
        #[arg(long, conflicts_with = "reject")]
        auto_answer: bool,
        /// Decline every call.
        #[arg(long)]
        reject: bool,
        /// Audio and security options.
        #[command(flatten)]
        audio: CallArgs,
    },
    /// Like listen, and every line read from standard input is sent (OMEMO-encrypted) to JID.
    /// Ends at the end of input or on Ctrl-C.
    Chat {
        /// The contact's JID.
        jid: String,
    },
    /// List the microphones and speakers calls can use (names for --mic and --speaker), the
    /// defaults marked. No account needed.
    AudioDevices,
    /// Run the demo: a throw-away local Prosody, two accounts that verify each other's QR code
    /// URI and exchange OMEMO messages, then a verified call with a tone each way (no --account).
    Demo(crate::demo::DemoArgs),
}

/// The keys `trust` and `distrust` take: a verification URI, or a QR code carrying one.
#[derive(Debug, clap::Args)]
pub struct KeysToTrust {
    /// The URI.
    #[arg(required_unless_present = "qr")]
    pub uri: Option<String>,
    /// A PNG image with the QR code instead of the URI.
    #[arg(long, value_name = "FILE.png", conflicts_with = "uri")]
    pub qr: Option<PathBuf>,
}

impl KeysToTrust {
    /// The URI, read from the QR code when given as one.
    fn uri(&self) -> Result<String, ClientError> {
        match (&self.uri, &self.qr) {
            (Some(u), _) => Ok(u.clone()),
            (None, Some(png)) => decode_qr(png),
            (None, None) => Err(ClientError::Usage("give a URI or --qr FILE.png".into())),
        }
    }
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Yes.
    On,
    /// No.
    Off,
}

/// Options shared by `call` and `listen`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// Send a sine tone of HZ instead of the microphone.
    #[arg(long, value_name = "HZ", conflicts_with = "play")]
    pub tone: Option<f64>,
    /// Send this WAV file (16-bit PCM, mono, 48 kHz) instead of the microphone.
    #[arg(long, value_name = "WAV")]
    pub play: Option<PathBuf>,
    /// The microphone to use, by name as `audio-devices` lists it [default: the system's
    /// default, on a desktop the sound server's current one].
    #[arg(long, value_name = "NAME", conflicts_with_all = ["tone", "play"])]
    pub mic: Option<String>,
    /// The speaker to use, by name as `audio-devices` lists it [default: the system's default].
    #[arg(long, value_name = "NAME", conflicts_with = "record")]
    pub speaker: Option<String>,
    /// Record what you hear to this WAV file (16-bit PCM, mono, 48 kHz) instead of playing it;
    /// later calls of one `listen` go to NAME-2.wav, NAME-3.wav…
    #[arg(long, value_name = "WAV")]
    pub record: Option<PathBuf>,
    /// Refuse or end any call that cannot be verified (shield = verified): no fallback to
    /// unverified or plain fingerprints, no media before verification.
    #[arg(long)]
    pub require_verified: bool,
    /// Do not use OMEMO for the call's DTLS fingerprints (plain XEP-0320; never a shield).
    #[arg(long, conflicts_with = "require_verified")]
    pub no_omemo: bool,
    /// Local IP address for media, repeatable [default: every up, non-loopback interface].
    #[arg(long, value_name = "IP")]
    pub media_ip: Vec<IpAddr>,
    /// Your own STUN server, HOST:PORT (or stun:HOST:PORT, the port optional), repeatable;
    /// used before those your XMPP server offers. No third-party STUN server is used by
    /// default: it would tell a stranger who calls whom.
    #[arg(long = "stun", value_name = "HOST:PORT")]
    pub stun: Vec<String>,
    /// Your own TURN server, turn:HOST:PORT?transport=udp (or tcp) or turns:HOST:PORT (TLS),
    /// the port and the transport optional, repeatable; needs --turn-credentials.
    #[arg(long = "turn", value_name = "URI")]
    pub turn: Vec<String>,
    /// The --turn servers' credentials: a file with the username on its first line and the
    /// password on its second (never on the command line).
    #[arg(long, value_name = "FILE")]
    pub turn_credentials: Option<PathBuf>,
    /// Do not ask your XMPP server for its STUN and TURN services (XEP-0215): calls use only
    /// --stun/--turn servers, or host addresses alone.
    #[arg(long)]
    pub no_ice_discovery: bool,
    /// Use relayed candidates only: the peer (and the XMPP servers) learn your TURN server's
    /// address, never yours. Needs a TURN server; without one no call connects.
    #[arg(long)]
    pub relay_only: bool,
    /// For turns: servers, trust the CA certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "PEM")]
    pub turn_ca_file: Option<PathBuf>,
}

/// How [`CallArgs::options`] treats missing audio devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceCheck {
    Require,
    Warn,
    Skip,
}

impl CallArgs {
    /// The options. Audio devices (when no --tone/--play/--record replaces them) are checked:
    /// `Require` makes a missing one an error now (`call`), `Warn` declines calls later with the
    /// reason (`listen` still shows messages), `Skip` does not open them (`listen --reject`).
    fn options(
        &self,
        duration: Option<f64>,
        ring_timeout: f64,
        devices: DeviceCheck,
    ) -> Result<CallOptions, ClientError> {
        let seconds = |what: &str, s: f64| {
            if s.is_finite() && s > 0.0 && s < 1e7 {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(ClientError::Usage(format!(
                    "{what} must be a positive number of seconds"
                )))
            }
        };
        let input = match (&self.tone, &self.play) {
            (Some(hz), _) if !(20.0..=20_000.0).contains(hz) => {
                return Err(ClientError::Usage(
                    "--tone must be between 20 and 20000 Hz".into(),
                ));
            }
            (Some(hz), _) => AudioIn::Tone(*hz),
            (None, Some(p)) => AudioIn::Wav(p.clone()),
            (None, None) => AudioIn::Device(self.mic.clone()),
        };
        let output = match &self.record {
            Some(p) => AudioOut::Wav(p.clone()),
            None => AudioOut::Device(self.speaker.clone()),
        };
        // Find out now, not after the peer answered, when there is no device.
        let mut audio_unavailable = None;
        if devices != DeviceCheck::Skip
            && let AudioIn::Device(name) = &input
            && let Err(e) = agent::live_source(name.as_deref())
        {
            audio_unavailable = Some(e);
        }
        if devices != DeviceCheck::Skip
            && let AudioOut::Device(name) = &output
            && let Err(e) = agent::live_sink(name.as_deref())
        {
            audio_unavailable.get_or_insert(e);
        }
        if devices == DeviceCheck::Require
            && let Some(e) = audio_unavailable
        {
            return Err(ClientError::Usage(e));
        }
        let credentials = match &self.turn_credentials {
            Some(path) => Some(read_turn_credentials(path)?),
            None => None,
        };
        let ice_servers = ice_servers(&self.stun, &self.turn, credentials)?;
        Ok(CallOptions {
            audio_unavailable,
            require_verified: self.require_verified,
            omemo: !self.no_omemo,
            media_ips: self.media_ip.clone(),
            input,
            output,
            duration: duration.map(|d| seconds("--duration", d)).transpose()?,
            ring_timeout: seconds("--ring-timeout", ring_timeout)?,
            ice_servers,
            discover_ice: !self.no_ice_discovery,
            relay_only: self.relay_only,
            turn_ca_file: self.turn_ca_file.clone(),
        })
    }
}

/// The user's STUN and TURN servers: `--stun` values, then `--turn` URIs with the
/// credentials of `--turn-credentials` (required with `--turn`, useless without).
pub fn ice_servers(
    stun: &[String],
    turn: &[String],
    credentials: Option<(String, Secret)>,
) -> Result<Vec<IceServer>, ClientError> {
    let usage = ClientError::Usage;
    let mut servers = Vec::new();
    for s in stun {
        servers.push(parse_stun(s).map_err(usage)?);
    }
    match (turn.is_empty(), credentials) {
        (true, None) => {}
        (true, Some(_)) => {
            return Err(usage(
                "--turn-credentials is for --turn servers: give --turn URI too".into(),
            ));
        }
        (false, None) => {
            return Err(usage(
                "--turn needs --turn-credentials FILE (username and password lines)".into(),
            ));
        }
        (false, Some((username, password))) => {
            for t in turn {
                let mut server = parse_turn_uri(t).map_err(usage)?;
                server.username = Some(username.clone());
                server.password = Some(password.clone());
                servers.push(server);
            }
        }
    }
    Ok(servers)
}

/// A `--stun` value: `HOST:PORT` or `stun:HOST[:PORT]` (IPv6 in brackets; port 3478 when
/// the URI form names none); the error is one line for the user.
pub fn parse_stun(value: &str) -> Result<IceServer, String> {
    let bad = |why: &str| format!("--stun '{value}': {why}");
    let (rest, port_required) = match value.strip_prefix("stun:") {
        Some(rest) => (rest, false),
        None if value.starts_with("stuns:") => return Err(bad("STUN over TLS is not supported")),
        None => (value, true),
    };
    if rest.contains(['?', '/', '@']) {
        return Err(bad("must be HOST:PORT"));
    }
    let (host, port) = host_port(rest, extdisco::DEFAULT_PORT).map_err(|w| bad(&w))?;
    if port_required && port.is_none() {
        return Err(bad("must be HOST:PORT (e.g. stun.example.org:3478)"));
    }
    Ok(IceServer {
        kind: IceServerKind::Stun,
        host,
        port: port.unwrap_or(extdisco::DEFAULT_PORT),
        transport: IceTransport::Udp,
        username: None,
        password: None,
        expires: None,
    })
}

/// A `--turn` URI (RFC 7065): `turn:HOST[:PORT][?transport=udp|tcp]` (UDP by default) or
/// `turns:HOST[:PORT][?transport=tcp]` (TLS over TCP); ports 3478 and 5349 by default, IPv6
/// in brackets. The server comes without credentials; the error is one line for the user and
/// never repeats a URI that holds any.
pub fn parse_turn_uri(uri: &str) -> Result<IceServer, String> {
    if uri.contains('@') {
        return Err(
            "--turn: put no credentials into the URI, give them with --turn-credentials FILE"
                .into(),
        );
    }
    let bad = |why: &str| format!("--turn '{uri}': {why}");
    let (kind, rest) = if let Some(rest) = uri.strip_prefix("turn:") {
        (IceServerKind::Turn, rest)
    } else if let Some(rest) = uri.strip_prefix("turns:") {
        (IceServerKind::Turns, rest)
    } else {
        return Err(bad(
            "must start with turn: or turns: (e.g. turn:turn.example.org:3478?transport=udp)",
        ));
    };
    let (address, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let transport = match (kind, query) {
        (IceServerKind::Turns, None | Some("transport=tcp")) => IceTransport::Tcp,
        (IceServerKind::Turns, Some("transport=udp")) => {
            return Err(bad(
                "TURN over DTLS (turns: with transport=udp) is not supported",
            ));
        }
        (_, None | Some("transport=udp")) => IceTransport::Udp,
        (_, Some("transport=tcp")) => IceTransport::Tcp,
        (_, Some(_)) => {
            return Err(bad(
                "the only query allowed is ?transport=udp or ?transport=tcp",
            ));
        }
    };
    if address.contains('/') {
        return Err(bad("must be turn:HOST:PORT, without a path"));
    }
    let default = match kind {
        IceServerKind::Turns => extdisco::DEFAULT_TLS_PORT,
        _ => extdisco::DEFAULT_PORT,
    };
    let (host, port) = host_port(address, default).map_err(|w| bad(&w))?;
    Ok(IceServer {
        kind,
        host,
        port: port.unwrap_or(default),
        transport,
        username: None,
        password: None,
        expires: None,
    })
}

/// `HOST[:PORT]` with IPv6 in brackets: the host (brackets removed) and the port if given.
fn host_port(s: &str, example_port: u16) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing ']'".to_owned())?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err("expected :PORT after the IPv6 address".into()),
            },
        }
    } else if s.matches(':').count() > 1 {
        return Err(format!(
            "put an IPv6 address in brackets, e.g. [2001:db8::1]:{example_port}"
        ));
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("the port must be 1 to 65535, not '{p}'")),
            Ok(p) => Some(p),
        },
    };
    let host = extdisco::valid_host(host)
        .ok_or_else(|| format!("'{host}' is not a host name or IP address"))?;
    Ok((host, port))
}

/// Reads `--turn-credentials`: the username and the password (see [`parse_turn_credentials`]).
fn read_turn_credentials(path: &Path) -> Result<(String, Secret), ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ClientError::io(
            format!("cannot read TURN credentials file {}", path.display()),
            e,
        )
    })?;
    parse_turn_credentials(&text)
        .map_err(|why| ClientError::Usage(format!("--turn-credentials {}: {why}", path.display())))
}

/// A credentials file's text: the username on the first line, the password on the second
/// (a trailing newline and `\r` are not part of them); the error never shows either.
pub fn parse_turn_credentials(text: &str) -> Result<(String, Secret), &'static str> {
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let username = lines.next().unwrap_or("");
    let password = lines.next().unwrap_or("");
    if username.is_empty() || password.is_empty() {
        return Err("needs two lines: the username, then the password");
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err("has more than two lines (the username, then the password)");
    }
    Ok((username.to_owned(), Secret::new(password)))
}

/// Default data directory (XDG base directory spec).
pub fn default_data_dir() -> Result<PathBuf, ClientError> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("shieldcall"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/shieldcall")),
        None => Err(ClientError::Usage(
            "neither XDG_DATA_HOME nor HOME is set: give --data-dir".into(),
        )),
    }
}

fn read_password(cli: &Cli) -> Result<String, ClientError> {
    if let Some(f) = &cli.password_file {
        let s = std::fs::read_to_string(f).map_err(|e| {
            ClientError::io(format!("cannot read password file {}", f.display()), e)
        })?;
        return Ok(s.lines().next().unwrap_or("").to_owned());
    }
    std::env::var("SHIELDCALL_PASSWORD").map_err(|_| {
        ClientError::Usage("no password: set SHIELDCALL_PASSWORD or give --password-file".into())
    })
}

fn account_jid(cli: &Cli) -> Result<BareJid, ClientError> {
    let a = cli
        .account
        .as_deref()
        .ok_or_else(|| ClientError::Usage("no account: give --account user@example.org".into()))?;
    contact_jid(a)
}

/// The STUN and TURN libraries: `stun-types` 2 has `trace!` lines that print the password it
/// derives a long-term key from (not reached in the calls tested, but one version away), so
/// these never log above `debug`, whatever the filter asks.
const TRACE_SHOWS_PASSWORDS: [&str; 4] = [
    "stun_types",
    "stun_proto",
    "turn_types",
    "turn_client_proto",
];

/// Starts the diagnostic log (`--log FILTER`) on standard error. `FILTER` is a level or a
/// list of `module=level` with an optional default level (`warn,shieldcall_media=debug`).
pub fn start_log(filter: &str) -> Result<(), String> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let mut targets: Targets = match filter.trim().parse::<LevelFilter>() {
        Ok(level) => Targets::new().with_default(level),
        Err(_) => filter.trim().parse().map_err(|e| format!("{e}"))?,
    };
    for t in TRACE_SHOWS_PASSWORDS {
        if targets.would_enable(t, &tracing::Level::TRACE) {
            targets = targets.with_target(t, LevelFilter::DEBUG);
        }
    }
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(targets)
        .try_init()
        .map_err(|e| e.to_string())
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let out = Output { json: cli.json };
    match dispatch(&cli, out).await {
        Ok(()) => 0,
        Err(e) => {
            out.error(&e.to_string());
            match e {
                ClientError::Usage(_) => 2,
                _ => 1,
            }
        }
    }
}

async fn dispatch(cli: &Cli, out: Output) -> Result<(), ClientError> {
    // The demo makes its own server and accounts; devices need no account.
    if let Command::Demo(args) = &cli.command {
        return crate::demo::run(args, out);
    }
    if let Command::AudioDevices = &cli.command {
        return cmd_audio_devices(out);
    }
    let jid = account_jid(cli)?;
    let data_dir = match &cli.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    match &cli.command {
        Command::Fingerprint { png } => cmd_fingerprint(&data_dir, &jid, png.as_deref(), out),
        Command::Trust(keys) => cmd_trust(&data_dir, &jid, &keys.uri()?, TrustLevel::Verified, out),
        Command::Distrust(keys) => {
            cmd_trust(&data_dir, &jid, &keys.uri()?, TrustLevel::Distrusted, out)
        }
        Command::Policy {
            jid: contact,
            default,
            list,
            require_verified,
        } => {
            // Without a JID the setting is the default (clap requires --default or --list then).
            let _ = default;
            cmd_policy(
                &data_dir,
                &jid,
                contact.as_deref(),
                *list,
                *require_verified,
                out,
            )
        }
        Command::Devices {
            jid: contact,
            offline,
        } => {
            let contact = contact_jid(contact)?;
            if *offline {
                let account = open_account(&data_dir, &jid)?;
                let devices = omemo_service::offline_devices(&account, &contact)?;
                return print_devices(&contact, devices, out);
            }
            let (mut svc, _, _lock) =
                online(cli, &data_dir, &jid, Online::Guest("devices")).await?;
            let res = cmd_devices(&mut svc, &contact, out).await;
            svc.xmpp().close().await;
            res
        }
        Command::Send { jid: contact, text } => {
            let contact = contact_jid(contact)?;
            let (mut svc, _, _lock) = online(cli, &data_dir, &jid, Online::Guest("send")).await?;
            let res = cmd_send(&mut svc, &contact, text, out).await;
            svc.xmpp().close().await;
            res
        }
        Command::Call {
            jid: contact,
            duration,
            ring_timeout,
            audio,
        } => {
            let contact = contact_jid(contact)?;
            if contact == jid {
                return Err(ClientError::Usage("you cannot call yourself".into()));
            }
            let opts = audio.options(*duration, *ring_timeout, DeviceCheck::Require)?;
            let (svc, incoming, _lock) =
                online(cli, &data_dir, &jid, Online::Exclusive("call")).await?;
            let ok = run_agent(svc, incoming, Mode::Call(contact), opts, out).await?;
            if ok {
                Ok(())
            } else {
                Err(ClientError::CallFailed)
            }
        }
        Command::Listen {
            auto_answer,
            reject,
            audio,
        } => {
            let answer = match (auto_answer, reject) {
                (true, _) => Answer::Auto,
                (_, true) => Answer::Reject,
                _ => Answer::Ask,
            };
            // With --reject every call is declined anyway: no audio device is opened.
            let devices = if answer == Answer::Reject {
                DeviceCheck::Skip
            } else {
                DeviceCheck::Warn
            };
            let opts =
                audio.options(None, shieldcall_jingle::RING_TIMEOUT.as_secs_f64(), devices)?;
            if let Some(why) = &opts.audio_unavailable {
                out.warning(&format!("calls will be declined: {why}"));
            }
            let (svc, incoming, _lock) =
                online(cli, &data_dir, &jid, Online::Exclusive("listen")).await?;
            run_agent(svc, incoming, Mode::Listen(answer), opts, out)
                .await
                .map(|_| ())
        }
        Command::Chat { jid: contact } => {
            let contact = contact_jid(contact)?;
            let (svc, incoming, _lock) =
                online(cli, &data_dir, &jid, Online::Exclusive("chat")).await?;
            cmd_listen(svc, incoming, Some(contact), out).await
        }
        Command::Demo(_) | Command::AudioDevices => Ok(()), // handled above
    }
}

#[cfg(feature = "live-audio")]
fn cmd_audio_devices(out: Output) -> Result<(), ClientError> {
    let devices = agent::audio_devices()?;
    if devices.is_empty() && !out.json {
        println!("no audio devices (calls can still use --tone/--play and --record)");
    }
    for d in devices {
        out.event(
            "audio-device",
            json!({ "name": d.name, "input": d.input, "output": d.output, "default_input": d.default_input, "default_output": d.default_output }),
            || {
                let mut kinds = Vec::new();
                if d.input {
                    kinds.push(if d.default_input { "microphone (default)" } else { "microphone" });
                }
                if d.output {
                    kinds.push(if d.default_output { "speaker (default)" } else { "speaker" });
                }
                let mark = if d.default_input || d.default_output { "*" } else { " " };
                format!("{mark} {}  [{}]", d.name, kinds.join(", "))
            },
        );
    }
    Ok(())
}

#[cfg(not(feature = "live-audio"))]
fn cmd_audio_devices(_: Output) -> Result<(), ClientError> {
    Err(ClientError::Usage(
        "built without live audio: no devices (calls use --tone/--play and --record)".into(),
    ))
}

fn cmd_fingerprint(
    data_dir: &Path,
    jid: &BareJid,
    png: Option<&Path>,
    out: Output,
) -> Result<(), ClientError> {
    let account = open_account(data_dir, jid)?;
    let uri = account.verification_uri().to_string();
    if let Some(png) = png {
        write_qr_png(&uri, png)?;
    }
    let fp = fingerprint(&account.identity_key());
    let qr = qr_text(&uri);
    out.event(
        "fingerprint",
        json!({ "device_id": account.device_id(), "fingerprint": fp, "uri": uri }),
        || {
            format!(
                "device {}\nfingerprint {fp}\n{uri}\n{qr}",
                account.device_id()
            )
        },
    );
    Ok(())
}

fn qr_text(uri: &str) -> String {
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

/// Writes `text` as a QR code PNG (4 pixels per module, 4 modules of quiet zone).
pub fn write_qr_png(text: &str, path: &Path) -> Result<(), ClientError> {
    const SCALE: usize = 4;
    const QUIET: usize = 4;
    let io = |e: String| ClientError::other(format!("{}: {e}", path.display()));
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| io(e.to_string()))?;
    let w = code.width();
    let colors = code.to_colors();
    let size = (w + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; size * size];
    for (i, c) in colors.iter().enumerate() {
        if *c == qrcode::Color::Dark {
            let (mx, my) = (i % w + QUIET, i / w + QUIET);
            for dy in 0..SCALE {
                let row = (my * SCALE + dy) * size;
                if let Some(px) = pixels.get_mut(row + mx * SCALE..row + (mx + 1) * SCALE) {
                    px.fill(0);
                }
            }
        }
    }
    let file = std::fs::File::create(path).map_err(|e| io(e.to_string()))?;
    let side = u32::try_from(size).map_err(|e| io(e.to_string()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), side, side);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| io(e.to_string()))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| io(e.to_string()))?;
    writer.finish().map_err(|e| io(e.to_string()))
}

/// Reads a QR code from a PNG file.
pub fn decode_qr(path: &Path) -> Result<String, ClientError> {
    let bad = |why: String| ClientError::other(format!("{}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .map_err(|e| bad(format!("not a PNG image: {e}")))?;
    let mut buf = vec![
        0;
        reader
            .output_buffer_size()
            .ok_or_else(|| bad("image too large".into()))?
    ];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(format!("not a PNG image: {e}")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let stride = info.line_size;
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        let i = y * stride + x * channels;
        let px = buf.get(i..i + channels.min(3)).unwrap_or(&[255]);
        (px.iter().map(|&v| u32::from(v)).sum::<u32>() / px.len().max(1) as u32) as u8
    });
    let grids = img.detect_grids();
    let grid = grids
        .first()
        .ok_or_else(|| bad("no QR code found in the image".into()))?;
    let (_, content) = grid
        .decode()
        .map_err(|e| bad(format!("QR code does not decode: {e}")))?;
    Ok(content)
}

fn cmd_trust(
    data_dir: &Path,
    jid: &BareJid,
    uri: &str,
    level: TrustLevel,
    out: Output,
) -> Result<(), ClientError> {
    let parsed = VerificationUri::parse(uri)?;
    let mut account = open_account(data_dir, jid)?;
    let before = account.apply_verification_uri_as(&parsed, level)?;
    for (device, key, prev) in before {
        present::show_trusted(out, &parsed.jid, device, &fingerprint(&key), level, prev);
    }
    Ok(())
}

fn setting_name(s: Option<Setting>) -> Option<&'static str> {
    s.map(|s| match s {
        Setting::On => "on",
        Setting::Off => "off",
    })
}

fn cmd_policy(
    data_dir: &Path,
    jid: &BareJid,
    contact: Option<&str>,
    list: bool,
    require_verified: Option<OnOff>,
    out: Output,
) -> Result<(), ClientError> {
    // The database exists (owner-only) before the policy tables are added to it, on the
    // account store's connection.
    let account = open_account(data_dir, jid)?;
    let policies = Policies::open(account.store())?;
    let contact = contact.map(contact_jid).transpose()?;
    if let Some(on) = require_verified {
        policies.set(contact.as_ref().map(|c| c.as_str()), on == OnOff::On)?;
    }
    let default_setting = policies.default_setting()?;
    if contact.is_none() {
        out.event(
            "policy",
            json!({ "jid": "*", "require_verified": default_setting == Some(Setting::On), "own": setting_name(default_setting) }),
            || {
                format!(
                    "default for all contacts: require-verified {}",
                    setting_name(default_setting).unwrap_or("off (not set)")
                )
            },
        );
    }
    let contacts: Vec<String> = match &contact {
        Some(c) => vec![c.to_string()],
        None if list => policies.all()?.into_iter().map(|(j, _)| j).collect(),
        None => Vec::new(),
    };
    for c in contacts {
        let s = policies.contact(&c)?;
        let last = s
            .last_verified_call
            .map(|(device, at)| json!({ "device": device, "at": at }));
        out.event(
            "policy",
            json!({ "jid": c, "require_verified": s.require_verified(), "own": setting_name(s.own), "last_verified_call": last }),
            || {
                let own = match s.own {
                    Some(_) => "",
                    None => " (the default)",
                };
                let when = match s.last_verified_call {
                    Some((d, _)) => format!("; last verified call with device {d}"),
                    None => String::new(),
                };
                format!(
                    "{c}: require-verified {}{own}{when}",
                    if s.require_verified() { "on" } else { "off" }
                )
            },
        );
    }
    Ok(())
}

/// How a command goes online (see `lock.rs`).
#[derive(Debug, Clone, Copy)]
enum Online {
    /// `listen`, `call`, `chat`: the only online process of the account; refused while another
    /// one runs.
    Exclusive(&'static str),
    /// `send`, `devices`: takes the lock if free, else runs beside its holder without
    /// publishing keys.
    Guest(&'static str),
}

/// The connection, its incoming stanzas, and the online lock if this process holds it.
type Connected = (
    OmemoService,
    tokio::sync::mpsc::UnboundedReceiver<Incoming>,
    Option<OnlineLock>,
);

/// Runs the call agent and shows its events until it ends; returns its outcome (whether a
/// `call` connected and ended normally).
async fn run_agent(
    svc: OmemoService,
    incoming: tokio::sync::mpsc::UnboundedReceiver<Incoming>,
    mode: Mode,
    opts: CallOptions,
    out: Output,
) -> Result<bool, ClientError> {
    let read_answers = matches!(mode, Mode::Listen(Answer::Ask));
    let (event_tx, events) = tokio::sync::mpsc::unbounded_channel();
    let (commands, command_rx) = tokio::sync::mpsc::unbounded_channel();
    let agent = CallAgent::new(svc, mode, opts, event_tx).run(incoming, command_rx);
    let shown = Presenter::new(out).run(events, commands, read_answers);
    let (outcome, shown) = tokio::join!(agent, shown);
    shown?;
    outcome
}

/// Logs in, publishes our OMEMO keys and answers disco/ping in the background (the client
/// library's `session::sign_in`). For `listen` and `call`, Jingle IQs are left to the call
/// engine and disco shows call support. The returned lock is kept while online.
async fn online(
    cli: &Cli,
    data_dir: &Path,
    jid: &BareJid,
    how: Online,
) -> Result<Connected, ClientError> {
    let role = match how {
        Online::Exclusive(command) => Role::Exclusive {
            command,
            calls: matches!(command, "listen" | "call"),
        },
        Online::Guest(command) => Role::Guest { command },
    };
    let connect = ConnectOptions {
        jid: Jid::from(jid.clone()),
        password: read_password(cli)?,
        server: cli.server.clone(),
        insecure_loopback: cli.insecure_loopback,
        direct_tls: cli.direct_tls,
    };
    let s = sign_in(SessionOptions {
        connect,
        data_dir: data_dir.to_owned(),
        role,
    })
    .await?;
    Ok((s.omemo, s.incoming, s.lock))
}

async fn cmd_devices(
    svc: &mut OmemoService,
    contact: &BareJid,
    out: Output,
) -> Result<(), ClientError> {
    let devices = svc.devices(contact).await?;
    print_devices(contact, devices, out)
}

fn print_devices(
    contact: &BareJid,
    devices: Vec<omemo_service::DeviceInfo>,
    out: Output,
) -> Result<(), ClientError> {
    if devices.is_empty() && !out.json {
        println!("{contact} has no OMEMO devices");
    }
    for d in devices {
        let fp = d.identity.as_ref().map(fingerprint);
        let trust = d.trust.map(|t| t.as_str());
        out.event(
            "device",
            json!({ "jid": contact.to_string(), "device": d.device, "fingerprint": fp, "trust": trust, "problem": d.problem, "this_device": d.this_device }),
            || match (&fp, &d.problem) {
                (Some(fp), _) if d.this_device => {
                    format!("{contact} device {}: {fp} (this device)", d.device)
                }
                (Some(fp), _) => format!("{contact} device {}: {fp} ({})", d.device, trust.unwrap_or("unknown")),
                (None, Some(p)) => format!("{contact} device {}: unusable: {p}", d.device),
                (None, None) => format!("{contact} device {}", d.device),
            },
        );
    }
    Ok(())
}

async fn cmd_send(
    svc: &mut OmemoService,
    contact: &BareJid,
    text: &str,
    out: Output,
) -> Result<(), ClientError> {
    let (devices, warnings) = svc.send_message(contact, text).await?;
    for w in warnings {
        out.warning(&w);
    }
    // A ping round trip: the server has processed the message when it answers.
    let ping = minidom::Element::builder("ping", presence::PING).build();
    let _ = svc.xmpp().iq(None, false, ping).await?;
    present::show_sent(out, contact, &devices);
    Ok(())
}

async fn cmd_listen(
    mut svc: OmemoService,
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<Incoming>,
    chat_with: Option<BareJid>,
    out: Output,
) -> Result<(), ClientError> {
    presence::go_online(svc.xmpp(), false).await?;
    out.event(
        "online",
        json!({ "jid": svc.xmpp().jid.to_string() }),
        || format!("online as {}", svc.xmpp().jid),
    );
    // Lines to send (chat only).
    let mut lines = crate::output::stdin_lines(chat_with.is_some());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            line = lines.recv(), if chat_with.is_some() => match (line, &chat_with) {
                (Some(text), Some(to)) if !text.trim().is_empty() => {
                    match svc.send_message(to, &text).await {
                        Ok((devices, warnings)) => {
                            for w in warnings {
                                out.warning(&w);
                            }
                            present::show_sent(out, to, &devices);
                        }
                        Err(e) => out.error(&e.to_string()),
                    }
                }
                (Some(_), _) => {}
                (None, _) => break, // end of input ends a chat
            },
            ev = incoming.recv() => match ev {
                Some(Incoming::Stanza(st)) if matches!(*st, Stanza::Message(_)) => {
                    let Stanza::Message(m) = *st else { continue };
                    for r in svc.handle_message(m).await {
                        crate::output::report(out, r);
                    }
                }
                Some(Incoming::Online(jid)) => {
                    // Reconnected without stream resumption: everything is new to the server.
                    if let Err(e) = presence::go_online(svc.xmpp(), false).await {
                        out.error(&e.to_string());
                    }
                    out.event("online", json!({ "jid": jid.to_string() }), || format!("online again as {jid}"));
                }
                Some(Incoming::Closed(why)) => return Err(ClientError::Connect(why)),
                Some(Incoming::Stanza(_)) => {}
                None => return Err(ClientError::Disconnected),
            }
        }
    }
    let unavailable =
        xmpp_parsers::presence::Presence::new(xmpp_parsers::presence::Type::Unavailable);
    let _ = svc.xmpp().send(unavailable);
    // The ping's answer means the server has processed everything we sent before it.
    let ping = minidom::Element::builder("ping", presence::PING).build();
    let bound = agent::LEAVE_TIMEOUT;
    let _ = tokio::time::timeout(bound, svc.xmpp().iq(None, false, ping)).await;
    let _ = tokio::time::timeout(bound, svc.xmpp().close()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_png_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qr.png");
        let uri = format!("xmpp:bob@example.org?omemo-sid-1234={}", "ab".repeat(32));
        write_qr_png(&uri, &path).unwrap();
        assert_eq!(decode_qr(&path).unwrap(), uri);
    }

    #[test]
    fn qr_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not.png");
        std::fs::write(&path, b"hello").unwrap();
        let e = decode_qr(&path).unwrap_err().to_string();
        assert!(e.contains("not.png") && e.contains("not a PNG"), "{e}");
        let blank = dir.path().join("blank.png");
        let file = std::fs::File::create(&blank).unwrap();
        let mut enc = png::Encoder::new(file, 8, 8);
        enc.set_color(png::ColorType::Grayscale);
        enc.write_header()
            .unwrap()
            .write_image_data(&[255; 64])
            .unwrap();
        let e = decode_qr(&blank).unwrap_err().to_string();
        assert!(e.contains("no QR code"), "{e}");
    }

    #[test]
    fn help_mentions_every_command() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for c in [
            "fingerprint",
            "trust",
            "devices",
            "send",
            "listen",
            "call",
            "--require-verified",
            "encrypted, not verified",
            "SHIELDCALL_PASSWORD",
            "no third-party STUN server is used by default",
            "who calls whom",
            "from your own XMPP server",
            "--no-ice-discovery",
        ] {
            assert!(help.contains(c), "{c} missing from --help");
        }
        let call = Cli::command()
            .find_subcommand_mut("call")
            .unwrap()
            .render_long_help()
            .to_string();
        for c in [
            "--stun",
            "--turn",
            "--turn-credentials",
            "--no-ice-discovery",
            "who calls whom",
        ] {
            assert!(call.contains(c), "{c} missing from call --help");
        }
    }

    #[test]
    fn stun_values() {
        let s = parse_stun("stun.example.org:3479").unwrap();
        assert_eq!(s.label(), "stun:stun.example.org:3479?transport=udp");
        assert!(s.username.is_none() && s.password.is_none() && s.expires.is_none());
        assert_eq!(
            parse_stun("stun:192.0.2.1").unwrap().label(),
            "stun:192.0.2.1:3478?transport=udp"
        );
        assert_eq!(
            parse_stun("[2001:db8::1]:3478").unwrap().host,
            "2001:db8::1"
        );
        for (bad, why) in [
            ("stun.example.org", "must be HOST:PORT"),
            ("stun.example.org:0", "the port must be 1 to 65535, not '0'"),
            ("stun.example.org:70000", "the port must be 1 to 65535"),
            ("2001:db8::1:3478", "put an IPv6 address in brackets"),
            ("[2001:db8::1:3478", "closing ']'"),
            ("a b:3478", "is not a host name"),
            (":3478", "is not a host name"),
            ("stuns:stun.example.org", "not supported"),
            ("stun:h:1?transport=tcp", "must be HOST:PORT"),
        ] {
            let e = parse_stun(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("--stun '{bad}': ")) && e.contains(why),
                "{bad}: {e}"
            );
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn turn_uris() {
        let t = |uri: &str| parse_turn_uri(uri).map(|s| s.label());
        assert_eq!(
            t("turn:turn.example.org:3478?transport=udp").unwrap(),
            "turn:turn.example.org:3478?transport=udp"
        );
        assert_eq!(
            t("turn:turn.example.org?transport=tcp").unwrap(),
            "turn:turn.example.org:3478?transport=tcp"
        );
        assert_eq!(
            t("turn:192.0.2.1").unwrap(),
            "turn:192.0.2.1:3478?transport=udp"
        );
        assert_eq!(
            t("turns:turn.example.org").unwrap(),
            "turns:turn.example.org:5349?transport=tcp"
        );
        assert_eq!(
            t("turns:[2001:db8::1]:443?transport=tcp").unwrap(),
            "turns:2001:db8::1:443?transport=tcp"
        );
        let turn = parse_turn_uri("turn:t.example:3478").unwrap();
        assert_eq!(
            (turn.kind, turn.transport),
            (IceServerKind::Turn, IceTransport::Udp)
        );
        assert!(turn.username.is_none() && turn.password.is_none());
        for (bad, why) in [
            ("stun:t.example:3478", "must start with turn: or turns:"),
            ("turn://t.example:3478", "must be turn:HOST:PORT"),
            ("turn:t.example:3478/path", "without a path"),
            (
                "turn:t.example:3478?transport=sctp",
                "?transport=udp or ?transport=tcp",
            ),
            (
                "turn:t.example:3478?foo=bar",
                "?transport=udp or ?transport=tcp",
            ),
            ("turns:t.example:5349?transport=udp", "DTLS"),
            ("turn:t.example:99999", "the port must be 1 to 65535"),
            ("turn:2001:db8::1", "in brackets"),
            ("turn:", "is not a host name"),
        ] {
            let e = parse_turn_uri(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        // Credentials in the URI are refused without being repeated.
        let e = parse_turn_uri("turn:alice:hunter2@t.example:3478").unwrap_err();
        assert!(
            e.contains("--turn-credentials") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn turn_credentials_files() {
        let (user, password) = parse_turn_credentials("alice\nhunter2\n").unwrap();
        assert_eq!((user.as_str(), password.expose()), ("alice", "hunter2"));
        let (_, password) = parse_turn_credentials("1700000000:alice\r\nse cret\r\n\n").unwrap();
        assert_eq!(password.expose(), "se cret");
        for bad in ["", "alice", "alice\n", "\nhunter2", "alice\nhunter2\nmore"] {
            let e = parse_turn_credentials(bad).unwrap_err();
            assert!(!e.contains("hunter2") && !e.contains("alice"), "{e}");
        }
    }

    #[test]
    fn stun_and_turn_options_make_the_servers() {
        let creds = || Some(("alice".to_owned(), Secret::new("hunter2")));
        let servers = ice_servers(
            &["192.0.2.1:3478".into()],
            &[
                "turn:t.example?transport=tcp".into(),
                "turns:t.example".into(),
            ],
            creds(),
        )
        .unwrap();
        let labels: Vec<String> = servers.iter().map(IceServer::label).collect();
        assert_eq!(
            labels,
            [
                "stun:192.0.2.1:3478?transport=udp",
                "turn:t.example:3478?transport=tcp",
                "turns:t.example:5349?transport=tcp",
            ]
        );
        assert!(
            servers[1..]
                .iter()
                .all(|s| s.username.as_deref() == Some("alice")
                    && s.password.as_ref().map(Secret::expose) == Some("hunter2"))
        );
        assert!(!format!("{servers:?}").contains("hunter2"));
        let e = ice_servers(&[], &["turn:t.example".into()], None).unwrap_err();
        assert!(matches!(e, ClientError::Usage(_)) && e.to_string().contains("--turn-credentials"));
        let e = ice_servers(&[], &[], creds()).unwrap_err();
        assert!(e.to_string().contains("give --turn"), "{e}");
        assert!(ice_servers(&[], &[], None).unwrap().is_empty());
    }

    #[test]
    fn call_options_take_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("turn.txt");
        std::fs::write(&creds, "alice\nhunter2\n").unwrap();
        let cli = Cli::try_parse_from([
            "shieldcall",
            "call",
            "bob@example.org",
            "--tone",
            "440",
            "--record",
            "/dev/null",
            "--stun",
            "192.0.2.1:3478",
            "--stun",
            "stun:192.0.2.2",
            "--turn",
            "turns:turn.example.org",
            "--turn-credentials",
            creds.to_str().unwrap(),
            "--no-ice-discovery",
        ])
        .unwrap();
        let Command::Call { audio, .. } = &cli.command else {
            panic!("{cli:?}")
        };
        let opts = audio.options(None, 30.0, DeviceCheck::Skip).unwrap();
        assert!(!opts.discover_ice);
        assert_eq!(opts.ice_servers.len(), 3);
        assert_eq!(opts.ice_servers[2].username.as_deref(), Some("alice"));
        let plain = Cli::try_parse_from(["shieldcall", "listen", "--reject"]).unwrap();
        let Command::Listen { audio, .. } = &plain.command else {
            panic!("{plain:?}")
        };
        let opts = audio.options(None, 30.0, DeviceCheck::Skip).unwrap();
        assert!(
            opts.discover_ice && opts.ice_servers.is_empty(),
            "the server's only, by default"
        );
        let missing = Cli::try_parse_from([
            "shieldcall",
            "listen",
            "--turn",
            "turn:t.example",
            "--turn-credentials",
            "/nonexistent/turn.txt",
        ])
        .unwrap();
        let Command::Listen { audio, .. } = &missing.command else {
            panic!()
        };
        let e = audio
            .options(None, 30.0, DeviceCheck::Skip)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/turn.txt") && !e.contains('\n'),
            "{e}"
        );
    }
}
