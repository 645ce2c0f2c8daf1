//! The agent-server protocol where it is easy to get wrong (shared/docs/agent-server-api.md §5, §8): a
//! step ends at the server's authoritative signal and at nothing else; a message is sent at most once;
//! a busy server gets the run retried, not the message. A fault proxy sits between ohrun and a real
//! agent-server.

use crate::proxy::{Action, BINARY, Proxy, Rule, TEXT, server_frame};
use crate::run_local::ids;
use crate::server::{ExternalServer, shared};
use crate::support::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

/// A remote job through `proxy` (cleanup: never, so the server keeps the conversation to compare with).
fn job_via(proxy: &Proxy, dir: &std::path::Path, name: &str, steps: &str, script: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("script.yaml"), script).unwrap();
    write_job(
        dir,
        "job.yaml",
        &format!(
            "name: {name}\nsandbox:\n  kind: remote\n  url: {}\n  session_key: ${{TEST_SESSION_KEY}}\n  working_dir: {}\nllm: {{model: m}}\n{steps}cleanup: never\nrehearsal: script.yaml\n",
            proxy.url(),
            dir.join("ws").display()
        ),
    )
}

/// Runs `ohrun run --rehearse JOB` in `dir` to its end.
fn rehearse(dir: &std::path::Path, key: &str, job: &std::path::Path) -> Result {
    Ohrun::new().current_dir(dir).env("TEST_SESSION_KEY", key).args(["run", "--rehearse"]).args([job]).output()
}

/// Starts `ohrun run --rehearse JOB` (run `name`, the job's only one) and waits until its event log
/// holds `text`.
fn spawn_until(dir: &std::path::Path, key: &str, job: &std::path::Path, name: &str, text: &str) -> std::process::Child {
    let child =
        Ohrun::new().current_dir(dir).env("TEST_SESSION_KEY", key).args(["run", "--rehearse"]).args([job]).spawn();
    wait_for_event(dir, name, text, Duration::from_secs(60));
    child
}

fn report_and_server_events(
    server: &ExternalServer,
    dir: &std::path::Path,
    name: &str,
) -> (Value, Vec<String>, Vec<Value>) {
    let report = read_report(&dir.join(format!("ohrun-reports/{name}/{name}")));
    let logged = ids(&read_events(&dir.join(format!("ohrun-reports/{name}/{name}"))));
    let on_server = server.events(report["conversation_id"].as_str().unwrap());
    (report, logged, on_server)
}

fn assert_same_events(logged: &[String], on_server: &[Value]) {
    let logged_set: HashSet<&String> = logged.iter().collect();
    assert_eq!(logged_set.len(), logged.len(), "an event was logged twice");
    let server_ids = ids(on_server);
    assert_eq!(logged_set, server_ids.iter().collect::<HashSet<_>>(), "events.jsonl and the server's events differ");
}

fn user_messages(events: &[Value], text: &str) -> usize {
    events
        .iter()
        .filter(|e| e["kind"] == "MessageEvent" && e["source"] == "user" && e.to_string().contains(text))
        .count()
}

