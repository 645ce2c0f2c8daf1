//! A batch's rollups, from the runs' reports: `summary.json` (every run with its status, why it ended,
//! attempts, cost, tokens, duration, where its report is; verdicts and checks; totals), `junit.xml`
//! (`junit.rs`), the GitHub Actions step summary and error annotations, and the `--json` lines. The
//! files are rewritten atomically after every run ends, so a crash leaves a true partial summary (runs
//! not finished yet say `pending`).

use super::model::{EndReason, OutcomeClass, RunReport, Tokens};
use super::writer::write_atomic;
use crate::money::Usd;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const SUMMARY_FILE: &str = "summary.json";
pub const JUNIT_FILE: &str = "junit.xml";
/// Bumped when a field changes meaning or disappears.
pub const SUMMARY_FORMAT: u32 = 1;

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub format: u32,
    pub ohrun_version: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
    pub runs: Vec<RunSummary>,
    pub totals: SummaryTotals,
    /// The agent-servers the runs shared (`sandbox.share: batch`), once the batch has released them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_sandboxes: Vec<SharedSandbox>,
    /// The batch's budget (`--max-cost`, `batch.max_cost`) and what was spent against it. A cap holds for
    /// one ohrun process: the shards of a plan each keep their own, so N shards may spend up to N × the cap
    /// together (`ohrun merge` reports their total against it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSummary>,
    /// How many runs did the job right (jobs with `verify:`): the batch's and each job's counts, pass rate
    /// over verified runs only, mean score; and per run id over its trials, pass@k and pass^k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<super::scores::Scores>,
}

/// A batch's cap and its spend. In a merge: the shards' cap against what they spent together.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct BudgetSummary {
    /// The cap (USD) each ohrun process kept on its own; in a merge, the largest of the shards'.
    pub cap: Usd,
    /// How many ohrun processes (shards) each kept that cap on its own: together they may spend up to
    /// `processes` × `cap`.
    pub processes: usize,
    /// What the runs of this summary spent (its `totals.cost`).
    pub spent: Usd,
    /// `spent` is more than `cap`: the shards of a merge spent more together than the cap of one.
    pub over_cap: bool,
}

/// An agent-server that runs of the batch shared, and how the batch ended it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct SharedSandbox {
    /// `shared-KIND-N`, also its directory under `shared/` in the batch directory (its log is there).
    pub name: String,
    /// The provider's id for it (for a local server, its process id).
    pub id: Option<String>,
    /// How many run attempts used it.
    pub runs: usize,
    /// released, kept, not_provisioned or release_failed.
    pub disposition: String,
    pub release_error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct RunSummary {
    pub id: String,
    /// Its place in its job's plan (1-based), as `ohrun plan` lists it.
    pub index: usize,
    pub job: String,
    pub job_file: String,
    pub matrix: Option<serde_json::Map<String, serde_json::Value>>,
    pub status: RunStatus,
    /// Why it ended: `finished`, a step's end reason (`error`, `timeout`, `budget`, …), or the phase that
    /// failed (`setup`, `provisioning`, `report`); none while pending.
    pub end_reason: Option<String>,
    pub message: Option<String>,
    pub attempts: u32,
    /// Σ over every attempt (a failed attempt's money is spent too).
    pub cost: Usd,
    pub tokens: Tokens,
    pub llm_calls: u64,
    /// Of the last attempt.
    pub duration_ms: Option<u64>,
    /// The run's final report, relative to the batch directory when it is inside it.
    pub report: Option<String>,
    /// Which trial of the run this is (`repeat`), 1-based; absent when the run has one trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<u32>,
    /// The verification's verdict (`verify:`): passed, failed, or error (a verifier or the infrastructure
    /// failed; never counted as a failed task). Absent when the job verifies nothing or it is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<super::Verdict>,
    /// The weighted mean of the checks' values (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Each check: name, passed, value (per-step checks first, then `verify:`'s).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<super::scores::CheckBrief>,
    /// What `deliver:` did: status, branch, pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryBrief>,
}

