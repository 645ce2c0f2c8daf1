//! `kind: local`: an agent-server process that ohrun starts, supervises and stops. The server leads its
//! own process group, so stopping it (TERM, then KILL after a grace period) reaches everything it
//! spawned; KillOnDrop covers every early return and panic. It writes its output into its private state
//! directory; ohrun copies that through the redactor into `agent-server.log` in the run's report
//! directory as it grows (a kept server goes on writing when ohrun has gone, with no pipe to break). Its tmux sockets live in the server's own state
//! directory, and any tmux server left there is killed after the stop. A crash is seen at once: the probe
//! reaps the child (a zombie is not alive). If ohrun itself dies (SIGKILL) a watchdog stops the server
//! and its tmux servers.
//!
//! The state directory holds what a run must not leave readable — the conversations (secrets among
//! them), the bash output, the server's own log — so it is its user's alone from its creation (0700, the
//! server under umask 077), the server's temp dir (`TMPDIR`: the editor's history, the diff snapshots)
//! is inside it, and it goes with the release, with the watchdog when ohrun dies, or with `ohrun gc`.

use super::{
    Backend, BoxFuture, Context, Error, Probe, Ready, Record, Released, SandboxProbe, free_port, health, install,
};
use crate::agent::http::AgentClient;
use crate::report::redact::RedactingWriter;
use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop, ProcessGroup};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How long the server gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The name of every server's private state directory (under the temp dir), the only kind `gc` removes.
pub const STATE_DIR_PREFIX: &str = "ohrun-agent-server-";
/// In the server's environment (and so in every process it starts): its state directory. `gc` finds a
/// server whose pid ohrun died before recording by this, which no unrelated process carries.
pub const STATE_DIR_ENV: &str = "OHRUN_SERVER_STATE_DIR";

#[derive(Clone, Debug)]
pub struct LocalSettings {
    pub command: Option<Vec<String>>,
    pub port: Option<u16>,
    /// The agent's working directory; `workspace/` in the run's report directory when None.
    pub working_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub init_timeout: Duration,
}

pub struct Local {
    settings: LocalSettings,
    server: Option<Server>,
    client: Option<AgentClient>,
    log_file: Option<PathBuf>,
    /// Kept after release, for the report.
    pid: Option<u32>,
}

struct Server {
    child: Mutex<Box<dyn ChildWrapper>>,
    pid: u32,
    state_dir: tempfile::TempDir,
    report_dir: PathBuf,
    copier: LogCopier,
    /// Told when the server is reaped (its pid and group may then be reused), and to stand down on release.
    watchdog: Mutex<Option<Watchdog>>,
}

/// Stops the server and its tmux servers if ohrun dies without doing it (SIGKILL, a crash): a small shell
/// in its own process group that waits on a pipe only ohrun holds. ohrun's end, however it comes, closes
/// the pipe; unless ohrun wrote `done` (released) or `keep` (kept) first, the watchdog sends TERM to the
/// server's process group, KILL once the grace is over, kills the tmux servers under its state directory
/// and removes that directory.
/// The tmux servers need it most: they daemonize out of the group and would otherwise run on for ever.
/// `reaped` says the server has exited and was reaped: its pid and group may belong to others from then
/// on, so only the tmux servers are left to the watchdog.
struct Watchdog {
    pipe: std::process::ChildStdin,
    process: std::process::Child,
    reaped: bool,
}

// $1: the server's pgid, $2: its state directory, $3: the grace in seconds. (Numeric signals: dash's
// `kill` takes `-15 -PGID`, not `-TERM -- -PGID`.)
const WATCHDOG: &str = r#"read -r word
case "$word" in
  done|keep) exit 0 ;;
  reaped) read -r word; case "$word" in done|keep) exit 0 ;; esac ;;
  *) kill -15 "-$1" 2>/dev/null
     i=0; while [ "$i" -lt "$3" ] && kill -0 "-$1" 2>/dev/null; do sleep 1; i=$((i + 1)); done
     kill -9 "-$1" 2>/dev/null ;;
