//! A private temporary directory for a run of throw-away servers and clients.

use std::path::{Path, PathBuf};

use crate::Error;

/// A new owner-only (0700) directory under the system temp dir, removed with everything in it
/// when dropped, unless kept (`--keep` of the demo, to look at the logs).
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// Creates `PREFIX-PID-RANDOM` under [`std::env::temp_dir`].
    pub fn create(prefix: &str, keep: bool) -> Result<WorkDir, Error> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let what = || format!("cannot create a directory in {}", base.display());
        for i in 0..100u32 {
            let name = format!(
                "{prefix}-{}-{:08x}",
                std::process::id(),
                seed.wrapping_add(i)
            );
            let path = base.join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(WorkDir { path, keep }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(what(), e)),
            }
        }
        Err(Error::io(
            what(),
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn work_dir_is_private_and_removed_unless_kept() {
        use std::os::unix::fs::PermissionsExt;
        let d = WorkDir::create("sc-workdir-test", false).unwrap();
        let p = d.path().to_owned();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(p.join("f"), "x").unwrap();
        drop(d);
        assert!(!p.exists());
        let d = WorkDir::create("sc-workdir-test", true).unwrap();
        let p = d.path().to_owned();
        drop(d);
        assert!(p.exists());
        std::fs::remove_dir_all(p).unwrap();
    }
}
