//! Test doubles and an in-memory XMPP "server" for driving engines with stanzas.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use minidom::rxml::{Namespace, NcName};
use shieldcall_jingle::call::RING_TIMEOUT;
use shieldcall_jingle::{
    ApiError, Config, ContactPolicy, CryptoError, Decrypted, Encrypted, Engine, Event, Handled,
    IdentityKey, LocalContent, Media, MediaEvent, OmemoCrypto, Output, Role, Trust, UserAction,
};
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::jingle::Senders;
use xmpp_parsers::jingle_dtls_srtp::{Fingerprint, Setup};
use xmpp_parsers::jingle_ice_udp::{Candidate, Type as CandidateType};
use xmpp_parsers::jingle_rtp::{Description, PayloadType};

pub const AXOLOTL: &str = "eu.siacs.conversations.axolotl";

/// Romeo (caller in docs/protocol.md §7) and Juliet's two devices.
pub const ROMEO: &str = "romeo@montague.example/phone";
pub const JULIET: &str = "juliet@capulet.example/laptop";
pub const JULIET2: &str = "juliet@capulet.example/tablet";
pub const ROMEO_DEV: u32 = 948227715;
pub const JULIET_DEV: u32 = 1284733451;
pub const JULIET2_DEV: u32 = 555_000_111;
pub const SID: &str = "xT3kq8Rf2VbN0yHcLw9aEQ";

pub fn ident(b: u8) -> IdentityKey {
    let mut k = [b; 33];
    k[0] = 5;
    IdentityKey::from_bytes(k)
}
pub fn romeo_id() -> IdentityKey {
    ident(0x11)
}
pub fn juliet_id() -> IdentityKey {
    ident(0x22)
}
pub fn juliet2_id() -> IdentityKey {
    ident(0x33)
}

pub fn full(s: &str) -> FullJid {
    FullJid::new(s).unwrap()
}
pub fn bare(s: &str) -> BareJid {
    BareJid::new(s).unwrap()
}
pub fn xml(s: &str) -> Element {
    s.parse().unwrap()
}
pub fn set_attr(el: &mut Element, name: &str, value: &str) {
    el.set_attr(
        Namespace::NONE,
        NcName::try_from(name).unwrap(),
        value.to_owned(),
    );
}

/// TEST DOUBLE — NOT CRYPTOGRAPHY. A deterministic toy "OMEMO" that lets two engines talk:
/// the payload is the plaintext XOR 0x5A in hex, the `<key/>` carries a counter (so replays are
/// detectable) and a checksum (so tampering is detectable). It records which device and
/// identity were used, can fail on demand, and holds trust levels that tests change mid-call.
#[derive(Debug, Clone)]
pub struct FakeOmemo {
    pub own_device: Option<u32>,
    /// "Sessions": identity key per (peer bare JID, device).
    pub sessions: BTreeMap<(String, u32), IdentityKey>,
    pub trust: BTreeMap<IdentityKey, Trust>,
    pub fail_encrypt: bool,
    pub fail_decrypt: bool,
    pub encrypt_log: Vec<(String, u32)>,
    pub decrypt_log: Vec<(String, u32)>,
    /// Per peer bare JID: the user's policy and history (default: none).
    pub policy: BTreeMap<String, ContactPolicy>,
    counter: u32,
    seen: BTreeSet<(String, u32, u32)>,
}

impl FakeOmemo {
    pub fn new(own_device: Option<u32>) -> Self {
        FakeOmemo {
            own_device,
            sessions: BTreeMap::new(),
            trust: BTreeMap::new(),
            fail_encrypt: false,
            fail_decrypt: false,
            encrypt_log: Vec::new(),
            decrypt_log: Vec::new(),
            policy: BTreeMap::new(),
            counter: 0,
            seen: BTreeSet::new(),
        }
    }
    pub fn with_session(mut self, peer: &str, device: u32, id: IdentityKey, trust: Trust) -> Self {
        self.sessions.insert((bare(peer).to_string(), device), id);
        self.trust.insert(id, trust);
        self
    }
    /// Encrypts any plaintext as `peer`'s session with our device would (what a withheld chat
    /// message of that session looks like).
    pub fn encrypt_text(&mut self, to: &str, device: u32, text: &[u8]) -> Element {
        self.encrypt(&bare(to), device, text).unwrap().element
    }

