//! `artifacts:` end to end: globs (`**`, dotfiles, `when`) collected from the sandbox with one archive
//! before release, into `attempt-N/artifacts/`, each listed with its size and sha256 (checked against
//! the sandbox's own file); the size cap skips and names; a failed run's artifacts are there too.

use crate::server::shared;
use crate::support::*;
use sha2::{Digest, Sha256};
use std::path::Path;

const SCRIPT: &str = "replies:\n  - tool: finish\n    args: {message: done}\n";

/// Setup leaves text, a dotfile, a binary file, a log, a file over the cap; `fail` then fails setup.
fn job_text(name: &str, sandbox: &str, fail: bool) -> String {
    format!(
        "name: {name}\nsandbox: {sandbox}\nllm: {{model: m}}\nsetup:\n\
         \x20 - mkdir -p dist/sub logs && echo built > dist/a.txt && echo KEY=1 > dist/.env && printf 'b\\000\\001\\377' > dist/sub/b.bin && echo ran > logs/run.log && echo fine > ok.txt && head -c 5000 /dev/zero > big.dat{}\n\
         artifacts:\n  - 'dist/**'\n  - {{path: 'logs/*.log', when: on_failure}}\n  - {{path: ok.txt, when: on_success}}\n  - big.dat\n\
         artifacts_max: 2KB\nsteps:\n  - message: Go.\nrehearsal: script.yaml\n",
        if fail { " && false" } else { "" }
    )
}

fn run(dir: &Path, name: &str, sandbox: &str, fail: bool, env: &[(&str, &str)]) -> (Result, serde_json::Value) {
    std::fs::write(dir.join("script.yaml"), SCRIPT).unwrap();
    let job = write_job(dir, &format!("{name}.yaml"), &job_text(name, sandbox, fail));
    let mut cmd = Ohrun::new().current_dir(dir).args(["run", "--rehearse"]).args([&job]);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = cmd.output();
    let report = read_report(&dir.join(format!("ohrun-reports/{name}/{name}")));
    check_schema(&report, "report", "run.json");
    (out, report)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Each listed file is in `artifacts/` with the sandbox file's bytes (`wd`), size and sha256.
fn assert_listed(report: &serde_json::Value, attempt: &Path, wd: &Path, expected: &[(&str, bool)]) {
    let files = report["artifacts"]["files"].as_array().unwrap_or_else(|| panic!("{:#}", report["artifacts"]));
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    let want: Vec<&str> = expected.iter().map(|(p, _)| *p).collect();
    assert_eq!(paths, want, "{:#}", report["artifacts"]);
    for (f, (path, text)) in files.iter().zip(expected) {
        let original = std::fs::read(wd.join(path)).unwrap();
        let collected = std::fs::read(attempt.join("artifacts").join(path)).unwrap();
        assert_eq!(collected, original, "{path}");
        assert_eq!(f["sha256"], sha256(&original), "{path}");
        assert_eq!(f["size"], original.len(), "{path}");
        assert_eq!(f["scanned"], *text, "{path}");
    }
}

#[test]
fn globs_are_collected_with_sizes_and_hashes_and_the_cap_skips_and_names() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = run(dir.path(), "arts", "{kind: local}", false, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let wd = Path::new(report["sandbox"]["working_dir"].as_str().unwrap());
    let attempt = dir.path().join("ohrun-reports/arts/arts/attempt-1");
    // `**` crosses directories and matches the dotfile; on_failure's log is left; ok.txt (on_success) taken.
    assert_listed(
        &report,
        &attempt,
        wd,
        &[("dist/.env", true), ("dist/a.txt", true), ("dist/sub/b.bin", false), ("ok.txt", true)],
    );
    assert!(!attempt.join("artifacts/logs").exists());
    let skipped = report["artifacts"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["path"], "big.dat");
    assert_eq!(skipped[0]["size"], 5000);
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("big.dat (5000 bytes)"), "{warnings}");
    assert!(out.stderr.contains("big.dat"), "{}", out.stderr);
}

#[test]
fn a_failed_runs_artifacts_are_collected_from_a_remote_server() {
    let server = shared();
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let sandbox =
        format!("{{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}", server.url, ws.display());
    let (out, report) = run(dir.path(), "failing", &sandbox, true, &[("K", &server.key)]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(report["outcome"]["class"], "failed");
    let attempt = dir.path().join("ohrun-reports/failing/failing/attempt-1");
    assert_listed(
        &report,
        &attempt,
        &ws,
        &[("dist/.env", true), ("dist/a.txt", true), ("dist/sub/b.bin", false), ("logs/run.log", true)],
    );
}
