//! Child processes with deadlines, and the small helpers around them.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::Error;

/// How often a bounded wait looks at its child and its cancel condition.
const POLL: Duration = Duration::from_millis(10);

/// How often [`wait_ready`] asks a starting server.
const READY_POLL: Duration = Duration::from_millis(50);

/// A cancel condition that never becomes true.
pub fn never() -> bool {
    false
}

/// Where `tool` is: on `PATH` or in the usual system directories; else
/// [`Error::NotInstalled`] naming `package`.
pub fn find_tool(tool: &str, package: &str) -> Result<PathBuf, Error> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let fixed = ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from);
    path_dirs
        .into_iter()
        .chain(fixed)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::NotInstalled {
            tool: tool.to_owned(),
            package: package.to_owned(),
        })
}

/// How many ports below the kernel's ephemeral range [`free_port`] chooses from.
const PORT_SPAN: u32 = 12_000;

/// Ports [`free_port`] handed out in this process, so that it never gives one twice.
static PORTS_HANDED_OUT: AtomicU32 = AtomicU32::new(0);

/// A TCP port on 127.0.0.1 that is free now and stays free for a server about to bind it.
///
/// A port from `bind(0)` is the worst choice: it is in the kernel's ephemeral range, from which
/// every other `bind(0)` and every outgoing connection takes its port, so between closing the
/// probe and the server's own `bind` another fixture's proxy or a client's source port can take
/// it, and the server then fails to listen while the other process answers in its place. This
/// picks from the `PORT_SPAN` ports just below that range (`ip_local_port_range`), which the
/// kernel never hands out by itself; successive calls in one process walk through them from a
/// start that depends on the pid, so parallel fixtures and parallel processes do not meet.
/// [`listening_owner_is`] then proves that the server listening there is the one started.
pub fn free_port() -> Result<u16, Error> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .clamp(PORT_SPAN + 1_024, 65_535);
    let base = low - PORT_SPAN;
    let start = std::process::id().wrapping_mul(7_919) % PORT_SPAN;
    for _ in 0..PORT_SPAN {
        let n = PORTS_HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(base + (start + n) % PORT_SPAN) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::io(
        "no free loopback port below the ephemeral range",
        std::io::Error::from(std::io::ErrorKind::AddrInUse),
    ))
}

/// Whether the socket listening on TCP `port` of 127.0.0.1 belongs to process `pid` (read from
/// `/proc`): `Some(false)` when another process listens there, `None` when nobody does or
/// `/proc` cannot tell.
pub fn listening_owner_is(pid: u32, port: u16) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    // sl local_address rem_address st ... uid timeout inode; 0100007F = 127.0.0.1, 0A = LISTEN.
    let wanted = format!("0100007F:{port:04X}");
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&wanted.as_str()) && f.get(3) == Some(&"0A"))
            .then(|| f.get(9).map(|i| format!("socket:[{i}]")))
            .flatten()
    })?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == inode.as_str())),
    )
}

/// Sends signal `sig` (`INT`, `TERM`, `KILL`, …) to process `pid`; whether it was sent.
///
/// Through the shell's builtin `kill` (dash, essential on Debian): the crate has no libc
/// binding and forbids unsafe code, and `/bin/kill` comes from procps, which a minimal Debian
/// lacks. Signal only a child that is not reaped yet, so that the pid is still its own.
pub fn signal(pid: u32, sig: &str) -> bool {
    if sig.is_empty() || !sig.chars().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    Command::new("/bin/sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", sig])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Reads `from` (a child's stdout or stderr) line by line on a thread of its own, handing each
/// line to `each` until it returns `false` (the receiver is gone: nothing more is read) or the
/// stream ends, which `end` is then told. The reader never
/// blocks the child on a full pipe, and the caller waits on its own channel with its own deadline.
pub fn forward_lines<R: Read + Send + 'static>(
    from: R,
    mut each: impl FnMut(String) -> bool + Send + 'static,
    end: impl FnOnce() + Send + 'static,
) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if !each(line) {
                return;
            }
        }
        end();
    });
}

/// Whether this process runs as root (uid 0 in /proc/self/status: no libc binding, no unsafe).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Waits until a server started as `child` is `ready()` (polled every 50 ms), at most `limit`.
/// If it exits first, the deadline passes or `cancelled()` turns true, the error names `name`
/// and what was `awaited` and carries the end of the files in `logs`.
pub fn wait_ready(
    child: &mut Child,
    name: &str,
    awaited: &str,
    limit: Duration,
    cancelled: &dyn Fn() -> bool,
    logs: &[PathBuf],
    mut ready: impl FnMut() -> bool,
) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    while !ready() {
        let what = match child.try_wait() {
            Ok(Some(status)) => format!("{name} exited ({status})"),
            Ok(None) if cancelled() => {
                return Err(Error::Cancelled {
                    what: format!("starting {name}"),
                });
            }
            Ok(None) if Instant::now() >= deadline => {
                format!("{name} did not {awaited} within {}s", limit.as_secs())
            }
            Ok(None) => {
                std::thread::sleep(READY_POLL);
                continue;
            }
            Err(e) => return Err(Error::io(format!("cannot watch {name}"), e)),
        };
        let log: String = logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect();
        return Err(Error::NotReady {
            what,
            output: one_line(&last_lines(&log, 8)),
        });
    }
    Ok(())
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

