//! `kind: runtime`: the Runtime API (the SDK's APIRemoteWorkspace): look the session up, start it with the
//! image if it is not there, wait until `pod_status` is ready AND the agent-server answers `/health`, and
//! stop (or pause) it on release. `init_timeout` bounds all of it. `/start` is never blindly repeated: the
//! session id is ours, so after an unclear failure ohrun asks for the session before starting again. A
//! session that did not exist, or that ohrun found stopped (or failed) and started again, is this run's:
//! recorded in the ledger and stopped on release. One that ohrun found running, paused or starting (an
//! existing `session_id`) is never stopped; it is recorded as attached, so that `gc` never stops what a
//! running ohrun uses.

use super::provider::{self, ApiFailure, Found, Poll, ProviderApi};
use super::{Backend, BoxFuture, Context, Error, Probe, Ready, Record, Released, SandboxProbe};
use crate::agent::http::AgentClient;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const API: &str = "Runtime API";

#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    pub api_url: String,
    /// Allow plain http to a far host, for the API and the agent-server URL it returns.
    pub allow_insecure_http: bool,
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
    pub keep_alive: bool,
    /// The conversation will carry the LLM key or `secrets:` values: the agent-server URL the provider
    /// returns must not be plain http to a far host even without a session key.
    pub sends_secrets: bool,
}

pub struct Runtime {
    settings: RuntimeSettings,
    api: Option<ProviderApi>,
    session_id: Option<String>,
    runtime_id: Option<String>,
    /// True once ohrun asked to start the session (it may exist even if the answer was lost).
    started: bool,
    resumed: AtomicBool,
    client: Option<AgentClient>,
    released: bool,
}

/// `GET /sessions/{id}`: Some(runtime) or None for 404.
async fn lookup(api: &ProviderApi, sid: &str, deadline: Option<Instant>) -> Result<Option<Value>, ApiFailure> {
    match api.call(Method::GET, api.url(&["sessions", sid], &[]), None, true, deadline).await {
        Ok(v) => Ok(Some(v)),
        Err(f) if f.is_not_found() => Ok(None),
        Err(f) => Err(f),
    }
}

fn api(s: &RuntimeSettings) -> Result<ProviderApi, Error> {
    ProviderApi::new(&s.api_url, "X-API-Key", s.api_key.clone(), s.api_timeout)
}

fn runtime_id(v: &Value) -> Option<String> {
    v.get("runtime_id").or_else(|| v.get("id")).and_then(Value::as_str).map(str::to_string)
}

fn lower(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_ascii_lowercase()
}

impl Runtime {
    pub fn new(settings: RuntimeSettings) -> Runtime {
        Runtime {
            settings,
            api: None,
            session_id: None,
            runtime_id: None,
            started: false,
            resumed: AtomicBool::new(false),
            client: None,
            released: false,
        }
    }

    /// A session an ohrun that is gone started (for `gc`): stopped as if this backend had started it.
    pub fn adopt(settings: RuntimeSettings, session_id: String, runtime_id: Option<String>) -> Result<Runtime, Error> {
        let api = api(&settings)?;
        Ok(Runtime {
            api: Some(api),
            session_id: Some(session_id),
            runtime_id,
            started: true,
            ..Runtime::new(settings)
        })
    }

    /// The adopted session's status while it runs (stopped, or paused when `pause_on_close`, counts as
    /// released), for `gc`.
    pub async fn status_now(&self) -> Result<Option<String>, String> {
        let (Some(api), Some(sid)) = (&self.api, &self.session_id) else { return Ok(None) };
        let deadline = Some(Instant::now() + self.settings.api_timeout * 2);
        match lookup(api, sid, deadline).await {
            Ok(Some(v)) => {
                let status = lower(&v, "status");
                let released = status == "stopped" || (status == "paused" && self.settings.pause_on_close);
                Ok((!released).then_some(status))
            }
            Ok(None) => Ok(None),
            Err(f) => Err(f.to_string()),
        }
    }

    fn fail(&self, f: ApiFailure) -> Error {
        f.into_error(&self.settings.key_var, API)
    }

