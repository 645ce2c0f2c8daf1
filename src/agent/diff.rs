//! What each phase changed in the working directory (`report.diffs`): before setup, after setup and
//! after every step, a script run through the agent-server's bash endpoint snapshots the working
//! directory as git trees in a private git directory outside it (`ohrun-snap-RUN-N` in the sandbox's
//! `$TMPDIR`, else `/tmp`: a local server's temp dir is inside its private state directory, so a run that
//! dies leaves no copy of the workspace behind that outlives the server's own files), so the
//! workspace is never touched — no `.git` created, no index of the user's repository rewritten — and
//! diffs the new snapshot against the one before. Every git repository inside the working directory
//! (a clone in a subdirectory, say) is snapshotted on its own, starting from its HEAD, so its files are
//! seen one by one and a fresh clone shows as unchanged. The diff goes, redacted, into `steps/N.diff`
//! beside the attempt's run.json; the report gets the changed paths and counts.

use super::http::AgentClient;
use super::setup::{Output, in_temp_dir, run_command, shell_quote};
use crate::cancel::Cancel;
use crate::report::DiffInfo;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The most diff text kept per phase; the rest is cut (and the report says so).
const MAX_DIFF_BYTES: usize = 256 * 1024;
/// The most changed paths listed per phase (the count says how many there were).
const MAX_CHANGES: usize = 1000;
/// How long one snapshot may take (a large workspace is hashed once, then git's stat cache helps).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The largest final patch sent back inside the last step's snapshot output (base64: 4/3 of it) instead of
/// fetched through the file API afterwards; the diff beside it is at most `MAX_DIFF_BYTES`, and the server
/// splits output only past 1 MiB.
const MAX_INLINE_PATCH: usize = 256 * 1024;

/// The script's name in the snapshot directory.
const SCRIPT_FILE: &str = "snap.sh";

