//! The agent-server's REST API. Every failure becomes an [`ApiError`] naming the method, the URL, the
//! status and the server's `detail`, so callers never format HTTP errors themselves.

use crate::cancel::Cancel;
use crate::net::retry::{Failure, Retry, RetryPolicy};
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub method: &'static str,
    pub url: String,
    /// None when no response came (connection refused, timeout, …).
    pub status: Option<u16>,
    pub detail: String,
    /// The server's `Retry-After` (seconds), when it sent one.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// Busy (429), failing (5xx) or no answer: worth another try later.
    pub fn is_transient(&self) -> bool {
        self.retry().is_transient()
    }
}

impl Failure for ApiError {
    fn retry(&self) -> Retry {
        Retry::of_status(self.status)
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} {} answered {s}: {}", self.method, self.url, self.detail),
            None => write!(f, "{} {} failed: {}", self.method, self.url, self.detail),
        }
    }
}

impl std::error::Error for ApiError {}

/// A client for one agent-server. Clones share the session key, which a provider may change when it
/// resumes a sandbox.
#[derive(Clone)]
pub struct AgentClient {
    /// The base URL as given (no trailing slash), for messages and the socket URL.
    base: String,
    /// The same with a trailing slash, so that joining keeps any path prefix.
    base_url: reqwest::Url,
    key: std::sync::Arc<std::sync::RwLock<Option<String>>>,
    http: reqwest::Client,
    /// Bounds each request (long-running calls pass their own).
    request_timeout: Duration,
    /// Stops the retries of reads once ohrun is asked to stop: a failed read is then not worth a wait.
    cancel: Cancel,
    /// Turns for requests to this server's origin, shared by every client of the process
    /// (`net::origin_turns`): a request holds one while it is sent and its answer read.
    turns: std::sync::Arc<tokio::sync::Semaphore>,
}

/// How long past a command's own timeout ohrun waits for the server to answer that it ended (the server
/// kills it at its timeout, then gives it a second or two to go).
pub const BASH_ANSWER_MARGIN: Duration = Duration::from_secs(30);

impl AgentClient {
    /// `request_timeout` bounds each request (long-running calls pass their own).
    pub fn new(base: &str, key: Option<String>, request_timeout: Duration) -> AgentClient {
        let base = base.trim_end_matches('/').to_string();
        // An unparseable base makes every request fail with a clear message rather than panic here.
        let base_url = reqwest::Url::parse(&format!("{base}/"))
            .unwrap_or_else(|_| reqwest::Url::parse("http://invalid.invalid/").expect("a URL"));
        let key = std::sync::Arc::new(std::sync::RwLock::new(key));
        let turns = crate::net::origin_turns(&base_url);
        AgentClient {
            base,
            base_url,
            key,
            http: crate::net::shared_client(),
            request_timeout,
            cancel: Cancel::never(),
            turns,
        }
    }

