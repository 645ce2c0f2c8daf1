//! `ohrun gc`: finds what ohrun processes that are gone left behind, from their ledgers (`ledger.rs`), and
//! removes it through the same release code the backends use. Never touches what no ledger entry or
//! ohrun label names, nor what a running ohrun holds (its ledger's owner is alive), nor what was kept on
//! purpose. Local servers are matched by pid + start time, so a reused pid is never signalled. Where gc
//! cannot tell whether an owner still runs (no procfs) it counts as running, unless `--force-dead` names it.

use crate::backend::cloud::{Cloud, CloudSettings};
use crate::backend::docker::{self, DockerBackend};
use crate::backend::runtime::{Runtime, RuntimeSettings};
use crate::backend::{Backend, Released};
use crate::ledger::{self, Process, Sandbox};
use crate::liveness::{Liveness, Procfs};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub struct Options {
    pub dry_run: bool,
    /// Only entries older than this.
    pub older_than: Option<Duration>,
    /// The ledger directory.
    pub dir: PathBuf,
    /// Where liveness is read.
    pub procfs: Procfs,
    /// Owners (pids) to count as gone where gc cannot tell (`--force-dead`).
    pub force_dead: Vec<u32>,
}

/// What `gc` found (and did) for one entry.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Removed,
    /// `--dry-run`: still there, and would be removed.
    Left,
    /// Still there (or unknown): removing or checking it failed.
    Failed,
    /// Already gone (released, or never fully created).
    Gone,
    /// A running ohrun holds it.
    InUse,
    /// Kept on purpose (`cleanup`, `keep_alive`); left alone.
    Kept,
    /// Newer than `--older-than`.
    Younger,
    /// Its id was never learned (ohrun died while creating it): nothing to look up.
    Unidentified,
}

#[derive(Serialize, Debug)]
pub struct Item {
    pub state: State,
    pub backend: String,
    pub id: Option<String>,
    pub run_id: String,
    pub report_dir: PathBuf,
    pub created_at: String,
    pub detail: String,
    pub ledger: PathBuf,
}

#[derive(Serialize, Debug)]
pub struct Outcome {
    pub dry_run: bool,
    pub items: Vec<Item>,
}

impl Outcome {
    /// Something may still be running: gc could not remove, check or identify it, or (`--dry-run`) it is
    /// left for gc to remove.
    pub fn left_behind(&self) -> bool {
        self.items.iter().any(|i| matches!(i.state, State::Failed | State::Unidentified | State::Left))
    }
}

/// Why an entry cannot be looked at: a missing key, an unreachable engine or API.
enum Look {
    Alive(String),
    Gone,
    Unknown(String),
    Unidentified,
}

pub async fn collect(opts: &Options) -> Outcome {
    let mut out = Outcome { dry_run: opts.dry_run, items: Vec::new() };
    let mut docker = LazyDocker::default();
    let files = ledger::read_all(&opts.dir);
    let holders: Vec<Option<String>> = files.iter().map(|f| held_by(f, opts)).collect();
    let sessions = held_sessions(&files, &holders);
    let mut handled: HashSet<String> = HashSet::new();
    for (file, held) in files.iter().zip(&holders) {
        let mut keep = BTreeSet::new();
        for (n, (sandbox, closed)) in &file.entries {
            let item = |state, detail: String| Item {
                state,
                backend: sandbox.backend.clone(),
                id: sandbox.id.clone(),
                run_id: sandbox.run_id.clone(),
                report_dir: sandbox.report_dir.clone(),
                created_at: sandbox.created_at.clone(),
                detail,
                ledger: file.path.clone(),
            };
            let label = format!("{}#{n}", file.path.display());
            let state = match closed.as_deref() {
                _ if held.is_some() => {
                    if closed.is_none() {
                        out.items.push(item(State::InUse, held.clone().unwrap_or_default()));
                    }
                    handled.insert(label);
                    continue;
                }
                Some("kept") => entry(sandbox, &label, &mut docker, opts, true).await,
                Some(_) => continue,
                // A session the gone run only attached to was never its to remove.
                None if sandbox.attached => continue,
                None if younger(sandbox, opts.older_than) => (State::Younger, String::new()),
                None => match session(sandbox).and_then(|key| sessions.get(&key)) {
                    Some(why) => (State::InUse, format!("the same session is in use: {why}")),
                    None => entry(sandbox, &label, &mut docker, opts, false).await,
                },
            };
            // Every container carries its entry's label: that is how the second net knows it is handled.
            handled.insert(label);
            if matches!(state.0, State::Failed | State::Younger | State::Kept | State::Left | State::InUse)
                || (state.0 == State::Unidentified && opts.dry_run)
            {
                keep.insert(*n);
            }
            out.items.push(item(state.0, state.1));
        }
        if !opts.dry_run
            && held.is_none()
            && let Err(e) = ledger::rewrite(file, &keep)
        {
            tracing::warn!("cannot update {}: {e}", file.path.display());
        }
    }
    labelled_containers(&mut out, &handled, &mut docker, opts).await;
    out
}

