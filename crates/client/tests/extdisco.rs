//! STUN/TURN discovery (XEP-0215) against the real servers: a Prosody 0.12 with
//! `mod_turn_external` and an ejabberd 23.01 with `mod_stun_disco`, each sharing its secret
//! with a real coturn, all on 127.0.0.1. The services discovered have the hosts, ports,
//! transports and expiry configured, and coturn grants a TURN allocation (over UDP, TCP and
//! TLS) for exactly the credentials the XMPP server handed out — nothing is computed here,
//! and a wrong password gets 401. Servers without XEP-0215 give no servers, and the call agent
//! reports what it found, user overrides first, as labels without credentials.
//!
//! Needs prosody, ejabberd, coturn (`turnserver`) and python3 (scripts/test installs them;
//! `SHIELDCALL_PYTHON` names the venv's); without them every test fails with the reason, none
//! is skipped. The STUN/TURN client is a short Python script written from RFC 8489 and RFC 8656
//! (the approach of crates/localserver/tests/lab.rs), not a library; it reads the credentials
//! on stdin, never from its command line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use minidom::Element;
use shieldcall_client::agent::{AgentCommand, AgentEvent, CallAgent, CallOptions, Mode};
use shieldcall_client::connection::{self, ConnectOptions, Xmpp};
use shieldcall_client::extdisco::{self, Service};
use shieldcall_client::session::{Role, SessionOptions, sign_in};
use shieldcall_localserver::process::{find_tool, free_port};
use shieldcall_localserver::{
    Coturn, CoturnConfig, DOMAIN, Ejabberd, EjabberdConfig, Prosody, ProsodyConfig, StunDisco,
    StunDiscoService, StunDiscoTransport, StunDiscoType, TurnExternal, process, rest_credentials,
};
use shieldcall_media::{IceServer, IceServerKind, IceTransport, Secret};

/// The secret the XMPP servers share with coturn.
const SECRET: &str = "shieldcall-extdisco-test-secret";
/// How long the servers' credentials are valid.
const TTL: Duration = Duration::from_secs(600);
/// How far the expiry may be from now + TTL (start-up, a slow machine).
const SLACK: Duration = Duration::from_secs(30);
/// Bound on one STUN/TURN client run.
const CLIENT_LIMIT: Duration = Duration::from_secs(30);

/// The tests' STUN/TURN client (`tests/python/stun_client.py`, shared with the lab's tests):
/// `allocate udp|tcp|tls HOST PORT [CAFILE]`, the credentials in the environment.
const STUN_CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/python/stun_client.py"
);

