//! run.json while an attempt runs: rewritten atomically (temp file + rename) at every state change —
//! the report directory is ready, the sandbox is provisioned, each setup command has ended, the
//! conversation has started, each step starts and ends, the steps are over — with `status: running`
//! until the final write. A kill -9 therefore leaves a valid run.json that says how far the attempt got.

use crate::agent::conversation::Progress;
use crate::money::Usd;
use crate::report::writer::write_report;
use crate::report::{RunReport, SetupResult, StepReport, Totals};
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
            super::run::record_into(r, record);
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

    fn spend(&self, index: usize, before: &Totals, now: &Totals) {
        self.checkpoint.spend(index, before, now);
    }
}
