//! Jingle Message Initiation (XEP-0353, `urn:xmpp:jingle-message:0`) as the clients use it
//! (docs/protocol.md §5).
//!
//! xmpp-parsers' `jingle_message` lacks `<ringing/>` and `<finish/>`, drops the children of
//! `<proceed/>` (where the draft's `<device/>` lives, docs/protocol.md §2.2) and the `<reason/>` of
//! `<reject/>`/`<retract/>`; these types keep all of that.

use minidom::Element;
use xmpp_parsers::jingle::ReasonElement;
use xmpp_parsers::jingle_rtp::Description as RtpDescription;
use xso::{AsXml, FromXml};

use crate::ns;
use crate::xml;

/// `<propose/>`: the caller offers a call with one RTP description per medium
/// (docs/protocol.md §5.2).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::JINGLE_MESSAGE, name = "propose")]
pub struct Propose {
    /// The session id, reused verbatim as the Jingle `sid` (docs/protocol.md §5.1).
    #[xml(attribute)]
    pub id: String,
    /// One `<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='…'/>` per medium.
    /// Descriptions of other applications are dropped while parsing.
    #[xml(child(n = ..))]
    pub descriptions: Vec<RtpDescription>,
}

/// `<ringing/>`: the callee rings (Conversations ≥ 2.12.10; Dino ignores it).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::JINGLE_MESSAGE, name = "ringing")]
pub struct Ringing {
    /// The session id.
    #[xml(attribute)]
    pub id: String,
}

/// `<proceed/>`, possibly carrying the draft's `<device/>` child.
///
/// All children are kept as elements because Conversations reads the first child named
/// `device` in *any* namespace (docs/protocol.md §2.2); [`Proceed::device`] does the same.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::JINGLE_MESSAGE, name = "proceed")]
pub struct Proceed {
    /// The session id.
    #[xml(attribute)]
    pub id: String,
    /// Every child element, `<device/>` included.
    #[xml(element(n = ..))]
    pub children: Vec<Element>,
}

/// `<accept/>`: sent by the callee to its own bare JID so its other devices stop ringing.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::JINGLE_MESSAGE, name = "accept")]
pub struct Accept {
    /// The session id.
    #[xml(attribute)]
    pub id: String,
}

/// `<reject/>`: the callee declines.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::JINGLE_MESSAGE, name = "reject")]
pub struct Reject {
    /// The session id.
    #[xml(attribute)]
    pub id: String,
    /// Optional `<reason xmlns='urn:xmpp:jingle:1'/>`.
    #[xml(child(default))]
    pub reason: Option<ReasonElement>,
}

/// `<retract/>`: the caller withdraws the proposal.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::JINGLE_MESSAGE, name = "retract")]
pub struct Retract {
    /// The session id.
    #[xml(attribute)]
    pub id: String,
    /// Optional `<reason xmlns='urn:xmpp:jingle:1'/>`.
    #[xml(child(default))]
    pub reason: Option<ReasonElement>,
}

/// `<finish/>`: sent after `session-terminate` (Conversations ≥ 2.14, docs/protocol.md §5.1).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::JINGLE_MESSAGE, name = "finish")]
pub struct Finish {
    /// The session id.
    #[xml(attribute)]
    pub id: String,
    /// The same reason as the `session-terminate`.
    #[xml(child(default))]
    pub reason: Option<ReasonElement>,
}

/// Any JMI element.
#[derive(Debug, Clone, PartialEq)]
pub enum JingleMessage {
    /// `<propose/>`
    Propose(Propose),
    /// `<ringing/>`
    Ringing(Ringing),
    /// `<proceed/>`
    Proceed(Proceed),
    /// `<accept/>`
    Accept(Accept),
    /// `<reject/>`
    Reject(Reject),
    /// `<retract/>`
    Retract(Retract),
    /// `<finish/>`
    Finish(Finish),
}

/// Why a JMI element could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JmiError {
    /// An element in the JMI namespace that XEP-0353 does not define.
    #[error("unknown JMI element <{0}/>")]
    UnknownElement(String),
    /// A known element whose content is invalid; `message` is the parser's explanation.
    #[error("invalid <{element}/>: {message}")]
    Invalid {
        /// The element name.
        element: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The session id is empty (it keys every call, so it must not be).
    #[error("<{0}/> has an empty id")]
    EmptyId(&'static str),
}

/// The `<device/>` claim inside a `<proceed/>`, read as leniently as Conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceClaim {
    /// No `<device/>` child: the callee offers no verification.
    Absent,
    /// A usable OMEMO device id (1 ..= 2^31-1, a libsignal registration id, docs/protocol.md §6.2).
    Valid(u32),
    /// A `<device/>` whose `id` is missing, non-numeric, zero, negative or too large:
    /// treated like [`DeviceClaim::Absent`] (Conversations' `Ints.tryParse` yields null).
    Invalid,
}