/// A Runtime session as several ledgers may name it (a fixed `session_id`): its API and id.
fn session(s: &Sandbox) -> Option<(String, String)> {
    let api = s.api_url.as_deref()?.trim_end_matches('/').to_string();
    (s.backend == "runtime").then_some((api, s.id.clone()?))
}

/// The Runtime sessions open — started or attached to — in the ledgers gc must not act on (their ohrun
/// runs, or may), with why: a gone run's entry for one of them must not stop it under the running one.
fn held_sessions(files: &[ledger::File], holders: &[Option<String>]) -> HashMap<(String, String), String> {
    let held = files.iter().zip(holders).filter_map(|(file, why)| Some((file, why.as_ref()?)));
    held.flat_map(|(file, why)| {
        let open = file.entries.values().filter(|(_, closed)| closed.is_none());
        open.filter_map(|(sandbox, _)| Some((session(sandbox)?, why.clone())))
    })
    .collect()
}

/// Why a ledger file is not gc's to act on: its ohrun still runs (or gc cannot tell that it does not), or
/// it ran on another host (a shared home directory): that host's gc can tell whether its processes live.
fn held_by(file: &ledger::File, opts: &Options) -> Option<String> {
    if !file.host.is_empty() && file.host != ledger::host() {
        return Some(format!("recorded on host {}: run gc there", file.host));
    }
    let owner = file.owner.clone().or_else(|| owner_from_name(&file.path))?;
    owner_holds(&owner, opts)
}

/// Why what `owner` recorded is still its own: it runs, or gc cannot tell (and `--force-dead` does not
/// name it). A process that is known to run is never forced.
fn owner_holds(owner: &Process, opts: &Options) -> Option<String> {
    let pid = owner.pid;
    match opts.procfs.liveness(owner) {
        Liveness::Dead => None,
        Liveness::Alive if opts.force_dead.contains(&pid) => {
            Some(format!("held by the running ohrun (pid {pid}; --force-dead does not apply: that very process runs)"))
        }
        Liveness::Alive => Some(format!("held by the running ohrun (pid {pid})")),
        Liveness::Unknown(_) if opts.force_dead.contains(&pid) => None,
        Liveness::Unknown(why) => Some(format!(
            "cannot tell whether the ohrun that recorded it (pid {pid}) still runs ({why}); if it has gone: `ohrun gc --force-dead {pid}`"
        )),
    }
}

/// One entry whose owner is gone: look, then remove unless `--dry-run` (or kept).
async fn entry(sandbox: &Sandbox, label: &str, docker: &mut LazyDocker, opts: &Options, kept: bool) -> (State, String) {
    let look = look(sandbox, label, docker, &opts.procfs).await;
    match look {
        Look::Gone => (State::Gone, String::new()),
        Look::Unidentified => (State::Unidentified, unidentified(sandbox)),
        // What was kept on purpose is never touched, so whether it can be looked at does not matter.
        Look::Unknown(why) if kept => (State::Kept, format!("not checked: {why}")),
        Look::Unknown(why) => (State::Failed, format!("cannot check it: {why}")),
        Look::Alive(what) if kept => (State::Kept, what),
        Look::Alive(what) if opts.dry_run => (State::Left, what),
        Look::Alive(what) => match remove(sandbox, label, docker, &opts.procfs).await {
            Ok(()) => (State::Removed, what),
            Err(e) => (State::Failed, format!("{what}: {e}")),
        },
    }
}

/// A provider sandbox whose create may have gone through, but whose id ohrun never learned.
fn unidentified(s: &Sandbox) -> String {
    let at = s.api_url.as_deref().unwrap_or_default();
    if s.candidates.is_empty() {
        format!("ohrun stopped before it learned the id; look for a sandbox created at {} in {at}", s.created_at)
    } else {
        format!("its create may have made one of {} in {at}; check them by hand", s.candidates.join(", "))
    }
}

fn younger(sandbox: &Sandbox, older_than: Option<Duration>) -> bool {
    let Some(min_age) = older_than else { return false };
    let Ok(created) = humantime::parse_rfc3339(&sandbox.created_at) else { return false };
    SystemTime::now().duration_since(created).unwrap_or_default() < min_age
}

