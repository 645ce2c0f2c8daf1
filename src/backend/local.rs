//! `kind: local`: an agent-server process that ohrun starts, supervises and stops. The server leads its
//! own process group, so stopping it (TERM, then KILL after a grace period) reaches everything it
//! spawned; KillOnDrop covers every early return and panic. Its tmux sockets live in the server's own
//! state directory, and any tmux server left there is killed after the stop.

use super::install;
use super::{ProvisionError, free_port};
use crate::agent::http::AgentClient;
use crate::settings::SandboxSettings;
use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop, ProcessGroup};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the server gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct LocalServer {
    child: Option<Box<dyn ChildWrapper>>,
    state_dir: Option<tempfile::TempDir>,
    log_file: PathBuf,
}

impl LocalServer {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// False once the server process has exited.
    pub fn running(&self) -> bool {
        self.pid().is_some_and(|pid| {
            // SAFETY: signal 0 only checks that the process exists.
            unsafe { libc::kill(pid as i32, 0) == 0 }
        })
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Leaves the server running (cleanup policy said keep): no kill on drop, state dir kept.
    pub fn detach(mut self) {
        if let Some(child) = self.child.take() {
            // Dropping only the wrappers would kill it; leak the handle on purpose.
            std::mem::forget(child);
        }
        if let Some(dir) = self.state_dir.take() {
            let _ = dir.keep();
        }
    }

    /// TERM to the whole process group, KILL after the grace period, reap, then clean the state dir.
    pub async fn stop(mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let _ = child.signal(libc::SIGTERM);
        let result = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("waiting for the agent-server failed: {e}")),
            Err(_) => {
                tracing::warn!("agent-server did not stop within {STOP_GRACE:?}; killing it");
                let _ = child.start_kill();
                match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(Ok(_)) => Ok(()),
                    _ => Err("the agent-server did not die after SIGKILL".into()),
                }
            }
        };
        if let Some(dir) = self.state_dir.take() {
            kill_tmux_servers(dir.path()).await;
        }
        result
    }
}

/// tmux servers daemonize out of the process group; the terminal tool's sockets are under the state dir.
async fn kill_tmux_servers(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir.join("tmux")) else { return };
    for entry in entries.flatten() {
        let Ok(sockets) = std::fs::read_dir(entry.path()) else { continue };
        for socket in sockets.flatten() {
            let _ = tokio::process::Command::new("tmux")
                .arg("-S")
                .arg(socket.path())
                .arg("kill-server")
                .stderr(std::process::Stdio::null())
                .status()
                .await;
        }
    }
}

fn random_key() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts the server and waits until it is healthy.
pub async fn start(
    settings: &SandboxSettings,
    report_dir: &Path,
    hide_env: &[String],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(LocalServer, AgentClient, String, Value), ProvisionError> {
    let SandboxSettings::Local { command, port, working_dir, env, init_timeout } = settings else {
        unreachable!("local::start is only called for local sandboxes")
    };
    let infra = |message: String, hint: &str| ProvisionError { message, hint: Some(hint.to_string()), log_tail: None };
    let command =
        match command {
            Some(c) => c.clone(),
            None => {
                let progress_line = |l: &str| progress(l);
                tokio::task::block_in_place(|| install::ensure_installed(&progress_line))
                    .map_err(|e| ProvisionError { message: e.message, hint: Some(e.hint), log_tail: None })?
            }
        };
    let port = match port {
        Some(p) => *p,
        None => free_port().map_err(|e| infra(format!("no free port on 127.0.0.1: {e}"), "check local networking"))?,
    };
    let key = random_key();
    let state_dir = tempfile::Builder::new()
        .prefix("ohrun-agent-server-")
        .tempdir()
        .map_err(|e| infra(format!("cannot create a state directory: {e}"), "check TMPDIR"))?;
    let workspace = match working_dir {
        Some(dir) => dir.clone(),
        None => {
            // A fresh directory per run, beside its report, so the agent's work is easy to find.
            let dir = report_dir.join("workspace");
            let _ = std::fs::remove_dir_all(&dir);
            dir
        }
    };
    std::fs::create_dir_all(&workspace)
        .map_err(|e| infra(format!("cannot create the workspace {}: {e}", workspace.display()), "check permissions"))?;
    let workspace = std::fs::canonicalize(&workspace).unwrap_or(workspace);
    let log_file = report_dir.join("agent-server.log");
    let log = std::fs::File::create(&log_file)
        .map_err(|e| infra(format!("cannot create {}: {e}", log_file.display()), "check permissions"))?;
    let log_err = log.try_clone().map_err(|e| infra(e.to_string(), "check permissions"))?;

    let mut cmd = CommandWrap::with_new(&command[0], |c| {
        c.args(&command[1..])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(state_dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_err);
        for name in hide_env {
            c.env_remove(name);
        }
        c.env("OH_SESSION_API_KEYS_0", &key)
            .env("OH_ENABLE_VSCODE", "false")
            .env("OH_ENABLE_BROWSER", "false")
            .env("OH_CONVERSATIONS_PATH", state_dir.path().join("conversations"))
            .env("OH_BASH_EVENTS_DIR", state_dir.path().join("bash_events"))
            .env("TMUX_TMPDIR", state_dir.path().join("tmux"))
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("OPENHANDS_SUPPRESS_BANNER", "1");
        for (k, v) in env {
            c.env(k, v);
        }
    });
    let _ = std::fs::create_dir_all(state_dir.path().join("tmux"));
    cmd.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
    let child = cmd.spawn().map_err(|e| ProvisionError {
        message: format!("cannot start the agent-server `{}`: {e}", command.join(" ")),
        hint: Some("check `sandbox.command`, or run `ohrun setup local` to install the managed server".into()),
        log_tail: None,
    })?;
    let mut server = LocalServer { child: Some(child), state_dir: Some(state_dir), log_file: log_file.clone() };
    let base = format!("http://127.0.0.1:{port}");
    let client = AgentClient::new(&base, Some(key), Duration::from_secs(60));
    let deadline = Instant::now() + *init_timeout;
    loop {
        if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            return Err(ProvisionError {
                message: format!("the agent-server exited ({status}) before it became healthy"),
                hint: Some(format!("its log is {}", log_file.display())),
                log_tail: Some(tail(&log_file, 20)),
            });
        }
        if client.healthy().await {
            break;
        }
        if Instant::now() >= deadline {
            let _ = server.stop().await;
            return Err(ProvisionError {
                message: format!("the agent-server was not healthy within {}s", init_timeout.as_secs()),
                hint: Some("raise `sandbox.init_timeout`, or look at its log".into()),
                log_tail: Some(tail(&log_file, 20)),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let info = client.server_info().await.map_err(|e| ProvisionError {
        message: e.to_string(),
        hint: None,
        log_tail: None,
    })?;
    Ok((server, client, workspace.display().to_string(), info))
}
