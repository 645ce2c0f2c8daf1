//! The report of one run. `schemas/report.schema.json` is generated from these types.

use crate::money::Usd;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bumped when a field changes meaning or disappears.
pub const REPORT_FORMAT: u32 = 1;

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct RunReport {
    /// Version of this format.
    pub format: u32,
    pub ohrun_version: String,
    pub job: JobInfo,
    pub run: RunInfo,
    /// `running` while the attempt goes on (run.json is rewritten at every state change, so a killed
    /// ohrun leaves a valid file that says how far it got), `ended` once it has.
    #[serde(default)]
    pub status: ReportStatus,
    /// True when the LLM was ohrun's scripted rehearsal endpoint, not a real provider.
    pub rehearsal: bool,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub sandbox: SandboxInfo,
    pub setup: Vec<SetupResult>,
    /// What the setup commands changed in the working directory (`report.diffs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_diff: Option<DiffInfo>,
    pub conversation_id: Option<String>,
    pub steps: Vec<StepReport>,
    /// What the agent and setup changed relative to the commit the run started from (`final.patch`),
    /// when the working directory is a git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_patch: Option<super::PatchInfo>,
    /// The checks of the agent's work (`verify:`), its score and verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<super::Verification>,
    /// The repository cloned into the working directory (`repo:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<super::repo::RepoInfo>,
    /// The files collected from the sandbox (`artifacts:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<super::repo::Artifacts>,
    /// What `deliver:` did: the branch, commit and pull request, or why nothing was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    pub totals: Totals,
    pub outcome: Outcome,
    /// The event log, one server event per line, each once; a socket frame ohrun could not read is a line
    /// `{"kind": "ohrun.RawFrame", "frame": "text"|"binary", "raw", "error", "received_at"}` (binary in base64).
    pub events_file: String,
    /// Things the reader should know (for example: title generation was turned off).
    pub notes: Vec<String>,
    /// Things that may make this run differ from what was tested (for example: another agent-server version).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct JobInfo {
    pub name: String,
    pub file: String,
    /// sha256 of the job file's bytes.
    pub file_hash: String,
    /// The job file's absolute path (`file` is as given, relative to where ohrun ran): `ohrun verify`
    /// finds the job from any directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct RunInfo {
    pub id: String,
    /// 1-based position in the plan.
    pub index: usize,
    pub matrix: Option<serde_json::Map<String, Value>>,
    /// Which attempt of the run this report is (1 unless infrastructure failures were retried).
    pub attempt: u32,
    /// Which trial of the run (`repeat`, `--repeat`): 1-based; absent when the run has one trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<u32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct SandboxInfo {
    /// cloud, runtime, docker, local or remote.
    pub kind: String,
    /// The provider's id for it (container id, sandbox id, process id, …).
    pub id: Option<String>,
    pub agent_server_url: Option<String>,
    pub agent_server_version: Option<String>,
    pub working_dir: Option<String>,
    /// Where ohrun keeps the server's log, for local sandboxes.
    pub log_file: Option<String>,
    /// What happened at the end: released, kept, not_provisioned, release_failed, attached, or shared (the
    /// batch's shared server, released by the batch). A checkpoint says `provisioning` once the sandbox
    /// exists (its id is known) and `provisioned` once its agent-server answered.
    pub disposition: String,
    pub release_error: Option<String>,
    /// How long until the agent-server answered: provisioning it, or (a shared server) waiting for it.
    pub provision_ms: Option<u64>,
    /// The batch's shared agent-server this run used (`sandbox.share: batch`): its directory, with its
    /// log. The batch releases it when every run has ended (summary.json says how).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
    /// How long the run, provisioned and set up ahead (`--prefetch`), waited for one of the batch's
    /// `--jobs` places before its first message (this time does not count against `limits.timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_for_place_ms: Option<u64>,
    /// Requests to the provider's API (Cloud, Runtime) that were retried, and why.
    pub api_retries: Vec<ApiRetry>,
    /// Sandboxes that a failed create request may have made but that ohrun could not be sure were its
    /// own, so it neither used nor deleted them (Cloud).
    pub candidates: Vec<String>,
    /// The image a docker sandbox ran, and why that one (the official image, or ohrun's own where the
    /// official one could not be pulled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<SandboxImage>,
}