/// `<pid>-<start>-<k>.jsonl` (`<pid>-<start>.jsonl` from earlier versions), for a file whose owner line was lost.
fn owner_from_name(path: &Path) -> Option<Process> {
    let stem = path.file_stem()?.to_str()?;
    let mut parts = stem.split('-');
    let (pid, start) = (parts.next()?, parts.next()?);
    Some(Process { pid: pid.parse().ok()?, start: start.parse().ok()?, boot: String::new() })
}

async fn look(s: &Sandbox, label: &str, docker: &mut LazyDocker, procfs: &Procfs) -> Look {
    match s.backend.as_str() {
        "local" => local::look(s, procfs),
        "docker" => {
            let docker = match docker.get().await {
                Ok(d) => d,
                Err(e) => return Look::Unknown(e),
            };
            let Some(id) = container_of(s, label, &docker).await else { return Look::Gone };
            let what = format!("container {}", &id[..id.len().min(12)]);
            status(DockerBackend::adopt(docker, id).status_now().await, &what)
        }
        "cloud" | "runtime" => match provider(s) {
            Ok(Provider::Cloud(c)) => status(c.status_now().await, &what(s)),
            Ok(Provider::Runtime(r)) => status(r.status_now().await, &what(s)),
            Err(look) => look,
        },
        other => Look::Unknown(format!("a backend this ohrun does not know: {other}")),
    }
}

fn status(status: Result<Option<String>, String>, what: &str) -> Look {
    match status {
        Ok(Some(status)) => Look::Alive(format!("{what} ({status})")),
        Ok(None) => Look::Gone,
        Err(e) => Look::Unknown(e),
    }
}

fn what(s: &Sandbox) -> String {
    let id = s.runtime_id.as_deref().or(s.id.as_deref()).unwrap_or_default();
    match s.backend.as_str() {
        "cloud" => format!("Cloud sandbox {id} at {}", s.api_url.as_deref().unwrap_or_default()),
        _ => format!(
            "runtime {id} (session {}) at {}",
            s.id.as_deref().unwrap_or_default(),
            s.api_url.as_deref().unwrap_or_default()
        ),
    }
}

async fn remove(s: &Sandbox, label: &str, docker: &mut LazyDocker, procfs: &Procfs) -> Result<(), String> {
    let mut backend: Box<dyn Backend> = match s.backend.as_str() {
        "local" => return local::remove(s, procfs).await,
        "docker" => {
            let docker = docker.get().await?;
            let id = container_of(s, label, &docker).await.ok_or("it is gone")?;
            Box::new(DockerBackend::adopt(docker, id))
        }
        _ => match provider(s) {
            Ok(Provider::Cloud(c)) => Box::new(c),
            Ok(Provider::Runtime(r)) => Box::new(r),
            Err(_) => return Err("cannot reach it".into()),
        },
    };
    match backend.release(false).await {
        Released::Failed(e) => Err(e),
        _ => Ok(()),
    }
}

enum Provider {
    Cloud(Cloud),
    Runtime(Runtime),
}

/// The provider backend for an entry, with the key from the environment variable the entry names.
fn provider(s: &Sandbox) -> Result<Provider, Look> {
    let Some(id) = s.id.clone() else { return Err(Look::Unidentified) };
    let (Some(api_url), Some(key_var)) = (s.api_url.clone(), s.key_var.clone()) else {
        return Err(Look::Unknown("the entry names no API".into()));
    };
    let api_key = std::env::var(&key_var)
        .ok()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Look::Unknown(format!("set {key_var} (the key it was created with) to check and remove it")))?;
    crate::report::redact::register(&api_key);
    crate::net::check_transport(&api_url, s.allow_insecure_http, "api_url").map_err(Look::Unknown)?;
    let api_timeout = Duration::from_secs(60);
    let made = if s.backend == "cloud" {
        let settings = CloudSettings {
            api_url,
            allow_insecure_http: s.allow_insecure_http,
            api_key,
            key_var,
            sandbox_spec_id: None,
            init_timeout: Duration::ZERO,
            api_timeout,
            working_dir: String::new(),
            keep_alive: false,
            sends_secrets: false,
        };
        Cloud::adopt(settings, id).map(Provider::Cloud)
    } else {
        let settings = RuntimeSettings {
            api_url,
            allow_insecure_http: s.allow_insecure_http,
            api_key,
            key_var,
            image: String::new(),
            image_pull_policy: String::new(),
            session_id: Some(id.clone()),
            resource_factor: 1,
            runtime_class: None,
            target_type: String::new(),
            environment: Vec::new(),
            init_timeout: Duration::ZERO,
            api_timeout,
            pause_on_close: s.pause_on_close,
            working_dir: String::new(),
            keep_alive: false,
            sends_secrets: false,
        };
        Runtime::adopt(settings, id, s.runtime_id.clone()).map(Provider::Runtime)
    };
    made.map_err(|e| Look::Unknown(e.message))
}

