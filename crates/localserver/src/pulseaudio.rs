//! A PulseAudio daemon of its own (Debian `pulseaudio`), the sound server of a desktop: only
//! its own unix socket (anonymous auth) in its directory, the modules it is given, stopped by
//! pid when dropped. A client reaches it, and only it, with [`PulseAudio::env`]; ALSA's default
//! device goes to it through `libasound2-plugins`, as on a desktop.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::Error;
use crate::process::{find_tool, last_lines, one_line, wait_ready};

/// How long the daemon may take to answer on its socket.
const START_LIMIT: Duration = Duration::from_secs(20);

/// How long a null sink may take to render its first period once something plays.
const AWAKE_LIMIT: Duration = Duration::from_secs(10);

/// Where Debian puts ALSA's pulse plugin (amd64, arm64).
const ALSA_PULSE_PLUGIN: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so",
    "/usr/lib/aarch64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so",
];

/// A running PulseAudio.
#[derive(Debug)]
pub struct PulseAudio {
    child: Child,
    /// Keeps a sink rendering at a low latency (see [`PulseAudio::launch`]).
    warm: Option<Child>,
    dir: PathBuf,
    parec: PathBuf,
}

impl PulseAudio {
    /// Starts a daemon in `dir` with these `modules` (default.pa lines after its socket), keeps
    /// the sink `awake` rendering with a silent low-latency stream, and returns once that sink's
    /// monitor delivers audio. (A null sink sleeps for its configured latency, 2 s, between
    /// renders while nothing plays, so the first stream would wait up to 2 s for its first
    /// period: no real speaker does that.)
    pub fn launch(dir: &Path, modules: &str, awake: &str) -> Result<PulseAudio, Error> {
        let pulseaudio = find_tool("pulseaudio", "pulseaudio")?;
        let pactl = find_tool("pactl", "pulseaudio-utils")?;
        let pacat = find_tool("pacat", "pulseaudio-utils")?;
        let parec = find_tool("parec", "pulseaudio-utils")?;
        if !ALSA_PULSE_PLUGIN.iter().any(|p| Path::new(p).exists()) {
            return Err(Error::NotInstalled {
                tool: "ALSA's pulse plugin".into(),
                package: "libasound2-plugins".into(),
            });
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let config = format!(
            "load-module module-native-protocol-unix socket={}/native auth-anonymous=1\n{modules}",
            dir.display()
        );
        std::fs::write(dir.join("default.pa"), config)
            .map_err(|e| Error::io("cannot write default.pa", e))?;
        let log = std::fs::File::create(dir.join("pulseaudio.log"))
            .map_err(|e| Error::io("cannot create PulseAudio's log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io("cannot create PulseAudio's log", e))?;
        let child = Command::new(&pulseaudio)
            .args(["-n", "-F"])
            .arg(dir.join("default.pa"))
            .args(["--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no"])
            .args(["--disallow-module-loading", "--log-target=stderr"])
            .env("HOME", dir)
            .env("XDG_RUNTIME_DIR", dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error::io(format!("cannot start {}", pulseaudio.display()), e))?;
        let mut pa = PulseAudio {
            child,
            warm: None,
            dir: dir.to_owned(),
            parec,
        };
        let (logs, env) = ([dir.join("pulseaudio.log")], pa.env());
        let never = &crate::process::never;
        wait_ready(
            &mut pa.child,
            "pulseaudio",
            "answer",
            START_LIMIT,
            never,
            &logs,
            || {
                Command::new(&pactl)
                    .arg("info")
                    .envs(env.iter().cloned())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            },
        )?;
        let warm = Command::new(&pacat)
            .args([
                "-d",
                awake,
                "--rate=48000",
                "--channels=1",
                "--format=s16le",
                "--raw",
            ])
            .args(["--latency-msec=10", "/dev/zero"])
            .envs(pa.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io("cannot start pacat", e))?;
        pa.warm = Some(warm);
        pa.wait_awake(awake)?;
        Ok(pa)
    }

    /// What a client process needs to reach this daemon (and only it).
    pub fn env(&self) -> Vec<(String, String)> {
        let d = self.dir.display();
        vec![
            ("PULSE_SERVER".into(), format!("unix:{d}/native")),
            ("PULSE_RUNTIME_PATH".into(), d.to_string()),
        ]
    }

    /// Records what `sink` plays (its monitor), 48 kHz mono 16-bit raw, into `to` until the
    /// returned child is killed.
    pub fn record(&self, sink: &str, to: &Path) -> Result<Child, Error> {
        let file = std::fs::File::create(to)
            .map_err(|e| Error::io(format!("cannot create {}", to.display()), e))?;
        self.parec(sink)
            .stdout(file)
            .spawn()
            .map_err(|e| Error::io("cannot start parec", e))
    }

    /// `parec` reading `sink`'s monitor, 48 kHz mono 16-bit raw at a 10 ms latency, from this
    /// daemon only (stdout still to set).
    fn parec(&self, sink: &str) -> Command {
        let mut cmd = Command::new(&self.parec);
        cmd.args([
            "-d",
            &format!("{sink}.monitor"),
            "--rate=48000",
            "--channels=1",
        ])
        .args(["--format=s16le", "--raw", "--latency-msec=10"])
        .envs(self.env())
        .stdin(Stdio::null())
        .stderr(Stdio::null());
        cmd
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pulseaudio.log")).unwrap_or_default()
    }

    fn not_ready(&self, what: String) -> Error {
        Error::NotReady {
            what,
            output: one_line(&last_lines(&self.log(), 8)),
        }
    }

    /// Waits until `sink` renders: data flows out of its monitor.
    fn wait_awake(&mut self, sink: &str) -> Result<(), Error> {
        let mut probe = self
            .parec(sink)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("cannot start parec", e))?;
        let out = probe.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4800];
            let _ = tx.send(out.is_some_and(|mut o| o.read_exact(&mut buf).is_ok()));
        });
        let awake = rx.recv_timeout(AWAKE_LIMIT);
        let _ = probe.kill();
        let _ = probe.wait();
        if awake == Ok(true) {
            return Ok(());
        }
        Err(self.not_ready(format!(
            "{sink} never rendered within {}s",
            AWAKE_LIMIT.as_secs()
        )))
    }
}

impl Drop for PulseAudio {
    fn drop(&mut self) {
        if let Some(w) = self.warm.as_mut() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
