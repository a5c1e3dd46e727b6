//! Property tests (docs/security-tests.md line 10 and the shield's promise):
//! * malformed elements never panic any parser;
//! * random sequences of stanzas, user actions, media reports and timeouts never panic the
//!   engine, in either role, and never yield `Shield::Verified` unless the complete verified
//!   exchange happened: our fingerprint encrypted to device D with identity I, the peer's
//!   fingerprint decrypted from the same D and I, I verified, and DTLS reported that digest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use jid::BareJid;
use minidom::Element;
use proptest::prelude::*;
use shieldcall_jingle::fingerprint::{EncryptedFingerprint, parse_hex, parse_plain};
use shieldcall_jingle::jingle::JingleEnvelope;
use shieldcall_jingle::jmi::JingleMessage;
use shieldcall_jingle::transport::IceUdpTransport;
use shieldcall_jingle::{
    Config, CryptoError, Decrypted, Encrypted, Event, IdentityKey, Media, MediaEvent, OmemoCrypto,
    Output, Role, Shield, Trust, UserAction,
};
use xmpp_parsers::hashes::Algo;

// ---------------------------------------------------------------------------------------------
// Malformed elements

const NAMES: &[&str] = &[
    "message",
    "iq",
    "jingle",
    "content",
    "description",
    "transport",
    "candidate",
    "fingerprint",
    "encrypted",
    "header",
    "key",
    "iv",
    "payload",
    "propose",
    "proceed",
    "device",
    "accept",
    "reject",
    "retract",
    "ringing",
    "finish",
    "reason",
    "success",
    "security-error",
    "text",
    "group",
    "payload-type",
    "parameter",
    "delay",
    "sent",
    "forwarded",
    "received",
    "x",
];
const NSS: &[&str] = &[
    "jabber:client",
    "urn:xmpp:jingle:1",
    "urn:xmpp:jingle:apps:rtp:1",
    "urn:xmpp:jingle:transports:ice-udp:1",
    "urn:xmpp:jingle:apps:dtls:0",
    DRAFT,
    AXOLOTL,
    "urn:xmpp:jingle-message:0",
    "urn:xmpp:jingle:apps:grouping:0",
    "urn:xmpp:carbons:2",
    "urn:xmpp:forward:0",
    "urn:xmpp:delay",
    "urn:example",
];
const ATTRS: &[&str] = &[
    "id",
    "sid",
    "action",
    "name",
    "creator",
    "senders",
    "media",
    "hash",
    "setup",
    "ufrag",
    "pwd",
    "component",
    "foundation",
    "generation",
    "ip",
    "port",
    "priority",
    "protocol",
    "type",
    "rid",
    "prekey",
    "from",
    "to",
    "stamp",
    "semantics",
];
const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "4294967296",
    "audio",
    "video",
    "session-initiate",
    "session-accept",
    "transport-info",
    "session-terminate",
    "content-add",
    "initiator",
    "both",
    "sha-256",
    "sha-1",
    "actpass",
    "active",
    "passive",
    "udp",
    "host",
    "set",
    "result",
    "error",
    "chat",
    "true",
    "192.0.2.1",
    "fd00::1",
    "zz",
    "AB:CD",
    "romeo@montague.example/phone",
    "juliet@capulet.example",
    "juliet@capulet.example/laptop",
    "xT3kq8Rf2VbN0yHcLw9aEQ",
    "2027-01-15T07:59:50Z",
    "not a date",
    "\u{1F600}",
    "948227715",
    "1284733451",
];

