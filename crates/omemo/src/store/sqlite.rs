//! SQLite store (rusqlite, bundled SQLite). Each [`Changes`] batch is one transaction, with the
//! database in WAL mode and `synchronous=FULL`, so a committed ratchet step survives a crash and
//! an uncommitted one leaves no trace. A transaction begun with [`Store::begin_deferred_sync`]
//! (the decrypt of a message in an existing session) commits with `synchronous=NORMAL`: safe
//! from a killed process, not from a power cut in the moments after it (docs/omemo.md).
//!
//! Several processes may open one file: [`Store::begin`] is `BEGIN IMMEDIATE` (the write lock is
//! taken before the first read, so what a read-modify-write read cannot change under it), a busy
//! timeout makes the others wait for it instead of failing, and a counter that every trust change
//! increments in its own commit tells a long-running process that trust changed (`shieldcall
//! trust` in another terminal). (`PRAGMA data_version` is not used for that: with several
//! connections to the file in one process it missed commits of other processes here.)

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Changes, OwnIdentity, PreKeyRecord, SignedPreKeyRecord, Store};
use crate::error::StoreError;
use crate::keys::{KeyPair, PrivateKey, PublicKey};
use crate::session::SessionRecord;
use crate::trust::TrustLevel;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS own (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    jid TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    identity_private BLOB NOT NULL,
    next_pre_key_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pre_keys (id INTEGER PRIMARY KEY, private BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signed_pre_keys (
    id INTEGER PRIMARY KEY,
    private BLOB NOT NULL,
    signature BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    replaced_at INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    jid TEXT NOT NULL, device INTEGER NOT NULL, record BLOB NOT NULL, PRIMARY KEY (jid, device)
);
CREATE TABLE IF NOT EXISTS identities (
    jid TEXT NOT NULL, key BLOB NOT NULL, trust TEXT NOT NULL, PRIMARY KEY (jid, key)
);
CREATE TABLE IF NOT EXISTS device_lists (jid TEXT PRIMARY KEY, devices TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trust_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL
);
";

/// How long a connection waits for another one's transaction before giving up.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    /// A transaction begun by [`Store::begin`] is open.
    in_transaction: bool,
    /// The open transaction was begun with `synchronous=NORMAL` (`begin_deferred_sync`).
    deferred_sync: bool,
    /// The trust generation when last asked.
    trust_generation: Option<i64>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn corrupt(what: &'static str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        reason: reason.to_string(),
    }
}

fn private_key(what: &'static str, b: &[u8]) -> Result<PrivateKey, StoreError> {
    let arr: [u8; 32] = b
        .try_into()
        .map_err(|_| corrupt(what, format!("private key of {} bytes", b.len())))?;
    Ok(PrivateKey::from_bytes(arr))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. A new file is created readable and
    /// writable by its owner only (0600; SQLite gives its `-wal` and `-shm` files the same
    /// mode), and an existing one is restricted to that.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        restrict_to_owner(path)?;
        Self::init(Connection::open(path).map_err(db)?)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(db)?)
    }

    /// The connection, for an embedder's own tables in the same file, so that one process
    /// keeps one connection to its account database. It is in WAL mode with
    /// `synchronous=FULL` (`NORMAL` only inside a transaction of
    /// [`Store::begin_deferred_sync`]) and a busy timeout of [`BUSY_TIMEOUT`].
    ///
    /// The OMEMO tables (`own`, `pre_keys`, `signed_pre_keys`, `sessions`, `identities`,
    /// `device_lists`, `trust_generation`) are the crate's: read and write them only through
    /// the [`Store`] methods. Writes of your own are transactions of their own: begun with
    /// `BEGIN IMMEDIATE` when they read before they write (as [`Store::begin`] does, so that
    /// other processes wait for them), and ended before the store is used again, because
    /// SQLite does not nest transactions: one left open makes the engine's next
    /// [`Store::begin`] or [`Store::apply`] fail. Between [`Store::begin`] and its
    /// [`Store::apply`] (inside one engine call when the store is an
    /// [`Account`](crate::Account)'s) anything written here would join the engine's
    /// transaction.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// SQLite does not nest transactions: a second begin is refused, changing nothing.
    fn refuse_nested(&self) -> Result<(), StoreError> {
        if self.in_transaction {
            return Err(StoreError::Database(
                "a transaction is already open on this connection".into(),
            ));
        }
        Ok(())
    }

    /// Back to `synchronous=FULL` after a transaction begun with `begin_deferred_sync`.
    fn restore_full_sync(&mut self) -> Result<(), StoreError> {
        if !std::mem::take(&mut self.deferred_sync) {
            return Ok(());
        }
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        Ok(Self {
            conn,
            in_transaction: false,
            deferred_sync: false,
            trust_generation: None,
        })
    }
}

