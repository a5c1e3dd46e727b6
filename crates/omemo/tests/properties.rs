//! Property tests: the two XML readers agree, parsers never panic on arbitrary input, and the
//! ratchet delivers every message exactly once under any delivery order, loss and duplication.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use shieldcall_omemo::fingerprint::VerificationUri;
use shieldcall_omemo::wire::{PreKeySignalMessage, SignalMessage};
use shieldcall_omemo::xml::{
    Bundle, DeviceList, EncryptedElement, KeyElement, parse_element, parse_text,
};
use shieldcall_omemo::{Account, MemoryStore, Recipient};

fn encrypted() -> impl Strategy<Value = EncryptedElement> {
    (
        1u32..,
        prop::collection::vec(
            (
                1u32..,
                any::<bool>(),
                prop::collection::vec(any::<u8>(), 0..200),
            ),
            0..5,
        ),
        prop::collection::vec(any::<u8>(), 0..20),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
    )
        .prop_map(|(sid, keys, iv, payload)| EncryptedElement {
            sid,
            keys: keys
                .into_iter()
                .map(|(rid, prekey, data)| KeyElement { rid, prekey, data })
                .collect(),
            iv,
            payload,
        })
}

/// The text reader (quick-xml, used by the shim) is at least as lenient as the DOM reader
/// (minidom, what the client sees) on well-formed XML: whatever `parse_element` accepts, the
/// text reader accepts with the same value. (`parse_element` refuses what the text reader finds
/// not well-formed, e.g. duplicated attributes, which minidom alone would merge.) On malformed
/// XML the text reader may accept more; that never reaches the client.
fn agree(xml: &str) {
    let via_dom = parse_element(xml).and_then(|e| EncryptedElement::from_element(&e));
    if let Ok(dom) = via_dom {
        let via_text = parse_text(xml).and_then(|n| EncryptedElement::from_element(&n));
        assert_eq!(
            via_text.as_ref().ok(),
            Some(&dom),
            "text reader differs on well-formed {xml:?}"
        );
    }
    if let Ok(dom) = parse_element(xml).and_then(|e| Bundle::from_element(&e)) {
        assert_eq!(
            parse_text(xml).and_then(|n| Bundle::from_element(&n)).ok(),
            Some(dom),
            "bundle: {xml:?}"
        );
    }
    if let Ok(dom) = parse_element(xml).and_then(|e| DeviceList::from_element(&e)) {
        assert_eq!(
            parse_text(xml)
                .and_then(|n| DeviceList::from_element(&n))
                .ok(),
            Some(dom),
            "list: {xml:?}"
        );
    }
}

#[test]
fn a_duplicated_attribute_is_not_well_formed_for_either_reader() {
    // Found by the device_list_xml fuzz target: minidom kept the last `id`, the text reader
    // refused the document; now both refuse it.
    let xml = "<list xmlns='eu.siacs.conversations.axolotl'><device id='1942903232'/>\
               <device id='129646]81' id='1942903232'/></list>";
    assert!(parse_element(xml).is_err());
    assert!(DeviceList::from_xml(xml).is_err());
    agree(xml);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn encrypted_round_trips_through_both_writers_and_readers(e in encrypted()) {
        let text = e.to_xml();
        prop_assert_eq!(&EncryptedElement::from_xml(&text).unwrap(), &e);
        prop_assert_eq!(&EncryptedElement::from_element(&parse_element(&text).unwrap()).unwrap(), &e);
        let dom_text = shieldcall_omemo::xml::to_string(&e.to_element());
        prop_assert_eq!(&EncryptedElement::from_xml(&dom_text).unwrap(), &e);
    }

    #[test]
    fn readers_agree_on_mutated_xml(e in encrypted(), cut in 0usize..400, insert in "[<>/='\"a-z&;#0-9 ]{0,6}") {
        let text = e.to_xml();
        let cut = cut.min(text.len());
        if text.is_char_boundary(cut) {
            let mut m = text.clone();
            m.insert_str(cut, &insert);
            agree(&m);
            agree(&text[..cut]);
        }
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = SignalMessage::parse(&bytes);
        let _ = PreKeySignalMessage::parse(&bytes);
        let s = String::from_utf8_lossy(&bytes);
        let _ = EncryptedElement::from_xml(&s);
        let _ = Bundle::from_xml(&s);
        let _ = DeviceList::from_xml(&s);
        let _ = VerificationUri::parse(&s);
    }

    #[test]
    fn parsers_never_panic_on_near_valid_signal_messages(flip in 0usize..200, byte in any::<u8>()) {
        let mut a = Account::create(MemoryStore::new(), "a@x", None, 0).unwrap();
        let b = Account::create(MemoryStore::new(), "b@x", None, 0).unwrap();
        a.build_session("b@x", b.device_id(), &b.bundle().unwrap()).unwrap();
        let e = a.encrypt(&[Recipient::new("b@x", b.device_id())], b"x").unwrap();
        let mut data = e.keys[0].data.clone();
        let i = flip % data.len();
        data[i] = byte;
        let _ = PreKeySignalMessage::parse(&data);
        let _ = SignalMessage::parse(&data);
    }
}

/// Delivery script: each message is delivered, dropped or delivered twice, in a shuffled order.
fn delivery() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    (prop::collection::vec(0u8..4, 1..40), any::<u64>()).prop_map(|(fates, seed)| {
        let mut order: Vec<usize> = (0..fates.len()).collect();
        // Deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        (fates, order)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Messages from both sides, interleaved in rounds, each round delivered in random order with
    /// random loss and duplication: every delivered message decrypts exactly once, to its text.
    #[test]
    fn ratchet_delivers_each_message_once((fates, order) in delivery(), rounds in 1usize..4) {
        let mut a = Account::create(MemoryStore::new(), "a@x", None, 0).unwrap();
        let mut b = Account::create(MemoryStore::new(), "b@x", None, 0).unwrap();
        a.build_session("b@x", b.device_id(), &b.bundle().unwrap()).unwrap();
        let first = a.encrypt(&[Recipient::new("b@x", b.device_id())], b"start").unwrap();
        b.decrypt("a@x", &first).unwrap();
        for round in 0..rounds {
            let (from, to, from_jid, to_jid) =
                if round % 2 == 0 { (&mut b, &mut a, "b@x", "a@x") } else { (&mut a, &mut b, "a@x", "b@x") };
            let to_dev = to.device_id();
            let msgs: Vec<_> = (0..fates.len())
                .map(|i| from.encrypt(&[Recipient::new(to_jid, to_dev)], format!("{round}/{i}").as_bytes()).unwrap())
                .collect();
            for &i in &order {
                let fate = fates[i];
                if fate == 0 {
                    continue; // lost
                }
                let got = to.decrypt(from_jid, &msgs[i]).unwrap();
                prop_assert_eq!(got.plaintext.unwrap(), format!("{round}/{i}").into_bytes());
                if fate == 3 {
                    prop_assert!(to.decrypt(from_jid, &msgs[i]).is_err(), "duplicate accepted");
                }
            }
        }
    }
}
