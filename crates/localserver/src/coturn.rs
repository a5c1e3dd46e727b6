//! A throw-away coturn (Debian's `turnserver`) as the STUN/TURN server of the tests: its own
//! configuration, certificates and log in a directory of its own, optionally inside a lab
//! namespace, with the time-limited REST credentials that Prosody's `mod_turn_external` and
//! ejabberd's `mod_stun_disco` hand out (`use-auth-secret` with a shared secret).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::Error;
use crate::certs::make_certificates;
use crate::lab::{Lab, Namespace, Transport, bound_by};
use crate::process::{find_tool, never, wait_ready};

/// How long coturn may take to listen on all its ports.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The name of the server's certificate (`certs/turn.{crt,key}`).
const CERT_STEM: &str = "turn";

/// How the TURN server is set up. The default listens on 127.0.0.1, UDP and TCP 3478 and TLS
/// 5349, realm `localhost`, with coturn's default lifetimes; in the lab give it
/// [`Lab::server`] as its address.
#[derive(Clone)]
pub struct CoturnConfig {
    /// The addresses it listens on, and relays from (`listening-ip`, `relay-ip`).
    pub addresses: Vec<Ipv4Addr>,
    /// STUN and TURN over UDP and TCP (`listening-port`, 3478).
    pub port: u16,
    /// TURN over TLS (and DTLS) with a throw-away certificate (`tls-listening-port`, 5349);
    /// `None`: no TLS at all.
    pub tls_port: Option<u16>,
    /// The shared secret of the REST credentials (`use-auth-secret`, `static-auth-secret`).
    pub secret: String,
    /// The realm it names in its challenges.
    pub realm: String,
    /// The longest allocation it grants (`max-allocate-lifetime`; coturn's default is an
    /// hour, clients ask for 10 minutes): short for tests of refreshes.
    pub max_allocate_lifetime: Option<Duration>,
    /// How long a permission lasts without refresh (`permission-lifetime`, default 300 s).
    pub permission_lifetime: Option<Duration>,
    /// How long a channel binding lasts without refresh (`channel-lifetime`, default 600 s).
    pub channel_lifetime: Option<Duration>,
}

impl Default for CoturnConfig {
    fn default() -> CoturnConfig {
        CoturnConfig {
            addresses: vec![Ipv4Addr::LOCALHOST],
            port: 3478,
            tls_port: Some(5349),
            secret: "shieldcall-test-turn-secret".to_owned(),
            realm: crate::prosody::DOMAIN.to_owned(),
            max_allocate_lifetime: None,
            permission_lifetime: None,
            channel_lifetime: None,
        }
    }
}

impl std::fmt::Debug for CoturnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoturnConfig")
            .field("addresses", &self.addresses)
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .field("secret", &"<redacted>")
            .field("realm", &self.realm)
            .field("max_allocate_lifetime", &self.max_allocate_lifetime)
            .field("permission_lifetime", &self.permission_lifetime)
            .field("channel_lifetime", &self.channel_lifetime)
            .finish()
    }
}

