//! `shieldcall demo`: the whole story on one machine, with nothing installed but Prosody.
//!
//! A throw-away Prosody on loopback (`shieldcall-localserver`), two new accounts that verify each other
//! through the `xmpp:` URIs their QR codes hold, OMEMO messages both ways, then a call with a
//! tone each way that must show the shield on both sides and carry the right tone each way.
//! Every step runs this very binary (`--json`) as a child process, exactly as a user would type
//! it, and reads its JSON lines: the demo exercises the commands, not internals.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::ClientError;
use crate::output::Output;
use shieldcall_localserver::cli::{CliAccount, Device, fingerprint_device};
use shieldcall_localserver::wav::Recording;
use shieldcall_localserver::{
    self as localserver, DOMAIN, Prosody, ProsodyConfig, WorkDir, process,
};

/// Largest distance between the tone sent and the frequency found in the other side's recording.
pub const TOLERANCE_HZ: f64 = 10.0;

/// How long one step (a command, a message to arrive, a `listen` to go online) may take.
const STEP_LIMIT: Duration = Duration::from_secs(30);

/// Set-up and hang-up time allowed for the call on top of its seconds of media.
const CALL_EXTRA_LIMIT: Duration = Duration::from_secs(45);

/// How long the callee may take to report the end of the call after the caller exited.
const CALLEE_END_LIMIT: Duration = Duration::from_secs(10);

/// How long a `listen` may take to sign off after SIGINT before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// The media address of both sides: the whole demo stays on loopback, also on a machine
/// without any other interface.
const MEDIA_IP: &str = "127.0.0.1";

/// How often waits look whether the demo was interrupted.
const POLL: Duration = Duration::from_millis(100);

/// The error after Ctrl-C or SIGTERM.
const INTERRUPTED: &str = "interrupted (Ctrl-C or SIGTERM); stopped everything the demo started";

/// Set by the signal watcher; every wait of the demo looks at it.
static INTERRUPTED_FLAG: AtomicBool = AtomicBool::new(false);

/// Below this level (of full scale) a recording counts as silence.
const SILENCE_RMS: f64 = 0.002;

const DEMO_HELP: &str = "\
What it does, step by step (each step runs this shieldcall binary as a user would):
  1. starts a throw-away Prosody on a free port of 127.0.0.1, in a new temporary directory
     (needs the Debian package prosody: apt-get install -y prosody; scripts/demo installs it);
  2. registers alice@localhost and bob@localhost and shows each device's fingerprint and the
     xmpp: URI its QR code holds (`shieldcall fingerprint`);
  3. each verifies the other by that URI, as scanning the QR code would (`shieldcall trust`);
  4. alice sends bob an OMEMO message and bob answers (`send`, `listen`): both arrive verified;
  5. bob listens with --auto-answer and sends a tone, alice calls him with another tone
     (`call --require-verified`); the call's states and the shield are shown for both sides;
  6. reports both sides' call statistics and checks that each recording holds the other's tone.
Then it stops Prosody and removes the temporary directory (unless --keep).
Exit status 0 only if both sides showed the verified shield and heard the right tone.
With --skip-verification step 3 is left out: see the call refused without the shield.";

/// Options of `shieldcall demo`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = DEMO_HELP)]
pub struct DemoArgs {
    /// Seconds of audio in the call.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub seconds: u64,
    /// Tone alice (the caller) sends, in Hz.
    #[arg(long, default_value_t = 440, value_parser = clap::value_parser!(u32).range(100..=3000))]
    pub tone_a: u32,
    /// Tone bob (the callee) sends, in Hz.
    #[arg(long, default_value_t = 880, value_parser = clap::value_parser!(u32).range(100..=3000))]
    pub tone_b: u32,
    /// Keep the temporary directory (Prosody's config and log, both accounts' databases, both
    /// recordings) and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Leave out step 3, so that nobody verifies anyone: messages arrive only blindly trusted,
    /// `call --require-verified` refuses to go on without the shield, and the demo fails. Shows
    /// what the shield stands for.
    #[arg(long)]
    pub skip_verification: bool,
}

