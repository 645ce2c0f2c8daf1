//! `kind: cloud`: OpenHands Cloud (the SDK's OpenHandsCloudWorkspace), keeping its protocol but not its
//! flaws: `init_timeout` bounds the whole provisioning (create, wait until RUNNING, health), creation is
//! never blindly repeated (after an unclear failure ohrun looks for the sandbox it may have made), a paused
//! sandbox is resumed once, the session key is re-read after every poll, only a sandbox ohrun created is
//! ever deleted, and a failed delete is retried and then reported loudly with the sandbox id.

use super::api::{ApiFailure, ProviderApi};
use super::{Probe, ProvisionError};
use crate::agent::http::AgentClient;
use reqwest::Method;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct CloudSettings {
    pub api_url: String,
    pub api_key: String,
    /// The environment variable the key came from, for hints.
    pub key_var: String,
    pub sandbox_spec_id: Option<String>,
    pub init_timeout: Duration,
    pub api_timeout: Duration,
    pub working_dir: String,
}

pub struct CloudSandbox {
    pub api: ProviderApi,
    pub id: String,
    resumed: AtomicBool,
}

fn auth_error(f: &ApiFailure, key_var: &str) -> ProvisionError {
    ProvisionError {
        message: f.to_string(),
        hint: Some(format!("check the Cloud API key in {key_var} (and `sandbox.api_url`)")),
        log_tail: None,
    }
}

fn error(message: String) -> ProvisionError {
    ProvisionError { message, hint: None, log_tail: None }
}

/// Ids of the sandboxes the account has now (all pages), or None if the server cannot list them.
async fn sandbox_ids(api: &ProviderApi, deadline: Instant) -> Option<HashSet<String>> {
    let mut ids = HashSet::new();
    let mut page: Option<String> = None;
    for _ in 0..50 {
        let path = match &page {
            Some(p) => format!("/api/v1/sandboxes/search?limit=100&page_id={p}"),
            None => "/api/v1/sandboxes/search?limit=100".to_string(),
        };
        let v = api.call(Method::GET, &path, None, true, Some(deadline)).await.ok()?;
        for item in v.get("items").and_then(Value::as_array)? {
            if let Some(id) = item.get("id").and_then(Value::as_str) {
                ids.insert(id.to_string());
            }
        }
        match v.get("next_page_id").and_then(Value::as_str) {
            Some(p) if !p.is_empty() => page = Some(p.to_string()),
            _ => return Some(ids),
        }
    }
    Some(ids)
}

