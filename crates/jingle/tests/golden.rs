//! Golden tests: the engine accepts the exact stanzas of docs/protocol.md §7 (Conversations shapes)
//! and of a real verified call between two Dino 0.4.2 clients, and what it sends has their
//! shape (modulo ids, random values and attribute order; the differences we choose are listed
//! per comparison and in the crate README).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Instant, SystemTime};

use common::*;
use jid::BareJid;
use minidom::Element;
use shieldcall_jingle::{
    CallEnd, Config, CryptoError, Decrypted, Encrypted, Engine, Event, Handled, IdentityKey,
    LocalContent, Media, MediaEvent, OmemoCrypto, Output, Role, Shield, Trust, UserAction,
};
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::jingle::{Reason, Senders};
use xmpp_parsers::jingle_dtls_srtp::{Fingerprint, Setup};
use xmpp_parsers::jingle_ice_udp::Candidate;
use xmpp_parsers::jingle_rtp::Description;

// ---------------------------------------------------------------------------------------------
// Test double and comparison helpers

/// TEST DOUBLE: "decrypts" any `<encrypted/>` to a scripted fingerprint text (the real Dino
/// ciphertexts need Dino's keys), recording every element it was handed; "encrypts" into an
/// element of the OMEMO 0.3 shape.
struct ScriptedOmemo {
    own: u32,
    plaintext: String,
    identity: IdentityKey,
    prekey: bool,
    handed: Vec<Element>,
}

impl OmemoCrypto for ScriptedOmemo {
    fn own_device_id(&self) -> Option<u32> {
        Some(self.own)
    }
    fn encrypt(&mut self, _: &BareJid, device: u32, _: &[u8]) -> Result<Encrypted, CryptoError> {
        let prekey = if self.prekey { " prekey='true'" } else { "" };
        Ok(Encrypted {
            element: xml(&format!(
                "<encrypted xmlns='{AXOLOTL}'><header sid='{}'><key rid='{device}'{prekey}>S0VZ</key><iv>SVZJVklWSVZJVklW</iv></header><payload>UEFZTE9BRA==</payload></encrypted>",
                self.own
            )),
            identity_key: self.identity,
        })
    }
    fn decrypt(&mut self, _: &BareJid, encrypted: &Element) -> Result<Decrypted, CryptoError> {
        self.handed.push(encrypted.clone());
        let sid = encrypted
            .get_child("header", AXOLOTL)
            .and_then(|h| h.attr("sid"))
            .and_then(|s| s.parse().ok())
            .ok_or(CryptoError::InvalidMessage("no sid".into()))?;
        Ok(Decrypted {
            plaintext: self.plaintext.clone().into_bytes(),
            device: sid,
            identity_key: self.identity,
        })
    }
    fn trust(&self, _: &BareJid, _: &IdentityKey) -> Trust {
        Trust::Verified
    }
}

const PEER_FP: &str = "3A:9F:0C:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:C1";

fn peer_fp_bytes() -> Vec<u8> {
    shieldcall_jingle::fingerprint::parse_hex(PEER_FP, &Algo::Sha_256).unwrap()
}

fn fixture(name: &str) -> Element {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    xml(std::fs::read_to_string(path).unwrap().trim())
}

/// An incoming copy of a fixture, as the server delivers it.
fn incoming(name: &str, from: &str) -> Element {
    let mut el = fixture(name);
    set_attr(&mut el, "from", from);
    el
}

#[derive(Default)]
struct Shape {
    /// Compare the stanza's own `id` (only for ids fixed by the protocol, e.g. jm-propose-SID).
    root_id: bool,
    /// Attributes ignored at any depth.
    attrs: &'static [&'static str],
    /// Elements whose text is random (ciphertexts, IVs).
    random_text: &'static [&'static str],
    /// Children of the reference that we deliberately do not send.
    skip_theirs: &'static [&'static str],
    /// Children we send that the reference client does not.
    skip_ours: &'static [&'static str],
}