#[test]
fn a_reconnect_between_steps_does_not_end_the_next_step_early() {
    let server = ExternalServer::start();
    let proxy = Proxy::start(server.url.trim_start_matches("http://"));
    let dir = tempfile::tempdir().unwrap();
    let script = "replies:\n  - tool: finish\n    args: {message: one}\n  - tool: finish\n    args: {message: two}\n    delay: 4s\n";
    let job = job_via(&proxy, dir.path(), "between", "steps:\n  - message: First.\n  - message: Second.\n", script);
    // The socket is cut right after the server's final snapshot of step 1 went through, and the next
    // look at the conversation (ohrun reading step 1's costs) is held for 2 s: ohrun reconnects between
    // the steps, and the reconnect's snapshot, which still says `finished`, waits in the socket's queue.
    let conversation_info: fn(&str) -> bool = |l| {
        l.starts_with("GET /api/conversations/") && !l.contains("/events") && !l.contains('?') && !l.contains("/count")
    };
    proxy.cut_after(
        "\"execution_status\":\"finished\"",
        vec![Rule { matches: conversation_info, times: 1, action: Action::Delay(Duration::from_secs(2)) }],
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("TEST_SESSION_KEY", &server.key)
        .args(["-vv", "run", "--rehearse"])
        .args([&job])
        .output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(proxy.cuts(), 1, "the socket was cut once");
    let (report, logged, on_server) = report_and_server_events(&server, dir.path(), "between");
    let step2 = &report["steps"][1];
    assert_eq!(step2["end_reason"], "finished");
    assert_eq!(step2["final_message"], "two", "step 2 ran to its own end: {step2}");
    assert!(step2["duration_ms"].as_u64().unwrap() >= 4000, "step 2 was not ended early: {step2}");
    assert_same_events(&logged, &on_server);
    // After the first look at the (new) conversation, every reconcile — the gap of the reconnect among
    // them — asked only for what was new.
    let searches: Vec<String> =
        proxy.requests_matching("events/search").into_iter().filter(|r| r.contains("/api/conversations/")).collect();
    assert!(searches.len() >= 3, "{searches:?}");
    let later: Vec<&String> = searches.iter().skip(1).filter(|r| !r.contains("kind=MessageEvent")).collect();
    assert!(
        later.iter().all(|r| r.contains("timestamp__gte=")),
        "reconciles ask from the last event seen: {searches:?}"
    );
}

#[test]
fn a_run_seen_only_over_rest_ends_only_after_the_grace() {
    let server = ExternalServer::start();
    let proxy = Proxy::start(server.url.trim_start_matches("http://"));
    let dir = tempfile::tempdir().unwrap();
    let script = "replies:\n  - tool: terminal\n    args: {command: 'sleep 3; echo done'}\n  - tool: finish\n    args: {message: over REST}\n";
    let job = job_via(&proxy, dir.path(), "rest-only", "steps:\n  - message: Work.\n", script);
    let child = spawn_until(dir.path(), &server.key, &job, "rest-only", "\"ActionEvent\"");
    // No socket from now on: only REST can tell ohrun how the run ends, and REST lags.
    proxy.refuse_sockets(true);
    proxy.cut();
    let out = wait_output(child, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (report, logged, on_server) = report_and_server_events(&server, dir.path(), "rest-only");
    let step = &report["steps"][0];
    assert_eq!(step["end_reason"], "finished");
    assert_eq!(step["final_message"], "over REST");
    let grace = ohrun::agent::REST_GRACE.as_millis() as u64;
    assert!(step["duration_ms"].as_u64().unwrap() >= grace, "REST's `finished` was believed before the grace: {step}");
    assert_same_events(&logged, &on_server);
}

#[test]
fn a_busy_server_gets_the_run_retried_and_never_the_message() {
    let server = ExternalServer::start();
    let proxy = Proxy::start(server.url.trim_start_matches("http://"));
    proxy.add_rule(Rule {
        matches: |l| l.contains("/run HTTP/1.1"),
        times: 2,
        action: Action::Respond(429, r#"{"detail":"at capacity"}"#.into()),
    });
    let dir = tempfile::tempdir().unwrap();
    let job = job_via(&proxy, dir.path(), "busy", "steps:\n  - message: Only once, please.\n", "replies: []\n");
    let out = rehearse(dir.path(), &server.key, &job);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(proxy.requests_matching("/run").len(), 3, "/run was retried after the 429 and the 503");
    let (report, logged, on_server) = report_and_server_events(&server, dir.path(), "busy");
    assert_eq!(report["steps"][0]["end_reason"], "finished");
    assert_eq!(user_messages(&on_server, "Only once, please."), 1, "the message is on the server once");
    assert_same_events(&logged, &on_server);
}

#[test]
fn a_message_whose_answer_is_lost_is_not_sent_again() {
    let server = ExternalServer::start();
    let proxy = Proxy::start(server.url.trim_start_matches("http://"));
    // The server stores the message, but its answer never reaches ohrun.
    proxy.add_rule(Rule {
        matches: |l| l.starts_with("POST") && l.contains("/events HTTP/1.1"),
        times: 1,
        action: Action::LoseAnswer,
    });
    let dir = tempfile::tempdir().unwrap();
    let job = job_via(&proxy, dir.path(), "lost-answer", "steps:\n  - message: Exactly once.\n", "replies: []\n");
    let out = rehearse(dir.path(), &server.key, &job);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let sends: Vec<String> = proxy.requests_matching("POST").into_iter().filter(|r| r.ends_with("/events")).collect();
    assert_eq!(sends.len(), 1, "the message was posted once: {sends:?}");
    let (report, logged, on_server) = report_and_server_events(&server, dir.path(), "lost-answer");
    assert_eq!(report["steps"][0]["end_reason"], "finished");
    assert_eq!(user_messages(&on_server, "Exactly once."), 1);
    assert_same_events(&logged, &on_server);
}

#[test]
fn another_server_version_is_a_warning_on_the_console_and_in_the_report() {
    let server = crate::server::shared();
    let proxy = Proxy::start(server.url.trim_start_matches("http://"));
    let info = r#"{"version":"1.99.0","usable_tools":["terminal","file_editor","task_tracker"]}"#;
    proxy.add_rule(Rule {
        matches: |l| l.starts_with("GET /server_info"),
        times: 1,
        action: Action::Respond(200, info.into()),
    });
    let dir = tempfile::tempdir().unwrap();
    let job = job_via(&proxy, dir.path(), "other-version", "steps:\n  - message: hi\n", "replies: []\n");
    let out = rehearse(dir.path(), &server.key, &job);
    assert_eq!(out.code, 0, "a warning, not a failure:\n{}", out.stderr);
    assert!(out.stderr.contains("warning: the agent-server is version 1.99.0"), "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/other-version/other-version"));
    assert!(report["warnings"][0].as_str().unwrap().contains("1.99.0"), "{}", report["warnings"]);
}

#[test]
fn a_second_sigint_stops_waiting_for_a_server_that_does_not_answer() {
    let server = shared();
    let proxy = Proxy::start(server.url.trim_start_matches("http://"));
    let dir = tempfile::tempdir().unwrap();
    let script = "replies:\n  - tool: finish\n    args: {message: slow}\n    delay: 120s\n";
    let job = job_via(&proxy, dir.path(), "twice", "steps:\n  - message: Wait.\n    max_wait: 60s\n", script);
    let child = spawn_until(dir.path(), &server.key, &job, "twice", "MessageEvent");
    // The server stops answering: after the first signal ohrun would wait `max_wait` (a minute) for the
    // agent to come to rest; the second says not to.
    proxy.set_blocked(true);
    proxy.cut();
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_secs(1));
    let second = std::time::Instant::now();
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(120));
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(second.elapsed() < Duration::from_secs(20), "took {:?} after the second signal", second.elapsed());
    let report = read_report(&dir.path().join("ohrun-reports/twice/twice"));
    assert_eq!(report["steps"][0]["end_reason"], "interrupted", "{}", report["steps"][0]);
    assert_eq!(report["outcome"]["class"], "interrupted");
}

