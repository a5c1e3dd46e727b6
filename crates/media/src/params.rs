//! Plain parameter types that mirror what Jingle carries, and their mapping to str0m.
//!
//! The call engine converts from `xmpp-parsers` types into these (media never sees XML):
//! the RTP description of XEP-0167 (payload types, `rtcp-mux`, XEP-0339 sources, XEP-0294
//! header extensions), the ICE-UDP transport of XEP-0176 (ufrag, pwd, candidates) and the
//! DTLS fingerprint of XEP-0320 (`hash`, `setup`, value).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use str0m::net::Protocol;
use str0m::rtp::Extension;
use str0m::{Candidate, CandidateKind};

/// Length of a SHA-256 digest, the only fingerprint hash that Conversations and Dino send.
pub const SHA256_LEN: usize = 32;

/// Upper bound on remote candidates we accept in one transport (a peer cannot grow our state).
pub const MAX_REMOTE_CANDIDATES: usize = 32;

/// Upper bound on the length of an ICE ufrag or pwd we accept (RFC 8839 allows 256 chars).
pub const MAX_ICE_CREDENTIAL_LEN: usize = 256;

/// Default Opus payload type used by Conversations and Dino (docs/protocol.md §7.4).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// Errors in Jingle-shaped parameters. Each names the field that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// The fingerprint's `hash` attribute names a function other than `sha-256`.
    #[error("unsupported fingerprint hash function {0:?} (only sha-256)")]
    UnsupportedHash(String),
    /// The fingerprint value is not colon-separated hex.
    #[error("fingerprint value is not colon-separated hex")]
    FingerprintNotHex,
    /// The fingerprint value has the wrong number of bytes.
    #[error("fingerprint has {0} bytes, expected 32")]
    FingerprintLength(usize),
    /// The `setup` attribute is none of actpass/active/passive.
    #[error("unknown DTLS setup {0:?}")]
    UnknownSetup(String),
    /// The candidate `type` attribute is unknown.
    #[error("unknown candidate type {0:?}")]
    UnknownCandidateType(String),
    /// The peer's description has no Opus payload type at 48 kHz.
    #[error("no opus/48000 payload type in the remote description")]
    NoOpus,
    /// The peer's description does not offer `rtcp-mux`, which str0m requires.
    #[error("remote description lacks rtcp-mux")]
    NoRtcpMux,
    /// ICE ufrag or pwd missing or too long.
    #[error("ICE {0} missing or longer than 256 characters")]
    IceCredential(&'static str),
    /// Both sides chose the same DTLS role, or the responder answered `actpass`.
    #[error("DTLS setup {remote} from the peer is not valid when we are the {local_role}")]
    SetupConflict {
        /// Our Jingle role.
        local_role: &'static str,
        /// The peer's setup attribute.
        remote: Setup,
    },
}

/// A certificate fingerprint (XEP-0320 `<fingerprint hash='sha-256'>`), compared by value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    bytes: [u8; SHA256_LEN],
}

impl Fingerprint {
    /// Parses the `hash` attribute and element text. Hex is case-insensitive; colons optional.
    pub fn parse(hash: &str, value: &str) -> Result<Self, ParamsError> {
        if !hash.eq_ignore_ascii_case("sha-256") {
            return Err(ParamsError::UnsupportedHash(hash.to_owned()));
        }
        let digits: Vec<u8> = value.trim().bytes().filter(|b| *b != b':').collect();
        if !digits.len().is_multiple_of(2) {
            return Err(ParamsError::FingerprintNotHex);
        }
        let mut out = Vec::with_capacity(digits.len() / 2);
        for pair in digits.chunks(2) {
            let hi = hex_value(pair[0]).ok_or(ParamsError::FingerprintNotHex)?;
            let lo = hex_value(pair[1]).ok_or(ParamsError::FingerprintNotHex)?;
            out.push(hi << 4 | lo);
        }
        Self::from_bytes(&out)
    }

