//! Matching the runs of two batches by (run id, trial) and classifying each pair.
//!
//! A run counts as passed or failed by its verdict; a run without one (its job verifies nothing) by its
//! status: succeeded as passed, failed as failed. Anything else — a verdict `error`, or no verdict and a
//! status such as errored, budget, interrupted or pending — says nothing about the agent's work, so the
//! pair is not comparable: infrastructure is never a regression.

use super::Error;
use crate::money::Usd;
use crate::report::Verdict;
use crate::report::scores::CheckBrief;
use crate::report::summary::{RunStatus, RunSummary, Summary};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How a (run id, trial) fared from BASE to NEW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Passed in BASE, failed in NEW.
    Regressed,
    /// Failed in BASE, passed in NEW.
    Fixed,
    /// Either side has no pass or fail (an error, a run that did not end).
    NotComparable,
    OnlyInBase,
    OnlyInNew,
    BothFailed,
    BothPassed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Regressed => "regressed",
            Change::Fixed => "fixed",
            Change::NotComparable => "not_comparable",
            Change::OnlyInBase => "only_in_base",
            Change::OnlyInNew => "only_in_new",
            Change::BothFailed => "both_failed",
            Change::BothPassed => "both_passed",
        }
    }

    /// A pair with a pass or fail on both sides: one of McNemar's four cells.
    pub fn is_comparable(self) -> bool {
        matches!(self, Change::Regressed | Change::Fixed | Change::BothFailed | Change::BothPassed)
    }

    pub fn base_passed(self) -> bool {
        matches!(self, Change::Regressed | Change::BothPassed)
    }

    pub fn new_passed(self) -> bool {
        matches!(self, Change::Fixed | Change::BothPassed)
    }

    fn of(base: bool, new: bool) -> Change {
        match (base, new) {
            (true, true) => Change::BothPassed,
            (true, false) => Change::Regressed,
            (false, true) => Change::Fixed,
            (false, false) => Change::BothFailed,
        }
    }
}

/// One (run id, trial) of either batch.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PairEntry {
    pub id: String,
    /// 1-based; a run of one trial is trial 1.
    pub trial: u32,
    pub change: Change,
    /// Why the pair is not comparable (`base: verdict error`, `new: errored, no verdict`).
    pub reason: Option<String>,
    pub base: Option<Side>,
    pub new: Option<Side>,
    /// The checks whose result differs between the two sides (or that only one side has).
    pub checks: Vec<CheckChange>,
}

/// A run as one batch saw it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Side {
    pub status: RunStatus,
    pub verdict: Option<Verdict>,
    pub score: Option<f64>,
    pub cost: Usd,
    /// Prompt and completion tokens.
    pub tokens: u64,
    pub duration_ms: Option<u64>,
    /// Its run.json, relative to its batch directory (as that summary.json says).
    pub report: Option<String>,
}

/// A check whose result changed.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct CheckChange {
    pub name: String,
    /// None: the side has no such check.
    pub base: Option<CheckState>,
    pub new: Option<CheckState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Passed,
    Failed,
    /// It could not run (a verifier error).
    Error,
}

impl CheckState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Passed => "passed",
            CheckState::Failed => "failed",
            CheckState::Error => "error",
        }
    }

    fn of(c: &CheckBrief) -> CheckState {
        match (c.error, c.passed) {
            (true, _) => CheckState::Error,
            (false, true) => CheckState::Passed,
            (false, false) => CheckState::Failed,
        }
    }
}

/// What a run counts as: passed (true) or failed (false), or why it counts as neither.
fn outcome(r: &RunSummary) -> Result<bool, String> {
    match (r.verdict, r.status) {
        (Some(Verdict::Passed), _) => Ok(true),
        (Some(Verdict::Failed), _) => Ok(false),
        (Some(Verdict::Error), _) => Err("verdict error".to_string()),
        (None, RunStatus::Succeeded) => Ok(true),
        (None, RunStatus::Failed) => Ok(false),
        (None, status) => Err(format!("{}, no verdict", status.as_str())),
    }
}

type Key = (String, u32);

/// A batch's runs by (id, trial), in its order; a key listed twice is an error.
fn index<'a>(path: &Path, summary: &'a Summary) -> Result<IndexMap<Key, &'a RunSummary>, Error> {
    let mut runs = IndexMap::new();
    for r in &summary.runs {
        let key = (r.id.clone(), r.trial.unwrap_or(1));
        if runs.insert(key.clone(), r).is_some() {
            return Err(Error::Duplicate { path: path.to_path_buf(), id: key.0, trial: key.1 });
        }
    }
    Ok(runs)
}

