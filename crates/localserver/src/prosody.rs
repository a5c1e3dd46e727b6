//! A throw-away Prosody: its own directory (config, data, certificates, logs), c2s on free
//! loopback ports, no s2s, only the modules a client needs for OMEMO and calls (roster, SASL,
//! disco, PEP, carbons, ping, offline storage). Plain SASL without TLS is allowed, which is
//! acceptable only because it listens on 127.0.0.1 — or, with [`ProsodyConfig::namespace`], on
//! the lab's internet segment, which nothing outside the lab reaches (clients there use TLS with
//! the throw-away CA). With [`ProsodyConfig::turn`] it also hands out STUN/TURN services with
//! coturn's REST credentials (XEP-0215, `mod_turn_external`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::Error;
use crate::certs::make_certificates;
use crate::process::{find_tool, free_port, is_root, listening_owner_is, run_ok, wait_ready};

/// The one virtual host; accounts are `name@localhost`.
pub const DOMAIN: &str = "localhost";

/// How long Prosody may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(20);

/// How long one `prosodyctl` call may take.
const TOOL_LIMIT: Duration = Duration::from_secs(30);

/// How the server is set up.
#[derive(Debug, Clone, Default)]
pub struct ProsodyConfig {
    /// STARTTLS on the c2s port and direct TLS on a second port, with a certificate for
    /// `localhost` signed by a throw-away CA ([`Prosody::ca_file`]); needs `openssl`.
    pub tls: bool,
    /// Log at debug level (every stanza) instead of info.
    pub debug_log: bool,
    /// STUN and TURN services for clients (XEP-0215) through Prosody 0.12's
    /// `mod_turn_external`; `None`: no such module, the server answers `service-unavailable`.
    pub turn: Option<TurnExternal>,
    /// Run inside this network namespace of the lab ([`crate::lab::Lab::name`]), listening on
    /// this address of it (fixed ports 5222 and, with `tls`, 5223: the namespace is the
    /// server's own); `None`: on free ports of 127.0.0.1 of the host.
    pub namespace: Option<InNamespace>,
    /// Leave out stream management (XEP-0198, `mod_smacks`, on by default as on the servers
    /// people use): for a test proxy that injects or drops stanzas between client and server,
    /// which would break the stanza counts both keep, so the server would close the stream.
    pub without_smacks: bool,
}

/// Where in the lab a Prosody runs ([`ProsodyConfig::namespace`]).
#[derive(Debug, Clone)]
pub struct InNamespace {
    /// The namespace's name.
    pub name: String,
    /// The address to listen on (the lab's server address, 203.0.113.10).
    pub address: std::net::Ipv4Addr,
}

/// The options of Prosody 0.12's `mod_turn_external` (names as in its source,
/// `/usr/lib/prosody/modules/mod_turn_external.lua`): it announces `stun` and `turn` over
/// UDP (and TCP with `tcp`, `turns` with `tls_port`) at `host:port`, the TURN ones with
/// coturn's REST credentials made from `secret` (`use-auth-secret` with the same
/// `static-auth-secret`), valid for `ttl`.
#[derive(Clone)]
pub struct TurnExternal {
    /// `turn_external_secret`: the secret shared with the TURN server.
    pub secret: String,
    /// `turn_external_host`: the STUN/TURN server's host name or address (Prosody's default is
    /// the virtual host's name).
    pub host: String,
    /// `turn_external_port`: its UDP (and TCP) port (Prosody's default 3478).
    pub port: u16,
    /// `turn_external_tcp`: also announce STUN and TURN over TCP on `port`.
    pub tcp: bool,
    /// `turn_external_tls_port`: also announce TURN over TLS (`turns`) on this port.
    pub tls_port: Option<u16>,
    /// `turn_external_ttl`: how long the credentials are valid (Prosody's default a day).
    pub ttl: Duration,
}

impl std::fmt::Debug for TurnExternal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnExternal")
            .field("secret", &"<redacted>")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tcp", &self.tcp)
            .field("tls_port", &self.tls_port)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// A running Prosody in its directory, listening on `127.0.0.1`. Dropping it stops the server
/// (SIGKILL to exactly its pid: its state is thrown away anyway).
#[derive(Debug)]
pub struct Prosody {
    child: Child,
    prosody: PathBuf,
    prosodyctl: PathBuf,
    dir: PathBuf,
    port: u16,
    tls_port: Option<u16>,
    namespace: Option<InNamespace>,
}

/// Why a start is tried again with other ports.
const TAKEN: &str = "another process listens there";

