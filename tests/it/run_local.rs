//! End to end on the real agent-server (local and remote backends), driven through the real binary with
//! the scripted LLM (`--rehearse`). Tests that need a server of their own (process supervision, signals)
//! use `kind: local`; the others share one `kind: remote` server, each in its own conversation and
//! working directory, which keeps the suite's wall time down.

use crate::server::{ExternalServer, shared};
use crate::support::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Price the seed's rehearsal uses by default (USD/token) and its scripted usage per call.
const INPUT_PRICE: f64 = 0.000003;
const OUTPUT_PRICE: f64 = 0.000015;
const PROMPT_TOKENS: f64 = 1200.0;
const COMPLETION_TOKENS: f64 = 80.0;

pub fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["id"].as_str().expect("every event has an id").to_string()).collect()
}

/// Watches `dir/FACTS.txt` while ohrun runs: the most lines it ever had.
fn watch_facts(dir: std::path::PathBuf) -> (Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut most = 0;
        while !s.load(Ordering::SeqCst) {
            if let Ok(text) = std::fs::read_to_string(dir.join("FACTS.txt")) {
                most = most.max(text.lines().count());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        most
    });
    (stop, handle)
}

#[test]
fn seed_job_on_a_local_agent_server() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("ohrun-reports/facts-local/facts-local");
    let (stop, watcher) = watch_facts(report_dir.join("attempt-1/workspace"));
    let job = repo_root().join("jobs/local.yaml");
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env_remove("LLM_API_KEY")
        .args(["run", "--rehearse"])
        .args([&job])
        .output();
    stop.store(true, Ordering::SeqCst);
    let most_lines = watcher.join().unwrap();
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);

    let report = read_report(&report_dir);
    assert_eq!(report["outcome"]["class"], "succeeded");
    assert_eq!(report["rehearsal"], true);
    assert_eq!(report["sandbox"]["kind"], "local");
    assert_eq!(report["sandbox"]["disposition"], "released");
    assert_eq!(report["sandbox"]["agent_server_version"], "1.58.2");
    assert_eq!(report["warnings"], serde_json::json!([]), "the pinned server raises no version warning");
    assert_eq!(report["setup"][0]["exit_code"], 0);
    // What each step changed, taken inside the sandbox.
    assert_eq!(report["steps"][0]["diff"]["changes"], serde_json::json!(["A FACTS.txt"]), "{}", report["steps"][0]);
    assert_eq!(report["steps"][1]["diff"]["changes"], serde_json::json!(["D FACTS.txt"]), "{}", report["steps"][1]);
    assert!(report["setup"][0]["stdout"].as_str().unwrap().contains("Hello from a local agent-server!"));
    // pwd printed the workspace: setup commands run in the sandbox's working directory.
    assert!(
        report["setup"][0]["stdout"].as_str().unwrap().contains(report["sandbox"]["working_dir"].as_str().unwrap())
    );

    // Step 1 wrote FACTS.txt with three lines; step 2 removed it.
    assert_eq!(most_lines, 3, "FACTS.txt had 3 lines after step 1");
    assert!(!report_dir.join("attempt-1/workspace/FACTS.txt").exists(), "FACTS.txt is gone after step 2");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for s in steps {
        assert_eq!(s["end_reason"], "finished");
        assert_eq!(s["execution_status"], "finished");
        assert!(s["event_count"].as_u64().unwrap() > 0);
        // Measured from the moment the final frame was read off the socket: present, and small.
        let latency = s["completion_latency_ms"].as_f64().expect("a step that ended on a frame has a latency");
        assert!((0.0..100.0).contains(&latency), "{latency} ms");
    }
    assert_eq!(steps[0]["final_message"], "I wrote 3 facts about the project into FACTS.txt.");
    assert_eq!(steps[1]["final_message"], "FACTS.txt is deleted.");
    assert_seed_costs(&report, &std::fs::read_to_string(report_dir.join("run.json")).unwrap());

    // Every event once, and as many as the report counts.
    let events = read_events(&report_dir);
    let ids = ids(&events);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an event id appears twice in events.jsonl");
    assert_eq!(report["totals"]["events"].as_u64().unwrap() as usize, ids.len());
    assert!(events.iter().any(|e| e["kind"] == "ActionEvent" && e["tool_name"] == "finish"));
    assert_no_server_left(&report);
}

