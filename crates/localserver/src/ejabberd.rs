//! A throw-away ejabberd (Debian 12's 23.01): its own config, spool and logs in a directory of
//! its own, plaintext c2s on a free loopback port, PEP and carbons; stopped with
//! `ejabberdctl stop` (then by pid) when dropped. Used by the interop tests against a second
//! server implementation. With [`EjabberdConfig::stun_disco`] it also hands out STUN/TURN
//! services with coturn's REST credentials (XEP-0215, `mod_stun_disco`). With
//! [`EjabberdConfig::namespace`] it runs inside a namespace of the lab instead, on the lab's
//! server address with STARTTLS (required) and a throw-away CA's certificate.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;
use crate::certs::make_certificates;
use crate::process::{find_tool, free_port, last_lines, one_line, run_bounded, wait_ready};
use crate::prosody::InNamespace;

/// The one virtual host (the same as Prosody's).
pub use crate::prosody::DOMAIN;

/// How long ejabberd may take to listen, and to start its virtual host after that.
const START_LIMIT: Duration = Duration::from_secs(60);

/// How long one `ejabberdctl` call may take.
const CTL_LIMIT: Duration = Duration::from_secs(30);

/// How long `stop` may take before the server is killed.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// How the server is set up; the default is the plain server of [`Ejabberd::launch`].
#[derive(Debug, Clone, Default)]
pub struct EjabberdConfig {
    /// STUN and TURN services for clients (XEP-0215) through ejabberd's `mod_stun_disco`;
    /// `None`: no such module, the server answers `service-unavailable`.
    pub stun_disco: Option<StunDisco>,
    /// Run inside this network namespace of the lab, c2s on its address, port 5222, with
    /// STARTTLS required and a certificate for `localhost` from a throw-away CA
    /// ([`Ejabberd::ca_file`]); every `ejabberdctl` call runs there too (the Erlang node's
    /// control channel is the namespace's loopback).
    pub namespace: Option<InNamespace>,
}

/// The options of ejabberd 23.01's `mod_stun_disco` (names as in its documentation): the
/// listed `services`, the restricted ones with REST credentials made from `secret` (coturn's
/// `use-auth-secret` with the same `static-auth-secret`), valid for `credentials_lifetime`.
/// ejabberd's own STUN listeners are not announced (`offer_local_services: false`: there are
/// none).
#[derive(Clone)]
pub struct StunDisco {
    /// `secret`: the secret shared with the TURN server.
    pub secret: String,
    /// `services`: what clients are told.
    pub services: Vec<StunDiscoService>,
    /// `credentials_lifetime` (ejabberd's default 12 hours).
    pub credentials_lifetime: Duration,
}

impl std::fmt::Debug for StunDisco {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StunDisco")
            .field("secret", &"<redacted>")
            .field("services", &self.services)
            .field("credentials_lifetime", &self.credentials_lifetime)
            .finish()
    }
}

/// One entry of `mod_stun_disco`'s `services`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunDiscoService {
    /// `host`: name or IP address (for TLS, what the certificate names).
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `type`.
    pub kind: StunDiscoType,
    /// `transport`.
    pub transport: StunDiscoTransport,
    /// `restricted`: clients get temporary credentials for it (ejabberd's default: TURN yes,
    /// STUN no).
    pub restricted: bool,
}

/// `type` of a `mod_stun_disco` service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunDiscoType {
    /// `stun`.
    Stun,
    /// `turn`.
    Turn,
    /// `stuns` (STUN over TLS).
    Stuns,
    /// `turns` (TURN over TLS).
    Turns,
}

/// `transport` of a `mod_stun_disco` service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunDiscoTransport {
    /// `udp`.
    Udp,
    /// `tcp`.
    Tcp,
}

/// A running ejabberd in its directory.
#[derive(Debug)]
pub struct Ejabberd {
    child: Child,
    ctl: PathBuf,
    /// `ip` and the namespace, for a server in the lab.
    netns: Option<(PathBuf, InNamespace)>,
    dir: PathBuf,
    port: u16,
    node: String,
}

impl Ejabberd {
    /// Writes a configuration into `dir` (created if missing; handed to the `ejabberd` user,
    /// as which ejabberdctl runs the server), starts `ejabberdctl foreground` and waits until
    /// c2s accepts connections.
    pub fn launch(dir: &Path) -> Result<Ejabberd, Error> {
        Self::launch_with(dir, &EjabberdConfig::default())
    }

