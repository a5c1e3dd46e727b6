//! XML of legacy OMEMO: `<bundle/>`, the device `<list/>` and `<encrypted/>`
//! (docs/protocol.md §2.3, §6.1). Parsed once at the edge into typed values; every malformed input
//! names its element, attribute and rule.
//!
//! Two inputs, one set of rules: a `minidom::Element` (what the XMPP stream hands the client) and
//! XML text (the interop shim, tests). Text is read with quick-xml into a small tree of
//! [`TextNode`]s (about five times faster than building a minidom tree, which matters for the
//! per-message cost); both trees go through the same generic validation. quick-xml checks less
//! than the stream parser: on malformed XML it may accept what rxml refuses (a property test
//! shows that whatever rxml accepts, the text reader reads to the same value). Only the shim and
//! tests read text; the client's stanzas come from the stream parser.
//! We do not use xmpp-parsers' `legacy_omemo`: it decodes keys as opaque bytes and reports
//! generic errors, while peers' bundles need the 33-byte key checks and field-precise errors here.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use minidom::Element;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use rxml::xml_ncname;

use crate::error::XmlError;
use crate::keys::{PublicKey, SIGNATURE_LEN};
use crate::ns::AXOLOTL;

/// Most one-time prekeys accepted in a peer's bundle (Conversations publishes 100).
pub const MAX_BUNDLE_PREKEYS: usize = 1000;
/// Most devices accepted in a device list.
pub const MAX_DEVICES: usize = 1000;
/// Most `<key>` elements accepted in one `<encrypted/>` header.
pub const MAX_KEYS: usize = 10_000;

/// A device's published key bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// `signedPreKeyId`.
    pub signed_pre_key_id: u32,
    /// The signed prekey.
    pub signed_pre_key: PublicKey,
    /// XEdDSA signature by the identity key over the 33-byte signed prekey.
    pub signature: Vec<u8>,
    /// Identity key.
    pub identity_key: PublicKey,
    /// One-time prekeys `(preKeyId, key)`.
    pub pre_keys: Vec<(u32, PublicKey)>,
}

/// A device list (item `current` of the device-list node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceList {
    /// Device ids, in document order, without duplicates.
    pub devices: Vec<u32>,
}

/// One `<key/>` of a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyElement {
    /// Recipient device.
    pub rid: u32,
    /// `prekey='true'|'1'`: a PreKeySignalMessage.
    pub prekey: bool,
    /// The serialized Signal message.
    pub data: Vec<u8>,
}

/// An `<encrypted xmlns='eu.siacs.conversations.axolotl'/>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedElement {
    /// Sender device (`<header sid>`).
    pub sid: u32,
    /// Per-device keys.
    pub keys: Vec<KeyElement>,
    /// The IV (12 bytes sent, 12 or 16 accepted later).
    pub iv: Vec<u8>,
    /// The ciphertext; `None` for key-transport messages.
    pub payload: Option<Vec<u8>>,
}

/// What validation needs from an element, implemented by minidom's tree and by [`TextNode`].
pub trait XmlNode {
    /// Children iterator.
    type Children<'a>: Iterator<Item = &'a Self>
    where
        Self: 'a;
    /// Local name.
    fn local_name(&self) -> &str;
    /// Namespace URI ("" when none).
    fn namespace(&self) -> String;
    /// True for `name` in the OMEMO namespace.
    fn is_axolotl(&self, name: &str) -> bool;
    /// An attribute without namespace.
    fn attribute(&self, name: &str) -> Option<&str>;
    /// The concatenated direct text content.
    fn text_content(&self) -> String;
    /// Child elements.
    fn child_elements(&self) -> Self::Children<'_>;
}

impl XmlNode for Element {
    type Children<'a> = minidom::element::Children<'a>;
    fn local_name(&self) -> &str {
        self.name()
    }
    fn namespace(&self) -> String {
        self.ns()
    }
    fn is_axolotl(&self, name: &str) -> bool {
        self.is(name, AXOLOTL)
    }
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attrs()
            .iter()
            .find(|((ns, k), _)| **ns == rxml::Namespace::NONE && k.as_str() == name)
            .map(|(_, v)| v.as_str())
    }
    fn text_content(&self) -> String {
        self.text()
    }
    fn child_elements(&self) -> Self::Children<'_> {
        self.children()
    }
}

