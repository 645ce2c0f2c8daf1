//! `sandbox.share: batch` end to end: the runs of a local batch on one real agent-server that ohrun
//! starts once, each its own conversation in its own working directory; the server stopped when the
//! batch ends, and started again when it died under a run (which is retried).

use crate::support::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A terminal command that leaves a mark in the run's working directory, then `finish`, per step.
const SCRIPT: &str = "replies:
  - tool: terminal
    args: {command: 'echo first >> served.log'}
    delay: DELAY
  - tool: finish
    args: {message: first done}
  - tool: terminal
    args: {command: 'echo second >> served.log'}
  - tool: finish
    args: {message: second done}
";

/// A local job of `runs` runs sharing one agent-server; `extra` is appended to the job.
fn shared_job(dir: &Path, runs: usize, delay: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("script.yaml"), SCRIPT.replace("DELAY", delay)).unwrap();
    let values: Vec<String> = (1..=runs).map(|n| n.to_string()).collect();
    let text = format!(
        "name: shared\nmatrix:\n  n: [{}]\nsandbox:\n  kind: local\n  share: batch\nllm:\n  model: m\n  \
         options: {{num_retries: 0}}\nsetup:\n  - echo {{{{ n }}}} > RUN.txt\n\
         steps:\n  - message: First, for run {{{{ n }}}}.\n  - message: Second.\nrehearsal: script.yaml\n{extra}",
        values.join(", "),
    );
    write_job(dir, "job.yaml", &text)
}

fn runs(summary: &Value) -> &Vec<Value> {
    summary["runs"].as_array().unwrap()
}

fn pid_of(report: &Value) -> i32 {
    sandbox_pid(report).unwrap_or_else(|| panic!("no server pid in {}", report["sandbox"]))
}

/// Each run worked in a working directory of its own: its setup's mark and each scripted command once.
fn assert_own_working_dir(report: &Value, n: usize) {
    let wd = Path::new(report["sandbox"]["working_dir"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(wd.join("RUN.txt")).unwrap().trim(), n.to_string());
    assert_eq!(std::fs::read_to_string(wd.join("served.log")).unwrap(), "first\nsecond\n", "in {}", wd.display());
}

#[test]
fn the_runs_of_a_batch_share_one_local_agent_server_each_in_its_own_working_dir() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    let job = shared_job(dir.path(), 4, "0ms", "");
    let out = Ohrun::new()
        .current_dir(dir.path())
        .args(["run", "--rehearse", "--jobs", "2"])
        .args([&job])
        .timeout(Duration::from_secs(180))
        .output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let batch = dir.path().join("ohrun-reports/shared");
    let summary = read_summary(&batch);
    assert_eq!(
        summary["shared_sandboxes"],
        json!([{"name": "shared-local-1", "id": summary["shared_sandboxes"][0]["id"], "runs": 4,
                "disposition": "released", "release_error": null}])
    );
    let reports: Vec<Value> =
        runs(&summary).iter().map(|r| read_report(&batch.join(r["id"].as_str().unwrap()))).collect();
    let pids: HashSet<i32> = reports.iter().map(pid_of).collect();
    assert_eq!(pids.len(), 1, "one server for the batch: {pids:?}");
    let dirs: HashSet<&str> = reports.iter().map(|r| r["sandbox"]["working_dir"].as_str().unwrap()).collect();
    assert_eq!(dirs.len(), 4, "a working directory per run: {dirs:?}");
    for (n, report) in reports.iter().enumerate() {
        assert_eq!(report["outcome"]["class"], "succeeded", "{}", report["outcome"]);
        assert_eq!(report["sandbox"]["disposition"], "shared");
        assert!(report["sandbox"]["shared"].as_str().unwrap().ends_with("shared/shared-local-1"));
        assert_own_working_dir(report, n + 1);
    }
    assert!(batch.join("shared/shared-local-1/agent-server.log").is_file());
    let pid = *pids.iter().next().unwrap();
    assert!(!process_alive(pid), "the shared server (pid {pid}) was stopped with the batch");
}

#[test]
fn a_shared_server_that_dies_under_a_run_is_started_again_for_its_retry() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    // The first reply waits, so that the test can kill the server while run 1 is in its first step.
    let job = shared_job(dir.path(), 2, "3s", "retries:\n  max: 1\n  backoff: 100ms\n");
    let child = Ohrun::new()
        .current_dir(dir.path())
        .args(["run", "--rehearse", "--jobs", "1", "--prefetch", "0"])
        .args([&job])
        .spawn();
    let batch = dir.path().join("ohrun-reports/shared");
    let first_run = |b: &Path| -> Option<PathBuf> {
        std::fs::read_dir(b).ok()?.flatten().map(|e| e.path()).find(|p| p.join("attempt-1/run.json").is_file())
    };
    let mut killed = 0;
    wait_until(Duration::from_secs(120), "run 1 is in its first step", || {
        let Some(run) = first_run(&batch) else { return false };
        let report = read_checkpoint(&run.join("attempt-1"));
        if report["steps"][0]["started_at"].as_str().unwrap_or("").is_empty() {
            return false;
        }
        killed = pid_of(&report);
        true
    });
    // SAFETY: the shared agent-server this test's ohrun started.
    unsafe { libc::kill(killed, libc::SIGKILL) };
    let out = wait_output(child, Duration::from_secs(180));
    assert_eq!(out.code, 0, "{}", out.stderr);

    let summary = read_summary(&batch);
    let shared = &summary["shared_sandboxes"][0];
    assert_eq!((&shared["runs"], &shared["disposition"]), (&json!(3), &json!("released")), "{shared}");
    let first = &runs(&summary)[0];
    assert_eq!((&first["status"], &first["attempts"]), (&json!("succeeded"), &json!(2)), "{first}");
    let run_dir = batch.join(first["id"].as_str().unwrap());
    let lost = read_report(&run_dir.join("attempt-1"));
    assert_eq!(lost["steps"][0]["end_reason"], "lost", "{}", lost["steps"][0]);
    assert_eq!(pid_of(&lost), killed);
    let retried = read_report(&run_dir);
    let restarted = pid_of(&retried);
    assert_ne!(restarted, killed, "the retry runs on a new server");
    assert_own_working_dir(&retried, 1);
    let second = read_report(&batch.join(runs(&summary)[1]["id"].as_str().unwrap()));
    assert_eq!(pid_of(&second), restarted, "the next run shares the new server");
    assert_own_working_dir(&second, 2);
    assert!(!process_alive(restarted), "the new server (pid {restarted}) was stopped with the batch");
}
