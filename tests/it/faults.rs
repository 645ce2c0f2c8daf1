//! The fault matrix (issue G): a fault proxy between ohrun and a real agent-server (the shared one) cuts
//! the event socket mid-step, answers REST requests with 429/5xx (with and without Retry-After), loses the
//! answer to a create, slows every request down (under and over `api_timeout`); a step that never ends is
//! stopped. Each case is bounded in time and checks the evidence against the server's own record.

use crate::proxy::{Action, Proxy, Rule};
use crate::run_local::ids;
use crate::server::shared;
use crate::support::*;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Twelve terminal commands, a second apart, then `finish`: a step long enough to be cut three times
/// (and reconnected after each) even on a busy machine.
const LONG_STEP: &str = "replies:
  - tool: terminal
    args: {command: 'echo 1'}
    delay: 1s
  - tool: terminal
    args: {command: 'echo 2'}
    delay: 1s
  - tool: terminal
    args: {command: 'echo 3'}
    delay: 1s
  - tool: terminal
    args: {command: 'echo 4'}
    delay: 1s
  - tool: terminal
    args: {command: 'echo 5'}
    delay: 1s
  - tool: terminal
    args: {command: 'echo 6'}
    delay: 1s
  - tool: terminal
    args: {command: 'echo 7'}
    delay: 1s
  - tool: terminal
    args: {command: 'echo 8'}
    delay: 1s
  - tool: terminal
    args: {command: 'echo 9'}
    delay: 1s
  - tool: terminal
    args: {command: 'echo 10'}
    delay: 1s
  - tool: terminal
    args: {command: 'echo 11'}
    delay: 1s
  - tool: terminal
    args: {command: 'echo 12'}
    delay: 1s
  - tool: finish
    args: {message: done}
";
const QUICK: &str = "replies:\n  - tool: finish\n    args: {message: done}\n";

/// A remote job on the shared server through `proxy`; `steps` may add top-level keys (`cleanup: never`
/// keeps the conversation on the server, to compare with).
fn job(proxy: &Proxy, dir: &Path, name: &str, sandbox_extra: &str, steps: &str, script: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("script.yaml"), script).unwrap();
    write_job(
        dir,
        "job.yaml",
        &format!(
            "name: {name}\nsandbox:\n  kind: remote\n  url: {}\n  session_key: ${{TEST_SESSION_KEY}}\n  working_dir: {}\n{sandbox_extra}llm: {{model: m}}\n{steps}rehearsal: script.yaml\n",
            proxy.url(),
            dir.join("ws").display()
        ),
    )
}

/// A fault proxy in front of the shared agent-server.
fn shared_proxy() -> Proxy {
    Proxy::start(shared().url.trim_start_matches("http://"))
}

/// `ohrun -v run --rehearse JOB` in `dir`, with the shared server's key.
fn ohrun(dir: &Path, job: &Path) -> Ohrun {
    Ohrun::new()
        .current_dir(dir)
        .env("TEST_SESSION_KEY", &shared().key)
        .timeout(Duration::from_secs(180))
        .args(["-v", "run", "--rehearse"])
        .args([job])
}

fn run(dir: &Path, job: &Path) -> Result {
    ohrun(dir, job).output()
}

/// The run's report, the ids in its events.jsonl (in order) and the server's own events.
fn evidence(dir: &Path, name: &str) -> (Value, Vec<String>, Vec<Value>) {
    let run = dir.join(format!("ohrun-reports/{name}/{name}"));
    let report = read_report(&run);
    let logged = ids(&read_events(&run).into_iter().filter(|e| e.get("id").is_some()).collect::<Vec<_>>());
    let on_server = shared().events(report["conversation_id"].as_str().unwrap());
    (report, logged, on_server)
}

/// Every event of the server once, none twice, none of its own, in the server's order.
fn assert_exactly_the_servers(logged: &[String], on_server: &[Value]) {
    assert_eq!(logged.iter().collect::<HashSet<_>>().len(), logged.len(), "an event was logged twice");
    assert_eq!(logged, ids(on_server), "events.jsonl differs from the server's events");
}

/// What happened, without ids: (kind, source, tool) of each event, state updates left out (their
/// number depends on timing).
fn shape(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter(|e| e["kind"] != "ConversationStateUpdateEvent")
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&e["kind"]), s(&e["source"]), s(&e["tool_name"]))
        })
        .collect()
}

