//! What the two remote providers (Cloud API, Runtime API) share: one HTTP client that bounds every
//! request by `api_timeout`, retries when that is safe (idempotent requests, or any request the server
//! refused with 429 before acting), honours Retry-After and records every retry for the report; the
//! polling loop that waits for a sandbox to be ready; and "never create blindly": after an unclear failure
//! of a create request, look for what it may have made before trying again. Keys travel only in headers.

use super::{Error, ErrorKind};
use crate::cancel::Cancel;
use crate::net::retry::{Failure, Retry, RetryPolicy};
use crate::net::{check_transport, retry_after};
use crate::report::ApiRetry;
use reqwest::{Method, Url};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiFailure {
    /// 401/403: the key is wrong or missing.
    #[error("{what} was refused with {status}: the API key is not accepted")]
    Auth { status: u16, what: String },
    /// Any other HTTP error, after retries.
    #[error("{what} answered {status}: {detail}")]
    Status { status: u16, what: String, detail: String, retry_after: Option<Duration> },
    /// No answer (connection refused, timeout), after retries.
    #[error("{what} failed: {detail}")]
    Transport { what: String, detail: String },
}

impl ApiFailure {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiFailure::Auth { status, .. } | ApiFailure::Status { status, .. } => Some(*status),
            ApiFailure::Transport { .. } => None,
        }
    }

    /// Worth another try later (the server was busy or unreachable).
    pub fn is_transient(&self) -> bool {
        self.retry().is_transient()
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiFailure::Status { status: 404, .. })
    }

    /// The backend error for this failure; a refused key gets a hint naming where it came from.
    pub fn into_error(self, key_var: &str, api: &str) -> Error {
        let kind = if self.is_transient() { ErrorKind::Transient } else { ErrorKind::Failed };
        match &self {
            ApiFailure::Auth { .. } => Error::new(ErrorKind::Failed, self.to_string())
                .hint(format!("check the {api} key in {key_var} (and `sandbox.api_url`)")),
            _ => Error::new(kind, self.to_string()),
        }
    }
}

