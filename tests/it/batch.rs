//! Batches end to end: many runs of a matrix at once on one real agent-server (the shared one, with the
//! scripted LLM), shards and their merge, failures and `--fail-fast`, retries of infrastructure failures
//! only, a budget shared by the batch, and resuming after a budget stop or a SIGKILL.

use crate::junit::assert_valid_junit;
use crate::proxy::{Action, Proxy, Rule};
use crate::server::shared;
use crate::support::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Two steps, each a terminal command that leaves a mark in the run's working directory, then `finish`:
/// the marks show that every scripted reply was served exactly once per run.
const SCRIPT: &str = "replies:
  - tool: terminal
    args: {command: 'echo first >> served.log'}
    delay: 300ms
  - tool: finish
    args: {message: first done}
  - tool: terminal
    args: {command: 'echo second >> served.log'}
    delay: 300ms
  - tool: finish
    args: {message: second done}
";

/// A job of `runs` runs (matrix `n: [1..runs]`) on the shared agent-server, each in its own working
/// directory `ws/RUN_ID`; `extra` is appended to the job.
fn batch_job(dir: &Path, name: &str, runs: usize, extra: &str, script: &str) -> PathBuf {
    std::fs::write(dir.join("script.yaml"), script).unwrap();
    let values: Vec<String> = (1..=runs).map(|n| n.to_string()).collect();
    let text = format!(
        "name: {name}\nmatrix:\n  n: [{}]\nsandbox:\n  kind: remote\n  url: {}\n  session_key: ${{SHARED_SESSION_KEY}}\n  \
         working_dir: {}/ws/{{{{ run.id }}}}\nllm:\n  model: m\n  options: {{num_retries: 0}}\n\
         steps:\n  - message: First, for run {{{{ n }}}}.\n  - message: Second.\nrehearsal: script.yaml\n{extra}",
        values.join(", "),
        shared().url,
        dir.display()
    );
    write_job(dir, "job.yaml", &text)
}

/// `ohrun run --rehearse ARGS JOB` in `dir`.
fn ohrun_run(dir: &Path, args: &[&str], job: &Path) -> Result {
    batch_cmd(dir, args, job).output()
}

fn batch_cmd(dir: &Path, args: &[&str], job: &Path) -> Ohrun {
    Ohrun::new()
        .current_dir(dir)
        .env("SHARED_SESSION_KEY", &shared().key)
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .args(["run", "--rehearse"])
        .args(args)
        .args([job])
}