    fn checksum(pt: &[u8], rid: u32, counter: u32) -> u32 {
        pt.iter().fold(rid ^ counter.wrapping_mul(31), |a, b| {
            a.wrapping_mul(33) ^ u32::from(*b)
        })
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

impl OmemoCrypto for FakeOmemo {
    fn own_device_id(&self) -> Option<u32> {
        self.own_device
    }
    fn encrypt(
        &mut self,
        peer: &BareJid,
        device: u32,
        plaintext: &[u8],
    ) -> Result<Encrypted, CryptoError> {
        if self.fail_encrypt {
            return Err(CryptoError::NoSession(device));
        }
        let own = self
            .own_device
            .ok_or(CryptoError::Other("omemo off".into()))?;
        let id = *self
            .sessions
            .get(&(peer.to_string(), device))
            .ok_or(CryptoError::NoSession(device))?;
        self.counter += 1;
        let c = self.counter;
        self.encrypt_log.push((peer.to_string(), device));
        let payload: Vec<u8> = plaintext.iter().map(|b| b ^ 0x5a).collect();
        let element = xml(&format!(
            "<encrypted xmlns='{AXOLOTL}'><header sid='{own}'><key rid='{device}'>{c}:{}</key><iv>AAAAAAAAAAAAAAAA</iv></header><payload>{}</payload></encrypted>",
            Self::checksum(plaintext, device, c),
            hex(&payload)
        ));
        Ok(Encrypted {
            element,
            identity_key: id,
        })
    }
    fn decrypt(&mut self, peer: &BareJid, encrypted: &Element) -> Result<Decrypted, CryptoError> {
        if self.fail_decrypt {
            return Err(CryptoError::InvalidMessage("forced".into()));
        }
        let own = self.own_device.ok_or(CryptoError::NotForThisDevice)?;
        let bad = || CryptoError::InvalidMessage("malformed".into());
        let header = encrypted.get_child("header", AXOLOTL).ok_or_else(bad)?;
        let sid: u32 = header
            .attr("sid")
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let key = header
            .children()
            .find(|k| k.name() == "key" && k.attr("rid") == Some(&own.to_string()))
            .ok_or(CryptoError::NotForThisDevice)?;
        let text = key.text();
        let (c, sum) = text.split_once(':').ok_or_else(bad)?;
        let c: u32 = c.parse().map_err(|_| bad())?;
        let sum: u32 = sum.parse().map_err(|_| bad())?;
        let payload = encrypted.get_child("payload", AXOLOTL).ok_or_else(bad)?;
        let pt: Vec<u8> = unhex(&payload.text())
            .ok_or_else(bad)?
            .iter()
            .map(|b| b ^ 0x5a)
            .collect();
        if Self::checksum(&pt, own, c) != sum {
            return Err(CryptoError::InvalidMessage("bad mac".into()));
        }
        // A re-delivered message (same counter) fails like a consumed ratchet key.
        if !self.seen.insert((peer.to_string(), sid, c)) {
            return Err(CryptoError::InvalidMessage("duplicate counter".into()));
        }
        let id = *self
            .sessions
            .get(&(peer.to_string(), sid))
            .ok_or(CryptoError::NoSession(sid))?;
        self.decrypt_log.push((peer.to_string(), sid));
        Ok(Decrypted {
            plaintext: pt,
            device: sid,
            identity_key: id,
        })
    }
    fn trust(&self, _peer: &BareJid, identity_key: &IdentityKey) -> Trust {
        self.trust
            .get(identity_key)
            .copied()
            .unwrap_or(Trust::Undecided)
    }
    fn session_identity(&self, peer: &BareJid, device: u32) -> Option<IdentityKey> {
        self.sessions.get(&(peer.to_string(), device)).copied()
    }
    fn contact_policy(&self, peer: &BareJid) -> ContactPolicy {
        self.policy.get(peer.as_str()).copied().unwrap_or_default()
    }
}

/// A test certificate fingerprint: 32 bytes of `b`.
pub fn cert(b: u8) -> Vec<u8> {
    vec![b; 32]
}

pub fn opus() -> Description {
    let mut d = Description::new("audio".to_owned());
    d.payload_types
        .push(PayloadType::new(111, "opus".to_owned(), 48000, 2));
    d.rtcp_mux = true;
    d
}

pub fn candidate(port: u16) -> Candidate {
    Candidate {
        component: 1,
        foundation: "1".into(),
        generation: 0,
        id: format!("c{port}"),
        ip: "192.0.2.10".parse().unwrap(),
        port,
        priority: 2122260223,
        protocol: "udp".into(),
        rel_addr: None,
        rel_port: None,
        network: None,
        type_: CandidateType::Host,
    }
}

pub fn local_audio(name: &str, role: Role, cert_byte: u8) -> LocalContent {
    LocalContent {
        name: name.to_owned(),
        senders: Senders::Both,
        description: opus(),
        ufrag: format!("uf{cert_byte}"),
        pwd: format!("pwd{cert_byte}xxxxxxxxxxxxxxxxxxx"),
        candidates: vec![candidate(50000 + u16::from(cert_byte))],
        fingerprint: Fingerprint {
            hash: Algo::Sha_256,
            setup: match role {
                Role::Initiator => Setup::Actpass,
                Role::Responder => Setup::Active,
            },
            value: cert(cert_byte),
        },
    }
}

/// An engine beside the OMEMO double it lends to each input, as the client's call agent keeps
/// its OMEMO service beside the engine; derefs to the engine for its outputs.
pub struct Driven<C> {
    pub engine: Engine,
    pub crypto: C,
}

impl<C: OmemoCrypto> Driven<C> {
    pub fn new(config: Config, crypto: C) -> Self {
        Driven {
            engine: Engine::new(config),
            crypto,
        }
    }
    pub fn crypto(&self) -> &C {
        &self.crypto
    }
    pub fn crypto_mut(&mut self) -> &mut C {
        &mut self.crypto
    }
    pub fn handle_user(&mut self, now: Instant, action: UserAction) -> Result<(), ApiError> {
        self.engine.handle_user(&mut self.crypto, now, action)
    }
    pub fn handle_media(
        &mut self,
        now: Instant,
        sid: &str,
        event: MediaEvent,
    ) -> Result<(), ApiError> {
        self.engine.handle_media(&mut self.crypto, now, sid, event)
    }
    pub fn handle_stanza(&mut self, now: Instant, wall: SystemTime, stanza: &Element) -> Handled {
        self.engine
            .handle_stanza(&mut self.crypto, now, wall, stanza)
    }
    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(&mut self.crypto, now)
    }
    pub fn handle_trust_change(&mut self, now: Instant) {
        self.engine.handle_trust_change(&mut self.crypto, now)
    }
}

impl<C> std::ops::Deref for Driven<C> {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.engine
    }
}

