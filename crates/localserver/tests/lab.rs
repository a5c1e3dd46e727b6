//! The network-namespace lab and coturn in it: the lab is built and always removed (also when
//! a test panics, and the namespaces of dead processes at the next build), its routers map
//! ports the way their [`NatKind`] says (measured from both homes with a UDP echo server on
//! the internet segment), its outages and renumbering work, and coturn answers STUN with the
//! router's WAN address and grants an allocation for REST credentials, over UDP, TCP and TLS.
//!
//! Needs root, iproute2, nftables, coturn and python3 (scripts/test installs them); without
//! them every test fails with the reason, none is skipped. The little peers are Python scripts
//! run inside the namespaces through `ip netns exec`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shieldcall_localserver::lab::{self, Home, Namespace, NatKind};
use shieldcall_localserver::process::{find_tool, never, run_ok};
use shieldcall_localserver::{Coturn, CoturnConfig, Lab, WorkDir, rest_credentials};

/// The stale-namespace test removes namespaces it did not make itself while the others run:
/// it runs alone.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// How long one peer script may run.
const PEER_LIMIT: Duration = Duration::from_secs(30);

/// A UDP and TCP echo server: binds every `HOST:PORT` of its arguments (UDP and TCP), answers
/// each datagram and each connection with the address and port it came from, and ends by
/// itself after its first argument's seconds.
const ECHO: &str = r#"
import selectors, socket, sys, time
end = time.monotonic() + float(sys.argv[1])
sel = selectors.DefaultSelector()
for a in sys.argv[2:]:
    h, p = a.rsplit(':', 1)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((h, int(p)))
    sel.register(u, selectors.EVENT_READ, 'udp')
    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((h, int(p)))
    t.listen(16)
    sel.register(t, selectors.EVENT_READ, 'tcp')
print('ready', flush=True)
while time.monotonic() < end:
    for k, _ in sel.select(0.2):
        if k.data == 'udp':
            d, src = k.fileobj.recvfrom(2048)
            k.fileobj.sendto(('%s:%d' % src).encode(), src)
        else:
            c, src = k.fileobj.accept()
            c.sendall(('%s:%d' % src).encode())
            c.close()
"#;

/// The probe: COUNT fresh UDP sockets, each sending to every `udp:HOST:PORT` of its arguments
/// (3 tries, 300 ms each) and connecting to every `tcp:HOST:PORT`; one line per socket:
/// `local=IP:PORT seen=A,B,…` with what the echo server saw for each (or `timeout`).
const PROBE: &str = r#"
import socket, sys
count, dests = int(sys.argv[1]), [d.split(':') for d in sys.argv[2:]]
for _ in range(count):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('0.0.0.0', 0))
    u.settimeout(0.3)
    seen = []
    for proto, h, p in dests:
        got = 'timeout'
        if proto == 'udp':
            for _ in range(3):
                u.sendto(b'probe', (h, int(p)))
                try:
                    got = u.recvfrom(100)[0].decode()
                    break
                except OSError:
                    pass
        else:
            t = socket.socket()
            t.settimeout(1.0)
            try:
                t.connect((h, int(p)))
                got = t.recv(100).decode()
            except OSError:
                pass
            t.close()
        seen.append(got)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.connect((dests[0][1], int(dests[0][2])))
    print('local=%s:%d seen=%s' % (c.getsockname()[0], u.getsockname()[1], ','.join(seen)), flush=True)
    c.close()
    u.close()
"#;

/// The tests' STUN/TURN client (`tests/python/stun_client.py`, shared with the client crate's
/// XEP-0215 test): a Binding or an Allocate, one line of `key=value` pairs.
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

fn build(kind: NatKind) -> Lab {
    Lab::build(kind).unwrap_or_else(|e| panic!("the lab cannot be built: {e}"))
}

/// Runs a Python script inside `ns` to its end; its standard output.
fn run_py(lab: &Lab, ns: Namespace, script: &str, args: &[String]) -> String {
    run_py_with(lab, ns, &["-c", script], args, &[])
}