/// A run's delivery in the summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DeliveryBrief {
    pub status: super::DeliveryStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DeliveryBrief {
    fn of(d: &super::Delivery) -> DeliveryBrief {
        DeliveryBrief {
            status: d.status,
            branch: d.branch.clone(),
            pr_url: d.pr_url.clone(),
            pr_state: d.pr_state.clone(),
            reason: d.reason.as_deref().map(super::redact::first_line),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Not finished (yet): the batch is running, or stopped before it got there.
    #[default]
    Pending,
    Succeeded,
    /// The agent or the job failed (a step error or timeout, a failed setup command).
    Failed,
    /// The run's or the batch's budget was reached (also: never started for it).
    Budget,
    /// The infrastructure failed (and retries, if any, did not help).
    Errored,
    UsageError,
    Interrupted,
    /// Its sandbox may still be running.
    LeftBehind,
    /// Skipped: `--fail-fast` after a failure, or an interrupt before it started.
    NotStarted,
}

impl RunStatus {
    pub fn from_class(class: OutcomeClass) -> RunStatus {
        match class {
            OutcomeClass::Succeeded => RunStatus::Succeeded,
            OutcomeClass::Failed => RunStatus::Failed,
            OutcomeClass::Budget => RunStatus::Budget,
            OutcomeClass::UsageError => RunStatus::UsageError,
            OutcomeClass::Infrastructure => RunStatus::Errored,
            OutcomeClass::Interrupted => RunStatus::Interrupted,
            OutcomeClass::LeftBehind => RunStatus::LeftBehind,
            OutcomeClass::Running => RunStatus::Pending,
        }
    }

    /// The outcome class behind the status, for the exit code (None: pending or not started).
    pub fn class(self) -> Option<OutcomeClass> {
        Some(match self {
            RunStatus::Succeeded => OutcomeClass::Succeeded,
            RunStatus::Failed => OutcomeClass::Failed,
            RunStatus::Budget => OutcomeClass::Budget,
            RunStatus::Errored => OutcomeClass::Infrastructure,
            RunStatus::UsageError => OutcomeClass::UsageError,
            RunStatus::Interrupted => OutcomeClass::Interrupted,
            RunStatus::LeftBehind => OutcomeClass::LeftBehind,
            RunStatus::Pending | RunStatus::NotStarted => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Budget => "budget",
            RunStatus::Errored => "errored",
            RunStatus::UsageError => "usage_error",
            RunStatus::Interrupted => "interrupted",
            RunStatus::LeftBehind => "left_behind",
            RunStatus::NotStarted => "not_started",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct SummaryTotals {
    pub runs: usize,
    /// How many runs have each status.
    pub by_status: IndexMap<String, usize>,
    pub cost: Usd,
    pub tokens: Tokens,
    pub llm_calls: u64,
    /// Wall time of this invocation.
    pub duration_ms: u64,
}

/// Why a run ended, in a word: the step that did not finish, else the phase that failed.
pub fn end_reason(report: &RunReport) -> String {
    if !report.outcome.leaks.is_empty() {
        return "secret_leak".to_string();
    }
    if report.outcome.class == OutcomeClass::Succeeded {
        return EndReason::Finished.as_str().to_string();
    }
    if let Some(v) = &report.verification
        && v.not_verified.is_none()
        && matches!(v.verdict, Some(super::Verdict::Failed | super::Verdict::Error))
    {
        return if v.verdict == Some(super::Verdict::Failed) { "checks" } else { "verifier_error" }.to_string();
    }
    // A question the agent asked is a step that ended as asked, unless it errored.
    let ended_as_asked = |s: &&crate::report::StepReport| {
        matches!(s.end_reason, EndReason::Finished | EndReason::NotRun)
            || (s.end_reason == EndReason::Question && s.error.is_none())
    };
    let step = report.steps.iter().find(|s| !ended_as_asked(s));
    if let Some(s) = step {
        return s.end_reason.as_str().to_string();
    }
    let phase = if report.setup.iter().any(|c| c.exit_code != 0 && !c.allowed_to_fail) {
        "setup"
    } else if report.sandbox.disposition == "not_provisioned" || report.sandbox.agent_server_url.is_none() {
        "provisioning"
    } else {
        match report.outcome.class {
            OutcomeClass::Interrupted => "interrupted",
            OutcomeClass::LeftBehind => "release",
            OutcomeClass::Infrastructure => "infrastructure",
            _ => "failed",
        }
    };
    phase.to_string()
}

impl RunSummary {
    /// A run that ended: its last attempt's report, and what all its attempts spent.
    pub fn ended(report: &RunReport, attempts: &[&RunReport], report_path: Option<String>) -> RunSummary {
        let entry = RunSummary {
            id: report.run.id.clone(),
            index: report.run.index,
            job: report.job.name.clone(),
            job_file: report.job.file.clone(),
            matrix: report.run.matrix.clone(),
            status: RunStatus::from_class(report.outcome.class),
            end_reason: Some(end_reason(report)),
            message: report.outcome.message.as_deref().map(super::redact::first_line),
            duration_ms: report.duration_ms,
            report: report_path,
            trial: report.run.trial,
            verdict: report.verification.as_ref().and_then(|v| v.verdict),
            score: report.verification.as_ref().and_then(|v| v.score),
            checks: report.verification.iter().flat_map(|v| &v.checks).map(super::scores::CheckBrief::of).collect(),
            delivery: report.delivery.as_ref().map(DeliveryBrief::of),
            ..RunSummary::default()
        };
        RunSummary { attempts: report.run.attempt, ..entry.spent(attempts) }
    }

    /// The entry with what `attempts` spent (every attempt's money counts, a failed one's too).
    pub fn spent(self, attempts: &[&RunReport]) -> RunSummary {
        let mut tokens = Tokens::default();
        for a in attempts {
            tokens = tokens.plus(a.totals.tokens);
        }
        RunSummary {
            attempts: attempts.iter().map(|a| a.run.attempt).max().unwrap_or(self.attempts),
            cost: attempts.iter().map(|a| a.totals.cost).sum(),
            tokens,
            llm_calls: attempts.iter().map(|a| a.totals.llm_calls).sum(),
            ..self
        }
    }
}

impl Summary {
    pub fn new(runs: Vec<RunSummary>) -> Summary {
        let mut s = Summary {
            format: SUMMARY_FORMAT,
            ohrun_version: env!("CARGO_PKG_VERSION").to_string(),
            runs,
            ..Summary::default()
        };
        s.recount(0);
        s
    }

    /// Recomputes the totals (and the time stamp).
    pub fn recount(&mut self, duration_ms: u64) {
        let mut t = SummaryTotals { runs: self.runs.len(), duration_ms, ..SummaryTotals::default() };
        for r in &self.runs {
            *t.by_status.entry(r.status.as_str().to_string()).or_default() += 1;
            t.cost += r.cost;
            t.tokens = t.tokens.plus(r.tokens);
            t.llm_calls += r.llm_calls;
        }
        if let Some(b) = &mut self.budget {
            (b.spent, b.over_cap) = (t.cost, t.cost > b.cap);
        }
        self.verification = super::scores::Scores::of(&self.runs);
        self.totals = t;
        self.updated_at = super::writer::now_rfc3339();
    }

    /// The summary of a batch (or a merge of `processes` shards) whose cap was `cap`, if it had one.
    pub fn with_budget(mut self, cap: Option<Usd>, processes: usize) -> Summary {
        self.budget = cap.map(|cap| BudgetSummary { cap, processes, ..BudgetSummary::default() });
        self.recount(self.totals.duration_ms);
        self
    }

    /// Writes summary.json and junit.xml into `dir`, atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(&dir.join(SUMMARY_FILE), &json)?;
        write_atomic(&dir.join(JUNIT_FILE), &self.redacted().junit().map_err(std::io::Error::other)?)
    }

    /// The same summary with every text in it redacted: what junit.xml, the step summary and the
    /// annotations are made from. Each escapes its text its own way (XML, markdown cells, `%0A`), and a
    /// secret escaped differently would no longer be found by the redactor afterwards, so it goes first.
    pub fn redacted(&self) -> Summary {
        fn walk(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::String(s) => {
                    if let std::borrow::Cow::Owned(clean) = super::redact::apply(s) {
                        *s = clean;
                    }
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
                serde_json::Value::Object(m) => m.values_mut().for_each(walk),
                _ => {}
            }
        }
        let Ok(mut value) = serde_json::to_value(self) else { return Summary::default() };
        walk(&mut value);
        serde_json::from_value(value).unwrap_or_default()
    }

    pub fn read(dir: &Path) -> Option<Summary> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(SUMMARY_FILE)).ok()?).ok()
    }

    /// A markdown table of the runs, failures first, for `$GITHUB_STEP_SUMMARY`; when runs were verified,
    /// the pass rate above it and each run's verdict and failed checks in it.
    pub fn markdown(&self) -> String {
        let t = &self.totals;
        let counts: Vec<String> = t.by_status.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let mut out = format!("### ohrun: {} runs — {} — ${}\n\n", t.runs, counts.join(", "), t.cost);
        let verified = self.verification.as_ref();
        if let Some(v) = verified {
            out.push_str(&format!("**Verified:** {}\n\n", v.batch.line()));
            if v.jobs.len() > 1 {
                for (job, tally) in &v.jobs {
                    out.push_str(&format!("- {}: {}\n", table_cell(job), tally.line()));
                }
                out.push('\n');
            }
        }
        let (head, rule) = match verified {
            Some(_) => ("| run | status | verdict | failed checks | why |", "|---|---|---|---|---|"),
            None => ("| run | status | why |", "|---|---|---|"),
        };
        out.push_str(&format!("{head} attempts | cost | duration |\n{rule}---|---|---|\n"));
        let mut runs: Vec<&RunSummary> = self.runs.iter().collect();
        runs.sort_by_key(|r| r.status == RunStatus::Succeeded);
        for r in runs {
            let why = match (&r.end_reason, &r.message) {
                (Some(e), Some(m)) => format!("{e}: {m}"),
                (Some(e), None) => e.clone(),
                _ => String::new(),
            };
            let secs = r.duration_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_default();
            let verdict = match verified {
                Some(_) => format!(" {} | {} |", verdict_cell(r), table_cell(&failed_checks(r))),
                None => String::new(),
            };
            out.push_str(&format!(
                "| `{}` | {} |{verdict} {} | {} | ${} | {secs} |\n",
                super::run_label(&r.id, r.trial),
                r.status.as_str(),
                table_cell(&why),
                r.attempts,
                r.cost
            ));
        }
        out
    }

    /// The worst outcome among the runs, for the exit code; a run still pending (a batch that never
    /// finished, a shard that is missing) counts as an infrastructure failure.
    pub fn worst_class(&self) -> OutcomeClass {
        let pending = |r: &&RunSummary| r.status == RunStatus::Pending;
        let mut worst = self.runs.iter().filter_map(|r| r.status.class()).max().unwrap_or_default();
        if self.shared_sandboxes.iter().any(|s| s.release_error.is_some()) {
            worst = worst.max(OutcomeClass::LeftBehind);
        }
        if self.runs.iter().any(|r| pending(&r)) { worst.max(OutcomeClass::Infrastructure) } else { worst }
    }

    /// Under GitHub Actions: the markdown table appended to `$GITHUB_STEP_SUMMARY`, and an error
    /// annotation per run that did not succeed, on stderr (which the runner reads too, so that stdout stays
    /// JSON with `--json`). Returns the step summary file, if any, and the offset where ohrun's part of it
    /// begins (the workflow's own steps write there too). An error is a step summary that could not be
    /// written.
    pub fn publish_to_github(&self) -> Result<Option<(std::path::PathBuf, usize)>, String> {
        if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
            for line in self.redacted().annotations() {
                eprintln!("{}", super::redact::apply(&line));
            }
        }
        let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else { return Ok(None) };
        let path = std::path::PathBuf::from(path);
        let ours_from = std::fs::metadata(&path).map_or(0, |m| m.len() as usize);
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(super::redact::apply(&self.redacted().markdown()).as_bytes()))
            .map_err(|e| format!("cannot append to $GITHUB_STEP_SUMMARY: {e}"))?;
        Ok(Some((path, ours_from)))
    }

    /// GitHub Actions error annotations for the runs that did not succeed, pointing at their job file.
    pub fn annotations(&self) -> Vec<String> {
        self.runs
            .iter()
            .filter(|r| r.status.class().is_some_and(|c| c != OutcomeClass::Succeeded))
            .map(|r| {
                let why = r.end_reason.as_deref().unwrap_or(r.status.as_str());
                let message = r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
                let property = |v: &str| escape_data(v).replace(':', "%3A").replace(',', "%2C");
                format!(
                    "::error file={},title={}::{}",
                    property(&r.job_file),
                    property(&format!("ohrun {}", super::run_label(&r.id, r.trial))),
                    escape_data(&format!("{why}{message}"))
                )
            })
            .collect()
    }
}

