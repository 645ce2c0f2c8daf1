//! The runner's side of verification (`crate::verify` has the checks themselves): the commit a run
//! starts from, its final patch, the checks after each step and after the last, in the run's own sandbox
//! or in a fresh one, and how the verdict becomes the run's outcome — `failed` (end reason `checks`,
//! exit 1) or a verifier error (infrastructure, exit 3, retried like any).

use super::attempt::Run;
use crate::agent::patch;
use crate::agent::steps::StepChecks;
use crate::agent::{BoxFuture, SandboxProbe};
use crate::backend::{Ready, Released};
use crate::error::Failure;
use crate::job::checks::{OnFail, VerifyMode, VerifySpec};
use crate::job::model::Step;
use crate::money::Usd;
use crate::report::redact::first_line;
use crate::report::{CheckResult, OutcomeClass, RunReport, StepReport, Verdict, Verification};
use crate::settings::RunSettings;
use crate::verify::judge::Evidence;
use crate::verify::{self, Checker, Target, fresh};
use std::time::Instant;

impl<'r> Run<'r> {
    /// A checker for this attempt: `log_dir` under its directory, `spent_before` what the run spent so far.
    pub(super) fn checker(
        &'r self,
        settings: &'r RunSettings,
        probe: &'r dyn SandboxProbe,
        log_dir: &str,
        spent_before: Usd,
    ) -> Checker<'r> {
        let a = self.attempt;
        Checker {
            spec: &a.planned.spec,
            settings,
            probe,
            log_dir: a.dir.join(log_dir),
            spent_before,
            ids: (&a.planned.id, a.number, a.trial.unwrap_or(1)),
            budget_key: a.label,
            deadline: self.run_deadline,
            cancel: a.signals.cancel(),
            budget: a.budget.map(|b| b as &dyn crate::agent::SharedBudget),
            voice: a.line,
        }
    }
}

/// The checks of each step, right after it (`steps[].checks`).
pub(super) struct StepChecker<'r> {
    pub checker: Checker<'r>,
    pub target: Target<'r>,
    pub attempt_dir: &'r std::path::Path,
    /// What the run has spent so far: the steps that ended, and the judges of their checks.
    pub spent: std::sync::Mutex<Usd>,
}

impl StepChecks for StepChecker<'_> {
    fn after<'a>(&'a self, step: &'a Step, report: &'a StepReport) -> BoxFuture<'a, (Vec<CheckResult>, bool)> {
        Box::pin(async move {
            let evidence = Evidence { final_message: report.final_message.clone(), diff: step_diff(self, report) };
            let before = *self.spent.lock().unwrap_or_else(|p| p.into_inner()) + report.cost;
            let at = Some(report.index - 1);
            let results = self.checker.run_all_after(before, &self.target, &step.checks, at, &evidence).await;
            let judged: Usd = results.iter().map(|r| r.cost).sum();
            *self.spent.lock().unwrap_or_else(|p| p.into_inner()) = before + judged;
            let stop = results
                .iter()
                .zip(&step.checks)
                .any(|(r, spec)| r.required && (r.error.is_some() || (!r.passed && spec.on_fail == OnFail::Stop)));
            (results, stop)
        })
    }
}

fn step_diff(s: &StepChecker<'_>, report: &StepReport) -> String {
    let file = report.diff.as_ref().and_then(|d| d.file.as_ref());
    file.and_then(|f| std::fs::read_to_string(s.attempt_dir.join(f)).ok()).unwrap_or_default()
}

