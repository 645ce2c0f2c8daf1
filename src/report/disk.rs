//! One writer thread per process for the files a run appends to while it runs (`events.jsonl`, the
//! attempt's `checkpoints.jsonl`): the async runtime's workers never wait on the disk, and a file is open
//! only while the thread writes what is queued for it (10,000 runs at once would otherwise hold 10,000
//! open event logs). What is queued is written within moments: a SIGKILL loses at most what the thread
//! had not reached yet, never a torn line (each write is whole lines, appended).

use indexmap::IndexMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

/// Where a file's write errors go, for its owner to report (the thread itself has no one to tell).
pub type Errors = Arc<Mutex<Option<std::io::Error>>>;

enum Job {
    Append {
        path: PathBuf,
        bytes: Vec<u8>,
        errors: Errors,
    },
    /// Answered once everything queued before it is written.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

fn queue() -> &'static Mutex<Sender<Job>> {
    static QUEUE: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("ohrun-disk".into())
            .spawn(move || writer(rx))
            .expect("a thread can be started");
        Mutex::new(tx)
    })
}

fn send(job: Job) {
    let tx = queue().lock().unwrap_or_else(|e| e.into_inner());
    // The thread never ends while the process lives: a send cannot fail.
    let _ = tx.send(job);
}

/// Queues `bytes` (whole lines) to be appended to `path`, created private to the user when missing.
pub fn append(path: &Path, bytes: Vec<u8>, errors: &Errors) {
    send(Job::Append { path: path.to_path_buf(), bytes, errors: errors.clone() });
}

/// Waits until everything queued so far is on disk (before a file is read back: the run's page, the
/// leak scan).
pub async fn settled() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    send(Job::Barrier(tx));
    let _ = rx.await;
}

/// Takes what is queued in one go, so that a file with many lines queued is opened once for all of them.
fn writer(rx: Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut files: IndexMap<PathBuf, (Vec<u8>, Errors)> = IndexMap::new();
        let mut barriers = Vec::new();
        for job in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok()).take(4096)) {
            match job {
                Job::Append { path, bytes, errors } => {
                    files.entry(path).or_insert_with(|| (Vec::new(), errors)).0.extend_from_slice(&bytes)
                }
                Job::Barrier(done) => barriers.push(done),
            }
        }
        for (path, (bytes, errors)) in files {
            if let Err(e) = append_now(&path, &bytes) {
                errors.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
            }
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}

/// Appends to `path`, private to the user; a symbolic link in its place is refused, not followed.
fn append_now(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)?;
    file.write_all(bytes)
}

/// Runs `f`, which blocks on the disk, where it does not hold up the runtime's other tasks: a multi-
/// threaded runtime's worker hands its tasks to another thread meanwhile (`block_in_place`); elsewhere
/// (a current-thread runtime in tests, no runtime at all) it simply runs.
pub fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn appends_are_on_disk_once_settled_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let errors = super::Errors::default();
        for n in 0..100 {
            super::append(&path, format!("{n}\n").into_bytes(), &errors);
        }
        super::settled().await;
        let expected: String = (0..100).map(|n| format!("{n}\n")).collect();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
        assert!(errors.lock().unwrap().is_none());
        super::append(&dir.path().join("missing/log.jsonl"), b"x\n".to_vec(), &errors);
        super::settled().await;
        assert!(errors.lock().unwrap().is_some(), "a write that failed is reported to its owner");
    }
}
