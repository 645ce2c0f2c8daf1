//! `repo:` end to end: repositories cloned by ohrun's own git from a local git server (`git
//! http-backend`, tests/it/git_server.rs) and shipped with their `.git` into the working directory before
//! setup; `ref` as a branch, a tag and a commit; a private repository whose token stays on ohrun's side;
//! a bad ref as a setup failure with git's message.

use crate::git_server::GitServer;
use crate::server::shared;
use crate::support::*;
use std::path::Path;

const SCRIPT: &str = "replies:\n  - tool: finish\n    args: {message: done}\n";
const TOKEN: &str = "ghp_repo_token_planted_4c3b2a1f";

/// Setup prints the commit the working directory is at and the file the repo holds.
const SETUP: &str = "setup:\n  - git log -1 --format=HEAD=%H && cat hello.txt\n";

fn run_job(dir: &Path, text: &str, env: &[(&str, &str)]) -> Result {
    std::fs::write(dir.join("script.yaml"), SCRIPT).unwrap();
    let job = write_job(dir, "job.yaml", text);
    let mut cmd = Ohrun::new().current_dir(dir).args(["run", "--rehearse"]).args([&job]);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.output()
}

fn assert_cloned(report: &serde_json::Value, base: &str, hello: &str) {
    check_schema(report, "report", "run.json");
    assert_eq!(report["outcome"]["class"], "succeeded", "{report:#}");
    assert_eq!(report["repo"]["base_commit"], base, "{:#}", report["repo"]);
    let out = report["setup"][0]["stdout"].as_str().unwrap();
    assert!(out.contains(&format!("HEAD={base}")), "{out}");
    assert!(out.contains(hello), "{out}");
    assert_eq!(report["final_patch"]["base_commit"], base, "{:#}", report["final_patch"]);
    if let Some(wd) = report["sandbox"]["working_dir"].as_str() {
        assert_eq!(std::fs::read_to_string(Path::new(wd).join("hello.txt")).unwrap(), hello);
    }
}

