//! Verification end to end (issue J): checks after the agent is done, the verdict kept apart from the
//! infrastructure, a verifier the agent cannot fool, the final patch, judges, and `ohrun verify`. Real
//! binary, real agent-servers (local, and the shared `remote` one), the scripted LLM.

use crate::server::shared;
use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Makes the working directory a repository with one commit, and writes the run's number (`n`) beside it.
const REPO_SETUP: &str = "  - git init -q && git config user.email t@t && git config user.name t && echo base > base.txt && git add -A && git commit -qm base\n  - echo {{ n }} > n.txt\n";

/// The agent answers 42 for runs 1–4 and 41 for the others, deletes base.txt and writes a binary file.
const SOLVER: &str = "replies:\n  - tool: terminal\n    args: {command: 'if [ \"$(cat n.txt)\" -le 4 ]; then echo 42 > answer.txt; else echo 41 > answer.txt; fi; rm base.txt; printf \"\\000\\001\\377bin\" > blob.bin'}\n  - tool: finish\n    args: {message: answered}\n";

const CHECKS: &str = "verify:\n  checks:\n    - name: answer is 42\n      run: test \"$(cat answer.txt)\" = 42\n    - name: no stray file\n      run: test ! -e stray.txt\n      required: false\n";

/// The sandbox of `kind` (`local`, or `remote` on the shared server with a working dir per run under `dir`).
fn sandbox(kind: &str, dir: &Path) -> String {
    match kind {
        "local" => "sandbox: {kind: local}\n".into(),
        _ => {
            let s = shared();
            format!(
                "sandbox: {{kind: remote, url: '{}', session_key: '${{SHARED_SESSION_KEY}}', working_dir: '{}/ws/{{{{ run.id }}}}'}}\n",
                s.url,
                dir.display()
            )
        }
    }
}

fn run_batch(dir: &Path, job: &Path, extra: &[&str]) -> crate::support::Result {
    Ohrun::new()
        .current_dir(dir)
        .env("SHARED_SESSION_KEY", &shared().key)
        .env_remove("GITHUB_ACTIONS")
        .args(["run", "--rehearse", "--jobs", "3"])
        .args(extra)
        .args([job])
        .output()
}

