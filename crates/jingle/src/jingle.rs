//! The `<jingle/>` envelope (XEP-0166) with RTP contents and our own ICE-UDP transport.
//!
//! The action, creator, senders, reason and grouping types are xmpp-parsers'; only the content
//! is our own, because xmpp-parsers' content holds its lossy ICE-UDP transport type.
//! RTP descriptions are parsed with xmpp-parsers, which discards `<encryption/>` (SDES keys that
//! Dino offers in clear text, dino-0.4.2/README.md): they are never read nor echoed.

use core::str::FromStr;

use minidom::Element;
use xmpp_parsers::jingle::{Action, Creator, ReasonElement, Senders};
use xmpp_parsers::jingle_grouping::Group;
use xmpp_parsers::jingle_rtp::Description as RtpDescription;

use crate::ns;
use crate::transport::{IceUdpTransport, TransportError};
use crate::xml;

/// Most contents accepted in one `<jingle/>`: audio and video plus room to spare. Bounds the
/// work done (one decryption each) for a hostile session-initiate.
pub const MAX_CONTENTS: usize = 4;

/// One `<content/>` of an RTP session.
#[derive(Debug, Clone, PartialEq)]
pub struct RtpContent {
    /// `creator`; Conversations writes `initiator` on all contents in both directions.
    pub creator: Creator,
    /// `name` (`0`, `1` in Conversations; `audio`, `video` in Dino).
    pub name: String,
    /// `senders`, `both` when absent.
    pub senders: Senders,
    /// The RTP description, if any (absent in `transport-info`).
    pub description: Option<RtpDescription>,
    /// The ICE-UDP transport, if any.
    pub transport: Option<IceUdpTransport>,
}

/// A parsed `<jingle/>` element.
#[derive(Debug, Clone, PartialEq)]
pub struct JingleEnvelope {
    /// The action.
    pub action: Action,
    /// The session id (= JMI id).
    pub sid: String,
    /// `initiator`, as written by Dino.
    pub initiator: Option<String>,
    /// The contents.
    pub contents: Vec<RtpContent>,
    /// `<reason/>` (session-terminate).
    pub reason: Option<ReasonElement>,
    /// `<group/>` (BUNDLE).
    pub group: Option<Group>,
}

