//! The runner's side of verification (`crate::verify` has the checks themselves): the commit a run
//! starts from, its final patch, the checks after each step and after the last, in the run's own sandbox
//! or in a fresh one, and how the verdict becomes the run's outcome — `failed` (end reason `checks`,
//! exit 1) or a verifier error (infrastructure, exit 3, retried like any).

use super::run::Run;
use crate::agent::conversation::StepChecks;
use crate::agent::patch;
use crate::agent::setup::{run_command, shell_quote};
use crate::agent::{BoxFuture, SandboxProbe};
use crate::backend::{self, Backend, Ready, Released};
use crate::cancel::Cancel;
use crate::error::Failure;
use crate::job::checks::{CheckSpec, OnFail, VerifyMode, VerifySpec};
use crate::job::model::Step;
use crate::money::Usd;
use crate::report::{CheckResult, OutcomeClass, RunReport, StepReport, Verdict, Verification};
use crate::settings::{self, RunSettings};
use crate::verify::judge::{Evidence, JudgeRun};
use crate::verify::{self, Target, check, files};
use std::time::{Duration, Instant};

/// What running checks needs beside the sandbox.
pub(super) struct Checker<'r> {
    pub run: &'r Run<'r>,
    pub settings: &'r RunSettings,
    pub probe: &'r dyn SandboxProbe,
    /// Judge logs go under here (`verify/`, or `verify/fresh/`).
    pub log_dir: std::path::PathBuf,
    /// What the run spent before these checks (a judge's spend is counted on top of it).
    pub spent_before: Usd,
}

impl Checker<'_> {
    /// Runs `checks` (at `step`, 0-based, or the final ones) against `target`, in order.
    pub async fn run_all(
        &self,
        target: &Target<'_>,
        checks: &[CheckSpec],
        step: Option<usize>,
        evidence: &Evidence,
    ) -> Vec<CheckResult> {
        let mut results = Vec::new();
        for (i, spec) in checks.iter().enumerate() {
            let key = settings::check_key(step, i);
            let mut cancel = self.run.attempt.signals.cancel();
            if cancel.is_set() {
                break;
            }
            self.run.attempt.line.activity(&format!("checking: {}", spec.name));
            let base = verify::base_result(spec);
            let result = match (&spec.run, &spec.judge) {
                (Some(command), _) => {
                    let env = self.env(&key);
                    let cmd =
                        check::CommandCheck { name: &spec.name, run: command, env: &env, timeout: self.timeout(spec) };
                    check::run(target, &cmd, base, &mut cancel).await
                }
                (None, Some(judge)) => {
                    let spent_here = results.iter().map(|r: &CheckResult| r.cost).sum();
                    let judge_run = self.judge_run(&key, results.len(), spent_here, evidence);
                    verify::judge::run(target, judge, judge_run, base, &mut cancel).await
                }
                (None, None) => CheckResult { error: Some("the check has neither `run` nor `judge`".into()), ..base },
            };
            let result = verify::settle(result, spec);
            self.run.say(&check_line(&result));
            results.push(result);
        }
        results
    }

    /// The check's environment: ohrun's own variables, then its `env:`.
    fn env(&self, key: &str) -> Vec<(String, String)> {
        let a = self.run.attempt;
        let mut env = super::trials::ohrun_env(&a.planned.id, a.trial, a.number);
        env.extend(self.settings.check_env.get(key).cloned().unwrap_or_default());
        env
    }

    /// Its own timeout, within the run's.
    fn timeout(&self, spec: &CheckSpec) -> Duration {
        let left = self.run.run_deadline.map(|d| d.saturating_duration_since(Instant::now()));
        left.map_or(spec.timeout.0, |l| spec.timeout.0.min(l.max(Duration::from_secs(1))))
    }

    fn judge_run<'e>(&'e self, key: &str, n: usize, spent_here: Usd, evidence: &'e Evidence) -> JudgeRun<'e> {
        let mut settings = self.settings.clone();
        if let Some(llm) = self.settings.judge_llm.get(key) {
            settings.llm = llm.clone();
        }
        settings.secrets.clear();
        let a = self.run.attempt;
        JudgeRun {
            spec: &a.planned.spec,
            settings,
            evidence,
            log_dir: self.log_dir.join(format!("judge-{}", n + 1)),
            run_deadline: self.run.run_deadline,
            batch: a.budget.map(|b| b as &dyn crate::agent::SharedBudget),
            run_id: a.label,
            spent_before: self.spent_before + spent_here,
            price_named: self.settings.llm.input_cost_per_token.is_some()
                && self.settings.llm.output_cost_per_token.is_some(),
            probe: self.probe,
        }
    }
}