#[test]
fn frames_ohrun_cannot_read_are_logged_raw_and_never_end_a_step() {
    let server = shared();
    let proxy = Proxy::start(server.url.trim_start_matches("http://"));
    let dir = tempfile::tempdir().unwrap();
    let script = "replies:\n  - tool: terminal\n    args: {command: 'sleep 2; echo done'}\n  - tool: finish\n    args: {message: read on}\n";
    let job = job_via(&proxy, dir.path(), "raw-frames", "steps:\n  - message: Work.\n", script);
    // Mid-step, right after the agent's first action: a text frame that is not JSON, a binary frame and
    // an event of a kind ohrun does not know. The first two carry the session key: the redactor masks it.
    let text = format!("not JSON {{ key={}", server.key);
    let binary = [&[0xff, 0x00][..], server.key.as_bytes(), &[0x9f]].concat();
    let unknown =
        r#"{"kind":"EventFromTheFuture","id":"ohrun-test-future-1","source":"environment","data":[1,{"x":null}]}"#;
    let frames = vec![
        server_frame(TEXT, text.as_bytes()),
        server_frame(BINARY, &binary),
        server_frame(TEXT, unknown.as_bytes()),
    ];
    proxy.inject_after("\"ActionEvent\"", frames);
    let out = rehearse(dir.path(), &server.key, &job);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(proxy.injections(), 1);
    let run_dir = dir.path().join("ohrun-reports/raw-frames/raw-frames");
    let report = read_report(&run_dir);
    assert_eq!(report["steps"][0]["end_reason"], "finished", "{}", report["steps"][0]);
    assert_eq!(report["steps"][0]["final_message"], "read on", "the step ran to its own end");
    let events = read_events(&run_dir);
    let raw: Vec<&Value> = events.iter().filter(|e| e["kind"] == "ohrun.RawFrame").collect();
    assert_eq!(raw.len(), 2, "{raw:?}");
    assert_eq!((&raw[0]["frame"], &raw[1]["frame"]), (&"text".into(), &"binary".into()));
    assert!(raw[0]["raw"].as_str().unwrap().starts_with("not JSON { key=***"), "{}", raw[0]);
    assert!(raw[0]["error"].as_str().unwrap().starts_with("not JSON"), "{}", raw[0]);
    assert!(raw[1]["raw"].as_str().unwrap().contains("***"), "the key is masked in base64 too: {}", raw[1]);
    let unknown: Value = serde_json::from_str(unknown).unwrap();
    assert_eq!(events.iter().filter(|e| **e == unknown).count(), 1, "the unknown event is kept as sent");
    // Every event of the server is there once, and only those are counted.
    let real: Vec<Value> =
        events.into_iter().filter(|e| e["kind"] != "ohrun.RawFrame" && e["kind"] != "EventFromTheFuture").collect();
    assert_same_events(&ids(&real), &server.events(report["conversation_id"].as_str().unwrap()));
    assert_eq!(report["totals"]["events"].as_u64().unwrap() as usize, real.len() + 1);
}