/// The engine, connected on first need (a machine without Docker never is).
#[derive(Default)]
struct LazyDocker(Option<Result<bollard::Docker, String>>);

impl LazyDocker {
    async fn get(&mut self) -> Result<bollard::Docker, String> {
        if self.0.is_none() {
            self.0 = Some(docker::connect().await.map_err(|e| e.message));
        }
        self.0.clone().expect("set above")
    }
}

/// The entry's container: by id, or by its ledger label when ohrun died before it learned the id.
async fn container_of(s: &Sandbox, label: &str, docker: &bollard::Docker) -> Option<String> {
    if let Some(id) = &s.id {
        return Some(id.clone());
    }
    containers(docker, &format!("{}={label}", docker::LABEL_LEDGER)).await.into_iter().map(|(id, ..)| id).next()
}

type Labels = std::collections::HashMap<String, String>;

/// Containers (running or not) carrying `label` (`key` or `key=value`): id, labels, created (Unix time).
async fn containers(docker: &bollard::Docker, label: &str) -> Vec<(String, Labels, i64)> {
    let filters = std::collections::HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let options =
        bollard::query_parameters::ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| Some((c.id?, c.labels.unwrap_or_default(), c.created.unwrap_or_default())))
        .collect()
}

/// The second net: containers labelled with a ledger file of this directory whose owner is gone and that
/// no entry accounted for (e.g. its ledger file was lost).
async fn labelled_containers(out: &mut Outcome, handled: &HashSet<String>, docker: &mut LazyDocker, opts: &Options) {
    // No engine here: nothing to find (entries that need one have said so already).
    let Ok(engine) = docker.get().await else { return };
    let dir = std::path::absolute(&opts.dir).unwrap_or_else(|_| opts.dir.clone());
    for (id, labels, created) in containers(&engine, docker::LABEL_LEDGER).await {
        let Some((file, _)) = labels.get(docker::LABEL_LEDGER).and_then(|l| l.rsplit_once('#')) else { continue };
        let file = Path::new(file);
        let label = &labels[docker::LABEL_LEDGER];
        let short = &id[..id.len().min(12)];
        let ours = file.parent() == Some(dir.as_path());
        let owner_alive = owner_from_name(file).is_some_and(|o| owner_holds(&o, opts).is_some());
        let created = std::time::UNIX_EPOCH + Duration::from_secs(created.max(0) as u64);
        let young = opts.older_than.is_some_and(|d| SystemTime::now().duration_since(created).unwrap_or_default() < d);
        if !ours || owner_alive || young || handled.contains(label) {
            continue;
        }
        let mut item = Item {
            state: State::Left,
            backend: "docker".into(),
            id: Some(id.clone()),
            run_id: labels.get(docker::LABEL_RUN_ID).cloned().unwrap_or_default(),
            report_dir: PathBuf::new(),
            created_at: String::new(),
            detail: format!("container {short}, found by its label {}", docker::LABEL_LEDGER),
            ledger: file.to_path_buf(),
        };
        if !opts.dry_run {
            item.state = match DockerBackend::adopt(engine.clone(), id.clone()).release(false).await {
                Released::Failed(e) => {
                    item.detail = format!("{}: {e}", item.detail);
                    State::Failed
                }
                _ => State::Removed,
            };
        }
        out.items.push(item);
    }
}

/// A local agent-server left behind: its processes, its tmux servers and its private state directory (the
/// conversations, the bash output, the server's log: what a run must not leave readable).
mod local {
    use super::{Look, Sandbox};
    use crate::backend::local::{STATE_DIR_ENV, STATE_DIR_PREFIX};
    use crate::liveness::{Liveness, Process, Procfs};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    /// The server's processes that still run. With its pid recorded: that very process (pid + start
    /// time). Without (ohrun died between starting it and recording it): the processes whose environment
    /// carries its state directory as `STATE_DIR_ENV` — never a process that merely runs in that
    /// directory. Err: gc cannot tell.
    fn servers(s: &Sandbox, procfs: &Procfs) -> Result<Vec<Process>, String> {
        use std::os::unix::ffi::OsStrExt;
        match &s.process {
            Some(p) => match procfs.liveness(p) {
                Liveness::Alive => Ok(vec![p.clone()]),
                Liveness::Dead => Ok(Vec::new()),
                Liveness::Unknown(why) => Err(why),
            },
            None => {
                let Some(dir) = &s.state_dir else { return Ok(Vec::new()) };
                let entry = [STATE_DIR_ENV.as_bytes(), b"=", dir.as_os_str().as_bytes()].concat();
                Ok(procfs.with_env(&entry)?.into_iter().filter_map(|pid| procfs.process(pid)).collect())
            }
        }
    }

