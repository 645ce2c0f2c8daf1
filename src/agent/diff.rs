//! What each phase changed in the working directory (`report.diffs`): before setup, after setup and
//! after every step, a script run through the agent-server's bash endpoint snapshots the working
//! directory as git trees in a private git directory outside it (`/tmp/ohrun-snap-RUN`), so the
//! workspace is never touched — no `.git` created, no index of the user's repository rewritten — and
//! diffs the new snapshot against the one before. Every git repository inside the working directory
//! (a clone in a subdirectory, say) is snapshotted on its own, starting from its HEAD, so its files are
//! seen one by one and a fresh clone shows as unchanged. The diff goes, redacted, into `steps/N.diff`
//! beside the attempt's run.json; the report gets the changed paths and counts.

use super::http::AgentClient;
use super::setup::{run_command, shell_quote};
use crate::cancel::Cancel;
use crate::report::DiffInfo;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most diff text kept per phase; the rest is cut (and the report says so).
const MAX_DIFF_BYTES: usize = 256 * 1024;
/// How long one snapshot may take (a large workspace is hashed once, then git's stat cache helps).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// `$1`: the snapshot directory, `$2`: the working directory, `$3`: `init` (take the base snapshots) or
/// `diff` (snapshot again, print what changed since the last one, and keep the new one as the base).
/// Output: `C <status>\t<path>` per change (`B` for a binary file), `N <insertions> <deletions>`, then
/// `@@ohrun-diff` and the unified diff.
const SCRIPT: &str = r#"set -u
snap=$1; wd=$2; mode=$3
command -v git >/dev/null 2>&1 || { echo "git is not installed in the sandbox" >&2; exit 3; }
cd "$wd" || exit 3
mkdir -p "$snap" || exit 3
empty=4b825dc642cb6eb9a060e54bf8d69288fbee4904
g() { git -c core.autocrlf=false -c core.safecrlf=false -c core.quotePath=false "$@"; }
opts="--no-color --no-ext-diff --no-renames"
{ echo .; find . -mindepth 2 -name .git -prune -print 2>/dev/null | sed 's|^\./||; s|/\.git$||' | sort; } > "$snap/roots"
: > "$snap/changes"; : > "$snap/diff"
while IFS= read -r root; do
  key=$(printf '%s' "$root" | cksum | cut -d' ' -f1)
  export GIT_DIR="$snap/$key" GIT_WORK_TREE="$wd/$root"
  if [ ! -d "$GIT_DIR" ]; then
    g init -q >/dev/null 2>&1 || exit 3
    if [ "$mode" = diff ]; then
      # A repository seen for the first time starts from its own HEAD: a fresh clone is no change.
      base=$empty
      if [ -d "$wd/$root/.git/objects" ]; then
        echo "$wd/$root/.git/objects" > "$GIT_DIR/objects/info/alternates"
        head=$(git --git-dir="$wd/$root/.git" rev-parse -q --verify 'HEAD^{tree}' 2>/dev/null) && base=$head
      fi
      echo "$base" > "$GIT_DIR/ohrun-base"
    fi
  fi
  # The repositories inside this one are snapshotted on their own.
  set -- .
  while IFS= read -r inner; do
    case "$inner" in "$root"/*) set -- "$@" ":(exclude,top)${inner#"$root"/}" ;; .) ;; *) [ "$root" = . ] && set -- "$@" ":(exclude,top)$inner" ;; esac
  done < "$snap/roots"
  g add -A -- "$@" >/dev/null 2>&1
  tree=$(g write-tree) || exit 3
  if [ "$mode" = diff ]; then
    base=$(cat "$GIT_DIR/ohrun-base")
    p=""; [ "$root" != . ] && p="$root/"
    g diff $opts --name-status "$base" "$tree" > "$snap/names"
    g diff $opts --numstat "$base" "$tree" > "$snap/counts"
    paste "$snap/names" "$snap/counts" | awk -F'\t' -v p="$p" '{ s = ($3 == "-") ? "B" : substr($1, 1, 1); print s "\t" p $2 }' >> "$snap/changes"
    awk -F'\t' '$1 != "-" { print $1, $2 }' "$snap/counts" >> "$snap/sums"
    g diff $opts --src-prefix="a/$p" --dst-prefix="b/$p" "$base" "$tree" >> "$snap/diff"
  fi
  echo "$tree" > "$GIT_DIR/ohrun-base"
done < "$snap/roots"
[ "$mode" = init ] && exit 0
sed 's/^/C /' "$snap/changes"
touch "$snap/sums"; awk '{ i += $1; d += $2 } END { print "N", i + 0, d + 0 }' "$snap/sums"; rm -f "$snap/sums"
echo "@@ohrun-diff"
head -c MAX "$snap/diff"
"#;

/// The snapshots of one attempt's working directory.
pub struct Snapshots<'a> {
    client: &'a AgentClient,
    working_dir: String,
    /// In the sandbox, outside the working directory.
    snap_dir: String,
    /// The attempt's directory, where `steps/` goes.
    attempt_dir: PathBuf,
}

impl<'a> Snapshots<'a> {
    /// Takes the base snapshot (before setup). None when it could not be taken; why is logged, and the
    /// run goes on without diffs.
    pub async fn start(
        client: &'a AgentClient,
        working_dir: &str,
        run_id: &str,
        attempt_dir: &Path,
        cancel: &mut Cancel,
    ) -> Result<Snapshots<'a>, String> {
        let name: String =
            run_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let snapshots = Snapshots {
            client,
            working_dir: working_dir.to_string(),
            snap_dir: format!("/tmp/ohrun-snap-{name}-{}", fastrand::u32(..)),
            attempt_dir: attempt_dir.to_path_buf(),
        };
        snapshots.script("init", cancel).await?;
        Ok(snapshots)
    }

    /// What changed since the last snapshot, into `steps/NAME.diff` (NAME: `setup`, or a step's number).
    pub async fn take(&self, name: &str, cancel: &mut Cancel) -> DiffInfo {
        let output = match self.script("diff", cancel).await {
            Ok(output) => output,
            Err(e) => return DiffInfo { error: Some(e), ..DiffInfo::default() },
        };
        let (mut info, diff) = parse(&output);
        if !diff.is_empty() {
            let file = format!("steps/{name}.diff");
            match self.write(&file, diff) {
                Ok(()) => info.file = Some(file),
                Err(e) => info.error = Some(format!("cannot write {file}: {e}")),
            }
        }
        info
    }

    /// Removes the snapshots from the sandbox (best effort: a sandbox that is going away takes them along).
    pub async fn remove(self, cancel: &mut Cancel) {
        let command = format!("rm -rf {}", shell_quote(&self.snap_dir));
        let _ = run_command(self.client, &command, "/", Duration::from_secs(30), cancel).await;
    }

    async fn script(&self, mode: &str, cancel: &mut Cancel) -> Result<String, String> {
        let script = SCRIPT.replace("MAX", &(MAX_DIFF_BYTES + 1).to_string());
        let command = format!(
            "sh -c {} ohrun-diff {} {} {mode}",
            shell_quote(&script),
            shell_quote(&self.snap_dir),
            shell_quote(&self.working_dir)
        );
        match run_command(self.client, &command, "/", SNAPSHOT_TIMEOUT, cancel).await {
            Ok(out) if out.exit_code == 0 => Ok(out.stdout),
            Ok(out) => {
                let why = out.stderr.lines().last().unwrap_or("").trim().to_string();
                Err(format!(
                    "the snapshot failed (exit {}){}",
                    out.exit_code,
                    if why.is_empty() { why } else { format!(": {why}") }
                ))
            }
            Err((_, e)) => Err(format!("the snapshot failed: {e}")),
        }
    }

    fn write(&self, file: &str, diff: &str) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.attempt_dir.join(file);
        if let Some(dir) = path.parent() {
            crate::report::writer::create_dir(dir)?;
        }
        let mut f = crate::report::writer::create_private(&path)?;
        f.write_all(crate::report::redact::apply(diff).as_bytes())
    }
}

/// The script's output: the changes and counts, and the diff text (cut at the cap).
fn parse(output: &str) -> (DiffInfo, &str) {
    let (head, diff) = match output.split_once("@@ohrun-diff\n") {
        Some((head, diff)) => (head, diff),
        None => (output, ""),
    };
    let mut info = DiffInfo::default();
    for line in head.lines() {
        if let Some(change) = line.strip_prefix("C ") {
            info.changes.push(change.replacen('\t', " ", 1));
        } else if let Some(counts) = line.strip_prefix("N ") {
            let mut n = counts.split(' ').map(|x| x.parse::<u64>().unwrap_or(0));
            (info.insertions, info.deletions) = (n.next().unwrap_or(0), n.next().unwrap_or(0));
        }
    }
    let diff = if diff.len() > MAX_DIFF_BYTES {
        info.truncated = true;
        let mut end = MAX_DIFF_BYTES;
        while !diff.is_char_boundary(end) {
            end -= 1;
        }
        &diff[..end]
    } else {
        diff
    };
    (info, diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_output_becomes_changes_counts_and_the_diff() {
        let out = "C M\tREADME.md\nC A\trepo/new.txt\nC B\tlogo.png\nN 3 1\n@@ohrun-diff\ndiff --git a/README.md b/README.md\n+x\n";
        let (info, diff) = parse(out);
        assert_eq!(info.changes, ["M README.md", "A repo/new.txt", "B logo.png"]);
        assert_eq!((info.insertions, info.deletions, info.truncated), (3, 1, false));
        assert_eq!(diff, "diff --git a/README.md b/README.md\n+x\n");
    }

    #[test]
    fn a_diff_over_the_cap_is_cut_on_a_character_boundary() {
        let out = format!("N 1 0\n@@ohrun-diff\n{}", "é".repeat(MAX_DIFF_BYTES));
        let (info, diff) = parse(&out);
        assert!(info.truncated);
        assert!(diff.len() <= MAX_DIFF_BYTES && diff.len() >= MAX_DIFF_BYTES - 1);
    }
}