/// The run ids `ohrun plan` lists for `job` with the selection flags `args`, in plan order.
fn plan_ids(job: &Path, args: &[&str]) -> Vec<String> {
    let plan = Ohrun::new().args(["plan", "--json"]).args(args).args([job]).output();
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    plan.json()["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

fn ids(summary: &Value) -> Vec<String> {
    runs(summary).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

fn runs(summary: &Value) -> &Vec<Value> {
    summary["runs"].as_array().unwrap()
}

fn by_status(summary: &Value, status: &str) -> Vec<String> {
    runs(summary).iter().filter(|r| r["status"] == status).map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

/// (id, status, cost) of every run: what two summaries of one plan must agree on.
fn outcomes(summary: &Value) -> Vec<(String, String, String)> {
    runs(summary)
        .iter()
        .map(|r| (r["id"].as_str().unwrap().into(), r["status"].as_str().unwrap().into(), r["cost"].to_string()))
        .collect()
}

fn cost(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a cost: {v}"))
}

fn time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

fn junit(batch: &Path) -> String {
    let xml = std::fs::read_to_string(batch.join("junit.xml")).unwrap();
    assert_valid_junit(&xml);
    xml
}

/// The most runs that were under way at one moment, from the reports' start and end times.
fn most_at_once(reports: &[Value]) -> usize {
    let mut edges: Vec<(SystemTime, i32)> =
        reports.iter().flat_map(|r| [(time(&r["started_at"]), 1), (time(&r["ended_at"]), -1)]).collect();
    edges.sort();
    edges.iter().scan(0, |now, (_, d)| Some(*now + d).inspect(|n| *now = *n)).max().unwrap_or(0) as usize
}

#[test]
fn twelve_runs_four_at_a_time_on_one_server_roll_up_and_shard() {
    let dir = tempfile::tempdir().unwrap();
    let job = batch_job(dir.path(), "twelve", 12, "", SCRIPT);
    let out = ohrun_run(dir.path(), &["--jobs", "4", "--json"], &job);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let batch = dir.path().join("ohrun-reports/twelve");
    let summary = read_summary(&batch);
    let planned = plan_ids(&job, &[]);
    assert_eq!(planned.len(), 12);
    assert_eq!(ids(&summary), planned, "every run once, in plan order");

    let mut reports = Vec::new();
    for r in runs(&summary) {
        let id = r["id"].as_str().unwrap();
        assert_eq!(
            (&r["status"], &r["end_reason"], &r["attempts"]),
            (&json!("succeeded"), &json!("finished"), &json!(1)),
            "{r}"
        );
        let report = read_report(batch.join(r["report"].as_str().unwrap()).parent().unwrap());
        assert_eq!(report["run"]["id"], id);
        assert_eq!(r["cost"], report["totals"]["cost"], "the summary's cost is the report's");
        assert_eq!(r["llm_calls"], report["totals"]["llm_calls"]);
        assert_eq!(r["tokens"], report["totals"]["tokens"]);
        // Each scripted reply was served exactly once in this run: its command ran once.
        let marks = std::fs::read_to_string(dir.path().join("ws").join(id).join("served.log")).unwrap();
        assert_eq!(marks, "first\nsecond\n", "run {id}");
        let terminal_calls = read_events(&batch.join(id))
            .iter()
            .filter(|e| e["kind"] == "ActionEvent" && e["tool_name"] == "terminal")
            .count();
        assert_eq!(terminal_calls, 2, "run {id}");
        reports.push(report);
    }
    let t = &summary["totals"];
    assert_eq!(t["by_status"], json!({"succeeded": 12}));
    let sum: f64 = runs(&summary).iter().map(|r| cost(&r["cost"])).sum();
    assert!((cost(&t["cost"]) - sum).abs() < 1e-9, "totals: {t}");
    assert!(cost(&t["cost"]) > 0.0);
    let at_once = most_at_once(&reports);
    assert_eq!(at_once, 4, "--jobs 4 runs four at once, never more");
    // Three waves of four: well under 1.6 × the slowest run per wave.
    let slowest = reports.iter().map(|r| r["duration_ms"].as_u64().unwrap()).max().unwrap();
    let wall = t["duration_ms"].as_u64().unwrap();
    assert!((wall as f64) < 1.6 * slowest as f64 * 3.0, "batch {wall} ms, slowest run {slowest} ms");

    let xml = junit(&batch);
    assert_eq!(xml.matches("<testcase ").count(), 12);
    assert!(!xml.contains("<failure") && !xml.contains("<error"), "{xml}");

    // `--json`: a line per run as it ended, then the totals.
    let lines: Vec<Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 13, "{}", out.stdout);
    let printed: HashSet<&str> = lines[..12]
        .iter()
        .map(|l| {
            assert_eq!(l["type"], "run");
            l["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(printed, planned.iter().map(String::as_str).collect());
    assert_eq!(
        (&lines[12]["type"], &lines[12]["exit_code"], &lines[12]["cost"]),
        (&json!("summary"), &json!(0), &t["cost"])
    );

    // Plain progress: every line stamped, every line about a run led by its id, none mixed with another.
    for line in out.stderr.lines() {
        let (stamp, rest) = line.split_at(9);
        assert!(stamp.as_bytes()[2] == b':' && stamp.ends_with(' '), "unstamped: {line}");
        if rest.starts_with("12 runs: ") {
            continue;
        }
        let id = planned.iter().find(|id| rest.starts_with(&format!("[{id}] "))).expect("led by its run's id");
        let after = &rest[id.len() + 3..];
        assert!(!planned.iter().any(|other| other != id && after.contains(other.as_str())), "mixed: {line}");
    }

    // Three shards run each run exactly once, and merged they say what the whole batch said.
    let mut sharded = Vec::new();
    for i in 1..=3 {
        let shard = format!("{i}/3");
        let out_dir = format!("shard-{i}");
        let out = ohrun_run(dir.path(), &["--jobs", "4", "--shard", &shard, "--out", &out_dir], &job);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let s = read_summary(&dir.path().join(&out_dir));
        assert_eq!(ids(&s), plan_ids(&job, &["--shard", &shard]), "`plan` lists what the shard runs");
        junit(&dir.path().join(&out_dir));
        sharded.extend(ids(&s));
    }
    assert_eq!(sharded.len(), 12);
    assert_eq!(sharded.iter().collect::<HashSet<_>>(), planned.iter().collect::<HashSet<_>>());
    let merge = Ohrun::new()
        .current_dir(dir.path())
        .args(["merge", "shard-1", "shard-2", "shard-3", "--out", "merged"])
        .output();
    assert_eq!(merge.code, 0, "{}", merge.stderr);
    let merged = read_summary(&dir.path().join("merged"));
    assert_eq!(outcomes(&merged), outcomes(&summary));
    assert_eq!(merged["totals"]["cost"], summary["totals"]["cost"]);
    for r in runs(&merged) {
        let report = dir.path().join("merged").join(r["report"].as_str().unwrap());
        assert!(report.is_file(), "the merged summary's report path resolves: {}", report.display());
    }
    assert_eq!(junit(&dir.path().join("merged")).matches("<testcase ").count(), 12);
    // A shard left out is not passed over in silence.
    let partial =
        Ohrun::new().current_dir(dir.path()).args(["merge", "shard-1", "shard-3", "--out", "partial"]).output();
    assert_eq!(partial.code, 3, "{}", partial.stderr);
    assert!(partial.stderr.contains("shard 2/3 of this plan is not among"), "{}", partial.stderr);
}

#[test]
fn with_a_prefetch_the_next_run_is_set_up_while_one_talks_to_its_agent() {
    let dir = tempfile::tempdir().unwrap();
    let job = batch_job(dir.path(), "prefetch", 3, "setup:\n  - sleep 0.5 && echo ready > setup.log\n", SCRIPT);
    let out = ohrun_run(dir.path(), &["--jobs", "1", "--prefetch", "1"], &job);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let batch = dir.path().join("ohrun-reports/prefetch");
    let summary = read_summary(&batch);
    let mut reports: Vec<Value> =
        runs(&summary).iter().map(|r| read_report(&batch.join(r["id"].as_str().unwrap()))).collect();
    // In the order they got their place (a run set up ahead may get it before an earlier one).
    reports.sort_by_key(|r| time(&r["steps"][0]["started_at"]));
    // One run at a time talks to its agent: the conversations (first step's start to last step's end) never overlap.
    let talks: Vec<(SystemTime, SystemTime)> =
        reports.iter().map(|r| (time(&r["steps"][0]["started_at"]), time(&r["steps"][1]["ended_at"]))).collect();
    for pair in talks.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "conversations overlap: {talks:?}");
    }
    // Each next run was set up ahead, while the one before it was talking, and then waited for its place.
    for (before, next) in reports.iter().zip(&reports[1..]) {
        assert_eq!(next["setup"][0]["exit_code"], 0);
        assert!(time(&next["started_at"]) < time(&before["steps"][1]["ended_at"]), "not set up ahead: {next}");
        assert!(next["sandbox"]["waited_for_place_ms"].as_u64().unwrap() > 0, "{}", next["sandbox"]);
    }
    for r in &reports {
        assert_eq!(r["outcome"]["class"], "succeeded");
        let wd = Path::new(r["sandbox"]["working_dir"].as_str().unwrap());
        assert_eq!(std::fs::read_to_string(wd.join("served.log")).unwrap(), "first\nsecond\n");
    }
}

#[test]
fn with_fail_fast_a_run_set_up_ahead_never_talks_after_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    // Run 1 fails its setup after 1 s; run 2, set up ahead meanwhile, is ready a second later.
    let extra = "setup:\n  - sleep {{ n }} && test {{ n }} -ne 1\n";
    let job = batch_job(dir.path(), "ff-prefetch", 2, extra, SCRIPT);
    let out = ohrun_run(dir.path(), &["--jobs", "1", "--prefetch", "1", "--fail-fast"], &job);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let batch = dir.path().join("ohrun-reports/ff-prefetch");
    let summary = read_summary(&batch);
    assert_eq!(runs(&summary)[0]["status"], "failed", "{summary}");
    let second = &runs(&summary)[1];
    assert_eq!(second["status"], "not_started", "{second}");
    assert!(second["message"].as_str().unwrap().contains("--fail-fast"), "{second}");
    let report = read_report(&batch.join(second["id"].as_str().unwrap()));
    assert_eq!(report["setup"][0]["exit_code"], 0, "it was set up ahead");
    assert_eq!(report["conversation_id"], Value::Null, "it never talked to its agent");
    assert_eq!(
        (&report["steps"][0]["end_reason"], &report["steps"][1]["end_reason"]),
        (&json!("not_run"), &json!("not_run"))
    );
}

#[test]
fn failed_runs_fail_the_batch_and_say_why_everywhere_and_fail_fast_starts_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    // Runs 3 and 7 fail in setup; a job failure is never retried, whatever `retries` says.
    let extra = "setup:\n  - test {{ n }} -ne 3 && test {{ n }} -ne 7\nretries: {max: 2, backoff: 1s}\n";
    let job = batch_job(dir.path(), "two-fail", 12, extra, SCRIPT);
    let step_summary = dir.path().join("step-summary.md");
    let out = batch_cmd(dir.path(), &["--jobs", "4"], &job)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &step_summary)
        .output();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let batch = dir.path().join("ohrun-reports/two-fail");
    let summary = read_summary(&batch);
    let planned = plan_ids(&job, &[]);
    let failed = by_status(&summary, "failed");
    assert_eq!(failed, vec![planned[2].clone(), planned[6].clone()]);
    assert_eq!(by_status(&summary, "succeeded").len(), 10);
    for id in &failed {
        let r = runs(&summary).iter().find(|r| r["id"] == id.as_str()).unwrap();
        assert_eq!((&r["end_reason"], &r["attempts"]), (&json!("setup"), &json!(1)), "{r}");
        assert!(!batch.join(id).join("attempt-2").exists(), "a job failure is not retried");
        assert!(
            out.stderr.contains(&format!("::error file={},title=ohrun {id}::setup", job.display())),
            "{}",
            out.stderr
        );
    }
    let xml = junit(&batch);
    assert_eq!(xml.matches("<failure ").count(), 2, "{xml}");
    assert!(
        xml.contains("message=\"setup: setup command `test 3 -ne 3 &amp;&amp; test 3 -ne 7` exited with 1"),
        "{xml}"
    );
    let table = std::fs::read_to_string(&step_summary).unwrap();
    assert!(table.contains("12 runs") && table.contains("10 succeeded") && table.contains("2 failed"), "{table}");
    for id in &failed {
        assert!(table.contains(&format!("| `{id}` | failed | setup: ")), "{table}");
    }

    // --fail-fast: the first failure (run 3) lets the runs under way finish, and starts no other.
    let out = ohrun_run(dir.path(), &["--jobs", "2", "--fail-fast", "--out", "ff"], &job);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let ff = read_summary(&dir.path().join("ff"));
    let first = runs(&ff).iter().find(|r| r["id"] == planned[2].as_str()).unwrap();
    assert_eq!(first["status"], "failed");
    let failed_at = time(&read_report(&dir.path().join("ff").join(&planned[2]))["ended_at"]);
    let not_started = by_status(&ff, "not_started");
    assert!(!not_started.is_empty(), "{ff}");
    for r in runs(&ff) {
        let id = r["id"].as_str().unwrap();
        if r["status"] == "not_started" {
            assert!(r["index"].as_u64().unwrap() > 3, "{r}");
            assert!(!dir.path().join("ff").join(id).exists(), "nothing of {id} was started");
        } else {
            let started = time(&read_report(&dir.path().join("ff").join(id))["started_at"]);
            assert!(started <= failed_at, "{id} started after the first failure");
        }
    }
    assert!(junit(&dir.path().join("ff")).contains("<skipped>not_started: "));
}

#[test]
fn a_lost_server_is_retried_and_the_second_attempt_succeeds_with_both_on_disk() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: finish\n    args: {message: done}\n    delay: 6s\n",
    )
    .unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: retried\nsandbox: {kind: local}\nllm: {model: m}\nsteps:\n  - message: Wait.\nrehearsal: script.yaml\n\
         retries: {max: 2, backoff: 1s}\n",
    );
    let child = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).spawn();
    let run = dir.path().join("ohrun-reports/retried/retried");
    wait_for_event(dir.path(), "retried", "MessageEvent", Duration::from_secs(120));
    let servers = children_of(child.id());
    assert!(!servers.is_empty(), "ohrun's agent-server was found");
    for pid in servers {
        // SAFETY: killing the agent-server this test's ohrun started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let out = wait_output(child, Duration::from_secs(240));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("attempt 1 failed") && out.stderr.contains("attempt 2 in"), "{}", out.stderr);
    let first = read_report(&run.join("attempt-1"));
    assert_eq!((&first["outcome"]["class"], &first["outcome"]["retryable"]), (&json!("infrastructure"), &json!(true)));
    assert_eq!(first["steps"][0]["end_reason"], "lost");
    let second = read_report(&run.join("attempt-2"));
    assert_eq!((&second["outcome"]["class"], &second["run"]["attempt"]), (&json!("succeeded"), &json!(2)));
    assert!(!read_events(&run.join("attempt-1")).is_empty() && !read_events(&run.join("attempt-2")).is_empty());
    assert_eq!(read_report(&run), second, "the run's report is its last attempt's");
    let summary = read_summary(&dir.path().join("ohrun-reports/retried"));
    let r = &summary["runs"][0];
    assert_eq!((&r["status"], &r["attempts"]), (&json!("succeeded"), &json!(2)));
    let both = cost(&first["totals"]["cost"]) + cost(&second["totals"]["cost"]);
    assert!((cost(&r["cost"]) - both).abs() < 1e-9, "the money of both attempts counts: {r}");
}