impl<C> std::ops::DerefMut for Driven<C> {
    fn deref_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }
}

/// One client: an engine plus simulated media and a simulated user.
pub struct Node {
    pub jid: FullJid,
    pub engine: Driven<FakeOmemo>,
    pub cert: u8,
    /// The user answers incoming calls at once.
    pub auto_accept: bool,
    pub events: Vec<Event>,
    /// Per sid: remote fingerprints (what DTLS would check) and whether local contents went out.
    remote: BTreeMap<String, Vec<Vec<u8>>>,
    local_sent: BTreeSet<String>,
    dtls_done: BTreeSet<String>,
}

impl Node {
    pub fn new(jid: &str, omemo: FakeOmemo, cert: u8) -> Self {
        Node::with_config(Config::new(full(jid)), omemo, cert)
    }
    pub fn with_config(config: Config, omemo: FakeOmemo, cert: u8) -> Self {
        Node {
            jid: config.own_jid.clone(),
            engine: Driven::new(config, omemo),
            cert,
            auto_accept: true,
            events: Vec::new(),
            remote: BTreeMap::new(),
            local_sent: BTreeSet::new(),
            dtls_done: BTreeSet::new(),
        }
    }
    pub fn shields(&self) -> Vec<shieldcall_jingle::Shield> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Shield { shield, .. } => Some(*shield),
                _ => None,
            })
            .collect()
    }
    pub fn ended(&self) -> Option<&shieldcall_jingle::CallEnd> {
        self.events.iter().find_map(|e| match e {
            Event::Ended { end, .. } => Some(end),
            _ => None,
        })
    }
    pub fn played(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::PlayMedia { .. }))
    }
    /// The downgrades reported, each with whether it came before any `PlayMedia`.
    pub fn downgrades(&self) -> Vec<(shieldcall_jingle::Downgrade, Option<u32>, bool)> {
        let mut played = false;
        let mut out = Vec::new();
        for e in &self.events {
            match e {
                Event::PlayMedia { .. } => played = true,
                Event::Downgrade { kind, device, .. } => out.push((*kind, *device, !played)),
                _ => {}
            }
        }
        out
    }
    /// The devices reported with each shield.
    pub fn shield_devices(&self) -> Vec<Option<u32>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Shield { device, .. } => Some(*device),
                _ => None,
            })
            .collect()
    }
}