/// A lightweight element read from XML text (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextNode {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<TextNode>,
}

impl XmlNode for TextNode {
    type Children<'a> = std::slice::Iter<'a, TextNode>;
    fn local_name(&self) -> &str {
        &self.name
    }
    fn namespace(&self) -> String {
        self.ns.clone()
    }
    fn is_axolotl(&self, name: &str) -> bool {
        self.name == name && self.ns == AXOLOTL
    }
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn text_content(&self) -> String {
        self.text.clone()
    }
    fn child_elements(&self) -> Self::Children<'_> {
        self.children.iter()
    }
}

/// Deepest nesting accepted in XML text (OMEMO elements are three levels deep).
pub const MAX_TEXT_DEPTH: usize = 16;

/// Reads XML text into a [`TextNode`] tree: one root element, namespaces resolved, the five
/// predefined entities and character references expanded; comments, processing instructions and
/// DTDs are refused, as the XMPP stream parser refuses them.
pub fn parse_text(xml: &str) -> Result<TextNode, XmlError> {
    let bad = |what: String| XmlError::NotWellFormed(what);
    let mut reader = quick_xml::NsReader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<TextNode> = Vec::new();
    let mut root: Option<TextNode> = None;
    // Like minidom, stop at the end of the root element and ignore what follows.
    while root.is_none() {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| bad(e.to_string()))?;
        let ns = match ns {
            ResolveResult::Bound(n) => std::str::from_utf8(n.as_ref())
                .map_err(|e| bad(e.to_string()))?
                .to_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => {
                return Err(bad(format!(
                    "unknown prefix '{}'",
                    String::from_utf8_lossy(&p)
                )));
            }
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if stack.len() >= MAX_TEXT_DEPTH {
                    return Err(bad(format!("nested deeper than {MAX_TEXT_DEPTH}")));
                }
                let name = std::str::from_utf8(e.local_name().as_ref())
                    .map_err(|e| bad(e.to_string()))?
                    .to_owned();
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(|e| bad(e.to_string()))?;
                    let key = a.key.as_ref();
                    // Namespace declarations and prefixed attributes are not OMEMO attributes.
                    if key.starts_with(b"xmlns") || key.contains(&b':') {
                        continue;
                    }
                    let k = std::str::from_utf8(key)
                        .map_err(|e| bad(e.to_string()))?
                        .to_owned();
                    let v = a
                        .unescape_value()
                        .map_err(|e| bad(e.to_string()))?
                        .into_owned();
                    attrs.push((k, v));
                }
                let node = TextNode {
                    name,
                    ns,
                    attrs,
                    ..TextNode::default()
                };
                if matches!(event, Event::Start(_)) {
                    stack.push(node);
                } else {
                    close(&mut stack, &mut root, node);
                }
            }
            Event::End(_) => {
                let node = stack
                    .pop()
                    .ok_or_else(|| bad("unbalanced end tag".into()))?;
                close(&mut stack, &mut root, node);
            }
            Event::Text(t) => {
                let raw = t.decode().map_err(|e| bad(e.to_string()))?;
                push_text(&mut stack, &raw)?;
            }
            Event::CData(t) => {
                let raw = t.decode().map_err(|e| bad(e.to_string()))?;
                push_text(&mut stack, &raw)?;
            }
            Event::GeneralRef(r) => {
                let expanded = match r.resolve_char_ref().map_err(|e| bad(e.to_string()))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| bad(e.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| bad(format!("unknown entity '&{name};'")))?
                            .to_owned()
                    }
                };
                push_text(&mut stack, &expanded)?;
            }
            Event::Decl(_) => {}
            Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {
                return Err(bad(
                    "comments, processing instructions and DTDs are not allowed".into(),
                ));
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(bad("unclosed element at end of input".into()));
    }
    root.ok_or_else(|| bad("no element".into()))
}

fn close(stack: &mut [TextNode], root: &mut Option<TextNode>, node: TextNode) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn push_text(stack: &mut [TextNode], text: &str) -> Result<(), XmlError> {
    // Text outside the root is ignored, as minidom ignores it.
    if let Some(top) = stack.last_mut() {
        top.text.push_str(text);
    }
    Ok(())
}