/// Five scripted calls (three in step 1, two in step 2) at the rehearsal's prices, exact to the cent's
/// billionth: the report's money is decimal, with no float noise in the text.
fn assert_seed_costs(report: &Value, text: &str) {
    let per_call = PROMPT_TOKENS * INPUT_PRICE + COMPLETION_TOKENS * OUTPUT_PRICE;
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(report["totals"]["cost"].as_f64().unwrap(), 0.024, "total cost");
    assert!((steps[0]["cost"].as_f64().unwrap() - 3.0 * per_call).abs() < 1e-12);
    assert!((steps[1]["cost"].as_f64().unwrap() - 2.0 * per_call).abs() < 1e-12);
    assert!(text.contains("\"cost\": 0.024,"), "the total is written as 0.024:\n{text}");
    assert!(text.contains("\"cost\": 0.0144,") && text.contains("\"cost\": 0.0096,"), "step costs are exact:\n{text}");
    for line in text.lines().filter(|l| l.contains("cost")) {
        assert!(!line.contains("000000") && !line.contains("999999"), "float noise in a cost: {line}");
    }
    assert_eq!(report["totals"]["llm_calls"], 5);
    assert_eq!(report["totals"]["tokens"]["prompt"], 5 * 1200);
    assert_eq!(report["totals"]["tokens"]["completion"], 5 * 80);
}

