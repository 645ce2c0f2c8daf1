//! Trials end to end (`--repeat N`, `repeat: N`): a run id run N times, each trial in its own folder and
//! sandbox with its own report and summary row; pass@k, pass^k and flakiness from real verdicts; and a
//! resume after a kill that runs only the trials that left no verdict.

use crate::support::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A job of one run (`flaky`) whose check passes on trials 1, 3 and 4 only: ohrun gives checks the trial
/// in `$OHRUN_TRIAL`. Its setup leaves what ohrun gives setup commands in `trial.txt`.
fn flaky_job(dir: &Path, sandbox: &str, delay: &str) -> PathBuf {
    let script = format!("replies:\n  - tool: finish\n    args: {{message: done}}\n    delay: {delay}\n");
    std::fs::write(dir.join("script.yaml"), script).unwrap();
    let text = format!(
        "name: flaky\nsandbox: {sandbox}\nllm: {{model: m, options: {{num_retries: 0}}}}\n\
         setup:\n  - echo \"$OHRUN_RUN_ID $OHRUN_TRIAL $OHRUN_ATTEMPT\" > trial.txt\n\
         steps:\n  - message: Do it.\nrehearsal: script.yaml\n\
         verify:\n  checks:\n    - name: passes on 1, 3, 4\n      run: test \"$OHRUN_TRIAL\" != 2 && test \"$OHRUN_TRIAL\" != 5\n"
    );
    write_job(dir, "job.yaml", &text)
}

fn rows(summary: &Value) -> &Vec<Value> {
    summary["runs"].as_array().unwrap()
}

/// (trial, status, verdict) of every row.
fn verdicts(summary: &Value) -> Vec<(u64, String, String)> {
    rows(summary)
        .iter()
        .map(|r| {
            let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
            (r["trial"].as_u64().unwrap_or(0), text(&r["status"]), text(&r["verdict"]))
        })
        .collect()
}

/// Trials 1, 3 and 4 passed; 2 and 5 failed their check (status `failed`, end reason `checks`).
fn expected_verdicts() -> Vec<(u64, String, String)> {
    [(1, true), (2, false), (3, true), (4, true), (5, false)]
        .iter()
        .map(|(k, passed)| {
            let (status, verdict) = if *passed { ("succeeded", "passed") } else { ("failed", "failed") };
            (*k, status.to_string(), verdict.to_string())
        })
        .collect()
}

/// C(n, k), exactly, for the closed forms.
fn choose(n: u64, k: u64) -> f64 {
    if k > n { 0.0 } else { (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64) }
}

/// summary.json's statistics of run `flaky` are the closed forms for 3 passes of 5 — pass@k = 1 − C(2,k)/C(5,k),
/// pass^k = C(3,k)/C(5,k) — and the numbers worked out by hand.
fn assert_closed_form(summary: &Value) {
    let t = &summary["verification"]["trials"]["flaky"];
    assert_eq!(
        (&t["trials"], &t["passed"], &t["errors"], &t["flaky"]),
        (&json!(5), &json!(3), &json!(0), &json!(true)),
        "{t}"
    );
    let by_hand_at = [0.6, 0.9, 1.0, 1.0, 1.0];
    let by_hand_all = [0.6, 0.3, 0.1, 0.0, 0.0];
    for k in 1..=5u64 {
        let (at, all) = (t["pass_at"][k.to_string()].as_f64().unwrap(), t["pass_all"][k.to_string()].as_f64().unwrap());
        let i = k as usize - 1;
        assert!(
            (at - (1.0 - choose(2, k) / choose(5, k))).abs() < 1e-12 && (at - by_hand_at[i]).abs() < 1e-12,
            "pass@{k}: {t}"
        );
        assert!(
            (all - choose(3, k) / choose(5, k)).abs() < 1e-12 && (all - by_hand_all[i]).abs() < 1e-12,
            "pass^{k}: {t}"
        );
    }
    assert_eq!(t["pass_at"].as_object().unwrap().len(), 5, "k runs 1 … 5: {t}");
    let batch = &summary["verification"]["batch"];
    assert_eq!((&batch["passed"], &batch["failed"], &batch["error"]), (&json!(3), &json!(2), &json!(0)), "{batch}");
    let rate = &batch["pass_rate"];
    assert_eq!(rate["estimate"], 0.6, "{batch}");
    assert!(rate["low"].as_f64().unwrap() < 0.6 && rate["high"].as_f64().unwrap() > 0.6, "{batch}");
    // The mean cost per passed run: all five trials' money over the three passes.
    let cost: f64 = rows(summary).iter().map(|r| r["cost"].as_f64().unwrap()).sum();
    assert!((batch["cost_per_pass"].as_f64().unwrap() - cost / 3.0).abs() < 1e-9, "{batch}");
}