impl Run<'_> {
    /// The commit the working directory's repository is at (before setup, or after it when setup made
    /// the repository): what the final patch is taken against.
    pub(super) async fn start_commit(&self, ready: &Ready) -> Option<String> {
        patch::head(&ready.client, &ready.working_dir, &mut self.attempt.signals.cancel()).await
    }

    /// After the steps, while the sandbox is still there: the final patch, then (when the job verifies)
    /// the final checks, the verdict and score, and the run's result with them.
    pub(super) async fn after_steps(
        &self,
        (ready, probe, settings): (&Ready, &dyn SandboxProbe, &RunSettings),
        (base, snapshots): (Option<&str>, Option<&crate::agent::diff::Snapshots<'_>>),
        report: &mut RunReport,
        result: Result<(), Failure>,
    ) -> Result<(), Failure> {
        let mut cancel = self.attempt.signals.cancel();
        let lost = report.steps.iter().any(|s| s.end_reason == crate::report::EndReason::Lost);
        if !cancel.is_set() && !lost {
            self.attempt.line.activity("taking the final patch");
            let at = (base, snapshots.map(|s| s.dir_name()));
            // Taken with the last step's snapshot when it could be; else now.
            let info = match snapshots.and_then(|s| s.folded_patch()) {
                Some(f) => patch::finish(&ready.client, at, (Ok(f.out), f.inline), &self.attempt.dir).await,
                None => {
                    let (dir, deadline) = (&self.attempt.dir, self.run_deadline);
                    patch::capture(&ready.client, &ready.working_dir, base, dir, deadline, &mut cancel).await
                }
            };
            report.final_patch = Some(info);
            self.checkpoint.save(report);
        }
        let step_checks: Vec<CheckResult> = report.steps.iter().flat_map(|s| s.checks.clone()).collect();
        let spec = self.spec().verify.as_ref();
        if spec.is_none() && step_checks.is_empty() {
            return result;
        }
        let mode = spec.map_or(VerifyMode::Shared, |v| v.mode);
        let mut v = Verification { mode: mode_name(mode).into(), ..Verification::default() };
        let started = Instant::now();
        // A step's required check failed with `on_fail: stop`: the run ended there, unfinished.
        let stopped_at_step = report.steps.iter().any(|s| s.stopped_by_checks);
        let finished = result.is_ok();
        let result = match (&result, spec) {
            (Err(f), _) => {
                not_verified(&mut v, f.class, &format!("the run did not finish: {}", first_line(&f.message)));
                v.checks = step_checks.clone();
                result
            }
            (Ok(()), Some(spec)) if !stopped_at_step => {
                let finals = match mode {
                    VerifyMode::Shared => self.verify_shared(spec, (ready, probe, settings), report, &mut v).await,
                    VerifyMode::Fresh => self.verify_fresh(spec, settings, report, &mut v).await,
                };
                v.checks = step_checks.into_iter().chain(finals).collect();
                self.settle(&mut v)
            }
            (Ok(()), _) => {
                v.checks = step_checks;
                self.settle(&mut v)
            }
        };
        // Stopped while checking: checks that never ran (or were cut short) prove nothing, so there is
        // no verdict, whatever the checks that were cut reported.
        let result = if self.attempt.signals.interrupted() && finished {
            not_verified(&mut v, OutcomeClass::Interrupted, "interrupted while verifying");
            Err(Failure::new(OutcomeClass::Interrupted, "interrupted while verifying"))
        } else {
            result
        };
        verify::tell_setup_errors(&v.checks, self.attempt.line);
        add_judges_to_totals(&mut v, report);
        v.duration_ms = Some(started.elapsed().as_millis() as u64);
        report.verification = Some(v);
        self.checkpoint.save(report);
        result
    }

    /// A run whose setup failed never reached the agent: when its job verifies, it gets the verdict
    /// `error` (not a failed task: the task was never tried), so no pass rate and no comparison counts it.
    pub(super) fn setup_failed(&self, report: &mut RunReport, f: &Failure) {
        let verifies = self.spec().verify.is_some() || self.spec().steps.iter().any(|s| !s.checks.is_empty());
        if !verifies || !matches!(f.class, OutcomeClass::Failed | OutcomeClass::Infrastructure) {
            return;
        }
        let why = &f.message;
        let mode = self.spec().verify.as_ref().map_or(VerifyMode::Shared, |v| v.mode);
        let mut v = Verification { mode: mode_name(mode).into(), ..Verification::default() };
        v.verdict = Some(Verdict::Error);
        v.not_verified = Some(format!("setup failed: {}", first_line(why)));
        report.verification = Some(v);
    }

    /// The verdict and score from the checks, and the run's result with them.
    fn settle(&self, v: &mut Verification) -> Result<(), Failure> {
        let (verdict, score) = verify::verdict(&v.checks);
        (v.verdict, v.score) = (Some(verdict), score);
        let names = |pick: &dyn Fn(&CheckResult) -> bool| {
            v.checks.iter().filter(|c| c.required && pick(c)).map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        };
        match verdict {
            Verdict::Passed => Ok(()),
            Verdict::Failed => {
                Err(Failure::new(OutcomeClass::Failed, format!("checks failed: {}", names(&|c| !c.passed))))
            }
            Verdict::Error => {
                let why = v.checks.iter().find(|c| c.required && c.error.is_some());
                let why =
                    why.map(|c| format!("{}: {}", c.name, c.error.as_deref().unwrap_or_default())).unwrap_or_default();
                Err(Failure::new(OutcomeClass::Infrastructure, format!("a check could not run ({why})"))
                    .hint("a verifier error is the infrastructure's, not the agent's: the run is retried when `retries` allow")
                    .retryable())
            }
        }
    }

    /// In the run's own sandbox: hidden files copied in now, then the checks.
    async fn verify_shared(
        &self,
        spec: &VerifySpec,
        (ready, probe, settings): (&Ready, &dyn SandboxProbe, &RunSettings),
        report: &RunReport,
        v: &mut Verification,
    ) -> Vec<CheckResult> {
        let target = Target { client: &ready.client, working_dir: &ready.working_dir };
        v.notices = verify::notices(&target, &mut self.attempt.signals.cancel()).await;
        let checker = self.checker(settings, probe, "verify", report.totals.cost);
        let evidence = verify::evidence(&self.attempt.dir, report);
        verify::check_in(&target, spec, &self.job_dir, &checker, &evidence, &mut v.notices).await
    }

    /// In a new sandbox of the same kind and settings: setup again, the run's final patch applied onto the
    /// commit it started from, hidden files copied in, the checks; then the sandbox is released.
    async fn verify_fresh(
        &self,
        spec: &VerifySpec,
        settings: &RunSettings,
        report: &RunReport,
        v: &mut Verification,
    ) -> Vec<CheckResult> {
        let patch = match usable_patch(report).map(|f| std::fs::read(self.attempt.dir.join(f))) {
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => return vec![verify::setup_error("fresh sandbox", format!("cannot read final.patch: {e}"))],
            None => return vec![unusable_patch(report)],
        };
        let base: fresh::Base =
            report.final_patch.as_ref().map(|p| (p.base_commit.clone(), p.base_tree.clone())).unwrap_or_default();
        let dir = self.attempt.dir.join("verify").join("fresh");
        let ledger = crate::ledger::Slot::new(
            self.attempt.ledger,
            &format!("{}#verify", self.attempt.label),
            &dir,
            Some(self.attempt.batch_dir),
        )
        .watched_by(self.attempt.signals.watcher());
        let say = |line: &str| self.say(line);
        let place = fresh::Place {
            run_id: &self.attempt.planned.id,
            job: &self.spec().name,
            dir: &dir,
            hide_env: &settings.secret_names,
            deadline: self.run_deadline,
            cancel: self.attempt.signals.cancel(),
            progress: &say,
            ledger: &ledger,
            relocate: fresh::relocates(&self.spec().sandbox),
        };
        let mut backend = settings.sandbox.clone().backend();
        self.attempt.line.activity("provisioning a fresh sandbox to verify in");
        let ready = fresh::provision(&mut *backend, &place).await;
        let results = match &ready {
            Ok(ready) => {
                let target = Target { client: &ready.client, working_dir: &ready.working_dir };
                let checker = self.checker(settings, &*backend, "verify/fresh", report.totals.cost);
                let evidence = verify::evidence(&self.attempt.dir, report);
                let mut cancel = self.attempt.signals.cancel();
                let results = match fresh::prepare(&target, settings, Some(&base), &patch, &mut cancel).await {
                    Ok(()) => verify::check_in(&target, spec, &self.job_dir, &checker, &evidence, &mut v.notices).await,
                    Err(e) => vec![verify::setup_error("fresh sandbox", e)],
                };
                if place.relocate {
                    fresh::remove_dir(&target).await;
                }
                results
            }
            Err(e) => vec![verify::setup_error("fresh sandbox", format!("it could not be provisioned: {}", e.message))],
        };
        let keep = self.spec().cleanup == crate::job::model::CleanupPolicy::Never;
        let released = backend.release(keep).await;
        if !matches!(released, Released::Failed(_)) {
            ledger.close(released.disposition());
        }
        v.sandbox = Some(crate::report::verdict::VerifySandbox {
            kind: self.spec().sandbox.kind().to_string(),
            id: backend.record().id,
            working_dir: ready.as_ref().ok().map(|r| r.working_dir.clone()),
            disposition: released.disposition().to_string(),
        });
        results
    }
}

