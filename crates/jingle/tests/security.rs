//! docs/security-tests.md, call layer (lines 1–10): every attack as a deterministic test, driven by
//! stanzas between engines through an in-memory server that the adversary controls (it may
//! rewrite or drop any stanza, and inject its own). Each line is exercised with the engine in the
//! caller role (attack on stanzas to Romeo) and in the callee role (attack on stanzas to Juliet).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use shieldcall_jingle::call::{Config, MAX_CALLS};
use shieldcall_jingle::{
    ApiError, CallEnd, CallError, ContactPolicy, Downgrade, Event, Handled, Shield, Trust,
    UserAction, VerificationError,
};
use xmpp_parsers::jingle::Reason;

fn reason_of(end: Option<&CallEnd>) -> Option<Reason> {
    match end? {
        CallEnd::Failed(e) => Some(e.reason()),
        CallEnd::PeerTerminated(r) => Some(r.clone()),
        _ => None,
    }
}

fn never_verified(net: &Net, jid: &str) {
    assert!(
        !net.get(jid).shields().contains(&Shield::Verified),
        "{jid} showed Verified: {:?}",
        net.get(jid).events
    );
}

fn verified_net() -> Net {
    three_nodes(Trust::Verified, Trust::Verified)
}

fn require_verified(net: &mut Net, jid: &str) {
    let n = net.node(jid);
    let mut config: Config = n.engine.config().clone();
    config.require_verified = true;
    let omemo = n.engine.crypto().clone();
    let cert = n.cert;
    let auto = n.auto_accept;
    *n = Node::with_config(config, omemo, cert);
    n.auto_accept = auto;
}

fn strip_device(dst: &'static str) -> Tamper {
    Box::new(move |to, el| {
        if to.as_str() == dst
            && let Some(p) = el.get_child_mut("proceed", "urn:xmpp:jingle-message:0")
        {
            p.remove_child("device", DRAFT);
        }
        true
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Downgrade at proceed

#[test]
fn l1_caller_proceed_without_device_is_plain_without_shield() {
    let mut net = verified_net();
    net.tamper = strip_device(ROMEO);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::None]);
    assert_eq!(net.get(JULIET).shields(), vec![Shield::None]);
    assert!(net.get(ROMEO).engine.crypto().encrypt_log.is_empty());
}

#[test]
fn l1_caller_device_outside_proceed_is_ignored() {
    let mut net = verified_net();
    net.tamper = Box::new(|to, el| {
        if to.as_str() == ROMEO
            && let Some(p) = el.get_child_mut("proceed", "urn:xmpp:jingle-message:0")
            && let Some(d) = p.remove_child("device", DRAFT)
        {
            el.append_child(d); // the 2021 slides' sibling placement
        }
        true
    });
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::None]);
    assert!(net.get(ROMEO).engine.crypto().encrypt_log.is_empty());
}

#[test]
fn l1_caller_require_verified_refuses_proceed_without_device() {
    let mut net = verified_net();
    require_verified(&mut net, ROMEO);
    net.tamper = strip_device(ROMEO);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(
        net.get(ROMEO).ended(),
        Some(&CallEnd::Failed(CallError::Verification(
            VerificationError::NotVerifiable
        )))
    );
    // Refused with a retract carrying security-error; no session-initiate ever left.
    assert!(net.delivered_to(JULIET, "jingle").is_empty());
    let retract = net.delivered_to(JULIET, "retract");
    assert_eq!(retract.len(), 1);
    assert!(String::from(&retract[0]).contains("security-error"));
    assert_eq!(net.get(JULIET).ended(), Some(&CallEnd::Retracted));
}

#[test]
fn l1_callee_require_verified_without_omemo_refuses_to_proceed() {
    let mut net = verified_net();
    net.node(JULIET).engine.crypto_mut().own_device = None;
    require_verified(&mut net, JULIET);
    net.node(JULIET).auto_accept = false;
    net.node(JULIET2).auto_accept = false;
    net.call(ROMEO, "juliet@capulet.example");
    let now = net.now;
    let r = net
        .node(JULIET)
        .engine
        .handle_user(now, UserAction::Accept { sid: SID.into() });
    assert_eq!(r, Err(ApiError::NotVerifiable));
    net.run();
    assert!(net.delivered_to(ROMEO, "proceed").is_empty());
    let reject = net.delivered_to(ROMEO, "reject");
    assert_eq!(reject.len(), 1);
    assert!(String::from(&reject[0]).contains("security-error"));
    assert_eq!(net.get(ROMEO).ended(), Some(&CallEnd::Declined));
}

// ---------------------------------------------------------------------------------------------
// 2. Downgrade at initiate/accept

#[test]
fn l2_caller_plain_answer_to_encrypted_offer_aborts_security_error() {
    let mut net = verified_net();
    net.tamper = rewrite_transport(ROMEO, "session-accept", |t| {
        replace_fps(t, vec![plain_fp("active", 0xEE)]);
    });
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(
        net.get(ROMEO).ended(),
        Some(&CallEnd::Failed(CallError::Verification(
            VerificationError::UnexpectedlyPlain
        )))
    );
    assert!(!net.get(ROMEO).played());
    let terminate = net
        .log
        .iter()
        .find(|d| d.from.as_str() == ROMEO && jingle_action(&d.stanza) == Some("session-terminate"))
        .unwrap();
    let s = String::from(&terminate.stanza);
    assert!(s.contains("<security-error/>"), "{s}");
    assert!(
        s.contains("DTLS fingerprint was unexpectedly not verifiable"),
        "{s}"
    );
    never_verified(&net, ROMEO);
    never_verified(&net, JULIET);
}

#[test]
fn l2_callee_plain_offer_after_device_gives_no_shield() {
    let mut net = verified_net();
    // The server strips the device on the way to Romeo, so Romeo offers plain to Juliet.
    net.tamper = strip_device(ROMEO);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(JULIET).shields(), vec![Shield::None]);
    assert!(net.get(JULIET).played());
}

#[test]
fn l2_callee_plain_offer_under_require_verified_aborts() {
    let mut net = verified_net();
    require_verified(&mut net, JULIET);
    net.tamper = strip_device(ROMEO);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(
        reason_of(net.get(JULIET).ended()),
        Some(Reason::SecurityError)
    );
    assert_eq!(net.terminate_reasons(JULIET), vec!["security-error"]);
    assert!(!net.get(JULIET).played() && !net.get(ROMEO).played());
}

