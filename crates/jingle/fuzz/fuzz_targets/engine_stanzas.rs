//! The call `Engine` fed with a sequence of arbitrary stanzas, interleaved with user actions,
//! media events, trust changes and time. The input is split at NUL bytes; a chunk starting with
//! `<` is a stanza, others are commands (see `step`). Engines play Dino's or Conversations'
//! callee or caller so that the golden stanzas drive them deep (seeds are whole captured calls).
//!
//! The OMEMO double encrypts (so offers go out encrypted) but never decrypts, and trusts every
//! identity as VERIFIED: the verified exchange can never complete, so asserted for every input:
//! no panic, no `Shield::Verified` or `Shield::Encrypted` (neither in events nor from
//! `Engine::shield`), never more than `MAX_CALLS` calls.
#![no_main]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use jid::{BareJid, FullJid};
use libfuzzer_sys::fuzz_target;
use minidom::Element;
use shieldcall_jingle::call::MAX_CALLS;
use shieldcall_jingle::{
    Config, CryptoError, Decrypted, Encrypted, Engine, Event, IceCredentials, IdentityKey,
    LocalContent, Media, MediaEvent, OmemoCrypto, Output, Role, Shield, Trust, UserAction,
};
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::jingle::Senders;
use xmpp_parsers::jingle_dtls_srtp::{Fingerprint, Setup};
use xmpp_parsers::jingle_ice_udp::{Candidate, Type as CandidateType};
use xmpp_parsers::jingle_rtp::{Description, PayloadType};

const AXOLOTL: &str = "eu.siacs.conversations.axolotl";

/// Encrypts to anyone, decrypts nothing, trusts everything as VERIFIED.
struct NeverDecrypts {
    device: Option<u32>,
}

impl OmemoCrypto for NeverDecrypts {
    fn own_device_id(&self) -> Option<u32> {
        self.device
    }
    fn encrypt(&mut self, _: &BareJid, rid: u32, pt: &[u8]) -> Result<Encrypted, CryptoError> {
        let sid = self.device.ok_or(CryptoError::NoSession(rid))?;
        let text = format!(
            "<encrypted xmlns='{AXOLOTL}'><header sid='{sid}'><key rid='{rid}'>MwohBQ==</key>\
             <iv>AAAAAAAAAAAAAAAA</iv></header><payload>{}</payload></encrypted>",
            pt.len()
        );
        let element = text
            .parse::<Element>()
            .map_err(|e| CryptoError::Other(e.to_string()))?;
        Ok(Encrypted {
            element,
            identity_key: IdentityKey::from_bytes([5; 33]),
        })
    }
    fn decrypt(&mut self, _: &BareJid, _: &Element) -> Result<Decrypted, CryptoError> {
        Err(CryptoError::InvalidMessage(
            "this double never decrypts".into(),
        ))
    }
    fn trust(&self, _: &BareJid, _: &IdentityKey) -> Trust {
        Trust::Verified
    }
}

/// (own full JID, peer full JID, session ids the seeds use)
const PROFILES: [(&str, &str); 4] = [
    ("alice@localhost/dinoA", "carol@localhost/dinoB"), // Dino callee
    ("carol@localhost/dinoB", "alice@localhost/dinoA"), // Dino caller
    (
        "juliet@capulet.example/laptop",
        "romeo@montague.example/phone",
    ), // Conversations callee
    (
        "romeo@montague.example/phone",
        "juliet@capulet.example/laptop",
    ), // Conversations caller
];
const SIDS: [&str; 3] = [
    "f1589d11-760d-430e-bcd6-cd8a65a926ce",
    "xT3kq8Rf2VbN0yHcLw9aEQ",
    "s",
];

struct Harness {
    engine: Engine,
    omemo: NeverDecrypts,
    peer: FullJid,
    now: Instant,
    wall: SystemTime,
    sids: Vec<String>,
    /// Per sid: content names and fingerprints the peer announced, our role.
    remote: BTreeMap<String, (Vec<String>, Vec<Vec<u8>>)>,
    roles: BTreeMap<String, Role>,
}

fn local_content(name: &str, role: Role) -> LocalContent {
    let mut d = Description::new("audio".to_owned());
    d.payload_types
        .push(PayloadType::new(111, "opus".to_owned(), 48000, 2));
    d.rtcp_mux = true;
    LocalContent {
        name: name.to_owned(),
        senders: Senders::Both,
        description: d,
        ufrag: "fzuf".into(),
        pwd: "fuzzpwdfuzzpwdfuzzpwd000".into(),
        candidates: vec![Candidate {
            component: 1,
            foundation: "1".into(),
            generation: 0,
            id: "c1".into(),
            ip: "192.0.2.10".parse().expect("static address"),
            port: 50000,
            priority: 2122260223,
            protocol: "udp".into(),
            rel_addr: None,
            rel_port: None,
            network: None,
            type_: CandidateType::Host,
        }],
        fingerprint: Fingerprint {
            hash: Algo::Sha_256,
            setup: match role {
                Role::Initiator => Setup::Actpass,
                Role::Responder => Setup::Active,
            },
            value: vec![0xab; 32],
        },
    }
}

impl Harness {
    fn sid(&self, i: u8) -> String {
        self.sids[usize::from(i) % self.sids.len()].clone()
    }

    fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            let Output::Event(e) = out else { continue };
            match e {
                Event::Shield { shield, .. } => {
                    assert_eq!(shield, Shield::None, "a shield without any decryption");
                }
                Event::IncomingCall { sid, .. } => self.learn(sid),
                Event::MediaNeeded { sid, role, .. } => {
                    self.roles.insert(sid.clone(), role);
                    self.learn(sid);
                }
                Event::RemoteMedia { sid, contents }
                | Event::ContentAdd { sid, contents }
                | Event::ContentAccepted { sid, contents } => {
                    let names = contents.iter().map(|c| c.name.clone()).collect();
                    let fps = contents
                        .iter()
                        .map(|c| c.fingerprint.value.clone())
                        .collect();
                    self.remote.insert(sid.clone(), (names, fps));
                    self.learn(sid);
                }
                _ => {}
            }
        }
        for sid in &self.sids {
            let s = self.engine.shield(sid);
            assert!(
                !matches!(s, Some(Shield::Verified | Shield::Encrypted)),
                "shield {s:?} for {sid} without any decryption"
            );
        }
        assert!(self.engine.call_count() <= MAX_CALLS);
    }

    fn learn(&mut self, sid: String) {
        if !self.sids.contains(&sid) && self.sids.len() < 16 {
            self.sids.push(sid);
        }
    }

    fn step(&mut self, chunk: &[u8]) {
        let (&op, rest) = match chunk.split_first() {
            Some(x) => x,
            None => return,
        };
        let arg = |i: usize| rest.get(i).copied().unwrap_or(0);
        match op {
            b'<' => {
                let Ok(text) = std::str::from_utf8(chunk) else {
                    return;
                };
                let Ok(el) = text.parse::<Element>() else {
                    return;
                };
                self.engine
                    .handle_stanza(&mut self.omemo, self.now, self.wall, &el);
            }
            1 => {
                let sid = self.sid(arg(1));
                let action = match arg(0) % 7 {
                    0 => UserAction::Call {
                        peer: self.peer.to_bare(),
                        sid,
                        media: vec![Media::Audio],
                    },
                    1 => UserAction::CallDirect {
                        peer: self.peer.clone(),
                        sid,
                        media: vec![Media::Audio],
                    },
                    2 => UserAction::Accept { sid },
                    3 => UserAction::Reject { sid },
                    4 => UserAction::RejectContent { sid },
                    5 => UserAction::HangUp { sid },
                    _ => UserAction::Call {
                        peer: self.peer.to_bare(),
                        sid,
                        media: vec![Media::Audio, Media::Video],
                    },
                };
                let _ = self.engine.handle_user(&mut self.omemo, self.now, action);
            }
            2 => {
                let sid = self.sid(arg(1));
                let role = self.roles.get(&sid).copied().unwrap_or(Role::Responder);
                let (names, fps) = self.remote.get(&sid).cloned().unwrap_or_default();
                let names = if names.is_empty() {
                    vec!["0".to_owned()]
                } else {
                    names
                };
                let tail = rest.get(2..).unwrap_or_default();
                let event = match arg(0) % 8 {
                    0 => MediaEvent::LocalContents(
                        names.iter().map(|n| local_content(n, role)).collect(),
                    ),
                    1 => MediaEvent::AddContents(vec![local_content("1", role)]),
                    2 => MediaEvent::LocalCandidate {
                        content: names[0].clone(),
                        candidate: local_content("x", role).candidates.remove(0),
                    },
                    3 => MediaEvent::PeerDigest {
                        hash: Algo::Sha_256,
                        value: fps.first().cloned().unwrap_or_default(),
                    },
                    4 => MediaEvent::PeerDigest {
                        hash: Algo::Sha_256,
                        value: tail.to_vec(),
                    },
                    5 => MediaEvent::Connected,
                    6 => MediaEvent::Failed(String::from_utf8_lossy(tail).into_owned()),
                    // An ICE restart of ours (a network change), for every content.
                    _ => MediaEvent::IceRestarted {
                        credentials: names
                            .iter()
                            .map(|n| IceCredentials {
                                content: n.clone(),
                                ufrag: format!("r{}", arg(1)),
                                pwd: format!("restart-pwd-{}-0123456789", arg(1)),
                            })
                            .collect(),
                    },
                };
                let _ = self
                    .engine
                    .handle_media(&mut self.omemo, self.now, &sid, event);
            }
            3 => {
                let d = Duration::from_millis(u64::from(arg(0)) * 500);
                self.now += d;
                self.wall += d;
                self.engine.handle_timeout(&mut self.omemo, self.now);
            }
            4 => self.engine.handle_trust_change(&mut self.omemo, self.now),
            _ => {}
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, rest)) = data.split_first() else {
        return;
    };
    let (own, peer) = PROFILES[usize::from(cfg & 3)];
    let (Ok(own), Ok(peer)) = (own.parse::<FullJid>(), peer.parse::<FullJid>()) else {
        return;
    };
    let mut config = Config::new(own);
    config.require_verified = cfg & 4 != 0;
    config.send_ringing = cfg & 8 == 0;
    let device = (cfg & 16 == 0).then_some(if cfg & 1 == 0 { 129646281 } else { 1942903233 });
    let mut h = Harness {
        engine: Engine::new(config),
        omemo: NeverDecrypts { device },
        peer,
        now: Instant::now(),
        // The Dino capture's day, so XEP-0203 delay stamps in seeds are "recent".
        wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        sids: SIDS.iter().map(|s| (*s).to_owned()).collect(),
        remote: BTreeMap::new(),
        roles: BTreeMap::new(),
    };
    for chunk in rest.split(|&b| b == 0).take(64) {
        h.step(chunk);
    }
});
