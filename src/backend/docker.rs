//! `kind: docker`: a container of the agent-server image on the local Docker engine, through the Engine
//! API (bollard; no docker CLI). The container is labelled (created-by, run id, job) so it can always be
//! found again, gets a random session key, and is stopped and removed on release; a removal that fails is
//! reported, never ignored. Without `sandbox.image` the official image runs, or ohrun's own where it cannot
//! be pulled (`official.rs`, `image.rs`); an image the job names must exist.
//!
//! Networking: the LLM must be reachable from inside the container. When the LLM's base URL is on
//! loopback (the rehearsal endpoint, a local model server) the container shares the host's network and the
//! server listens on 127.0.0.1 only; otherwise it runs on the default bridge (or the job's `network`) with
//! its port published on 127.0.0.1 only. Nothing is exposed beyond loopback either way.

use super::{
    Backend, BoxFuture, Context, Error, ErrorKind, Probe, Ready, Record, Released, SandboxProbe, free_port, health,
    image, official,
};
use crate::agent::http::AgentClient;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

pub const LABEL_CREATED_BY: &str = "dev.ohrun.created-by";
pub const LABEL_RUN_ID: &str = "dev.ohrun.run-id";
pub const LABEL_JOB: &str = "dev.ohrun.job";
/// The ledger entry (`<ledger file>#<n>`) that names the container: `gc`'s second net finds it by this even
/// when ohrun died before it learned the container's id.
pub const LABEL_LEDGER: &str = "dev.ohrun.ledger";
/// The port the server listens on inside the container (bridge mode), as in the official image.
const CONTAINER_PORT: u16 = 8000;

#[derive(Clone, Debug, Default)]
pub struct DockerSettings {
    /// `sandbox.image`; None: the official image, or ohrun's own where it cannot be pulled (`official.rs`).
    /// Once provisioning has chosen, the image it runs.
    pub image: Option<String>,
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

pub struct DockerBackend {
    settings: DockerSettings,
    docker: Option<Docker>,
    /// The container, from the moment it was created until it is removed.
    container: Option<String>,
    /// Its id, kept after removal for the report.
    id: Option<String>,
    client: Option<AgentClient>,
    /// The image it runs and why (the default resolves to the official image or ohrun's own).
    chosen: Option<official::Chosen>,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub async fn connect() -> Result<Docker, Error> {
    let unreachable = |e: String| {
        Error::failed(format!("the Docker engine is not reachable: {e}"))
            .hint("start the engine (e.g. `systemctl start docker`) or point DOCKER_HOST at it")
    };
    let docker = Docker::connect_with_local_defaults().map_err(|e| unreachable(e.to_string()))?;
    let docker = docker.negotiate_version().await.map_err(|e| unreachable(e.to_string()))?;
    docker.ping().await.map_err(|e| unreachable(e.to_string()))?;
    Ok(docker)
}

impl DockerBackend {
    pub fn new(settings: DockerSettings) -> DockerBackend {
        DockerBackend { settings, docker: None, container: None, id: None, client: None, chosen: None }
    }

    /// A container an ohrun that is gone created (for `gc`): removed as if this backend had made it.
    pub fn adopt(docker: Docker, id: String) -> DockerBackend {
        let settings = DockerSettings::default();
        DockerBackend {
            docker: Some(docker),
            container: Some(id.clone()),
            id: Some(id),
            ..DockerBackend::new(settings)
        }
    }

    async fn start(&mut self, ctx: &Context<'_>) -> Result<Ready, Error> {
        let docker = connect().await?;
        self.docker = Some(docker.clone());
        let mut cancel = ctx.cancel.clone();
        // A run never installs host packages: only `ohrun setup docker` may (to build ohrun's image).
        let chosen = official::choose(
            &docker,
            self.settings.image.as_deref(),
            image::HostPackages::Never,
            ctx.progress,
            &mut cancel,
        )
        .await?;
        self.settings.image = Some(chosen.image.clone());
        self.chosen = Some(chosen);
        (ctx.recorded)(self.record());
        let key = super::random_key();
        let host_network = self.settings.network.as_deref() == Some("host");
        ctx.ledger.open("docker", |_| {}).map_err(Error::ledger)?;
        // A published port can be taken between choosing it and starting the container: try a few.
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let port = free_port()?;
            let id = self.create(&docker, ctx, &key, port, host_network).await?;
            if let Err(e) = docker.start_container(&id, None).await {
                last_error = e.to_string();
                if let Err(removal) = self.remove().await {
                    return Err(Error::failed(format!("starting the container failed: {last_error}; {removal}")));
                }
                if last_error.contains("port is already allocated") || last_error.contains("address already in use") {
                    continue;
                }
                return Err(Error::failed(format!("starting the container failed: {last_error}")));
            }
            (ctx.progress)(&format!("container {} started from {}", short(&id), chosen_image(&self.settings)));
            let client =
                AgentClient::new(&format!("http://127.0.0.1:{port}"), Some(key.clone()), Duration::from_secs(60))
                    .with_cancel(ctx.cancel.clone());
            self.wait_healthy(&docker, &id, &client, ctx).await?;
            let server_info = client.server_info().await?;
            self.client = Some(client.clone());
            return Ok(Ready { client, working_dir: self.settings.working_dir.clone(), server_info });
        }
        Err(Error::failed(format!("starting the container failed: {last_error}"))
            .hint("free ports on 127.0.0.1 are scarce"))
    }