impl Prosody {
    /// Writes a configuration into `dir` (created if missing), starts `prosody -F` and waits
    /// until it accepts connections (at most 20 s, or until `cancelled()`).
    pub fn launch(
        dir: &Path,
        config: &ProsodyConfig,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Prosody, Error> {
        let prosody = find_tool("prosody", "prosody")?;
        let prosodyctl = find_tool("prosodyctl", "prosody")?;
        for sub in ["data", "certs"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
        }
        if config.tls {
            // `dir/ca.crt` and `dir/certs/localhost.{crt,key}`, where Prosody looks for them.
            make_certificates(dir, DOMAIN, &[format!("DNS:{DOMAIN}")], cancelled)?;
        }
        let path = dir.join("prosody.cfg.lua");
        let mut attempt = 1;
        loop {
            let (port, tls_port) = match &config.namespace {
                Some(_) => (5222, config.tls.then_some(5223)),
                None => (free_port()?, config.tls.then(free_port).transpose()?),
            };
            let text = config_text(dir, port, tls_port, is_root(), config);
            std::fs::write(&path, text)
                .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
            let child = spawn(&prosody, dir, config.namespace.as_ref())?;
            let mut server = Prosody {
                child,
                prosody: prosody.clone(),
                prosodyctl: prosodyctl.clone(),
                dir: dir.to_owned(),
                port,
                tls_port,
                namespace: config.namespace.clone(),
            };
            match server.wait_listening(cancelled) {
                // Another process took a port between the choice and Prosody's bind: choose
                // again (Drop stops this Prosody).
                Err(Error::NotReady { what, .. }) if what.contains(TAKEN) && attempt < 3 => {
                    attempt += 1;
                }
                other => return other.map(|()| server),
            }
        }
    }

    /// The `--server` value for clients: `127.0.0.1:PORT` (in the lab, the namespace's
    /// address).
    pub fn server(&self) -> String {
        format!("{}:{}", self.address(), self.port)
    }

    /// The address it listens on.
    pub fn address(&self) -> std::net::Ipv4Addr {
        self.namespace
            .as_ref()
            .map_or(std::net::Ipv4Addr::LOCALHOST, |n| n.address)
    }

    /// The c2s port on 127.0.0.1 (plaintext, or STARTTLS with [`ProsodyConfig::tls`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The direct-TLS port, with [`ProsodyConfig::tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The throw-away CA's certificate that signed the server's (with [`ProsodyConfig::tls`]).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Prosody's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("prosody.log")
    }

