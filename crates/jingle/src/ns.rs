//! Every XML namespace the engine reads or writes (docs/protocol.md §2.1).

/// XMPP client stanzas (RFC 6120).
pub const JABBER_CLIENT: &str = "jabber:client";
/// Jingle (XEP-0166).
pub const JINGLE: &str = "urn:xmpp:jingle:1";
/// Jingle error conditions (XEP-0166 §10), e.g. `<unknown-session/>`.
pub const JINGLE_ERRORS: &str = "urn:xmpp:jingle:errors:1";
/// Jingle Message Initiation (XEP-0353); every client uses `:0`, none `:1` (docs/protocol.md §2.1).
pub const JINGLE_MESSAGE: &str = "urn:xmpp:jingle-message:0";
/// Jingle RTP sessions (XEP-0167).
pub const JINGLE_RTP: &str = "urn:xmpp:jingle:apps:rtp:1";
/// Jingle ICE-UDP transport (XEP-0176).
pub const JINGLE_ICE_UDP: &str = "urn:xmpp:jingle:transports:ice-udp:1";
/// Plain DTLS-SRTP fingerprint (XEP-0320).
pub const JINGLE_DTLS: &str = "urn:xmpp:jingle:apps:dtls:0";
/// Jingle grouping (XEP-0338), used for BUNDLE.
pub const JINGLE_GROUPING: &str = "urn:xmpp:jingle:apps:grouping:0";
/// The OMEMO DTLS-SRTP verification draft. The typo `dlts` is part of the wire format
/// (docs/protocol.md §2.1) and must be reproduced exactly.
pub const OMEMO_DTLS_SRTP_VERIFICATION: &str =
    "http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification";
/// Legacy OMEMO (XEP-0384 v0.3); the `<encrypted/>` element inside the draft fingerprint.
pub const LEGACY_OMEMO: &str = "eu.siacs.conversations.axolotl";
/// Message Processing Hints (XEP-0334): `<store/>` on every JMI message (docs/protocol.md §5.1).
pub const HINTS: &str = "urn:xmpp:hints";
/// Message Delivery Receipts (XEP-0184): requested on `<propose/>` (docs/protocol.md §5.1).
pub const RECEIPTS: &str = "urn:xmpp:receipts";
/// Delayed Delivery (XEP-0203): marks offline/MAM re-deliveries (stale proposals).
pub const DELAY: &str = "urn:xmpp:delay";
/// Message Carbons (XEP-0280).
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// Stanza Forwarding (XEP-0297), the wrapper inside a carbon.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// Stanza errors (RFC 6120 §8.3).
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