#[test]
fn seed_job_on_a_remote_agent_server_logs_exactly_the_servers_events() {
    let server = ExternalServer::start();
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    let rehearsal = repo_root().join("jobs/rehearsals/facts.yaml");
    let job = write_job(
        dir.path(),
        "remote.yaml",
        &format!(
            "name: facts-remote\nsandbox:\n  kind: remote\n  url: {}\n  session_key: ${{TEST_SESSION_KEY}}\n  working_dir: {}\n\
             llm:\n  model: m\n  api_key: ${{LLM_API_KEY}}\nsetup:\n  - echo 'Hello from a remote agent-server!' && pwd\n\
             steps:\n  - message: Write 3 facts into FACTS.txt.\n  - message: Now delete it.\n\
             cleanup: never\nrehearsal: {}\n",
            server.url,
            workspace.display(),
            rehearsal.display()
        ),
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("TEST_SESSION_KEY", &server.key)
        .args(["run", "--rehearse", "--json"])
        .args([&job])
        .output();
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/facts-remote/facts-remote"));
    // `--json`: a line for the run as it ended, then the batch's totals.
    let printed: Vec<Value> = out.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(printed.len(), 2, "{}", out.stdout);
    assert_eq!(
        (&printed[0]["type"], &printed[0]["id"], &printed[0]["status"]),
        (&json!("run"), &report["run"]["id"], &json!("succeeded"))
    );
    assert_eq!(printed[0]["cost"], report["totals"]["cost"]);
    assert_eq!(printed[0]["report"], "facts-remote/run.json");
    assert_eq!(
        (&printed[1]["type"], &printed[1]["exit_code"], &printed[1]["runs"]),
        (&json!("summary"), &json!(0), &json!(1))
    );
    assert_eq!(report["sandbox"]["disposition"], "attached");
    assert!(report["setup"][0]["stdout"].as_str().unwrap().contains("Hello from a remote agent-server!"));
    assert!(!workspace.join("FACTS.txt").exists());
    assert_seed_costs(
        &report,
        &std::fs::read_to_string(dir.path().join("ohrun-reports/facts-remote/facts-remote/run.json")).unwrap(),
    );
    // The session key never reaches the report or the console.
    let text = std::fs::read_to_string(dir.path().join("ohrun-reports/facts-remote/facts-remote/run.json")).unwrap();
    assert!(!text.contains(&server.key) && !out.stderr.contains(&server.key) && !out.stdout.contains(&server.key));

    // `cleanup: never` keeps the conversation: its events on the server are exactly the logged ones.
    let cid = report["conversation_id"].as_str().unwrap();
    let logged = ids(&read_events(&dir.path().join("ohrun-reports/facts-remote/facts-remote")));
    let on_server = ids(&server.events(cid));
    let logged_set: HashSet<&String> = logged.iter().collect();
    assert_eq!(logged_set.len(), logged.len(), "an event id appears twice in events.jsonl");
    assert_eq!(logged_set, on_server.iter().collect::<HashSet<_>>(), "events.jsonl and events/search differ");
}

/// What a job run by [`run_job`] left.
pub struct Run {
    pub code: i32,
    pub report: Value,
    pub stderr: String,
    pub dir: tempfile::TempDir,
}

/// A one-step job with `extra` YAML appended, on the shared remote server (`sandbox` None) or on the
/// given sandbox; the report is read from `ohrun-reports/NAME`.
pub fn run_job(name: &str, sandbox: Option<&str>, extra: &str, script: Option<&str>, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = match sandbox {
        Some(s) => s.to_string(),
        None => {
            let server = shared();
            format!(
                "  kind: remote\n  url: {}\n  session_key: ${{SHARED_SESSION_KEY}}\n  working_dir: {}\n",
                server.url,
                dir.path().join("ws").display()
            )
        }
    };
    let mut text = format!(
        "name: {name}\nsandbox:\n{sandbox}llm:\n  model: m\n  api_key: ${{LLM_API_KEY}}\n  options: {{num_retries: 0}}\n{extra}"
    );
    if !text.contains("\nsteps:") {
        text.push_str("steps:\n  - message: Do the thing.\n");
    }
    if let Some(s) = script {
        std::fs::write(dir.path().join("script.yaml"), s).unwrap();
        text.push_str("rehearsal: script.yaml\n");
    }
    let job = write_job(dir.path(), "job.yaml", &text);
    let mut cmd = Ohrun::new().current_dir(dir.path()).env_remove("LLM_API_KEY").args(["run"]).args(args).args([&job]);
    if sandbox.contains("SHARED_SESSION_KEY") {
        cmd = cmd.env("SHARED_SESSION_KEY", &shared().key);
    }
    let out = cmd.output();
    let report_dir = dir.path().join(format!("ohrun-reports/{name}/{name}"));
    let report = if report_dir.join("run.json").exists() { read_report(&report_dir) } else { Value::Null };
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    Run { code: out.code, report, stderr: out.stderr, dir }
}

const LOCAL: Option<&str> = Some("  kind: local\n");

#[test]
fn a_failing_setup_command_fails_the_run_and_skips_the_steps() {
    let r = run_job(
        "setup-fails",
        None,
        "setup:\n  - echo before; echo oops >&2; exit 3\n  - echo never\n",
        None,
        &["--rehearse"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.report["outcome"]["class"], "failed");
    assert_eq!(
        r.report["outcome"]["message"],
        "setup command `echo before; echo oops >&2; exit 3` exited with 3: oops"
    );
    assert_eq!(r.report["setup"].as_array().unwrap().len(), 1, "the second command never ran");
    assert_eq!(r.report["setup"][0]["exit_code"], 3);
    assert_eq!(r.report["setup"][0]["stdout"], "before\n");
    assert_eq!(r.report["setup"][0]["stderr"], "oops\n");
    assert_eq!(r.report["steps"][0]["end_reason"], "not_run");
}

#[test]
fn allow_failure_lets_the_run_go_on() {
    let r = run_job("setup-allowed", None, "setup:\n  - run: exit 4\n    allow_failure: true\n", None, &["--rehearse"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.report["setup"][0]["exit_code"], 4);
    assert_eq!(r.report["steps"][0]["end_reason"], "finished");
}

#[test]
fn an_llm_error_ends_the_step_with_its_code_and_detail_and_no_earlier_final_message() {
    let script = "replies:\n  - tool: finish\n    args: {message: the first step is done}\n  - error: {status: 400, message: the scripted provider refuses}\n";
    let steps = "steps:\n  - message: First.\n  - message: Second.\n";
    let r = run_job("llm-error", None, steps, Some(script), &["--rehearse"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.report["steps"][0]["final_message"], "the first step is done");
    let step = &r.report["steps"][1];
    assert_eq!(step["end_reason"], "error");
    assert_eq!(step["execution_status"], "error");
    assert!(step["final_message"].is_null(), "the failed step has no final message of its own: {step}");
    assert!(!step["error"]["code"].as_str().unwrap().is_empty());
    assert!(step["error"]["detail"].as_str().unwrap().contains("the scripted provider refuses"), "{step}");
    let message = r.report["outcome"]["message"].as_str().unwrap();
    assert!(message.starts_with("step 2 ended: error: ") && !message.ends_with(": "), "{message}");
}

#[test]
fn a_step_that_runs_out_of_time_is_stopped() {
    let script = "replies:\n  - tool: finish\n    args: {message: too late}\n    delay: 60s\n";
    let steps = "steps:\n  - message: Take your time.\n    timeout: 3s\n    max_wait: 5s\n  - message: never sent\n";
    let started = Instant::now();
    let r = run_job("step-timeout", None, steps, Some(script), &["--rehearse"]);
    assert!(started.elapsed() < Duration::from_secs(50), "the timeout did not cut the step short");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.report["steps"][0]["end_reason"], "timeout");
    assert_eq!(r.report["steps"][1]["end_reason"], "not_run");
    assert_eq!(r.report["outcome"]["class"], "failed");
}

#[test]
fn a_missing_llm_key_is_a_usage_error_before_provisioning() {
    let r = run_job("no-key", LOCAL, "", None, &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("LLM_API_KEY"), "{}", r.stderr);
    assert!(r.stderr.contains("--rehearse"), "without --rehearse, the hint offers it:\n{}", r.stderr);
    assert_eq!(r.report["outcome"]["class"], "usage_error");
    assert_eq!(r.report["sandbox"]["disposition"], "not_provisioned");
    assert!(
        !r.dir.path().join("ohrun-reports/no-key/no-key/attempt-1/agent-server.log").exists(),
        "nothing was started"
    );
}

#[test]
fn an_agent_server_that_cannot_start_is_an_infrastructure_error_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: broken-server\nsandbox:\n  kind: local\n  command: [sh, -c, 'echo the server is broken >&2; exit 7']\nllm:\n  model: m\nsteps:\n  - message: hi\n",
    );
    let out = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).output();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("the server is broken"), "the log tail is shown:\n{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/broken-server/broken-server"));
    assert_eq!(report["outcome"]["class"], "infrastructure");
    assert!(report["outcome"]["message"].as_str().unwrap().contains("the server is broken"));
    assert!(report["sandbox"]["id"].as_str().unwrap().starts_with("pid:"), "the process is recorded");
}