/// Runs the demo (blocking: it waits for child processes). `Ok` means both shields were
/// verified and both recordings held the other side's tone.
pub fn run(args: &DemoArgs, out: Output) -> Result<(), ClientError> {
    if f64::from(args.tone_a.abs_diff(args.tone_b)) <= 2.0 * TOLERANCE_HZ {
        return Err(ClientError::Usage(format!(
            "--tone-a and --tone-b must differ by more than {} Hz, or the check proves nothing",
            2.0 * TOLERANCE_HZ
        )));
    }
    let exe = std::env::current_exe()
        .map_err(|e| ClientError::io("cannot find the shieldcall binary", e))?;
    // Fail before creating anything when Prosody is missing.
    process::find_tool("prosody", "prosody").map_err(local)?;
    process::find_tool("prosodyctl", "prosody").map_err(local)?;
    watch_signals();
    let dir = WorkDir::create("shieldcall-demo", args.keep).map_err(local)?;
    // Everything that runs (Prosody, the children) lives inside `demo` and is stopped when it
    // returns, before `dir` is removed.
    let result = demo(args, out, &exe, dir.path());
    let path = dir.path().to_owned();
    if args.keep {
        say(
            out,
            "kept",
            json!({ "dir": path }),
            format!(
                "demo: stopped Prosody; kept {} (prosody.cfg.lua, prosody.log, alice/, bob/, \
                 alice.wav, bob.wav)",
                path.display()
            ),
        );
    } else {
        drop(dir);
        let removed = !path.exists();
        say(
            out,
            "cleaned_up",
            json!({ "dir": path, "removed": removed }),
            if removed {
                format!("demo: stopped Prosody and removed {}", path.display())
            } else {
                format!("demo: stopped Prosody; could not remove {}", path.display())
            },
        );
    }
    result
}

/// The steps, in order; any error ends the demo (and everything it started).
fn demo(args: &DemoArgs, out: Output, exe: &Path, dir: &Path) -> Result<(), ClientError> {
    let server = Prosody::launch(dir, &ProsodyConfig::default(), &interrupted).map_err(local)?;
    say(
        out,
        "server",
        json!({ "server": server.server(), "dir": dir }),
        format!(
            "demo: Prosody listens on {} (throw-away: config, data and log in {})",
            server.server(),
            dir.display()
        ),
    );
    let alice = Account::new("alice", dir);
    let bob = Account::new("bob", dir);
    for a in [&alice, &bob] {
        server.register(a.name, &a.password).map_err(local)?;
    }
    say(
        out,
        "accounts",
        json!({ "jids": [&alice.jid, &bob.jid] }),
        format!("demo: registered {} and {}", alice.jid, bob.jid),
    );
    let mut stage = Stage {
        out,
        exe: exe.to_owned(),
        server: server.server(),
        dir: dir.to_owned(),
        hub: Hub::new(),
    };

    let fa = stage.fingerprint(&alice)?;
    let fb = stage.fingerprint(&bob)?;
    // Without verification, keys are trusted blindly (BTBV) until someone verifies one.
    let trust = if args.skip_verification {
        say(
            out,
            "verify",
            json!({ "skipped": true }),
            "demo: --skip-verification: nobody scans anybody's QR code".into(),
        );
        "trusted"
    } else {
        say(
            out,
            "verify",
            json!({ "skipped": false }),
            "demo: each scans the other's QR code (here: hands the URI to `shieldcall trust`)"
                .into(),
        );
        stage.trust(&alice, &bob, &fb)?;
        stage.trust(&bob, &alice, &fa)?;
        "verified"
    };

    stage.message(
        &alice,
        &bob,
        &fa,
        trust,
        "Hi Bob, Alice here. Shall we talk?",
    )?;
    stage.message(&bob, &alice, &fb, trust, "Hi Alice! Call me.")?;

    let call = stage.call(args, &alice, &bob)?;
    let verdict = judge(args, out, &call, (&alice, &fa), (&bob, &fb), dir);
    drop(stage);
    drop(server);
    verdict
}

/// One demo account: `name@localhost` with its own data directory.
struct Account {
    name: &'static str,
    jid: String,
    password: String,
    data: PathBuf,
}

impl Account {
    fn new(name: &'static str, dir: &Path) -> Account {
        Account {
            name,
            jid: format!("{name}@{DOMAIN}"),
            // Only ever used against the throw-away server on loopback.
            password: format!("demo-{name}-{}", std::process::id()),
            data: dir.join(name),
        }
    }
}

/// What one side of the call reported.
#[derive(Debug, Default)]
struct CallSide {
    /// Last shield state and the device it was for.
    shield: Option<(String, Option<u64>)>,
    /// `reason` and `text` of the `ended` event.
    ended: Option<(String, String)>,
    /// The `stats` event.
    stats: Option<Value>,
    /// The recording it names.
    recording: Option<PathBuf>,
    /// Error events, in order.
    errors: Vec<String>,
}

/// How the call went.
struct CallOutcome {
    alice: CallSide,
    bob: CallSide,
    alice_status: Option<ExitStatus>,
}

/// Runs the commands and shows what they report.
struct Stage {
    out: Output,
    exe: PathBuf,
    server: String,
    /// The demo's directory (the recordings go here).
    dir: PathBuf,
    hub: Hub,
}

impl Stage {
    /// The command line of `account` with `args`, in JSON mode against the demo server.
    fn command(&self, account: &Account, args: &[&str]) -> Command {
        let cli = CliAccount {
            exe: &self.exe,
            server: &self.server,
            insecure_loopback: true,
            jid: &account.jid,
            data: &account.data,
            password: &account.password,
        };
        cli.command(args)
    }

