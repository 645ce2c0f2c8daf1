//! `kind: runtime`: the Runtime API (the SDK's APIRemoteWorkspace): look the session up, start it with the
//! image if it is not there, wait until `pod_status` is ready AND the agent-server answers `/health`, and
//! stop (or pause) it on release. `init_timeout` bounds all of it. `/start` is never blindly repeated: the
//! session id is ours, so after an unclear failure ohrun asks for the session before starting again. A
//! session ohrun did not start (an existing `session_id`) is never stopped.

use super::api::{ApiFailure, ProviderApi};
use super::{Probe, ProvisionError};
use crate::agent::http::AgentClient;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    pub api_url: String,
    pub api_key: String,
    pub key_var: String,
    pub image: String,
    pub image_pull_policy: String,
    pub session_id: Option<String>,
    pub resource_factor: u8,
    pub runtime_class: Option<String>,
    /// `binary` or `source`.
    pub target_type: String,
    pub environment: Vec<(String, String)>,
    pub init_timeout: Duration,
    pub api_timeout: Duration,
    pub pause_on_close: bool,
    pub working_dir: String,
}

pub struct RuntimeSession {
    pub api: ProviderApi,
    pub session_id: String,
    pub runtime_id: String,
    /// False when ohrun attached to a session someone else started: it is never stopped then.
    pub created: bool,
    pause_on_close: bool,
    resumed: std::sync::atomic::AtomicBool,
}

fn error(message: String) -> ProvisionError {
    ProvisionError { message, hint: None, log_tail: None }
}

fn auth_error(f: &ApiFailure, key_var: &str) -> ProvisionError {
    ProvisionError {
        message: f.to_string(),
        hint: Some(format!("check the Runtime API key in {key_var} (and `sandbox.api_url`)")),
        log_tail: None,
    }
}

/// `GET /sessions/{id}`: Some(runtime) or None for 404.
async fn lookup(api: &ProviderApi, sid: &str, deadline: Option<Instant>) -> Result<Option<Value>, ApiFailure> {
    match api.call(Method::GET, &format!("/sessions/{sid}"), None, true, deadline).await {
        Ok(v) => Ok(Some(v)),
        Err(ApiFailure::Status { status: 404, .. }) => Ok(None),
        Err(f) => Err(f),
    }
}

fn runtime_id(v: &Value) -> Option<String> {
    v.get("runtime_id").or_else(|| v.get("id")).and_then(Value::as_str).map(str::to_string)
}

