//! A network-namespace lab: two home networks, each behind a NAT router of its own, and an
//! "internet" segment with the servers, for calls across NATs (issue 14). Only the
//! documentation ranges are used and no namespace has a link to the host, so nothing sent in
//! the lab can leave it:
//!
//! ```text
//!  home A: 192.0.2.0/24      internet: 203.0.113.0/24, bridge br0      home B: 198.51.100.0/24
//!  [host A]-------[router A]-------+--[servers]--+-------[router B]-------[host B]
//!   .10 eth0    lan .1 NAT .2 wan       .10 .11       wan .3 NAT .1 lan    eth0 .10
//! ```
//!
//! The hosts, the routers and the internet segment (where the servers run) are namespaces
//! named `sc<pid>-<n>-{homea,rtra,inet,rtrb,homeb}`, joined by veth pairs; the routers forward
//! and masquerade with nftables ([`NatKind`]). Dropping the [`Lab`] ends the processes still
//! inside its namespaces and deletes them (their veths and the bridge go with them), also while
//! a test unwinds; [`Lab::build`] first removes the namespaces of processes that died before
//! they could. docs/lab.md has the measurements behind [`NatKind`].

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::Error;
use crate::process::{find_tool, is_root, never, run_bounded, run_ok, signal};

/// How the routers map the home hosts' addresses and ports to their WAN address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// nftables `masquerade`: Linux keeps a host's source port whenever it is free on the WAN
    /// side, so one local port has one external port towards every destination
    /// (endpoint-independent mapping, RFC 4787): a STUN server's answer is a usable `srflx`
    /// candidate. Inbound packets pass only from an address and port the host sent to
    /// (conntrack: address- and port-dependent filtering).
    EndpointIndependent,
    /// nftables `masquerade fully-random`: every new flow gets a random external port, so one
    /// local port has a different external port towards each destination (address- and
    /// port-dependent mapping): a `srflx` candidate is useless to the peer, only a relay works.
    Symmetric,
}

/// One of the two home networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// 192.0.2.0/24 behind router A.
    A,
    /// 198.51.100.0/24 behind router B.
    B,
}

/// A namespace of the lab: where a command runs ([`Lab::exec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// The internet segment: the servers' addresses and the routers' WAN side.
    Internet,
    /// The NAT router of a home network.
    Router(Home),
    /// The one host of a home network (a client's machine).
    Host(Home),
}

/// The lab's namespaces, in the order they are made.
const NAMESPACES: [Namespace; 5] = [
    Namespace::Internet,
    Namespace::Router(Home::A),
    Namespace::Router(Home::B),
    Namespace::Host(Home::A),
    Namespace::Host(Home::B),
];

/// The start of every lab namespace's name: `sc<pid>-`, so that a later process can tell which
/// namespaces belong to a process that no longer exists.
const PREFIX: &str = "sc";

/// The servers' addresses on the internet segment.
const SERVERS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 10),
    Ipv4Addr::new(203, 0, 113, 11),
];

/// The internet segment's prefix length (203.0.113.0/24) and the homes' (/24 each).
const PREFIX_LEN: u8 = 24;

/// The internet segment's "rest of the internet": the default gateway of the servers and the
/// routers, an address no namespace has, reached by a MAC no interface has ([`Lab::make_void`]).
const VOID: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
const VOID_MAC: &str = "02:00:5e:00:00:fe";

/// The lowest and highest last octet a home host's address takes ([`Lab::renumber`]).
const HOST_OCTETS: (u8, u8) = (10, 250);

/// How long one `ip` or `nft` command may take.
const CMD_LIMIT: Duration = Duration::from_secs(10);

/// How long the processes left in a namespace may take to go when it is removed.
const KILL_LIMIT: Duration = Duration::from_secs(5);

/// The name of the nftables table the lab's rules live in, in each router.
const TABLE: &str = "shieldcall_lab";

/// Labs made by this process, so that each has names of its own.
static LABS: AtomicU32 = AtomicU32::new(0);

/// One lab is made at a time in this process (the first `ip netns add` sets up `/run/netns`).
static BUILDING: Mutex<()> = Mutex::new(());

impl Home {
    fn index(self) -> usize {
        match self {
            Home::A => 0,
            Home::B => 1,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Home::A => "a",
            Home::B => "b",
        }
    }