/// The Python the tests run: the venv's of scripts/test, else python3.
fn python() -> PathBuf {
    std::env::var_os("SHIELDCALL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| find_tool("python3", "python3").unwrap_or_else(|e| panic!("{e}")))
}

/// What coturn said to an Allocate with `server`'s credentials (or `password` instead of its
/// own), sent over `server`'s transport (TLS checked against `ca`): `key=value` pairs.
fn allocate(
    server: &IceServer,
    password: Option<&str>,
    ca: Option<&Path>,
) -> HashMap<String, String> {
    let proto = match (server.kind, server.transport) {
        (IceServerKind::Turns, _) => "tls",
        (_, IceTransport::Udp) => "udp",
        (_, IceTransport::Tcp) => "tcp",
    };
    let user = server.username.as_deref().unwrap_or("");
    let pass = password.unwrap_or_else(|| server.password.as_ref().map_or("", Secret::expose));
    let mut cmd = Command::new(python());
    cmd.arg(STUN_CLIENT)
        .args(["allocate", proto, &server.host, &server.port.to_string()])
        .args(ca)
        .env("TURN_USERNAME", user)
        .env("TURN_PASSWORD", pass);
    let what = format!("the TURN client against {}", server.label());
    let out = shieldcall_localserver::process::run_ok(cmd, CLIENT_LIMIT, &what, &process::never)
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = out.stdout;
    stdout
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// coturn grants `server`'s own credentials an allocation relayed from 127.0.0.1, and
/// refuses them with another password.
fn coturn_accepts(server: &IceServer, coturn: &Coturn) {
    let ca = coturn.ca_file();
    let ca = ca
        .as_deref()
        .filter(|_| server.kind == IceServerKind::Turns);
    let got = allocate(server, None, ca);
    assert_eq!(
        got.get("result").map(String::as_str),
        Some("success"),
        "{}: {got:?}\n{}",
        server.label(),
        coturn.log()
    );
    assert!(got["relayed"].starts_with("127.0.0.1:"), "{got:?}");
    let wrong = allocate(server, Some("not-the-password"), ca);
    assert_eq!(
        (
            wrong["result"].as_str(),
            wrong.get("code").map(String::as_str)
        ),
        ("error", Some("401")),
        "{}: a wrong password must be refused: {wrong:?}",
        server.label()
    );
}

fn coturn(dir: &Path) -> Coturn {
    let config = CoturnConfig {
        port: free_port().unwrap(),
        tls_port: Some(free_port().unwrap()),
        secret: SECRET.into(),
        ..CoturnConfig::default()
    };
    Coturn::launch(dir, &config, None).unwrap_or_else(|e| panic!("coturn: {e}"))
}

async fn connect(server: String, user: &str) -> Xmpp {
    let opts = ConnectOptions {
        jid: format!("{user}@{DOMAIN}").parse().unwrap(),
        password: format!("pw-{user}"),
        server: Some(server),
        insecure_loopback: true,
        direct_tls: false,
    };
    let (xmpp, incoming) = connection::connect(&opts).await.unwrap();
    // Nobody reads what arrives; the connection does not need it.
    drop(incoming);
    xmpp
}

/// The server's raw answer to `payload`, with every password replaced (for the log).
async fn raw(xmpp: &Xmpp, payload: Element) -> Element {
    let server = xmpp.jid.domain().as_str().parse().unwrap();
    match xmpp.iq(Some(server), false, payload).await.unwrap() {
        Ok(Some(p)) => p,
        other => panic!("no answer: {other:?}"),
    }
}

fn redacted(answer: &Element) -> String {
    let mut text = String::from(answer);
    for s in answer.children() {
        if let Some(p) = s.attr("password") {
            text = text.replace(p, "REDACTED");
        }
    }
    text
}

fn labels(servers: &[IceServer]) -> Vec<String> {
    servers.iter().map(IceServer::label).collect()
}

/// The credentials expire about TTL from now, and the REST user name starts with that time.
fn check_expiry(server: &IceServer) {
    let expires = server
        .expires
        .unwrap_or_else(|| panic!("{}: no expiry", server.label()));
    let want = SystemTime::now() + TTL;
    let off = want
        .duration_since(expires)
        .unwrap_or_else(|e| e.duration());
    assert!(
        off < SLACK,
        "{}: expires {off:?} off now + {TTL:?}",
        server.label()
    );
    let secs = expires.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let user = server.username.as_deref().unwrap();
    assert!(
        user == secs.to_string() || user.starts_with(&format!("{secs}:")),
        "{}: REST user name {user:?} does not start with the expiry {secs}",
        server.label()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn prosody_mod_turn_external_credentials_are_accepted_by_coturn() {
    let dir = tempfile::tempdir().unwrap();
    let coturn = coturn(&dir.path().join("coturn"));
    let turn = TurnExternal {
        secret: SECRET.into(),
        host: "127.0.0.1".into(),
        port: coturn.port(),
        tcp: true,
        tls_port: coturn.tls_port(),
        ttl: TTL,
    };
    let config = ProsodyConfig {
        turn: Some(turn),
        ..ProsodyConfig::default()
    };
    let prosody = Prosody::launch(&dir.path().join("prosody"), &config, &process::never)
        .unwrap_or_else(|e| panic!("prosody: {e}"));
    prosody.register("alice", "pw-alice").unwrap();
    let xmpp = connect(prosody.server(), "alice").await;

    let answer = raw(&xmpp, extdisco::services_request()).await;
    eprintln!("Prosody's <services/> answer: {}", redacted(&answer));
    assert_eq!(answer.children().count(), 5, "{}", redacted(&answer));

    let started = Instant::now();
    let servers = extdisco::discover(&xmpp).await.unwrap();
    eprintln!("discovered in {:?}", started.elapsed());
    let (p, t) = (coturn.port(), coturn.tls_port().unwrap());
    assert_eq!(
        labels(&servers),
        [
            format!("stun:127.0.0.1:{p}?transport=udp"),
            format!("stun:127.0.0.1:{p}?transport=tcp"),
            format!("turn:127.0.0.1:{p}?transport=udp"),
            format!("turn:127.0.0.1:{p}?transport=tcp"),
            format!("turns:127.0.0.1:{t}?transport=tcp"),
        ]
    );
    for stun in &servers[..2] {
        assert!(
            stun.username.is_none() && stun.expires.is_none(),
            "{stun:?}"
        );
    }
    for turn in &servers[2..4] {
        check_expiry(turn);
        coturn_accepts(turn, &coturn);
    }
    assert_eq!(
        servers[2].username, servers[3].username,
        "one user name for both"
    );
    // Prosody 0.12.3's mod_turn_external makes credentials for `turn` only and announces
    // `turns` bare: it gets those of the `turn` service on its host, which coturn takes over
    // TLS just as well.
    let bare = extdisco::parse_services(&answer).unwrap();
    assert!(
        bare[4].server.username.is_none() && !bare[4].restricted,
        "{}",
        redacted(&answer)
    );
    let turns = &servers[4];
    assert_eq!(turns.username, servers[2].username);
    check_expiry(turns);
    coturn_accepts(turns, &coturn);

    // Asking for one service's credentials (what discovery does for a restricted service that
    // came without them): Prosody answers <credentials/> with fresh ones.
    let restricted = extdisco::parse_services(&answer).unwrap().remove(2);
    let request = extdisco::credentials_request(&restricted);
    let answer = raw(&xmpp, request).await;
    eprintln!("Prosody's <credentials/> answer: {}", redacted(&answer));
    assert!(
        answer.is("credentials", extdisco::NS),
        "{}",
        redacted(&answer)
    );
    let got = extdisco::request_credentials(&xmpp, &restricted)
        .await
        .unwrap();
    assert!(!got.is_empty(), "{}", redacted(&answer));
    assert!(got.iter().all(|s| s.server.kind == IceServerKind::Turn));
    check_expiry(&got[0].server);
    coturn_accepts(&got[0].server, &coturn);
    xmpp.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn ejabberd_mod_stun_disco_credentials_are_accepted_by_coturn() {
    let work = tempfile::tempdir().unwrap();
    let coturn = coturn(&work.path().join("coturn"));
    let (p, t) = (coturn.port(), coturn.tls_port().unwrap());
    let service = |kind, transport, port, restricted| StunDiscoService {
        host: "127.0.0.1".into(),
        port,
        kind,
        transport,
        restricted,
    };
    let config = EjabberdConfig {
        stun_disco: Some(StunDisco {
            secret: SECRET.into(),
            services: vec![
                service(StunDiscoType::Stun, StunDiscoTransport::Udp, p, false),
                service(StunDiscoType::Turn, StunDiscoTransport::Udp, p, true),
                service(StunDiscoType::Turn, StunDiscoTransport::Tcp, p, true),
                service(StunDiscoType::Turns, StunDiscoTransport::Tcp, t, true),
                // A type a call cannot use: skipped.
                service(StunDiscoType::Stuns, StunDiscoTransport::Tcp, t, false),
            ],
            credentials_lifetime: TTL,
        }),
        namespace: None,
    };
    // ejabberd runs as its own user: a directory of its own (handed to that user).
    let dir = tempfile::tempdir().unwrap();
    let ejabberd =
        Ejabberd::launch_with(dir.path(), &config).unwrap_or_else(|e| panic!("ejabberd: {e}"));
    ejabberd.register("alice", "pw-alice").unwrap();
    let xmpp = connect(ejabberd.server(), "alice").await;

    let answer = raw(&xmpp, extdisco::services_request()).await;
    eprintln!("ejabberd's <services/> answer: {}", redacted(&answer));

    let servers = extdisco::discover(&xmpp).await.unwrap();
    assert_eq!(
        labels(&servers),
        [
            format!("stun:127.0.0.1:{p}?transport=udp"),
            format!("turn:127.0.0.1:{p}?transport=udp"),
            format!("turn:127.0.0.1:{p}?transport=tcp"),
            format!("turns:127.0.0.1:{t}?transport=tcp"),
        ]
    );
    assert!(servers[0].username.is_none() && servers[0].expires.is_none());
    for turn in &servers[1..] {
        check_expiry(turn);
        coturn_accepts(turn, &coturn);
        // The weaker check beside coturn's: the REST password for the same user name.
        let user = turn.username.as_deref().unwrap();
        let (expiry, hash) = user.split_once(':').unwrap();
        let expiry = UNIX_EPOCH + Duration::from_secs(expiry.parse().unwrap());
        let rest = rest_credentials(SECRET, hash, expiry);
        assert_eq!(rest.username, user);
        assert_eq!(
            turn.password.as_ref().map(Secret::expose),
            Some(rest.password.as_str())
        );
    }

    // ejabberd answers a credentials request with <services/>.
    let restricted: Service = extdisco::parse_services(&answer).unwrap().remove(1);
    let answer = raw(&xmpp, extdisco::credentials_request(&restricted)).await;
    eprintln!("ejabberd's <credentials/> answer: {}", redacted(&answer));
    let got = extdisco::request_credentials(&xmpp, &restricted)
        .await
        .unwrap();
    assert!(!got.is_empty(), "{}", redacted(&answer));
    check_expiry(&got[0].server);
    coturn_accepts(&got[0].server, &coturn);
    xmpp.close().await;
    drop(ejabberd);
}

#[tokio::test(flavor = "current_thread")]
async fn servers_without_xep_0215_give_no_servers() {
    let dir = tempfile::tempdir().unwrap();
    let prosody = Prosody::launch(dir.path(), &ProsodyConfig::default(), &process::never)
        .unwrap_or_else(|e| panic!("prosody: {e}"));
    prosody.register("alice", "pw-alice").unwrap();
    let xmpp = connect(prosody.server(), "alice").await;
    assert_eq!(extdisco::discover(&xmpp).await.unwrap(), vec![]);
    xmpp.close().await;

    let dir = tempfile::tempdir().unwrap();
    let ejabberd = Ejabberd::launch(dir.path()).unwrap_or_else(|e| panic!("ejabberd: {e}"));
    ejabberd.register("alice", "pw-alice").unwrap();
    let xmpp = connect(ejabberd.server(), "alice").await;
    assert_eq!(extdisco::discover(&xmpp).await.unwrap(), vec![]);
    xmpp.close().await;
}

/// The agent discovers after going online and reports the servers (the user's first) as
/// labels; without discovery, the user's alone.
#[tokio::test(flavor = "current_thread")]
async fn the_agent_reports_its_servers_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let turn = TurnExternal {
        secret: SECRET.into(),
        host: "192.0.2.7".into(),
        port: 3478,
        tcp: false,
        tls_port: None,
        ttl: TTL,
    };
    let config = ProsodyConfig {
        turn: Some(turn),
        ..ProsodyConfig::default()
    };
    let prosody = Prosody::launch(&dir.path().join("prosody"), &config, &process::never)
        .unwrap_or_else(|e| panic!("prosody: {e}"));
    prosody.register("alice", "pw-alice").unwrap();
    let own = IceServer {
        kind: IceServerKind::Turns,
        host: "turn.example.org".into(),
        port: 5349,
        transport: IceTransport::Tcp,
        username: Some("alice".into()),
        password: Some(Secret::new("own-turn-password")),
        expires: None,
    };
    for discover_ice in [true, false] {
        let connect = ConnectOptions {
            jid: format!("alice@{DOMAIN}").parse().unwrap(),
            password: "pw-alice".into(),
            server: Some(prosody.server()),
            insecure_loopback: true,
            direct_tls: false,
        };
        let role = Role::Exclusive {
            command: "test",
            calls: true,
        };
        let data_dir = dir.path().join("alice");
        let session = sign_in(SessionOptions {
            connect,
            data_dir,
            role,
        })
        .await
        .unwrap();
        let options = CallOptions {
            ice_servers: vec![own.clone()],
            discover_ice,
            media_ips: vec!["127.0.0.1".parse().unwrap()],
            ..CallOptions::default()
        };
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let (commands, commands_rx) = tokio::sync::mpsc::unbounded_channel();
        let agent = CallAgent::new(
            session.omemo,
            Mode::Listen(shieldcall_client::agent::Answer::Reject),
            options,
            events_tx,
        );
        assert_eq!(
            agent.ice_servers(),
            std::slice::from_ref(&own),
            "before discovery: the user's"
        );
        // The agent and its watcher in one task (the agent is not Send): the watcher hangs up
        // once it saw the servers.
        let watch = async {
            let mut seen = Vec::new();
            let mut servers = None;
            while let Some(ev) = events.recv().await {
                let shown = format!("{ev:?}");
                assert!(!shown.contains("own-turn-password"), "{shown}");
                if let AgentEvent::IceServers { servers: s } = ev {
                    if servers.is_none() {
                        commands.send(AgentCommand::HangUpAll).unwrap();
                    }
                    servers.get_or_insert(s);
                }
                seen.push(shown);
            }
            (servers, seen)
        };
        let run = agent.run(session.incoming, commands_rx);
        let (ended, (servers, seen)) =
            tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(run, watch) })
                .await
                .expect("the agent did not end within 30 s");
        assert!(matches!(ended, Ok(true)), "{ended:?}");
        let servers = servers.unwrap_or_else(|| panic!("no IceServers event: {seen:?}"));
        assert!(seen[0].starts_with("Online"), "online first: {seen:?}");
        let mut want = vec!["turns:turn.example.org:5349?transport=tcp".to_owned()];
        if discover_ice {
            want.push("stun:192.0.2.7:3478?transport=udp".into());
            want.push("turn:192.0.2.7:3478?transport=udp".into());
        }
        assert_eq!(servers, want, "discover_ice {discover_ice}");
        assert_eq!(
            seen.iter().filter(|e| e.starts_with("IceServers")).count(),
            1,
            "reported once: {seen:?}"
        );
        drop(session.lock);
    }
}
