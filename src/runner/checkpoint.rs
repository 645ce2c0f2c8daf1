//! run.json while an attempt runs: rewritten atomically (temp file + rename) at every state change —
//! the report directory is ready, the sandbox is provisioned, each setup command has ended, the
//! conversation has started, each step starts and ends, the steps are over — with `status: running`
//! until the final write. A kill -9 therefore leaves a valid run.json that says how far the attempt got.

use crate::agent::conversation::Progress;
use crate::money::Usd;
use crate::report::writer::write_report;
use crate::report::{RunReport, SetupResult, StepReport};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

pub struct Checkpoint {
    dir: PathBuf,
    /// The report as last written (steps and setup results arrive between the runner's own saves).
    report: Mutex<RunReport>,
}

impl Checkpoint {
    pub fn new(dir: PathBuf, report: &RunReport) -> Checkpoint {
        Checkpoint { dir, report: Mutex::new(report.clone()) }
    }

    /// Writes `report` as it is now, saying whether that worked.
    pub fn try_save(&self, report: &RunReport) -> std::io::Result<()> {
        let mut last = self.report.lock().unwrap_or_else(|e| e.into_inner());
        *last = report.clone();
        write_report(&self.dir, &last).map(|_| ())
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

    /// A checkpoint that cannot be written is not fatal here: the final write says so for the attempt.
    fn write(&self, report: &RunReport) {
        if let Err(e) = write_report(&self.dir, report) {
            tracing::warn!("cannot write the checkpoint of {}: {e}", self.dir.display());
        }
    }
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
}
