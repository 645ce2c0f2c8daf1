//! Nothing leaks, and a leak is never silent: an interrupt during provisioning or setup still releases
//! and reports; evidence that cannot be written fails the run; a crashed server is seen at once.

use crate::server::shared;
use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn sigint_while_a_local_server_starts_leaves_no_process_and_records_it() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: starting\nsandbox: {kind: local}\nllm: {model: m}\nsteps:\n  - message: hi\n",
    );
    let child = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).spawn();
    let log = dir.path().join("ohrun-reports/starting/starting/attempt-1/agent-server.log");
    wait_until(Duration::from_secs(60), "the agent-server process was started", || log.exists());
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(30));
    assert_eq!(out.code, 130, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/starting/starting"));
    assert_eq!(report["outcome"]["class"], "interrupted");
    assert!(report["sandbox"]["id"].as_str().is_some_and(|id| id.starts_with("pid:")), "{}", report["sandbox"]);
    assert_eq!(report["sandbox"]["disposition"], "released");
    assert_no_server_left(&report);
}

#[test]
fn a_report_directory_that_cannot_be_created_is_exit_3_before_provisioning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocker"), "a file").unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: blocked\nsandbox: {kind: local}\nllm: {model: m}\nsteps:\n  - message: hi\nreport: {dir: blocker/reports}\n",
    );
    let state = tempfile::tempdir().unwrap();
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("OHRUN_STATE_DIR", state.path())
        .args(["run", "--rehearse"])
        .args([&job])
        .output();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("cannot be written") && out.stderr.contains("nothing was started"), "{}", out.stderr);
    // ohrun records every sandbox in its ledger before it creates it: no ledger, no agent-server.
    assert!(!state.path().join("ledger").exists(), "a sandbox was provisioned");
    assert!(!out.stderr.contains("agent-server 1.58.2 ready"), "{}", out.stderr);
}

#[test]
fn a_run_json_that_cannot_be_written_is_never_exit_0() {
    let server = shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: finish\n    args: {message: done}\n    delay: 2s\n",
    )
    .unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: no-evidence\nsandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}\nllm: {{model: m}}\nsteps:\n  - message: hi\nrehearsal: script.yaml\n",
            server.url,
            dir.path().join("ws").display()
        ),
    );
    let report_dir = dir.path().join("ohrun-reports/no-evidence/no-evidence");
    let child =
        Ohrun::new().current_dir(dir.path()).env("K", &server.key).args(["run", "--rehearse"]).args([&job]).spawn();
    wait_for_event(dir.path(), "no-evidence", "MessageEvent", Duration::from_secs(60));
    // A directory where run.json must go: the atomic rename cannot replace it.
    std::fs::create_dir_all(report_dir.join("run.json/in-the-way")).unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("cannot write") && out.stderr.contains("run.json"), "{}", out.stderr);
    assert!(out.stderr.contains("FAILED"), "the summary line does not say ok:\n{}", out.stderr);
    let stray: Vec<_> = std::fs::read_dir(&report_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "a temporary file was left: {stray:?}");
}

#[test]
fn an_event_log_that_cannot_be_written_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("ohrun-reports/full-disk/full-disk");
    let server = shared();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: full-disk\nsandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}\nllm: {{model: m}}\nsteps:\n  - message: hi\n",
            server.url,
            dir.path().join("ws").display()
        ),
    );
    // A disk that fills up under the event log: its first event (the system prompt, ~27 KB) cannot be
    // written whole, while run.json and the rollups (a few KB each) can.
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("K", &server.key)
        .file_size_limit(16 * 1024)
        .args(["run", "--rehearse"])
        .args([&job])
        .output();
    assert_eq!(out.code, 3, "{}", out.stderr);
    let report = read_report(&report_dir);
    assert_eq!(report["outcome"]["class"], "infrastructure");
    assert!(
        report["outcome"]["message"].as_str().unwrap().contains("event log is incomplete"),
        "{}",
        report["outcome"]
    );
}

#[test]
fn an_interrupted_setup_command_is_recorded_and_stopped() {
    let server = shared();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ws/still-running");
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: setup-sigint\nsandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}\nllm: {{model: m}}\n\
             setup:\n  - sleep 20; touch {}\nsteps:\n  - message: never\n",
            server.url,
            dir.path().join("ws").display(),
            marker.display()
        ),
    );
    let child =
        Ohrun::new().current_dir(dir.path()).env("K", &server.key).args(["run", "--rehearse"]).args([&job]).spawn();
    // The command runs on the server (a local one): its shell's command line names the marker.
    let marker_text = marker.display().to_string();
    wait_until(Duration::from_secs(60), "the setup command runs", || !processes_with_arg(&marker_text).is_empty());
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(30));
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(!out.stderr.contains("step 1/1"), "no step is announced after the interrupt:\n{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/setup-sigint/setup-sigint"));
    let setup = report["setup"].as_array().unwrap();
    assert_eq!(setup.len(), 1, "the interrupted command is recorded: {report}");
    assert_eq!(setup[0]["interrupted"], true);
    assert_eq!(setup[0]["exit_code"], -1);
    assert!(setup[0]["command"].as_str().unwrap().starts_with("sleep 20"));
    assert_eq!(report["steps"][0]["end_reason"], "not_run");
    // Stopped, it never gets to `touch`; left running, it would, and only then exit.
    wait_until(Duration::from_secs(30), "the setup command is gone", || processes_with_arg(&marker_text).is_empty());
    assert!(!marker.exists(), "the command was not stopped on the server");
}