/// A stanza as it crossed the server: sender, recipient node, the stanza.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub from: FullJid,
    pub to: FullJid,
    pub stanza: Element,
}

/// What the adversarial server does with a stanza on its way to `to`: rewrite it in place and
/// return true to deliver, false to drop.
pub type Tamper = Box<dyn FnMut(&FullJid, &mut Element) -> bool>;

/// An in-memory XMPP server with carbons, no network.
pub struct Net {
    pub nodes: Vec<Node>,
    pub now: Instant,
    pub wall: SystemTime,
    pub tamper: Tamper,
    pub log: Vec<Delivery>,
    /// Per node: the certificate a MITM presents to it in DTLS (else the peer's real one).
    pub mitm: BTreeMap<String, u8>,
    /// Simulated media reports digests and Connected automatically.
    pub auto_media: bool,
    /// Per sid, the certificates nodes really hold (what DTLS would prove).
    pub certs: BTreeMap<String, Vec<(FullJid, u8)>>,
}

impl Net {
    pub fn new(nodes: Vec<Node>) -> Self {
        Net {
            nodes,
            now: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            tamper: Box::new(|_, _| true),
            log: Vec::new(),
            mitm: BTreeMap::new(),
            auto_media: true,
            certs: BTreeMap::new(),
        }
    }

