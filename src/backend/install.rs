//! The agent-server that ohrun manages for `kind: local`: a venv in ohrun's cache with exactly the packages
//! of `agent-server.lock` (the pinned `openhands-agent-server` and everything it needs, resolved once for
//! every platform), created on first use or by `ohrun setup local`. It is installed with uv (itself fetched
//! from PyPI into ohrun's cache; about 4× faster than pip here) and falls back to pip. With uv, bytecode is
//! compiled only for the directories a run imports from (`agent-server.bytecode`), in parallel: where
//! PYTHONDONTWRITEBYTECODE is set a module without it is compiled again at every start (a start then takes
//! twice as long), and compiling every module took 18 of the install's 29 s. The venv is built
//! under a temporary name and renamed when complete, so a half-installed one is never used; a file lock
//! keeps concurrent ohrun processes from installing twice.

use super::Error;
use crate::cancel::Cancel;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The agent-server version ohrun is built and tested against.
pub const AGENT_SERVER_VERSION: &str = "1.58.2";

/// Every package of the agent-server, pinned (scripts/lock-agent-server.sh writes it).
pub const LOCK: &str = include_str!("agent-server.lock");

/// The directories (relative to site-packages) whose modules get bytecode at install:
/// scripts/bytecode-dirs.sh lists those a rehearsed seed run imports from, after each new lock.
const BYTECODE_DIRS: &str = include_str!("agent-server.bytecode");

/// Compiles the `.py` files of the directories it is given (not their subdirectories); one process per core
/// gets a share. A file that does not compile is left to the import (as uv and pip do).
const COMPILE: &str = "import compileall, sys\nfor d in sys.argv[1:]: compileall.compile_dir(d, maxlevels=0, quiet=2)";

/// The uv that installs the lock (a PyPI package, so it comes from the same registry).
const UV_VERSION: &str = "0.13.9";

pub use crate::paths::home;

pub fn venv_dir() -> PathBuf {
    home().join(format!("agent-server-{AGENT_SERVER_VERSION}"))
}

/// The lock as pip can take it on this machine. pip refuses to compare a `platform_release` marker with a
/// release that is not a PEP 440 version (every Linux kernel's), and only macOS-only packages carry such
/// markers, so elsewhere those lines are left out. uv takes the lock as it is.
pub fn lock_for_pip(on_macos: bool) -> String {
    LOCK.lines().filter(|l| on_macos || !l.contains("platform_release")).map(|l| format!("{l}\n")).collect()
}

/// Which installer to use: `OHRUN_INSTALLER=pip` skips uv (for machines that must not fetch it).
fn pip_only() -> bool {
    std::env::var("OHRUN_INSTALLER").is_ok_and(|v| v == "pip")
}

/// A short hash of the lock: a venv (or image) built from another lock is rebuilt.
pub fn lock_hash() -> String {
    Sha256::digest(LOCK.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn completion_mark() -> String {
    format!("{AGENT_SERVER_VERSION} {}", lock_hash())
}

/// The command that starts the managed server, if it is installed from the current lock.
pub fn installed_command() -> Option<Vec<String>> {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let mark = std::fs::read_to_string(venv.join(".complete")).ok()?;
    (mark.trim() == completion_mark() && python.is_file())
        .then(|| vec![python.display().to_string(), "-m".into(), "openhands.agent_server".into()])
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::failed(format!("{what}: {e}")).hint("check disk space and the permissions of OHRUN_HOME")
}

/// Finds a Python ≥ 3.12: `$OHRUN_PYTHON`, then python3.13/python3.12/python3 on PATH, then pyenv's.
pub fn find_python() -> Option<(PathBuf, String)> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("OHRUN_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    for name in ["python3.13", "python3.12", "python3.14", "python3"] {
        if let Some(paths) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&paths).map(|d| d.join(name)));
        }
    }
    let pyenv =
        std::env::var_os("PYENV_ROOT").map(PathBuf::from).or_else(|| dirs::home_dir().map(|h| h.join(".pyenv")));
    if let Some(versions) = pyenv.map(|p| p.join("versions")).and_then(|v| std::fs::read_dir(v).ok()) {
        let mut found: Vec<PathBuf> = versions.filter_map(|e| e.ok()).map(|e| e.path().join("bin/python3")).collect();
        found.sort();
        found.reverse();
        candidates.extend(found);
    }
    candidates.into_iter().filter(|p| p.is_file()).find_map(|p| {
        let out = std::process::Command::new(&p)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (major, minor) = version.split_once('.')?;
        (major == "3" && minor.parse::<u32>().ok()? >= 12).then_some((p, version))
    })
}

