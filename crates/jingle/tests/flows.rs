//! Call flows beyond the happy path (docs/protocol.md §5): the proceed/retract race, simultaneous
//! proposals, pre-approval limited to the proposed media, direct calls without JMI, IQ errors,
//! timeouts and the caps on remembered state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Instant, SystemTime};

use common::*;
use shieldcall_jingle::call::{MAX_RECENT_RETRACTS, proposal_wins};
use shieldcall_jingle::{
    ApiError, CallEnd, CallError, Config, Event, Media, Output, Shield, Trust, UserAction,
};
use xmpp_parsers::jingle::Reason;

fn verified_net() -> Net {
    three_nodes(Trust::Verified, Trust::Verified)
}

#[test]
fn caller_answers_a_late_proceed_after_retract_with_retract() {
    let mut net = verified_net();
    net.node(JULIET).auto_accept = false;
    net.node(JULIET2).auto_accept = false;
    net.call(ROMEO, "juliet@capulet.example");
    net.user(ROMEO, UserAction::HangUp { sid: SID.into() });
    assert_eq!(net.get(ROMEO).ended(), Some(&CallEnd::LocalHangup));
    assert_eq!(net.get(JULIET).ended(), Some(&CallEnd::Retracted));
    // The laptop's proceed crossed the retract on the wire.
    net.log.clear();
    let proceed = xml(&format!(
        "<message xmlns='jabber:client' type='chat' from='{JULIET}' to='{ROMEO}'><proceed xmlns='urn:xmpp:jingle-message:0' id='{SID}'><device xmlns='{DRAFT}' id='{JULIET_DEV}'/></proceed></message>"
    ));
    net.inject(ROMEO, proceed);
    let retract = net.delivered_to(JULIET, "retract");
    assert_eq!(retract.len(), 1, "{:?}", net.log);
    assert_eq!(retract[0].attr("to"), Some(JULIET));
    assert!(net.get(ROMEO).engine.call_count() == 0);
}

#[test]
fn callee_that_proceeded_ends_on_retract() {
    let mut net = verified_net();
    // Hold the proceed back so that Romeo is still "proposed" when he retracts.
    net.tamper = Box::new(|to, el| {
        !(to.as_str() == ROMEO
            && el
                .get_child("proceed", "urn:xmpp:jingle-message:0")
                .is_some())
    });
    net.call(ROMEO, "juliet@capulet.example");
    net.user(ROMEO, UserAction::HangUp { sid: SID.into() });
    assert_eq!(net.get(JULIET).ended(), Some(&CallEnd::Retracted));
    assert_eq!(net.get(JULIET).engine.call_count(), 0);
}

#[test]
fn proceed_without_matching_proposal_is_ignored() {
    let mut net = verified_net();
    let proceed = xml(&format!(
        "<message xmlns='jabber:client' type='chat' from='{JULIET}' to='{ROMEO}'><proceed xmlns='urn:xmpp:jingle-message:0' id='nope'/></message>"
    ));
    net.inject(ROMEO, proceed);
    assert!(net.get(ROMEO).events.is_empty());
    assert!(net.log.is_empty());
}

#[test]
fn tie_break_rule_is_symmetric() {
    for (a, b) in [("aaa", "bbb"), ("bbb", "aaa"), ("same", "same")] {
        let ours = proposal_wins(a, ROMEO, b, JULIET);
        let theirs = proposal_wins(b, JULIET, a, ROMEO);
        assert_ne!(ours, theirs, "{a} {b}");
    }
}

#[test]
fn simultaneous_proposals_leave_one_verified_call() {
    let mut net = verified_net();
    net.node(JULIET2).auto_accept = false;
    let now = net.now;
    // Both press "call" before either proposal arrives.
    net.node(ROMEO)
        .engine
        .handle_user(
            now,
            UserAction::Call {
                peer: bare("juliet@capulet.example"),
                sid: "aaa".into(),
                media: vec![Media::Audio],
            },
        )
        .unwrap();
    net.node(JULIET)
        .engine
        .handle_user(
            now,
            UserAction::Call {
                peer: bare("romeo@montague.example"),
                sid: "bbb".into(),
                media: vec![Media::Audio],
            },
        )
        .unwrap();
    net.run();
    // "bbb" > "aaa": Juliet's proposal survives, Romeo retracts his and answers hers.
    assert!(net.get(ROMEO).events.contains(&Event::Ended {
        sid: "aaa".into(),
        end: CallEnd::Superseded("bbb".into())
    }));
    assert_eq!(net.get(ROMEO).engine.shield("bbb"), Some(Shield::Verified));
    assert_eq!(net.get(JULIET).engine.shield("bbb"), Some(Shield::Verified));
    assert_eq!(net.get(ROMEO).engine.call_count(), 1);
    assert_eq!(net.get(JULIET).engine.call_count(), 1);
    // Juliet's tablet rang for "aaa" and stopped on the retract.
    assert!(net.get(JULIET2).events.contains(&Event::Ended {
        sid: "aaa".into(),
        end: CallEnd::Retracted
    }));
}

