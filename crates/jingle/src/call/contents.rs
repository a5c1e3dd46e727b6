//! Free helpers: content maps in and out, media lists, delay stamps.

use super::*;

pub(super) fn message_to(to: &Jid, id: &str) -> Element {
    xml::with_attrs(
        "message",
        ns::JABBER_CLIENT,
        &[("type", "chat"), ("to", to.as_str()), ("id", id)],
    )
}

pub(super) fn iq_set(to: &Jid, id: &str) -> Element {
    xml::with_attrs(
        "iq",
        ns::JABBER_CLIENT,
        &[("type", "set"), ("to", to.as_str()), ("id", id)],
    )
}

pub(super) fn normalise_media(mut media: Vec<Media>) -> Result<Vec<Media>, ApiError> {
    media.sort_unstable();
    media.dedup();
    if media.is_empty() {
        return Err(ApiError::NoMedia);
    }
    Ok(media)
}

pub(super) fn delay_stamp(msg: &Element) -> Option<SystemTime> {
    let delay = msg.get_child("delay", ns::DELAY)?;
    let d = xmpp_parsers::delay::Delay::try_from(delay.clone()).ok()?;
    let secs = d.stamp.0.timestamp();
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
    } else {
        Some(SystemTime::UNIX_EPOCH)
    }
}

pub(super) fn content_media(contents: &[RtpContent]) -> Result<Vec<Media>, CallError> {
    let mut media = Vec::new();
    for c in contents {
        let m = c
            .description
            .as_ref()
            .and_then(|d| Media::parse(&d.media))
            .ok_or(CallError::UnsupportedApplication)?;
        if c.transport.is_none() {
            return Err(CallError::UnsupportedApplication);
        }
        media.push(m);
    }
    normalise_media(media).map_err(|_| CallError::UnsupportedApplication)
}

pub(super) fn remote_contents(
    contents: &[RtpContent],
    remote: &verification::RemoteFingerprints,
) -> Vec<RemoteContent> {
    contents
        .iter()
        .zip(remote.fingerprints.iter())
        .map(|(c, fp)| {
            let t = c.transport.clone().unwrap_or_default();
            RemoteContent {
                name: c.name.clone(),
                description: c.description.clone(),
                ufrag: t.ufrag,
                pwd: t.pwd,
                candidates: t.candidates,
                fingerprint: fp.clone(),
                mode: remote.mode,
            }
        })
        .collect()
}

pub(super) fn build_contents(
    local: &[LocalContent],
    encrypted: Option<&[crate::fingerprint::EncryptedFingerprint]>,
) -> Vec<RtpContent> {
    local
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let fp = match encrypted.and_then(|e| e.get(i)) {
                Some(e) => TransportFingerprint::Encrypted(e.clone()),
                None => TransportFingerprint::Plain(l.fingerprint.clone()),
            };
            RtpContent {
                creator: Creator::Initiator,
                name: l.name.clone(),
                senders: l.senders.clone(),
                description: Some(l.description.clone()),
                transport: Some(IceUdpTransport {
                    ufrag: Some(l.ufrag.clone()),
                    pwd: Some(l.pwd.clone()),
                    candidates: l.candidates.clone(),
                    fingerprints: vec![fp],
                    other: Vec::new(),
                }),
            }
        })
        .collect()
}

pub(super) fn bundle(local: &[LocalContent]) -> Group {
    Group {
        semantics: Semantics::Bundle,
        contents: local.iter().map(|l| GroupContent::new(&l.name)).collect(),
    }
}

pub(super) fn validate_local(contents: &[LocalContent], role: Role) -> Result<(), ApiError> {
    if contents.is_empty() {
        return Err(ApiError::InvalidLocal("no contents"));
    }
    for c in contents {
        if c.fingerprint.hash != Algo::Sha_256 || c.fingerprint.value.len() != SHA256_LEN {
            return Err(ApiError::InvalidLocal("fingerprint must be sha-256"));
        }
        let ok = match role {
            Role::Initiator => c.fingerprint.setup == Setup::Actpass,
            Role::Responder => matches!(c.fingerprint.setup, Setup::Active | Setup::Passive),
        };
        if !ok {
            return Err(ApiError::InvalidLocal("setup inconsistent with role"));
        }
    }
    Ok(())
}

/// Contents without description and transport, for `content-reject`.
pub(super) fn strip(contents: Vec<RtpContent>) -> Vec<RtpContent> {
    contents
        .into_iter()
        .map(|c| RtpContent {
            description: None,
            transport: None,
            ..c
        })
        .collect()
}

/// Local contents added mid-call: names must match a pending `content-add` if any, be new
/// otherwise, and the fingerprint must be our running DTLS certificate's (BUNDLE).
pub(super) fn validate_added(call: &Call, contents: &[LocalContent]) -> Result<(), ApiError> {
    if contents.is_empty() {
        return Err(ApiError::InvalidLocal("no contents"));
    }
    let ours = call.local.first().map(|l| l.fingerprint.value.clone());
    for c in contents {
        if c.fingerprint.hash != Algo::Sha_256 || Some(&c.fingerprint.value) != ours.as_ref() {
            return Err(ApiError::InvalidLocal(
                "fingerprint must be the running certificate's",
            ));
        }
        if call.local.iter().any(|l| l.name == c.name) {
            return Err(ApiError::InvalidLocal("content name already in use"));
        }
    }
    if let Some(pending) = &call.incoming_add {
        let mut a: Vec<&str> = pending.iter().map(|c| c.name.as_str()).collect();
        let mut b: Vec<&str> = contents.iter().map(|c| c.name.as_str()).collect();
        a.sort_unstable();
        b.sort_unstable();
        if a != b {
            return Err(ApiError::InvalidLocal("names differ from the content-add"));
        }
    }
    Ok(())
}
