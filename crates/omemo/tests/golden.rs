//! Golden shapes (docs/security-tests.md line 16): the `<encrypted/>` elements that real Dino 0.4.2
//! clients emitted in a verified call parse, and their Signal messages parse with the framing
//! libsignal-protocol-c produced; what we emit has the shape of docs/protocol.md §2.3 / §3.2.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use minidom::Element;
use shieldcall_omemo::ns::AXOLOTL;
use shieldcall_omemo::wire::{SignalMessage, VERSION_BYTE};
use shieldcall_omemo::xml::{EncryptedElement, parse_element};
use shieldcall_omemo::{Account, MemoryStore, Recipient};

fn find_encrypted(el: &Element) -> Option<&Element> {
    if el.is("encrypted", AXOLOTL) {
        return Some(el);
    }
    el.children().find_map(find_encrypted)
}

fn dino(file: &str) -> EncryptedElement {
    let path = format!(
        "{}/tests/fixtures/dino-0.4.2/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let stanza = parse_element(&std::fs::read_to_string(path).unwrap()).unwrap();
    EncryptedElement::from_element(find_encrypted(&stanza).unwrap()).unwrap()
}

#[test]
fn dino_fingerprint_messages_parse() {
    for (file, sid, rid) in [
        ("caller-05-out-session-initiate.xml", 1942903233, 129646281),
        ("callee-10-out-session-accept.xml", 129646281, 1942903233),
    ] {
        let e = dino(file);
        assert_eq!(e.sid, sid);
        assert_eq!(e.iv.len(), 12, "Dino sends 12-byte IVs");
        assert_eq!(
            e.keys.len(),
            1,
            "exactly one key, for the one target device"
        );
        assert_eq!(e.keys[0].rid, rid);
        assert!(!e.keys[0].prekey, "a session existed: plain SignalMessage");
        // The payload is the 95-character SHA-256 fingerprint text, without its GCM tag.
        assert_eq!(e.payload.as_ref().unwrap().len(), 95);
        let m = SignalMessage::parse(&e.keys[0].data).unwrap();
        assert_eq!(e.keys[0].data[0], VERSION_BYTE);
        // key ‖ tag (32 bytes) in AES-256-CBC with PKCS#7: 48 bytes of ciphertext.
        assert_eq!(m.ciphertext.len(), 48);
        assert_eq!(e.keys[0].data.len(), 98);
    }
}

/// Our `<encrypted/>` has Conversations' shape: header with sid, one key per device (prekey='true'
/// only for PreKeySignalMessages), iv after the keys, payload after the header.
#[test]
fn our_shape_matches_the_clients() {
    let mut a = Account::create(
        MemoryStore::new(),
        "romeo@montague.example",
        Some(948227715),
        0,
    )
    .unwrap();
    let b = Account::create(
        MemoryStore::new(),
        "juliet@capulet.example",
        Some(1284733451),
        0,
    )
    .unwrap();
    a.build_session("juliet@capulet.example", 1284733451, &b.bundle().unwrap())
        .unwrap();
    let fp = "3A:9F:0C:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:C1";
    let e = a
        .encrypt(
            &[Recipient::new("juliet@capulet.example", 1284733451)],
            fp.as_bytes(),
        )
        .unwrap();
    let el = e.to_element();
    assert!(el.is("encrypted", AXOLOTL));
    let kids: Vec<&str> = el.children().map(|c| c.name()).collect();
    assert_eq!(kids, ["header", "payload"]);
    let header = el.get_child("header", AXOLOTL).unwrap();
    assert_eq!(header.attr("sid"), Some("948227715"));
    let hk: Vec<&str> = header.children().map(|c| c.name()).collect();
    assert_eq!(hk, ["key", "iv"]);
    let key = header.get_child("key", AXOLOTL).unwrap();
    assert_eq!(key.attr("rid"), Some("1284733451"));
    assert_eq!(key.attr("prekey"), Some("true"));
    assert_eq!(
        header.get_child("iv", AXOLOTL).unwrap().text().len(),
        16,
        "12 bytes in base64"
    );
    assert_eq!(
        el.get_child("payload", AXOLOTL).unwrap().text().len(),
        128,
        "95 bytes in base64"
    );
    // The text writer and the element writer agree.
    assert_eq!(
        EncryptedElement::from_xml(&e.to_xml()).unwrap(),
        EncryptedElement::from_element(&el).unwrap()
    );
}
