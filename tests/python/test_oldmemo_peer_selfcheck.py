#!/usr/bin/env python3
"""Dev self-check of oldmemo_peer.py: two oldmemo peers talk through the JSON-lines shim protocol.

Runnable as a plain script (no pytest): `python tests/python/test_oldmemo_peer_selfcheck.py`. Uses the
interpreter it runs with (or $SHIELDCALL_PYTHON) to start the peers. Prints one line per check and a final
`N passed, M failed`; exits non-zero on any failure. `--no-bench` skips the bench ops.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any, Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "oldmemo_peer.py")
NS = "eu.siacs.conversations.axolotl"
Q = "{%s}" % NS


class Peer:
    def __init__(self, name: str) -> None:
        self.name = name
        python = os.environ.get("SHIELDCALL_PYTHON") or sys.executable
        self.proc = subprocess.Popen(
            [python, PEER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sys.stderr,
            text=True, bufsize=1,
        )

    def raw(self, line: str) -> Dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            raise RuntimeError(f"{self.name}: peer exited (rc={self.proc.wait()})")
        return json.loads(out)  # any non-JSON line on stdout is a protocol violation

    def call(self, **request: Any) -> Dict[str, Any]:
        return self.raw(json.dumps(request))

    def ok(self, **request: Any) -> Dict[str, Any]:
        reply = self.call(**request)
        if reply.get("ok") is not True:
            raise AssertionError(f"{self.name} {request.get('op')}: {reply}")
        return reply

    def quit(self) -> int:
        try:
            self.call(op="quit")
        except Exception:
            pass
        return self.proc.wait(timeout=30)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def enc(sender: Peer, to_jid: str, to_dev: int, text: bytes, bundle: Optional[str] = None) -> str:
    recipient: Dict[str, Any] = {"jid": to_jid, "device_id": to_dev}
    if bundle is not None:
        recipient["bundle_xml"] = bundle
    return sender.ok(op="encrypt", recipients=[recipient], plaintext_b64=b64(text))["encrypted_xml"]


def dec(receiver: Peer, from_jid: str, xml: str) -> Dict[str, Any]:
    return receiver.ok(op="decrypt", from_jid=from_jid, encrypted_xml=xml)


def keys_of(xml: str) -> List[ET.Element]:
    return list(ET.fromstring(xml).iter(Q + "key"))


def flip_payload_byte(xml: str) -> str:
    root = ET.fromstring(xml)
    payload = root.find(Q + "payload")
    assert payload is not None and payload.text
    data = bytearray(base64.b64decode(payload.text))
    data[len(data) // 2] ^= 0x01
    payload.text = b64(bytes(data))
    return ET.tostring(root, encoding="unicode")


def main() -> int:
    do_bench = "--no-bench" not in sys.argv[1:]
    passed = failed = 0

    def check(name: str, fn: Callable[[], None]) -> None:
        nonlocal passed, failed
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        else:
            passed += 1
            print(f"ok   {name}", flush=True)

    a, b = Peer("A"), Peer("B")
    AJ, BJ = "alice@localhost", "bob@localhost"
    st: Dict[str, Any] = {}
    try:
        def init() -> None:
            assert a.ok(op="init", jid=AJ, device_id=1234)["device_id"] == 1234
            dev = b.ok(op="init", jid=BJ)["device_id"]
            assert isinstance(dev, int) and 1 <= dev <= 2 ** 31 - 1, dev
            st["bdev"] = dev
            st["aid"] = a.ok(op="identity")
            st["bid"] = b.ok(op="identity")
        check("init (given and random device id), identity", init)
        adev, bdev = 1234, st.get("bdev", 0)

        def identity_format() -> None:
            for jid, dev, ident in ((AJ, adev, st["aid"]), (BJ, bdev, st["bid"])):
                assert re.fullmatch(r"05[0-9a-f]{64}", ident["identity_hex"]), ident
                assert ident["uri"] == f"xmpp:{jid}?omemo-sid-{dev}={ident['identity_hex'][2:]}", ident
        check("identity hex and xmpp: URI format", identity_format)

        def bundle() -> None:
            reply = a.ok(op="bundle")
            assert reply["device_id"] == adev
            xml = reply["bundle_xml"]
            assert xml.startswith(f'<bundle xmlns="{NS}">'), xml[:80]
            root = ET.fromstring(xml)
            ik = base64.b64decode(root.find(Q + "identityKey").text)
            assert len(ik) == 33 and ik.hex() == st["aid"]["identity_hex"]
            spk = root.find(Q + "signedPreKeyPublic")
            assert spk.get("signedPreKeyId") and len(base64.b64decode(spk.text)) == 33
            assert len(base64.b64decode(root.find(Q + "signedPreKeySignature").text)) == 64
            pks = list(root.iter(Q + "preKeyPublic"))
            assert len(pks) == 100 and all(p.get("preKeyId") for p in pks), len(pks)
            st["abundle"] = xml
        check("bundle XML shape (default xmlns, 33-byte keys, 100 prekeys)", bundle)

        def first_prekey_message() -> None:
            xml = enc(b, AJ, adev, b"hello alice", st["abundle"])
            assert xml.startswith(f'<encrypted xmlns="{NS}">'), xml[:80]
            keys = keys_of(xml)
            assert len(keys) == 1 and keys[0].get("rid") == str(adev) and keys[0].get("prekey") == "true", xml
            root = ET.fromstring(xml)
            assert root.find(Q + "header").get("sid") == str(bdev)
            assert len(base64.b64decode(root.find(f"{Q}header/{Q}iv").text)) == 12
            r = dec(a, BJ, xml)
            assert base64.b64decode(r["plaintext_b64"]) == b"hello alice", r
            assert r["sender_device_id"] == bdev, r
            assert r["sender_identity_hex"] == st["bid"]["identity_hex"], r
        check("B encrypts to A's bundle (PreKey, one key), A decrypts, sender identity", first_prekey_message)

        def reply_no_prekey() -> None:
            xml = enc(a, BJ, bdev, b"hi bob")
            keys = keys_of(xml)
            assert len(keys) == 1 and keys[0].get("rid") == str(bdev) and keys[0].get("prekey") is None, xml
            r = dec(b, AJ, xml)
            assert base64.b64decode(r["plaintext_b64"]) == b"hi bob"
            assert r["sender_device_id"] == adev and r["sender_identity_hex"] == st["aid"]["identity_hex"], r
            # After B received an answer, its session is acknowledged: no more prekey='true'.
            xml = enc(b, AJ, adev, b"ack")
            assert keys_of(xml)[0].get("prekey") is None, xml
            assert base64.b64decode(dec(a, BJ, xml)["plaintext_b64"]) == b"ack"
        check("A replies without session bootstrap (SignalMessage), B's session acknowledged", reply_no_prekey)

        def interleaved() -> None:
            for i in range(20):
                m1 = f"a->b {i}".encode()
                m2 = f"b->a {i}".encode() * (i + 1)
                x1 = enc(a, BJ, bdev, m1)
                x2 = enc(b, AJ, adev, m2)
                if i % 3 == 0:
                    x1b = enc(a, BJ, bdev, m1 + b"!")
                    assert base64.b64decode(dec(b, AJ, x1)["plaintext_b64"]) == m1
                    assert base64.b64decode(dec(b, AJ, x1b)["plaintext_b64"]) == m1 + b"!"
                else:
                    assert base64.b64decode(dec(b, AJ, x1)["plaintext_b64"]) == m1
                assert base64.b64decode(dec(a, BJ, x2)["plaintext_b64"]) == m2
        check("20 messages each way, interleaved", interleaved)

        def out_of_order() -> None:
            msgs = [f"ooo {i}".encode() for i in range(5)]
            xmls = [enc(a, BJ, bdev, m) for m in msgs]
            for i in (3, 0, 4, 2, 1):
                assert base64.b64decode(dec(b, AJ, xmls[i])["plaintext_b64"]) == msgs[i]
            st["old"] = xmls[2]
        check("5 messages delivered out of order", out_of_order)

        def duplicate() -> None:
            xml = enc(a, BJ, bdev, b"once")
            assert base64.b64decode(dec(b, AJ, xml)["plaintext_b64"]) == b"once"
            r = b.call(op="decrypt", from_jid=AJ, encrypted_xml=xml)
            assert r.get("ok") is False and r.get("error"), r
            r = b.call(op="decrypt", from_jid=AJ, encrypted_xml=st["old"])
            assert r.get("ok") is False, r
            # still alive and in sync
            assert base64.b64decode(dec(b, AJ, enc(a, BJ, bdev, b"after dup"))["plaintext_b64"]) == b"after dup"
        check("duplicate delivery fails the second time, peer keeps running", duplicate)

        def flipped() -> None:
            xml = enc(a, BJ, bdev, b"do not touch me")
            r = b.call(op="decrypt", from_jid=AJ, encrypted_xml=flip_payload_byte(xml))
            assert r.get("ok") is False and r.get("error"), r
            # the untouched message still decrypts (the failed attempt did not consume its key)
            assert base64.b64decode(dec(b, AJ, xml)["plaintext_b64"]) == b"do not touch me"
        check("flipped payload byte fails; original still decrypts", flipped)

        def key_transport() -> None:
            for s, r, rj, rdev, sj, sdev, sid in ((a, b, BJ, bdev, AJ, adev, "aid"), (b, a, AJ, adev, BJ, bdev, "bid")):
                xml = s.ok(op="encrypt", recipients=[{"jid": rj, "device_id": rdev}], plaintext_b64="")["encrypted_xml"]
                root = ET.fromstring(xml)
                assert root.find(Q + "payload") is None, xml
                assert root.find(f"{Q}header/{Q}iv") is not None and len(keys_of(xml)) == 1, xml
                got = dec(r, sj, xml)
                assert got["plaintext_b64"] == "" and got["sender_device_id"] == sdev, got
                assert got["sender_identity_hex"] == st[sid]["identity_hex"], got
            # and the ratchet keeps working afterwards
            assert base64.b64decode(dec(b, AJ, enc(a, BJ, bdev, b"after kt"))["plaintext_b64"]) == b"after kt"
        check("empty key-transport message both ways", key_transport)

        def key_transport_first() -> None:
            # A fresh peer C opens a session with an empty message (prekey='true', no payload).
            c = Peer("C")
            try:
                c.ok(op="init", jid="carol@localhost", device_id=77)
                xml = c.ok(op="encrypt", recipients=[{"jid": AJ, "device_id": adev, "bundle_xml": a.ok(op="bundle")["bundle_xml"]}],
                           plaintext_b64="")["encrypted_xml"]
                assert ET.fromstring(xml).find(Q + "payload") is None and keys_of(xml)[0].get("prekey") == "true", xml
                got = dec(a, "carol@localhost", xml)
                assert got["plaintext_b64"] == "" and got["sender_device_id"] == 77, got
                assert got["sender_identity_hex"] == c.ok(op="identity")["identity_hex"]
                back = enc(a, "carol@localhost", 77, b"welcome carol")
                assert base64.b64decode(dec(c, AJ, back)["plaintext_b64"]) == b"welcome carol"
            finally:
                c.quit()
        check("session opened by an empty PreKey key-transport message", key_transport_first)

        def prekey_out_of_order() -> None:
            # Before any answer, every message of the initiator is a PreKeySignalMessage; deliver them shuffled.
            f = Peer("F")
            try:
                f.ok(op="init", jid="frank@localhost", device_id=555)
                bundle_a = a.ok(op="bundle")["bundle_xml"]
                msgs = [f"pk {i}".encode() for i in range(4)]
                xmls = [enc(f, AJ, adev, msgs[0], bundle_a)] + [enc(f, AJ, adev, m) for m in msgs[1:]]
                assert all(keys_of(x)[0].get("prekey") == "true" for x in xmls)
                for i in (2, 0, 3, 1):
                    r = dec(a, "frank@localhost", xmls[i])
                    assert base64.b64decode(r["plaintext_b64"]) == msgs[i] and r["sender_device_id"] == 555, r
                r = a.call(op="decrypt", from_jid="frank@localhost", encrypted_xml=xmls[0])
                assert r.get("ok") is False, r
                # the used prekey was replaced in A's bundle
                ids = {p.get("preKeyId") for p in ET.fromstring(a.ok(op="bundle")["bundle_xml"]).iter(Q + "preKeyPublic")}
                kid = ET.fromstring(bundle_a)
                assert len(ids) == 100 and ids != {p.get("preKeyId") for p in kid.iter(Q + "preKeyPublic")}
                back = enc(a, "frank@localhost", 555, b"got them")
                assert keys_of(back)[0].get("prekey") is None
                assert base64.b64decode(dec(f, AJ, back)["plaintext_b64"]) == b"got them"
                assert keys_of(enc(f, AJ, adev, b"x"))[0].get("prekey") is None
            finally:
                f.quit()
        check("PreKey messages out of order, duplicate PreKey fails, prekey replaced", prekey_out_of_order)

        def long_one_way() -> None:
            # python-omemo sends a heartbeat after 53 unanswered messages: it must stay off stdout.
            for i in range(60):
                m = f"one way {i}".encode()
                assert base64.b64decode(dec(b, AJ, enc(a, BJ, bdev, m))["plaintext_b64"]) == m
            out = b.ok(op="outbox")["messages"]
            assert out and all(o["to_jid"] == AJ for o in out), out
            for o in out:  # the automatic empty messages decrypt as key transport on A
                assert dec(a, BJ, o["encrypted_xml"])["plaintext_b64"] == ""
            assert base64.b64decode(dec(a, BJ, enc(b, AJ, adev, b"still fine"))["plaintext_b64"]) == b"still fine"
        check("60 messages one way (automatic heartbeat goes to the outbox, not stdout)", long_one_way)

        def multi_recipients() -> None:
            d = Peer("D")
            try:
                d.ok(op="init", jid="dave@localhost", device_id=4242)
                xml = a.ok(op="encrypt", plaintext_b64=b64(b"to both"), recipients=[
                    {"jid": BJ, "device_id": bdev},
                    {"jid": "dave@localhost", "device_id": 4242, "bundle_xml": d.ok(op="bundle")["bundle_xml"]},
                ])["encrypted_xml"]
                keys = {k.get("rid"): k.get("prekey") for k in keys_of(xml)}
                assert keys == {str(bdev): None, "4242": "true"}, keys
                assert base64.b64decode(dec(b, AJ, xml)["plaintext_b64"]) == b"to both"
                assert base64.b64decode(dec(d, AJ, xml)["plaintext_b64"]) == b"to both"
                # later messages to B alone carry one key only (no key for dave, none for own devices)
                assert [k.get("rid") for k in keys_of(enc(a, BJ, bdev, b"only bob"))] == [str(bdev)]
            finally:
                d.quit()
        check("two recipients get exactly their two keys; later single-recipient has one key", multi_recipients)

        def errors_keep_running() -> None:
            for bad in (
                {"op": "decrypt", "from_jid": AJ, "encrypted_xml": "<encrypted"},
                {"op": "decrypt", "from_jid": AJ, "encrypted_xml": f"<encrypted xmlns='{NS}'/>"},
                {"op": "encrypt", "recipients": [{"jid": "nobody@localhost", "device_id": 5}], "plaintext_b64": "aGk="},
                {"op": "encrypt", "recipients": [{"jid": "x@localhost", "device_id": 6, "bundle_xml": "<bundle/>"}], "plaintext_b64": "aGk="},
                {"op": "nope"},
            ):
                r = b.call(**bad)
                assert r.get("ok") is False and isinstance(r.get("error"), str), (bad, r)
            r = b.raw("this is not json")
            assert r.get("ok") is False, r
            # a message for someone else
            other = enc(a, BJ, bdev, b"for bob")
            r = a.call(op="decrypt", from_jid=BJ, encrypted_xml=other)
            assert r.get("ok") is False, r
            assert base64.b64decode(dec(b, AJ, other)["plaintext_b64"]) == b"for bob"
        check("malformed requests and foreign messages answer errors, peer keeps running", errors_keep_running)

        def tampered_signature() -> None:
            e = Peer("E")
            try:
                e.ok(op="init", jid="eve@localhost", device_id=99)
                root = ET.fromstring(e.ok(op="bundle")["bundle_xml"])
                sig = root.find(Q + "signedPreKeySignature")
                raw = bytearray(base64.b64decode(sig.text))
                raw[5] ^= 0x40
                sig.text = b64(bytes(raw))
                r = a.call(op="encrypt", recipients=[{"jid": "eve@localhost", "device_id": 99,
                                                      "bundle_xml": ET.tostring(root, encoding="unicode")}],
                           plaintext_b64=b64(b"x"))
                assert r.get("ok") is False, r
            finally:
                e.quit()
        check("bundle with a bad signed-prekey signature is refused", tampered_signature)

        def reinit() -> None:
            old = st["aid"]["identity_hex"]
            assert a.ok(op="init", jid=AJ, device_id=1234)["device_id"] == 1234
            new = a.ok(op="identity")["identity_hex"]
            assert new != old
            # B still has the old session; with the new bundle it starts over with the new identity.
            xml = enc(b, AJ, 1234, b"new you", a.ok(op="bundle")["bundle_xml"])
            assert keys_of(xml)[0].get("prekey") == "true", xml
            r = dec(a, BJ, xml)
            assert base64.b64decode(r["plaintext_b64"]) == b"new you"
            back = dec(b, AJ, enc(a, BJ, bdev, b"yes"))
            assert back["sender_identity_hex"] == new, back
        check("second init discards state; peers rebuild sessions with the new identity", reinit)

        if do_bench:
            for what, n in (("setup", 5), ("steady", 100), ("fanout", 3)):
                def bench(what: str = what, n: int = n) -> None:
                    r = a.ok(op="bench", what=what, n=n)
                    assert isinstance(r["ns_per_op"], (int, float)) and r["ns_per_op"] > 0, r
                    print(f"     bench {what} n={n}: {r['ns_per_op'] / 1e6:.3f} ms/op", flush=True)
                check(f"bench {what}", bench)
            check("peer still answers after bench", lambda: a.ok(op="identity"))

        def quit_rc() -> None:
            assert a.quit() == 0 and b.quit() == 0
        check("quit exits 0", quit_rc)
    finally:
        for p in (a, b):
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()

    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