#[test]
fn an_unknown_tool_is_refused_before_anything_starts() {
    let r = run_job("unknown-tool", LOCAL, "agent:\n  tools: [terminal, nope_tool]\n", None, &["--rehearse"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("unknown tool `nope_tool`") && r.stderr.contains("job.yaml:"), "{}", r.stderr);
    assert!(!r.dir.path().join("ohrun-reports").exists(), "nothing was started");
}

#[test]
fn an_unknown_tool_on_a_server_of_ones_own_is_refused_before_any_llm_call() {
    // A server ohrun does not manage may have tools of its own: it is asked, after it started.
    let extra = "agent:\n  tools: [terminal, nope_tool]\n";
    let r = run_job("unknown-tool-remote", None, extra, None, &["--rehearse"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no tool named nope_tool"), "{}", r.stderr);
    assert_eq!(r.report["outcome"]["class"], "usage_error");
    assert_eq!(r.report["totals"]["llm_calls"], 0);
    assert!(r.report["conversation_id"].is_null(), "no conversation was created");
}

#[test]
fn a_matrix_runs_with_a_report_each() {
    let extra = "matrix:\n  topic: [alpha, beta]\nsteps:\n  - message: Tell me about {{ topic }}.\n";
    let r = run_job("fan-out", None, extra, None, &["--rehearse"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let plan = Ohrun::new().args(["plan", "--json"]).args([r.dir.path().join("job.yaml")]).output().json();
    for run in plan["runs"].as_array().unwrap() {
        let id = run["id"].as_str().unwrap();
        let report = read_report(&r.dir.path().join(format!("ohrun-reports/fan-out/{id}")));
        assert_eq!(report["run"]["matrix"]["topic"], run["matrix"]["topic"]);
        assert_eq!(report["outcome"]["class"], "succeeded");
        assert!(report["steps"][0]["message"].as_str().unwrap().contains(run["matrix"]["topic"].as_str().unwrap()));
        assert!(r.stderr.contains(&format!("ok {id}")), "one summary line per run:\n{}", r.stderr);
    }
}

#[test]
fn sigint_during_a_step_interrupts_cleans_up_and_reports() {
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
        "name: interrupted\nsandbox: {kind: local}\nllm: {model: m}\nsteps:\n  - message: Wait.\n  - message: Never.\nrehearsal: script.yaml\n",
    );
    let child = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).spawn();
    // Wait until the step is under way (the user message is in the log), then press Ctrl-C.
    wait_for_event(dir.path(), "interrupted", "MessageEvent", Duration::from_secs(120));
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(!out.stderr.contains("step 2/2"), "the next step is not announced after an interrupt:\n{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/interrupted/interrupted"));
    assert_eq!(report["steps"][0]["end_reason"], "interrupted");
    assert_eq!(report["steps"][1]["end_reason"], "not_run");
    assert_eq!(report["outcome"]["class"], "interrupted");
    assert_eq!(report["sandbox"]["disposition"], "released");
    assert_no_server_left(&report);
}

#[test]
fn sigterm_stops_a_run_with_exit_143_and_a_report() {
    let server = shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: finish\n    args: {message: slow}\n    delay: 60s\n",
    )
    .unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: terminated\nsandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}\nllm: {{model: m}}\nsteps:\n  - message: Wait.\nrehearsal: script.yaml\n",
            server.url,
            dir.path().join("ws").display()
        ),
    );
    let child =
        Ohrun::new().current_dir(dir.path()).env("K", &server.key).args(["run", "--rehearse"]).args([&job]).spawn();
    wait_for_event(dir.path(), "terminated", "MessageEvent", Duration::from_secs(60));
    signal(&child, libc::SIGTERM);
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.code, 143, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/terminated/terminated"));
    assert_eq!(report["steps"][0]["end_reason"], "interrupted");
    assert_eq!(report["outcome"]["exit_code"], 143);
}

