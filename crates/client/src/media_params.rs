//! Translation between the call engine's Jingle types (xmpp-parsers) and the media engine's
//! Jingle-shaped parameters. Pure functions; every peer-supplied value is checked by one of the
//! two engines, this module only carries it across.

use shieldcall_jingle::{LocalContent, RemoteContent};
use shieldcall_media as media;
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::jingle::Senders;
use xmpp_parsers::jingle_dtls_srtp::{Fingerprint as XFingerprint, Setup as XSetup};
use xmpp_parsers::jingle_ice_udp::{Candidate as XCandidate, Type as XType};
use xmpp_parsers::jingle_rtp::{Description, Parameter, PayloadType};
use xmpp_parsers::jingle_rtp_hdrext::RtpHdrext;
use xmpp_parsers::jingle_ssma::{Parameter as SsmaParameter, Source};

/// Why a peer's parameters cannot be handed to media.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// The content has no RTP description.
    #[error("content '{0}' has no RTP description")]
    NoDescription(String),
    /// ICE credentials are missing.
    #[error("content '{0}' has no ICE ufrag/pwd")]
    NoCredentials(String),
    /// The fingerprint is not a SHA-256 digest.
    #[error("fingerprint: {0}")]
    Fingerprint(String),
    /// The `setup` value is not one media knows.
    #[error("unusable DTLS setup '{0}'")]
    Setup(String),
    /// No content at all.
    #[error("no audio content")]
    NoContent,
}

/// Jingle `setup` → media.
pub fn setup_to_media(s: &XSetup) -> Result<media::Setup, ParamsError> {
    match s {
        XSetup::Actpass => Ok(media::Setup::ActPass),
        XSetup::Active => Ok(media::Setup::Active),
        XSetup::Passive => Ok(media::Setup::Passive),
        #[allow(unreachable_patterns)]
        other => Err(ParamsError::Setup(format!("{other:?}"))),
    }
}

/// Media `setup` → Jingle.
pub fn setup_to_jingle(s: media::Setup) -> XSetup {
    match s {
        media::Setup::ActPass => XSetup::Actpass,
        media::Setup::Active => XSetup::Active,
        media::Setup::Passive => XSetup::Passive,
    }
}

