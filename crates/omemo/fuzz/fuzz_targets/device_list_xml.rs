//! A peer's device `<list/>` (PEP): both readers and a write/read round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shieldcall_omemo::xml::{self, DeviceList};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let via_text = DeviceList::from_xml(text);
    if let Ok(l) = &via_text {
        assert!(l.devices.len() <= shieldcall_omemo::xml::MAX_DEVICES);
        let written = xml::to_string(&l.to_element());
        assert_eq!(DeviceList::from_xml(&written).as_ref(), Ok(l));
    }
    if let Ok(el) = xml::parse_element(text) {
        if let Ok(dom) = DeviceList::from_element(&el) {
            assert_eq!(via_text.as_ref().ok(), Some(&dom), "readers disagree");
        }
    }
});
