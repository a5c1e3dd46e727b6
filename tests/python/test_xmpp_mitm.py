#!/usr/bin/env python3
"""Unit tests of xmpp_mitm.py: every scenario's rewrite on the golden stanzas, the byte-exact
stream splitter, the role bookkeeping, and the proxy end to end over sockets (a scripted client
and a scripted server on both sides of the real proxy process).

Run: python3 -m unittest discover -s tests/python -p 'test_xmpp_mitm.py'   (standard library only)
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import unittest
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import xmpp_mitm as M  # noqa: E402

FIX = os.path.join(HERE, "fixtures")
ATTACKER = "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF"


def raw(name: str) -> bytes:
    with open(os.path.join(FIX, name), "rb") as f:
        return f.read().strip()


def load(name: str) -> M.El:
    return M.parse_element(raw(name))


JINGLE_WITH_FP = [
    "dino-caller-in-session-accept.xml",
    "dino-callee-in-session-initiate.xml",
    "conversations-session-initiate.xml",
    "conversations-session-accept.xml",
]
PROCEEDS = ["dino-caller-in-proceed.xml", "conversations-proceed.xml"]
ALL = JINGLE_WITH_FP + PROCEEDS + ["conversations-transport-info.xml", "carbon-received-proceed.xml"]


def fingerprints(st: M.El) -> List[M.El]:
    return [c for t in M.transports(st) for c in t.children if c.tag == "fingerprint"]


def same_tree(a: M.El, b: M.El) -> bool:
    return (
        a.tag == b.tag
        and a.attrs == b.attrs
        and a.text.strip() == b.text.strip()
        and len(a.children) == len(b.children)
        and all(same_tree(x, y) for x, y in zip(a.children, b.children))
    )


def reparse(st: M.El) -> M.El:
    return M.parse_element(st.serialize())


class TreeTest(unittest.TestCase):
    def test_round_trip_keeps_namespace_declarations_and_attribute_order(self):
        for name in ALL:
            st = load(name)
            again = reparse(st)
            self.assertTrue(same_tree(st, again), name)
            self.assertEqual(list(st.attrs), list(again.attrs), name)
            # xmlns is an attribute, kept where it was declared
            self.assertEqual(st.get("xmlns"), "jabber:client", name)
            for a, b in zip(st.iter(), again.iter()):
                self.assertEqual((a.tag, a.ns, a.get("xmlns")), (b.tag, b.ns, b.get("xmlns")), name)

    def test_escaping(self):
        st = M.parse_element(b"<message a='x&amp;&quot;&lt;&#10;'><body>1 &lt; 2 &amp; 3 &gt; 2 \xc3\xa9</body></message>")
        again = reparse(st)
        self.assertEqual(again.get("a"), 'x&"<\n')
        self.assertEqual(again.find("body").text, "1 < 2 & 3 > 2 \u00e9")

    def test_kind_and_sid(self):
        self.assertEqual(M.kind_of(load("dino-caller-in-proceed.xml")), "proceed")
        self.assertEqual(M.sid_of(load("dino-caller-in-proceed.xml")), "f1589d11-760d-430e-bcd6-cd8a65a926ce")
        self.assertEqual(M.kind_of(load("carbon-received-proceed.xml")), "proceed")
        self.assertEqual(M.sid_of(load("carbon-received-proceed.xml")), "xT3kq8Rf2VbN0yHcLw9aEQ")
        self.assertEqual(M.kind_of(load("conversations-transport-info.xml")), "transport-info")
        self.assertEqual(M.kind_of(load("dino-callee-in-session-initiate.xml")), "session-initiate")


class RewriteTest(unittest.TestCase):
    def test_non_targets_are_untouched(self):
        """Every rewrite returns None for stanzas it does not touch (they are forwarded raw)."""
        for name in ["conversations-transport-info.xml"] + JINGLE_WITH_FP:
            st = load(name)
            self.assertIsNone(M.strip_device(st), name)
            self.assertIsNone(M.change_device(st), name)
        for name in PROCEEDS + ["conversations-transport-info.xml"]:
            st = load(name)
            self.assertIsNone(M.encrypted_to_plain(st), name)
            self.assertIsNone(M.add_plain(st, True), name)
            self.assertIsNone(M.flip_setup(st), name)
        for name in PROCEEDS:
            self.assertIsNone(M.replace_candidates(load(name), "203.0.113.9", 4444), name)
            self.assertIsNone(M.forge_from(load(name), "x@y/z", "session-accept"), name)
        self.assertIsNone(M.forge_from(load("dino-callee-in-session-initiate.xml"), "x@y/z", "session-accept"))

    def test_rewrites_do_not_modify_their_input(self):
        for name in ALL:
            st = load(name)
            before = st.serialize()
            for f in (
                M.strip_device,
                M.change_device,
                M.encrypted_to_plain,
                lambda s: M.add_plain(s, True),
                M.flip_setup,
                lambda s: M.replace_candidates(s, "203.0.113.9", 1),
                lambda s: M.forge_from(s, "a@b/c"),
            ):
                f(st)
            self.assertEqual(st.serialize(), before, name)

    def test_strip_device(self):
        for name in PROCEEDS + ["carbon-received-proceed.xml"]:
            st = load(name)
            out = reparse(M.strip_device(st))
            msg = M.messages(out)[-1]
            proceed = M.jmi(msg)
            self.assertEqual(proceed.tag, "proceed", name)
            self.assertEqual(proceed.get("id"), M.jmi(M.messages(st)[-1]).get("id"), name)
            self.assertEqual(proceed.children, [], name)
            self.assertNotIn(b"device", out.serialize(), name)
            # everything else stays: the message attributes, the hints
            self.assertEqual(out.attrs, st.attrs, name)
            self.assertEqual([c.tag for c in msg.children], [c.tag for c in M.messages(st)[-1].children], name)

    def test_change_device(self):
        st = load("dino-caller-in-proceed.xml")
        out = reparse(M.change_device(st))
        dev = M.jmi(out).find("device", M.NS_DRAFT)
        self.assertEqual(dev.get("id"), "129646282")
        out = reparse(M.change_device(st, "4242"))
        self.assertEqual(M.jmi(out).find("device", M.NS_DRAFT).get("id"), "4242")
        out = reparse(M.change_device(load("carbon-received-proceed.xml"), "7"))
        self.assertEqual(M.jmi(M.carbon_inner(out)).find("device").get("id"), "7")

    def test_encrypted_to_plain(self):
        for name in JINGLE_WITH_FP:
            st = load(name)
            setups = [f.get("setup") for f in M.encrypted_fingerprints(st)]
            out = reparse(M.encrypted_to_plain(st, ATTACKER))
            self.assertEqual(M.encrypted_fingerprints(out), [], name)
            fps = fingerprints(out)
            self.assertEqual(len(fps), len(setups), name)
            for fp, setup in zip(fps, setups):
                self.assertEqual(fp.ns, M.NS_DTLS, name)
                self.assertEqual(fp.get("xmlns"), M.NS_DTLS, name)
                self.assertEqual(fp.get("hash"), "sha-256", name)
                self.assertEqual(fp.get("setup"), setup, name)
                self.assertEqual(fp.text, ATTACKER, name)
                self.assertEqual(fp.children, [], name)
            self.assertNotIn(M.NS_OMEMO.encode(), out.serialize(), name)
            # candidates, ufrag and pwd untouched
            for a, b in zip(M.transports(st), M.transports(out)):
                self.assertEqual(a.attrs, b.attrs, name)
                self.assertEqual([c.attrs for c in a.findall("candidate")], [c.attrs for c in b.findall("candidate")], name)

    def test_add_plain_before_and_after(self):
        for name in JINGLE_WITH_FP:
            st = load(name)
            enc = M.encrypted_fingerprints(st)[0].serialize()
            for before in (True, False):
                out = reparse(M.add_plain(st, before, ATTACKER))
                t = M.transports(out)[0]
                kinds = [(c.tag, c.ns) for c in t.children if c.tag == "fingerprint"]
                plain, draft = ("fingerprint", M.NS_DTLS), ("fingerprint", M.NS_DRAFT)
                self.assertEqual(kinds, [plain, draft] if before else [draft, plain], name)
                drafts = t.findall("fingerprint", M.NS_DRAFT)
                self.assertTrue(same_tree(drafts[0], M.parse_element(enc)), name)
                p = t.find("fingerprint", M.NS_DTLS)
                self.assertEqual((p.text, p.get("setup")), (ATTACKER, drafts[0].get("setup")), name)

    def test_flip_setup(self):
        cases = {
            "dino-caller-in-session-accept.xml": "passive",  # active -> passive
            "conversations-session-accept.xml": "passive",
            "dino-callee-in-session-initiate.xml": "active",  # actpass -> active
            "conversations-session-initiate.xml": "active",
        }
        for name, want in cases.items():
            out = reparse(M.flip_setup(load(name)))
            self.assertEqual([f.get("setup") for f in fingerprints(out)], [want], name)
            self.assertEqual(len(M.encrypted_fingerprints(out)), 1, name)
        # passive -> active, and on plain fingerprints too
        plain = M.encrypted_to_plain(load("dino-caller-in-session-accept.xml"), ATTACKER)
        fingerprints(plain)[0].attrs["setup"] = "passive"
        out = reparse(M.flip_setup(plain))
        self.assertEqual(fingerprints(out)[0].get("setup"), "active")
        self.assertEqual(fingerprints(out)[0].ns, M.NS_DTLS)

    def test_replay_fingerprint(self):
        r = M.Replayer()
        call_a = load("dino-caller-in-session-accept.xml")
        self.assertIsNone(r.rewrite(call_a), "the first call is only recorded")
        self.assertIsNone(r.rewrite(call_a), "the same session is not touched")
        recorded = M.encrypted_fingerprints(call_a)[0]
        # call B: another sid and another encrypted fingerprint, same action
        call_b = load("conversations-session-accept.xml")
        out = reparse(r.rewrite(call_b))
        fps = fingerprints(out)
        self.assertEqual(len(fps), 1)
        self.assertTrue(same_tree(fps[0], recorded))
        self.assertEqual(M.transports(out)[0].attrs, M.transports(call_b)[0].attrs, "ufrag/pwd stay call B's")
        # a plain call C gets the recorded encrypted fingerprint in place of its plain one
        call_c = M.encrypted_to_plain(load("conversations-session-accept.xml"), ATTACKER)
        M.jingle(call_c).attrs["sid"] = "call-c"
        out = reparse(r.rewrite(call_c))
        self.assertEqual([f.ns for f in fingerprints(out)], [M.NS_DRAFT])
        # other actions are recorded separately
        self.assertIsNone(r.rewrite(load("conversations-session-initiate.xml")))
        self.assertIsNotNone(r.rewrite(load("dino-callee-in-session-initiate.xml")))

    def test_forge_from(self):
        st = load("dino-caller-in-session-accept.xml")
        forged = reparse(M.forge_from(st, M.other_resource(st.get("from"))))
        self.assertEqual(forged.get("from"), "alice@localhost/mitm-forged")
        rest = dict(forged.attrs)
        rest.pop("from")
        orig = dict(st.attrs)
        orig.pop("from")
        self.assertEqual(rest, orig)
        self.assertTrue(same_tree(forged.children[0], st.children[0]))
        p = load("dino-caller-in-proceed.xml")
        forged = reparse(M.forge_from(p, "mallory@localhost/x", "proceed"))
        self.assertEqual(forged.get("from"), "mallory@localhost/x")
        self.assertEqual(M.jmi(forged).find("device").get("id"), "129646281")
        self.assertIsNone(M.forge_from(st, "x@y/z", "proceed"))
        # the callee-side forgery: a session-initiate from another JID, everything else kept
        si = load("dino-callee-in-session-initiate.xml")
        forged = reparse(M.forge_from(si, "mallory@localhost/m", "session-initiate"))
        self.assertEqual(forged.get("from"), "mallory@localhost/m")
        self.assertEqual(M.jingle(forged).get("action"), "session-initiate")
        self.assertTrue(same_tree(forged.children[0], si.children[0]))
        self.assertIsNone(M.forge_from(st, "x@y/z", "session-initiate"))
        self.assertIsNone(M.forge_from(si, "x@y/z", "session-accept"))

    def test_replace_candidates(self):
        for name in JINGLE_WITH_FP + ["conversations-transport-info.xml"]:
            st = load(name)
            out = M.replace_candidates(st, "203.0.113.9", 4444)
            if not any(t.findall("candidate") for t in M.transports(st)):
                self.assertIsNone(out, name)
                continue
            out = reparse(out)
            cands = [c for t in M.transports(out) for c in t.findall("candidate")]
            self.assertTrue(cands, name)
            for c in cands:
                self.assertEqual((c.get("ip"), c.get("port")), ("203.0.113.9", "4444"), name)
            self.assertEqual(
                [{k: v for k, v in c.attrs.items() if k not in ("ip", "port")} for t in M.transports(st) for c in t.findall("candidate")],
                [{k: v for k, v in c.attrs.items() if k not in ("ip", "port")} for c in cands],
                name,
            )
            self.assertEqual([f.serialize() for f in fingerprints(st)], [f.serialize() for f in fingerprints(out)], name)


AIORTC_ANSWER = (
    "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=msid-semantic:WMS *\r\n"
    "m=audio 40000 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\na=sendrecv\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=mid:0\r\na=msid:x y\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=ssrc:1234 cname:abcd\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    "a=candidate:0123abcd 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n"
    "a=ice-ufrag:Ufrg\r\na=ice-pwd:ThePasswordIsLongEnough\r\n"
    "a=fingerprint:sha-256 " + ATTACKER + "\r\na=setup:active\r\n"
)


class MediaMitmSignallingTest(unittest.TestCase):
    """media-mitm's Jingle <-> SDP conversion (pure; the aiortc endpoint itself runs in the
    Rust test with real calls)."""

    def test_content_to_sdp(self):
        content = M.jingle(load("dino-callee-in-session-initiate.xml")).find("content")
        sdp = M.content_to_sdp(content, "offer", "0")
        for line in [
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 112 113 114 0 8",
            "a=mid:0",
            "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 useinbandfec=1",
            "a=rtpmap:0 PCMU/8000",
            "a=ice-ufrag:ngHQ",
            "a=ice-pwd:7VWmh2Euosn+aj6/BNJlyb",
            "a=candidate:1 1 udp 2015363327 192.0.2.2 41054 typ host",
            "a=candidate:2 2 udp 2015363582 fd00::2 57547 typ host",
            "a=fingerprint:sha-256 " + M.DUMMY_FINGERPRINT,  # encrypted: unknown to the attacker
            "a=setup:actpass",
        ]:
            self.assertIn(line + "\r\n", sdp)
        plain = M.encrypted_to_plain(load("dino-callee-in-session-initiate.xml"), ATTACKER)
        self.assertIn("a=fingerprint:sha-256 " + ATTACKER + "\r\n", M.content_to_sdp(M.jingle(plain).find("content"), "offer", "0"))

    def test_replace_media_plain_call(self):
        plain = M.encrypted_to_plain(load("dino-caller-in-session-accept.xml"), "AA:" * 31 + "AA")
        out = reparse(M.replace_media(plain, AIORTC_ANSWER, relay_encrypted=True))
        content = M.jingle(out).find("content")
        self.assertEqual((content.get("name"), content.get("creator")), ("audio", "initiator"))
        t = content.find("transport", M.NS_ICE)
        self.assertEqual((t.get("ufrag"), t.get("pwd")), ("Ufrg", "ThePasswordIsLongEnough"))
        self.assertEqual([(c.get("ip"), c.get("port"), c.get("type")) for c in t.findall("candidate")], [("127.0.0.1", "40000", "host")])
        fps = fingerprints(out)
        self.assertEqual([(f.ns, f.text, f.get("setup")) for f in fps], [(M.NS_DTLS, ATTACKER, "active")])
        d = content.find("description", M.NS_RTP)
        pt = d.find("payload-type")
        self.assertEqual((pt.get("id"), pt.get("name"), pt.get("clockrate"), pt.get("channels")), ("111", "opus", "48000", "2"))
        self.assertEqual([(q.get("name"), q.get("value")) for q in pt.findall("parameter")], [("minptime", "10"), ("useinbandfec", "1")])
        self.assertIsNotNone(d.find("rtcp-mux"))
        self.assertEqual(d.find("source", M.NS_SSMA).get("ssrc"), "1234")
        self.assertNotIn(b"crypto", out.serialize(), "Dino's SDES offer is not carried over")

    def test_replace_media_relays_the_encrypted_fingerprint(self):
        st = load("conversations-session-initiate.xml")
        out = reparse(M.replace_media(st, AIORTC_ANSWER, relay_encrypted=True))
        fps = fingerprints(out)
        self.assertEqual([f.ns for f in fps], [M.NS_DRAFT], "the peer's encrypted fingerprint, no plain one")
        self.assertEqual(fps[0].get("setup"), "active", "setup follows the attacker's endpoint")
        self.assertEqual(fps[0].find("encrypted", M.NS_OMEMO).serialize(), M.encrypted_fingerprints(st)[0].find("encrypted", M.NS_OMEMO).serialize())
        self.assertEqual(M.transports(out)[0].get("ufrag"), "Ufrg")
        self.assertIsNotNone(M.jingle(out).find("group"), "the BUNDLE group stays")


class ScenarioTest(unittest.TestCase):
    def apply(self, scenario: str, name: str, **kw) -> Optional[M.Outcome]:
        return M.Scenario(M.Options(scenario=scenario, attacker_fingerprint=ATTACKER, **kw)).apply(load(name))

    def test_every_scenario_rewrites_its_target(self):
        targets = {
            "strip-device": "dino-caller-in-proceed.xml",
            "change-device": "dino-caller-in-proceed.xml",
            "encrypted-to-plain": "dino-caller-in-session-accept.xml",
            "add-plain-before": "dino-caller-in-session-accept.xml",
            "add-plain-after": "dino-caller-in-session-accept.xml",
            "flip-setup": "dino-caller-in-session-accept.xml",
            "drop-session-accept": "dino-caller-in-session-accept.xml",
            "forge-from-resource": "dino-caller-in-session-accept.xml",
            "forge-from-jid": "dino-caller-in-session-accept.xml",
            "replace-candidates": "dino-caller-in-session-accept.xml",
        }
        for scen, name in targets.items():
            out = self.apply(scen, name)
            self.assertIsNotNone(out, scen)
            self.assertTrue(out.detail, scen)
            self.assertTrue(all(d.serialize() != raw(name) for d in out.deliver[:1]), scen)
        self.assertIsNone(self.apply("passthrough", "dino-caller-in-session-accept.xml"))

    def test_drop(self):
        self.assertEqual(self.apply("drop-session-accept", "dino-caller-in-session-accept.xml").deliver, [])
        self.assertIsNone(self.apply("drop-session-accept", "dino-callee-in-session-initiate.xml"))

    def test_forge_options(self):
        out = self.apply("forge-from-jid", "dino-caller-in-session-accept.xml")
        self.assertEqual([d.get("from") for d in out.deliver], ["mallory@localhost/mitm", "alice@localhost/dinoA"])
        self.assertEqual(out.forged, out.deliver[:1])
        out = self.apply("forge-from-resource", "dino-caller-in-session-accept.xml", original="drop")
        self.assertEqual([d.get("from") for d in out.deliver], ["alice@localhost/mitm-forged"])
        out = self.apply("forge-from-jid", "dino-caller-in-proceed.xml", stanza="proceed", forge_from="eve@localhost/e")
        self.assertEqual([d.get("from") for d in out.deliver], ["eve@localhost/e", "alice@localhost/dinoA"])
        self.assertIsNone(self.apply("forge-from-jid", "dino-caller-in-session-accept.xml", stanza="proceed"))

    def test_replay_through_scenario(self):
        s = M.Scenario(M.Options(scenario="replay-fingerprint"))
        self.assertIsNone(s.apply(load("dino-caller-in-session-accept.xml")))
        out = s.apply(load("conversations-session-accept.xml"))
        self.assertIn("f1589d11", out.detail)

    def test_fingerprint_normalisation(self):
        self.assertEqual(M.normalize_fingerprint(ATTACKER.replace(":", "").lower()), ATTACKER)
        with self.assertRaises(ValueError):
            M.normalize_fingerprint("AB:CD")
        self.assertEqual(M.normalize_fingerprint(M.DEFAULT_ATTACKER_FINGERPRINT), M.DEFAULT_ATTACKER_FINGERPRINT)


CHAT = (
    "<message xmlns='jabber:client' type='chat' from='alice@localhost/a' to='bob@localhost/b'>"
    "<body>I sent you an OMEMO encrypted message</body>"
    "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='77'><key rid='99'>S0VZ</key>"
    "<iv>SVZJVklWSVZJVklW</iv></header><payload>U0VDUkVU</payload></encrypted>"
    "<store xmlns='urn:xmpp:hints'/></message>"
)


class InjectAndFloodTest(unittest.TestCase):
    def test_withheld_chat_message_replaces_the_first_encrypted_fingerprint_once(self):
        inj = M.Injector()
        self.assertFalse(inj.withhold(load("dino-caller-in-proceed.xml")), "a JMI message is not a chat message")
        self.assertIsNone(inj.rewrite(load("dino-caller-in-session-accept.xml")), "nothing withheld yet")
        chat = M.parse_element(CHAT.encode())
        self.assertTrue(inj.withhold(chat))
        self.assertFalse(inj.withhold(chat), "only the first one")
        out = inj.rewrite(load("dino-caller-in-session-accept.xml"))
        self.assertIsNotNone(out)
        enc = M.encrypted_fingerprints(reparse(out))[0].find("encrypted", M.NS_OMEMO)
        self.assertEqual(enc.find("header").get("sid"), "77")
        self.assertEqual(enc.find("payload").text, "U0VDUkVU")
        self.assertIsNone(inj.rewrite(load("dino-caller-in-session-accept.xml")), "only once")

    def test_forged_signal_message_is_v3_with_the_counter_asked_for(self):
        m = M.forged_signal_message(311)
        self.assertEqual(m[0], 0x33)
        proto = m[1:-8]
        self.assertEqual(proto[0], 1 << 3 | 2)  # ratchetKey, length-delimited
        self.assertEqual(proto[1], 33)
        self.assertEqual(proto[2], 0x05)
        rest = proto[2 + 33:]
        self.assertEqual(rest[0], 2 << 3)  # counter, varint 311 = 0xB7 0x02
        self.assertEqual(rest[1:3], bytes([0xB7, 0x02]))
        self.assertNotEqual(M.forged_signal_message(311), m, "fresh ratchet key and MAC each time")

    def test_flood_message_shape(self):
        st = M.parse_element(M.flood_message("alice@localhost/a", "bob@localhost/b", 77, 99, 2, 311, 0))
        enc = st.find("encrypted", M.NS_OMEMO)
        self.assertEqual(enc.find("header").get("sid"), "77")
        self.assertEqual([k.get("rid") for k in enc.find("header").findall("key")], ["99", "99"])
        self.assertIsNotNone(M.chat_encrypted(st))


class RolesTest(unittest.TestCase):
    """Which connection is the caller: learnt from propose / session-initiate per sid."""

    def test_roles(self):
        proxy = M.Proxy(("127.0.0.1", 1), M.Options(scenario="strip-device"), None)
        caller = M.Connection(proxy, 1, None)
        caller.jid = "carol@localhost/dinoB"
        callee = M.Connection(proxy, 2, None)
        callee.jid = "alice@localhost/dinoA"
        callee2 = M.Connection(proxy, 3, None)
        callee2.jid = "alice@localhost/phone"
        propose = M.parse_element(
            b"<message xmlns='jabber:client' to='alice@localhost' type='chat'>"
            b"<propose xmlns='urn:xmpp:jingle-message:0' id='f1589d11-760d-430e-bcd6-cd8a65a926ce'/></message>"
        )
        proceed = load("dino-caller-in-proceed.xml")
        # before anything is known, the kind decides
        self.assertEqual(proxy.role_of(caller, proceed), "caller")
        proxy.learn(caller, "to-server", propose)
        self.assertEqual(proxy.calls["f1589d11-760d-430e-bcd6-cd8a65a926ce"], M.Call("carol@localhost", "alice@localhost"))
        self.assertEqual(proxy.role_of(caller, proceed), "caller")
        self.assertEqual(proxy.role_of(caller, load("dino-caller-in-session-accept.xml")), "caller")
        self.assertEqual(proxy.role_of(callee, load("dino-callee-in-session-initiate.xml")), "callee")
        # a carbon to the callee's other device: known by sid only
        carbon = M.parse_element(
            b"<message xmlns='jabber:client' from='alice@localhost' to='alice@localhost/phone' type='chat'>"
            b"<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
            + raw("dino-caller-in-proceed.xml").replace(b'xml:lang="en" ', b"")
            + b"</forwarded></sent></message>"
        )
        self.assertEqual(proxy.role_of(callee2, carbon), "callee")
        self.assertIsNone(proxy.role_of(callee2, load("carbon-received-proceed.xml")), "unknown sid, carbon")


class FakeWriter:
    def __init__(self) -> None:
        self.data = b""

    def write(self, b: bytes) -> None:
        self.data += b


class ProxyElementTest(unittest.TestCase):
    """Proxy.on_element, the per-stanza decision, without sockets."""

    def setUp(self) -> None:
        self.lines: List[dict] = []
        self._emit = M.emit
        M.emit = self.lines.append

    def tearDown(self) -> None:
        M.emit = self._emit

    def world(self, **kw):
        proxy = M.Proxy(("127.0.0.1", 1), M.Options(**kw), None)
        caller = M.Connection(proxy, 1, FakeWriter())
        caller.jid = "carol@localhost/dinoB"
        callee = M.Connection(proxy, 2, FakeWriter())
        callee.jid = "alice@localhost/dinoA"
        proxy.conns += [caller, callee]
        return proxy, caller, callee

    def test_only_the_victim_is_touched(self):
        accept = raw("dino-caller-in-session-accept.xml")
        initiate = raw("dino-callee-in-session-initiate.xml")
        proxy, caller, callee = self.world(scenario="encrypted-to-plain", victim="callee")
        self.assertIsNone(proxy.on_element(caller, "to-client", accept, "iq"), "caller is not the victim")
        out = proxy.on_element(callee, "to-client", initiate, "iq")
        self.assertEqual(M.encrypted_fingerprints(M.parse_element(out)), [])
        self.assertIsNone(proxy.on_element(callee, "to-server", raw("dino-caller-in-session-accept.xml"), "iq"), "to-server is never rewritten")
        self.assertEqual([(v["rewrote"], v["client"], v["stanza"]) for v in self.lines], [("encrypted-to-plain", "alice@localhost/dinoA", "session-initiate")])

    def test_drop_session_accept_with_ack(self):
        proxy, caller, callee = self.world(scenario="drop-session-accept", ack_dropped=True)
        self.assertEqual(proxy.on_element(caller, "to-client", raw("dino-caller-in-session-accept.xml"), "iq"), b"")
        ack = M.parse_element(callee.client_writer.data)
        self.assertEqual(
            (ack.tag, ack.get("type"), ack.get("id"), ack.get("from"), ack.get("to")),
            ("iq", "result", "7432d8e0-7ef9-4486-9ee3-ad2fed8e52f5", "carol@localhost/dinoB", "alice@localhost/dinoA"),
        )
        self.assertEqual(caller.client_writer.data, b"")

    def test_forged_stanza_then_original_and_the_answer_swallowed(self):
        proxy, caller, _ = self.world(scenario="forge-from-resource")
        accept = raw("dino-caller-in-session-accept.xml")
        out = proxy.on_element(caller, "to-client", accept, "iq")
        self.assertTrue(out.endswith(accept), "the genuine stanza follows, byte-exact")
        forged = M.parse_element(out[: len(out) - len(accept)])
        self.assertEqual(forged.get("from"), "alice@localhost/mitm-forged")
        answer = b"<iq type='result' to='alice@localhost/mitm-forged' id='7432d8e0-7ef9-4486-9ee3-ad2fed8e52f5'/>"
        self.assertEqual(proxy.on_element(caller, "to-server", answer, "iq"), b"")
        genuine = b"<iq type='result' to='alice@localhost/dinoA' id='7432d8e0-7ef9-4486-9ee3-ad2fed8e52f5'/>"
        self.assertIsNone(proxy.on_element(caller, "to-server", genuine, "iq"))

    def test_replay_across_calls(self):
        proxy, caller, _ = self.world(scenario="replay-fingerprint")
        first = raw("dino-caller-in-session-accept.xml")
        self.assertIsNone(proxy.on_element(caller, "to-client", first, "iq"))
        second = raw("dino-caller-in-session-accept.xml").replace(b"f1589d11-760d-430e-bcd6-cd8a65a926ce", b"second-call")
        second = second.replace(b"j9TF79ELgYs9", b"AAAAAAAAAAAA")
        out = M.parse_element(proxy.on_element(caller, "to-client", second, "iq"))
        self.assertIn(b"j9TF79ELgYs9", out.serialize(), "the first call's encrypted fingerprint")
        self.assertEqual(M.sid_of(out), "second-call")


SERVER_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    b"id='s%d' from='localhost' version='1.0' xml:lang='en'>"
)
CLIENT_HEADER = (
    b"<?xml version='1.0'?>\n<stream:stream xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/streams\" "
    b'to="localhost" version="1.0">'
)
PROPOSE = (
    b"<message type='chat' to='alice@localhost' id='p1'><propose xmlns='urn:xmpp:jingle-message:0' id='f1589d11-760d-430e-bcd6-cd8a65a926ce'>"
    b"<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>"
)


def login_script(proceed: bytes) -> list:
    """(sender, bytes) steps of a plaintext login of carol (the caller), a propose and the proceed."""
    sasl = b"urn:ietf:params:xml:ns:xmpp-sasl"
    return [
        ("c", CLIENT_HEADER),
        ("s", SERVER_HEADER % 1 + b"<stream:features><mechanisms xmlns='" + sasl + b"'><mechanism>PLAIN</mechanism></mechanisms></stream:features>"),
        ("c", b"<auth xmlns='" + sasl + b"' mechanism='PLAIN'>AGNhcm9sAHB3LWNhcm9s</auth>"),
        ("s", b"<success xmlns='" + sasl + b"'/>"),
        ("c", CLIENT_HEADER),
        ("s", SERVER_HEADER % 2 + b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"),
        ("c", b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>dinoB</resource></bind></iq>"),
        ("s", b"<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>carol@localhost/dinoB</jid></bind></iq>"),
        ("c", b" \n<presence/>\t" + PROPOSE),
        ("s", b"\n" + proceed + b"<message from='x@localhost/y' to='carol@localhost/dinoB' type='chat'><body>&lt;caf\xc3\xa9&gt; &amp; <![CDATA[<x/>]]></body></message>"),
        ("c", b"</stream:stream>"),
        ("s", b"</stream:stream>"),
    ]


class ProxyProcess:
    def __init__(self, upstream_port: int, *args: str) -> None:
        self.log = tempfile.NamedTemporaryFile("r", suffix=".jsonl", delete=False)
        self.p = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "xmpp_mitm.py"), "--upstream", f"127.0.0.1:{upstream_port}", "--log", self.log.name, *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        first = json.loads(self.p.stdout.readline())
        self.port = first["listening"]

    def stop(self) -> tuple:
        self.p.send_signal(signal.SIGTERM)
        out, _ = self.p.communicate(timeout=10)
        lines = [json.loads(line) for line in out.splitlines()]
        with open(self.log.name, encoding="utf-8") as f:
            logged = [json.loads(line) for line in f]
        self.log.close()
        os.unlink(self.log.name)
        return self.p.returncode, lines, logged


def run_script(script: list, proxy_args: tuple, expect=None) -> tuple:
    """Runs the script through a real proxy process; returns (received per side, exit, stdout lines, log)."""
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(1)
    proxy = ProxyProcess(upstream.getsockname()[1], *proxy_args)
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        upstream.settimeout(10)
        server, _ = upstream.accept()
        server.settimeout(10)
        ends = {"c": (client, server), "s": (server, client)}
        rng = random.Random(5)
        received = {"c": b"", "s": b""}
        for i, (who, data) in enumerate(script):
            src, dst = ends[who]
            # odd chunking: the proxy must cope with elements split anywhere
            pos = 0
            while pos < len(data):
                n = rng.randint(1, 17)
                src.sendall(data[pos : pos + n])
                pos += n
            want = expect(i, who, data) if expect else data
            got = b""
            while len(got) < len(want):
                chunk = dst.recv(65536)
                if not chunk:
                    break
                got += chunk
            received[who] += got
            if got != want:
                raise AssertionError(f"step {i} ({who}): forwarded {got!r}, expected {want!r}")
        client.close()
        server.close()
    finally:
        upstream.close()
        code, lines, logged = proxy.stop()
    return received, code, lines, logged


class EndToEndTest(unittest.TestCase):
    def test_passthrough_is_byte_exact_both_ways(self):
        proceed = raw("dino-caller-in-proceed.xml")
        script = login_script(proceed)
        _, code, lines, logged = run_script(script, ("--scenario", "passthrough"))
        self.assertEqual(code, 0, "exits cleanly on SIGTERM")
        self.assertEqual(lines, [], "no rewrite in passthrough")
        # the log shows the stanzas, labelled with the bound JID once known, auth redacted
        by_xml = {e["xml"]: e for e in logged}
        self.assertEqual(by_xml[proceed.decode()]["direction"], "to-client")
        self.assertEqual(by_xml[proceed.decode()]["client"], "carol@localhost/dinoB")
        self.assertEqual(by_xml[PROPOSE.decode()]["direction"], "to-server")
        self.assertFalse(any("AGNhcm9s" in e["xml"] for e in logged), "SASL payload in the log")

    def test_strip_device_over_sockets(self):
        proceed = raw("dino-caller-in-proceed.xml")
        script = login_script(proceed)
        stripped = M.strip_device(M.parse_element(proceed)).serialize()

        def expect(i, who, data):
            return data.replace(proceed, stripped) if who == "s" else data

        received, code, lines, logged = run_script(script, ("--scenario", "strip-device", "--victim", "caller"), expect)
        self.assertEqual(code, 0)
        self.assertIn(stripped, received["s"])
        self.assertNotIn(b"<device", received["s"])
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual(
            {k: lines[0][k] for k in ("rewrote", "direction", "client", "stanza")},
            {"rewrote": "strip-device", "direction": "to-client", "client": "carol@localhost/dinoB", "stanza": "proceed"},
        )
        self.assertTrue(any(e["action"] == "rewritten" for e in logged))

    def test_strip_device_spares_the_other_role(self):
        proceed = raw("dino-caller-in-proceed.xml")
        _, code, lines, _ = run_script(login_script(proceed), ("--scenario", "strip-device", "--victim", "callee"))
        self.assertEqual((code, lines), (0, []))


class StreamRewriterTest(unittest.TestCase):
    STREAM = b"".join(d for who, d in login_script(raw("conversations-proceed.xml")) if who == "s")

    def test_random_chunking_is_byte_exact(self):
        for seed in range(200):
            rng = random.Random(seed)
            seen = []
            rw = M.StreamRewriter(lambda r, n: seen.append(n), restart_after=("success",))
            out, i = b"", 0
            while i < len(self.STREAM):
                n = rng.randint(1, 40) if seed else 1
                out += rw.feed(self.STREAM[i : i + n])
                i += n
            self.assertEqual(out, self.STREAM, seed)
            self.assertEqual(seen, ["stream:features", "success", "stream:features", "iq", "message", "message"], seed)
            self.assertEqual(rw.restarts, 1)

    def test_replacement_in_the_middle(self):
        def handler(r: bytes, name: str):
            return b"<x/>" if b"<proceed" in r else None

        rw = M.StreamRewriter(handler, restart_after=("success",))
        out = rw.feed(self.STREAM)
        proceed = raw("conversations-proceed.xml")
        self.assertEqual(out, self.STREAM.replace(proceed, b"<x/>"))

    def test_nothing_is_forwarded_before_an_element_is_complete(self):
        rw = M.StreamRewriter(lambda r, n: None)
        head = SERVER_HEADER % 1
        self.assertEqual(rw.feed(head + b"<message><bo"), head)
        self.assertEqual(rw.feed(b"dy>x</body></message>"), b"<message><body>x</body></message>")

    def test_parse_error_falls_back_to_blind_forwarding(self):
        rw = M.StreamRewriter(lambda r, n: None)
        head = SERVER_HEADER % 1
        data = head + b"<message><a></b></message><iq/>"
        self.assertEqual(rw.feed(data), data)
        self.assertTrue(rw.blind)
        self.assertEqual(rw.feed(b"anything"), b"anything")

    def test_starttls_proceed_goes_blind(self):
        rw = M.StreamRewriter(lambda r, n: None, blind_after=("proceed",))
        data = SERVER_HEADER % 1 + b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\x16\x03\x01binary"
        self.assertEqual(rw.feed(data), data)
        self.assertTrue(rw.blind)


if __name__ == "__main__":
    unittest.main()
