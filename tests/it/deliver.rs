//! Delivery end to end (issue K, items 3–5): the real binary and real agent-servers, the scripted LLM, a
//! git server over HTTP (`git http-backend`, `git_server.rs`) and a GitHub REST emulator (`github.rs`),
//! both recording every request. Each run gets its repository through `repo:` (cloned anonymously: the token guards pushes only); ohrun
//! pushes from its own side with the token.

use crate::git_server::GitServer;
use crate::github::{GhFaults, GithubEmulator};
use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN: &str = "ghp_deliver_test_token_7c5a3e1f9b";

/// The agent copies the wanted answer, edits the README, and dumps its environment beside the workspace
/// (in the attempt's folder: scanned with everything else).
const SCRIPT: &str = "replies:\n  - tool: terminal\n    args: {command: 'cat want.txt > answer.txt; echo fixed >> README.md; env > ../sandbox-env.txt'}\n  - tool: finish\n    args: {message: 'Copied the answer from want.txt.'}\n";

const CHECKS: &str = "verify:\n  checks:\n    - name: answer is 42\n      run: test \"$(cat answer.txt)\" = 42\n";

struct World {
    git: GitServer,
    gh: GithubEmulator,
    dir: tempfile::TempDir,
}

/// acme/r1 and acme/r2 want 42 (their runs pass), acme/r3 wants 41 (its run fails its check).
fn world(faults: GhFaults) -> World {
    agent_server_command();
    let git = GitServer::start();
    git.require_token_to_push(TOKEN);
    for (repo, want) in [("acme/r1", "42"), ("acme/r2", "42"), ("acme/r3", "41")] {
        git.create_repo(repo, &[("want.txt", &format!("{want}\n")), ("README.md", "# widget\n")]);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.yaml"), SCRIPT).unwrap();
    World { git, gh: GithubEmulator::start(TOKEN, faults), dir }
}

impl World {
    /// A job over `repos` whose `deliver:` has `extra` lines (indented two spaces) besides its repository,
    /// API and token.
    fn job(&self, repos: &[&str], sandbox: &str, extra: &str) -> PathBuf {
        let list = repos.join(", ");
        // The repository comes in through `repo:`, and `deliver:` pushes back to it.
        let url = self.git.url("acme/{{ repo }}");
        let text = format!(
            "name: fix\nmatrix: {{repo: [{list}]}}\n{sandbox}llm: {{model: m}}\nrepo: {{url: '{url}', ref: main}}\n\
             steps:\n  - message: Fix it.\n{CHECKS}deliver:\n  api_url: '{}'\n  token: ${{GH_TOKEN}}\n{extra}rehearsal: script.yaml\n",
            self.gh.url
        );
        write_job(self.dir.path(), "job.yaml", &text)
    }

    fn run(&self, job: &Path, extra: &[&str]) -> crate::support::Result {
        Ohrun::new()
            .current_dir(self.dir.path())
            .env("GH_TOKEN", TOKEN)
            .env_remove("GITHUB_ACTIONS")
            .args(["run", "--rehearse", "--jobs", "3"])
            .args(extra)
            .args([job])
            .output()
    }

    fn batch(&self) -> PathBuf {
        self.dir.path().join("ohrun-reports/fix")
    }

    /// Each run of the summary: (repo, summary entry, run.json).
    fn runs(&self) -> Vec<(String, Value, Value)> {
        let summary = read_summary(&self.batch());
        summary["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let run_dir = self.batch().join(r["report"].as_str().unwrap()).parent().unwrap().to_path_buf();
                (r["matrix"]["repo"].as_str().unwrap().to_string(), r.clone(), read_report(&run_dir))
            })
            .collect()
    }

    fn creates(&self) -> usize {
        self.gh.requests().iter().filter(|r| r.method == "POST" && r.path.ends_with("/pulls")).count()
    }

    /// Nothing ohrun wrote holds the token, and the sandbox's environment had no token variable.
    fn assert_token_nowhere(&self) {
        let files = files_under(self.dir.path());
        for (path, text) in &files {
            assert!(!text.contains(TOKEN), "the token is in {}", path.display());
        }
        let envs: Vec<_> = files.iter().filter(|(p, _)| p.ends_with("sandbox-env.txt")).collect();
        assert!(!envs.is_empty(), "the agent dumped its environment");
        for (path, text) in envs {
            assert!(
                !text.contains("GH_TOKEN"),
                "the sandbox's environment has the token's variable: {}",
                path.display()
            );
        }
    }
}