#[test]
fn a_run_that_reaches_its_budget_stops_with_exit_4() {
    // Each call costs 1200*3e-6 + 80*15e-6 = $0.0048; the budget allows one call, the script wants five.
    let script = "usage: {prompt_tokens: 1200, completion_tokens: 80}\nreplies:\n  - tool: terminal\n    args: {command: 'sleep 1; echo 1'}\n  - tool: terminal\n    args: {command: 'sleep 1; echo 2'}\n  - tool: terminal\n    args: {command: 'sleep 1; echo 3'}\n  - tool: terminal\n    args: {command: 'sleep 1; echo 4'}\n  - tool: finish\n    args: {message: done}\n";
    let r = run_job("budget", None, "limits:\n  max_cost: 0.005\n", Some(script), &["--rehearse"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(r.report["steps"][0]["end_reason"], "budget");
    assert_eq!(r.report["outcome"]["class"], "budget");
    let calls = r.report["totals"]["llm_calls"].as_u64().unwrap();
    assert!((2..5).contains(&calls), "stopped soon after crossing the budget, not at the end ({calls} calls)");
}

#[test]
fn a_question_ends_the_step_or_fails_the_run_as_the_job_says() {
    let script = "replies:\n  - text: Which branch should I use?\n  - tool: finish\n    args: {message: used main}\n";
    let steps = "steps:\n  - message: Fix it.\n  - message: Now report.\n";
    let r = run_job("question-end", None, steps, Some(script), &["--rehearse"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.report["steps"][0]["end_reason"], "question");
    assert_eq!(r.report["steps"][0]["final_message"], "Which branch should I use?");
    assert_eq!(r.report["steps"][1]["end_reason"], "finished");

    let steps = "steps:\n  - message: Fix it.\n    on_question: fail\n  - message: Now report.\n";
    let r = run_job("question-fail", None, steps, Some(script), &["--rehearse"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.report["steps"][0]["end_reason"], "question");
    assert_eq!(r.report["steps"][0]["error"]["code"], "QuestionForUser");
    assert_eq!(r.report["steps"][1]["end_reason"], "not_run");

    let steps = "steps:\n  - message: Fix it.\n    on_question: {reply: {text: Use main.}}\n";
    let r = run_job("question-reply", None, steps, Some(script), &["--rehearse"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.report["steps"][0]["end_reason"], "finished");
    assert_eq!(r.report["steps"][0]["replies"], 1);
    assert_eq!(r.report["steps"][0]["final_message"], "used main");
    let events = read_events(&r.dir.path().join("ohrun-reports/question-reply/question-reply"));
    let replies = events.iter().filter(|e| e["source"] == "user" && e.to_string().contains("Use main.")).count();
    assert_eq!(replies, 1, "the reply was sent once");
}

#[test]
fn a_streaming_llm_works_end_to_end() {
    let script = "replies:\n  - tool: terminal\n    args: {command: 'echo streamed > out.txt'}\n  - tool: finish\n    args: {message: streamed reply}\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.yaml"), script).unwrap();
    let server = shared();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: streaming\nsandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}\nllm:\n  model: m\n  options: {{num_retries: 0, stream: true}}\nsteps:\n  - message: Stream it.\nrehearsal: script.yaml\n",
            server.url,
            dir.path().join("ws").display()
        ),
    );
    let out =
        Ohrun::new().current_dir(dir.path()).env("K", &server.key).args(["run", "--rehearse"]).args([&job]).output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/streaming/streaming"));
    assert_eq!(report["steps"][0]["final_message"], "streamed reply");
    assert_eq!(report["totals"]["llm_calls"], 2);
    assert!(report["totals"]["cost"].as_f64().unwrap() > 0.0);
}