#[test]
fn l2_caller_encryption_failure_under_require_verified_never_falls_back() {
    let mut net = verified_net();
    require_verified(&mut net, ROMEO);
    net.node(ROMEO).engine.crypto_mut().fail_encrypt = true;
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(
        reason_of(net.get(ROMEO).ended()),
        Some(Reason::SecurityError)
    );
    assert!(net.delivered_to(JULIET, "jingle").is_empty());
}

#[test]
fn l2_callee_encryption_failure_never_falls_back() {
    let mut net = verified_net();
    net.node(JULIET).engine.crypto_mut().fail_encrypt = true;
    net.call(ROMEO, "juliet@capulet.example");
    // No session-accept, a security-error terminate instead.
    assert!(
        !net.log
            .iter()
            .any(|d| jingle_action(&d.stanza) == Some("session-accept"))
    );
    assert_eq!(net.terminate_reasons(JULIET), vec!["security-error"]);
    assert_eq!(
        net.get(ROMEO).ended(),
        Some(&CallEnd::PeerTerminated(Reason::SecurityError))
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Device claims

fn with_device_id(id: &'static str) -> Tamper {
    Box::new(move |to, el| {
        if to.as_str() == ROMEO
            && let Some(p) = el.get_child_mut("proceed", "urn:xmpp:jingle-message:0")
            && let Some(d) = p.get_child_mut("device", DRAFT)
        {
            set_attr(d, "id", id);
        }
        true
    })
}

#[test]
fn l3_caller_bad_device_ids_give_plain_calls_without_shield() {
    for id in ["", "abc", "-5", "0", "4294967296", "2147483648", "12 34"] {
        let mut net = verified_net();
        net.tamper = with_device_id(id);
        net.call(ROMEO, "juliet@capulet.example");
        assert_eq!(net.get(ROMEO).shields(), vec![Shield::None], "id {id:?}");
        assert!(
            net.get(ROMEO).engine.crypto().encrypt_log.is_empty(),
            "id {id:?}"
        );
    }
}

#[test]
fn l3_caller_unknown_device_falls_back_to_plain() {
    let mut net = verified_net();
    net.tamper = with_device_id("123456");
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::None]);
    assert_eq!(net.get(JULIET).shields(), vec![Shield::None]);
}

#[test]
fn l3_caller_untrusted_or_new_device_never_verified() {
    for (trust, expected) in [
        (Trust::Untrusted, Shield::None),
        // A key nobody trusted (BTBV: a new device of a contact with a verified key) never
        // gets a lock.
        (Trust::Undecided, Shield::None),
    ] {
        let mut net = three_nodes(trust, Trust::Verified);
        net.call(ROMEO, "juliet@capulet.example");
        assert_eq!(net.get(ROMEO).shields(), vec![expected], "{trust:?}");
    }
}

#[test]
fn l3_caller_answer_from_other_device_aborts_failed_application() {
    let mut net = verified_net();
    net.tamper = rewrite_transport(ROMEO, "session-accept", |t| {
        let fp = fp_child(t);
        let enc = fp.get_child_mut("encrypted", AXOLOTL).unwrap();
        let header = enc.get_child_mut("header", AXOLOTL).unwrap();
        set_attr(header, "sid", &JULIET2_DEV.to_string());
    });
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(
        net.get(ROMEO).ended(),
        Some(&CallEnd::Failed(CallError::Verification(
            VerificationError::DeviceMismatch {
                expected: JULIET_DEV,
                got: JULIET2_DEV
            }
        )))
    );
    assert_eq!(net.terminate_reasons(ROMEO), vec!["failed-application"]);
    never_verified(&net, ROMEO);
    assert!(!net.get(ROMEO).played());
}

#[test]
fn l3_callee_offer_header_sid_rewritten_aborts() {
    let mut net = verified_net();
    net.tamper = rewrite_transport(JULIET, "session-initiate", |t| {
        let fp = fp_child(t);
        let enc = fp.get_child_mut("encrypted", AXOLOTL).unwrap();
        let header = enc.get_child_mut("header", AXOLOTL).unwrap();
        set_attr(header, "sid", "777");
    });
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(
        reason_of(net.get(JULIET).ended()),
        Some(Reason::SecurityError)
    );
    never_verified(&net, JULIET);
    assert!(!net.get(JULIET).played());
}

// ---------------------------------------------------------------------------------------------
// 4. DTLS digest and later fingerprint changes

#[test]
fn l4_caller_digest_mismatch_aborts_before_media() {
    let mut net = verified_net();
    net.mitm.insert(ROMEO.into(), 0x66);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(
        net.get(ROMEO).ended(),
        Some(&CallEnd::Failed(CallError::Verification(
            VerificationError::DigestMismatch
        )))
    );
    assert!(!net.get(ROMEO).played());
    assert_eq!(net.terminate_reasons(ROMEO), vec!["security-error"]);
    never_verified(&net, ROMEO);
}

#[test]
fn l4_callee_digest_mismatch_aborts_before_media() {
    let mut net = verified_net();
    net.mitm.insert(JULIET.into(), 0x66);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(
        reason_of(net.get(JULIET).ended()),
        Some(Reason::SecurityError)
    );
    assert!(!net.get(JULIET).played());
    never_verified(&net, JULIET);
    // Romeo's own DTLS saw Juliet's real certificate here (the MITM only sat on Juliet's leg),
    // so his side may be verified; he still learns the call ended with security-error.
    assert_eq!(
        net.get(ROMEO).ended(),
        Some(&CallEnd::PeerTerminated(Reason::SecurityError))
    );
}

fn transport_info_with_fp(from: &str, to: &str) -> minidom::Element {
    xml(&format!(
        "<iq xmlns='jabber:client' type='set' from='{from}' to='{to}' id='ti1'><jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='{SID}'><content creator='initiator' name='0'><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='x' pwd='y'>{}</transport></content></jingle></iq>",
        String::from(&plain_fp("actpass", 0x66))
    ))
}

#[test]
fn l4_transport_info_with_fingerprint_is_refused_in_both_roles() {
    for (victim, peer) in [(ROMEO, JULIET), (JULIET, ROMEO)] {
        let mut net = verified_net();
        net.call(ROMEO, "juliet@capulet.example");
        net.log.clear();
        net.inject(victim, transport_info_with_fp(peer, victim));
        // An IQ error back, the call and its shield untouched.
        let err = net
            .log
            .iter()
            .find(|d| d.from.as_str() == victim && d.stanza.attr("id") == Some("ti1"))
            .unwrap();
        assert_eq!(err.stanza.attr("type"), Some("error"));
        assert!(String::from(&err.stanza).contains("not-acceptable"));
        assert_eq!(net.get(victim).ended(), None);
        assert_eq!(net.get(victim).engine.shield(SID), Some(Shield::Verified));
        assert!(
            !net.get(victim)
                .events
                .iter()
                .any(|e| matches!(e, Event::RemoteCandidates { .. }))
        );
    }
}

