//! The sandbox kinds of a job file (`sandbox:`, chosen by `kind`), with the defaults of the SDK's
//! workspaces and of the provider APIs.

use super::values::{EnvString, HumanDuration, SecretRef, d300, is_false};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The sandbox the agent-server runs in, chosen by `kind`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Sandbox {
    /// OpenHands Cloud (the SDK's OpenHandsCloudWorkspace).
    Cloud(CloudSandbox),
    /// The Runtime API (the SDK's APIRemoteWorkspace).
    Runtime(RuntimeSandbox),
    /// A container of the agent-server image on the local Docker engine.
    Docker(DockerSandbox),
    /// An agent-server process that ohrun starts and stops.
    Local(LocalSandbox),
    /// An agent-server that is already running (the SDK's RemoteWorkspace); nothing to provision or stop.
    Remote(RemoteSandbox),
}

impl Sandbox {
    pub const KINDS: [&'static str; 5] = ["cloud", "runtime", "docker", "local", "remote"];

    pub fn kind(&self) -> &'static str {
        match self {
            Sandbox::Cloud(_) => "cloud",
            Sandbox::Runtime(_) => "runtime",
            Sandbox::Docker(_) => "docker",
            Sandbox::Local(_) => "local",
            Sandbox::Remote(_) => "remote",
        }
    }
}