    /// The home network's first three octets.
    fn net(self) -> [u8; 3] {
        match self {
            Home::A => [192, 0, 2],
            Home::B => [198, 51, 100],
        }
    }

    fn addr(self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.net();
        Ipv4Addr::new(a, b, c, last)
    }
}

impl Namespace {
    /// The end of its name, after the lab's prefix.
    fn suffix(self) -> String {
        match self {
            Namespace::Internet => "inet".to_owned(),
            Namespace::Router(h) => format!("rtr{}", h.tag()),
            Namespace::Host(h) => format!("home{}", h.tag()),
        }
    }
}

/// The namespaces, veths and NAT rules of one lab; removed when dropped.
#[derive(Debug)]
pub struct Lab {
    ip: PathBuf,
    nft: PathBuf,
    /// `sc<pid>-<n>-`.
    prefix: String,
    /// The namespaces made so far (all five once built), removed in reverse order.
    created: Vec<String>,
    nat: [NatKind; 2],
    hosts: [Ipv4Addr; 2],
}

impl Lab {
    /// Builds the lab with both routers doing `kind` of NAT (see [`Lab::build_mixed`]).
    pub fn build(kind: NatKind) -> Result<Lab, Error> {
        Lab::build_mixed(kind, kind)
    }

    /// Builds the lab with router A doing `a` and router B doing `b` of NAT. It first removes
    /// the namespaces of dead processes ([`remove_stale`]). Needs root, `ip` (iproute2) and
    /// `nft` (nftables) and a kernel with network namespaces, veth, bridge and nf_tables NAT;
    /// without one of them the error says which, and what the lab made until then is removed.
    pub fn build_mixed(a: NatKind, b: NatKind) -> Result<Lab, Error> {
        if !is_root() {
            return Err(Error::io(
                "the network-namespace lab needs root (ip netns add, veth pairs, nft NAT rules)",
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ));
        }
        let ip = find_tool("ip", "iproute2")?;
        let nft = find_tool("nft", "nftables")?;
        let _building = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
        remove_stale()?;
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let mut lab = Lab {
            ip,
            nft,
            prefix: format!("{PREFIX}{}-{n}-", std::process::id()),
            created: Vec::new(),
            nat: [a, b],
            hosts: [Home::A.addr(HOST_OCTETS.0), Home::B.addr(HOST_OCTETS.0)],
        };
        // On an error, dropping `lab` removes what was made.
        lab.make()?;
        Ok(lab)
    }

    /// The kind of NAT that `home`'s router does.
    pub fn nat(&self, home: Home) -> NatKind {
        self.nat[home.index()]
    }

    /// The name of namespace `ns`, for `ip netns exec NAME` or `ip -n NAME`.
    pub fn name(&self, ns: Namespace) -> String {
        format!("{}{}", self.prefix, ns.suffix())
    }

    /// The names of all the lab's namespaces.
    pub fn names(&self) -> Vec<String> {
        NAMESPACES.iter().map(|&ns| self.name(ns)).collect()
    }

    /// `ip netns exec NAME`, to which the caller adds the program and its arguments: the
    /// program then runs in namespace `ns` (with the same pid: `ip` executes it in its place).
    pub fn exec(&self, ns: Namespace) -> Command {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec"]).arg(self.name(ns));
        cmd
    }

    /// The first server address on the internet segment, 203.0.113.10: where servers listen.
    pub fn server(&self) -> Ipv4Addr {
        SERVERS[0]
    }

    /// Both server addresses on the internet segment, 203.0.113.10 and 203.0.113.11 (a second
    /// server, or a second destination for NAT probes).
    pub fn servers(&self) -> [Ipv4Addr; 2] {
        SERVERS
    }

    /// The servers' and routers' default gateway and its MAC address, which no interface of the
    /// lab (nor any other) has: what is sent there vanishes (see docs/lab.md, "the void").
    pub fn void(&self) -> (Ipv4Addr, &'static str) {
        (VOID, VOID_MAC)
    }

    /// Router `home`'s WAN address (203.0.113.2 for A, .3 for B): the source address that the
    /// internet segment sees for everything from that home.
    pub fn wan(&self, home: Home) -> Ipv4Addr {
        match home {
            Home::A => Ipv4Addr::new(203, 0, 113, 2),
            Home::B => Ipv4Addr::new(203, 0, 113, 3),
        }
    }

