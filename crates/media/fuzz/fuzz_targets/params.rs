//! The Jingle-shaped parameters a peer sends (format: `common/lines.rs`), through the media
//! crate's own parsers and negotiation: `Fingerprint::parse` (hash, hex text), `Setup::parse`,
//! `CandidateType::parse`, `RtpDescription::negotiate_opus` / `answer_to`,
//! `OpusSettings::from_remote`, `dtls_active` / `local_setup`. Asserted: no panic; a parsed
//! fingerprint prints and re-parses to itself; an answer only ever carries Opus.
#![no_main]

#[path = "common/lines.rs"]
mod lines;

use libfuzzer_sys::fuzz_target;
use shieldcall_media::params::{OpusSettings, dtls_active, local_setup};
use shieldcall_media::{Fingerprint, JingleRole, RtpDescription, Setup};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let l = lines::parse(text);
    if let Some((hash, value)) = &l.fingerprint {
        if let Ok(f) = Fingerprint::parse(hash, value) {
            assert_eq!(Fingerprint::parse("sha-256", &f.to_jingle_value()), Ok(f));
            assert_eq!(Fingerprint::from_bytes(f.as_bytes()), Ok(f));
        }
    }
    // Also the whole input as one fingerprint value (the decrypted plaintext of the draft).
    let _ = Fingerprint::parse("sha-256", text);
    let setup = l.setup.as_deref().map(Setup::parse);
    if let Some(Ok(s)) = setup {
        assert_eq!(Setup::parse(s.as_str()), Ok(s));
        for role in [JingleRole::Initiator, JingleRole::Responder] {
            if let Ok(active) = dtls_active(role, s) {
                // Our answer's setup is consistent with the DTLS role we take.
                let ours = local_setup(role, Some(s));
                if role == JingleRole::Responder {
                    assert_eq!(active, ours == Setup::Active);
                }
            }
        }
    }
    for (t, r) in &l.types {
        if let Ok(k) = r {
            assert_eq!(k.as_str(), t);
        }
    }
    let d = &l.description;
    let _ = d.negotiate_opus();
    if let Ok(s) = OpusSettings::from_remote(d) {
        assert!(d.payload_types.iter().any(|p| p.id == s.payload_type));
    }
    if let Ok(answer) = RtpDescription::answer_to(d, 1, "fuzz") {
        assert_eq!(answer.payload_types.len(), 1);
        assert!(answer.payload_types[0].name == "opus");
        assert!(answer.rtcp_mux);
        assert!(answer.hdrexts.iter().all(|h| d.hdrexts.contains(h)));
    }
});
