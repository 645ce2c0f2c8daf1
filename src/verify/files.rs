//! `verify.files`: hidden files (tests the agent never saw) copied into the working directory only after
//! the agent is done, through the agent-server's file API, each under its path relative to the job file
//! (`verify/test_hidden.py` → `<working dir>/verify/test_hidden.py`). Whatever was under the given path
//! before — a directory the agent filled with files of its own (a `conftest.py` that rigs the tests), or
//! a link — is removed first, and said: the hidden path holds the hidden files and nothing else.

use super::Target;
use crate::agent::setup::{run_command, shell_quote};
use crate::cancel::Cancel;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The files under `given` (a file or a directory, relative to `job_dir`), each with its path relative
/// to `job_dir`, in order; an error names what cannot be read.
pub fn local_files(job_dir: &Path, given: &str) -> Result<Vec<(PathBuf, String)>, String> {
    let root = job_dir.join(given);
    let mut out = Vec::new();
    collect(&root, &mut out).map_err(|e| format!("cannot read `verify.files` {}: {e}", root.display()))?;
    out.sort();
    let rel = |p: &Path| p.strip_prefix(job_dir).unwrap_or(p).to_string_lossy().trim_start_matches("./").to_string();
    Ok(out.into_iter().map(|p| (p.clone(), rel(&p))).collect())
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
    } else if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            collect(&entry?.path(), out)?;
        }
    }
    Ok(())
}

/// Copies the files under `given` into the sandbox's working directory (keeping their execute bits),
/// after removing whatever was under `given` there; returns what was (at most 50 paths).
pub async fn copy_in(
    target: &Target<'_>,
    given: &str,
    files: &[(PathBuf, String)],
    cancel: &mut Cancel,
) -> Result<Vec<String>, String> {
    let wd = target.working_dir.trim_end_matches('/');
    let top = shell_quote(given.trim_end_matches('/').trim_start_matches("./"));
    let clear =
        format!("{{ [ -e {top} ] || [ -L {top} ]; }} && find {top} 2>/dev/null | head -n 50; rm -rf {top}; true");
    let existed = match run_command(target.client, &clear, wd, Duration::from_secs(60), cancel).await {
        Ok(out) => out.stdout.lines().map(str::to_string).collect(),
        Err((_, e)) => return Err(format!("cannot clear `verify.files` in the working directory: {e}")),
    };
    let mut executable = Vec::new();
    for (local, rel) in files {
        let bytes = std::fs::read(local).map_err(|e| format!("cannot read {}: {e}", local.display()))?;
        let remote = format!("{wd}/{rel}");
        target.client.upload_file(&remote, bytes).await.map_err(|e| format!("cannot copy {rel} in: {e}"))?;
        if is_executable(local) {
            executable.push(shell_quote(&remote));
        }
    }
    if !executable.is_empty() {
        let chmod = format!("chmod +x {}", executable.join(" "));
        let _ = run_command(target.client, &chmod, "/", Duration::from_secs(30), cancel).await;
    }
    Ok(existed)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}
