//! Verification: was the agent's work right? Checks — commands (`check.rs`) and LLM judges
//! (`judge.rs`) — run once the agent has finished (`verify:`), or right after a step (`steps[].checks`),
//! in the run's own sandbox (`shared`) or in a fresh one that only gets the run's final patch (`fresh`,
//! in `runner::verifying`). Hidden files arrive only after the agent is done (`files.rs`). The verdict
//! keeps the infrastructure apart: a check that could not run is a verifier error (`error`, exit 3,
//! retried like any infrastructure failure), never a failed task.

pub mod check;
pub mod checker;
pub mod files;
pub mod fresh;
pub mod judge;

pub use checker::Checker;

use crate::agent::http::AgentClient;
use crate::agent::setup::run_command;
use crate::cancel::Cancel;
use crate::job::checks::{CheckSpec, VerifySpec};
use crate::report::{CheckResult, RunReport, Verdict};
pub use judge::Evidence;
use std::path::Path;
use std::time::Duration;

/// The sandbox checks run in.
pub struct Target<'a> {
    pub client: &'a AgentClient,
    pub working_dir: &'a str,
}

/// The result a check starts from: its name, weight and flags.
pub fn base_result(spec: &CheckSpec) -> CheckResult {
    CheckResult {
        name: spec.name.clone(),
        kind: if spec.judge.is_some() { "judge" } else { "run" }.into(),
        required: spec.required,
        weight: spec.weight,
        ..CheckResult::default()
    }
}

/// Whether a command check passed: its value reaches the threshold (a judge says so itself).
pub fn settle(mut result: CheckResult, spec: &CheckSpec) -> CheckResult {
    if result.kind == "run" {
        result.passed = result.error.is_none() && result.value.is_some_and(|v| v >= spec.threshold);
    } else if result.error.is_some() {
        result.passed = false;
    }
    result
}

/// The verdict and score of a run from all its checks (per-step and final): `failed` when a required
/// check ran and failed (that is settled, whatever else could not run), else `error` when a required
/// check could not run, else `passed`. The score is the weighted mean of the values the checks gave (an
/// optional check that could not run is left out).
pub fn verdict(results: &[CheckResult]) -> (Verdict, Option<f64>) {
    let verdict = if results.iter().any(|r| r.required && r.error.is_none() && !r.passed) {
        Verdict::Failed
    } else if results.iter().any(|r| r.required && r.error.is_some()) {
        Verdict::Error
    } else {
        Verdict::Passed
    };
    let scored: Vec<(f64, f64)> = results.iter().filter_map(|r| Some((r.value?, r.weight))).collect();
    let weights: f64 = scored.iter().map(|(_, w)| w).sum();
    let score = (weights > 0.0).then(|| scored.iter().map(|(v, w)| v * w).sum::<f64>() / weights);
    (verdict, score)
}

/// What a verifier does once its sandbox is ready: the hidden files copied in (what they replaced goes
/// into `notices`), then the checks.
pub async fn check_in(
    target: &Target<'_>,
    spec: &VerifySpec,
    job_dir: &Path,
    checker: &Checker<'_>,
    evidence: &Evidence,
    notices: &mut Vec<String>,
) -> Vec<CheckResult> {
    if let Some(given) = &spec.files {
        let copied = match files::local_files(job_dir, given) {
            Ok(local) => files::copy_in(target, given, &local, &mut checker.cancel.clone()).await,
            Err(e) => Err(e),
        };
        match copied {
            Ok(replaced) => notices.extend(
                replaced
                    .into_iter()
                    .map(|p| format!("{p} was in the working directory before the hidden files arrived; removed")),
            ),
            Err(e) => return vec![setup_error("verify.files", e)],
        }
    }
    checker.run_all(target, &spec.checks, None, evidence).await
}

/// Says why verification could not begin, for each such check-shaped error in `results`.
pub fn tell_setup_errors(results: &[CheckResult], voice: &dyn checker::Voice) {
    for r in results.iter().filter(|r| r.kind == "setup") {
        let why = r.error.as_deref().or(r.explanation.as_deref()).unwrap_or_default();
        voice.say(&format!("{}: {why}", if r.error.is_some() { "error: could not verify" } else { "FAILED" }));
    }
}

/// A check-shaped verifier error for what failed before any check could run.
pub fn setup_error(name: &str, error: String) -> CheckResult {
    CheckResult {
        name: name.into(),
        kind: "setup".into(),
        required: true,
        weight: 0.0,
        error: Some(error),
        ..CheckResult::default()
    }
}

/// What a judge is shown of a run: its final patch (else its step diffs) and its agent's last message.
pub fn evidence(attempt_dir: &Path, report: &RunReport) -> Evidence {
    let read = |f: &str| std::fs::read_to_string(attempt_dir.join(f)).ok();
    let patch = report.final_patch.as_ref().and_then(|p| p.file.as_deref()).and_then(read);
    let diff = patch.unwrap_or_else(|| {
        report.steps.iter().filter_map(|s| s.diff.as_ref()?.file.as_deref()).filter_map(read).collect()
    });
    let final_message = report.steps.iter().rev().find_map(|s| s.final_message.clone());
    Evidence { final_message, diff }
}

/// What a shared sandbox shows of an agent that prepared its own verdict: `reward.json` files in the
/// working directory and output directories made in advance under a name like ohrun's (`ohrun-verify-out.*`,
/// which ohrun itself never makes, so other runs' checks on a shared server are not mistaken for it). They
/// are never read; the report says they were there.
pub async fn notices(target: &Target<'_>, cancel: &mut Cancel) -> Vec<String> {
    let look = "find . -name .git -prune -o -name reward.json -print 2>/dev/null | head -n 20; \
                ls -d \"${TMPDIR:-/tmp}\"/ohrun-verify-out.* /tmp/ohrun-verify-out.* 2>/dev/null | sort -u | head -n 20";
    let Ok(out) = run_command(target.client, look, target.working_dir, Duration::from_secs(60), cancel).await else {
        return Vec::new();
    };
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{} was there before verification began (written by the agent?); it was not read", l.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(required: bool, passed: bool, value: Option<f64>, weight: f64, error: bool) -> CheckResult {
        CheckResult {
            required,
            passed,
            value,
            weight,
            error: error.then(|| "timed out".to_string()),
            ..CheckResult::default()
        }
    }

    #[test]
    fn the_verdict_keeps_verifier_errors_apart_from_failures() {
        let pass = r(true, true, Some(1.0), 2.0, false);
        let fail_optional = r(false, false, Some(0.0), 1.0, false);
        assert_eq!(verdict(&[pass.clone(), fail_optional.clone()]), (Verdict::Passed, Some(2.0 / 3.0)));
        let fail = r(true, false, Some(0.0), 1.0, false);
        assert_eq!(verdict(&[pass.clone(), fail.clone()]).0, Verdict::Failed);
        let error = r(true, false, None, 1.0, true);
        assert_eq!(verdict(&[pass.clone(), error.clone()]), (Verdict::Error, Some(1.0)));
        // A required check that ran and failed settles it, whatever else could not run.
        assert_eq!(verdict(&[error, fail]).0, Verdict::Failed);
        let optional_error = r(false, false, None, 1.0, true);
        assert_eq!(verdict(&[pass, optional_error]).0, Verdict::Passed);
        assert_eq!(verdict(&[]), (Verdict::Passed, None));
    }
}
