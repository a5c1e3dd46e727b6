//! What the user decided about calls, per contact, and what happened before: the per-contact
//! `--require-verified` policy (with a default for all contacts) and the last verified call with
//! each contact, which makes a later unverified call a downgrade to warn about.
//!
//! Kept in the account's database file, in tables of the client's own beside the OMEMO engine's
//! and on the OMEMO store's connection ([`SqliteStore::connection`]: one connection to the file
//! per process), so that `shieldcall policy` in one terminal reaches a `listen` running in
//! another: every change increments a counter in the same commit, which the running process
//! polls ([`PolicyWatch::changed`], as `shieldcall_omemo::Account::trust_changed` for trust).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use shieldcall_omemo::SqliteStore;

use crate::error::ClientError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS call_policy (jid TEXT PRIMARY KEY, require_verified INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS verified_calls (
    jid TEXT PRIMARY KEY, device INTEGER NOT NULL, at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS call_policy_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL
);
";

/// The row of `call_policy` that holds the default for contacts without their own.
const DEFAULT_ROW: &str = "*";

/// A contact's require-verified setting as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Set for this contact (or as the default).
    On,
    /// Explicitly off for this contact (overrides a default that is on).
    Off,
}

/// One contact's effective policy, as `policy` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactSettings {
    /// The contact's own setting, if any.
    pub own: Option<Setting>,
    /// The default for all contacts.
    pub default: Option<Setting>,
    /// The last verified call with the contact: (device, seconds since the Unix epoch).
    pub last_verified_call: Option<(u32, u64)>,
}

impl ContactSettings {
    /// Whether calls with the contact must be verified.
    pub fn require_verified(&self) -> bool {
        self.own.or(self.default) == Some(Setting::On)
    }
}

/// The client's tables in the account database: a view on the connection of the account's
/// [`SqliteStore`], which is in WAL mode with the store's busy timeout
/// (`shieldcall_omemo::store::BUSY_TIMEOUT`), so that another process writing waits instead
/// of failing.
#[derive(Debug, Clone, Copy)]
pub struct Policies<'a> {
    conn: &'a Connection,
}

fn db(e: rusqlite::Error) -> ClientError {
    ClientError::Database(e)
}

impl<'a> Policies<'a> {
    /// The tables in `store`'s database (which `SqliteStore::open` created, owner-only),
    /// created if missing.
    pub fn open(store: &'a SqliteStore) -> Result<Self, ClientError> {
        let conn = store.connection();
        conn.execute_batch(SCHEMA).map_err(db)?;
        Ok(Self { conn })
    }

    /// The tables in `store`'s database, which [`Self::open`] created before.
    pub(crate) fn opened(store: &'a SqliteStore) -> Self {
        Self {
            conn: store.connection(),
        }
    }