/// Creates `path` with mode 0600 if it does not exist, else sets that mode.
#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StoreError::Database(format!("{}: {e}", path.display()));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)
}

#[cfg(not(unix))]
fn restrict_to_owner(_: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Writes one batch inside the caller's transaction.
fn write(tx: &Connection, c: &Changes) -> Result<(), StoreError> {
    if let Some(own) = &c.own {
        tx.execute(
                "INSERT OR REPLACE INTO own (id, jid, device_id, identity_private, next_pre_key_id) VALUES (1, ?1, ?2, ?3, ?4)",
                params![own.jid, own.device_id, own.identity.private.to_bytes().as_slice(), own.next_pre_key_id],
            )
            .map_err(db)?;
    }
    for (jid, device, record) in &c.sessions {
        let mut bytes = record.to_bytes();
        let r = tx.execute(
            "INSERT OR REPLACE INTO sessions (jid, device, record) VALUES (?1, ?2, ?3)",
            params![jid, device, bytes],
        );
        zeroize::Zeroize::zeroize(&mut bytes);
        r.map_err(db)?;
    }
    for id in &c.pre_keys_removed {
        tx.execute("DELETE FROM pre_keys WHERE id = ?1", params![id])
            .map_err(db)?;
    }
    for pk in &c.pre_keys_added {
        tx.execute(
            "INSERT OR REPLACE INTO pre_keys (id, private) VALUES (?1, ?2)",
            params![pk.id, pk.pair.private.to_bytes().as_slice()],
        )
        .map_err(db)?;
    }
    for id in &c.signed_pre_keys_removed {
        tx.execute("DELETE FROM signed_pre_keys WHERE id = ?1", params![id])
            .map_err(db)?;
    }
    for spk in &c.signed_pre_keys {
        tx.execute(
                "INSERT OR REPLACE INTO signed_pre_keys (id, private, signature, created_at, replaced_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    spk.id,
                    spk.pair.private.to_bytes().as_slice(),
                    spk.signature,
                    i64::try_from(spk.created_at).unwrap_or(i64::MAX),
                    spk.replaced_at.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                ],
            )
            .map_err(db)?;
    }
    if !c.trust.is_empty() {
        tx.execute(
                "INSERT INTO trust_generation (id, value) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET value = value + 1",
                [],
            )
            .map_err(db)?;
    }
    for (jid, key, level) in &c.trust {
        tx.execute(
                "INSERT INTO identities (jid, key, trust) VALUES (?1, ?2, ?3) ON CONFLICT (jid, key) DO UPDATE SET trust = excluded.trust",
                params![jid, key.serialize().as_slice(), level.as_str()],
            )
            .map_err(db)?;
    }
    for (jid, list) in &c.device_lists {
        let s = list
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        tx.execute(
            "INSERT OR REPLACE INTO device_lists (jid, devices) VALUES (?1, ?2)",
            params![jid, s],
        )
        .map_err(db)?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn own(&self) -> Result<Option<OwnIdentity>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT jid, device_id, identity_private, next_pre_key_id FROM own WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, u32>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let Some((jid, device_id, mut private, next_pre_key_id)) = row else {
            return Ok(None);
        };
        let key = private_key("identity", &private);
        zeroize::Zeroize::zeroize(&mut private);
        Ok(Some(OwnIdentity {
            jid,
            device_id,
            identity: KeyPair::from_private(key?),
            next_pre_key_id,
        }))
    }

    fn session(&self, jid: &str, device: u32) -> Result<Option<SessionRecord>, StoreError> {
        let blob: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT record FROM sessions WHERE jid = ?1 AND device = ?2",
                params![jid, device],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        blob.map(|mut b| {
            let r = SessionRecord::from_bytes(&b);
            zeroize::Zeroize::zeroize(&mut b);
            r
        })
        .transpose()
    }

    fn session_devices(&self, jid: &str) -> Result<Vec<u32>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT device FROM sessions WHERE jid = ?1 ORDER BY device")
            .map_err(db)?;
        let rows = st
            .query_map(params![jid], |r| r.get::<_, u32>(0))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn pre_key(&self, id: u32) -> Result<Option<PreKeyRecord>, StoreError> {
        let blob: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT private FROM pre_keys WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        blob.map(|b| {
            Ok(PreKeyRecord {
                id,
                pair: KeyPair::from_private(private_key("pre key", &b)?),
            })
        })
        .transpose()
    }

    fn pre_keys(&self) -> Result<Vec<PreKeyRecord>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, private FROM pre_keys ORDER BY id")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(db)?;
        rows.map(|row| {
            let (id, b) = row.map_err(db)?;
            Ok(PreKeyRecord {
                id,
                pair: KeyPair::from_private(private_key("pre key", &b)?),
            })
        })
        .collect()
    }

    fn signed_pre_keys(&self) -> Result<Vec<SignedPreKeyRecord>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, private, signature, created_at, replaced_at FROM signed_pre_keys ORDER BY id")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .map_err(db)?;
        rows.map(|row| {
            let (id, private, signature, created_at, replaced_at) = row.map_err(db)?;
            Ok(SignedPreKeyRecord {
                id,
                pair: KeyPair::from_private(private_key("signed pre key", &private)?),
                signature,
                created_at: u64::try_from(created_at).unwrap_or(0),
                replaced_at: replaced_at.map(|t| u64::try_from(t).unwrap_or(0)),
            })
        })
        .collect()
    }

    fn identities(&self, jid: &str) -> Result<Vec<(PublicKey, TrustLevel)>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT key, trust FROM identities WHERE jid = ?1 ORDER BY rowid")
            .map_err(db)?;
        let rows = st
            .query_map(params![jid], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db)?;
        rows.map(|row| {
            let (k, t) = row.map_err(db)?;
            let key = PublicKey::from_bytes("identity", &k).map_err(|e| corrupt("identity", e))?;
            let level = TrustLevel::parse(&t).ok_or_else(|| corrupt("trust level", t))?;
            Ok((key, level))
        })
        .collect()
    }

    fn device_list(&self, jid: &str) -> Result<Option<Vec<u32>>, StoreError> {
        let s: Option<String> = self
            .conn
            .query_row(
                "SELECT devices FROM device_lists WHERE jid = ?1",
                params![jid],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        s.map(|s| {
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| p.parse::<u32>().map_err(|e| corrupt("device list", e)))
                .collect()
        })
        .transpose()
    }

    fn apply(&mut self, c: Changes) -> Result<(), StoreError> {
        if self.in_transaction {
            self.in_transaction = false;
            let result = write(&self.conn, &c);
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            let ended = self.conn.execute_batch(end).map_err(db);
            if ended.is_err() && result.is_ok() {
                // A failed COMMIT (disk full, …) leaves the transaction open: end it.
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            let restored = self.restore_full_sync();
            return result.and(ended).and(restored);
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        write(&tx, &c)?;
        tx.commit().map_err(db)
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        self.refuse_nested()?;
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
        self.in_transaction = true;
        Ok(())
    }

    fn begin_deferred_sync(&mut self) -> Result<(), StoreError> {
        self.refuse_nested()?;
        // WAL with synchronous=NORMAL: the commit is in the log, not yet on the disk; the next
        // FULL commit (or checkpoint) syncs it with everything before it. SQLite allows the
        // change only outside a transaction; `apply` and `rollback` restore FULL.
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        self.deferred_sync = true;
        if let Err(e) = self.begin() {
            let _ = self.restore_full_sync();
            return Err(e);
        }
        Ok(())
    }

    fn rollback(&mut self) {
        if self.in_transaction {
            self.in_transaction = false;
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let _ = self.restore_full_sync();
    }

    fn trust_changed(&mut self) -> Result<bool, StoreError> {
        let v: i64 = self
            .conn
            .query_row("SELECT value FROM trust_generation WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db)?
            .unwrap_or(0);
        Ok(self.trust_generation.replace(v).is_some_and(|old| old != v))
    }
}