esac
for s in "$2"/tmux/*/*; do [ -S "$s" ] && tmux -S "$s" kill-server 2>/dev/null; done
rm -rf "$2"; exit 0"#;

impl Watchdog {
    fn start(pgid: u32, state_dir: &Path) -> Option<Watchdog> {
        use std::os::unix::process::CommandExt;
        let mut process = std::process::Command::new("sh")
            .args(["-c", WATCHDOG, "ohrun-watchdog", &pgid.to_string()])
            .arg(state_dir)
            .arg(STOP_GRACE.as_secs().to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own group: a Ctrl-C to ohrun's group must not take the watchdog with it.
            .process_group(0)
            .spawn()
            .inspect_err(|e| tracing::warn!("no watchdog for the agent-server: {e}"))
            .ok()?;
        let pipe = process.stdin.take()?;
        Some(Watchdog { pipe, process, reaped: false })
    }

    /// The server was reaped: from now on the watchdog must not signal its pid or group.
    fn server_reaped(&mut self) {
        use std::io::Write;
        if !std::mem::replace(&mut self.reaped, true) {
            let _ = writeln!(self.pipe, "reaped");
        }
    }

    /// Tells the watchdog to go without doing anything: the server was released, or is kept on purpose.
    fn stand_down(mut self, word: &str) {
        use std::io::Write;
        let _ = writeln!(self.pipe, "{word}");
        drop(self.pipe);
        // It exits at once; reaped off the runtime, so a long batch leaves no zombies.
        let mut process = self.process;
        std::thread::spawn(move || process.wait());
    }
}

impl Local {
    pub fn new(settings: LocalSettings) -> Local {
        Local { settings, server: None, client: None, log_file: None, pid: None }
    }

    async fn start(&mut self, ctx: &Context<'_>) -> Result<Ready, Error> {
        let mut cancel = ctx.cancel.clone();
        let command = match &self.settings.command {
            Some(c) => c.clone(),
            None => install::ensure_installed(ctx.progress, &mut cancel).await?,
        };
        let port = match self.settings.port {
            Some(p) => p,
            None => free_port()?,
        };
        let workspace = workspace(self.settings.working_dir.as_deref(), ctx.report_dir)?;
        let log_file = ctx.report_dir.join("agent-server.log");
        self.log_file = Some(log_file.clone());
        let key = super::random_key();
        let state_dir = state_dir()?;
        let raw_log = state_dir.path().join("server.log");
        ctx.ledger.open("local", |l| l.state_dir = Some(state_dir.path().to_path_buf())).map_err(Error::ledger)?;
        let child = spawn(&command, port, &key, state_dir.path(), &raw_log, &self.settings.env, ctx.hide_env)?;
        let pid = child.id().unwrap_or_default();
        self.pid = Some(pid);
        // Recorded before anything else can fail or be interrupted.
        ctx.ledger.update(|l| l.process = crate::liveness::Procfs::system().process(pid));
        (ctx.recorded)(self.record());
        let copier = LogCopier::start(raw_log.clone(), &log_file)?;
        tracing::info!("started the agent-server (pid {pid}) on port {port}");
        let report_dir = ctx.report_dir.to_path_buf();
        let watchdog = Watchdog::start(pid, state_dir.path());
        let watchdog = Mutex::new(watchdog);
        self.server = Some(Server { child: Mutex::new(child), pid, state_dir, report_dir, copier, watchdog });
        let client = AgentClient::new(&format!("http://127.0.0.1:{port}"), Some(key), Duration::from_secs(60))
            .with_cancel(ctx.cancel.clone());
        let deadline = ctx.deadline(self.settings.init_timeout);
        let (limit, raise) = ctx.limit(self.settings.init_timeout);
        let tail_of = raw_log.clone();
        health::wait(
            &client,
            deadline,
            &mut cancel,
            || async {
                self.exited().map(|status| {
                    Error::failed(format!("the agent-server exited ({status}) before it became healthy"))
                        .hint(format!("its log is {}", log_file.display()))
                        .log_tail(tail(&raw_log, 20))
                })
            },
            || async move {
                Error::failed(format!("the agent-server was not healthy within {limit}"))
                    .hint(format!("{raise}, or look at its log"))
                    .log_tail(tail(&tail_of, 20))
            },
        )
        .await?;
        let server_info = client.server_info().await?;
        self.client = Some(client.clone());
        Ok(Ready { client, working_dir: workspace.display().to_string(), server_info })
    }

    /// The exit status, once the server process has exited (reaping it). Once reaped, its pid and process
    /// group are free for others: the watchdog is told never to signal them (it still stops the tmux
    /// servers if ohrun dies before the release does).
    fn exited(&self) -> Option<std::process::ExitStatus> {
        let server = self.server.as_ref()?;
        let status = server.child.lock().unwrap_or_else(|e| e.into_inner()).try_wait().ok().flatten()?;
        if let Some(w) = server.watchdog.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            w.server_reaped();
        }
        Some(status)
    }
}

/// The configured working directory, or a fresh `workspace/` beside the run's report (the runner has made
/// sure that report directory belongs to this run, so an old workspace there is this run's own).
pub fn workspace(configured: Option<&Path>, report_dir: &Path) -> Result<PathBuf, Error> {
    let workspace = match configured {
        Some(dir) => dir.to_path_buf(),
        None => {
            let dir = report_dir.join("workspace");
            let _ = std::fs::remove_dir_all(&dir);
            dir
        }
    };
    std::fs::create_dir_all(&workspace).map_err(|e| {
        Error::failed(format!("cannot create the workspace {}: {e}", workspace.display())).hint("check permissions")
    })?;
    Ok(std::fs::canonicalize(&workspace).unwrap_or(workspace))
}

/// The server's private state directory, with its `tmux/` and `tmp/`: 0700 from the start.
fn state_dir() -> Result<tempfile::TempDir, Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let failed =
        |e: std::io::Error| Error::failed(format!("cannot create a state directory: {e}")).hint("check TMPDIR");
    let dir = tempfile::Builder::new()
        .prefix(STATE_DIR_PREFIX)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(failed)?;
    for sub in ["tmux", "tmp"] {
        std::fs::DirBuilder::new().mode(0o700).create(dir.path().join(sub)).map_err(failed)?;
    }
    Ok(dir)
}

fn spawn(
    command: &[String],
    port: u16,
    key: &str,
    state_dir: &Path,
    raw_log: &Path,
    env: &[(String, String)],
    hide_env: &[String],
) -> Result<Box<dyn ChildWrapper>, Error> {
    let log = crate::report::writer::create_private(raw_log)
        .and_then(|f| Ok((f.try_clone()?, f)))
        .map_err(|e| Error::failed(format!("cannot create {}: {e}", raw_log.display())).hint("check TMPDIR"))?;
    let mut cmd = CommandWrap::with_new(&command[0], |c| {
        c.args(&command[1..])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(state_dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.0)
            .stderr(log.1);
        for name in hide_env {
            c.env_remove(name);
        }
        c.env("OH_SESSION_API_KEYS_0", key)
            .env("OH_ENABLE_VSCODE", "false")
            .env("OH_ENABLE_BROWSER", "false")
            .env("OH_CONVERSATIONS_PATH", state_dir.join("conversations"))
            .env("OH_BASH_EVENTS_DIR", state_dir.join("bash_events"))
            .env("TMUX_TMPDIR", state_dir.join("tmux"))
            .env("TMPDIR", state_dir.join("tmp"))
            .env(STATE_DIR_ENV, state_dir)
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("OPENHANDS_SUPPRESS_BANNER", "1");
        for (k, v) in env {
            c.env(k, v);
        }
        // SAFETY: umask is async-signal-safe, as what runs between fork and exec must be.
        unsafe {
            c.pre_exec(|| {
                // Whatever the server and its tools write is its user's alone.
                libc::umask(0o077);
                Ok(())
            });
        }
    });
    cmd.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
    cmd.spawn().map_err(|e| {
        Error::failed(format!("cannot start the agent-server `{}`: {e}", command.join(" ")))
            .hint("check `sandbox.command`, or run `ohrun setup local` to install the managed server")
    })
}

/// Copies the server's log, redacted, into the report as it grows, until told to stop (after one last
/// copy).
struct LogCopier {
    stop: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl LogCopier {
    fn start(raw: PathBuf, copy: &Path) -> Result<LogCopier, Error> {
        let file = crate::report::writer::create_private(copy)
            .map_err(|e| Error::failed(format!("cannot create {}: {e}", copy.display())).hint("check permissions"))?;
        let mut out = RedactingWriter::new(file);
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut offset = 0u64;
            loop {
                let done = tokio::time::timeout(Duration::from_millis(200), stopped.notified()).await.is_ok();
                offset = copy_new(&raw, offset, &mut out);
                if done {
                    let _ = std::io::Write::flush(&mut out);
                    return;
                }
            }
        });
        Ok(LogCopier { stop, task })
    }

    /// One last copy, then stop.
    async fn finish(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Appends what `raw` has beyond `offset` to `out`; returns the new offset.
fn copy_new(raw: &Path, offset: u64, out: &mut impl std::io::Write) -> u64 {
    use std::io::{Read, Seek};
    let Ok(mut f) = std::fs::File::open(raw) else { return offset };
    let mut buf = Vec::new();
    if f.seek(std::io::SeekFrom::Start(offset)).is_err() || f.read_to_end(&mut buf).is_err() {
        return offset;
    }
    let _ = out.write_all(&buf);
    offset + buf.len() as u64
}

impl Server {
    /// TERM to the whole process group, KILL after the grace period, reap, then the tmux servers.
    async fn stop(self) -> Result<(), String> {
        let mut child = self.child.into_inner().unwrap_or_else(|e| e.into_inner());
        let _ = child.signal(libc::SIGTERM);
        let result = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("waiting for the agent-server failed: {e}")),
            Err(_) => {
                tracing::warn!("agent-server did not stop within {STOP_GRACE:?}; killing it");
                let _ = child.start_kill();
                match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(Ok(_)) => Ok(()),
                    _ => Err(format!("the agent-server (pid {}) did not die after SIGKILL", self.pid)),
                }
            }
        };
        // Reaped: its group may be reused from now on, so the watchdog goes before anything else.
        if let Some(w) = self.watchdog.into_inner().unwrap_or_else(|e| e.into_inner()) {
            w.stand_down("done");
        }
        kill_tmux_servers(self.state_dir.path()).await;
        self.copier.finish().await;
        if let Err(e) = self.state_dir.close() {
            tracing::warn!("cannot remove the agent-server's state directory: {e}");
        }
        result
    }

    /// Leaves the server running: no kill on drop, state kept (its log goes on in there); its session key
    /// goes into a private file.
    async fn detach(self) -> PathBuf {
        let key_file = self.report_dir.join("agent-server.key");
        if let Some(w) = self.watchdog.into_inner().unwrap_or_else(|e| e.into_inner()) {
            w.stand_down("keep");
        }
        self.copier.finish().await;
        std::mem::forget(self.child.into_inner().unwrap_or_else(|e| e.into_inner()));
        let _ = self.state_dir.keep();
        key_file
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

/// The last lines of the server's own log, redacted (they go to the console and the report).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Redacted whole before the tail is taken: a multi-line secret across the cut would leave its tail.
    let text = crate::report::redact::apply(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes the session key of a kept server where only the user can read it.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
}

/// How often a server is started again on another port when the free port it was given was taken
/// before it could bind it (another process on this machine got there first).
const PORT_TRIES: u32 = 3;

impl Local {
    /// Starts the server; when the port chosen for it was taken meanwhile, the dead server is cleaned up
    /// (its ledger entry closed) and another port tried.
    async fn start_on_a_free_port(&mut self, ctx: &Context<'_>) -> Result<Ready, Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let started = self.start(ctx).await;
            let port_taken = |e: &Error| e.log_tail.as_deref().is_some_and(|t| t.contains("address already in use"));
            match started {
                Err(e) if self.settings.port.is_none() && tries < PORT_TRIES && port_taken(&e) => {
                    tracing::info!("the agent-server's port was taken before it could bind it; starting it again");
                    let released = self.release(false).await;
                    ctx.ledger.close(released.disposition());
                }
                other => return other,
            }
        }
    }
}

impl Backend for Local {
    fn provision<'a>(&'a mut self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Ready, Error>> {
        Box::pin(self.start_on_a_free_port(ctx))
    }

    fn release(&mut self, keep: bool) -> BoxFuture<'_, Released> {
        Box::pin(async move {
            let Some(server) = self.server.take() else { return Released::NothingToRelease };
            if keep && self.client.is_some() {
                let key = self.client.as_ref().and_then(|c| c.session_key()).unwrap_or_default();
                let key_file = server.detach().await;
                if let Err(e) = write_private(&key_file, &key) {
                    tracing::warn!("cannot write {}: {e}", key_file.display());
                }
                return Released::Kept;
            }
            match server.stop().await {
                Ok(()) => Released::Released,
                Err(e) => Released::Failed(e),
            }
        })
    }

    fn attach_hint(&self, working_dir: &str) -> String {
        let url = self.client.as_ref().map(|c| c.base_url().to_string()).unwrap_or_default();
        let pid = self.pid.unwrap_or_default();
        let key_file = self.log_file.as_ref().and_then(|l| l.parent()).map(|d| d.join("agent-server.key"));
        let log = self.server.as_ref().map(|s| s.state_dir.path().join("server.log"));
        format!(
            "agent-server at {url} (working dir {working_dir}; session key in {}, sent as X-Session-API-Key; its log goes on in {}; stop it with `kill -TERM -- -{pid}`)",
            key_file.map(|k| k.display().to_string()).unwrap_or_default(),
            log.map(|l| l.display().to_string()).unwrap_or_default()
        )
    }

    fn record(&self) -> Record {
        Record { id: self.pid.map(|p| format!("pid:{p}")), log_file: self.log_file.clone(), ..Record::default() }
    }
}

impl SandboxProbe for Local {
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            match self.exited() {
                Some(status) => Probe::Gone(format!("the agent-server process exited ({status})")),
                None => Probe::Alive,
            }
        })
    }
}