/// Runs `python INTERPRETER_ARGS ARGS` inside `ns` with `env` to its end; its standard output.
fn run_py_with(
    lab: &Lab,
    ns: Namespace,
    interpreter: &[&str],
    args: &[String],
    env: &[(&str, &str)],
) -> String {
    let mut cmd = lab.exec(ns);
    cmd.arg(python())
        .args(interpreter)
        .args(args)
        .envs(env.iter().copied());
    let what = format!("python in {}", lab.name(ns));
    run_ok(cmd, PEER_LIMIT, &what, &never)
        .unwrap_or_else(|e| panic!("{e}"))
        .stdout
}

/// `key=value` pairs of one line.
fn fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The echo server, running in the internet segment until dropped.
struct Echo(Child);

impl Echo {
    fn start(lab: &Lab, at: &[SocketAddrV4]) -> Echo {
        let mut cmd = lab.exec(Namespace::Internet);
        cmd.arg(python())
            .arg("-c")
            .arg(ECHO)
            .arg("60")
            .args(at.iter().map(SocketAddrV4::to_string))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let line = BufReader::new(out).lines().next();
            let _ = tx.send(line.and_then(Result::ok));
        });
        let mut echo = Echo(child);
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(Some(l)) if l == "ready" => echo,
            other => {
                let _ = echo.0.kill();
                panic!("the echo server did not start: {other:?}")
            }
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One socket's view of the NAT: its local address and what each destination saw.
#[derive(Debug)]
struct Probe {
    local: SocketAddrV4,
    seen: Vec<Option<SocketAddrV4>>,
}

fn probe(lab: &Lab, home: Home, sockets: usize, dests: &[String]) -> Vec<Probe> {
    let mut args = vec![sockets.to_string()];
    args.extend(dests.iter().cloned());
    let out = run_py(lab, Namespace::Host(home), PROBE, &args);
    let probes: Vec<Probe> = out
        .lines()
        .map(|l| {
            let f = fields(l);
            Probe {
                local: f["local"].parse().unwrap(),
                seen: f["seen"].split(',').map(|s| s.parse().ok()).collect(),
            }
        })
        .collect();
    assert_eq!(probes.len(), sockets, "{out}");
    probes
}

fn udp(a: SocketAddrV4) -> String {
    format!("udp:{a}")
}

fn tcp(a: SocketAddrV4) -> String {
    format!("tcp:{a}")
}

/// Three destinations on the internet segment: two ports of one server, and another server.
fn echo_addrs(lab: &Lab) -> [SocketAddrV4; 3] {
    let [s1, s2] = lab.servers();
    [
        SocketAddrV4::new(s1, 4000),
        SocketAddrV4::new(s1, 4001),
        SocketAddrV4::new(s2, 4000),
    ]
}

fn ours_left(names: &[String]) -> Vec<String> {
    let all = lab::namespaces().unwrap();
    names.iter().filter(|n| all.contains(n)).cloned().collect()
}

#[test]
fn the_lab_is_removed_when_dropped_also_on_panic_and_after_a_dead_process() {
    let _alone = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    // A namespace of a process that died, with a process still inside: the next build removes
    // both.
    let mut gone = Command::new("/bin/true").spawn().unwrap();
    gone.wait().unwrap();
    let stale = format!("sc{}-0-inet", gone.id());
    let ip = find_tool("ip", "iproute2").unwrap();
    let mut add = Command::new(&ip);
    add.args(["netns", "add", &stale]);
    run_ok(add, Duration::from_secs(10), "ip netns add", &never).unwrap();
    let mut inside = Command::new(&ip)
        .args(["netns", "exec", &stale, "sleep", "60"])
        .spawn()
        .unwrap();
    let lab = build(NatKind::EndpointIndependent);
    assert!(
        ours_left(std::slice::from_ref(&stale)).is_empty(),
        "{stale} was not removed"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while inside.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the process in {stale} was not ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Built: all five namespaces exist, with the pid of this process in their names.
    let names = lab.names();
    assert_eq!(names.len(), 5);
    assert_eq!(ours_left(&names), names);
    let pid = format!("sc{}-", std::process::id());
    assert!(names.iter().all(|n| n.starts_with(&pid)), "{names:?}");
    // A process left inside does not keep the namespace alive.
    let mut left = lab
        .exec(Namespace::Internet)
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    drop(lab);
    assert!(
        ours_left(&names).is_empty(),
        "left behind: {:?}",
        ours_left(&names)
    );
    assert!(left.wait().is_ok());
    // A test body that panics: the lab is removed while unwinding.
    let built = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = build(NatKind::Symmetric);
        *built.lock().unwrap() = lab.names();
        panic!("a failing test body");
    }));
    assert!(result.is_err());
    let names = built.into_inner().unwrap();
    assert_eq!(names.len(), 5);
    assert!(
        ours_left(&names).is_empty(),
        "left behind: {:?}",
        ours_left(&names)
    );
    eprintln!("three labs built and removed in {:?}", t.elapsed());
}

