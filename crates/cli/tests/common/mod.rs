//! Test fixtures: a Prosody 0.12 (Debian) in a temp dir on a free loopback port, and helpers to
//! run the `shieldcall` binary with timeouts.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod events;

use shieldcall_localserver as localserver;
use shieldcall_localserver::cli::{CliAccount, fingerprint_device};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The shieldcall binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_shieldcall");
/// The domain every test account lives on.
pub const DOMAIN: &str = "localhost";

/// A running Prosody (shieldcall-localserver's, debug log) in a temp dir, stopped (by pid) when
/// dropped, also when the test panics.
pub struct Prosody {
    server: localserver::Prosody,
    /// Its directory (config, data, log).
    pub dir: tempfile::TempDir,
    /// The c2s port on 127.0.0.1.
    pub port: u16,
}

/// Why a fixture could not start, as a test failure (never a skip): a missing tool names its
/// Debian package and the script that installs them all.
fn fixture_failed(e: localserver::Error) -> ! {
    panic!("{e} (scripts/test installs scripts/lib/packages.txt)")
}

impl Prosody {
    /// Starts Prosody and registers `users` (`name` → `name@localhost`, password `pw-name`).
    pub fn start(users: &[&str]) -> Prosody {
        Self::start_inner(users, false, false)
    }

    /// Like [`Self::start`], with TLS: a test CA ([`Self::ca_file`]) signs a certificate for
    /// `localhost`; STARTTLS on [`Self::port`], direct TLS on [`Self::tls_port`].
    pub fn start_tls(users: &[&str]) -> Prosody {
        Self::start_inner(users, true, false)
    }

    /// [`Self::start`] without stream management (XEP-0198), for a proxy that injects stanzas:
    /// the counts would no longer match and the server would close the stream.
    pub fn start_for_proxy(users: &[&str]) -> Prosody {
        Self::start_inner(users, false, true)
    }

    /// The direct-TLS port (only with [`Self::start_tls`]).
    pub fn tls_port(&self) -> u16 {
        self.server.tls_port().unwrap_or(0)
    }

    /// The test CA certificate (only with [`Self::start_tls`]).
    pub fn ca_file(&self) -> PathBuf {
        self.server.ca_file()
    }

    fn start_inner(users: &[&str], tls: bool, without_smacks: bool) -> Prosody {
        let dir = tempfile::tempdir().unwrap();
        let config = localserver::ProsodyConfig {
            tls,
            debug_log: true,
            without_smacks,
            ..localserver::ProsodyConfig::default()
        };
        let server =
            localserver::Prosody::launch(dir.path(), &config, &localserver::process::never)
                .unwrap_or_else(|e| fixture_failed(e));
        let port = server.port();
        let mut p = Prosody { server, dir, port };
        for u in users {
            p.register(u);
        }
        p
    }

    /// Stops Prosody (by pid) and starts it again on the same port with the same data, so that
    /// clients see their connection break and come back.
    pub fn restart(&mut self) {
        self.server.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Registers `name@localhost` with password `pw-name`.
    pub fn register(&mut self, name: &str) {
        self.server
            .register(name, &password(name))
            .unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log()));
    }

    /// Makes `a` and `b` mutual contacts (subscription both) by writing Prosody's roster files;
    /// call before either logs in.
    pub fn befriend(&self, a: &str, b: &str) {
        self.server.befriend(a, b).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Prosody's log.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// All files of Prosody's data dir, concatenated (what the server stored).
    pub fn stored_data(&self) -> String {
        self.server.stored_data()
    }
}

/// A test server clients can log in to.
pub trait XmppServer {
    /// `--server` value.
    fn server(&self) -> String;
}