fn expect<N: XmlNode>(el: &N, name: &'static str) -> Result<(), XmlError> {
    if el.is_axolotl(name) {
        Ok(())
    } else {
        Err(XmlError::WrongElement {
            expected: name,
            ns: AXOLOTL,
            got: el.local_name().to_owned(),
            got_ns: el.namespace(),
        })
    }
}

fn truncated(v: &str) -> String {
    v.chars().take(64).collect()
}

/// A device id: decimal, 1..=2^31-1 per XEP-0384 v0.3 and libsignal's registration ids; we accept
/// any u32 except 0 from peers since some clients use the full unsigned range.
fn device_id_attr<N: XmlNode>(
    el: &N,
    element: &'static str,
    attribute: &'static str,
) -> Result<u32, XmlError> {
    let v = el
        .attribute(attribute)
        .ok_or(XmlError::MissingAttribute { element, attribute })?;
    match v.trim().parse::<u32>() {
        Ok(0) => Err(XmlError::BadAttribute {
            element,
            attribute,
            value: truncated(v),
            rule: "device ids start at 1",
        }),
        Ok(n) => Ok(n),
        Err(_) => Err(XmlError::BadAttribute {
            element,
            attribute,
            value: truncated(v),
            rule: "must be a decimal integer in 1..=4294967295",
        }),
    }
}

fn id_attr<N: XmlNode>(
    el: &N,
    element: &'static str,
    attribute: &'static str,
) -> Result<u32, XmlError> {
    let v = el
        .attribute(attribute)
        .ok_or(XmlError::MissingAttribute { element, attribute })?;
    v.trim().parse::<u32>().map_err(|_| XmlError::BadAttribute {
        element,
        attribute,
        value: truncated(v),
        rule: "must be a decimal integer in 0..=4294967295",
    })
}

fn b64<N: XmlNode>(el: &N, element: &'static str) -> Result<Vec<u8>, XmlError> {
    let text: String = el
        .text_content()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    B64.decode(text.as_bytes())
        .map_err(|_| XmlError::Base64 { element })
}

fn single_child<'a, N: XmlNode>(
    el: &'a N,
    parent: &'static str,
    child: &'static str,
) -> Result<&'a N, XmlError> {
    let mut it = el.child_elements().filter(|c| c.is_axolotl(child));
    let first = it.next().ok_or(XmlError::MissingChild {
        element: parent,
        child,
    })?;
    if it.next().is_some() {
        return Err(XmlError::DuplicateChild {
            element: parent,
            child,
        });
    }
    Ok(first)
}

fn key_from(element: &'static str, bytes: &[u8]) -> Result<PublicKey, XmlError> {
    PublicKey::from_bytes(element, bytes).map_err(|source| XmlError::Key { element, source })
}

fn text_el(name: &'static str, text: String) -> Element {
    Element::builder(name, AXOLOTL).append(text).build()
}

/// Parses a string into an element, mapping minidom's error.
///
/// What the text reader ([`parse_text`]) finds not well-formed is refused here too: minidom
/// keeps the last of duplicated attributes (`<device id='x' id='1'/>`), which XML forbids, so
/// the two readers would otherwise judge different documents (found by the `device_list_xml`
/// fuzz target).
pub fn parse_element(xml: &str) -> Result<Element, XmlError> {
    parse_text(xml)?;
    xml.parse::<Element>()
        .map_err(|e| XmlError::NotWellFormed(e.to_string()))
}

/// Serializes an element (namespace as the default `xmlns`).
pub fn to_string(el: &Element) -> String {
    String::from(el)
}

