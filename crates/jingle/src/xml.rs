//! Small helpers to build `minidom` elements without string formatting.

use minidom::Element;
use minidom::rxml::{Namespace, NcName};

/// Sets an unnamespaced attribute. All names passed here are static, valid NCNames; an
/// invalid one would be a programming error, so it is skipped rather than panicking.
pub(crate) fn set_attr(el: &mut Element, name: &str, value: impl Into<String>) {
    if let Ok(name) = NcName::try_from(name) {
        el.set_attr(Namespace::NONE, name, value.into());
    }
}

/// An empty element `<name xmlns=ns/>`.
pub(crate) fn bare(name: &str, ns: &str) -> Element {
    Element::bare(name, ns)
}

/// An element with attributes, in the order given.
pub(crate) fn with_attrs(name: &str, ns: &str, attrs: &[(&str, &str)]) -> Element {
    let mut el = Element::bare(name, ns);
    for (k, v) in attrs {
        set_attr(&mut el, k, *v);
    }
    el
}

/// Removes empty `xml:lang` attributes everywhere below `el`. xmpp-parsers writes
/// `<text xml:lang=''>` for a text without language; the clients write plain `<text>`
/// (docs/protocol.md §3.6, §7.8), and an empty `xml:lang` says nothing.
pub(crate) fn strip_empty_lang(el: &mut Element) {
    el.attrs_mut()
        .retain(|ns, name, value| !(*ns == Namespace::XML && name == "lang" && value.is_empty()));
    for child in el.children_mut() {
        strip_empty_lang(child);
    }
}
