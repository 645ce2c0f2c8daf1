//! End to end on the real agent-server (local and remote backends), driven through the real binary with
//! the scripted LLM (`--rehearse`). Each test starts its own server, so each takes ~10 s.

use crate::support::*;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Price the seed's rehearsal uses by default (USD/token) and its scripted usage per call.
const INPUT_PRICE: f64 = 0.000003;
const OUTPUT_PRICE: f64 = 0.000015;
const PROMPT_TOKENS: f64 = 1200.0;
const COMPLETION_TOKENS: f64 = 80.0;

fn ids(events: &[Value]) -> Vec<String> {
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
    let report_dir = dir.path().join("ohrun-reports/facts-local");
    let (stop, watcher) = watch_facts(report_dir.join("workspace"));
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
    assert_eq!(report["setup"][0]["exit_code"], 0);
    assert!(report["setup"][0]["stdout"].as_str().unwrap().contains("Hello from a local agent-server!"));
    // pwd printed the workspace: setup commands run in the sandbox's working directory.
    assert!(
        report["setup"][0]["stdout"].as_str().unwrap().contains(report["sandbox"]["working_dir"].as_str().unwrap())
    );

    // Step 1 wrote FACTS.txt with three lines; step 2 removed it.
    assert_eq!(most_lines, 3, "FACTS.txt had 3 lines after step 1");
    let workspace = report_dir.join("workspace");
    assert!(!workspace.join("FACTS.txt").exists(), "FACTS.txt is gone after step 2");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for s in steps {
        assert_eq!(s["end_reason"], "finished");
        assert_eq!(s["execution_status"], "finished");
        assert!(s["event_count"].as_u64().unwrap() > 0);
    }
    assert_eq!(steps[0]["final_message"], "I wrote 3 facts about the project into FACTS.txt.");
    assert_eq!(steps[1]["final_message"], "FACTS.txt is deleted.");

    // Cost: five scripted calls (three in step 1, two in step 2) at the rehearsal's prices, nothing else.
    let per_call = PROMPT_TOKENS * INPUT_PRICE + COMPLETION_TOKENS * OUTPUT_PRICE;
    let total = report["totals"]["cost"].as_f64().unwrap();
    assert!((total - 5.0 * per_call).abs() < 1e-9, "total cost {total}");
    assert!((steps[0]["cost"].as_f64().unwrap() - 3.0 * per_call).abs() < 1e-9);
    assert!((steps[1]["cost"].as_f64().unwrap() - 2.0 * per_call).abs() < 1e-9);
    assert_eq!(report["totals"]["llm_calls"], 5);
    assert_eq!(report["totals"]["tokens"]["prompt"], 5 * 1200);
    assert_eq!(report["totals"]["tokens"]["completion"], 5 * 80);

    // Every event once, and as many as the report counts.
    let events = read_events(&report_dir);
    let ids = ids(&events);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an event id appears twice in events.jsonl");
    assert_eq!(report["totals"]["events"].as_u64().unwrap() as usize, ids.len());
    assert!(events.iter().any(|e| e["kind"] == "ActionEvent" && e["tool_name"] == "finish"));
    assert_no_server_left(&report);
}

/// Starts a real agent-server the way a user would, for `kind: remote`.
struct ExternalServer {
    child: std::process::Child,
    url: String,
    key: String,
    _state: tempfile::TempDir,
}

impl ExternalServer {
    fn start() -> ExternalServer {
        let port = free_port();
        let state = tempfile::tempdir().unwrap();
        let key = "remote-test-key-0123456789".to_string();
        let child = spawn_agent_server(port, &key, state.path());
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the test's agent-server did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        ExternalServer { child, url, key, _state: state }
    }

    fn events(&self, cid: &str) -> Vec<Value> {
        // A tiny blocking HTTP GET is enough here; the server speaks plain HTTP/1.1.
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut path = format!("/api/conversations/{cid}/events/search?limit=100");
            if let Some(p) = &page {
                path.push_str(&format!("&page_id={p}"));
            }
            let v = http_get(&self.url, &path, &self.key);
            out.extend(v["items"].as_array().unwrap().iter().cloned());
            match v["next_page_id"].as_str() {
                Some(p) => page = Some(p.to_string()),
                None => return out,
            }
        }
    }
}