    /// Builds a fingerprint from raw digest bytes (must be 32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ParamsError> {
        let bytes: [u8; SHA256_LEN] = bytes
            .try_into()
            .map_err(|_| ParamsError::FingerprintLength(bytes.len()))?;
        Ok(Self { bytes })
    }

    /// The `hash` attribute value.
    pub fn hash(&self) -> &'static str {
        "sha-256"
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; SHA256_LEN] {
        &self.bytes
    }

    /// The element text as both clients send it: uppercase hex joined by `:`
    /// (docs/protocol.md §3.1).
    pub fn to_jingle_value(&self) -> String {
        let mut s = String::with_capacity(SHA256_LEN * 3);
        for (i, b) in self.bytes.iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            s.push_str(&format!("{b:02X}"));
        }
        s
    }

    pub(crate) fn from_str0m(f: &str0m::config::Fingerprint) -> Result<Self, ParamsError> {
        if !f.hash_func.eq_ignore_ascii_case("sha-256") {
            return Err(ParamsError::UnsupportedHash(f.hash_func.clone()));
        }
        Self::from_bytes(&f.bytes)
    }

    pub(crate) fn to_str0m(self) -> str0m::config::Fingerprint {
        str0m::config::Fingerprint {
            hash_func: "sha-256".to_owned(),
            bytes: self.bytes.to_vec(),
        }
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(sha-256 {})", self.to_jingle_value())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_jingle_value())
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The XEP-0320 `setup` attribute (RFC 4145 roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Either role; what the initiator offers.
    ActPass,
    /// DTLS client.
    Active,
    /// DTLS server.
    Passive,
}

impl Setup {
    /// Parses the attribute value.
    pub fn parse(s: &str) -> Result<Self, ParamsError> {
        match s {
            "actpass" => Ok(Self::ActPass),
            "active" => Ok(Self::Active),
            "passive" => Ok(Self::Passive),
            other => Err(ParamsError::UnknownSetup(other.to_owned())),
        }
    }

    /// The attribute value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ActPass => "actpass",
            Self::Active => "active",
            Self::Passive => "passive",
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Our role in the Jingle session; it fixes ICE controlling and the DTLS setup we offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JingleRole {
    /// We send session-initiate: ICE controlling, `setup='actpass'`.
    Initiator,
    /// We send session-accept: ICE controlled, `setup='active'` like Dino (unless the
    /// initiator itself chose `active`, then we are `passive`).
    Responder,
}

impl JingleRole {
    fn name(self) -> &'static str {
        match self {
            Self::Initiator => "initiator",
            Self::Responder => "responder",
        }
    }
}

/// Decides whether we are the DTLS client (`true`) from our role and the peer's `setup`.
///
/// Follows Conversations (a responder's `actpass` is rejected: C `JRC:836-841`) and Dino
/// (responder answers `active`).
pub fn dtls_active(role: JingleRole, remote: Setup) -> Result<bool, ParamsError> {
    match (role, remote) {
        (JingleRole::Initiator, Setup::Active) => Ok(false),
        (JingleRole::Initiator, Setup::Passive) => Ok(true),
        (JingleRole::Responder, Setup::ActPass | Setup::Passive) => Ok(true),
        (JingleRole::Responder, Setup::Active) => Ok(false),
        (JingleRole::Initiator, Setup::ActPass) => Err(ParamsError::SetupConflict {
            local_role: role.name(),
            remote,
        }),
    }
}

/// The `setup` we put into our own transport for a role (and, as responder, the peer's setup).
pub fn local_setup(role: JingleRole, remote: Option<Setup>) -> Setup {
    match (role, remote) {
        (JingleRole::Initiator, _) => Setup::ActPass,
        (JingleRole::Responder, Some(Setup::Active)) => Setup::Passive,
        (JingleRole::Responder, _) => Setup::Active,
    }
}

/// A DTLS fingerprint element: value plus `setup`. `hash` is implied by [`Fingerprint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtlsParams {
    /// The certificate digest.
    pub fingerprint: Fingerprint,
    /// The `setup` attribute.
    pub setup: Setup,
}