#[test]
fn the_event_socket_cut_three_times_mid_step_loses_and_repeats_no_event() {
    let steps = "steps:\n  - message: Count to twelve.\ncleanup: never\n";
    // Undisturbed, through a proxy that does nothing.
    let calm = shared_proxy();
    let calm_dir = tempfile::tempdir().unwrap();
    let out = run(calm_dir.path(), &job(&calm, calm_dir.path(), "calm", "", steps, LONG_STEP));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, calm_logged, calm_server) = evidence(calm_dir.path(), "calm");
    assert_exactly_the_servers(&calm_logged, &calm_server);

    // Cut three times while the step runs: after the 1st, 2nd and 3rd command's observation.
    let proxy = std::sync::Arc::new(shared_proxy());
    let dir = tempfile::tempdir().unwrap();
    let job = job(&proxy, dir.path(), "cut", "", steps, LONG_STEP);
    let events = dir.path().join("ohrun-reports/cut/cut/attempt-1/events.jsonl");
    let cutter = {
        let proxy = proxy.clone();
        std::thread::spawn(move || {
            for n in [1, 2, 3] {
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline
                    && std::fs::read_to_string(&events).unwrap_or_default().matches("\"ObservationEvent\"").count() < n
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                while Instant::now() < deadline && proxy.open_sockets() == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
                // Down for long enough that events happen meanwhile (they come back over REST).
                proxy.refuse_sockets(true);
                proxy.cut();
                std::thread::sleep(Duration::from_millis(1000));
                proxy.refuse_sockets(false);
            }
        })
    };
    let out = run(dir.path(), &job);
    cutter.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(proxy.cuts(), 3, "the socket was cut three times");
    assert_eq!(out.stderr.matches("event socket reconnected").count(), 3, "{}", out.stderr);
    let (report, logged, on_server) = evidence(dir.path(), "cut");
    assert_eq!(report["steps"][0]["end_reason"], "finished");
    assert_exactly_the_servers(&logged, &on_server);
    assert_eq!(shape(&on_server), shape(&calm_server), "the cut run did what the undisturbed one did");
    assert_eq!(report["totals"]["events"], on_server.len(), "{}", report["totals"]);
}

fn starts_with(prefix: &'static str) -> fn(&str) -> bool {
    // A fn pointer cannot capture: one per prefix used below.
    match prefix {
        "create" => |l| l.starts_with("POST /api/conversations "),
        "run" => |l| l.starts_with("POST /api/conversations/") && l.contains("/run "),
        "search" => |l| l.starts_with("GET /api/conversations/") && l.contains("/events/search"),
        "server_info" => |l| l.starts_with("GET /server_info"),
        _ => unreachable!("no rule for {prefix}"),
    }
}

/// Conversation creates the proxy passed on or answered (it records request lines without the version).
fn creates(proxy: &Proxy) -> usize {
    proxy.requests_matching("POST /api/conversations").iter().filter(|r| *r == "POST /api/conversations").count()
}

#[test]
fn busy_and_failing_rest_answers_are_retried_after_retry_after_or_a_backoff() {
    let proxy = shared_proxy();
    let busy = r#"{"detail":"busy"}"#.to_string();
    for (what, action) in [
        ("server_info", Action::Respond(500, busy.clone())),
        ("create", Action::RespondRetryAfter(503, 1, busy.clone())),
        ("search", Action::RespondRetryAfter(429, 2, busy.clone())),
        ("run", Action::Respond(503, busy.clone())),
    ] {
        proxy.add_rule(Rule { matches: starts_with(what), times: 1, action });
    }
    let dir = tempfile::tempdir().unwrap();
    let out =
        run(dir.path(), &job(&proxy, dir.path(), "busy", "", "steps:\n  - message: Hi.\ncleanup: never\n", QUICK));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The server's Retry-After is what ohrun waited; without one, a backoff.
    assert!(out.stderr.contains("answered 429: busy; trying again in 2s"), "{}", out.stderr);
    assert!(out.stderr.contains("creating conversation"), "{}", out.stderr);
    assert!(out.stderr.contains("answered 500: busy; trying again in"), "{}", out.stderr);
    assert_eq!(creates(&proxy), 2, "the refused create was made again");
    let runs: Vec<String> = proxy.requests_matching("/run").into_iter().filter(|r| r.ends_with("/run")).collect();
    assert_eq!(runs.len(), 2, "the refused run was started again, never the message: {runs:?}");
    let (report, logged, on_server) = evidence(dir.path(), "busy");
    assert_eq!(report["steps"][0]["end_reason"], "finished");
    assert_exactly_the_servers(&logged, &on_server);
    let user_messages = on_server.iter().filter(|e| e["kind"] == "MessageEvent" && e["source"] == "user").count();
    assert_eq!(user_messages, 1);
}

