//! An attempt's checkpoints while a run is under way (the last line of checkpoints.jsonl, else the run.json
//! the attempt was born with): a checkpoint never claims an outcome the run has not reached, and
//! it says what the run has already spent and which sandbox it has already made — so a SIGKILL (or a
//! third signal) leaves a report that is true.

use crate::emulators::{Api, Emulator, Faults};
use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// An ohrun under test, killed (SIGKILL) if the test fails before it ends it.
struct Spawned(Option<Child>);

impl Spawned {
    fn take(&mut self) -> Child {
        self.0.take().expect("still running")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `cond` every 50 ms until it holds (true) or `timeout` passed (false).
fn holds_within(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The conversation's cost and input tokens as the last `stats` in an event log say (Σ over usage ids).
fn logged_spend(events: &Path) -> (f64, u64) {
    let log = std::fs::read_to_string(events).unwrap_or_default();
    let stats = log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["kind"] == "ConversationStateUpdateEvent" && e["key"] == "stats");
    let usage = stats.map(|s| s["value"]["usage_to_metrics"].clone()).unwrap_or_default();
    let metrics = usage.as_object().into_iter().flat_map(|u| u.values());
    metrics.fold((0.0, 0), |(cost, tokens), m| {
        let prompt = m["accumulated_token_usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        (cost + m["accumulated_cost"].as_f64().unwrap_or(0.0), tokens + prompt)
    })
}

/// The attempt's latest checkpoint, if one can be read now (a line cut short is skipped).
fn checkpoint(attempt: &Path) -> Value {
    read_checkpoint(attempt)
}

#[test]
fn a_run_killed_mid_step_leaves_a_checkpoint_that_claims_nothing_and_holds_what_it_spent() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    // One priced call that returns at once, then one that outlasts the test: the kill lands mid-step,
    // after money was spent.
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: terminal\n    args: {command: 'echo spent'}\n  - tool: finish\n    args: {message: never}\n    delay: 300s\n",
    )
    .unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: killed\nsandbox: {kind: local}\nllm: {model: m}\nsteps:\n  - message: Spend, then wait.\n  - message: Never.\nrehearsal: script.yaml\n",
    );
    let mut child = Spawned(Some(
        Ohrun::new()
            .current_dir(dir.path())
            .env("OHRUN_STATE_DIR", dir.path().join("state"))
            .args(["run", "--rehearse"])
            .args([&job])
            .spawn(),
    ));
    let attempt = dir.path().join("ohrun-reports/killed/killed/attempt-1");
    let events = attempt.join("events.jsonl");
    wait_until(Duration::from_secs(180), "the first call was billed and its command ran", || {
        logged_spend(&events).0 > 0.0
            && std::fs::read_to_string(&events).unwrap_or_default().contains("\"ObservationEvent\"")
    });
    // The checkpoint follows the stats frames as they arrive (a checkpoint that never does is what the
    // assertions below catch, after the kill).
    let spent = logged_spend(&events);
    holds_within(Duration::from_secs(10), || {
        checkpoint(&attempt)["steps"][0]["cost"].as_f64().is_some_and(|c| (c - spent.0).abs() < 1e-9)
    });
    let child = child.take();
    signal(&child, libc::SIGKILL);
    let _ = wait_output(child, Duration::from_secs(10));

    let report = read_checkpoint(&attempt);
    assert_eq!(report["status"], "running", "{report}");
    assert_eq!(report["outcome"]["class"], "running", "a killed run never reads as a success: {report}");
    assert_eq!(report["outcome"]["exit_code"], Value::Null, "{report}");
    let step = &report["steps"][0];
    assert_eq!((step["end_reason"].as_str(), step["ended_at"].as_str()), (Some("not_run"), None), "{step}");
    let (cost, prompt) = logged_spend(&events);
    assert!(cost > 0.0 && (step["cost"].as_f64().unwrap() - cost).abs() < 1e-9, "{step} against {cost}");
    assert_eq!(step["tokens"]["prompt"].as_u64(), Some(prompt), "{step}");
    assert!((report["totals"]["cost"].as_f64().unwrap() - cost).abs() < 1e-9, "{report}");
}

fn provider_job(dir: &Path, api: &Api, url: &str) -> std::path::PathBuf {
    let sandbox = match api {
        Api::Cloud => format!("  kind: cloud\n  api_url: {url}\n  api_key: ${{PROVIDER_KEY}}\n"),
        Api::Runtime => format!(
            "  kind: runtime\n  api_url: {url}\n  api_key: ${{PROVIDER_KEY}}\n  image: ghcr.io/openhands/agent-server:1.58.2-python\n"
        ),
    };
    write_job(
        dir,
        "job.yaml",
        &format!(
            "name: starting\nsandbox:\n{sandbox}  init_timeout: 300s\n  working_dir: {}\nllm: {{model: m}}\nsteps:\n  - message: hi\n",
            dir.join("ws").display()
        ),
    )
}

/// Holds the provider's sandbox in STARTING and reads the checkpoint while ohrun polls it: the sandbox it
/// made is named there already. Then SIGINT: the sandbox is deleted and the final report names it too.
fn a_starting_sandbox_is_named_in_the_checkpoint(api: Api, poll: fn(&str) -> bool, report_id: fn(&str) -> String) {
    let key = "ohrun-planted-provider-key-55e1";
    let emu = Emulator::start(api.clone(), key, Faults { start_delay: Duration::from_secs(300), ..Faults::default() });
    let dir = tempfile::tempdir().unwrap();
    let job = provider_job(dir.path(), &api, &emu.url);
    let mut child = Spawned(Some(
        Ohrun::new()
            .current_dir(dir.path())
            .env("PROVIDER_KEY", key)
            .env("OHRUN_STATE_DIR", dir.path().join("state"))
            .args(["run", "--rehearse"])
            .args([&job])
            .spawn(),
    ));
    let polls = || emu.shared.requests.lock().unwrap().iter().filter(|(r, _)| poll(r)).count();
    wait_until(Duration::from_secs(60), "ohrun polls the starting sandbox", || emu.ids().len() == 1 && polls() >= 2);
    let id = emu.ids().remove(0);
    let attempt = dir.path().join("ohrun-reports/starting/starting/attempt-1");
    let report = read_checkpoint(&attempt);
    assert_eq!(emu.statuses(), ["STARTING"]);
    assert_eq!(report["sandbox"]["id"].as_str(), Some(report_id(&id).as_str()), "{report}");
    assert_eq!(report["sandbox"]["disposition"], "provisioning", "{report}");
    assert_eq!(report["outcome"]["class"], "running", "{report}");

    let child = child.take();
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert_eq!(emu.deletes(), 1, "the starting sandbox was given back");
    let last = read_report(&attempt);
    assert_eq!(last["sandbox"]["id"].as_str(), Some(report_id(&id).as_str()), "{last}");
}

#[test]
fn a_cloud_sandbox_that_is_still_starting_is_named_in_the_checkpoint() {
    a_starting_sandbox_is_named_in_the_checkpoint(Api::Cloud, |r| r == "GET /api/v1/sandboxes", |id| id.to_string());
}

#[test]
fn a_runtime_session_that_is_still_starting_is_named_in_the_checkpoint() {
    a_starting_sandbox_is_named_in_the_checkpoint(
        Api::Runtime,
        |r| r.starts_with("GET /sessions/"),
        |id| format!("rt-{id}"),
    );
}