#[test]
fn the_lab_has_no_way_out() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let lab = build(NatKind::EndpointIndependent);
    let names = lab.names();
    let ip = find_tool("ip", "iproute2").unwrap();
    let ip_in = |ns: &str, args: &[&str]| {
        let mut cmd = Command::new(&ip);
        cmd.args(["-n", ns]).args(args);
        run_ok(cmd, Duration::from_secs(10), "ip", &never)
    };
    let documentation = |a: &str| {
        ["192.0.2.", "198.51.100.", "203.0.113.", "127.0.0.1/"]
            .iter()
            .any(|p| a.starts_with(p))
    };
    for ns in &names {
        // Every link but lo is a veth whose other end is in the lab, or the bridge.
        let links = ip_in(ns, &["-o", "link"]).unwrap().stdout;
        for l in links.lines() {
            let name = l.split(": ").nth(1).unwrap_or("");
            if name == "lo" || name == "br0" {
                continue;
            }
            let peer = l
                .split("link-netns ")
                .nth(1)
                .map(|r| r.split_whitespace().next());
            assert!(
                peer.flatten().is_some_and(|p| names.iter().any(|n| n == p)),
                "{ns}: a link out of the lab: {l}"
            );
        }
        // IPv4 on the documentation ranges only, no IPv6 at all.
        let addrs = ip_in(ns, &["-o", "addr"]).unwrap().stdout;
        for l in addrs.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f[2], "inet", "{ns}: {l}");
            assert!(documentation(f[3]), "{ns}: {l}");
        }
        // The hosts' default route goes to their router; the routers' and the internet
        // segment's into the void: a gateway whose MAC no interface has, so what goes there
        // is dropped by every namespace the bridge floods it to.
        let default = ip_in(ns, &["route", "show", "default"]).unwrap().stdout;
        let host = [Home::A, Home::B]
            .into_iter()
            .find(|&h| *ns == lab.name(Namespace::Host(h)));
        let (void, void_mac) = lab.void();
        match host {
            Some(h) => assert_eq!(
                default.trim(),
                format!("default via {} dev eth0", lab.gateway(h)),
                "{ns}"
            ),
            None => {
                let dev = if *ns == lab.name(Namespace::Internet) {
                    "br0"
                } else {
                    "wan"
                };
                assert_eq!(
                    default.trim(),
                    format!("default via {void} dev {dev}"),
                    "{ns}"
                );
                let neigh = ip_in(ns, &["neigh", "show", &void.to_string()]).unwrap();
                assert!(
                    neigh
                        .stdout
                        .contains(&format!("lladdr {void_mac} PERMANENT")),
                    "{ns}: {}",
                    neigh.stdout
                );
            }
        }
        assert!(
            !links.contains(void_mac),
            "{ns} has the void's MAC: {links}"
        );
    }
    // The homes do not reach each other but through the routers' WAN addresses: router A and
    // the servers send home B's private address into the void (a send that succeeds and
    // vanishes, as on the internet, not one that fails with "network unreachable").
    for ns in [Namespace::Router(Home::A), Namespace::Internet] {
        let out = ip_in(&lab.name(ns), &["route", "get", "198.51.100.10"]).unwrap();
        assert!(
            out.stdout.contains(&format!("via {}", lab.void().0)),
            "{:?} routes to home B: {}",
            ns,
            out.stdout
        );
    }
}