fn d120() -> HumanDuration {
    HumanDuration::secs(120)
}
fn d60() -> HumanDuration {
    HumanDuration::secs(60)
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudSandbox {
    /// Cloud API base URL.
    #[serde(default = "CloudSandbox::default_api_url")]
    pub api_url: EnvString,
    /// Cloud API key, as a reference: `${OPENHANDS_CLOUD_API_KEY}`.
    pub api_key: SecretRef,
    /// Sandbox spec (image) to start; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_spec_id: Option<EnvString>,
    /// Bounds the whole provisioning: create, wait until RUNNING, health check.
    #[serde(default = "d300")]
    pub init_timeout: HumanDuration,
    /// Bounds every other API request.
    #[serde(default = "d60")]
    pub api_timeout: HumanDuration,
    /// Leave the sandbox running after the job.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_alive: bool,
    /// Working directory of the agent inside the sandbox.
    #[serde(default = "CloudSandbox::default_working_dir")]
    pub working_dir: EnvString,
    /// Allow sending the key over plain http to a host that is not loopback.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_insecure_http: bool,
}

impl CloudSandbox {
    fn default_api_url() -> EnvString {
        EnvString("https://app.all-hands.dev".into())
    }
    fn default_working_dir() -> EnvString {
        EnvString("/workspace/project".into())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSandbox {
    /// Runtime API base URL.
    pub api_url: EnvString,
    /// Runtime API key, as a reference: `${RUNTIME_API_KEY}`.
    pub api_key: SecretRef,
    /// Agent-server image to start.
    pub image: EnvString,
    /// `IfNotPresent` (default), `Always` or `Never`.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// Session id to create or re-attach to; a fresh `ohrun-<uuid>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<EnvString>,
    /// Resource factor: 1, 2, 4 or 8.
    #[serde(default = "RuntimeSandbox::default_resource_factor")]
    pub resource_factor: u8,
    /// Runtime class; `null` to leave it to the server.
    #[serde(default = "RuntimeSandbox::default_runtime_class")]
    pub runtime_class: Option<EnvString>,
    /// `binary` (the image's /usr/local/bin/openhands-agent-server) or `source`.
    #[serde(default)]
    pub target_type: TargetType,
    /// Host environment variables copied into the sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_env: Vec<String>,
    /// Bounds the whole provisioning (start and readiness).
    #[serde(default = "d300")]
    pub init_timeout: HumanDuration,
    /// Bounds every other API request.
    #[serde(default = "d60")]
    pub api_timeout: HumanDuration,
    /// Leave the runtime running after the job.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_alive: bool,
    /// Pause the runtime on release instead of stopping it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pause_on_close: bool,
    /// Working directory of the agent inside the sandbox.
    #[serde(default = "RuntimeSandbox::default_working_dir")]
    pub working_dir: EnvString,
    /// Allow sending the key over plain http to a host that is not loopback.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_insecure_http: bool,
}

impl RuntimeSandbox {
    fn default_resource_factor() -> u8 {
        1
    }
    fn default_runtime_class() -> Option<EnvString> {
        Some(EnvString("sysbox-runc".into()))
    }
    fn default_working_dir() -> EnvString {
        EnvString("/workspace".into())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    #[default]
    IfNotPresent,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    #[default]
    Binary,
    Source,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerSandbox {
    /// Agent-server image. Without it: the official ghcr.io/openhands/agent-server image of the pinned
    /// version where the engine has it or can pull it, else ohrun's own, built offline. A named image is
    /// used as named (ohrun's own too: `ohrun/agent-server:1.58.2-python`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<EnvString>,
    /// Extra arguments for the agent-server (after `--host … --port …`), e.g. `[--import-modules, my.tools]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<EnvString>>,
    /// Host paths mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Host environment variables copied into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_env: Vec<String>,
    /// Extra environment for the container.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, EnvString>,
    /// Image platform, e.g. `linux/amd64`; the engine's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<EnvString>,
    /// Docker network: `host` shares the host's network (the server listens on 127.0.0.1 only), a name attaches
    /// to that network; when absent, `host` if the LLM's base URL is on loopback (so the container can reach
    /// it, e.g. a rehearsal), else the default bridge with the port published on 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<EnvString>,
    /// Memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// CPU limit (cores, may be fractional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// How long the server may take to become healthy.
    #[serde(default = "d120")]
    pub init_timeout: HumanDuration,
    /// Working directory of the agent inside the container.
    #[serde(default = "DockerSandbox::default_working_dir")]
    pub working_dir: EnvString,
}

impl DockerSandbox {
    fn default_working_dir() -> EnvString {
        EnvString("/workspace".into())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Host path (relative paths are relative to the job file).
    pub host: EnvString,
    /// Path inside the container.
    pub container: EnvString,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalSandbox {
    /// Command that starts the agent-server (ohrun adds `--host` and `--port`); by default ohrun uses the
    /// venv it manages (`ohrun setup local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<EnvString>>,
    /// Port to listen on; a free one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The agent's working directory; a fresh `workspace/` in the run's report directory when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<EnvString>,
    /// Extra environment for the server process.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, EnvString>,
    /// How long the server may take to become healthy.
    #[serde(default = "d120")]
    pub init_timeout: HumanDuration,
    /// `run` (the default): every run starts its own agent-server. `batch`: the runs of a batch whose
    /// sandbox settings are the same share one agent-server, each as its own conversation in its own
    /// working directory; it starts with the first run that needs it and stops when the batch ends.
    #[serde(default, skip_serializing_if = "Share::is_run")]
    pub share: Share,
}

impl Default for LocalSandbox {
    fn default() -> Self {
        LocalSandbox {
            command: None,
            port: None,
            working_dir: None,
            env: IndexMap::new(),
            init_timeout: d120(),
            share: Share::Run,
        }
    }
}

/// Who an agent-server started by ohrun serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Share {
    /// One run: its own server, stopped when the run ends.
    #[default]
    Run,
    /// Every run of the batch with the same sandbox settings.
    Batch,
}

impl Share {
    fn is_run(&self) -> bool {
        *self == Share::Run
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteSandbox {
    /// Base URL of the running agent-server.
    pub url: EnvString,
    /// Its session key, as a reference: `${SESSION_API_KEY}`; absent when the server has no auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<SecretRef>,
    /// The agent's working directory on that server.
    pub working_dir: EnvString,
    /// Bounds every request to the server.
    #[serde(default = "d60")]
    pub api_timeout: HumanDuration,
    /// Allow sending the session key over plain http to a host that is not loopback.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_insecure_http: bool,
}