fn same_shape(ours: &Element, theirs: &Element, shape: &Shape) {
    if let Err(e) = compare(ours, theirs, shape, true) {
        panic!(
            "shape differs: {e}\n ours:   {}\n theirs: {}",
            String::from(ours),
            String::from(theirs)
        );
    }
}

fn compare(ours: &Element, theirs: &Element, shape: &Shape, root: bool) -> Result<(), String> {
    if ours.name() != theirs.name() || ours.ns() != theirs.ns() {
        return Err(format!(
            "element {}/{} vs {}/{}",
            ours.ns(),
            ours.name(),
            theirs.ns(),
            theirs.name()
        ));
    }
    let attrs = |e: &Element| {
        let mut v: Vec<(String, String)> = e
            .attrs()
            .iter()
            .map(|((_, k), v)| (k.as_str().to_owned(), v.clone()))
            .filter(|(k, _)| !shape.attrs.contains(&k.as_str()))
            .filter(|(k, _)| !(root && !shape.root_id && k == "id"))
            .filter(|(k, _)| k != "from")
            .collect();
        v.sort();
        v
    };
    if attrs(ours) != attrs(theirs) {
        return Err(format!(
            "<{}> attributes {:?} vs {:?}",
            ours.name(),
            attrs(ours),
            attrs(theirs)
        ));
    }
    if !shape.random_text.contains(&ours.name()) && ours.text().trim() != theirs.text().trim() {
        return Err(format!(
            "<{}> text {:?} vs {:?}",
            ours.name(),
            ours.text(),
            theirs.text()
        ));
    }
    let ours_c: Vec<&Element> = ours
        .children()
        .filter(|c| !shape.skip_ours.contains(&c.name()))
        .collect();
    let theirs_c: Vec<&Element> = theirs
        .children()
        .filter(|c| !shape.skip_theirs.contains(&c.name()))
        .collect();
    if ours_c.len() != theirs_c.len() {
        return Err(format!(
            "<{}> has {} children vs {}",
            ours.name(),
            ours_c.len(),
            theirs_c.len()
        ));
    }
    // Child order is free (Dino writes <iv/> before <key/>, Conversations after).
    let mut used = vec![false; ours_c.len()];
    for t in theirs_c {
        let mut last = String::new();
        let found = ours_c.iter().enumerate().position(|(i, o)| {
            if used[i] {
                return false;
            }
            match compare(o, t, shape, false) {
                Ok(()) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        match found {
            Some(i) => used[i] = true,
            None => return Err(format!("no match for <{}>: {last}", t.name())),
        }
    }
    Ok(())
}

fn drain(e: &mut Engine) -> (Vec<Element>, Vec<Event>) {
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    while let Some(o) = e.poll_output() {
        match o {
            Output::Send(s) => sent.push(s),
            Output::Event(ev) => events.push(ev),
        }
    }
    (sent, events)
}

/// Local contents as media would give them, taken from a reference stanza's first content.
fn local_from(stanza: &Element, setup: Setup, fp: Vec<u8>) -> LocalContent {
    let jingle = stanza.get_child("jingle", "urn:xmpp:jingle:1").unwrap();
    let content = jingle.children().find(|c| c.name() == "content").unwrap();
    let description = Description::try_from(
        content
            .get_child("description", "urn:xmpp:jingle:apps:rtp:1")
            .unwrap()
            .clone(),
    )
    .unwrap();
    let transport = content
        .get_child("transport", "urn:xmpp:jingle:transports:ice-udp:1")
        .unwrap();
    let candidates = transport
        .children()
        .filter(|c| c.name() == "candidate")
        .map(|c| Candidate::try_from(c.clone()).unwrap())
        .collect();
    LocalContent {
        name: content.attr("name").unwrap().to_owned(),
        senders: Senders::Both,
        description,
        ufrag: transport.attr("ufrag").unwrap().to_owned(),
        pwd: transport.attr("pwd").unwrap().to_owned(),
        candidates,
        fingerprint: Fingerprint {
            hash: Algo::Sha_256,
            setup,
            value: fp,
        },
    }
}

fn by_child<'a>(sent: &'a [Element], child: &str) -> &'a Element {
    sent.iter()
        .find(|s| s.children().any(|c| c.name() == child))
        .unwrap_or_else(|| panic!("nothing with <{child}/> in {sent:?}"))
}

fn wall() -> SystemTime {
    SystemTime::now()
}

const CIPHER: &[&str] = &["key", "iv", "payload"];

// ---------------------------------------------------------------------------------------------
// Conversations shapes (docs/protocol.md §7)

#[test]
fn conversations_caller_side() {
    let now = Instant::now();
    let omemo = ScriptedOmemo {
        own: ROMEO_DEV,
        plaintext: PEER_FP.into(),
        identity: juliet_id(),
        prekey: true,
        handed: Vec::new(),
    };
    let mut romeo = Driven::new(Config::new(full(ROMEO)), omemo);
    romeo
        .handle_user(
            now,
            UserAction::Call {
                peer: bare("juliet@capulet.example"),
                sid: SID.into(),
                media: vec![Media::Audio],
            },
        )
        .unwrap();
    let (sent, _) = drain(&mut romeo);
    // 7.1 exactly, including the id jm-propose-SID.
    same_shape(
        &sent[0],
        &fixture("conversations/7.1-propose.xml"),
        &Shape {
            root_id: true,
            ..Default::default()
        },
    );

    // 7.2 ringing and receipt are understood.
    let h = romeo.handle_stanza(
        now,
        wall(),
        &incoming("conversations/7.2-ringing.xml", JULIET),
    );
    assert_eq!(h, Handled::Consumed);
    let (_, events) = drain(&mut romeo);
    assert_eq!(events, vec![Event::PeerRinging { sid: SID.into() }]);
    assert_eq!(
        romeo.handle_stanza(
            now,
            wall(),
            &incoming("conversations/7.2-receipt.xml", JULIET)
        ),
        Handled::Consumed
    );

    // 7.3 proceed with device.
    romeo.handle_stanza(
        now,
        wall(),
        &incoming("conversations/7.3-proceed.xml", JULIET),
    );
    let (_, events) = drain(&mut romeo);
    assert_eq!(
        events[0],
        Event::Proceeding {
            sid: SID.into(),
            device: Some(JULIET_DEV)
        }
    );
    assert!(matches!(
        events[1],
        Event::MediaNeeded {
            role: Role::Initiator,
            ..
        }
    ));

    // 7.4: what we send for the same local media.
    let reference = fixture("conversations/7.4-session-initiate.xml");
    let local = local_from(&reference, Setup::Actpass, cert(0xA1));
    romeo
        .handle_media(now, SID, MediaEvent::LocalContents(vec![local]))
        .unwrap();
    let (sent, _) = drain(&mut romeo);
    same_shape(
        &sent[0],
        &reference,
        &Shape {
            attrs: &["initiator"],
            random_text: CIPHER,
            ..Default::default()
        },
    );
    let initiate_id = sent[0].attr("id").unwrap().to_owned();

    // 7.5 result for our initiate.
    let mut result = incoming("conversations/7.5-result.xml", JULIET);
    set_attr(&mut result, "id", &initiate_id);
    assert_eq!(romeo.handle_stanza(now, wall(), &result), Handled::Consumed);

    // 7.6 session-accept: acknowledged like 7.5, decrypted, handed to media.
    romeo.handle_stanza(
        now,
        wall(),
        &incoming("conversations/7.6-session-accept.xml", JULIET),
    );
    let (sent, events) = drain(&mut romeo);
    let mut expected_result = fixture("conversations/7.5-result.xml");
    set_attr(&mut expected_result, "to", JULIET);
    same_shape(&sent[0], &expected_result, &Shape::default());
    assert_eq!(sent[0].attr("id"), Some("c7e1a9f0"));
    let Event::RemoteMedia { contents, .. } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(contents[0].fingerprint.value, peer_fp_bytes());
    assert_eq!(contents[0].fingerprint.setup, Setup::Active);
    assert_eq!(contents[0].ufrag.as_deref(), Some("hB2s"));

    // 7.7 incoming transport-info → candidates for media. The fixture is Romeo's own
    // transport-info; coming from Juliet it carries her credentials of 7.6 (other credentials
    // in a running call would be an ICE restart, tests/restart.rs).
    let mut ti = incoming("conversations/7.7-transport-info.xml", JULIET);
    set_attr(&mut ti, "to", ROMEO);
    for (attr, value) in [("ufrag", "hB2s"), ("pwd", "Qd9Lm3N8xT1rV6cY0aE5uW7k")] {
        let transport = ti
            .get_child_mut("jingle", "urn:xmpp:jingle:1")
            .and_then(|j| j.get_child_mut("content", "urn:xmpp:jingle:1"))
            .and_then(|c| c.get_child_mut("transport", "urn:xmpp:jingle:transports:ice-udp:1"))
            .unwrap();
        set_attr(transport, attr, value);
    }
    romeo.handle_stanza(now, wall(), &ti);
    let (sent, events) = drain(&mut romeo);
    assert_eq!(sent[0].attr("type"), Some("result"));
    assert!(
        matches!(&events[0], Event::RemoteCandidates { candidates, .. } if candidates.len() == 1)
    );

    // 7.7 outgoing transport-info: candidates only, never a fingerprint.
    let reference = fixture("conversations/7.7-transport-info.xml");
    let cand = Candidate::try_from(
        reference
            .get_child("jingle", "urn:xmpp:jingle:1")
            .unwrap()
            .children()
            .next()
            .unwrap()
            .children()
            .next()
            .unwrap()
            .children()
            .next()
            .unwrap()
            .clone(),
    )
    .unwrap();
    romeo
        .handle_media(
            now,
            SID,
            MediaEvent::LocalCandidate {
                content: "0".into(),
                candidate: cand,
            },
        )
        .unwrap();
    let (sent, _) = drain(&mut romeo);
    same_shape(&sent[0], &reference, &Shape::default());

    // DTLS proves the decrypted fingerprint → verified.
    romeo
        .handle_media(
            now,
            SID,
            MediaEvent::PeerDigest {
                hash: Algo::Sha_256,
                value: peer_fp_bytes(),
            },
        )
        .unwrap();
    let (_, events) = drain(&mut romeo);
    assert_eq!(
        events,
        vec![
            Event::Shield {
                sid: SID.into(),
                shield: Shield::Verified,
                device: Some(JULIET_DEV),
            },
            Event::PlayMedia { sid: SID.into() }
        ]
    );

    // 7.8 terminate + finish.
    romeo
        .handle_user(now, UserAction::HangUp { sid: SID.into() })
        .unwrap();
    let (sent, _) = drain(&mut romeo);
    same_shape(
        by_child(&sent, "jingle"),
        &fixture("conversations/7.8-session-terminate.xml"),
        &Shape::default(),
    );
    same_shape(
        by_child(&sent, "finish"),
        &fixture("conversations/7.8-finish.xml"),
        &Shape::default(),
    );
}

#[test]
fn conversations_callee_side() {
    let now = Instant::now();
    let omemo = ScriptedOmemo {
        own: JULIET_DEV,
        plaintext: PEER_FP.into(),
        identity: romeo_id(),
        prekey: false,
        handed: Vec::new(),
    };
    let mut juliet = Driven::new(Config::new(full(JULIET)), omemo);
    juliet.handle_stanza(
        now,
        wall(),
        &incoming("conversations/7.1-propose.xml", ROMEO),
    );
    let (sent, events) = drain(&mut juliet);
    assert!(
        matches!(&events[0], Event::IncomingCall { jmi: true, media, .. } if media == &[Media::Audio])
    );
    same_shape(
        by_child(&sent, "ringing"),
        &fixture("conversations/7.2-ringing.xml"),
        &Shape::default(),
    );
    same_shape(
        by_child(&sent, "received"),
        &fixture("conversations/7.2-receipt.xml"),
        &Shape::default(),
    );

    juliet
        .handle_user(now, UserAction::Accept { sid: SID.into() })
        .unwrap();
    let (sent, _) = drain(&mut juliet);
    assert_eq!(sent.len(), 2);
    same_shape(
        &sent[0],
        &fixture("conversations/7.3-accept.xml"),
        &Shape::default(),
    );
    same_shape(
        &sent[1],
        &fixture("conversations/7.3-proceed.xml"),
        &Shape {
            root_id: true,
            ..Default::default()
        },
    );

    // 7.4 → 7.5 result, media for the decrypted fingerprint.
    juliet.handle_stanza(
        now,
        wall(),
        &incoming("conversations/7.4-session-initiate.xml", ROMEO),
    );
    let (sent, events) = drain(&mut juliet);
    same_shape(
        &sent[0],
        &fixture("conversations/7.5-result.xml"),
        &Shape {
            root_id: true,
            ..Default::default()
        },
    );
    let Event::RemoteMedia { contents, .. } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(contents[0].fingerprint.value, peer_fp_bytes());
    let d = contents[0].description.as_ref().unwrap();
    assert_eq!(d.ssrcs.len(), 1);
    assert_eq!(d.hdrexts.len(), 1);
    assert!(matches!(
        events[1],
        Event::MediaNeeded {
            role: Role::Responder,
            ..
        }
    ));
    assert_eq!(juliet.crypto().handed.len(), 1);

    // 7.6: our answer, encrypted to the header sid of 7.4.
    let reference = fixture("conversations/7.6-session-accept.xml");
    let local = local_from(&reference, Setup::Active, cert(0xB1));
    juliet
        .handle_media(now, SID, MediaEvent::LocalContents(vec![local]))
        .unwrap();
    let (sent, _) = drain(&mut juliet);
    same_shape(
        &sent[0],
        &reference,
        &Shape {
            random_text: CIPHER,
            ..Default::default()
        },
    );

    // 7.8 from Romeo ends the call.
    let mut terminate = incoming("conversations/7.8-session-terminate.xml", ROMEO);
    set_attr(&mut terminate, "to", JULIET);
    juliet.handle_stanza(now, wall(), &terminate);
    let (sent, events) = drain(&mut juliet);
    assert_eq!(sent[0].attr("type"), Some("result"));
    assert_eq!(
        events,
        vec![Event::Ended {
            sid: SID.into(),
            end: CallEnd::PeerTerminated(Reason::Success)
        }]
    );
    // The finish that follows is harmless.
    let mut finish = incoming("conversations/7.8-finish.xml", ROMEO);
    set_attr(&mut finish, "to", JULIET);
    assert_eq!(
        juliet.handle_stanza(now, wall(), &finish),
        Handled::Consumed
    );
    assert!(drain(&mut juliet).1.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Dino 0.4.2 (real stanzas)

const DINO_SID: &str = "f1589d11-760d-430e-bcd6-cd8a65a926ce";
const CAROL: &str = "carol@localhost/dinoB";
const ALICE: &str = "alice@localhost/dinoA";
const CAROL_DEV: u32 = 1942903233;
const ALICE_DEV: u32 = 129646281;

/// Dino writes `senders='both'`, no hints and no BUNDLE group, and offers SDES keys; we write
/// Conversations' shape (no `senders` when both, `<store/>`, BUNDLE) and never echo SDES.
const DINO: Shape = Shape {
    root_id: false,
    attrs: &["senders"],
    random_text: CIPHER,
    skip_theirs: &["encryption"],
    skip_ours: &["group", "store", "request"],
};

#[test]
fn dino_caller_side() {
    let now = Instant::now();
    let omemo = ScriptedOmemo {
        own: CAROL_DEV,
        plaintext: PEER_FP.into(),
        identity: ident(0x44),
        prekey: false,
        handed: Vec::new(),
    };
    let mut carol = Driven::new(Config::new(full(CAROL)), omemo);
    carol
        .handle_user(
            now,
            UserAction::Call {
                peer: bare("alice@localhost"),
                sid: DINO_SID.into(),
                media: vec![Media::Audio],
            },
        )
        .unwrap();
    let (sent, _) = drain(&mut carol);
    same_shape(
        &sent[0],
        &fixture("dino-0.4.2/caller-03-out-propose.xml"),
        &DINO,
    );

    carol.handle_stanza(now, wall(), &fixture("dino-0.4.2/caller-04-in-proceed.xml"));
    let (_, events) = drain(&mut carol);
    assert_eq!(
        events[0],
        Event::Proceeding {
            sid: DINO_SID.into(),
            device: Some(ALICE_DEV)
        }
    );

    let reference = fixture("dino-0.4.2/caller-05-out-session-initiate.xml");
    let local = local_from(&reference, Setup::Actpass, cert(0xC1));
    carol
        .handle_media(now, DINO_SID, MediaEvent::LocalContents(vec![local]))
        .unwrap();
    let (sent, _) = drain(&mut carol);
    // Same shape as Dino's, including the initiator attribute and candidates inside.
    same_shape(&sent[0], &reference, &DINO);

    carol.handle_stanza(
        now,
        wall(),
        &fixture("dino-0.4.2/caller-06-in-session-accept.xml"),
    );
    let (sent, events) = drain(&mut carol);
    assert_eq!(sent[0].attr("type"), Some("result"));
    assert_eq!(
        sent[0].attr("id"),
        Some("7432d8e0-7ef9-4486-9ee3-ad2fed8e52f5")
    );
    let Event::RemoteMedia { contents, .. } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(contents[0].name, "audio");
    assert_eq!(contents[0].candidates.len(), 4);
    assert_eq!(contents[0].fingerprint.setup, Setup::Active);
    // The exact Dino <encrypted/> (iv before key) went to OMEMO unchanged.
    let handed = &carol.crypto().handed[0];
    let header = handed.get_child("header", AXOLOTL).unwrap();
    assert_eq!(header.attr("sid"), Some("129646281"));
    assert_eq!(
        header.children().map(|c| c.name()).collect::<Vec<_>>(),
        ["iv", "key"]
    );

    carol
        .handle_media(
            now,
            DINO_SID,
            MediaEvent::PeerDigest {
                hash: Algo::Sha_256,
                value: peer_fp_bytes(),
            },
        )
        .unwrap();
    let (_, events) = drain(&mut carol);
    assert_eq!(
        events[0],
        Event::Shield {
            sid: DINO_SID.into(),
            shield: Shield::Verified,
            device: Some(ALICE_DEV),
        }
    );

    carol
        .handle_user(
            now,
            UserAction::HangUp {
                sid: DINO_SID.into(),
            },
        )
        .unwrap();
    let (sent, _) = drain(&mut carol);
    same_shape(
        by_child(&sent, "jingle"),
        &fixture("dino-0.4.2/caller-07-out-session-terminate.xml"),
        &DINO,
    );
}

#[test]
fn dino_callee_side() {
    let now = Instant::now();
    let omemo = ScriptedOmemo {
        own: ALICE_DEV,
        plaintext: PEER_FP.into(),
        identity: ident(0x55),
        prekey: false,
        handed: Vec::new(),
    };
    let mut alice = Driven::new(Config::new(full(ALICE)), omemo);
    alice.handle_stanza(now, wall(), &fixture("dino-0.4.2/callee-05-in-propose.xml"));
    let (_, events) = drain(&mut alice);
    assert!(matches!(&events[0], Event::IncomingCall { from, .. } if from.as_str() == CAROL));

    alice
        .handle_user(
            now,
            UserAction::Accept {
                sid: DINO_SID.into(),
            },
        )
        .unwrap();
    let (sent, _) = drain(&mut alice);
    same_shape(
        &sent[0],
        &fixture("dino-0.4.2/callee-06-out-accept.xml"),
        &DINO,
    );
    same_shape(
        &sent[1],
        &fixture("dino-0.4.2/callee-07-out-proceed.xml"),
        &DINO,
    );

    // Our own accept, echoed by the server to us: not "answered elsewhere".
    alice.handle_stanza(now, wall(), &fixture("dino-0.4.2/callee-08-in-accept.xml"));
    assert!(drain(&mut alice).1.is_empty());

    alice.handle_stanza(
        now,
        wall(),
        &fixture("dino-0.4.2/callee-09-in-session-initiate.xml"),
    );
    let (sent, events) = drain(&mut alice);
    assert_eq!(sent[0].attr("type"), Some("result"));
    let Event::RemoteMedia { contents, .. } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(contents[0].name, "audio");
    assert_eq!(contents[0].candidates.len(), 4);
    assert_eq!(contents[0].fingerprint.value, peer_fp_bytes());
    assert!(matches!(
        events[1],
        Event::MediaNeeded {
            role: Role::Responder,
            ..
        }
    ));

    let reference = fixture("dino-0.4.2/callee-10-out-session-accept.xml");
    let local = local_from(&reference, Setup::Active, cert(0xD1));
    alice
        .handle_media(now, DINO_SID, MediaEvent::LocalContents(vec![local]))
        .unwrap();
    let (sent, _) = drain(&mut alice);
    same_shape(&sent[0], &reference, &DINO);
    // Encrypted to the header sid of the initiate.
    let s = String::from(&sent[0]);
    assert!(s.contains(&format!("rid='{CAROL_DEV}'")), "{s}");

    alice
        .handle_media(
            now,
            DINO_SID,
            MediaEvent::PeerDigest {
                hash: Algo::Sha_256,
                value: peer_fp_bytes(),
            },
        )
        .unwrap();
    let (_, events) = drain(&mut alice);
    assert_eq!(
        events[0],
        Event::Shield {
            sid: DINO_SID.into(),
            shield: Shield::Verified,
            device: Some(CAROL_DEV),
        }
    );

    alice.handle_stanza(
        now,
        wall(),
        &fixture("dino-0.4.2/callee-11-in-session-terminate.xml"),
    );
    let (sent, events) = drain(&mut alice);
    assert_eq!(sent[0].attr("type"), Some("result"));
    assert_eq!(
        events,
        vec![Event::Ended {
            sid: DINO_SID.into(),
            end: CallEnd::PeerTerminated(Reason::Success)
        }]
    );
}

/// The comparison itself must catch what it is meant to catch.
#[test]
fn shape_comparison_detects_differences() {
    let propose = fixture("conversations/7.1-propose.xml");
    let s = Shape::default();
    assert!(compare(&propose, &propose, &s, true).is_ok());
    // Another element, another attribute value, a missing child, other text.
    let ringing = fixture("conversations/7.2-ringing.xml");
    assert!(compare(&propose, &ringing, &s, true).is_err());
    let other_to =
        String::from(&propose).replace("juliet@capulet.example'", "nurse@capulet.example'");
    assert!(compare(&xml(&other_to), &propose, &s, true).is_err());
    let no_store = String::from(&propose).replace("<store xmlns='urn:xmpp:hints'/>", "");
    assert!(compare(&xml(&no_store), &propose, &s, true).is_err());
    let initiate = fixture("conversations/7.4-session-initiate.xml");
    let other_iv = String::from(&initiate).replace("q1Zr9Lk2aV0pXe7c", "AAAA");
    assert!(compare(&xml(&other_iv), &initiate, &s, true).is_err());
    // ...unless it is declared random; the stanza id only matters when asked.
    let random = Shape {
        random_text: CIPHER,
        ..Default::default()
    };
    assert!(compare(&xml(&other_iv), &initiate, &random, true).is_ok());
    let other_id = String::from(&propose).replace("id='jm-propose-", "id='x-");
    assert!(compare(&xml(&other_id), &propose, &s, true).is_ok());
    let strict = Shape {
        root_id: true,
        ..Default::default()
    };
    assert!(compare(&xml(&other_id), &propose, &strict, true).is_err());
}