#[test]
fn endpoint_independent_nat_keeps_one_external_port_per_socket() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let lab = build(NatKind::EndpointIndependent);
    let at = echo_addrs(&lab);
    let _echo = Echo::start(&lab, &at);
    let dests: Vec<String> = at.iter().copied().map(udp).collect();
    for home in [Home::A, Home::B] {
        for p in probe(&lab, home, 20, &dests) {
            assert_eq!(*p.local.ip(), lab.host(home), "{p:?}");
            for seen in &p.seen {
                let seen = seen.unwrap_or_else(|| panic!("no answer: {p:?}"));
                assert_eq!(
                    *seen.ip(),
                    lab.wan(home),
                    "the source is the router's WAN: {p:?}"
                );
                // One external port towards every destination: the local port itself.
                assert_eq!(seen.port(), p.local.port(), "{p:?}");
            }
        }
    }
    eprintln!(
        "endpoint-independent: 2 × 20 sockets × 3 destinations in {:?}",
        t.elapsed()
    );
}

#[test]
fn symmetric_nat_maps_each_destination_to_its_own_port() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let lab = build(NatKind::Symmetric);
    let at = echo_addrs(&lab);
    let _echo = Echo::start(&lab, &at);
    let dests: Vec<String> = at.iter().copied().map(udp).collect();
    for home in [Home::A, Home::B] {
        let probes = probe(&lab, home, 20, &dests);
        let mut all_distinct = 0;
        for p in &probes {
            let ports: Vec<u16> = p
                .seen
                .iter()
                .map(|s| {
                    let s = s.unwrap_or_else(|| panic!("no answer: {p:?}"));
                    assert_eq!(*s.ip(), lab.wan(home), "{p:?}");
                    s.port()
                })
                .collect();
            // Never one port for all: what a STUN server sees is not what the peer would.
            assert!(ports.iter().any(|&q| q != ports[0]), "{p:?}");
            let mut unique = ports.clone();
            unique.sort_unstable();
            unique.dedup();
            all_distinct += usize::from(unique.len() == ports.len());
        }
        // Random ports meet by chance (about 1 in 20 000 per pair): allow one such socket.
        assert!(all_distinct >= probes.len() - 1, "{probes:?}");
        eprintln!("symmetric, home {home:?}: {all_distinct}/20 sockets with 3 distinct ports");
    }
    eprintln!(
        "symmetric: 2 × 20 sockets × 3 destinations in {:?}",
        t.elapsed()
    );
}

#[test]
fn udp_can_be_blocked_a_router_blacked_out_and_a_host_renumbered() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let mut lab = build(NatKind::EndpointIndependent);
    let at = echo_addrs(&lab)[0];
    let _echo = Echo::start(&lab, &[at]);
    let both = [udp(at), tcp(at)];
    let seen = |lab: &Lab, home: Home| probe(lab, home, 1, &both).remove(0);
    // A new address for host A: it sends from it, and still through its router.
    let old = lab.host(Home::A);
    let new = lab.renumber(Home::A).unwrap();
    assert_eq!(new, Ipv4Addr::new(192, 0, 2, 11));
    assert_ne!(new, old);
    let p = seen(&lab, Home::A);
    assert_eq!(*p.local.ip(), new, "{p:?}");
    assert!(
        p.seen
            .iter()
            .all(|s| s.is_some_and(|s| *s.ip() == lab.wan(Home::A))),
        "{p:?}"
    );
    // UDP dropped at router A: TCP still passes; home B is not affected.
    lab.block_udp(Home::A).unwrap();
    let p = seen(&lab, Home::A);
    assert!(p.seen[0].is_none() && p.seen[1].is_some(), "{p:?}");
    assert!(
        lab.ruleset(Home::A).unwrap().contains("udp"),
        "the rule is listed"
    );
    let p = seen(&lab, Home::B);
    assert!(p.seen.iter().all(Option::is_some), "{p:?}");
    // Router B blacked out: nothing passes; back on, everything does.
    lab.blackout(Home::B, true).unwrap();
    let p = seen(&lab, Home::B);
    assert!(p.seen.iter().all(Option::is_none), "{p:?}");
    lab.blackout(Home::B, false).unwrap();
    let p = seen(&lab, Home::B);
    assert!(p.seen.iter().all(Option::is_some), "{p:?}");
    eprintln!("block, blackout and renumber checked in {:?}", t.elapsed());
}

