use super::*;
use crate::verification::{CryptoError, Decrypted, Encrypted, Trust};

/// Never used for crypto here: these tests only exercise bookkeeping.
struct NoOmemo;
impl OmemoCrypto for NoOmemo {
    fn own_device_id(&self) -> Option<u32> {
        None
    }
    fn encrypt(&mut self, _: &BareJid, d: u32, _: &[u8]) -> Result<Encrypted, CryptoError> {
        Err(CryptoError::NoSession(d))
    }
    fn decrypt(&mut self, _: &BareJid, _: &Element) -> Result<Decrypted, CryptoError> {
        Err(CryptoError::NotForThisDevice)
    }
    fn trust(&self, _: &BareJid, _: &IdentityKey) -> Trust {
        Trust::Undecided
    }
}

fn engine() -> Engine {
    let own = FullJid::new("romeo@montague.example/phone").unwrap();
    Engine::new(Config::new(own))
}

#[test]
fn pending_iqs_are_capped() {
    let mut e = engine();
    let peer = FullJid::new("juliet@capulet.example/laptop").unwrap();
    for _ in 0..(MAX_PENDING_IQS + 10) {
        let mut op = Op {
            e: &mut e,
            crypto: &mut NoOmemo,
        };
        op.send_iq_set(
            peer.clone(),
            "s",
            JingleEnvelope::new(Action::TransportInfo, "s"),
        );
    }
    assert_eq!(e.pending_iqs.len(), MAX_PENDING_IQS);
    // The oldest were dropped, the newest kept.
    assert!(!e.pending_iqs.contains_key("sc1"));
    assert!(
        e.pending_iqs
            .contains_key(&format!("sc{}", MAX_PENDING_IQS + 10))
    );
}

#[test]
fn bounced_propose_ends_the_call_and_never_rings() {
    let mut e = engine();
    let now = Instant::now();
    e.handle_user(
        &mut NoOmemo,
        now,
        UserAction::Call {
            peer: BareJid::new("juliet@capulet.example").unwrap(),
            sid: "s1".into(),
            media: vec![Media::Audio],
        },
    )
    .unwrap();
    while e.poll_output().is_some() {}
    let bounce: Element = "<message xmlns='jabber:client' type='error' from='juliet@capulet.example/laptop' id='jm-propose-s1'><propose xmlns='urn:xmpp:jingle-message:0' id='s1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        .parse()
        .unwrap();
    assert_eq!(
        e.handle_stanza(&mut NoOmemo, now, SystemTime::now(), &bounce),
        Handled::Consumed
    );
    assert_eq!(
        e.poll_output(),
        Some(Output::Event(Event::Ended {
            sid: "s1".into(),
            end: CallEnd::PeerError
        }))
    );
    assert!(e.poll_output().is_none());
    assert_eq!(e.call_count(), 0);
}

#[test]
fn proposal_winner_is_antisymmetric() {
    assert!(proposal_wins("b", "x", "a", "y"));
    assert!(!proposal_wins("a", "y", "b", "x"));
    assert!(proposal_wins("a", "z@x/y", "a", "a@x/y"));
}
