//! The job file's delivery: `deliver:` — push the run's final patch as a branch of ohrun's own and open
//! (or update) a pull request. Part of the job model (`model.rs`); the JSON Schema is generated from these
//! types too. What happens at run time is `crate::deliver`.

use super::values::SecretRef;
use super::values::{EnvString, HumanDuration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Deliver the agent's work from ohrun's side (never from inside the sandbox): the final patch committed
/// on the base commit in a private clone, pushed to a branch, and a pull request opened or updated.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverSpec {
    /// Which runs deliver: `passed` (default: the verdict is passed, or there are no checks and the run
    /// succeeded), `finished` (the agent finished, whatever the verdict) or `always`.
    #[serde(default)]
    pub when: DeliverWhen,
    /// The repository the branch is pushed to and the pull request opened in (an https URL); the
    /// `repo:` URL when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<EnvString>,
    /// The branch (templated): ohrun's own, force-pushed, so a rerun of the run id updates it. Default
    /// `ohrun/{{ run.id }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit's message (templated). Default: `ohrun: JOB (RUN_ID)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_message: Option<String>,
    /// The commit's author and committer, `Name <email>`. Default `ohrun <ohrun@users.noreply.github.com>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The pull request; `mode: none` pushes the branch only.
    #[serde(default)]
    pub pull_request: PullRequestSpec,
    /// The GitHub REST API (GitHub Enterprise: `https://HOST/api/v3`).
    #[serde(default = "DeliverSpec::default_api_url")]
    pub api_url: EnvString,
    /// The token for the push and the API, as a reference: `${GITHUB_TOKEN}`. It never enters the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// One comment on an issue with the batch's table (run, verdict, score, pull request, cost), updated
    /// on resume and rerun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_summary: Option<BatchSummarySpec>,
    /// Longest the whole delivery of one run may take (clone, push, API calls, waits for rate limits).
    #[serde(default = "DeliverSpec::default_timeout")]
    pub timeout: HumanDuration,
}

impl DeliverSpec {
    pub const DEFAULT_API_URL: &'static str = "https://api.github.com";
    fn default_api_url() -> EnvString {
        EnvString(Self::DEFAULT_API_URL.into())
    }
    fn default_timeout() -> HumanDuration {
        HumanDuration::secs(600)
    }
}

/// Which runs deliver their work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliverWhen {
    /// The verdict is `passed` (a run without checks: it succeeded).
    #[default]
    Passed,
    /// The agent finished every step, whatever the verdict.
    Finished,
    /// Every run with a final patch.
    Always,
}

impl DeliverWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliverWhen::Passed => "passed",
            DeliverWhen::Finished => "finished",
            DeliverWhen::Always => "always",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequestSpec {
    /// `draft` (default), `ready`, or `none` (push the branch only).
    #[serde(default)]
    pub mode: PrMode,
    /// Its title (templated). Default: the commit message's first line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its body (templated). Default: the agent's final message, the checks table, the cost and the run id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The branch it asks to merge into. Default: the repository's default branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Labels added to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Users asked to review it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviewers: Vec<String>,
    /// Push the branch to the fork `FORK_OWNER/NAME` and open the pull request against the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_owner: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrMode {
    /// Push the branch only.
    None,
    #[default]
    Draft,
    Ready,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSummarySpec {
    /// The issue to comment on: `owner/repo#N`.
    #[schemars(extend("pattern" = "^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+#[0-9]+$"))]
    pub issue: String,
}

/// `owner/repo#N` as its parts.
pub fn parse_issue(text: &str) -> Option<(&str, &str, u64)> {
    let (repo, n) = text.split_once('#')?;
    let (owner, name) = repo.split_once('/')?;
    let n: u64 = n.parse().ok()?;
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    (ok(owner) && ok(name) && n > 0).then_some((owner, name, n))
}

/// A branch name git accepts (`git check-ref-format`'s rules, the ones a template can break).
pub fn branch_problem(name: &str) -> Option<&'static str> {
    let bad_char = |c: char| c.is_ascii_control() || " ~^:?*[\\".contains(c);
    if name.is_empty() {
        Some("it is empty")
    } else if name.chars().any(bad_char) {
        Some("it has a space or one of ~ ^ : ? * [ \\")
    } else if name.contains("..") || name.contains("@{") || name.contains("//") {
        Some("it has `..`, `@{` or `//`")
    } else if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') || name.starts_with('-') {
        Some("it starts with `/` or `-`, or ends with `/` or `.`")
    } else if name.split('/').any(|part| part.starts_with('.') || part.ends_with(".lock")) {
        Some("a part of it starts with `.` or ends with `.lock`")
    } else {
        None
    }
}

/// An owner or user name GitHub accepts.
pub fn is_login(name: &str) -> bool {
    !name.is_empty() && name.len() <= 39 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_and_branches_are_checked() {
        assert_eq!(parse_issue("acme/tools#12"), Some(("acme", "tools", 12)));
        assert_eq!(parse_issue("acme/tools"), None);
        assert_eq!(parse_issue("acme#1"), None);
        assert!(branch_problem("ohrun/fix-1_a.b").is_none());
        assert!(branch_problem("ohrun/a b").is_some());
        assert!(branch_problem("a..b").is_some());
        assert!(branch_problem("x.lock").is_some());
        assert!(branch_problem("").is_some());
    }
}