    /// Runs a command to its end; its events are shown and returned. A non-zero exit is an
    /// error carrying the command's own error message.
    fn run(&self, account: &Account, args: &[&str]) -> Result<Vec<Value>, ClientError> {
        let what = format!("{}: shieldcall {}", account.name, args.join(" "));
        let done =
            process::run_bounded(self.command(account, args), STEP_LIMIT, &what, &interrupted)
                .map_err(local)?;
        let mut events = Vec::new();
        for line in done.stdout.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Value>(line) {
                Ok(v) => {
                    self.hub
                        .show(self.out, &Report::event(account.name, v.clone()));
                    events.push(v);
                }
                Err(_) => show_text(self.out, account.name, line),
            }
        }
        if done.status.success() {
            return Ok(events);
        }
        let said = events
            .iter()
            .filter(|v| v["event"] == "error")
            .filter_map(|v| v["message"].as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let why = if said.is_empty() {
            process::one_line(&process::last_lines(&done.stderr, 3))
        } else {
            said
        };
        Err(ClientError::Protocol(format!(
            "`{what}` failed ({}): {why}",
            done.status
        )))
    }

    /// Starts a long-running command (`listen`, `call`); its output arrives through the hub.
    fn spawn(&mut self, account: &Account, args: &[&str]) -> Result<Running, ClientError> {
        let what = format!("{}: shieldcall {}", account.name, args.join(" "));
        let mut cmd = self.command(account, args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| ClientError::io(format!("cannot start `{what}`"), e))?;
        let serial = self.hub.attach(account.name, &mut child);
        Ok(Running {
            who: account.name,
            what,
            serial,
            child,
        })
    }

