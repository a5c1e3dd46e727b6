//! What the user decided about calls, per contact, and what happened before: the per-contact
//! `--require-verified` policy (with a default for all contacts) and the last verified call with
//! each contact, which makes a later unverified call a downgrade to warn about.
//!
//! Kept in the account's database file, in tables of the client's own beside the OMEMO engine's,
//! so that `shieldcall policy` in one terminal reaches a `listen` running in another: every
//! change increments a counter in the same commit, which the running process polls
//! ([`Policies::changed`], as `shieldcall_omemo::Account::trust_changed` for trust).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

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

/// The client's tables in the account database.
#[derive(Debug)]
pub struct Policies {
    conn: Connection,
    /// The policy generation when last asked.
    generation: Option<i64>,
}

fn db(e: rusqlite::Error) -> ClientError {
    ClientError::Storage(e.to_string())
}

impl Policies {
    /// Opens them in the account database at `path` (which `shieldcall_omemo::SqliteStore`
    /// created, owner-only).
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let conn = Connection::open(path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.busy_timeout(shieldcall_omemo::store::BUSY_TIMEOUT)
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        Ok(Self {
            conn,
            generation: None,
        })
    }

    /// True when a policy changed since the last call (also in another process); the first call
    /// only starts counting.
    pub fn changed(&mut self) -> Result<bool, ClientError> {
        let v: i64 = self
            .conn
            .query_row(
                "SELECT value FROM call_policy_generation WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?
            .unwrap_or(0);
        Ok(self.generation.replace(v).is_some_and(|old| old != v))
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

    /// Sets `jid`'s require-verified (None: the default for all contacts).
    pub fn set(&mut self, jid: Option<&str>, on: bool) -> Result<(), ClientError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_setting_overrides_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Policies::open(&dir.path().join("a.sqlite")).unwrap();
        let mut watcher = Policies::open(&dir.path().join("a.sqlite")).unwrap();
        assert!(!watcher.changed().unwrap());
        assert!(!p.contact("bob@x").unwrap().require_verified());
        p.set(None, true).unwrap();
        assert!(watcher.changed().unwrap());
        assert!(!watcher.changed().unwrap());
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
    }

    #[test]
    fn verified_calls_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite");
        Policies::open(&path)
            .unwrap()
            .record_verified_call("bob@x", 7, 1_800_000_000)
            .unwrap();
        let again = Policies::open(&path).unwrap();
        assert_eq!(
            again.contact("bob@x").unwrap().last_verified_call,
            Some((7, 1_800_000_000))
        );
        assert_eq!(again.contact("carol@x").unwrap().last_verified_call, None);
    }
}
