//! `kind: docker`: a container of the agent-server image on the local Docker engine, through the Engine
//! API (bollard; no docker CLI). The container is labelled (created-by, run id, job) so it can always be
//! found again, gets a random session key, and is stopped and removed on release.
//!
//! Networking: the LLM must be reachable from inside the container. When the LLM's base URL is on
//! loopback (the rehearsal endpoint, a local model server) the container shares the host's network and the
//! server listens on 127.0.0.1 only; otherwise it runs on the default bridge (or the job's `network`) with
//! its port published on 127.0.0.1 only. Nothing is exposed beyond loopback either way.

use super::{ProvisionError, free_port};
use crate::agent::http::AgentClient;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const LABEL_CREATED_BY: &str = "dev.ohrun.created-by";
pub const LABEL_RUN_ID: &str = "dev.ohrun.run-id";
pub const LABEL_JOB: &str = "dev.ohrun.job";
/// The port the server listens on inside the container (bridge mode), as in the official image.
const CONTAINER_PORT: u16 = 8000;

#[derive(Clone, Debug)]
pub struct DockerSettings {
    pub image: String,
    /// Extra arguments for the server (the image's default is `--host 0.0.0.0 --port 8000`).
    pub command: Option<Vec<String>>,
    /// `host:container[:ro]` binds, host paths absolute.
    pub binds: Vec<String>,
    pub env: Vec<(String, String)>,
    pub platform: Option<String>,
    /// `host` shares the host's network; None is the default bridge.
    pub network: Option<String>,
    pub memory_mb: Option<u64>,
    pub cpus: Option<f64>,
    pub init_timeout: Duration,
    pub working_dir: String,
}

pub struct DockerContainer {
    docker: Docker,
    pub id: String,
}