fn six_run_matrix(kind: &str) {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.yaml"), SOLVER).unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: six\nmatrix: {{n: [1, 2, 3, 4, 5, 6]}}\n{}llm: {{model: m}}\nsetup:\n{REPO_SETUP}steps:\n  - message: Answer.\n{CHECKS}rehearsal: script.yaml\n",
            sandbox(kind, dir.path())
        ),
    );
    let out = run_batch(dir.path(), &job, &[]);
    assert_eq!(out.code, 1, "two runs fail their check:\n{}", out.stderr);
    let batch = dir.path().join("ohrun-reports/six");
    let summary = read_summary(&batch);
    let v = &summary["verification"]["batch"];
    assert_eq!((v["passed"].as_u64(), v["failed"].as_u64(), v["error"].as_u64()), (Some(4), Some(2), Some(0)), "{v}");
    assert!((v["pass_rate"]["estimate"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-9);
    for run in summary["runs"].as_array().unwrap() {
        let n = run["matrix"]["n"].as_u64().unwrap();
        let checks = run["checks"].as_array().unwrap();
        let answer = checks.iter().find(|c| c["name"] == "answer is 42").unwrap();
        if n <= 4 {
            assert_eq!(
                (&run["verdict"], &run["status"], &answer["passed"]),
                (&Value::from("passed"), &Value::from("succeeded"), &Value::from(true))
            );
        } else {
            assert_eq!(
                (&run["verdict"], &run["end_reason"], &answer["passed"]),
                (&Value::from("failed"), &Value::from("checks"), &Value::from(false))
            );
            assert!(run["message"].as_str().unwrap().contains("answer is 42"), "{run}");
        }
        // Every run's final patch reproduces its final tree on the commit it started from.
        let run_dir = batch.join(run["report"].as_str().unwrap()).parent().unwrap().to_path_buf();
        assert_patch_reproduces_the_tree(&run_dir, kind, dir.path());
    }
}

/// `git apply final.patch` on the base commit, in a fresh clone of the run's repository, gives the tree the
/// report names: a binary file and a deleted file among the changes.
fn assert_patch_reproduces_the_tree(run_dir: &Path, kind: &str, root: &Path) {
    let report = read_report(run_dir);
    let patch = &report["final_patch"];
    assert!(patch["error"].is_null(), "{patch}");
    let attempt = last_attempt(run_dir);
    let text = std::fs::read(attempt.join("final.patch")).unwrap();
    let sha: String = sha256_hex(&text);
    assert_eq!(patch["sha256"].as_str(), Some(sha.as_str()), "run.json names the patch's sha256");
    let body = String::from_utf8_lossy(&text);
    assert!(body.contains("deleted file mode") && body.contains("GIT binary patch"), "{body}");
    let repo = match kind {
        "local" => attempt.join("workspace"),
        _ => PathBuf::from(report["sandbox"]["working_dir"].as_str().unwrap()),
    };
    let clone = tempfile::tempdir_in(root).unwrap();
    let git = |args: &[&str], cwd: &Path| {
        let o = std::process::Command::new("git").args(args).current_dir(cwd).output().unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    git(&["clone", "-q", repo.to_str().unwrap(), "c"], clone.path());
    let c = clone.path().join("c");
    git(&["checkout", "-q", "--detach", patch["base_commit"].as_str().unwrap()], &c);
    git(&["apply", "--binary", attempt.join("final.patch").to_str().unwrap()], &c);
    git(&["add", "-A"], &c);
    assert_eq!(git(&["write-tree"], &c), patch["tree"].as_str().unwrap(), "the patch reproduces the final tree");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_six_run_matrix_on_local_servers_is_verified_four_pass_two_fail() {
    six_run_matrix("local");
}

#[test]
fn a_six_run_matrix_on_a_remote_server_is_verified_four_pass_two_fail() {
    six_run_matrix("remote");
}

/// A check that times out could not run: a verifier error (exit 3), retried like any infrastructure
/// failure, and in no pass rate.
#[test]
fn a_check_that_times_out_is_a_verifier_error_retried_and_never_a_failed_task() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.yaml"), SOLVER).unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: slowcheck\n{}llm: {{model: m}}\nvars: {{n: 1}}\nsetup:\n{REPO_SETUP}steps:\n  - message: Answer.\n\
             verify:\n  checks:\n    - name: hangs\n      run: sleep 60\n      timeout: 1s\nretries: {{max: 1, backoff: 1s}}\nrehearsal: script.yaml\n",
            sandbox("remote", dir.path())
        ),
    );
    let out = run_batch(dir.path(), &job, &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let summary = read_summary(&dir.path().join("ohrun-reports/slowcheck"));
    let run = &summary["runs"][0];
    assert_eq!(
        (&run["verdict"], &run["attempts"], &run["end_reason"]),
        (&Value::from("error"), &Value::from(2), &Value::from("verifier_error")),
        "{run}"
    );
    let tally = &summary["verification"]["batch"];
    assert_eq!((tally["error"].as_u64(), tally["failed"].as_u64()), (Some(1), Some(0)));
    assert!(tally["pass_rate"].is_null(), "an error is in no pass rate: {tally}");
    let report = read_report(&dir.path().join("ohrun-reports/slowcheck/slowcheck"));
    assert!(report["verification"]["checks"][0]["error"].as_str().unwrap().contains("timed out"));
}

/// An agent that cheats: it writes a passing reward.json where it guesses one would be read, and replaces
/// the checker that setup made (in a directory git ignores). The hidden checker (`verify.files`) arrives
/// after it is done and is not fooled; a fresh sandbox has setup's own checker again and is not fooled
/// either; a shared sandbox whose check runs the setup's checker is, as the docs say, and says what it saw.
#[test]
fn a_cheating_agent_passes_where_the_docs_say_it_cannot() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    let cheat = "replies:\n  - tool: terminal\n    args: {command: 'printf \"#!/bin/sh\\nexit 0\\n\" > tools/check; mkdir -p hidden; printf \"exit 0\\n\" > hidden/check.sh; echo {\\\"score\\\": 1} > reward.json; mkdir -p /tmp/ohrun-verify-out.cheat; echo {\\\"score\\\": 1} > /tmp/ohrun-verify-out.cheat/reward.json'}\n  - tool: finish\n    args: {message: all done, honest}\n";
    std::fs::write(dir.path().join("script.yaml"), cheat).unwrap();
    std::fs::create_dir(dir.path().join("hidden")).unwrap();
    std::fs::write(dir.path().join("hidden/check.sh"), "test -f answer.txt\n").unwrap();
    let setup = "setup:\n  - git init -q && git config user.email t@t && git config user.name t && printf 'tools/\\n' > .gitignore && git add -A && git commit -qm base\n  - mkdir -p tools && printf '#!/bin/sh\\ntest -f answer.txt\\n' > tools/check && chmod +x tools/check\n";
    let job = |name: &str, verify: &str| {
        write_job(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\nsandbox: {{kind: local}}\nllm: {{model: m}}\n{setup}steps:\n  - message: Solve it.\n{verify}rehearsal: script.yaml\n"
            ),
        )
    };
    let hidden =
        job("hidden", "verify:\n  files: hidden\n  checks:\n    - name: hidden test\n      run: sh hidden/check.sh\n");
    let fresh =
        job("fresh", "verify:\n  mode: fresh\n  checks:\n    - name: setup's checker\n      run: tools/check\n");
    let shared_tool = job("shared-tool", "verify:\n  checks:\n    - name: setup's checker\n      run: tools/check\n");
    for (job, expected) in [(&hidden, "failed"), (&fresh, "failed"), (&shared_tool, "passed")] {
        let out = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([job]).output();
        let name = job.file_stem().unwrap().to_str().unwrap();
        let report = read_report(&dir.path().join(format!("ohrun-reports/{name}/{name}")));
        let v = &report["verification"];
        assert_eq!(v["verdict"], expected, "{name}: {v}\n{}", out.stderr);
        // The pre-written reward.json files were seen, and never read.
        let notices = v["notices"].to_string();
        if name != "fresh" {
            assert!(notices.contains("reward.json") && notices.contains("ohrun-verify-out.cheat"), "{name}: {notices}");
        }
        if name == "hidden" {
            assert!(
                notices.contains("hidden/check.sh was in the working directory before the hidden files arrived"),
                "{notices}"
            );
        }
    }
    let _ = std::fs::remove_dir_all("/tmp/ohrun-verify-out.cheat");
}