fn arb_element() -> impl Strategy<Value = Element> {
    let leaf = (
        0..NAMES.len(),
        0..NSS.len(),
        prop::collection::vec((0..ATTRS.len(), 0..VALUES.len()), 0..5),
        prop::option::of(prop_oneof![
            "[0-9A-Fa-f:]{0,100}",
            "[A-Za-z0-9+/=]{0,40}",
            ".{0,20}"
        ]),
    )
        .prop_map(|(n, ns, attrs, text)| {
            let mut el = Element::bare(NAMES[n], NSS[ns]);
            for (a, v) in attrs {
                set_attr(&mut el, ATTRS[a], VALUES[v]);
            }
            if let Some(t) = text {
                el.append_text(t);
            }
            el
        });
    leaf.prop_recursive(5, 64, 6, |inner| {
        (inner.clone(), prop::collection::vec(inner, 0..6)).prop_map(|(mut parent, children)| {
            for c in children {
                parent.append_child(c);
            }
            parent
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsers_never_panic_and_round_trip(el in arb_element(), text in ".{0,200}") {
        // Whatever parses, writes back to something that parses to the same value.
        if let Ok(m) = JingleMessage::parse(&el) {
            prop_assert_eq!(JingleMessage::parse(&m.to_element()), Ok(m));
        }
        let _ = JingleMessage::from_message(&el);
        if let Ok(t) = IceUdpTransport::parse(&el) {
            prop_assert_eq!(IceUdpTransport::parse(&t.to_element()), Ok(t));
        }
        if let Ok(e) = EncryptedFingerprint::parse(&el) {
            let _ = e.header_sid();
            prop_assert_eq!(EncryptedFingerprint::parse(&e.to_element()), Ok(e));
        }
        if let Ok(p) = parse_plain(&el) {
            prop_assert!(p.hash != Algo::Sha_256 || p.value.len() == 32);
        }
        if let Ok(j) = JingleEnvelope::parse(&el) {
            prop_assert_eq!(JingleEnvelope::parse(&j.to_element()), Ok(j));
        }
        if let Ok(v) = parse_hex(&text, &Algo::Sha_256) {
            prop_assert_eq!(v.len(), 32);
        }
        let _ = parse_hex(&text, &Algo::Sha_1);
    }

    #[test]
    fn engine_never_panics_on_random_elements(els in prop::collection::vec(arb_element(), 1..8)) {
        for role in [Role::Initiator, Role::Responder] {
            let mut e = engine(role == Role::Initiator);
            let now = Instant::now();
            if role == Role::Initiator {
                e.handle_user(now, call()).unwrap();
            }
            for el in &els {
                e.handle_stanza(now, SystemTime::now(), el);
                while let Some(out) = e.poll_output() {
                    // Random elements never carry a decryptable fingerprint: never verified.
                    let verified = matches!(out, Output::Event(Event::Shield { shield: Shield::Verified, .. }));
                    prop_assert!(!verified);
                }
                prop_assert!(e.call_count() <= shieldcall_jingle::call::MAX_CALLS);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Random call sequences

/// Wraps the toy OMEMO and records what the verified promise depends on.
struct Recording {
    inner: FakeOmemo,
    encrypted: Vec<(u32, IdentityKey)>,
    decrypted: Vec<(u32, IdentityKey, Vec<u8>)>,
}

impl OmemoCrypto for Recording {
    fn own_device_id(&self) -> Option<u32> {
        self.inner.own_device_id()
    }
    fn encrypt(&mut self, p: &BareJid, d: u32, pt: &[u8]) -> Result<Encrypted, CryptoError> {
        let r = self.inner.encrypt(p, d, pt)?;
        self.encrypted.push((d, r.identity_key));
        Ok(r)
    }
    fn decrypt(&mut self, p: &BareJid, e: &Element) -> Result<Decrypted, CryptoError> {
        let r = self.inner.decrypt(p, e)?;
        self.decrypted
            .push((r.device, r.identity_key, r.plaintext.clone()));
        Ok(r)
    }
    fn trust(&self, p: &BareJid, id: &IdentityKey) -> Trust {
        self.inner.trust(p, id)
    }
}

/// The engine under test is Romeo when calling, Juliet when called; the peer is the other.
fn engine(caller: bool) -> Driven<Recording> {
    let (me, dev, peer, peer_dev, peer_id) = if caller {
        (
            ROMEO,
            ROMEO_DEV,
            "juliet@capulet.example",
            JULIET_DEV,
            juliet_id(),
        )
    } else {
        (
            JULIET,
            JULIET_DEV,
            "romeo@montague.example",
            ROMEO_DEV,
            romeo_id(),
        )
    };
    let inner = FakeOmemo::new(Some(dev))
        .with_session(peer, peer_dev, peer_id, Trust::Verified)
        .with_session(peer, 777, ident(0x77), Trust::Trusted);
    Driven::new(
        Config::new(full(me)),
        Recording {
            inner,
            encrypted: Vec::new(),
            decrypted: Vec::new(),
        },
    )
}

fn call() -> UserAction {
    UserAction::Call {
        peer: bare("juliet@capulet.example"),
        sid: SID.into(),
        media: vec![Media::Audio],
    }
}

#[derive(Debug, Clone)]
enum Step {
    Jmi {
        kind: usize,
        from: usize,
        device: usize,
    },
    Jingle {
        action: usize,
        from: usize,
        fp: usize,
        setup: usize,
        cert: u8,
    },
    User(usize),
    Local,
    AddVideo,
    Digest(u8),
    Connected,
    Fail,
    Time(u64),
    Trust(bool),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..7usize, 0..5usize, 0..5usize).prop_map(|(kind, from, device)| Step::Jmi {
            kind,
            from,
            device
        }),
        (0..8usize, 0..5usize, 0..7usize, 0..3usize, 0..3u8).prop_map(
            |(action, from, fp, setup, cert)| Step::Jingle {
                action,
                from,
                fp,
                setup,
                cert
            }
        ),
        (0..4usize).prop_map(Step::User),
        Just(Step::Local),
        Just(Step::AddVideo),
        (0..3u8).prop_map(Step::Digest),
        Just(Step::Connected),
        Just(Step::Fail),
        (0..40u64).prop_map(Step::Time),
        any::<bool>().prop_map(Step::Trust),
    ]
}

const PEER_CERTS: [u8; 3] = [0x70, 0x71, 0x72];

struct Run {
    e: Driven<Recording>,
    caller: bool,
    /// The peer's OMEMO (can produce valid encrypted fingerprints for us).
    peer: FakeOmemo,
    /// Another device of the peer's account, with another identity.
    peer_other: FakeOmemo,
    now: Instant,
    digests: Vec<Vec<u8>>,
    verified_seen: bool,
    n: u32,
}

impl Run {
    fn new(caller: bool) -> Self {
        let (my, my_dev, my_id) = if caller {
            ("romeo@montague.example", ROMEO_DEV, romeo_id())
        } else {
            ("juliet@capulet.example", JULIET_DEV, juliet_id())
        };
        let peer_dev = if caller { JULIET_DEV } else { ROMEO_DEV };
        let mut e = engine(caller);
        let now = Instant::now();
        if caller {
            e.handle_user(now, call()).unwrap();
        }
        Run {
            e,
            caller,
            peer: FakeOmemo::new(Some(peer_dev)).with_session(my, my_dev, my_id, Trust::Verified),
            peer_other: FakeOmemo::new(Some(777)).with_session(my, my_dev, my_id, Trust::Verified),
            now,
            digests: Vec::new(),
            verified_seen: false,
            n: 0,
        }
    }

    fn me(&self) -> &'static str {
        if self.caller { ROMEO } else { JULIET }
    }
    fn peer_jid(&self) -> &'static str {
        if self.caller { JULIET } else { ROMEO }
    }
    fn from(&self, i: usize) -> &'static str {
        match i {
            0 | 1 => self.peer_jid(),
            2 => {
                if self.caller {
                    JULIET2
                } else {
                    "romeo@montague.example/other"
                }
            }
            3 => "mallory@evil.example/x",
            _ => {
                if self.caller {
                    "romeo@montague.example/tablet"
                } else {
                    JULIET2
                }
            }
        }
    }

    fn draft(&mut self, other: bool, setup: &str, cert_b: u8) -> Element {
        let me = jid::FullJid::new(self.me()).unwrap().to_bare();
        let my_dev = if self.caller { ROMEO_DEV } else { JULIET_DEV };
        let text = cert(cert_b)
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let omemo = if other {
            &mut self.peer_other
        } else {
            &mut self.peer
        };
        let enc = omemo.encrypt(&me, my_dev, text.as_bytes()).unwrap();
        let mut fp = xml(&format!(
            "<fingerprint xmlns='{DRAFT}' hash='sha-256' setup='{setup}'/>"
        ));
        fp.append_child(enc.element);
        fp
    }

    fn step(&mut self, s: &Step) {
        self.n += 1;
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        match s.clone() {
            Step::Jmi { kind, from, device } => {
                let name = [
                    "propose", "proceed", "accept", "reject", "retract", "ringing", "finish",
                ][kind];
                let dev = [
                    "",
                    "<device xmlns='DRAFT' id='1284733451'/>",
                    "<device xmlns='DRAFT' id='948227715'/>",
                    "<device id='x'/>",
                    "<device xmlns='DRAFT' id='777'/>",
                ][device]
                    .replace("DRAFT", DRAFT);
                let body = match name {
                    "propose" => {
                        "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>".to_owned()
                    }
                    "proceed" => dev,
                    _ => String::new(),
                };
                let to = if self.caller {
                    ROMEO
                } else {
                    "juliet@capulet.example"
                };
                let el = xml(&format!(
                    "<message xmlns='jabber:client' type='chat' from='{}' to='{to}' id='m{}'><{name} xmlns='urn:xmpp:jingle-message:0' id='{SID}'>{body}</{name}></message>",
                    self.from(from),
                    self.n
                ));
                self.e.handle_stanza(self.now, wall, &el);
            }
            Step::Jingle {
                action,
                from,
                fp,
                setup,
                cert: c,
            } => {
                let action = [
                    "session-initiate",
                    "session-accept",
                    "transport-info",
                    "session-terminate",
                    "content-add",
                    "transport-replace",
                    "content-accept",
                    "content-reject",
                ][action];
                let setup = ["actpass", "active", "passive"][setup];
                let peer_cert = PEER_CERTS[usize::from(c)];
                let fps: Vec<Element> = match fp {
                    0 => vec![],
                    1 => vec![plain_fp(setup, peer_cert)],
                    2 => vec![self.draft(false, setup, peer_cert)],
                    3 => vec![self.draft(true, setup, peer_cert)],
                    4 => vec![
                        plain_fp(setup, peer_cert),
                        self.draft(false, setup, peer_cert),
                    ],
                    5 => vec![
                        self.draft(false, setup, peer_cert),
                        self.draft(false, setup, peer_cert),
                    ],
                    _ => vec![xml(&format!(
                        "<fingerprint xmlns='{DRAFT}' hash='sha-256' setup='{setup}'><encrypted xmlns='{AXOLOTL}'><header sid='1284733451'><key rid='948227715'>1:1</key></header><payload>00</payload></encrypted></fingerprint>"
                    ))],
                };
                let fps: String = fps.iter().map(String::from).collect();
                let el = xml(&format!(
                    "<iq xmlns='jabber:client' type='set' from='{}' to='{}' id='i{}'><jingle xmlns='urn:xmpp:jingle:1' action='{action}' sid='{SID}'><content creator='initiator' name='0'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>{fps}</transport></content><reason><success/></reason></jingle></iq>",
                    self.from(from),
                    self.me(),
                    self.n
                ));
                self.e.handle_stanza(self.now, wall, &el);
            }
            Step::User(i) => {
                let a = match i {
                    0 => call(),
                    1 => UserAction::Accept { sid: SID.into() },
                    2 => UserAction::Reject { sid: SID.into() },
                    _ => UserAction::HangUp { sid: SID.into() },
                };
                let _ = self.e.handle_user(self.now, a);
            }
            Step::Local => {
                let role = if self.caller {
                    Role::Initiator
                } else {
                    Role::Responder
                };
                let _ = self.e.handle_media(
                    self.now,
                    SID,
                    MediaEvent::LocalContents(vec![local_audio("0", role, 0x10)]),
                );
            }
            Step::AddVideo => {
                let role = if self.caller {
                    Role::Initiator
                } else {
                    Role::Responder
                };
                let mut c = local_audio("1", role, 0x10);
                c.description.media = "video".into();
                let _ = self
                    .e
                    .handle_media(self.now, SID, MediaEvent::AddContents(vec![c]));
            }
            Step::Digest(c) => {
                let v = cert(PEER_CERTS[usize::from(c)]);
                self.digests.push(v.clone());
                let _ = self.e.handle_media(
                    self.now,
                    SID,
                    MediaEvent::PeerDigest {
                        hash: Algo::Sha_256,
                        value: v,
                    },
                );
            }
            Step::Connected => {
                let _ = self.e.handle_media(self.now, SID, MediaEvent::Connected);
            }
            Step::Fail => {
                let _ = self
                    .e
                    .handle_media(self.now, SID, MediaEvent::Failed("x".into()));
            }
            Step::Time(s) => {
                self.now += Duration::from_secs(s);
                self.e.handle_timeout(self.now);
            }
            Step::Trust(verified) => {
                let id = if self.caller { juliet_id() } else { romeo_id() };
                let t = if verified {
                    Trust::Verified
                } else {
                    Trust::Trusted
                };
                self.e.crypto_mut().inner.trust.insert(id, t);
                self.e.handle_trust_change(self.now);
            }
        }
        while let Some(out) = self.e.poll_output() {
            if let Output::Event(Event::Shield {
                shield: Shield::Verified,
                ..
            }) = out
            {
                self.verified_seen = true;
                self.check_promise();
            }
        }
    }

    /// The complete verified exchange must have happened for this Verified.
    fn check_promise(&self) {
        let c = self.e.crypto();
        let peer = jid::FullJid::new(self.peer_jid()).unwrap().to_bare();
        let ok = c.encrypted.iter().any(|(d, id)| {
            c.decrypted.iter().any(|(dd, did, pt)| {
                let value = std::str::from_utf8(pt)
                    .ok()
                    .and_then(|t| parse_hex(t, &Algo::Sha_256).ok());
                d == dd
                    && id == did
                    && c.inner.trust(&peer, id) == Trust::Verified
                    && value.is_some_and(|v| self.digests.contains(&v))
            })
        });
        assert!(
            ok,
            "Verified without the complete exchange: enc {:?} dec {:?}",
            c.encrypted, c.decrypted
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn random_sequences_never_panic_nor_verify_without_the_exchange(
        caller in any::<bool>(),
        steps in prop::collection::vec(arb_step(), 1..40),
    ) {
        let mut run = Run::new(caller);
        for s in &steps {
            run.step(s);
        }
    }
}

/// The generator can reach Verified at all (otherwise the property above would be vacuous).
#[test]
fn the_sequence_generator_can_reach_a_verified_call() {
    for caller in [true, false] {
        let mut run = Run::new(caller);
        let steps: Vec<Step> = if caller {
            vec![
                Step::Jmi {
                    kind: 1,
                    from: 0,
                    device: 1,
                },
                Step::Local,
                Step::Jingle {
                    action: 1,
                    from: 0,
                    fp: 2,
                    setup: 1,
                    cert: 0,
                },
                Step::Digest(0),
            ]
        } else {
            vec![
                Step::Jmi {
                    kind: 0,
                    from: 0,
                    device: 0,
                },
                Step::User(1),
                Step::Jingle {
                    action: 0,
                    from: 0,
                    fp: 2,
                    setup: 0,
                    cert: 1,
                },
                Step::Local,
                Step::Digest(1),
            ]
        };
        for s in &steps {
            run.step(s);
        }
        assert!(run.verified_seen, "caller={caller}");
    }
}