/// Runs `cmd` to its end with stdin closed and both pipes read on threads (a chatty command
/// cannot block on a full pipe); kills it (by pid) after `limit` or once `cancelled()` is true.
pub fn run_bounded(
    mut cmd: Command,
    limit: Duration,
    what: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<Finished, Error> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("cannot start {what}"), e))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if cancelled() => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Cancelled { what: what.into() });
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    what: what.into(),
                    limit,
                });
            }
            Err(e) => return Err(Error::io(format!("cannot wait for {what}"), e)),
        }
    };
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Like [`run_bounded`], and a non-zero exit is [`Error::Failed`] with its output.
pub fn run_ok(
    cmd: Command,
    limit: Duration,
    what: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<Finished, Error> {
    let done = run_bounded(cmd, limit, what, cancelled)?;
    if done.status.success() {
        return Ok(done);
    }
    Err(Error::Failed {
        what: what.into(),
        status: done.status,
        output: one_line(&format!("{}{}", done.stdout, done.stderr)),
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

/// `text` on one line (errors are one line each): its non-empty lines joined by ` | `.
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_reaches_the_child_and_lines_arrive_in_order() {
        let mut child = Command::new("/bin/sh")
            .args(["-c", "echo one; echo two; exec sleep 30"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let done = tx.clone();
        let out = child.stdout.take().unwrap();
        forward_lines(
            out,
            move |l| tx.send(Some(l)).is_ok(),
            move || {
                let _ = done.send(None);
            },
        );
        let next = || rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((next(), next()), (Some("one".into()), Some("two".into())));
        assert!(
            !signal(child.id(), "TERM; rm -rf /"),
            "only signal names pass"
        );
        assert!(signal(child.id(), "TERM"));
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert_eq!(next(), None, "the end of the output is reported");
    }

    #[test]
    fn ports_are_distinct_and_never_from_the_ephemeral_range() {
        let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        for (i, p) in ports.iter().enumerate() {
            assert!(
                u32::from(*p) < low,
                "{p} is in the ephemeral range from {low}"
            );
            assert!(!ports[..i].contains(p), "{p} handed out twice");
        }
    }

    #[test]
    fn the_owner_of_a_listening_port_is_found() {
        let port = free_port().unwrap();
        assert_eq!(listening_owner_is(std::process::id(), port), None);
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(listening_owner_is(std::process::id(), port), Some(true));
        // Another process (a shell that is still running) does not own it.
        let mut other = Command::new("/bin/sh")
            .args(["-c", "exec sleep 5"])
            .spawn()
            .unwrap();
        assert_eq!(listening_owner_is(other.id(), port), Some(false));
        let _ = other.kill();
        let _ = other.wait();
        drop(l);
    }

    #[test]
    fn bounded_run_kills_a_hanging_command() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo started; exec sleep 30"]);
        let t = Instant::now();
        let e = run_bounded(c, Duration::from_millis(300), "sleeper", &never);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(matches!(e, Err(Error::Timeout { .. })), "{e:?}");
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let Ok(f) = run_bounded(c, Duration::from_secs(10), "sh", &never) else {
            unreachable!("sh runs")
        };
        assert_eq!(f.status.code(), Some(3));
        assert_eq!((f.stdout.as_str(), f.stderr.as_str()), ("out\n", "err\n"));
    }

    #[test]
    fn a_cancelled_run_stops_at_once() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "exec sleep 30"]);
        let t = Instant::now();
        let e = run_bounded(c, Duration::from_secs(30), "sleeper", &|| true);
        assert!(matches!(e, Err(Error::Cancelled { .. })), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_failing_command_says_what_it_printed() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo first; echo second >&2; exit 2"]);
        let e = run_ok(c, Duration::from_secs(10), "sh", &never).map(|_| ());
        let text = e.map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(text.contains("sh failed"), "{text}");
        assert!(text.contains("first | second"), "{text}");
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let e = find_tool("prosody-that-does-not-exist", "prosody").map(|_| ());
        let text = e.map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(text.contains("apt-get install -y prosody"), "{text}");
    }

    #[test]
    fn a_server_start_is_waited_for_with_a_deadline() {
        let dir = std::env::temp_dir().join(format!("localserver-wait-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let log = dir.join("log");
        let _ = std::fs::write(&log, "first\nlast words\n");
        let spawn = |script: &str| {
            Command::new("/bin/sh")
                .args(["-c", script])
                .spawn()
                .map_err(|e| e.to_string())
        };
        let limit = Duration::from_secs(5);
        // Ready on the third look.
        let Ok(mut c) = spawn("exec sleep 30") else {
            unreachable!("sh runs")
        };
        let mut looks = 0;
        let ok = wait_ready(&mut c, "srv", "answer", limit, &never, &[], || {
            looks += 1;
            looks == 3
        });
        assert!(ok.is_ok() && looks == 3, "{ok:?} {looks}");
        let _ = c.kill();
        let _ = c.wait();
        // Exits first: named, with the end of its log.
        let Ok(mut c) = spawn("exit 4") else {
            unreachable!("sh runs")
        };
        let e = wait_ready(
            &mut c,
            "srv",
            "answer",
            limit,
            &never,
            std::slice::from_ref(&log),
            || false,
        );
        let text = e.map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(
            text.contains("srv exited") && text.contains("last words"),
            "{text}"
        );
        // Never ready: the deadline.
        let Ok(mut c) = spawn("exec sleep 30") else {
            unreachable!("sh runs")
        };
        let short = Duration::from_millis(200);
        let e = wait_ready(&mut c, "srv", "answer", short, &never, &[], || false);
        assert!(
            matches!(&e, Err(Error::NotReady { what, .. }) if what.contains("did not answer")),
            "{e:?}"
        );
        // Cancelled.
        let e = wait_ready(&mut c, "srv", "answer", limit, &|| true, &[], || false);
        assert!(matches!(e, Err(Error::Cancelled { .. })), "{e:?}");
        let _ = c.kill();
        let _ = c.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn output_is_trimmed_to_lines() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b\nc");
        assert_eq!(one_line(" a \n\n b\n"), "a | b");
        assert_eq!(one_line("\n"), "(nothing)");
    }
}
