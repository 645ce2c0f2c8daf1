//! The run's final patch: everything the agent and setup changed in the working directory's git
//! repository, relative to the commit the run started from, as `final.patch` beside run.json. Taken with
//! a private index and object directory in the sandbox (the repository's own index and objects are only
//! read), binary-safe (`git diff --binary --full-index` of the whole tree, new files included, `.gitignore`d
//! ones left out), so that `git apply final.patch` on the base commit gives the final tree exactly — the
//! tree recorded beside it. Sent back inside the last step's snapshot output when it is small (`diff.rs`),
//! else fetched through the agent-server's file API, on every backend alike. This is
//! what a fresh verifier applies and what delivery pushes.

use super::http::AgentClient;
use super::setup::{Output, run_command, shell_quote};
use crate::cancel::Cancel;
use crate::report::PatchInfo;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};

pub const PATCH_FILE: &str = "final.patch";
/// The largest patch fetched: beyond it the report says how large it was and keeps none.
const MAX_PATCH_BYTES: u64 = 100 * 1024 * 1024;
const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// The commit the working directory's repository is at, if it is one with a commit.
pub async fn head(client: &AgentClient, working_dir: &str, cancel: &mut Cancel) -> Option<String> {
    // Only a repository whose top the working directory is: one it merely sits inside (a checkout ohrun
    // or the user runs in) is not the run's.
    let cmd = "unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE; [ \"$(git rev-parse --show-toplevel 2>/dev/null)\" = \"$(pwd -P)\" ] && git rev-parse -q --verify 'HEAD^{commit}' 2>/dev/null";
    let out = run_command(client, cmd, working_dir, Duration::from_secs(30), cancel).await.ok()?;
    let commit = out.stdout.trim();
    (out.exit_code == 0 && commit.len() >= 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| commit.to_string())
}

