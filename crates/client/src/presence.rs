//! Being online: initial presence with entity capabilities (XEP-0115, so PEP sends us the
//! `+notify` nodes), carbons (XEP-0280), roster fetch, and answers to disco#info (XEP-0030) and
//! ping (XEP-0199).

use minidom::Element;
use shieldcall_jingle::ns;
use xmpp_parsers::caps::{Caps, compute_disco, hash_caps};
use xmpp_parsers::disco::{DiscoInfoResult, Identity};
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::connection::Xmpp;
use crate::error::ClientError;

/// XEP-0030 disco#info.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0199 ping.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0280 carbons.
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// RFC 6121 roster.
pub const ROSTER: &str = "jabber:iq:roster";
/// Our caps node.
pub const CAPS_NODE: &str = "https://shieldcall.invalid/caps";

/// What every shieldcall session advertises.
const BASE_FEATURES: [&str; 7] = [
    DISCO_INFO,
    PING,
    CARBONS,
    "eu.siacs.conversations.axolotl.devicelist",
    "eu.siacs.conversations.axolotl.devicelist+notify",
    "urn:xmpp:eme:0",
    "urn:xmpp:hints",
];

/// What a session that takes calls (`call`, `listen`) adds: Jingle, RTP audio, ICE-UDP, DTLS-SRTP
/// and JMI. Conversations and Dino offer a call button only for contacts whose caps show these.
/// The verification draft has no feature of its own: the `<device/>` in `<proceed/>` signals it.
pub const CALL_FEATURES: [&str; 6] = [
    ns::JINGLE,
    ns::JINGLE_RTP,
    "urn:xmpp:jingle:apps:rtp:audio",
    ns::JINGLE_ICE_UDP,
    ns::JINGLE_DTLS,
    ns::JINGLE_MESSAGE,
];

/// What we advertise; `calls` when this session answers calls.
pub fn disco_info(node: Option<String>, calls: bool) -> DiscoInfoResult {
    let extra: &[&str] = if calls { &CALL_FEATURES } else { &[] };
    DiscoInfoResult {
        node,
        identities: vec![Identity::new("client", "pc", "en", "shieldcall")],
        features: BASE_FEATURES
            .iter()
            .chain(extra)
            .map(|f| (*f).to_owned())
            .collect(),
        extensions: vec![],
    }
}

/// The caps `ver` of [`disco_info`].
pub fn caps_ver(calls: bool) -> Option<xmpp_parsers::hashes::Hash> {
    hash_caps(&compute_disco(&disco_info(None, calls)), Algo::Sha_1).ok()
}

/// Initial presence with caps.
pub fn initial_presence(calls: bool) -> Presence {
    let p = Presence::new(PresenceType::None);
    match caps_ver(calls) {
        Some(h) => p.with_payload(Caps::new(CAPS_NODE, h)),
        None => p,
    }
}

/// Goes online: carbons, roster, presence (in this order, so carbons are on before any message
/// can arrive).
pub async fn go_online(xmpp: &Xmpp, calls: bool) -> Result<(), ClientError> {
    let enable = Element::builder("enable", CARBONS).build();
    if let Err(e) = xmpp.iq(None, true, enable).await? {
        return Err(ClientError::Protocol(format!(
            "server refused carbons: {:?}",
            e.defined_condition
        )));
    }
    // The roster is not used yet, but asking for it is what makes the server send us our
    // contacts' presence (and with it their PEP notifications).
    let _ = xmpp
        .iq(None, false, Element::builder("query", ROSTER).build())
        .await?;
    xmpp.send(initial_presence(calls))
}

/// Answers an IQ get/set addressed to us; returns the response to send. `calls` selects the
/// features disco#info reports (the same as in our caps).
pub fn answer_iq(iq: &Iq, calls: bool) -> Option<Iq> {
    let (from, id, payload, is_get) = match iq {
        Iq::Get {
            from, id, payload, ..
        } => (from, id, payload, true),
        Iq::Set {
            from, id, payload, ..
        } => (from, id, payload, false),
        _ => return None,
    };
    let result = |payload: Option<Element>| Iq::Result {
        from: None,
        to: from.clone(),
        id: id.clone(),
        payload,
    };
    if is_get && payload.is("query", DISCO_INFO) {
        let node = payload.attr("node").map(str::to_owned);
        let info: Element = disco_info(node, calls).into();
        return Some(result(Some(info)));
    }
    if !is_get && payload.is("query", ROSTER) {
        return Some(result(None)); // roster push: acknowledged, the roster is not kept yet
    }
    if is_get && payload.is("ping", PING) {
        return Some(result(None));
    }
    Some(Iq::Error {
        from: None,
        to: from.clone(),
        id: id.clone(),
        error: StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            "en",
            "not supported by shieldcall",
        ),
        payload: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(payload: Element) -> Iq {
        Iq::Get {
            from: Some("bob@example.org/x".parse().unwrap()),
            to: None,
            id: "q1".into(),
            payload,
        }
    }

    #[test]
    fn answers_disco_ping_and_refuses_the_rest() {
        let disco = answer_iq(&get(Element::builder("query", DISCO_INFO).build()), false).unwrap();
        let Iq::Result {
            payload: Some(p),
            id,
            to,
            ..
        } = disco
        else {
            panic!("{disco:?}")
        };
        assert_eq!(id, "q1");
        assert_eq!(to.unwrap().to_string(), "bob@example.org/x");
        let s = String::from(&p);
        for f in [
            "eu.siacs.conversations.axolotl.devicelist+notify",
            PING,
            CARBONS,
        ] {
            assert!(s.contains(f), "{f} missing from {s}");
        }
        assert!(matches!(
            answer_iq(&get(Element::builder("ping", PING).build()), false),
            Some(Iq::Result { payload: None, .. })
        ));
        let other = answer_iq(
            &get(Element::builder("query", "jabber:iq:version").build()),
            false,
        );
        let Some(Iq::Error { error, .. }) = other else {
            panic!("{other:?}")
        };
        assert_eq!(
            error.defined_condition,
            DefinedCondition::ServiceUnavailable
        );
        assert!(caps_ver(false).is_some());
    }

    #[test]
    fn call_sessions_announce_jingle_in_disco_and_caps() {
        let info = answer_iq(&get(Element::builder("query", DISCO_INFO).build()), true).unwrap();
        let Iq::Result {
            payload: Some(p), ..
        } = info
        else {
            panic!("{info:?}")
        };
        let s = String::from(&p);
        for f in CALL_FEATURES {
            assert!(s.contains(f), "{f} missing from {s}");
        }
        // The caps hash covers the features: a client that only takes messages differs.
        assert_ne!(caps_ver(true), caps_ver(false));
        let presence: Element = initial_presence(true).into();
        let c = presence
            .get_child("c", "http://jabber.org/protocol/caps")
            .unwrap();
        let ver = caps_ver(true).unwrap().to_base64();
        assert_eq!(c.attr("ver"), Some(ver.as_str()));
    }
}