impl Bundle {
    /// Parses `<bundle xmlns='eu.siacs.conversations.axolotl'>`.
    pub fn from_element<N: XmlNode>(el: &N) -> Result<Self, XmlError> {
        expect(el, "bundle")?;
        let spk = single_child(el, "bundle", "signedPreKeyPublic")?;
        let signed_pre_key_id = id_attr(spk, "signedPreKeyPublic", "signedPreKeyId")?;
        let signed_pre_key = key_from("signedPreKeyPublic", &b64(spk, "signedPreKeyPublic")?)?;
        let signature = b64(
            single_child(el, "bundle", "signedPreKeySignature")?,
            "signedPreKeySignature",
        )?;
        if signature.len() != SIGNATURE_LEN {
            return Err(XmlError::BadContent {
                element: "signedPreKeySignature",
                rule: format!(
                    "signature must be {SIGNATURE_LEN} bytes, got {}",
                    signature.len()
                ),
            });
        }
        let identity_key = key_from(
            "identityKey",
            &b64(single_child(el, "bundle", "identityKey")?, "identityKey")?,
        )?;
        let prekeys_el = single_child(el, "bundle", "prekeys")?;
        let mut pre_keys = Vec::new();
        for pk in prekeys_el
            .child_elements()
            .filter(|c| c.is_axolotl("preKeyPublic"))
        {
            if pre_keys.len() == MAX_BUNDLE_PREKEYS {
                return Err(XmlError::BadContent {
                    element: "prekeys",
                    rule: format!("more than {MAX_BUNDLE_PREKEYS} prekeys"),
                });
            }
            let id = id_attr(pk, "preKeyPublic", "preKeyId")?;
            pre_keys.push((id, key_from("preKeyPublic", &b64(pk, "preKeyPublic")?)?));
        }
        Ok(Self {
            signed_pre_key_id,
            signed_pre_key,
            signature,
            identity_key,
            pre_keys,
        })
    }

    /// Parses the XML text of a bundle.
    pub fn from_xml(xml: &str) -> Result<Self, XmlError> {
        Self::from_element(&parse_text(xml)?)
    }

    /// Builds the element in Conversations' shape.
    pub fn to_element(&self) -> Element {
        let prekeys = Element::builder("prekeys", AXOLOTL)
            .append_all(self.pre_keys.iter().map(|(id, k)| {
                Element::builder("preKeyPublic", AXOLOTL)
                    .attr(xml_ncname!("preKeyId").to_owned(), id.to_string())
                    .append(B64.encode(k.serialize()))
                    .build()
            }))
            .build();
        Element::builder("bundle", AXOLOTL)
            .append(
                Element::builder("signedPreKeyPublic", AXOLOTL)
                    .attr(
                        xml_ncname!("signedPreKeyId").to_owned(),
                        self.signed_pre_key_id.to_string(),
                    )
                    .append(B64.encode(self.signed_pre_key.serialize()))
                    .build(),
            )
            .append(text_el(
                "signedPreKeySignature",
                B64.encode(&self.signature),
            ))
            .append(text_el(
                "identityKey",
                B64.encode(self.identity_key.serialize()),
            ))
            .append(prekeys)
            .build()
    }

    /// XML text.
    pub fn to_xml(&self) -> String {
        to_string(&self.to_element())
    }
}

impl DeviceList {
    /// Parses `<list xmlns='eu.siacs.conversations.axolotl'>`; repeated ids count once.
    pub fn from_element<N: XmlNode>(el: &N) -> Result<Self, XmlError> {
        expect(el, "list")?;
        let mut devices = Vec::new();
        for d in el.child_elements().filter(|c| c.is_axolotl("device")) {
            let id = device_id_attr(d, "device", "id")?;
            if !devices.contains(&id) {
                if devices.len() == MAX_DEVICES {
                    return Err(XmlError::BadContent {
                        element: "list",
                        rule: format!("more than {MAX_DEVICES} devices"),
                    });
                }
                devices.push(id);
            }
        }
        Ok(Self { devices })
    }

    /// Parses XML text.
    pub fn from_xml(xml: &str) -> Result<Self, XmlError> {
        Self::from_element(&parse_text(xml)?)
    }

    /// Builds the element.
    pub fn to_element(&self) -> Element {
        Element::builder("list", AXOLOTL)
            .append_all(self.devices.iter().map(|id| {
                Element::builder("device", AXOLOTL)
                    .attr(xml_ncname!("id").to_owned(), id.to_string())
                    .build()
            }))
            .build()
    }
}

