//! The sandbox ledger: what ohrun created that could outlive it. Before a backend creates a server
//! process, a container or a provider's sandbox, it appends an entry (and fsyncs it) to its batch's
//! ledger file; it adds the id once known; the runner closes the entry when the release is confirmed (or
//! the sandbox was kept on purpose). Whatever a crash, a SIGKILL or a third signal leaves open is what
//! `ohrun gc` looks at.
//!
//! One append-only JSON-lines file per [`Ledger`] — a batch's, or an `ohrun verify`'s — named after its
//! process and numbered within it (`<state dir>/ledger/<pid>-<start>-<k>.jsonl`), so no two share a file; its first line names the owner (pid + start time), which tells `gc`
//! whether the owner still runs (then its entries are in use, not left behind). A file whose entries are
//! all released is removed when the last one closes.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use crate::liveness::Process;

/// This machine's name: a ledger written on another host (a shared home directory) is not this gc's.
/// (From uname, not procfs: gc must tell hosts apart where there is no procfs.)
pub fn host() -> String {
    // SAFETY: uname fills the zeroed struct it is given, whose nodename is then NUL-terminated.
    unsafe {
        let mut name: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut name) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(name.nodename.as_ptr()).to_string_lossy().trim().to_string()
    }
}

/// What one entry names: enough for `gc` to find the sandbox again and remove it. Never a secret: keys
/// are named by the environment variable that holds them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Sandbox {
    /// `local`, `docker`, `cloud` or `runtime`.
    pub backend: String,
    pub run_id: String,
    pub report_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_dir: Option<PathBuf>,
    /// RFC 3339.
    pub created_at: String,
    /// The provider's API (cloud, runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The environment variable that holds the provider's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_var: Option<String>,
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Container id, Cloud sandbox id, Runtime session id — once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// A Runtime session released by pausing it rather than stopping it.
    #[serde(default)]
    pub pause_on_close: bool,
    /// Not created by this run: a Runtime session it attached to (named by the job's `session_id`). Never
    /// removed; recorded so that `gc` knows a running ohrun uses it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attached: bool,
    /// Labels the container carries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The server process (local), leader of its process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// Sandboxes a create whose answer was lost may have made (cloud): never removed, only named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    /// The local server's private state directory (its tmux sockets are there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Owner {
        process: Process,
        #[serde(default)]
        host: String,
        ohrun: String,
        created_at: String,
    },
    /// A new entry, or the whole entry again with what became known (the last one wins).
    Entry {
        n: u64,
        sandbox: Box<Sandbox>,
    },
    Close {
        n: u64,
        disposition: String,
    },
}

pub fn dir() -> PathBuf {
    crate::paths::state_dir().join("ledger")
}

/// This process's ledger file, opened on the first entry.
struct Writer {
    file: std::fs::File,
    path: PathBuf,
    open: BTreeSet<u64>,
    /// An entry was closed as kept: the file stays, to say so.
    kept: bool,
}

/// A batch's sandbox ledger (or an `ohrun verify`'s): its own file, opened on the first entry and removed
/// once nothing in it is open or kept. Cloned into each slot, so two batches in one process keep two
/// files and never number each other's entries.
#[derive(Clone)]
pub struct Ledger(Arc<Mutex<State>>);

struct State {
    writer: Option<Writer>,
    next: u64,
    /// Where its file goes: ohrun's state dir ([`dir`]).
    dir: PathBuf,
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger::in_dir(dir())
    }
}

