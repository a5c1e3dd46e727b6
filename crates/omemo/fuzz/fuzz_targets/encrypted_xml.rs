//! `<encrypted/>` from a peer: the text reader (quick-xml, `EncryptedElement::from_xml`) and the
//! stream-parser path (minidom, `parse_element` + `from_element`). Never panics; whatever the
//! stream parser accepts, the text reader reads to the same value (the crate's documented
//! property, crates/omemo/src/xml.rs); what was read writes back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shieldcall_omemo::xml::{self, EncryptedElement};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let via_text = EncryptedElement::from_xml(text);
    if let Ok(e) = &via_text {
        assert_eq!(EncryptedElement::from_xml(&e.to_xml()).as_ref(), Ok(e));
        assert_eq!(
            EncryptedElement::from_element(&e.to_element()).as_ref(),
            Ok(e)
        );
    }
    if let Ok(el) = xml::parse_element(text) {
        if let Ok(dom) = EncryptedElement::from_element(&el) {
            assert_eq!(via_text.as_ref().ok(), Some(&dom), "readers disagree");
        }
    }
});
