//! The agent-server's REST API. Every failure becomes an [`ApiError`] naming the method, the URL, the
//! status and the server's `detail`, so callers never format HTTP errors themselves.

use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub method: &'static str,
    pub url: String,
    /// None when no response came (connection refused, timeout, …).
    pub status: Option<u16>,
    pub detail: String,
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
    base: String,
    key: std::sync::Arc<std::sync::RwLock<Option<String>>>,
    http: reqwest::Client,
}

/// The output of a shell command run through the bash endpoint.
#[derive(Debug, Clone)]
pub struct BashResult {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl AgentClient {
    /// `request_timeout` bounds each request (long-running calls pass their own).
    pub fn new(base: &str, key: Option<String>, request_timeout: Duration) -> AgentClient {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("ohrun/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend is available");
        AgentClient {
            base: base.trim_end_matches('/').to_string(),
            key: std::sync::Arc::new(std::sync::RwLock::new(key)),
            http,
        }
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

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, Value), ApiError> {
        let url = self.url(path);
        let mut req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url),
        };
        if let Some(k) = self.session_key() {
            req = req.header("X-Session-API-Key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|e| ApiError {
            method,
            url: url.clone(),
            status: None,
            detail: error_chain(&e),
        })?;
        let status = resp.status().as_u16();
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
                Value::String(s) if !s.is_empty() => Some(s.chars().take(500).collect()),
                _ => None,
            }
            .unwrap_or_else(|| "no detail".into());
            Err(ApiError { method, url, status: Some(status), detail })
        }
    }

    async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.send("GET", path, None, None).await.map(|(_, v)| v)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.send("POST", path, Some(body), None).await.map(|(_, v)| v)
    }

    /// `GET /health`, without auth and with a short timeout: true when the server answers 2xx.
    pub async fn healthy(&self) -> bool {
        let url = self.url("/health");
        matches!(self.http.get(&url).timeout(Duration::from_secs(2)).send().await, Ok(r) if r.status().is_success())
    }

    pub async fn server_info(&self) -> Result<Value, ApiError> {
        self.get("/server_info").await
    }

    /// Runs a shell command and waits for it (`/bin/sh -c` in `cwd`); exit code -1 on timeout.
    pub async fn bash(&self, command: &str, cwd: &str, timeout: Duration) -> Result<BashResult, ApiError> {
        let secs = timeout.as_secs().max(1);
        let body = json!({"command": command, "cwd": cwd, "timeout": secs});
        let (_, v) = self
            .send("POST", "/api/bash/execute_bash_command", Some(&body), Some(Duration::from_secs(secs + 30)))
            .await?;
        Ok(BashResult {
            exit_code: v.get("exit_code").and_then(Value::as_i64).unwrap_or(-1),
            stdout: v.get("stdout").and_then(Value::as_str).unwrap_or_default().to_string(),
            stderr: v.get("stderr").and_then(Value::as_str).unwrap_or_default().to_string(),
        })
    }

    pub async fn create_conversation(&self, body: &Value) -> Result<Value, ApiError> {
        self.post("/api/conversations", body).await
    }

    pub async fn conversation(&self, cid: &str) -> Result<Value, ApiError> {
        self.get(&format!("/api/conversations/{cid}")).await
    }

    pub async fn send_message(&self, cid: &str, text: &str) -> Result<(), ApiError> {
        let body = json!({"role": "user", "content": [{"type": "text", "text": text}], "run": false});
        self.post(&format!("/api/conversations/{cid}/events"), &body).await.map(|_| ())
    }

    /// Starts a run; a 409 (already running) counts as started.
    pub async fn run(&self, cid: &str) -> Result<(), ApiError> {
        match self.send("POST", &format!("/api/conversations/{cid}/run"), Some(&json!({})), None).await {
            Ok(_) => Ok(()),
            Err(e) if e.status == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Cancels the in-flight LLM call and pauses the agent.
    pub async fn interrupt(&self, cid: &str) -> Result<(), ApiError> {
        self.post(&format!("/api/conversations/{cid}/interrupt"), &json!({})).await.map(|_| ())
    }

    /// The text of the agent's last finish action or message.
    pub async fn final_response(&self, cid: &str) -> Result<String, ApiError> {
        let v = self.get(&format!("/api/conversations/{cid}/agent_final_response")).await?;
        Ok(v.get("response").and_then(Value::as_str).unwrap_or_default().to_string())
    }

    pub async fn delete_conversation(&self, cid: &str) -> Result<(), ApiError> {
        self.send("DELETE", &format!("/api/conversations/{cid}"), None, None).await.map(|_| ())
    }

    /// Every persisted event of the conversation, oldest first (all pages).
    pub async fn all_events(&self, cid: &str) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut path = format!("/api/conversations/{cid}/events/search?limit=100");
            if let Some(p) = &page {
                path.push_str(&format!("&page_id={p}"));
            }
            let v = self.get(&path).await?;
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
