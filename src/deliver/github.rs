//! The GitHub REST calls of a delivery: find a pull request by its head branch, create or update it, its
//! labels and reviewers, and the batch's summary comment. Through the process's one HTTP client
//! (`net::shared_client`: redirects only within the same origin, so the token never follows one to
//! another host); rate limits (403/429 with `retry-after`, or `x-ratelimit-remaining: 0` with
//! `x-ratelimit-reset`) are waited out under `RetryPolicy::GITHUB`, bounded by the delivery's deadline.

use crate::cancel::Cancel;
use crate::net::retry::{Failure, Retry, RetryPolicy};
use crate::net::retry_after;
use crate::report::ApiRetry;
use reqwest::{Method, Url};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a call could not do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GithubError {
    /// The API answered with an error.
    #[error("{what} answered {status}: {message}")]
    Status { status: u16, what: String, message: String },
    /// No clear answer (no connection, a timeout, a 5xx): a create may or may not have happened.
    #[error("{what} failed: {detail}")]
    Unclear { what: String, detail: String },
}

impl GithubError {
    pub fn status(&self) -> Option<u16> {
        match self {
            GithubError::Status { status, .. } => Some(*status),
            GithubError::Unclear { .. } => None,
        }
    }
}

/// A pull request as the API describes it.
#[derive(Clone, Debug)]
pub struct PullRequest {
    pub number: u64,
    pub url: String,
    /// `open`, `draft`, `closed` or `merged`.
    pub state: String,
}

impl PullRequest {
    fn from_json(v: &Value) -> Option<PullRequest> {
        let merged = v.get("merged_at").is_some_and(|m| !m.is_null()) || v.get("merged") == Some(&Value::Bool(true));
        let state = match (v.get("state")?.as_str()?, merged, v.get("draft") == Some(&Value::Bool(true))) {
            (_, true, _) => "merged",
            ("closed", _, _) => "closed",
            (_, _, true) => "draft",
            _ => "open",
        };
        Some(PullRequest {
            number: v.get("number")?.as_u64()?,
            url: v.get("html_url").and_then(Value::as_str).unwrap_or_default().to_string(),
            state: state.to_string(),
        })
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state.as_str(), "open" | "draft")
    }
}

/// A client for one API base URL and token.
pub struct Github {
    base: Url,
    token: Option<String>,
    deadline: Instant,
    pub retries: Vec<ApiRetry>,
}