/// `check <name>: passed (1.00)` for the console.
fn check_line(r: &CheckResult) -> String {
    let value = r.value.map(|v| format!(" ({v:.2})")).unwrap_or_default();
    match &r.error {
        Some(e) => format!("check {}: could not run — {e}", r.name),
        None if r.passed => format!("check {}: passed{value}", r.name),
        None => format!("check {}: FAILED{value}", r.name),
    }
}

/// The checks of each step, right after it (`steps[].checks`).
pub(super) struct StepChecker<'r> {
    pub checker: Checker<'r>,
    pub target: Target<'r>,
}

impl StepChecks for StepChecker<'_> {
    fn after<'a>(&'a self, step: &'a Step, report: &'a StepReport) -> BoxFuture<'a, (Vec<CheckResult>, bool)> {
        Box::pin(async move {
            let evidence = Evidence { final_message: report.final_message.clone(), diff: step_diff(self, report) };
            let results = self.checker.run_all(&self.target, &step.checks, Some(report.index - 1), &evidence).await;
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
    file.and_then(|f| std::fs::read_to_string(s.checker.run.attempt.dir.join(f)).ok()).unwrap_or_default()
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
        base: Option<&str>,
        report: &mut RunReport,
        result: Result<(), Failure>,
    ) -> Result<(), Failure> {
        let mut cancel = self.attempt.signals.cancel();
        let lost = report.steps.iter().any(|s| s.end_reason == crate::report::EndReason::Lost);
        if !cancel.is_set() && !lost {
            self.attempt.line.activity("taking the final patch");
            let info = patch::capture(
                &ready.client,
                &ready.working_dir,
                base,
                &self.attempt.dir,
                self.run_deadline,
                &mut cancel,
            )
            .await;
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
        let stopped_at_step =
            report.steps.iter().any(|s| s.checks.iter().any(|c| c.required && (!c.passed || c.error.is_some())));
        let result = match (&result, spec) {
            (Err(f), _) => {
                v.verdict = not_verified_verdict(f.class);
                v.not_verified = Some(format!("the run did not finish: {}", f.message.lines().next().unwrap_or("")));
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
        v.cost = v.checks.iter().map(|c| c.cost).sum();
        v.duration_ms = Some(started.elapsed().as_millis() as u64);
        report.totals.cost += v.cost;
        report.verification = Some(v);
        self.checkpoint.save(report);
        result
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
        let mut cancel = self.attempt.signals.cancel();
        v.notices = verify::notices(&target, &mut cancel).await;
        if let Err(e) = self.copy_files(spec, &target, v).await {
            return vec![setup_error("verify.files", e)];
        }
        let checker = Checker {
            run: self,
            settings,
            probe,
            log_dir: self.attempt.dir.join("verify"),
            spent_before: report.totals.cost,
        };
        checker.run_all(&target, &spec.checks, None, &self.evidence(report)).await
    }

    async fn copy_files(&self, spec: &VerifySpec, target: &Target<'_>, v: &mut Verification) -> Result<(), String> {
        let Some(given) = &spec.files else { return Ok(()) };
        let local = files::local_files(&self.job_dir, given)?;
        let replaced = files::copy_in(target, &local, &mut self.attempt.signals.cancel()).await?;
        v.notices.extend(
            replaced
                .into_iter()
                .map(|p| format!("{p} was already in the working directory before the hidden files arrived; replaced")),
        );
        Ok(())
    }

    /// What a judge is shown: the final patch (else the step diffs) and the agent's last message.
    fn evidence(&self, report: &RunReport) -> Evidence {
        let read = |f: &str| std::fs::read_to_string(self.attempt.dir.join(f)).ok();
        let diff = report.final_patch.as_ref().and_then(|p| p.file.as_deref()).and_then(read).unwrap_or_else(|| {
            report.steps.iter().filter_map(|s| s.diff.as_ref()?.file.as_deref()).filter_map(read).collect()
        });
        let final_message = report.steps.iter().rev().find_map(|s| s.final_message.clone());
        Evidence { final_message, diff }
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
        let Some(patch_file) = usable_patch(report).map(|f| self.attempt.dir.join(f)) else {
            let why = report
                .final_patch
                .as_ref()
                .and_then(|p| p.error.clone())
                .unwrap_or_else(|| "no final patch was taken".into());
            return vec![setup_error("fresh sandbox", format!("nothing to verify in a fresh sandbox: {why}"))];
        };
        let dir = self.attempt.dir.join("verify").join("fresh");
        let ledger =
            crate::ledger::Slot::new(&format!("{}#verify", self.attempt.label), &dir, Some(self.attempt.batch_dir));
        let mut backend = settings.sandbox.clone().backend();
        self.attempt.line.activity("provisioning a fresh sandbox to verify in");
        let ready = self.provision_for_verify(&mut *backend, &settings.secret_names, &dir, &ledger).await;
        let results = match &ready {
            Ok(ready) => {
                let base = report.final_patch.as_ref().map(|p| (p.base_commit.clone(), p.base_tree.clone()));
                self.check_fresh(spec, ready, &*backend, settings, base, &patch_file, report, v).await
            }
            Err(e) => {
                vec![setup_error("fresh sandbox", format!("the fresh sandbox could not be provisioned: {}", e.message))]
            }
        };
        let keep = self.spec().cleanup == crate::job::model::CleanupPolicy::Never;
        let released = backend.release(keep).await;
        let record = backend.record();
        if !matches!(released, Released::Failed(_)) {
            ledger.close(released.disposition());
        }
        v.sandbox = Some(crate::report::verdict::VerifySandbox {
            kind: self.spec().sandbox.kind().to_string(),
            id: record.id,
            working_dir: ready.as_ref().ok().map(|r| r.working_dir.clone()),
            disposition: released.disposition().to_string(),
        });
        results
    }

    async fn provision_for_verify(
        &self,
        backend: &mut dyn Backend,
        hide_env: &[String],
        dir: &std::path::Path,
        ledger: &crate::ledger::Slot,
    ) -> Result<Ready, backend::Error> {
        crate::report::writer::create_dir(dir)
            .map_err(|e| backend::Error::failed(format!("cannot create {}: {e}", dir.display())))?;
        let progress = |line: &str| self.say(line);
        let recorded = |_| {};
        let ctx = backend::Context {
            run_id: &self.attempt.planned.id,
            job: &self.spec().name,
            report_dir: dir,
            hide_env,
            run_deadline: self.run_deadline,
            cancel: self.attempt.signals.cancel(),
            progress: &progress,
            ledger,
            recorded: &recorded,
        };
        let mut ready = backend.provision(&ctx).await?;
        // A remote server is the same server: the fresh working directory is a new one beside the run's.
        if matches!(self.spec().sandbox, crate::job::model::Sandbox::Remote(_)) {
            let short = uuid::Uuid::new_v4().simple().to_string();
            ready.working_dir = format!("{}.ohrun-verify-{}", ready.working_dir.trim_end_matches('/'), &short[..8]);
        }
        Ok(ready)
    }

    #[allow(clippy::too_many_arguments)]
    async fn check_fresh(
        &self,
        spec: &VerifySpec,
        ready: &Ready,
        probe: &dyn SandboxProbe,
        settings: &RunSettings,
        base: Option<(Option<String>, Option<String>)>,
        patch_file: &std::path::Path,
        report: &RunReport,
        v: &mut Verification,
    ) -> Vec<CheckResult> {
        let target = Target { client: &ready.client, working_dir: &ready.working_dir };
        if let Err(e) = self.prepare_fresh(&target, settings, base, patch_file).await {
            return vec![setup_error("fresh sandbox", e)];
        }
        if let Err(e) = self.copy_files(spec, &target, v).await {
            return vec![setup_error("verify.files", e)];
        }
        let checker = Checker {
            run: self,
            settings,
            probe,
            log_dir: self.attempt.dir.join("verify").join("fresh"),
            spent_before: report.totals.cost,
        };
        let results = checker.run_all(&target, &spec.checks, None, &self.evidence(report)).await;
        if matches!(self.spec().sandbox, crate::job::model::Sandbox::Remote(_)) {
            let rm = format!("rm -rf {}", shell_quote(&ready.working_dir));
            let _ = run_command(&ready.client, &rm, "/", Duration::from_secs(60), &mut Cancel::never()).await;
        }
        results
    }

    /// The fresh working directory made, set up, at the base commit, with the final patch applied.
    async fn prepare_fresh(
        &self,
        target: &Target<'_>,
        settings: &RunSettings,
        base: Option<(Option<String>, Option<String>)>,
        patch_file: &std::path::Path,
    ) -> Result<(), String> {
        let mut cancel = self.attempt.signals.cancel();
        let wd = target.working_dir;
        let mkdir = format!("mkdir -p {}", shell_quote(wd));
        run_command(target.client, &mkdir, "/", Duration::from_secs(60), &mut cancel)
            .await
            .map_err(|(_, e)| e.to_string())?;
        let commands = settings.setup.clone();
        let done = crate::agent::setup::run_setup(target.client, &commands, wd, &cancel, &mut |_| {}).await;
        if let Some(e) = done.error {
            return Err(format!("setup in the fresh sandbox failed: {e}"));
        }
        if let Some(f) = done.failed() {
            return Err(format!("setup command `{}` exited with {} in the fresh sandbox", f.command, f.exit_code));
        }
        if let Some((Some(base), tree)) = base {
            // At the base commit; else checked out at it; else a setup from scratch that made the same
            // tree under another commit is the same base.
            let checkout = format!(
                "unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE; [ \"$(git rev-parse -q --verify HEAD)\" = {b} ] || \
                 {{ git cat-file -e {b}^{{commit}} 2>/dev/null && git checkout -q --detach {b}; }} || \
                 {{ [ -n {t} ] && [ \"$(git rev-parse -q --verify 'HEAD^{{tree}}')\" = {t} ]; }} || \
                 {{ echo \"the base commit is not in this repository and HEAD's tree differs\" >&2; exit 1; }}",
                b = shell_quote(&base),
                t = shell_quote(tree.as_deref().unwrap_or(""))
            );
            let out = run_command(target.client, &checkout, wd, Duration::from_secs(120), &mut cancel)
                .await
                .map_err(|(_, e)| e.to_string())?;
            if out.exit_code != 0 {
                return Err(format!(
                    "the fresh sandbox cannot be put at the base commit {base}: {}",
                    out.stderr.trim()
                ));
            }
        }
        let bytes = std::fs::read(patch_file).map_err(|e| format!("cannot read {}: {e}", patch_file.display()))?;
        if bytes.is_empty() {
            return Ok(());
        }
        let remote = format!("/tmp/ohrun-final-{}.patch", uuid::Uuid::new_v4().simple());
        target.client.upload_file(&remote, bytes).await.map_err(|e| format!("cannot copy the final patch in: {e}"))?;
        let apply =
            format!("git apply --binary --whitespace=nowarn {r}; s=$?; rm -f {r}; exit $s", r = shell_quote(&remote));
        let out = run_command(target.client, &apply, wd, Duration::from_secs(300), &mut cancel)
            .await
            .map_err(|(_, e)| e.to_string())?;
        if out.exit_code != 0 {
            return Err(format!("the final patch does not apply in the fresh sandbox: {}", out.stderr.trim()));
        }
        Ok(())
    }
}

/// The final patch on disk, when there is one that applies as taken (not cut, not masked).
fn usable_patch(report: &RunReport) -> Option<std::path::PathBuf> {
    let p = report.final_patch.as_ref()?;
    let file = p.file.as_ref().filter(|_| p.error.is_none() && !p.redacted)?;
    Some(std::path::PathBuf::from(file))
}

/// A check-shaped verifier error for what failed before any check could run.
fn setup_error(name: &str, error: String) -> CheckResult {
    CheckResult {
        name: name.into(),
        kind: "setup".into(),
        required: true,
        weight: 0.0,
        error: Some(error),
        ..CheckResult::default()
    }
}

fn mode_name(mode: VerifyMode) -> &'static str {
    match mode {
        VerifyMode::Shared => "shared",
        VerifyMode::Fresh => "fresh",
    }
}

/// The verdict of a run whose agent did not finish: failed for the agent's own failure, error for the
/// infrastructure's; none for a run stopped by the user or its budget.
fn not_verified_verdict(class: OutcomeClass) -> Option<Verdict> {
    match class {
        OutcomeClass::Failed => Some(Verdict::Failed),
        OutcomeClass::Infrastructure | OutcomeClass::LeftBehind => Some(Verdict::Error),
        _ => None,
    }
}