#[test]
fn a_matrix_clones_a_branch_a_tag_and_a_commit_into_local_working_dirs() {
    agent_server_command();
    let git = GitServer::start();
    let alpha = git.init_repo("alpha", &[("hello.txt", "alpha\n")]);
    let beta_v1 = git.init_repo("beta", &[("hello.txt", "beta one\n")]);
    git.tag("beta", "v1");
    assert_eq!(git.rev("beta", "v1"), beta_v1);
    git.commit("beta", &[("hello.txt", "beta two\n")], "second");
    let gamma_first = git.init_repo("gamma", &[("hello.txt", "gamma one\n")]);
    git.commit("gamma", &[("hello.txt", "gamma two\n")], "second");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "name: repos\nmatrix:\n  name: [alpha, beta, gamma]\n  include:\n    - {{name: alpha, ref: main}}\n    - {{name: beta, ref: v1}}\n    - {{name: gamma, ref: '{gamma_first}'}}\n\
         sandbox: {{kind: local}}\nllm: {{model: m}}\nrepo:\n  url: '{}/{{{{ name }}}}.git'\n  ref: '{{{{ ref }}}}'\n\
         {SETUP}steps:\n  - message: Look.\nrehearsal: script.yaml\n",
        git.url("").trim_end_matches("/.git")
    );
    let out = run_job(dir.path(), &text, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary = read_summary(&dir.path().join("ohrun-reports/repos"));
    let runs = summary["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for (name, base, hello) in
        [("alpha", &alpha, "alpha\n"), ("beta", &beta_v1, "beta one\n"), ("gamma", &gamma_first, "gamma one\n")]
    {
        let run = runs.iter().find(|r| r["id"].as_str().unwrap().contains(name)).expect(name);
        let report = read_report(&dir.path().join("ohrun-reports/repos").join(run["id"].as_str().unwrap()));
        assert_cloned(&report, base, hello);
        assert_eq!(report["repo"]["url"], git.url(name));
        // The shipped repository's remote is the URL as given, without credentials.
        let wd = Path::new(report["sandbox"]["working_dir"].as_str().unwrap());
        let config = std::fs::read_to_string(wd.join(".git/config")).unwrap();
        assert!(config.contains(&git.url(name)), "{config}");
    }
}

#[test]
fn a_private_repo_is_cloned_with_a_token_that_never_leaves_ohrun_on_a_remote_server() {
    let server = shared();
    let git = GitServer::start();
    let base = git.init_repo("private", &[("hello.txt", "secret sauce\n")]);
    git.require_token(Some(TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let text = format!(
        "name: private\nsandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}\nllm: {{model: m}}\n\
         repo:\n  url: '{}'\n  depth: 1\n  token: ${{GIT_TOKEN}}\n{SETUP}\
         steps:\n  - message: Look.\nrehearsal: script.yaml\n",
        server.url,
        ws.display(),
        git.url("private"),
    );
    let out = run_job(dir.path(), &text, &[("K", &server.key), ("GIT_TOKEN", TOKEN)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/private/private"));
    assert_cloned(&report, &base, "secret sauce\n");
    assert_eq!(report["repo"]["depth"], 1);
    // The clone went through with the token as a Basic header…
    let requests = git.requests();
    let refs = requests.iter().find(|r| r.method == "GET" && r.path.ends_with("/info/refs")).expect("a ref listing");
    assert!(refs.query.contains("git-upload-pack"), "{refs:?}");
    assert!(requests.iter().any(|r| r.authorization.is_some()), "{requests:?}");
    // …and the token is nowhere: not in the shipped repository, no output, no file ohrun wrote.
    for (path, text) in files_under(&ws).into_iter().chain(files_under(dir.path())) {
        assert!(!text.contains(TOKEN), "the token is in {}", path.display());
    }
    assert!(!out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN));
    let config = std::fs::read_to_string(ws.join(".git/config")).unwrap();
    assert!(!config.contains("extraheader") && !config.contains("Authorization"), "{config}");
}

#[test]
fn a_wrong_token_and_a_missing_ref_are_setup_failures_with_gits_message() {
    agent_server_command();
    let git = GitServer::start();
    git.init_repo("gated", &[("hello.txt", "x\n")]);
    git.require_token(Some(TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let job = |name: &str, extra: &str| {
        format!(
            "name: {name}\nsandbox: {{kind: local}}\nllm: {{model: m}}\nrepo:\n  url: '{}'\n  token: ${{GIT_TOKEN}}\n{extra}{SETUP}\
             steps:\n  - message: Look.\nrehearsal: script.yaml\n",
            git.url("gated")
        )
    };
    let wrong = "ghp_wrong_token_0000111122223333";
    let out = run_job(dir.path(), &job("wrongtoken", ""), &[("GIT_TOKEN", wrong)]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/wrongtoken/wrongtoken"));
    check_schema(&report, "report", "run.json");
    assert_eq!(report["outcome"]["class"], "failed");
    let message = report["outcome"]["message"].as_str().unwrap();
    assert!(message.starts_with("cloning ") && message.contains("git clone"), "{message}");
    for (path, text) in files_under(dir.path()) {
        assert!(!text.contains(wrong), "the token is in {}", path.display());
    }
    assert!(report["steps"][0]["end_reason"] == "not_run");

    let out = run_job(dir.path(), &job("noref", "  ref: no-such-branch\n"), &[("GIT_TOKEN", TOKEN)]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/noref/noref"));
    let message = report["outcome"]["message"].as_str().unwrap();
    assert!(message.contains("no-such-branch"), "{message}");
}

#[test]
fn a_token_over_plain_http_to_a_far_host_is_refused_at_validate_time() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: far\nsandbox: {kind: local}\nllm: {model: m}\nrepo:\n  url: http://git.example.com/a.git\n  token: ${GIT_TOKEN}\nsteps:\n  - message: Look.\n",
    );
    let out = Ohrun::new().current_dir(dir.path()).args(["validate"]).args([&job]).output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("job.yaml:5:8"), "{}", out.stderr);
    assert!(out.stderr.contains("clear text"), "{}", out.stderr);
}

#[test]
fn plan_shows_each_runs_repository() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: planned\nmatrix:\n  repo: [acme/api, acme/web]\nsandbox: {kind: local}\nllm: {model: m}\n\
         repo:\n  url: 'https://github.com/{{ repo }}.git'\n  ref: main\nsteps:\n  - message: Look.\n",
    );
    let out = Ohrun::new().current_dir(dir.path()).args(["plan"]).args([&job]).output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("repo https://github.com/acme/api.git @ main"), "{}", out.stdout);
    assert!(out.stdout.contains("repo https://github.com/acme/web.git @ main"), "{}", out.stdout);
    let out = Ohrun::new().current_dir(dir.path()).args(["plan", "--json"]).args([&job]).output();
    let plan: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let runs = plan["runs"].as_array().unwrap_or_else(|| plan["plans"][0]["runs"].as_array().unwrap());
    assert_eq!(runs[1]["repo"]["url"], "https://github.com/acme/web.git");
    assert_eq!(runs[1]["repo"]["ref"], "main");
}

/// `verify.mode: fresh` rebuilds the run's start in a new sandbox: the repository too.
#[test]
fn a_fresh_verification_sandbox_gets_the_repository_too() {
    agent_server_command();
    let git = GitServer::start();
    let base = git.init_repo("fresh", &[("hello.txt", "fresh\n")]);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "name: fresh\nsandbox: {{kind: local}}\nllm: {{model: m}}\nrepo: {{url: '{}'}}\n\
         verify:\n  mode: fresh\n  checks:\n    - name: at-base\n      run: test \"$(git rev-parse HEAD)\" = {base} && test -f hello.txt\n\
         steps:\n  - message: Look.\nrehearsal: script.yaml\n",
        git.url("fresh")
    );
    let out = run_job(dir.path(), &text, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/fresh/fresh"));
    assert_eq!(report["verification"]["verdict"], "passed", "{:#}", report["verification"]);
}