    pub fn node(&mut self, jid: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.jid.as_str() == jid)
            .unwrap()
    }
    pub fn get(&self, jid: &str) -> &Node {
        self.nodes.iter().find(|n| n.jid.as_str() == jid).unwrap()
    }

    pub fn user(&mut self, jid: &str, action: UserAction) {
        let now = self.now;
        self.node(jid).engine.handle_user(now, action).unwrap();
        self.run();
    }

    pub fn call(&mut self, from: &str, to_bare: &str) {
        self.user(
            from,
            UserAction::Call {
                peer: bare(to_bare),
                sid: SID.into(),
                media: vec![Media::Audio],
            },
        );
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.wall += d;
        let now = self.now;
        for n in &mut self.nodes {
            n.engine.handle_timeout(now);
        }
        self.run();
    }

    pub fn trust_changed(&mut self, jid: &str) {
        let now = self.now;
        self.node(jid).engine.handle_trust_change(now);
        self.run();
    }

    /// Delivers a stanza from outside (e.g. a forged one) to one node.
    pub fn inject(&mut self, to: &str, stanza: Element) -> shieldcall_jingle::Handled {
        let (now, wall) = (self.now, self.wall);
        let h = self.node(to).engine.handle_stanza(now, wall, &stanza);
        self.run();
        h
    }

    /// Runs until nothing moves.
    pub fn run(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].engine.poll_output() {
                    moved = true;
                    match out {
                        Output::Send(el) => self.route(i, el),
                        Output::Event(e) => self.on_event(i, e),
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("router did not settle");
    }

    fn route(&mut self, from_idx: usize, mut el: Element) {
        let from = self.nodes[from_idx].jid.clone();
        set_attr(&mut el, "from", from.as_str());
        let to = Jid::new(el.attr("to").unwrap()).unwrap();
        let is_chat = el.name() == "message" && el.attr("type") == Some("chat");
        let mut deliveries: Vec<(FullJid, Element)> = Vec::new();
        match to.clone().try_into_full() {
            Ok(to_full) => {
                deliveries.push((to_full.clone(), el.clone()));
                if is_chat && to_full.to_bare() != from.to_bare() {
                    for n in &self.nodes {
                        if n.jid.to_bare() == to_full.to_bare() && n.jid != to_full {
                            deliveries.push((n.jid.clone(), carbon("received", &n.jid, &el)));
                        }
                    }
                }
            }
            Err(to_bare) => {
                for n in &self.nodes {
                    if n.jid.to_bare() == to_bare {
                        deliveries.push((n.jid.clone(), el.clone()));
                    }
                }
            }
        }
        if is_chat && to.to_bare() != from.to_bare() {
            for n in &self.nodes {
                if n.jid.to_bare() == from.to_bare() && n.jid != from {
                    deliveries.push((n.jid.clone(), carbon("sent", &n.jid, &el)));
                }
            }
        }
        for (to, mut stanza) in deliveries {
            if !(self.tamper)(&to, &mut stanza) {
                continue;
            }
            self.log.push(Delivery {
                from: from.clone(),
                to: to.clone(),
                stanza: stanza.clone(),
            });
            let (now, wall) = (self.now, self.wall);
            if let Some(n) = self.nodes.iter_mut().find(|n| n.jid == to) {
                n.engine.handle_stanza(now, wall, &stanza);
            }
        }
    }

    fn on_event(&mut self, i: usize, e: Event) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.events.push(e.clone());
        match e {
            Event::IncomingCall { sid, .. } if node.auto_accept => {
                let _ = node.engine.handle_user(now, UserAction::Accept { sid });
            }
            Event::MediaNeeded { sid, role, .. } => {
                let _ = node.engine.handle_media(
                    now,
                    &sid,
                    MediaEvent::LocalContents(vec![local_audio("0", role, node.cert)]),
                );
                node.local_sent.insert(sid.clone());
                let (jid, c) = (node.jid.clone(), node.cert);
                self.certs.entry(sid.clone()).or_default().push((jid, c));
                self.try_dtls(i, &sid);
            }
            Event::RemoteMedia { sid, contents } => {
                node.remote.insert(
                    sid.clone(),
                    contents
                        .iter()
                        .map(|c| c.fingerprint.value.clone())
                        .collect(),
                );
                self.try_dtls(i, &sid);
            }
            _ => {}
        }
    }

    /// Simulated DTLS: the handshake completes only when both parties of `sid` sent their
    /// local contents and know the remote ones, and neither ended the call; then each side's
    /// media reports the certificate the other really holds (or a MITM's), then Connected.
    fn try_dtls(&mut self, _i: usize, sid: &str) {
        if !self.auto_media {
            return;
        }
        let Some(parties) = self.certs.get(sid).cloned() else {
            return;
        };
        let [(a, ca), (b, cb)] = parties.as_slice() else {
            return;
        };
        let ready = |n: &Node| {
            n.remote.contains_key(sid)
                && n.local_sent.contains(sid)
                && !n.dtls_done.contains(sid)
                && !n
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::Ended { sid: s, .. } if s == sid))
        };
        if !(ready(self.get(a.as_str())) && ready(self.get(b.as_str()))) {
            return;
        }
        let now = self.now;
        for (me, peer_cert) in [(a.clone(), *cb), (b.clone(), *ca)] {
            let seen = cert(self.mitm.get(me.as_str()).copied().unwrap_or(peer_cert));
            let node = self.node(me.as_str());
            node.dtls_done.insert(sid.to_owned());
            let _ = node.engine.handle_media(
                now,
                sid,
                MediaEvent::PeerDigest {
                    hash: Algo::Sha_256,
                    value: seen,
                },
            );
            let _ = node.engine.handle_media(now, sid, MediaEvent::Connected);
        }
    }

    /// Every stanza delivered to `to` whose first child has this name.
    pub fn delivered_to(&self, to: &str, child: &str) -> Vec<Element> {
        self.log
            .iter()
            .filter(|d| d.to.as_str() == to)
            .filter(|d| d.stanza.children().any(|c| c.name() == child))
            .map(|d| d.stanza.clone())
            .collect()
    }

    /// The session-terminate reasons sent by `from`.
    pub fn terminate_reasons(&self, from: &str) -> Vec<String> {
        self.log
            .iter()
            .filter(|d| d.from.as_str() == from)
            .filter_map(|d| d.stanza.get_child("jingle", "urn:xmpp:jingle:1"))
            .filter(|j| j.attr("action") == Some("session-terminate"))
            .filter_map(|j| j.get_child("reason", "urn:xmpp:jingle:1"))
            .filter_map(|r| r.children().next().map(|c| c.name().to_owned()))
            .collect()
    }
}

fn carbon(kind: &str, to: &FullJid, el: &Element) -> Element {
    let own_bare = to.to_bare();
    xml(&format!(
        "<message xmlns='jabber:client' from='{own_bare}' to='{to}' type='chat'><{kind} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>{}</forwarded></{kind}></message>",
        String::from(el)
    ))
}