/// Under `nohup` (SIGHUP ignored, as the harness can ask for after resetting every signal to its default)
/// a hangup is not a signal to ohrun: after SIGHUP and two SIGINTs it stops gracefully on the second
/// (the report ends), where three counted signals would have made it exit at once (a checkpoint that
/// still says `running`).
#[test]
fn under_nohup_a_hangup_does_not_count_and_ctrl_c_still_stops_the_run() {
    let server = shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: finish\n    args: {message: slow}\n    delay: 120s\n",
    )
    .unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: nohup\nsandbox:\n  kind: remote\n  url: {}\n  session_key: ${{TEST_SESSION_KEY}}\n  working_dir: {}\nllm: {{model: m}}\nsteps:\n  - message: Wait.\nrehearsal: script.yaml\n",
            server.url,
            dir.path().join("ws").display()
        ),
    );
    let child = Ohrun::new()
        .hangup_ignored()
        .current_dir(dir.path())
        .env("TEST_SESSION_KEY", &server.key)
        .args(["run", "--rehearse"])
        .args([&job])
        .spawn();
    wait_for_event(dir.path(), "nohup", "MessageEvent", Duration::from_secs(60));
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGINT] {
        signal(&child, sig);
    }
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.code, 130, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/nohup/nohup"));
    assert_eq!((&report["status"], &report["outcome"]["class"]), (&json!("ended"), &json!("interrupted")));
}

/// A run's costs are read from the server once per step: a conversation ohrun just created has spent
/// nothing, and after a last step that finished with nothing after it, that step's read is the total.
#[test]
fn the_costs_are_read_once_a_step_and_add_up() {
    let server = ExternalServer::start();
    let proxy = Proxy::start(server.url.trim_start_matches("http://"));
    let dir = tempfile::tempdir().unwrap();
    let script = "replies:\n  - tool: finish\n    args: {message: one}\n  - tool: finish\n    args: {message: two}\n";
    let job = job_via(&proxy, dir.path(), "reads", "steps:\n  - message: One.\n  - message: Two.\n", script);
    let out = rehearse(dir.path(), &server.key, &job);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (report, logged, on_server) = report_and_server_events(&server, dir.path(), "reads");
    let cid = report["conversation_id"].as_str().expect("a conversation id in the report");
    let reads = proxy.requests_matching(&format!("GET /api/conversations/{cid}"));
    let reads: Vec<&String> = reads.iter().filter(|r| r.ends_with(cid)).collect();
    assert_eq!(reads.len(), 2, "one read of the conversation's stats per step: {reads:?}");
    let cost = |v: &Value| v.as_f64().unwrap();
    let steps: f64 = report["steps"].as_array().unwrap().iter().map(|s| cost(&s["cost"])).sum();
    assert!(cost(&report["steps"][0]["cost"]) > 0.0 && cost(&report["steps"][1]["cost"]) > 0.0, "{report}");
    assert!((cost(&report["totals"]["cost"]) - steps).abs() < 1e-9, "the total is the steps' sum: {report}");
    assert_same_events(&logged, &on_server);
}