    /// Creates the container and records it at once, so that it is released whatever happens next.
    async fn create(
        &mut self,
        docker: &Docker,
        ctx: &Context<'_>,
        key: &str,
        port: u16,
        host_network: bool,
    ) -> Result<String, Error> {
        let entry = ctx.ledger.label().unwrap_or_default();
        let labels =
            [(LABEL_CREATED_BY, "ohrun"), (LABEL_RUN_ID, ctx.run_id), (LABEL_JOB, ctx.job), (LABEL_LEDGER, &entry)];
        let body = container_body(&self.settings, &labels, key, port, host_network);
        let name: String = format!("ohrun-{}-{}", ctx.run_id, &uuid::Uuid::new_v4().simple().to_string()[..6])
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' })
            .take(120)
            .collect();
        let mut options = CreateContainerOptionsBuilder::default().name(&name);
        if let Some(p) = &self.settings.platform {
            options = options.platform(p);
        }
        let created = docker
            .create_container(Some(options.build()), body)
            .await
            .map_err(|e| Error::failed(format!("creating the container failed: {e}")))?;
        self.container = Some(created.id.clone());
        self.id = Some(created.id.clone());
        ctx.ledger.update(|l| {
            l.id = Some(created.id.clone());
            l.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        });
        (ctx.recorded)(self.record());
        Ok(created.id)
    }

    async fn wait_healthy(
        &self,
        docker: &Docker,
        id: &str,
        client: &AgentClient,
        ctx: &Context<'_>,
    ) -> Result<(), Error> {
        let mut cancel = ctx.cancel.clone();
        let (limit, raise) = ctx.limit(self.settings.init_timeout);
        health::wait(
            client,
            ctx.deadline(self.settings.init_timeout),
            &mut cancel,
            || async {
                let state = docker.inspect_container(id, None).await.ok().and_then(|i| i.state);
                if state.as_ref().and_then(|s| s.running).unwrap_or(false) {
                    return None;
                }
                let code = state.as_ref().and_then(|s| s.exit_code).unwrap_or(-1);
                let oom = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
                let why = if oom { " (killed: out of memory; raise `sandbox.memory_mb`)" } else { "" };
                let kind = if oom { ErrorKind::OutOfResources } else { ErrorKind::Failed };
                Some(
                    Error::new(
                        kind,
                        format!(
                            "container {} exited with code {code} before the agent-server became healthy{why}",
                            short(id)
                        ),
                    )
                    .hint("check the image and `sandbox.command`; the container's last log lines are below")
                    .log_tail(log_tail(docker, id, 20).await),
                )
            },
            || async {
                Error::failed(format!("the agent-server in container {} was not healthy within {limit}", short(id)))
                    .hint(raise)
                    .log_tail(log_tail(docker, id, 20).await)
            },
        )
        .await
    }

