#!/usr/bin/env python3
"""Writes seeds/<target>/ from the golden stanzas (Dino 0.4.2 capture, Conversations,
docs/protocol.md §7): the parameters of their <description/> and <transport/> in the line
format of fuzz_targets/common/lines.rs. Output is committed; small files only."""
import os, re
here = os.path.dirname(os.path.abspath(__file__))
fx = os.path.normpath(os.path.join(here, "../../jingle/tests/fixtures"))
def out(t, n, d):
    os.makedirs(os.path.join(here, "seeds", t), exist_ok=True)
    open(os.path.join(here, "seeds", t, n), "wb").write(d if isinstance(d, bytes) else d.encode())
def attrs(tag):
    return dict(re.findall(r"([\w-]+)=['\"]([^'\"]*)['\"]", tag))
FP = "3A:9F:0C:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:01:02:03:04:05:06:07:08:09:0A:0B:0C:C1"
for sub, fn in [("dino-0.4.2", "caller-05-out-session-initiate.xml"), ("dino-0.4.2", "callee-10-out-session-accept.xml"),
                ("conversations", "7.4-session-initiate.xml"), ("conversations", "7.6-session-accept.xml"),
                ("conversations", "7.7-transport-info.xml")]:
    x = open(os.path.join(fx, sub, fn)).read()
    lines = []
    for m in re.finditer(r"<payload-type ([^>]*?)(/>|>(.*?)</payload-type>)", x, re.S):
        a = attrs(m.group(1)); ps = [ "%s=%s" % (p["name"], p.get("value", "")) for p in map(attrs, re.findall(r"<parameter ([^>]*)/>", m.group(3) or ""))]
        lines.append(" ".join(["payload", a["id"], a["name"], a.get("clockrate", "0"), a.get("channels", "1")] + ps))
    if "<rtcp-mux/>" in x: lines.append("rtcp-mux")
    for a in map(attrs, re.findall(r"<rtp-hdrext ([^>]*)/>", x)): lines.append("hdrext %s %s" % (a["id"], a["uri"]))
    for a in map(attrs, re.findall(r"<source ([^>]*)>", x)): lines.append("source %s cname" % a["ssrc"])
    t = re.search(r"<transport ([^>]*)>", x)
    if t:
        a = attrs(t.group(1))
        if "ufrag" in a: lines += ["ufrag " + a["ufrag"], "pwd " + a["pwd"]]
    key = "trickle" if "transport-info" in fn else "candidate"
    for a in map(attrs, re.findall(r"<candidate ([^>]*)/>", x)):
        c = [a.get(k, "") for k in ("foundation", "component", "protocol", "priority", "ip", "port", "type", "generation", "id")]
        if "rel-addr" in a: c += [a["rel-addr"], a.get("rel-port", "0")]
        lines.append(key + " " + " ".join(c))
    s = re.search(r"setup=['\"](\w+)['\"]", x)
    lines += ["fingerprint sha-256 " + FP, "setup " + (s.group(1) if s else "actpass")]
    text = "\n".join(lines) + "\n"
    name = sub + "-" + fn.replace(".xml", ".txt")
    out("params", name, text)
    out("remote_params", name, b"\x00" + text.encode())
    out("remote_params", "initiator-" + name, b"\x03" + text.encode())
# session_datagrams: mode byte, then [delay][len hi][len lo][bytes]
def rec(delay, b): return bytes([delay, len(b) >> 8, len(b) & 0xff]) + b
rtp = bytes([0x80, 111, 0xea, 0x60, 0, 0, 0, 0, 1, 2, 3, 4]) + bytes(range(40))
rtcp = bytes([0x80, 200, 0, 6]) + bytes(24)
stun = bytes([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]) + bytes(12)
dtls = bytes([22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
for mode in (0, 1):
    out("session_datagrams", "mixed-%d.bin" % mode, bytes([mode]) + rec(5, rtp) + rec(0, rtcp) + rec(20, stun) + rec(1, dtls))
    out("session_datagrams", "rtp-%d.bin" % mode, bytes([mode]) + rec(20, rtp) * 3)
# opus_decode: [seq hi][seq lo][len][bytes] records; TOC bytes of each Opus config and code.
out("opus_decode", "toc-codes.bin", b"".join(bytes([0, i, 3, (i << 3) | (i & 3), 0xff, 0x01]) for i in range(32)))
out("opus_decode", "silk-20ms.bin", bytes([0, 1, 8, 0x78, 0x8a, 0x1f, 0, 0, 0, 0, 0]) + bytes([0, 3, 1, 0xf8]))

# turn_input: records [kind][delay][len hi][len lo][bytes]. A 401 challenge (realm, nonce) as a
# datagram and on the stream, a ChannelData frame padded as on streams, a Data indication.
import struct
def stun(mtype, attrs):
    body = b"".join(struct.pack(">HH", t, len(v)) + v + b"\0" * (-len(v) % 4) for t, v in attrs)
    return struct.pack(">HHI", mtype, len(body), 0x2112A442) + bytes(range(12)) + body
challenge = stun(0x0113, [(0x0009, b"\0\0\x04\x01Unauthorized"), (0x0014, b"example.org"), (0x0015, b"n0nce")])
data_ind = stun(0x0017, [(0x0012, b"\0\x01" + bytes(6)), (0x0013, b"hello")])
channel = b"\x40\x00\x00\x05hello\0\0\0"
def rec(kind, b):
    return bytes([kind, 20]) + struct.pack(">H", len(b)) + b
out("turn_input", "challenge-udp.bin", rec(0, challenge))
out("turn_input", "challenge-stream-split.bin", rec(1, challenge[:7]) + rec(1, challenge[7:]) + rec(1, channel))
out("turn_input", "data-indication.bin", rec(0, data_ind) + rec(1, data_ind))
