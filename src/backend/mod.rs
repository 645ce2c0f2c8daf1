//! Sandboxes: where the agent-server runs. One [`Backend`] per kind (local process, Docker container,
//! Cloud sandbox, Runtime API session, a server that already runs). A backend is created from its settings
//! before anything exists and lives as long as the run: `provision` records what it creates in the
//! backend the moment it exists, so `release` can give it back whether provisioning finished, failed or
//! was interrupted. Backends know nothing of YAML.

pub mod cloud;
pub mod docker;
mod health;
pub mod image;
pub mod install;
pub mod local;
pub mod official;
pub mod provider;
pub mod remote;
pub mod runtime;

use crate::agent::http::AgentClient;
pub use crate::agent::{BoxFuture, Probe, SandboxProbe};
use crate::cancel::Cancel;
use crate::report::ApiRetry;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Each kind's settings, resolved from the job and the environment (by `settings::sandbox`).
#[derive(Clone, Debug)]
pub enum Settings {
    Local(local::LocalSettings),
    Docker(docker::DockerSettings),
    Cloud(cloud::CloudSettings),
    Runtime(runtime::RuntimeSettings),
    Remote(remote::RemoteSettings),
}

impl Settings {
    /// The agent-server URL ohrun will talk to when the settings name one (remote), or the provider's API.
    pub fn far_url(&self) -> Option<&str> {
        match self {
            Settings::Cloud(c) => Some(&c.api_url),
            Settings::Runtime(r) => Some(&r.api_url),
            Settings::Remote(r) => Some(&r.url),
            Settings::Local(_) | Settings::Docker(_) => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Settings::Local(_) => "local",
            Settings::Docker(_) => "docker",
            Settings::Cloud(_) => "cloud",
            Settings::Runtime(_) => "runtime",
            Settings::Remote(_) => "remote",
        }
    }

    /// The backend for these settings; nothing is created yet.
    pub fn backend(self) -> Box<dyn Backend> {
        match self {
            Settings::Local(s) => Box::new(local::Local::new(s)),
            Settings::Docker(s) => Box::new(docker::DockerBackend::new(s)),
            Settings::Cloud(s) => Box::new(cloud::Cloud::new(s)),
            Settings::Runtime(s) => Box::new(runtime::Runtime::new(s)),
            Settings::Remote(s) => Box::new(remote::Remote::new(s)),
        }
    }
}

/// A ready agent-server.
pub struct Ready {
    pub client: AgentClient,
    /// The agent's working directory, as the server sees it.
    pub working_dir: String,
    pub server_info: Value,
}

impl Ready {
    pub fn server_version(&self) -> Option<String> {
        self.server_info.get("version").and_then(Value::as_str).map(str::to_string)
    }

    pub fn usable_tools(&self) -> Option<Vec<String>> {
        self.server_info
            .get("usable_tools")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).map(str::to_string).collect())
    }
}

/// What provisioning needs from the run.
pub struct Context<'a> {
    pub run_id: &'a str,
    pub job: &'a str,
    /// The run's report directory (workspace and server log of a local sandbox go there).
    pub report_dir: &'a Path,
    /// Environment variables never passed to a process ohrun starts (secrets).
    pub hide_env: &'a [String],
    /// The run's own deadline (`limits.timeout`), which also bounds provisioning.
    pub run_deadline: Option<Instant>,
    pub cancel: Cancel,
    pub progress: &'a (dyn Fn(&str) + Sync),
    /// Where the backend records what it creates, before creating it (`ledger.rs`).
    pub ledger: &'a crate::ledger::Slot,
    /// Told the backend's [`Record`] each time it learns an id while provisioning, so that the run's
    /// checkpoint names the sandbox as soon as the ledger and the console do.
    pub recorded: &'a (dyn Fn(Record) + Sync),
}

impl Context<'_> {
    /// The earlier of `now + init_timeout` and the run's deadline.
    pub fn deadline(&self, init_timeout: std::time::Duration) -> Instant {
        let own = Instant::now() + init_timeout;
        self.run_deadline.map_or(own, |r| r.min(own))
    }

    /// Which limit a provisioning that ran out of time hit, for the message and its hint.
    pub fn limit(&self, init_timeout: std::time::Duration) -> (String, &'static str) {
        match self.run_deadline {
            Some(r) if r <= Instant::now() + init_timeout => {
                ("the run's limits.timeout".into(), "raise `limits.timeout`")
            }
            _ => {
                (format!("init_timeout ({})", humantime::format_duration(init_timeout)), "raise `sandbox.init_timeout`")
            }
        }
    }
}

