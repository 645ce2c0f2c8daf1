//! What run.json says about the repository a run started from and the artifacts it left.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The repository cloned into the working directory (`repo:`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct RepoInfo {
    /// Without credentials.
    pub url: String,
    /// As the job gave it (none: the remote's default branch).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// The commit the working directory was at when setup began (also `final_patch.base_commit`).
    pub base_commit: Option<String>,
    pub depth: Option<u32>,
    /// How long the clone and its copy into the sandbox took.
    #[serde(default)]
    pub duration_ms: u64,
    /// The size of the archive shipped into the sandbox.
    #[serde(default)]
    pub archive_bytes: u64,
}

/// One collected file, under the attempt's `artifacts/`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactInfo {
    /// Relative to the working directory (and to `artifacts/`).
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Whether the leak scan read it: text is scanned, binary files are listed but not scanned.
    pub scanned: bool,
}

/// The attempt's folder for the collected artifacts (the leak scan reads text artifacts there, and knows
/// they are the agent's files, not ohrun's).
pub const ARTIFACTS_DIR: &str = "artifacts";

/// What `artifacts:` collected.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Artifacts {
    /// `artifacts/`, relative to the attempt's folder.
    pub dir: String,
    pub files: Vec<ArtifactInfo>,
    /// Files the patterns matched that were over `artifacts_max`, with their sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedArtifact>,
    /// Why nothing (or not everything) could be collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct SkippedArtifact {
    pub path: String,
    pub size: u64,
}
