//! The job file's verification: `verify:` (checks after the agent is done, in its sandbox or a fresh one)
//! and `steps[].checks` (checks right after a step). Part of the job model (`model.rs`); the JSON Schema
//! is generated from these types too.

use super::llm::LlmSpec;
use super::values::HumanDuration;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether the agent's work is right: checks run once the agent has finished its last step.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// `shared` (default): in the run's own sandbox, after the last step. `fresh`: in a new sandbox of the
    /// same kind and settings (setup again, the run's final patch applied), which nothing the agent did
    /// outside its working directory's tracked files can reach.
    #[serde(default)]
    pub mode: VerifyMode,
    /// A file or directory (relative to the job file) copied into the working directory, under the same
    /// relative path, only after the agent is done: hidden tests the agent never sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<String>,
    /// The checks, run in order.
    pub checks: Vec<CheckSpec>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    #[default]
    Shared,
    Fresh,
}

/// One check: a shell command (`run`) or an LLM judge (`judge`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// What it checks, in a few words (unique within its list; the name in reports and JUnit).
    pub name: String,
    /// A shell command, run by `/bin/sh -c` in the working directory: it passes on exit 0, unless it
    /// leaves `reward.json` (`{"score": 0.0–1.0, "explanation": …}`) in `$OHRUN_VERIFY_OUT`, whose score
    /// is then its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// An LLM judge of the final diff and message (and `files`), instead of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeSpec>,
    /// Longest the check may take; past it the check could not run (a verifier error, not a failure).
    #[serde(default = "CheckSpec::default_timeout")]
    pub timeout: HumanDuration,
    /// Its weight in the run's score (the weighted mean of the checks' values).
    #[serde(default = "CheckSpec::default_weight")]
    pub weight: f64,
    /// A failed required check fails the run; an optional one only lowers its score.
    #[serde(default = "CheckSpec::default_required")]
    pub required: bool,
    /// A check's value at or above this passes it (for a command: exit 0 is 1, anything else 0).
    #[serde(default = "CheckSpec::default_threshold")]
    pub threshold: f64,
    /// Environment of the command (`${VAR}` references are resolved like `setup[].env`).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, super::values::EnvString>,
    /// Per-step checks only: `stop` (default) ends the run when this required check fails, `continue`
    /// goes on to the next step and lets the verdict say it.
    #[serde(default)]
    pub on_fail: OnFail,
}

impl CheckSpec {
    fn default_timeout() -> HumanDuration {
        HumanDuration::secs(10 * 60)
    }
    fn default_weight() -> f64 {
        1.0
    }
    fn default_required() -> bool {
        true
    }
    fn default_threshold() -> f64 {
        1.0
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFail {
    #[default]
    Stop,
    Continue,
}

/// An LLM asked whether the work meets the criteria. Its call is made through the sandbox's
/// agent-server (a conversation of its own, no tools) and its spend counts in the run's and the batch's.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JudgeSpec {
    /// What must hold, one sentence each; the work passes when the judge finds every one met.
    pub criteria: Vec<String>,
    /// Files (relative to the working directory) shown to the judge beside the final diff and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// The judge's LLM; the job's `llm` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSpec>,
}
