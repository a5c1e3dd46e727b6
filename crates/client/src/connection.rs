//! The XMPP connection: login over STARTTLS, direct TLS or (loopback only) plain TCP, with our own
//! reconnect loop around tokio-xmpp's [`StanzaStream`], and a small actor that matches IQ
//! responses to requests.
//!
//! We do not use `tokio_xmpp::Client`: its reconnect loop retries a wrong password forever and
//! never tells the caller. Our connector reports the first failure (wrong password, unreachable
//! server) so the CLI can say it in one line, and only retries, with backoff, after a session has
//! been up once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use minidom::Element;
use sasl::common::{ChannelBinding, Credentials};
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::connect::{DnsConfig, ServerConnector};

use crate::connectors::{DirectTls, PlainTcp, Severer, StartTls};
use tokio_xmpp::error::AuthError;
use tokio_xmpp::stanzastream::{Connection, Event as StreamEvent, StanzaStream, StreamEvent as Se};
use tokio_xmpp::xmlstream::{StreamHeader, Timeouts};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::StanzaError;

use crate::error::ClientError;

/// How long one IQ may take before we give up on it.
pub const IQ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the first login may take.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest pause between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where and how to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Account JID (bare, or full to ask for a resource).
    pub jid: Jid,
    /// Password (never logged).
    pub password: String,
    /// `HOST:PORT` instead of the SRV lookup.
    pub server: Option<String>,
    /// Allow plaintext when `server` is a loopback address.
    pub insecure_loopback: bool,
    /// Use direct TLS (XEP-0368) instead of STARTTLS.
    pub direct_tls: bool,
}

impl std::fmt::Debug for ConnectOptions {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("jid", &self.jid)
            .field("password", &"<redacted>")
            .field("server", &self.server)
            .field("insecure_loopback", &self.insecure_loopback)
            .field("direct_tls", &self.direct_tls)
            .finish()
    }
}

/// Something the server sent us that is not an IQ response we wait for.
#[derive(Debug)]
pub enum Incoming {
    /// A stanza.
    Stanza(Box<Stanza>),
    /// The stream was (re-)established and bound to this JID: send presence etc. again.
    Online(FullJid),
    /// The connection is gone for good.
    Closed(String),
}

/// The result of an IQ: the payload of a result, or the error the peer returned.
pub type IqResult = Result<Option<Element>, StanzaError>;

enum Command {
    Send(Box<Stanza>),
    Close(oneshot::Sender<()>),
}

/// Waiting IQs: id → (JID the answer must come from, where to hand it).
type Pending = Arc<Mutex<HashMap<String, (Option<Jid>, oneshot::Sender<IqResult>)>>>;

