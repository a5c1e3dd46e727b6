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