    /// Shows the next reports until `pred` accepts an event of `proc`; fails when `proc` exits
    /// first or `limit` passes.
    fn wait_for(
        &mut self,
        proc: &Running,
        limit: Duration,
        waiting_for: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, ClientError> {
        let deadline = Instant::now() + limit;
        loop {
            let Some(r) = self.hub.next(deadline)? else {
                return Err(ClientError::Protocol(format!(
                    "no {waiting_for} within {}s{}",
                    limit.as_secs(),
                    self.hub.last_words(proc.serial)
                )));
            };
            self.hub.show(self.out, &r);
            match r.line {
                Line::Event(v) if r.serial == proc.serial && pred(&v) => return Ok(v),
                Line::Closed if r.serial == proc.serial => {
                    return Err(ClientError::Protocol(format!(
                        "`{}` exited before {waiting_for}{}",
                        proc.what,
                        self.hub.last_words(proc.serial)
                    )));
                }
                _ => {}
            }
        }
    }

    /// `fingerprint`: creates the account's device and prints its URI.
    fn fingerprint(&mut self, account: &Account) -> Result<Device, ClientError> {
        let events = self.run(account, &["fingerprint"])?;
        let device = fingerprint_device(&events).ok_or_else(|| {
            ClientError::Protocol(format!(
                "{}: `fingerprint` printed no device id and URI: {events:?}",
                account.name
            ))
        })?;
        self.hub.owners.insert(device.id, account.name);
        Ok(device)
    }

    /// `who` verifies `whom`'s device by its URI (what scanning its QR code yields).
    fn trust(&mut self, who: &Account, whom: &Account, device: &Device) -> Result<(), ClientError> {
        let events = self.run(who, &["trust", &device.uri])?;
        if events
            .iter()
            .any(|v| v["event"] == "trusted" && v["device"].as_u64() == Some(device.id))
        {
            return Ok(());
        }
        Err(ClientError::Protocol(format!(
            "{}: `trust` did not report {}'s device {} as verified",
            who.name, whom.jid, device.id
        )))
    }

    /// `to` listens, `from` sends `text`; it must arrive from `from`'s device with `trust`.
    fn message(
        &mut self,
        from: &Account,
        to: &Account,
        from_device: &Device,
        trust: &str,
        text: &str,
    ) -> Result<(), ClientError> {
        // Only messages in this step: a call now would be a mistake, so it would be declined.
        let mut listen = self.spawn(to, &["listen", "--reject"])?;
        self.wait_for(
            &listen,
            STEP_LIMIT,
            &format!("`online` from {}'s listen", to.name),
            |v| v["event"] == "online",
        )?;
        self.run(from, &["send", &to.jid, text])?;
        let m = self.wait_for(
            &listen,
            STEP_LIMIT,
            &format!("message from {} at {}", from.name, to.name),
            |v| v["event"] == "message" && v["from"] == from.jid.as_str() && v["body"] == text,
        )?;
        listen.stop(self);
        if m["device"].as_u64() != Some(from_device.id) {
            return Err(ClientError::Protocol(format!(
                "{} got the message from device {}, expected {}'s device {}",
                to.name, m["device"], from.name, from_device.id
            )));
        }
        if m["trust"] != trust {
            return Err(ClientError::Protocol(format!(
                "{} got the message from {} with trust {}, expected {trust}",
                to.name, from.name, m["trust"]
            )));
        }
        Ok(())
    }

    /// Bob listens (auto-answer, tone B, recording), alice calls him (tone A, recording,
    /// `--require-verified`, `--seconds`). Returns what each side reported.
    fn call(
        &mut self,
        args: &DemoArgs,
        alice: &Account,
        bob: &Account,
    ) -> Result<CallOutcome, ClientError> {
        let (alice_wav, bob_wav) = (wav_path(&self.dir, alice), wav_path(&self.dir, bob));
        say(
            self.out,
            "placing_call",
            json!({ "caller": alice.jid, "callee": bob.jid, "tone_a": args.tone_a, "tone_b": args.tone_b, "seconds": args.seconds }),
            format!(
                "demo: {} calls {} for {} s; alice sends {} Hz, bob {} Hz; both record what they hear",
                alice.jid, bob.jid, args.seconds, args.tone_a, args.tone_b
            ),
        );
        let (tone_a, tone_b, secs) = (
            args.tone_a.to_string(),
            args.tone_b.to_string(),
            args.seconds.to_string(),
        );
        let bob_rec = bob_wav.display().to_string();
        let mut bob_listen = self.spawn(
            bob,
            &[
                "listen",
                "--auto-answer",
                "--tone",
                &tone_b,
                "--record",
                &bob_rec,
                "--media-ip",
                MEDIA_IP,
            ],
        )?;
        self.wait_for(&bob_listen, STEP_LIMIT, "`online` from bob's listen", |v| {
            v["event"] == "online"
        })?;
        let alice_rec = alice_wav.display().to_string();
        let mut alice_call = self.spawn(
            alice,
            &[
                "call",
                &bob.jid,
                "--tone",
                &tone_a,
                "--record",
                &alice_rec,
                "--duration",
                &secs,
                "--require-verified",
                "--media-ip",
                MEDIA_IP,
            ],
        )?;
        let mut sides: HashMap<u32, CallSide> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(args.seconds) + CALL_EXTRA_LIMIT;
        let mut callee_deadline: Option<Instant> = None;
        loop {
            let bob_side = sides.get(&bob_listen.serial);
            let bob_done = bob_side.is_some_and(|s| s.stats.is_some());
            match callee_deadline {
                Some(_) if bob_done => break,
                Some(t) if Instant::now() >= t => break,
                _ => {}
            }
            let until = callee_deadline.unwrap_or(deadline);
            let Some(r) = self.hub.next(until)? else {
                if callee_deadline.is_some() {
                    break;
                }
                return Err(ClientError::Protocol(format!(
                    "the call did not end within {}s{}",
                    (Duration::from_secs(args.seconds) + CALL_EXTRA_LIMIT).as_secs(),
                    self.hub.last_words(alice_call.serial)
                )));
            };
            self.hub.show(self.out, &r);
            let side = sides.entry(r.serial).or_default();
            match &r.line {
                Line::Event(v) => record(side, v),
                Line::Closed if r.serial == alice_call.serial => {
                    callee_deadline = Some(Instant::now() + CALLEE_END_LIMIT);
                }
                Line::Closed if r.serial == bob_listen.serial => {
                    return Err(ClientError::Protocol(format!(
                        "bob's `listen` exited during the call{}",
                        self.hub.last_words(bob_listen.serial)
                    )));
                }
                _ => {}
            }
        }
        let alice_status = alice_call.wait(STOP_LIMIT);
        // The callee's events that come with signing off (a late `stats`) still count.
        let late = bob_listen.stop(self);
        let mut bob_side = sides.remove(&bob_listen.serial).unwrap_or_default();
        for v in late {
            record(&mut bob_side, &v);
        }
        Ok(CallOutcome {
            alice: sides.remove(&alice_call.serial).unwrap_or_default(),
            bob: bob_side,
            alice_status,
        })
    }
}

/// Takes note of a call event of one side.
fn record(side: &mut CallSide, v: &Value) {
    match v["event"].as_str() {
        Some("shield") => {
            side.shield = Some((
                v["state"].as_str().unwrap_or("?").to_owned(),
                v["device"].as_u64(),
            ));
        }
        Some("ended") => {
            side.ended = Some((
                v["reason"].as_str().unwrap_or("?").to_owned(),
                v["text"].as_str().unwrap_or("").to_owned(),
            ));
        }
        Some("stats") => {
            side.recording = v["recording"].as_str().map(PathBuf::from);
            side.stats = Some(v.clone());
        }
        Some("error") => side
            .errors
            .push(v["message"].as_str().unwrap_or("?").to_owned()),
        _ => {}
    }
}

/// Where `account`'s recording goes.
fn wav_path(dir: &Path, account: &Account) -> PathBuf {
    dir.join(format!("{}.wav", account.name))
}

/// Checks shields, exit status and recordings, reports each and the overall result.
fn judge(
    args: &DemoArgs,
    out: Output,
    call: &CallOutcome,
    (alice, fa): (&Account, &Device),
    (bob, fb): (&Account, &Device),
    dir: &Path,
) -> Result<(), ClientError> {
    let mut problems = Vec::new();
    let sides = [(&call.alice, alice, bob, fb), (&call.bob, bob, alice, fa)];
    // Why a call ended early says the most, so it comes first.
    for (side, me, _, _) in sides {
        match &side.ended {
            Some((reason, _)) if reason == "success" => {}
            Some((reason, text)) => {
                problems.push(format!("{}'s call ended with {reason}: {text}", me.name))
            }
            None => problems.push(format!("{} saw no end of the call", me.name)),
        }
    }
    for (side, me, peer, peer_dev) in sides {
        match &side.shield {
            Some((state, Some(d))) if state == "verified" && *d == peer_dev.id => {}
            Some((state, Some(d))) if state == "verified" => problems.push(format!(
                "{}'s shield was for device {d}, not {}'s device {}",
                me.name, peer.name, peer_dev.id
            )),
            Some((state, _)) => {
                problems.push(format!("{}'s shield was {state}, not verified", me.name))
            }
            None => problems.push(format!("{} showed no shield", me.name)),
        }
        for e in &side.errors {
            problems.push(format!("{} reported: {e}", me.name));
        }
    }
    match call.alice_status {
        Some(s) if s.success() => {}
        Some(s) => problems.push(format!("alice's `call` exited with {s}")),
        None => problems.push("alice's `call` did not exit".into()),
    }
    let mut heard_ok = HashMap::new();
    for (side, me, expected, peer) in [
        (&call.alice, alice, args.tone_b, bob),
        (&call.bob, bob, args.tone_a, alice),
    ] {
        // `stats` names the file (a `listen` numbers the recordings of later calls).
        let path = side.recording.clone().unwrap_or_else(|| wav_path(dir, me));
        if !path.exists() {
            problems.push(format!("{} recorded nothing", me.name));
            heard_ok.insert(me.name, false);
            continue;
        }
        let ok = match heard(&path) {
            Ok(h) => {
                let ok = !h.silent && (h.hz - f64::from(expected)).abs() <= TOLERANCE_HZ;
                let verdict = if ok { "✔" } else { "✘" };
                let heard_text = if h.silent {
                    "silence".to_owned()
                } else {
                    format!("{:.0} Hz", h.hz)
                };
                say(
                    out,
                    "heard",
                    json!({ "side": me.name, "heard_hz": if h.silent { None } else { Some(h.hz) }, "expected_hz": expected, "seconds": h.seconds, "ok": ok }),
                    format!(
                        "{}: heard {heard_text} (expected {expected} Hz, {}'s tone) in {:.1} s of recording {verdict}",
                        me.name, peer.name, h.seconds
                    ),
                );
                if !ok {
                    problems.push(format!(
                        "{} heard {heard_text}, expected {expected} Hz",
                        me.name
                    ));
                }
                ok
            }
            Err(e) => {
                problems.push(format!("{}'s recording: {e}", me.name));
                false
            }
        };
        heard_ok.insert(me.name, ok);
    }
    let shield = |s: &CallSide| s.shield.as_ref().map(|(st, _)| st.clone());
    let ok = problems.is_empty();
    say(
        out,
        "result",
        json!({
            "ok": ok,
            "shield": { "alice": shield(&call.alice), "bob": shield(&call.bob) },
            "audio_matched": heard_ok,
            "problems": problems,
        }),
        if ok {
            "demo: ✔ both sides showed the verified shield and heard the other's tone".into()
        } else {
            format!("demo: ✘ {}", problems.join("; "))
        },
    );
    if ok {
        Ok(())
    } else {
        Err(ClientError::Protocol(format!(
            "demo failed: {} (run it again with --keep to look at prosody.log and the recordings)",
            problems.join("; ")
        )))
    }
}

/// What a recording holds.
struct Heard {
    hz: f64,
    seconds: f64,
    silent: bool,
}

/// Reads a recording (48 kHz mono 16-bit WAV, at most two minutes) and judges it.
fn heard(path: &Path) -> Result<Heard, ClientError> {
    let r = Recording::read(path).map_err(local)?;
    Ok(Heard {
        hz: r.dominant_frequency(),
        seconds: r.seconds(),
        silent: r.rms() < SILENCE_RMS,
    })
}

/// A demo line of our own: `{"event": name, ...}` or the text.
fn say(out: Output, name: &str, fields: Value, text: String) {
    out.event(name, fields, || text);
}

/// Shows a child's event: the same object with `side` added, or a human line.
fn show(out: Output, who: &str, v: &Value, owners: &HashMap<u64, &'static str>) {
    let name = v["event"].as_str().unwrap_or("event");
    let mut fields = v.clone();
    if let Some(o) = fields.as_object_mut() {
        o.remove("event");
        o.insert("side".into(), json!(who));
    }
    // In words, leave out what says nothing new: the `call` state `ended` (the `ended` event
    // says more) and a side's notification of its own device list.
    let own_list = name == "devicelist" && v["jid"].as_str() == Some(&format!("{who}@{DOMAIN}"));
    if !out.json && ((name == "call" && v["state"] == "ended") || own_list) {
        return;
    }
    out.event(name, fields, || human(who, v, owners));
}

/// A child's non-JSON output line (should not happen with --json; shown rather than lost).
fn show_text(out: Output, who: &str, line: &str) {
    out.event("output", json!({ "side": who, "text": line }), || {
        format!("{who}: {line}")
    });
}

/// The human line for a child's event.
fn human(who: &str, v: &Value, owners: &HashMap<u64, &'static str>) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    match v["event"].as_str().unwrap_or("") {
        "fingerprint" => format!(
            "{who}: device {}, fingerprint {}\n{who}: its QR code holds {}",
            v["device_id"],
            s("fingerprint"),
            s("uri")
        ),
        "trusted" => format!(
            "{who}: {} device {} is now verified (was {})",
            s("jid"),
            v["device"],
            s("previous")
        ),
        "online" => format!("{who}: online as {}", s("jid")),
        "sent" => format!("{who}: sent to {} (devices {})", s("to"), v["devices"]),
        "devicelist" => format!("{who}: {} has devices {}", s("jid"), v["devices"]),
        "message" => {
            let mark = if v["trust"] == "verified" { "✔ " } else { "" };
            format!(
                "{who}: message from {} (device {}, {mark}{}): {}",
                s("from"),
                v["device"],
                s("trust"),
                s("body")
            )
        }
        "call" => format!("{who}: call {} ({})", s("state"), s("peer")),
        "shield" => match v["state"].as_str() {
            Some("verified") => match v["device"].as_u64().and_then(|d| owners.get(&d)) {
                Some(owner) => format!(
                    "{who}: shield ✔ verified ({owner}'s device {})",
                    v["device"]
                ),
                None => format!("{who}: shield ✔ verified (device {})", v["device"]),
            },
            Some("encrypted") => format!("{who}: no shield: encrypted, but not verified"),
            _ => format!("{who}: no shield: {}", s("state")),
        },
        "ended" => {
            let text = s("text");
            if text.is_empty() || text == "?" {
                format!("{who}: call ended ({})", s("reason"))
            } else {
                format!("{who}: call ended ({}: {text})", s("reason"))
            }
        }
        "stats" => format!("{who}: {}", stats_line(v)),
        "audio" if v["state"] == "first" => {
            format!("{who}: first audio from the peer after {} ms", v["ms"])
        }
        "error" => format!("{who}: error: {}", s("message")),
        "warning" => format!("{who}: warning: {}", s("message")),
        _ => format!("{who}: {v}"),
    }
}

