//! The STUN and TURN servers a call may use, as the client found them (XEP-0215 from the
//! account's server, or the user's `--stun` / `--turn`): the one description the client hands
//! the media engine, which gathers server-reflexive and relayed candidates with them.

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
    }
}