#[test]
fn l4_transport_replace_is_refused_in_both_roles() {
    for (victim, peer) in [(ROMEO, JULIET), (JULIET, ROMEO)] {
        let mut net = verified_net();
        net.call(ROMEO, "juliet@capulet.example");
        let s = String::from(&transport_info_with_fp(peer, victim))
            .replace("transport-info", "transport-replace");
        net.inject(victim, xml(&s));
        assert_eq!(net.get(victim).ended(), None);
        assert!(net.log.iter().any(|d| d.stanza.attr("id") == Some("ti1")
            && String::from(&d.stanza).contains("feature-not-implemented")));
        assert_eq!(net.get(victim).engine.shield(SID), Some(Shield::Verified));
    }
}

#[test]
fn l4_content_add_changing_the_fingerprint_aborts_in_both_roles() {
    for (victim, peer) in [(ROMEO, JULIET), (JULIET, ROMEO)] {
        let mut net = verified_net();
        net.call(ROMEO, "juliet@capulet.example");
        let s = String::from(&transport_info_with_fp(peer, victim))
            .replace("transport-info", "content-add")
            .replace(
                "name='0'>",
                "name='1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='video'/>",
            );
        net.inject(victim, xml(&s));
        assert_eq!(
            reason_of(net.get(victim).ended()),
            Some(Reason::SecurityError),
            "{victim}"
        );
    }
}