/// The `stats` event in words.
fn stats_line(v: &Value) -> String {
    if v["packets_sent"].is_null() && v["packets_received"].is_null() {
        return "stats: no media was exchanged".into();
    }
    let n = |k: &str| v[k].as_u64().map_or("?".to_owned(), |x| x.to_string());
    let ms = |k: &str| {
        v[k].as_f64()
            .map_or("-".to_owned(), |x| format!("{x:.0} ms"))
    };
    let ms1 = |k: &str| {
        v[k].as_f64()
            .map_or("-".to_owned(), |x| format!("{x:.1} ms"))
    };
    let loss = v["loss"]
        .as_f64()
        .map_or("-".to_owned(), |x| format!("{:.1} %", x * 100.0));
    format!(
        "stats: {} packets sent, {} received; {} frames sent, {} played; shield after {}, \
         first audio after {}; loss {loss}, jitter {}, rtt {}",
        n("packets_sent"),
        n("packets_received"),
        n("frames_sent"),
        n("frames_played"),
        ms("ms_to_shield"),
        ms("ms_to_first_audio"),
        ms1("jitter_ms"),
        ms1("rtt_ms"),
    )
}

/// A line a child printed, tagged with the process it came from.
struct Report {
    who: &'static str,
    serial: u32,
    line: Line,
}