#[test]
fn pre_approval_covers_only_the_proposed_media() {
    let mut net = verified_net();
    net.tamper = Box::new(|to, el| {
        if to.as_str() == JULIET
            && jingle_action(el) == Some("session-initiate")
            && let Some(j) = el.get_child_mut("jingle", "urn:xmpp:jingle:1")
        {
            let mut video = j
                .children()
                .find(|c| c.name() == "content")
                .unwrap()
                .clone();
            set_attr(&mut video, "name", "1");
            let d = video
                .get_child_mut("description", "urn:xmpp:jingle:apps:rtp:1")
                .unwrap();
            set_attr(d, "media", "video");
            j.append_child(video);
        }
        true
    });
    net.call(ROMEO, "juliet@capulet.example");
    match net.get(JULIET).ended() {
        Some(CallEnd::Failed(e @ CallError::MediaMismatch { .. })) => {
            assert_eq!(e.reason(), Reason::SecurityError);
            assert_eq!(
                e.to_string(),
                "Your session proposal (Jingle Message Initiation) included media [\"audio\"] but your session-initiate was [\"audio\", \"video\"]"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(net.terminate_reasons(JULIET), vec!["security-error"]);
    assert!(!net.get(JULIET).played());
}

#[test]
fn direct_call_without_jmi_works_and_is_never_verified() {
    let mut net = verified_net();
    net.user(
        ROMEO,
        UserAction::CallDirect {
            peer: full(JULIET),
            sid: SID.into(),
            media: vec![Media::Audio],
        },
    );
    assert!(
        net.get(JULIET)
            .events
            .iter()
            .any(|e| matches!(e, Event::IncomingCall { jmi: false, .. }))
    );
    // The tablet never heard of it.
    assert!(net.get(JULIET2).events.is_empty());
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::None]);
    assert_eq!(net.get(JULIET).shields(), vec![Shield::None]);
    assert!(net.get(ROMEO).played() && net.get(JULIET).played());
    // No OMEMO was used at all.
    assert!(net.get(ROMEO).engine.crypto().encrypt_log.is_empty());
}

#[test]
fn direct_call_is_refused_under_require_verified() {
    let mut config = Config::new(full(ROMEO));
    config.require_verified = true;
    let mut e = Driven::new(config, FakeOmemo::new(Some(ROMEO_DEV)));
    let r = e.handle_user(
        Instant::now(),
        UserAction::CallDirect {
            peer: full(JULIET),
            sid: SID.into(),
            media: vec![Media::Audio],
        },
    );
    assert_eq!(r, Err(ApiError::NotVerifiable));
    assert!(e.poll_output().is_none());
}

#[test]
fn iq_error_on_session_initiate_ends_the_call() {
    let mut net = verified_net();
    let (t, held) = hold_back(JULIET, "session-initiate");
    net.tamper = t;
    net.call(ROMEO, "juliet@capulet.example");
    let initiate = held.borrow()[0].clone();
    let error = xml(&format!(
        "<iq xmlns='jabber:client' type='error' from='{JULIET}' to='{ROMEO}' id='{}'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        initiate.attr("id").unwrap()
    ));
    // From someone else: ignored.
    let mut forged = error.clone();
    set_attr(&mut forged, "from", JULIET2);
    net.inject(ROMEO, forged);
    assert_eq!(net.get(ROMEO).ended(), None);
    net.inject(ROMEO, error);
    assert_eq!(net.get(ROMEO).ended(), Some(&CallEnd::PeerError));
}

#[test]
fn unknown_session_gets_item_not_found() {
    let mut net = verified_net();
    let ti = xml(&format!(
        "<iq xmlns='jabber:client' type='set' from='{JULIET}' to='{ROMEO}' id='x1'><jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='nope'/></iq>"
    ));
    net.inject(ROMEO, ti);
    let s = String::from(&net.log[0].stanza);
    assert!(
        s.contains("item-not-found") && s.contains("unknown-session"),
        "{s}"
    );
}

#[test]
fn callee_waiting_for_initiate_times_out() {
    let mut net = verified_net();
    net.tamper = Box::new(|to, el| {
        !(to.as_str() == JULIET && jingle_action(el) == Some("session-initiate"))
    });
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(JULIET).ended(), None);
    assert!(net.get(JULIET).engine.poll_timeout().is_some());
    net.advance(ring_timeout());
    assert_eq!(net.get(JULIET).ended(), Some(&CallEnd::Timeout));
    assert_eq!(net.get(ROMEO).ended(), Some(&CallEnd::Timeout));
    assert_eq!(net.terminate_reasons(ROMEO), vec!["timeout"]);
}

