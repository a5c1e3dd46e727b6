//! Interop through the JSON-lines shim protocol: one driver, any pair of peers.
//!
//! * `ours` — this crate's `omemo-shim` binary;
//! * `oldmemo` — `tests/python/oldmemo_peer.py`, built on python-oldmemo (an implementation nobody
//!   here wrote), run with the interpreter named by `SHIELDCALL_PYTHON` (scripts/test sets it up).
//!
//! The oldmemo pairs fail, never skip, when that interpreter is missing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Kind, Peer};
use serde_json::{Value, json};
use shieldcall_omemo::xml::EncryptedElement;

fn plaintext_of(r: &Value) -> Vec<u8> {
    assert_eq!(r["ok"], json!(true), "decrypt failed: {r}");
    B64.decode(r["plaintext_b64"].as_str().unwrap()).unwrap()
}

fn flip_payload_byte(xml: &str) -> String {
    let mut e = EncryptedElement::from_xml(xml).unwrap();
    let p = e.payload.as_mut().expect("payload");
    p[0] ^= 0x01;
    e.to_xml()
}

fn out_of_order(from: &mut Peer, to: &mut Peer, from_jid: &str, to_jid: &str, to_dev: u64) {
    let msgs: Vec<(String, String)> = (0..5)
        .map(|n| {
            let t = format!("{from_jid} out of order {n}");
            let x = from.encrypt(to_jid, to_dev, None, t.as_bytes());
            (t, x)
        })
        .collect();
    for idx in [3usize, 0, 4, 2, 1] {
        assert_eq!(
            plaintext_of(&to.decrypt(from_jid, &msgs[idx].1)),
            msgs[idx].0.as_bytes()
        );
    }
}

fn key_transport(from: &mut Peer, to: &mut Peer, from_jid: &str, to_jid: &str, to_dev: u64) {
    let kt = from.encrypt(to_jid, to_dev, None, b"");
    assert!(EncryptedElement::from_xml(&kt).unwrap().payload.is_none());
    let d = to.decrypt(from_jid, &kt);
    assert_eq!(plaintext_of(&d), b"");
    assert!(d["sender_device_id"].as_u64().is_some());
}

/// The whole scenario of the OMEMO issue's interop requirement, initiator → responder first.
fn conversation(initiator: Kind, responder: Kind) {
    const I: &str = "initiator@localhost";
    const R: &str = "responder@localhost";
    let mut i = Peer::spawn(initiator, "initiator");
    let mut r = Peer::spawn(responder, "responder");
    let i_dev = i.ok(json!({"op":"init","jid": I}))["device_id"]
        .as_u64()
        .unwrap();
    let r_dev = r.ok(json!({"op":"init","jid": R, "device_id": 424242}))["device_id"]
        .as_u64()
        .unwrap();
    assert_eq!(r_dev, 424242);
    let i_id = i.ok(json!({"op":"identity"}));
    let r_id = r.ok(json!({"op":"identity"}));
    let i_identity = i_id["identity_hex"].as_str().unwrap().to_owned();
    let r_identity = r_id["identity_hex"].as_str().unwrap().to_owned();
    assert_eq!(i_identity.len(), 66);
    assert!(i_identity.starts_with("05"));
    assert_eq!(
        r_id["uri"].as_str().unwrap(),
        format!("xmpp:{R}?omemo-sid-{r_dev}={}", &r_identity[2..])
    );
    let bundle = r.ok(json!({"op":"bundle"}))["bundle_xml"]
        .as_str()
        .unwrap()
        .to_owned();

    // First message: a PreKeySignalMessage built from the responder's bundle.
    let first = i.encrypt(R, r_dev, Some(&bundle), b"hello from the initiator");
    let parsed = EncryptedElement::from_xml(&first).unwrap();
    assert_eq!(parsed.sid as u64, i_dev);
    assert_eq!(parsed.keys.len(), 1);
    assert!(
        parsed.keys[0].prekey,
        "first message must carry prekey='true'"
    );
    assert_eq!(parsed.iv.len(), 12);
    let d = r.decrypt(I, &first);
    assert_eq!(plaintext_of(&d), b"hello from the initiator");
    assert_eq!(d["sender_device_id"].as_u64(), Some(i_dev));
    assert_eq!(d["sender_identity_hex"].as_str(), Some(i_identity.as_str()));

    // Reply: a plain SignalMessage.
    let reply = r.encrypt(I, i_dev, None, b"hello back");
    assert!(!EncryptedElement::from_xml(&reply).unwrap().keys[0].prekey);
    let d = i.decrypt(R, &reply);
    assert_eq!(plaintext_of(&d), b"hello back");
    assert_eq!(d["sender_identity_hex"].as_str(), Some(r_identity.as_str()));

    // 20 each way, interleaved.
    for n in 0..20 {
        let a = format!("i→r {n}");
        let x = i.encrypt(R, r_dev, None, a.as_bytes());
        assert_eq!(plaintext_of(&r.decrypt(I, &x)), a.as_bytes());
        let b = format!("r→i {n}");
        let y = r.encrypt(I, i_dev, None, b.as_bytes());
        assert_eq!(plaintext_of(&i.decrypt(R, &y)), b.as_bytes());
    }

    // Five delivered out of order, in both directions.
    out_of_order(&mut i, &mut r, I, R, r_dev);
    out_of_order(&mut r, &mut i, R, I, i_dev);

    // A duplicate fails the second time; a flipped payload byte fails; the intact one still works.
    let x = i.encrypt(R, r_dev, None, b"once");
    assert_eq!(plaintext_of(&r.decrypt(I, &x)), b"once");
    let again = r.decrypt(I, &x);
    assert_eq!(again["ok"], json!(false), "duplicate accepted: {again}");
    let y = i.encrypt(R, r_dev, None, b"tamper me");
    let bad = r.decrypt(I, &flip_payload_byte(&y));
    assert_eq!(bad["ok"], json!(false), "flipped payload accepted: {bad}");
    assert_eq!(plaintext_of(&r.decrypt(I, &y)), b"tamper me");
    let z = r.encrypt(I, i_dev, None, b"tamper me too");
    assert_eq!(i.decrypt(R, &flip_payload_byte(&z))["ok"], json!(false));

    // Empty key-transport messages both ways.
    key_transport(&mut i, &mut r, I, R, r_dev);
    key_transport(&mut r, &mut i, R, I, i_dev);

    // Still healthy afterwards.
    let x = i.encrypt(R, r_dev, None, b"last");
    assert_eq!(plaintext_of(&r.decrypt(I, &x)), b"last");
    let y = r.encrypt(I, i_dev, None, b"last back");
    assert_eq!(plaintext_of(&i.decrypt(R, &y)), b"last back");
}