    async fn start(&mut self, ctx: &Context<'_>) -> Result<Ready, Error> {
        let s = self.settings.clone();
        let deadline = ctx.deadline(s.init_timeout);
        let api = api(&s)?.with_cancel(ctx.cancel.clone());
        self.api = Some(api.clone());
        let sid = s.session_id.clone().unwrap_or_else(|| format!("ohrun-{}", uuid::Uuid::new_v4().simple()));
        self.session_id = Some(sid.clone());
        let existing = lookup(&api, &sid, Some(deadline)).await.map_err(|f| self.fail(f))?;
        let status = existing.as_ref().map(|v| lower(v, "status"));
        // ohrun (re)starts a session that does not exist, or that stopped or failed: that one is this run's.
        // One that runs, is paused or is starting is someone else's (another run's, another tool's).
        self.started = status.as_deref().is_none_or(|st| matches!(st, "stopped" | "error"));
        ctx.ledger
            .open("runtime", |l| {
                l.api_url = Some(s.api_url.clone());
                l.key_var = Some(s.key_var.clone());
                l.allow_insecure_http = s.allow_insecure_http;
                l.id = Some(sid.clone());
                l.pause_on_close = s.pause_on_close;
                l.attached = !self.started;
            })
            .map_err(Error::ledger)?;
        let runtime = match existing {
            Some(v) if matches!(status.as_deref(), Some("running" | "paused")) => {
                (ctx.progress)(&format!("attaching to the existing runtime session {sid}"));
                v
            }
            _ => {
                let v = self.start_session(&api, &sid, deadline, ctx).await?;
                (ctx.progress)(&format!("started runtime session {sid}; waiting until it is ready"));
                v
            }
        };
        let rid = runtime_id(&runtime)
            .ok_or_else(|| Error::failed(format!("the Runtime API sent no runtime id for {sid}: {runtime}")))?;
        self.runtime_id = Some(rid.clone());
        ctx.ledger.update(|l| l.runtime_id = Some(rid.clone()));
        (ctx.recorded)(self.record());
        if lower(&runtime, "status") == "paused" {
            self.call(&api, "resume", Some(deadline)).await.map_err(|f| self.fail(f))?;
        }
        let mut cancel = ctx.cancel.clone();
        let (client, server_info) =
            provider::poll_until(deadline, &mut cancel, ctx.limit(s.init_timeout), &format!("runtime {rid}"), || {
                self.look(&api, &sid, &rid, deadline)
            })
            .await?;
        let client = client.with_cancel(ctx.cancel.clone());
        self.client = Some(client.clone());
        Ok(Ready { client, working_dir: s.working_dir, server_info })
    }

    async fn start_session(
        &self,
        api: &ProviderApi,
        sid: &str,
        deadline: Instant,
        ctx: &Context<'_>,
    ) -> Result<Value, Error> {
        let s = &self.settings;
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
        let mut cancel = ctx.cancel.clone();
        // The session id is ours: if the failed request started it after all, that session is ours.
        provider::create_never_blind(
            api,
            api.url(&["start"], &[]),
            Some(&body),
            deadline,
            &mut cancel,
            &s.key_var,
            API,
            || async {
                match lookup(api, sid, Some(deadline)).await {
                    Ok(Some(v)) => {
                        (ctx.progress)(&format!("runtime session {sid} exists after all; using it"));
                        Found::Ours(v)
                    }
                    Ok(None) => Found::Nothing,
                    Err(_) => Found::Unsure(vec![sid.to_string()]),
                }
            },
        )
        .await
    }

