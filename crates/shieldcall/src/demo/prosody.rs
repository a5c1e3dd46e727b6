//! A throw-away Prosody for the demo: its own directory (config, data, log), plaintext c2s on a
//! free loopback port, stopped by pid when dropped, also on every error path.
//!
//! The configuration follows the test fixture (`tests/common/mod.rs`): only the modules a client
//! needs for OMEMO and calls (roster, SASL, disco, PEP, carbons, ping, offline storage), no s2s,
//! and plain SASL without TLS, which is acceptable only because it listens on 127.0.0.1.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::ClientError;

/// The one virtual host; accounts are `name@localhost`.
pub const DOMAIN: &str = "localhost";

/// How long Prosody may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(20);

/// How long one `prosodyctl` call may take.
const CTL_LIMIT: Duration = Duration::from_secs(30);

/// The install command a missing Prosody error names (Debian 12 ships Prosody 0.12).
pub const INSTALL_HINT: &str = "apt-get install -y prosody";

/// A running Prosody in `dir`, listening on `127.0.0.1:port`. Dropping it stops the server.
#[derive(Debug)]
pub struct LocalProsody {
    child: Child,
    prosodyctl: PathBuf,
    config: PathBuf,
    log: PathBuf,
    port: u16,
}

impl LocalProsody {
    /// Writes a configuration into `dir` (which must exist and be writable), starts
    /// `prosody --config … -F` and waits until it accepts connections.
    pub fn start(dir: &Path) -> Result<LocalProsody, ClientError> {
        let prosody = find_tool("prosody")?;
        let prosodyctl = find_tool("prosodyctl")?;
        let io = |what: &str, e: std::io::Error| ClientError::Io(format!("{what}: {e}"));
        std::fs::create_dir_all(dir.join("data"))
            .map_err(|e| io(&format!("cannot create {}", dir.join("data").display()), e))?;
        let port = free_port()?;
        let config = dir.join("prosody.cfg.lua");
        let log = dir.join("prosody.log");
        std::fs::write(&config, config_text(dir, port, is_root()))
            .map_err(|e| io(&format!("cannot write {}", config.display()), e))?;
        let console = std::fs::File::create(dir.join("console.log"))
            .map_err(|e| io("cannot create Prosody's console log", e))?;
        let console2 = console
            .try_clone()
            .map_err(|e| io("cannot create Prosody's console log", e))?;
        // Never `prosody --version` or the like: on Debian that starts the system server.
        let child = Command::new(&prosody)
            .arg("--config")
            .arg(&config)
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .spawn()
            .map_err(|e| io(&format!("cannot start {}", prosody.display()), e))?;
        let mut server = LocalProsody {
            child,
            prosodyctl,
            config,
            log,
            port,
        };
        server.wait_listening(dir)?;
        Ok(server)
    }

    /// The `--server` value for clients.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The c2s port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Prosody's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Creates the account `name@localhost` with `password` (`prosodyctl register`).
    pub fn register(&self, name: &str, password: &str) -> Result<(), ClientError> {
        let mut cmd = Command::new(&self.prosodyctl);
        cmd.arg("--config")
            .arg(&self.config)
            .args(["register", name, DOMAIN, password]);
        let out = run_bounded(cmd, CTL_LIMIT, "prosodyctl register")?;
        if out.status.success() {
            return Ok(());
        }
        Err(ClientError::Io(format!(
            "prosodyctl register {name} {DOMAIN} failed ({}): {}",
            out.status,
            one_line(&format!("{}{}", out.stdout, out.stderr))
        )))
    }

