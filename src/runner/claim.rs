//! A run's directory, held by one ohrun process at a time: `run.json` (the final attempt's report) and
//! `attempt-N/` for each attempt's evidence. An attempt never reuses another's directory, so nothing is
//! ever overwritten: a retry, a resume or a plain rerun gets the next number.

use crate::error::Failure;
use crate::report::OutcomeClass;
use crate::report::writer::{RUN_FILE, create_dir, existing_run_id};
use std::path::{Path, PathBuf};

/// A run directory this process holds: locked, so that no other ohrun process writes into it meanwhile.
pub struct Claim {
    pub dir: PathBuf,
    _lock: std::fs::File,
}

impl Claim {
    /// Claims `dir` for run `id`, unless another ohrun process writes into it or it holds another run's report.
    pub fn take(dir: &Path, run_id: &str) -> Result<Claim, Failure> {
        let unwritable = |e: std::io::Error| {
            Failure::new(
                OutcomeClass::Infrastructure,
                format!("the report directory {} cannot be written: {e}", dir.display()),
            )
            .hint("free some space or fix its permissions; nothing was started")
        };
        create_dir(dir).map_err(unwritable)?;
        let lock = match lock(&dir.join(".ohrun.lock")) {
            Ok(lock) => lock,
            Err(Locked::Io(e)) => return Err(unwritable(e)),
            Err(Locked::By(holder)) => {
                return Err(Failure::new(
                    OutcomeClass::UsageError,
                    format!("another ohrun ({holder}) is writing into {} right now", dir.display()),
                )
                .hint("wait for it to finish, or give this run another `report.dir`"));
            }
        };
        if let Some(other) = existing_run_id(dir).filter(|id| id != run_id) {
            return Err(Failure::new(
                OutcomeClass::UsageError,
                format!("{} holds the report of run {other}; ohrun does not overwrite another run's evidence", dir.display()),
            )
            .hint("give each run its own `report.dir` (or leave it out: each run gets its own folder in the batch directory), or move the old report away"));
        }
        Ok(Claim { dir: dir.to_path_buf(), _lock: lock })
    }

    /// The next attempt's number: one more than any attempt directory there is.
    pub fn next_attempt(&self) -> u32 {
        attempts(&self.dir).into_iter().max().unwrap_or(0) + 1
    }

    pub fn attempt_dir(&self, n: u32) -> PathBuf {
        self.dir.join(format!("attempt-{n}"))
    }

    /// The run's report file (the final attempt's, copied when it ended).
    pub fn report_file(&self) -> PathBuf {
        self.dir.join(RUN_FILE)
    }
}

pub enum Locked {
    /// Held by another process: who (`pid N`).
    By(String),
    Io(std::io::Error),
}

/// Takes the lock file at `path` for as long as the returned file is open (the OS releases it when the
/// process dies, even by SIGKILL), and writes this process's pid into it for whoever finds it held.
pub fn lock(path: &Path) -> Result<std::fs::File, Locked> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(Locked::Io)?;
    if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
        let holder = std::fs::read_to_string(path).unwrap_or_default();
        return Err(Locked::By(holder.trim().to_string()));
    }
    use std::io::Write;
    let _ = file.set_len(0).and_then(|()| write!(file, "pid {}", std::process::id()));
    Ok(file)
}

/// The attempt numbers of the `attempt-N` directories in `dir`.
pub fn attempts(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_prefix("attempt-")?.parse().ok()).collect()
}