impl DockerContainer {
    /// Stops (10 s grace) and removes the container.
    pub async fn remove(self) -> Result<(), String> {
        let _ = self.docker.stop_container(&self.id, Some(StopContainerOptionsBuilder::default().t(10).build())).await;
        self.docker
            .remove_container(&self.id, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
            .await
            .map_err(|e| format!("removing container {} failed: {e}", short(&self.id)))
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub async fn connect() -> Result<Docker, ProvisionError> {
    let unreachable = |e: String| ProvisionError {
        message: format!("the Docker engine is not reachable: {e}"),
        hint: Some("start the engine (e.g. `systemctl start docker`) or point DOCKER_HOST at it".into()),
        log_tail: None,
    };
    let docker = Docker::connect_with_local_defaults().map_err(|e| unreachable(e.to_string()))?;
    let docker = docker.negotiate_version().await.map_err(|e| unreachable(e.to_string()))?;
    docker.ping().await.map_err(|e| unreachable(e.to_string()))?;
    Ok(docker)
}

/// Creates, starts and health-checks the container.
pub async fn start(
    settings: &DockerSettings,
    labels: &[(&str, &str)],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(DockerContainer, AgentClient, Value), ProvisionError> {
    let docker = connect().await?;
    let infra = |message: String, hint: Option<String>| ProvisionError { message, hint, log_tail: None };
    if let Err(e) = docker.inspect_image(&settings.image).await {
        let missing = matches!(&e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. });
        return Err(if missing {
            infra(
                format!("the image {} is not on this Docker engine", settings.image),
                Some(format!(
                    "build it offline with scripts/build-agent-server-image.sh{}, or `docker pull ghcr.io/openhands/agent-server:1.58.2-python` where a registry is reachable and set `sandbox.image`",
                    if settings.image == crate::job::model::DockerSandbox::DEFAULT_IMAGE {
                        ""
                    } else {
                        " (it builds the default image)"
                    }
                )),
            )
        } else {
            infra(format!("inspecting the image {} failed: {e}", settings.image), None)
        });
    }
    let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let host_network = settings.network.as_deref() == Some("host");
    // A published port can be taken between choosing it and starting the container: try a few.
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let port = free_port().map_err(|e| infra(format!("no free port on 127.0.0.1: {e}"), None))?;
        let body = container_body(settings, labels, &key, port, host_network);
        let name = format!(
            "ohrun-{}-{}",
            labels.iter().find(|(k, _)| *k == LABEL_RUN_ID).map(|(_, v)| *v).unwrap_or("run"),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' })
            .take(120)
            .collect();
        let mut options = CreateContainerOptionsBuilder::default().name(&name);
        if let Some(p) = &settings.platform {
            options = options.platform(p);
        }
        let created = docker
            .create_container(Some(options.build()), body)
            .await
            .map_err(|e| infra(format!("creating the container failed: {e}"), None))?;
        let container = DockerContainer { docker: docker.clone(), id: created.id.clone() };
        if let Err(e) = docker.start_container(&created.id, None).await {
            last_error = e.to_string();
            let _ = container.remove().await;
            if last_error.contains("port is already allocated") || last_error.contains("address already in use") {
                continue;
            }
            return Err(infra(format!("starting the container failed: {last_error}"), None));
        }
        progress(&format!("container {} started from {}", short(&created.id), settings.image));
        let base = format!("http://127.0.0.1:{port}");
        let client = AgentClient::new(&base, Some(key.clone()), Duration::from_secs(60));
        return match wait_healthy(&container, &client, settings.init_timeout).await {
            Ok(()) => {
                let info = client.server_info().await.map_err(|e| infra(e.to_string(), None))?;
                Ok((container, client, info))
            }
            Err(e) => {
                let _ = container.remove().await;
                Err(e)
            }
        };
    }
    Err(infra(
        format!("starting the container failed: {last_error}"),
        Some("free ports on 127.0.0.1 are scarce".into()),
    ))
}

fn container_body(
    settings: &DockerSettings,
    labels: &[(&str, &str)],
    key: &str,
    port: u16,
    host_network: bool,
) -> ContainerCreateBody {
    let mut env = vec![
        format!("OH_SESSION_API_KEYS_0={key}"),
        "OH_ENABLE_VSCODE=false".to_string(),
        "OH_ENABLE_BROWSER=false".to_string(),
        "LITELLM_LOCAL_MODEL_COST_MAP=True".to_string(),
    ];
    env.extend(settings.env.iter().map(|(k, v)| format!("{k}={v}")));
    let mut cmd: Vec<String> = if host_network {
        // Sharing the host's network: listen on loopback only.
        vec!["--host".into(), "127.0.0.1".into(), "--port".into(), port.to_string()]
    } else {
        vec!["--host".into(), "0.0.0.0".into(), "--port".into(), CONTAINER_PORT.to_string()]
    };
    if let Some(extra) = &settings.command {
        cmd.extend(extra.iter().cloned());
    }
    let mut host = HostConfig {
        binds: (!settings.binds.is_empty()).then(|| settings.binds.clone()),
        memory: settings.memory_mb.map(|m| (m * 1024 * 1024) as i64),
        nano_cpus: settings.cpus.map(|c| (c * 1e9) as i64),
        network_mode: settings.network.clone(),
        ..Default::default()
    };
    let mut exposed = None;
    if !host_network {
        let binding = PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(port.to_string()) };
        host.port_bindings = Some(HashMap::from([(format!("{CONTAINER_PORT}/tcp"), Some(vec![binding]))]));
        exposed = Some(vec![format!("{CONTAINER_PORT}/tcp")]);
    }
    ContainerCreateBody {
        image: Some(settings.image.clone()),
        cmd: Some(cmd),
        env: Some(env),
        labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        exposed_ports: exposed,
        host_config: Some(host),
        ..Default::default()
    }
}

/// Polls /health until `timeout`, failing fast (with the container's last log lines) if it stops.
async fn wait_healthy(
    container: &DockerContainer,
    client: &AgentClient,
    timeout: Duration,
) -> Result<(), ProvisionError> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = container.docker.inspect_container(&container.id, None).await.ok().and_then(|i| i.state);
        let running = state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if !running {
            let code = state.as_ref().and_then(|s| s.exit_code).unwrap_or(-1);
            let oom = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
            let why =
                if oom { " (killed: out of memory; raise `sandbox.memory_mb`)".to_string() } else { String::new() };
            return Err(ProvisionError {
                message: format!(
                    "container {} exited with code {code} before the agent-server became healthy{why}",
                    short(&container.id)
                ),
                hint: Some("check the image and `sandbox.command`; the container's last log lines are below".into()),
                log_tail: Some(log_tail(&container.docker, &container.id, 20).await),
            });
        }
        if client.healthy().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ProvisionError {
                message: format!(
                    "the agent-server in container {} was not healthy within {}s",
                    short(&container.id),
                    timeout.as_secs()
                ),
                hint: Some("raise `sandbox.init_timeout`".into()),
                log_tail: Some(log_tail(&container.docker, &container.id, 20).await),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn log_tail(docker: &Docker, id: &str, lines: usize) -> String {
    let options = LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&lines.to_string()).build();
    let mut stream = docker.logs(id, Some(options));
    let mut out = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        out.push_str(&chunk.to_string());
    }
    out.trim_end().to_string()
}