/// A judge passes or fails the work by its answer (the scripted LLM's); its call is billed, counted in the
/// run's totals and in the batch's budget.
#[test]
fn a_judge_decides_by_its_answer_and_its_spend_counts() {
    let dir = tempfile::tempdir().unwrap();
    for (name, passed) in [("judged-pass", true), ("judged-fail", false)] {
        let answer = format!(
            "{{\\\"passed\\\": {passed}, \\\"score\\\": {}, \\\"explanation\\\": \\\"the final message names the file\\\"}}",
            if passed { 0.9 } else { 0.2 }
        );
        let script = format!(
            "replies:\n  - tool: terminal\n    args: {{command: 'echo 42 > answer.txt'}}\n  - tool: finish\n    args: {{message: wrote answer.txt}}\n  - tool: finish\n    args: {{message: \"{answer}\"}}\n"
        );
        std::fs::write(dir.path().join(format!("{name}.script.yaml")), script).unwrap();
        let job = write_job(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\n{}llm: {{model: m}}\nvars: {{n: 1}}\nsetup:\n{REPO_SETUP}steps:\n  - message: Answer.\n\
                 verify:\n  checks:\n    - name: explains the change\n      judge:\n        criteria: [The final message says which file changed.]\n        files: [answer.txt]\n\
                 rehearsal: {name}.script.yaml\n",
                sandbox("remote", dir.path())
            ),
        );
        let out = run_batch(dir.path(), &job, &["--max-cost", "5"]);
        assert_eq!(out.code, if passed { 0 } else { 1 }, "{name}: {}", out.stderr);
        let batch = dir.path().join(format!("ohrun-reports/{name}"));
        let report = read_report(&batch.join(name));
        let check = &report["verification"]["checks"][0];
        assert_eq!((check["kind"].as_str(), check["passed"].as_bool()), (Some("judge"), Some(passed)), "{check}");
        assert_eq!(check["explanation"], "the final message names the file");
        let judge_cost = check["cost"].as_f64().unwrap_or(0.0);
        assert!(judge_cost > 0.0, "the judge's call is billed: {check}");
        let steps: f64 = report["steps"].as_array().unwrap().iter().map(|s| s["cost"].as_f64().unwrap()).sum();
        let total = report["totals"]["cost"].as_f64().unwrap();
        assert!(
            (total - steps - judge_cost).abs() < 1e-9,
            "the run's totals include the judge: {total} = {steps} + {judge_cost}"
        );
        let summary = read_summary(&batch);
        assert!(
            (summary["budget"]["spent"].as_f64().unwrap() - total).abs() < 1e-9,
            "the budget counted it: {}",
            summary["budget"]
        );
        assert!(
            last_attempt(&batch.join(name)).join("verify/judge-1/events.jsonl").is_file(),
            "the judge's conversation is logged"
        );
    }
}

