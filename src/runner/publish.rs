//! An attempt's report published as the run's: run.json and report.html in the run directory, then the
//! leak scan of everything the attempt wrote (a secret found fails the run and both reports say where).

use super::RunResult;
use super::claim::Claim;
use super::outcome::set_outcome;
use crate::console::RunLine;
use crate::error::Failure;
use crate::report::writer::write_report;
use crate::report::{OutcomeClass, RunReport, html, leak};

/// The attempt's report becomes the run's: `run.json` in the run directory. Evidence that could not be
/// written makes the run an infrastructure failure, so that no CI gate passes on a missing report.
pub(super) fn publish(claim: &Claim, result: &mut RunResult, line: &RunLine<'_>, terminated: bool) {
    if result.write_failed {
        unwritten(&mut result.report, "the attempt's run.json could not be written", terminated);
    }
    match write_report(&claim.dir, &result.report) {
        Ok(path) => result.report_file = Some(path),
        Err(e) => {
            line.error(&format!("error: cannot write {}: {e}", claim.report_file().display()));
            unwritten(&mut result.report, &format!("its run.json could not be written: {e}"), terminated);
            (result.report_file, result.write_failed) = (None, true);
            return;
        }
    }
    write_run_page(claim, &result.report, line);
    scan_for_leaks(claim, result, line, terminated);
}

/// The run's report.html beside its run.json (a page that cannot be written is a warning: run.json is
/// the evidence).
fn write_run_page(claim: &Claim, report: &RunReport, line: &RunLine<'_>) {
    if let Err(e) = html::write_run_page(&claim.dir, report) {
        line.error(&format!("warning: cannot write {}/{}: {e}", claim.dir.display(), html::HTML_FILE));
    }
}

/// The leak scan of what the attempt wrote: a secret found fails the run, and both copies of its report
/// say where (file and offset).
fn scan_for_leaks(claim: &Claim, result: &mut RunResult, line: &RunLine<'_>, terminated: bool) {
    let attempt_dir = claim.attempt_dir(result.report.run.attempt);
    let mut files = leak::files_under(&attempt_dir);
    files.push(claim.report_file());
    files.push(claim.dir.join(html::HTML_FILE));
    // Text artifacts are scanned; binary ones are listed as not scanned (`scanned: false`).
    let artifacts = result.report.artifacts.iter().flat_map(|a| a.files.iter().filter(|f| f.scanned));
    files.extend(artifacts.map(|f| attempt_dir.join(crate::artifacts::DIR).join(&f.path)));
    let leaks = leak::scan(&files);
    if leaks.is_empty() {
        return;
    }
    let places: Vec<String> = leaks.iter().map(ToString::to_string).collect();
    line.error(&format!("error: a secret is in what ohrun wrote: {}", places.join(", ")));
    let report = &mut result.report;
    if report.outcome.class < OutcomeClass::Failed {
        let why = format!("secret leak: a secret value was found in {}", places.join(", "));
        set_outcome(report, Some(&Failure::new(OutcomeClass::Failed, why)), terminated);
    }
    report.outcome.retryable = false;
    report.outcome.leaks = leaks;
    for dir in [&attempt_dir, &claim.dir] {
        if let Err(e) = write_report(dir, report) {
            line.error(&format!("error: cannot write {}/run.json: {e}", dir.display()));
            result.write_failed = true;
        }
    }
    write_run_page(claim, report, line);
}

/// Marks a report whose evidence is incomplete: infrastructure, unless it already failed worse.
pub(super) fn unwritten(report: &mut RunReport, why: &str, terminated: bool) {
    if report.outcome.class >= OutcomeClass::Infrastructure {
        return;
    }
    let earlier = report.outcome.message.take().map(|m| format!("\n{m}")).unwrap_or_default();
    let failure = Failure::new(OutcomeClass::Infrastructure, format!("{why}{earlier}"));
    set_outcome(report, Some(&failure), terminated);
}