#[test]
fn an_agent_failure_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let script = "replies:\n  - error: {status: 400, message: the request is bad}\n";
    let job = batch_job(dir.path(), "agent-fails", 1, "retries: {max: 2, backoff: 1s}\n", script);
    let out = ohrun_run(dir.path(), &[], &job);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let summary = read_summary(&dir.path().join("ohrun-reports/agent-fails"));
    let r = &summary["runs"][0];
    assert_eq!((&r["status"], &r["end_reason"], &r["attempts"]), (&json!("failed"), &json!("error"), &json!(1)), "{r}");
    let run = dir.path().join("ohrun-reports/agent-fails").join(r["id"].as_str().unwrap());
    assert!(run.join("attempt-1").is_dir() && !run.join("attempt-2").exists());
}

#[test]
fn a_request_the_server_refuses_is_not_retried() {
    // The server answers "422" to the new conversation: ohrun asked for something it cannot take, and
    // asking again would get the same answer.
    let proxy = Proxy::start(shared().url.trim_start_matches("http://"));
    proxy.add_rule(Rule {
        matches: |l| l.starts_with("POST /api/conversations "),
        times: 10,
        action: Action::Respond(422, r#"{"detail": "the agent cannot be built"}"#.into()),
    });
    let dir = tempfile::tempdir().unwrap();
    let job = batch_job(dir.path(), "refused", 1, "retries: {max: 2, backoff: 1s}\n", SCRIPT);
    std::fs::write(&job, std::fs::read_to_string(&job).unwrap().replace(&shared().url, &proxy.url())).unwrap();
    let out = ohrun_run(dir.path(), &[], &job);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let r = &read_summary(&dir.path().join("ohrun-reports/refused"))["runs"][0];
    assert_eq!((&r["status"], &r["attempts"]), (&json!("errored"), &json!(1)), "{r}");
    assert!(r["message"].as_str().unwrap().contains("422"), "{r}");
    let creates = proxy.requests_matching("POST /api/conversations");
    assert_eq!(creates.iter().filter(|l| *l == "POST /api/conversations").count(), 1, "{creates:?}");
}

#[test]
fn a_batch_budget_holds_across_runs_and_resumes_and_a_raised_one_finishes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    // Every answer takes a moment, as a real model's does: a stop (`/pause`, applied between calls) can
    // reach the server before the agent's next call returns. (An instant model could always make one more.)
    let script = SCRIPT.replace("  - tool: finish\n", "  - tool: finish\n    delay: 400ms\n");
    let job = batch_job(dir.path(), "capped", 8, "", &script);
    // What the batch costs without a cap, run by run.
    let full = ohrun_run(dir.path(), &["--jobs", "4", "--out", "uncapped"], &job);
    assert_eq!(full.code, 0, "{}", full.stderr);
    let uncapped = read_summary(&dir.path().join("uncapped"));
    let cost_of: BTreeMap<String, f64> =
        runs(&uncapped).iter().map(|r| (r["id"].as_str().unwrap().to_string(), cost(&r["cost"]))).collect();
    let per_call =
        runs(&uncapped).iter().map(|r| cost(&r["cost"]) / r["llm_calls"].as_f64().unwrap()).fold(0.0, f64::max);
    let total = cost(&uncapped["totals"]["cost"]);
    // About half the runs: less than the four that start at once can spend, so some are stopped mid-way.
    let cap = (total * 0.45 * 1e6).round() / 1e6;
    let cap_text = format!("{cap:.6}");

    let out = ohrun_run(dir.path(), &["--jobs", "4", "--max-cost", &cap_text], &job);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let batch = dir.path().join("ohrun-reports/capped");
    let capped = read_summary(&batch);
    let spent = cost(&capped["totals"]["cost"]);
    assert!(spent <= cap + per_call + 1e-9, "spent {spent} against a cap of {cap} (a call is {per_call})");
    let (done, stopped) = (by_status(&capped, "succeeded"), by_status(&capped, "budget"));
    assert_eq!(done.len() + stopped.len(), 8, "{capped}");
    assert!(!done.is_empty() && !stopped.is_empty(), "{capped}");
    for r in runs(&capped).iter().filter(|r| r["status"] == "budget") {
        assert_eq!(r["end_reason"], "budget", "{r}");
    }
    assert!(junit(&batch).contains("message=\"budget: "));

    // The cap holds across a resume: what was spent, and the price of a call, are read back, so only
    // what the cap still has room for is spent (give or take the call in flight when a step is stopped). (The cap is not named again: the batch keeps
    // the flags it was started with.)
    let again = ohrun_run(dir.path(), &["--resume"], &job);
    assert_eq!(again.code, 4, "{}", again.stderr);
    let spent_again = cost(&read_summary(&batch)["totals"]["cost"]);
    assert!(
        spent_again <= cap + per_call + 1e-9,
        "a resume overshoots the cap by at most a call, like any batch: {spent_again} against {cap} (was {spent})"
    );

    // A raised cap finishes the rest; runs that succeeded are not redone.
    let attempts_before: BTreeMap<String, Vec<PathBuf>> =
        stopped.iter().map(|id| (id.clone(), attempt_dirs(&batch.join(id)))).collect();
    let resumed = ohrun_run(dir.path(), &["--resume", "--max-cost", "5"], &job);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let finished = read_summary(&batch);
    assert_eq!(by_status(&finished, "succeeded").len(), 8, "{finished}");
    let mut superseded = 0.0;
    for r in runs(&finished) {
        let id = r["id"].as_str().unwrap();
        let last = read_report(&batch.join(id));
        assert!(
            (cost(&last["totals"]["cost"]) - cost_of[id]).abs() < 1e-9,
            "{id}: its last attempt costs what it costs uncapped"
        );
        if done.contains(&id.to_string()) {
            assert_eq!((&r["attempts"], attempt_dirs(&batch.join(id)).len()), (&json!(1), 1), "{id} was not redone");
        } else {
            for earlier in &attempts_before[id] {
                superseded += cost(&read_report(earlier)["totals"]["cost"]);
            }
        }
    }
    // Every dollar is counted once: the uncapped total, plus what the stopped attempts had spent.
    let combined = cost(&finished["totals"]["cost"]);
    assert!((combined - (total + superseded)).abs() < 1e-9, "combined {combined} = {total} + {superseded}");

    // A changed plan is refused on resume, with the runs it affects, unless forced.
    let text =
        std::fs::read_to_string(&job).unwrap().replace("n: [1, 2, 3, 4, 5, 6, 7, 8]", "n: [1, 2, 3, 4, 5, 6, 7, 9]");
    std::fs::write(&job, text).unwrap();
    let refused = ohrun_run(dir.path(), &["--resume"], &job);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    let added = plan_ids(&job, &["--filter", "n=9"]).remove(0);
    assert!(
        refused.stderr.contains(&format!("+ {added} (new)")) && refused.stderr.contains("(gone)"),
        "{}",
        refused.stderr
    );
    let forced = ohrun_run(dir.path(), &["--resume", "--force"], &job);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let after = read_summary(&batch);
    assert_eq!(ids(&after), plan_ids(&job, &[]));
    assert_eq!(by_status(&after, "succeeded").len(), 8, "{after}");
    for r in runs(&after) {
        let before = runs(&finished).iter().find(|f| f["id"] == r["id"]).map_or(json!(0), |f| f["attempts"].clone());
        let attempts = if r["id"] == added.as_str() { json!(1) } else { before };
        assert_eq!(r["attempts"], attempts, "only the new run ran: {r}");
    }
}