/// Why a `<jingle/>` element could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JingleError {
    /// Not `<jingle xmlns='urn:xmpp:jingle:1'/>`.
    #[error("not a jingle element")]
    NotJingle,
    /// `action` missing or unknown.
    #[error("missing or unknown action")]
    BadAction,
    /// `sid` missing or empty.
    #[error("missing sid")]
    MissingSid,
    /// A content without `name` or with a bad `creator`/`senders`.
    #[error("invalid content: {0}")]
    InvalidContent(&'static str),
    /// More than [`MAX_CONTENTS`] contents.
    #[error("more than {MAX_CONTENTS} contents")]
    TooManyContents,
    /// An RTP description xmpp-parsers rejects.
    #[error("invalid description: {0}")]
    InvalidDescription(String),
    /// A transport that cannot be read.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// A transport other than ICE-UDP.
    #[error("unsupported transport {0}")]
    UnsupportedTransport(String),
    /// `<reason/>` or `<group/>` that xmpp-parsers rejects.
    #[error("invalid {0}")]
    InvalidChild(&'static str),
}

impl JingleEnvelope {
    /// A new envelope without contents.
    pub fn new(action: Action, sid: impl Into<String>) -> Self {
        JingleEnvelope {
            action,
            sid: sid.into(),
            initiator: None,
            contents: Vec::new(),
            reason: None,
            group: None,
        }
    }

    /// Parses `<jingle/>`.
    pub fn parse(el: &Element) -> Result<Self, JingleError> {
        if !el.is("jingle", ns::JINGLE) {
            return Err(JingleError::NotJingle);
        }
        let action = el
            .attr("action")
            .and_then(|a| Action::from_str(a).ok())
            .ok_or(JingleError::BadAction)?;
        let sid = el
            .attr("sid")
            .filter(|s| !s.is_empty())
            .ok_or(JingleError::MissingSid)?;
        let mut j = JingleEnvelope::new(action, sid);
        j.initiator = el.attr("initiator").map(str::to_owned);
        for child in el.children() {
            if child.is("content", ns::JINGLE) {
                if j.contents.len() >= MAX_CONTENTS {
                    return Err(JingleError::TooManyContents);
                }
                j.contents.push(parse_content(child)?);
            } else if child.is("reason", ns::JINGLE) {
                j.reason = Some(
                    ReasonElement::try_from(child.clone())
                        .map_err(|_| JingleError::InvalidChild("reason"))?,
                );
            } else if child.is("group", ns::JINGLE_GROUPING) {
                j.group = Some(
                    Group::try_from(child.clone())
                        .map_err(|_| JingleError::InvalidChild("group"))?,
                );
            }
        }
        Ok(j)
    }

    /// Serialises `<jingle/>`.
    pub fn to_element(&self) -> Element {
        let mut el = xml::with_attrs(
            "jingle",
            ns::JINGLE,
            &[("action", action_str(&self.action)), ("sid", &self.sid)],
        );
        if let Some(i) = &self.initiator {
            xml::set_attr(&mut el, "initiator", i.as_str());
        }
        for c in &self.contents {
            let mut ce = xml::with_attrs(
                "content",
                ns::JINGLE,
                &[("creator", creator_str(&c.creator)), ("name", &c.name)],
            );
            if c.senders != Senders::Both {
                xml::set_attr(&mut ce, "senders", senders_str(&c.senders));
            }
            if let Some(d) = &c.description {
                ce.append_child(Element::from(d.clone()));
            }
            if let Some(t) = &c.transport {
                ce.append_child(t.to_element());
            }
            el.append_child(ce);
        }
        if let Some(r) = &self.reason {
            el.append_child(Element::from(r.clone()));
        }
        if let Some(g) = &self.group {
            el.append_child(Element::from(g.clone()));
        }
        el
    }
}

fn parse_content(el: &Element) -> Result<RtpContent, JingleError> {
    let creator = match el.attr("creator") {
        Some(c) => Creator::from_str(c).map_err(|_| JingleError::InvalidContent("creator"))?,
        // Lenient like the clients: a missing creator means the initiator created it.
        None => Creator::Initiator,
    };
    let name = el
        .attr("name")
        .filter(|n| !n.is_empty())
        .ok_or(JingleError::InvalidContent("name"))?
        .to_owned();
    let senders = match el.attr("senders") {
        Some(s) => Senders::from_str(s).map_err(|_| JingleError::InvalidContent("senders"))?,
        None => Senders::Both,
    };
    let mut content = RtpContent {
        creator,
        name,
        senders,
        description: None,
        transport: None,
    };
    for child in el.children() {
        if child.is("description", ns::JINGLE_RTP) {
            content.description = Some(
                RtpDescription::try_from(child.clone())
                    .map_err(|e| JingleError::InvalidDescription(e.to_string()))?,
            );
        } else if child.name() == "transport" {
            if child.ns() != ns::JINGLE_ICE_UDP {
                return Err(JingleError::UnsupportedTransport(child.ns()));
            }
            content.transport = Some(IceUdpTransport::parse(child)?);
        }
    }
    Ok(content)
}

/// The attribute value of an action.
pub fn action_str(a: &Action) -> &'static str {
    match a {
        Action::ContentAccept => "content-accept",
        Action::ContentAdd => "content-add",
        Action::ContentModify => "content-modify",
        Action::ContentReject => "content-reject",
        Action::ContentRemove => "content-remove",
        Action::DescriptionInfo => "description-info",
        Action::SecurityInfo => "security-info",
        Action::SessionAccept => "session-accept",
        Action::SessionInfo => "session-info",
        Action::SessionInitiate => "session-initiate",
        Action::SessionTerminate => "session-terminate",
        Action::TransportAccept => "transport-accept",
        Action::TransportInfo => "transport-info",
        Action::TransportReject => "transport-reject",
        Action::TransportReplace => "transport-replace",
    }
}

fn creator_str(c: &Creator) -> &'static str {
    match c {
        Creator::Initiator => "initiator",
        Creator::Responder => "responder",
    }
}

fn senders_str(s: &Senders) -> &'static str {
    match s {
        Senders::Both => "both",
        Senders::Initiator => "initiator",
        Senders::None => "none",
        Senders::Responder => "responder",
    }
}