impl Ledger {
    fn in_dir(dir: PathBuf) -> Ledger {
        Ledger(Arc::new(Mutex::new(State { writer: None, next: 1, dir })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `sandbox` (entry `n`, or a new one) before it is created, or again with what became known.
    fn record(&self, n: Option<u64>, sandbox: &Sandbox) -> std::io::Result<u64> {
        let mut state = self.state();
        let n = n.unwrap_or_else(|| {
            state.next += 1;
            state.next - 1
        });
        if state.writer.is_none() {
            state.writer = Some(open_file(&state.dir)?);
        }
        let writer = state.writer.as_mut().expect("opened above");
        writer.append(&Line::Entry { n, sandbox: Box::new(sandbox.clone()) })?;
        writer.open.insert(n);
        Ok(n)
    }

    /// Closes entry `n`; the file goes when nothing in it is open or kept.
    fn close(&self, n: u64, disposition: &str) {
        let mut state = self.state();
        let Some(writer) = state.writer.as_mut() else { return };
        if let Err(e) = writer.append(&Line::Close { n, disposition: disposition.into() }) {
            tracing::warn!("cannot close entry {n} of the sandbox ledger {}: {e}", writer.path.display());
            return;
        }
        writer.open.remove(&n);
        writer.kept |= disposition == "kept";
        if writer.open.is_empty() && !writer.kept {
            let _ = std::fs::remove_file(&writer.path);
            state.writer = None;
        }
    }
}

/// Numbers the ledger files of one process (`<pid>-<start>-<k>.jsonl`), so that each ledger has its own.
static FILES_OPENED: AtomicU64 = AtomicU64::new(0);

fn open_file(dir: &Path) -> std::io::Result<Writer> {
    use std::os::unix::fs::OpenOptionsExt;
    crate::report::writer::create_dir(dir)?;
    let me = crate::liveness::Procfs::system().me();
    let k = FILES_OPENED.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{}-{k}.jsonl", me.pid, me.start));
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
    let mut writer = Writer { file, path, open: BTreeSet::new(), kept: false };
    let owner = Line::Owner {
        process: me,
        host: host(),
        ohrun: env!("CARGO_PKG_VERSION").into(),
        created_at: crate::report::writer::now_rfc3339(),
    };
    writer.append(&owner)?;
    // The file's name must survive a crash too.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(writer)
}

impl Writer {
    /// One whole line in one write, then fsync: after a crash the entry is there or absent, never half.
    fn append(&mut self, line: &Line) -> std::io::Result<()> {
        let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
        text.push('\n');
        // Off the runtime's workers: the sync waits on the disk.
        crate::report::disk::off_runtime(|| {
            self.file.write_all(text.as_bytes())?;
            self.file.sync_data()
        })
    }
}

/// Hears what a slot holds that would outlive ohrun (`Some`: what to say of it) and when it lets go of it
/// (`None`), by run id: the runner keeps the list that its third signal prints.
pub type Watcher = std::sync::Arc<dyn Fn(&str, Option<String>) + Send + Sync>;

/// One attempt's place in the ledger: the backend opens it before it creates its sandbox and adds what it
/// learns; the runner closes it after the release. Tells its [`Watcher`] what it holds.
pub struct Slot {
    run_id: String,
    report_dir: PathBuf,
    batch_dir: Option<PathBuf>,
    entry: Mutex<Option<(u64, Sandbox)>>,
    watcher: Option<Watcher>,
    ledger: Ledger,
}

impl Slot {
    pub fn new(ledger: &Ledger, run_id: &str, report_dir: &Path, batch_dir: Option<&Path>) -> Slot {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        Slot {
            run_id: run_id.into(),
            report_dir: absolute(report_dir),
            batch_dir: batch_dir.map(absolute),
            entry: Mutex::new(None),
            watcher: None,
            ledger: ledger.clone(),
        }
    }

    /// The same slot, telling `watcher` what it holds.
    pub fn watched_by(mut self, watcher: Watcher) -> Slot {
        self.watcher = Some(watcher);
        self
    }

    fn entry(&self) -> std::sync::MutexGuard<'_, Option<(u64, Sandbox)>> {
        self.entry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new entry for a `backend` sandbox about to be created; `fill` adds what is known already. Err when
    /// the ledger cannot be written: then nothing must be created.
    pub fn open(&self, backend: &str, fill: impl FnOnce(&mut Sandbox)) -> std::io::Result<()> {
        let mut sandbox = Sandbox {
            backend: backend.into(),
            run_id: self.run_id.clone(),
            report_dir: self.report_dir.clone(),
            batch_dir: self.batch_dir.clone(),
            created_at: crate::report::writer::now_rfc3339(),
            ..Sandbox::default()
        };
        fill(&mut sandbox);
        let n = self.ledger.record(None, &sandbox)?;
        self.note_holding(&sandbox);
        *self.entry() = Some((n, sandbox));
        Ok(())
    }

    /// The label value that ties a container to this entry (the ledger file and entry number).
    pub fn label(&self) -> Option<String> {
        let n = self.entry().as_ref()?.0;
        let path = self.ledger.state().writer.as_ref()?.path.clone();
        Some(format!("{}#{n}", path.display()))
    }

    /// Adds what became known (an id, a process) to the open entry.
    pub fn update(&self, fill: impl FnOnce(&mut Sandbox)) {
        let mut entry = self.entry();
        let Some((n, sandbox)) = entry.as_mut() else { return };
        fill(sandbox);
        if let Err(e) = self.ledger.record(Some(*n), sandbox) {
            tracing::warn!("cannot update the sandbox ledger: {e}");
        }
        self.note_holding(sandbox);
    }

    /// The release is confirmed (or the sandbox kept on purpose): the entry is closed. A failed release
    /// leaves it open for `gc`.
    pub fn close(&self, disposition: &str) {
        if let Some((n, _)) = self.entry().take() {
            self.ledger.close(n, disposition);
        }
        if let Some(w) = &self.watcher {
            w(&self.run_id, None);
        }
    }

    /// What a third signal lists: sandboxes that outlive ohrun (a local server dies with its watchdog; a
    /// session ohrun only attached to is not its to leave).
    fn note_holding(&self, s: &Sandbox) {
        let Some(w) = &self.watcher else { return };
        if s.backend == "local" || s.attached {
            return;
        }
        let id = s.id.as_deref().unwrap_or("(its id not known yet)");
        // Until the attempt ends, its latest state is the last line of its checkpoint log, not run.json.
        let file = self.report_dir.join(crate::report::writer::CHECKPOINTS_FILE);
        w(&self.run_id, Some(format!("{} sandbox {id} (see {})", s.backend, file.display())));
    }
}

/// One ledger file as `gc` reads it.
#[derive(Debug)]
pub struct File {
    pub path: PathBuf,
    pub owner: Option<Process>,
    /// The host the owner ran on.
    pub host: String,
    /// Entry number → the sandbox as last recorded, and how it was closed (None: still open).
    pub entries: BTreeMap<u64, (Sandbox, Option<String>)>,
}

/// Every ledger file in `dir`. A final partial line (a crash mid-write) and lines this version does not
/// know are skipped.
pub fn read_all(dir: &Path) -> Vec<File> {
    let Ok(listing) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> =
        listing.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "jsonl")).collect();
    paths.sort();
    paths.into_iter().map(|p| read_file(&p)).collect()
}

fn read_file(path: &Path) -> File {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut file = File { path: path.to_path_buf(), owner: None, host: String::new(), entries: BTreeMap::new() };
    for line in text.lines().filter_map(|l| serde_json::from_str::<Line>(l).ok()) {
        match line {
            Line::Owner { process, host, .. } => (file.owner, file.host) = (Some(process), host),
            Line::Entry { n, sandbox } => {
                file.entries.insert(n, (*sandbox, None));
            }
            Line::Close { n, disposition } => {
                if let Some(e) = file.entries.get_mut(&n) {
                    e.1 = Some(disposition);
                }
            }
        }
    }
    file
}

/// Rewrites a dead owner's file with only `keep` (by `gc`, under its lock); removes it when none remain.
pub fn rewrite(file: &File, keep: &BTreeSet<u64>) -> std::io::Result<()> {
    if keep.is_empty() {
        return std::fs::remove_file(&file.path).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        });
    }
    let mut text = String::new();
    let mut push = |line: &Line| {
        text.push_str(&serde_json::to_string(line).unwrap_or_default());
        text.push('\n');
    };
    if let Some(owner) = &file.owner {
        let (ohrun, created_at) = (env!("CARGO_PKG_VERSION").into(), String::new());
        push(&Line::Owner { process: owner.clone(), host: file.host.clone(), ohrun, created_at });
    }
    for n in keep {
        let Some((sandbox, closed)) = file.entries.get(n) else { continue };
        push(&Line::Entry { n: *n, sandbox: Box::new(sandbox.clone()) });
        if let Some(d) = closed {
            push(&Line::Close { n: *n, disposition: d.clone() });
        }
    }
    crate::report::writer::write_atomic(&file.path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_ledgers_in_one_process_keep_two_files_and_their_own_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (Ledger::in_dir(dir.path().into()), Ledger::in_dir(dir.path().into()));
        let (a, b) = (Slot::new(&one, "a", dir.path(), None), Slot::new(&two, "b", dir.path(), None));
        a.open("docker", |_| {}).unwrap();
        b.open("docker", |_| {}).unwrap();
        let (la, lb) = (a.label().unwrap(), b.label().unwrap());
        assert!(la.ends_with("#1") && lb.ends_with("#1"), "each ledger numbers its own entries: {la}, {lb}");
        assert_ne!(la.split('#').next(), lb.split('#').next(), "each ledger has its own file");
        assert_eq!(read_all(dir.path()).len(), 2);
        a.close("released");
        assert_eq!(read_all(dir.path()).len(), 1, "a ledger's file goes with its last entry; the other stays");
        b.close("released");
        assert!(read_all(dir.path()).is_empty());
    }

    #[test]
    fn a_partial_last_line_and_unknown_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-2.jsonl");
        let sandbox = Sandbox { backend: "docker".into(), id: Some("abc".into()), ..Sandbox::default() };
        let lines = [
            serde_json::to_string(&Line::Owner {
                process: Process { pid: 1, start: 2, boot: String::new() },
                host: "h".into(),
                ohrun: "x".into(),
                created_at: "t".into(),
            })
            .unwrap(),
            serde_json::to_string(&Line::Entry { n: 1, sandbox: Box::new(sandbox.clone()) }).unwrap(),
            serde_json::to_string(&Line::Entry { n: 2, sandbox: Box::new(sandbox.clone()) }).unwrap(),
            r#"{"op":"from_the_future"}"#.into(),
            serde_json::to_string(&Line::Close { n: 2, disposition: "released".into() }).unwrap(),
            r#"{"op":"entry","n":3,"sand"#.into(),
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let files = read_all(dir.path());
        assert_eq!(files.len(), 1);
        let f = &files[0];
        assert_eq!((f.owner.clone(), f.host.as_str()), (Some(Process { pid: 1, start: 2, boot: String::new() }), "h"));
        assert_eq!(f.entries.len(), 2);
        assert_eq!(f.entries[&1], (sandbox.clone(), None));
        assert_eq!(f.entries[&2].1.as_deref(), Some("released"));
        rewrite(f, &BTreeSet::from([1])).unwrap();
        let again = read_all(dir.path());
        assert_eq!(again[0].entries.len(), 1);
        assert_eq!(again[0].entries[&1], (sandbox, None));
        rewrite(&again[0], &BTreeSet::new()).unwrap();
        assert!(read_all(dir.path()).is_empty());
    }
}
