//! `omemo-shim`: drives the OMEMO engine over JSON lines on stdin/stdout, so that one test driver
//! can pair it with any other implementation speaking the same protocol (in the spirit of
//! rustls' BoGo shim). One request per line, one reply per line, flushed. Errors answer
//! `{"ok":false,"error":"…"}` and the shim keeps running. The shim trusts every key.
//!
//! Extensions beyond the shared protocol (other peers need not have them): `init` takes an optional
//! `"db":"PATH"` to keep the identity and sessions in SQLite instead of memory, and
//! `{"op":"open","db":"PATH"}` reopens such an identity (crash-safety tests kill and restart the shim).

use std::io::{BufRead, Write};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};
use shieldcall_omemo::xml::{Bundle, EncryptedElement};
use shieldcall_omemo::{Account, MemoryStore, Recipient, SqliteStore, Store};

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Init {
        jid: String,
        device_id: Option<u32>,
        db: Option<String>,
    },
    Open {
        db: String,
    },
    Bundle,
    Encrypt {
        recipients: Vec<RecipientSpec>,
        plaintext_b64: String,
    },
    Decrypt {
        from_jid: String,
        encrypted_xml: String,
    },
    Identity,
    Bench {
        what: String,
        n: u64,
    },
    Quit,
}

#[derive(Deserialize)]
struct RecipientSpec {
    jid: String,
    device_id: u32,
    bundle_xml: Option<String>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Shim {
    account: Option<Account<Box<dyn Store>>>,
}

type Reply = Result<Value, String>;

impl Shim {
    fn account(&mut self) -> Result<&mut Account<Box<dyn Store>>, String> {
        self.account
            .as_mut()
            .ok_or_else(|| "no identity: send init first".to_owned())
    }

    fn handle(&mut self, req: Request) -> Reply {
        match req {
            Request::Init { jid, device_id, db } => {
                let store: Box<dyn Store> = match db {
                    Some(path) => {
                        // `init` starts a new identity: discard the old database and its WAL.
                        for suffix in ["", "-wal", "-shm"] {
                            let _ = std::fs::remove_file(format!("{path}{suffix}"));
                        }
                        Box::new(SqliteStore::open(&path).map_err(|e| e.to_string())?)
                    }
                    None => Box::new(MemoryStore::new()),
                };
                let a =
                    Account::create(store, &jid, device_id, now()).map_err(|e| e.to_string())?;
                let id = a.device_id();
                self.account = Some(a);
                Ok(json!({"device_id": id}))
            }
            Request::Open { db } => {
                let store: Box<dyn Store> =
                    Box::new(SqliteStore::open(&db).map_err(|e| e.to_string())?);
                let a = Account::open(store).map_err(|e| e.to_string())?;
                let id = a.device_id();
                self.account = Some(a);
                Ok(json!({"device_id": id}))
            }
            Request::Bundle => {
                let a = self.account()?;
                let bundle = a.bundle().map_err(|e| e.to_string())?;
                Ok(json!({"device_id": a.device_id(), "bundle_xml": bundle.to_xml()}))
            }
            Request::Encrypt {
                recipients,
                plaintext_b64,
            } => {
                let plaintext = B64
                    .decode(plaintext_b64)
                    .map_err(|e| format!("plaintext_b64: {e}"))?;
                let a = self.account()?;
                let mut rs = Vec::new();
                for r in recipients {
                    if !a
                        .has_session(&r.jid, r.device_id)
                        .map_err(|e| e.to_string())?
                    {
                        let xml = r.bundle_xml.ok_or_else(|| {
                            format!(
                                "no session with {} device {} and no bundle_xml given",
                                r.jid, r.device_id
                            )
                        })?;
                        let bundle =
                            Bundle::from_xml(&xml).map_err(|e| format!("bundle_xml: {e}"))?;
                        a.build_session(&r.jid, r.device_id, &bundle)
                            .map_err(|e| e.to_string())?;
                    }
                    rs.push(Recipient::new(r.jid, r.device_id));
                }
                let enc = if plaintext.is_empty() {
                    a.encrypt_key_transport(&rs)
                } else {
                    a.encrypt(&rs, &plaintext)
                };
                Ok(json!({"encrypted_xml": enc.map_err(|e| e.to_string())?.to_xml()}))
            }
            Request::Decrypt {
                from_jid,
                encrypted_xml,
            } => {
                let enc = EncryptedElement::from_xml(&encrypted_xml)
                    .map_err(|e| format!("encrypted_xml: {e}"))?;
                let d = self
                    .account()?
                    .decrypt(&from_jid, &enc)
                    .map_err(|e| e.to_string())?;
                Ok(json!({
                    "plaintext_b64": B64.encode(d.plaintext.unwrap_or_default()),
                    "sender_device_id": d.sender_device,
                    "sender_identity_hex": d.sender_identity.to_hex(),
                }))
            }
            Request::Identity => {
                let a = self.account()?;
                Ok(
                    json!({"identity_hex": a.identity_key().to_hex(), "uri": a.verification_uri().to_string()}),
                )
            }
            Request::Bench { what, n } => {
                let n = n.max(1);
                let ns = match what.as_str() {
                    "setup" => bench::setup(n),
                    "steady" => bench::steady(n),
                    "fanout" => bench::fanout(n),
                    other => {
                        return Err(format!("unknown bench '{other}': setup, steady or fanout"));
                    }
                }
                .map_err(|e| e.to_string())?;
                Ok(json!({"ns_per_op": ns}))
            }
            Request::Quit => Ok(json!({})),
        }
    }
}

/// The three measured operations, through the same paths as the ops above (XML included).
mod bench {
    use super::*;
    use shieldcall_omemo::Error;

