//! summary.json's `verification`: how many runs did the job right. Verdicts are counted apart from
//! infrastructure: a run whose verifier or sandbox failed (`error`) is in no pass rate's denominator.
//! Trials of one run id (`repeat`) give pass@k, pass^k and flakiness, and cluster in the batch's
//! interval (`crate::stats`).

use super::Verdict;
use crate::money::Usd;
use crate::stats::{self, Interval};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A check's result as summary.json lists it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct CheckBrief {
    pub name: String,
    pub passed: bool,
    pub value: Option<f64>,
    /// The check could not run (a verifier error).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
    /// False for an optional check (`required: false`): its failure only lowers the score.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub required: bool,
    /// A check that did not pass: its exit code, when it ran to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// A check that did not pass: why it could not run (the verifier error), else the explanation of its
    /// judge or its `reward.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// A check that did not pass: the last lines of its output (stderr, then stdout; redacted, at most
    /// 2,000 characters; run.json has more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

/// The characters of a check's output tail kept in summary.json (and so in junit.xml).
const BRIEF_TAIL_CHARS: usize = 2000;

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Scores {
    /// Every run (trial) of the batch with a verdict.
    pub batch: Tally,
    /// The same per job name.
    pub jobs: IndexMap<String, Tally>,
    /// Per run id with more than one trial: how its trials went.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub trials: IndexMap<String, TrialStats>,
}

/// Verdicts counted, and what they add up to.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    /// Verifier or infrastructure errors: not in the pass rate.
    pub error: u64,
    /// passed / (passed + failed), with a 95 % interval clustered by run id (trials of one run id are
    /// alike); None when nothing was verified.
    pub pass_rate: Option<Interval>,
    /// The mean score of the runs that have one.
    pub mean_score: Option<f64>,
    /// What the runs cost in all, divided by the runs that passed (None when none did); for the batch,
    /// the runs of the jobs that verify (another job's money bought no pass).
    pub cost_per_pass: Option<Usd>,
}

/// The trials of one run id.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct TrialStats {
    /// Trials with a verdict of passed or failed (errors are left out, as from every rate).
    pub trials: u64,
    pub passed: u64,
    /// Trials whose verdict is `error` (not counted above).
    pub errors: u64,
    /// Unbiased pass@k for k = 1 … trials: the chance that one of k trials passes.
    pub pass_at: IndexMap<String, f64>,
    /// pass^k for k = 1 … trials: the chance that k trials all pass.
    pub pass_all: IndexMap<String, f64>,
    pub mean_score: Option<f64>,
    /// The trials disagree: some passed, some failed.
    pub flaky: bool,
}

impl CheckBrief {
    pub fn of(c: &super::CheckResult) -> CheckBrief {
        let brief = CheckBrief {
            name: c.name.clone(),
            passed: c.passed,
            value: c.value,
            error: c.error.is_some(),
            required: c.required,
            ..CheckBrief::default()
        };
        if c.passed {
            return brief;
        }
        let output = [&c.stderr_tail, &c.stdout_tail].into_iter().filter(|t| !t.trim().is_empty());
        let output: Vec<&str> = output.map(|t| t.trim_end()).collect();
        let output = output.join("\n");
        let skip = output.chars().count().saturating_sub(BRIEF_TAIL_CHARS);
        CheckBrief {
            exit_code: c.exit_code,
            why: c.error.clone().or_else(|| c.explanation.clone()),
            output_tail: (!output.is_empty()).then(|| output.chars().skip(skip).collect()),
            ..brief
        }
    }

    /// `passed`, `failed`, `error` (it could not run), or `failed (optional)`.
    pub fn state(&self) -> &'static str {
        match (self.passed, self.error, self.required) {
            (true, _, _) => "passed",
            (false, true, _) => "error",
            (false, false, true) => "failed",
            (false, false, false) => "failed (optional)",
        }
    }
}

impl Tally {
    /// The console's words for it: `pass rate 67 % (95 % CI 30–90 %) · 4 passed, 2 failed, 1 error (not in
    /// the rate) · mean score 0.70`.
    pub fn line(&self) -> String {
        let rate = match &self.pass_rate {
            Some(r) => format!("pass rate {} (95 % CI {:.0}–{})", percent(r.estimate), r.low * 100.0, percent(r.high)),
            None => "pass rate —".to_string(),
        };
        let mut counts = format!("{} passed, {} failed", self.passed, self.failed);
        if self.error > 0 {
            counts.push_str(&format!(", {} error (not in the rate)", self.error));
        }
        let score = self.mean_score.map(|s| format!(" · mean score {s:.2}")).unwrap_or_default();
        format!("{rate} · {counts}{score}")
    }
}