impl Drop for ExternalServer {
    fn drop(&mut self) {
        // SAFETY: plain signals to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(base: &str, path: &str, key: &str) -> Value {
    use std::io::{Read, Write};
    let hostport = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nX-Session-API-Key: {key}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    serde_json::from_str(&body).unwrap()
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
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
    let printed = out.json();
    let report = read_report(&dir.path().join("ohrun-reports/facts-remote"));
    assert_eq!(printed["run"]["id"], report["run"]["id"], "--json prints the report");
    assert_eq!(report["sandbox"]["disposition"], "attached");
    assert!(report["setup"][0]["stdout"].as_str().unwrap().contains("Hello from a remote agent-server!"));
    assert!(!workspace.join("FACTS.txt").exists());
    assert!(report["totals"]["cost"].as_f64().unwrap() > 0.0);
    // The session key never reaches the report or the console.
    let text = std::fs::read_to_string(dir.path().join("ohrun-reports/facts-remote/run.json")).unwrap();
    assert!(!text.contains(&server.key) && !out.stderr.contains(&server.key) && !out.stdout.contains(&server.key));

    // `cleanup: never` keeps the conversation: its events on the server are exactly the logged ones.
    let cid = report["conversation_id"].as_str().unwrap();
    let logged = ids(&read_events(&dir.path().join("ohrun-reports/facts-remote")));
    let on_server = ids(&server.events(cid));
    let logged_set: HashSet<&String> = logged.iter().collect();
    assert_eq!(logged_set.len(), logged.len(), "an event id appears twice in events.jsonl");
    assert_eq!(logged_set, on_server.iter().collect::<HashSet<_>>(), "events.jsonl and events/search differ");
}

/// A one-step local job with `extra` YAML appended; returns (exit code, report, stderr).
fn run_local_job(
    name: &str,
    extra: &str,
    script: Option<&str>,
    args: &[&str],
) -> (i32, Value, String, tempfile::TempDir) {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "name: {name}\nsandbox:\n  kind: local\nllm:\n  model: m\n  api_key: ${{LLM_API_KEY}}\n  options: {{num_retries: 0}}\n{extra}"
    );
    if !text.contains("\nsteps:") {
        text.push_str("steps:\n  - message: Do the thing.\n");
    }
    if let Some(s) = script {
        std::fs::write(dir.path().join("script.yaml"), s).unwrap();
        text.push_str("rehearsal: script.yaml\n");
    }
    let job = write_job(dir.path(), "job.yaml", &text);
    let out =
        Ohrun::new().current_dir(dir.path()).env_remove("LLM_API_KEY").args(["run"]).args(args).args([&job]).output();
    let report_dir = dir.path().join(format!("ohrun-reports/{name}"));
    let report = if report_dir.exists() { read_report(&report_dir) } else { Value::Null };
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    (out.code, report, out.stderr, dir)
}