#[test]
fn five_trials_of_a_flaky_run_give_the_closed_form_pass_at_k_each_in_its_own_sandbox() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    let job = flaky_job(dir.path(), "{kind: local}", "0ms");
    let out = Ohrun::new()
        .current_dir(dir.path())
        .args(["run", "--rehearse", "--repeat", "5", "--jobs", "3"])
        .args([&job])
        .output();
    assert_eq!(out.code, 1, "some trials failed their check: {}", out.stderr);
    let batch = dir.path().join("ohrun-reports/flaky");
    let summary = read_summary(&batch);
    assert_eq!(verdicts(&summary), expected_verdicts(), "{summary}");
    assert_closed_form(&summary);

    // A folder per trial, each with its report (naming its trial), page and attempt; none for the run.
    let run_dir = batch.join("flaky");
    assert!(!run_dir.join("run.json").exists() && !run_dir.join("attempt-1").exists());
    let mut servers = Vec::new();
    for (k, row) in (1..=5).zip(rows(&summary)) {
        let folder = run_dir.join(format!("trial-{k}"));
        assert_eq!(row["report"], format!("flaky/trial-{k}/run.json"), "{row}");
        assert!(folder.join("report.html").is_file() && folder.join("attempt-1").is_dir());
        let report = read_report(&folder);
        assert_eq!(
            (&report["run"]["id"], &report["run"]["trial"], &report["run"]["attempt"]),
            (&json!("flaky"), &json!(k), &json!(1))
        );
        assert_eq!(report, read_report(&folder.join("attempt-1")), "the trial's report is its last attempt's");
        // Setup commands get the run, trial and attempt too.
        let wd = Path::new(report["sandbox"]["working_dir"].as_str().unwrap());
        assert_eq!(std::fs::read_to_string(wd.join("trial.txt")).unwrap(), format!("flaky {k} 1\n"));
        assert!(wd.starts_with(&folder), "{}", wd.display());
        servers.push(sandbox_pid(&report).expect("a server of its own"));
        assert_no_server_left(&report);
    }
    // A trial's page links back to the batch page; `ohrun view` of the run's folder points at its trials.
    let page = std::fs::read_to_string(run_dir.join("trial-1/report.html")).unwrap();
    let data = page.split("id=\"data\">").nth(1).and_then(|d| d.split("</script>").next()).unwrap();
    assert_eq!(serde_json::from_str::<Value>(data).unwrap()["links"]["batch"], "../../report.html");
    let view = Ohrun::new().args(["view", "--no-open"]).args([&run_dir]).output();
    assert_eq!(view.code, 2, "{}", view.stderr);
    assert!(view.stderr.contains("this run has trials") && view.stderr.contains("trial-1"), "{}", view.stderr);
    servers.sort();
    servers.dedup();
    assert_eq!(servers.len(), 5, "each trial had its own agent-server: {servers:?}");

    // Named by trial on the console, in JUnit, and the batch's last line gives the pass rate.
    for k in 1..=5 {
        let mark = if [2, 5].contains(&k) { "FAILED" } else { "ok" };
        assert!(out.stderr.contains(&format!("[flaky#{k}] {mark} flaky#{k} · ")), "{}", out.stderr);
    }
    let last = out.stderr.lines().last().unwrap();
    assert!(last.contains("5 trials of 1 run: 3 succeeded, 2 failed · pass rate 60 % (95 % CI "), "{last}");
    let xml = std::fs::read_to_string(batch.join("junit.xml")).unwrap();
    crate::junit::assert_valid_junit(&xml);
    for k in 1..=5 {
        assert!(
            xml.contains(&format!("<testcase name=\"passes on 1, 3, 4 (trial {k})\" classname=\"flaky\"")),
            "{xml}"
        );
    }
    assert_eq!(xml.matches("<failure ").count(), 2, "{xml}");
}

