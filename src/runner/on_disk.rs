//! The resume accounting: what the attempts already on disk say, including those ohrun was killed
//! during (their last checkpoint and event log), and where a run's report is as the summary names it.

use super::claim::attempts;
use crate::agent::stats::last_stats_in;
use crate::error::Failure;
use crate::report::writer::{EVENTS_FILE, RUN_FILE};
use crate::report::{OutcomeClass, ReportStatus, RunReport};
use std::path::Path;

/// The reports of the attempts in `dir` numbered `first` or later, in order. An attempt that did not end
/// (ohrun was killed during it: its run.json, if any, still says `running`) counts as interrupted, with
/// the money its event log says it spent: that was spent all the same.
pub(super) fn reports_on_disk(dir: &Path, first: u32) -> Vec<RunReport> {
    let mut numbers: Vec<u32> = attempts(dir).into_iter().filter(|n| *n >= first).collect();
    numbers.sort();
    numbers
        .into_iter()
        .map(|n| {
            let attempt = dir.join(format!("attempt-{n}"));
            match super::checkpoint::latest(&attempt) {
                Some(report) if report.status == ReportStatus::Ended => report,
                checkpoint => killed_attempt(&attempt, n, checkpoint),
            }
        })
        .collect()
}

/// What is known of an attempt that ended with ohrun: its last checkpoint (or nothing), interrupted, and
/// at least what its event log says it spent.
fn killed_attempt(attempt: &Path, number: u32, checkpoint: Option<RunReport>) -> RunReport {
    let mut report = checkpoint.unwrap_or_default();
    let events = std::fs::read_to_string(attempt.join(EVENTS_FILE)).unwrap_or_default();
    if let Some(logged) = last_stats_in(&events).filter(|t| t.cost >= report.totals.cost) {
        report.totals = crate::report::Totals { events: report.totals.events, ..logged };
    }
    report.run.attempt = number;
    report.status = ReportStatus::Ended;
    for step in report.steps.iter_mut().filter(|s| !s.started_at.is_empty() && s.ended_at.is_none()) {
        step.end_reason = crate::report::EndReason::Interrupted;
    }
    let why = "ohrun ended during this attempt (killed?); what it spent is from its last checkpoint and event log";
    super::outcome::set_outcome(&mut report, Some(&Failure::new(OutcomeClass::Interrupted, why.to_string())), false);
    report
}

/// Where a run's report is, as the summary says it: relative to the batch directory when inside it.
pub(super) fn report_path(out: &Path, run_dir: &Path) -> String {
    let file = run_dir.join(RUN_FILE);
    file.strip_prefix(out).map(Path::to_path_buf).unwrap_or(file).display().to_string()
}
