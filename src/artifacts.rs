//! `artifacts:`: files of the sandbox's working directory collected before release, with ONE archive
//! command on the server (bash with `globstar`, `dotglob` and `nullglob`: `**` crosses directories, `*`
//! matches dotfiles, a pattern that matches nothing is no error; regular files only, never a link, up to
//! the run's `artifacts_max` in the order the patterns name them), downloaded through the file API and
//! unpacked here only after its listing was checked: regular files with relative paths that stay inside
//! `artifacts/`. Each file gets its size and sha256; text files are marked for the leak scan.

use crate::agent::http::AgentClient;
use crate::agent::setup::{run_command, shell_quote};
use crate::cancel::Cancel;
use crate::report::repo::{ArtifactInfo, Artifacts, SkippedArtifact};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub use crate::report::repo::ARTIFACTS_DIR as DIR;

/// `$1`: the byte cap; the patterns follow. Prints `skip SIZE PATH` per file over the cap, then
/// `archive PATH` (an empty archive when nothing matched).
const SCRIPT: &str = r#"set -u
shopt -s globstar dotglob nullglob
IFS=
max=$1; shift
out=$(umask 077; mktemp -d "${TMPDIR:-/tmp}/ohrun-artifacts.XXXXXX") || exit 3
: > "$out/keep"; total=0; declare -A seen
for p in "$@"; do
  for f in $p; do
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    [ -z "${seen[$f]:-}" ] || continue; seen[$f]=1
    size=$(stat -c %s -- "$f") || continue
    if [ $((total + size)) -gt "$max" ]; then printf 'skip %s %s\n' "$size" "$f"; continue; fi
    total=$((total + size)); printf '%s\0' "$f" >> "$out/keep"
  done
done
# A file that changed while it was read (a log still written) is archived as read: tar's exit 1.
tar -czf "$out/a.tgz" --warning=no-file-changed --null --no-recursion -T "$out/keep"; [ $? -le 1 ] || exit 4
printf 'archive %s\n' "$out/a.tgz"
"#;

/// Collects `patterns` from `working_dir` into `attempt_dir/artifacts/`; never fails, says why in `error`.
pub async fn collect(
    client: &AgentClient,
    working_dir: &str,
    patterns: &[&str],
    max: u64,
    attempt_dir: &Path,
) -> Artifacts {
    let mut found = Artifacts { dir: DIR.to_string(), ..Artifacts::default() };
    if let Err(e) = fetch(client, working_dir, patterns, max, attempt_dir, &mut found).await {
        found.error = Some(crate::report::redact::apply(&e).into_owned());
    }
    found
}

async fn fetch(
    client: &AgentClient,
    working_dir: &str,
    patterns: &[&str],
    max: u64,
    attempt_dir: &Path,
    found: &mut Artifacts,
) -> Result<(), String> {
    let args: Vec<String> = patterns.iter().map(|p| shell_quote(p)).collect();
    let command = format!("bash -c {} ohrun-artifacts {max} {}", shell_quote(SCRIPT), args.join(" "));
    // Also after an interrupt: the sandbox is still there, and what it holds is evidence.
    let mut cancel = Cancel::never();
    let out = run_command(client, &command, working_dir, Duration::from_secs(300), &mut cancel)
        .await
        .map_err(|(_, e)| format!("archiving the artifacts failed: {e}"))?;
    if out.exit_code != 0 {
        return Err(format!("archiving the artifacts exited with {}: {}", out.exit_code, out.stderr.trim()));
    }
    let mut archive = None;
    for line in out.stdout.lines() {
        if let Some(rest) = line.strip_prefix("skip ")
            && let Some((size, path)) = rest.split_once(' ')
        {
            found.skipped.push(SkippedArtifact { path: path.to_string(), size: size.parse().unwrap_or(0) });
        } else if let Some(path) = line.strip_prefix("archive ") {
            archive = Some(path.to_string());
        }
    }
    let archive = archive.ok_or("the archive command printed no archive")?;
    let bytes = client.download_file(&archive).await.map_err(|e| format!("fetching the artifacts failed: {e}"));
    let parent = archive.rsplit_once('/').map_or(archive.as_str(), |(dir, _)| dir);
    let _ = run_command(client, &format!("rm -rf {}", shell_quote(parent)), "/", Duration::from_secs(30), &mut cancel)
        .await;
    let dir = attempt_dir.join(DIR);
    unpack(&bytes?, &dir, max).await?;
    found.files = describe(&dir)?;
    Ok(())
}

/// Unpacks after checking every member: a regular file, a relative path, no `..`, and no more bytes in
/// all than the cap (the sandbox's script keeps to it; a sandbox is not trusted to).
async fn unpack(bytes: &[u8], dir: &Path, max: u64) -> Result<(), String> {
    let listing = tar(&["-tvzf", "-"], bytes, None).await?;
    let mut total: u64 = 0;
    for line in listing.lines().filter(|l| !l.is_empty()) {
        if !line.starts_with('-') {
            return Err(format!("the artifacts' archive holds something other than a file: {line}"));
        }
        // `-rw-r--r-- user/group SIZE date time name`
        total = total.saturating_add(line.split_whitespace().nth(2).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX));
    }
    if total > max {
        return Err(format!("the artifacts' archive unpacks to {total} bytes, over artifacts_max ({max})"));
    }
    let names = tar(&["-tzf", "-"], bytes, None).await?;
    for name in names.lines().filter(|l| !l.is_empty()) {
        if name.starts_with('/') || name.split('/').any(|part| part == "..") {
            return Err(format!("the artifacts' archive holds a path outside the working directory: {name}"));
        }
    }
    crate::report::writer::create_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    tar(&["-xzf", "-", "--no-same-owner", "--no-same-permissions", "-C"], bytes, Some(dir)).await.map(|_| ())
}

async fn tar(args: &[&str], input: &[u8], dir: Option<&Path>) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("tar");
    cmd.args(args);
    if let Some(d) = dir {
        cmd.arg(d);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("tar has no stdin")?;
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .map_err(|_| "tar took longer than 300s".to_string())?
        .map_err(|e| format!("tar failed: {e}"))?;
    let _ = writer.await;
    if !out.status.success() {
        return Err(format!("tar failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every regular file under `dir`: path, size, sha256, and whether it is text (scanned for leaks).
fn describe(dir: &Path) -> Result<Vec<ArtifactInfo>, String> {
    let mut files = Vec::new();
    walk(dir, &mut files).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
        let digest = Sha256::digest(&bytes);
        out.push(ArtifactInfo {
            path: rel,
            size: bytes.len() as u64,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            scanned: is_text(&bytes),
        });
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Text: UTF-8 without NUL bytes.
pub fn is_text(bytes: &[u8]) -> bool {
    !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok()
}