/// Why there is no patch to verify in a fresh sandbox, as a check. The run started in a repository and
/// its agent left one whose patch cannot be taken or used as is (it removed `.git`, wrote more than the
/// cap, wrote a secret into a file): that is the agent's work failing to be what it must, a failed task.
/// No repository to begin with (the job's own setup), or no patch taken at all (the server was lost):
/// the verifier could not run, an error.
fn unusable_patch(report: &RunReport) -> CheckResult {
    let Some(p) = &report.final_patch else {
        return verify::setup_error("fresh sandbox", "no final patch was taken to verify in a fresh sandbox".into());
    };
    let why = p.error.clone().unwrap_or_else(|| "it had a secret masked (a file the agent wrote holds one)".into());
    if p.base_commit.is_none() {
        return verify::setup_error(
            "fresh sandbox",
            format!("fresh mode needs the working directory to be a git repository with a commit: {why}"),
        );
    }
    CheckResult {
        name: "final patch".into(),
        kind: "setup".into(),
        required: true,
        value: Some(0.0),
        explanation: Some(format!("the agent's work cannot be carried into a fresh sandbox: {why}")),
        ..CheckResult::default()
    }
}

/// The final patch on disk, when there is one that applies as taken (not cut, not masked).
fn usable_patch(report: &RunReport) -> Option<std::path::PathBuf> {
    let p = report.final_patch.as_ref()?;
    let file = p.file.as_ref().filter(|_| p.error.is_none() && !p.redacted)?;
    Some(std::path::PathBuf::from(file))
}

