//! The test driver's side of the JSON-lines shim protocol.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// This crate's omemo-shim.
    Ours,
    /// tests/python/oldmemo_peer.py.
    Oldmemo,
}

pub struct Peer {
    /// Name in messages.
    pub name: String,
    /// The process.
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

pub fn python() -> String {
    std::env::var("SHIELDCALL_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SHIELDCALL_PYTHON is not set: the python-oldmemo interop peer needs the venv that scripts/test builds \
             (run scripts/test, or set SHIELDCALL_PYTHON to a python with oldmemo[xml]==2.1.0)"
        )
    })
}

impl Peer {
    pub fn spawn(kind: Kind, name: &str) -> Peer {
        let mut cmd = match kind {
            Kind::Ours => Command::new(env!("CARGO_BIN_EXE_omemo-shim")),
            Kind::Oldmemo => {
                let script: PathBuf = [
                    env!("CARGO_MANIFEST_DIR"),
                    "..",
                    "..",
                    "tests",
                    "python",
                    "oldmemo_peer.py",
                ]
                .iter()
                .collect();
                let mut c = Command::new(python());
                c.arg(script);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {kind:?} peer: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Peer {
            name: format!("{name}({kind:?})"),
            child,
            stdin,
            stdout,
        }
    }

    pub fn call(&mut self, req: Value) -> Value {
        writeln!(self.stdin, "{req}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(
            !line.is_empty(),
            "{} closed its stdout after {req}",
            self.name
        );
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: bad reply {line:?}: {e}", self.name))
    }

    /// Writes a request and does not wait for the reply (the crash test kills the peer meanwhile).
    pub fn send_only(&mut self, req: Value) {
        let _ = writeln!(self.stdin, "{req}");
        let _ = self.stdin.flush();
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn ok(&mut self, req: Value) -> Value {
        let r = self.call(req.clone());
        assert_eq!(r["ok"], json!(true), "{} refused {req}: {r}", self.name);
        r
    }

    pub fn encrypt(
        &mut self,
        to: &str,
        device: u64,
        bundle: Option<&str>,
        plaintext: &[u8],
    ) -> String {
        let mut rcpt = json!({"jid": to, "device_id": device});
        if let Some(b) = bundle {
            rcpt["bundle_xml"] = json!(b);
        }
        let r = self
            .ok(json!({"op":"encrypt","recipients":[rcpt],"plaintext_b64": B64.encode(plaintext)}));
        r["encrypted_xml"].as_str().unwrap().to_owned()
    }

    pub fn decrypt(&mut self, from: &str, xml: &str) -> Value {
        self.call(json!({"op":"decrypt","from_jid": from,"encrypted_xml": xml}))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op":"quit"}));
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}