    /// [`Ejabberd::launch`] with the modules of `config`.
    pub fn launch_with(dir: &Path, config: &EjabberdConfig) -> Result<Ejabberd, Error> {
        let ctl = find_tool("ejabberdctl", "ejabberd")?;
        let netns = match &config.namespace {
            Some(ns) => Some((find_tool("ip", "iproute2")?, ns.clone())),
            None => None,
        };
        // In its own namespace nothing else can hold the port.
        let port = match netns {
            Some(_) => 5222,
            None => free_port()?,
        };
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text)
                .map_err(|e| Error::io(format!("cannot write {name}"), e))
        };
        for sub in ["db", "log"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::io(format!("cannot create {}", dir.join(sub).display()), e))?;
        }
        let listen = match &netns {
            Some((_, ns)) => {
                // `dir/ca.crt`; ejabberd wants the certificate and its key in one file.
                make_certificates(
                    dir,
                    DOMAIN,
                    &[format!("DNS:{DOMAIN}")],
                    &crate::process::never,
                )?;
                let read = |name: &str| {
                    std::fs::read_to_string(dir.join("certs").join(name))
                        .map_err(|e| Error::io(format!("cannot read {name}"), e))
                };
                let pem = format!("{}{}", read("localhost.crt")?, read("localhost.key")?);
                write("localhost.pem", &pem)?;
                Listen {
                    ip: ns.address.to_string(),
                    port,
                    certfile: Some(dir.join("localhost.pem")),
                }
            }
            None => Listen {
                ip: "127.0.0.1".to_owned(),
                port,
                certfile: None,
            },
        };
        write("ejabberd.yml", &config_text(&listen, config))?;
        write("ejabberdctl.cfg", "")?;
        write("inetrc", "")?;
        let mut chown = Command::new(find_tool("chown", "coreutils")?);
        chown.args(["-R", "ejabberd:ejabberd"]).arg(dir);
        crate::process::run_ok(
            chown,
            CTL_LIMIT,
            "chown of the ejabberd dir",
            &crate::process::never,
        )?;
        let node = format!("shieldcall{port}@localhost");
        let console = std::fs::File::create(dir.join("console.log"))
            .map_err(|e| Error::io("cannot create ejabberd's console log", e))?;
        let console2 = console
            .try_clone()
            .map_err(|e| Error::io("cannot create ejabberd's console log", e))?;
        let child = ctl_command(&ctl, netns.as_ref())
            .args(dir_args(dir, &node))
            .arg("foreground")
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .spawn()
            .map_err(|e| Error::io(format!("cannot start {}", ctl.display()), e))?;
        let mut server = Ejabberd {
            child,
            ctl,
            netns,
            dir: dir.to_owned(),
            port,
            node,
        };
        let logs = [
            dir.join("console.log"),
            dir.join("log").join("ejabberd.log"),
        ];
        let awaited = format!("listen on {}:{port}", listen.ip);
        let never = &crate::process::never;
        let pid = server.child.id();
        let in_lab = server.netns.as_ref().map(|(_, ns)| ns.address);
        wait_ready(
            &mut server.child,
            "ejabberd",
            &awaited,
            START_LIMIT,
            never,
            &logs,
            || match in_lab {
                // ejabberdctl's /proc/PID/net/tcp is the namespace's table; the socket is
                // the Erlang VM's, a child of it.
                Some(address) => crate::lab::bound_in_namespace_of(
                    pid,
                    crate::lab::Transport::Tcp,
                    std::net::SocketAddrV4::new(address, port),
                ),
                None => TcpStream::connect(("127.0.0.1", port)).is_ok(),
            },
        )?;
        Ok(server)
    }

    /// The CA that signed its certificate (a server in the lab only).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The `--server` value for clients (in the lab, the namespace's address).
    pub fn server(&self) -> String {
        match &self.netns {
            Some((_, ns)) => format!("{}:{}", ns.address, self.port),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    /// The c2s port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates `name@localhost` with `password`. The c2s port listens before the virtual host
    /// has started (on a loaded machine by seconds): until it is up, ejabberdctl answers
    /// `Unknown virtual host` (or `nodedown` while the node's control channel is not up), and
    /// the registration is tried again until it works or a minute passed; any other failure
    /// fails at once.
    pub fn register(&self, name: &str, password: &str) -> Result<(), Error> {
        let deadline = Instant::now() + START_LIMIT;
        let what = format!("ejabberdctl register {name} {DOMAIN}");
        loop {
            let mut cmd = ctl_command(&self.ctl, self.netns.as_ref());
            cmd.args(dir_args(&self.dir, &self.node))
                .args(["register", name, DOMAIN, password]);
            let done = run_bounded(cmd, CTL_LIMIT, &what, &crate::process::never)?;
            if done.status.success() {
                return Ok(());
            }
            let said = format!("{}{}", done.stdout, done.stderr);
            let starting = said.contains("Unknown virtual host") || said.contains("nodedown");
            if !starting || Instant::now() >= deadline {
                return Err(Error::Failed {
                    what,
                    status: done.status,
                    output: one_line(&format!("{said}\n{}", last_lines(&self.log(), 8))),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The console output and ejabberd's own log so far.
    pub fn log(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}{}",
            read(self.dir.join("console.log")),
            read(self.dir.join("log").join("ejabberd.log"))
        )
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        // Never panics (this may run while a test unwinds).
        if let Ok(mut stop) = ctl_command(&self.ctl, self.netns.as_ref())
            .args(dir_args(&self.dir, &self.node))
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            let deadline = Instant::now() + STOP_LIMIT;
            while Instant::now() < deadline && !matches!(stop.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = stop.kill();
            let _ = stop.wait();
        }
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stop_epmd();
    }
}

impl Ejabberd {
    /// Stops the Erlang port mapper the node started as a daemon, so that nothing outlives the
    /// server. epmd refuses (and stays) while any other Erlang node is registered with it, so
    /// this never disturbs another server.
    fn stop_epmd(&self) {
        let Ok(epmd) = find_tool("epmd", "erlang-base") else {
            return;
        };
        // The node may take a moment to deregister after its VM exited; epmd -kill says so
        // ("not allowed") and is tried again.
        for _ in 0..30 {
            let mut cmd = ctl_command(&epmd, self.netns.as_ref());
            cmd.arg("-kill");
            let limit = Duration::from_secs(5);
            match run_bounded(cmd, limit, "epmd -kill", &crate::process::never) {
                Ok(done) if format!("{}{}", done.stdout, done.stderr).contains("not allowed") => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => return,
            }
        }
    }
}

/// `tool`, or `ip netns exec NS tool` for a server in the lab.
fn ctl_command(tool: &Path, netns: Option<&(PathBuf, InNamespace)>) -> Command {
    match netns {
        Some((ip, ns)) => {
            let mut c = Command::new(ip);
            c.args(["netns", "exec", &ns.name]).arg(tool);
            c
        }
        None => Command::new(tool),
    }
}

/// Where c2s listens; with a `certfile`, STARTTLS is required.
struct Listen {
    ip: String,
    port: u16,
    certfile: Option<PathBuf>,
}

/// ejabberdctl's arguments that make it use `dir` and this node, not the system server's.
fn dir_args(dir: &Path, node: &str) -> Vec<String> {
    let p = |s: &str| dir.join(s).display().to_string();
    vec![
        "--config-dir".into(),
        dir.display().to_string(),
        "--config".into(),
        p("ejabberd.yml"),
        "--spool".into(),
        p("db"),
        "--logs".into(),
        p("log"),
        "--node".into(),
        node.to_owned(),
    ]
}

/// c2s on one port (plaintext on loopback, or STARTTLS required with a certificate), internal
/// auth, PEP (pubsub with the pep plugin), carbons, offline storage; `mod_stun_disco` with
/// [`EjabberdConfig::stun_disco`].
fn config_text(listen: &Listen, config: &EjabberdConfig) -> String {
    let stun_disco = config
        .stun_disco
        .as_ref()
        .map(stun_disco_text)
        .unwrap_or_default();
    let (certfiles, tls) = match &listen.certfile {
        Some(f) => (
            format!("[{}]", yaml_string(&f.display().to_string())),
            "true",
        ),
        None => ("[]".to_owned(), "false"),
    };
    let (ip, port) = (&listen.ip, listen.port);
    format!(
        "hosts:\n  - {DOMAIN}\nloglevel: info\ncertfiles: {certfiles}\nlisten:\n  -\n    port: {port}\n    ip: \"{ip}\"\n    module: ejabberd_c2s\n    starttls: {tls}\n    starttls_required: {tls}\nauth_method: internal\nacl:\n  local:\n    user_regexp: \"\"\naccess_rules:\n  local:\n    allow: local\n  c2s:\n    allow: all\nshaper_rules:\n  c2s_shaper: none\nmodules:\n  mod_roster: {{}}\n  mod_disco: {{}}\n  mod_caps: {{}}\n  mod_carboncopy: {{}}\n  mod_offline: {{}}\n  mod_ping: {{}}\n  mod_stream_mgmt: {{}}\n  mod_pubsub:\n    access_createnode: local\n    plugins:\n      - flat\n      - pep\n{stun_disco}"
    )
}

/// `mod_stun_disco`'s entry in `modules` (YAML, indented as one of them).
fn stun_disco_text(d: &StunDisco) -> String {
    let mut t = format!(
        "  mod_stun_disco:\n    secret: {}\n    offer_local_services: false\n    credentials_lifetime: {}\n    services:\n",
        yaml_string(&d.secret),
        // A number is seconds; less than one would be credentials that never work.
        d.credentials_lifetime.as_secs().max(1)
    );
    if d.services.is_empty() {
        t = t.replace("    services:\n", "    services: []\n");
    }
    for s in &d.services {
        let kind = match s.kind {
            StunDiscoType::Stun => "stun",
            StunDiscoType::Turn => "turn",
            StunDiscoType::Stuns => "stuns",
            StunDiscoType::Turns => "turns",
        };
        let transport = match s.transport {
            StunDiscoTransport::Udp => "udp",
            StunDiscoTransport::Tcp => "tcp",
        };
        t.push_str(&format!(
            "      -\n        host: {}\n        port: {}\n        type: {kind}\n        transport: {transport}\n        restricted: {}\n",
            yaml_string(&s.host),
            s.port,
            s.restricted
        ));
    }
    t
}

/// A double-quoted YAML string.
fn yaml_string(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Listen {
        Listen {
            ip: "127.0.0.1".into(),
            port: 5999,
            certfile: None,
        }
    }

    #[test]
    fn in_the_lab_starttls_is_required_with_the_certificate() {
        let listen = Listen {
            ip: "203.0.113.10".into(),
            port: 5222,
            certfile: Some(PathBuf::from("/tmp/e/localhost.pem")),
        };
        let c = config_text(&listen, &EjabberdConfig::default());
        assert!(c.contains("certfiles: [\"/tmp/e/localhost.pem\"]\n"), "{c}");
        assert!(
            c.contains("port: 5222\n    ip: \"203.0.113.10\"\n    module: ejabberd_c2s\n    starttls: true\n    starttls_required: true\n"),
            "{c}"
        );
    }

    #[test]
    fn config_listens_on_loopback_with_pep() {
        let c = config_text(&loopback(), &EjabberdConfig::default());
        assert!(c.contains("port: 5999\n    ip: \"127.0.0.1\""));
        assert!(c.contains("      - pep\n"));
        assert!(c.contains("hosts:\n  - localhost\n"));
        assert!(
            !c.contains("mod_stun_disco"),
            "no XEP-0215 unless asked for:\n{c}"
        );
    }

    #[test]
    fn stun_disco_lists_the_services_with_the_secret() {
        let service = |kind, transport, port, restricted| StunDiscoService {
            host: "203.0.113.10".into(),
            port,
            kind,
            transport,
            restricted,
        };
        let disco = StunDisco {
            secret: "s3c\"ret".into(),
            services: vec![
                service(StunDiscoType::Stun, StunDiscoTransport::Udp, 3478, false),
                service(StunDiscoType::Turn, StunDiscoTransport::Tcp, 3478, true),
                service(StunDiscoType::Turns, StunDiscoTransport::Tcp, 5349, true),
            ],
            credentials_lifetime: Duration::from_secs(600),
        };
        let config = EjabberdConfig {
            stun_disco: Some(disco.clone()),
            namespace: None,
        };
        let c = config_text(&loopback(), &config);
        let module = c
            .split_once("  mod_stun_disco:\n")
            .map(|(_, m)| m)
            .unwrap_or_default();
        assert!(
            module.starts_with(
                "    secret: \"s3c\\\"ret\"\n    offer_local_services: false\n    credentials_lifetime: 600\n    services:\n"
            ),
            "{module}"
        );
        assert!(module.contains(
            "      -\n        host: \"203.0.113.10\"\n        port: 5349\n        type: turns\n        transport: tcp\n        restricted: true\n"
        ), "{module}");
        assert_eq!(module.matches("      -\n").count(), 3, "{module}");
        assert!(module.contains("type: stun\n        transport: udp\n        restricted: false\n"));
        assert!(
            !format!("{config:?}").contains("s3c"),
            "the secret never prints"
        );
        let none = stun_disco_text(&StunDisco {
            services: vec![],
            ..disco
        });
        assert!(none.ends_with("    services: []\n"), "{none}");
    }
}