impl Report {
    /// An event of a command that ran to its end (no serial).
    fn event(who: &'static str, v: Value) -> Report {
        Report {
            who,
            serial: 0,
            line: Line::Event(v),
        }
    }
}

enum Line {
    /// A JSON object from stdout.
    Event(Value),
    /// A stdout line that is not JSON.
    Text(String),
    /// A stderr line.
    Stderr(String),
    /// Stdout reached its end: the process exited (or closed it).
    Closed,
}

/// Collects the output of all running children in one channel, so that the two sides of the
/// call can be shown as their events happen.
struct Hub {
    tx: mpsc::Sender<Report>,
    rx: mpsc::Receiver<Report>,
    next_serial: u32,
    /// Last error events and stderr lines per process, for error messages.
    last: HashMap<u32, Vec<String>>,
    /// Whose each device id is, to say "bob's device N".
    owners: HashMap<u64, &'static str>,
}

impl Hub {
    fn new() -> Hub {
        let (tx, rx) = mpsc::channel();
        Hub {
            tx,
            rx,
            next_serial: 0,
            last: HashMap::new(),
            owners: HashMap::new(),
        }
    }

    /// Starts reader threads for the child's stdout and stderr; returns its serial.
    fn attach(&mut self, who: &'static str, child: &mut Child) -> u32 {
        self.next_serial += 1;
        let serial = self.next_serial;
        let report = move |line| Report { who, serial, line };
        if let Some(stdout) = child.stdout.take() {
            let (tx, done) = (self.tx.clone(), self.tx.clone());
            let each = move |line: String| {
                let line = match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.is_object() => Line::Event(v),
                    _ => Line::Text(line),
                };
                tx.send(report(line)).is_ok()
            };
            process::forward_lines(stdout, each, move || {
                let _ = done.send(report(Line::Closed));
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let tx = self.tx.clone();
            let each = move |line| tx.send(report(Line::Stderr(line))).is_ok();
            process::forward_lines(stderr, each, || {});
        }
        serial
    }

    /// The next report, `None` at `deadline`, or an error once the demo was interrupted.
    fn next(&mut self, deadline: Instant) -> Result<Option<Report>, ClientError> {
        loop {
            if interrupted() {
                return Err(ClientError::Protocol(INTERRUPTED.into()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left.min(POLL)) {
                Ok(r) => return Ok(Some(self.note(r))),
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(_) => return Ok(None),
            }
        }
    }

    /// Like [`Self::next`], also after an interruption (to see children sign off).
    fn next_anyway(&mut self, deadline: Instant) -> Option<Report> {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = self.rx.recv_timeout(left).ok()?;
        Some(self.note(r))
    }

    /// Keeps the last things a process said wrong, for error messages.
    fn note(&mut self, r: Report) -> Report {
        let note = match &r.line {
            Line::Event(v) if v["event"] == "error" => v["message"].as_str().map(str::to_owned),
            Line::Stderr(l) | Line::Text(l) if !l.trim().is_empty() => Some(l.clone()),
            _ => None,
        };
        if let Some(note) = note {
            let last = self.last.entry(r.serial).or_default();
            last.push(note);
            if last.len() > 3 {
                last.remove(0);
            }
        }
        r
    }

    /// Shows a report: events and non-JSON stdout lines; stderr is kept for error messages only.
    fn show(&self, out: Output, r: &Report) {
        match &r.line {
            Line::Event(v) => show(out, r.who, v, &self.owners),
            Line::Text(t) => show_text(out, r.who, t),
            Line::Stderr(_) | Line::Closed => {}
        }
    }

    /// `"; last said: …"` for the process, or nothing.
    fn last_words(&self, serial: u32) -> String {
        match self.last.get(&serial) {
            Some(l) if !l.is_empty() => format!("; it last said: {}", l.join(" | ")),
            _ => String::new(),
        }
    }
}

/// A child we started; interrupted (then killed) when dropped, so none outlives the demo.
struct Running {
    who: &'static str,
    what: String,
    serial: u32,
    child: Child,
}

impl Running {
    /// Waits up to `limit` for the process to exit.
    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return None,
            }
        }
    }