impl Failure for ApiFailure {
    fn retry(&self) -> Retry {
        match self {
            ApiFailure::Auth { .. } => Retry::Never,
            ApiFailure::Status { status, .. } => Retry::of_status(Some(*status)),
            ApiFailure::Transport { .. } => Retry::Unclear,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiFailure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A provider's API: base URL, auth header and the log of retries (shared by clones). Waits between
/// retries end when `cancel` fires (an interrupted provisioning stops retrying); a release uses a clone
/// that never cancels, so it keeps trying to give the sandbox back.
#[derive(Clone)]
pub struct ProviderApi {
    base: Url,
    http: reqwest::Client,
    /// Bounds each request (`api_timeout`).
    timeout: Duration,
    auth_header: &'static str,
    auth_value: String,
    retries: Arc<Mutex<Vec<ApiRetry>>>,
    cancel: Cancel,
}

impl ProviderApi {
    pub fn new(base: &str, auth_header: &'static str, auth_value: String, timeout: Duration) -> Result<Self, Error> {
        let mut base = Url::parse(base).map_err(|e| {
            Error::new(ErrorKind::Failed, format!("`{base}` is not a URL: {e}")).hint("check `sandbox.api_url`")
        })?;
        // A trailing slash makes `join` keep any path prefix (`https://host/prefix/`).
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = crate::net::shared_client();
        Ok(ProviderApi {
            base,
            http,
            timeout,
            auth_header,
            auth_value,
            retries: Arc::default(),
            cancel: Cancel::never(),
        })
    }

    /// The same API (and retry log), whose retries stop when `cancel` fires.
    pub fn with_cancel(mut self, cancel: Cancel) -> ProviderApi {
        self.cancel = cancel;
        self
    }

    /// The base URL as given (no trailing slash), for messages.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `path` (segments after the base, e.g. `["api", "v1", "sandboxes", id]`, each percent-encoded on
    /// its own, so an id can never add a segment or a query) with query pairs, properly encoded. An empty,
    /// `.` or `..` segment, which the URL would drop or resolve to another resource, is kept as a
    /// segment no resource has (`%..`).
    pub fn url(&self, path: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        let segments = path.iter().map(|s| if s.chars().all(|c| c == '.') { format!("%{s}") } else { s.to_string() });
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// The retries so far, for the report.
    pub fn retries(&self) -> Vec<ApiRetry> {
        self.retries.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record_retry(&self, method: &Method, url: &Url, attempt: u32, failure: &ApiFailure, wait: Duration) {
        let r = ApiRetry {
            method: method.to_string(),
            path: url.path().to_string(),
            attempt,
            status: failure.status(),
            reason: failure.to_string(),
            waited_ms: wait.as_millis() as u64,
        };
        tracing::info!("retrying {} {} after {} ms ({})", r.method, r.path, r.waited_ms, r.reason);
        self.retries.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    /// Waits before another attempt of a create that failed with `f` and made nothing (Retry-After,
    /// else backoff), and records it. False when no try is left, the wait would pass `deadline` or
    /// ohrun was cancelled meanwhile.
    pub async fn wait_before_retry(
        &self,
        method: &Method,
        url: &Url,
        attempt: u32,
        f: &ApiFailure,
        deadline: Instant,
        cancel: &mut Cancel,
    ) -> bool {
        // Repeating is safe here: the caller found that the failed request made nothing.
        let Some(wait) = RetryPolicy::PROVIDER.wait_for(attempt, f, true, Some(deadline)) else { return false };
        self.record_retry(method, url, attempt, f, wait);
        !cancel.sleep(wait).await
    }

    /// One request, retried while that is safe and `deadline` allows. `idempotent` requests are retried on
    /// any transient failure; others only on 429 (the server did not act on it): for those the caller
    /// decides, because a 5xx or a timeout may come after the work was done.
    pub async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        idempotent: bool,
        deadline: Option<Instant>,
    ) -> Result<Value, ApiFailure> {
        let mut cancel = self.cancel.clone();
        let once = || self.once(&method, &url, body);
        let log = |attempt, f: &ApiFailure, wait| self.record_retry(&method, &url, attempt, f, wait);
        RetryPolicy::PROVIDER.run(idempotent, deadline, &mut cancel, once, log).await
    }

    async fn once(&self, method: &Method, url: &Url, body: Option<&Value>) -> Result<Value, ApiFailure> {
        let what = format!("{method} {}", url.as_str().split('?').next().unwrap_or_default());
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .timeout(self.timeout)
            .header(self.auth_header, &self.auth_value);
        if let Some(b) = body {
            req = req.json(b);
        }
        tracing::debug!("{what}");
        let resp = req.send().await.map_err(|e| {
            let detail = if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "connection refused or unreachable".to_string()
            } else {
                e.to_string()
            };
            ApiFailure::Transport { what: what.clone(), detail }
        })?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let redirected = crate::net::redirect_detail(status, resp.headers());
        let text = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        if status == 401 || status == 403 {
            return Err(ApiFailure::Auth { status, what });
        }
        if let Some(detail) = redirected {
            return Err(ApiFailure::Status { status, what, detail, retry_after });
        }
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("detail").or_else(|| v.get("error")).or_else(|| v.get("message")).cloned())
            .map(|d| d.as_str().map(str::to_string).unwrap_or_else(|| d.to_string()))
            .unwrap_or_else(|| crate::report::redact::cut(&text, 300));
        Err(ApiFailure::Status { status, what, detail, retry_after })
    }
}

/// Before giving a provider's sandbox back: nothing to do if that was done already, or if it is kept.
pub fn release_shortcut(released: bool, keep: bool) -> Option<super::Released> {
    match (released, keep) {
        (true, _) => Some(super::Released::Released),
        (false, true) => Some(super::Released::Kept),
        (false, false) => None,
    }
}

/// After the delete or stop: remembered when it worked (a second release does nothing), loud when not.
pub fn released(done: &mut bool, result: Result<(), String>) -> super::Released {
    match result {
        Ok(()) => {
            *done = true;
            super::Released::Released
        }
        Err(e) => super::Released::Failed(e),
    }
}

/// The agent-server URL a provider returned: its session key, the LLM key and the conversation's secrets
/// must not travel over plain http to a far host either (the sandbox is released as for any failed
/// provisioning: exit 3).
pub fn check_agent_url(url: &str, carries_key: bool, allow_insecure_http: bool) -> Result<(), super::Error> {
    if !carries_key {
        return Ok(());
    }
    check_transport(url, allow_insecure_http, "the agent-server URL the provider returned")
        .map_err(|e| super::Error::failed(e).hint("the provider should return an https URL"))
}

/// What one look at a starting sandbox found.
pub enum Poll<T> {
    Ready(T),
    /// Not yet (starting, pending, or ready but its agent-server does not answer yet).
    Waiting,
}

/// Calls `look` until it is ready, fails, `deadline` passes or ohrun is cancelled; the interval grows
/// from 250 ms to 5 s. `what` names the sandbox and `limit` the limit (with a hint) in the timeout error.
pub async fn poll_until<T, F, Fut>(
    deadline: Instant,
    cancel: &mut Cancel,
    limit: (String, &str),
    what: &str,
    mut look: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Poll<T>, Error>>,
{
    let mut interval = Duration::from_millis(250);
    loop {
        if cancel.is_set() {
            return Err(Error::interrupted());
        }
        if Instant::now() >= deadline {
            return Err(Error::new(ErrorKind::NotReady, format!("{what} did not become ready within {}", limit.0))
                .hint(limit.1));
        }
        match look().await {
            Ok(Poll::Ready(v)) => return Ok(v),
            Ok(Poll::Waiting) => {}
            // A request whose retries were cut short by Ctrl-C failed because of it.
            Err(_) if cancel.is_set() => return Err(Error::interrupted()),
            Err(e) => return Err(e),
        }
        if cancel.sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await {
            return Err(Error::interrupted());
        }
        interval = (interval * 3 / 2).min(Duration::from_secs(5));
    }
}

/// What a look after an unclear create failure found.
pub enum Found {
    /// The failed request made this sandbox after all.
    Ours(Value),
    /// Nothing was made: creating again is safe.
    Nothing,
    /// Something may have been made but it cannot be told apart from others' sandboxes.
    Unsure(Vec<String>),
    /// The look itself failed; what the request made (if anything) is still ours to find later.
    Failed,
}

/// Creates a sandbox without ever creating two: a failure after which the server may have acted (5xx,
/// timeout) is followed by `find`, and only when it finds nothing is the request sent again.
#[allow(clippy::too_many_arguments)]
pub async fn create_never_blind<F, Fut>(
    api: &ProviderApi,
    url: Url,
    body: Option<&Value>,
    deadline: Instant,
    cancel: &mut Cancel,
    key_var: &str,
    api_name: &str,
    mut find: F,
) -> Result<Value, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Found>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match api.call(Method::POST, url.clone(), body, false, Some(deadline)).await {
            Ok(v) => return Ok(v),
            Err(f) => f,
        };
        if !failure.is_transient() {
            return Err(failure.into_error(key_var, api_name));
        }
        match find().await {
            Found::Ours(v) => return Ok(v),
            Found::Unsure(candidates) if candidates.is_empty() => {
                return Err(Error::new(
                    ErrorKind::Unsure(Vec::new()),
                    format!("{failure}; the request may have created a sandbox, and the account's sandboxes could not be listed to find out"),
                )
                .hint("look at the account's sandboxes and delete one this run may have made; ohrun did not retry, so it made at most one"));
            }
            Found::Unsure(candidates) => {
                return Err(Error::new(
                    ErrorKind::Unsure(candidates.clone()),
                    format!(
                        "{failure}; the request may have created a sandbox, and {} appeared meanwhile that ohrun cannot tell apart from others': {}",
                        if candidates.len() == 1 { "one" } else { "several" },
                        candidates.join(", ")
                    ),
                )
                .hint("check these sandboxes and delete the one this run made; ohrun did not use or delete any of them"));
            }
            Found::Failed => return Err(failure.into_error(key_var, api_name)),
            Found::Nothing => {}
        }
        if !api.wait_before_retry(&Method::POST, &url, attempt, &failure, deadline, cancel).await {
            return Err(if cancel.is_set() { Error::interrupted() } else { failure.into_error(key_var, api_name) });
        }
    }
}