/// Which image a docker sandbox ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SandboxImage {
    pub name: String,
    /// Named in the job, the official image (already there, or pulled), or ohrun's own with the reason
    /// the official one could not be had.
    pub why: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ApiRetry {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Which attempt failed (1-based).
    pub attempt: u32,
    pub status: Option<u16>,
    pub reason: String,
    /// How long ohrun waited before the next attempt.
    pub waited_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct SetupResult {
    pub command: String,
    pub cwd: String,
    /// -1 when the command timed out or could not start.
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    pub timed_out: bool,
    pub allowed_to_fail: bool,
    /// ohrun was interrupted while the command ran (its output is what had come back by then, if anything).
    pub interrupted: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct StepReport {
    /// 1-based.
    pub index: usize,
    pub message: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub end_reason: EndReason,
    /// The server's execution_status when the step ended.
    pub execution_status: Option<String>,
    /// Server events logged during this step (`ohrun.RawFrame` records are not counted).
    pub event_count: usize,
    /// Cost of this step in USD (the growth of the conversation's total).
    pub cost: Usd,
    pub tokens: Tokens,
    pub llm_calls: u64,
    /// The agent's last message (its finish message or text reply).
    pub final_message: Option<String>,
    pub error: Option<StepError>,
    /// Replies ohrun sent for `on_question: reply`.
    pub replies: u32,
    /// Milliseconds from the moment the server's final state frame was read off the socket to ohrun
    /// deciding the step was done (quiet window excluded).
    pub completion_latency_ms: Option<f64>,
    /// What the step changed in the working directory (`report.diffs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<DiffInfo>,
    /// The step's own checks (`steps[].checks`), run right after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<super::CheckResult>,
    /// A required check of this step failed with `on_fail: stop` (or could not run): the run ended here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped_by_checks: bool,
}

/// What changed in the working directory over one phase (setup, a step): the list of changed paths and
/// a unified diff of the text files, in a file beside run.json.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DiffInfo {
    /// The diff file, relative to the attempt's directory (`steps/setup.diff`, `steps/1.diff`, …).
    pub file: Option<String>,
    /// Changed paths, `git status --porcelain` style (`A path`, `M path`, `D path`; `B path` for a binary
    /// file, listed but not diffed).
    pub changes: Vec<String>,
    /// How many paths changed (`changes` lists the first 1,000).
    #[serde(default)]
    pub paths: u64,
    pub insertions: u64,
    pub deletions: u64,
    /// The list or the diff was cut at its cap (1,000 paths, 256 KiB).
    pub truncated: bool,
    /// Why no diff could be taken (no git in the sandbox, the command failed), when it could not.
    pub error: Option<String>,
}

/// Why a step ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The agent finished (the server's final state after the run was `finished`).
    Finished,
    /// The agent ended its turn with a question for the user.
    Question,
    /// The run failed on the server (ConversationErrorEvent; see `error`).
    Error,
    /// The server's stuck detector stopped the agent.
    Stuck,
    /// The agent paused (or waits for a confirmation ohrun does not give).
    Paused,
    /// The step's `timeout` (or the run's `limits.timeout`) ran out.
    Timeout,
    /// `limits.max_cost` was reached.
    Budget,
    /// ohrun was interrupted (SIGINT/SIGTERM).
    Interrupted,
    /// The step never ran because an earlier one failed.
    #[default]
    NotRun,
    /// The connection to the agent-server was lost for good.
    Lost,
}

impl EndReason {
    /// The name used in reports and on the console.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Finished => "finished",
            EndReason::Question => "question",
            EndReason::Error => "error",
            EndReason::Stuck => "stuck",
            EndReason::Paused => "paused",
            EndReason::Timeout => "timeout",
            EndReason::Budget => "budget",
            EndReason::Interrupted => "interrupted",
            EndReason::NotRun => "not_run",
            EndReason::Lost => "lost",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EndReason::*;