/// `$1`: the snapshot directory's name (in `$TMPDIR`, else `/tmp`), `$2`: the working directory, `$3`:
/// `init` (take the base snapshots) or `diff` (snapshot again, print what changed since the last one,
/// and keep the new one as the base), `$4`: how many bytes of the diff to print at most.
/// The script is written once, into the snapshot directory, by the command that takes the base
/// snapshots (`Snapshots::script`); each later snapshot runs it from there: a step boundary's request is
/// a line, not the script again (at 10,000 runs each copy in flight was ~20 KB of ohrun's memory per run,
/// and the server decoded it every time).
/// Output: `H <commit>` (the working directory's repository's HEAD, `-` for none), then, for `diff`,
/// `C <status>\t<path>` per change (`B` for a binary file; at most `MAX_CHANGES`), `T <changed
/// paths>`, `N <insertions> <deletions>`, `W <warning>` when some files could not be read, then
/// `@@ohrun-diff` and the unified diff (cut at `MAX_DIFF_BYTES` + 1). With the final patch folded in (run
/// before it, its output in `patch-*` files), `P <exit code>`, `PO`/`PE` lines of its output, `PB` lines of
/// a patch of at most `MAX_INLINE_PATCH` bytes in base64, and `R` when the snapshot directory was removed
/// (nothing left in it to fetch). Any other failure: exit 3 with the reason on stderr, and the bases stay
/// where they were.
const SCRIPT: &str = r#"set -u
umask 077
snap=${TMPDIR:-/tmp}/$1; wd=$2; mode=$3; max=$4
fail() { echo "$*" >&2; exit 3; }
command -v git >/dev/null 2>&1 || fail "git is not installed in the sandbox"
# -P: $PWD is then the physical path, compared below with the repository's top without a `pwd -P`.
cd -P "$wd" 2>/dev/null || fail "no working directory $wd"
[ -d "$snap" ] || mkdir -p "$snap" || fail "cannot create $snap"
empty=4b825dc642cb6eb9a060e54bf8d69288fbee4904
nl='
'
g() { git -c core.autocrlf=false -c core.safecrlf=false -c core.quotePath=false "$@"; }
# The repository's own git, not the snapshot's (its .git may be a file: a worktree, a submodule).
own() { (unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE; git -C "$wd/$root" "$@" 2>/dev/null); }
find . -name .git -prune -print 2>/dev/null | sed -n '/^\.\/\.git$/d; s|^\./||; s|/\.git$||p' | LC_ALL=C sort > "$snap/inner"
: > "$snap/changes"; : > "$snap/diff"; : > "$snap/sums"; : > "$snap/warnings"
# One root (`.`, or a repository inside it): snapshot it into its own git directory and, for `diff`,
# compare with its base in one `git diff` pass (raw, numstat and patch), split by one awk.
one() {
  root=$1
  if [ "$root" = . ]; then key=top; else key=r$(printf '%s' "$root" | cksum | cut -d' ' -f1); fi
  export GIT_DIR="$snap/$key" GIT_WORK_TREE="$wd/$root"
  if [ ! -d "$GIT_DIR" ]; then
    g init -q --template= >/dev/null 2>&1 || fail "git init failed in $snap"
    base=$empty
    # A repository reads its own objects; seen for the first time after the start, it starts from its
    # HEAD: a fresh clone is no change.
    if objects=$(own rev-parse --path-format=absolute --git-path objects) && [ -d "$objects" ]; then
      echo "$objects" > "$GIT_DIR/objects/info/alternates"
      head=$(own rev-parse -q --verify 'HEAD^{tree}') && base=$head
    fi
    [ "$mode" = diff ] && echo "$base" > "$GIT_DIR/ohrun-base"
  fi
  # The repositories inside this one are snapshotted on their own.
  set -- .
  while IFS= read -r inner; do
    case "$inner" in
      "$root"/*) set -- "$@" ":(exclude,top,literal)${inner#"$root"/}" ;;
      *) [ "$root" = . ] && set -- "$@" ":(exclude,top,literal)$inner" ;;
    esac
  done < "$snap/inner"
  # Files it cannot read are left out and named; the rest is snapshotted.
  g add -A --ignore-errors -- "$@" >/dev/null 2>> "$snap/warnings"
  tree=$(g write-tree) || fail "git write-tree failed in $root"
  echo "$tree" > "$GIT_DIR/ohrun-next"
  [ "$mode" = diff ] || return 0
  read -r base < "$GIT_DIR/ohrun-base" || fail "no base snapshot for $root"
  # Nothing changed: no diff to run.
  [ "$tree" = "$base" ] && return 0
  p=""; [ "$root" != . ] && p="$root/"
  g diff --no-color --no-ext-diff --no-renames --raw --numstat -p --src-prefix="a/$p" --dst-prefix="b/$p" \
    "$base" "$tree" > "$snap/out" || fail "git diff failed in $root"
  # Raw lines give the status, numstat lines (same order) the counts (`-` for a binary file), and after
  # the blank line comes the patch, cut at $max bytes (C locale: awk counts bytes).
  LC_ALL=C awk -F'\t' -v p="$p" -v dir="$snap" -v max="$max" '
    body { if (used < max) { n = length($0) + 1; if (used + n > max) printf "%s", substr($0 "\n", 1, max - used) >> (dir "/diff"); else print >> (dir "/diff"); used += n }; next }
    /^:/ { r++; s[r] = substr($1, length($1), 1); next }
    /^$/ { body = 1; next }
    { k++; st = ($1 == "-") ? "B" : s[k]; print st "\t" p $3 >> (dir "/changes"); if ($1 != "-") { i += $1; d += $2 } }
    END { print i + 0, d + 0 >> (dir "/sums") }' "$snap/out"
}
one .
while IFS= read -r r; do one "$r"; done < "$snap/inner"
# Only now, every root done, do the new snapshots become the bases.
for next in "$snap"/*/ohrun-next; do [ -f "$next" ] && read -r t < "$next" && echo "$t" > "${next%-next}-base"; done
# The commit the working directory's own repository is at (only one whose top it is), in the same
# command: the final patch is taken against it. rev-parse prints the top, then the commit if there is one.
unset GIT_DIR GIT_WORK_TREE
at=$(git rev-parse --show-toplevel -q --verify 'HEAD^{commit}' 2>/dev/null)
case "$at" in "$PWD$nl"*) echo "H ${at#"$PWD$nl"}" ;; *) echo "H -" ;; esac
[ "$mode" = init ] && exit 0
# The final patch, when it ran before this script in the same command: how it ended and what it printed,
# and a small one itself (base64, `PB` lines). Then nothing is left to fetch from the snapshot directory,
# and it goes at the end of this command (`drop`): one request less.
drop=
if [ -f "$snap/patch-rc" ]; then
  read -r rc < "$snap/patch-rc"; echo "P $rc"
  while IFS= read -r l; do echo "PO $l"; done < "$snap/patch-out"
  while IFS= read -r l; do echo "PE $l"; done < "$snap/patch-err"
  drop=1
  if [ "$rc" = 0 ]; then
    patch=$snap/patch/final.patch
    if [ "$(($(wc -c < "$patch")))" -le INLINEMAX ] && command -v base64 >/dev/null 2>&1 && b=$(base64 < "$patch"); then
      printf '%s\n' "$b" | sed 's/^/PB /'
    else
      drop=
    fi
  fi