#[test]
fn l4_stub_content_add_keeps_the_running_fingerprint() {
    // Conversations <= 2.12.11 sends stub transports: they ride on the BUNDLE association, so
    // media is told to expect the fingerprint already proven, never a new one.
    let mut net = verified_net();
    net.call(ROMEO, "juliet@capulet.example");
    let s = format!(
        "<iq xmlns='jabber:client' type='set' from='{ROMEO}' to='{JULIET}' id='ca1'><jingle xmlns='urn:xmpp:jingle:1' action='content-add' sid='{SID}'><content creator='initiator' name='1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='video'/><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'/></content></jingle></iq>"
    );
    net.inject(JULIET, xml(&s));
    assert_eq!(net.get(JULIET).ended(), None);
    let added = net
        .get(JULIET)
        .events
        .iter()
        .find_map(|e| match e {
            Event::ContentAdd { contents, .. } => Some(contents.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(added[0].fingerprint.value, cert(0xA1));
}

// ---------------------------------------------------------------------------------------------
// 5. Mixed or ambiguous transports

fn encrypted_fp_of(t: &mut Element) -> Element {
    fp_child(t).clone()
}

use minidom::Element;

type TransportEdit = Box<dyn Fn(&mut Element)>;

fn ambiguous_cases() -> Vec<(&'static str, TransportEdit)> {
    vec![
        (
            "plain then encrypted",
            Box::new(|t: &mut Element| {
                let e = encrypted_fp_of(t);
                let setup = e.attr("setup").unwrap().to_owned();
                replace_fps(t, vec![plain_fp(&setup, 0x66), e]);
            }),
        ),
        (
            "encrypted then plain",
            Box::new(|t: &mut Element| {
                let e = encrypted_fp_of(t);
                let setup = e.attr("setup").unwrap().to_owned();
                replace_fps(t, vec![e, plain_fp(&setup, 0x66)]);
            }),
        ),
        (
            "two encrypted",
            Box::new(|t: &mut Element| {
                let e = encrypted_fp_of(t);
                replace_fps(t, vec![e.clone(), e]);
            }),
        ),
        (
            "two <encrypted/> in one fingerprint",
            Box::new(|t: &mut Element| {
                let fp = fp_child(t);
                let enc = fp.get_child("encrypted", AXOLOTL).unwrap().clone();
                fp.append_child(enc);
            }),
        ),
        (
            "text inside the draft fingerprint",
            Box::new(|t: &mut Element| {
                fp_child(t).append_text("66:66");
            }),
        ),
    ]
}

#[test]
fn l5_ambiguous_transports_abort_security_error_in_both_roles() {
    for (victim, action) in [(ROMEO, "session-accept"), (JULIET, "session-initiate")] {
        for (name, f) in ambiguous_cases() {
            let mut net = verified_net();
            let f = std::rc::Rc::new(f);
            let f2 = f.clone();
            net.tamper = rewrite_transport(victim, action, move |t| f2(t));
            net.call(ROMEO, "juliet@capulet.example");
            assert_eq!(
                reason_of(net.get(victim).ended()),
                Some(Reason::SecurityError),
                "{victim} {name}: {:?}",
                net.get(victim).ended()
            );
            assert!(!net.get(victim).played(), "{victim} {name}");
            never_verified(&net, ROMEO);
            never_verified(&net, JULIET);
        }
    }
}

/// A direct (non-JMI) session-initiate from Romeo with two contents, whose transports are built
/// by `fps` from two fingerprints encrypted by `romeo_a` and `romeo_b`.
fn two_content_initiate(fps: [Element; 2]) -> Element {
    let content = |name: &str, media: &str, fp: &Element| {
        format!(
            "<content creator='initiator' name='{name}'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='{media}'/><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>{}</transport></content>",
            String::from(fp)
        )
    };
    xml(&format!(
        "<iq xmlns='jabber:client' type='set' from='{ROMEO}' to='{JULIET}' id='si2'><jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='direct2'>{}{}</jingle></iq>",
        content("0", "audio", &fps[0]),
        content("1", "video", &fps[1])
    ))
}

fn draft_fp(omemo: &mut FakeOmemo, to_device: u32, b: u8) -> Element {
    use shieldcall_jingle::OmemoCrypto;
    let text = cert(b)
        .iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let enc = omemo
        .encrypt(&bare("juliet@capulet.example"), to_device, text.as_bytes())
        .unwrap();
    let mut fp = xml(&format!(
        "<fingerprint xmlns='{DRAFT}' hash='sha-256' setup='actpass'/>"
    ));
    fp.append_child(enc.element);
    fp
}

fn romeo_omemo(device: u32, id: u8) -> FakeOmemo {
    FakeOmemo::new(Some(device)).with_session(
        "juliet@capulet.example",
        JULIET_DEV,
        ident(id),
        Trust::Verified,
    )
}

#[test]
fn l5_callee_contents_encrypted_by_different_devices_or_mixed() {
    // Juliet knows two of Romeo's devices.
    let juliet = FakeOmemo::new(Some(JULIET_DEV))
        .with_session(
            "romeo@montague.example",
            ROMEO_DEV,
            romeo_id(),
            Trust::Verified,
        )
        .with_session("romeo@montague.example", 777, ident(0x77), Trust::Verified);
    let mut a = romeo_omemo(ROMEO_DEV, 0x22);
    let mut b = romeo_omemo(777, 0x22);
    let cases = vec![
        (
            "different devices",
            [
                draft_fp(&mut a, JULIET_DEV, 1),
                draft_fp(&mut b, JULIET_DEV, 1),
            ],
            Reason::FailedApplication,
        ),
        (
            "encrypted and plain",
            [draft_fp(&mut a, JULIET_DEV, 1), plain_fp("actpass", 1)],
            Reason::SecurityError,
        ),
        (
            "plain and encrypted",
            [plain_fp("actpass", 1), draft_fp(&mut a, JULIET_DEV, 1)],
            Reason::SecurityError,
        ),
    ];
    for (name, fps, reason) in cases {
        let mut net = Net::new(vec![Node::new(JULIET, juliet.clone(), 0xB1)]);
        assert_eq!(
            net.inject(JULIET, two_content_initiate(fps)),
            Handled::Consumed
        );
        assert_eq!(
            reason_of(net.get(JULIET).ended()),
            Some(reason.clone()),
            "{name}"
        );
        // The IQ is acknowledged, then the session terminated with that reason.
        assert_eq!(net.log[0].stanza.attr("type"), Some("result"), "{name}");
        assert_eq!(
            jingle_action(&net.log[1].stanza),
            Some("session-terminate"),
            "{name}"
        );
        assert!(net.get(JULIET).shields().is_empty());
    }
}

#[test]
fn l5_caller_answer_with_other_identity_aborts_security_error() {
    let mut net = verified_net();
    let (t, held) = hold_back(ROMEO, "session-accept");
    net.tamper = t;
    net.call(ROMEO, "juliet@capulet.example");
    // Between offer and answer the session for Juliet's device now has another identity key
    // (e.g. a server-built session): the answer no longer matches the identity of the offer.
    net.node(ROMEO)
        .engine
        .crypto_mut()
        .sessions
        .insert(("juliet@capulet.example".into(), JULIET_DEV), ident(0x99));
    net.tamper = Box::new(|_, _| true);
    let accept = held.borrow()[0].clone();
    net.inject(ROMEO, accept);
    assert_eq!(
        net.get(ROMEO).ended(),
        Some(&CallEnd::Failed(CallError::Verification(
            VerificationError::IdentityMismatch
        )))
    );
    assert_eq!(net.terminate_reasons(ROMEO), vec!["security-error"]);
}

// ---------------------------------------------------------------------------------------------
// 6. Attribute tampering and value comparison

#[test]
fn l6_hash_other_than_sha256_aborts_in_both_roles() {
    for (victim, action) in [(ROMEO, "session-accept"), (JULIET, "session-initiate")] {
        let mut net = verified_net();
        net.tamper = rewrite_transport(victim, action, |t| set_attr(fp_child(t), "hash", "sha-1"));
        net.call(ROMEO, "juliet@capulet.example");
        assert_eq!(
            reason_of(net.get(victim).ended()),
            Some(Reason::SecurityError),
            "{victim}"
        );
        never_verified(&net, victim);
    }
}

#[test]
fn l6_setup_inconsistent_with_role_aborts_in_both_roles() {
    for (victim, action, setup) in [
        (ROMEO, "session-accept", "actpass"),
        (JULIET, "session-initiate", "active"),
        (JULIET, "session-initiate", "passive"),
    ] {
        let mut net = verified_net();
        net.tamper = rewrite_transport(victim, action, move |t| {
            set_attr(fp_child(t), "setup", setup)
        });
        net.call(ROMEO, "juliet@capulet.example");
        assert_eq!(
            net.get(victim).ended(),
            Some(&CallEnd::Failed(CallError::Verification(
                VerificationError::BadSetup(setup)
            ))),
            "{victim} {setup}"
        );
    }
}

#[test]
fn l6_plain_fingerprints_compare_by_value_case_insensitively() {
    let mut net = verified_net();
    // OMEMO off on Juliet → plain call; the server lower-cases Juliet's hex: same value.
    net.node(JULIET).engine.crypto_mut().own_device = None;
    net.tamper = rewrite_transport(ROMEO, "session-accept", |t| {
        let fp = fp_child(t);
        let lower = fp.text().to_lowercase();
        let mut n = xml(&format!(
            "<fingerprint xmlns='{DTLS}' hash='sha-256' setup='active'/>"
        ));
        n.append_text(lower);
        *fp = n;
    });
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(ROMEO).ended(), None);
    assert!(net.get(ROMEO).played());
}

#[test]
fn l6_short_fingerprint_aborts() {
    let mut net = verified_net();
    net.node(JULIET).engine.crypto_mut().own_device = None;
    net.tamper = rewrite_transport(ROMEO, "session-accept", |t| {
        let mut n = xml(&format!(
            "<fingerprint xmlns='{DTLS}' hash='sha-256' setup='active'/>"
        ));
        n.append_text("AB:CD");
        *fp_child(t) = n;
    });
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(
        reason_of(net.get(ROMEO).ended()),
        Some(Reason::SecurityError)
    );
    assert!(!net.get(ROMEO).played());
}

// ---------------------------------------------------------------------------------------------
// 7. Trust

#[test]
fn l7_trust_change_mid_call_updates_the_shield_in_both_roles() {
    for (victim, peer_id) in [(ROMEO, juliet_id()), (JULIET, romeo_id())] {
        let mut net = verified_net();
        net.call(ROMEO, "juliet@capulet.example");
        assert_eq!(net.get(victim).shields(), vec![Shield::Verified]);
        net.node(victim)
            .engine
            .crypto_mut()
            .trust
            .insert(peer_id, Trust::Trusted);
        net.trust_changed(victim);
        assert_eq!(
            net.get(victim).shields(),
            vec![Shield::Verified, Shield::Encrypted]
        );
        net.node(victim)
            .engine
            .crypto_mut()
            .trust
            .insert(peer_id, Trust::Verified);
        net.trust_changed(victim);
        assert_eq!(
            net.get(victim).shields(),
            vec![Shield::Verified, Shield::Encrypted, Shield::Verified]
        );
    }
}

#[test]
fn l7_shield_is_tied_to_the_device_and_identity_of_this_call() {
    // Romeo verified Juliet's tablet, not her laptop, which answers: never Verified.
    let mut net = three_nodes(Trust::Trusted, Trust::Verified);
    net.node(ROMEO)
        .engine
        .crypto_mut()
        .trust
        .insert(juliet2_id(), Trust::Verified);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::Encrypted]);
}

