//! Talking to `aiortc_peer.py`: Jingle-shaped parameters as JSON lines, and finding Python.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};
use shieldcall_media::{
    CandidateType, DtlsParams, Fingerprint, IceCandidate, IceUdpTransport, PayloadType,
    RtpDescription, RtpHdrext, RtpSource, Setup,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The interpreter with aiortc, from `SHIELDCALL_PYTHON`. Fails loudly (never skips) when
/// it is missing, as the project's test rules require.
pub fn python() -> String {
    let py = std::env::var("SHIELDCALL_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SHIELDCALL_PYTHON is not set: run scripts/test, or create the venv \
             (python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt) \
             and export SHIELDCALL_PYTHON=$PWD/.venv/bin/python"
        )
    });
    let ok = std::process::Command::new(&py)
        .args(["-c", "import aiortc"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{py} cannot import aiortc: pip install -r tests/python/requirements.txt into that venv"
    );
    py
}

pub fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/aiortc_peer.py")
}

pub struct Peer {
    pub child: Child,
    pub stdin: ChildStdin,
    pub lines: Lines<BufReader<ChildStdout>>,
}

pub fn spawn(args: &[&str]) -> Peer {
    let mut child = Command::new(python())
        .arg(harness())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start aiortc harness");
    let stdin = child.stdin.take().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    Peer {
        child,
        stdin,
        lines,
    }
}

impl Peer {
    pub async fn send(&mut self, v: Value) {
        let mut s = v.to_string();
        s.push('\n');
        self.stdin.write_all(s.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    pub async fn recv(&mut self) -> Value {
        let line = self
            .lines
            .next_line()
            .await
            .unwrap()
            .expect("harness closed stdout");
        serde_json::from_str(&line).unwrap()
    }
}

pub fn description_to_json(d: &RtpDescription) -> Value {
    json!({
        "payload_types": d.payload_types.iter().map(|p| json!({
            "id": p.id, "name": p.name, "clockrate": p.clockrate, "channels": p.channels,
            "parameters": p.parameters,
        })).collect::<Vec<_>>(),
        "rtcp_mux": d.rtcp_mux,
        "sources": d.sources.iter().map(|s| json!({"ssrc": s.ssrc, "cname": s.cname})).collect::<Vec<_>>(),
        "hdrexts": d.hdrexts.iter().map(|h| json!({"id": h.id, "uri": h.uri})).collect::<Vec<_>>(),
    })
}

pub fn transport_to_json(t: &IceUdpTransport, dtls: &DtlsParams) -> Value {
    json!({
        "ufrag": t.ufrag, "pwd": t.pwd,
        "candidates": t.candidates.iter().map(|c| json!({
            "foundation": c.foundation, "component": c.component, "protocol": c.protocol,
            "priority": c.priority, "ip": c.ip.to_string(), "port": c.port,
            "type": c.kind.as_str(), "generation": c.generation, "id": c.id,
        })).collect::<Vec<_>>(),
        "fingerprint": {
            "hash": dtls.fingerprint.hash(),
            "setup": dtls.setup.as_str(),
            "value": dtls.fingerprint.to_jingle_value(),
        },
    })
}

pub fn description_from_json(v: &Value) -> RtpDescription {
    RtpDescription {
        media: "audio".into(),
        payload_types: v["payload_types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| PayloadType {
                id: p["id"].as_u64().unwrap() as u8,
                name: p["name"].as_str().unwrap().into(),
                clockrate: p["clockrate"].as_u64().unwrap() as u32,
                channels: p["channels"].as_u64().unwrap() as u8,
                parameters: p["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|kv| {
                        (
                            kv[0].as_str().unwrap().into(),
                            kv[1].as_str().unwrap().into(),
                        )
                    })
                    .collect(),
            })
            .collect(),
        rtcp_mux: v["rtcp_mux"].as_bool().unwrap(),
        sources: v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| RtpSource {
                ssrc: s["ssrc"].as_u64().unwrap() as u32,
                cname: s["cname"].as_str().map(Into::into),
            })
            .collect(),
        hdrexts: v["hdrexts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| RtpHdrext {
                id: h["id"].as_u64().unwrap() as u8,
                uri: h["uri"].as_str().unwrap().into(),
            })
            .collect(),
    }
}

/// The transport and the fingerprint element it carried (which the call engine would hand
/// us as the expected fingerprint after decryption).
pub fn transport_from_json(v: &Value) -> (IceUdpTransport, DtlsParams) {
    let f = &v["fingerprint"];
    let dtls = DtlsParams {
        fingerprint: Fingerprint::parse(f["hash"].as_str().unwrap(), f["value"].as_str().unwrap())
            .unwrap(),
        setup: Setup::parse(f["setup"].as_str().unwrap()).unwrap(),
    };
    let candidates = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| IceCandidate {
            foundation: c["foundation"].as_str().unwrap().into(),
            component: c["component"].as_u64().unwrap() as u8,
            protocol: c["protocol"].as_str().unwrap().into(),
            priority: c["priority"].as_u64().unwrap() as u32,
            ip: c["ip"].as_str().unwrap().parse().unwrap(),
            port: c["port"].as_u64().unwrap() as u16,
            kind: CandidateType::parse(c["type"].as_str().unwrap()).unwrap(),
            generation: c["generation"].as_u64().unwrap() as u32,
            id: c["id"].as_str().unwrap().into(),
            related: None,
        })
        .collect();
    (
        IceUdpTransport {
            ufrag: v["ufrag"].as_str().unwrap().into(),
            pwd: v["pwd"].as_str().unwrap().into(),
            candidates,
            dtls: Some(dtls),
        },
        dtls,
    )
}
