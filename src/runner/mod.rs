//! Runs a plan: each run in turn (provision → setup → conversation → release, in `run.rs`), each with its
//! own report directory, one summary line per run. Every exit path of a run writes its `run.json`.

mod run;
pub mod signal;

use crate::console::Console;
use crate::exit_code::ExitCode;
use crate::job::Plan;
use crate::rehearse::script::Script;
use crate::report::{OutcomeClass, RunReport};
use signal::Signals;
use std::path::PathBuf;

pub struct RunOptions {
    /// `Some(script)` when the LLM is replaced by a rehearsal.
    pub rehearsal: Option<Script>,
}

pub struct RunResult {
    pub report: RunReport,
    /// Where run.json is, when it was written.
    pub report_file: Option<PathBuf>,
    /// run.json could not be written.
    pub write_failed: bool,
}

/// Runs every run of the plan in order and returns their reports and the process exit code.
pub async fn run_plan(plan: &Plan, opts: &RunOptions, console: &Console, signals: &Signals) -> (Vec<RunResult>, i32) {
    let mut results = Vec::new();
    for planned in &plan.runs {
        if signals.interrupted() {
            break;
        }
        results.push(run::execute(plan, planned, opts, console, signals).await);
    }
    console.clear();
    let mut worst = results.iter().map(|r| r.report.outcome.class).max().unwrap_or_default();
    if signals.interrupted() && worst < OutcomeClass::Interrupted {
        worst = OutcomeClass::Interrupted;
    }
    // A report that could not be written is an infrastructure failure whatever the run did.
    if results.iter().any(|r| r.write_failed) && worst < OutcomeClass::Infrastructure {
        worst = OutcomeClass::Infrastructure;
    }
    (results, ExitCode::for_class(worst, signals.terminated()))
}