    /// Prosody's log and console output so far.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("console.log"), read("prosody.log"))
    }

    /// Creates the account `name@localhost` with `password` (`prosodyctl register`).
    pub fn register(&self, name: &str, password: &str) -> Result<(), Error> {
        let mut cmd = Command::new(&self.prosodyctl);
        cmd.arg("--config")
            .arg(self.dir.join("prosody.cfg.lua"))
            .args(["register", name, DOMAIN, password]);
        let what = format!("prosodyctl register {name} {DOMAIN}");
        run_ok(cmd, TOOL_LIMIT, &what, &crate::process::never).map(|_| ())
    }

    /// Stops Prosody and starts it again on the same ports with the same data, so that clients
    /// see their connection break and come back.
    pub fn restart(&mut self) -> Result<(), Error> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.prosody, &self.dir, self.namespace.as_ref())?;
        self.wait_listening(&crate::process::never)
    }

    /// Makes `a` and `b` (local parts) mutual contacts (subscription both) by writing
    /// Prosody's roster files; call before either logs in.
    pub fn befriend(&self, a: &str, b: &str) -> Result<(), Error> {
        let dir = self.dir.join("data").join(DOMAIN).join("roster");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        for (owner, contact) in [(a, b), (b, a)] {
            let path = dir.join(format!("{owner}.dat"));
            let mut items = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| {
                    s.split_once("return {\n")
                        .map(|(_, r)| r.trim_end_matches("};\n").to_owned())
                })
                .unwrap_or_else(|| "\t[false] = { [\"version\"] = 1; };\n".to_owned());
            items.push_str(&format!(
                "\t[\"{contact}@{DOMAIN}\"] = {{ [\"subscription\"] = \"both\"; [\"groups\"] = {{}}; }};\n"
            ));
            std::fs::write(&path, format!("return {{\n{items}}};\n"))
                .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Every file of Prosody's data directory, concatenated (what the server stored).
    pub fn stored_data(&self) -> String {
        fn walk(p: &Path, out: &mut String, budget: &mut usize) {
            let Ok(rd) = std::fs::read_dir(p) else { return };
            for e in rd.flatten() {
                if *budget == 0 {
                    return;
                }
                *budget -= 1;
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out, budget);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
        let mut s = String::new();
        walk(&self.dir.join("data"), &mut s, &mut 10_000);
        s
    }

    /// Waits until Prosody itself listens on its ports (not merely: something answers there).
    fn wait_listening(&mut self, cancelled: &dyn Fn() -> bool) -> Result<(), Error> {
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        let logs = [self.dir.join("console.log"), self.log_path()];
        let awaited = format!("listen on 127.0.0.1:{ports:?}");
        let pid = self.child.id();
        if let Some(ns) = &self.namespace {
            // In its own namespace nothing else can hold the port; /proc/PID/net/tcp is the
            // namespace's table (the host's /proc/net/tcp is not).
            let address = ns.address;
            let awaited = format!("listen on {address}:{ports:?} in namespace {}", ns.name);
            return wait_ready(
                &mut self.child,
                "Prosody",
                &awaited,
                START_LIMIT,
                cancelled,
                &logs,
                || {
                    ports.iter().all(|&p| {
                        let addr = std::net::SocketAddrV4::new(address, p);
                        crate::lab::bound_by(pid, crate::lab::Transport::Tcp, addr)
                    })
                },
            );
        }
        let mut taken = None;
        wait_ready(
            &mut self.child,
            "Prosody",
            &awaited,
            START_LIMIT,
            cancelled,
            &logs,
            || {
                ports
                    .iter()
                    .all(|&port| match listening_owner_is(pid, port) {
                        Some(true) => true,
                        Some(false) => {
                            taken = Some(port);
                            true
                        }
                        // /proc cannot tell: a connection that is accepted is the best sign left.
                        None => TcpStream::connect(("127.0.0.1", port)).is_ok(),
                    })
            },
        )?;
        match taken {
            Some(port) => Err(Error::NotReady {
                what: format!("Prosody could not listen on 127.0.0.1:{port}: {TAKEN}"),
                output: String::new(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `prosody --config DIR/prosody.cfg.lua -F`, its output into `DIR/console.log`. Never
/// `prosody --version` or the like: on Debian that starts the system server.
fn spawn(prosody: &Path, dir: &Path, namespace: Option<&InNamespace>) -> Result<Child, Error> {
    let console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("console.log"))
        .map_err(|e| Error::io("cannot create Prosody's console log", e))?;
    let console2 = console
        .try_clone()
        .map_err(|e| Error::io("cannot create Prosody's console log", e))?;
    // `ip netns exec` executes Prosody in its own place: the child's pid is Prosody's.
    let mut command = match namespace {
        Some(ns) => {
            let mut c = Command::new(find_tool("ip", "iproute2")?);
            c.args(["netns", "exec", &ns.name]).arg(prosody);
            c
        }
        None => Command::new(prosody),
    };
    command
        .arg("--config")
        .arg(dir.join("prosody.cfg.lua"))
        .arg("-F")
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console2)
        .spawn()
        .map_err(|e| Error::io(format!("cannot start {}", prosody.display()), e))
}

/// The configuration: c2s on one loopback port (and direct TLS on another), no s2s, internal
/// storage under `dir`, and `mod_turn_external` with [`ProsodyConfig::turn`].
fn config_text(
    dir: &Path,
    port: u16,
    tls_port: Option<u16>,
    root: bool,
    config: &ProsodyConfig,
) -> String {
    // Prosody refuses to run as root unless told that it is intended (a container, CI): it is a
    // throw-away server bound to loopback.
    let root = if root { "run_as_root = true\n" } else { "" };
    let level = if config.debug_log { "debug" } else { "info" };
    let (turn_module, turn_options) = match &config.turn {
        Some(t) => (", \"turn_external\"", turn_options(t)),
        None => ("", String::new()),
    };
    let (tls_module, direct_tls) = match tls_port {
        Some(p) => ("\"tls\", ", p.to_string()),
        None => ("", String::new()),
    };
    let smacks = if config.without_smacks {
        ""
    } else {
        ", \"smacks\""
    };
    let d = lua_string(&dir.display().to_string());
    let address = config
        .namespace
        .as_ref()
        .map_or(std::net::Ipv4Addr::LOCALHOST, |n| n.address);
    format!(
        r#"{root}daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}/certs"
log = {{ {{ levels = {{ min = "{level}" }}, to = "file", filename = "{d}/prosody.log" }} }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "{address}" }}
c2s_direct_tls_ports = {{ {direct_tls} }}
c2s_direct_tls_interfaces = {{ "{address}" }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
s2s_interfaces = {{ }}
modules_enabled = {{ {tls_module}"roster", "saslauth", "disco", "pep", "carbons", "ping", "register", "offline", "posix"{smacks}{turn_module} }}
modules_disabled = {{ "s2s" }}
allow_unencrypted_plain_auth = true
c2s_require_encryption = false
-- Call set-up is a burst of small stanzas: do not hold them back for delayed ACKs.
network_settings = {{ nagle = false }}
authentication = "internal_hashed"
storage = "internal"
{turn_options}VirtualHost "{DOMAIN}"
"#
    )
}

/// `mod_turn_external`'s options, one line each (global: the module reads them for its host
/// with the global value as the fallback).
fn turn_options(t: &TurnExternal) -> String {
    let mut lines = vec![
        format!("turn_external_secret = \"{}\"", lua_string(&t.secret)),
        format!("turn_external_host = \"{}\"", lua_string(&t.host)),
        format!("turn_external_port = {}", t.port),
        format!("turn_external_tcp = {}", t.tcp),
        // Prosody reads a number; less than a second would mean credentials that never work.
        format!("turn_external_ttl = {}", t.ttl.as_secs().max(1)),
    ];
    if let Some(p) = t.tls_port {
        lines.push(format!("turn_external_tls_port = {p}"));
    }
    lines.push(String::new());
    lines.join("\n")
}

/// Escapes a path for a double-quoted Lua string.
fn lua_string(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(debug_log: bool) -> ProsodyConfig {
        ProsodyConfig {
            debug_log,
            ..ProsodyConfig::default()
        }
    }

    #[test]
    fn config_binds_loopback_only_and_escapes_the_path() {
        let c = config_text(Path::new("/tmp/a\"b"), 5999, None, true, &plain(false));
        assert!(c.starts_with("run_as_root = true\n"));
        assert!(c.contains("c2s_ports = { 5999 }"));
        assert!(c.contains("c2s_interfaces = { \"127.0.0.1\" }"));
        assert!(c.contains("c2s_direct_tls_ports = {  }"));
        assert!(c.contains("data_path = \"/tmp/a\\\"b/data\""));
        assert!(c.contains("c2s_require_encryption = false"));
        assert!(c.contains("min = \"info\""));
        assert!(!c.contains("\"tls\""));
        assert!(
            !c.contains("turn_external"),
            "no TURN unless asked for:\n{c}"
        );
        assert!(
            !config_text(Path::new("/tmp"), 1, None, false, &plain(false)).contains("run_as_root")
        );
    }

    #[test]
    fn tls_adds_the_module_and_the_direct_port() {
        let c = config_text(Path::new("/tmp"), 5999, Some(6000), false, &plain(true));
        assert!(c.contains("modules_enabled = { \"tls\", \"roster\""));
        assert!(c.contains("c2s_direct_tls_ports = { 6000 }"));
        assert!(c.contains("min = \"debug\""));
    }

    #[test]
    fn turn_enables_mod_turn_external_with_its_options() {
        let turn = TurnExternal {
            secret: "s3c\"ret".into(),
            host: "203.0.113.10".into(),
            port: 3478,
            tcp: true,
            tls_port: Some(5349),
            ttl: Duration::from_secs(600),
        };
        let config = ProsodyConfig {
            turn: Some(turn.clone()),
            ..ProsodyConfig::default()
        };
        let c = config_text(Path::new("/tmp"), 5999, None, false, &config);
        assert!(
            c.contains("\"offline\", \"posix\", \"smacks\", \"turn_external\" }"),
            "{c}"
        );
        // For a proxy that injects stanzas: no stream management.
        let without = ProsodyConfig {
            without_smacks: true,
            ..config.clone()
        };
        let c = config_text(Path::new("/tmp"), 5999, None, false, &without);
        assert!(
            c.contains("\"offline\", \"posix\", \"turn_external\" }"),
            "{c}"
        );
        for line in [
            "turn_external_secret = \"s3c\\\"ret\"",
            "turn_external_host = \"203.0.113.10\"",
            "turn_external_port = 3478",
            "turn_external_tcp = true",
            "turn_external_ttl = 600",
            "turn_external_tls_port = 5349",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} missing in\n{c}");
        }
        // Global options: before the virtual host, so the module finds them for it.
        let host_at = c.find("VirtualHost").unwrap_or(0);
        let secret_at = c.find("turn_external_secret").unwrap_or(usize::MAX);
        assert!(secret_at < host_at, "{c}");
        let udp_only = TurnExternal {
            tcp: false,
            tls_port: None,
            ..turn
        };
        let u = turn_options(&udp_only);
        assert!(
            u.contains("turn_external_tcp = false") && !u.contains("tls_port"),
            "{u}"
        );
        assert!(
            !format!("{config:?}").contains("s3c"),
            "the secret never prints"
        );
    }
}