#[test]
fn rehearsing_against_a_sandbox_that_cannot_reach_this_machine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: far\nsandbox: {kind: remote, url: 'https://agents.example.com', working_dir: /w}\nllm: {model: m}\nsteps:\n  - message: hi\n",
    );
    let out = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
}

#[test]
fn a_setup_command_that_runs_too_long_is_stopped_and_fails_the_run() {
    let r = run_job("setup-timeout", None, "setup:\n  - run: sleep 30\n    timeout: 2s\n", None, &["--rehearse"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.report["setup"][0]["exit_code"], -1);
    assert_eq!(r.report["setup"][0]["timed_out"], true);
    assert!(r.report["setup"][0]["duration_ms"].as_u64().unwrap() < 20_000);
    assert_eq!(r.report["steps"][0]["end_reason"], "not_run");
}

#[test]
fn without_a_suitable_python_the_managed_server_cannot_be_installed_and_ohrun_says_what_to_install() {
    let home = tempfile::tempdir().unwrap();
    let out = Ohrun::new()
        .env("OHRUN_HOME", home.path())
        .env("HOME", home.path())
        .env("PYENV_ROOT", home.path().join("no-pyenv"))
        .env("PATH", home.path().join("no-bin"))
        .env_remove("OHRUN_PYTHON")
        .args(["setup", "local"])
        .output();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("no Python 3.12 or newer"), "{}", out.stderr);
    assert!(out.stderr.contains("install Python"), "{}", out.stderr);
}

#[test]
fn the_managed_venv_holds_exactly_the_locked_packages() {
    let command = agent_server_command();
    assert_exactly_locked(&[command[0].as_str()]);
}

#[test]
fn the_pip_fallback_installs_exactly_the_locked_packages_too() {
    // A machine where uv must not be fetched: the same lock through pip, into a cache of its own.
    let home = tempfile::tempdir().unwrap();
    let out = Ohrun::new()
        .env("OHRUN_HOME", home.path())
        .env("OHRUN_INSTALLER", "pip")
        .env("PIP_NO_CACHE_DIR", "1")
        .args(["setup", "local"])
        .timeout(Duration::from_secs(900))
        .output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("installed with pip"), "{}", out.stderr);
    let python = home.path().join("agent-server-1.58.2/bin/python");
    assert_exactly_locked(&[python.to_str().unwrap()]);
}

/// Runs a Python (the venv's, or one in a container) that compares what is installed with the lock:
/// every locked package whose markers apply is installed at its pinned version, and nothing else is.
pub fn assert_exactly_locked(python: &[&str]) {
    let script = r#"
import sys, importlib.metadata as md
from packaging.markers import Marker
from packaging.utils import canonicalize_name as c
want = {}
for line in sys.stdin.read().splitlines():
    line = line.split('#')[0].strip()
    if not line: continue
    req, _, marker = line.partition(';')
    name, _, version = req.strip().partition('==')
    if not marker.strip() or Marker(marker.strip()).evaluate():
        want[c(name)] = version.strip()
have = {c(d.metadata['Name']): d.version for d in md.distributions()}
have.pop('pip', None); have.pop('setuptools', None)
missing = {n: v for n, v in want.items() if have.get(n) != v}
extra = sorted(set(have) - set(want))
print(len(want), 'locked;', 'missing or other version:', missing, 'not locked:', extra)
sys.exit(1 if missing or extra else 0)
"#;
    let lock = std::fs::read_to_string(repo_root().join("src/backend/agent-server.lock")).unwrap();
    let mut child = std::process::Command::new(python[0])
        .args(&python[1..])
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), lock.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the installed packages differ from the lock: {text}");
}