/// The branch's head tree in the git server's repository equals the sandbox's final tree.
fn assert_pushed_tree(w: &World, repo: &str, report: &Value) {
    let d = &report["delivery"];
    let branch = d["branch"].as_str().unwrap();
    let tree = w.git.git(repo, &["rev-parse", &format!("refs/heads/{branch}^{{tree}}")]).expect("the branch exists");
    assert_eq!(
        Some(tree.as_str()),
        report["final_patch"]["tree"].as_str(),
        "the pushed tree is the sandbox's final tree"
    );
    let commit = w.git.git(repo, &["rev-parse", &format!("refs/heads/{branch}")]).unwrap();
    assert_eq!(d["commit"].as_str(), Some(commit.as_str()));
    let parent = w.git.git(repo, &["rev-parse", &format!("refs/heads/{branch}^")]).unwrap();
    assert_eq!(report["final_patch"]["base_commit"].as_str(), Some(parent.as_str()), "on the base commit");
}

#[test]
fn a_matrix_delivers_one_draft_pr_per_passing_run_and_a_rerun_updates_them_without_reopening_a_closed_one() {
    let w = world(GhFaults::default());
    let job = w.job(
        &["r1", "r2", "r3"],
        "sandbox: {kind: local}\n",
        "  pull_request: {labels: [automated], reviewers: [octocat]}\n  batch_summary: {issue: acme/tracker#7}\n",
    );
    let out = w.run(&job, &[]);
    assert_eq!(out.code, 1, "one run fails its check:\n{}", out.stderr);
    let prs = w.gh.prs();
    assert_eq!(prs.len(), 2, "{prs:?}");
    for (repo, entry, report) in w.runs() {
        let d = &report["delivery"];
        if repo == "r3" {
            assert_eq!(d["status"], "skipped", "{d}");
            assert!(d["reason"].as_str().unwrap().contains("verdict is failed"), "{d}");
            assert!(w.git.git("acme/r3", &["for-each-ref", "refs/heads/ohrun"]).unwrap().is_empty(), "nothing pushed");
            continue;
        }
        assert_eq!((d["status"].as_str(), d["pr_state"].as_str()), (Some("delivered"), Some("draft")), "{d}");
        let pr = prs.iter().find(|p| p.repo == format!("acme/{repo}")).expect("a pull request");
        assert!(pr.draft && pr.state == "open");
        assert_eq!(pr.head, format!("acme:ohrun/{}", entry["id"].as_str().unwrap()));
        assert_eq!(pr.base, "main");
        assert!(
            pr.body.contains("Copied the answer from want.txt.") && pr.body.contains("answer is 42"),
            "{}",
            pr.body
        );
        assert_eq!(
            (pr.labels.clone(), pr.reviewers.clone()),
            (vec!["automated".to_string()], vec!["octocat".to_string()])
        );
        assert_pushed_tree(&w, &format!("acme/{repo}"), &report);
        // summary.json and report.html link the pull request.
        assert_eq!(entry["delivery"]["pr_url"], d["pr_url"], "{entry}");
        let html = std::fs::read_to_string(w.batch().join("report.html")).unwrap();
        assert!(html.contains(d["pr_url"].as_str().unwrap()), "report.html carries {}", d["pr_url"]);
        // Drawn as a link by the page itself (headless Chromium), not only carried in its data.
        if let Some(browser) = crate::view::chromium() {
            let page = crate::view::load(&browser, &crate::view::file_url(&w.batch().join("report.html")), false);
            let link = format!("href=\"{}\"", d["pr_url"].as_str().unwrap());
            assert!(page.dom.contains(&link), "the batch page links the pull request: {link}");
        }
    }
    // One batch comment on the issue, with both pull requests.
    let comments = w.gh.comments();
    assert_eq!(comments.len(), 1, "{comments:?}\n{}\n{}", out.stderr, out.stdout);
    let (repo, issue, _, body) = &comments[0];
    assert_eq!((repo.as_str(), *issue), ("acme/tracker", 7));
    assert!(body.contains("<!-- ohrun batch: fix -->") && body.matches("/pull/1").count() == 2, "{body}");
    // Pull requests were looked for by head branch, in any state.
    let lookups = w.gh.requests().into_iter().filter(|r| r.method == "GET" && r.path.ends_with("/pulls")).count();
    assert!(
        lookups >= 2
            && w.gh.requests().iter().any(|r| r.query.contains("head=acme%3Aohrun") && r.query.contains("state=all"))
    );
    // Every API request carried the token and GitHub's headers; every push carried it as a header.
    for r in w.gh.requests() {
        assert_eq!(r.authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()), "{} {}", r.method, r.path);
        assert_eq!(
            (r.accept.as_deref(), r.api_version.as_deref()),
            (Some("application/vnd.github+json"), Some("2022-11-28"))
        );
    }
    let pushes: Vec<_> =
        w.git.requests().into_iter().filter(|r| r.method == "POST" && r.path.ends_with("git-receive-pack")).collect();
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    assert!(pushes.iter().all(|r| r.authorization.as_deref().is_some_and(|a| a.starts_with("Basic "))));
    w.assert_token_nowhere();

    // The same batch again: the same branches are updated and the same pull requests, none opened.
    let creates = w.creates();
    let out = w.run(&job, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(w.gh.prs().len(), 2);
    assert_eq!(w.creates(), creates, "no pull request created on a rerun");
    let patches = w.gh.requests().iter().filter(|r| r.method == "PATCH" && r.path.contains("/pulls/")).count();
    assert_eq!(patches, 2, "both updated");
    assert_eq!(w.gh.comments().len(), 1, "the batch comment is replaced, not added");
    for (repo, _, report) in w.runs().into_iter().filter(|(r, _, _)| r != "r3") {
        assert_eq!(
            (report["delivery"]["pr_number"].as_u64(), report["delivery"]["pr_created"].as_bool()),
            (Some(1), None)
        );
        assert_pushed_tree(&w, &format!("acme/{repo}"), &report);
    }

    // A pull request closed in between is not reopened, and its branch is left alone.
    w.gh.close("acme/r1", 1);
    let out = w.run(&job, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(w.creates(), creates);
    let prs = w.gh.prs();
    assert_eq!(prs.len(), 2);
    assert_eq!(prs.iter().find(|p| p.repo == "acme/r1").unwrap().state, "closed");
    let r1 = w.runs().into_iter().find(|(r, _, _)| r == "r1").unwrap().2;
    assert_eq!(r1["delivery"]["status"], "skipped");
    assert_eq!(r1["delivery"]["pr_state"], "closed");
    assert!(r1["delivery"]["reason"].as_str().unwrap().contains("not reopened"), "{}", r1["delivery"]);
    w.assert_token_nowhere();
}

#[test]
fn a_refused_draft_opens_a_ready_pr_with_a_warning_and_a_rate_limit_is_waited_out() {
    let w = world(GhFaults { refuse_drafts: true, rate_limited_creates: 1, ..Default::default() });
    let job = w.job(&["r1"], "sandbox: {kind: local}\n", "");
    let out = w.run(&job, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let prs = w.gh.prs();
    assert_eq!(prs.len(), 1);
    assert!(!prs[0].draft, "opened ready");
    let report = &w.runs()[0].2;
    let d = &report["delivery"];
    assert!(d["warnings"][0].as_str().unwrap().contains("draft"), "{d}");
    assert_eq!(d["pr_state"], "open");
    let retry = &d["api_retries"][0];
    assert_eq!((retry["status"].as_u64(), retry["waited_ms"].as_u64()), (Some(403), Some(1000)), "{d}");
    let creates: Vec<_> =
        w.gh.requests().into_iter().filter(|r| r.method == "POST" && r.path.ends_with("/pulls")).collect();
    assert_eq!(creates.len(), 3, "limited, refused as a draft, created ready");
    assert!(creates[1].at.duration_since(creates[0].at) >= Duration::from_millis(950), "waited for retry-after");
    assert!(!creates[2].body.contains("\"draft\":true"));
}

#[test]
fn a_fork_owner_gets_the_branch_and_the_pr_goes_to_the_upstream() {
    let w = world(GhFaults::default());
    // The fork: the same history under another owner.
    let fork = w.git.bare("me/r1");
    std::fs::create_dir_all(fork.parent().unwrap()).unwrap();
    let src = w.git.bare("acme/r1");
    let o = std::process::Command::new("git").args(["clone", "-q", "--bare"]).arg(&src).arg(&fork).output().unwrap();
    assert!(o.status.success());
    w.git.git("me/r1", &["config", "http.receivepack", "true"]).unwrap();
    let job = w.job(&["r1"], "sandbox: {kind: local}\n", "  pull_request: {fork_owner: me}\n");
    let out = w.run(&job, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = &w.runs()[0].2;
    let branch = report["delivery"]["branch"].as_str().unwrap();
    assert_eq!(report["delivery"]["repository"], "me/r1");
    assert!(
        w.git.git("me/r1", &["rev-parse", "--verify", &format!("refs/heads/{branch}")]).is_some(),
        "pushed to the fork"
    );
    assert!(
        w.git.git("acme/r1", &["rev-parse", "--verify", &format!("refs/heads/{branch}")]).is_none(),
        "not upstream"
    );
    let prs = w.gh.prs();
    assert_eq!((prs.len(), prs[0].repo.as_str(), prs[0].head.clone()), (1, "acme/r1", format!("me:{branch}")));
}

#[test]
fn no_deliver_sends_nothing_and_a_token_over_plain_http_to_a_far_host_is_refused() {
    let w = world(GhFaults::default());
    let job = w.job(&["r1"], "sandbox: {kind: local}\n", "");
    let out = w.run(&job, &["--no-deliver"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(w.gh.requests().is_empty(), "no API request");
    assert!(w.git.requests().iter().all(|r| !r.path.ends_with("receive-pack") && !r.query.contains("receive-pack")));
    let report = &w.runs()[0].2;
    assert!(report["delivery"]["reason"].as_str().unwrap().contains("--no-deliver"));

    let text = std::fs::read_to_string(&job).unwrap().replace(&w.gh.url, "http://api.github.example.com");
    let far = write_job(w.dir.path(), "far.yaml", &text.replace("name: fix", "name: far"));
    let out = w.run(&far, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("deliver.api_url") && out.stderr.contains("plain http"), "{}", out.stderr);
    assert!(w.gh.requests().is_empty());
}

/// Nothing can make two runs race for one branch: a plan whose runs would share one is refused, and the
/// trials of a run (`--repeat`) deliver nothing.
#[test]
fn runs_never_share_a_branch_and_trials_deliver_nothing() {
    let w = world(GhFaults::default());
    let shared_branch =
        w.job(&["r1", "r2"], "sandbox: {kind: local}\n", "  repository: '__REPO__'\n  branch: ohrun/fix\n");
    let text = std::fs::read_to_string(&shared_branch).unwrap().replace("__REPO__", &w.git.url("acme/r1"));
    std::fs::write(&shared_branch, text).unwrap();
    let out = Ohrun::new().current_dir(w.dir.path()).args(["validate"]).args([&shared_branch]).output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("2 runs would deliver to the branch `ohrun/fix`"), "{}", out.stderr);
    assert!(out.stderr.contains("job.yaml:"), "it points at the job file: {}", out.stderr);

    let job = w.job(&["r1"], "sandbox: {kind: local}\n", "");
    let out = w.run(&job, &["--repeat", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(w.gh.prs().is_empty(), "no pull request from trials");
    let trial = read_report(&w.batch().join(summary_report(&w.batch(), 0)));
    assert!(trial["delivery"]["reason"].as_str().unwrap().contains("trials deliver nothing"), "{}", trial["delivery"]);
}

fn summary_report(batch: &Path, i: usize) -> PathBuf {
    let s = read_summary(batch);
    Path::new(s["runs"][i]["report"].as_str().unwrap()).parent().unwrap().to_path_buf()
}

#[test]
fn a_kill_during_delivery_then_resume_still_makes_one_pr() {
    let w = world(GhFaults { stall_after_create: Some(Duration::from_secs(60)), ..Default::default() });
    let job = w.job(&["r1"], "sandbox: {kind: local}\n", "");
    let child =
        Ohrun::new().current_dir(w.dir.path()).env("GH_TOKEN", TOKEN).args(["run", "--rehearse"]).args([&job]).spawn();
    wait_until(Duration::from_secs(240), "the pull request is created", || !w.gh.prs().is_empty());
    signal(&child, libc::SIGKILL);
    let _ = wait_output(child, Duration::from_secs(30));
    w.gh.set_faults(GhFaults::default());
    let out = w.run(&job, &["--resume"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(w.gh.prs().len(), 1, "still one pull request");
    let report = &w.runs()[0].2;
    assert_eq!(
        (report["delivery"]["pr_number"].as_u64(), report["delivery"]["status"].as_str()),
        (Some(1), Some("delivered"))
    );
    assert_pushed_tree(&w, "acme/r1", report);
}

/// On a remote server behind a recording proxy: no request ohrun sends the agent-server holds the token,
/// and no file. The same run with redaction off shows the scan would see it (the scripted model says it).
#[test]
fn the_token_reaches_no_agent_server_request_and_no_file_and_the_scan_would_see_it() {
    let server = crate::server::shared();
    for redacted in [true, false] {
        let w = world(GhFaults::default());
        let saying = format!(
            "replies:\n  - tool: terminal\n    args: {{command: 'cat want.txt > answer.txt; env > ../sandbox-env-$(basename $PWD).txt; echo {TOKEN}'}}\n  - tool: finish\n    args: {{message: done}}\n"
        );
        std::fs::write(w.dir.path().join("script.yaml"), saying).unwrap();
        let proxy = crate::proxy::Proxy::start(server.url.trim_start_matches("http://"));
        let sandbox = format!(
            "sandbox: {{kind: remote, url: '{}', session_key: '${{SHARED_SESSION_KEY}}', working_dir: '{}/ws/{{{{ run.id }}}}'}}\n",
            proxy.url(),
            w.dir.path().display()
        );
        let job = w.job(&["r1"], &sandbox, "");
        let out = Ohrun::redacted(redacted)
            .current_dir(w.dir.path())
            .env("GH_TOKEN", TOKEN)
            .env("SHARED_SESSION_KEY", &server.key)
            .args(["run", "--rehearse"])
            .args([&job])
            .output();
        // Heads and bodies are recorded (the session key is in every request's head), and the token is in none.
        assert!(!proxy.traffic_containing(&server.key).is_empty(), "the proxy records request heads");
        assert!(proxy.traffic_containing(TOKEN).is_empty(), "a request to the agent-server carries the token");
        // Everything but the test's own script (which plants the token).
        let files: Vec<_> =
            files_under(w.dir.path()).into_iter().filter(|(p, _)| !p.ends_with("script.yaml")).collect();
        let holding: Vec<_> = files.iter().filter(|(_, t)| t.contains(TOKEN)).map(|(p, _)| p.clone()).collect();
        if redacted {
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert!(holding.is_empty(), "the token is in {holding:?}");
            assert_eq!(w.gh.prs().len(), 1);
        } else {
            assert!(!holding.is_empty(), "with redaction off the scan sees the token the model said");
        }
        assert!(files.iter().all(|(_, t)| !t.contains("GH_TOKEN=")), "no sandbox environment holds it");
    }
}
