#!/usr/bin/env python3
"""Writes seeds/<target>/ from the golden stanzas (Dino 0.4.2 capture, Conversations'
docs/protocol.md §7 examples). Run from anywhere; output is committed. Only small files."""
import base64, os, re, struct

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.normpath(os.path.join(here, "../../.."))
fixtures = [
    os.path.join(root, "crates/omemo/tests/fixtures/dino-0.4.2"),
    os.path.join(root, "crates/jingle/tests/fixtures/dino-0.4.2"),
    os.path.join(root, "crates/jingle/tests/fixtures/conversations"),
]
AX = "eu.siacs.conversations.axolotl"

def out(target, name, data):
    d = os.path.join(here, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

encrypted, keys = [], []
for d in fixtures:
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".xml"):
            continue
        text = open(os.path.join(d, fn)).read()
        for m in re.finditer(r"<encrypted xmlns=['\"]%s['\"]>.*?</encrypted>" % re.escape(AX), text, re.S):
            encrypted.append((os.path.basename(d) + "-" + fn, m.group(0)))
        for k in re.findall(r"<key [^>]*>([A-Za-z0-9+/=]+)</key>", text):
            try:
                keys.append(base64.b64decode(k))
            except Exception:
                pass

seen = set()
for name, e in encrypted:
    if e in seen:
        continue
    seen.add(e)
    out("encrypted_xml", name, e)
# Shapes the fixtures do not show: key transport (no payload), prekey flag, several keys.
out("encrypted_xml", "key-transport.xml",
    "<encrypted xmlns='%s'><header sid='27183'><key rid='31415' prekey='true'>MwgBEiEF</key>"
    "<key rid='1'>Mwoh</key><iv>q1Zr9Lk2aV0pXe7c</iv></header></encrypted>" % AX)
out("encrypted_xml", "prefixed.xml",
    "<o:encrypted xmlns:o='%s'><o:header sid='7'><o:iv>AAAAAAAAAAAAAAAA</o:iv>"
    "<o:key rid='9' prekey='1'>Mw==</o:key></o:header><o:payload>&#65;A==</o:payload></o:encrypted>" % AX)

def key33(b):
    return base64.b64encode(bytes([5]) + bytes([b] * 32)).decode()

bundle = ("<bundle xmlns='%s'><signedPreKeyPublic signedPreKeyId='1'>%s</signedPreKeyPublic>"
          "<signedPreKeySignature>%s</signedPreKeySignature><identityKey>%s</identityKey><prekeys>%s</prekeys></bundle>"
          % (AX, key33(9), base64.b64encode(bytes(range(64))).decode(), key33(7),
             "".join("<preKeyPublic preKeyId='%d'>%s</preKeyPublic>" % (i, key33(i)) for i in range(1, 4))))
out("bundle_xml", "conversations-shape.xml", bundle)
out("bundle_xml", "no-prekeys.xml", bundle.split("<prekeys>")[0] + "<prekeys/></bundle>")
out("device_list_xml", "two.xml", "<list xmlns='%s'><device id='1942903233'/><device id='129646281'/></list>" % AX)
out("device_list_xml", "labels.xml", "<list xmlns='%s'><device id='1' label='phone'/><device id='1'/></list>" % AX)
out("device_list_xml", "empty.xml", "<list xmlns='%s'/>" % AX)

def varint(n):
    b = b""
    while True:
        if n < 0x80:
            return b + bytes([n])
        b += bytes([n & 0x7F | 0x80]); n >>= 7

def field_bytes(tag, v):
    return varint(tag << 3 | 2) + varint(len(v)) + v

def field_int(tag, v):
    return varint(tag << 3) + varint(v)

for i, k in enumerate(dict.fromkeys(keys)):
    out("signal_message", "dino-key-%d.bin" % i, k)
for i, k in enumerate(k for k in dict.fromkeys(keys) if len(k) > 40):
    pre = bytes([0x33]) + field_int(5, 1942903233) + field_int(1, 42) + field_int(6, 1) \
        + field_bytes(2, bytes([5]) + bytes([1] * 32)) + field_bytes(3, bytes([5]) + bytes([2] * 32)) \
        + field_bytes(4, k)
    out("signal_message", "prekey-%d.bin" % i, pre)
    break

h = "ab" * 32
for name, uri in [
    ("conversations", "xmpp:juliet@capulet.example?omemo-sid-1284733451=%s;omemo-sid-7=%s" % (h, "01" * 32)),
    ("https", "https://conversations.im/i/juliet@capulet.example?omemo-sid-5=%s&action=message" % h.upper()),
    ("bare-omemo", "xmpp://a%%40b@example.org?omemo=%s" % h),
]:
    out("verification_uri", name + ".txt", uri)

# decrypt: first byte picks the fixture's message (0..4), then mutation ops; 0xff = XML text.
for i in range(5):
    out("decrypt", "pick-%d.bin" % i, bytes([i]))
out("decrypt", "flip-mac.bin", bytes([1, 0x00, 0xff, 0xff, 0x5a]))
out("decrypt", "toggle-prekey.bin", bytes([4, 0x05]))
out("decrypt", "drop-payload.bin", bytes([2, 0x0c]))
out("decrypt", "wrong-sid.bin", bytes([1, 0x06, 0, 0, 0x0d, 0x05]))
out("decrypt", "truncate.bin", bytes([4, 0x03, 0, 40]))
out("decrypt", "text.bin", b"\xff" + encrypted[0][1].encode())
