//! Agent-servers that the runs of a batch share (`sandbox.share: batch`, local sandboxes). Runs whose
//! sandbox settings are the same use one server: the first run that needs it starts it, every run holds
//! a lease on it while it works (its own conversation, in its own working directory), and the batch
//! releases it when every run has ended. A server found dead is given back and started again by the
//! next run that needs it (the runs on it end `lost`, which may be retried).

use crate::agent::Probe;
use crate::backend::{self, Backend, Ready, Released};
use crate::cancel::Cancel;
use crate::ledger::Slot;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

/// The batch's shared servers, one per distinct sandbox settings.
pub(super) struct SharedSandboxes {
    batch_dir: PathBuf,
    /// The batch's sandbox ledger, where each shared server gets its entry.
    ledger: crate::ledger::Ledger,
    servers: Mutex<Vec<(String, Arc<RwLock<Server>>)>>,
}

/// One shared server. Runs read it (a lease each); starting, restarting and releasing it write it, so a
/// release waits for every lease to end.
pub(super) struct Server {
    /// `shared-local-N`: its name in the ledger and its directory under the batch directory.
    name: String,
    dir: PathBuf,
    settings: backend::Settings,
    backend: Box<dyn Backend>,
    ready: Option<Ready>,
    ledger: Slot,
    /// Set by a run whose cleanup policy keeps its sandbox: the server is then kept at the end.
    keep: AtomicBool,
    /// Run attempts that held a lease on it.
    runs: AtomicUsize,
    /// When the last start failed, and why.
    failed: Option<(Instant, backend::Error)>,
}

/// How long after a failed start the runs that waited for it fail with it instead of trying again.
const RETRY_START_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// What provisioning needs from the run that happens to start the server.
pub(super) struct Starter<'a> {
    pub job: &'a str,
    pub hide_env: &'a [String],
    pub run_deadline: Option<Instant>,
    pub cancel: Cancel,
    pub progress: &'a (dyn Fn(&str) + Sync),
}

/// A run's hold on a shared server: the server stays up while it is held.
pub(super) struct Lease {
    server: OwnedRwLockReadGuard<Server>,
}

impl Lease {
    pub fn backend(&self) -> &dyn Backend {
        &*self.server.backend
    }

    pub fn ready(&self) -> &Ready {
        self.server.ready.as_ref().expect("a lease is only given on a ready server")
    }

    /// Where the server's own files are (its log among them).
    pub fn dir(&self) -> &Path {
        &self.server.dir
    }

    /// The run's cleanup policy keeps its sandbox: keep the server when the batch ends.
    pub fn keep(&self) {
        self.server.keep.store(true, Ordering::SeqCst);
    }
}

/// How a shared server ended, for the batch's summary.
pub(super) struct Ended {
    pub name: String,
    pub runs: usize,
    pub record: backend::Record,
    pub released: Released,
    pub attach_hint: String,
}

impl SharedSandboxes {
    pub fn new(batch_dir: &Path, ledger: &crate::ledger::Ledger) -> SharedSandboxes {
        SharedSandboxes { batch_dir: batch_dir.to_path_buf(), ledger: ledger.clone(), servers: Mutex::new(Vec::new()) }
    }

    /// A lease on the server for these settings, started first if it is not running (the other runs that
    /// need it meanwhile wait for it).
    pub async fn acquire(&self, settings: &backend::Settings, starter: &Starter<'_>) -> Result<Lease, backend::Error> {
        let cell = self.server_for(settings, starter.hide_env);
        {
            let server = cell.clone().read_owned().await;
            if server.alive().await {
                return Ok(lease(server));
            }
        }
        let mut server = cell.write_owned().await;
        if !server.alive().await {
            // The runs that waited for a start that just failed fail with it, rather than each trying
            // again for up to init_timeout while holding its place (a retry comes after its backoff).
            if let Some((at, e)) = &server.failed
                && at.elapsed() < RETRY_START_AFTER
            {
                return Err(e.clone());
            }
            server.restart(starter).await?;
        }
        Ok(lease(server.downgrade()))
    }

