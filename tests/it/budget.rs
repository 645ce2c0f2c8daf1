//! Budgets that hold: a batch of instant answers whose calls grow stays within its cap; a model without a
//! price cannot silently disable a cap; a run's recorded spend never goes down when the last stats cannot
//! be read; and the cap of a sharded batch is per process, which summary.json and `ohrun merge` say.

use crate::proxy::{Action, Proxy, Rule};
use crate::server::shared;
use crate::support::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A job of `runs` runs (matrix `n: [1..runs]`) of one step each on the shared agent-server, its
/// rehearsal script `script`; `extra` is appended.
fn write_batch_job(dir: &Path, name: &str, runs: usize, llm: &str, script: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("script.yaml"), script).unwrap();
    let values: Vec<String> = (1..=runs).map(|n| n.to_string()).collect();
    let text = format!(
        "name: {name}\nmatrix:\n  n: [{}]\nsandbox:\n  kind: remote\n  url: {}\n  session_key: ${{SHARED_SESSION_KEY}}\n  \
         working_dir: {}/ws/{{{{ run.id }}}}\nllm:\n{llm}steps:\n  - message: Go, run {{{{ n }}}}.\nrehearsal: script.yaml\n{extra}",
        values.join(", "),
        shared().url,
        dir.display()
    );
    write_job(dir, "job.yaml", &text)
}

const REHEARSED_LLM: &str = "  model: m\n  options: {num_retries: 0}\n";

fn ohrun(dir: &Path, args: &[&str]) -> Result {
    Ohrun::new()
        .current_dir(dir)
        .env("SHARED_SESSION_KEY", &shared().key)
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .args(args)
        .output()
}

fn cost(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a cost: {v}"))
}

/// What the last `stats` of an attempt's event log say the conversation spent.
fn logged_cost(attempt: &Path) -> f64 {
    let events = read_events(attempt);
    let stats = events.iter().rev().find(|e| e["kind"] == "ConversationStateUpdateEvent" && e["key"] == "stats");
    let usage = stats.map(|s| s["value"]["usage_to_metrics"].clone()).unwrap_or_default();
    usage.as_object().map_or(0.0, |u| u.values().map(|m| m["accumulated_cost"].as_f64().unwrap_or(0.0)).sum())
}

/// `calls` instant answers whose prompts grow by 2,000 tokens a call ($0.006 at the rehearsal's $3 per
/// million), each an action the agent runs at once (a task plan, each another, so no stuck detector
/// fires), then `finish`.
fn growing_script(calls: u64) -> String {
    let mut s = String::from("replies:\n");
    for k in 0..calls {
        let mut usage = format!("    usage: {{prompt_tokens: {}, completion_tokens: 100}}\n", 1000 + 2000 * k);
        if k == 0 {
            usage.push_str("    delay: 500ms\n");
        }
        if k + 1 < calls {
            let plan = format!("{{command: plan, task_list: [{{title: 'task {k}', status: todo}}]}}");
            s.push_str(&format!("  - tool: task_tracker\n    args: {plan}\n{usage}"));
        } else {
            s.push_str(&format!("  - tool: finish\n    args: {{message: done}}\n{usage}"));
        }
    }
    s
}

#[test]
fn a_parallel_batch_of_instant_growing_calls_spends_no_more_than_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    // Eight runs at once, ten calls each: $0.0045, $0.0105, … $0.0585, $0.315 a run, $2.52 in all.
    let job = write_batch_job(dir.path(), "growing", 8, REHEARSED_LLM, &growing_script(10), "");
    let cap = 1.0;
    let out = ohrun(dir.path(), &["run", "--rehearse", "--jobs", "8", "--max-cost", "1", job.to_str().unwrap()]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let summary = read_summary(&dir.path().join("ohrun-reports/growing"));
    let spent = cost(&summary["totals"]["cost"]);
    // README's bound: when no call grows by more than the largest growth seen before it (here every call
    // grows by the same $0.006), the batch spends no more than its cap.
    assert!(spent <= cap + 1e-9, "spent {spent} against a cap of {cap}:\n{summary}");
    assert!(spent > cap * 0.6, "the cap was used, not refused early: {spent}");
    let runs = summary["runs"].as_array().unwrap();
    assert!(runs.iter().any(|r| r["status"] == "budget"), "{summary}");
    for r in runs {
        let id = r["id"].as_str().unwrap();
        let last = last_attempt(&dir.path().join("ohrun-reports/growing").join(id));
        if last.is_dir() {
            assert!((cost(&r["cost"]) - logged_cost(&last)).abs() < 1e-9, "{id}: {r}");
        }
    }
}

#[test]
fn a_run_alone_whose_every_call_is_dearer_than_any_before_stops_short_of_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    // Calls of $0.0045, $0.0105, $0.0165, $0.0225 make $0.054; the next, $0.0285, would pass $0.08 —
    // though the dearest call seen so far ($0.0225) would still fit.
    let job = write_batch_job(dir.path(), "alone", 1, REHEARSED_LLM, &growing_script(10), "");
    let out = ohrun(dir.path(), &["run", "--rehearse", "--max-cost", "0.08", job.to_str().unwrap()]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let summary = read_summary(&dir.path().join("ohrun-reports/alone"));
    let run = &summary["runs"][0];
    assert_eq!((&run["status"], &run["llm_calls"]), (&json!("budget"), &json!(4)), "{summary}");
    assert!((cost(&run["cost"]) - 0.054).abs() < 1e-9, "{summary}");
}