/// Creates the sandbox and waits until its agent-server answers. On failure after creation, the sandbox
/// is deleted before the error is returned.
pub async fn start(
    s: &CloudSettings,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(CloudSandbox, AgentClient, Value), ProvisionError> {
    let deadline = Instant::now() + s.init_timeout;
    let api = ProviderApi::new(&s.api_url, "Authorization", format!("Bearer {}", s.api_key), s.api_timeout);
    let create_path = match &s.sandbox_spec_id {
        Some(spec) => format!("/api/v1/sandboxes?sandbox_spec_id={}", urlencode(spec)),
        None => "/api/v1/sandboxes".to_string(),
    };
    // What existed before, so that after an unclear failure (5xx, timeout) we can tell whether our
    // create went through before trying again. None: the server cannot list, so we cannot tell.
    let before = sandbox_ids(&api, deadline).await;
    let mut attempt = 0;
    let id = loop {
        attempt += 1;
        match api.call(Method::POST, &create_path, None, false, Some(deadline)).await {
            Ok(v) => match v.get("id").and_then(Value::as_str) {
                Some(id) => break id.to_string(),
                None => return Err(error(format!("the Cloud API created a sandbox but sent no id: {v}"))),
            },
            Err(f @ ApiFailure::Auth { .. }) => return Err(auth_error(&f, &s.key_var)),
            Err(f) if f.is_transient() && Instant::now() < deadline && attempt < 6 => {
                let (Some(old), Some(now)) = (&before, sandbox_ids(&api, deadline).await) else {
                    return Err(error(format!("{f}; not retrying: the sandbox may exist and cannot be looked up")));
                };
                if let Some(found) = now.difference(old).next() {
                    progress(&format!("found sandbox {found}, created by the request that failed; using it"));
                    break found.clone();
                }
                api.wait_before_retry("POST", "/api/v1/sandboxes", attempt, &f).await;
            }
            Err(f) => return Err(error(f.to_string())),
        }
    };
    progress(&format!("created sandbox {id}; waiting until it runs"));
    let sandbox = CloudSandbox { api, id, resumed: AtomicBool::new(false) };
    match sandbox.wait_running(deadline, s).await {
        Ok((client, info)) => Ok((sandbox, client, info)),
        Err(e) => {
            if let Err(d) = sandbox.delete().await {
                tracing::error!("{d}");
                return Err(ProvisionError {
                    message: format!("{}; and deleting sandbox {} failed: {d}", e.message, sandbox.id),
                    ..e
                });
            }
            Err(e)
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl CloudSandbox {
    /// The sandbox's current record (`GET /api/v1/sandboxes?id=`), or None when the server does not know it.
    async fn info(&self, deadline: Option<Instant>) -> Result<Option<Value>, ApiFailure> {
        let v = self
            .api
            .call(Method::GET, &format!("/api/v1/sandboxes?id={}", urlencode(&self.id)), None, true, deadline)
            .await?;
        Ok(v.as_array().and_then(|a| a.first()).filter(|x| !x.is_null()).cloned())
    }

    async fn wait_running(&self, deadline: Instant, s: &CloudSettings) -> Result<(AgentClient, Value), ProvisionError> {
        let mut interval = Duration::from_millis(250);
        let mut unknown = 0;
        loop {
            if Instant::now() >= deadline {
                return Err(ProvisionError {
                    message: format!(
                        "sandbox {} did not become ready within init_timeout ({}s)",
                        self.id,
                        s.init_timeout.as_secs()
                    ),
                    hint: Some("raise `sandbox.init_timeout`".into()),
                    log_tail: None,
                });
            }
            let info = match self.info(Some(deadline)).await {
                Ok(i) => i,
                Err(f @ ApiFailure::Auth { .. }) => return Err(auth_error(&f, &s.key_var)),
                Err(f) => return Err(error(f.to_string())),
            };
            let status = info.as_ref().and_then(|i| i.get("status")).and_then(Value::as_str).unwrap_or("").to_string();
            let detail = info
                .as_ref()
                .and_then(|i| i.get("status_detail"))
                .and_then(Value::as_str)
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            match status.as_str() {
                "" if info.is_none() => {
                    unknown += 1;
                    if unknown >= 5 {
                        return Err(error(format!("the Cloud API no longer knows sandbox {}", self.id)));
                    }
                }
                "RUNNING" => {
                    let info = info.unwrap_or_default();
                    let url = info
                        .get("exposed_urls")
                        .and_then(Value::as_array)
                        .and_then(|urls| {
                            urls.iter().find(|u| u.get("name").and_then(Value::as_str) == Some("AGENT_SERVER"))
                        })
                        .and_then(|u| u.get("url"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let Some(url) = url else {
                        return Err(error(format!("sandbox {} is RUNNING but exposes no AGENT_SERVER URL", self.id)));
                    };
                    let key = info.get("session_api_key").and_then(Value::as_str).map(str::to_string);
                    let client = AgentClient::new(&url, key, s.api_timeout);
                    if client.healthy().await {
                        let server_info = client.server_info().await.map_err(|e| error(e.to_string()))?;
                        return Ok((client, server_info));
                    }
                }
                "PAUSED" if !self.resumed.swap(true, Ordering::SeqCst) => {
                    self.resume(Some(deadline)).await.map_err(|f| error(f.to_string()))?;
                }
                "ERROR" => return Err(error(format!("sandbox {} is in ERROR{detail}", self.id))),
                "MISSING" => return Err(error(format!("sandbox {} is MISSING (deleted?){detail}", self.id))),
                _ => {} // STARTING, or a status newer than this client
            }
            tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
            interval = (interval * 3 / 2).min(Duration::from_secs(5));
        }
    }

    async fn resume(&self, deadline: Option<Instant>) -> Result<(), ApiFailure> {
        tracing::info!("resuming paused sandbox {}", self.id);
        self.api
            .call(Method::POST, &format!("/api/v1/sandboxes/{}/resume", urlencode(&self.id)), None, true, deadline)
            .await
            .map(|_| ())
    }

    /// Deletes the sandbox; the id goes in the path and in `?sandbox_id=`, which every server version accepts.
    pub async fn delete(&self) -> Result<(), String> {
        let id = urlencode(&self.id);
        let deadline = Some(Instant::now() + Duration::from_secs(120));
        match self
            .api
            .call(Method::DELETE, &format!("/api/v1/sandboxes/{id}?sandbox_id={id}"), None, true, deadline)
            .await
        {
            Ok(_) => Ok(()),
            Err(ApiFailure::Status { status: 404, .. }) => Ok(()),
            Err(f) => Err(f.to_string()),
        }
    }

    /// Where the sandbox stands while a job runs. A sandbox the provider paused is resumed once; ohrun
    /// waits until it runs again and takes its (possibly new) session key.
    pub async fn probe(&self, client: &AgentClient) -> Probe {
        let status = |info: &Value| info.get("status").and_then(Value::as_str).unwrap_or("").to_string();
        match self.info(None).await {
            Ok(None) => Probe::Gone(format!("the Cloud API no longer knows sandbox {}", self.id)),
            Ok(Some(info)) => match status(&info).as_str() {
                "MISSING" => Probe::Gone(format!("sandbox {} went MISSING", self.id)),
                "ERROR" => Probe::Gone(format!("sandbox {} went into ERROR", self.id)),
                "PAUSED" if self.resumed.swap(true, Ordering::SeqCst) => {
                    Probe::Gone(format!("sandbox {} was paused again after ohrun resumed it once", self.id))
                }
                "PAUSED" => {
                    tracing::warn!("sandbox {} was paused by the provider; resuming it", self.id);
                    if let Err(f) = self.resume(None).await {
                        return Probe::Gone(format!("sandbox {} was paused and resuming it failed: {f}", self.id));
                    }
                    let deadline = Instant::now() + Duration::from_secs(300);
                    while Instant::now() < deadline {
                        if let Ok(Some(info)) = self.info(Some(deadline)).await
                            && status(&info) == "RUNNING"
                        {
                            let key = info.get("session_api_key").and_then(Value::as_str).map(str::to_string);
                            if key.is_some() {
                                client.set_session_key(key);
                            }
                            return Probe::Resumed;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Probe::Gone(format!("sandbox {} did not run again after it was resumed", self.id))
                }
                _ => Probe::Alive,
            },
            Err(_) => Probe::Alive, // the Cloud API itself is unreachable: no news about the sandbox
        }
    }
}