/// The candidate `type` attribute of XEP-0176.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateType {
    /// `host`
    Host,
    /// `srflx`
    ServerReflexive,
    /// `prflx`
    PeerReflexive,
    /// `relay`
    Relay,
}

impl CandidateType {
    /// Parses the attribute value.
    pub fn parse(s: &str) -> Result<Self, ParamsError> {
        match s {
            "host" => Ok(Self::Host),
            "srflx" => Ok(Self::ServerReflexive),
            "prflx" => Ok(Self::PeerReflexive),
            "relay" => Ok(Self::Relay),
            other => Err(ParamsError::UnknownCandidateType(other.to_owned())),
        }
    }

    /// The attribute value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::ServerReflexive => "srflx",
            Self::PeerReflexive => "prflx",
            Self::Relay => "relay",
        }
    }
}

/// An ICE-UDP `<candidate/>` (XEP-0176 §5.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    /// `foundation`
    pub foundation: String,
    /// `component`: 1 = RTP (with rtcp-mux the only one used), 2 = RTCP.
    pub component: u8,
    /// `protocol`, normally `udp`.
    pub protocol: String,
    /// `priority`
    pub priority: u32,
    /// `ip`
    pub ip: IpAddr,
    /// `port`
    pub port: u16,
    /// `type`
    pub kind: CandidateType,
    /// `generation`
    pub generation: u32,
    /// `id`
    pub id: String,
    /// `rel-addr` / `rel-port` for reflexive and relay candidates.
    pub related: Option<SocketAddr>,
}

impl IceCandidate {
    /// The candidate's transport address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// A host candidate for one of our sockets, with str0m's RFC 8445 priority.
    pub fn local_host(addr: SocketAddr, index: usize) -> Self {
        let priority = Candidate::host(addr, "udp").map(|c| c.prio()).unwrap_or(0);
        Self {
            foundation: (index + 1).to_string(),
            component: 1,
            protocol: "udp".to_owned(),
            priority,
            ip: addr.ip(),
            port: addr.port(),
            kind: CandidateType::Host,
            generation: 0,
            // The session gives its own candidates ids from its seed.
            id: format!("host{index}"),
            related: None,
        }
    }

    /// The str0m candidate for a remote one, or `None` for what we do not use: RTCP
    /// components (we require rtcp-mux), non-UDP protocols, addresses str0m rejects.
    pub(crate) fn to_str0m_remote(&self) -> Option<Candidate> {
        if self.component != 1 || !self.protocol.eq_ignore_ascii_case("udp") {
            return None;
        }
        let kind = match self.kind {
            CandidateType::Host => CandidateKind::Host,
            CandidateType::ServerReflexive => CandidateKind::ServerReflexive,
            CandidateType::PeerReflexive => CandidateKind::PeerReflexive,
            CandidateType::Relay => CandidateKind::Relayed,
        };
        if self.ip.is_unspecified() || self.ip.is_multicast() || self.port == 0 {
            return None;
        }
        Some(Candidate::from_parts(
            self.foundation.clone(),
            1,
            Protocol::Udp,
            self.priority,
            self.addr(),
            kind,
            self.related,
            None,
            None,
        ))
    }
}

/// An ICE-UDP `<transport/>` (XEP-0176), with its XEP-0320 fingerprint if present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceUdpTransport {
    /// `ufrag`
    pub ufrag: String,
    /// `pwd`
    pub pwd: String,
    /// `<candidate/>` children.
    pub candidates: Vec<IceCandidate>,
    /// `<fingerprint/>` (plain; the call engine decrypts the OMEMO-wrapped one into this).
    pub dtls: Option<DtlsParams>,
}

impl IceUdpTransport {
    pub(crate) fn check_credentials(&self) -> Result<(), ParamsError> {
        if self.ufrag.is_empty() || self.ufrag.len() > MAX_ICE_CREDENTIAL_LEN {
            return Err(ParamsError::IceCredential("ufrag"));
        }
        if self.pwd.is_empty() || self.pwd.len() > MAX_ICE_CREDENTIAL_LEN {
            return Err(ParamsError::IceCredential("pwd"));
        }
        Ok(())
    }
}