#[test]
fn a_create_whose_answer_is_lost_is_adopted_not_made_twice() {
    let proxy = shared_proxy();
    proxy.add_rule(Rule { matches: starts_with("create"), times: 1, action: Action::LoseAnswer });
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &job(&proxy, dir.path(), "lost-create", "", "steps:\n  - message: Hi.\ncleanup: never\n", QUICK),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("exists: it is this run's"), "{}", out.stderr);
    assert_eq!(creates(&proxy), 1, "the create was not repeated");
    let (_, logged, on_server) = evidence(dir.path(), "lost-create");
    assert_exactly_the_servers(&logged, &on_server);
}

fn every_request(line: &str) -> bool {
    !line.contains("/sockets/") && !line.starts_with("GET /health")
}

#[test]
fn a_server_slower_than_api_timeout_fails_the_run_cleanly_and_one_within_it_does_not() {
    // Every answer 300 ms late, api_timeout 3 s: slow, but within it.
    let slow = shared_proxy();
    slow.add_rule(Rule { matches: every_request, times: 10_000, action: Action::Delay(Duration::from_millis(300)) });
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &job(&slow, dir.path(), "slow", "  api_timeout: 3s\n", "steps:\n  - message: Hi.\ncleanup: never\n", QUICK),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, logged, on_server) = evidence(dir.path(), "slow");
    assert_exactly_the_servers(&logged, &on_server);

    // Every answer 4 s late, api_timeout 1 s: each request times out; after its retries the run fails as
    // infrastructure (exit 3), in bounded time, with a report that says so.
    let slower = shared_proxy();
    slower.add_rule(Rule { matches: every_request, times: 10_000, action: Action::Delay(Duration::from_secs(4)) });
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = run(
        dir.path(),
        &job(&slower, dir.path(), "slower", "  api_timeout: 1s\n", "steps:\n  - message: Hi.\ncleanup: never\n", QUICK),
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    let report = read_report(&dir.path().join("ohrun-reports/slower/slower"));
    assert_eq!((&report["status"], &report["outcome"]["class"]), (&"ended".into(), &"infrastructure".into()));
    let message = report["outcome"]["message"].as_str().unwrap();
    assert!(message.contains("timed out"), "{message}");
}

#[test]
fn a_step_that_never_finishes_is_timed_out_interrupted_and_its_conversation_released() {
    let proxy = shared_proxy();
    let dir = tempfile::tempdir().unwrap();
    let never = "replies:\n  - tool: finish\n    args: {message: too late}\n    delay: 300s\n";
    let steps = "steps:\n  - message: Take forever.\n    timeout: 3s\n  - message: Never sent.\n";
    let job = job(&proxy, dir.path(), "never", "", steps, never);
    let started = Instant::now();
    let out = run(dir.path(), &job);
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/never/never"));
    assert_eq!(report["steps"][0]["end_reason"], "timeout");
    assert_eq!(report["steps"][1]["end_reason"], "not_run");
    let cid = report["conversation_id"].as_str().unwrap();
    assert_eq!(proxy.requests_matching(&format!("POST /api/conversations/{cid}/interrupt")).len(), 1);
    assert_eq!(proxy.requests_matching(&format!("DELETE /api/conversations/{cid}")).len(), 1, "not released");
    assert_eq!(report["sandbox"]["disposition"], "attached", "someone else's server is left as it was");
}

#[test]
fn one_sigint_stops_within_ten_seconds_even_when_the_server_stops_answering() {
    let proxy = shared_proxy();
    let dir = tempfile::tempdir().unwrap();
    let slow = "replies:\n  - tool: finish\n    args: {message: slow}\n    delay: 120s\n";
    // A minute to come to rest after an interrupt: more than a stop may take.
    let steps = "steps:\n  - message: Wait.\n    max_wait: 60s\n";
    let job = job(&proxy, dir.path(), "hung", "", steps, slow);
    let child = ohrun(dir.path(), &job).spawn();
    wait_for_event(dir.path(), "hung", "MessageEvent", Duration::from_secs(60));
    // The server stops answering (every request, the socket too), then one Ctrl-C.
    proxy.set_blocked(true);
    proxy.cut();
    let signalled = Instant::now();
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(120));
    let took = signalled.elapsed();
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(took <= Duration::from_secs(10), "took {took:?} after one signal:\n{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/hung/hung"));
    assert_eq!((&report["status"], &report["steps"][0]["end_reason"]), (&"ended".into(), &"interrupted".into()));
}