    const MESSAGE: [u8; 95] = [b'A'; 95];

    fn fresh(jid: &str) -> Result<Account<MemoryStore>, Error> {
        Account::create(MemoryStore::new(), jid, None, now())
    }

    pub fn setup(n: u64) -> Result<f64, Error> {
        let mut total = 0u128;
        for _ in 0..n {
            let mut alice = fresh("alice@bench")?;
            let mut bob = fresh("bob@bench")?;
            let bundle_xml = bob.bundle()?.to_xml();
            let t = Instant::now();
            let bundle = Bundle::from_xml(&bundle_xml)?;
            alice.build_session("bob@bench", bob.device_id(), &bundle)?;
            let xml = alice
                .encrypt(&[Recipient::new("bob@bench", bob.device_id())], &MESSAGE)?
                .to_xml();
            let d = bob.decrypt("alice@bench", &EncryptedElement::from_xml(&xml)?)?;
            total += t.elapsed().as_nanos();
            std::hint::black_box(d);
        }
        Ok(total as f64 / n as f64)
    }

    pub fn steady(n: u64) -> Result<f64, Error> {
        let mut alice = fresh("alice@bench")?;
        let mut bob = fresh("bob@bench")?;
        let bundle = bob.bundle()?;
        alice.build_session("bob@bench", bob.device_id(), &bundle)?;
        let to_bob = [Recipient::new("bob@bench", bob.device_id())];
        let to_alice = [Recipient::new("alice@bench", alice.device_id())];
        // Establish and acknowledge the session in both directions.
        let first = alice.encrypt(&to_bob, &MESSAGE)?;
        bob.decrypt("alice@bench", &first)?;
        let reply = bob.encrypt(&to_alice, &MESSAGE)?;
        alice.decrypt("bob@bench", &reply)?;
        let t = Instant::now();
        for _ in 0..n {
            let xml = alice.encrypt(&to_bob, &MESSAGE)?.to_xml();
            let d = bob.decrypt("alice@bench", &EncryptedElement::from_xml(&xml)?)?;
            std::hint::black_box(d);
        }
        Ok(t.elapsed().as_nanos() as f64 / n as f64)
    }

    pub fn fanout(n: u64) -> Result<f64, Error> {
        let mut alice = fresh("alice@bench")?;
        let mut recipients = Vec::new();
        for i in 0..100 {
            let jid = format!("peer{i}@bench");
            let peer = fresh(&jid)?;
            alice.build_session(&jid, peer.device_id(), &peer.bundle()?)?;
            recipients.push(Recipient::new(jid, peer.device_id()));
        }
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(alice.encrypt(&recipients, &MESSAGE)?.to_xml());
        }
        Ok(t.elapsed().as_nanos() as f64 / n as f64)
    }
}

fn main() {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    let mut shim = Shim { account: None };
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Result<Request, _> = serde_json::from_str(&line);
        let quit = matches!(parsed, Ok(Request::Quit));
        let reply = match parsed {
            Ok(req) => shim.handle(req),
            Err(e) => Err(format!("bad request: {e}")),
        };
        let out = match reply {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("ok".into(), Value::Bool(true));
                }
                v
            }
            Err(e) => json!({"ok": false, "error": e}),
        };
        if writeln!(stdout, "{out}")
            .and_then(|()| stdout.flush())
            .is_err()
            || quit
        {
            break;
        }
    }
}