/// The `attempt-N` folders of a trial.
fn attempts_of(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().filter(|n| n.starts_with("attempt-")).map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn a_batch_of_trials_killed_after_two_resumes_with_the_missing_trials_only() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    // One server for the batch, one trial at a time, each a moment long: the kill comes between trials 2 and 5.
    let job = flaky_job(dir.path(), "{kind: local, share: batch}", "1500ms");
    let batch = dir.path().join("ohrun-reports/flaky");
    let run = |args: &[&str]| Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args(args).args([&job]);
    let child = run(&["--repeat", "5", "--jobs", "1"]).spawn();
    let ended = |s: &Value| rows(s).iter().filter(|r| r["status"] != "pending").count();
    wait_until(Duration::from_secs(180), "two trials ended", || {
        std::fs::read_to_string(batch.join("summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|s| ended(&s) >= 2)
    });
    signal(&child, libc::SIGKILL);
    let _ = wait_output(child, Duration::from_secs(10));
    let partial = read_summary(&batch);
    let before: Vec<(u64, String, String)> =
        verdicts(&partial).into_iter().filter(|(_, s, _)| s != "pending").collect();
    assert_eq!(before, expected_verdicts()[..before.len()], "trials go out in order with --jobs 1: {partial}");
    assert!(before.len() < 5, "the kill came before the batch ended: {partial}");
    let kept: Vec<(PathBuf, Vec<u8>)> = (1..=before.len())
        .map(|k| batch.join(format!("flaky/trial-{k}/run.json")))
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();

    // The resume keeps `--repeat 5` (batch.json) and runs the trials that left no verdict, trial 2's
    // failed check included: a failure is a sample, not something to run again until it passes.
    let resumed = run(&["--resume"]).output();
    assert_eq!(resumed.code, 1, "{}", resumed.stderr);
    let summary = read_summary(&batch);
    assert_eq!(verdicts(&summary), expected_verdicts(), "{summary}");
    assert_closed_form(&summary);
    for (file, bytes) in &kept {
        assert!(std::fs::read(file).unwrap() == *bytes, "{} was run again", file.display());
        assert_eq!(attempts_of(file.parent().unwrap()), ["attempt-1"]);
    }
    for k in before.len() + 1..=5 {
        let folder = batch.join(format!("flaky/trial-{k}"));
        let report = read_report(&folder);
        let attempt = report["run"]["attempt"].as_u64().unwrap();
        // A trial the kill cut short keeps that attempt; the resume's is numbered after it.
        assert_eq!(attempts_of(&folder).len() as u64, attempt, "{}", folder.display());
        assert!(resumed.stderr.contains(&format!("[flaky#{k}] ")), "trial {k} ran on resume: {}", resumed.stderr);
    }
    for k in 1..=before.len() {
        assert!(!resumed.stderr.contains(&format!("[flaky#{k}] ")), "trial {k} ran again: {}", resumed.stderr);
    }

    // Another number of trials is a changed plan: refused unless forced; forced, only the new trial runs.
    let refused = run(&["--resume", "--repeat", "3"]).output();
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("~ flaky (5 trials, now 3)"), "{}", refused.stderr);
    let runs_before: Vec<Vec<u8>> =
        (1..=5).map(|k| std::fs::read(batch.join(format!("flaky/trial-{k}/run.json"))).unwrap()).collect();
    let forced = run(&["--resume", "--repeat", "6", "--force"]).output();
    assert_eq!(forced.code, 1, "{}", forced.stderr);
    let six = read_summary(&batch);
    assert_eq!(rows(&six).len(), 6, "{six}");
    assert_eq!((&rows(&six)[5]["trial"], &rows(&six)[5]["verdict"]), (&json!(6), &json!("passed")), "{six}");
    for (k, bytes) in (1..=5).zip(&runs_before) {
        let now = std::fs::read(batch.join(format!("flaky/trial-{k}/run.json"))).unwrap();
        assert!(now == *bytes, "trial {k} was run again");
    }
    let pass_at_1 = six["verification"]["trials"]["flaky"]["pass_at"]["1"].as_f64().unwrap();
    assert!((pass_at_1 - 4.0 / 6.0).abs() < 1e-12, "{six}");
}