#[test]
fn a_failing_setup_command_fails_the_run_and_skips_the_steps() {
    let (code, report, stderr, _dir) = run_local_job(
        "setup-fails",
        "setup:\n  - echo before; echo oops >&2; exit 3\n  - echo never\n",
        None,
        &["--rehearse"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["outcome"]["class"], "failed");
    assert_eq!(report["setup"].as_array().unwrap().len(), 1, "the second command never ran");
    assert_eq!(report["setup"][0]["exit_code"], 3);
    assert_eq!(report["setup"][0]["stdout"], "before\n");
    assert_eq!(report["setup"][0]["stderr"], "oops\n");
    assert_eq!(report["steps"][0]["end_reason"], "not_run");
    assert_eq!(report["sandbox"]["disposition"], "released");
    assert_no_server_left(&report);
}

#[test]
fn allow_failure_lets_the_run_go_on() {
    let (code, report, stderr, _dir) =
        run_local_job("setup-allowed", "setup:\n  - run: exit 4\n    allow_failure: true\n", None, &["--rehearse"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["setup"][0]["exit_code"], 4);
    assert_eq!(report["steps"][0]["end_reason"], "finished");
}

#[test]
fn an_llm_error_ends_the_step_with_its_code_and_detail() {
    let script = "replies:\n  - error: {status: 400, message: the scripted provider refuses}\n";
    let (code, report, stderr, _dir) = run_local_job("llm-error", "", Some(script), &["--rehearse"]);
    assert_eq!(code, 1, "{stderr}");
    let step = &report["steps"][0];
    assert_eq!(step["end_reason"], "error");
    assert_eq!(step["execution_status"], "error");
    assert!(!step["error"]["code"].as_str().unwrap().is_empty());
    assert!(step["error"]["detail"].as_str().unwrap().contains("the scripted provider refuses"), "{step}");
    assert_eq!(report["sandbox"]["disposition"], "released");
    assert_no_server_left(&report);
}

#[test]
fn a_step_that_runs_out_of_time_is_stopped_and_the_sandbox_released() {
    let script = "replies:\n  - tool: finish\n    args: {message: too late}\n    delay: 60s\n";
    let steps = "steps:\n  - message: Take your time.\n    timeout: 3s\n    max_wait: 5s\n  - message: never sent\n";
    let started = Instant::now();
    let (code, report, stderr, _dir) = run_local_job("step-timeout", steps, Some(script), &["--rehearse"]);
    assert!(started.elapsed() < Duration::from_secs(50), "the timeout did not cut the step short");
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["steps"][0]["end_reason"], "timeout");
    assert_eq!(report["steps"][1]["end_reason"], "not_run");
    assert_eq!(report["outcome"]["class"], "failed");
    assert_eq!(report["sandbox"]["disposition"], "released");
    assert_no_server_left(&report);
}

#[test]
fn a_missing_llm_key_is_a_usage_error_before_provisioning() {
    let (code, report, stderr, dir) = run_local_job("no-key", "", None, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("LLM_API_KEY"), "{stderr}");
    assert_eq!(report["outcome"]["class"], "usage_error");
    assert_eq!(report["sandbox"]["disposition"], "not_provisioned");
    assert!(!dir.path().join("ohrun-reports/no-key/agent-server.log").exists(), "nothing was started");
}

#[test]
fn an_agent_server_that_cannot_start_is_an_infrastructure_error_with_its_log() {
    let extra = "steps:\n  - message: hi\n";
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: broken-server\nsandbox:\n  kind: local\n  command: [sh, -c, 'echo the server is broken >&2; exit 7']\nllm:\n  model: m\n{extra}"
        ),
    );
    let out = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).output();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("the server is broken"), "the log tail is shown:\n{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/broken-server"));
    assert_eq!(report["outcome"]["class"], "infrastructure");
    assert!(report["outcome"]["message"].as_str().unwrap().contains("the server is broken"));
}

