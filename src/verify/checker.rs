//! Runs a list of checks against a sandbox, in order: command checks and judges alike, each settled into
//! passed / failed / could not run. Used by a run (its step checks and final checks) and by `ohrun
//! verify` (a regrade), which give it what it needs from their side.

use super::judge::{Evidence, JudgeRun};
use super::{Target, check};
use crate::agent::{SandboxProbe, SharedBudget};
use crate::cancel::Cancel;
use crate::job::checks::CheckSpec;
use crate::job::model::JobSpec;
use crate::money::Usd;
use crate::report::CheckResult;
use crate::settings::{self, RunSettings};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What running checks needs beside the sandbox.
pub struct Checker<'r> {
    pub spec: &'r JobSpec,
    pub settings: &'r RunSettings,
    pub probe: &'r dyn SandboxProbe,
    /// Judge logs go under here (`verify/`, `verify/fresh/`, `verify-N/`).
    pub log_dir: PathBuf,
    /// What the run spent before these checks (a judge's spend is counted on top of it).
    pub spent_before: Usd,
    /// `OHRUN_RUN_ID`, `OHRUN_ATTEMPT`, `OHRUN_TRIAL` for the commands.
    pub ids: (&'r str, u32, u32),
    /// What the batch's budget knows the run (trial) as.
    pub budget_key: &'r str,
    pub deadline: Option<Instant>,
    pub cancel: Cancel,
    pub budget: Option<&'r dyn SharedBudget>,
    /// Where the checks are told about (the run's console line).
    pub voice: &'r dyn Voice,
}

/// Lines about checks: what one found (`say`), what is going on now (`activity`).
pub trait Voice: Sync {
    fn say(&self, line: &str);
    fn activity(&self, line: &str);
}

impl Voice for crate::console::RunLine<'_> {
    fn say(&self, line: &str) {
        crate::console::RunLine::say(self, line);
    }
    fn activity(&self, line: &str) {
        crate::console::RunLine::activity(self, line);
    }
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
        self.run_all_after(self.spent_before, target, checks, step, evidence).await
    }

    /// [`Checker::run_all`] when the run has spent `spent_before` so far (a step's checks: the steps
    /// before them, and their own judges, count against `limits.max_cost`).
    pub async fn run_all_after(
        &self,
        spent_before: Usd,
        target: &Target<'_>,
        checks: &[CheckSpec],
        step: Option<usize>,
        evidence: &Evidence,
    ) -> Vec<CheckResult> {
        let mut results = Vec::new();
        for (i, spec) in checks.iter().enumerate() {
            let key = settings::check_key(step, i);
            let mut cancel = self.cancel.clone();
            if cancel.is_set() {
                break;
            }
            self.voice.activity(&format!("checking: {}", spec.name));
            let base = super::base_result(spec);
            let result = match (&spec.run, &spec.judge) {
                (Some(command), _) => {
                    let env = self.env(&key);
                    let timeout = self.timeout(spec);
                    let cmd = check::CommandCheck { name: &spec.name, run: command, env: &env, timeout };
                    check::run(target, &cmd, base, &mut cancel).await
                }
                (None, Some(judge)) => {
                    let spent_here: Usd = results.iter().map(|r: &CheckResult| r.cost).sum();
                    let judge_run = self.judge_run(step, results.len(), spent_before + spent_here, evidence);
                    super::judge::run(target, judge, judge_run, base, &mut cancel).await
                }
                (None, None) => CheckResult { error: Some("the check has neither `run` nor `judge`".into()), ..base },
            };
            let result = super::settle(result, spec);
            self.voice.say(&check_line(&result));
            results.push(result);
        }
        results
    }

    /// The check's environment: ohrun's own variables, then its `env:`.
    fn env(&self, key: &str) -> Vec<(String, String)> {
        let (id, attempt, trial) = self.ids;
        let mut env = vec![
            ("OHRUN_RUN_ID".to_string(), id.to_string()),
            ("OHRUN_ATTEMPT".to_string(), attempt.to_string()),
            ("OHRUN_TRIAL".to_string(), trial.to_string()),
        ];
        env.extend(self.settings.check_env.get(key).cloned().unwrap_or_default());
        env
    }

    /// Its own timeout. Not cut to what is left of the run's `limits.timeout`: that is the agent's time,
    /// and an agent that used it all must not turn its checks into verifier errors.
    fn timeout(&self, spec: &CheckSpec) -> Duration {
        spec.timeout.0
    }

    fn judge_run<'e>(
        &'e self,
        step: Option<usize>,
        n: usize,
        spent_before: Usd,
        evidence: &'e Evidence,
    ) -> JudgeRun<'e> {
        let key = settings::check_key(step, n);
        let mut settings = self.settings.clone();
        if let Some(llm) = self.settings.judge_llm.get(&key) {
            settings.llm = llm.clone();
        }
        settings.secrets.clear();
        JudgeRun {
            spec: self.spec,
            settings,
            evidence,
            log_dir: self.log_dir.join(judge_dir(step, n)),
            run_deadline: self.deadline,
            batch: self.budget,
            run_id: self.budget_key,
            spent_before,
            price_named: self.settings.llm.input_cost_per_token.is_some()
                && self.settings.llm.output_cost_per_token.is_some(),
            probe: self.probe,
        }
    }
}

/// Where the judge of check `n` (0-based) logs: `judge-N` for the final checks, `step-J-judge-N` for a
/// step's, so two steps' first judges never share a log.
fn judge_dir(step: Option<usize>, n: usize) -> String {
    match step {
        Some(j) => format!("step-{}-judge-{}", j + 1, n + 1),
        None => format!("judge-{}", n + 1),
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
