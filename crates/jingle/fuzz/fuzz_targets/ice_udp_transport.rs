//! A peer's ICE-UDP `<transport/>` (XEP-0176, candidates, fingerprints of either kind, unknown
//! children kept): `IceUdpTransport::parse`, its cap, a write/read round trip, and the
//! fingerprint-free copy that transport-info carries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minidom::Element;
use shieldcall_jingle::transport::{IceUdpTransport, MAX_CANDIDATES_PER_CONTENT};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(el) = text.parse::<Element>() else {
        return;
    };
    if let Ok(t) = IceUdpTransport::parse(&el) {
        assert!(t.candidates.len() <= MAX_CANDIDATES_PER_CONTENT);
        assert_eq!(IceUdpTransport::parse(&t.to_element()).as_ref(), Ok(&t));
        let bare = t.without_fingerprints();
        let reread = IceUdpTransport::parse(&bare.to_element());
        assert!(reread.is_ok_and(|r| r.fingerprints.is_empty()));
    }
});