/// What the last `stats` in an attempt's event log say the conversation spent (Σ over usage ids).
fn logged_cost(attempt: &Path) -> f64 {
    let log = std::fs::read_to_string(attempt.join("events.jsonl")).unwrap_or_default();
    let events = log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()); // a torn last line is skipped
    let stats = events.collect::<Vec<_>>().into_iter().rev().find_map(|e| match e["key"].as_str() {
        Some("stats") => Some(e["value"].clone()),
        Some("full_state") => Some(e["value"]["stats"].clone()),
        _ => None,
    });
    let usage = stats.map(|s| s["usage_to_metrics"].clone()).unwrap_or_default();
    usage.as_object().map_or(0.0, |u| u.values().map(|m| m["accumulated_cost"].as_f64().unwrap_or(0.0)).sum())
}

/// The `attempt-N` directories of a run, in order.
fn attempt_dirs(run: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("attempt-"))
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn a_batch_killed_mid_way_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let slow = SCRIPT.replace("300ms", "1500ms");
    let job = batch_job(dir.path(), "killed", 6, "", &slow);
    let batch = dir.path().join("ohrun-reports/killed");
    let child = batch_cmd(dir.path(), &["--jobs", "2"], &job).spawn();
    wait_until(Duration::from_secs(120), "two runs succeeded", || {
        std::fs::read_to_string(batch.join("summary.json")).is_ok_and(|t| t.matches("\"succeeded\"").count() >= 3)
    });
    signal(&child, libc::SIGKILL);
    let _ = wait_output(child, Duration::from_secs(10));

    // What is on disk is true: a run is succeeded exactly when its report says so.
    let partial = read_summary(&batch);
    let done = by_status(&partial, "succeeded");
    assert!(done.len() >= 2, "{partial}");
    for r in runs(&partial) {
        let id = r["id"].as_str().unwrap();
        let succeeded = batch.join(id).join("run.json").is_file()
            && read_report(&batch.join(id))["outcome"]["class"] == "succeeded";
        assert_eq!(r["status"] == "succeeded", succeeded, "{r}");
        assert!(r["status"] == "succeeded" || r["status"] == "pending", "{r}");
    }
    let interrupted: Vec<String> = runs(&partial)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .filter(|id| !done.contains(id) && batch.join(id).join("attempt-1").is_dir())
        .collect();
    assert!(!interrupted.is_empty(), "a run was under way when ohrun was killed");
    // Its run.json is a valid report (schema-checked) that says how far it got: a step under way had a
    // sandbox and a conversation before it.
    for id in &interrupted {
        let checkpoint = read_checkpoint(&batch.join(id).join("attempt-1"));
        assert_eq!((&checkpoint["status"], &checkpoint["ended_at"]), (&json!("running"), &Value::Null), "{checkpoint}");
        if checkpoint["steps"][0]["started_at"].as_str().is_some_and(|t| !t.is_empty()) {
            assert_eq!(checkpoint["sandbox"]["disposition"], "provisioned", "{checkpoint}");
            assert!(checkpoint["conversation_id"].is_string(), "{checkpoint}");
        }
    }

    let resumed = Ohrun::new()
        .current_dir(dir.path())
        .env("SHARED_SESSION_KEY", &shared().key)
        .args(["run", "--resume", "ohrun-reports/killed", "--jobs", "2"])
        .output();
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let summary = read_summary(&batch);
    assert_eq!(ids(&summary), plan_ids(&job, &[]));
    assert_eq!(by_status(&summary, "succeeded").len(), 6, "{summary}");
    for r in runs(&summary) {
        let id = r["id"].as_str().unwrap().to_string();
        let marks = std::fs::read_to_string(dir.path().join("ws").join(&id).join("served.log")).unwrap();
        if done.contains(&id) {
            assert_eq!((&r["attempts"], marks.as_str()), (&json!(1), "first\nsecond\n"), "{id} was not redone");
        } else if interrupted.contains(&id) {
            assert_eq!(r["attempts"], 2, "{id}: the interrupted attempt is kept, the next one numbered after it");
            assert!(batch.join(&id).join("attempt-1").is_dir());
            // The killed attempt left no report, but its money was spent: its event log says how much.
            let last = cost(&read_report(&batch.join(&id).join("attempt-2"))["totals"]["cost"]);
            let killed = logged_cost(&batch.join(&id).join("attempt-1"));
            assert!((cost(&r["cost"]) - (last + killed)).abs() < 1e-9, "{id}: {r} = {last} + {killed}");
            // The run's page says what the resume counted it as, not what its checkpoint still says.
            let page = std::fs::read_to_string(batch.join(&id).join("report.html")).unwrap();
            let data = page.split("id=\"data\">").nth(1).and_then(|d| d.split("</script>").next()).unwrap();
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["earlier_attempts"][0]["class"], "interrupted", "{id}: {}", data["earlier_attempts"]);
        }
    }
}