/// A `<payload-type/>` (XEP-0167 §5) with its `<parameter/>` children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadType {
    /// `id`
    pub id: u8,
    /// `name`
    pub name: String,
    /// `clockrate`
    pub clockrate: u32,
    /// `channels` (Opus is always announced with 2).
    pub channels: u8,
    /// `<parameter name value/>` pairs in document order.
    pub parameters: Vec<(String, String)>,
}

impl PayloadType {
    /// The Opus payload type as Conversations and Dino announce it.
    pub fn opus(id: u8) -> Self {
        Self {
            id,
            name: "opus".to_owned(),
            clockrate: 48_000,
            channels: 2,
            parameters: vec![
                ("minptime".to_owned(), "10".to_owned()),
                ("useinbandfec".to_owned(), "1".to_owned()),
            ],
        }
    }

    fn is_opus(&self) -> bool {
        self.name.eq_ignore_ascii_case("opus") && self.clockrate == 48_000
    }

    fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An XEP-0294 `<rtp-hdrext id uri/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpHdrext {
    /// `id` (1..=14 for one-byte headers).
    pub id: u8,
    /// `uri`
    pub uri: String,
}

impl RtpHdrext {
    /// The str0m extension for this URI, if str0m implements it.
    pub(crate) fn to_str0m(&self) -> Option<Extension> {
        let ext = match self.uri.as_str() {
            "urn:ietf:params:rtp-hdrext:ssrc-audio-level" => Extension::AudioLevel,
            "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time" => {
                Extension::AbsoluteSendTime
            }
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01" => {
                Extension::TransportSequenceNumber
            }
            "urn:ietf:params:rtp-hdrext:sdes:mid" => Extension::RtpMid,
            _ => return None,
        };
        (1..=14).contains(&self.id).then_some(ext)
    }
}

/// An XEP-0339 `<source ssrc/>` with its `cname` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpSource {
    /// `ssrc`
    pub ssrc: u32,
    /// `<parameter name='cname'/>`
    pub cname: Option<String>,
}

/// An RTP `<description media='audio'/>` (XEP-0167).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpDescription {
    /// `media` attribute; always `audio` here.
    pub media: String,
    /// `<payload-type/>` children in preference order.
    pub payload_types: Vec<PayloadType>,
    /// `<rtcp-mux/>` present.
    pub rtcp_mux: bool,
    /// `<source/>` children.
    pub sources: Vec<RtpSource>,
    /// `<rtp-hdrext/>` children.
    pub hdrexts: Vec<RtpHdrext>,
}

/// Audio-level is the one header extension both clients announce for audio (docs/protocol.md §7.4).
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

impl RtpDescription {
    /// Our audio description: Opus/48000/2 with in-band FEC, rtcp-mux, our ssrc and cname.
    pub fn local_audio(ssrc: u32, cname: &str) -> Self {
        Self {
            media: "audio".to_owned(),
            payload_types: vec![PayloadType::opus(OPUS_PAYLOAD_TYPE)],
            rtcp_mux: true,
            sources: vec![RtpSource {
                ssrc,
                cname: Some(cname.to_owned()),
            }],
            hdrexts: vec![RtpHdrext {
                id: 1,
                uri: AUDIO_LEVEL_URI.to_owned(),
            }],
        }
    }

    /// The Opus payload type to use with a peer: the first opus/48000 the peer lists.
    pub fn negotiate_opus(&self) -> Result<&PayloadType, ParamsError> {
        self.payload_types
            .iter()
            .find(|p| p.is_opus())
            .ok_or(ParamsError::NoOpus)
    }

    /// Our answer to a remote offer: the same Opus payload type id, rtcp-mux, our source and the
    /// header extensions of the offer that str0m implements.
    pub fn answer_to(remote: &RtpDescription, ssrc: u32, cname: &str) -> Result<Self, ParamsError> {
        let opus = remote.negotiate_opus()?;
        if !remote.rtcp_mux {
            return Err(ParamsError::NoRtcpMux);
        }
        let mut answer = Self::local_audio(ssrc, cname);
        answer.payload_types = vec![PayloadType::opus(opus.id)];
        answer.hdrexts = remote
            .hdrexts
            .iter()
            .filter(|h| h.to_str0m().is_some())
            .cloned()
            .collect();
        Ok(answer)
    }
}

/// Negotiated Opus settings derived from both descriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// RTP payload type.
    pub payload_type: u8,
    /// The peer can decode in-band FEC (`useinbandfec=1`).
    pub inband_fec: bool,
}

impl OpusSettings {
    /// From the peer's description.
    pub fn from_remote(remote: &RtpDescription) -> Result<Self, ParamsError> {
        let opus = remote.negotiate_opus()?;
        Ok(Self {
            payload_type: opus.id,
            inband_fec: opus.parameter("useinbandfec") == Some("1"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DINO_LIKE: &str = "3A:9F:0C:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:01:02:03:04:05:06:07:08:09:0A:0B:0C:C1";

    #[test]
    fn fingerprint_round_trips_uppercase_with_colons() {
        let f = Fingerprint::parse("sha-256", DINO_LIKE).unwrap();
        assert_eq!(f.to_jingle_value(), DINO_LIKE);
        assert_eq!(f.to_jingle_value().len(), 95);
    }

    #[test]
    fn fingerprint_compares_case_insensitively() {
        let upper = Fingerprint::parse("sha-256", DINO_LIKE).unwrap();
        let lower = Fingerprint::parse("SHA-256", &DINO_LIKE.to_lowercase()).unwrap();
        let bare = Fingerprint::parse("sha-256", &DINO_LIKE.replace(':', "")).unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper, bare);
    }

    #[test]
    fn fingerprint_errors_are_precise() {
        assert_eq!(
            Fingerprint::parse("sha-1", "AB"),
            Err(ParamsError::UnsupportedHash("sha-1".into()))
        );
        assert_eq!(
            Fingerprint::parse("sha-256", "AB:CD"),
            Err(ParamsError::FingerprintLength(2))
        );
        assert_eq!(
            Fingerprint::parse("sha-256", "ZZ"),
            Err(ParamsError::FingerprintNotHex)
        );
        assert_eq!(
            Fingerprint::parse("sha-256", "ABC"),
            Err(ParamsError::FingerprintNotHex)
        );
    }

    /// Property: any input parses or errs without panicking; any digest round-trips.
    #[test]
    fn fingerprint_parsing_never_panics_and_round_trips() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"0123456789abcdefABCDEF:: xZ\xc3\xa9";
        for _ in 0..2000 {
            let len = (next() % 120) as usize;
            let s: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = Fingerprint::parse("sha-256", &String::from_utf8_lossy(&s));
            let bytes: Vec<u8> = (0..32).map(|_| next() as u8).collect();
            let f = Fingerprint::from_bytes(&bytes).unwrap();
            assert_eq!(Fingerprint::parse("sha-256", &f.to_jingle_value()), Ok(f));
            assert_eq!(
                Fingerprint::parse("sha-256", &f.to_jingle_value().to_lowercase()),
                Ok(f)
            );
        }
    }

    #[test]
    fn dtls_roles_follow_conversations_and_dino() {
        use JingleRole::*;
        assert_eq!(dtls_active(Initiator, Setup::Active), Ok(false));
        assert_eq!(dtls_active(Initiator, Setup::Passive), Ok(true));
        assert!(dtls_active(Initiator, Setup::ActPass).is_err());
        assert_eq!(dtls_active(Responder, Setup::ActPass), Ok(true));
        assert_eq!(dtls_active(Responder, Setup::Passive), Ok(true));
        assert_eq!(dtls_active(Responder, Setup::Active), Ok(false));
        assert_eq!(local_setup(Initiator, None), Setup::ActPass);
        assert_eq!(local_setup(Responder, Some(Setup::ActPass)), Setup::Active);
        assert_eq!(local_setup(Responder, Some(Setup::Active)), Setup::Passive);
    }

    /// The description in Dino's session-initiate (`caller-05-out-session-initiate.xml`).
    fn dino_offer() -> RtpDescription {
        let pt = |id, name: &str, clockrate, channels| PayloadType {
            id,
            name: name.into(),
            clockrate,
            channels,
            parameters: vec![],
        };
        let mut opus = pt(111, "opus", 48000, 2);
        opus.parameters.push(("useinbandfec".into(), "1".into()));
        RtpDescription {
            media: "audio".into(),
            payload_types: vec![
                opus,
                pt(112, "speex", 32000, 1),
                pt(0, "PCMU", 8000, 1),
                pt(8, "PCMA", 8000, 1),
            ],
            rtcp_mux: true,
            sources: vec![],
            hdrexts: vec![],
        }
    }

    #[test]
    fn answer_to_dino_offer_keeps_opus_only() {
        let answer = RtpDescription::answer_to(&dino_offer(), 42, "cn").unwrap();
        assert_eq!(answer.payload_types.len(), 1);
        assert_eq!(answer.payload_types[0].id, 111);
        assert_eq!(answer.payload_types[0].channels, 2);
        assert!(answer.rtcp_mux);
        assert_eq!(answer.sources[0].ssrc, 42);
        let s = OpusSettings::from_remote(&dino_offer()).unwrap();
        assert!(s.inband_fec);
        assert_eq!(s.payload_type, 111);
    }

    #[test]
    fn offer_without_opus_or_rtcp_mux_is_refused() {
        let mut d = dino_offer();
        d.rtcp_mux = false;
        assert_eq!(
            RtpDescription::answer_to(&d, 1, "c"),
            Err(ParamsError::NoRtcpMux)
        );
        d.payload_types.retain(|p| p.name != "opus");
        assert_eq!(
            RtpDescription::answer_to(&d, 1, "c"),
            Err(ParamsError::NoOpus)
        );
    }

    #[test]
    fn dino_candidates_map_to_str0m_and_rtcp_component_is_dropped() {
        let c = IceCandidate {
            foundation: "1".into(),
            component: 1,
            protocol: "udp".into(),
            priority: 2015363327,
            ip: "192.0.2.2".parse().unwrap(),
            port: 41054,
            kind: CandidateType::parse("host").unwrap(),
            generation: 0,
            id: "e82b89ab".into(),
            related: None,
        };
        let s = c.to_str0m_remote().unwrap();
        assert_eq!(s.addr(), "192.0.2.2:41054".parse().unwrap());
        assert_eq!(s.prio(), 2015363327);
        let rtcp = IceCandidate {
            component: 2,
            ..c.clone()
        };
        assert!(rtcp.to_str0m_remote().is_none());
        let tcp = IceCandidate {
            protocol: "tcp".into(),
            ..c
        };
        assert!(tcp.to_str0m_remote().is_none());
    }

    #[test]
    fn local_host_candidate_looks_like_jingle() {
        let c = IceCandidate::local_host("127.0.0.1:5000".parse().unwrap(), 0);
        assert_eq!(c.kind.as_str(), "host");
        assert_eq!(c.component, 1);
        assert_eq!(c.foundation, "1");
        assert!(c.priority > 2_000_000_000);
    }

    #[test]
    fn hdrext_mapping_knows_audio_level_and_ignores_unknown() {
        let h = RtpHdrext {
            id: 1,
            uri: AUDIO_LEVEL_URI.into(),
        };
        assert!(matches!(h.to_str0m(), Some(Extension::AudioLevel)));
        let unknown = RtpHdrext {
            id: 2,
            uri: "urn:example".into(),
        };
        assert!(unknown.to_str0m().is_none());
        let bad_id = RtpHdrext { id: 15, ..h };
        assert!(bad_id.to_str0m().is_none());
    }
}
