//! ICE restarts in a running verified call, the way Conversations makes them (docs/protocol.md
//! §2.4): a `transport-info` with new credentials and no candidate offers the restart; the
//! other side's candidates with its own new credentials answer it; simultaneous offers are
//! settled by a `tie-break` from the initiator. The shield and the fingerprints never change,
//! a restart that carries a fingerprint is refused, and restarts per call are bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use minidom::Element;
use shieldcall_jingle::call::MAX_ICE_RESTARTS;
use shieldcall_jingle::{Event, IceCredentials, MediaEvent, Shield, Trust};

const ICE_UDP: &str = "urn:xmpp:jingle:transports:ice-udp:1";

/// A verified call between Romeo and Juliet's laptop (the tablet stopped ringing).
fn running_call() -> Net {
    let mut net = three_nodes(Trust::Verified, Trust::Verified);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::Verified]);
    assert_eq!(net.get(JULIET).shields(), vec![Shield::Verified]);
    net.log.clear();
    net
}

fn creds(ufrag: &str) -> Vec<IceCredentials> {
    vec![IceCredentials {
        content: "0".into(),
        ufrag: ufrag.into(),
        pwd: format!("{ufrag}-pwd-0123456789abcdef"),
    }]
}

fn media(net: &mut Net, jid: &str, ev: MediaEvent) -> Result<(), shieldcall_jingle::ApiError> {
    let now = net.now;
    let r = net.node(jid).engine.handle_media(now, SID, ev);
    net.run();
    r
}

fn restarts(net: &Net, jid: &str) -> Vec<(Vec<IceCredentials>, bool)> {
    net.get(jid)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::IceRestart { remote, offer, .. } => Some((remote.clone(), *offer)),
            _ => None,
        })
        .collect()
}

/// The `<transport/>` elements of the transport-infos delivered to `to`.
fn transports_to(net: &Net, to: &str) -> Vec<Element> {
    net.delivered_to(to, "jingle")
        .into_iter()
        .filter_map(|iq| iq.get_child("jingle", "urn:xmpp:jingle:1").cloned())
        .filter(|j| j.attr("action") == Some("transport-info"))
        .flat_map(|j| {
            j.children()
                .filter_map(|c| c.get_child("transport", ICE_UDP).cloned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The IQ answer `from` sent (the last one) to `to`.
fn last_iq_answer(net: &Net, from: &str, to: &str) -> Element {
    net.log
        .iter()
        .rev()
        .find(|d| {
            d.from.as_str() == from
                && d.to.as_str() == to
                && d.stanza.name() == "iq"
                && matches!(d.stanza.attr("type"), Some("result" | "error"))
        })
        .map(|d| d.stanza.clone())
        .expect("an IQ answer")
}

fn restart_offer(ufrag: &str, extra: &str) -> Element {
    xml(&format!(
        "<iq xmlns='jabber:client' type='set' id='r-{ufrag}' from='{JULIET}' to='{ROMEO}'>\
         <jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='{SID}'>\
         <content creator='initiator' name='0'>\
         <transport xmlns='{ICE_UDP}' ufrag='{ufrag}' pwd='{ufrag}-pwd-0123456789abcdef'>{extra}</transport>\
         </content></jingle></iq>"
    ))
}

#[test]
fn a_restart_offer_and_its_answer_keep_the_shield() {
    let mut net = running_call();
    // Romeo's network changed: media restarted ICE.
    media(
        &mut net,
        ROMEO,
        MediaEvent::IceRestarted {
            credentials: creds("rnew"),
        },
    )
    .unwrap();
    // The offer: new credentials, no candidate, no fingerprint.
    let offer = transports_to(&net, JULIET);
    assert_eq!(offer.len(), 1, "{:?}", net.log);
    assert_eq!(offer[0].attr("ufrag"), Some("rnew"));
    assert_eq!(offer[0].children().count(), 0, "{:?}", offer[0]);
    assert_eq!(restarts(&net, JULIET), vec![(creds("rnew"), true)]);
    // Juliet's media restarts too: nothing goes out until its first candidate, which answers.
    net.log.clear();
    media(
        &mut net,
        JULIET,
        MediaEvent::IceRestarted {
            credentials: creds("jnew"),
        },
    )
    .unwrap();
    assert!(transports_to(&net, ROMEO).is_empty(), "{:?}", net.log);
    let c = MediaEvent::LocalCandidate {
        content: "0".into(),
        candidate: candidate(41000),
    };
    media(&mut net, JULIET, c).unwrap();
    let answer = transports_to(&net, ROMEO);
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].attr("ufrag"), Some("jnew"));
    assert_eq!(restarts(&net, ROMEO), vec![(creds("jnew"), false)]);
    assert!(net.get(ROMEO).events.iter().any(|e| matches!(
        e,
        Event::RemoteCandidates { candidates, .. } if candidates[0].port == 41000
    )));
    // No new shield, no end: the DTLS association is the same.
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::Verified]);
    assert_eq!(net.get(JULIET).shields(), vec![Shield::Verified]);
    assert_eq!(
        (net.get(ROMEO).ended(), net.get(JULIET).ended()),
        (None, None)
    );
}