/// Every (id, trial) of either batch, classified, most telling first: regressed, fixed, not comparable,
/// only in one, both failed, both passed; within each, BASE's order, then NEW's for runs only it has.
pub fn match_runs(base: (&Path, &Summary), new: (&Path, &Summary)) -> Result<Vec<PairEntry>, Error> {
    let before = index(base.0, base.1)?;
    let mut after = index(new.0, new.1)?;
    let mut entries: Vec<PairEntry> =
        before.iter().map(|(key, b)| pair(key, Some(b), after.shift_remove(key))).collect();
    entries.extend(after.iter().map(|(key, n)| pair(key, None, Some(n))));
    // A stable sort: the batches' order stays within each class.
    entries.sort_by_key(|e| e.change as u8);
    Ok(entries)
}

fn pair((id, trial): &Key, base: Option<&RunSummary>, new: Option<&RunSummary>) -> PairEntry {
    let (change, reason) = match (base, new) {
        (Some(b), Some(n)) => match (outcome(b), outcome(n)) {
            (Ok(b), Ok(n)) => (Change::of(b, n), None),
            (b, n) => {
                let why = [("base", b.err()), ("new", n.err())]
                    .into_iter()
                    .filter_map(|(side, e)| Some(format!("{side}: {}", e?)));
                (Change::NotComparable, Some(why.collect::<Vec<_>>().join("; ")))
            }
        },
        (Some(_), None) => (Change::OnlyInBase, None),
        _ => (Change::OnlyInNew, None),
    };
    PairEntry {
        id: id.clone(),
        trial: *trial,
        change,
        reason,
        base: base.map(side),
        new: new.map(side),
        checks: changed_checks(base.map_or(&[], |r| &r.checks), new.map_or(&[], |r| &r.checks)),
    }
}

fn side(r: &RunSummary) -> Side {
    Side {
        status: r.status,
        verdict: r.verdict,
        score: r.score,
        cost: r.cost,
        tokens: r.tokens.prompt.saturating_add(r.tokens.completion),
        duration_ms: r.duration_ms,
        report: r.report.clone(),
    }
}