    /// The same client, whose retries stop when `cancel` fires.
    pub fn with_cancel(mut self, cancel: Cancel) -> AgentClient {
        self.cancel = cancel;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn session_key(&self) -> Option<String> {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the session key (a resumed sandbox may get a new one).
    pub fn set_session_key(&self, key: Option<String>) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    /// The URL of `path` (segments after the base, e.g. `["api", "conversations", cid]`, each
    /// percent-encoded on its own, so an id from a server can never add a segment or a query) with
    /// encoded query pairs. An empty, `.` or `..` segment would name another resource: refused.
    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> Result<reqwest::Url, String> {
        if let Some(bad) = path.iter().find(|s| s.is_empty() || s.chars().all(|c| c == '.')) {
            return Err(format!("`{bad}` cannot be a part of a URL path (an id the server gave?)"));
        }
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| format!("{} cannot be a base URL", self.base))?
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn send(
        &self,
        method: &'static str,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, Value), ApiError> {
        // The turn first: a request waiting for one holds no body or headers yet (at 10,000 runs, most of
        // a burst's requests wait here).
        let _turn = self.turns.acquire().await;
        let url = format!("{}/{}", self.base, path.join("/"));
        let target = self.url(path, query).map_err(|detail| ApiError {
            method,
            url: url.clone(),
            status: None,
            detail,
            retry_after: None,
        })?;
        tracing::debug!("{method} {url}");
        let sent = std::time::Instant::now();
        let mut req = match method {
            "GET" => self.http.get(target),
            "DELETE" => self.http.delete(target),
            _ => self.http.post(target),
        };
        if let Some(k) = self.session_key() {
            req = req.header("X-Session-API-Key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req = req.timeout(timeout.unwrap_or(self.request_timeout));
        let resp = req.send().await.map_err(|e| ApiError {
            method,
            url: url.clone(),
            status: None,
            detail: error_chain(&e),
            retry_after: None,
        })?;
        let status = resp.status().as_u16();
        tracing::debug!("{method} {url}: {status} after {} ms", sent.elapsed().as_millis());
        let retry_after = crate::net::retry_after(resp.headers());
        let redirected = crate::net::redirect_detail(status, resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            Ok((status, value))
        } else {
            let detail = match &value {
                Value::Object(m) => m.get("detail").or_else(|| m.get("exception")).map(|d| match d {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
                // Redacted before it is cut: a secret across the cut would leave its prefix.
                Value::String(s) if !s.is_empty() => Some(crate::report::redact::cut(s, 500)),
                _ => None,
            }
            .unwrap_or_else(|| "no detail".into());
            let detail = redirected.unwrap_or(detail);
            Err(ApiError { method, url, status: Some(status), detail, retry_after })
        }
    }

    /// A GET, tried again (after Retry-After or a backoff) while the server is busy, failing or silent:
    /// reading twice changes nothing on the server.
    async fn get(&self, path: &[&str], query: &[(&str, &str)]) -> Result<Value, ApiError> {
        let once = || async { self.send("GET", path, query, None, None).await.map(|(_, v)| v) };
        let log = |_, e: &ApiError, wait| tracing::info!("{e}; trying again in {wait:?}");
        RetryPolicy::AGENT_READ.run(true, None, &mut self.cancel.clone(), once, log).await
    }

    async fn post(&self, path: &[&str], body: &Value) -> Result<Value, ApiError> {
        self.send("POST", path, &[], Some(body), None).await.map(|(_, v)| v)
    }

    /// `GET /health`, without auth and with a short timeout: true when the server answers 2xx.
    pub async fn healthy(&self) -> bool {
        let Ok(url) = self.url(&["health"], &[]) else { return false };
        let _turn = self.turns.acquire().await;
        matches!(self.http.get(url).timeout(Duration::from_secs(2)).send().await, Ok(r) if r.status().is_success())
    }

    /// `GET /api/conversations/count`: a cheap call that needs the session key.
    pub async fn conversation_count(&self) -> Result<Value, ApiError> {
        self.get(&["api", "conversations", "count"], &[]).await
    }

    pub async fn server_info(&self) -> Result<Value, ApiError> {
        self.get(&["server_info"], &[]).await
    }

    /// Starts a shell command (`/bin/sh -c` in `cwd`, killed by the server after `timeout`); returns its id.
    pub async fn start_bash(&self, command: &str, cwd: &str, timeout: Duration) -> Result<String, ApiError> {
        let body = json!({"command": command, "cwd": cwd, "timeout": timeout.as_secs().max(1)});
        let v = self.post(&["api", "bash", "start_bash_command"], &body).await?;
        Ok(v.get("id").and_then(Value::as_str).unwrap_or_default().to_string())
    }

    /// Runs a shell command to its end in one request (`execute_bash_command`: the server answers when
    /// it has exited or its `timeout` killed it, with every output chunk joined): no polling.
    pub async fn execute_bash(&self, command: &str, cwd: &str, timeout: Duration) -> Result<Value, ApiError> {
        let body = json!({"command": command, "cwd": cwd, "timeout": timeout.as_secs().max(1)});
        let wait = Duration::from_secs(timeout.as_secs().max(1)) + BASH_ANSWER_MARGIN;
        self.send("POST", &["api", "bash", "execute_bash_command"], &[], Some(&body), Some(wait)).await.map(|(_, v)| v)
    }

    /// The id of the newest command (among the last hundred) whose text contains `tag`.
    pub async fn find_bash(&self, tag: &str) -> Result<Option<String>, ApiError> {
        let query = [("kind__eq", "BashCommand"), ("sort_order", "TIMESTAMP_DESC"), ("limit", "100")];
        let v = self.get(&["api", "bash", "bash_events", "search"], &query).await?;
        let items = v.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(items
            .iter()
            .find(|c| c.get("command").and_then(Value::as_str).is_some_and(|text| text.contains(tag)))
            .and_then(|c| c.get("id").and_then(Value::as_str))
            .map(str::to_string))
    }

    /// The output chunks of command `id` after chunk `after` (-1: all), in order; the last one carries
    /// `exit_code` once the command has ended.
    pub async fn bash_output(&self, id: &str, after: i64) -> Result<Vec<Value>, ApiError> {
        let after = after.to_string();
        let mut query =
            vec![("kind__eq", "BashOutput"), ("command_id__eq", id), ("sort_order", "TIMESTAMP"), ("limit", "100")];
        if after != "-1" {
            query.push(("order__gt", &after));
        }
        let v = self.get(&["api", "bash", "bash_events", "search"], &query).await?;
        Ok(v.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    /// Stops command `id` (TERM, then KILL, to its process group).
    pub async fn stop_bash(&self, id: &str) -> Result<(), ApiError> {
        self.post(&["api", "bash", "bash_commands", id, "stop"], &json!({})).await.map(|_| ())
    }

    /// Writes `bytes` to the absolute path `path` in the sandbox (`POST /api/file/upload`; parent
    /// directories are created).
    pub async fn upload_file(&self, path: &str, bytes: Vec<u8>) -> Result<(), ApiError> {
        let url = format!("{}/api/file/upload", self.base);
        let fail = |status, detail| ApiError { method: "POST", url: url.clone(), status, detail, retry_after: None };
        let target = self.url(&["api", "file", "upload"], &[("path", path)]).map_err(|d| fail(None, d))?;
        let name = path.rsplit('/').next().unwrap_or("file").to_string();
        let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(bytes).file_name(name));
        let mut req = self.http.post(target).multipart(form).timeout(self.request_timeout);
        if let Some(k) = self.session_key() {
            req = req.header("X-Session-API-Key", k);
        }
        let _turn = self.turns.acquire().await;
        let resp = req.send().await.map_err(|e| fail(None, error_chain(&e)))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(fail(Some(status), crate::report::redact::cut(&body, 500)))
    }

    /// The bytes of the file at the absolute path `path` in the sandbox (`GET /api/file/download`).
    pub async fn download_file(&self, path: &str) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}/api/file/download", self.base);
        let fail = |status, detail| ApiError { method: "GET", url: url.clone(), status, detail, retry_after: None };
        let target = self.url(&["api", "file", "download"], &[("path", path)]).map_err(|d| fail(None, d))?;
        let mut req = self.http.get(target).timeout(self.request_timeout);
        if let Some(k) = self.session_key() {
            req = req.header("X-Session-API-Key", k);
        }
        let _turn = self.turns.acquire().await;
        let resp = req.send().await.map_err(|e| fail(None, error_chain(&e)))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = resp.text().await.unwrap_or_default();
            return Err(fail(Some(status), crate::report::redact::cut(&body, 500)));
        }
        resp.bytes().await.map(|b| b.to_vec()).map_err(|e| fail(Some(status), error_chain(&e)))
    }

    pub async fn create_conversation(&self, body: &Value) -> Result<Value, ApiError> {
        self.post(&["api", "conversations"], body).await
    }

    pub async fn conversation(&self, cid: &str) -> Result<Value, ApiError> {
        self.get(&["api", "conversations", cid], &[]).await
    }

    pub async fn send_message(&self, cid: &str, text: &str) -> Result<(), ApiError> {
        let body = json!({"role": "user", "content": [{"type": "text", "text": text}], "run": false});
        self.post(&["api", "conversations", cid, "events"], &body).await.map(|_| ())
    }

    /// Starts a run; a 409 (already running) counts as started.
    pub async fn run(&self, cid: &str) -> Result<(), ApiError> {
        match self.send("POST", &["api", "conversations", cid, "run"], &[], Some(&json!({})), None).await {
            Ok(_) => Ok(()),
            Err(e) if e.status == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lets an agent that waits for a confirmation go on (`POST /run`). Unlike [`Self::run`], a 409 is an
    /// error here: the last run is still winding down, so its agent has not stopped to wait yet.
    pub async fn go_on(&self, cid: &str) -> Result<(), ApiError> {
        self.send("POST", &["api", "conversations", cid, "run"], &[], Some(&json!({})), None).await.map(|_| ())
    }

    /// Cancels the in-flight LLM call and pauses the agent.
    pub async fn interrupt(&self, cid: &str) -> Result<(), ApiError> {
        self.post(&["api", "conversations", cid, "interrupt"], &json!({})).await.map(|_| ())
    }

    pub async fn delete_conversation(&self, cid: &str) -> Result<(), ApiError> {
        self.send("DELETE", &["api", "conversations", cid], &[], None, None).await.map(|_| ())
    }

    /// The persisted events of the conversation, oldest first (all pages); with `since` (an event
    /// timestamp as the server wrote it) only those at or after it: a reconcile fetches what is new, not
    /// the whole log again.
    pub async fn events(&self, cid: &str, since: Option<&str>) -> Result<Vec<Value>, ApiError> {
        self.search_events(cid, since, &[]).await
    }

    /// The user messages stored since `since`: how ohrun tells whether a message whose POST failed
    /// unclearly was stored after all.
    pub async fn user_messages(&self, cid: &str, since: Option<&str>) -> Result<Vec<Value>, ApiError> {
        self.search_events(cid, since, &[("kind", "MessageEvent"), ("source", "user")]).await
    }

    async fn search_events(
        &self,
        cid: &str,
        since: Option<&str>,
        filter: &[(&str, &str)],
    ) -> Result<Vec<Value>, ApiError> {
        let path = ["api", "conversations", cid, "events", "search"];
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut query: Vec<(&str, &str)> = vec![("limit", "100")];
            query.extend_from_slice(filter);
            if let Some(ts) = since {
                query.push(("timestamp__gte", ts));
            }
            if let Some(p) = &page {
                query.push(("page_id", p));
            }
            let v = self.get(&path, &query).await?;
            if let Some(items) = v.get("items").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            match v.get("next_page_id").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => page = Some(next.to_string()),
                _ => return Ok(out),
            }
        }
    }
}

/// A reqwest error with its causes ("connection refused", …), which its Display leaves out.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() { "timed out".to_string() } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
