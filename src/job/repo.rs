//! The job file's repository input (`repo:`) and its artifacts out (`artifacts:`, `artifacts_max`).
//! Part of the job model (`model.rs`); the JSON Schema is generated from these types too.

use super::values::SecretRef;
use super::values::{EnvString, HumanDuration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A git repository cloned on ohrun's side and shipped, with its `.git`, into the sandbox's working
/// directory before setup.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoSpec {
    /// `https://…`; `http://` only to a loopback host; `file://…` or a path on this machine.
    pub url: EnvString,
    /// A branch, a tag or a full commit sha; default: the remote's default branch.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Clone only this many commits of history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    /// For a private repository: `${VAR}` only. Sent by ohrun's git as an HTTP header; never in the
    /// sandbox, the clone's `.git/config` or any report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// Longest the clone may take.
    #[serde(default = "RepoSpec::default_timeout")]
    pub timeout: HumanDuration,
}

impl RepoSpec {
    fn default_timeout() -> HumanDuration {
        HumanDuration::secs(10 * 60)
    }
}

/// One artifact pattern: a glob relative to the working directory (`**` crosses directories, dotfiles
/// match), or the same with the outcomes it is collected after.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ArtifactSpec {
    Glob(String),
    Entry(ArtifactEntry),
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactEntry {
    pub path: String,
    #[serde(default)]
    pub when: ArtifactWhen,
}

/// After which runs a pattern is collected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactWhen {
    #[default]
    Always,
    OnSuccess,
    OnFailure,
}

impl ArtifactSpec {
    pub fn path(&self) -> &str {
        match self {
            ArtifactSpec::Glob(p) => p,
            ArtifactSpec::Entry(e) => &e.path,
        }
    }
    pub fn when(&self) -> ArtifactWhen {
        match self {
            ArtifactSpec::Glob(_) => ArtifactWhen::Always,
            ArtifactSpec::Entry(e) => e.when,
        }
    }
}

/// Why a repository URL cannot be used (`token`: whether a token would travel with it), or None.
pub fn url_problem(url: &str, has_token: bool) -> Option<String> {
    if url.starts_with('/') || url.starts_with("./") || url.starts_with("../") {
        return None;
    }
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Some(format!("`repo.url` `{url}` is not a URL nor a path"));
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("`repo.url` carries credentials; put the token in `repo.token: ${VAR}` instead".into());
    }
    let loopback = crate::net::is_loopback_url(url);
    match parsed.scheme() {
        "https" | "file" => None,
        "http" if loopback => None,
        "http" if has_token => Some(format!(
            "`repo.url` is plain http to a host that is not loopback ({url}): the token would travel in clear text"
        )),
        "http" => Some(format!("`repo.url` is plain http to a host that is not loopback ({url})")),
        other => Some(format!("`repo.url` has scheme `{other}`; ohrun clones over https (or http to loopback, file)")),
    }
}

#[cfg(test)]
mod tests {
    use super::url_problem;

    #[test]
    fn urls() {
        assert!(url_problem("https://github.com/a/b.git", true).is_none());
        assert!(url_problem("http://127.0.0.1:9/a.git", true).is_none());
        assert!(url_problem("/srv/git/a.git", false).is_none());
        assert!(url_problem("http://example.com/a.git", true).unwrap().contains("clear text"));
        assert!(url_problem("http://example.com/a.git", false).is_some());
        assert!(url_problem("https://u:p@github.com/a/b.git", false).unwrap().contains("credentials"));
        assert!(url_problem("git@github.com:a/b.git", false).is_some());
    }
}

/// A size in bytes: a number, or `100MB`, `512KiB`, `2GB` (decimal units: 1 MB is 1,000,000 bytes;
/// binary ones with `i`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(extend("type" = ["string", "integer"], "pattern" = "^[0-9]+ ?([KMGT]i?B|B)?$"))]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn default_artifacts_max() -> ByteSize {
        ByteSize(100_000_000)
    }
    fn is_default_artifacts_max(&self) -> bool {
        self.0 == 100_000_000
    }

    pub fn parse(text: &str) -> Option<ByteSize> {
        let t = text.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let n: u64 = t[..digits].parse().ok()?;
        let unit: u64 = match t[digits..].trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => return None,
        };
        n.checked_mul(unit).map(ByteSize)
    }
}

/// Serialized as a plain number of bytes; skipped when it is the default.
pub fn is_default_artifacts_max(b: &ByteSize) -> bool {
    b.is_default_artifacts_max()
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{t}` is not a size; write e.g. `100MB`, `512KiB` or a number of bytes"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::ByteSize;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("100MB"), Some(ByteSize(100_000_000)));
        assert_eq!(ByteSize::parse("2 KiB"), Some(ByteSize(2048)));
        assert_eq!(ByteSize::parse("17"), Some(ByteSize(17)));
        assert_eq!(ByteSize::parse("1 XB"), None);
    }
}
