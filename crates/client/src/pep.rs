//! PEP (XEP-0163) over pubsub (XEP-0060): publish with publish-options, reconfigure a node that
//! answers `precondition-not-met`, and fetch the last item of a node.

use minidom::Element;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::stanza_error::{DefinedCondition, StanzaError};

use crate::connection::Xmpp;
use crate::error::ClientError;

/// XEP-0060 pubsub.
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0060 pubsub owner use cases (node configuration).
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// XEP-0060 pubsub errors (`precondition-not-met`).
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// XEP-0060 pubsub events (notifications).
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0004 data forms.
pub const DATA_FORMS: &str = "jabber:x:data";

/// The outcome of fetching a node's item.
#[derive(Debug)]
pub enum Fetched {
    /// The payload of the item.
    Item(Element),
    /// The node or item does not exist, or the owner does not let us see it. Servers differ:
    /// Prosody says `item-not-found`/`forbidden`, ejabberd also `not-authorized`.
    Missing(String),
}

fn text_el(name: &str, ns: &str, text: &str) -> Element {
    Element::builder(name, ns).append(text.to_owned()).build()
}

fn form(form_type: &str, fields: &[(&str, &str)]) -> Element {
    let mut x = Element::builder("x", DATA_FORMS)
        .attr(nc!("type"), "submit")
        .append(
            Element::builder("field", DATA_FORMS)
                .attr(nc!("var"), "FORM_TYPE")
                .attr(nc!("type"), "hidden")
                .append(text_el("value", DATA_FORMS, form_type))
                .build(),
        );
    for (var, value) in fields {
        x = x.append(
            Element::builder("field", DATA_FORMS)
                .attr(nc!("var"), *var)
                .append(text_el("value", DATA_FORMS, value))
                .build(),
        );
    }
    x.build()
}

/// The access model we want on our OMEMO nodes: anyone may fetch them (Conversations needs this
/// to start a session with someone not in its roster).
pub const OPEN: &[(&str, &str)] = &[("pubsub#access_model", "open")];

fn publish_element(
    node: &str,
    item_id: &str,
    payload: Element,
    options: Option<&[(&str, &str)]>,
) -> Element {
    let mut pubsub = Element::builder("pubsub", PUBSUB).append(
        Element::builder("publish", PUBSUB)
            .attr(nc!("node"), node)
            .append(
                Element::builder("item", PUBSUB)
                    .attr(nc!("id"), item_id)
                    .append(payload)
                    .build(),
            )
            .build(),
    );
    if let Some(opts) = options {
        pubsub = pubsub.append(
            Element::builder("publish-options", PUBSUB)
                .append(form(
                    "http://jabber.org/protocol/pubsub#publish-options",
                    opts,
                ))
                .build(),
        );
    }
    pubsub.build()
}

fn describe(e: &StanzaError) -> String {
    let cond = format!("{:?}", e.defined_condition);
    let extra = e
        .other
        .as_ref()
        .map(|o| format!(" ({})", o.name()))
        .unwrap_or_default();
    let text = e
        .texts
        .values()
        .next()
        .map(|t| format!(": {t}"))
        .unwrap_or_default();
    format!("{cond}{extra}{text}")
}

fn is_precondition_not_met(e: &StanzaError) -> bool {
    e.other
        .as_ref()
        .is_some_and(|o| o.is("precondition-not-met", PUBSUB_ERRORS))
}

/// Publishes `payload` as item `item_id` of our own PEP node `node` with an open access model.
///
/// * `precondition-not-met` (node exists with another access model): configure it, publish again.
/// * `resource-constraint`/`not-acceptable`/`bad-request` about the options (ejabberd refuses
///   fields it does not know): publish without options, then configure the node.
pub async fn publish(
    xmpp: &Xmpp,
    node: &str,
    item_id: &str,
    payload: Element,
) -> Result<(), ClientError> {
    let first = xmpp
        .iq(
            None,
            true,
            publish_element(node, item_id, payload.clone(), Some(OPEN)),
        )
        .await?;
    let Err(e) = first else { return Ok(()) };
    if is_precondition_not_met(&e) {
        configure(xmpp, node).await?;
        return match xmpp
            .iq(
                None,
                true,
                publish_element(node, item_id, payload, Some(OPEN)),
            )
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) => Err(ClientError::Protocol(format!(
                "publishing {node} after reconfiguring it: {}",
                describe(&e)
            ))),
        };
    }
    if matches!(
        e.defined_condition,
        DefinedCondition::ResourceConstraint
            | DefinedCondition::NotAcceptable
            | DefinedCondition::BadRequest
    ) {
        match xmpp
            .iq(None, true, publish_element(node, item_id, payload, None))
            .await?
        {
            Ok(_) => return configure(xmpp, node).await,
            Err(e2) => {
                return Err(ClientError::Protocol(format!(
                    "publishing {node}: {}",
                    describe(&e2)
                )));
            }
        }
    }
    Err(ClientError::Protocol(format!(
        "publishing {node}: {}",
        describe(&e)
    )))
}

