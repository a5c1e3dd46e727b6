//! Parsing: every type reads what the clients send, writes the shapes they expect, and rejects
//! each malformed input with its exact error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use shieldcall_jingle::fingerprint::{
    self, EncryptedFingerprint, FingerprintError, parse_hex, parse_plain,
};
use shieldcall_jingle::jingle::{JingleEnvelope, JingleError, MAX_CONTENTS};
use shieldcall_jingle::jmi::{DeviceClaim, JingleMessage, JmiError, Proceed};
use shieldcall_jingle::transport::{
    IceUdpTransport, MAX_CANDIDATES_PER_CONTENT, TransportError, TransportFingerprint,
};
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::jingle::{Action, Reason};
use xmpp_parsers::jingle_dtls_srtp::Setup;

const JMI: &str = "urn:xmpp:jingle-message:0";
const ICE: &str = "urn:xmpp:jingle:transports:ice-udp:1";

fn jmi(s: &str) -> Result<JingleMessage, JmiError> {
    JingleMessage::parse(&xml(s))
}

fn fixture(name: &str) -> minidom::Element {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    xml(std::fs::read_to_string(path).unwrap().trim())
}

// ---------------------------------------------------------------------------------------------
// JMI

#[test]
fn propose_with_audio_and_video() {
    let JingleMessage::Propose(p) = jmi(&format!(
        "<propose xmlns='{JMI}' id='s1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='video'/></propose>"
    ))
    .unwrap() else {
        panic!()
    };
    assert_eq!(p.id, "s1");
    let media: Vec<&str> = p.descriptions.iter().map(|d| d.media.as_str()).collect();
    assert_eq!(media, ["audio", "video"]);
}

#[test]
fn propose_of_another_application_has_no_rtp_description() {
    let JingleMessage::Propose(p) = jmi(&format!(
        "<propose xmlns='{JMI}' id='s1'><description xmlns='urn:xmpp:jingle:apps:file-transfer:5'/></propose>"
    ))
    .unwrap() else {
        panic!()
    };
    assert!(p.descriptions.is_empty());
}

#[test]
fn proceed_device_claims_are_read_leniently() {
    let cases = [
        (
            format!("<device xmlns='{DRAFT}' id='1284733451'/>"),
            DeviceClaim::Valid(1284733451),
        ),
        // Any namespace, like Conversations (docs/protocol.md §2.2).
        ("<device id='42'/>".to_owned(), DeviceClaim::Valid(42)),
        (
            "<device xmlns='urn:example' id='42'/>".to_owned(),
            DeviceClaim::Valid(42),
        ),
        (format!("<device xmlns='{DRAFT}'/>"), DeviceClaim::Invalid),
        (
            format!("<device xmlns='{DRAFT}' id='abc'/>"),
            DeviceClaim::Invalid,
        ),
        (
            format!("<device xmlns='{DRAFT}' id='-5'/>"),
            DeviceClaim::Invalid,
        ),
        (
            format!("<device xmlns='{DRAFT}' id='+5'/>"),
            DeviceClaim::Invalid,
        ),
        (
            format!("<device xmlns='{DRAFT}' id=' 5'/>"),
            DeviceClaim::Invalid,
        ),
        (
            format!("<device xmlns='{DRAFT}' id='0'/>"),
            DeviceClaim::Invalid,
        ),
        (
            format!("<device xmlns='{DRAFT}' id='2147483647'/>"),
            DeviceClaim::Valid(2147483647),
        ),
        (
            format!("<device xmlns='{DRAFT}' id='2147483648'/>"),
            DeviceClaim::Invalid,
        ),
        (
            format!("<device xmlns='{DRAFT}' id='99999999999999999999'/>"),
            DeviceClaim::Invalid,
        ),
        (String::new(), DeviceClaim::Absent),
    ];
    for (child, claim) in cases {
        let JingleMessage::Proceed(p) =
            jmi(&format!("<proceed xmlns='{JMI}' id='s1'>{child}</proceed>")).unwrap()
        else {
            panic!()
        };
        assert_eq!(p.device(), claim, "{child}");
    }
}