/// What the report says about the sandbox, readable at any time (also after a failed provisioning).
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// The provider's id (process id, container id, sandbox id), once it exists.
    pub id: Option<String>,
    pub log_file: Option<PathBuf>,
    pub api_retries: Vec<ApiRetry>,
    pub candidates: Vec<String>,
    /// The image a docker sandbox runs, and why that one.
    pub image: Option<crate::report::model::SandboxImage>,
}

/// What release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    Released,
    Kept,
    /// Someone else's server (remote, or a Runtime session ohrun attached to): left as it was.
    Attached,
    /// Nothing had been created.
    NothingToRelease,
    /// The batch's shared server (`sandbox.share: batch`): the batch releases it when every run has ended.
    Shared,
    Failed(String),
}

impl Released {
    /// The report's `sandbox.disposition`.
    pub fn disposition(&self) -> &'static str {
        match self {
            Released::Released => "released",
            Released::Kept => "kept",
            Released::Attached => "attached",
            Released::NothingToRelease => "not_provisioned",
            Released::Shared => "shared",
            Released::Failed(_) => "release_failed",
        }
    }
}

/// One kind of sandbox. `probe` (from [`SandboxProbe`]) asks whether it still exists while a job runs,
/// and resumes one the provider paused, once.
pub trait Backend: SandboxProbe {
    /// Creates the sandbox and waits until its agent-server answers. Checks `ctx.cancel` at every wait
    /// and returns `Interrupted` there; never abandons a request half-way.
    fn provision<'a>(&'a mut self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Ready, Error>>;

    /// Gives back whatever was created (or keeps it when `keep`).
    fn release(&mut self, keep: bool) -> BoxFuture<'_, Released>;

    /// How to reach a kept sandbox, for the console.
    fn attach_hint(&self, working_dir: &str) -> String;

    fn record(&self) -> Record;
}

/// Why provisioning did not give a ready server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// It failed, and trying again as it is would fail again (a bad image, a refused key).
    Failed,
    /// A provider or the network failed in a way that may pass (5xx, 429, unreachable).
    Transient,
    /// The sandbox did not become ready in time.
    NotReady,
    /// The sandbox ran out of memory or kept crashing while it started.
    OutOfResources,
    /// A create may have made a sandbox ohrun could not identify: these candidates may be left behind.
    Unsure(Vec<String>),
    /// ohrun was asked to stop.
    Interrupted,
}

impl ErrorKind {
    /// True when provisioning stopped because ohrun was asked to.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, ErrorKind::Interrupted)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    /// The last lines of the server's log, when there is one.
    pub log_tail: Option<String>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), hint: None, log_tail: None }
    }

    pub fn failed(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Failed, message)
    }

    pub fn interrupted() -> Error {
        Error::new(ErrorKind::Interrupted, "interrupted while provisioning")
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// The sandbox ledger could not record a sandbox about to be created: then nothing is created.
    pub fn ledger(e: std::io::Error) -> Error {
        Error::failed(format!("cannot write the sandbox ledger in {}: {e}", crate::ledger::dir().display()))
            .hint("ohrun records every sandbox there before creating it; set OHRUN_STATE_DIR to a writable directory")
    }

    pub fn log_tail(mut self, tail: impl Into<String>) -> Error {
        let tail = tail.into();
        self.log_tail = (!tail.trim().is_empty()).then_some(tail);
        self
    }
}

impl From<crate::agent::http::ApiError> for Error {
    fn from(e: crate::agent::http::ApiError) -> Error {
        let kind = if e.is_transient() { ErrorKind::Transient } else { ErrorKind::Failed };
        Error::new(kind, e.to_string())
    }
}

/// A free TCP port on 127.0.0.1 (free now; the caller binds it soon after).
fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::failed(format!("no free port on 127.0.0.1: {e}")).hint("check local networking"))
}

/// A random session key for a server ohrun starts.
fn random_key() -> String {
    let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    crate::report::redact::register(&key);
    key
}
