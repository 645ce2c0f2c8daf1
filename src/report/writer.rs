//! Writing reports: `run.json` atomically (temp file + rename), `events.jsonl` appended as events come
//! (by the process's disk writer, [`super::disk`]: the file is not held open), both through the redactor. Report directories are private to the user (they hold agent output), and
//! a directory that cannot be written is found before anything is provisioned.

use super::model::RunReport;
use super::redact;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const RUN_FILE: &str = "run.json";
/// An attempt's checkpoint log: one whole report per line, the last one the latest (`runner::checkpoint`).
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
pub const EVENTS_FILE: &str = "events.jsonl";

pub struct ReportWriter {
    events_path: PathBuf,
    /// The first write of the event log that failed, once the disk writer has met it.
    errors: super::disk::Errors,
}

/// Creates `dir` (and its parents) private to the user.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// A new file only its owner can read: reports hold agent output. A symbolic link in its place is
/// refused, not followed (a report directory another user could write to must not redirect a write).
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

impl ReportWriter {
    /// Creates the report directory and a fresh, empty event log; fails when either cannot be written.
    pub fn create(dir: &Path) -> std::io::Result<ReportWriter> {
        let events_path = dir.join(EVENTS_FILE);
        super::disk::off_runtime(|| create_dir(dir).and_then(|()| create_private(&events_path)))?;
        Ok(ReportWriter { events_path, errors: Default::default() })
    }

    pub fn events_path(&self) -> &Path {
        &self.events_path
    }

    /// Appends one event, as the server sent it (secrets masked): queued for the disk writer, which writes
    /// it within moments. An error is the first one the writer met on this log (reported on a later call).
    pub fn event(&mut self, event: &serde_json::Value) -> std::io::Result<()> {
        let line = serde_json::to_string(event).unwrap_or_default();
        let mut bytes = redact::apply(&line).into_owned().into_bytes();
        bytes.push(b'\n');
        super::disk::append(&self.events_path, bytes, &self.errors);
        self.error()
    }

    /// Waits until every event given is on disk, and says whether all of them could be written.
    pub async fn settled(&self) -> std::io::Result<()> {
        super::disk::settled().await;
        self.error()
    }

    fn error(&self) -> std::io::Result<()> {
        match self.errors.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            None => Ok(()),
        }
    }
}

/// Writes `run.json` atomically: readers see the old report or the new one, never half of one.
pub fn write_report(dir: &Path, report: &RunReport) -> std::io::Result<PathBuf> {
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    let path = dir.join(RUN_FILE);
    if !dir.exists() {
        born_with(dir, RUN_FILE, &text)?;
        return Ok(path);
    }
    write_atomic(&path, &text)?;
    Ok(path)
}

/// Makes directory `dir` with `file` in it, never one without the other: both are made under a
/// temporary name beside it and renamed into place together (an attempt's folder never lacks its
/// run.json, however soon ohrun is killed). A folder someone made meanwhile is kept, the file written in.
/// Not fsynced: this is the attempt's first checkpoint, which a kill (not a power cut) must not lose, and
/// two fsyncs per attempt were most of a 10,000-run batch's start.
fn born_with(dir: &Path, file: &str, text: &str) -> std::io::Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    create_dir(parent)?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
    let tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).tempdir_in(parent)?;
    // Private like every folder ohrun makes (tempfile's own folders follow the umask).
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    write_replacing(&tmp.path().join(file), text, false)?;
    let tmp = tmp.keep(); // from here on it is either renamed into place or removed below
    let renamed = std::fs::rename(&tmp, dir);
    if renamed.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    match renamed {
        Ok(()) => Ok(()),
        Err(_) if dir.is_dir() => write_atomic(&dir.join(file), text),
        Err(e) => Err(e),
    }
}

/// Writes `path` atomically, redacted and private to the user: a temporary file with a random name,
/// created exclusively (never through a link someone placed there), fsynced, renamed over `path`, and
/// the directory fsynced so the rename itself survives a crash. A failed write leaves no temporary file.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    write_replacing(path, text, true)
}

/// [`write_atomic`], fsyncing the file and its directory only when `durable`.
fn write_replacing(path: &Path, text: &str, durable: bool) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
    tmp.write_all(redact::apply(text).as_bytes())?;
    tmp.write_all(b"\n")?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if durable { std::fs::File::open(dir)?.sync_all() } else { Ok(()) }
}

/// A run report read back (a resumed batch, a merge).
pub fn read_report(path: &Path) -> Option<RunReport> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The run id of the report already in `dir`, if any: a run must not overwrite another run's evidence.
pub fn existing_run_id(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(RUN_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.pointer("/run/id")?.as_str().map(str::to_string)
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// `path` as seen from the directory `from` (both made absolute first); `path` itself when that fails.
/// Report paths in a summary are relative to the directory that holds it (a merge, a comparison's page).
pub fn relative(path: &Path, from: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = |p: &Path| {
        std::path::absolute(p).ok().map(|a| a.components().filter(|c| *c != Component::CurDir).collect::<PathBuf>())
    };
    let (Some(to), Some(base)) = (absolute(path), absolute(from)) else { return path.to_path_buf() };
    let common = to.components().zip(base.components()).take_while(|(a, b)| a == b).count();
    let up = base.components().skip(common).map(|_| Component::ParentDir);
    up.chain(to.components().skip(common)).collect()
}

#[cfg(test)]
mod tests {
    use super::{RUN_FILE, RunReport, write_report};

    #[test]
    fn a_new_report_directory_appears_with_its_run_json_and_leaves_nothing_else() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("attempt-1");
        write_report(&dir, &RunReport::default()).unwrap();
        assert!(dir.join(RUN_FILE).is_file());
        let names: Vec<_> = std::fs::read_dir(parent.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["attempt-1"], "no temporary directory is left");
        write_report(&dir, &RunReport::default()).unwrap();
    }

    use super::relative;
    use std::path::Path;

    #[test]
    fn report_paths_are_relative_to_the_merged_directory() {
        assert_eq!(
            relative(Path::new("/w/shard-1/r/run.json"), Path::new("/w/merged")),
            Path::new("../shard-1/r/run.json")
        );
        assert_eq!(relative(Path::new("/w/m/r/run.json"), Path::new("/w/m")), Path::new("r/run.json"));
        assert_eq!(relative(Path::new("a/./b/run.json"), Path::new("a/out/x")), Path::new("../../b/run.json"));
    }
}
