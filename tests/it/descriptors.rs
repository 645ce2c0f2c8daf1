//! The open-file limit: ohrun raises its soft limit to the hard one at start, and a batch that needs
//! more descriptors than the hard limit allows is refused before anything is provisioned (exit 2), with
//! the limit, the need and the fix named.

use crate::server::shared;
use crate::support::*;
use std::path::Path;

/// A job of `runs` runs against `url` (each its own run of the rehearsal script).
fn many(dir: &Path, url: &str, runs: usize) -> std::path::PathBuf {
    std::fs::write(dir.join("script.yaml"), "replies:\n  - tool: finish\n    args: {message: done}\n").unwrap();
    let values: Vec<String> = (1..=runs).map(|n| n.to_string()).collect();
    write_job(
        dir,
        "job.yaml",
        &format!(
            "name: many\nmatrix:\n  n: [{}]\nsandbox: {{kind: remote, url: '{url}', session_key: '${{K}}', working_dir: '{}/{{{{ n }}}}'}}\nllm: {{model: m}}\nsteps:\n  - message: hi {{{{ n }}}}\nrehearsal: script.yaml\n",
            values.join(", "),
            dir.join("ws").display()
        ),
    )
}

#[test]
fn a_batch_beyond_the_hard_open_file_limit_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: a run that started would fail, not be refused.
    let job = many(dir.path(), "http://127.0.0.1:9", 300);
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("K", "unused")
        .open_file_limit(256, 256)
        .args(["run", "--rehearse", "--jobs", "300"])
        .args([&job])
        .output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    for named in
        ["300 runs at once need about 439 open files", "at most 256", "ulimit -Hn", "--jobs", "nothing was started"]
    {
        assert!(out.stderr.contains(named), "{named:?} not in:\n{}", out.stderr);
    }
    assert!(!dir.path().join("ohrun-reports").exists(), "nothing was written, let alone provisioned");
}

#[test]
fn a_low_soft_limit_is_raised_to_the_hard_one_and_the_batch_runs() {
    let server = shared();
    let dir = tempfile::tempdir().unwrap();
    let job = many(dir.path(), &server.url, 8);
    // 8 runs need about 74 descriptors: more than the soft limit, less than the hard one.
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("K", &server.key)
        .open_file_limit(40, 4096)
        .args(["run", "--rehearse", "--jobs", "8"])
        .args([&job])
        .output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary = read_summary(&dir.path().join("ohrun-reports/many"));
    assert_eq!(summary["totals"]["by_status"]["succeeded"], 8, "{summary}");
}

/// A run inside the batch directory its process holds has no lock file of its own (a descriptor per run
/// at 10,000 runs): the batch's lock covers it, and another ohrun that names that run directory as its
/// `report.dir` (its batch elsewhere) is refused all the same.
#[test]
fn a_run_directory_inside_a_running_batch_is_not_written_by_another_ohrun() {
    let server = shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: finish\n    args: {message: done}\n    delay: 20s\n",
    )
    .unwrap();
    let sandbox = format!(
        "sandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}\nllm: {{model: m}}\nsteps:\n  - message: hi\nrehearsal: script.yaml\n",
        server.url,
        dir.path().join("ws").display()
    );
    let first = write_job(dir.path(), "first.yaml", &format!("name: inside\n{sandbox}"));
    let second = write_job(
        dir.path(),
        "second.yaml",
        &format!("name: inside\n{sandbox}report: {{dir: 'ohrun-reports/inside/inside'}}\n"),
    );
    let running =
        Ohrun::new().current_dir(dir.path()).env("K", &server.key).args(["run", "--rehearse"]).args([&first]).spawn();
    let events = dir.path().join("ohrun-reports/inside/inside/attempt-1/events.jsonl");
    wait_until(std::time::Duration::from_secs(60), "the first run's step started", || {
        std::fs::read_to_string(&events).unwrap_or_default().contains("MessageEvent")
    });
    assert!(!dir.path().join("ohrun-reports/inside/inside/.ohrun.lock").exists(), "the run holds no lock file");
    let again = Ohrun::new()
        .current_dir(dir.path())
        .env("K", &server.key)
        .args(["run", "--rehearse", "--out", "elsewhere"])
        .args([&second])
        .output();
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains("another ohrun (pid")
            && again.stderr.contains("is writing into ohrun-reports/inside/inside"),
        "{}",
        again.stderr
    );
    let first = wait_output(running, std::time::Duration::from_secs(90));
    assert_eq!(first.code, 0, "{}", first.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/inside/inside"));
    assert_eq!(report["run"]["attempt"], 1, "no attempt of the other was made in it");
    assert!(!dir.path().join("ohrun-reports/inside/inside/attempt-2").exists());
}