/// `ohrun verify DIR` regrades without the agent; `--patch empty` says which checks pass without any change.
#[test]
fn ohrun_verify_regrades_and_finds_checks_that_pass_without_a_change() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.yaml"), SOLVER).unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: regrade\nmatrix: {{n: [1, 6]}}\n{}llm: {{model: m}}\nsetup:\n{REPO_SETUP}steps:\n  - message: Answer.\n{CHECKS}rehearsal: script.yaml\n",
            sandbox("remote", dir.path())
        ),
    );
    let out = run_batch(dir.path(), &job, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let batch = dir.path().join("ohrun-reports/regrade");
    let verify = |patch: &str| {
        Ohrun::new()
            .current_dir(dir.path())
            .env("SHARED_SESSION_KEY", &shared().key)
            .args(["verify", "--json", "--patch", patch])
            .args([&batch])
            .output()
    };
    let again = verify("final");
    assert_eq!(again.code, 1, "the same verdicts again: {}", again.stderr);
    let verdicts: Vec<String> =
        again.json()["runs"].as_array().unwrap().iter().map(|r| r["verdict"].as_str().unwrap().to_string()).collect();
    assert_eq!(verdicts, ["passed", "failed"]);
    // The required check fails without the agent's work; the optional one passes anyway, and is named.
    let empty = verify("empty");
    assert_eq!(empty.code, 0, "no required check passes without a change: {}", empty.stderr);
    let doc = empty.json();
    let unchanged: Vec<&str> =
        doc["pass_without_change"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(unchanged, ["no stray file", "no stray file"], "{doc}");
    assert!(
        empty.stderr.contains("no stray file (run regrade-1-") && empty.stderr.contains("— optional"),
        "{}",
        empty.stderr
    );
    assert!(empty.stderr.contains("every required check fails without a change"), "{}", empty.stderr);
    let run_dir = batch.join(summary_report_dir(&batch, 0));
    let first: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("verify-1/verification.json")).unwrap()).unwrap();
    assert_eq!((first["patch"].as_str(), first["verification"]["verdict"].as_str()), (Some("final"), Some("passed")));
    assert!(run_dir.join("verify-2/verification.json").is_file());
}