#[test]
fn l7_require_verified_ends_the_call_when_trust_drops() {
    let mut net = verified_net();
    require_verified(&mut net, JULIET);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(JULIET).shields(), vec![Shield::Verified]);
    net.node(JULIET)
        .engine
        .crypto_mut()
        .trust
        .insert(romeo_id(), Trust::Trusted);
    net.trust_changed(JULIET);
    assert_eq!(
        reason_of(net.get(JULIET).ended()),
        Some(Reason::SecurityError)
    );
    assert_eq!(
        net.get(ROMEO).ended(),
        Some(&CallEnd::PeerTerminated(Reason::SecurityError))
    );
}

#[test]
fn l7_require_verified_refuses_trusted_but_unverified_in_both_roles() {
    for victim in [ROMEO, JULIET] {
        let mut net = three_nodes(Trust::Trusted, Trust::Trusted);
        require_verified(&mut net, victim);
        net.call(ROMEO, "juliet@capulet.example");
        assert_eq!(
            reason_of(net.get(victim).ended()),
            Some(Reason::SecurityError),
            "{victim}"
        );
        assert!(!net.get(victim).played());
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Replay, stale proposals, own devices

#[test]
fn l8_replayed_encrypted_fingerprint_fails_to_decrypt_in_both_roles() {
    for (victim, action) in [(ROMEO, "session-accept"), (JULIET, "session-initiate")] {
        // Call A: record the encrypted fingerprint that reached the victim.
        let mut net = verified_net();
        let captured = std::rc::Rc::new(std::cell::RefCell::new(None));
        let c2 = captured.clone();
        net.tamper = rewrite_transport(victim, action, move |t| {
            *c2.borrow_mut() = Some(fp_child(t).clone());
        });
        net.call(ROMEO, "juliet@capulet.example");
        net.user(ROMEO, UserAction::HangUp { sid: SID.into() });
        // Call B on the same engines: the server swaps in the fingerprint from call A.
        let old = captured.borrow().clone().unwrap();
        net.tamper = rewrite_transport(victim, action, move |t| *fp_child(t) = old.clone());
        for n in &mut net.nodes {
            n.events.clear();
        }
        net.certs.clear();
        net.call(ROMEO, "juliet@capulet.example");
        assert_eq!(
            reason_of(net.get(victim).ended()),
            Some(Reason::SecurityError),
            "{victim}: {:?}",
            net.get(victim).ended()
        );
        never_verified(&net, victim);
    }
}

#[test]
fn l8_fingerprint_from_another_call_without_dtls_proof_gives_no_shield() {
    // Even when it decrypts, a fingerprint that DTLS does not prove ends the call.
    let mut net = verified_net();
    net.mitm.insert(ROMEO.into(), 0x42);
    net.call(ROMEO, "juliet@capulet.example");
    never_verified(&net, ROMEO);
    assert_eq!(
        reason_of(net.get(ROMEO).ended()),
        Some(Reason::SecurityError)
    );
}

/// The test wall clock is 2027-01-15T08:00:00Z (1_800_000_000 s after the epoch).
fn propose_with_delay(stamp: &str) -> Element {
    xml(&format!(
        "<message xmlns='jabber:client' type='chat' from='{ROMEO}' to='juliet@capulet.example' id='jm-propose-{SID}'><propose xmlns='urn:xmpp:jingle-message:0' id='{SID}'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose><delay xmlns='urn:xmpp:delay' from='capulet.example' stamp='{stamp}'/></message>"
    ))
}

#[test]
fn l8_stale_propose_does_not_ring_fresh_delayed_one_does() {
    for (stamp, rings) in [
        ("2027-01-15T07:59:29Z", false), // 31 s old
        ("2027-01-15T07:00:00Z", false), // an hour old (offline storage / MAM)
        ("2027-01-15T07:59:50Z", true),  // 10 s old: still ringing time
    ] {
        let mut net = Net::new(vec![Node::new(
            JULIET,
            FakeOmemo::new(Some(JULIET_DEV)),
            0xB1,
        )]);
        net.node(JULIET).auto_accept = false;
        let p = propose_with_delay(stamp);
        net.inject(JULIET, p);
        let rang = net
            .get(JULIET)
            .events
            .iter()
            .any(|e| matches!(e, Event::IncomingCall { .. }));
        assert_eq!(rang, rings, "stamp {stamp}");
    }
}

#[test]
fn l8_own_accept_and_self_proceed_mean_answered_elsewhere() {
    let mut net = verified_net();
    net.node(JULIET).auto_accept = false;
    net.node(JULIET2).auto_accept = false;
    net.call(ROMEO, "juliet@capulet.example");
    // Our own echo of an accept (from our own full JID) is not "elsewhere".
    let echo = xml(&format!(
        "<message xmlns='jabber:client' type='chat' from='{JULIET}' to='juliet@capulet.example'><accept xmlns='urn:xmpp:jingle-message:0' id='{SID}'/></message>"
    ));
    net.inject(JULIET, echo);
    assert_eq!(net.get(JULIET).ended(), None);
    // The tablet's accept reaches the laptop: answered elsewhere.
    let other = xml(&format!(
        "<message xmlns='jabber:client' type='chat' from='{JULIET2}' to='juliet@capulet.example'><accept xmlns='urn:xmpp:jingle-message:0' id='{SID}'/></message>"
    ));
    net.inject(JULIET, other);
    assert_eq!(net.get(JULIET).ended(), Some(&CallEnd::AnsweredElsewhere));
    // A carbon of the tablet's proceed does the same on a ringing device.
    let mut net = verified_net();
    net.node(JULIET).auto_accept = false;
    net.node(JULIET2).auto_accept = false;
    net.call(ROMEO, "juliet@capulet.example");
    let carbon = xml(&format!(
        "<message xmlns='jabber:client' type='chat' from='juliet@capulet.example' to='{JULIET}'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat' from='{JULIET2}' to='{ROMEO}'><proceed xmlns='urn:xmpp:jingle-message:0' id='{SID}'/></message></forwarded></sent></message>"
    ));
    net.inject(JULIET, carbon);
    assert_eq!(net.get(JULIET).ended(), Some(&CallEnd::AnsweredElsewhere));
}

// ---------------------------------------------------------------------------------------------
// 9. Routing

const MALLORY: &str = "mallory@evil.example/x";

#[test]
fn l9_caller_ignores_proceed_from_another_account() {
    let mut net = verified_net();
    net.node(JULIET).auto_accept = false;
    net.node(JULIET2).auto_accept = false;
    net.call(ROMEO, "juliet@capulet.example");
    let forged = xml(&format!(
        "<message xmlns='jabber:client' type='chat' from='{MALLORY}' to='{ROMEO}'><proceed xmlns='urn:xmpp:jingle-message:0' id='{SID}'><device xmlns='{DRAFT}' id='1'/></proceed></message>"
    ));
    net.inject(ROMEO, forged);
    assert!(
        !net.get(ROMEO)
            .events
            .iter()
            .any(|e| matches!(e, Event::Proceeding { .. } | Event::MediaNeeded { .. }))
    );
    // The real answer still works afterwards.
    net.user(JULIET, UserAction::Accept { sid: SID.into() });
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::Verified]);
}