#[test]
fn a_matrix_axis_from_a_file_selects_and_shards_stably() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("repos.txt"), "# one per line\nalpha\nbeta\n\ngamma\n").unwrap();
    std::fs::write(dir.path().join("sizes.yaml"), "- s\n- m\n").unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: from-file\nmatrix:\n  repo: {file: repos.txt}\n  size: {file: sizes.yaml}\nsandbox: {kind: local}\nllm: {model: m}\n\
         steps:\n  - message: Look at {{ repo }} ({{ size }}).\n",
    );
    let plan = Ohrun::new().args(["plan", "--json"]).args([&job]).output();
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let values: Vec<(String, String)> = plan.json()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["matrix"]["repo"].as_str().unwrap().into(), r["matrix"]["size"].as_str().unwrap().into()))
        .collect();
    assert_eq!(values.len(), 6);
    assert_eq!(values[0], ("alpha".to_string(), "s".to_string()));
    assert_eq!(plan_ids(&job, &["--filter", "repo=beta"]).len(), 2);
    assert_eq!(plan_ids(&job, &["--filter", "repo=alpha,gamma", "--filter", "size=m"]).len(), 2);
    assert_eq!(plan_ids(&job, &["--filter", "gamma"]).len(), 2);

    // Shards cover every run once, and a run keeps its shard when the list grows.
    let shards =
        |job: &Path| -> Vec<Vec<String>> { (1..=3).map(|i| plan_ids(job, &["--shard", &format!("{i}/3")])).collect() };
    let before = shards(&job);
    assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 6);
    std::fs::write(dir.path().join("repos.txt"), "alpha\nbeta\ngamma\ndelta\n").unwrap();
    let after = shards(&job);
    assert_eq!(after.iter().map(Vec::len).sum::<usize>(), 8);
    for (b, a) in before.iter().zip(&after) {
        assert!(b.iter().all(|id| a.contains(id)), "a run moved to another shard: {b:?} → {a:?}");
    }

    // A missing file is an error at the line that names it.
    std::fs::remove_file(dir.path().join("sizes.yaml")).unwrap();
    let out = Ohrun::new().args(["validate"]).args([&job]).output();
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("cannot read `sizes.yaml`") && out.stderr.contains("job.yaml:4:"), "{}", out.stderr);
}