    /// Stops the process as Ctrl-C would (it signs off cleanly), killing it if it does not exit
    /// within [`STOP_LIMIT`]; shows its remaining output and returns its remaining events.
    fn stop(&mut self, stage: &mut Stage) -> Vec<Value> {
        interrupt(&mut self.child);
        let deadline = Instant::now() + STOP_LIMIT;
        let mut events = Vec::new();
        while let Some(r) = stage.hub.next_anyway(deadline) {
            stage.hub.show(stage.out, &r);
            match r.line {
                Line::Event(v) if r.serial == self.serial => events.push(v),
                Line::Closed if r.serial == self.serial => break,
                _ => {}
            }
        }
        if self.wait(Duration::from_secs(1)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            stage.out.warning(&format!(
                "{}: `{}` did not exit after SIGINT; killed",
                self.who, self.what
            ));
        }
        events
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if interrupt(&mut self.child) && self.wait(Duration::from_secs(2)).is_some() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local-server error as the demo reports it: a missing tool names the command that
/// installs it, a cancelled step says the demo was interrupted.
fn local(e: localserver::Error) -> ClientError {
    match e {
        localserver::Error::NotInstalled { tool, package } => ClientError::other(format!(
            "{tool} is not installed; the demo needs Prosody for its throw-away XMPP server: \
             run `apt-get install -y {package}` as root (scripts/demo installs it when missing)"
        )),
        localserver::Error::Cancelled { what } => {
            ClientError::other(format!("{what}: {INTERRUPTED}"))
        }
        e => ClientError::other(e),
    }
}

/// Whether Ctrl-C or SIGTERM arrived.
fn interrupted() -> bool {
    INTERRUPTED_FLAG.load(Ordering::Relaxed)
}

/// Turns Ctrl-C and SIGTERM into [`interrupted`], so that the demo stops its children and
/// Prosody and removes its directory instead of dying on the spot. (On Ctrl-C the terminal
/// signals the children and Prosody too; they end, and the demo's waits notice.) The watcher
/// has its own small runtime on a thread: [`run`] is called from inside the CLI's runtime.
fn watch_signals() {
    let spawned = std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                INTERRUPTED_FLAG.store(true, Ordering::Relaxed);
            });
        });
    // Without the watcher the signals keep their default effect; nothing else changes.
    drop(spawned);
}