#[test]
fn an_unknown_tool_is_refused_before_any_llm_call() {
    let extra = "agent:\n  tools: [terminal, nope_tool]\n";
    let (code, report, stderr, _dir) = run_local_job("unknown-tool", extra, None, &["--rehearse"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nope_tool"), "{stderr}");
    assert_eq!(report["outcome"]["class"], "usage_error");
    assert_eq!(report["totals"]["llm_calls"], 0);
    assert!(report["conversation_id"].is_null(), "no conversation was created");
    assert_eq!(report["sandbox"]["disposition"], "released");
    assert_no_server_left(&report);
}

#[test]
fn a_matrix_runs_one_after_another_with_a_report_each() {
    let extra = "matrix:\n  topic: [alpha, beta]\nsteps:\n  - message: Tell me about {{ topic }}.\n";
    let (code, _first, stderr, dir) = run_local_job("fan-out", extra, None, &["--rehearse"]);
    assert_eq!(code, 0, "{stderr}");
    let plan = Ohrun::new().args(["plan", "--json"]).args([dir.path().join("job.yaml")]).output().json();
    for run in plan["runs"].as_array().unwrap() {
        let id = run["id"].as_str().unwrap();
        let report = read_report(&dir.path().join(format!("ohrun-reports/{id}")));
        assert_eq!(report["run"]["matrix"]["topic"], run["matrix"]["topic"]);
        assert_eq!(report["outcome"]["class"], "succeeded");
        assert!(report["steps"][0]["message"].as_str().unwrap().contains(run["matrix"]["topic"].as_str().unwrap()));
        assert!(stderr.contains(&format!("ok {id}")), "one summary line per run:\n{stderr}");
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
        "name: interrupted\nsandbox: {kind: local}\nllm: {model: m}\nsteps:\n  - message: Wait.\nrehearsal: script.yaml\n",
    );
    let child = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).spawn();
    let events = dir.path().join("ohrun-reports/interrupted/events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    // Wait until the step is under way (the user message is in the log), then press Ctrl-C.
    while !std::fs::read_to_string(&events).unwrap_or_default().contains("MessageEvent") {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let report = read_report(&dir.path().join("ohrun-reports/interrupted"));
    assert_eq!(report["steps"][0]["end_reason"], "interrupted");
    assert_eq!(report["outcome"]["class"], "interrupted");
    assert_eq!(report["sandbox"]["disposition"], "released");
    assert_no_server_left(&report);
}

#[test]
fn a_run_that_reaches_its_budget_stops_with_exit_4() {
    // Each call costs 1200*3e-6 + 80*15e-6 = $0.0048; the budget allows one call, the script wants five.
    let script = "usage: {prompt_tokens: 1200, completion_tokens: 80}\nreplies:\n  - tool: terminal\n    args: {command: 'sleep 1; echo 1'}\n  - tool: terminal\n    args: {command: 'sleep 1; echo 2'}\n  - tool: terminal\n    args: {command: 'sleep 1; echo 3'}\n  - tool: terminal\n    args: {command: 'sleep 1; echo 4'}\n  - tool: finish\n    args: {message: done}\n";
    let (code, report, stderr, _dir) =
        run_local_job("budget", "limits:\n  max_cost: 0.005\n", Some(script), &["--rehearse"]);
    assert_eq!(code, 4, "{stderr}");
    assert_eq!(report["steps"][0]["end_reason"], "budget");
    assert_eq!(report["outcome"]["class"], "budget");
    let calls = report["totals"]["llm_calls"].as_u64().unwrap();
    assert!((2..5).contains(&calls), "stopped soon after crossing the budget, not at the end ({calls} calls)");
    assert_eq!(report["sandbox"]["disposition"], "released");
    assert_no_server_left(&report);
}

#[test]
fn a_question_ends_the_step_or_fails_the_run_as_the_job_says() {
    let script = "replies:\n  - text: Which branch should I use?\n  - tool: finish\n    args: {message: used main}\n";
    let steps = "steps:\n  - message: Fix it.\n  - message: Now report.\n";
    let (code, report, stderr, _dir) = run_local_job("question-end", steps, Some(script), &["--rehearse"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["steps"][0]["end_reason"], "question");
    assert_eq!(report["steps"][0]["final_message"], "Which branch should I use?");
    assert_eq!(report["steps"][1]["end_reason"], "finished");

    let steps = "steps:\n  - message: Fix it.\n    on_question: fail\n  - message: Now report.\n";
    let (code, report, stderr, _dir) = run_local_job("question-fail", steps, Some(script), &["--rehearse"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["steps"][0]["end_reason"], "question");
    assert_eq!(report["steps"][0]["error"]["code"], "QuestionForUser");
    assert_eq!(report["steps"][1]["end_reason"], "not_run");

    let steps = "steps:\n  - message: Fix it.\n    on_question: {reply: {text: Use main.}}\n";
    let (code, report, stderr, dir) = run_local_job("question-reply", steps, Some(script), &["--rehearse"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["steps"][0]["end_reason"], "finished");
    assert_eq!(report["steps"][0]["replies"], 1);
    let events = read_events(&dir.path().join("ohrun-reports/question-reply"));
    assert!(events.iter().any(|e| e["source"] == "user" && e.to_string().contains("Use main.")));
}

#[test]
fn secrets_never_reach_reports_logs_or_the_console() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    let llm_key = "sk-planted-llm-key-5f1e2d3c4b";
    let token = "ghp_planted_token_9a8b7c6d5e";
    // The scripted LLM as a separate server, reached like a real provider: with the job's key.
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: terminal\n    args: {command: 'echo token=$MY_TOKEN; env | grep -c PLANTED || true'}\n  - tool: finish\n    args: {message: done}\n",
    )
    .unwrap();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_ohrun"))
        .args(["rehearse", "script.yaml"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut url).unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: secrets\nsandbox: {{kind: local}}\nllm:\n  model: openai/scripted\n  base_url: {}\n  api_key: ${{LLM_API_KEY}}\n  \
             input_cost_per_token: 0.000001\n  output_cost_per_token: 0.000002\n  options: {{num_retries: 0}}\n\
             secrets: [MY_TOKEN]\nsetup:\n  - echo key=$LLM_API_KEY token=$MY_TOKEN\nsteps:\n  - message: Use the token.\n",
            url.trim()
        ),
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("LLM_API_KEY", llm_key)
        .env("MY_TOKEN", token)
        .args(["-vv", "run", "--json"])
        .args([&job])
        .output();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report_dir = dir.path().join("ohrun-reports/secrets");
    read_report(&report_dir);
    for entry in std::fs::read_dir(&report_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(!text.contains(llm_key), "the LLM key is in {}", path.display());
            assert!(!text.contains(token), "the token is in {}", path.display());
        }
    }
    for stream in [&out.stdout, &out.stderr] {
        assert!(!stream.contains(llm_key) && !stream.contains(token), "a secret reached the console");
    }
}

#[test]
fn a_streaming_llm_works_end_to_end() {
    let script = "replies:\n  - tool: terminal\n    args: {command: 'echo streamed > out.txt'}\n  - tool: finish\n    args: {message: streamed reply}\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.yaml"), script).unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: streaming\nsandbox: {kind: local}\nllm:\n  model: m\n  options: {num_retries: 0, stream: true}\nsteps:\n  - message: Stream it.\nrehearsal: script.yaml\n",
    );
    let out = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/streaming"));
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

/// A TCP proxy whose open connections can all be cut at once (new ones are still accepted).
struct CuttableProxy {
    port: u16,
    open: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl CuttableProxy {
    fn start(upstream: String) -> CuttableProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let conns = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
                conns.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CuttableProxy { port, open }
    }

    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_dropped_event_socket_reconnects_and_loses_no_event() {
    let server = ExternalServer::start();
    let proxy = CuttableProxy::start(server.url.trim_start_matches("http://").to_string());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: terminal\n    args: {command: 'sleep 6; echo one'}\n  - tool: terminal\n    args: {command: 'echo two'}\n  - tool: finish\n    args: {message: done after the cut}\n",
    )
    .unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: cut\nsandbox:\n  kind: remote\n  url: http://127.0.0.1:{}\n  session_key: ${{TEST_SESSION_KEY}}\n  working_dir: {}\nllm: {{model: m}}\nsteps:\n  - message: Work.\ncleanup: never\nrehearsal: script.yaml\n",
            proxy.port,
            dir.path().join("ws").display()
        ),
    );
    let child = Ohrun::new()
        .current_dir(dir.path())
        .env("TEST_SESSION_KEY", &server.key)
        .args(["-vv", "run", "--rehearse"])
        .args([&job])
        .spawn();
    // Cut every connection while the agent's first command runs (its action is logged, its result not yet).
    let events = dir.path().join("ohrun-reports/cut/events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&events).unwrap_or_default().contains("\"ActionEvent\"") {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy.cut();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("event socket reconnected"), "the socket did drop and come back:\n{stderr}");
    let report = read_report(&dir.path().join("ohrun-reports/cut"));
    assert_eq!(report["steps"][0]["final_message"], "done after the cut");
    let logged = ids(&read_events(&dir.path().join("ohrun-reports/cut")));
    let on_server = ids(&server.events(report["conversation_id"].as_str().unwrap()));
    assert_eq!(logged.iter().collect::<HashSet<_>>().len(), logged.len(), "an event was logged twice");
    assert_eq!(logged.iter().collect::<HashSet<_>>(), on_server.iter().collect::<HashSet<_>>(), "an event was lost");
}

#[test]
fn a_setup_command_that_runs_too_long_is_stopped_and_fails_the_run() {
    let (code, report, stderr, _dir) =
        run_local_job("setup-timeout", "setup:\n  - run: sleep 30\n    timeout: 2s\n", None, &["--rehearse"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["setup"][0]["exit_code"], -1);
    assert_eq!(report["setup"][0]["timed_out"], true);
    assert!(report["setup"][0]["duration_ms"].as_u64().unwrap() < 20_000);
    assert_eq!(report["steps"][0]["end_reason"], "not_run");
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
