//! The draft's `<device/>` inside a peer's `<proceed/>` (read in any namespace, as Conversations
//! does): `Proceed::device` never panics and only yields ids a client can have.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minidom::Element;
use shieldcall_jingle::jmi::{DeviceClaim, JingleMessage, MAX_DEVICE_ID};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(el) = text.parse::<Element>() else {
        return;
    };
    let msg = JingleMessage::parse(&el).or_else(|e| JingleMessage::from_message(&el).unwrap_or(Err(e)));
    if let Ok(JingleMessage::Proceed(p)) = msg {
        match p.device() {
            DeviceClaim::Valid(id) => {
                assert!((1..=MAX_DEVICE_ID).contains(&id));
                // Our own writer's form reads back to the same claim.
                let ours = shieldcall_jingle::jmi::Proceed::new(p.id.clone(), Some(id));
                assert_eq!(ours.device(), DeviceClaim::Valid(id));
            }
            DeviceClaim::Absent | DeviceClaim::Invalid => {}
        }
    }
});
