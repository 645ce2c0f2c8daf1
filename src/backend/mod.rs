//! Sandboxes: where the agent-server runs. `provision` returns a ready server (healthy, version known);
//! `release` gives it back according to the cleanup policy. Backends know nothing of YAML.

pub mod api;
pub mod cloud;
pub mod docker;
pub mod install;
pub mod local;
pub mod runtime;

use crate::agent::http::AgentClient;
use crate::settings::SandboxSettings;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free now; the caller binds it soon after).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A ready agent-server.
pub struct Provisioned {
    pub client: AgentClient,
    /// The agent's working directory, as the server sees it.
    pub working_dir: String,
    /// The provider's id (process id, container id, sandbox id).
    pub id: Option<String>,
    pub server_info: Value,
    pub log_file: Option<String>,
    pub provision_time: Duration,
    handle: Handle,
}

enum Handle {
    Local(local::LocalServer),
    Docker(docker::DockerContainer),
    Cloud {
        sandbox: cloud::CloudSandbox,
        keep_alive: bool,
    },
    Runtime {
        session: runtime::RuntimeSession,
        keep_alive: bool,
    },
    /// Attached to a server someone else runs: nothing to release.
    Attached,
}

/// Why provisioning failed.
#[derive(Debug)]
pub struct ProvisionError {
    pub message: String,
    pub hint: Option<String>,
    /// The last lines of the server's log, when there is one.
    pub log_tail: Option<String>,
}

pub use crate::agent::session::Probe;

impl crate::agent::session::SandboxProbe for Provisioned {
    fn probe(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Probe> + Send + '_>> {
        Box::pin(Provisioned::probe(self))
    }
}

/// What release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    Released,
    Kept,
    Attached,
    Failed(String),
}

impl Provisioned {
    pub fn server_version(&self) -> Option<String> {
        self.server_info.get("version").and_then(Value::as_str).map(str::to_string)
    }

    pub fn usable_tools(&self) -> Option<Vec<String>> {
        self.server_info
            .get("usable_tools")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).map(str::to_string).collect())
    }

    /// The provider's API client (Cloud, Runtime), whose retry log the report keeps.
    pub fn provider_api(&self) -> Option<api::ProviderApi> {
        match &self.handle {
            Handle::Cloud { sandbox, .. } => Some(sandbox.api.clone()),
            Handle::Runtime { session, .. } => Some(session.api.clone()),
            _ => None,
        }
    }

    /// Asks the provider whether the sandbox still exists (resuming a paused one once).
    pub async fn probe(&self) -> Probe {
        match &self.handle {
            Handle::Cloud { sandbox, .. } => sandbox.probe(&self.client).await,
            Handle::Runtime { session, .. } => session.probe(&self.client).await,
            Handle::Local(server) if !server.running() => Probe::Gone("the agent-server process exited".into()),
            _ => Probe::Alive,
        }
    }

    /// Stops or keeps the sandbox. A kept local server is detached: ohrun leaves it running.
    pub async fn release(self, keep: bool) -> Released {
        match self.handle {
            Handle::Cloud { keep_alive, .. } | Handle::Runtime { keep_alive, .. } if keep || keep_alive => {
                Released::Kept
            }
            Handle::Cloud { sandbox, .. } => match sandbox.delete().await {
                Ok(()) => Released::Released,
                Err(e) => Released::Failed(format!("sandbox {} may still exist: {e}", sandbox.id)),
            },
            Handle::Runtime { session, .. } => match session.release().await {
                Ok(()) if session.created => Released::Released,
                Ok(()) => Released::Attached,
                Err(e) => Released::Failed(format!("runtime {} may still run: {e}", session.runtime_id)),
            },
            Handle::Attached => Released::Attached,
            Handle::Local(server) if keep => {
                server.detach();
                Released::Kept
            }
            Handle::Local(server) => match server.stop().await {
                Ok(()) => Released::Released,
                Err(e) => Released::Failed(e),
            },
            Handle::Docker(_) if keep => Released::Kept,
            Handle::Docker(container) => match container.remove().await {
                Ok(()) => Released::Released,
                Err(e) => Released::Failed(e),
            },
        }
    }

    /// How to reach a kept sandbox, for the console.
    pub fn attach_hint(&self) -> String {
        match &self.handle {
            Handle::Docker(c) => format!(
                "container {} (`docker exec -it {} bash`; agent-server at {}; remove it with `docker rm -f {}`)",
                c.id,
                &c.id[..c.id.len().min(12)],
                self.client.base_url(),
                &c.id[..c.id.len().min(12)]
            ),
            Handle::Cloud { sandbox, .. } => format!(
                "Cloud sandbox {} (agent-server at {}; delete it with DELETE {}/api/v1/sandboxes/{})",
                sandbox.id,
                self.client.base_url(),
                sandbox.api.base(),
                sandbox.id
            ),
            Handle::Runtime { session, .. } => format!(
                "runtime {} (session {}; agent-server at {}; stop it with POST {}/stop)",
                session.runtime_id,
                session.session_id,
                self.client.base_url(),
                session.api.base()
            ),
            _ => format!("agent-server at {} (working dir {})", self.client.base_url(), self.working_dir),
        }
    }
}