#[test]
fn ours_with_ours() {
    conversation(Kind::Ours, Kind::Ours);
}

#[test]
fn ours_to_oldmemo() {
    conversation(Kind::Ours, Kind::Oldmemo);
}

#[test]
fn oldmemo_to_ours() {
    conversation(Kind::Oldmemo, Kind::Ours);
}

/// A bundle whose signature was made by oldmemo often has the sign bit set in its last byte;
/// build sessions from several fresh oldmemo identities so both cases occur.
#[test]
fn oldmemo_bundles_always_verify() {
    let mut ours = Peer::spawn(Kind::Ours, "ours");
    ours.ok(json!({"op":"init","jid":"a@localhost"}));
    let mut old = Peer::spawn(Kind::Oldmemo, "old");
    let mut seen_sign_bit = [false, false];
    for n in 0..12 {
        let dev = old.ok(json!({"op":"init","jid":"b@localhost"}))["device_id"]
            .as_u64()
            .unwrap();
        let bundle = old.ok(json!({"op":"bundle"}))["bundle_xml"]
            .as_str()
            .unwrap()
            .to_owned();
        let b = shieldcall_omemo::xml::Bundle::from_xml(&bundle).unwrap();
        seen_sign_bit[usize::from(b.signature[63] >> 7)] = true;
        let x = ours.encrypt(
            "b@localhost",
            dev,
            Some(&bundle),
            format!("n{n}").as_bytes(),
        );
        assert_eq!(
            plaintext_of(&old.decrypt("a@localhost", &x)),
            format!("n{n}").as_bytes()
        );
    }
    assert!(
        seen_sign_bit[1],
        "no oldmemo signature with the sign bit set in 12 identities"
    );
}

/// Malformed requests and inputs get an error reply and the shim keeps running.
#[test]
fn shim_survives_bad_input() {
    let mut p = Peer::spawn(Kind::Ours, "ours");
    assert_eq!(p.call(json!({"op":"bundle"}))["ok"], json!(false));
    p.ok(json!({"op":"init","jid":"a@localhost"}));
    for bad in [
        json!({"op":"nonsense"}),
        json!({"op":"decrypt","from_jid":"b@localhost","encrypted_xml":"<encrypted"}),
        json!({"op":"decrypt","from_jid":"b@localhost","encrypted_xml":"<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='5'><iv>AAAAAAAAAAAAAAAA</iv></header></encrypted>"}),
        json!({"op":"encrypt","recipients":[{"jid":"b@localhost","device_id":7}],"plaintext_b64":"aGk="}),
        json!({"op":"encrypt","recipients":[{"jid":"b@localhost","device_id":7,"bundle_xml":"<bundle/>"}],"plaintext_b64":"aGk="}),
    ] {
        let r = p.call(bad.clone());
        assert_eq!(r["ok"], json!(false), "{bad} → {r}");
        assert!(!r["error"].as_str().unwrap().is_empty());
    }
    p.ok(json!({"op":"identity"}));
}
