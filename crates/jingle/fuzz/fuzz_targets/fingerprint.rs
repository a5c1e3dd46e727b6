//! DTLS fingerprints from a peer: the draft's encrypted `<fingerprint/>`
//! (`EncryptedFingerprint::parse`, `header_sid`), the plain XEP-0320 one (`parse_plain`), and
//! the hex text itself (`parse_hex`, which also reads the *decrypted* plaintext).
//! Input: the first line is fed to `parse_hex`, the whole input is parsed as an element.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minidom::Element;
use shieldcall_jingle::fingerprint::{
    EncryptedFingerprint, SHA256_LEN, parse_hex, parse_plain, to_hex,
};
use xmpp_parsers::hashes::Algo;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = text.lines().next().unwrap_or("");
    for t in [first, text] {
        if let Ok(v) = parse_hex(t, &Algo::Sha_256) {
            assert_eq!(v.len(), SHA256_LEN);
            assert_eq!(parse_hex(&to_hex(&v), &Algo::Sha_256), Ok(v));
        }
        let _ = parse_hex(t, &Algo::Sha_1);
    }
    let Ok(el) = text.parse::<Element>() else {
        return;
    };
    if let Ok(e) = EncryptedFingerprint::parse(&el) {
        let _ = e.header_sid();
        assert_eq!(EncryptedFingerprint::parse(&e.to_element()), Ok(e));
    }
    if let Ok(p) = parse_plain(&el) {
        assert!(p.hash != Algo::Sha_256 || p.value.len() == SHA256_LEN);
        let back = shieldcall_jingle::fingerprint::plain_to_element(&p);
        assert_eq!(parse_plain(&back), Ok(p));
    }
});
