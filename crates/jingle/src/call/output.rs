//! Stanzas out: ids, IQ bookkeeping (bounded), JMI messages and error answers.

use super::contents::*;
use super::*;

impl Op<'_> {
    pub(super) fn fresh_id(&mut self) -> String {
        self.e.next_id += 1;
        format!("sc{}", self.e.next_id)
    }

    pub(super) fn send(&mut self, mut el: Element) {
        xml::strip_empty_lang(&mut el);
        self.e.outputs.push_back(Output::Send(el));
    }

    pub(super) fn event(&mut self, e: Event) {
        self.e.outputs.push_back(Output::Event(e));
    }

    /// JMI messages: type chat so they are carbon-copied, `<store/>` hint (docs/protocol.md §5.1).
    pub(super) fn send_jmi(
        &mut self,
        to: Jid,
        jmi: JingleMessage,
        id: Option<String>,
        receipt: bool,
    ) {
        let id = id.unwrap_or_else(|| self.fresh_id());
        let mut m = message_to(&to, &id);
        m.append_child(jmi.to_element());
        if receipt {
            m.append_child(xml::bare("request", ns::RECEIPTS));
        }
        m.append_child(xml::bare("store", ns::HINTS));
        self.send(m);
    }

    /// Sends a Jingle IQ set and remembers it until its answer; returns its id.
    pub(super) fn send_iq_set(&mut self, to: FullJid, sid: &str, j: JingleEnvelope) -> String {
        let id = self.fresh_id();
        if self.e.pending_iqs.len() >= MAX_PENDING_IQS {
            self.e.pending_iqs.pop_first();
        }
        self.e
            .pending_iqs
            .insert(id.clone(), (sid.to_owned(), j.action.clone()));
        let mut iq = iq_set(&Jid::from(to), &id);
        iq.append_child(j.to_element());
        self.send(iq);
        id
    }

    pub(super) fn send_iq_result(&mut self, to: &Jid, id: &str) {
        let iq = xml::with_attrs(
            "iq",
            ns::JABBER_CLIENT,
            &[("type", "result"), ("to", to.as_str()), ("id", id)],
        );
        self.send(iq);
    }

    pub(super) fn send_iq_error(
        &mut self,
        to: &Jid,
        id: &str,
        kind: &str,
        condition: &str,
        jingle_condition: Option<&str>,
    ) {
        let mut iq = xml::with_attrs(
            "iq",
            ns::JABBER_CLIENT,
            &[("type", "error"), ("to", to.as_str()), ("id", id)],
        );
        let mut error = xml::with_attrs("error", ns::JABBER_CLIENT, &[("type", kind)]);
        error.append_child(xml::bare(condition, ns::STANZAS));
        if let Some(jc) = jingle_condition {
            error.append_child(xml::bare(jc, ns::JINGLE_ERRORS));
        }
        iq.append_child(error);
        self.send(iq);
    }
}