impl XmppServer for Prosody {
    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A running ejabberd 23.01 (Debian, shieldcall-localserver's) in a temp dir, stopped when
/// dropped.
pub struct Ejabberd {
    server: localserver::Ejabberd,
    /// Its directory.
    pub dir: tempfile::TempDir,
    /// The c2s port on 127.0.0.1.
    pub port: u16,
}

impl XmppServer for Ejabberd {
    fn server(&self) -> String {
        self.server.server()
    }
}

impl Ejabberd {
    /// Starts ejabberd and registers `users` (`name@localhost`, password `pw-name`).
    pub fn start(users: &[&str]) -> Ejabberd {
        let dir = tempfile::tempdir().unwrap();
        let server =
            localserver::Ejabberd::launch(dir.path()).unwrap_or_else(|e| fixture_failed(e));
        let port = server.port();
        let mut e = Ejabberd { server, dir, port };
        for u in users {
            e.register(u);
        }
        e
    }

    /// Registers `name@localhost` with password `pw-name` (once the virtual host is up).
    pub fn register(&mut self, name: &str) {
        self.server
            .register(name, &password(name))
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
    }

    /// The console output and ejabberd's own log.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// Password of a test user.
pub fn password(name: &str) -> String {
    format!("pw-{name}")
}

/// Alice and bob (registered on `p`), data dirs under `base`, each having verified the other.
pub fn verified_pair(p: &impl XmppServer, base: &Path) -> (User, User) {
    let alice = User::new(p, "alice", base.join("alice"));
    let bob = User::new(p, "bob", base.join("bob"));
    alice.verify(&bob);
    bob.verify(&alice);
    (alice, bob)
}

/// One user's shieldcall installation (account + data dir) against a Prosody.
pub struct User {
    /// Bare JID.
    pub jid: String,
    /// Password used.
    pub password: String,
    /// Data dir.
    pub data: PathBuf,
    /// --server.
    pub server: String,
}

impl User {
    /// A user with its own data dir under `base`.
    pub fn new(p: &impl XmppServer, name: &str, data: PathBuf) -> User {
        User {
            jid: format!("{name}@{DOMAIN}"),
            password: password(name),
            data,
            server: p.server(),
        }
    }

    /// The command with account, server and data dir set, in JSON mode.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let cli = CliAccount {
            exe: Path::new(BIN),
            server: &self.server,
            insecure_loopback: true,
            jid: &self.jid,
            data: &self.data,
            password: &self.password,
        };
        let mut c = cli.command(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs a command to its end (at most 30 s).
    pub fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.cmd(args), Duration::from_secs(30))
    }

    /// This user's `fingerprint` line (device id, fingerprint, `xmpp:` URI).
    pub fn fingerprint(&self) -> serde_json::Value {
        let out = self.run(&["fingerprint"]);
        assert!(out.status.success(), "{out:?}");
        let mut lines = json_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines.remove(0)
    }

    /// Verifies `other`'s device by its URI, as a QR scan would; returns its device id.
    pub fn verify(&self, other: &User) -> u64 {
        let device = fingerprint_device(&[other.fingerprint()]).expect("a device and its URI");
        let out = self.run(&["trust", &device.uri]);
        assert!(out.status.success(), "{out:?}");
        device.id
    }

    /// A `--duration` call from this user to `callee` (`listen --auto-answer`), media on
    /// loopback, each process with its own extra environment (a sound server's); returns both
    /// sides once the caller exited successfully and the callee was stopped.
    pub fn loopback_call(
        &self,
        callee: &User,
        seconds: u64,
        env: &[(String, String)],
        callee_env: &[(String, String)],
    ) -> (Listener, Listener) {
        let mut answering = callee.start_with_env(
            &["listen", "--auto-answer", "--media-ip", "127.0.0.1"],
            true,
            callee_env,
        );
        let duration = seconds.to_string();
        let mut calling = self.start_with_env(
            &[
                "call",
                &callee.jid,
                "--media-ip",
                "127.0.0.1",
                "--duration",
                &duration,
            ],
            false,
            env,
        );
        let status = calling
            .wait_exit(Duration::from_secs(seconds + 40))
            .unwrap_or_else(|| panic!("call did not end: {:?}", calling.seen));
        assert!(status.success(), "{:?}", calling.seen);
        answering.wait_for(|v| v["event"] == "stats", Duration::from_secs(20));
        answering.signal("TERM");
        let _ = answering.wait_exit(Duration::from_secs(10));
        (calling, answering)
    }

    /// Starts `listen` and waits for its `online` event.
    pub fn listen(&self) -> Listener {
        self.spawn_online(&["listen"], false)
    }

    /// Starts a command with `args` (stdout read as JSON lines, stdin piped and kept open);
    /// with `online`, waits for its `online` event.
    pub fn start(&self, args: &[&str], online: bool) -> Listener {
        let mut l = self.spawn(args, true);
        if online {
            l.wait_for(|v| v["event"] == "online", Duration::from_secs(30));
        }
        l
    }

    /// Starts `chat JID` (stdin piped: write lines to [`Listener::say`]) and waits for `online`.
    pub fn chat(&self, jid: &str) -> Listener {
        self.spawn_online(&["chat", jid], true)
    }

    fn spawn_online(&self, args: &[&str], stdin: bool) -> Listener {
        let mut l = self.spawn(args, stdin);
        l.wait_for(|v| v["event"] == "online", Duration::from_secs(30));
        l
    }

    /// Like [`Self::start`] with extra environment variables (a sound server's, say).
    pub fn start_with_env(
        &self,
        args: &[&str],
        online: bool,
        env: &[(String, String)],
    ) -> Listener {
        let mut l = self.spawn_with(args, true, env);
        if online {
            l.wait_for(|v| v["event"] == "online", Duration::from_secs(30));
        }
        l
    }

    fn spawn(&self, args: &[&str], stdin: bool) -> Listener {
        self.spawn_with(args, stdin, &[])
    }

    fn spawn_with(&self, args: &[&str], stdin: bool, env: &[(String, String)]) -> Listener {
        let mut c = self.cmd(args);
        c.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c.stdout(Stdio::piped());
        // Warnings and errors (and RUST_LOG output) go to the test's own stderr, shown on failure
        // only when run with --nocapture; never piped unread (a full pipe would block the client).
        c.stderr(Stdio::inherit());
        if stdin {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        localserver::process::forward_lines(stdout, move |l| tx.send(l).is_ok(), || {});
        Listener {
            child,
            lines: rx,
            seen: Vec::new(),
            stdin,
        }
    }
}

/// Runs a command, killing it after `limit`.
pub fn run_with_timeout(mut c: Command, limit: Duration) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            signal(pid, "KILL");
            panic!("command timed out after {limit:?}: {c:?}");
        }
    }
}