#[test]
fn l9_jingle_from_other_jid_is_answered_with_error_in_both_roles() {
    for (victim, impostor) in [
        (ROMEO, MALLORY),
        (JULIET, MALLORY),
        (ROMEO, JULIET2),
        (JULIET, "romeo@montague.example/other"),
    ] {
        let mut net = verified_net();
        net.call(ROMEO, "juliet@capulet.example");
        net.log.clear();
        let forged = xml(&format!(
            "<iq xmlns='jabber:client' type='set' from='{impostor}' to='{victim}' id='f1'><jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='{SID}'><reason><success/></reason></jingle></iq>"
        ));
        net.inject(victim, forged);
        let answer = &net.log[0].stanza;
        assert_eq!(answer.attr("type"), Some("error"), "{victim} {impostor}");
        assert!(String::from(answer).contains("item-not-found"));
        assert_eq!(net.get(victim).ended(), None, "{victim} {impostor}");
        assert_eq!(net.get(victim).engine.shield(SID), Some(Shield::Verified));
    }
}

#[test]
fn l9_session_accept_from_other_jid_never_changes_the_session() {
    let mut net = verified_net();
    let (t, held) = hold_back(ROMEO, "session-accept");
    net.tamper = t;
    net.call(ROMEO, "juliet@capulet.example");
    let mut forged = held.borrow()[0].clone();
    set_attr(&mut forged, "from", JULIET2);
    net.tamper = Box::new(|_, _| true);
    net.inject(ROMEO, forged);
    assert!(net.get(ROMEO).shields().is_empty());
    assert_eq!(net.get(ROMEO).ended(), None);
    let real = held.borrow()[0].clone();
    net.inject(ROMEO, real);
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::Verified]);
}

#[test]
fn l9_forged_carbon_is_ignored() {
    let mut net = verified_net();
    net.node(JULIET).auto_accept = false;
    net.node(JULIET2).auto_accept = false;
    net.call(ROMEO, "juliet@capulet.example");
    // A "carbon" not from our own bare JID.
    let carbon = xml(&format!(
        "<message xmlns='jabber:client' type='chat' from='{ROMEO}' to='{JULIET}'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat' from='{JULIET2}' to='{ROMEO}'><proceed xmlns='urn:xmpp:jingle-message:0' id='{SID}'/></message></forwarded></sent></message>"
    ));
    net.inject(JULIET, carbon);
    assert_eq!(net.get(JULIET).ended(), None);
}

// ---------------------------------------------------------------------------------------------
// 10. Robustness (deterministic sample; tests/properties.rs has the random ones)

#[test]
fn l10_malformed_stanzas_never_panic_and_keep_the_call() {
    let mut net = verified_net();
    net.call(ROMEO, "juliet@capulet.example");
    let bad = [
        format!(
            "<iq xmlns='jabber:client' type='set' from='{ROMEO}' to='{JULIET}' id='m1'><jingle xmlns='urn:xmpp:jingle:1' action='bogus' sid='{SID}'/></iq>"
        ),
        format!(
            "<iq xmlns='jabber:client' type='set' from='{ROMEO}' to='{JULIET}' id='m2'><jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='{SID}'><content creator='initiator' name='0'><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'><candidate component='x'/></transport></content></jingle></iq>"
        ),
        format!(
            "<message xmlns='jabber:client' from='{ROMEO}' to='{JULIET}'><proceed xmlns='urn:xmpp:jingle-message:0'/></message>"
        ),
        format!(
            "<message xmlns='jabber:client' from='not a jid@@' to='{JULIET}'><retract xmlns='urn:xmpp:jingle-message:0' id='{SID}'/></message>"
        ),
        format!("<iq xmlns='jabber:client' type='result' from='{ROMEO}' id='nope'/>"),
    ];
    for b in bad {
        net.inject(JULIET, xml(&b));
    }
    // A malformed stanza from the real peer in a live session ends it cleanly (failed-application),
    // anything else leaves it alone; nothing panicked and nothing became Verified anew.
    let shields = net.get(JULIET).shields();
    assert_eq!(shields, vec![Shield::Verified]);
}

#[test]
fn l10_proposal_flood_is_bounded() {
    let mut net = Net::new(vec![Node::new(
        JULIET,
        FakeOmemo::new(Some(JULIET_DEV)),
        0xB1,
    )]);
    net.node(JULIET).auto_accept = false;
    for i in 0..(MAX_CALLS + 5) {
        net.inject(
            JULIET,
            xml(&format!(
                "<message xmlns='jabber:client' type='chat' from='{ROMEO}' to='juliet@capulet.example'><propose xmlns='urn:xmpp:jingle-message:0' id='s{i}'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>"
            )),
        );
    }
    assert_eq!(net.get(JULIET).engine.call_count(), MAX_CALLS);
    let busy = net.delivered_to(ROMEO, "reject");
    assert_eq!(busy.len(), 5);
    assert!(String::from(&busy[0]).contains("<busy/>"));
}

// ---------------------------------------------------------------------------------------------
// 7 (continued). Trust × shield: only a key the user trusts gets a lock

#[test]
fn l7_undecided_key_gives_no_shield_in_both_roles() {
    for victim in [ROMEO, JULIET] {
        let (r, j) = if victim == ROMEO {
            (Trust::Undecided, Trust::Verified)
        } else {
            (Trust::Verified, Trust::Undecided)
        };
        let mut net = three_nodes(r, j);
        net.call(ROMEO, "juliet@capulet.example");
        assert_eq!(net.get(victim).shields(), vec![Shield::None], "{victim}");
        // The call still works, just unverified.
        assert!(net.get(victim).played(), "{victim}");
    }
}