/// `$1` working dir, `$2` base commit (empty: the empty tree), `$3` the run's snapshot directory's name
/// (in `$TMPDIR`, else `/tmp`; empty: none). Prints the temporary directory holding `final.patch` (inside
/// the snapshot directory when there is one, so that removing it removes the patch: one command less),
/// the final tree, the number of changed paths, the patch's size and the base tree; exit 4 when the
/// working directory is in no repository, 3 on any other failure (the reason on stderr).
pub const SCRIPT: &str = r#"set -u
wd=$1; base=$2; snap=$3
nl='
'
fail() { echo "$*" >&2; exit 3; }
command -v git >/dev/null 2>&1 || fail "git is not installed in the sandbox"
# -P: $PWD is the physical path, as git prints the top.
cd -P "$wd" 2>/dev/null || fail "no working directory $wd"
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
# One rev-parse: the top, then the object directory.
at=$(git rev-parse --path-format=absolute --show-toplevel --git-path objects 2>/dev/null) || { echo "the working directory is not a git repository" >&2; exit 4; }
top=${at%%"$nl"*}; objects=${at#*"$nl"}
[ "$top" = "$PWD" ] || { echo "the working directory is inside the repository $top, not its top" >&2; exit 4; }
umask 077
if [ -n "$snap" ]; then
  tmp=${TMPDIR:-/tmp}/$snap/patch
  rm -rf "$tmp" && mkdir -p "$tmp/objects" || fail "cannot make $tmp/objects"
else
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/ohrun-patch.XXXXXX") || fail "cannot make a temporary directory"
  mkdir "$tmp/objects" || fail "cannot make $tmp/objects"
fi
export GIT_INDEX_FILE="$tmp/index" GIT_OBJECT_DIRECTORY="$tmp/objects" GIT_ALTERNATE_OBJECT_DIRECTORIES="$objects"
g() { git -c core.autocrlf=false -c core.safecrlf=false -c core.quotePath=false "$@"; }
if [ -n "$base" ]; then from=$(g rev-parse "$base^{tree}") || fail "cannot read the base commit $base"; g read-tree "$base" || fail "cannot read the base commit $base"
else from=$(g hash-object -t tree /dev/null); g read-tree --empty || fail "cannot start an empty index"; fi
g add -A -- "$top" 2>"$tmp/err" || fail "git add failed: $(tail -n 1 "$tmp/err")"
tree=$(g write-tree) || fail "git write-tree failed"
g diff --cached --binary --full-index --no-color --no-ext-diff --no-renames "$from" > "$tmp/final.patch" || fail "git diff failed"
# Every changed path has one header line; no line of a patch's body starts so (text lines start with
# ` `, `+`, `-` or `\`, and base85 lines of a binary patch have no space).
paths=$(grep -c '^diff --git ' "$tmp/final.patch")
bytes=$(wc -c < "$tmp/final.patch")
printf '%s\n%s\n%s\n%s\n%s\n' "$tmp" "$tree" $paths $bytes "$from"
"#;

/// The script's name in a run's snapshot directory, where the snapshots' first command writes it
/// (`diff.rs`), so that the commands that take the patch there are a line, not the script again.
pub const SCRIPT_FILE: &str = "patch.sh";

/// The command that takes the final patch against `base` (None: against the empty tree, for a repository
/// that had no commit); `snapshots`: the name of the run's snapshot directory, where the patch is made
/// (and the script was written) when there is one. It also runs folded into the last step's snapshot
/// command (`diff.rs`).
pub fn command(working_dir: &str, base: Option<&str>, snapshots: Option<&str>) -> String {
    let args = format!(
        "{} {} {}",
        shell_quote(working_dir),
        shell_quote(base.unwrap_or("")),
        shell_quote(snapshots.unwrap_or(""))
    );
    match snapshots {
        Some(snap) => format!("sh {}/{SCRIPT_FILE} {args}", super::setup::in_temp_dir(snap)),
        None => format!("sh -c {} ohrun-patch {args}", shell_quote(SCRIPT)),
    }
}

/// Takes the final patch (see `command`) in a temporary directory of its own, the script sent along (the
/// run's snapshot directory may be gone), and writes it, redacted, to `final.patch` in `attempt_dir`.
pub async fn capture(
    client: &AgentClient,
    working_dir: &str,
    base: Option<&str>,
    attempt_dir: &Path,
    deadline: Option<Instant>,
    cancel: &mut Cancel,
) -> PatchInfo {
    let left = deadline.map_or(GIT_TIMEOUT, |d| d.saturating_duration_since(Instant::now()).min(GIT_TIMEOUT));
    let out = run_command(client, &command(working_dir, base, None), "/", left, cancel)
        .await
        .map_err(|(_, e)| format!("taking the patch failed: {e}"));
    finish(client, (base, None), (out, None), attempt_dir).await
}

/// The patch the script made (`out`: how it ended, or why it did not run) — `inline`: as it came back in
/// the script's output, else fetched — written, redacted, to `final.patch` in `attempt_dir`.
pub async fn finish(
    client: &AgentClient,
    (base, snapshots): (Option<&str>, Option<&str>),
    (out, inline): (Result<Output, String>, Option<Vec<u8>>),
    attempt_dir: &Path,
) -> PatchInfo {
    let mut info = PatchInfo { base_commit: base.map(str::to_string), ..PatchInfo::default() };
    let out = match out {
        Ok(out) if out.exit_code == 0 => out,
        Ok(out) => {
            let why = out.stderr.lines().last().unwrap_or("").trim().to_string();
            info.error =
                Some(if why.is_empty() { format!("taking the patch failed (exit {})", out.exit_code) } else { why });
            return info;
        }
        Err(e) => {
            info.error = Some(e);
            return info;
        }
    };
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    let [tmp, tree, paths, bytes, base_tree] = lines[..] else {
        info.error = Some(format!("unexpected output from the patch script: {}", out.stdout.trim()));
        return info;
    };
    (info.tree, info.paths, info.bytes) =
        (Some(tree.to_string()), paths.parse().unwrap_or(0), bytes.parse().unwrap_or(0));
    info.base_tree = Some(base_tree.to_string());
    if info.bytes > MAX_PATCH_BYTES {
        info.error = Some(format!("the patch is {} bytes, more than the {MAX_PATCH_BYTES} kept", info.bytes));
    } else {
        // Whole, or fetched: the script counted its bytes.
        let bytes = match inline.filter(|b| b.len() as u64 == info.bytes) {
            Some(bytes) => Ok(bytes),
            None => client.download_file(&format!("{tmp}/{PATCH_FILE}")).await.map_err(|e| e.to_string()),
        };
        match bytes {
            Ok(bytes) => write(&bytes, attempt_dir, &mut info),
            Err(e) => info.error = Some(format!("fetching the patch failed: {e}")),
        }
    }
    // Inside the snapshot directory it goes with it.
    if snapshots.is_none() {
        let rm = format!("rm -rf {}", shell_quote(tmp));
        let _ = run_command(client, &rm, "/", Duration::from_secs(30), &mut Cancel::never()).await;
    }
    info
}

/// Writes the patch, redacted, beside run.json, with its sha256 (off the runtime's workers: it is synced).
fn write(bytes: &[u8], attempt_dir: &Path, info: &mut PatchInfo) {
    // A secret the agent wrote into a file must not leave in a patch either; a masked patch may no longer
    // apply, and says so.
    let clean = crate::report::redact::apply_bytes(bytes);
    info.redacted = clean.len() != bytes.len() || *clean != bytes[..];
    let path = attempt_dir.join(PATCH_FILE);
    let written = crate::report::disk::off_runtime(|| {
        use std::io::Write;
        let mut f = crate::report::writer::create_private(&path)?;
        f.write_all(&clean)?;
        f.sync_all()
    });
    match written {
        Ok(()) => {
            info.file = Some(PATCH_FILE.to_string());
            info.sha256 = Some(Sha256::digest(&clean).iter().map(|b| format!("{b:02x}")).collect());
            info.bytes = clean.len() as u64;
        }
        Err(e) => info.error = Some(format!("cannot write {}: {e}", path.display())),
    }
}