/// A handle to the running connection (cheap to clone).
#[derive(Debug, Clone)]
pub struct Xmpp {
    cmd: mpsc::UnboundedSender<Command>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    severer: Severer,
    /// The JID bound at login.
    pub jid: FullJid,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Xmpp {
    /// The host's network changed: the connection to the server is cut now and made again
    /// (resumed, where the server offers XEP-0198, so the session keeps its full JID and
    /// stanzas sent meanwhile are delivered); a dead connection would otherwise go unnoticed
    /// for minutes.
    pub fn reconnect_now(&self) {
        self.severer.sever();
    }

    /// A handle to no connection, for unit tests of what is built on one: sending fails with
    /// [`ClientError::Disconnected`].
    #[cfg(test)]
    pub(crate) fn disconnected(jid: FullJid) -> Self {
        let (cmd, _) = mpsc::unbounded_channel();
        Self {
            cmd,
            pending: Pending::default(),
            next_id: Arc::default(),
            severer: Severer::default(),
            jid,
        }
    }

    /// Our bare JID.
    pub fn bare(&self) -> BareJid {
        self.jid.to_bare()
    }

    /// Queues a stanza for sending.
    pub fn send(&self, stanza: impl Into<Stanza>) -> Result<(), ClientError> {
        self.cmd
            .send(Command::Send(Box::new(stanza.into())))
            .map_err(|_| ClientError::Disconnected)
    }

    /// Sends an IQ get/set with `payload` and waits for the answer.
    pub async fn iq(
        &self,
        to: Option<Jid>,
        set: bool,
        payload: Element,
    ) -> Result<IqResult, ClientError> {
        // "q" + counter: the call engine numbers its own IQs "sc" + counter; the two must never meet.
        let id = format!("q{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id.clone(), (to.clone(), tx));
        }
        let iq = if set {
            Iq::Set {
                from: None,
                to,
                id: id.clone(),
                payload,
            }
        } else {
            Iq::Get {
                from: None,
                to,
                id: id.clone(),
                payload,
            }
        };
        self.send(iq)?;
        let answer = tokio::time::timeout(IQ_TIMEOUT, rx).await;
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        match answer {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(ClientError::Disconnected),
            Err(_) => Err(ClientError::Timeout("IQ response")),
        }
    }

    /// Closes the stream cleanly (waits at most a few seconds).
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Splits `HOST:PORT` (IPv6 in brackets).
pub fn split_server(server: &str) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::Usage(format!("--server '{server}' must be HOST:PORT"));
    let (host, port) = server.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

/// Logs in and starts the connection actor. Returns once the stream is bound, or with the
/// first login error (wrong password, unreachable server, TLS failure).
pub async fn connect(
    opts: &ConnectOptions,
) -> Result<(Xmpp, mpsc::UnboundedReceiver<Incoming>), ClientError> {
    if opts.jid.node().is_none() {
        return Err(ClientError::Usage(format!(
            "account '{}' must be a JID like user@example.org",
            opts.jid
        )));
    }
    let timeouts = Timeouts::default();
    let severer = Severer::default();
    let sm = SmUnresolved::default();
    let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
    let stream = match &opts.server {
        Some(server) => {
            let (host, port) = split_server(server)?;
            if opts.insecure_loopback {
                if !is_loopback_host(&host) {
                    return Err(ClientError::Usage(format!(
                        "--insecure-loopback is only allowed with a loopback --server, not '{host}'"
                    )));
                }
                let addr = (host.as_str(), port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.find(|a: &SocketAddr| a.ip().is_loopback()))
                    .ok_or_else(|| {
                        ClientError::Usage(format!("'{host}' does not resolve to loopback"))
                    })?;
                start(
                    PlainTcp(DnsConfig::addr(&addr.to_string()), severer.clone()),
                    opts,
                    timeouts,
                    fatal_tx,
                    sm.clone(),
                )
            } else if opts.direct_tls {
                start(
                    DirectTls(DnsConfig::no_srv(&host, port), severer.clone()),
                    opts,
                    timeouts,
                    fatal_tx,
                    sm.clone(),
                )
            } else {
                start(
                    StartTls(DnsConfig::no_srv(&host, port), severer.clone()),
                    opts,
                    timeouts,
                    fatal_tx,
                    sm.clone(),
                )
            }
        }
        None => {
            if opts.insecure_loopback {
                return Err(ClientError::Usage(
                    "--insecure-loopback needs --server 127.0.0.1:PORT".into(),
                ));
            }
            let domain = opts.jid.domain().as_str();
            if opts.direct_tls {
                start(
                    DirectTls(DnsConfig::srv_xmpps(domain), severer.clone()),
                    opts,
                    timeouts,
                    fatal_tx,
                    sm.clone(),
                )
            } else {
                start(
                    StartTls(DnsConfig::srv_default_client(domain), severer.clone()),
                    opts,
                    timeouts,
                    fatal_tx,
                    sm.clone(),
                )
            }
        }
    };
    run(stream, fatal_rx, severer, sm).await
}

fn start<C: ServerConnector>(
    connector: C,
    opts: &ConnectOptions,
    timeouts: Timeouts,
    fatal: mpsc::UnboundedSender<ClientError>,
    sm: SmUnresolved,
) -> StanzaStream {
    let jid = opts.jid.clone();
    let password = opts.password.clone();
    let was_up = Arc::new(AtomicBool::new(false));
    let reconnector = Box::new(
        move |_location: Option<String>, slot: oneshot::Sender<Connection>| {
            let connector = connector.clone();
            let jid = jid.clone();
            let password = password.clone();
            let fatal = fatal.clone();
            let was_up = was_up.clone();
            let sm = sm.clone();
            tokio::spawn(async move {
                let mut delay = Duration::from_secs(1);
                loop {
                    match login(
                        connector.clone(),
                        jid.clone(),
                        password.clone(),
                        timeouts,
                        &sm,
                    )
                    .await
                    {
                        Ok(conn) => {
                            was_up.store(true, Ordering::Relaxed);
                            let _ = slot.send(conn);
                            return;
                        }
                        Err(e) => {
                            let fatal_now = !was_up.load(Ordering::Relaxed)
                                || matches!(e, ClientError::Auth(_));
                            if fatal_now {
                                // The reason goes to the caller, which ends the stream. The slot is
                                // leaked on purpose: tokio-xmpp's worker panics when it is dropped.
                                let _ = fatal.send(e);
                                std::mem::forget(slot);
                                return;
                            }
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(MAX_BACKOFF);
                        }
                    }
                }
            });
        },
    );
    StanzaStream::new(reconnector, 64)
}

/// Logs in with SASL channel binding where TLS gives one (SCRAM-…-PLUS). A server that offers
/// -PLUS but does not know our binding type refuses it: ejabberd 23.01 (Debian 12) knows only
/// `tls-unique`, which TLS 1.3 does not have, and answers "Invalid channel binding" to
/// `tls-exporter`. Then the login is tried once more on a new connection without channel
/// binding (plain SCRAM over the same verified TLS). What that gives up is SCRAM's protection
/// against a TLS interceptor holding a certificate the system trusts for the domain; the
/// call's shield never rests on it (fingerprints are verified through OMEMO).
async fn login<C: ServerConnector>(
    connector: C,
    jid: Jid,
    password: String,
    timeouts: Timeouts,
    sm: &SmUnresolved,
) -> Result<Connection, ClientError> {
    let mut conn = match login_once(connector.clone(), &jid, &password, timeouts, true).await {
        Ok(conn) => conn,
        Err(LoginFailure::PlusRefused) => {
            match login_once(connector, &jid, &password, timeouts, false).await {
                Ok(conn) => conn,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LoginFailure::Failed(e)) => return Err(e),
    };
    sm.offer(&mut conn);
    Ok(conn)
}

/// Why one login attempt failed.
enum LoginFailure {
    /// The server refused a SCRAM-…-PLUS login: try once more without channel binding.
    PlusRefused,
    /// Anything else, as it goes to the caller.
    Failed(ClientError),
}

impl From<ClientError> for LoginFailure {
    fn from(e: ClientError) -> Self {
        Self::Failed(e)
    }
}

impl From<LoginFailure> for ClientError {
    fn from(f: LoginFailure) -> Self {
        match f {
            // Only an attempt with channel binding says this; the retry has none.
            LoginFailure::PlusRefused => {
                ClientError::Auth("the server refused the login with channel binding".into())
            }
            LoginFailure::Failed(e) => e,
        }
    }
}

/// Set while a connection that offered XEP-0198 has not yet become a bound or resumed stream.
///
/// xmpp-parsers 0.23 reads `<failed xmlns='urn:xmpp:sm:3'/>` without `h` as an error (its
/// `h` is an `Option` but required by the derive), and Prosody 0.12 answers exactly that to a
/// resumption it cannot do, after a server restart. tokio-xmpp then drops the connection and
/// asks for another, which would try to resume again, for ever. So when a connection that
/// offered stream management never reached a stream, the next one is handed to tokio-xmpp
/// with the feature hidden: it binds afresh (new full JID, as after any lost session), and the
/// connection after that uses stream management again.
#[derive(Clone, Default)]
struct SmUnresolved(Arc<AtomicBool>);

impl SmUnresolved {
    /// `conn` goes to tokio-xmpp: if it offers stream management, it is now unresolved —
    /// unless the last one that offered it never resolved, and then this one goes without.
    fn offer(&self, conn: &mut Connection) {
        if conn.features.stream_management.is_some() && self.0.swap(true, Ordering::Relaxed) {
            conn.features.stream_management = None;
            self.0.store(false, Ordering::Relaxed);
        }
    }

    /// A stream was bound or resumed.
    fn resolved(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

async fn login_once<C: ServerConnector>(
    connector: C,
    jid: &Jid,
    password: &str,
    timeouts: Timeouts,
    bind: bool,
) -> Result<Connection, LoginFailure> {
    let io = |e: tokio_xmpp::Error| match e {
        tokio_xmpp::Error::Protocol(p) if p.to_string().contains("no TLS available") => {
            ClientError::Connect(
                "the server offers no STARTTLS: refusing to log in without TLS".into(),
            )
        }
        other => ClientError::Connect(other.to_string()),
    };
    let username = jid
        .node()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default();
    let (pending, binding) = tokio::time::timeout(
        LOGIN_TIMEOUT,
        connector.connect(jid, xmpp_parsers::ns::JABBER_CLIENT, timeouts),
    )
    .await
    .map_err(|_| ClientError::Timeout("connecting to the server"))?
    .map_err(io)?;
    let (features, stream) = pending
        .recv_features()
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let binding = if bind { binding } else { ChannelBinding::None };
    let plus = !matches!(binding, ChannelBinding::None)
        && features
            .sasl_mechanisms
            .iter()
            .any(|m| m.ends_with("-PLUS"));
    let creds = Credentials::default()
        .with_username(username)
        .with_password(password)
        .with_channel_binding(binding);
    // tokio-xmpp's mechanism order is a preference list: SCRAM-SHA-256(-PLUS), SCRAM-SHA-1,
    // PLAIN.
    let stream = tokio_xmpp::client_login(stream, features.sasl_mechanisms, creds)
        .await
        .map_err(|e| match e {
            tokio_xmpp::Error::Auth(AuthError::Fail(_)) if plus => LoginFailure::PlusRefused,
            tokio_xmpp::Error::Auth(AuthError::Fail(cond)) => ClientError::Auth(format!(
                "the server refused the login ({cond:?}): wrong password or unknown account"
            ))
            .into(),
            tokio_xmpp::Error::Auth(other) => ClientError::Auth(other.to_string()).into(),
            other => ClientError::Connect(other.to_string()).into(),
        })?;
    let stream = stream
        .send_header(StreamHeader {
            to: Some(Cow::Borrowed(jid.domain().as_str())),
            from: None,
            id: None,
        })
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let (features, stream) = stream
        .recv_features()
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    Ok(Connection {
        stream: stream.box_stream(),
        features,
        identity: jid.clone(),
    })
}

async fn run(
    mut stream: StanzaStream,
    mut fatal_rx: mpsc::UnboundedReceiver<ClientError>,
    severer: Severer,
    sm: SmUnresolved,
) -> Result<(Xmpp, mpsc::UnboundedReceiver<Incoming>), ClientError> {
    // Wait for the first bound stream (or the first failure).
    let bound = tokio::time::timeout(LOGIN_TIMEOUT, async {
        loop {
            tokio::select! {
                e = fatal_rx.recv() => return Err(e.unwrap_or(ClientError::Disconnected)),
                ev = stream.next() => match ev {
                    Some(StreamEvent::Stream(Se::Reset { bound_jid, .. })) => {
                        sm.resolved();
                        return bound_jid.try_into_full().map_err(|_| ClientError::Connect("server bound no resource".into()));
                    }
                    Some(_) => {}
                    None => return Err(fatal_rx.try_recv().unwrap_or(ClientError::Disconnected)),
                }
            }
        }
    })
    .await
    .map_err(|_| ClientError::Timeout("login"))??;

    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Command>();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let pending: Pending = Arc::default();
    let xmpp = Xmpp {
        cmd: cmd_tx,
        pending: pending.clone(),
        next_id: Arc::new(AtomicU64::new(1)),
        severer,
        jid: bound.clone(),
    };
    let own = bound;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(Command::Send(st)) => { let _ = stream.send(st).await; }
                    Some(Command::Close(done)) => {
                        stream.close().await;
                        let _ = done.send(());
                        let _ = in_tx.send(Incoming::Closed("closed".into()));
                        return;
                    }
                    None => { stream.close().await; return; }
                },
                e = fatal_rx.recv() => {
                    let why = e.map(|e| e.to_string()).unwrap_or_else(|| "connection closed".into());
                    let _ = in_tx.send(Incoming::Closed(why));
                    return;
                }
                ev = stream.next() => match ev {
                    Some(StreamEvent::Stanza(Stanza::Iq(iq))) => {
                        if let Some(iq) = answer_pending(&pending, &own, iq) {
                            let _ = in_tx.send(Incoming::Stanza(Box::new(Stanza::Iq(iq))));
                        }
                    }
                    Some(StreamEvent::Stanza(st)) => { let _ = in_tx.send(Incoming::Stanza(Box::new(st))); }
                    Some(StreamEvent::Stream(Se::Reset { bound_jid, .. })) => {
                        sm.resolved();
                        if let Ok(full) = bound_jid.try_into_full() {
                            let _ = in_tx.send(Incoming::Online(full));
                        }
                    }
                    Some(StreamEvent::Stream(Se::Resumed)) => sm.resolved(),
                    Some(StreamEvent::Stream(_)) => {}
                    None => {
                        let why = fatal_rx.try_recv().map(|e| e.to_string()).unwrap_or_else(|_| "connection closed".into());
                        let _ = in_tx.send(Incoming::Closed(why));
                        return;
                    }
                },
            }
        }
    });
    Ok((xmpp, in_rx))
}