fn summary_report_dir(batch: &Path, i: usize) -> PathBuf {
    let s = read_summary(batch);
    Path::new(s["runs"][i]["report"].as_str().unwrap()).parent().unwrap().to_path_buf()
}

/// Fresh mode on the docker kind: the checks run in a second container that got only the final patch;
/// both containers are gone afterwards.
#[test]
fn fresh_mode_verifies_in_a_new_container() {
    if !crate::docker::engine_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.yaml"), SOLVER).unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: fresh-docker\nsandbox: {{kind: docker}}\nllm: {{model: m}}\nvars: {{n: 1}}\nsetup:\n{REPO_SETUP}steps:\n  - message: Answer.\n\
             verify:\n  mode: fresh\n  checks:\n    - name: answer is 42\n      run: test \"$(cat answer.txt)\" = 42\n    - name: base.txt deleted\n      run: test ! -e base.txt\n\
             rehearsal: script.yaml\n"
        ),
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .args(["run", "--rehearse"])
        .args([&job])
        .timeout(crate::docker::DOCKER_TIMEOUT)
        .output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/fresh-docker/fresh-docker"));
    let v = &report["verification"];
    assert_eq!((v["mode"].as_str(), v["verdict"].as_str()), (Some("fresh"), Some("passed")), "{v}");
    assert_eq!(
        (v["sandbox"]["kind"].as_str(), v["sandbox"]["disposition"].as_str()),
        (Some("docker"), Some("released"))
    );
    assert_ne!(v["sandbox"]["id"], report["sandbox"]["id"], "a container of its own");
    assert!(crate::docker::containers_of("fresh-docker").is_empty(), "no container is left");
}

/// Fresh mode on a local server given a `working_dir`: the checks run in a new directory beside it, which
/// is removed afterwards, and the user's directory keeps the agent's work. An agent that removes `.git`
/// leaves no patch to carry over: its failure (exit 1, a failed "final patch" check), not the verifier's.
#[test]
fn fresh_mode_beside_a_local_working_dir_and_an_agent_that_breaks_the_repository_fails() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    for (name, command) in [("solve", "echo 42 > answer.txt"), ("break", "echo 42 > answer.txt; rm -rf .git")] {
        let script = format!(
            "replies:\n  - tool: terminal\n    args: {{command: '{command}'}}\n  - tool: finish\n    args: {{message: done}}\n"
        );
        std::fs::write(dir.path().join(format!("{name}.script.yaml")), script).unwrap();
    }
    for (name, code, verdict) in [("solve", 0, "passed"), ("break", 1, "failed")] {
        let work = dir.path().join(format!("work-{name}"));
        std::fs::create_dir(&work).unwrap();
        let job = write_job(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\nsandbox: {{kind: local, working_dir: '{}'}}\nllm: {{model: m}}\nvars: {{n: 1}}\nsetup:\n{REPO_SETUP}steps:\n  - message: Answer.\n\
                 verify:\n  mode: fresh\n  checks:\n    - name: answer is 42\n      run: test \"$(cat answer.txt)\" = 42\nrehearsal: {name}.script.yaml\n",
                work.display()
            ),
        );
        let out = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).output();
        assert_eq!(out.code, code, "{name}: {}", out.stderr);
        let report = read_report(&dir.path().join(format!("ohrun-reports/{name}/{name}")));
        let v = &report["verification"];
        assert_eq!(v["verdict"], verdict, "{name}: {v}");
        assert_eq!(
            std::fs::read_to_string(work.join("answer.txt")).unwrap().trim(),
            "42",
            "the user's directory keeps the work"
        );
        if name == "solve" {
            let fresh = v["sandbox"]["working_dir"].as_str().unwrap();
            assert_ne!(Path::new(fresh), work, "verified beside the run's directory, not in it");
            assert!(fresh.starts_with(&work.display().to_string()) && !Path::new(fresh).exists(), "{fresh} is removed");
        } else {
            let check = &v["checks"][0];
            assert_eq!(
                (check["name"].as_str(), check["kind"].as_str(), check["passed"].as_bool()),
                (Some("final patch"), Some("setup"), Some(false)),
                "{check}"
            );
            assert!(check["error"].is_null(), "the agent's failure, not the verifier's: {check}");
            assert_eq!(report["outcome"]["class"], "failed");
        }
    }
}