    #[test]
    fn end_reason_names_are_the_serialized_ones() {
        for r in [Finished, Question, Error, Stuck, Paused, Timeout, Budget, Interrupted, NotRun, Lost] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct StepError {
    pub code: String,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Tokens {
    pub fn plus(self, o: Tokens) -> Tokens {
        Tokens {
            prompt: self.prompt.saturating_add(o.prompt),
            completion: self.completion.saturating_add(o.completion),
            cache_read: self.cache_read.saturating_add(o.cache_read),
            cache_write: self.cache_write.saturating_add(o.cache_write),
            reasoning: self.reasoning.saturating_add(o.reasoning),
        }
    }

    /// Field by field, the larger.
    pub fn max(self, o: Tokens) -> Tokens {
        Tokens {
            prompt: self.prompt.max(o.prompt),
            completion: self.completion.max(o.completion),
            cache_read: self.cache_read.max(o.cache_read),
            cache_write: self.cache_write.max(o.cache_write),
            reasoning: self.reasoning.max(o.reasoning),
        }
    }

    /// Input and output tokens: what a priced call is billed for.
    pub fn billed(self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }

    pub fn minus(self, o: Tokens) -> Tokens {
        Tokens {
            prompt: self.prompt.saturating_sub(o.prompt),
            completion: self.completion.saturating_sub(o.completion),
            cache_read: self.cache_read.saturating_sub(o.cache_read),
            cache_write: self.cache_write.saturating_sub(o.cache_write),
            reasoning: self.reasoning.saturating_sub(o.reasoning),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Totals {
    /// Σ accumulated_cost over every LLM of the conversation (agent, condenser, …), in USD.
    pub cost: Usd,
    pub tokens: Tokens,
    pub llm_calls: u64,
    /// The dearest single LLM call: what a batch's budget reserves per running run, also on resume.
    #[serde(default)]
    pub largest_call: Usd,
    /// Server events in the event log (`ohrun.RawFrame` records are not counted).
    pub events: usize,
    /// Cost per usage id (agent, condenser, …).
    pub cost_by_usage: IndexMap<String, Usd>,
}

impl Totals {
    /// These totals, raised to `other`'s wherever they are larger. The conversation's figures only grow,
    /// so the larger of two readings is the later one: what was seen spent is never given back.
    pub fn at_least(mut self, other: &Totals) -> Totals {
        if other.cost > self.cost {
            self.cost = other.cost;
            self.cost_by_usage = other.cost_by_usage.clone();
        }
        self.tokens = self.tokens.max(other.tokens);
        self.llm_calls = self.llm_calls.max(other.llm_calls);
        self.largest_call = self.largest_call.max(other.largest_call);
        self.events = self.events.max(other.events);
        self
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    /// succeeded, failed, usage_error, infrastructure, budget, left_behind, interrupted; `running` in a
    /// checkpoint (`status: running`): the attempt has not ended, so it has no outcome yet.
    pub class: OutcomeClass,
    /// The process exit code this run alone would give; null while it runs.
    pub exit_code: Option<i32>,
    /// What went wrong, in a sentence.
    pub message: Option<String>,
    /// The failure was the infrastructure's (a sandbox that did not start, a lost server, a provider's
    /// error), so another attempt may succeed; an agent's or a job's failure is never retried.
    pub retryable: bool,
    /// The sandbox lacked resources (it was not ready in time, or ran out of memory).
    pub lacked_resources: bool,
    /// Secrets the leak scan found in what ohrun wrote (file and offset; never the value): the run failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaks: Vec<super::leak::Leak>,
}

impl Outcome {
    /// The outcome of an attempt that has not ended (every checkpoint before the final run.json).
    pub fn running() -> Outcome {
        Outcome { class: OutcomeClass::Running, exit_code: None, ..Outcome::default() }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    Running,
    #[default]
    Ended,
}

/// How a run ended, ordered from least to most serious: with several runs, the most serious decides
/// the exit code. A sandbox that may be left behind outranks everything, an interruption included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeClass {
    /// Not ended yet: what a checkpoint says, so that a run killed mid-way never reads as a success.
    Running,
    #[default]
    Succeeded,
    Failed,
    Budget,
    UsageError,
    Infrastructure,
    Interrupted,
    LeftBehind,
}

/// What `deliver:` did for one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Delivery {
    /// `delivered` (the branch was pushed; the pull request, if any, opened or updated), `skipped` (nothing
    /// to deliver, or not asked to: `reason` says why) or `failed` (`reason` says what went wrong).
    pub status: DeliveryStatus,
    /// Why it was skipped or failed; for a pull request closed or merged meanwhile, that it was not reopened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `owner/name` the branch was pushed to (the fork, with `fork_owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit pushed (the final patch on the base commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
    /// `draft`, `open`, `closed` or `merged`, as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_state: Option<String>,
    /// Whether this delivery opened the pull request (false: it found and updated one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pr_created: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Requests to the GitHub API tried again (rate limits, unclear failures), with the waits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_retries: Vec<ApiRetry>,
    pub duration_ms: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Delivered,
    #[default]
    Skipped,
    Failed,
}
