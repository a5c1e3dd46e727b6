//! The engine's own CPU time per call setup, crypto and media excluded: two engines (caller and
//! callee) exchange every stanza of a verified call (propose … session-accept, Shield::Verified
//! on both sides, hang-up) in memory. OMEMO is a constant-time stand-in, media are instant.
//! A reference in the same run (minidom parsing the real Dino session-initiate text) gives a
//! ratio that is less noisy than the absolute figure on shared machines.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use jid::{BareJid, FullJid};
use minidom::Element;
use shieldcall_jingle::{
    Config, CryptoError, Decrypted, Encrypted, Engine, Event, IdentityKey, LocalContent, Media,
    MediaEvent, OmemoCrypto, Output, Role, Shield, Trust, UserAction,
};
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::jingle::Senders;
use xmpp_parsers::jingle_dtls_srtp::{Fingerprint, Setup};
use xmpp_parsers::jingle_rtp::{Description, PayloadType};

/// Not cryptography: returns fixed values so only the engine is measured.
struct NullCrypto {
    own: u32,
    element: Element,
    plaintext: Vec<u8>,
}

impl OmemoCrypto for NullCrypto {
    fn own_device_id(&self) -> Option<u32> {
        Some(self.own)
    }
    fn encrypt(&mut self, _: &BareJid, _: u32, _: &[u8]) -> Result<Encrypted, CryptoError> {
        Ok(Encrypted {
            element: self.element.clone(),
            identity_key: IdentityKey::from_bytes([5; 33]),
        })
    }
    fn decrypt(&mut self, _: &BareJid, e: &Element) -> Result<Decrypted, CryptoError> {
        let device = e
            .get_child("header", "eu.siacs.conversations.axolotl")
            .and_then(|h| h.attr("sid"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(Decrypted {
            plaintext: self.plaintext.clone(),
            device,
            identity_key: IdentityKey::from_bytes([5; 33]),
        })
    }
    fn trust(&self, _: &BareJid, _: &IdentityKey) -> Trust {
        Trust::Verified
    }
}

const FP_BYTE: u8 = 0xAB;

fn crypto(own: u32, peer: u32) -> NullCrypto {
    let element: Element = format!(
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='{own}'><key rid='{peer}'>MwohBQ+lw4jElWnE18UfYb/+T9za5rbHZ1IZpXLSSXt2JXsiEAAYACIwoIliIwy3kLoTtua+5sr9HLJEKvwkmIVZfLSFCW9tmXrQD5LVa+x5zNxmoR8llwNa30Ui/Sx6+v4=</key><iv>yaLZN+VSok0h3GZe</iv></header><payload>68iXnk2zzmn/wow0XYXjCE/jUbOX5TdjhHxWCKKSV+ipcDxUL2ZgC+f2VH7qbDJ4DlsKZIc+nDZKpauVYoaRXNjbDADG0Fq8urWi2sJWxnl6hMpe0A2Vw6a/cWek/w4=</payload></encrypted>"
    )
    .parse()
    .unwrap();
    let plaintext = shieldcall_jingle::fingerprint::to_hex(&[FP_BYTE; 32]).into_bytes();
    NullCrypto {
        own,
        element,
        plaintext,
    }
}

fn local(role: Role) -> LocalContent {
    let mut d = Description::new("audio".into());
    d.payload_types
        .push(PayloadType::new(111, "opus".into(), 48000, 2));
    d.rtcp_mux = true;
    LocalContent {
        name: "0".into(),
        senders: Senders::Both,
        description: d,
        ufrag: "ufrag".into(),
        pwd: "pwdpwdpwdpwdpwdpwdpwdpwd".into(),
        candidates: Vec::new(),
        fingerprint: Fingerprint {
            hash: Algo::Sha_256,
            setup: if role == Role::Initiator {
                Setup::Actpass
            } else {
                Setup::Active
            },
            value: vec![FP_BYTE; 32],
        },
    }
}

fn set_from(el: &mut Element, from: &str) {
    el.set_attr(
        minidom::rxml::Namespace::NONE,
        minidom::rxml::NcName::try_from("from").unwrap(),
        from.to_owned(),
    );
}

/// One full verified call between two fresh engines; returns the number of shields seen.
fn call_setup() -> usize {
    let now = Instant::now();
    let wall = SystemTime::UNIX_EPOCH;
    let romeo_jid = "romeo@montague.example/phone";
    let juliet_jid = "juliet@capulet.example/laptop";
    let mut engines = [
        Engine::new(Config::new(FullJid::new(romeo_jid).unwrap())),
        Engine::new(Config::new(FullJid::new(juliet_jid).unwrap())),
    ];
    // Each engine borrows its account's OMEMO for every input.
    let mut omemo = [crypto(1, 2), crypto(2, 1)];
    let jids = [romeo_jid, juliet_jid];
    let sid = "xT3kq8Rf2VbN0yHcLw9aEQ";
    engines[0]
        .handle_user(
            &mut omemo[0],
            now,
            UserAction::Call {
                peer: BareJid::new("juliet@capulet.example").unwrap(),
                sid: sid.into(),
                media: vec![Media::Audio],
            },
        )
        .unwrap();
    let mut shields = 0;
    let mut moved = true;
    while moved {
        moved = false;
        for i in 0..2 {
            while let Some(out) = engines[i].poll_output() {
                moved = true;
                match out {
                    Output::Send(mut el) => {
                        let to = el.attr("to").unwrap_or_default();
                        // Deliver to the other engine unless it is addressed to our own account.
                        if to.starts_with(jids[i].split('@').next().unwrap_or_default()) {
                            continue;
                        }
                        set_from(&mut el, jids[i]);
                        engines[1 - i].handle_stanza(&mut omemo[1 - i], now, wall, &el);
                    }
                    Output::Event(Event::IncomingCall { sid, .. }) => {
                        engines[i]
                            .handle_user(&mut omemo[i], now, UserAction::Accept { sid })
                            .unwrap();
                    }
                    Output::Event(Event::MediaNeeded { sid, role, .. }) => {
                        engines[i]
                            .handle_media(
                                &mut omemo[i],
                                now,
                                &sid,
                                MediaEvent::LocalContents(vec![local(role)]),
                            )
                            .unwrap();
                    }
                    Output::Event(Event::RemoteMedia { sid, .. }) => {
                        // Instant DTLS: the peer's certificate is the announced one. (The
                        // callee reports it before its answer is out; the engine holds the proof
                        // and decides the shield once the answer is sent.)
                        let _ = engines[i].handle_media(
                            &mut omemo[i],
                            now,
                            &sid,
                            MediaEvent::PeerDigest {
                                hash: Algo::Sha_256,
                                value: vec![FP_BYTE; 32],
                            },
                        );
                    }
                    Output::Event(Event::Shield {
                        shield: Shield::Verified,
                        ..
                    }) => shields += 1,
                    Output::Event(_) => {}
                }
            }
        }
    }
    engines[0]
        .handle_user(&mut omemo[0], now, UserAction::HangUp { sid: sid.into() })
        .unwrap();
    while engines[0].poll_output().is_some() {}
    shields
}

const DINO_INITIATE: &str =
    include_str!("../tests/fixtures/dino-0.4.2/callee-09-in-session-initiate.xml");

fn bench(c: &mut Criterion) {
    assert_eq!(call_setup(), 2, "both sides must reach Shield::Verified");
    let mut g = c.benchmark_group("call_setup");
    g.bench_function("engine: verified call, both roles", |b| {
        b.iter(|| black_box(call_setup()))
    });
    g.bench_function(
        "reference: minidom parse of one Dino session-initiate",
        |b| b.iter(|| black_box(DINO_INITIATE.trim().parse::<Element>().unwrap())),
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
