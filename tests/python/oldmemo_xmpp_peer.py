#!/usr/bin/env python3
"""An independent OMEMO 0.3 XMPP peer for shieldcall's end-to-end tests: python-oldmemo (through
oldmemo_peer.Peer, beside this file) on a minimal raw XMPP client stream.

Test-time only, a separate process (python-oldmemo is AGPL: never linked into or vendored with shieldcall).
Loopback only: plain TCP and SASL PLAIN, as the test Prosody allows (`allow_unencrypted_plain_auth`).

Usage: oldmemo_xmpp_peer.py --jid USER@DOMAIN --password PW --server 127.0.0.1:PORT [--no-publish]

On start it logs in, publishes (unless --no-publish) its device list and bundle (publish-options access_model=open), sends
presence, and prints {"event":"ready","device_id":N}. Then, one JSON object per line:
  stdout events: {"event":"message","from":J,"device":N,"body":T}
                 {"event":"error","message":M}            (undecryptable message, failed command)
                 {"event":"sent","to":J,"devices":[N…]}
  stdin commands: {"op":"send","to":J,"text":T}            (fetches J's device list and bundles from PEP)
                  {"op":"publish_raw","node":N,"xml":X[,"options":false]}
                                                           (publish any payload, e.g. a malformed one;
                                                            without publish-options when options is false)
                  {"op":"send_raw","to":J,"xml":X}         (send a message with this payload and the fallback)
                  {"op":"fetch","jid":J,"node":N}          (-> {"event":"fetched","xml":X or null})
                  {"op":"quit"}
  Each publish_raw/send_raw answers {"event":"done","op":…}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import sys
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional
from xml.sax.saxutils import escape, quoteattr

sys.path.insert(0, __import__("os").path.dirname(__file__))
import oldmemo_peer  # noqa: E402  (redirects sys.stdout to stderr; replies go to _REPLY_OUT)
from oldmemo_peer import Peer  # noqa: E402

OUT = oldmemo_peer._REPLY_OUT
AX = "eu.siacs.conversations.axolotl"
STREAM = "http://etherx.jabber.org/streams"
CLIENT = "jabber:client"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
PUBSUB = "http://jabber.org/protocol/pubsub"
CARBONS = "urn:xmpp:carbons:2"
FALLBACK = "I sent you an OMEMO encrypted message but your client doesn\u2019t seem to support that."


def emit(obj: dict) -> None:
    OUT.write(json.dumps(obj) + "\n")
    OUT.flush()


def bare(jid: str) -> str:
    return jid.split("/", 1)[0]


class Stream:
    """A client XML stream: top-level elements come out of `next_element`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, domain: str) -> None:
        self.reader, self.writer, self.domain = reader, writer, domain
        self.parser: Optional[ET.XMLPullParser] = None
        self.depth = 0
        self.ready: List[ET.Element] = []

    async def open(self) -> None:
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.send(
            f"<?xml version='1.0'?><stream:stream to={quoteattr(self.domain)} xmlns='{CLIENT}' "
            f"xmlns:stream='{STREAM}' version='1.0'>"
        )

    def send(self, text: str) -> None:
        self.writer.write(text.encode())

    async def next_element(self) -> ET.Element:
        while not self.ready:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError("server closed the stream")
            assert self.parser is not None
            self.parser.feed(data)
            for event, el in self.parser.read_events():
                if event == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.ready.append(el)
        return self.ready.pop(0)