impl Github {
    pub fn new(api_url: &str, token: Option<String>, deadline: Instant) -> Result<Github, String> {
        let mut base = Url::parse(api_url).map_err(|e| format!("`deliver.api_url` {api_url} is not a URL: {e}"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Github { base, token, deadline, retries: Vec::new() })
    }

    /// The API's host, which paces the batch's creates.
    pub fn host(&self) -> String {
        self.base.origin().ascii_serialization()
    }

    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().extend(path);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// The repository's default branch.
    pub async fn default_branch(&mut self, owner: &str, repo: &str) -> Result<String, GithubError> {
        let v = self.call(Method::GET, &["repos", owner, repo], &[], None, true).await?;
        Ok(v.get("default_branch").and_then(Value::as_str).unwrap_or("main").to_string())
    }

    /// The pull request whose head is `head_owner:branch`, in any state (the newest when several).
    pub async fn find_pr(
        &mut self,
        owner: &str,
        repo: &str,
        head_owner: &str,
        branch: &str,
    ) -> Result<Option<PullRequest>, GithubError> {
        let head = format!("{head_owner}:{branch}");
        let query = [("head", head.as_str()), ("state", "all"), ("per_page", "100")];
        let v = self.call(Method::GET, &["repos", owner, repo, "pulls"], &query, None, true).await?;
        let prs = v.as_array().map(|a| a.iter().filter_map(PullRequest::from_json).collect::<Vec<_>>());
        Ok(prs.unwrap_or_default().into_iter().max_by_key(|p| p.number))
    }

    /// Opens a pull request; `Err` keeps the API's message (a 422 about drafts is the caller's to retry).
    pub async fn create_pr(
        &mut self,
        (owner, repo): (&str, &str),
        head: &str,
        base: &str,
        (title, body): (&str, &str),
        draft: bool,
    ) -> Result<PullRequest, GithubError> {
        let body = json!({"title": title, "head": head, "base": base, "body": body, "draft": draft});
        let v = self.call(Method::POST, &["repos", owner, repo, "pulls"], &[], Some(&body), false).await?;
        PullRequest::from_json(&v).ok_or_else(|| GithubError::Unclear {
            what: format!("POST /repos/{owner}/{repo}/pulls"),
            detail: "the answer names no pull request".into(),
        })
    }

    pub async fn update_pr(
        &mut self,
        (owner, repo): (&str, &str),
        number: u64,
        (title, body): (&str, &str),
    ) -> Result<PullRequest, GithubError> {
        let n = number.to_string();
        let patch = json!({"title": title, "body": body});
        let v = self.call(Method::PATCH, &["repos", owner, repo, "pulls", &n], &[], Some(&patch), true).await?;
        PullRequest::from_json(&v).ok_or_else(|| GithubError::Unclear {
            what: format!("PATCH /repos/{owner}/{repo}/pulls/{n}"),
            detail: "the answer names no pull request".into(),
        })
    }

    /// Adds labels (adding one it has is no change: safe to repeat).
    pub async fn add_labels(
        &mut self,
        (owner, repo): (&str, &str),
        number: u64,
        labels: &[String],
    ) -> Result<(), GithubError> {
        let n = number.to_string();
        let body = json!({"labels": labels});
        self.call(Method::POST, &["repos", owner, repo, "issues", &n, "labels"], &[], Some(&body), true).await.map(drop)
    }

    pub async fn request_reviewers(
        &mut self,
        (owner, repo): (&str, &str),
        number: u64,
        reviewers: &[String],
    ) -> Result<(), GithubError> {
        let n = number.to_string();
        let body = json!({"reviewers": reviewers});
        let path = ["repos", owner, repo, "pulls", &n, "requested_reviewers"];
        self.call(Method::POST, &path, &[], Some(&body), true).await.map(drop)
    }

    /// The issue's comments (first 100 pages of 100 at most; the marker is looked for in each).
    pub async fn find_comment(
        &mut self,
        (owner, repo): (&str, &str),
        issue: u64,
        marker: &str,
    ) -> Result<Option<u64>, GithubError> {
        let n = issue.to_string();
        for page in 1..=100u32 {
            let p = page.to_string();
            let query = [("per_page", "100"), ("page", p.as_str())];
            let v =
                self.call(Method::GET, &["repos", owner, repo, "issues", &n, "comments"], &query, None, true).await?;
            let comments = v.as_array().cloned().unwrap_or_default();
            let found =
                comments.iter().find(|c| c.get("body").and_then(Value::as_str).is_some_and(|b| b.contains(marker)));
            if let Some(id) = found.and_then(|c| c.get("id")).and_then(Value::as_u64) {
                return Ok(Some(id));
            }
            if comments.len() < 100 {
                break;
            }
        }
        Ok(None)
    }

    /// Posts a comment, or replaces comment `existing`; its URL.
    pub async fn put_comment(
        &mut self,
        (owner, repo): (&str, &str),
        issue: u64,
        existing: Option<u64>,
        body: &str,
    ) -> Result<String, GithubError> {
        let payload = json!({"body": body});
        let v = match existing {
            Some(id) => {
                let id = id.to_string();
                let path = ["repos", owner, repo, "issues", "comments", &id];
                self.call(Method::PATCH, &path, &[], Some(&payload), true).await?
            }
            None => {
                let n = issue.to_string();
                let path = ["repos", owner, repo, "issues", &n, "comments"];
                self.call(Method::POST, &path, &[], Some(&payload), false).await?
            }
        };
        Ok(v.get("html_url").and_then(Value::as_str).unwrap_or_default().to_string())
    }

    /// One request, tried again while the API limits the rate (any request: it did nothing) or, for an
    /// `idempotent` one, while it fails unclearly; a rate limit that lasts longer than the policy waits
    /// fails the call (the delivery can be resumed after the reset).
    async fn call(
        &mut self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Value, GithubError> {
        let url = self.url(path, query);
        let what = format!("{method} /{}", path.join("/"));
        let mut retried = Vec::new();
        let once = || self.once(&method, &url, body, &what);
        let log = |attempt, a: &Answer, wait: Duration| {
            let failure = a.error();
            retried.push(ApiRetry {
                method: method.to_string(),
                path: url.path().to_string(),
                attempt,
                status: failure.status(),
                reason: failure.to_string(),
                waited_ms: wait.as_millis() as u64,
            })
        };
        let answer = RetryPolicy::GITHUB.run(idempotent, Some(self.deadline), &mut Cancel::never(), once, log).await;
        self.retries.extend(retried);
        answer.map_err(Answer::into_error)
    }

    async fn once(&self, method: &Method, url: &Url, body: Option<&Value>, what: &str) -> Result<Value, Answer> {
        let mut req = crate::net::shared_client()
            .request(method.clone(), url.clone())
            .timeout(REQUEST_TIMEOUT.min(self.deadline.saturating_duration_since(Instant::now())))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let unclear = |detail: String| Answer::Failed(GithubError::Unclear { what: what.to_string(), detail });
        let resp =
            req.send().await.map_err(|e| unclear(if e.is_timeout() { "timed out".into() } else { e.to_string() }))?;
        let status = resp.status().as_u16();
        let limited = rate_limit_wait(status, resp.headers());
        let redirected = crate::net::redirect_detail(status, resp.headers());
        let text = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        let message = redirected.unwrap_or_else(|| api_message(&text));
        let failure = GithubError::Status { status, what: what.to_string(), message };
        match limited {
            Some(wait) => Err(Answer::Limited(failure, wait)),
            None if status >= 500 => Err(unclear(failure.to_string())),
            None => Err(Answer::Failed(failure)),
        }
    }
}

enum Answer {
    /// Rate-limited: try again after the wait (the policy's backoff when GitHub did not say).
    Limited(GithubError, Option<Duration>),
    Failed(GithubError),
}

impl Answer {
    fn error(&self) -> &GithubError {
        match self {
            Answer::Limited(e, _) | Answer::Failed(e) => e,
        }
    }

    fn into_error(self) -> GithubError {
        match self {
            Answer::Limited(e, _) | Answer::Failed(e) => e,
        }
    }
}

impl Failure for Answer {
    fn retry(&self) -> Retry {
        match self {
            Answer::Limited(..) => Retry::Refused,
            Answer::Failed(GithubError::Unclear { .. }) => Retry::Unclear,
            Answer::Failed(GithubError::Status { .. }) => Retry::Never,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Answer::Limited(_, wait) => *wait,
            Answer::Failed(_) => None,
        }
    }
}

/// How long GitHub asks a client to wait: a 403 or 429 with `retry-after` (secondary limits), or with
/// `x-ratelimit-remaining: 0` until `x-ratelimit-reset` (the primary limit); a 429 without either gets
/// the backoff (`Some(None)`). Another 403 is a refusal, not a limit.
fn rate_limit_wait(status: u16, headers: &reqwest::header::HeaderMap) -> Option<Option<Duration>> {
    if status != 403 && status != 429 {
        return None;
    }
    if let Some(wait) = retry_after(headers) {
        return Some(Some(wait));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if header("x-ratelimit-remaining") == Some("0")
        && let Some(reset) = header("x-ratelimit-reset").and_then(|r| r.parse::<u64>().ok())
    {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        return Some(Some(Duration::from_secs(reset.saturating_sub(now).max(1))));
    }
    (status == 429).then_some(None)
}

/// The API's `message` (and its first error's), or the body's start.
fn api_message(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(text) else { return crate::report::redact::cut(text, 300) };
    let message = v.get("message").and_then(Value::as_str).unwrap_or_default();
    let first = v.pointer("/errors/0/message").and_then(Value::as_str);
    match first {
        Some(e) => format!("{message}: {e}"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn rate_limits_are_read_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_limit_wait(403, &h), None, "a plain 403 is a refusal");
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(rate_limit_wait(403, &h), Some(Some(Duration::from_secs(3))));
        assert_eq!(rate_limit_wait(422, &h), None);
        let mut h = HeaderMap::new();
        let reset = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 5;
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&reset.to_string()).unwrap());
        let wait = rate_limit_wait(403, &h).unwrap().unwrap();
        assert!(wait >= Duration::from_secs(4) && wait <= Duration::from_secs(5), "{wait:?}");
    }

    #[test]
    fn pull_request_states() {
        let pr = |v: Value| PullRequest::from_json(&v).unwrap().state;
        assert_eq!(pr(json!({"number": 1, "state": "open", "draft": true})), "draft");
        assert_eq!(pr(json!({"number": 1, "state": "closed", "merged_at": "2026-01-01T00:00:00Z"})), "merged");
        assert_eq!(pr(json!({"number": 1, "state": "closed", "merged_at": null})), "closed");
        assert_eq!(
            api_message(
                r#"{"message":"Validation Failed","errors":[{"message":"Draft pull requests are not supported"}]}"#
            ),
            "Validation Failed: Draft pull requests are not supported"
        );
    }
}