impl EncryptedElement {
    /// Parses `<encrypted xmlns='eu.siacs.conversations.axolotl'>` (children in any order).
    pub fn from_element<N: XmlNode>(el: &N) -> Result<Self, XmlError> {
        expect(el, "encrypted")?;
        let header = single_child(el, "encrypted", "header")?;
        let sid = device_id_attr(header, "header", "sid")?;
        let iv = b64(single_child(header, "header", "iv")?, "iv")?;
        let mut keys = Vec::new();
        for k in header.child_elements().filter(|c| c.is_axolotl("key")) {
            if keys.len() == MAX_KEYS {
                return Err(XmlError::BadContent {
                    element: "header",
                    rule: format!("more than {MAX_KEYS} keys"),
                });
            }
            let prekey = match k.attribute("prekey").map(str::trim) {
                None => false,
                Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
                Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
                Some(v) => {
                    return Err(XmlError::BadAttribute {
                        element: "key",
                        attribute: "prekey",
                        value: truncated(v),
                        rule: "must be true, 1, false or 0",
                    });
                }
            };
            keys.push(KeyElement {
                rid: device_id_attr(k, "key", "rid")?,
                prekey,
                data: b64(k, "key")?,
            });
        }
        let mut payloads = el.child_elements().filter(|c| c.is_axolotl("payload"));
        let payload = match payloads.next() {
            Some(p) => Some(b64(p, "payload")?),
            None => None,
        };
        if payloads.next().is_some() {
            return Err(XmlError::DuplicateChild {
                element: "encrypted",
                child: "payload",
            });
        }
        Ok(Self {
            sid,
            keys,
            iv,
            payload,
        })
    }

    /// Parses XML text.
    pub fn from_xml(xml: &str) -> Result<Self, XmlError> {
        Self::from_element(&parse_text(xml)?)
    }

    /// Builds the element: `<key/>`s, then `<iv/>`, as Conversations orders them.
    pub fn to_element(&self) -> Element {
        let header = Element::builder("header", AXOLOTL)
            .attr(xml_ncname!("sid").to_owned(), self.sid.to_string())
            .append_all(self.keys.iter().map(|k| {
                let b = Element::builder("key", AXOLOTL)
                    .attr(xml_ncname!("rid").to_owned(), k.rid.to_string());
                let b = if k.prekey {
                    b.attr(xml_ncname!("prekey").to_owned(), "true")
                } else {
                    b
                };
                b.append(B64.encode(&k.data)).build()
            }))
            .append(text_el("iv", B64.encode(&self.iv)))
            .build();
        let mut b = Element::builder("encrypted", AXOLOTL).append(header);
        if let Some(p) = &self.payload {
            b = b.append(text_el("payload", B64.encode(p)));
        }
        b.build()
    }

