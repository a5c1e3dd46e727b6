//! Signal v3 framing of a `<key/>`'s bytes: `SignalMessage::parse` and
//! `PreKeySignalMessage::parse`; what parses serializes back to something that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shieldcall_omemo::wire::{PreKeySignalMessage, SignalMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = SignalMessage::parse(data) {
        // The wire form is kept verbatim (the MAC covers it).
        assert_eq!(m.serialize(), data);
        assert_eq!(SignalMessage::parse(&m.serialize()).as_ref(), Ok(&m));
    }
    if let Ok(p) = PreKeySignalMessage::parse(data) {
        assert_eq!(PreKeySignalMessage::parse(&p.serialize()).as_ref(), Ok(&p));
    }
});