    /// The counter every change increments in its commit (0 before the first change).
    fn generation(&self) -> Result<i64, ClientError> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM call_policy_generation WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?
            .unwrap_or(0))
    }

    fn setting(&self, jid: &str) -> Result<Option<Setting>, ClientError> {
        let v: Option<bool> = self
            .conn
            .query_row(
                "SELECT require_verified FROM call_policy WHERE jid = ?1",
                params![jid],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        Ok(v.map(|on| if on { Setting::On } else { Setting::Off }))
    }

    /// The settings that apply to `jid`.
    pub fn contact(&self, jid: &str) -> Result<ContactSettings, ClientError> {
        let last = self
            .conn
            .query_row(
                "SELECT device, at FROM verified_calls WHERE jid = ?1",
                params![jid],
                |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()
            .map_err(db)?;
        Ok(ContactSettings {
            own: self.setting(jid)?,
            default: self.setting(DEFAULT_ROW)?,
            last_verified_call: last.map(|(d, at)| (d, u64::try_from(at).unwrap_or(0))),
        })
    }

    /// The default for contacts without their own setting.
    pub fn default_setting(&self) -> Result<Option<Setting>, ClientError> {
        self.setting(DEFAULT_ROW)
    }

    /// Every contact with a setting of its own, by JID.
    pub fn all(&self) -> Result<Vec<(String, Setting)>, ClientError> {
        let mut st = self
            .conn
            .prepare("SELECT jid, require_verified FROM call_policy WHERE jid != ?1 ORDER BY jid")
            .map_err(db)?;
        let rows = st
            .query_map(params![DEFAULT_ROW], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
            })
            .map_err(db)?;
        rows.map(|r| {
            r.map(|(j, on)| (j, if on { Setting::On } else { Setting::Off }))
                .map_err(db)
        })
        .collect()
    }

    /// Sets `jid`'s require-verified (None: the default for all contacts), in one
    /// `BEGIN IMMEDIATE` transaction with the counter's increment.
    pub fn set(&self, jid: Option<&str>, on: bool) -> Result<(), ClientError> {
        // The store's connection is shared, hence not `&mut`: the engine never leaves a
        // transaction open between its calls, so none is open here (were one open, BEGIN
        // would fail rather than nest).
        let tx = rusqlite::Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)
            .map_err(db)?;
        tx.execute(
            "INSERT INTO call_policy (jid, require_verified) VALUES (?1, ?2) ON CONFLICT (jid) DO UPDATE SET require_verified = excluded.require_verified",
            params![jid.unwrap_or(DEFAULT_ROW), on],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO call_policy_generation (id, value) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET value = value + 1",
            [],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    /// Remembers a verified call with `jid`'s `device`.
    pub fn record_verified_call(&self, jid: &str, device: u32, at: u64) -> Result<(), ClientError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO verified_calls (jid, device, at) VALUES (?1, ?2, ?3)",
                params![jid, device, i64::try_from(at).unwrap_or(i64::MAX)],
            )
            .map_err(db)?;
        Ok(())
    }
}

/// Notices policy changes by polling the counter each one increments, also those of another
/// process (`shieldcall policy` beside a `listen`) and of this one.
#[derive(Debug, Default)]
pub struct PolicyWatch {
    /// The policy generation when last asked.
    generation: Option<i64>,
}

impl PolicyWatch {
    /// A watch that has not counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when a policy changed since the last call; the first call only starts counting.
    pub fn changed(&mut self, policies: &Policies<'_>) -> Result<bool, ClientError> {
        let v = policies.generation()?;
        Ok(self.generation.replace(v).is_some_and(|old| old != v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_setting_overrides_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite");
        // Two stores on one file, as two processes of the account have.
        let (mine, theirs) = (
            SqliteStore::open(&path).unwrap(),
            SqliteStore::open(&path).unwrap(),
        );
        let p = Policies::open(&mine).unwrap();
        let elsewhere = Policies::open(&theirs).unwrap();
        let mut watcher = PolicyWatch::new();
        assert!(!watcher.changed(&elsewhere).unwrap());
        assert!(!p.contact("bob@x").unwrap().require_verified());
        p.set(None, true).unwrap();
        assert!(watcher.changed(&elsewhere).unwrap());
        assert!(!watcher.changed(&elsewhere).unwrap());
        assert!(p.contact("bob@x").unwrap().require_verified());
        p.set(Some("bob@x"), false).unwrap();
        assert!(!p.contact("bob@x").unwrap().require_verified());
        assert!(p.contact("carol@x").unwrap().require_verified());
        p.set(None, false).unwrap();
        p.set(Some("carol@x"), true).unwrap();
        assert!(p.contact("carol@x").unwrap().require_verified());
        assert_eq!(
            p.all().unwrap(),
            vec![
                ("bob@x".to_owned(), Setting::Off),
                ("carol@x".to_owned(), Setting::On)
            ]
        );
        assert_eq!(p.default_setting().unwrap(), Some(Setting::Off));
        assert!(watcher.changed(&elsewhere).unwrap());
        // A change on the watcher's own connection counts too.
        elsewhere.set(Some("dave@x"), true).unwrap();
        assert!(watcher.changed(&elsewhere).unwrap());
    }

    #[test]
    fn verified_calls_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        Policies::open(&store)
            .unwrap()
            .record_verified_call("bob@x", 7, 1_800_000_000)
            .unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        let again = Policies::open(&store).unwrap();
        assert_eq!(
            again.contact("bob@x").unwrap().last_verified_call,
            Some((7, 1_800_000_000))
        );
        assert_eq!(again.contact("carol@x").unwrap().last_verified_call, None);
    }
}