    /// One look at the starting runtime.
    async fn look(
        &self,
        api: &ProviderApi,
        sid: &str,
        rid: &str,
        deadline: Instant,
    ) -> Result<Poll<(AgentClient, Value)>, Error> {
        let v = match lookup(api, sid, Some(deadline)).await.map_err(|f| self.fail(f))? {
            Some(v) => v,
            None => return Err(Error::failed(format!("runtime session {sid} vanished while starting"))),
        };
        // `pod_status` may be null (not yet), lower case or Kubernetes-style.
        let (pod, status) = (lower(&v, "pod_status"), lower(&v, "status"));
        let logs = v.get("pod_logs").and_then(Value::as_str).unwrap_or_default().to_string();
        match (pod.as_str(), status.as_str()) {
            ("failed" | "unknown", _) | (_, "error") => {
                Err(Error::failed(format!("runtime {rid} failed to start (pod {pod}, status {status})"))
                    .hint("check the image and its command")
                    .log_tail(logs))
            }
            ("crashloopbackoff", _) => {
                Err(Error::failed(format!("runtime {rid} crashed and is restarting (possibly out of memory)"))
                    .hint("raise `sandbox.resource_factor`")
                    .log_tail(logs))
            }
            (_, "stopped") => Err(Error::failed(format!("runtime {rid} stopped while starting"))),
            ("ready", _) => {
                let url = v
                    .get("url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::failed(format!("runtime {rid} is ready but has no url")))?;
                let key = v.get("session_api_key").and_then(Value::as_str).map(str::to_string);
                if let Some(k) = &key {
                    crate::report::redact::register(k);
                }
                let sends = key.is_some() || self.settings.sends_secrets;
                super::provider::check_agent_url(url, sends, self.settings.allow_insecure_http)?;
                let client = AgentClient::new(url, key, self.settings.api_timeout);
                if !client.healthy().await {
                    return Ok(Poll::Waiting);
                }
                let server_info = client.server_info().await?;
                Ok(Poll::Ready((client, server_info)))
            }
            _ => Ok(Poll::Waiting), // pending, running (the pod may still be starting), not found, null
        }
    }

    async fn call(&self, api: &ProviderApi, what: &str, deadline: Option<Instant>) -> Result<Value, ApiFailure> {
        let rid = self.runtime_id.clone().unwrap_or_default();
        api.call(Method::POST, api.url(&[what], &[]), Some(&json!({"runtime_id": rid})), true, deadline).await
    }

    /// Stops (or pauses) a session ohrun started; when its answer to `/start` was lost, the runtime id is
    /// looked up first.
    async fn stop(&mut self, api: &ProviderApi) -> Result<(), String> {
        let deadline = Some(Instant::now() + Duration::from_secs(120));
        if self.runtime_id.is_none()
            && let Some(sid) = &self.session_id
        {
            match lookup(api, sid, deadline).await {
                Ok(Some(v)) => self.runtime_id = runtime_id(&v),
                Ok(None) => return Ok(()),
                Err(f) => return Err(format!("runtime session {sid} may still run: {f}")),
            }
        }
        let what = if self.settings.pause_on_close { "pause" } else { "stop" };
        match self.call(api, what, deadline).await {
            Ok(_) => Ok(()),
            Err(f) if f.is_not_found() => Ok(()),
            Err(f) => Err(format!("runtime {} may still run: {f}", self.runtime_id.as_deref().unwrap_or_default())),
        }
    }

    /// Where the runtime stands while a job runs; one the provider paused is resumed once.
    async fn probe_now(&self) -> Probe {
        let (Some(api), Some(sid)) = (&self.api, &self.session_id) else { return Probe::Alive };
        let rid = self.runtime_id.as_deref().unwrap_or_default();
        match lookup(api, sid, None).await {
            Ok(None) => Probe::Gone(format!("runtime session {sid} is gone")),
            Ok(Some(v)) => match lower(&v, "status").as_str() {
                "stopped" | "error" => Probe::Gone(format!("runtime {rid} stopped")),
                "paused" if self.resumed.swap(true, Ordering::SeqCst) => {
                    Probe::Gone(format!("runtime {rid} was paused again after ohrun resumed it once"))
                }
                "paused" => match self.call(api, "resume", None).await {
                    Ok(v) => {
                        if let (Some(key), Some(client)) =
                            (v.get("session_api_key").and_then(Value::as_str), &self.client)
                        {
                            crate::report::redact::register(key);
                            client.set_session_key(Some(key.to_string()));
                        }
                        Probe::Resumed
                    }
                    Err(f) => Probe::Gone(format!("runtime {rid} was paused and resuming it failed: {f}")),
                },
                _ => Probe::Alive,
            },
            Err(_) => Probe::Alive,
        }
    }
}

impl Backend for Runtime {
    fn provision<'a>(&'a mut self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Ready, Error>> {
        Box::pin(self.start(ctx))
    }

    fn release(&mut self, keep: bool) -> BoxFuture<'_, Released> {
        Box::pin(async move {
            let Some(api) = self.api.clone() else { return Released::NothingToRelease };
            let api = api.with_cancel(crate::cancel::Cancel::never());
            let keep = keep || (self.settings.keep_alive && self.client.is_some());
            if !self.started {
                return if self.runtime_id.is_some() { Released::Attached } else { Released::NothingToRelease };
            }
            if let Some(done) = provider::release_shortcut(self.released, keep) {
                return done;
            }
            let result = self.stop(&api).await;
            provider::released(&mut self.released, result)
        })
    }

    fn attach_hint(&self, working_dir: &str) -> String {
        let url = self.client.as_ref().map(|c| c.base_url().to_string()).unwrap_or_default();
        let api = self.api.as_ref().map(|a| a.base().to_string()).unwrap_or_default();
        format!(
            "runtime {} (session {}; agent-server at {url}, working dir {working_dir}; stop it with POST {api}/stop)",
            self.runtime_id.as_deref().unwrap_or_default(),
            self.session_id.as_deref().unwrap_or_default()
        )
    }

    fn record(&self) -> Record {
        Record {
            id: self.runtime_id.clone().or_else(|| self.started.then(|| self.session_id.clone()).flatten()),
            api_retries: self.api.as_ref().map(|a| a.retries()).unwrap_or_default(),
            ..Record::default()
        }
    }
}

impl SandboxProbe for Runtime {
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(self.probe_now())
    }
}