/// A running `shieldcall listen`, killed when dropped.
pub struct Listener {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every JSON event seen so far.
    pub seen: Vec<serde_json::Value>,
    stdin: Option<std::process::ChildStdin>,
}

impl Listener {
    /// Waits for an event matching `pred` and returns it.
    pub fn wait_for(
        &mut self,
        pred: impl Fn(&serde_json::Value) -> bool,
        limit: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v = events::parse_line(&line);
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("no matching event within {limit:?}; seen: {:?}", self.seen),
            }
        }
    }

    /// Writes a line to its standard input (`chat` only).
    pub fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("not a chat");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes its standard input (ends a `chat`) and waits for the exit status.
    pub fn end_input(mut self) -> Option<std::process::ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
            })
            .unwrap_or(0)
    }

    /// Stops it (SIGINT, like Ctrl-C) and waits for it to exit; returns the exit status.
    pub fn stop(self) -> Option<std::process::ExitStatus> {
        self.stop_with("INT")
    }

    /// Sends it a signal (`INT`, `TERM`, …).
    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Sends `sig` and waits for it to exit; returns the exit status.
    pub fn stop_with(mut self, sig: &str) -> Option<std::process::ExitStatus> {
        signal(self.child.id(), sig);
        self.wait_exit(Duration::from_secs(10))
    }

    /// Waits for it to exit by itself, reading the rest of its output into [`Self::seen`].
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader thread ends at end of output: take every line it has.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    let v = events::parse_line(&line);
                    self.seen.push(v);
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        while let Ok(line) = self.lines.try_recv() {
            // Timed out: kept as they are for the failure message (a partial line stays text).
            let v = match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) => {
                    if let Some(why) = events::mismatch(&v) {
                        panic!("{why}\n  line: {line}");
                    }
                    v
                }
                Err(_) => serde_json::Value::String(line),
            };
            self.seen.push(v);
        }
        None
    }

    /// The events seen so far named `event`.
    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.seen
            .iter()
            .filter(|v| v["event"] == event)
            .cloned()
            .collect()
    }
}

/// Sends a signal (shieldcall-localserver's, through the shell's builtin `kill`).
pub fn signal(pid: u32, sig: &str) {
    localserver::process::signal(pid, sig);
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON lines of a command's stdout, each checked against docs/events.md.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(events::parse_line)
        .collect()
}

/// A PulseAudio daemon of a test's own (shieldcall-localserver's, Debian `pulseaudio`), the
/// sound server of a desktop: by default a sine source as its microphone and a null sink as its
/// speaker, both the defaults. A client reaches it with [`Self::env`]; ALSA's default device goes
/// to it through `libasound2-plugins`. Stopped by pid when dropped.
pub struct PulseAudio {
    server: localserver::PulseAudio,
    /// Its directory (socket, log).
    pub dir: tempfile::TempDir,
}

impl PulseAudio {
    /// Starts one whose microphone sends a steady sine of `hz`, and waits until it answers.
    pub fn start(hz: u32) -> PulseAudio {
        Self::start_with(
            &format!(
                "load-module module-null-sink sink_name=speaker rate=48000 channels=1\n\
                 load-module module-sine-source source_name=mic frequency={hz} rate=48000\n\
                 set-default-sink speaker\nset-default-source mic\n"
            ),
            "speaker",
        )
    }

    /// Starts one with these modules, keeps the sink `awake` rendering, and waits until it
    /// renders.
    pub fn start_with(modules: &str, awake: &str) -> PulseAudio {
        let dir = tempfile::tempdir().unwrap();
        let server = localserver::PulseAudio::launch(dir.path(), modules, awake)
            .unwrap_or_else(|e| fixture_failed(e));
        PulseAudio { server, dir }
    }

    /// What a client process needs to reach this daemon (and only it).
    pub fn env(&self) -> Vec<(String, String)> {
        self.server.env()
    }

    /// Records what its speaker plays (the null sink's monitor), 48 kHz mono 16-bit raw, until
    /// the returned child is killed.
    pub fn record_speaker(&self, to: &Path) -> Child {
        self.server
            .record("speaker", to)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Its log.
    pub fn log(&self) -> String {
        self.server.log()
    }
}
