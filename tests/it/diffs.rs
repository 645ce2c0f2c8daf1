//! Workspace diffs per phase (`report.diffs`), end to end on the shared real agent-server: what setup and
//! each step changed, in `steps/*.diff` and the report — in a git repository (its index untouched), in
//! a repository cloned into a subdirectory (a fresh clone is no change), and in a plain directory (nothing
//! written into a `.git`); off with `report.diffs: false`.

use crate::server::shared;
use crate::support::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Step 1 edits a tracked file, adds a text file and a binary one; step 2 deletes the text file and
/// edits a file of the repository cloned into `repo/`.
const SCRIPT: &str = r#"replies:
  - tool: terminal
    args: {command: 'echo ''added by step 1'' >> notes.txt && printf ''new\n'' > new.txt && printf ''\000\001'' > blob.bin'}
  - tool: finish
    args: {message: step 1 done}
  - tool: terminal
    args: {command: 'rm new.txt && echo ''edited in the clone'' >> repo/README'}
  - tool: finish
    args: {message: step 2 done}
"#;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A bare repository with one commit (README), for setup to clone.
fn origin(dir: &Path) -> PathBuf {
    let src = dir.join("origin-src");
    std::fs::create_dir_all(&src).unwrap();
    git(&src, &["init", "-q"]);
    std::fs::write(src.join("README"), "origin\n").unwrap();
    git(&src, &["add", "README"]);
    git(&src, &["commit", "-qm", "one"]);
    let bare = dir.join("origin.git");
    git(dir, &["clone", "-q", "--bare", src.to_str().unwrap(), bare.to_str().unwrap()]);
    bare
}

/// A job on the shared server in `dir/ws`, whose setup makes `ws` a repository with `notes.txt`
/// committed (when `repo`) and clones `origin` into `ws/repo`.
fn job(dir: &Path, name: &str, repo: bool, extra: &str) -> PathBuf {
    std::fs::write(dir.join("script.yaml"), SCRIPT).unwrap();
    let origin = origin(dir);
    let init = if repo {
        "git init -q && git add notes.txt && git -c user.name=t -c user.email=t@t commit -qm base && "
    } else {
        ""
    };
    let text = format!(
        "name: {name}\nsandbox:\n  kind: remote\n  url: {}\n  session_key: ${{SHARED_SESSION_KEY}}\n  working_dir: {}/ws\n\
         llm: {{model: m}}\nsetup:\n  - \"echo base > notes.txt && {init}git clone -q {} repo\"\n\
         steps:\n  - message: One.\n  - message: Two.\nrehearsal: script.yaml\n{extra}",
        shared().url,
        dir.display(),
        origin.display()
    );
    write_job(dir, "job.yaml", &text)
}

fn run(dir: &Path, job: &Path) -> Value {
    let out = Ohrun::new()
        .current_dir(dir)
        .env("SHARED_SESSION_KEY", &shared().key)
        .args(["run", "--rehearse"])
        .args([job])
        .output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let name = job_name(job);
    read_report(&dir.join(format!("ohrun-reports/{name}/{name}")))
}

fn job_name(job: &Path) -> String {
    let text = std::fs::read_to_string(job).unwrap();
    text.lines().next().unwrap().trim_start_matches("name: ").to_string()
}

fn diff_text(dir: &Path, report: &Value, info: &Value) -> String {
    let name = job_name(&dir.join("job.yaml"));
    let attempt = dir.join(format!("ohrun-reports/{name}/{name}/attempt-{}", report["run"]["attempt"]));
    std::fs::read_to_string(attempt.join(info["file"].as_str().unwrap())).unwrap()
}

/// What both kinds of working directory must show.
fn assert_step_diffs(dir: &Path, report: &Value) {
    let setup = &report["setup_diff"];
    assert_eq!(setup["error"], Value::Null, "{setup}");
    let step1 = &report["steps"][0]["diff"];
    assert_eq!(
        (&step1["changes"], &step1["insertions"], &step1["deletions"]),
        (&json!(["B blob.bin", "A new.txt", "M notes.txt"]), &json!(2), &json!(0)),
        "{step1}"
    );
    let text = diff_text(dir, report, step1);
    assert!(text.contains("+added by step 1\n") && text.contains("+++ b/new.txt\n"), "{text}");
    assert!(text.contains("Binary files /dev/null and b/blob.bin differ"), "{text}");
    let step2 = &report["steps"][1]["diff"];
    assert_eq!(
        (&step2["changes"], &step2["insertions"], &step2["deletions"]),
        (&json!(["D new.txt", "M repo/README"]), &json!(1), &json!(1)),
        "{step2}"
    );
    let text = diff_text(dir, report, step2);
    assert!(
        text.contains("--- a/repo/README\n+++ b/repo/README\n") && text.contains("+edited in the clone\n"),
        "{text}"
    );
}

