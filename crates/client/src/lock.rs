//! One online process per account device: `listen`, `call` and `chat` hold an exclusive lock on
//! `<data dir>/<jid>.lock` while they run (an OS file lock, released by the kernel however the
//! process ends), and write their pid and command into it so that a second one can say who holds
//! it. `send` and `devices` take it when it is free and otherwise run beside the holder as
//! guests, which leave publishing and key maintenance to it. Offline commands (`fingerprint`,
//! `trust`, `distrust`, `devices --offline`, `policy`) never need it: the database serialises
//! their writes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use xmpp_parsers::jid::BareJid;

use crate::error::ClientError;

/// The lock file of `jid` under `data_dir`.
pub fn lock_path(data_dir: &Path, jid: &BareJid) -> PathBuf {
    data_dir.join(format!("{jid}.lock"))
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct OnlineLock {
    file: File,
}

/// Who holds the lock, as its holder wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its command (`listen`, `call`, …).
    pub command: String,
}

fn open(path: &Path) -> Result<File, ClientError> {
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path)
        .map_err(|e| ClientError::io(format!("cannot open {}", path.display()), e))
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut s).ok()?;
    let (pid, command) = s.trim().split_once(' ')?;
    Some(Holder {
        pid: pid.parse().ok()?,
        command: command.to_owned(),
    })
}

impl OnlineLock {
    /// Takes the lock for `command`, or says who holds it.
    pub fn try_acquire(
        data_dir: &Path,
        jid: &BareJid,
        command: &str,
    ) -> Result<Result<OnlineLock, Option<Holder>>, ClientError> {
        let path = lock_path(data_dir, jid);
        let mut file = open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                let io = |e| ClientError::io(format!("cannot write {}", path.display()), e);
                file.set_len(0).map_err(io)?;
                file.rewind().map_err(io)?;
                writeln!(file, "{} {command}", std::process::id()).map_err(io)?;
                file.flush().map_err(io)?;
                Ok(Ok(OnlineLock { file }))
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(Err(read_holder(&mut file))),
            Err(std::fs::TryLockError::Error(e)) => Err(ClientError::io(
                format!("cannot lock {}", path.display()),
                e,
            )),
        }
    }

    /// Takes the lock for `command`; a clear error naming the holder when another process
    /// is online with this account.
    pub fn acquire(data_dir: &Path, jid: &BareJid, command: &str) -> Result<Self, ClientError> {
        Self::try_acquire(data_dir, jid, command)?.map_err(|holder| in_use(jid, data_dir, holder))
    }
}

impl Drop for OnlineLock {
    fn drop(&mut self) {
        // Say nobody holds it any more; the kernel releases the lock itself.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The error a second online process gets.
pub fn in_use(jid: &BareJid, data_dir: &Path, holder: Option<Holder>) -> ClientError {
    let who = match holder {
        Some(h) => format!("`shieldcall {}` (pid {})", h.command, h.pid),
        None => "another shieldcall process".to_owned(),
    };
    ClientError::InUse(format!(
        "{who} is already online as {jid} with the data dir {}: one online process per \
         account and device (stop it first; fingerprint, trust, distrust, policy and \
         devices --offline work beside it)",
        data_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_told_who_has_it_and_gets_it_after() {
        let dir = tempfile::tempdir().unwrap();
        let jid: BareJid = "alice@example.org".parse().unwrap();
        let first = OnlineLock::acquire(dir.path(), &jid, "listen").unwrap();
        let err = OnlineLock::acquire(dir.path(), &jid, "call").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("`shieldcall listen` (pid {})", std::process::id())),
            "{text}"
        );
        assert!(matches!(err, ClientError::InUse(_)));
        drop(first);
        let again = OnlineLock::acquire(dir.path(), &jid, "call");
        assert!(again.is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(lock_path(dir.path(), &jid))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