/// Romeo (device 948227715) calling Juliet with two devices; everybody has sessions with
/// everybody and trust `romeo_trust_in_juliet` / `juliet_trust_in_romeo`.
pub fn three_nodes(romeo_trust_in_juliet: Trust, juliet_trust_in_romeo: Trust) -> Net {
    let romeo = FakeOmemo::new(Some(ROMEO_DEV))
        .with_session(
            "juliet@capulet.example",
            JULIET_DEV,
            juliet_id(),
            romeo_trust_in_juliet,
        )
        .with_session(
            "juliet@capulet.example",
            JULIET2_DEV,
            juliet2_id(),
            romeo_trust_in_juliet,
        );
    let juliet = FakeOmemo::new(Some(JULIET_DEV)).with_session(
        "romeo@montague.example",
        ROMEO_DEV,
        romeo_id(),
        juliet_trust_in_romeo,
    );
    let juliet2 = FakeOmemo::new(Some(JULIET2_DEV)).with_session(
        "romeo@montague.example",
        ROMEO_DEV,
        romeo_id(),
        juliet_trust_in_romeo,
    );
    let mut j2 = Node::new(JULIET2, juliet2, 0xB2);
    j2.auto_accept = false;
    Net::new(vec![
        Node::new(ROMEO, romeo, 0xA1),
        Node::new(JULIET, juliet, 0xB1),
        j2,
    ])
}

pub fn ring_timeout() -> Duration {
    RING_TIMEOUT
}

/// A tamper that holds back (drops and records) every stanza to `to` whose `<jingle/>` has
/// `action`; everything else passes.
pub fn hold_back(
    to: &'static str,
    action: &'static str,
) -> (Tamper, std::rc::Rc<std::cell::RefCell<Vec<Element>>>) {
    let store = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let s2 = store.clone();
    let t: Tamper = Box::new(move |dst, el| {
        if dst.as_str() == to && jingle_action(el) == Some(action) {
            s2.borrow_mut().push(el.clone());
            return false;
        }
        true
    });
    (t, store)
}

pub fn jingle_action(el: &Element) -> Option<&str> {
    el.get_child("jingle", "urn:xmpp:jingle:1")
        .and_then(|j| j.attr("action"))
}

/// Rewrites the `<transport/>` of every content of `<jingle action=action>` going to `to`.
pub fn rewrite_transport(
    to: &'static str,
    action: &'static str,
    f: impl Fn(&mut Element) + 'static,
) -> Tamper {
    Box::new(move |dst, el| {
        if dst.as_str() == to
            && jingle_action(el) == Some(action)
            && let Some(j) = el.get_child_mut("jingle", "urn:xmpp:jingle:1")
        {
            for c in j.children_mut() {
                if let Some(t) =
                    c.get_child_mut("transport", "urn:xmpp:jingle:transports:ice-udp:1")
                {
                    f(t);
                }
            }
        }
        true
    })
}

/// The fingerprint child (either namespace) of a transport.
pub fn fp_child(t: &mut Element) -> &mut Element {
    t.children_mut()
        .find(|c| c.name() == "fingerprint")
        .unwrap()
}

pub const DRAFT: &str = "http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification";
pub const DTLS: &str = "urn:xmpp:jingle:apps:dtls:0";

pub fn plain_fp(setup: &str, b: u8) -> Element {
    xml(&format!(
        "<fingerprint xmlns='{DTLS}' hash='sha-256' setup='{setup}'>{}</fingerprint>",
        cert(b)
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    ))
}

/// Replaces all children of `t` named fingerprint by `new`.
pub fn replace_fps(t: &mut Element, new: Vec<Element>) {
    let kept: Vec<Element> = t
        .children()
        .filter(|c| c.name() != "fingerprint")
        .cloned()
        .collect();
    let mut n = Element::bare("transport", "urn:xmpp:jingle:transports:ice-udp:1");
    for (k, v) in t.attrs() {
        let _ = (k, v);
    }
    if let Some(u) = t.attr("ufrag") {
        set_attr(&mut n, "ufrag", u);
    }
    if let Some(p) = t.attr("pwd") {
        set_attr(&mut n, "pwd", p);
    }
    for f in new {
        n.append_child(f);
    }
    for k in kept {
        n.append_child(k);
    }
    *t = n;
}