    /// Whether the adopted container still exists (its state), for `gc`.
    pub async fn status_now(&self) -> Result<Option<String>, String> {
        let (Some(docker), Some(id)) = (&self.docker, &self.container) else { return Ok(None) };
        match docker.inspect_container(id, None).await {
            Ok(i) => Ok(Some(i.state.and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_default())),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stops (10 s grace) and removes the container; it stays recorded if that fails.
    async fn remove(&mut self) -> Result<(), String> {
        let (Some(docker), Some(id)) = (&self.docker, self.container.clone()) else { return Ok(()) };
        if let Err(e) = docker.stop_container(&id, Some(StopContainerOptionsBuilder::default().t(10).build())).await {
            tracing::debug!("stopping container {} failed (removing it anyway): {e}", short(&id));
        }
        match docker
            .remove_container(&id, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
            .await
        {
            Ok(()) => {
                self.container = None;
                Ok(())
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                self.container = None;
                Ok(())
            }
            Err(e) => Err(format!("removing container {} failed: {e}", short(&id))),
        }
    }
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
        // The server keeps its state under its working directory (/workspace) by default, inside the
        // agent's working directory: the agent would see (and could change) its own event logs, and every
        // workspace diff would list them.
        "OH_CONVERSATIONS_PATH=/tmp/agent-server/conversations".to_string(),
        "OH_BASH_EVENTS_DIR=/tmp/agent-server/bash_events".to_string(),
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
    let mut binds = settings.binds.clone();
    if let Some(volume) = image::venv_volume(chosen_image(settings)) {
        // Read-only: one copy serves every container (see image.rs for why it is a volume).
        binds.push(format!("{volume}:{}:ro", image::VENV));
    }
    let mut host = HostConfig {
        binds: (!binds.is_empty()).then_some(binds),
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
        image: Some(chosen_image(settings).to_string()),
        cmd: Some(cmd),
        env: Some(env),
        labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        exposed_ports: exposed,
        host_config: Some(host),
        ..Default::default()
    }
}

/// The last `lines` lines of a container's output, redacted before they are cut: the engine is asked for
/// as many more as the longest secret spans, so a multi-line secret across the cut is masked whole.
pub async fn log_tail(docker: &Docker, id: &str, lines: usize) -> String {
    let asked = lines + crate::report::redact::max_lines();
    let options = LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&asked.to_string()).build();
    let mut stream = docker.logs(id, Some(options));
    let mut out = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        out.push_str(&chunk.to_string());
    }
    let clean = crate::report::redact::apply(out.trim_end());
    let all: Vec<&str> = clean.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Backend for DockerBackend {
    fn provision<'a>(&'a mut self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Ready, Error>> {
        Box::pin(self.start(ctx))
    }

    fn release(&mut self, keep: bool) -> BoxFuture<'_, Released> {
        Box::pin(async move {
            if self.container.is_none() {
                return Released::NothingToRelease;
            }
            if keep && self.client.is_some() {
                return Released::Kept;
            }
            match self.remove().await {
                Ok(()) => Released::Released,
                Err(e) => Released::Failed(e),
            }
        })
    }

    fn attach_hint(&self, working_dir: &str) -> String {
        let id = self.id.as_deref().unwrap_or_default();
        let url = self.client.as_ref().map(|c| c.base_url().to_string()).unwrap_or_default();
        format!(
            "container {id} (`docker exec -it -w {working_dir} {} bash`; agent-server at {url}; remove it with `docker rm -f {}`)",
            short(id),
            short(id)
        )
    }

    fn record(&self) -> Record {
        let image = self
            .chosen
            .as_ref()
            .map(|c| crate::report::model::SandboxImage { name: c.image.clone(), why: c.why.clone() });
        Record { id: self.id.clone(), image, ..Record::default() }
    }
}

impl From<bollard::errors::Error> for Error {
    fn from(e: bollard::errors::Error) -> Error {
        Error::new(ErrorKind::Failed, format!("the Docker engine refused: {e}"))
    }
}

impl SandboxProbe for DockerBackend {
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            let (Some(docker), Some(id)) = (&self.docker, &self.container) else { return Probe::Alive };
            match docker.inspect_container(id, None).await {
                Ok(i) if i.state.as_ref().and_then(|s| s.running) == Some(false) => {
                    Probe::Gone(format!("container {} stopped", short(id)))
                }
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                    Probe::Gone(format!("container {} no longer exists", short(id)))
                }
                _ => Probe::Alive,
            }
        })
    }
}

/// The image a container is made from: the one provisioning chose (`DockerBackend::start` sets it first).
fn chosen_image(settings: &DockerSettings) -> &str {
    settings.image.as_deref().unwrap_or(image::DEFAULT_IMAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(image: &str) -> DockerSettings {
        DockerSettings {
            image: Some(image.into()),
            binds: vec!["/src:/workspace/project".into()],
            working_dir: "/workspace".into(),
            ..DockerSettings::default()
        }
    }

    #[test]
    fn the_default_image_mounts_its_venv_volume_read_only_and_other_images_do_not() {
        let body = container_body(&settings(image::DEFAULT_IMAGE), &[], "k", 1234, true);
        let volume = image::venv_volume(image::DEFAULT_IMAGE).unwrap();
        assert_eq!(
            body.host_config.unwrap().binds.unwrap(),
            vec!["/src:/workspace/project".to_string(), format!("{volume}:/opt/agent-server:ro")]
        );
        let body = container_body(&settings("ghcr.io/openhands/agent-server:1.58.2-python"), &[], "k", 1234, true);
        assert_eq!(body.host_config.unwrap().binds.unwrap(), vec!["/src:/workspace/project".to_string()]);
    }
}
