//! Full calls between engine instances joined by an in-memory server (no network): Romeo calls
//! Juliet, who has two devices; the laptop answers, the tablet must stop ringing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use shieldcall_jingle::{CallEnd, Event, Shield, Trust, UserAction};

#[test]
fn verified_call_with_two_callee_devices() {
    let mut net = three_nodes(Trust::Verified, Trust::Verified);
    net.call(ROMEO, "juliet@capulet.example");

    // Both of Juliet's devices rang.
    for j in [JULIET, JULIET2] {
        assert!(
            net.get(j)
                .events
                .iter()
                .any(|e| matches!(e, Event::IncomingCall { jmi: true, .. })),
            "{j} did not ring"
        );
    }
    // The laptop answered (auto_accept); the tablet stopped ringing: answered elsewhere.
    assert_eq!(net.get(JULIET2).ended(), Some(&CallEnd::AnsweredElsewhere));
    // Verified on both sides, media allowed, nobody ended.
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::Verified]);
    assert_eq!(net.get(JULIET).shields(), vec![Shield::Verified]);
    assert!(net.get(ROMEO).played() && net.get(JULIET).played());
    assert_eq!(net.get(ROMEO).ended(), None);
    assert_eq!(net.get(JULIET).ended(), None);
    // The caller encrypted to the proceed device only; the callee answered to the header sid.
    assert_eq!(
        net.get(ROMEO).engine.crypto().encrypt_log,
        vec![("juliet@capulet.example".to_owned(), JULIET_DEV)]
    );
    assert_eq!(
        net.get(JULIET).engine.crypto().encrypt_log,
        vec![("romeo@montague.example".to_owned(), ROMEO_DEV)]
    );
    assert!(net.get(JULIET2).engine.crypto().decrypt_log.is_empty());

    // Hang up: terminate + finish reach Juliet, who ends with success.
    net.user(ROMEO, UserAction::HangUp { sid: SID.into() });
    assert_eq!(
        net.get(JULIET).ended(),
        Some(&CallEnd::PeerTerminated(
            xmpp_parsers::jingle::Reason::Success
        ))
    );
    assert_eq!(net.terminate_reasons(ROMEO), vec!["success"]);
    assert_eq!(net.delivered_to(JULIET, "finish").len(), 1);
    assert_eq!(net.get(ROMEO).engine.call_count(), 0);
    assert_eq!(net.get(JULIET).engine.call_count(), 0);
}

#[test]
fn trusted_but_unverified_call_shows_encrypted() {
    let mut net = three_nodes(Trust::Trusted, Trust::Trusted);
    net.call(ROMEO, "juliet@capulet.example");
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::Encrypted]);
    assert_eq!(net.get(JULIET).shields(), vec![Shield::Encrypted]);
}

#[test]
fn fallback_call_when_callee_has_omemo_off() {
    let mut net = three_nodes(Trust::Verified, Trust::Verified);
    net.node(JULIET).engine.crypto_mut().own_device = None;
    net.call(ROMEO, "juliet@capulet.example");
    // No <device/> in proceed → plain both ways → call works without a shield.
    let proceed = net.delivered_to(ROMEO, "proceed");
    assert_eq!(proceed.len(), 1);
    assert!(
        proceed[0]
            .children()
            .next()
            .unwrap()
            .children()
            .next()
            .is_none()
    );
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::None]);
    assert_eq!(net.get(JULIET).shields(), vec![Shield::None]);
    assert!(net.get(ROMEO).played() && net.get(JULIET).played());
    assert_eq!(net.get(JULIET2).ended(), Some(&CallEnd::AnsweredElsewhere));
    assert!(net.get(ROMEO).engine.crypto().encrypt_log.is_empty());
}

#[test]
fn fallback_call_when_caller_encryption_fails() {
    let mut net = three_nodes(Trust::Verified, Trust::Verified);
    net.node(ROMEO).engine.crypto_mut().fail_encrypt = true;
    net.call(ROMEO, "juliet@capulet.example");
    let initiate = net.delivered_to(JULIET, "jingle");
    let s = String::from(&initiate[0]);
    assert!(s.contains("urn:xmpp:jingle:apps:dtls:0"), "{s}");
    assert!(!s.contains("dlts-srtp-verification"), "{s}");
    assert_eq!(net.get(ROMEO).shields(), vec![Shield::None]);
    assert_eq!(net.get(JULIET).shields(), vec![Shield::None]);
    assert!(net.get(ROMEO).played());
}

#[test]
fn second_device_rejecting_stops_the_first_one_ringing() {
    let mut net = three_nodes(Trust::Verified, Trust::Verified);
    net.node(JULIET).auto_accept = false;
    net.call(ROMEO, "juliet@capulet.example");
    net.user(JULIET2, UserAction::Reject { sid: SID.into() });
    assert_eq!(net.get(ROMEO).ended(), Some(&CallEnd::Declined));
    assert_eq!(net.get(JULIET).ended(), Some(&CallEnd::RejectedElsewhere));
    assert_eq!(net.get(JULIET2).ended(), Some(&CallEnd::LocalReject));
}

#[test]
fn nobody_answers_ring_timeout_on_both_sides() {
    let mut net = three_nodes(Trust::Verified, Trust::Verified);
    net.node(JULIET).auto_accept = false;
    net.call(ROMEO, "juliet@capulet.example");
    assert!(
        net.get(ROMEO)
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerRinging { .. }))
    );
    net.advance(ring_timeout());
    assert_eq!(net.get(ROMEO).ended(), Some(&CallEnd::Timeout));
    assert_eq!(net.get(JULIET).ended(), Some(&CallEnd::Timeout));
    assert_eq!(net.get(JULIET2).ended(), Some(&CallEnd::Timeout));
    for n in [ROMEO, JULIET, JULIET2] {
        assert_eq!(net.get(n).engine.call_count(), 0);
    }
}
