#!/usr/bin/env python3
"""aiortc as an independent DTLS-SRTP + Opus peer for shieldcall-media's interop tests.

Speaks JSON lines on stdin/stdout. Parameters travel in the Jingle shape that
shieldcall-media uses (description: payload types, rtcp-mux, sources, hdrexts;
transport: ufrag, pwd, candidates, fingerprint {hash, setup, value}); this harness
turns them into SDP for aiortc and aiortc's SDP back into that shape.

  --role answer : read {"type":"offer","params":...}, print {"type":"answer","params":...}
  --role offer  : print {"type":"offer","params":...}, read {"type":"answer","params":...}
  --role pair   : two aiortc peers on loopback, print {"type":"pair", "connect_s":...}
                  (the benchmark's reference: aiortc's own connect time)

Audio: sends a sine tone (--tone Hz) and records what it hears to --record (48 kHz mono WAV)
for --seconds after the first received frame. Prints {"type":"done", ...} at the end.
On loopback aiortc gets no ICE servers and 127.0.0.1 as its only host address.
"""

import argparse
import asyncio
import fractions
import json
import math
import struct
import sys
import time
import wave

import aioice.ice

# Only 127.0.0.1: nothing leaves the machine, and candidates stay deterministic.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

from aiortc import (  # noqa: E402
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from av import AudioFrame  # noqa: E402

RATE = 48000
FRAME = 960


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def read_msg():
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise SystemExit("stdin closed")
    return json.loads(line)


class Tone(MediaStreamTrack):
    kind = "audio"

    def __init__(self, freq):
        super().__init__()
        self.freq = freq
        self.n = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        target = self.start + self.n * FRAME / RATE
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        base = self.n * FRAME
        pcm = struct.pack(
            "<%dh" % FRAME,
            *(int(12000 * math.sin(2 * math.pi * self.freq * (base + i) / RATE)) for i in range(FRAME)),
        )
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(pcm)
        frame.sample_rate = RATE
        frame.pts = base
        frame.time_base = fractions.Fraction(1, RATE)
        self.n += 1
        return frame


# ---- Jingle-shaped params <-> SDP -------------------------------------------------------------


def params_to_sdp(p, sdp_type):
    d, t = p["description"], p["transport"]
    pts = [pt for pt in d["payload_types"]]
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic:WMS *",
        "m=audio 9 UDP/TLS/RTP/SAVPF " + " ".join(str(pt["id"]) for pt in pts),
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=mid:0",
        "a=sendrecv",
    ]
    for h in d.get("hdrexts", []):
        lines.append("a=extmap:%d %s" % (h["id"], h["uri"]))
    if d.get("rtcp_mux"):
        lines.append("a=rtcp-mux")
    for pt in pts:
        enc = "%s/%d" % (pt["name"], pt["clockrate"])
        if pt.get("channels", 1) > 1:
            enc += "/%d" % pt["channels"]
        lines.append("a=rtpmap:%d %s" % (pt["id"], enc))
        if pt.get("parameters"):
            lines.append(
                "a=fmtp:%d %s" % (pt["id"], ";".join("%s=%s" % (k, v) for k, v in pt["parameters"]))
            )
    for s in d.get("sources", []):
        if s.get("cname"):
            lines.append("a=ssrc:%d cname:%s" % (s["ssrc"], s["cname"]))
    lines.append("a=ice-ufrag:" + t["ufrag"])
    lines.append("a=ice-pwd:" + t["pwd"])
    for c in t["candidates"]:
        lines.append(
            "a=candidate:%s %d %s %d %s %d typ %s"
            % (c["foundation"], c["component"], c["protocol"], c["priority"], c["ip"], c["port"], c["type"])
        )
    lines.append("a=end-of-candidates")
    f = t["fingerprint"]
    lines.append("a=fingerprint:%s %s" % (f["hash"], f["value"]))
    lines.append("a=setup:" + f["setup"])
    return RTCSessionDescription(sdp="\r\n".join(lines) + "\r\n", type=sdp_type)