fn mode_name(mode: VerifyMode) -> &'static str {
    match mode {
        VerifyMode::Shared => "shared",
        VerifyMode::Fresh => "fresh",
    }
}

/// A run that was not verified: `why`, and its verdict — failed (score 0) for the agent's own failure,
/// error for the infrastructure's, none for a run stopped by the user or its budget.
fn not_verified(v: &mut Verification, class: OutcomeClass, why: &str) {
    (v.verdict, v.score) = match class {
        OutcomeClass::Failed => (Some(Verdict::Failed), Some(0.0)),
        OutcomeClass::Infrastructure | OutcomeClass::LeftBehind => (Some(Verdict::Error), None),
        _ => (None, None),
    };
    v.not_verified = Some(why.to_string());
}

/// The judges' calls are the run's calls: their cost, tokens and number join the run's totals (under
/// the usage id `judge`), as they already did the batch's budget.
fn add_judges_to_totals(v: &mut Verification, report: &mut RunReport) {
    v.cost = v.checks.iter().map(|c| c.cost).sum();
    let tokens = v.checks.iter().fold(crate::report::Tokens::default(), |t, c| t.plus(c.tokens));
    let calls: u64 = v.checks.iter().map(|c| c.llm_calls).sum();
    if v.cost.is_zero() && calls == 0 {
        return;
    }
    let t = &mut report.totals;
    (t.cost, t.tokens, t.llm_calls) = (t.cost + v.cost, t.tokens.plus(tokens), t.llm_calls + calls);
    *t.cost_by_usage.entry("judge".into()).or_default() += v.cost;
}