#[test]
fn coturn_answers_stun_with_the_wan_address_and_allocates_with_rest_credentials() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let lab = build(NatKind::EndpointIndependent);
    let dir = WorkDir::create("shieldcall-coturn", false).unwrap();
    let config = CoturnConfig {
        addresses: vec![lab.server()],
        max_allocate_lifetime: Some(Duration::from_secs(30)),
        ..CoturnConfig::default()
    };
    let turn = Coturn::launch(dir.path(), &config, Some((&lab, Namespace::Internet)))
        .unwrap_or_else(|e| panic!("coturn did not start: {e}"));
    let started = t.elapsed();
    let server = lab.server().to_string();
    let port = turn.port().to_string();
    let ca = turn.ca_file().unwrap().display().to_string();
    let tls = turn.tls_port().unwrap().to_string();
    let client = |home: Home, args: &[&str], env: &[(&str, &str)]| {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let out = run_py_with(&lab, Namespace::Host(home), &[STUN_CLIENT], &args, env);
        fields(out.trim())
    };
    let stun = |home: Home, args: &[&str]| client(home, args, &[]);
    let allocate = |home: Home, c: &shieldcall_localserver::TurnCredentials| {
        let env = [
            ("TURN_USERNAME", &*c.username),
            ("TURN_PASSWORD", &*c.password),
        ];
        client(home, &["allocate", "udp", &server, &port], &env)
    };
    // STUN Binding over UDP, TCP and TLS: the mapped address is the router's WAN address.
    for home in [Home::A, Home::B] {
        for (proto, port) in [("udp", &port), ("tcp", &port), ("tls", &tls)] {
            let f = stun(home, &["binding", proto, &server, port, &ca]);
            let mapped: SocketAddrV4 = f["mapped"].parse().unwrap();
            let local: SocketAddrV4 = f["local"].parse().unwrap();
            assert_eq!(*mapped.ip(), lab.wan(home), "{proto} from {home:?}: {f:?}");
            assert_eq!(*local.ip(), lab.host(home), "{f:?}");
            if proto == "udp" {
                assert_eq!(mapped.port(), local.port(), "endpoint-independent: {f:?}");
            }
        }
    }
    // An Allocate with valid REST credentials: a relayed address on the server, with the
    // short lifetime.
    let good = turn.credentials("alice", Duration::from_secs(600));
    let f = allocate(Home::A, &good);
    assert_eq!(f["result"], "success", "{f:?}\n{}", turn.log());
    let relayed: SocketAddrV4 = f["relayed"].parse().unwrap();
    assert_eq!(*relayed.ip(), lab.server(), "{f:?}");
    assert_eq!(
        f["mapped"].parse::<SocketAddrV4>().unwrap().ip(),
        &lab.wan(Home::A)
    );
    assert_eq!(
        f["lifetime"], "30",
        "max-allocate-lifetime caps the 600 s asked: {f:?}"
    );
    assert_eq!(f["realm"], turn.realm());
    // A wrong secret and expired credentials are refused.
    let wrong = rest_credentials(
        "not-the-secret",
        "alice",
        SystemTime::now() + Duration::from_secs(600),
    );
    let f = allocate(Home::B, &wrong);
    assert_eq!(
        (f["result"].as_str(), f["code"].as_str()),
        ("error", "401"),
        "{f:?}"
    );
    let expired = rest_credentials(
        turn.secret(),
        "alice",
        UNIX_EPOCH + Duration::from_secs(1_000_000_000),
    );
    let f = allocate(Home::B, &expired);
    assert_eq!(
        (f["result"].as_str(), f["code"].as_str()),
        ("error", "401"),
        "{f:?}"
    );
    let pid = turn.pid();
    drop(turn);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_ne!(comm.trim(), "turnserver", "coturn {pid} still runs");
    eprintln!(
        "coturn started in {started:?}; all checks in {:?}",
        t.elapsed()
    );
}