/// The pids of the processes one of whose command-line arguments contains `text`.
fn processes_with_arg(text: &str) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| String::from_utf8_lossy(arg).contains(text)))
        })
        .collect()
}

#[test]
fn a_crashed_local_server_is_seen_at_once() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: finish\n    args: {message: slow}\n    delay: 60s\n",
    )
    .unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: crash\nsandbox: {kind: local}\nllm: {model: m}\nsteps:\n  - message: Wait.\nrehearsal: script.yaml\n",
    );
    let child = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).spawn();
    wait_for_event(dir.path(), "crash", "MessageEvent", Duration::from_secs(120));
    // (Any of ohrun's threads may have started it: each run is a task on the runtime's workers.)
    let server_pids = children_of(child.id());
    assert!(!server_pids.is_empty(), "ohrun's agent-server child was found");
    for pid in &server_pids {
        // SAFETY: killing the agent-server our test's ohrun started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let killed = Instant::now();
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(killed.elapsed() < Duration::from_secs(15), "the crash took {:?} to be seen", killed.elapsed());
    let report = read_report(&dir.path().join("ohrun-reports/crash/crash"));
    assert_eq!(report["steps"][0]["end_reason"], "lost");
    assert!(report["steps"][0]["error"]["detail"].as_str().unwrap().contains("exited"), "{}", report["steps"][0]);
}

#[test]
fn a_sigkilled_ohrun_leaves_no_local_server_or_tmux_behind() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: terminal\n    args: {command: 'sleep 300'}\n  - tool: finish\n    args: {message: never}\n",
    )
    .unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: killed\nsandbox: {kind: local}\nllm: {model: m}\nsteps:\n  - message: Wait.\n    timeout: 10m\nrehearsal: script.yaml\n",
    );
    let child = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).spawn();
    wait_for_event(dir.path(), "killed", "\"tool_name\":\"terminal\"", Duration::from_secs(120));
    // Everything the server started carries its private TMUX_TMPDIR: the server, tmux, the shell, `sleep`.
    let server = children_of(child.id()).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| e.windows(12).any(|w| w == b"TMUX_TMPDIR="))
    });
    let server = server.expect("ohrun's agent-server child");
    let environ = std::fs::read(format!("/proc/{server}/environ")).unwrap();
    let tmux_entry = environ
        .split(|b| *b == 0)
        .find(|e| e.starts_with(b"TMUX_TMPDIR="))
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap();
    wait_until(Duration::from_secs(30), "the terminal's tmux server runs", || {
        processes_with_env(&tmux_entry).len() >= 3
    });
    signal(&child, libc::SIGKILL);
    let _ = wait_output(child, Duration::from_secs(10));
    wait_until(Duration::from_secs(30), "the server, tmux and the agent's command are gone", || {
        processes_with_env(&tmux_entry).is_empty()
    });
    // The checkpoint left behind is valid (schema-checked) and says how far the attempt got.
    let attempt = dir.path().join("ohrun-reports/killed/killed/attempt-1");
    let checkpoint = read_checkpoint(&attempt);
    assert_eq!(
        (&checkpoint["status"], &checkpoint["sandbox"]["disposition"]),
        (&json!("running"), &json!("provisioned"))
    );
    assert!(checkpoint["conversation_id"].is_string(), "{checkpoint}");
    assert_eq!(checkpoint["steps"][0]["end_reason"], "not_run", "the step had started, not ended: {checkpoint}");
    assert!(checkpoint["steps"][0]["started_at"].as_str().is_some_and(|t| t.starts_with("20")), "{checkpoint}");
    // What ohrun wrote is its user's alone: it holds agent output.
    use std::os::unix::fs::PermissionsExt;
    for path in
        [dir.path().join("ohrun-reports/killed"), dir.path().join("ohrun-reports/killed/killed"), attempt.clone()]
    {
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700, "{}", path.display());
    }
    for file in ["run.json", "events.jsonl", "agent-server.log"] {
        let mode = std::fs::metadata(attempt.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    for file in ["batch.json", "summary.json", "junit.xml"] {
        let mode = std::fs::metadata(dir.path().join("ohrun-reports/killed").join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}