    /// XML text, written directly (the same shape as [`Self::to_element`]; base64 and decimal
    /// numbers need no escaping).
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(
            160 + self
                .keys
                .iter()
                .map(|k| k.data.len() * 4 / 3 + 40)
                .sum::<usize>(),
        );
        out.push_str("<encrypted xmlns='");
        out.push_str(AXOLOTL);
        out.push_str("'><header sid='");
        out.push_str(&self.sid.to_string());
        out.push_str("'>");
        for k in &self.keys {
            out.push_str("<key rid='");
            out.push_str(&k.rid.to_string());
            out.push_str(if k.prekey { "' prekey='true'>" } else { "'>" });
            B64.encode_string(&k.data, &mut out);
            out.push_str("</key>");
        }
        out.push_str("<iv>");
        B64.encode_string(&self.iv, &mut out);
        out.push_str("</iv></header>");
        if let Some(p) = &self.payload {
            out.push_str("<payload>");
            B64.encode_string(p, &mut out);
            out.push_str("</payload>");
        }
        out.push_str("</encrypted>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shape of Dino 0.4.2's element (iv before key), from `data/dino-0.4.2/caller-05`.
    const DINO_ENCRYPTED: &str = "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1942903233'><iv>AAECAwQFBgcICQoL</iv><key rid='129646281'>MwohBQ==</key></header><payload>AAAA</payload></encrypted>";

    #[test]
    fn parses_dino_order_and_round_trips() {
        let e = EncryptedElement::from_xml(DINO_ENCRYPTED).unwrap();
        assert_eq!(e.sid, 1942903233);
        assert_eq!(e.iv.len(), 12);
        assert_eq!(
            e.keys,
            vec![KeyElement {
                rid: 129646281,
                prekey: false,
                data: vec![0x33, 0x0a, 0x21, 0x05]
            }]
        );
        assert_eq!(EncryptedElement::from_xml(&e.to_xml()).unwrap(), e);
    }

    #[test]
    fn prekey_attribute_values() {
        for (v, want) in [
            ("true", true),
            ("1", true),
            ("TRUE", true),
            ("false", false),
            ("0", false),
        ] {
            let xml = format!(
                "<encrypted xmlns='{AXOLOTL}'><header sid='1'><key rid='2' prekey='{v}'>AA==</key><iv>AA==</iv></header></encrypted>"
            );
            assert_eq!(
                EncryptedElement::from_xml(&xml).unwrap().keys[0].prekey,
                want,
                "{v}"
            );
        }
        let xml = format!(
            "<encrypted xmlns='{AXOLOTL}'><header sid='1'><key rid='2' prekey='yes'>AA==</key><iv>AA==</iv></header></encrypted>"
        );
        assert_eq!(
            EncryptedElement::from_xml(&xml),
            Err(XmlError::BadAttribute {
                element: "key",
                attribute: "prekey",
                value: "yes".into(),
                rule: "must be true, 1, false or 0"
            })
        );
    }

    #[test]
    fn malformed_encrypted_errors_are_precise() {
        let cases: [(&str, XmlError); 6] = [
            (
                "<encrypted xmlns='x'/>",
                XmlError::WrongElement {
                    expected: "encrypted",
                    ns: AXOLOTL,
                    got: "encrypted".into(),
                    got_ns: "x".into(),
                },
            ),
            (
                "<encrypted xmlns='eu.siacs.conversations.axolotl'/>",
                XmlError::MissingChild {
                    element: "encrypted",
                    child: "header",
                },
            ),
            (
                "<encrypted xmlns='eu.siacs.conversations.axolotl'><header><iv>AA==</iv></header></encrypted>",
                XmlError::MissingAttribute {
                    element: "header",
                    attribute: "sid",
                },
            ),
            (
                "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='-3'><iv>AA==</iv></header></encrypted>",
                XmlError::BadAttribute {
                    element: "header",
                    attribute: "sid",
                    value: "-3".into(),
                    rule: "must be a decimal integer in 1..=4294967295",
                },
            ),
            (
                "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><iv>!!</iv></header></encrypted>",
                XmlError::Base64 { element: "iv" },
            ),
            (
                "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><iv>AA==</iv><iv>AA==</iv></header></encrypted>",
                XmlError::DuplicateChild {
                    element: "header",
                    child: "iv",
                },
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(EncryptedElement::from_xml(xml), Err(want), "{xml}");
        }
        assert!(matches!(
            EncryptedElement::from_xml("<encrypted"),
            Err(XmlError::NotWellFormed(_))
        ));
    }

    #[test]
    fn device_list_parses_and_rejects_bad_ids() {
        let l = DeviceList::from_xml("<list xmlns='eu.siacs.conversations.axolotl'><device id='5'/><device id='7'/><device id='5'/></list>").unwrap();
        assert_eq!(l.devices, vec![5, 7]);
        assert_eq!(
            DeviceList::from_xml(&crate::xml::to_string(&l.to_element())).unwrap(),
            l
        );
        assert_eq!(
            DeviceList::from_xml(
                "<list xmlns='eu.siacs.conversations.axolotl'><device id='x'/></list>"
            ),
            Err(XmlError::BadAttribute {
                element: "device",
                attribute: "id",
                value: "x".into(),
                rule: "must be a decimal integer in 1..=4294967295"
            })
        );
    }

    #[test]
    fn bundle_key_errors_name_the_element() {
        let xml = format!(
            "<bundle xmlns='{AXOLOTL}'><signedPreKeyPublic signedPreKeyId='1'>{}</signedPreKeyPublic><signedPreKeySignature>{}</signedPreKeySignature><identityKey>{}</identityKey><prekeys/></bundle>",
            B64.encode([5u8; 32]),
            B64.encode([0u8; 64]),
            B64.encode([5u8; 33])
        );
        assert_eq!(
            Bundle::from_xml(&xml),
            Err(XmlError::Key {
                element: "signedPreKeyPublic",
                source: crate::error::KeyError::WrongLength {
                    field: "signedPreKeyPublic",
                    expected: 33,
                    got: 32
                }
            })
        );
    }
}