/// `passed 0.83`, `failed 0.50`, `error`; empty when the run has no verdict.
fn verdict_cell(r: &RunSummary) -> String {
    let score = r.score.map(|s| format!(" {s:.2}")).unwrap_or_default();
    r.verdict.map(|v| format!("{}{score}", v.as_str())).unwrap_or_default()
}

/// The checks of a run that did not pass: `tests pass (exit 1); lint (could not run: timed out after
/// 10m); changelog (optional)`.
fn failed_checks(r: &RunSummary) -> String {
    let what = |c: &super::scores::CheckBrief| match c.state() {
        "error" => format!("could not run: {}", c.why.as_deref().unwrap_or("?")),
        "failed (optional)" => "optional".to_string(),
        _ => c.exit_code.map_or_else(|| format!("value {:.2}", c.value.unwrap_or(0.0)), |e| format!("exit {e}")),
    };
    let failed = r.checks.iter().filter(|c| !c.passed).map(|c| format!("{} ({})", c.name, what(c)));
    failed.collect::<Vec<_>>().join("; ")
}

/// Text as one cell of a markdown table row: a line break would end the row (and the table) and a `|`
/// would start another cell, so breaks become `<br>` and pipes are escaped; `<` and `&` are escaped so
/// that text in it is never HTML to GitHub's renderer.
fn table_cell(text: &str) -> String {
    let one_line = text.replace("\r\n", "\n").replace(['\r', '\u{85}', '\u{2028}', '\u{2029}'], "\n");
    one_line.replace('&', "&amp;").replace('<', "&lt;").replace('|', "\\|").replace('\n', "<br>")
}

