//! An attempt's checkpoints: its run.json is written once at the start (`status: running`; the folder is
//! born with it) and once at the end; in between, every state change — the sandbox is provisioned, each
//! setup command has ended, the conversation has started, each step starts, spends and ends, the steps
//! are over — appends the whole report as one line to `checkpoints.jsonl` (through the process's disk
//! writer, off the async runtime). One file per attempt instead of a new file renamed over run.json at
//! every change: at 1,000 runs that churn of inodes was most of ohrun's CPU (BENCHMARKS.md). A kill -9
//! therefore leaves a run.json that says `running` and a log whose last whole line says how far the
//! attempt got; [`latest`] reads them as `--resume` does.

use crate::agent::conversation::Progress;
use crate::money::Usd;
use crate::report::writer::{RUN_FILE, read_report, write_report};
use crate::report::{ReportStatus, RunReport, SetupResult, StepReport, Totals, disk, redact};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use crate::report::writer::CHECKPOINTS_FILE;

pub struct Checkpoint {
    dir: PathBuf,
    /// The report as last written (steps and setup results arrive between the runner's own saves).
    report: Mutex<RunReport>,
    /// The first append the disk writer could not make (warned about once).
    errors: disk::Errors,
}

impl Checkpoint {
    pub fn new(dir: PathBuf, report: &RunReport) -> Checkpoint {
        Checkpoint { dir, report: Mutex::new(report.clone()), errors: Default::default() }
    }

    /// Writes `report` as the attempt's run.json, making its folder, and says whether that worked (the
    /// check that the report can be written at all; nothing is started if not).
    pub fn try_save(&self, report: &RunReport) -> std::io::Result<()> {
        let mut last = self.report.lock().unwrap_or_else(|e| e.into_inner());
        *last = report.clone();
        disk::off_runtime(|| write_report(&self.dir, &last)).map(|_| ())
    }

    /// Writes `report` as it is now.
    pub fn save(&self, report: &RunReport) {
        let mut last = self.report.lock().unwrap_or_else(|e| e.into_inner());
        *last = report.clone();
        self.write(&last);
    }

    fn update(&self, change: impl FnOnce(&mut RunReport)) {
        let mut last = self.report.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut last);
        self.write(&last);
    }

    pub fn setup_done(&self, result: &SetupResult) {
        self.update(|r| r.setup.push(result.clone()));
    }

    fn step(&self, step: &StepReport) {
        self.update(|r| {
            if let Some(slot) = r.steps.get_mut(step.index.saturating_sub(1)) {
                *slot = step.clone();
            }
        });
    }

    /// What step `index` has spent so far (`now` − `before`) and the conversation in all: a run killed
    /// mid-step leaves what it spent in its run.json, not zeros.
    fn spend(&self, index: usize, before: &Totals, now: &Totals) {
        self.update(|r| {
            if let Some(step) = r.steps.get_mut(index.saturating_sub(1)) {
                step.cost = now.cost.saturating_sub(before.cost);
                step.tokens = now.tokens.minus(before.tokens);
                step.llm_calls = now.llm_calls.saturating_sub(before.llm_calls);
            }
            r.totals = std::mem::take(&mut r.totals).at_least(now);
        });
    }

    /// What the backend recorded about its sandbox while provisioning (an id the moment it exists).
    pub fn sandbox_recorded(&self, record: crate::backend::Record) {
        self.update(|r| {
            if record.id.is_some() && r.sandbox.disposition == "not_provisioned" {
                r.sandbox.disposition = "provisioning".into();
            }
            super::outcome::record_into(r, record);
        });
    }

    /// A checkpoint that cannot be written is not fatal here: the final write says so for the attempt.
    fn write(&self, report: &RunReport) {
        let line = serde_json::to_string(report).unwrap_or_default();
        let mut bytes = redact::apply(&line).into_owned().into_bytes();
        bytes.push(b'\n');
        disk::append(&self.dir.join(CHECKPOINTS_FILE), bytes, &self.errors);
        if let Some(e) = self.errors.lock().unwrap_or_else(|e| e.into_inner()).take() {
            tracing::warn!("cannot write the checkpoint of {}: {e}", self.dir.display());
        }
    }
}

/// The latest report of the attempt in `dir`: its run.json once that says the attempt ended, else the
/// last whole line of its checkpoint log (a line cut short by a kill is skipped), else the run.json it
/// was born with; `None` when there is none of these.
pub fn latest(dir: &Path) -> Option<RunReport> {
    let first = read_report(&dir.join(RUN_FILE));
    if first.as_ref().is_some_and(|r| r.status == ReportStatus::Ended) {
        return first;
    }
    let log = std::fs::read_to_string(dir.join(CHECKPOINTS_FILE)).unwrap_or_default();
    log.lines().rev().find_map(|line| serde_json::from_str(line).ok()).or(first)
}

/// The console's step progress, and a checkpoint at each step's start and end.
pub struct Checkpointed<'a> {
    pub inner: &'a dyn Progress,
    pub checkpoint: &'a Checkpoint,
}

impl Progress for Checkpointed<'_> {
    fn step(&self, index: usize, total: usize, elapsed: Duration, events: usize, cost: Usd) {
        self.inner.step(index, total, elapsed, events, cost);
    }

    fn step_done(&self, report: &StepReport, total: usize) {
        self.checkpoint.step(report);
        self.inner.step_done(report, total);
    }

    fn step_started(&self, report: &StepReport) {
        self.checkpoint.step(report);
        self.inner.step_started(report);
    }

    fn spend(&self, index: usize, before: &Totals, now: &Totals) {
        self.checkpoint.spend(index, before, now);
    }
}
