//! A peer's `<bundle/>` (PEP): both readers, the signature check over whatever keys it holds,
//! and a write/read round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shieldcall_omemo::account::verify_bundle;
use shieldcall_omemo::xml::{self, Bundle};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let via_text = Bundle::from_xml(text);
    if let Ok(b) = &via_text {
        let _ = verify_bundle(b);
        assert_eq!(Bundle::from_xml(&b.to_xml()).as_ref(), Ok(b));
        assert_eq!(Bundle::from_element(&b.to_element()).as_ref(), Ok(b));
    }
    if let Ok(el) = xml::parse_element(text) {
        if let Ok(dom) = Bundle::from_element(&el) {
            assert_eq!(via_text.as_ref().ok(), Some(&dom), "readers disagree");
        }
    }
});
