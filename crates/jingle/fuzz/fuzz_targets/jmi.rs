//! XEP-0353 Jingle Message Initiation from a peer: `JingleMessage::from_message` on a whole
//! `<message/>`, and `JingleMessage::parse` on the element itself. What parses writes back to
//! something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minidom::Element;
use shieldcall_jingle::jmi::JingleMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(el) = text.parse::<Element>() else {
        return;
    };
    if let Some(Ok(m)) = JingleMessage::from_message(&el) {
        assert_eq!(JingleMessage::parse(&m.to_element()), Ok(m));
    }
    if let Ok(m) = JingleMessage::parse(&el) {
        assert!(!m.id().is_empty());
        let _ = m.name();
        assert_eq!(JingleMessage::parse(&m.to_element()), Ok(m));
    }
});
