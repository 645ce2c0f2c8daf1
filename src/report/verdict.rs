//! What verification found, in run.json: each check's result, the run's score and verdict, and the final
//! patch the verdict is about. Part of the report model (`model.rs`).

use crate::money::Usd;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether the agent's work was right. Infrastructure is kept apart: `error` is a verifier that could
/// not run (a check timed out, the sandbox was lost, the judge's call failed), never a failed task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The agent finished and every required check passed.
    Passed,
    /// A required check failed, or the agent itself failed (not verified then).
    Failed,
    /// The verdict could not be reached: a check could not run, or the infrastructure failed first.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Error => "error",
        }
    }
}

/// The verification of one run (or of a regrade, `ohrun verify`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Verification {
    /// `shared` or `fresh`.
    pub mode: String,
    /// None while it runs, or when the run was not verified (`not_verified` says why).
    pub verdict: Option<Verdict>,
    /// The weighted mean of the checks' values (0–1); None when nothing was scored.
    pub score: Option<f64>,
    /// Every check, in the order run (per-step checks are in their step's report).
    pub checks: Vec<CheckResult>,
    /// Why the run was not verified (its agent did not finish, the infrastructure failed first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_verified: Option<String>,
    /// What verification noticed of the agent's doing (a `reward.json` written in advance, hidden files
    /// that were already there): it never trusts them, it says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// The fresh sandbox (mode `fresh`): its id and how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<VerifySandbox>,
    pub duration_ms: Option<u64>,
    /// What the judges' calls cost (also counted in the run's totals).
    pub cost: Usd,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct VerifySandbox {
    pub kind: String,
    pub id: Option<String>,
    pub working_dir: Option<String>,
    /// released, kept, release_failed, not_provisioned.
    pub disposition: String,
}

/// One check's result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct CheckResult {
    pub name: String,
    /// `run` (a command) or `judge`.
    pub kind: String,
    /// 0–1: 1 for exit 0 and 0 otherwise, or the score of its `reward.json`, or the judge's.
    pub value: Option<f64>,
    pub passed: bool,
    pub required: bool,
    pub weight: f64,
    pub exit_code: Option<i64>,
    /// The last lines of its output, redacted.
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub duration_ms: u64,
    /// The judge's, or the one in `reward.json`.
    pub explanation: Option<String>,
    /// Why it could not run (a verifier error): then it neither passed nor failed.
    pub error: Option<String>,
    /// What a judge's calls cost (whether or not it answered), with their tokens and number.
    #[serde(default, skip_serializing_if = "Usd::is_zero")]
    pub cost: Usd,
    #[serde(default, skip_serializing_if = "is_default")]
    pub tokens: crate::report::Tokens,
    #[serde(default, skip_serializing_if = "is_default")]
    pub llm_calls: u64,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The run's final patch: what the agent and setup changed, relative to the commit the run started from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PatchInfo {
    /// Beside run.json (`final.patch`), when there was a repository to take it from.
    pub file: Option<String>,
    /// The commit the working directory's repository was at before setup.
    pub base_commit: Option<String>,
    /// That commit's tree: a fresh sandbox whose setup makes an equal tree under another commit (a
    /// repository set up from scratch) is at the same base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_tree: Option<String>,
    /// The git tree of the final working directory (tracked and new files, `.gitignore`d ones left out):
    /// `git apply final.patch` onto `base_commit` gives this tree.
    pub tree: Option<String>,
    pub sha256: Option<String>,
    pub bytes: u64,
    /// How many paths it changes.
    pub paths: u64,
    /// Why there is no patch (no git repository in the working directory, git failed).
    pub error: Option<String>,
    /// A secret was masked in it (a file the agent wrote held one): it may no longer apply, and is never
    /// delivered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

/// A regrade (`ohrun verify`): `verify-N/verification.json` in the run's folder.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Regrade {
    pub format: u32,
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<u32>,
    /// What the checks were given: `final` (the run's own final patch), `empty` (no change), or the path of
    /// a reference patch.
    pub patch: String,
    /// The verdict the run had before.
    pub earlier_verdict: Option<Verdict>,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub verification: Verification,
}
