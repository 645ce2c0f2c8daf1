//! `kind: cloud`: OpenHands Cloud (the SDK's OpenHandsCloudWorkspace), keeping its protocol but not its
//! flaws: `init_timeout` bounds the whole provisioning (create, wait until RUNNING, health); a create is
//! never blindly repeated, and never adopts a sandbox it cannot be sure is its own (after an unclear
//! failure, new sandboxes in the account are reported as candidates, not used); within one process creates
//! are serialized, so parallel runs cannot mistake each other's sandboxes; a paused sandbox is resumed
//! once; the session key is re-read after every resume; only a sandbox ohrun created is ever deleted; and
//! a failed delete is retried and then reported with the sandbox id.

use super::provider::{self, ApiFailure, Found, Poll, ProviderApi};
use super::{Backend, BoxFuture, Context, Error, ErrorKind, Probe, Ready, Record, Released, SandboxProbe};
use crate::agent::http::AgentClient;
use reqwest::Method;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const API: &str = "Cloud API";

/// Held from listing the account's sandboxes to the end of a create, so two runs of one process never
/// mistake each other's new sandbox for their own.
static CREATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Debug)]
pub struct CloudSettings {
    pub api_url: String,
    /// Allow plain http to a far host, for the API and the agent-server URL it returns.
    pub allow_insecure_http: bool,
    pub api_key: String,
    /// The environment variable the key came from, for hints.
    pub key_var: String,
    pub sandbox_spec_id: Option<String>,
    pub init_timeout: Duration,
    pub api_timeout: Duration,
    pub working_dir: String,
    pub keep_alive: bool,
    /// The conversation will carry the LLM key or `secrets:` values: the agent-server URL the provider
    /// returns must not be plain http to a far host even without a session key.
    pub sends_secrets: bool,
}

pub struct Cloud {
    settings: CloudSettings,
    api: Option<ProviderApi>,
    /// The sandbox, from the moment the create answered.
    id: Option<String>,
    candidates: Vec<String>,
    resumed: AtomicBool,
    client: Option<AgentClient>,
    released: bool,
}

impl Cloud {
    pub fn new(settings: CloudSettings) -> Cloud {
        Cloud {
            settings,
            api: None,
            id: None,
            candidates: Vec::new(),
            resumed: AtomicBool::new(false),
            client: None,
            released: false,
        }
    }

    /// A sandbox an ohrun that is gone created (for `gc`): released as if this backend had made it.
    pub fn adopt(settings: CloudSettings, id: String) -> Result<Cloud, Error> {
        let api = api(&settings)?;
        Ok(Cloud { api: Some(api), id: Some(id), ..Cloud::new(settings) })
    }

    /// The adopted sandbox's status while it exists (`MISSING` counts as gone), for `gc`.
    pub async fn status_now(&self) -> Result<Option<String>, String> {
        let (Some(api), Some(id)) = (&self.api, &self.id) else { return Ok(None) };
        let deadline = Some(Instant::now() + self.settings.api_timeout * 2);
        match info(api, id, deadline).await {
            Ok(Some(i)) if status(&i) != "MISSING" => Ok(Some(status(&i).to_string())),
            Ok(_) => Ok(None),
            Err(f) => Err(f.to_string()),
        }
    }

    async fn start(&mut self, ctx: &Context<'_>) -> Result<Ready, Error> {
        let s = self.settings.clone();
        let deadline = ctx.deadline(s.init_timeout);
        let api = api(&s)?.with_cancel(ctx.cancel.clone());
        self.api = Some(api.clone());
        let id = match self.create(&api, deadline, ctx).await {
            Ok(id) => id,
            Err(e) => {
                if let ErrorKind::Unsure(c) = &e.kind {
                    self.candidates = c.clone();
                }
                return Err(e);
            }
        };
        self.id = Some(id.clone());
        ctx.ledger.update(|l| l.id = Some(id.clone()));
        (ctx.recorded)(self.record());
        (ctx.progress)(&format!("created sandbox {id}; waiting until it runs"));
        let mut cancel = ctx.cancel.clone();
        let unknown = std::sync::atomic::AtomicU32::new(0);
        let (client, server_info) =
            provider::poll_until(deadline, &mut cancel, ctx.limit(s.init_timeout), &format!("sandbox {id}"), || {
                self.look(&api, &id, deadline, &unknown)
            })
            .await?;
        let client = client.with_cancel(ctx.cancel.clone());
        self.client = Some(client.clone());
        Ok(Ready { client, working_dir: s.working_dir, server_info })
    }