/// Hands an IQ result/error to the request waiting for it; returns the IQ when nobody waits.
/// The answer must come from the JID we asked (our own account or server when we asked nobody).
fn answer_pending(pending: &Pending, own: &FullJid, iq: Iq) -> Option<Iq> {
    let (id, from, result) = match iq {
        Iq::Result {
            ref id,
            ref from,
            ref payload,
            ..
        } => (id.clone(), from.clone(), Ok(payload.clone())),
        Iq::Error {
            ref id,
            ref from,
            ref error,
            ..
        } => (id.clone(), from.clone(), Err(error.clone())),
        other => return Some(other),
    };
    let waiter = pending.lock().ok().and_then(|mut p| {
        let matches = p.get(&id).is_some_and(|(to, _)| match (to, &from) {
            (Some(to), Some(from)) => to == from,
            (None, None) => true,
            (None, Some(from)) => {
                from.to_bare() == own.to_bare()
                    || from.node().is_none() && from.domain() == own.domain()
            }
            (Some(to), None) => to.to_bare() == own.to_bare(),
        });
        if matches { p.remove(&id) } else { None }
    });
    match waiter {
        Some((_, tx)) => {
            let _ = tx.send(result);
            None
        }
        None => Some(iq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let o = ConnectOptions {
            jid: "a@b".parse().unwrap(),
            password: "hunter2-secret".into(),
            server: None,
            insecure_loopback: false,
            direct_tls: false,
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    #[test]
    fn server_addresses() {
        assert_eq!(
            split_server("127.0.0.1:5222").unwrap(),
            ("127.0.0.1".into(), 5222)
        );
        assert_eq!(split_server("[::1]:5222").unwrap(), ("::1".into(), 5222));
        assert!(split_server("example.org").is_err());
        assert!(split_server(":5222").is_err());
        assert!(split_server("h:99999").is_err());
        assert!(
            is_loopback_host("127.0.0.1")
                && is_loopback_host("::1")
                && is_loopback_host("localhost")
        );
        assert!(!is_loopback_host("192.0.2.1") && !is_loopback_host("example.org"));
    }
}