/// A workflow command's data, escaped as the GitHub runner unescapes it (`%`, CR and LF).
fn escape_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

impl super::scores::ScoredRun for RunSummary {
    fn job(&self) -> &str {
        &self.job
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn trial(&self) -> Option<u32> {
        self.trial
    }
    fn verdict(&self) -> Option<super::Verdict> {
        self.verdict
    }
    fn score(&self) -> Option<f64> {
        self.score
    }
    fn cost(&self) -> crate::money::Usd {
        self.cost
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run of job `j` that ended with `status` (and, when `why` is given, that end reason and a message).
    pub(crate) fn run(id: &str, status: RunStatus, why: Option<&str>) -> RunSummary {
        RunSummary {
            id: id.into(),
            job: "j".into(),
            job_file: "jobs/j.yaml".into(),
            status,
            end_reason: why.map(str::to_string),
            message: why.map(|w| format!("{w} <&> happened")),
            ..RunSummary::default()
        }
    }

    #[test]
    fn annotations_are_escaped_as_the_runner_reads_them() {
        let mut failed = run("b", RunStatus::Failed, Some("error"));
        (failed.job_file, failed.message) = ("jobs/a,b:c.yaml".into(), Some("100% gone\nnext line".into()));
        let s = Summary::new(vec![run("a", RunStatus::Succeeded, None), failed]);
        assert_eq!(s.annotations(), ["::error file=jobs/a%2Cb%3Ac.yaml,title=ohrun b::error: 100%25 gone%0Anext line"]);
    }

    #[test]
    fn a_message_with_line_breaks_and_pipes_stays_in_its_row_and_cell() {
        let mut failed = run("b", RunStatus::Failed, Some("error"));
        failed.message = Some("first | line\r\nsecond\nthird\u{2028}fourth".into());
        let table = Summary::new(vec![failed, run("a", RunStatus::Succeeded, None)]).markdown();
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(rows.len(), 4, "{table}");
        assert!(rows.iter().all(|r| r.starts_with('|') && r.ends_with('|')), "{table}");
        assert!(rows[2].contains("| error: first \\| line<br>second<br>third<br>fourth |"), "{table}");
    }

    #[test]
    fn a_verified_batch_shows_its_pass_rate_and_each_runs_failed_checks() {
        use super::super::scores::CheckBrief;
        let check = |name: &str, passed: bool| CheckBrief {
            name: name.into(),
            passed,
            value: Some(if passed { 1.0 } else { 0.0 }),
            required: true,
            exit_code: (!passed).then_some(2),
            ..CheckBrief::default()
        };
        let mut failed = run("b", RunStatus::Failed, Some("checks"));
        (failed.verdict, failed.score) = (Some(super::super::Verdict::Failed), Some(0.5));
        failed.checks = vec![check("builds", true), check("tests | pass\nall", false)];
        let mut passed = run("a", RunStatus::Succeeded, None);
        (passed.verdict, passed.score) = (Some(super::super::Verdict::Passed), Some(1.0));
        passed.checks = vec![check("builds", true)];
        let table = Summary::new(vec![passed, failed]).markdown();
        assert!(table.contains("**Verified:** pass rate 50 % (95 % CI "), "{table}");
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 4, "{table}");
        assert!(rows[0].starts_with("| run | status | verdict | failed checks | why |"), "{table}");
        assert!(
            rows[2].contains("| `b` | failed | failed 0.50 | tests \\| pass<br>all (exit 2) | checks: "),
            "{table}"
        );
        assert!(rows[3].contains("| `a` | succeeded | passed 1.00 |  | "), "{table}");
    }
}
