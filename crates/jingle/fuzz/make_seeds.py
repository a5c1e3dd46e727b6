#!/usr/bin/env python3
"""Writes seeds/<target>/ from the golden stanzas (crates/jingle/tests/fixtures: the Dino 0.4.2
capture and Conversations' docs/protocol.md §7 examples). Output is committed; small files
only."""
import os, re

here = os.path.dirname(os.path.abspath(__file__))
fx = os.path.normpath(os.path.join(here, "../tests/fixtures"))
ROMEO, JULIET, JULIET2 = "romeo@montague.example/phone", "juliet@capulet.example/laptop", "juliet@capulet.example/tablet"

def out(target, name, data):
    d = os.path.join(here, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def load(path):
    text = open(os.path.join(fx, path)).read().strip()
    if "conversations/" in path and " from=" not in text.split(">")[0]:
        to = re.search(r"to='([^']*)'", text).group(1)
        sender = JULIET2 if path.endswith("7.3-accept.xml") else (ROMEO if to.startswith("juliet") else JULIET)
        text = re.sub(r"^<(\w+) ", r"<\1 from='%s' " % sender, text, count=1)
    return text

stanzas = {}
for sub in ("dino-0.4.2", "conversations"):
    for fn in sorted(os.listdir(os.path.join(fx, sub))):
        if fn.endswith(".xml"):
            stanzas[sub + "/" + fn] = load(sub + "/" + fn)

def element(text, name):
    return [m.group(0) for m in re.finditer(r"<%s\b[^>]*?(/>|>.*?</%s>)" % (name, name), text, re.S)]

for key, text in stanzas.items():
    base = key.replace("/", "-")
    if text.startswith("<message"):
        out("jmi", base, text)
        if "<proceed" in text:
            out("proceed_device", base, text)
    if "<jingle" in text:
        out("jingle_iq", base, text)
    for i, t in enumerate(element(text, "transport")):
        if "xmlns=" in t:
            out("ice_udp_transport", "%s-%d.xml" % (base, i), t)
    for i, f in enumerate(element(text, "fingerprint")):
        # An element cut out of its stanza keeps its own xmlns; the encrypted child has its own.
        out("fingerprint", "%s-%d.xml" % (base, i), f)

NS_JMI, NS_DRAFT = "urn:xmpp:jingle-message:0", "http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification"
for name, body in [("reject", "<reject xmlns='%s' id='s'><reason xmlns='urn:xmpp:jingle:1'><busy/></reason></reject>" % NS_JMI),
                   ("retract", "<retract xmlns='%s' id='s'/>" % NS_JMI)]:
    out("jmi", name + ".xml", "<message xmlns='jabber:client' from='%s' to='%s' type='chat'>%s</message>" % (ROMEO, JULIET, body))
for name, dev in [("any-ns", "<device id='12'/>"), ("bad-id", "<device xmlns='%s' id='+7'/>" % NS_DRAFT),
                  ("absent", ""), ("two", "<x/><device xmlns='%s' id='2147483647'/><device id='1'/>" % NS_DRAFT)]:
    out("proceed_device", name + ".xml", "<proceed xmlns='%s' id='s'>%s</proceed>" % (NS_JMI, dev))
fp_hex = ":".join(["3A", "9F", "0C", "11"] * 8)
out("fingerprint", "plain.xml", "<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='active'>%s</fingerprint>" % fp_hex)
out("fingerprint", "hex-line.txt", fp_hex.lower() + "\n")

# engine_stanzas: first byte = profile (0 Dino callee, 1 Dino caller, 2 Conversations callee,
# 3 Conversations caller; +4 require_verified, +8 no ringing, +16 OMEMO off), then chunks split
# at NUL: '<'… a stanza; 1 k s = user action k on sid s; 2 k s … = media event k; 3 n = n×0.5 s.
def seq(cfg, *steps):
    parts = [s.encode() if isinstance(s, str) else bytes(s) for s in steps]
    return bytes([cfg]) + b"\0".join(parts)

D, C = "dino-0.4.2/", "conversations/"
accept, local, digest, connected, later = [1, 2, 0], [2, 0, 0], [2, 3, 0], [2, 5, 0], [3, 80]
out("engine_stanzas", "dino-callee.bin", seq(0, stanzas[D + "callee-05-in-propose.xml"], accept,
    stanzas[D + "callee-09-in-session-initiate.xml"], local, digest, connected,
    stanzas[D + "callee-11-in-session-terminate.xml"], later))
out("engine_stanzas", "dino-caller.bin", seq(1, [1, 0, 0], stanzas[D + "caller-04-in-proceed.xml"], local,
    stanzas[D + "caller-06-in-session-accept.xml"], digest, connected, later))
c_acc, c_local, c_dig, c_conn = [1, 2, 1], [2, 0, 1], [2, 3, 1], [2, 5, 1]
out("engine_stanzas", "conversations-callee.bin", seq(2, stanzas[C + "7.1-propose.xml"], c_acc,
    stanzas[C + "7.4-session-initiate.xml"], c_local, stanzas[C + "7.7-transport-info.xml"], c_dig, c_conn,
    stanzas[C + "7.8-session-terminate.xml"], stanzas[C + "7.8-finish.xml"]))
out("engine_stanzas", "conversations-caller.bin", seq(3, [1, 0, 1], stanzas[C + "7.2-receipt.xml"],
    stanzas[C + "7.2-ringing.xml"], stanzas[C + "7.3-proceed.xml"], c_local, stanzas[C + "7.5-result.xml"],
    stanzas[C + "7.6-session-accept.xml"], c_dig, c_conn, [4], later))
plain_init = re.sub(r"<fingerprint xmlns='%s'.*?</fingerprint>" % re.escape(NS_DRAFT),
                    "<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>%s</fingerprint>" % fp_hex,
                    stanzas[C + "7.4-session-initiate.xml"], flags=re.S)
out("engine_stanzas", "conversations-callee-plain.bin", seq(2 + 16, stanzas[C + "7.1-propose.xml"], c_acc,
    plain_init, c_local, c_dig, c_conn, [4], later))
out("engine_stanzas", "conversations-callee-other-device-accepts.bin", seq(2, stanzas[C + "7.1-propose.xml"],
    stanzas[C + "7.3-accept.xml"], later))
out("engine_stanzas", "direct-call.bin", seq(2 + 16, plain_init, [1, 2, 1], c_local, c_dig, c_conn))