pub async fn start(
    s: &RuntimeSettings,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(RuntimeSession, AgentClient, Value), ProvisionError> {
    let deadline = Instant::now() + s.init_timeout;
    let api = ProviderApi::new(&s.api_url, "X-API-Key", s.api_key.clone(), s.api_timeout);
    let sid = s.session_id.clone().unwrap_or_else(|| format!("ohrun-{}", uuid::Uuid::new_v4().simple()));
    let fail = |f: ApiFailure| {
        if matches!(f, ApiFailure::Auth { .. }) { auth_error(&f, &s.key_var) } else { error(f.to_string()) }
    };

    let existing = lookup(&api, &sid, Some(deadline)).await.map_err(fail)?;
    let (runtime, created) = match existing {
        Some(v) if matches!(v.get("status").and_then(Value::as_str), Some("running") | Some("paused")) => {
            progress(&format!("attaching to the existing runtime session {sid}"));
            (v, false)
        }
        _ => (start_session(&api, s, &sid, deadline, progress).await?, true),
    };
    let rid = runtime_id(&runtime)
        .ok_or_else(|| error(format!("the Runtime API sent no runtime id for {sid}: {runtime}")))?;
    let session = RuntimeSession {
        api,
        session_id: sid,
        runtime_id: rid,
        created,
        pause_on_close: s.pause_on_close,
        resumed: Default::default(),
    };
    if runtime.get("status").and_then(Value::as_str) == Some("paused") {
        session.call("/resume", Some(deadline)).await.map_err(fail)?;
    }
    match session.wait_ready(deadline, s).await {
        Ok((client, info)) => Ok((session, client, info)),
        Err(e) => {
            if session.created
                && let Err(d) = session.release().await
            {
                return Err(ProvisionError {
                    message: format!("{}; and stopping runtime {} failed: {d}", e.message, session.runtime_id),
                    ..e
                });
            }
            Err(e)
        }
    }
}

async fn start_session(
    api: &ProviderApi,
    s: &RuntimeSettings,
    sid: &str,
    deadline: Instant,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Value, ProvisionError> {
    let command = match s.target_type.as_str() {
        "source" => "/agent-server/.venv/bin/python -m openhands.agent_server --port 60000",
        _ => "/usr/local/bin/openhands-agent-server --port 60000",
    };
    let mut body = json!({
        "image": s.image,
        "command": command,
        "working_dir": "/",
        "environment": s.environment.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "session_id": sid,
        "run_as_user": 10001,
        "fs_group": 10001,
        "image_pull_policy": s.image_pull_policy,
    });
    if let Some(class) = &s.runtime_class {
        body["runtime_class"] = json!(class);
    }
    if s.resource_factor != 1 {
        body["resource_factor"] = json!(s.resource_factor);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.call(Method::POST, "/start", Some(&body), false, Some(deadline)).await {
            Ok(v) => {
                progress(&format!("started runtime session {sid}; waiting until it is ready"));
                return Ok(v);
            }
            Err(f @ ApiFailure::Auth { .. }) => return Err(auth_error(&f, &s.key_var)),
            Err(f) if f.is_transient() && Instant::now() < deadline && attempt < 6 => {
                // The session id is ours: if the failed request started it after all, use it.
                if let Ok(Some(v)) = lookup(api, sid, Some(deadline)).await {
                    progress(&format!("runtime session {sid} exists after all; using it"));
                    return Ok(v);
                }
                api.wait_before_retry("POST", "/start", attempt, &f).await;
            }
            Err(f) => return Err(error(f.to_string())),
        }
    }
}

impl RuntimeSession {
    async fn call(&self, path: &str, deadline: Option<Instant>) -> Result<Value, ApiFailure> {
        self.api.call(Method::POST, path, Some(&json!({"runtime_id": self.runtime_id})), true, deadline).await
    }

    async fn wait_ready(&self, deadline: Instant, s: &RuntimeSettings) -> Result<(AgentClient, Value), ProvisionError> {
        let mut interval = Duration::from_millis(250);
        loop {
            if Instant::now() >= deadline {
                return Err(ProvisionError {
                    message: format!(
                        "runtime {} was not ready within init_timeout ({}s)",
                        self.runtime_id,
                        s.init_timeout.as_secs()
                    ),
                    hint: Some("raise `sandbox.init_timeout`".into()),
                    log_tail: None,
                });
            }
            let v = match lookup(&self.api, &self.session_id, Some(deadline)).await {
                Ok(Some(v)) => v,
                Ok(None) => return Err(error(format!("runtime session {} vanished while starting", self.session_id))),
                Err(f @ ApiFailure::Auth { .. }) => return Err(auth_error(&f, &s.key_var)),
                Err(f) => return Err(error(f.to_string())),
            };
            // `pod_status` may be null (not yet), lower case or Kubernetes-style.
            let pod = v.get("pod_status").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
            let status = v.get("status").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
            let logs = v.get("pod_logs").and_then(Value::as_str).filter(|l| !l.is_empty()).map(str::to_string);
            match (pod.as_str(), status.as_str()) {
                ("failed" | "unknown", _) | (_, "error") => {
                    return Err(ProvisionError {
                        message: format!("runtime {} failed to start (pod {pod}, status {status})", self.runtime_id),
                        hint: Some("check the image and its command".into()),
                        log_tail: logs,
                    });
                }
                ("crashloopbackoff", _) => {
                    return Err(ProvisionError {
                        message: format!(
                            "runtime {} crashed and is restarting (possibly out of memory)",
                            self.runtime_id
                        ),
                        hint: Some("raise `sandbox.resource_factor`".into()),
                        log_tail: logs,
                    });
                }
                (_, "stopped") => return Err(error(format!("runtime {} stopped while starting", self.runtime_id))),
                ("ready", _) => {
                    let url = v
                        .get("url")
                        .and_then(Value::as_str)
                        .ok_or_else(|| error(format!("runtime {} is ready but has no url", self.runtime_id)))?;
                    let key = v.get("session_api_key").and_then(Value::as_str).map(str::to_string);
                    let client = AgentClient::new(url, key, s.api_timeout);
                    if client.healthy().await {
                        let info = client.server_info().await.map_err(|e| error(e.to_string()))?;
                        return Ok((client, info));
                    }
                }
                _ => {} // pending, running (the pod may still be starting), not found, null
            }
            tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
            interval = (interval * 3 / 2).min(Duration::from_secs(5));
        }
    }

    /// Stops (or pauses) a session ohrun started; one it attached to is left alone.
    pub async fn release(&self) -> Result<(), String> {
        if !self.created {
            return Ok(());
        }
        let path = if self.pause_on_close { "/pause" } else { "/stop" };
        match self.call(path, Some(Instant::now() + Duration::from_secs(120))).await {
            Ok(_) | Err(ApiFailure::Status { status: 404, .. }) => Ok(()),
            Err(f) => Err(f.to_string()),
        }
    }

    /// Where the runtime stands while a job runs; one the provider paused is resumed once.
    pub async fn probe(&self, client: &AgentClient) -> Probe {
        match lookup(&self.api, &self.session_id, None).await {
            Ok(None) => Probe::Gone(format!("runtime session {} is gone", self.session_id)),
            Ok(Some(v)) => match v.get("status").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase().as_str() {
                "stopped" | "error" => Probe::Gone(format!("runtime {} stopped", self.runtime_id)),
                "paused" if self.resumed.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                    Probe::Gone(format!("runtime {} was paused again after ohrun resumed it once", self.runtime_id))
                }
                "paused" => match self.call("/resume", None).await {
                    Ok(v) => {
                        if let Some(key) = v.get("session_api_key").and_then(Value::as_str) {
                            client.set_session_key(Some(key.to_string()));
                        }
                        Probe::Resumed
                    }
                    Err(f) => {
                        Probe::Gone(format!("runtime {} was paused and resuming it failed: {f}", self.runtime_id))
                    }
                },
                _ => Probe::Alive,
            },
            Err(_) => Probe::Alive,
        }
    }
}