/// `0.6667` as `67 %`.
pub fn percent(x: f64) -> String {
    format!("{:.0} %", x * 100.0)
}

/// What the rollup reads of a run: a summary's row (`summary::RunSummary` implements it), so this file
/// sits below summary.rs, which holds the rollup.
pub trait ScoredRun {
    fn job(&self) -> &str;
    fn id(&self) -> &str;
    fn trial(&self) -> Option<u32>;
    fn verdict(&self) -> Option<Verdict>;
    fn score(&self) -> Option<f64>;
    fn cost(&self) -> Usd;
}

impl Scores {
    /// The verification rollup of `runs`; None when no run has a verdict (the jobs verify nothing, or
    /// none has been verified yet).
    pub fn of<R: ScoredRun>(runs: &[R]) -> Option<Scores> {
        if runs.iter().all(|r| r.verdict().is_none()) {
            return None;
        }
        let mut jobs: IndexMap<String, Vec<&R>> = IndexMap::new();
        for r in runs {
            jobs.entry(r.job().to_string()).or_default().push(r);
        }
        let verifying: Vec<&R> =
            jobs.values().filter(|rs| rs.iter().any(|r| r.verdict().is_some())).flatten().copied().collect();
        let mut by_id: IndexMap<&str, Vec<&R>> = IndexMap::new();
        for r in runs.iter().filter(|r| r.trial().is_some()) {
            by_id.entry(r.id()).or_default().push(r);
        }
        Some(Scores {
            batch: tally(&verifying),
            jobs: jobs.iter().map(|(job, rs)| (job.clone(), tally(rs))).collect(),
            trials: by_id.into_iter().map(|(id, rs)| (id.to_string(), trial_stats(&rs))).collect(),
        })
    }
}

fn tally<R: ScoredRun>(runs: &[&R]) -> Tally {
    let count = |v: Verdict| runs.iter().filter(|r| r.verdict() == Some(v)).count() as u64;
    let (passed, failed, error) = (count(Verdict::Passed), count(Verdict::Failed), count(Verdict::Error));
    let mut clusters: IndexMap<&str, (u64, u64)> = IndexMap::new();
    for r in runs.iter().filter(|r| matches!(r.verdict(), Some(Verdict::Passed | Verdict::Failed))) {
        let c = clusters.entry(r.id()).or_default();
        c.0 += u64::from(r.verdict() == Some(Verdict::Passed));
        c.1 += 1;
    }
    let clusters: Vec<(u64, u64)> = clusters.into_values().collect();
    let cost: Usd = runs.iter().map(|r| r.cost()).sum();
    Tally {
        passed,
        failed,
        error,
        pass_rate: stats::clustered_pass_rate(&clusters),
        mean_score: mean_score(runs),
        cost_per_pass: (passed > 0).then(|| cost.split(passed)),
    }
}

fn trial_stats<R: ScoredRun>(trials: &[&R]) -> TrialStats {
    let verified = trials.iter().filter(|r| matches!(r.verdict(), Some(Verdict::Passed | Verdict::Failed)));
    let n = verified.clone().count() as u64;
    let c = verified.filter(|r| r.verdict() == Some(Verdict::Passed)).count() as u64;
    let ks = 1..=n;
    TrialStats {
        trials: n,
        passed: c,
        errors: trials.iter().filter(|r| r.verdict() == Some(Verdict::Error)).count() as u64,
        pass_at: ks.clone().filter_map(|k| Some((k.to_string(), stats::pass_at_k(n, c, k)?))).collect(),
        pass_all: ks.filter_map(|k| Some((k.to_string(), stats::pass_all_k(n, c, k)?))).collect(),
        mean_score: mean_score(trials),
        flaky: c > 0 && c < n,
    }
}