/// The scripted LLM on its own, as a provider litellm has no price for (`openai/rehearsal`).
fn unpriced_llm() -> (tokio::runtime::Runtime, ohrun::rehearse::Rehearsal) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let script = serde_yaml::from_str("replies:\n  - tool: task_tracker\n    args: {command: view}\n").unwrap();
    let reh = rt.block_on(ohrun::rehearse::Rehearsal::start(script, std::net::Ipv4Addr::LOCALHOST.into())).unwrap();
    (rt, reh)
}

fn real_llm(reh: &ohrun::rehearse::Rehearsal, prices: &str) -> String {
    format!(
        "  model: openai/rehearsal\n  base_url: {}\n  api_key: ${{LLM_API_KEY}}\n  options: {{num_retries: 0}}\n{prices}",
        reh.base_url("127.0.0.1")
    )
}

fn run_unpriced(dir: &Path, job: &Path, args: &[&str]) -> Result {
    Ohrun::new()
        .current_dir(dir)
        .env("SHARED_SESSION_KEY", &shared().key)
        .env("LLM_API_KEY", "not-a-real-key")
        .args(["run"])
        .args(args)
        .args([job])
        .output()
}

#[test]
fn a_cap_on_a_model_without_a_price_is_refused_unless_the_job_names_the_price() {
    let (_rt, reh) = unpriced_llm();
    // A batch cap: the first run's first call is billed $0 for its tokens; it stops there, and no other run
    // sends anything.
    let dir = tempfile::tempdir().unwrap();
    let job = write_batch_job(dir.path(), "unpriced", 3, &real_llm(&reh, ""), "replies: []\n", "");
    let out = run_unpriced(dir.path(), &job, &["--jobs", "3", "--max-cost", "1"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("has no price"), "{}", out.stderr);
    assert!(out.stderr.contains("llm.input_cost_per_token"), "the hint names the keys:\n{}", out.stderr);
    let summary = read_summary(&dir.path().join("ohrun-reports/unpriced"));
    let runs = summary["runs"].as_array().unwrap();
    assert!(runs.iter().all(|r| r["status"] == "usage_error"), "{summary}");
    assert_eq!(summary["totals"]["tokens"]["prompt"], 1000, "one call was made, by one run: {summary}");

    // A run's own cap alike.
    let own = tempfile::tempdir().unwrap();
    let job =
        write_batch_job(own.path(), "unpriced-own", 1, &real_llm(&reh, ""), "replies: []\n", "limits: {max_cost: 1}\n");
    let out = run_unpriced(own.path(), &job, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let batch = own.path().join("ohrun-reports/unpriced-own");
    let report = read_report(&batch.join(read_summary(&batch)["runs"][0]["id"].as_str().unwrap()));
    assert_eq!(report["steps"][0]["error"]["code"], "NoPrice", "{report}");

    // Naming the price to assume keeps the cap: the run goes through and what it spent counts.
    let named = tempfile::tempdir().unwrap();
    let prices = "  input_cost_per_token: 0.000003\n  output_cost_per_token: 0.000015\n";
    let job = write_batch_job(named.path(), "priced", 1, &real_llm(&reh, prices), "replies: []\n", "");
    let out = run_unpriced(named.path(), &job, &["--max-cost", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(cost(&read_summary(&named.path().join("ohrun-reports/priced"))["totals"]["cost"]) > 0.0);
}

#[test]
fn a_run_whose_last_stats_cannot_be_read_still_counts_what_it_spent() {
    let dir = tempfile::tempdir().unwrap();
    let script =
        "replies:\n  - tool: task_tracker\n    args: {command: view}\n  - tool: finish\n    args: {message: done}\n";
    let job = write_batch_job(dir.path(), "unread", 1, REHEARSED_LLM, script, "");
    // Every read of the conversation (where its stats are) fails; the event stream still shows the spend.
    let proxy = Proxy::start(shared().url.trim_start_matches("http://"));
    let conversation = |line: &str| {
        let path = line.split(' ').nth(1).unwrap_or("");
        line.starts_with("GET ")
            && path
                .strip_prefix("/api/conversations/")
                .is_some_and(|id| id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
    };
    proxy.add_rule(Rule {
        matches: conversation,
        times: 1000,
        action: Action::Respond(404, r#"{"detail":"Not Found"}"#.into()),
    });
    std::fs::write(&job, std::fs::read_to_string(&job).unwrap().replace(&shared().url, &proxy.url())).unwrap();
    let out = ohrun(dir.path(), &["run", "--rehearse", "--max-cost", "1", job.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!proxy.requests_matching("GET /api/conversations/").is_empty());
    let batch = dir.path().join("ohrun-reports/unread");
    let summary = read_summary(&batch);
    let id = summary["runs"][0]["id"].as_str().unwrap().to_string();
    let logged = logged_cost(&last_attempt(&batch.join(&id)));
    let report = read_report(&batch.join(&id));
    assert!(logged > 0.0, "the event log shows the spend");
    for (what, figure) in [
        ("totals", &report["totals"]["cost"]),
        ("step", &report["steps"][0]["cost"]),
        ("summary", &summary["totals"]["cost"]),
    ] {
        assert!((cost(figure) - logged).abs() < 1e-9, "{what}: {figure} against {logged} logged");
    }
}

#[test]
fn a_batch_cap_holds_per_shard_and_merge_reports_the_total_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let script =
        "replies:\n  - tool: task_tracker\n    args: {command: view}\n  - tool: finish\n    args: {message: done}\n";
    // Two calls a run ($0.0045 each): each half of the plan stays under $0.03, both together do not.
    let job = write_batch_job(dir.path(), "halves", 4, REHEARSED_LLM, script, "batch:\n  max_cost: 0.03\n");
    for (out, filter) in [("one", "n=1,2"), ("two", "n=3,4")] {
        let run = ohrun(dir.path(), &["run", "--rehearse", "--out", out, "--filter", filter, job.to_str().unwrap()]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let summary = read_summary(&dir.path().join(out));
        let spent = summary["totals"]["cost"].clone();
        assert_eq!(
            summary["budget"],
            json!({"cap": 0.03, "processes": 1, "spent": spent, "over_cap": false}),
            "{summary}"
        );
    }
    let merged = ohrun(dir.path(), &["merge", "one", "two", "--out", "merged"]);
    assert_eq!(merged.code, 0, "{}", merged.stderr);
    let summary = read_summary(&dir.path().join("merged"));
    let total = cost(&summary["totals"]["cost"]);
    assert!(total > 0.03, "{summary}");
    assert_eq!(
        summary["budget"],
        json!({"cap": 0.03, "processes": 2, "spent": summary["totals"]["cost"], "over_cap": true}),
        "{summary}"
    );
    assert!(
        merged.stderr.contains(&format!("${total} spent against a batch budget of $0.03"))
            && merged.stderr.contains("2 "),
        "{}",
        merged.stderr
    );
}

#[test]
fn a_run_under_a_budget_goes_on_when_its_socket_is_cut_at_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let script = "replies:\n  - tool: task_tracker\n    args: {command: view}\n  - tool: task_tracker\n    args: {command: plan, task_list: [{title: one, status: todo}]}\n  - tool: finish\n    args: {message: done}\n";
    let job = write_batch_job(dir.path(), "cut", 1, REHEARSED_LLM, script, "");
    // The socket goes down just as the agent stops after its first call, before the `full_state` that
    // says so: the stop is seen again after the reconnect (or over REST), and let go once.
    let proxy = Proxy::start(shared().url.trim_start_matches("http://"));
    proxy.cut_after("waiting_for_confirmation", Vec::new());
    std::fs::write(&job, std::fs::read_to_string(&job).unwrap().replace(&shared().url, &proxy.url())).unwrap();
    let out = ohrun(dir.path(), &["run", "--rehearse", "--max-cost", "1", job.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(proxy.cuts(), 1);
    let batch = dir.path().join("ohrun-reports/cut");
    let summary = read_summary(&batch);
    let id = summary["runs"][0]["id"].as_str().unwrap().to_string();
    let report = read_report(&batch.join(&id));
    assert_eq!((&report["steps"][0]["end_reason"], &report["totals"]["llm_calls"]), (&json!("finished"), &json!(3)));
    let events = read_events(&batch.join(&id));
    let actions = events.iter().filter(|e| e["kind"] == "ActionEvent").count();
    assert_eq!(actions, 3, "each call's action once");
}

#[test]
fn agent_max_iterations_ends_a_step_alike_with_and_without_a_budget() {
    let script = "replies:\n  - tool: task_tracker\n    args: {command: view}\n  - tool: task_tracker\n    args: {command: plan, task_list: [{title: one, status: todo}]}\n  - tool: task_tracker\n    args: {command: plan, task_list: [{title: two, status: todo}]}\n  - tool: finish\n    args: {message: done}\n";
    for cap in [None, Some("1")] {
        let dir = tempfile::tempdir().unwrap();
        let job = write_batch_job(dir.path(), "iterations", 1, REHEARSED_LLM, script, "agent: {max_iterations: 2}\n");
        let mut args = vec!["run", "--rehearse", job.to_str().unwrap()];
        args.extend(cap.iter().flat_map(|c| ["--max-cost", *c]));
        let out = ohrun(dir.path(), &args);
        assert_eq!(out.code, 1, "{cap:?}: {}", out.stderr);
        let batch = dir.path().join("ohrun-reports/iterations");
        let report = read_report(&batch.join(read_summary(&batch)["runs"][0]["id"].as_str().unwrap()));
        let step = &report["steps"][0];
        assert_eq!((&step["end_reason"], &step["error"]["code"]), (&json!("error"), &json!("MaxIterationsReached")));
        assert_eq!(report["totals"]["llm_calls"], 2, "{cap:?}: {report}");
    }
}