#[test]
fn recent_retracts_are_bounded() {
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut e = Driven::new(Config::new(full(ROMEO)), FakeOmemo::new(Some(ROMEO_DEV)));
    for i in 0..=MAX_RECENT_RETRACTS {
        let sid = format!("s{i}");
        e.handle_user(
            now,
            UserAction::Call {
                peer: bare("juliet@capulet.example"),
                sid: sid.clone(),
                media: vec![Media::Audio],
            },
        )
        .unwrap();
        e.handle_user(now, UserAction::HangUp { sid }).unwrap();
    }
    while e.poll_output().is_some() {}
    let late = |sid: &str| {
        xml(&format!(
            "<message xmlns='jabber:client' type='chat' from='{JULIET}' to='{ROMEO}'><proceed xmlns='urn:xmpp:jingle-message:0' id='{sid}'/></message>"
        ))
    };
    // The oldest was forgotten: no answer; the newest is still answered with a retract.
    e.handle_stanza(now, wall, &late("s0"));
    assert!(e.poll_output().is_none());
    e.handle_stanza(now, wall, &late(&format!("s{MAX_RECENT_RETRACTS}")));
    match e.poll_output() {
        Some(Output::Send(m)) => assert!(
            m.get_child("retract", "urn:xmpp:jingle-message:0")
                .is_some()
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn api_misuse_is_reported_not_panicked() {
    let now = Instant::now();
    let mut e = Driven::new(Config::new(full(ROMEO)), FakeOmemo::new(Some(ROMEO_DEV)));
    assert_eq!(
        e.handle_user(now, UserAction::Accept { sid: "x".into() }),
        Err(ApiError::UnknownSession)
    );
    let call = |sid: &str, media: Vec<Media>| UserAction::Call {
        peer: bare("juliet@capulet.example"),
        sid: sid.into(),
        media,
    };
    assert_eq!(
        e.handle_user(now, call("a", vec![])),
        Err(ApiError::NoMedia)
    );
    e.handle_user(now, call("a", vec![Media::Audio])).unwrap();
    assert_eq!(
        e.handle_user(now, call("a", vec![Media::Audio])),
        Err(ApiError::SessionExists)
    );
    assert_eq!(
        e.handle_user(now, UserAction::Accept { sid: "a".into() }),
        Err(ApiError::WrongState)
    );
    assert_eq!(
        e.handle_media(now, "a", shieldcall_jingle::MediaEvent::Connected),
        Err(ApiError::WrongState)
    );
    assert_eq!(e.call_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// content-add / content-accept (docs/protocol.md §2.4: full transports, encrypted like the session)

fn video(role: shieldcall_jingle::Role, cert_byte: u8) -> shieldcall_jingle::LocalContent {
    let mut c = local_audio("1", role, cert_byte);
    c.description.media = "video".into();
    c
}

fn add_video_from_romeo(net: &mut Net) {
    let now = net.now;
    net.node(ROMEO)
        .engine
        .handle_media(
            now,
            SID,
            shieldcall_jingle::MediaEvent::AddContents(vec![video(
                shieldcall_jingle::Role::Initiator,
                0xA1,
            )]),
        )
        .unwrap();
    net.run();
}

fn juliet_accepts_video(net: &mut Net) {
    let now = net.now;
    let r = net.node(JULIET).engine.handle_media(
        now,
        SID,
        shieldcall_jingle::MediaEvent::LocalContents(vec![video(
            shieldcall_jingle::Role::Responder,
            0xB1,
        )]),
    );
    assert_eq!(r, Ok(()));
    net.run();
}

#[test]
fn verified_content_add_is_encrypted_both_ways() {
    let mut net = verified_net();
    net.call(ROMEO, "juliet@capulet.example");
    add_video_from_romeo(&mut net);
    let add = net
        .log
        .iter()
        .find(|d| jingle_action(&d.stanza) == Some("content-add"))
        .unwrap();
    let s = String::from(&add.stanza);
    assert!(
        s.contains(DRAFT) && s.contains(&format!("rid='{JULIET_DEV}'")),
        "{s}"
    );
    assert!(!s.contains(DTLS), "{s}");
    let Some(Event::ContentAdd { contents, .. }) = net
        .get(JULIET)
        .events
        .iter()
        .find(|e| matches!(e, Event::ContentAdd { .. }))
        .cloned()
    else {
        panic!()
    };
    assert_eq!(contents[0].fingerprint.value, cert(0xA1));
    juliet_accepts_video(&mut net);
    let accept = net
        .log
        .iter()
        .find(|d| jingle_action(&d.stanza) == Some("content-accept"))
        .unwrap();
    let s = String::from(&accept.stanza);
    assert!(
        s.contains(DRAFT) && s.contains(&format!("rid='{ROMEO_DEV}'")),
        "{s}"
    );
    let Some(Event::ContentAccepted { contents, .. }) = net
        .get(ROMEO)
        .events
        .iter()
        .find(|e| matches!(e, Event::ContentAccepted { .. }))
        .cloned()
    else {
        panic!("{:?}", net.get(ROMEO).events)
    };
    assert_eq!(contents[0].fingerprint.value, cert(0xB1));
    for n in [ROMEO, JULIET] {
        assert_eq!(net.get(n).ended(), None);
        assert_eq!(net.get(n).engine.shield(SID), Some(Shield::Verified));
    }
}

#[test]
fn plain_content_accept_in_a_verified_session_aborts() {
    let mut net = verified_net();
    net.call(ROMEO, "juliet@capulet.example");
    add_video_from_romeo(&mut net);
    net.tamper = rewrite_transport(ROMEO, "content-accept", |t| {
        replace_fps(t, vec![plain_fp("active", 0xB1)]);
    });
    juliet_accepts_video(&mut net);
    assert_eq!(
        net.get(ROMEO).ended(),
        Some(&CallEnd::Failed(CallError::Verification(
            shieldcall_jingle::VerificationError::UnexpectedlyPlain
        )))
    );
}

#[test]
fn content_accept_encryption_failure_aborts_instead_of_downgrading() {
    let mut net = verified_net();
    net.call(ROMEO, "juliet@capulet.example");
    add_video_from_romeo(&mut net);
    net.node(JULIET).engine.crypto_mut().fail_encrypt = true;
    juliet_accepts_video(&mut net);
    assert!(
        !net.log
            .iter()
            .any(|d| jingle_action(&d.stanza) == Some("content-accept"))
    );
    assert_eq!(net.terminate_reasons(JULIET), vec!["security-error"]);
}

#[test]
fn encrypted_content_add_in_a_plain_session_fails_like_conversations() {
    let mut net = verified_net();
    net.node(JULIET).engine.crypto_mut().own_device = None; // plain session
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(JULIET).engine.shield(SID), Some(Shield::None));
    // The server swaps in an encrypted fingerprint: never trusted in a plain session.
    let mut omemo = FakeOmemo::new(Some(ROMEO_DEV)).with_session(
        "juliet@capulet.example",
        JULIET_DEV,
        juliet_id(),
        Trust::Verified,
    );
    use shieldcall_jingle::OmemoCrypto;
    let enc = omemo
        .encrypt(&bare("juliet@capulet.example"), JULIET_DEV, b"AA")
        .unwrap();
    let mut fp = xml(&format!(
        "<fingerprint xmlns='{DRAFT}' hash='sha-256' setup='actpass'/>"
    ));
    fp.append_child(enc.element);
    net.tamper = rewrite_transport(JULIET, "content-add", move |t| {
        replace_fps(t, vec![fp.clone()]);
    });
    add_video_from_romeo(&mut net);
    assert_eq!(
        net.get(JULIET).ended(),
        Some(&CallEnd::Failed(CallError::Verification(
            shieldcall_jingle::VerificationError::UnexpectedlyEncrypted
        )))
    );
    assert_eq!(net.terminate_reasons(JULIET), vec!["failed-application"]);
}

#[test]
fn rejected_content_add_is_reported() {
    let mut net = verified_net();
    net.call(ROMEO, "juliet@capulet.example");
    add_video_from_romeo(&mut net);
    net.user(JULIET, UserAction::RejectContent { sid: SID.into() });
    assert!(
        net.get(ROMEO)
            .events
            .contains(&Event::ContentRejected { sid: SID.into() })
    );
    assert_eq!(net.get(ROMEO).ended(), None);
    // Adding with another certificate than the running one is refused locally.
    let now = net.now;
    let r = net.node(ROMEO).engine.handle_media(
        now,
        SID,
        shieldcall_jingle::MediaEvent::AddContents(vec![video(
            shieldcall_jingle::Role::Initiator,
            0x01,
        )]),
    );
    assert_eq!(
        r,
        Err(ApiError::InvalidLocal(
            "fingerprint must be the running certificate's"
        ))
    );
}