#[test]
fn on_a_terminal_runs_have_live_lines_above_an_overall_bar() {
    let dir = tempfile::tempdir().unwrap();
    let job = batch_job(dir.path(), "live", 3, "", &SCRIPT.replace("300ms", "1500ms"));
    // `script` gives ohrun a terminal (a pseudo-terminal whose screen is script's stdout); CI unset.
    // Two at a time: the third run starts when one has ended, so the bar shows a run done for seconds.
    let command = format!("'{}' run --rehearse --jobs 2 '{}'", ohrun_bin().display(), job.display());
    let child = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .current_dir(dir.path())
        .env_remove("CI")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .env("SHARED_SESSION_KEY", &shared().key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux starts");
    let out = wait_output(child, Duration::from_secs(180));
    let screen = out.stdout;
    assert_eq!(out.code, 0, "{screen}");
    // The overall bar, redrawn in place as runs end, with the money spent so far (live, before the end).
    assert!(screen.contains("0/3 done · 0 failed · 3 to go · $0"), "{screen}");
    assert!(
        screen.contains("1/3 done · 0 failed · 2 to go") || screen.contains("2/3 done · 0 failed · 1 to go"),
        "{screen}"
    );
    let amount = |t: &str| t.split_whitespace().next().unwrap_or("").parse::<f64>().unwrap_or(-1.0);
    let live_spend = screen.split("0/3 done · 0 failed · 3 to go · $").skip(1).any(|t| amount(t) > 0.0);
    assert!(live_spend, "the bar counts what running runs spend: {screen}");
    let spend: Vec<f64> = screen.split(" to go · $").skip(1).map(amount).collect();
    assert!(spend.windows(2).all(|w| w[0] <= w[1]), "the spend shown never goes back: {spend:?}");
    // A live line per running run with its step and cost, erased and redrawn by cursor movements.
    for id in plan_ids(&job, &[]) {
        assert!(screen.contains(&format!("[{id}] step 1/2 · ")), "{id}: {screen}");
        assert!(screen.contains(&format!("[{id}] ok {id}")), "{id}: {screen}");
    }
    assert!(screen.contains("\x1b[2K") || screen.contains("\x1b[1A"), "redrawn in place: {screen:?}");
    // Plain mode's time stamps are not used on a terminal.
    let stamped = screen.lines().any(|l| l.len() > 9 && l.as_bytes()[2] == b':' && l.as_bytes()[5] == b':');
    assert!(!stamped, "{screen}");
}

/// agent-server 1.58.2 runs at most `max_concurrent_runs` conversations at once (10 by default) and refuses
/// creates and `/run`s beyond that with 429 until a place frees: a batch wider than that on one server
/// waits for places (within each step's time), it does not fail after a few tries.
#[test]
fn a_batch_wider_than_the_servers_run_limit_waits_for_places() {
    let server = crate::server::ExternalServer::start_with(&[("OH_MAX_CONCURRENT_RUNS", "2")]);
    let dir = tempfile::tempdir().unwrap();
    let job = batch_job(dir.path(), "busy", 6, "", &SCRIPT.replace("delay: 300ms", "delay: 2s"));
    let text = std::fs::read_to_string(&job).unwrap().replace(&shared().url, &server.url);
    std::fs::write(&job, text).unwrap();
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("SHARED_SESSION_KEY", &server.key)
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .args(["run", "--rehearse", "--jobs", "6"])
        .args([&job])
        .output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary = read_summary(&dir.path().join("ohrun-reports/busy"));
    assert_eq!(by_status(&summary, "succeeded").len(), 6, "{summary}");
}