#[test]
fn each_step_s_diff_in_a_git_repository_leaves_its_index_alone() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), "diffs-repo", true, "");
    let report = run(dir.path(), &job);
    // Setup made the repository and cloned another into it: its diff lists notes.txt, and nothing of
    // the fresh clone.
    assert_eq!(report["setup_diff"]["changes"], json!(["A notes.txt"]), "{}", report["setup_diff"]);
    assert_step_diffs(dir.path(), &report);
    // The repository's own index was not touched: its status still shows the agent's edit unstaged.
    let ws = dir.path().join("ws");
    assert_eq!(git(&ws, &["status", "--porcelain", "--", "notes.txt"]), " M notes.txt\n");
    assert_eq!(git(&ws, &["log", "--format=%s"]), "base\n", "no commit was made");
    assert_eq!(git(&ws.join("repo"), &["status", "--porcelain"]), " M README\n");
}

#[test]
fn each_step_s_diff_in_a_plain_directory_writes_nothing_into_its_git() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), "diffs-plain", false, "");
    let report = run(dir.path(), &job);
    assert_eq!(report["setup_diff"]["changes"], json!(["A notes.txt"]), "{}", report["setup_diff"]);
    assert_step_diffs(dir.path(), &report);
    // The agent-server itself runs `git init` in a working directory that is no repository when a
    // conversation starts (1.58.2, for its Changes tab); ohrun's snapshots never write to it.
    let ws = dir.path().join("ws");
    assert!(!ws.join(".git/index").exists(), "something staged files in the working directory's .git");
    assert!(std::fs::read_dir(ws.join(".git/objects/pack")).map_or(true, |d| d.count() == 0));
    let objects = walk_files(&ws.join(".git/objects"));
    assert_eq!(objects, Vec::<PathBuf>::new(), "objects were written into the working directory's .git");
    // The snapshots went with the run.
    let snaps = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ohrun-snap-diffs-plain"));
    assert_eq!(snaps.count(), 0, "the snapshot directory is left in /tmp");
}

#[test]
fn report_diffs_false_takes_none() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), "diffs-off", false, "report:\n  diffs: false\n");
    let report = run(dir.path(), &job);
    assert_eq!(report["setup_diff"], Value::Null);
    assert_eq!((&report["steps"][0]["diff"], &report["steps"][1]["diff"]), (&Value::Null, &Value::Null));
    assert!(!dir.path().join("ohrun-reports/diffs-off/diffs-off/attempt-1/steps").exists());
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().flat_map(|e| if e.path().is_dir() { walk_files(&e.path()) } else { vec![e.path()] }).collect()
}

/// A rehearsal script whose step N runs `commands[N - 1]` in the terminal, then finishes.
fn steps_running(commands: &[&str]) -> String {
    let mut script = String::from("replies:\n");
    for (i, command) in commands.iter().enumerate() {
        let step = i + 1;
        script += &format!("  - tool: terminal\n    args: {{command: '{command}'}}\n");
        script += &format!("  - tool: finish\n    args: {{message: step {step} done}}\n");
    }
    script
}

/// Step 1 adds a file and removes it again, step 2 only looks: neither changed anything, so their
/// snapshots are the base's tree and no diff runs; step 3's edit is still seen against step 2's.
const QUIET_STEPS: [&str; 3] = ["echo gone > tmp.txt && rm tmp.txt", "ls", "echo ''step 3'' >> notes.txt"];

#[test]
fn steps_that_change_nothing_have_empty_diffs_and_the_next_one_is_still_seen() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), "diffs-quiet", true, "");
    std::fs::write(dir.path().join("script.yaml"), steps_running(&QUIET_STEPS)).unwrap();
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "steps:\n  - message: One.\n  - message: Two.\n",
        "steps:\n  - message: One.\n  - message: Two.\n  - message: Three.\n",
    );
    std::fs::write(&job, text).unwrap();
    let report = run(dir.path(), &job);
    for i in 0..2 {
        let diff = &report["steps"][i]["diff"];
        assert_eq!(diff["changes"], json!([]), "step {}: {diff}", i + 1);
        assert_eq!((&diff["file"], &diff["error"], &diff["insertions"]), (&Value::Null, &Value::Null, &json!(0)));
    }
    let step3 = &report["steps"][2]["diff"];
    assert_eq!((&step3["changes"], &step3["insertions"]), (&json!(["M notes.txt"]), &json!(1)), "{step3}");
    assert!(diff_text(dir.path(), &report, step3).contains("+step 3\n"));
    // The final patch was made inside the snapshot directory and fetched before it went.
    let patch = &report["final_patch"];
    assert_eq!(patch["error"], Value::Null, "{patch}");
    let attempt = dir.path().join("ohrun-reports/diffs-quiet/diffs-quiet/attempt-1");
    let text = std::fs::read_to_string(attempt.join("final.patch")).unwrap();
    assert!(text.contains("+step 3\n") && !text.contains("tmp.txt"), "{text}");
}

