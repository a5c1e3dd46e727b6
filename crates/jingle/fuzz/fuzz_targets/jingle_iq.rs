//! A peer's `<jingle/>` (session-initiate, session-accept, transport-info, content-add, …):
//! `JingleEnvelope::parse` on the element or on the `<jingle/>` child of an `<iq/>`, with the
//! caps it promises, and a write/read round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minidom::Element;
use shieldcall_jingle::jingle::{JingleEnvelope, MAX_CONTENTS};
use shieldcall_jingle::transport::MAX_CANDIDATES_PER_CONTENT;

fn check(el: &Element) {
    if let Ok(j) = JingleEnvelope::parse(el) {
        assert!(!j.sid.is_empty());
        assert!(j.contents.len() <= MAX_CONTENTS);
        for c in &j.contents {
            if let Some(t) = &c.transport {
                assert!(t.candidates.len() <= MAX_CANDIDATES_PER_CONTENT);
            }
        }
        assert_eq!(JingleEnvelope::parse(&j.to_element()), Ok(j));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(el) = text.parse::<Element>() else {
        return;
    };
    check(&el);
    for child in el.children() {
        check(child);
    }
});