    /// The server for these settings (created, not started, when there is none yet). Settings are told
    /// apart by their debug form without the working directory (each run has its own), and by the
    /// secrets the server must not see (its environment is shared by every run on it). The key may hold
    /// secrets, and never leaves memory.
    fn server_for(&self, settings: &backend::Settings, hide_env: &[String]) -> Arc<RwLock<Server>> {
        let mut server_settings = settings.clone();
        if let backend::Settings::Local(local) = &mut server_settings {
            local.working_dir = None;
        }
        let mut hidden = hide_env.to_vec();
        hidden.sort();
        let key = format!("{server_settings:?} hiding {hidden:?}");
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, cell)) = servers.iter().find(|(k, _)| *k == key) {
            return cell.clone();
        }
        let name = format!("shared-{}-{}", settings.kind(), servers.len() + 1);
        let dir = self.batch_dir.join("shared").join(&name);
        let server = Server {
            ledger: Slot::new(&self.ledger, &name, &dir, Some(&self.batch_dir)),
            name,
            dir,
            backend: server_settings.clone().backend(),
            settings: server_settings,
            ready: None,
            keep: AtomicBool::new(false),
            runs: AtomicUsize::new(0),
            failed: None,
        };
        let cell = Arc::new(RwLock::new(server));
        servers.push((key, cell.clone()));
        cell
    }

    /// Releases every server (kept when a run asked for it), once no run holds it.
    pub async fn release_all(&self) -> Vec<Ended> {
        let cells: Vec<_> = self.servers.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        let mut ended = Vec::new();
        for (_, cell) in cells {
            let mut server = cell.write().await;
            let keep = server.ready.is_some() && server.keep.load(Ordering::SeqCst);
            let working_dir = server.ready.as_ref().map(|r| r.working_dir.clone()).unwrap_or_default();
            let released = server.release(keep).await;
            ended.push(Ended {
                name: server.name.clone(),
                runs: server.runs.load(Ordering::SeqCst),
                record: server.backend.record(),
                attach_hint: server.backend.attach_hint(&working_dir),
                released,
            });
        }
        ended
    }
}

fn lease(server: OwnedRwLockReadGuard<Server>) -> Lease {
    server.runs.fetch_add(1, Ordering::SeqCst);
    Lease { server }
}

impl Server {
    async fn alive(&self) -> bool {
        self.ready.is_some() && matches!(self.backend.probe().await, Probe::Alive | Probe::Resumed)
    }

    /// Gives back what an earlier start left (a dead server, a failed start), then starts a new one.
    async fn restart(&mut self, starter: &Starter<'_>) -> Result<(), backend::Error> {
        if self.ready.take().is_some() {
            self.discard().await;
        }
        crate::report::writer::create_dir(&self.dir).map_err(|e| {
            backend::Error::failed(format!("cannot create {}: {e}", self.dir.display())).hint("check permissions")
        })?;
        let ctx = backend::Context {
            run_id: &self.name,
            job: starter.job,
            report_dir: &self.dir,
            hide_env: starter.hide_env,
            run_deadline: starter.run_deadline,
            cancel: starter.cancel.clone(),
            progress: starter.progress,
            ledger: &self.ledger,
            // A shared server is in the batch's summary, not in a run's checkpoint.
            recorded: &|_| {},
        };
        match self.backend.provision(&ctx).await {
            Ok(ready) => {
                (self.ready, self.failed) = (Some(ready), None);
                Ok(())
            }
            Err(e) => {
                self.discard().await;
                self.failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Gives back whatever the backend made, and takes a fresh backend for the next start.
    async fn discard(&mut self) {
        self.release(false).await;
        self.backend = self.settings.clone().backend();
    }

    /// Releases the server; its ledger entry is closed unless the release failed (then `gc` finds it).
    async fn release(&mut self, keep: bool) -> Released {
        let released = self.backend.release(keep).await;
        if !matches!(released, Released::Failed(_)) {
            self.ledger.close(released.disposition());
        }
        released
    }
}