/// The base snapshot's command makes the working directory too (one request less); when that directory
/// cannot be made, the run fails as a usage error that names it, whether the diffs are on or off.
#[test]
fn a_working_directory_that_cannot_be_made_fails_the_run_with_or_without_diffs() {
    for (name, extra) in [("wd-diffs-on", ""), ("wd-diffs-off", "report:\n  diffs: false\n")] {
        let dir = tempfile::tempdir().unwrap();
        let job = job(dir.path(), name, false, extra);
        std::fs::write(dir.path().join("ws"), "a file where the working directory should be\n").unwrap();
        let out = Ohrun::new()
            .current_dir(dir.path())
            .env("SHARED_SESSION_KEY", &shared().key)
            .args(["run", "--rehearse"])
            .args([&job])
            .output();
        assert_eq!(out.code, 2, "{name}: {}", out.stderr);
        let report = read_report(&dir.path().join(format!("ohrun-reports/{name}/{name}")));
        assert_eq!(report["outcome"]["class"], "usage_error", "{name}: {report}");
        let message = report["outcome"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("cannot make the working directory") && message.contains("/ws"), "{name}: {message}");
        assert!(out.stderr.contains("sandbox.working_dir"), "{name}: the hint names the field:\n{}", out.stderr);
        assert_eq!(report["setup"][0]["exit_code"], Value::Null, "{name}: setup ran: {report}");
    }
}

/// Step 2 writes a file too large for its patch to come back inline.
const LARGE_STEPS: [&str; 2] = ["echo small >> notes.txt", "seq 1 60000 > big.txt"];

/// The last step's snapshot command takes the final patch too; a small patch comes back in its output
/// and the same command removes the snapshots (no fetch, no `rm` request), a large one is fetched through
/// the file API and the snapshots removed after. Either way `final.patch` is whole, and nothing is left.
#[test]
fn a_small_final_patch_comes_back_with_the_last_snapshot_and_a_large_one_through_the_file_api() {
    for (name, script, large) in
        [("patch-inline", SCRIPT.to_string(), false), ("patch-fetched", steps_running(&LARGE_STEPS), true)]
    {
        let dir = tempfile::tempdir().unwrap();
        let proxy = crate::proxy::Proxy::start(shared().url.trim_start_matches("http://"));
        let job = job(dir.path(), name, true, "");
        std::fs::write(dir.path().join("script.yaml"), script).unwrap();
        let text = std::fs::read_to_string(&job).unwrap().replace(&shared().url, &proxy.url());
        std::fs::write(&job, text).unwrap();
        let report = run(dir.path(), &job);
        let patch = &report["final_patch"];
        assert_eq!((&patch["error"], &patch["file"]), (&Value::Null, &json!("final.patch")), "{name}: {patch}");
        let attempt = dir.path().join(format!("ohrun-reports/{name}/{name}/attempt-1"));
        let bytes = std::fs::read(attempt.join("final.patch")).unwrap();
        assert_eq!(patch["bytes"], json!(bytes.len()), "{name}: {patch}");
        let text = String::from_utf8_lossy(&bytes);
        let expected = if large { "+60000\n" } else { "+added by step 1\n" };
        assert!(text.contains(expected), "{name}: {text}");
        assert!(large || text.contains("GIT binary patch"), "{name}: the binary file is in the patch: {text}");
        let fetched = proxy.requests_matching("/api/file/download");
        let removals = proxy.traffic_containing("\\nrm -rf ");
        if large {
            assert!(bytes.len() > 256 * 1024, "{name}: {} bytes", bytes.len());
            assert_eq!((fetched.len(), removals.len()), (1, 1), "{name}: fetched {fetched:?}");
        } else {
            assert_eq!((fetched.len(), removals.len()), (0, 0), "{name}: fetched {fetched:?}, removed {removals:?}");
        }
        let snaps = std::fs::read_dir("/tmp")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("ohrun-snap-{name}")));
        assert_eq!(snaps.count(), 0, "{name}: the snapshot directory is left in /tmp");
    }
}