/// SIGINT while a check runs: the run is interrupted (exit 130), gets no verdict (neither failed nor an
/// error: nobody knows), and its report is valid and complete.
#[test]
fn an_interrupt_during_verification_leaves_the_run_unverified() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.yaml"), SOLVER).unwrap();
    let started = dir.path().join("check-started");
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: cut\nsandbox: {{kind: local}}\nllm: {{model: m}}\nvars: {{n: 1}}\nsetup:\n{REPO_SETUP}steps:\n  - message: Answer.\n\
             verify:\n  checks:\n    - name: slow\n      run: touch '{}' && sleep 120\n      timeout: 5m\nrehearsal: script.yaml\n",
            started.display()
        ),
    );
    let child = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).spawn();
    wait_until(std::time::Duration::from_secs(120), "the check runs", || started.exists());
    signal(&child, libc::SIGINT);
    let out = wait_output(child, std::time::Duration::from_secs(60));
    assert_eq!(out.code, 130, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/cut/cut"));
    assert_eq!(report["outcome"]["class"], "interrupted", "{}", report["outcome"]);
    assert!(report["verification"]["verdict"].is_null(), "{}", report["verification"]);
    assert_eq!(report["sandbox"]["disposition"], "released");
    let summary = read_summary(&dir.path().join("ohrun-reports/cut"));
    assert!(summary["runs"][0]["verdict"].is_null(), "{}", summary["runs"][0]);
    let tally = &summary["verification"]["batch"];
    let count = |k: &str| tally[k].as_u64().unwrap_or(0);
    assert_eq!((count("failed"), count("error")), (0, 0), "counted neither failed nor error: {tally}");
}

/// `ohrun verify --patch empty` from another directory, over the trials of a run: a check that cannot run
/// without the agent's work (it times out) is not a check that "fails without a change" — exit 3, unknown.
#[test]
fn ohrun_verify_of_trials_from_elsewhere_says_unknown_when_a_check_cannot_run() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.yaml"), SOLVER).unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: unknown\nsandbox: {{kind: local}}\nllm: {{model: m}}\nvars: {{n: 1}}\nsetup:\n{REPO_SETUP}steps:\n  - message: Answer.\n\
             verify:\n  checks:\n    - name: answer or hang\n      run: test -f answer.txt || sleep 60\n      timeout: 2s\nrehearsal: script.yaml\n"
        ),
    );
    let out = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse", "--repeat", "2"]).args([&job]).output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run_dir = dir.path().join("ohrun-reports/unknown/unknown");
    assert!(run_dir.join("trial-2/run.json").is_file());
    let elsewhere = tempfile::tempdir().unwrap();
    let regrade = |patch: &str| {
        Ohrun::new()
            .current_dir(elsewhere.path())
            .args(["verify", "--json", "--patch", patch])
            .args([&run_dir])
            .output()
    };
    let again = regrade("final");
    assert_eq!(again.code, 0, "{}", again.stderr);
    let trials: Vec<u64> =
        again.json()["runs"].as_array().unwrap().iter().map(|r| r["trial"].as_u64().unwrap()).collect();
    assert_eq!(trials, [1, 2]);
    let empty = regrade("empty");
    assert_eq!(empty.code, 3, "{}", empty.stderr);
    assert!(empty.stderr.contains("could not be checked"), "{}", empty.stderr);
}