fi
if [ -s "$snap/changes" ]; then
  awk -v max=MAXCHANGES 'FNR == NR { n++; if (n <= max) print "C " $0; next } { i += $1; d += $2 } END { print "T", n + 0; print "N", i + 0, d + 0 }' "$snap/changes" "$snap/sums"
else
  echo "T 0"; echo "N 0 0"
fi
[ -s "$snap/warnings" ] && awk 'n < 3 && tolower($0) ~ /error|warning|fatal/ { n++; print "W " $0 }' "$snap/warnings"
# The diff is read through a descriptor opened before the directory goes (`R`: it went).
exec 3< "$snap/diff"
has=; [ -s "$snap/diff" ] && has=1
[ -n "$drop" ] && rm -rf "$snap" && echo R
echo "@@ohrun-diff"
[ -n "$has" ] && head -c "$max" <&3
exit 0
"#;

/// The snapshots of one attempt's working directory.
pub struct Snapshots<'a> {
    client: &'a AgentClient,
    working_dir: String,
    /// Its name in the sandbox's temp dir, outside the working directory.
    snap_name: String,
    /// The attempt's directory, where `steps/` goes.
    attempt_dir: PathBuf,
    /// Set once the final patch's base is known: the last step's snapshot command takes the final patch
    /// too (the same tree, one command less).
    fold: Mutex<Option<Option<String>>>,
    /// How the folded final patch's script ended, until the run takes it.
    folded: Mutex<Option<Folded>>,
    /// Set by the first `remove`: the run removes them as soon as it is done with them (beside deleting
    /// the conversation), and again, for nothing, on the way out of every other path.
    removed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<'a> Snapshots<'a> {
    /// Takes the base snapshot (before setup). None when it could not be taken; why is logged, and the
    /// run goes on without diffs. `make_working_dir`: the same command makes the working directory first
    /// (one request less; when it fails, the caller cannot tell which of the two did, and asks again).
    pub async fn start(
        client: &'a AgentClient,
        (working_dir, make_working_dir): (&str, bool),
        run_id: &str,
        attempt_dir: &Path,
        deadline: Option<Instant>,
        cancel: &mut Cancel,
    ) -> Result<(Snapshots<'a>, Option<String>), String> {
        let name: String =
            run_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let snapshots = Snapshots {
            client,
            working_dir: working_dir.to_string(),
            snap_name: format!("ohrun-snap-{name}-{}", fastrand::u32(..)),
            attempt_dir: attempt_dir.to_path_buf(),
            fold: Mutex::new(None),
            folded: Mutex::new(None),
            removed: AtomicBool::new(false),
        };
        let mkdir = make_working_dir.then(|| format!("mkdir -p {} && ", shell_quote(working_dir)));
        match snapshots.script("init", mkdir.as_deref(), deadline, cancel).await {
            Ok(output) => {
                let head = head_of(&output).flatten();
                Ok((snapshots, head))
            }
            Err(e) => {
                snapshots.remove().await;
                Err(e)
            }
        }
    }

    /// The last step's snapshot takes the final patch against `base` too (`patch::command`).
    pub fn fold_patch(&self, base: Option<String>) {
        *lock(&self.fold) = Some(base);
    }

    /// How the final patch's script ended when the last step's snapshot took it (once).
    pub fn folded_patch(&self) -> Option<Folded> {
        lock(&self.folded).take()
    }

    /// What changed since the last snapshot, into `steps/NAME.diff` (NAME: `setup`, or a step's number);
    /// `last`: the last step, whose command also takes the final patch when `fold_patch` was called.
    pub async fn take(&self, name: &str, last: bool, deadline: Option<Instant>, cancel: &mut Cancel) -> DiffInfo {
        self.take_with_head(name, last, deadline, cancel).await.0
    }

    /// `take`, and the commit the working directory's repository is at now (`Some(None)`: it has none;
    /// None: the snapshot failed, so it is not known).
    pub async fn take_with_head(
        &self,
        name: &str,
        last: bool,
        deadline: Option<Instant>,
        cancel: &mut Cancel,
    ) -> (DiffInfo, Option<Option<String>>) {
        let base = if last { lock(&self.fold).clone() } else { None };
        // The patch goes first, its output into files the snapshot script prints (`P` lines).
        let prefix = base.map(|base| {
            let at = format!("{}/patch", in_temp_dir(&self.snap_name));
            let command = super::patch::command(&self.working_dir, base.as_deref(), Some(&self.snap_name));
            format!("{command} > {at}-out 2> {at}-err; echo $? > {at}-rc; ")
        });
        let output = match self.script("diff", prefix.as_deref(), deadline, cancel).await {
            Ok(output) => output,
            Err(e) => return (DiffInfo { error: Some(e), ..DiffInfo::default() }, None),
        };
        if prefix.is_some() {
            let folded = folded_of(&output);
            if folded.as_ref().is_some_and(|f| f.removed) {
                self.removed.store(true, Ordering::Relaxed);
            }
            *lock(&self.folded) = folded;
        }
        let head = head_of(&output);
        let (mut info, diff) = parse(&output);
        // Redacted before it is cut, never cutting a secret: the script sent enough past the cap for that.
        let (diff, cut) = crate::report::redact::head(diff, MAX_DIFF_BYTES);
        info.truncated |= cut;
        if !diff.is_empty() {
            let file = format!("steps/{name}.diff");
            match self.write(&file, &diff) {
                Ok(()) => info.file = Some(file),
                Err(e) => info.error = Some(format!("cannot write {file}: {e}")),
            }
        }
        (info, head)
    }

    /// The snapshot directory's name in the sandbox's temp dir (the final patch is made in it).
    pub fn dir_name(&self) -> &str {
        &self.snap_name
    }

    /// Removes the snapshots from the sandbox — also when ohrun is stopping: they are a copy of the
    /// workspace (a sandbox that is going away takes them along anyway). Once: later calls do nothing.
    pub async fn remove(&self) {
        if self.removed.swap(true, Ordering::Relaxed) {
            return;
        }
        let command = format!("rm -rf {}", in_temp_dir(&self.snap_name));
        let _ = run_command(self.client, &command, "/", Duration::from_secs(10), &mut Cancel::never()).await;
    }

    /// Runs the script, within the run's time (`deadline`) and at most `SNAPSHOT_TIMEOUT`.
    /// `prefix`: a command run before it in the same request (the working directory's `mkdir` before
    /// the base snapshot; the folded final patch: twice the time).
    async fn script(
        &self,
        mode: &str,
        prefix: Option<&str>,
        deadline: Option<Instant>,
        cancel: &mut Cancel,
    ) -> Result<String, String> {
        let most = if prefix.is_some() && mode != "init" { SNAPSHOT_TIMEOUT * 2 } else { SNAPSHOT_TIMEOUT };
        let left = deadline.map_or(most, |d| d.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return Err("the run's time was up".into());
        }
        // Past the cap by the longest secret form, so that one across the cap is masked whole, not cut.
        let max = MAX_DIFF_BYTES + crate::report::redact::longest() + 1;
        let (name, wd, dir) =
            (shell_quote(&self.snap_name), shell_quote(&self.working_dir), in_temp_dir(&self.snap_name));
        let run = format!("sh {dir}/{SCRIPT_FILE} {name} {wd} {mode} {max}");
        let body = if mode == "init" {
            // The directory is made here, not found: one someone else made first is not ours to run from.
            // The final patch's script goes beside it (`patch::command`).
            let script = SCRIPT.replace("MAXCHANGES", &MAX_CHANGES.to_string());
            let script = shell_quote(&script.replace("INLINEMAX", &MAX_INLINE_PATCH.to_string()));
            let (patch, patch_file) = (shell_quote(super::patch::SCRIPT), super::patch::SCRIPT_FILE);
            format!(
                "(d={dir}; if (umask 077 && mkdir \"$d\" && printf '%s' {script} > \"$d/{SCRIPT_FILE}\" \
                 && printf '%s' {patch} > \"$d/{patch_file}\"); then {run}; else echo \"cannot create $d\" >&2; false; fi)"
            )
        } else {
            run
        };
        let command = format!("{}{body}", prefix.unwrap_or(""));
        match run_command(self.client, &command, "/", left.min(most), cancel).await {
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
        f.write_all(diff.as_bytes()) // redacted by the caller
    }
}

/// The `H` line of the script's output: `Some(None)` when the working directory is no repository's top
/// or has no commit, None when the line is missing.
fn head_of(output: &str) -> Option<Option<String>> {
    let line = output.lines().take_while(|l| *l != "@@ohrun-diff").find_map(|l| l.strip_prefix("H "))?;
    let commit = line.trim();
    Some((commit.len() >= 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())).then(|| commit.to_string()))
}