class XmppPeer:
    def __init__(self, jid: str, password: str, host: str, port: int, publish: bool = True) -> None:
        self.jid, self.password, self.host, self.port = jid, password, host, port
        self.publish_at_start = publish
        self.full_jid = jid
        self.ids = itertools.count(1)
        self.pending: Dict[str, asyncio.Future] = {}
        self.peer: Optional[Peer] = None
        self.stream: Optional[Stream] = None

    async def login(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        s = Stream(reader, writer, self.jid.split("@", 1)[1])
        self.stream = s
        await s.open()
        features = await s.next_element()
        mechs = [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
        if "PLAIN" not in mechs:
            raise RuntimeError(f"server offers no PLAIN: {mechs}")
        token = base64.b64encode(f"\0{self.jid.split('@')[0]}\0{self.password}".encode()).decode()
        s.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        answer = await s.next_element()
        if answer.tag != f"{{{SASL}}}success":
            raise RuntimeError("login refused")
        await s.open()
        await s.next_element()  # features
        s.send(f"<iq type='set' id='bind1'><bind xmlns='{BIND}'/></iq>")
        bound = await s.next_element()
        jid_el = bound.find(f".//{{{BIND}}}jid")
        if jid_el is None or not jid_el.text:
            raise RuntimeError("bind failed")
        self.full_jid = jid_el.text

    async def iq(self, type_: str, payload: str, to: Optional[str] = None) -> ET.Element:
        assert self.stream is not None
        iq_id = f"py{next(self.ids)}"
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.pending[iq_id] = fut
        to_attr = f" to={quoteattr(to)}" if to else ""
        self.stream.send(f"<iq type='{type_}' id='{iq_id}'{to_attr}>{payload}</iq>")
        return await asyncio.wait_for(fut, 15)

    async def publish(self, node: str, payload_xml: str, with_options: bool = True) -> None:
        options = "" if not with_options else (
            "<publish-options><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
            "<field var='pubsub#access_model'><value>open</value></field></x></publish-options>"
        )
        res = await self.iq(
            "set",
            f"<pubsub xmlns='{PUBSUB}'><publish node={quoteattr(node)}><item id='current'>{payload_xml}</item>"
            f"</publish>{options}</pubsub>",
        )
        if res.get("type") != "result":
            raise RuntimeError(f"publishing {node} failed: {ET.tostring(res).decode()}")

    async def fetch(self, jid: str, node: str) -> Optional[ET.Element]:
        res = await self.iq("get", f"<pubsub xmlns='{PUBSUB}'><items node={quoteattr(node)} max_items='1'/></pubsub>", jid)
        if res.get("type") != "result":
            return None
        item = res.find(f".//{{{PUBSUB}}}item")
        if item is None or len(item) == 0:
            return None
        return item[0]

    async def publish_own(self) -> None:
        assert self.peer is not None
        await self.publish(f"{AX}.bundles:{self.peer.device_id}", self.peer.bundle_xml())
        await self.publish(f"{AX}.devicelist", f"<list xmlns='{AX}'><device id='{self.peer.device_id}'/></list>")

    def send_encrypted(self, to: str, encrypted_xml: str) -> None:
        assert self.stream is not None
        self.stream.send(
            f"<message type='chat' to={quoteattr(to)} id='m{next(self.ids)}'>{encrypted_xml}"
            f"<encryption xmlns='urn:xmpp:eme:0' namespace='{AX}' name='OMEMO'/>"
            f"<store xmlns='urn:xmpp:hints'/><body>{escape(FALLBACK)}</body></message>"
        )

    async def flush_outbox(self) -> None:
        assert self.peer is not None
        for m in self.peer.take_outbox():
            self.send_encrypted(m["to_jid"], m["encrypted_xml"])

    async def send_text(self, to: str, text: str) -> None:
        assert self.peer is not None
        lst = await self.fetch(to, f"{AX}.devicelist")
        if lst is None:
            raise RuntimeError(f"{to} has no device list")
        devices = [int(d.get("id", "0")) for d in lst.iter(f"{{{AX}}}device")]
        recipients = []
        for d in devices:
            b = await self.fetch(to, f"{AX}.bundles:{d}")
            if b is None:
                continue
            recipients.append({"jid": to, "device_id": d, "bundle_xml": ET.tostring(b).decode()})
        if not recipients:
            raise RuntimeError(f"no bundle of {to} found")
        xml = await self.peer.encrypt(recipients, text.encode())
        self.send_encrypted(to, xml)
        emit({"event": "sent", "to": to, "devices": [r["device_id"] for r in recipients]})

    async def on_message(self, msg: ET.Element) -> None:
        assert self.peer is not None
        enc = msg.find(f"{{{AX}}}encrypted")
        if enc is None:
            return
        sender = bare(msg.get("from", ""))
        try:
            plaintext, device, _ = await self.peer.decrypt(sender, ET.tostring(enc).decode())
        except Exception as e:  # report, never drop silently
            emit({"event": "error", "message": f"cannot decrypt message from {sender}: {e}"})
            return
        await self.flush_outbox()
        if plaintext:
            emit({"event": "message", "from": sender, "device": device, "body": plaintext.decode("utf-8", "replace")})

    async def read_loop(self) -> None:
        assert self.stream is not None
        while True:
            el = await self.stream.next_element()
            tag = el.tag.split("}", 1)[-1]
            if tag == "iq":
                fut = self.pending.pop(el.get("id", ""), None)
                if fut is not None and el.get("type") in ("result", "error"):
                    if not fut.done():
                        fut.set_result(el)
                elif el.get("type") in ("get", "set"):
                    to = quoteattr(el.get("from", ""))
                    self.stream.send(
                        f"<iq type='error' id={quoteattr(el.get('id', ''))} to={to}><error type='cancel'>"
                        "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                    )
            elif tag == "message":
                await self.on_message(el)

    async def command_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            try:
                cmd = json.loads(line)
                if cmd.get("op") == "quit":
                    return
                if cmd.get("op") == "send":
                    await self.send_text(cmd["to"], cmd["text"])
                elif cmd.get("op") == "publish_raw":
                    await self.publish(cmd["node"], cmd["xml"], cmd.get("options", True))
                    emit({"event": "done", "op": "publish_raw"})
                elif cmd.get("op") == "fetch":
                    el = await self.fetch(cmd["jid"], cmd["node"])
                    emit({"event": "fetched", "xml": None if el is None else ET.tostring(el).decode()})
                elif cmd.get("op") == "send_raw":
                    self.send_encrypted(cmd["to"], cmd["xml"])
                    emit({"event": "done", "op": "send_raw"})
                else:
                    emit({"event": "error", "message": f"unknown op {cmd.get('op')!r}"})
            except Exception as e:
                emit({"event": "error", "message": f"command failed: {e}"})

    async def run(self) -> None:
        self.peer = await Peer.create(self.jid, None)
        await self.login()
        reader = asyncio.create_task(self.read_loop())
        if self.publish_at_start:
            await self.publish_own()
        assert self.stream is not None
        self.stream.send("<presence/>")
        emit({"event": "ready", "device_id": self.peer.device_id})
        commands = asyncio.create_task(self.command_loop())
        done, _ = await asyncio.wait({reader, commands}, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t.exception() is not None:
                emit({"event": "error", "message": f"stopped: {t.exception()}"})
        self.stream.send("</stream:stream>")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jid", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--server", required=True, help="127.0.0.1:PORT")
    ap.add_argument("--no-publish", action="store_true", help="do not publish device list and bundle at start")
    a = ap.parse_args()
    host, port = a.server.rsplit(":", 1)
    if host not in ("127.0.0.1", "::1", "localhost"):
        print("plaintext login is for loopback only", file=sys.stderr)
        return 2
    try:
        asyncio.run(XmppPeer(a.jid, a.password, host, int(port), not a.no_publish).run())
    except Exception as e:
        emit({"event": "error", "message": f"fatal: {e}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