/// Media RTP description → Jingle `<description/>`.
pub fn description_to_jingle(d: &media::RtpDescription) -> Description {
    let mut out = Description::new(d.media.clone());
    out.payload_types = d
        .payload_types
        .iter()
        .map(|p| {
            let mut pt = PayloadType::new(p.id, p.name.clone(), p.clockrate, p.channels);
            pt.parameters = p
                .parameters
                .iter()
                .map(|(name, value)| Parameter {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect();
            pt
        })
        .collect();
    out.rtcp_mux = d.rtcp_mux;
    out.ssrcs = d
        .sources
        .iter()
        .map(|s| {
            let mut src = Source::new(s.ssrc);
            if let Some(cname) = &s.cname {
                src.parameters.push(SsmaParameter {
                    name: "cname".to_owned(),
                    value: Some(cname.clone()),
                });
            }
            src
        })
        .collect();
    out.hdrexts = d
        .hdrexts
        .iter()
        .map(|h| RtpHdrext::new(u16::from(h.id), h.uri.clone()))
        .collect();
    out
}

/// Jingle `<description/>` → media RTP description. Header extensions with ids that do not fit
/// one byte are dropped (media uses one-byte headers only).
pub fn description_to_media(d: &Description) -> media::RtpDescription {
    media::RtpDescription {
        media: d.media.clone(),
        payload_types: d
            .payload_types
            .iter()
            .map(|p| media::PayloadType {
                id: p.id,
                name: p.name.clone().unwrap_or_default(),
                clockrate: p.clockrate.unwrap_or(0),
                channels: p.channels.0,
                parameters: p
                    .parameters
                    .iter()
                    .map(|x| (x.name.clone(), x.value.clone()))
                    .collect(),
            })
            .collect(),
        rtcp_mux: d.rtcp_mux,
        sources: d
            .ssrcs
            .iter()
            .map(|s| media::RtpSource {
                ssrc: s.id,
                cname: s
                    .parameters
                    .iter()
                    .find(|p| p.name == "cname")
                    .and_then(|p| p.value.clone()),
            })
            .collect(),
        hdrexts: d
            .hdrexts
            .iter()
            .filter_map(|h| {
                u8::try_from(h.id).ok().map(|id| media::RtpHdrext {
                    id,
                    uri: h.uri.clone(),
                })
            })
            .collect(),
    }
}

/// Media candidate → Jingle `<candidate/>`.
pub fn candidate_to_jingle(c: &media::IceCandidate) -> XCandidate {
    XCandidate {
        component: c.component,
        foundation: c.foundation.clone(),
        generation: u8::try_from(c.generation).unwrap_or(u8::MAX),
        id: c.id.clone(),
        ip: c.ip,
        port: c.port,
        priority: c.priority,
        protocol: c.protocol.clone(),
        rel_addr: c.related.map(|a| a.ip()),
        rel_port: c.related.map(|a| a.port()),
        network: None,
        type_: match c.kind {
            media::CandidateType::Host => XType::Host,
            media::CandidateType::ServerReflexive => XType::Srflx,
            media::CandidateType::PeerReflexive => XType::Prflx,
            media::CandidateType::Relay => XType::Relay,
        },
    }
}

/// Jingle `<candidate/>` → media candidate.
pub fn candidate_to_media(c: &XCandidate) -> media::IceCandidate {
    media::IceCandidate {
        foundation: c.foundation.clone(),
        component: c.component,
        protocol: c.protocol.clone(),
        priority: c.priority,
        ip: c.ip,
        port: c.port,
        kind: match c.type_ {
            XType::Host => media::CandidateType::Host,
            XType::Srflx => media::CandidateType::ServerReflexive,
            XType::Prflx => media::CandidateType::PeerReflexive,
            XType::Relay => media::CandidateType::Relay,
        },
        generation: u32::from(c.generation),
        id: c.id.clone(),
        related: match (c.rel_addr, c.rel_port) {
            (Some(ip), Some(port)) => Some(std::net::SocketAddr::new(ip, port)),
            _ => None,
        },
    }
}

/// Our side of one content, from what media prepared.
pub fn local_content(
    name: &str,
    description: &media::RtpDescription,
    transport: &media::IceUdpTransport,
) -> Result<LocalContent, ParamsError> {
    let dtls = transport
        .dtls
        .ok_or_else(|| ParamsError::Fingerprint("media has no local fingerprint".into()))?;
    Ok(LocalContent {
        name: name.to_owned(),
        senders: Senders::Both,
        description: description_to_jingle(description),
        ufrag: transport.ufrag.clone(),
        pwd: transport.pwd.clone(),
        candidates: transport
            .candidates
            .iter()
            .map(candidate_to_jingle)
            .collect(),
        fingerprint: XFingerprint {
            hash: Algo::Sha_256,
            setup: setup_to_jingle(dtls.setup),
            value: dtls.fingerprint.as_bytes().to_vec(),
        },
    })
}

/// The peer's side for media, from the engine's checked remote content: the fingerprint is the
/// one DTLS must present (decrypted when it travelled encrypted).
pub fn remote_params(c: &RemoteContent) -> Result<media::RemoteParams, ParamsError> {
    let description = c
        .description
        .as_ref()
        .ok_or_else(|| ParamsError::NoDescription(c.name.clone()))?;
    let (Some(ufrag), Some(pwd)) = (&c.ufrag, &c.pwd) else {
        return Err(ParamsError::NoCredentials(c.name.clone()));
    };
    if c.fingerprint.hash != Algo::Sha_256 {
        return Err(ParamsError::Fingerprint("not sha-256".into()));
    }
    let fingerprint = media::Fingerprint::from_bytes(&c.fingerprint.value)
        .map_err(|e| ParamsError::Fingerprint(e.to_string()))?;
    Ok(media::RemoteParams {
        description: description_to_media(description),
        transport: media::IceUdpTransport {
            ufrag: ufrag.clone(),
            pwd: pwd.clone(),
            candidates: c.candidates.iter().map(candidate_to_media).collect(),
            dtls: None,
        },
        expected: media::DtlsParams {
            fingerprint,
            setup: setup_to_media(&c.fingerprint.setup)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shieldcall_jingle::verification::Mode;

    fn sample_description() -> media::RtpDescription {
        media::RtpDescription::local_audio(0x1234_5678, "cname-x")
    }

    #[test]
    fn description_survives_both_ways() {
        let d = sample_description();
        let back = description_to_media(&description_to_jingle(&d));
        assert_eq!(back, d);
    }

    #[test]
    fn candidate_survives_both_ways() {
        let mut c = media::IceCandidate::local_host("127.0.0.1:40000".parse().unwrap(), 2);
        c.kind = media::CandidateType::ServerReflexive;
        c.related = Some("10.0.0.1:5000".parse().unwrap());
        assert_eq!(candidate_to_media(&candidate_to_jingle(&c)), c);
    }

    #[test]
    fn remote_params_carry_the_expected_fingerprint_and_setup() {
        let content = RemoteContent {
            name: "0".into(),
            description: Some(description_to_jingle(&sample_description())),
            ufrag: Some("uf".into()),
            pwd: Some("pw-long-enough-for-ice".into()),
            candidates: vec![candidate_to_jingle(&media::IceCandidate::local_host(
                "127.0.0.1:4000".parse().unwrap(),
                0,
            ))],
            fingerprint: XFingerprint {
                hash: Algo::Sha_256,
                setup: XSetup::Active,
                value: vec![7; 32],
            },
            mode: Mode::Encrypted,
        };
        let p = remote_params(&content).unwrap();
        assert_eq!(p.expected.fingerprint.as_bytes(), &[7; 32]);
        assert_eq!(p.expected.setup, media::Setup::Active);
        assert_eq!(p.transport.candidates.len(), 1);
        let mut bad = content.clone();
        bad.fingerprint.value = vec![1; 20];
        assert!(matches!(
            remote_params(&bad),
            Err(ParamsError::Fingerprint(_))
        ));
        let mut no_creds = content;
        no_creds.pwd = None;
        assert!(matches!(
            remote_params(&no_creds),
            Err(ParamsError::NoCredentials(_))
        ));
    }
}