/// Provisions the sandbox for one run; `report_dir` holds the run's files (workspace, server log).
pub async fn provision(
    settings: &SandboxSettings,
    labels: &[(&str, &str)],
    report_dir: &Path,
    hide_env: &[String],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Provisioned, ProvisionError> {
    let started = Instant::now();
    match settings {
        SandboxSettings::Local { .. } => {
            let (server, client, working_dir, info) = local::start(settings, report_dir, hide_env, progress).await?;
            Ok(Provisioned {
                client,
                working_dir,
                id: server.pid().map(|p| format!("pid:{p}")),
                server_info: info,
                log_file: Some(server.log_file().display().to_string()),
                provision_time: started.elapsed(),
                handle: Handle::Local(server),
            })
        }
        SandboxSettings::Cloud { settings: c, keep_alive } => {
            let (sandbox, client, info) = cloud::start(c, progress).await?;
            Ok(Provisioned {
                client,
                working_dir: c.working_dir.clone(),
                id: Some(sandbox.id.clone()),
                server_info: info,
                log_file: None,
                provision_time: started.elapsed(),
                handle: Handle::Cloud { sandbox, keep_alive: *keep_alive },
            })
        }
        SandboxSettings::Runtime { settings: r, keep_alive } => {
            let (session, client, info) = runtime::start(r, progress).await?;
            Ok(Provisioned {
                client,
                working_dir: r.working_dir.clone(),
                id: Some(session.runtime_id.clone()),
                server_info: info,
                log_file: None,
                provision_time: started.elapsed(),
                handle: Handle::Runtime { session, keep_alive: *keep_alive },
            })
        }
        SandboxSettings::Docker(d) => {
            let (container, client, info) = docker::start(d, labels, progress).await?;
            Ok(Provisioned {
                client,
                working_dir: d.working_dir.clone(),
                id: Some(container.id.clone()),
                server_info: info,
                log_file: None,
                provision_time: started.elapsed(),
                handle: Handle::Docker(container),
            })
        }
        SandboxSettings::Remote { url, session_key, working_dir, api_timeout } => {
            let client = AgentClient::new(url, session_key.clone(), *api_timeout);
            if !client.healthy().await {
                return Err(ProvisionError {
                    message: format!("the agent-server at {url} does not answer GET /health"),
                    hint: Some("check that it runs and that `sandbox.url` is right".into()),
                    log_tail: None,
                });
            }
            let info = client.server_info().await.map_err(|e| ProvisionError {
                message: e.to_string(),
                hint: None,
                log_tail: None,
            })?;
            Ok(Provisioned {
                client,
                working_dir: working_dir.clone(),
                id: None,
                server_info: info,
                log_file: None,
                provision_time: started.elapsed(),
                handle: Handle::Attached,
            })
        }
    }
}
