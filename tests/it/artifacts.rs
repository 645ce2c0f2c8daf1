//! `artifacts:` end to end: globs (`**`, dotfiles, `when`) collected from the sandbox with one archive
//! before release, into `attempt-N/artifacts/`, each listed with its size and sha256 (checked against
//! the sandbox's own file); the size cap skips and names; a failed run's artifacts are there too.

use crate::server::shared;
use crate::support::*;
use sha2::{Digest, Sha256};
use std::path::Path;

const SCRIPT: &str = "replies:\n  - tool: finish\n    args: {message: done}\n";

/// Setup leaves text, a dotfile, a binary file, a log, a file over the cap; `fail` then fails setup.
fn job_text(name: &str, sandbox: &str, fail: bool, extra: &str) -> String {
    format!(
        "name: {name}\nsandbox: {sandbox}\nllm: {{model: m}}\nsetup:\n\
         \x20 - mkdir -p dist/sub logs && echo built > dist/a.txt && echo KEY=1 > dist/.env && printf 'b\\000\\001\\377' > dist/sub/b.bin && echo ran > logs/run.log && echo fine > ok.txt && head -c 5000 /dev/zero > big.dat{}\n\
         artifacts:\n  - 'dist/**'\n  - {{path: 'logs/*.log', when: on_failure}}\n  - {{path: ok.txt, when: on_success}}\n  - big.dat\n\
         artifacts_max: 2KB\nsteps:\n  - message: Go.\nrehearsal: script.yaml\n{extra}",
        if fail { " && false" } else { "" }
    )
}

fn run(
    dir: &Path,
    name: &str,
    sandbox: &str,
    fail: bool,
    extra: &str,
    env: &[(&str, &str)],
) -> (Result, serde_json::Value) {
    std::fs::write(dir.join("script.yaml"), SCRIPT).unwrap();
    let job = write_job(dir, &format!("{name}.yaml"), &job_text(name, sandbox, fail, extra));
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
    let (out, report) = run(dir.path(), "arts", "{kind: local}", false, "", &[]);
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
    let (out, report) = run(dir.path(), "failing", &sandbox, true, "", &[("K", &server.key)]);
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

/// On the Cloud and the Runtime API (emulated; their sandboxes are real agent-servers), with the working
/// directory cloned from the test git server first (`repo:` on every kind).
#[test]
fn artifacts_and_the_repo_on_the_cloud_and_runtime_apis() {
    use crate::emulators::{Api, Emulator, Faults};
    let git = crate::git_server::GitServer::start();
    let base = git.init_repo("svc", &[("README.md", "service\n")]);
    for (api, kind, extra) in [
        (Api::Cloud, "cloud", ""),
        (Api::Runtime, "runtime", ", image: 'ghcr.io/openhands/agent-server:1.58.2-python'"),
    ] {
        let key = format!("planted-{kind}-key-5e4d3c2b1a");
        let emu = Emulator::start(api, &key, Faults::default());
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let sandbox = format!(
            "{{kind: {kind}, api_url: '{}', api_key: '${{K}}', working_dir: '{}'{extra}}}",
            emu.url,
            ws.display()
        );
        let repo = format!("repo: {{url: '{}'}}\n", git.url("svc"));
        let state = dir.path().join("state");
        let env = [("K", key.as_str()), ("OHRUN_STATE_DIR", state.to_str().unwrap())];
        let (out, report) = run(dir.path(), kind, &sandbox, false, &repo, &env);
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert_eq!(report["repo"]["base_commit"], base, "{kind}");
        assert_eq!(std::fs::read_to_string(ws.join("README.md")).unwrap(), "service\n");
        let attempt = dir.path().join(format!("ohrun-reports/{kind}/{kind}/attempt-1"));
        let expected = [("dist/.env", true), ("dist/a.txt", true), ("dist/sub/b.bin", false), ("ok.txt", true)];
        assert_listed(&report, &attempt, &ws, &expected);
        assert_eq!(report["artifacts"]["skipped"][0]["path"], "big.dat", "{kind}");
    }
}

/// A text artifact holding a secret is caught by the leak scan (the run fails, naming the file); with
/// the same secret in a binary artifact the run passes and lists it as not scanned.
#[test]
fn a_secret_in_a_text_artifact_fails_the_run_and_a_binary_one_is_listed_unscanned() {
    agent_server_command();
    let secret = "planted-artifact-secret-8f7e6d";
    for (name, write, code) in
        [("leaky", "printf '%s\\n' \"$S\" > out.txt", 1), ("binary", "printf '\\000%s' \"$S\" > out.txt", 0)]
    {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("script.yaml"), SCRIPT).unwrap();
        let job = write_job(
            dir.path(),
            "job.yaml",
            &format!(
                "name: {name}\nsandbox: {{kind: local}}\nllm: {{model: m}}\nsetup:\n  - run: {write}\n    env: {{S: '${{S}}'}}\n\
                 artifacts: [out.txt]\nsteps:\n  - message: Go.\nrehearsal: script.yaml\n"
            ),
        );
        let out =
            Ohrun::new().current_dir(dir.path()).env("S", secret).args(["run", "--rehearse"]).args([&job]).output();
        assert_eq!(out.code, code, "{name}: {}", out.stderr);
        let report = read_report(&dir.path().join(format!("ohrun-reports/{name}/{name}")));
        let file = &report["artifacts"]["files"][0];
        assert_eq!(file["path"], "out.txt");
        assert_eq!(file["scanned"], code == 1, "{name}");
        if code == 1 {
            let leaks = report["outcome"]["leaks"].to_string();
            assert!(leaks.contains("artifacts/out.txt"), "{leaks}");
        }
    }
}

/// In a container: the repository cloned on the host and shipped in, the artifacts collected out.
#[test]
fn artifacts_and_the_repo_in_a_docker_container() {
    if !crate::docker::engine_ready() {
        return;
    }
    let git = crate::git_server::GitServer::start();
    let base = git.init_repo("svc", &[("README.md", "service\n")]);
    let dir = tempfile::tempdir().unwrap();
    // The container's workspace is a host directory, so the test can compare the collected files.
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::set_permissions(&ws, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let sandbox = format!("{{kind: docker, mounts: [{{host: '{}', container: /workspace}}]}}", ws.display());
    let repo = format!("repo: {{url: '{}'}}\n", git.url("svc"));
    let (out, report) = run(dir.path(), "indocker", &sandbox, false, &repo, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(report["repo"]["base_commit"], base);
    assert_eq!(report["final_patch"]["base_commit"], base, "{:#}", report["final_patch"]);
    assert_eq!(std::fs::read_to_string(ws.join("README.md")).unwrap(), "service\n");
    let attempt = dir.path().join("ohrun-reports/indocker/indocker/attempt-1");
    let expected = [("dist/.env", true), ("dist/a.txt", true), ("dist/sub/b.bin", false), ("ok.txt", true)];
    assert_listed(&report, &attempt, &ws, &expected);
}