#[test]
fn l7_distrusted_key_gets_no_shield_and_never_our_encrypted_fingerprint() {
    // Caller side: Romeo distrusts Juliet's laptop. He does not encrypt to it (plain offer), the
    // call goes on unverified.
    let mut net = three_nodes(Trust::Untrusted, Trust::Verified);
    net.call(ROMEO, "juliet@capulet.example");
    assert!(net.get(ROMEO).engine.crypto().encrypt_log.is_empty());
    let initiate = &net.delivered_to(JULIET, "jingle")[0];
    assert!(!String::from(initiate).contains(DRAFT), "{initiate:?}");
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::None]);
    assert_eq!(net.get(JULIET).shields(), vec![Shield::None]);

    // Callee side: Juliet distrusts Romeo. She reads his encrypted offer but answers plain; the
    // caller, who sent an encrypted offer, then ends the call (docs/protocol.md §3.6).
    let mut net = three_nodes(Trust::Verified, Trust::Untrusted);
    net.call(ROMEO, "juliet@capulet.example");
    assert!(net.get(JULIET).engine.crypto().encrypt_log.is_empty());
    let accept = net
        .delivered_to(ROMEO, "jingle")
        .into_iter()
        .find(|s| jingle_action(s) == Some("session-accept"))
        .unwrap();
    assert!(!String::from(&accept).contains(DRAFT), "{accept:?}");
    assert!(net.get(JULIET).shields().iter().all(|s| *s == Shield::None));
    assert_eq!(
        reason_of(net.get(ROMEO).ended()),
        Some(Reason::SecurityError)
    );
}

#[test]
fn l7_shield_event_names_the_device_of_this_call() {
    let mut net = verified_net();
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(ROMEO).shield_devices(), vec![Some(JULIET_DEV)]);
    assert_eq!(net.get(JULIET).shield_devices(), vec![Some(ROMEO_DEV)]);
    // A plain call names no device.
    let mut net = verified_net();
    net.tamper = strip_device(ROMEO);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(ROMEO).shield_devices(), vec![None]);
}

// ---------------------------------------------------------------------------------------------
// 17. No oracle: nothing decrypted or peer-derived is echoed to the peer

/// A chat message's text, the way a server operator would inject it (docs/security-tests.md line 17).
const SECRET: &str = "the launch code is 7421-alpha-zulu";

/// True when `text` contains the secret or any 8-byte window of it.
fn leaks(text: &str) -> bool {
    let s = SECRET.as_bytes();
    s.windows(8)
        .any(|w| text.contains(core::str::from_utf8(w).unwrap()))
}

/// The encrypted fingerprint going to `victim` replaced by a withheld "chat message" of the
/// same session (same sender device and identity, next counter): what an operator can do.
fn inject_message(victim: &'static str, action: &'static str, text: &'static str) -> Tamper {
    let (sender, sender_dev, victim_bare, victim_dev) = if victim == JULIET {
        (ROMEO, ROMEO_DEV, "juliet@capulet.example", JULIET_DEV)
    } else {
        (JULIET, JULIET_DEV, "romeo@montague.example", ROMEO_DEV)
    };
    let _ = sender;
    rewrite_transport(victim, action, move |t| {
        let mut sender_omemo = FakeOmemo::new(Some(sender_dev)).with_session(
            victim_bare,
            victim_dev,
            ident(0),
            Trust::Verified,
        );
        let enc = sender_omemo.encrypt_text(victim_bare, victim_dev, text.as_bytes());
        let fp = fp_child(t);
        assert_eq!(fp.ns(), DRAFT, "the call was meant to be encrypted");
        let mut new = xml(&format!(
            "<fingerprint xmlns='{DRAFT}' hash='sha-256' setup='{}'/>",
            fp.attr("setup").unwrap()
        ));
        new.append_child(enc);
        *fp = new;
    })
}

