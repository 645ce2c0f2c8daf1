//! HTTP for the sandbox providers (Cloud API, Runtime API): every request bounded by `api_timeout`,
//! retried with exponential backoff and jitter when that is safe (idempotent requests, or any request the
//! server refused with 429/503 before doing anything), honouring Retry-After. Every retry is recorded for
//! the report. Keys travel only in headers and never appear in errors or logs.

use crate::report::ApiRetry;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_ATTEMPTS: u32 = 6;

#[derive(Debug, Clone)]
pub enum ApiFailure {
    /// 401/403: the key is wrong or missing.
    Auth { status: u16, what: String },
    /// Any other HTTP error, after retries.
    Status { status: u16, what: String, detail: String, retry_after: Option<Duration> },
    /// No answer (connection refused, timeout), after retries.
    Transport { what: String, detail: String },
}

impl ApiFailure {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiFailure::Auth { status, .. } | ApiFailure::Status { status, .. } => Some(*status),
            ApiFailure::Transport { .. } => None,
        }
    }

    /// What the server asked us to wait (Retry-After), if anything.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiFailure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Worth another try later (the server was busy or unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiFailure::Status { status, .. } => *status == 429 || *status >= 500,
            ApiFailure::Transport { .. } => true,
            ApiFailure::Auth { .. } => false,
        }
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiFailure::Auth { status, what } => {
                write!(f, "{what} was refused with {status}: the API key is not accepted")
            }
            ApiFailure::Status { status, what, detail, .. } => write!(f, "{what} answered {status}: {detail}"),
            ApiFailure::Transport { what, detail } => write!(f, "{what} failed: {detail}"),
        }
    }
}

#[derive(Clone)]
pub struct ProviderApi {
    base: String,
    http: reqwest::Client,
    auth_header: &'static str,
    auth_value: String,
    retries: Arc<Mutex<Vec<ApiRetry>>>,
}

impl ProviderApi {
    pub fn new(base: &str, auth_header: &'static str, auth_value: String, timeout: Duration) -> ProviderApi {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("ohrun/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend is available");
        ProviderApi {
            base: base.trim_end_matches('/').to_string(),
            http,
            auth_header,
            auth_value,
            retries: Arc::default(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The retries so far, for the report.
    pub fn retries(&self) -> Vec<ApiRetry> {
        self.retries.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits before retrying a request that failed with `f` (Retry-After if the server gave one, else
    /// backoff) and records the retry.
    pub async fn wait_before_retry(&self, method: &str, path: &str, attempt: u32, f: &ApiFailure) {
        let wait = f.retry_after().unwrap_or_else(|| backoff(attempt));
        self.record_retry(ApiRetry {
            method: method.to_string(),
            path: path.to_string(),
            attempt,
            status: f.status(),
            reason: f.to_string(),
            waited_ms: wait.as_millis() as u64,
        });
        tokio::time::sleep(wait).await;
    }

    fn record_retry(&self, r: ApiRetry) {
        tracing::info!("retrying {} {} after {} ms ({})", r.method, r.path, r.waited_ms, r.reason);
        self.retries.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    /// One request, retried while that is safe and `deadline` allows. `idempotent` requests are retried on
    /// any transient failure; others only on 429 (the server did not act on it): for those, the caller
    /// decides, because a 5xx or a timeout may come after the work was done.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
        deadline: Option<Instant>,
    ) -> Result<Value, ApiFailure> {
        let what = format!("{method} {}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (failure, retry_after) = match self.once(&method, path, body, &what).await {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            let safe = match &failure {
                ApiFailure::Status { status: 429, .. } => true,
                f => idempotent && f.is_transient(),
            };
            let wait = retry_after.unwrap_or_else(|| backoff(attempt));
            let over_deadline = deadline.is_some_and(|d| Instant::now() + wait >= d);
            if !safe || attempt >= MAX_ATTEMPTS || over_deadline {
                return Err(failure);
            }
            self.record_retry(ApiRetry {
                method: method.to_string(),
                path: path.split('?').next().unwrap_or(path).to_string(),
                attempt,
                status: failure.status(),
                reason: failure.to_string(),
                waited_ms: wait.as_millis() as u64,
            });
            tokio::time::sleep(wait).await;
        }
    }

    async fn once(
        &self,
        method: &reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, (ApiFailure, Option<Duration>)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header(self.auth_header, &self.auth_value);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            let detail = if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "connection refused or unreachable".to_string()
            } else {
                e.to_string()
            };
            (ApiFailure::Transport { what: what.to_string(), detail }, None)
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(60)));
        let text = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        if status == 401 || status == 403 {
            return Err((ApiFailure::Auth { status, what: what.to_string() }, None));
        }
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("detail").or_else(|| v.get("error")).or_else(|| v.get("message")).cloned())
            .map(|d| d.as_str().map(str::to_string).unwrap_or_else(|| d.to_string()))
            .unwrap_or_else(|| text.chars().take(300).collect());
        Err((ApiFailure::Status { status, what: what.to_string(), detail, retry_after }, retry_after))
    }
}

/// 0.5 s, 1 s, 2 s, … up to 10 s, each ±25 % so that many clients do not retry in step.
pub fn backoff(attempt: u32) -> Duration {
    let base = 0.5 * 2f64.powi(attempt.saturating_sub(1).min(5) as i32);
    let jitter = 0.75 + fastrand::f64() * 0.5;
    Duration::from_secs_f64((base * jitter).min(10.0))
}

/// http to a host that is not loopback sends the key in clear text.
pub fn check_transport(url: &str, allow_insecure_http: bool, what: &str) -> Result<(), String> {
    if url.starts_with("https://")
        || allow_insecure_http
        || (url.starts_with("http://") && crate::settings::is_loopback_url(url))
    {
        return Ok(());
    }
    if url.starts_with("http://") {
        return Err(format!(
            "`{what}` is plain http to a host that is not loopback ({url}): the API key would travel in clear text; use https, or set `allow_insecure_http: true`"
        ));
    }
    Err(format!("`{what}` must be an http(s) URL, not `{url}`"))
}