/// The final patch, taken in the last step's snapshot command.
pub struct Folded {
    /// How its script ended and what it printed.
    pub out: Output,
    /// The patch itself, when it was small enough to come back inline.
    pub inline: Option<Vec<u8>>,
    /// The snapshot directory is gone with this command (nothing in it was left to fetch).
    pub removed: bool,
}

/// The `P`, `PB` and `R` lines of the script's output: the final patch, when it ran before it.
fn folded_of(output: &str) -> Option<Folded> {
    use base64::Engine;
    let (mut out, mut inline, mut removed, mut seen) = (Output::default(), None::<String>, false, false);
    for line in output.lines().take_while(|l| *l != "@@ohrun-diff") {
        if let Some(rc) = line.strip_prefix("P ") {
            (out.exit_code, seen) = (rc.trim().parse().unwrap_or(-1), true);
        } else if let Some(l) = line.strip_prefix("PO ") {
            out.stdout.push_str(l);
            out.stdout.push('\n');
        } else if let Some(l) = line.strip_prefix("PE ") {
            out.stderr.push_str(l);
            out.stderr.push('\n');
        } else if let Some(l) = line.strip_prefix("PB ").or((line == "PB").then_some("")) {
            inline.get_or_insert_with(String::new).push_str(l.trim());
        } else if line == "R" {
            removed = true;
        }
    }
    // Undecodable: fetched instead (when it is still there).
    let inline = inline.and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    seen.then_some(Folded { out, inline, removed })
}