#[test]
fn a_restart_that_brings_a_fingerprint_is_refused() {
    let mut net = running_call();
    let fp = format!(
        "<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='active'>{}</fingerprint>",
        vec!["AA"; 32].join(":")
    );
    net.inject(ROMEO, restart_offer("evil", &fp));
    let answer = last_iq_answer(&net, ROMEO, JULIET);
    assert_eq!(answer.attr("type"), Some("error"), "{answer:?}");
    assert!(restarts(&net, ROMEO).is_empty());
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::Verified]);
    assert_eq!(net.get(ROMEO).ended(), None);
}

#[test]
fn simultaneous_offers_are_settled_by_the_initiator() {
    let mut net = running_call();
    // Romeo (initiator) offers; before Juliet's copy arrives, Juliet's own offer reaches Romeo.
    let now = net.now;
    let ours = MediaEvent::IceRestarted {
        credentials: creds("rnew"),
    };
    net.node(ROMEO).engine.handle_media(now, SID, ours).unwrap();
    net.inject(ROMEO, restart_offer("jnew", ""));
    let answer = last_iq_answer(&net, ROMEO, JULIET);
    assert_eq!(answer.attr("type"), Some("error"));
    let error = answer.get_child("error", "jabber:client").unwrap();
    assert!(
        error
            .get_child("tie-break", "urn:xmpp:jingle:errors:1")
            .is_some()
    );
    assert!(
        error
            .get_child("conflict", "urn:ietf:params:xml:ns:xmpp-stanzas")
            .is_some()
    );
    // Juliet, the responder, takes Romeo's offer (run() delivered it).
    assert_eq!(restarts(&net, JULIET), vec![(creds("rnew"), true)]);
    assert!(restarts(&net, ROMEO).is_empty());
}

#[test]
fn restarts_per_call_are_bounded() {
    let mut net = running_call();
    for i in 0..MAX_ICE_RESTARTS {
        net.inject(ROMEO, restart_offer(&format!("j{i}"), ""));
        assert_eq!(
            last_iq_answer(&net, ROMEO, JULIET).attr("type"),
            Some("result")
        );
        let now = net.now;
        let answer = MediaEvent::IceRestarted {
            credentials: creds(&format!("r{i}")),
        };
        net.node(ROMEO)
            .engine
            .handle_media(now, SID, answer)
            .unwrap();
        net.run();
    }
    net.inject(ROMEO, restart_offer("one-too-many", ""));
    let answer = last_iq_answer(&net, ROMEO, JULIET);
    assert_eq!(answer.attr("type"), Some("error"), "{answer:?}");
    assert_eq!(restarts(&net, ROMEO).len(), MAX_ICE_RESTARTS as usize);
    // Our own restart is refused as well: the budget is the call's.
    let r = media(
        &mut net,
        ROMEO,
        MediaEvent::IceRestarted {
            credentials: creds("late"),
        },
    );
    assert!(r.is_err());
    assert_eq!(net.get(ROMEO).ended(), None);
}

#[test]
fn a_restart_must_name_every_content() {
    let mut net = running_call();
    let wrong = vec![IceCredentials {
        content: "video".into(),
        ufrag: "x".into(),
        pwd: "y".into(),
    }];
    let r = media(
        &mut net,
        ROMEO,
        MediaEvent::IceRestarted { credentials: wrong },
    );
    assert!(r.is_err());
    assert!(transports_to(&net, JULIET).is_empty());
}
