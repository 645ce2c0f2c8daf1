//! The agent-server that ohrun manages for `kind: local`: a venv in ohrun's cache with the pinned
//! `openhands-agent-server` from PyPI, created on first use (or by `ohrun setup local`). The venv is built
//! under a temporary name and renamed when complete, so a half-installed one is never used; a file lock
//! keeps concurrent ohrun processes from installing twice.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The agent-server version ohrun is built and tested against.
pub const AGENT_SERVER_VERSION: &str = "1.58.2";

/// ohrun's cache: `$OHRUN_HOME`, else the user cache dir (`~/.cache/ohrun`).
pub fn home() -> PathBuf {
    std::env::var_os("OHRUN_HOME")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("ohrun")))
        .unwrap_or_else(|| PathBuf::from(".ohrun"))
}

pub fn venv_dir() -> PathBuf {
    home().join(format!("agent-server-{AGENT_SERVER_VERSION}"))
}

/// The command that starts the managed server, if it is installed.
pub fn installed_command() -> Option<Vec<String>> {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    (venv.join(".complete").is_file() && python.is_file())
        .then(|| vec![python.display().to_string(), "-m".into(), "openhands.agent_server".into()])
}

#[derive(Debug)]
pub struct InstallError {
    pub message: String,
    pub hint: String,
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
        let out = Command::new(&p)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (major, minor) = version.split_once('.')?;
        (major == "3" && minor.parse::<u32>().ok()? >= 12).then_some((p, version))
    })
}

/// Installs the managed agent-server unless it is there; `progress` gets one line per step of pip.
pub fn ensure_installed(progress: &dyn Fn(&str)) -> Result<Vec<String>, InstallError> {
    if let Some(cmd) = installed_command() {
        return Ok(cmd);
    }
    let home = home();
    std::fs::create_dir_all(&home).map_err(|e| InstallError {
        message: format!("cannot create {}: {e}", home.display()),
        hint: "set OHRUN_HOME to a writable directory".into(),
    })?;
    let _lock = FileLock::acquire(&home.join(format!("agent-server-{AGENT_SERVER_VERSION}.lock")))?;
    if let Some(cmd) = installed_command() {
        return Ok(cmd); // another ohrun installed it while we waited
    }
    let (python, version) = find_python().ok_or_else(|| InstallError {
        message: "no Python 3.12 or newer found to install the agent-server with".into(),
        hint: "install Python ≥ 3.12 (e.g. `apt-get install python3.12-venv` or `pyenv install 3.12`), or set OHRUN_PYTHON to one; a job can also name its own server with `sandbox.command`".into(),
    })?;
    progress(&format!(
        "installing openhands-agent-server {AGENT_SERVER_VERSION} with Python {version} ({})",
        python.display()
    ));
    let target = venv_dir();
    let staging = home.join(format!("agent-server-{AGENT_SERVER_VERSION}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    run_streaming(Command::new(&python).args(["-m", "venv"]).arg(&staging), progress)?;
    let pip = staging.join("bin/pip");
    run_streaming(
        Command::new(&pip).args([
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            &format!("openhands-agent-server=={AGENT_SERVER_VERSION}"),
        ]),
        progress,
    )?;
    std::fs::write(staging.join(".complete"), AGENT_SERVER_VERSION).map_err(io_error)?;
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&staging, &target).map_err(io_error)?;
    // A venv's scripts hold absolute paths; the python -m entry point does not care about the rename.
    installed_command().ok_or_else(|| InstallError {
        message: format!("the agent-server venv at {} is incomplete", target.display()),
        hint: "remove it and run `ohrun setup local` again".into(),
    })
}

fn io_error(e: std::io::Error) -> InstallError {
    InstallError {
        message: format!("installing the agent-server failed: {e}"),
        hint: "check disk space and permissions of OHRUN_HOME".into(),
    }
}

fn run_streaming(cmd: &mut Command, progress: &dyn Fn(&str)) -> Result<(), InstallError> {
    let shown = format!("{cmd:?}");
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
        InstallError { message: format!("cannot run {shown}: {e}"), hint: "check the Python installation".into() }
    })?;
    let stderr = child.stderr.take();
    let tail = std::thread::spawn(move || {
        let mut lines: Vec<String> = Vec::new();
        if let Some(s) = stderr {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                lines.push(line);
                if lines.len() > 30 {
                    lines.remove(0);
                }
            }
        }
        lines
    });
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("Collecting") || line.starts_with("Installing") || line.starts_with("Successfully") {
                progress(&line);
            }
        }
    }
    let status = child.wait().map_err(|e| InstallError { message: e.to_string(), hint: String::new() })?;
    let tail = tail.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(InstallError {
            message: format!("{shown} failed ({status}):\n{}", tail.join("\n")),
            hint: "PyPI must be reachable (or a mirror configured for pip)".into(),
        })
    }
}

struct FileLock(std::fs::File);

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking a descriptor we own (closing it would release the lock too).
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, InstallError> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io_error)?;
        // SAFETY: flock on a file descriptor we own; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_error(std::io::Error::last_os_error()));
        }
        Ok(FileLock(f))
    }
}