/// The script's output: the changes and counts, and the diff text (as sent: cut to the cap once redacted).
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
        } else if let Some(total) = line.strip_prefix("T ") {
            info.paths = total.trim().parse().unwrap_or(0);
        } else if let Some(warning) = line.strip_prefix("W ") {
            let why = info.error.get_or_insert_with(|| "some files could not be read (left out):".into());
            why.push(' ');
            why.push_str(warning.trim());
        }
    }
    info.truncated = info.paths > info.changes.len() as u64;
    (info, diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_output_becomes_changes_counts_and_the_diff() {
        let out = "C M\tREADME.md\nC A\trepo/new.txt\nC B\tlogo.png\nT 3\nN 3 1\nW warning: could not open directory 'x/'\n@@ohrun-diff\ndiff --git a/README.md b/README.md\n+x\n";
        let (info, diff) = parse(out);
        assert_eq!(info.changes, ["M README.md", "A repo/new.txt", "B logo.png"]);
        assert_eq!((info.paths, info.insertions, info.deletions, info.truncated), (3, 3, 1, false));
        assert_eq!(
            info.error.as_deref(),
            Some("some files could not be read (left out): warning: could not open directory 'x/'")
        );
        assert_eq!(diff, "diff --git a/README.md b/README.md\n+x\n");
    }

    #[test]
    fn the_head_line_gives_the_commit_or_none() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(head_of(&format!("H {commit}\nT 0\n@@ohrun-diff\n")), Some(Some(commit.to_string())));
        assert_eq!(head_of("H -\nT 0\n@@ohrun-diff\nH 0123\n"), Some(None));
        assert_eq!(head_of("T 0\n@@ohrun-diff\nH 0123456789abcdef0123456789abcdef01234567\n"), None);
    }

    #[test]
    fn the_folded_patch_is_read_from_the_p_lines_of_the_header_only() {
        let out = "H -\nP 0\nPO /tmp/s/patch\nPO abc\nPE careful\nT 0\n@@ohrun-diff\nP 3\nPO not mine\n";
        let folded = folded_of(out).unwrap();
        assert_eq!((folded.out.exit_code, folded.out.stdout.as_str()), (0, "/tmp/s/patch\nabc\n"));
        assert_eq!(folded.out.stderr, "careful\n");
        assert_eq!((folded.inline, folded.removed), (None, false));
        assert!(folded_of("H -\nT 0\n@@ohrun-diff\nP 0\n").is_none(), "no patch ran before it");
        let small = "H -\nP 0\nPO x\nPB aGVs\nPB bG8K\nR\nT 0\n@@ohrun-diff\nR\n";
        let folded = folded_of(small).unwrap();
        assert_eq!((folded.inline.as_deref(), folded.removed), (Some(&b"hello\n"[..]), true));
        let empty = folded_of("P 0\nPB \nR\n@@ohrun-diff\n").unwrap();
        assert_eq!(empty.inline.as_deref(), Some(&b""[..]), "an empty patch is still inline");
    }

    #[test]
    fn a_diff_over_the_cap_is_cut_on_a_character_boundary() {
        let out = format!("N 1 0\n@@ohrun-diff\n{}", "é".repeat(MAX_DIFF_BYTES));
        let (_, diff) = parse(&out);
        let (diff, cut) = crate::report::redact::head(diff, MAX_DIFF_BYTES);
        assert!(cut);
        assert!(diff.len() <= MAX_DIFF_BYTES && diff.len() >= MAX_DIFF_BYTES - 1);
    }
}