/// Sends SIGINT (what Ctrl-C sends; `listen` then signs off cleanly) to our child. Returns
/// whether the signal was sent. The child is not reaped before the signal, so its pid cannot
/// belong to another process.
fn interrupt(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None)) && process::signal(child.id(), "INT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_read_as_words() {
        let v = json!({"event":"stats","sid":"s","packets_sent":150,"packets_received":149,
            "frames_sent":150,"frames_played":148,"ms_to_shield":212,"ms_to_first_audio":null,
            "loss":0.0067,"jitter_ms":1.25,"rtt_ms":null});
        assert_eq!(
            stats_line(&v),
            "stats: 150 packets sent, 149 received; 150 frames sent, 148 played; shield after \
             212 ms, first audio after -; loss 0.7 %, jitter 1.2 ms, rtt -"
        );
    }

    #[test]
    fn stats_without_media_say_so() {
        let v = json!({"event":"stats","sid":"s","ms_to_shield":null,"ms_to_first_audio":null,
            "recording":null});
        assert_eq!(stats_line(&v), "stats: no media was exchanged");
    }

    #[test]
    fn shield_lines_name_the_state() {
        let v = json!({"event":"shield","sid":"s","state":"verified","device":42});
        let owners = HashMap::from([(42, "bob")]);
        assert_eq!(
            human("alice", &v, &owners),
            "alice: shield ✔ verified (bob's device 42)"
        );
        assert_eq!(
            human("alice", &v, &HashMap::new()),
            "alice: shield ✔ verified (device 42)"
        );
        let v = json!({"event":"shield","sid":"s","state":"encrypted","device":42});
        assert!(human("bob", &v, &owners).contains("no shield"));
    }

    #[test]
    fn a_missing_tool_names_the_install_command() {
        let e = process::find_tool("prosody-that-does-not-exist", "prosody")
            .map_err(local)
            .map(|_| ());
        let text = e.map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(text.contains("apt-get install -y prosody"), "{text}");
        assert!(text.contains("scripts/demo"), "{text}");
    }

    #[test]
    fn a_wav_with_a_tone_is_heard() {
        use shieldcall_media::audio::FRAME_SAMPLES;
        use shieldcall_media::audio::sink::{AudioSink, WavSink};
        use shieldcall_media::audio::source::{AudioSource, ToneSource};
        let d = WorkDir::create("shieldcall-demo-test", false).unwrap();
        let path = d.path().join("t.wav");
        let mut sink = WavSink::create(&path).unwrap();
        let mut tone = ToneSource::new(440.0, 0.3);
        let mut frame = [0i16; FRAME_SAMPLES];
        for _ in 0..100 {
            tone.next_frame(&mut frame).unwrap();
            sink.write_frame(&frame).unwrap();
        }
        sink.finish().unwrap();
        let h = heard(&path).unwrap();
        assert!((h.hz - 440.0).abs() <= 1.0, "{}", h.hz);
        assert!(!h.silent);
        assert!((h.seconds - 2.0).abs() < 0.05);
        let e = heard(&d.path().join("missing.wav"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing.wav"), "{e}");
    }

    #[test]
    fn interrupt_stops_a_child() {
        let mut child = Command::new("/bin/sh")
            .args(["-c", "exec sleep 30"])
            .spawn()
            .unwrap();
        assert!(interrupt(&mut child));
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!interrupt(&mut child), "no signal to a reaped child");
    }
}