/// A file lock held until dropped; waiting for it can be cancelled.
pub struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    /// Takes the lock at `path`, saying once through `progress` that it waits for another process.
    pub async fn acquire(
        path: &Path,
        what: &str,
        progress: &(dyn Fn(&str) + Sync),
        cancel: &mut Cancel,
    ) -> Result<FileLock, Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| io_error(&format!("cannot open the lock {}", path.display()), e))?;
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(FileLock(file)),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !said {
                        progress(&format!("waiting for another ohrun to finish {what}"));
                        said = true;
                    }
                    if cancel.sleep(Duration::from_millis(200)).await {
                        return Err(Error::interrupted());
                    }
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(io_error(&format!("cannot lock {}", path.display()), e));
                }
            }
        }
    }
}

/// Installs the managed agent-server unless it is there; `progress` gets one line per phase.
pub async fn ensure_installed(progress: &(dyn Fn(&str) + Sync), cancel: &mut Cancel) -> Result<Vec<String>, Error> {
    if let Some(cmd) = installed_command() {
        return Ok(cmd);
    }
    let home = home();
    std::fs::create_dir_all(&home).map_err(|e| io_error(&format!("cannot create {}", home.display()), e))?;
    let lock_path = home.join(format!("agent-server-{AGENT_SERVER_VERSION}.lock"));
    let _lock = FileLock::acquire(&lock_path, "installing the agent-server", progress, cancel).await?;
    if let Some(cmd) = installed_command() {
        return Ok(cmd); // another ohrun installed it while we waited
    }
    let (python, version) = find_python().ok_or_else(|| {
        Error::failed("no Python 3.12 or newer found to install the agent-server with").hint(
            "install Python ≥ 3.12 (e.g. `apt-get install python3.12-venv` or `pyenv install 3.12`), or set OHRUN_PYTHON to one; a job can also name its own server with `sandbox.command`",
        )
    })?;
    let packages = LOCK.lines().filter(|l| l.contains("==")).count();
    progress(&format!(
        "installing openhands-agent-server {AGENT_SERVER_VERSION} ({packages} pinned packages) with Python {version} into {}",
        venv_dir().display()
    ));
    let started = std::time::Instant::now();
    let staging = home.join(format!("agent-server-{AGENT_SERVER_VERSION}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    let lock_file = home.join(format!("agent-server-{AGENT_SERVER_VERSION}.requirements.txt"));
    std::fs::write(&lock_file, LOCK).map_err(|e| io_error("cannot write the lock file", e))?;
    let uv = if pip_only() { Err(Error::failed("OHRUN_INSTALLER=pip")) } else { uv(&python, progress, cancel).await };
    let tool = match uv {
        Ok(uv) => {
            run(
                tokio::process::Command::new(&uv).args(["venv", "-q", "-p"]).arg(&python).arg(&staging),
                progress,
                cancel,
            )
            .await?;
            run(
                tokio::process::Command::new(&uv)
                    .args(["pip", "install", "--no-deps", "-p"])
                    .arg(&staging)
                    .arg("-r")
                    .arg(&lock_file),
                progress,
                cancel,
            )
            .await?;
            compile_bytecode(&staging, progress, cancel).await?;
            "uv"
        }
        Err(e) if e.kind == super::ErrorKind::Interrupted => return Err(e),
        Err(e) => {
            progress(&format!("installing with pip, which takes longer ({})", e.message));
            std::fs::write(&lock_file, lock_for_pip(cfg!(target_os = "macos")))
                .map_err(|e| io_error("cannot write the lock file", e))?;
            pip_install(&python, &staging, &lock_file, progress, cancel).await?;
            "pip"
        }
    };
    std::fs::write(staging.join(".complete"), completion_mark()).map_err(|e| io_error("cannot finish the venv", e))?;
    let target = venv_dir();
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&staging, &target).map_err(|e| io_error("cannot move the venv into place", e))?;
    progress(&format!("installed with {tool} in {:.1}s", started.elapsed().as_secs_f64()));
    // The venv's python -m entry point does not care about the rename (its scripts would).
    installed_command().ok_or_else(|| {
        Error::failed(format!("the agent-server venv at {} is incomplete", target.display()))
            .hint("remove it and run `ohrun setup local` again")
    })
}

/// Bytecode for the modules a run imports (`BYTECODE_DIRS`), compiled by the venv's Python, one process per
/// core (pip compiles everything itself, so only the uv install needs this).
async fn compile_bytecode(venv: &Path, progress: &(dyn Fn(&str) + Sync), cancel: &mut Cancel) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let site = std::fs::read_dir(venv.join("lib"))
        .map_err(|e| io_error("cannot read the venv", e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .ok_or_else(|| Error::failed(format!("no site-packages in {}", venv.display())))?;
    let dirs: Vec<PathBuf> =
        BYTECODE_DIRS.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(|d| site.join(d)).collect();
    // Shares of about the same number of modules: the largest directories first, each to the lightest share.
    let modules = |d: &Path| {
        std::fs::read_dir(d)
            .map_or(0, |e| e.filter(|e| e.as_ref().is_ok_and(|e| e.path().extension() == Some("py".as_ref()))).count())
    };
    let mut sized: Vec<(usize, &PathBuf)> = dirs.iter().map(|d| (modules(d), d)).collect();
    sized.sort_by_key(|s| std::cmp::Reverse(s.0));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut shares: Vec<(usize, Vec<&PathBuf>)> = vec![(0, Vec::new()); cores];
    for (n, dir) in sized {
        let lightest = shares.iter_mut().min_by_key(|s| s.0).expect("at least one core");
        lightest.0 += n;
        lightest.1.push(dir);
    }
    let shares = shares.into_iter().map(|(_, share)| {
        let mut cmd = tokio::process::Command::new(venv.join("bin/python"));
        cmd.args(["-c", COMPILE]).args(share);
        let mut cancel = cancel.clone();
        async move { run(&mut cmd, progress, &mut cancel).await }
    });
    futures_util::future::try_join_all(shares).await?;
    progress(&format!(
        "Bytecode compiled for the {} directories a run imports from in {:.1}s",
        dirs.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// uv from ohrun's cache, installed there with pip on first use: locked (the venv install and an image
/// build may both want it), built under a temporary name and renamed when complete.
async fn uv(python: &Path, progress: &(dyn Fn(&str) + Sync), cancel: &mut Cancel) -> Result<PathBuf, Error> {
    let dir = home().join(format!("uv-{UV_VERSION}"));
    let uv = dir.join("bin/uv");
    if uv.is_file() {
        return Ok(uv);
    }
    let _lock =
        FileLock::acquire(&home().join(format!("uv-{UV_VERSION}.lock")), "fetching uv", progress, cancel).await?;
    if uv.is_file() {
        return Ok(uv);
    }
    progress(&format!("fetching uv {UV_VERSION} from PyPI"));
    let staging = home().join(format!("uv-{UV_VERSION}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    run(tokio::process::Command::new(python).args(["-m", "venv"]).arg(&staging), progress, cancel).await?;
    let pip = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"];
    run(
        tokio::process::Command::new(staging.join("bin/python")).args(pip).arg(format!("uv=={UV_VERSION}")),
        progress,
        cancel,
    )
    .await?;
    // uv is one self-contained binary: the venv around it may move.
    std::fs::rename(&staging, &dir).map_err(|e| io_error("cannot move uv into place", e))?;
    Ok(uv)
}

/// uv for the image build (mounted into the build container), or None when it cannot be had here.
pub async fn uv_for_image(progress: &(dyn Fn(&str) + Sync), cancel: &mut Cancel) -> Option<PathBuf> {
    if pip_only() {
        return None;
    }
    let (python, _) = find_python()?;
    uv(&python, progress, cancel).await.ok()
}

async fn pip_install(
    python: &Path,
    staging: &Path,
    lock_file: &Path,
    progress: &(dyn Fn(&str) + Sync),
    cancel: &mut Cancel,
) -> Result<(), Error> {
    let _ = std::fs::remove_dir_all(staging);
    run(tokio::process::Command::new(python).args(["-m", "venv"]).arg(staging), progress, cancel).await?;
    run(
        tokio::process::Command::new(staging.join("bin/python"))
            .args(["-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--progress-bar", "off", "-r"])
            .arg(lock_file),
        progress,
        cancel,
    )
    .await
}

/// Runs an installer command, passing its notable lines to `progress` and keeping the last ones for the
/// error; killed when ohrun is cancelled.
pub async fn run(
    cmd: &mut tokio::process::Command,
    progress: &(dyn Fn(&str) + Sync),
    cancel: &mut Cancel,
) -> Result<(), Error> {
    let shown = format!("{:?}", cmd.as_std()).replace('"', "");
    let mut child =
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::failed(format!("cannot run {shown}: {e}")).hint("check the Python installation"))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut tail: Vec<String> = Vec::new();
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        let line = tokio::select! {
            l = out.next_line(), if out_open => l.ok().flatten().or_else(|| { out_open = false; None }),
            l = err.next_line(), if err_open => l.ok().flatten().or_else(|| { err_open = false; None }),
            _ = cancel.wait() => return Err(Error::interrupted()),
        };
        let Some(line) = line else { continue };
        let notable = [
            "Collecting",
            "Successfully",
            "Resolved",
            "Prepared",
            "Installed",
            "Bytecode",
            "I: Retrieving InRelease",
            "I: Installing core packages",
            "I: Configuring required packages",
            "I: Base system installed",
        ];
        if notable.iter().any(|p| line.trim_start().starts_with(p)) {
            progress(line.trim());
        }
        tail.push(line);
        if tail.len() > 30 {
            tail.remove(0);
        }
    }
    let status = tokio::select! {
        s = child.wait() => s.map_err(|e| Error::failed(format!("{shown}: {e}")))?,
        _ = cancel.wait() => return Err(Error::interrupted()),
    };
    if status.success() {
        return Ok(());
    }
    Err(Error::failed(format!("{shown} failed ({status})"))
        .log_tail(tail.join("\n"))
        .hint("PyPI must be reachable (or a mirror configured for pip and uv)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytecode_list_was_made_from_the_current_lock() {
        let first = BYTECODE_DIRS.lines().next().unwrap_or_default();
        assert_eq!(first, format!("# lock {}", lock_hash()), "run scripts/bytecode-dirs.sh after a new lock");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_second_holder_waits_says_so_and_gets_the_lock_when_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = FileLock::acquire(&path, "testing", &|_| {}, &mut Cancel::never()).await.unwrap();
        let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (p, s) = (path.clone(), said.clone());
        let second = tokio::spawn(async move {
            let say = move |l: &str| s.lock().unwrap().push(l.to_string());
            FileLock::acquire(&p, "testing", &say, &mut Cancel::never()).await.map(|_| ())
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!second.is_finished(), "the second holder waits while the first holds the lock");
        drop(first);
        second.await.unwrap().unwrap();
        assert_eq!(*said.lock().unwrap(), vec!["waiting for another ohrun to finish testing".to_string()]);
    }
}