    /// Router `home`'s LAN address (192.0.2.1, 198.51.100.1): the home host's default route.
    pub fn gateway(&self, home: Home) -> Ipv4Addr {
        home.addr(1)
    }

    /// The home host's current address (192.0.2.10, 198.51.100.10 until [`Lab::renumber`]).
    pub fn host(&self, home: Home) -> Ipv4Addr {
        self.hosts[home.index()]
    }

    /// Drops every UDP packet that router `home` would forward, both ways, for the rest of the
    /// lab's life: a network where only TCP (and so TURN over TCP or TLS) gets through.
    pub fn block_udp(&self, home: Home) -> Result<(), Error> {
        self.set_chain(home, "block_udp", Some("meta l4proto udp counter drop"))
    }

    /// Makes router `home` drop TCP connections to port `port` (on any server), for the rest of
    /// the lab's life: with [`Lab::block_udp`] and the TURN server's TCP port, only TURN over
    /// TLS is left.
    pub fn block_tcp_port(&self, home: Home, port: u16) -> Result<(), Error> {
        let rule = format!("tcp dport {port} counter drop");
        self.set_chain(home, "block_tcp", Some(&rule))
    }

    /// With `on`, router `home` drops every packet it would forward, both ways (an outage);
    /// without, it forwards again. Its connection tracking is left alone, so a flow that
    /// resumes within conntrack's UDP timeouts (30 s, 120 s once answered) keeps its external
    /// port.
    pub fn blackout(&self, home: Home, on: bool) -> Result<(), Error> {
        self.set_chain(home, "blackout", on.then_some("counter drop"))
    }

    /// Gives host `home` the next address of its network (.10 → .11 → …, back to .10 after
    /// .250) and removes the old one, keeping its default route: a network change under a
    /// running call. Sockets bound to the old address stop working; those bound to 0.0.0.0
    /// send from the new one. Returns the new address.
    pub fn renumber(&mut self, home: Home) -> Result<Ipv4Addr, Error> {
        let old = self.host(home);
        let last = old.octets()[3];
        let next = if last >= HOST_OCTETS.1 {
            HOST_OCTETS.0
        } else {
            last + 1
        };
        let new = home.addr(next);
        let ns = self.name(Namespace::Host(home));
        let (old_cidr, new_cidr) = (format!("{old}/{PREFIX_LEN}"), format!("{new}/{PREFIX_LEN}"));
        // The new address first: with promote_secondaries it becomes the primary one when the
        // old goes, and the routes stay.
        self.ip_in(&ns, &["addr", "add", &new_cidr, "dev", "eth0"])?;
        self.ip_in(&ns, &["addr", "del", &old_cidr, "dev", "eth0"])?;
        let gateway = self.gateway(home).to_string();
        self.ip_in(&ns, &["route", "replace", "default", "via", &gateway])?;
        self.hosts[home.index()] = new;
        Ok(new)
    }

    /// Router `home`'s nftables rules with their counters (`nft list ruleset`), for a failing
    /// test's message.
    pub fn ruleset(&self, home: Home) -> Result<String, Error> {
        let mut cmd = self.exec(Namespace::Router(home));
        cmd.arg(&self.nft).args(["list", "ruleset"]);
        let what = format!("nft list ruleset in {}", self.name(Namespace::Router(home)));
        Ok(run_ok(cmd, CMD_LIMIT, &what, &never)?.stdout)
    }

    /// Makes the namespaces, links, addresses, routes and NAT rules.
    fn make(&mut self) -> Result<(), Error> {
        for ns in NAMESPACES {
            let name = self.name(ns);
            let what = format!("ip netns add {name} (making the lab's namespaces)");
            run_ok(
                self.ip_cmd(&["netns", "add", &name]),
                CMD_LIMIT,
                &what,
                &never,
            )?;
            self.created.push(name.clone());
            self.ip_in(&name, &["link", "set", "lo", "up"])?;
            // IPv4 only, on the documentation ranges: no IPv6 addresses (not even link-local
            // ones) for a client to gather as candidates.
            let mut settings = vec![
                "net/ipv6/conf/all/disable_ipv6=1",
                "net/ipv6/conf/default/disable_ipv6=1",
            ];
            match ns {
                Namespace::Router(_) => settings.push("net/ipv4/ip_forward=1"),
                Namespace::Host(_) => settings.extend([
                    "net/ipv4/conf/all/promote_secondaries=1",
                    "net/ipv4/conf/default/promote_secondaries=1",
                ]),
                Namespace::Internet => {}
            }
            self.sysctl(ns, &settings)?;
        }
        let inet = self.name(Namespace::Internet);
        self.ip_in(&inet, &["link", "add", "br0", "type", "bridge"])?;
        for server in SERVERS {
            let cidr = format!("{server}/{PREFIX_LEN}");
            self.ip_in(&inet, &["addr", "add", &cidr, "dev", "br0"])?;
        }
        self.ip_in(&inet, &["link", "set", "br0", "up"])?;
        for home in [Home::A, Home::B] {
            self.make_home(home, &inet)?;
        }
        // Last: a bridge changes its MAC address as ports join, which flushes its neighbours.
        self.make_void(&inet, "br0")
    }