def sdp_to_params(sdp):
    d = {"payload_types": [], "rtcp_mux": False, "sources": [], "hdrexts": []}
    t = {"ufrag": None, "pwd": None, "candidates": [], "fingerprint": None}
    setup = None
    fmtp = {}
    rtpmap = []
    cnames = {}
    in_audio = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            in_audio = line.startswith("m=audio")
            continue
        if not line.startswith("a="):
            continue
        key, _, val = line[2:].partition(":")
        if key == "fingerprint" and val.startswith("sha-256 "):
            t["fingerprint"] = {"hash": "sha-256", "value": val.split(" ", 1)[1]}
        elif key == "ice-ufrag":
            t["ufrag"] = val
        elif key == "ice-pwd":
            t["pwd"] = val
        elif key == "setup":
            setup = val
        elif not in_audio:
            continue
        elif key == "rtcp-mux":
            d["rtcp_mux"] = True
        elif key == "rtpmap":
            pt, enc = val.split(" ", 1)
            parts = enc.split("/")
            rtpmap.append((int(pt), parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else 1))
        elif key == "fmtp":
            pt, params = val.split(" ", 1)
            fmtp[int(pt)] = [tuple(kv.split("=", 1)) for kv in params.split(";") if "=" in kv]
        elif key == "ssrc":
            ssrc, attr = val.split(" ", 1)
            if attr.startswith("cname:"):
                cnames[int(ssrc)] = attr[6:]
        elif key == "extmap":
            i, uri = val.split(" ", 1)
            d["hdrexts"].append({"id": int(i.split("/")[0]), "uri": uri})
        elif key == "candidate":
            f = val.split()
            t["candidates"].append(
                {
                    "foundation": f[0],
                    "component": int(f[1]),
                    "protocol": f[2].lower(),
                    "priority": int(f[3]),
                    "ip": f[4],
                    "port": int(f[5]),
                    "type": f[7],
                    "generation": 0,
                    "id": "aiortc%d" % len(t["candidates"]),
                }
            )
    for pt, name, rate, ch in rtpmap:
        d["payload_types"].append(
            {"id": pt, "name": name, "clockrate": rate, "channels": ch, "parameters": fmtp.get(pt, [])}
        )
    d["sources"] = [{"ssrc": s, "cname": c} for s, c in cnames.items()]
    t["fingerprint"]["setup"] = setup
    return {"description": d, "transport": t}


# ---- the call ------------------------------------------------------------------------------------


async def record(track, path, seconds, state):
    frames = []
    first = None
    while True:
        try:
            frame = await track.recv()
        except Exception:
            break
        if first is None:
            first = time.monotonic()
            state["first_audio_s"] = first - state["t0"]
        ch = len(frame.layout.channels)
        data = bytes(frame.planes[0])[: frame.samples * ch * 2]
        samples = struct.unpack("<%dh" % (frame.samples * ch), data)[::ch]
        frames.append(struct.pack("<%dh" % len(samples), *samples))
        state["frames_received"] += 1
        if time.monotonic() - first >= seconds:
            break
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(frame.sample_rate if frames else RATE)
        w.writeframes(b"".join(frames))
    state["recorded"].set()


async def run_peer(args):
    state = {"t0": time.monotonic(), "frames_received": 0, "recorded": asyncio.Event()}
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

    @pc.on("track")
    def on_track(track):
        if track.kind == "audio":
            asyncio.ensure_future(record(track, args.record, args.seconds, state))

    @pc.on("connectionstatechange")
    def on_state():
        log("aiortc connection state:", pc.connectionState)
        if pc.connectionState == "connected" and "connected_s" not in state:
            state["connected_s"] = time.monotonic() - state["t0"]
        if pc.connectionState == "failed":
            state["recorded"].set()

    if args.role == "answer":
        offer = (await read_msg())["params"]
        await pc.setRemoteDescription(params_to_sdp(offer, "offer"))
        pc.addTrack(Tone(args.tone))
        await pc.setLocalDescription(await pc.createAnswer())
        emit({"type": "answer", "params": sdp_to_params(pc.localDescription.sdp)})
    else:
        pc.addTransceiver(Tone(args.tone), direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        emit({"type": "offer", "params": sdp_to_params(pc.localDescription.sdp)})
        answer = (await read_msg())["params"]
        await pc.setRemoteDescription(params_to_sdp(answer, "answer"))

    try:
        await asyncio.wait_for(state["recorded"].wait(), timeout=args.timeout)
    except asyncio.TimeoutError:
        pass
    result = {
        "type": "done",
        "connection_state": pc.connectionState,
        "frames_received": state["frames_received"],
        "connected_s": state.get("connected_s"),
        "first_audio_s": state.get("first_audio_s"),
    }
    await pc.close()
    emit(result)


async def run_pair(args):
    """Two aiortc peers on loopback: time from start to connected and to first audio frame."""
    t0 = time.monotonic()
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = asyncio.Event()
    first = asyncio.Event()
    marks = {}

    @a.on("connectionstatechange")
    def on_a():
        if a.connectionState == "connected":
            marks.setdefault("connected_s", time.monotonic() - t0)
            connected.set()

    @b.on("track")
    def on_track(track):
        async def first_frame():
            await track.recv()
            marks.setdefault("first_audio_s", time.monotonic() - t0)
            first.set()

        asyncio.ensure_future(first_frame())

    a.addTrack(Tone(440))
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await asyncio.wait_for(asyncio.gather(connected.wait(), first.wait()), timeout=args.timeout)
    await a.close()
    await b.close()
    emit({"type": "pair", **marks})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=["answer", "offer", "pair"], required=True)
    ap.add_argument("--tone", type=float, default=880.0)
    ap.add_argument("--record", default="/dev/null")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    asyncio.run(run_pair(args) if args.role == "pair" else run_peer(args))


if __name__ == "__main__":
    main()