/// Sets our node's access model to open.
pub async fn configure(xmpp: &Xmpp, node: &str) -> Result<(), ClientError> {
    let el = Element::builder("pubsub", PUBSUB_OWNER)
        .append(
            Element::builder("configure", PUBSUB_OWNER)
                .attr(nc!("node"), node)
                .append(form("http://jabber.org/protocol/pubsub#node_config", OPEN))
                .build(),
        )
        .build();
    match xmpp.iq(None, true, el).await? {
        Ok(_) => Ok(()),
        Err(e) => Err(ClientError::Protocol(format!(
            "configuring {node}: {}",
            describe(&e)
        ))),
    }
}

/// Subscribes our bare JID to `node` at `jid` (for contacts outside the roster, whom `+notify`
/// does not cover). Returns the server's refusal as an error.
pub async fn subscribe(xmpp: &Xmpp, jid: Jid, node: &str) -> Result<(), ClientError> {
    let el = Element::builder("pubsub", PUBSUB)
        .append(
            Element::builder("subscribe", PUBSUB)
                .attr(nc!("node"), node)
                .attr(nc!("jid"), xmpp.bare().to_string())
                .build(),
        )
        .build();
    match xmpp.iq(Some(jid), true, el).await? {
        Ok(_) => Ok(()),
        Err(e) => Err(ClientError::Protocol(format!(
            "subscribing to {node}: {}",
            describe(&e)
        ))),
    }
}

/// Fetches the newest item of `node` at `jid` (our own account when `None`).
pub async fn fetch(xmpp: &Xmpp, jid: Option<Jid>, node: &str) -> Result<Fetched, ClientError> {
    let el = Element::builder("pubsub", PUBSUB)
        .append(
            Element::builder("items", PUBSUB)
                .attr(nc!("node"), node)
                .attr(nc!("max_items"), "1")
                .build(),
        )
        .build();
    match xmpp.iq(jid, false, el).await? {
        Ok(Some(pubsub)) => {
            let item = pubsub
                .get_child("items", PUBSUB)
                .and_then(|items| items.children().filter(|c| c.is("item", PUBSUB)).last())
                .and_then(|item| item.children().next());
            Ok(match item {
                Some(payload) => Fetched::Item(payload.clone()),
                None => Fetched::Missing("no item".into()),
            })
        }
        Ok(None) => Ok(Fetched::Missing("empty answer".into())),
        Err(e) => match e.defined_condition {
            DefinedCondition::ItemNotFound
            | DefinedCondition::Forbidden
            | DefinedCondition::NotAuthorized
            | DefinedCondition::ServiceUnavailable
            | DefinedCondition::FeatureNotImplemented => Ok(Fetched::Missing(describe(&e))),
            _ => Err(ClientError::Protocol(format!(
                "fetching {node}: {}",
                describe(&e)
            ))),
        },
    }
}

/// Items of a pubsub event notification `<event><items node=…><item>payload</item></items></event>`:
/// `(node, payload of the last item)`.
pub fn event_item(message_payload: &Element) -> Option<(String, Element)> {
    if !message_payload.is("event", PUBSUB_EVENT) {
        return None;
    }
    let items = message_payload.get_child("items", PUBSUB_EVENT)?;
    let node = items.attr("node")?.to_owned();
    let item = items
        .children()
        .filter(|c| c.is("item", PUBSUB_EVENT))
        .last()?;
    Some((node, item.children().next()?.clone()))
}
