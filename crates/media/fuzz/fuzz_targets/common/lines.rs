//! A line format for the Jingle-shaped parameters a peer sends, so that seeds can be written
//! from the golden stanzas (the call engine converts XML into the same values):
//!
//! ```text
//! fingerprint <hash> <value>          setup <actpass|active|passive>
//! ufrag <u>                           pwd <p>
//! candidate <foundation> <component> <protocol> <priority> <ip> <port> <type> <generation> <id> [<rel-ip> <rel-port>]
//! payload <id> <name> <clockrate> <channels> [<name>=<value> …]
//! rtcp-mux                            source <ssrc> [<cname>]
//! hdrext <id> <uri>                   trickle <candidate fields as above>
//! ```
//!
//! Numbers are read with `str::parse`, as the XML parsers do; what the harness cannot read is
//! skipped. Values whose parsing belongs to the media crate (`Fingerprint::parse`,
//! `Setup::parse`, `CandidateType::parse`) are kept as text and parsed by the caller.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use shieldcall_media::{
    CandidateType, IceCandidate, ParamsError, PayloadType, RtpDescription, RtpHdrext, RtpSource,
};

pub struct Lines {
    pub fingerprint: Option<(String, String)>,
    pub setup: Option<String>,
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// Candidates whose `type` parsed; `(type text, result)` of every attempt in `types`.
    pub candidates: Vec<IceCandidate>,
    pub trickled: Vec<IceCandidate>,
    pub types: Vec<(String, Result<CandidateType, ParamsError>)>,
    pub description: RtpDescription,
}

fn candidate(f: &[&str], types: &mut Vec<(String, Result<CandidateType, ParamsError>)>) -> Option<IceCandidate> {
    let ty = *f.get(6)?;
    let kind = CandidateType::parse(ty);
    types.push((ty.to_owned(), kind.clone()));
    let related = match (f.get(9), f.get(10)) {
        (Some(ip), Some(port)) => Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?)),
        _ => None,
    };
    Some(IceCandidate {
        foundation: (*f.first()?).to_owned(),
        component: f.get(1)?.parse().ok()?,
        protocol: (*f.get(2)?).to_owned(),
        priority: f.get(3)?.parse().ok()?,
        ip: f.get(4)?.parse::<IpAddr>().ok()?,
        port: f.get(5)?.parse().ok()?,
        kind: kind.ok()?,
        generation: f.get(7)?.parse().ok()?,
        id: (*f.get(8).unwrap_or(&"")).to_owned(),
        related,
    })
}

pub fn parse(text: &str) -> Lines {
    let mut l = Lines {
        fingerprint: None,
        setup: None,
        ufrag: None,
        pwd: None,
        candidates: Vec::new(),
        trickled: Vec::new(),
        types: Vec::new(),
        description: RtpDescription {
            media: "audio".into(),
            payload_types: Vec::new(),
            rtcp_mux: false,
            sources: Vec::new(),
            hdrexts: Vec::new(),
        },
    };
    for line in text.lines().take(256) {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let f: Vec<&str> = rest.split(' ').collect();
        match key {
            "fingerprint" => {
                let (hash, value) = rest.split_once(' ').unwrap_or((rest, ""));
                l.fingerprint = Some((hash.to_owned(), value.to_owned()));
            }
            "setup" => l.setup = Some(rest.to_owned()),
            "ufrag" => l.ufrag = Some(rest.to_owned()),
            "pwd" => l.pwd = Some(rest.to_owned()),
            "media" => l.description.media = rest.to_owned(),
            "candidate" => l.candidates.extend(candidate(&f, &mut l.types)),
            "trickle" => l.trickled.extend(candidate(&f, &mut l.types)),
            "payload" => {
                let pt = (|| {
                    Some(PayloadType {
                        id: f.first()?.parse().ok()?,
                        name: (*f.get(1)?).to_owned(),
                        clockrate: f.get(2)?.parse().ok()?,
                        channels: f.get(3).and_then(|c| c.parse().ok()).unwrap_or(1),
                        parameters: f
                            .iter()
                            .skip(4)
                            .map(|p| {
                                let (n, v) = p.split_once('=').unwrap_or((p, ""));
                                (n.to_owned(), v.to_owned())
                            })
                            .collect(),
                    })
                })();
                l.description.payload_types.extend(pt);
            }
            "rtcp-mux" => l.description.rtcp_mux = true,
            "source" => {
                if let Some(Ok(ssrc)) = f.first().map(|s| s.parse()) {
                    let cname = f.get(1).map(|c| (*c).to_owned());
                    l.description.sources.push(RtpSource { ssrc, cname });
                }
            }
            "hdrext" => {
                if let (Some(Ok(id)), Some(uri)) = (f.first().map(|s| s.parse()), f.get(1)) {
                    l.description.hdrexts.push(RtpHdrext {
                        id,
                        uri: (*uri).to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
    l
}
