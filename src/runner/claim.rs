//! A run's directory, held by one ohrun process at a time: `run.json` (the final attempt's report) and
//! `attempt-N/` for each attempt's evidence. An attempt never reuses another's directory, so nothing is
//! ever overwritten: a retry, a resume or a plain rerun gets the next number.

use crate::error::Failure;
use crate::report::OutcomeClass;
use crate::report::writer::{RUN_FILE, create_dir, existing_run_id};
use std::path::{Path, PathBuf};

/// The lock file of a run directory outside any batch directory its process holds.
pub const RUN_LOCK: &str = ".ohrun.lock";
/// The lock file of a batch directory (held by the process running the batch).
pub const BATCH_LOCK: &str = ".ohrun-batch.lock";

/// A run directory this process holds, so that no other ohrun process writes into it meanwhile. Inside
/// the batch directory this process holds (every run's folder unless `report.dir` says otherwise) the
/// batch's lock covers it and the run holds no descriptor of its own: 10,000 runs at once would hold
/// 10,000 lock files open. Elsewhere it holds its own lock file.
///
/// Two processes can never both hold one run directory: each first takes its own lock (the batch's, or
/// the run directory's) and then looks for the other kind held by someone else — the run directory's
/// lock, and the lock of every batch directory above it. Whichever looks second sees the other.
pub struct Claim {
    pub dir: PathBuf,
    _lock: Option<std::fs::File>,
}

impl Claim {
    /// Claims `dir` for run `id`, unless another ohrun process writes into it or it holds another run's
    /// report. `batch_dir`: the batch directory this process holds locked.
    pub fn take(dir: &Path, run_id: &str, batch_dir: &Path) -> Result<Claim, Failure> {
        let unwritable = |e: std::io::Error| {
            Failure::new(
                OutcomeClass::Infrastructure,
                format!("the report directory {} cannot be written: {e}", dir.display()),
            )
            .hint("free some space or fix its permissions; nothing was started")
        };
        create_dir(dir).map_err(unwritable)?;
        let busy = |holder: String| {
            Failure::new(
                OutcomeClass::UsageError,
                format!("another ohrun ({holder}) is writing into {} right now", dir.display()),
            )
            .hint("wait for it to finish, or give this run another `report.dir`")
        };
        // Lexically absolute, as the batch's own checks of report directories are.
        let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let batch_dir = std::path::absolute(batch_dir).ok();
        let covered = absolute.ancestors().skip(1).any(|a| Some(a) == batch_dir.as_deref());
        let lock = if covered {
            held_elsewhere(&dir.join(RUN_LOCK)).map_or(Ok(None), |holder| Err(busy(holder)))?
        } else {
            match lock(&dir.join(RUN_LOCK)) {
                Ok(lock) => Some(lock),
                Err(Locked::Io(e)) => return Err(unwritable(e)),
                Err(Locked::By(holder)) => return Err(busy(holder)),
            }
        };
        if let Some(holder) = absolute.ancestors().find_map(|a| held_elsewhere(&a.join(BATCH_LOCK))) {
            return Err(busy(holder));
        }
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

/// Who holds the lock file at `path`, when another process does (a file that is not there is held by
/// no one; this process's own locks are told by the pid written in them).
fn held_elsewhere(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(path).unwrap_or_default().trim().to_string();
            (holder != format!("pid {}", std::process::id())).then_some(holder)
        }
        _ => None,
    }
}

/// The attempt numbers of the `attempt-N` directories in `dir`.
pub fn attempts(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_prefix("attempt-")?.parse().ok()).collect()
}