    /// A default route in namespace `ns` out of `dev` to [`VOID`], an address nobody on the
    /// segment has, with a fixed neighbour entry: a datagram for an address beyond the lab (a
    /// home host's private address, as seen from the internet) is sent and vanishes, as on the
    /// internet (the bridge floods the frame, every namespace drops it as not its own MAC).
    /// Without it the send fails with `ENETUNREACH`, which no real server sees — and on which
    /// coturn closes the allocation that tried it (seen in its log: every call that offered
    /// host candidates lost its relays). No kernel module is needed (a dummy device would).
    fn make_void(&self, ns: &str, dev: &str) -> Result<(), Error> {
        let void = VOID.to_string();
        self.ip_in(
            ns,
            &[
                "neigh",
                "replace",
                &void,
                "lladdr",
                VOID_MAC,
                "dev",
                dev,
                "nud",
                "permanent",
            ],
        )?;
        self.ip_in(ns, &["route", "add", "default", "via", &void, "dev", dev])
    }

    /// Router `home` (WAN on the bridge, LAN to the host), the host and the NAT rules.
    fn make_home(&self, home: Home, inet: &str) -> Result<(), Error> {
        let router = self.name(Namespace::Router(home));
        let host = self.name(Namespace::Host(home));
        let port = format!("rtr{}", home.tag());
        let wan = format!("{}/{PREFIX_LEN}", self.wan(home));
        let gateway = self.gateway(home).to_string();
        let lan = format!("{gateway}/{PREFIX_LEN}");
        let addr = format!("{}/{PREFIX_LEN}", self.host(home));
        let peer = |name: &str, ns: &str| ["peer", "name", name, "netns", ns].map(str::to_owned);
        let veth = |here: &str, there: &str, ns: &str| {
            let mut args = ["link", "add", here, "type", "veth"]
                .map(str::to_owned)
                .to_vec();
            args.extend(peer(there, ns));
            args
        };
        let run = |ns: &str, args: &[String]| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.ip_in(ns, &args)
        };
        run(&router, &veth("wan", &port, inet))?;
        self.ip_in(inet, &["link", "set", &port, "master", "br0"])?;
        self.ip_in(inet, &["link", "set", &port, "up"])?;
        self.ip_in(&router, &["addr", "add", &wan, "dev", "wan"])?;
        self.ip_in(&router, &["link", "set", "wan", "up"])?;
        run(&router, &veth("lan", "eth0", &host))?;
        self.ip_in(&router, &["addr", "add", &lan, "dev", "lan"])?;
        self.ip_in(&router, &["link", "set", "lan", "up"])?;
        self.ip_in(&host, &["addr", "add", &addr, "dev", "eth0"])?;
        self.ip_in(&host, &["link", "set", "eth0", "up"])?;
        // Inside the lab only: beyond its two networks the router's default route goes into
        // the void, like the servers'.
        self.make_void(&router, "wan")?;
        self.ip_in(&host, &["route", "add", "default", "via", &gateway])?;
        self.nat_rules(home)
    }

    /// The router's rules in one nftables transaction: masquerade out of `wan`, forward only
    /// what the home started (and its answers), accept nothing the internet starts to the
    /// router itself (as every home router's firewall: dropped before conntrack confirms it,
    /// the peer's first ICE check leaves no entry behind; an entry would clash with the home
    /// host's own check to that peer, and masquerade would give that check another port, so
    /// no server-reflexive pair would ever work), and the empty chains that
    /// [`Lab::block_udp`], [`Lab::block_tcp_port`] and [`Lab::blackout`] fill.
    fn nat_rules(&self, home: Home) -> Result<(), Error> {
        let masquerade = match self.nat(home) {
            NatKind::EndpointIndependent => "masquerade",
            NatKind::Symmetric => "masquerade fully-random",
        };
        let rules = format!(
            "table ip {TABLE} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" {masquerade}
  }}
}}
table inet {TABLE} {{
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname \"lan\" oifname \"wan\" accept
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"wan\" ct state new drop
  }}
  chain block_udp {{
    type filter hook forward priority filter - 10; policy accept;
  }}
  chain block_tcp {{
    type filter hook forward priority filter - 10; policy accept;
  }}
  chain blackout {{
    type filter hook forward priority filter - 20; policy accept;
  }}
}}
"
        );
        let router = self.name(Namespace::Router(home));
        let file = std::env::temp_dir().join(format!("{router}.nft"));
        std::fs::write(&file, rules)
            .map_err(|e| Error::io(format!("cannot write {}", file.display()), e))?;
        let mut cmd = self.exec(Namespace::Router(home));
        cmd.arg(&self.nft).arg("-f").arg(&file);
        let what = format!(
            "nft -f {} in {router} (NAT needs nf_tables and nft_masq)",
            file.display()
        );
        let done = run_ok(cmd, CMD_LIMIT, &what, &never);
        let _ = std::fs::remove_file(&file);
        done.map(|_| ())
    }

    /// Empties chain `chain` of router `home`'s lab table and, with `rule`, puts that rule in
    /// it (one nftables transaction).
    fn set_chain(&self, home: Home, chain: &str, rule: Option<&str>) -> Result<(), Error> {
        let mut cmd = self.exec(Namespace::Router(home));
        cmd.arg(&self.nft)
            .args(["flush", "chain", "inet", TABLE, chain]);
        if let Some(rule) = rule {
            cmd.args([";", "add", "rule", "inet", TABLE, chain])
                .args(rule.split(' '));
        }
        let router = self.name(Namespace::Router(home));
        let what = format!("nft: chain {chain} in {router}");
        run_ok(cmd, CMD_LIMIT, &what, &never).map(|_| ())
    }

    /// Writes `key=value` settings under /proc/sys inside `ns` (the IPv6 ones are left out
    /// where the kernel has no IPv6).
    fn sysctl(&self, ns: Namespace, settings: &[&str]) -> Result<(), Error> {
        const SCRIPT: &str = r#"for kv do
  f=/proc/sys/${kv%%=*}
  case $f in /proc/sys/net/ipv6/*) [ -d /proc/sys/net/ipv6 ] || continue ;; esac
  echo "${kv#*=}" > "$f" || exit 1
done"#;
        let mut cmd = self.exec(ns);
        cmd.args(["/bin/sh", "-c", SCRIPT, "sh"]).args(settings);
        let what = format!("sysctl {} in {}", settings.join(" "), self.name(ns));
        run_ok(cmd, CMD_LIMIT, &what, &never).map(|_| ())
    }

    /// `ip ARGS`.
    fn ip_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ip);
        cmd.args(args);
        cmd
    }

    /// `ip -n NS ARGS`, which must succeed.
    fn ip_in(&self, ns: &str, args: &[&str]) -> Result<(), Error> {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["-n", ns]).args(args);
        let what = format!("ip -n {ns} {}", args.join(" "));
        run_ok(cmd, CMD_LIMIT, &what, &never).map(|_| ())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Never panics: this runs while a test unwinds, too.
        for name in self.created.iter().rev() {
            remove_namespace(&self.ip, name);
        }
    }
}

/// A socket's transport, for [`bound_by`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A bound UDP socket.
    Udp,
    /// A listening TCP socket.
    Tcp,
}

/// Whether process `pid` itself has a UDP socket bound to, or a TCP socket listening on,
/// `addr`, in whatever namespace it runs: read from `/proc/PID/net/{udp,tcp}` (that process's
/// namespace) and `/proc/PID/fd`, so that a server in the lab is seen ready from outside it
/// and another process listening there does not count.
pub fn bound_by(pid: u32, transport: Transport, addr: SocketAddrV4) -> bool {
    let inodes = bound_inodes(pid, transport, addr);
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
    })
}

/// Whether any process in the namespace of process `pid` has `addr` bound (UDP) or listening
/// (TCP): for a server whose socket belongs to a descendant of the process started (ejabberd's
/// Erlang VM under `ejabberdctl`), in a namespace of the lab where nothing else runs.
pub fn bound_in_namespace_of(pid: u32, transport: Transport, addr: SocketAddrV4) -> bool {
    !bound_inodes(pid, transport, addr).is_empty()
}

/// The `socket:[INODE]` names of the sockets bound to `addr` in `pid`'s namespace.
fn bound_inodes(pid: u32, transport: Transport, addr: SocketAddrV4) -> Vec<String> {
    let table = match transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    };
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
        return Vec::new();
    };
    // `sl local_address rem_address st … inode`: the address as the kernel's u32 in hex
    // (byte order of the machine), 0A = LISTEN (any state for UDP).
    let wanted = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(addr.ip().octets()),
        addr.port()
    );
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let listening = transport == Transport::Udp || f.get(3) == Some(&"0A");
            (f.get(1) == Some(&wanted.as_str()) && listening)
                .then(|| f.get(9).map(|i| format!("socket:[{i}]")))
                .flatten()
        })
        .collect()
}

/// The names of all network namespaces on the machine (`ip netns list`), ours or not.
pub fn namespaces() -> Result<Vec<String>, Error> {
    let ip = find_tool("ip", "iproute2")?;
    let mut cmd = Command::new(ip);
    cmd.args(["netns", "list"]);
    let done = run_ok(cmd, CMD_LIMIT, "ip netns list", &never)?;
    // Lines are `NAME` or `NAME (id: N)`.
    Ok(done
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Removes the lab namespaces (`sc<pid>-…`) of processes that no longer exist, with whatever
/// still runs inside them; returns their names. A pid that was reused by another process
/// keeps its namespaces until that process is gone too.
pub fn remove_stale() -> Result<Vec<String>, Error> {
    let ip = find_tool("ip", "iproute2")?;
    let stale: Vec<String> = namespaces()?
        .into_iter()
        .filter(|name| {
            owner_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    for name in &stale {
        remove_namespace(&ip, name);
    }
    Ok(stale)
}

/// The pid in a lab namespace's name (`sc<pid>-…`), if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let (pid, _) = name.strip_prefix(PREFIX)?.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Ends the processes inside namespace `name` (by pid: each keeps the namespace, its veths and
/// its sockets alive after its name is gone) and deletes it. Never panics; a failure leaves
/// the namespace for the next [`remove_stale`].
fn remove_namespace(ip: &Path, name: &str) {
    let pids = || -> Vec<u32> {
        let mut cmd = Command::new(ip);
        cmd.args(["netns", "pids", name]);
        run_bounded(cmd, CMD_LIMIT, "ip netns pids", &never)
            .map(|d| {
                d.stdout
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + KILL_LIMIT;
    loop {
        let left = pids();
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        for pid in left {
            signal(pid, "KILL");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut cmd = Command::new(ip);
    cmd.args(["netns", "del", name]);
    let _ = run_bounded(cmd, CMD_LIMIT, "ip netns del", &never);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_read_from_lab_names_only() {
        assert_eq!(owner_pid("sc1234-0-inet"), Some(1234));
        assert_eq!(owner_pid("sc1-12-homea"), Some(1));
        assert_eq!(owner_pid("scx-inet"), None);
        assert_eq!(owner_pid("sc-inet"), None);
        assert_eq!(owner_pid("something-else"), None);
        assert_eq!(owner_pid("sc12"), None);
    }

    #[test]
    fn the_address_plan_uses_documentation_ranges_only() {
        let doc = |a: Ipv4Addr| {
            let o = a.octets();
            matches!(o[..3], [192, 0, 2] | [198, 51, 100] | [203, 0, 113])
        };
        assert_eq!(Home::A.addr(10), Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(Home::B.addr(1), Ipv4Addr::new(198, 51, 100, 1));
        assert!(SERVERS.iter().all(|&s| doc(s)));
        for home in [Home::A, Home::B] {
            assert!(doc(home.addr(HOST_OCTETS.0)) && doc(home.addr(HOST_OCTETS.1)));
        }
        assert_eq!(Namespace::Router(Home::B).suffix(), "rtrb");
        assert_eq!(Namespace::Host(Home::A).suffix(), "homea");
    }
}