#[test]
fn l17_injected_chat_message_as_fingerprint_reveals_nothing_in_both_roles() {
    for (victim, action, peer) in [
        (JULIET, "session-initiate", ROMEO),
        (ROMEO, "session-accept", JULIET),
    ] {
        let mut net = verified_net();
        net.tamper = inject_message(victim, action, SECRET);
        net.call(ROMEO, "juliet@capulet.example");
        // The victim decrypted it (the attack reached OMEMO) ...
        assert!(
            !net.get(victim).engine.crypto().decrypt_log.is_empty(),
            "{victim}"
        );
        // ... refused it as a security-error before any media ...
        match net.get(victim).ended() {
            Some(CallEnd::Failed(
                e @ CallError::Verification(VerificationError::NotAFingerprint { len }),
            )) => {
                assert_eq!(*len, SECRET.len());
                assert_eq!(e.reason(), Reason::SecurityError);
                assert!(
                    !leaks(&e.to_string()),
                    "the local detail quotes the plaintext: {e}"
                );
            }
            other => panic!("{victim}: {other:?}"),
        }
        assert!(!net.get(victim).played());
        assert_eq!(
            net.get(peer).ended(),
            Some(&CallEnd::PeerTerminated(Reason::SecurityError)),
            "{peer}"
        );
        // ... and nothing either side sent (terminate, finish, IQ answers) carries any of it.
        for d in &net.log {
            let text = String::from(&d.stanza);
            assert!(!leaks(&text), "{} sent {text}", d.from);
        }
        let texts: Vec<String> = net
            .log
            .iter()
            .filter(|d| d.from.as_str() == victim)
            .flat_map(|d| {
                d.stanza
                    .children()
                    .flat_map(|c| c.children())
                    .filter(|c| c.name() == "reason")
                    .flat_map(|r| r.children())
                    .filter(|c| c.name() == "text")
                    .map(|t| t.text())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            texts,
            vec!["DTLS fingerprint could not be verified".to_owned(); 2],
            "{victim}: terminate and finish carry the fixed text"
        );
    }
}

#[test]
fn l17_injected_valid_fingerprint_of_another_call_gives_no_shield_in_both_roles() {
    // The operator's withheld message decrypts to a well-formed fingerprint (another call's
    // certificate): DTLS then proves the real certificate differs.
    const OTHER: &str = "3A:9F:0C:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:C1";
    for (victim, action) in [(JULIET, "session-initiate"), (ROMEO, "session-accept")] {
        let mut net = verified_net();
        net.tamper = inject_message(victim, action, OTHER);
        net.call(ROMEO, "juliet@capulet.example");
        assert_eq!(
            net.get(victim).ended(),
            Some(&CallEnd::Failed(CallError::Verification(
                VerificationError::DigestMismatch
            ))),
            "{victim}"
        );
        never_verified(&net, victim);
        assert!(!net.get(victim).played());
        for d in &net.log {
            let text = String::from(&d.stanza);
            assert!(!text.contains(&OTHER[..23]), "{} sent {text}", d.from);
        }
    }
}

#[test]
fn l17_every_error_sends_a_fixed_text_without_peer_data() {
    use shieldcall_jingle::CryptoError;
    use shieldcall_jingle::fingerprint::FingerprintError;
    use shieldcall_jingle::jingle::JingleError;
    use shieldcall_jingle::transport::TransportError;
    let p = || SECRET.to_owned();
    let errors = vec![
        CallError::MediaFailed(p()),
        CallError::MediaMismatch {
            proposed: vec![p()],
            initiated: vec![p()],
        },
        CallError::InvalidJingle(JingleError::InvalidDescription(p())),
        CallError::InvalidJingle(JingleError::UnsupportedTransport(p())),
        CallError::InvalidJingle(JingleError::Transport(
            TransportError::InvalidCandidate(p()),
        )),
        CallError::InvalidJingle(JingleError::Transport(TransportError::Fingerprint(
            FingerprintError::UnexpectedChild(p()),
        ))),
        CallError::InvalidJingle(JingleError::Transport(TransportError::Fingerprint(
            FingerprintError::InvalidSetup(p()),
        ))),
        VerificationError::Decryption(CryptoError::InvalidMessage(p())).into(),
        VerificationError::Decryption(CryptoError::Other(p())).into(),
        VerificationError::Encryption(CryptoError::Other(p())).into(),
        VerificationError::UnsupportedHash(p()).into(),
        VerificationError::Malformed(FingerprintError::UnexpectedChild(p())).into(),
        VerificationError::DeviceMismatch {
            expected: 7421,
            got: 7422,
        }
        .into(),
    ];
    for e in errors {
        let xml = String::from(&minidom::Element::from(e.to_reason_element()));
        assert!(!leaks(&xml), "{e:?} sends {xml}");
        assert!(!xml.contains("7421"), "{e:?} sends {xml}");
        assert!(xml.contains(e.peer_text()), "{xml}");
    }
}

// ---------------------------------------------------------------------------------------------
// 18. Downgrade warnings, per-contact require-verified

fn expecting(net: &mut Net, jid: &str, peer: &str, require_verified: bool) {
    net.node(jid).engine.crypto_mut().policy.insert(
        peer.to_owned(),
        ContactPolicy {
            require_verified,
            expect_verified: true,
        },
    );
}

/// (victim, setup) → the downgrade the victim must report, before media.
#[test]
fn l18_each_downgrade_is_reported_before_media_in_its_role() {
    type Setup = fn(&mut Net);
    let cases: Vec<(&str, &str, Setup, Downgrade, Option<u32>)> = vec![
        (
            ROMEO,
            "no device",
            |n| n.tamper = strip_device(ROMEO),
            Downgrade::NoDevice,
            None,
        ),
        (
            ROMEO,
            "encryption failed",
            |n| n.node(ROMEO).engine.crypto_mut().fail_encrypt = true,
            Downgrade::OmemoFailed,
            Some(JULIET_DEV),
        ),
        (
            ROMEO,
            "new device",
            |n| {
                n.node(ROMEO)
                    .engine
                    .crypto_mut()
                    .trust
                    .insert(juliet_id(), Trust::Undecided);
            },
            Downgrade::UnverifiedDevice,
            Some(JULIET_DEV),
        ),
        (
            ROMEO,
            "distrusted device",
            |n| {
                n.node(ROMEO)
                    .engine
                    .crypto_mut()
                    .trust
                    .insert(juliet_id(), Trust::Untrusted);
            },
            Downgrade::UnverifiedDevice,
            Some(JULIET_DEV),
        ),
        (
            JULIET,
            "plain offer",
            |n| n.node(ROMEO).engine.crypto_mut().fail_encrypt = true,
            Downgrade::PlainFingerprints,
            None,
        ),
        (
            JULIET,
            "new device",
            |n| {
                n.node(JULIET)
                    .engine
                    .crypto_mut()
                    .trust
                    .insert(romeo_id(), Trust::Undecided);
            },
            Downgrade::UnverifiedDevice,
            Some(ROMEO_DEV),
        ),
    ];
    for (victim, what, setup, kind, device) in cases {
        let peer = if victim == ROMEO {
            "juliet@capulet.example"
        } else {
            "romeo@montague.example"
        };
        // Reported when the contact had been verified, media still flows (unverified) ...
        let mut net = verified_net();
        setup(&mut net);
        expecting(&mut net, victim, peer, false);
        net.call(ROMEO, "juliet@capulet.example");
        assert_eq!(
            net.get(victim).downgrades(),
            vec![(kind, device, true)],
            "{victim} {what}"
        );
        never_verified(&net, victim);
        // ... never when nothing was verified before ...
        let mut net = verified_net();
        setup(&mut net);
        net.call(ROMEO, "juliet@capulet.example");
        assert!(net.get(victim).downgrades().is_empty(), "{victim} {what}");
        // ... and the contact's require-verified policy refuses the call, with no media.
        let mut net = verified_net();
        setup(&mut net);
        expecting(&mut net, victim, peer, true);
        net.call(ROMEO, "juliet@capulet.example");
        assert_eq!(
            reason_of(net.get(victim).ended()),
            Some(Reason::SecurityError),
            "{victim} {what}: {:?}",
            net.get(victim).events
        );
        assert!(!net.get(victim).played(), "{victim} {what}");
    }
}

#[test]
fn l18_verified_call_reports_no_downgrade_and_policy_lets_it_through() {
    for victim in [ROMEO, JULIET] {
        let peer = if victim == ROMEO {
            "juliet@capulet.example"
        } else {
            "romeo@montague.example"
        };
        let mut net = verified_net();
        expecting(&mut net, victim, peer, true);
        net.call(ROMEO, "juliet@capulet.example");
        assert!(net.get(victim).downgrades().is_empty());
        assert_eq!(net.get(victim).shields(), vec![Shield::Verified]);
    }
}

#[test]
fn l18_policy_change_mid_call_is_enforced_on_the_next_trust_change() {
    // BTBV call (encrypted), then the user sets require-verified for Juliet in another process:
    // the running call ends once the change is signalled.
    let mut net = three_nodes(Trust::Trusted, Trust::Trusted);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::Encrypted]);
    net.node(ROMEO).engine.crypto_mut().policy.insert(
        "juliet@capulet.example".into(),
        ContactPolicy {
            require_verified: true,
            expect_verified: false,
        },
    );
    net.trust_changed(ROMEO);
    assert_eq!(
        reason_of(net.get(ROMEO).ended()),
        Some(Reason::SecurityError)
    );
}