/// coturn's time-limited REST credentials (the TURN REST API draft): username `EXPIRY:user`
/// (seconds since the epoch), password base64(HMAC-SHA1(secret, username)).
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// `EXPIRY:user`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A TURN password is never printed, not even by a test.
        f.debug_struct("TurnCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The REST credentials for `user` with `secret` that expire at `expires` (what the XMPP
/// server hands out through XEP-0215 and coturn checks without knowing the user).
pub fn rest_credentials(secret: &str, user: &str, expires: SystemTime) -> TurnCredentials {
    let expiry = expires
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let username = format!("{expiry}:{user}");
    // HMAC takes keys of any length; the empty password is never reached.
    let password = match <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(username.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    TurnCredentials { username, password }
}

/// A running coturn in its directory. Dropping it stops the server (SIGKILL to exactly its
/// pid; drop it before the [`Lab`] it runs in, or the lab ends it).
#[derive(Debug)]
pub struct Coturn {
    child: Child,
    dir: PathBuf,
    config: CoturnConfig,
}

impl Coturn {
    /// Writes a configuration into `dir` (created if missing; with TLS also a throw-away CA
    /// and a certificate for the addresses and `localhost`), starts `turnserver` in the
    /// foreground, in namespace `netns` of a lab when given, and waits until it listens on
    /// every address: UDP and TCP on the port, TCP on the TLS port (at most 20 s; the error
    /// carries the end of its log).
    pub fn launch(
        dir: &Path,
        config: &CoturnConfig,
        netns: Option<(&Lab, Namespace)>,
    ) -> Result<Coturn, Error> {
        let turnserver = find_tool("turnserver", "coturn")?;
        if config.addresses.is_empty() {
            return Err(Error::io(
                "coturn needs at least one address to listen on",
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        if config.tls_port.is_some() {
            let names: Vec<String> = std::iter::once(format!("DNS:{}", crate::prosody::DOMAIN))
                .chain(config.addresses.iter().map(|a| format!("IP:{a}")))
                .collect();
            make_certificates(dir, CERT_STEM, &names, &never)?;
        }
        let conf = dir.join("turnserver.conf");
        std::fs::write(&conf, config_text(dir, config))
            .map_err(|e| Error::io(format!("cannot write {}", conf.display()), e))?;
        let console = std::fs::File::create(dir.join("console.log"))
            .map_err(|e| Error::io("cannot create coturn's console log", e))?;
        let console2 = console
            .try_clone()
            .map_err(|e| Error::io("cannot create coturn's console log", e))?;
        let mut cmd = match netns {
            Some((lab, ns)) => {
                let mut cmd = lab.exec(ns);
                cmd.arg(&turnserver);
                cmd
            }
            None => Command::new(&turnserver),
        };
        // `-c`: this file only, never /etc/turnserver.conf.
        let child = cmd
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .spawn()
            .map_err(|e| Error::io(format!("cannot start {}", turnserver.display()), e))?;
        let mut server = Coturn {
            child,
            dir: dir.to_owned(),
            config: config.clone(),
        };
        server.wait_listening()?;
        Ok(server)
    }

    /// The addresses it listens on.
    pub fn addresses(&self) -> &[Ipv4Addr] {
        &self.config.addresses
    }

    /// The UDP and TCP port.
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// The TLS port, if it has TLS.
    pub fn tls_port(&self) -> Option<u16> {
        self.config.tls_port
    }

    /// The shared secret of its REST credentials (to give the XMPP server the same).
    pub fn secret(&self) -> &str {
        &self.config.secret
    }

    /// The realm of its challenges.
    pub fn realm(&self) -> &str {
        &self.config.realm
    }

    /// REST credentials for `user`, valid for `valid_for` from now.
    pub fn credentials(&self, user: &str, valid_for: Duration) -> TurnCredentials {
        rest_credentials(&self.config.secret, user, SystemTime::now() + valid_for)
    }

    /// The throw-away CA that signed its certificate (with TLS): what a TURN-over-TLS client
    /// trusts instead of the system roots.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.config.tls_port.map(|_| self.dir.join("ca.crt"))
    }

    /// Its pid (in the lab, `ip netns exec` became `turnserver`: the same process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// coturn's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("turnserver.log")
    }

    /// Its console output and log so far.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("console.log"), read("turnserver.log"))
    }

    /// Waits until this very process has bound every socket it was told to.
    fn wait_listening(&mut self) -> Result<(), Error> {
        let pid = self.child.id();
        let mut sockets = Vec::new();
        for &a in &self.config.addresses {
            sockets.push((Transport::Udp, SocketAddrV4::new(a, self.config.port)));
            sockets.push((Transport::Tcp, SocketAddrV4::new(a, self.config.port)));
            if let Some(tls) = self.config.tls_port {
                sockets.push((Transport::Tcp, SocketAddrV4::new(a, tls)));
            }
        }
        let awaited = format!(
            "listen on {} (UDP+TCP {}{})",
            self.config
                .addresses
                .iter()
                .map(Ipv4Addr::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            self.config.port,
            self.config
                .tls_port
                .map(|p| format!(", TLS {p}"))
                .unwrap_or_default()
        );
        let logs = [self.dir.join("console.log"), self.log_path()];
        wait_ready(
            &mut self.child,
            "coturn",
            &awaited,
            START_LIMIT,
            &never,
            &logs,
            || sockets.iter().all(|&(t, addr)| bound_by(pid, t, addr)),
        )
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The configuration file: only what the tests need, everything in `dir`.
fn config_text(dir: &Path, c: &CoturnConfig) -> String {
    let d = dir.display();
    let mut lines = vec![
        "# A throw-away TURN server of shieldcall's tests (shieldcall-localserver).".to_owned(),
        format!("listening-port={}", c.port),
    ];
    for a in &c.addresses {
        lines.push(format!("listening-ip={a}"));
        lines.push(format!("relay-ip={a}"));
    }
    match c.tls_port {
        Some(p) => lines.extend([
            format!("tls-listening-port={p}"),
            format!("cert={d}/certs/{CERT_STEM}.crt"),
            format!("pkey={d}/certs/{CERT_STEM}.key"),
            "no-tlsv1".to_owned(),
            "no-tlsv1_1".to_owned(),
        ]),
        None => lines.extend(["no-tls".to_owned(), "no-dtls".to_owned()]),
    }
    lines.extend([
        format!("realm={}", c.realm),
        "use-auth-secret".to_owned(),
        format!("static-auth-secret={}", c.secret),
        "fingerprint".to_owned(),
        // No telnet CLI, no web admin, no relaying to multicast groups.
        "no-cli".to_owned(),
        "no-multicast-peers".to_owned(),
        format!("log-file={d}/turnserver.log"),
        "simple-log".to_owned(),
        // Each session, allocation, permission and refresh in the log: a test that fails
        // shows it (`Coturn::log`).
        "verbose".to_owned(),
        format!("pidfile={d}/turnserver.pid"),
        format!("userdb={d}/turndb"),
    ]);
    let secs =
        |name: &str, v: Option<Duration>| v.map(|v| format!("{name}={}", v.as_secs().max(1)));
    lines.extend(secs("max-allocate-lifetime", c.max_allocate_lifetime));
    lines.extend(secs("permission-lifetime", c.permission_lifetime));
    lines.extend(secs("channel-lifetime", c.channel_lifetime));
    lines.push(String::new());
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_are_coturns() {
        // printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac s3cret -binary | base64
        let expires = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let c = rest_credentials("s3cret", "alice", expires);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.password, "TtElzSjT0GdnTQ9xdcRNxx96yQs=");
        assert!(!format!("{c:?}").contains(&c.password));
    }

    #[test]
    fn config_names_the_addresses_the_secret_and_the_lifetimes() {
        let c = CoturnConfig {
            addresses: vec![Ipv4Addr::new(203, 0, 113, 10)],
            max_allocate_lifetime: Some(Duration::from_secs(30)),
            ..CoturnConfig::default()
        };
        let t = config_text(Path::new("/tmp/t"), &c);
        for line in [
            "listening-port=3478",
            "listening-ip=203.0.113.10",
            "relay-ip=203.0.113.10",
            "tls-listening-port=5349",
            "cert=/tmp/t/certs/turn.crt",
            "use-auth-secret",
            "static-auth-secret=shieldcall-test-turn-secret",
            "realm=localhost",
            "no-cli",
            "no-multicast-peers",
            "log-file=/tmp/t/turnserver.log",
            "max-allocate-lifetime=30",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing in\n{t}");
        }
        assert!(!t.contains("permission-lifetime"));
        assert!(!format!("{c:?}").contains("shieldcall-test-turn-secret"));
        let plain = config_text(
            Path::new("/tmp/t"),
            &CoturnConfig {
                tls_port: None,
                ..CoturnConfig::default()
            },
        );
        assert!(plain.contains("no-tls\nno-dtls\n") && !plain.contains("cert="));
    }
}