/// The largest device id a client generates (libsignal registration ids, docs/protocol.md §6.2).
pub const MAX_DEVICE_ID: u32 = i32::MAX as u32;

impl Proceed {
    /// A `<proceed/>` as the engine writes it: `<device/>` namespaced in the draft namespace,
    /// *inside* `<proceed/>` (docs/protocol.md §2.2, §7.3), only when OMEMO is on.
    pub fn new(id: impl Into<String>, device: Option<u32>) -> Self {
        let children = device
            .map(|d| {
                xml::with_attrs(
                    "device",
                    ns::OMEMO_DTLS_SRTP_VERIFICATION,
                    &[("id", &d.to_string())],
                )
            })
            .into_iter()
            .collect();
        Proceed {
            id: id.into(),
            children,
        }
    }

    /// The first child named `device` in any namespace, its `id` parsed leniently
    /// (docs/protocol.md §2.2: Conversations ignores the namespace and yields null on bad ids).
    pub fn device(&self) -> DeviceClaim {
        let Some(device) = self.children.iter().find(|c| c.name() == "device") else {
            return DeviceClaim::Absent;
        };
        // Digits only: no blanks or sign (Java's `Ints.tryParse` rejects blanks and `+` too).
        let digits = device
            .attr("id")
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
        match digits.map(str::parse::<u32>) {
            Some(Ok(id)) if (1..=MAX_DEVICE_ID).contains(&id) => DeviceClaim::Valid(id),
            _ => DeviceClaim::Invalid,
        }
    }
}

impl JingleMessage {
    /// Reads the JMI element among the children of a `<message/>`, if any.
    pub fn from_message(message: &Element) -> Option<Result<JingleMessage, JmiError>> {
        message
            .children()
            .find(|c| c.ns() == ns::JINGLE_MESSAGE)
            .map(JingleMessage::parse)
    }

    /// Parses one element in the JMI namespace.
    pub fn parse(el: &Element) -> Result<JingleMessage, JmiError> {
        fn conv<T>(el: &Element, name: &'static str) -> Result<T, JmiError>
        where
            T: TryFrom<Element, Error = xso::error::FromElementError>,
        {
            T::try_from(el.clone()).map_err(|e| JmiError::Invalid {
                element: name,
                message: e.to_string(),
            })
        }
        if el.ns() != ns::JINGLE_MESSAGE {
            return Err(JmiError::UnknownElement(el.name().to_owned()));
        }
        let msg = match el.name() {
            "propose" => JingleMessage::Propose(conv(el, "propose")?),
            "ringing" => JingleMessage::Ringing(conv(el, "ringing")?),
            "proceed" => JingleMessage::Proceed(conv(el, "proceed")?),
            "accept" => JingleMessage::Accept(conv(el, "accept")?),
            "reject" => JingleMessage::Reject(conv(el, "reject")?),
            "retract" => JingleMessage::Retract(conv(el, "retract")?),
            "finish" => JingleMessage::Finish(conv(el, "finish")?),
            other => return Err(JmiError::UnknownElement(other.to_owned())),
        };
        if msg.id().is_empty() {
            return Err(JmiError::EmptyId(msg.name()));
        }
        Ok(msg)
    }

    /// The session id.
    pub fn id(&self) -> &str {
        match self {
            JingleMessage::Propose(p) => &p.id,
            JingleMessage::Ringing(p) => &p.id,
            JingleMessage::Proceed(p) => &p.id,
            JingleMessage::Accept(p) => &p.id,
            JingleMessage::Reject(p) => &p.id,
            JingleMessage::Retract(p) => &p.id,
            JingleMessage::Finish(p) => &p.id,
        }
    }

    /// The element name.
    pub fn name(&self) -> &'static str {
        match self {
            JingleMessage::Propose(_) => "propose",
            JingleMessage::Ringing(_) => "ringing",
            JingleMessage::Proceed(_) => "proceed",
            JingleMessage::Accept(_) => "accept",
            JingleMessage::Reject(_) => "reject",
            JingleMessage::Retract(_) => "retract",
            JingleMessage::Finish(_) => "finish",
        }
    }

    /// Serialises the element.
    pub fn to_element(&self) -> Element {
        match self.clone() {
            JingleMessage::Propose(p) => p.into(),
            JingleMessage::Ringing(p) => p.into(),
            JingleMessage::Proceed(p) => p.into(),
            JingleMessage::Accept(p) => p.into(),
            JingleMessage::Reject(p) => p.into(),
            JingleMessage::Retract(p) => p.into(),
            JingleMessage::Finish(p) => p.into(),
        }
    }
}
