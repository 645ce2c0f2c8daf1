//! How an attempt's report begins and ends: the report of a run not yet started, its outcome from the
//! attempt's failure (and from its steps, and from a release that failed), and the line that says how it
//! ended.

use super::RunResult;
use super::signal::Signals;
use crate::agent::conversation::message_text;
use crate::backend::{self, Backend, Released};
use crate::console::RunLine;
use crate::error::Failure;
use crate::exit_code::ExitCode;
use crate::job::model::CleanupPolicy;
use crate::job::{Plan, PlannedRun};
use crate::report::writer::{EVENTS_FILE, now_rfc3339, write_report};
use crate::report::{
    EndReason, JobInfo, Outcome, OutcomeClass, REPORT_FORMAT, ReportStatus, RunInfo, RunReport, SandboxInfo,
    StepReport, Verdict, Verification,
};
use std::path::Path;
use std::time::Instant;

/// A report of a run that has not started yet (also what a run that cannot start reports).
pub(super) fn new_report(plan: &Plan, planned: &PlannedRun, rehearsal: bool, attempt: u32) -> RunReport {
    let job_dir = plan.file.parent().map(Path::to_path_buf).unwrap_or_default();
    RunReport {
        format: REPORT_FORMAT,
        ohrun_version: env!("CARGO_PKG_VERSION").to_string(),
        job: JobInfo {
            name: plan.job_name.clone(),
            file: plan.file.display().to_string(),
            file_hash: plan.file_hash.clone(),
            path: std::path::absolute(&plan.file).ok().map(|p| p.display().to_string()),
        },
        run: RunInfo {
            id: planned.id.clone(),
            index: planned.index,
            matrix: planned.matrix.as_ref().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            attempt,
            trial: None,
        },
        rehearsal,
        status: ReportStatus::Running,
        // Until the attempt ends, its checkpoints say so: a killed run must never read as a success.
        outcome: Outcome::running(),
        started_at: now_rfc3339(),
        sandbox: SandboxInfo {
            kind: planned.spec.sandbox.kind().to_string(),
            disposition: "not_provisioned".into(),
            ..Default::default()
        },
        events_file: EVENTS_FILE.to_string(),
        // Every step is listed from the start, so a run that fails early still reports what did not run.
        steps: planned
            .spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| StepReport {
                index: i + 1,
                message: message_text(&s.message, &job_dir),
                end_reason: EndReason::NotRun,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Sets the outcome, writes the attempt's run.json.
pub(super) fn finish(
    mut report: RunReport,
    outcome: Result<(), Failure>,
    dir: &Path,
    started: Instant,
    line: &RunLine,
    signals: &Signals,
) -> RunResult {
    if let Err(f) = &outcome
        && matches!(f.class, OutcomeClass::Infrastructure | OutcomeClass::UsageError | OutcomeClass::LeftBehind)
    {
        print_failure(line, f);
    }
    set_outcome(&mut report, outcome.err().as_ref(), signals.terminated());
    report.status = ReportStatus::Ended;
    report.ended_at = Some(now_rfc3339());
    report.duration_ms = Some(started.elapsed().as_millis() as u64);
    let (report_file, write_failed) = match crate::report::disk::off_runtime(|| write_report(dir, &report)) {
        Ok(path) => (Some(path), false),
        Err(e) => {
            line.error(&format!("error: cannot write {}/run.json: {e}", dir.display()));
            (None, true)
        }
    };
    RunResult { report, report_file, write_failed }
}

/// The report's outcome from the attempt's failure (None: it succeeded).
pub(super) fn set_outcome(report: &mut RunReport, failure: Option<&Failure>, terminated: bool) {
    let class = failure.map_or(OutcomeClass::Succeeded, |f| f.class);
    report.outcome = Outcome {
        class,
        exit_code: Some(ExitCode::for_class(class, terminated)),
        message: failure.map(Failure::report_message),
        retryable: failure.is_some_and(|f| f.retryable),
        lacked_resources: failure.is_some_and(|f| f.lacked_resources),
        leaks: Vec::new(),
    };
}

pub(super) fn print_failure(line: &RunLine, f: &Failure) {
    line.error(&format!("error: {}", f.message));
    if let Some(tail) = &f.log_tail {
        line.error(&format!("its last log lines:\n{tail}"));
    }
    if let Some(h) = &f.hint {
        line.error(&format!("hint: {h}"));
    }
}

/// The line that says how a run ended.
pub(super) fn summary_line(r: &RunReport, file: Option<&Path>, style: crate::style::Style) -> String {
    let s = style;
    let mark = match (r.outcome.class, file) {
        (OutcomeClass::Succeeded, Some(_)) => s.ok("ok"),
        _ => s.error("FAILED"),
    };
    let done = r.steps.iter().filter(|st| st.end_reason != EndReason::NotRun).count();
    let why = r
        .outcome
        .message
        .as_deref()
        .map(|m| format!(" — {}", crate::report::redact::first_line(m)))
        .unwrap_or_default();
    let file = file.map(|f| f.display().to_string()).unwrap_or_else(|| "no run.json".into());
    let verdict = r.verification.as_ref().map(|v| verdict_words(v, s)).unwrap_or_default();
    format!(
        "{mark} {}{verdict} · {done}/{} steps · ${} · {:.1}s · {file}{why}",
        crate::report::run_label(&r.run.id, r.run.trial),
        r.steps.len(),
        r.totals.cost,
        r.duration_ms.unwrap_or(0) as f64 / 1000.0,
    )
}

/// ` · passed 0.83`, ` · failed 0.50`, ` · error`, ` · not verified`: the verdict on a run's end line.
pub(super) fn verdict_words(v: &Verification, s: crate::style::Style) -> String {
    let score = v.score.map(|x| format!(" {x:.2}")).unwrap_or_default();
    let words = match v.verdict {
        _ if v.not_verified.is_some() => return format!(" · {}", s.dim("not verified")),
        Some(Verdict::Passed) => s.ok(&format!("passed{score}")),
        Some(verdict) => s.error(&format!("{}{score}", verdict.as_str())),
        None => return String::new(),
    };
    format!(" · {words}")
}

/// What the backend knows about its sandbox, into the report (also after a failed provisioning).
pub(super) fn record_sandbox(report: &mut RunReport, backend: &dyn Backend) {
    record_into(report, backend.record());
}

/// A backend's record into the report's `sandbox`.
pub(super) fn record_into(report: &mut RunReport, record: backend::Record) {
    report.sandbox.id = record.id;
    report.sandbox.log_file = record.log_file.map(|p| p.display().to_string());
    report.sandbox.api_retries = record.api_retries;
    report.sandbox.candidates = record.candidates;
    report.sandbox.image = record.image;
}

/// The run's result with the release's: a sandbox that may be left behind outranks everything.
pub(super) fn worst(result: Result<(), Failure>, released: Released) -> Result<(), Failure> {
    let Released::Failed(e) = released else { return result };
    let left = Failure::new(OutcomeClass::LeftBehind, format!("the sandbox could not be released: {e}"))
        .hint("it may still be running (and costing money): remove it by hand; its id is in run.json");
    match result {
        Err(f) if f.class >= OutcomeClass::LeftBehind => Err(f),
        Err(f) => Err(Failure { message: format!("{}; and {}", f.message, left.message), ..left }),
        Ok(()) => Err(left),
    }
}

/// Whether the cleanup policy keeps what a run with this outcome used.
pub(super) fn keeps(policy: CleanupPolicy, class: OutcomeClass) -> bool {
    match policy {
        CleanupPolicy::Always => false,
        CleanupPolicy::OnSuccess => class != OutcomeClass::Succeeded,
        CleanupPolicy::Never => true,
    }
}

/// The run's result from its steps: the first step that did not finish decides.
pub(super) fn classify(report: &RunReport) -> Result<(), Failure> {
    for s in &report.steps {
        let class = match s.end_reason {
            EndReason::Finished | EndReason::NotRun => continue,
            EndReason::Question if s.error.is_none() => continue,
            EndReason::Budget => OutcomeClass::Budget,
            EndReason::Interrupted => OutcomeClass::Interrupted,
            EndReason::Lost => OutcomeClass::Infrastructure,
            EndReason::Error | EndReason::Stuck | EndReason::Timeout | EndReason::Paused | EndReason::Question => {
                OutcomeClass::Failed
            }
        };
        let detail = s
            .error
            .as_ref()
            .map(|e| format!(": {}", crate::console::code_and_detail(&e.code, &e.detail)))
            .unwrap_or_default();
        let failure = Failure::new(class, format!("step {} ended: {}{detail}", s.index, s.end_reason.as_str()));
        if s.error.as_ref().is_some_and(|e| e.code == "NoPrice") {
            // A cap the model's (missing) price cannot keep is the job's to fix, as a wrong key is.
            return Err(Failure { class: OutcomeClass::UsageError, ..failure }.hint(
                "name the price to assume in the job: `llm.input_cost_per_token` and `llm.output_cost_per_token` (USD per token)",
            ));
        }
        // A lost server is the infrastructure's failure: another attempt may go through.
        return Err(if s.end_reason == EndReason::Lost { failure.retryable() } else { failure });
    }
    Ok(())
}