    /// The entry's state directory, if it is one ohrun made: a directory (not a link) of this user named
    /// `ohrun-agent-server-…`. The path comes from a file, and gc removes it: nothing else is ever removed.
    fn state_dir(s: &Sandbox) -> Option<&Path> {
        use std::os::unix::fs::MetadataExt;
        let dir = s.state_dir.as_deref()?;
        let named = dir.file_name()?.to_str()?.starts_with(STATE_DIR_PREFIX);
        let meta = std::fs::symlink_metadata(dir).ok()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let mine = meta.uid() == unsafe { libc::geteuid() };
        (named && meta.is_dir() && mine).then_some(dir)
    }

    /// tmux sockets under the server's state directory that a server still answers on.
    fn tmux_sockets(s: &Sandbox) -> Vec<PathBuf> {
        let Some(dir) = state_dir(s) else { return Vec::new() };
        let Ok(entries) = std::fs::read_dir(dir.join("tmux")) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| std::fs::read_dir(e.path()).ok())
            .flat_map(|d| d.flatten().map(|e| e.path()))
            .filter(|p| std::os::unix::net::UnixStream::connect(p).is_ok())
            .collect()
    }

    pub fn look(s: &Sandbox, procfs: &Procfs) -> Look {
        let servers = match servers(s, procfs) {
            Ok(servers) => servers,
            Err(why) => return Look::Unknown(format!("cannot tell whether its agent-server still runs: {why}")),
        };
        let tmux = tmux_sockets(s).len();
        let mut parts = Vec::new();
        if !servers.is_empty() {
            let pids: Vec<String> = servers.iter().map(|p| p.pid.to_string()).collect();
            parts.push(format!("agent-server pid {}", pids.join(", ")));
        }
        if tmux > 0 {
            parts.push(format!("{tmux} tmux server(s)"));
        }
        let what = match (state_dir(s), parts.is_empty()) {
            (None, true) => return Look::Gone,
            (None, false) => parts.join(" and "),
            (Some(dir), true) => format!("its state directory {}", dir.display()),
            (Some(dir), false) => format!("{} in {}", parts.join(" and "), dir.display()),
        };
        Look::Alive(what)
    }

    /// TERM to the server's process group, KILL after the grace, then its tmux servers; once nothing runs
    /// there, its state directory.
    pub async fn remove(s: &Sandbox, procfs: &Procfs) -> Result<(), String> {
        let servers = servers(s, procfs)?;
        stop(&servers, procfs).await;
        for socket in tmux_sockets(s) {
            let _ = tokio::process::Command::new("tmux")
                .arg("-S")
                .arg(&socket)
                .arg("kill-server")
                .stderr(std::process::Stdio::null())
                .status()
                .await;
        }
        // A killed process and a tmux server told to stop take a moment to be gone.
        let settled = || servers.iter().all(|p| procfs.liveness(p) != Liveness::Alive) && tmux_sockets(s).is_empty();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !settled() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !settled() {
            return Err("it is still running".into());
        }
        match state_dir(s) {
            Some(dir) => std::fs::remove_dir_all(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display())),
            None => Ok(()),
        }
    }

    /// TERM to each process's group, KILL to those still there after the grace.
    async fn stop(servers: &[Process], procfs: &Procfs) {
        let running = || servers.iter().filter(|p| procfs.liveness(p) == Liveness::Alive).collect::<Vec<_>>();
        servers.iter().for_each(|p| signal_group(p, libc::SIGTERM));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running().into_iter().for_each(|p| signal_group(p, libc::SIGKILL));
    }

    /// The server leads its own process group; signals go to the group only if that is still so.
    fn signal_group(p: &Process, signal: i32) {
        let pid = p.pid as libc::pid_t;
        // SAFETY: getpgid and kill take plain integers; the target was checked by pid + start time.
        unsafe {
            let target = if libc::getpgid(pid) == pid { -pid } else { pid };
            libc::kill(target, signal);
        }
    }
}