#[test]
fn proceed_is_written_with_namespaced_device_inside() {
    let el: minidom::Element = JingleMessage::Proceed(Proceed::new("s1", Some(7))).to_element();
    assert!(el.is("proceed", JMI));
    assert_eq!(el.attr("id"), Some("s1"));
    let children: Vec<_> = el.children().collect();
    assert_eq!(children.len(), 1);
    assert!(children[0].is("device", DRAFT));
    assert_eq!(children[0].attr("id"), Some("7"));
    // OMEMO off: no <device/>.
    let el = JingleMessage::Proceed(Proceed::new("s1", None)).to_element();
    assert_eq!(el.children().count(), 0);
}

#[test]
fn reject_retract_finish_keep_their_reasons() {
    for name in ["reject", "retract", "finish"] {
        let m = jmi(&format!(
            "<{name} xmlns='{JMI}' id='s1'><reason xmlns='urn:xmpp:jingle:1'><busy/></reason></{name}>"
        ))
        .unwrap();
        let reason = match &m {
            JingleMessage::Reject(r) => r.reason.clone(),
            JingleMessage::Retract(r) => r.reason.clone(),
            JingleMessage::Finish(r) => r.reason.clone(),
            _ => panic!(),
        };
        assert_eq!(reason.unwrap().reason, Reason::Busy, "{name}");
        assert_eq!(m.name(), name);
        assert_eq!(JingleMessage::parse(&m.to_element()).unwrap(), m);
    }
}

#[test]
fn ringing_and_accept_round_trip() {
    for name in ["ringing", "accept"] {
        let m = jmi(&format!("<{name} xmlns='{JMI}' id='abc'/>")).unwrap();
        assert_eq!(m.id(), "abc");
        assert_eq!(JingleMessage::parse(&m.to_element()).unwrap(), m);
    }
}