/// The checks whose state differs, by name, in BASE's order then NEW's. A check of one run only is
/// listed only when the other run has checks: a run that was not verified says nothing of its checks.
fn changed_checks(base: &[CheckBrief], new: &[CheckBrief]) -> Vec<CheckChange> {
    if base.is_empty() || new.is_empty() {
        return Vec::new();
    }
    let states = |checks: &[CheckBrief]| -> IndexMap<String, CheckState> {
        checks.iter().map(|c| (c.name.clone(), CheckState::of(c))).collect()
    };
    let (mut before, after) = (states(base), states(new));
    let mut out = Vec::new();
    for (name, n) in &after {
        let b = before.shift_remove(name);
        if b != Some(*n) {
            out.push(CheckChange { name: name.clone(), base: b, new: Some(*n) });
        }
    }
    // Checks NEW no longer has come first: they were BASE's, in its order.
    let gone = before.into_iter().map(|(name, b)| CheckChange { name, base: Some(b), new: None });
    gone.chain(out).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, trial: Option<u32>, verdict: Option<Verdict>, status: RunStatus) -> RunSummary {
        RunSummary { id: id.into(), trial, verdict, status, ..RunSummary::default() }
    }

    fn verified(id: &str, verdict: Verdict) -> RunSummary {
        let status = if verdict == Verdict::Passed { RunStatus::Succeeded } else { RunStatus::Failed };
        run(id, None, Some(verdict), status)
    }

    fn classify(base: Vec<RunSummary>, new: Vec<RunSummary>) -> Vec<(String, u32, Change)> {
        let (b, n) = (Summary { runs: base, ..Summary::default() }, Summary { runs: new, ..Summary::default() });
        let entries = match_runs((Path::new("b"), &b), (Path::new("n"), &n)).unwrap();
        entries.into_iter().map(|e| (e.id, e.trial, e.change)).collect()
    }

    fn ids(list: &[(String, u32, Change)]) -> Vec<(&str, Change)> {
        list.iter().map(|(id, _, c)| (id.as_str(), *c)).collect()
    }

    #[test]
    fn each_pair_is_classified_and_the_most_telling_come_first() {
        use Change::*;
        use Verdict::*;
        let base = vec![
            verified("both-pass", Passed),
            verified("regress", Passed),
            verified("fix", Failed),
            verified("both-fail", Failed),
            verified("error-new", Passed),
            verified("gone", Passed),
        ];
        let new = vec![
            verified("added", Failed),
            verified("both-pass", Passed),
            verified("regress", Failed),
            verified("fix", Passed),
            verified("both-fail", Failed),
            run("error-new", None, Some(Error), RunStatus::Errored),
        ];
        let got = classify(base, new);
        assert_eq!(
            ids(&got),
            [
                ("regress", Regressed),
                ("fix", Fixed),
                ("error-new", NotComparable),
                ("gone", OnlyInBase),
                ("added", OnlyInNew),
                ("both-fail", BothFailed),
                ("both-pass", BothPassed),
            ]
        );
    }

    #[test]
    fn an_error_on_either_side_is_never_a_regression_and_says_why() {
        use Verdict::*;
        let base = vec![run("a", None, Some(Error), RunStatus::Errored), verified("b", Passed)];
        let new = vec![verified("a", Failed), run("b", None, Some(Error), RunStatus::Errored)];
        let (b, n) = (Summary { runs: base, ..Summary::default() }, Summary { runs: new, ..Summary::default() });
        let entries = match_runs((Path::new("b"), &b), (Path::new("n"), &n)).unwrap();
        assert!(entries.iter().all(|e| e.change == Change::NotComparable), "{entries:?}");
        assert_eq!(entries[0].reason.as_deref(), Some("base: verdict error"));
        assert_eq!(entries[1].reason.as_deref(), Some("new: verdict error"));
    }

    #[test]
    fn without_a_verdict_the_status_decides_and_only_succeeded_or_failed_count() {
        use Change::*;
        let s = |id: &str, status| run(id, None, None, status);
        let base = vec![s("a", RunStatus::Succeeded), s("b", RunStatus::Failed), s("c", RunStatus::Succeeded)];
        let new = vec![s("a", RunStatus::Failed), s("b", RunStatus::Succeeded), s("c", RunStatus::Budget)];
        let got = classify(base, new);
        assert_eq!(ids(&got), [("a", Regressed), ("b", Fixed), ("c", NotComparable)]);
        let pending = classify(vec![s("p", RunStatus::Succeeded)], vec![s("p", RunStatus::Pending)]);
        assert_eq!(pending[0].2, NotComparable);
    }

    #[test]
    fn runs_match_by_id_and_trial_with_an_absent_trial_being_trial_one() {
        use Change::*;
        use Verdict::*;
        let t = |trial, v| run("r", trial, Some(v), RunStatus::Succeeded);
        let got = classify(
            vec![t(None, Passed), t(Some(2), Failed)],
            vec![t(Some(1), Failed), t(Some(2), Failed), t(Some(3), Passed)],
        );
        assert_eq!(got, [("r".into(), 1, Regressed), ("r".into(), 3, OnlyInNew), ("r".into(), 2, BothFailed)]);
        let (dup, one) =
            (Summary { runs: vec![t(None, Passed), t(Some(1), Passed)], ..Summary::default() }, Summary::default());
        let err = match_runs((Path::new("b"), &dup), (Path::new("n"), &one)).unwrap_err();
        assert!(matches!(err, super::Error::Duplicate { trial: 1, .. }), "{err}");
    }

    #[test]
    fn the_checks_that_changed_are_listed_with_both_states() {
        let c = |name: &str, passed, error| CheckBrief {
            name: name.into(),
            passed,
            value: None,
            error,
            ..CheckBrief::default()
        };
        let base = [c("tests", true, false), c("lint", true, false), c("old", false, false), c("judge", true, false)];
        let new = [c("tests", false, false), c("lint", true, false), c("judge", false, true), c("new", true, false)];
        let changed = changed_checks(&base, &new);
        let got: Vec<(&str, Option<CheckState>, Option<CheckState>)> =
            changed.iter().map(|c| (c.name.as_str(), c.base, c.new)).collect();
        use CheckState::*;
        assert_eq!(
            got,
            [
                ("old", Some(Failed), None),
                ("tests", Some(Passed), Some(Failed)),
                ("judge", Some(Passed), Some(Error)),
                ("new", None, Some(Passed)),
            ]
        );
        assert!(changed_checks(&base, &[]).is_empty(), "an unverified run says nothing of its checks");
    }
}
