//! The STUN and TURN servers a call may use, as the client found them (XEP-0215 from the
//! account's server, or the user's `--stun` / `--turn`): the one description the client hands
//! the media engine, which gathers server-reflexive and relayed candidates with them.
//!
//! The driver resolves each [`IceServer`] into a [`ResolvedIceServer`] (tokio's `lookup_host`)
//! and loads the [`TlsTrust`] for `turns:` servers (the system roots, or a CA file for tests);
//! the sans-IO core only ever sees socket addresses and that trust.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// What a server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceServerKind {
    /// STUN: server-reflexive candidates (our address as the server sees it).
    Stun,
    /// TURN over plain UDP or TCP: relayed candidates.
    Turn,
    /// TURN over TLS (TCP): relayed candidates where only TLS gets out.
    Turns,
}

/// How we talk to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceTransport {
    /// UDP.
    Udp,
    /// TCP (TLS for [`IceServerKind::Turns`]).
    Tcp,
}

/// A secret that never prints (`Debug` shows only that there is one) and is zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Self {
        Self(zeroize::Zeroizing::new(s.into()))
    }

    /// The password itself, for the one place that needs it (the TURN message integrity).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One STUN or TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// STUN, TURN or TURNS.
    pub kind: IceServerKind,
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// UDP or TCP.
    pub transport: IceTransport,
    /// TURN user name (coturn's REST form `EXPIRY:user` for XEP-0215 credentials).
    pub username: Option<String>,
    /// TURN password.
    pub password: Option<Secret>,
    /// When the credentials stop working (XEP-0215 `expires`); `None`: no known end.
    pub expires: Option<SystemTime>,
}

impl IceServer {
    /// `host:port` as written in logs and the `stats` event (never with credentials).
    pub fn label(&self) -> String {
        let scheme = match self.kind {
            IceServerKind::Stun => "stun",
            IceServerKind::Turn => "turn",
            IceServerKind::Turns => "turns",
        };
        let transport = match self.transport {
            IceTransport::Udp => "udp",
            IceTransport::Tcp => "tcp",
        };
        format!("{scheme}:{}:{}?transport={transport}", self.host, self.port)
    }
}

impl IceServer {
    /// How a TURN server is reached (`None` for a STUN server).
    pub fn relay_transport(&self) -> Option<RelayTransport> {
        match (self.kind, self.transport) {
            (IceServerKind::Stun, _) => None,
            (IceServerKind::Turn, IceTransport::Udp) => Some(RelayTransport::Udp),
            (IceServerKind::Turn, IceTransport::Tcp) => Some(RelayTransport::Tcp),
            // TURNS is TLS over TCP; DTLS to a TURN server (turns over UDP) is not offered by
            // XEP-0215 servers in practice, so a `turns` entry always means TLS.
            (IceServerKind::Turns, _) => Some(RelayTransport::Tls),
        }
    }
}

/// How we reach a TURN server: what the `stats` name as the relay's transport. The relayed
/// candidate itself is always UDP between the TURN server and the peer (RFC 8656).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayTransport {
    /// TURN over UDP.
    Udp,
    /// TURN over TCP (STUN and ChannelData framed on the stream, RFC 8656 §2.1; no RFC 6062).
    Tcp,
    /// TURN over TLS over TCP (`turns:`), the certificate checked against a [`TlsTrust`].
    Tls,
}

impl RelayTransport {
    /// `udp`, `tcp` or `tls`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

impl std::fmt::Display for RelayTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server as the sans-IO core takes it: the client's description and where it resolved to
/// (or why it did not: the core then reports it as failed and gathers with the others).
#[derive(Debug, Clone)]
pub struct ResolvedIceServer {
    /// The server as the client described it (its `label()` names it in events and stats).
    pub server: IceServer,
    /// Its address, or why there is none (unresolvable name, expired credentials, …).
    pub addr: Result<SocketAddr, String>,
}

/// Errors loading the trust anchors for TURN over TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsTrustError {
    /// The CA file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PEM text held no usable certificate.
    #[error("no usable certificate in {0}")]
    NoCertificate(String),
    /// The system store could not be read or held nothing.
    #[error("no system root certificates: {0}")]
    NoSystemRoots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The certificates a `turns:` server's certificate must chain to, with the TLS settings
/// (rustls 0.23 with aws-lc-rs, TLS 1.2 and 1.3). Cheap to clone.
#[derive(Clone)]
pub struct TlsTrust(pub(crate) Arc<rustls::ClientConfig>);

impl std::fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTrust(..)")
    }
}

impl TlsTrust {
    /// Trusts the certificates in PEM text (e.g. a test's throw-away CA); `what` names the
    /// source in errors.
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Self, TlsTrustError> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem).flatten() {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(TlsTrustError::NoCertificate(what.to_owned()));
        }
        Self::with_roots(roots)
    }

    /// Trusts the CA certificates in a PEM file (I/O: the driver calls it).
    pub fn from_ca_file(path: &Path) -> Result<Self, TlsTrustError> {
        let pem = std::fs::read(path).map_err(|source| TlsTrustError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&pem, &path.display().to_string())
    }

    /// Trusts the operating system's root certificates (I/O: the driver calls it).
    pub fn system() -> Result<Self, TlsTrustError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map_or("the store is empty".to_owned(), ToString::to_string);
            return Err(TlsTrustError::NoSystemRoots(why));
        }
        Self::with_roots(roots)
    }

    fn with_roots(roots: rustls::RootCertStore) -> Result<Self, TlsTrustError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsTrustError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print() {
        let s = IceServer {
            kind: IceServerKind::Turns,
            host: "turn.example.org".into(),
            port: 5349,
            transport: IceTransport::Tcp,
            username: Some("1700000000:alice".into()),
            password: Some(Secret::new("hunter2")),
            expires: None,
        };
        let shown = format!("{s:?} {}", s.label());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(s.label(), "turns:turn.example.org:5349?transport=tcp");
        assert_eq!(s.relay_transport(), Some(RelayTransport::Tls));
    }

    #[test]
    fn trust_needs_a_certificate() {
        assert!(matches!(
            TlsTrust::from_pem(b"not pem", "x"),
            Err(TlsTrustError::NoCertificate(_))
        ));
        assert!(matches!(
            TlsTrust::from_ca_file(Path::new("/nonexistent/ca.crt")),
            Err(TlsTrustError::Read { .. })
        ));
    }
}