    async fn create(&self, api: &ProviderApi, deadline: Instant, ctx: &Context<'_>) -> Result<String, Error> {
        let query: Vec<(&str, &str)> =
            self.settings.sandbox_spec_id.iter().map(|spec| ("sandbox_spec_id", spec.as_str())).collect();
        let url = api.url(&["api", "v1", "sandboxes"], &query);
        let _serialized = CREATE.lock().await;
        // What existed before, so that after an unclear failure (5xx, timeout) we can tell whether our
        // create may have gone through. None: the server cannot list, so we cannot tell.
        let before = sandbox_ids(api, deadline).await;
        ctx.ledger
            .open("cloud", |l| {
                l.api_url = Some(self.settings.api_url.clone());
                l.key_var = Some(self.settings.key_var.clone());
                l.allow_insecure_http = self.settings.allow_insecure_http;
            })
            .map_err(Error::ledger)?;
        let mut cancel = ctx.cancel.clone();
        let created = provider::create_never_blind(
            api,
            url,
            None,
            deadline,
            &mut cancel,
            &self.settings.key_var,
            API,
            || async {
                let (Some(old), Some(now)) = (&before, sandbox_ids(api, deadline).await) else {
                    return Found::Unsure(Vec::new());
                };
                let mut new: Vec<String> = now.difference(old).cloned().collect();
                new.sort();
                if new.is_empty() { Found::Nothing } else { Found::Unsure(new) }
            },
        )
        .await?;
        created
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::failed(format!("the Cloud API created a sandbox but sent no id: {created}")))
    }

    /// One look at the starting sandbox: ready (its agent-server answers), still starting, or failed.
    async fn look(
        &self,
        api: &ProviderApi,
        id: &str,
        deadline: Instant,
        unknown: &std::sync::atomic::AtomicU32,
    ) -> Result<Poll<(AgentClient, Value)>, Error> {
        let info = info(api, id, Some(deadline)).await.map_err(|f| f.into_error(&self.settings.key_var, API))?;
        let Some(info) = info else {
            if unknown.fetch_add(1, Ordering::SeqCst) + 1 >= 5 {
                return Err(Error::failed(format!("the Cloud API no longer knows sandbox {id}")));
            }
            return Ok(Poll::Waiting);
        };
        let detail = info.get("status_detail").and_then(Value::as_str).map(|d| format!(": {d}")).unwrap_or_default();
        match status(&info) {
            "RUNNING" => {
                let Some(url) = agent_server_url(&info) else {
                    return Err(Error::failed(format!("sandbox {id} is RUNNING but exposes no AGENT_SERVER URL")));
                };
                let key = info.get("session_api_key").and_then(Value::as_str).map(str::to_string);
                if let Some(k) = &key {
                    crate::report::redact::register(k);
                }
                let sends = key.is_some() || self.settings.sends_secrets;
                super::provider::check_agent_url(&url, sends, self.settings.allow_insecure_http)?;
                let client = AgentClient::new(&url, key, self.settings.api_timeout);
                if !client.healthy().await {
                    return Ok(Poll::Waiting);
                }
                let server_info = client.server_info().await?;
                Ok(Poll::Ready((client, server_info)))
            }
            "PAUSED" if !self.resumed.swap(true, Ordering::SeqCst) => {
                resume(api, id, Some(deadline)).await.map_err(|f| f.into_error(&self.settings.key_var, API))?;
                Ok(Poll::Waiting)
            }
            "ERROR" => Err(Error::failed(format!("sandbox {id} is in ERROR{detail}"))),
            "MISSING" => Err(Error::failed(format!("sandbox {id} is MISSING (deleted?){detail}"))),
            _ => Ok(Poll::Waiting), // STARTING, or a status newer than this client
        }
    }

    /// Deletes the sandbox; the id goes in the path and in `?sandbox_id=`, which every server version accepts.
    async fn delete(&self, api: &ProviderApi, id: &str) -> Result<(), String> {
        let url = api.url(&["api", "v1", "sandboxes", id], &[("sandbox_id", id)]);
        let deadline = Some(Instant::now() + Duration::from_secs(120));
        match api.call(Method::DELETE, url, None, true, deadline).await {
            Ok(_) => Ok(()),
            Err(f) if f.is_not_found() => Ok(()),
            Err(f) => Err(format!("sandbox {id} may still exist: {f}")),
        }
    }

    /// Where the sandbox stands while a job runs. A sandbox the provider paused is resumed once; ohrun
    /// waits until it runs again and takes its (possibly new) session key.
    async fn probe_now(&self) -> Probe {
        let (Some(api), Some(id)) = (&self.api, &self.id) else { return Probe::Alive };
        match info(api, id, None).await {
            Ok(None) => Probe::Gone(format!("the Cloud API no longer knows sandbox {id}")),
            Ok(Some(i)) => match status(&i) {
                "MISSING" => Probe::Gone(format!("sandbox {id} went MISSING")),
                "ERROR" => Probe::Gone(format!("sandbox {id} went into ERROR")),
                "PAUSED" if self.resumed.swap(true, Ordering::SeqCst) => {
                    Probe::Gone(format!("sandbox {id} was paused again after ohrun resumed it once"))
                }
                "PAUSED" => self.resume_paused(api, id).await,
                _ => Probe::Alive,
            },
            Err(_) => Probe::Alive, // the Cloud API itself is unreachable: no news about the sandbox
        }
    }

    async fn resume_paused(&self, api: &ProviderApi, id: &str) -> Probe {
        tracing::warn!("sandbox {id} was paused by the provider; resuming it");
        if let Err(f) = resume(api, id, None).await {
            return Probe::Gone(format!("sandbox {id} was paused and resuming it failed: {f}"));
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            if let Ok(Some(i)) = info(api, id, Some(deadline)).await
                && status(&i) == "RUNNING"
            {
                if let (Some(key), Some(client)) = (i.get("session_api_key").and_then(Value::as_str), &self.client) {
                    crate::report::redact::register(key);
                    client.set_session_key(Some(key.to_string()));
                }
                return Probe::Resumed;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Probe::Gone(format!("sandbox {id} did not run again after it was resumed"))
    }
}

fn api(s: &CloudSettings) -> Result<ProviderApi, Error> {
    ProviderApi::new(&s.api_url, "Authorization", format!("Bearer {}", s.api_key), s.api_timeout)
}

fn status(info: &Value) -> &str {
    info.get("status").and_then(Value::as_str).unwrap_or("")
}

fn agent_server_url(info: &Value) -> Option<String> {
    info.get("exposed_urls")?
        .as_array()?
        .iter()
        .find(|u| u.get("name").and_then(Value::as_str) == Some("AGENT_SERVER"))?
        .get("url")?
        .as_str()
        .map(str::to_string)
}

/// The sandbox's current record (`GET /api/v1/sandboxes?id=`), or None when the server does not know it.
async fn info(api: &ProviderApi, id: &str, deadline: Option<Instant>) -> Result<Option<Value>, ApiFailure> {
    let v = api.call(Method::GET, api.url(&["api", "v1", "sandboxes"], &[("id", id)]), None, true, deadline).await?;
    Ok(v.as_array().and_then(|a| a.first()).filter(|x| !x.is_null()).cloned())
}

async fn resume(api: &ProviderApi, id: &str, deadline: Option<Instant>) -> Result<(), ApiFailure> {
    tracing::info!("resuming paused sandbox {id}");
    api.call(Method::POST, api.url(&["api", "v1", "sandboxes", id, "resume"], &[]), None, true, deadline)
        .await
        .map(|_| ())
}

/// Ids of the sandboxes the account has now (all pages), or None if the server cannot list them.
async fn sandbox_ids(api: &ProviderApi, deadline: Instant) -> Option<HashSet<String>> {
    let mut ids = HashSet::new();
    let mut page: Option<String> = None;
    for _ in 0..50 {
        let mut query = vec![("limit", "100")];
        if let Some(p) = &page {
            query.push(("page_id", p.as_str()));
        }
        let v = api
            .call(Method::GET, api.url(&["api", "v1", "sandboxes", "search"], &query), None, true, Some(deadline))
            .await
            .ok()?;
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

impl Backend for Cloud {
    fn provision<'a>(&'a mut self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Ready, Error>> {
        Box::pin(self.start(ctx))
    }

    fn release(&mut self, keep: bool) -> BoxFuture<'_, Released> {
        Box::pin(async move {
            let (Some(api), Some(id)) = (self.api.clone(), self.id.clone()) else { return Released::NothingToRelease };
            let api = api.with_cancel(crate::cancel::Cancel::never());
            // `keep_alive` keeps a sandbox that worked, not one that never became ready.
            let keep = keep || (self.settings.keep_alive && self.client.is_some());
            if let Some(done) = provider::release_shortcut(self.released, keep) {
                return done;
            }
            let result = self.delete(&api, &id).await;
            provider::released(&mut self.released, result)
        })
    }

    fn attach_hint(&self, working_dir: &str) -> String {
        let id = self.id.as_deref().unwrap_or_default();
        let url = self.client.as_ref().map(|c| c.base_url().to_string()).unwrap_or_default();
        let api = self.api.as_ref().map(|a| a.base().to_string()).unwrap_or_default();
        format!(
            "Cloud sandbox {id} (agent-server at {url}, working dir {working_dir}; delete it with DELETE {api}/api/v1/sandboxes/{id})"
        )
    }

    fn record(&self) -> Record {
        Record {
            id: self.id.clone(),
            api_retries: self.api.as_ref().map(|a| a.retries()).unwrap_or_default(),
            candidates: self.candidates.clone(),
            ..Record::default()
        }
    }
}

impl SandboxProbe for Cloud {
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(self.probe_now())
    }
}