/// The mean score over the runs with a verdict of passed or failed — the same runs as the pass rate: an
/// `error` run is in neither, and a run that failed without a score (its agent did not finish) counts 0.
fn mean_score<R: ScoredRun>(runs: &[&R]) -> Option<f64> {
    let verified = runs.iter().filter(|r| matches!(r.verdict(), Some(Verdict::Passed | Verdict::Failed)));
    mean(verified.map(|r| r.score().unwrap_or(0.0)))
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::summary::RunSummary;

    fn run(id: &str, trial: Option<u32>, verdict: Verdict, score: f64) -> RunSummary {
        RunSummary {
            id: id.into(),
            job: "j".into(),
            trial,
            verdict: Some(verdict),
            score: Some(score),
            cost: Usd::parse("0.10").unwrap(),
            ..RunSummary::default()
        }
    }

    #[test]
    fn a_flaky_run_of_five_trials_has_the_closed_form_pass_at_k() {
        use Verdict::*;
        let runs: Vec<RunSummary> = [Passed, Failed, Passed, Passed, Failed]
            .iter()
            .enumerate()
            .map(|(i, v)| run("r", Some(i as u32 + 1), *v, if *v == Passed { 1.0 } else { 0.0 }))
            .collect();
        let s = Scores::of(&runs).unwrap();
        let t = &s.trials["r"];
        assert_eq!((t.trials, t.passed, t.flaky), (5, 3, true));
        assert!((t.pass_at["1"] - 0.6).abs() < 1e-12 && (t.pass_at["2"] - 0.9).abs() < 1e-12);
        assert_eq!(t.pass_at["3"], 1.0);
        assert!((t.pass_all["2"] - 0.3).abs() < 1e-12 && (t.pass_all["3"] - 0.1).abs() < 1e-12);
        assert_eq!(s.batch.cost_per_pass, Some(Usd::parse("0.166666666").unwrap()));
    }

    #[test]
    fn a_check_that_did_not_pass_keeps_why_and_the_end_of_its_output() {
        let c = crate::report::CheckResult {
            name: "t".into(),
            required: true,
            exit_code: Some(1),
            stdout_tail: "x".repeat(3000),
            stderr_tail: "boom\n".into(),
            explanation: Some("no".into()),
            ..Default::default()
        };
        let b = CheckBrief::of(&c);
        assert_eq!((b.state(), b.exit_code, b.why.as_deref()), ("failed", Some(1), Some("no")));
        let tail = b.output_tail.unwrap();
        assert_eq!(tail.chars().count(), BRIEF_TAIL_CHARS, "the end of it");
        assert!(tail.chars().all(|ch| ch == 'x'), "stderr first, then stdout, whose end is kept");
        let short = CheckBrief::of(&crate::report::CheckResult { stdout_tail: "out\n".into(), ..c.clone() });
        assert_eq!(short.output_tail.as_deref(), Some("boom\nout"));
        let passed = CheckBrief::of(&crate::report::CheckResult { passed: true, ..c });
        assert_eq!((passed.why, passed.output_tail, passed.exit_code), (None, None, None));
        let tally = Tally { passed: 2, failed: 1, error: 1, mean_score: Some(0.7), ..Tally::default() };
        assert_eq!(tally.line(), "pass rate — · 2 passed, 1 failed, 1 error (not in the rate) · mean score 0.70");
    }

    #[test]
    fn the_cost_per_pass_of_a_batch_leaves_out_jobs_that_verify_nothing() {
        let mut other = run("x", None, Verdict::Passed, 1.0);
        (other.job, other.verdict, other.score) = ("unverified".into(), None, None);
        let s =
            Scores::of(&[run("a", None, Verdict::Passed, 1.0), run("b", None, Verdict::Failed, 0.0), other]).unwrap();
        assert_eq!(s.batch.cost_per_pass, Some(Usd::parse("0.2").unwrap()));
        assert_eq!(s.jobs["unverified"].cost_per_pass, None);
    }

    #[test]
    fn errors_are_counted_apart_and_in_no_rate() {
        use Verdict::*;
        let runs = [run("a", None, Passed, 1.0), run("b", None, Failed, 0.5), run("c", None, Error, 0.0)];
        let s = Scores::of(&runs).unwrap();
        assert_eq!((s.batch.passed, s.batch.failed, s.batch.error), (1, 1, 1));
        assert_eq!(s.batch.pass_rate.unwrap().estimate, 0.5);
        assert!(s.trials.is_empty());
        assert_eq!(Scores::of(&[RunSummary::default()]), None);
    }
}