    fn wait_listening(&mut self, dir: &Path) -> Result<(), ClientError> {
        let deadline = Instant::now() + START_LIMIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let why = match self.child.try_wait() {
                Ok(Some(status)) => Some(format!("Prosody exited ({status})")),
                Ok(None) if super::interrupted() => Some(super::INTERRUPTED.to_owned()),
                Ok(None) if Instant::now() >= deadline => Some(format!(
                    "Prosody did not listen on 127.0.0.1:{} within {}s",
                    self.port,
                    START_LIMIT.as_secs()
                )),
                Ok(None) => None,
                Err(e) => Some(format!("cannot watch Prosody: {e}")),
            };
            if let Some(why) = why {
                let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(ClientError::Io(format!(
                    "{why}; last output: {}",
                    one_line(&last_lines(&format!("{console}{log}"), 5))
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for LocalProsody {
    fn drop(&mut self) {
        // Child::kill signals exactly this pid (SIGKILL): the server's state is thrown away anyway.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The configuration: plaintext c2s on one loopback port, no s2s, internal storage under `dir`.
fn config_text(dir: &Path, port: u16, root: bool) -> String {
    // Prosody refuses to run as root unless told that it is intended (the demo may run as root
    // in a container; it is a throw-away server bound to loopback).
    let root = if root { "run_as_root = true\n" } else { "" };
    let d = lua_string(&dir.display().to_string());
    format!(
        r#"{root}daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{d}/prosody.log" }} }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
s2s_interfaces = {{ }}
modules_enabled = {{ "roster", "saslauth", "disco", "pep", "carbons", "ping", "register", "offline", "posix" }}
modules_disabled = {{ "s2s" }}
allow_unencrypted_plain_auth = true
c2s_require_encryption = false
-- Call set-up is a burst of small stanzas: do not hold them back for delayed ACKs.
network_settings = {{ nagle = false }}
authentication = "internal_hashed"
storage = "internal"
VirtualHost "{DOMAIN}"
"#
    )
}

/// Escapes a path for a double-quoted Lua string.
fn lua_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Where a Prosody tool is, or an error naming the command that installs it.
pub fn find_tool(tool: &str) -> Result<PathBuf, ClientError> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let fixed = ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from);
    path_dirs
        .into_iter()
        .chain(fixed)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            ClientError::Io(format!(
                "{tool} is not installed; the demo needs Prosody for its throw-away XMPP server: \
                 run `{INSTALL_HINT}` as root (scripts/demo installs it when missing)"
            ))
        })
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, ClientError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ClientError::Io(format!("no free loopback port: {e}")))
}

/// Whether we run as root (Prosody then needs `run_as_root`). Read from /proc: the crate has no
/// libc binding and forbids unsafe code.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output (lossy UTF-8).
    pub stdout: String,
    /// Its standard error (lossy UTF-8).
    pub stderr: String,
}

/// Runs `cmd` to its end with stdin closed, killing it (by pid) after `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> Result<Finished, ClientError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| ClientError::Io(format!("cannot start {what}: {e}")))?;
    // Read both pipes on threads so that a chatty command cannot block on a full pipe.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if super::interrupted() => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ClientError::Io(format!("{what}: {}", super::INTERRUPTED)));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ClientError::Io(format!(
                    "{what} did not finish within {}s",
                    limit.as_secs()
                )));
            }
            Err(e) => return Err(ClientError::Io(format!("cannot wait for {what}: {e}"))),
        }
    };
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Reads a pipe to its end on a thread.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The last `n` non-empty lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `text` on one line (errors are one line each).
pub fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if joined.is_empty() {
        "(nothing)".to_owned()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_binds_loopback_only_and_escapes_the_path() {
        let c = config_text(Path::new("/tmp/a\"b"), 5999, true);
        assert!(c.starts_with("run_as_root = true\n"));
        assert!(c.contains("c2s_ports = { 5999 }"));
        assert!(c.contains("c2s_interfaces = { \"127.0.0.1\" }"));
        assert!(c.contains("data_path = \"/tmp/a\\\"b/data\""));
        assert!(c.contains("c2s_require_encryption = false"));
        assert!(!config_text(Path::new("/tmp"), 1, false).contains("run_as_root"));
    }

    #[test]
    fn a_missing_tool_names_the_install_command() {
        let e = find_tool("prosody-that-does-not-exist")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apt-get install -y prosody"), "{e}");
        assert!(e.contains("scripts/demo"), "{e}");
    }

    #[test]
    fn bounded_run_kills_a_hanging_command() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo started; exec sleep 30"]);
        let t = Instant::now();
        let e = run_bounded(c, Duration::from_millis(300), "sleeper").unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(e.to_string().contains("sleeper did not finish"), "{e}");
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let f = run_bounded(c, Duration::from_secs(10), "sh").unwrap();
        assert_eq!(f.status.code(), Some(3));
        assert_eq!((f.stdout.as_str(), f.stderr.as_str()), ("out\n", "err\n"));
    }
}