#[test]
fn jmi_errors_are_precise() {
    assert_eq!(
        jmi(&format!("<hangup xmlns='{JMI}' id='s1'/>")),
        Err(JmiError::UnknownElement("hangup".into()))
    );
    assert_eq!(
        jmi(&format!("<proceed xmlns='{JMI}' id=''/>")),
        Err(JmiError::EmptyId("proceed"))
    );
    assert_eq!(
        jmi("<proceed xmlns='urn:xmpp:jingle-message:1' id='s'/>"),
        Err(JmiError::UnknownElement("proceed".into()))
    );
    assert_eq!(
        jmi(&format!("<proceed xmlns='{JMI}'/>")),
        Err(JmiError::Invalid {
            element: "proceed",
            message: "Required attribute field 'id' on Proceed element missing.".into()
        })
    );
    assert_eq!(
        jmi(&format!(
            "<propose xmlns='{JMI}' id='s'><description xmlns='urn:xmpp:jingle:apps:rtp:1'/></propose>"
        )),
        Err(JmiError::Invalid {
            element: "propose",
            message: "Required attribute field 'media' on Description element missing.".into()
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Fingerprints

const HEX32: &str = "3A:9F:0C:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:C1";

#[test]
fn plain_fingerprint_by_value_case_insensitive() {
    let upper = parse_plain(&xml(&format!(
        "<fingerprint xmlns='{DTLS}' hash='sha-256' setup='actpass'>{HEX32}</fingerprint>"
    )))
    .unwrap();
    let lower = parse_plain(&xml(&format!(
        "<fingerprint xmlns='{DTLS}' hash='sha-256' setup='actpass'>{}</fingerprint>",
        HEX32.to_lowercase()
    )))
    .unwrap();
    assert_eq!(upper, lower);
    assert_eq!(upper.value.len(), 32);
    assert_eq!(upper.setup, Setup::Actpass);
    assert_eq!(fingerprint::to_hex(&upper.value), HEX32);
}

#[test]
fn plain_fingerprint_errors_are_precise() {
    let f = |attrs: &str, text: &str| {
        parse_plain(&xml(&format!(
            "<fingerprint xmlns='{DTLS}' {attrs}>{text}</fingerprint>"
        )))
    };
    assert_eq!(
        f("setup='actpass'", HEX32),
        Err(FingerprintError::MissingHash)
    );
    assert_eq!(
        f("hash='sha-256'", HEX32),
        Err(FingerprintError::MissingSetup)
    );
    assert_eq!(
        f("hash='sha-256' setup='holdconn'", HEX32),
        Err(FingerprintError::InvalidSetup("holdconn".into()))
    );
    assert_eq!(
        f("hash='sha-256' setup='active'", "AB:CD"),
        Err(FingerprintError::WrongLength(2))
    );
    assert_eq!(
        f("hash='sha-256' setup='active'", "AB:XY"),
        Err(FingerprintError::InvalidHex { len: 5 })
    );
    assert_eq!(
        f("hash='sha-256' setup='active'", "ABC:D"),
        Err(FingerprintError::InvalidHex { len: 5 })
    );
    assert_eq!(
        f("hash='sha-256' setup='active'", ""),
        Err(FingerprintError::InvalidHex { len: 0 })
    );
    assert_eq!(
        parse_hex("AB::CD", &Algo::Sha_1),
        Err(FingerprintError::InvalidHex { len: 6 })
    );
    // Other hashes are readable (the verification layer refuses them).
    assert_eq!(
        f("hash='sha-1' setup='active'", "AB:CD").unwrap().hash,
        Algo::Sha_1
    );
}

fn enc(inner: &str) -> String {
    format!(
        "<encrypted xmlns='{AXOLOTL}'><header sid='948227715'><key rid='1284733451' prekey='true'>MwgB</key><iv>q1Zr9Lk2aV0pXe7c</iv></header><payload>U3dW</payload></encrypted>{inner}"
    )
}

#[test]
fn encrypted_fingerprint_reads_the_draft_element() {
    let e = EncryptedFingerprint::parse(&xml(&format!(
        "<fingerprint xmlns='{DRAFT}' hash='sha-256' setup='actpass'>{}</fingerprint>",
        enc("")
    )))
    .unwrap();
    assert_eq!(e.hash, Algo::Sha_256);
    assert_eq!(e.setup, Setup::Actpass);
    assert_eq!(e.header_sid(), Ok(948227715));
    assert!(e.encrypted.is("encrypted", AXOLOTL));
    // Written back with the typo namespace and the same attributes.
    let back = e.to_element();
    assert!(back.is("fingerprint", DRAFT));
    assert_eq!(EncryptedFingerprint::parse(&back).unwrap(), e);
}

#[test]
fn encrypted_fingerprint_errors_are_precise() {
    let f = |body: &str| {
        EncryptedFingerprint::parse(&xml(&format!(
            "<fingerprint xmlns='{DRAFT}' hash='sha-256' setup='actpass'>{body}</fingerprint>"
        )))
    };
    assert_eq!(f(""), Err(FingerprintError::MissingEncrypted));
    assert_eq!(
        f(&format!("AB:CD{}", enc(""))),
        Err(FingerprintError::TextInEncrypted)
    );
    assert_eq!(f(&enc(&enc(""))), Err(FingerprintError::SeveralEncrypted));
    assert_eq!(
        f(&enc("<x xmlns='urn:example'/>")),
        Err(FingerprintError::UnexpectedChild("x".into()))
    );
    let no_sid = EncryptedFingerprint::parse(&xml(&format!(
        "<fingerprint xmlns='{DRAFT}' hash='sha-256' setup='actpass'><encrypted xmlns='{AXOLOTL}'><header sid='x'/></encrypted></fingerprint>"
    )))
    .unwrap();
    assert_eq!(no_sid.header_sid(), Err(FingerprintError::MissingHeaderSid));
}

// ---------------------------------------------------------------------------------------------
// Transport

fn dino_transport(file: &str) -> minidom::Element {
    let iq = fixture(file);
    let jingle = iq.get_child("jingle", "urn:xmpp:jingle:1").unwrap();
    let content = jingle.children().next().unwrap();
    content.get_child("transport", ICE).unwrap().clone()
}

#[test]
fn dino_transport_with_candidates_inside() {
    let t = IceUdpTransport::parse(&dino_transport(
        "dino-0.4.2/caller-05-out-session-initiate.xml",
    ))
    .unwrap();
    assert_eq!(t.ufrag.as_deref(), Some("ngHQ"));
    assert_eq!(t.pwd.as_deref(), Some("7VWmh2Euosn+aj6/BNJlyb"));
    assert_eq!(t.candidates.len(), 4);
    assert_eq!(t.candidates[1].ip.to_string(), "fd00::2");
    assert_eq!(t.candidates[2].component, 2);
    let [TransportFingerprint::Encrypted(e)] = t.fingerprints.as_slice() else {
        panic!("{:?}", t.fingerprints)
    };
    assert_eq!(e.header_sid(), Ok(1942903233));
    assert_eq!(e.setup, Setup::Actpass);
    // <iv> before <key>: kept as Dino wrote it.
    let header = e.encrypted.get_child("header", AXOLOTL).unwrap();
    let order: Vec<&str> = header.children().map(|c| c.name()).collect();
    assert_eq!(order, ["iv", "key"]);
}

#[test]
fn transport_keeps_unknown_children_and_drops_fingerprints_for_transport_info() {
    let t = IceUdpTransport::parse(&xml(&format!(
        "<transport xmlns='{ICE}' ufrag='a' pwd='b'><ice-options xmlns='http://gultsch.de/xmpp/drafts/jingle/transports/ice-udp/option' trickle='true'/>{}</transport>",
        String::from(&plain_fp("actpass", 1))
    )))
    .unwrap();
    assert_eq!(t.other.len(), 1);
    let back = IceUdpTransport::parse(&t.to_element()).unwrap();
    assert_eq!(back, t);
    let info = t.without_fingerprints();
    assert!(info.fingerprints.is_empty());
    assert_eq!(info.other.len(), 1);
    assert!(!String::from(&info.to_element()).contains("fingerprint"));
}

#[test]
fn transport_errors_are_precise() {
    assert_eq!(
        IceUdpTransport::parse(&xml(
            "<transport xmlns='urn:xmpp:jingle:transports:s5b:1'/>"
        )),
        Err(TransportError::NotIceUdp)
    );
    assert_eq!(
        IceUdpTransport::parse(&xml(&format!(
            "<transport xmlns='{ICE}'><candidate component='1' foundation='1' generation='0' id='x' ip='nope' port='1' priority='1' protocol='udp' type='host'/></transport>"
        ))),
        Err(TransportError::InvalidCandidate(
            "text parse error: invalid IP address syntax".into()
        ))
    );
    let many: String = (0..=MAX_CANDIDATES_PER_CONTENT)
        .map(|i| {
            format!(
                "<candidate component='1' foundation='1' generation='0' id='c{i}' ip='192.0.2.1' port='{}' priority='1' protocol='udp' type='host'/>",
                1000 + i
            )
        })
        .collect();
    assert_eq!(
        IceUdpTransport::parse(&xml(&format!(
            "<transport xmlns='{ICE}'>{many}</transport>"
        ))),
        Err(TransportError::TooManyCandidates)
    );
    assert_eq!(
        IceUdpTransport::parse(&xml(&format!(
            "<transport xmlns='{ICE}'><fingerprint xmlns='{DRAFT}' hash='sha-256' setup='actpass'/></transport>"
        ))),
        Err(TransportError::Fingerprint(
            FingerprintError::MissingEncrypted
        ))
    );
}

// ---------------------------------------------------------------------------------------------
// Jingle envelope

#[test]
fn dino_session_initiate_reads_and_drops_sdes() {
    let iq = fixture("dino-0.4.2/callee-09-in-session-initiate.xml");
    let j = JingleEnvelope::parse(iq.get_child("jingle", "urn:xmpp:jingle:1").unwrap()).unwrap();
    assert_eq!(j.action, Action::SessionInitiate);
    assert_eq!(j.sid, "f1589d11-760d-430e-bcd6-cd8a65a926ce");
    assert_eq!(j.initiator.as_deref(), Some("carol@localhost/dinoB"));
    assert_eq!(j.contents.len(), 1);
    let c = &j.contents[0];
    assert_eq!(c.name, "audio");
    let d = c.description.as_ref().unwrap();
    assert_eq!(d.payload_types.len(), 6);
    assert!(d.rtcp_mux);
    // SDES <encryption><crypto/></encryption> is never kept, so it can never be echoed or used.
    let written = String::from(&j.to_element());
    assert!(!written.contains("crypto"), "{written}");
    assert!(!written.contains("inline:"), "{written}");
    assert!(j.group.is_none());
}

#[test]
fn jingle_errors_are_precise() {
    let f = |s: &str| JingleEnvelope::parse(&xml(s));
    assert_eq!(
        f("<jingle xmlns='urn:xmpp:jingle:0' action='session-accept' sid='s'/>"),
        Err(JingleError::NotJingle)
    );
    assert_eq!(
        f("<jingle xmlns='urn:xmpp:jingle:1' action='session-dance' sid='s'/>"),
        Err(JingleError::BadAction)
    );
    assert_eq!(
        f("<jingle xmlns='urn:xmpp:jingle:1' sid='s'/>"),
        Err(JingleError::BadAction)
    );
    assert_eq!(
        f("<jingle xmlns='urn:xmpp:jingle:1' action='session-accept'/>"),
        Err(JingleError::MissingSid)
    );
    assert_eq!(
        f("<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid=''/>"),
        Err(JingleError::MissingSid)
    );
    assert_eq!(
        f(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s'><content creator='initiator'/></jingle>"
        ),
        Err(JingleError::InvalidContent("name"))
    );
    assert_eq!(
        f(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s'><content creator='nobody' name='0'/></jingle>"
        ),
        Err(JingleError::InvalidContent("creator"))
    );
    assert_eq!(
        f(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s'><content name='0' senders='all'/></jingle>"
        ),
        Err(JingleError::InvalidContent("senders"))
    );
    assert_eq!(
        f(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s'><content name='0'><transport xmlns='urn:xmpp:jingle:transports:raw-udp:1'/></content></jingle>"
        ),
        Err(JingleError::UnsupportedTransport(
            "urn:xmpp:jingle:transports:raw-udp:1".into()
        ))
    );
    let many: String = (0..=MAX_CONTENTS)
        .map(|i| format!("<content name='{i}'/>"))
        .collect();
    assert_eq!(
        f(&format!(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s'>{many}</jingle>"
        )),
        Err(JingleError::TooManyContents)
    );
    assert_eq!(
        f(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s'><reason><nonsense/></reason></jingle>"
        ),
        Err(JingleError::InvalidChild("reason"))
    );
}

#[test]
fn conversations_terminate_reason_with_text() {
    let j = JingleEnvelope::parse(&xml(
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s'><reason><security-error/><text>DTLS fingerprint was unexpectedly not verifiable</text></reason></jingle>",
    ))
    .unwrap();
    let r = j.reason.unwrap();
    assert_eq!(r.reason, Reason::SecurityError);
    assert_eq!(
        r.texts.values().next().map(String::as_str),
        Some("DTLS fingerprint was unexpectedly not verifiable")
    );
}
