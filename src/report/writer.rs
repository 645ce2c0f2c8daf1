//! Writing reports: `run.json` atomically (temp file + rename), `events.jsonl` appended as events come.

use super::model::RunReport;
use super::redact::Redactor;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct ReportWriter {
    pub dir: PathBuf,
    events: std::io::BufWriter<std::fs::File>,
    redactor: Redactor,
}

pub const RUN_FILE: &str = "run.json";
pub const EVENTS_FILE: &str = "events.jsonl";

impl ReportWriter {
    /// Creates the report directory and a fresh, empty event log.
    pub fn create(dir: &Path, redactor: Redactor) -> std::io::Result<ReportWriter> {
        std::fs::create_dir_all(dir)?;
        let events = std::fs::File::create(dir.join(EVENTS_FILE))?;
        Ok(ReportWriter { dir: dir.to_path_buf(), events: std::io::BufWriter::new(events), redactor })
    }

    /// Appends one event, as the server sent it (secrets masked), and flushes so a crash loses nothing.
    pub fn event(&mut self, event: &serde_json::Value) -> std::io::Result<()> {
        let line = serde_json::to_string(event).unwrap_or_default();
        writeln!(self.events, "{}", self.redactor.apply(&line))?;
        self.events.flush()
    }
}

/// Writes `run.json` atomically: readers see the old report or the new one, never half of one.
pub fn write_report(dir: &Path, report: &RunReport, redactor: &Redactor) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    let path = dir.join(RUN_FILE);
    let tmp = dir.join(format!(".{RUN_FILE}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(redactor.apply(&text).as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
