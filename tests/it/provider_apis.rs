//! `kind: cloud` and `kind: runtime` end to end: the real binary against emulators of the Cloud API and
//! the Runtime API whose sandboxes are real agent-servers, with the scripted LLM. A recognisable key is
//! planted in every test and must never appear in any output.

use crate::emulators::{Api, Emulator, Faults};
use crate::support::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

pub(crate) const CLOUD_KEY: &str = "ohrun-planted-cloud-key-7c1f0e";
const RUNTIME_KEY: &str = "ohrun-planted-runtime-key-3a9b2d";

struct Outcome {
    code: i32,
    stderr: String,
    report: Value,
    dir: tempfile::TempDir,
}

fn sandbox_yaml(api: &Api, url: &str, extra: &str) -> String {
    match api {
        Api::Cloud => format!("  kind: cloud\n  api_url: {url}\n  api_key: ${{OPENHANDS_CLOUD_API_KEY}}\n{extra}"),
        Api::Runtime => format!(
            "  kind: runtime\n  api_url: {url}\n  api_key: ${{RUNTIME_API_KEY}}\n  image: ghcr.io/openhands/agent-server:1.58.2-python\n{extra}"
        ),
    }
}

/// Runs a job on the emulator; the job's working dir is a temp dir (the emulated sandbox is this host).
fn run(
    api: Api,
    emulator: &Emulator,
    name: &str,
    sandbox_extra: &str,
    steps: &str,
    script: &str,
    key: &str,
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::write(dir.path().join("script.yaml"), script).unwrap();
    let sandbox = sandbox_yaml(&api, &emulator.url, &format!("  working_dir: {}\n{sandbox_extra}", ws.display()));
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: {name}\nsandbox:\n{sandbox}llm:\n  model: m\nsetup:\n  - echo 'Hello from OpenHands Cloud sandbox!' && pwd\n{steps}rehearsal: script.yaml\n"
        ),
    );
    let var = match api {
        Api::Cloud => "OPENHANDS_CLOUD_API_KEY",
        Api::Runtime => "RUNTIME_API_KEY",
    };
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env(var, key)
        .env("OHRUN_STATE_DIR", dir.path().join("state"))
        .args(["-vv", "run", "--rehearse"])
        .args([&job])
        .output();
    let report_dir = dir.path().join(format!("ohrun-reports/{name}/{name}"));
    let report = read_report(&report_dir);
    assert_no_secret(&report_dir, &out.stdout, &out.stderr);
    Outcome { code: out.code, stderr: out.stderr, report, dir }
}

/// A provider whose refusals echo the API key (the emulator's busy answers do): the key is in the retries
/// the report records and in `-vv`'s log lines, masked; with redaction off the same run shows it, so
/// `assert_no_secret` can see a leak.
#[test]
fn a_provider_answer_that_echoes_the_key_is_masked_and_seen_when_redaction_is_off() {
    for unredacted in [false, true] {
        let emu = Emulator::start(Api::Cloud, CLOUD_KEY, Faults { failing_creates: 1, ..Faults::default() });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("script.yaml"), "replies: []\n").unwrap();
        let sandbox =
            sandbox_yaml(&Api::Cloud, &emu.url, &format!("  working_dir: {}\n", dir.path().join("ws").display()));
        let job = write_job(
            dir.path(),
            "job.yaml",
            &format!(
                "name: echo\nsandbox:\n{sandbox}llm: {{model: m}}\nsteps:\n  - message: hi\nrehearsal: script.yaml\n"
            ),
        );
        let cmd = Ohrun::redacted(!unredacted)
            .current_dir(dir.path())
            .env("OPENHANDS_CLOUD_API_KEY", CLOUD_KEY)
            .env("OHRUN_STATE_DIR", dir.path().join("state"))
            .args(["-vv", "run", "--rehearse"])
            .args([&job]);
        let out = cmd.output();
        let report_dir = dir.path().join("ohrun-reports/echo/echo");
        let report = read_report(&report_dir);
        let retries = report["sandbox"]["api_retries"].to_string();
        if unredacted {
            assert!(retries.contains(CLOUD_KEY) && out.stderr.contains(CLOUD_KEY), "the key shows: {retries}");
        } else {
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert!(retries.contains("request made with key ***"), "the retry is recorded, masked: {retries}");
            assert_no_secret(&report_dir, &out.stdout, &out.stderr);
        }
    }
}

fn assert_no_secret(report_dir: &Path, stdout: &str, stderr: &str) {
    for key in [CLOUD_KEY, RUNTIME_KEY] {
        assert!(!stdout.contains(key) && !stderr.contains(key), "a planted key reached the console");
        for (path, text) in files_under(report_dir) {
            assert!(!text.contains(key), "a planted key is in {}", path.display());
        }
    }
}

const SEED_STEPS: &str = "steps:\n  - message: Write 3 facts into FACTS.txt.\n  - message: Now delete that file.\n";

fn seed_script() -> String {
    std::fs::read_to_string(repo_root().join("jobs/rehearsals/facts.yaml")).unwrap()
}

fn assert_seed_ran(o: &Outcome, kind: &str) {
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = &o.report;
    assert_eq!(r["sandbox"]["kind"], kind);
    assert_eq!(r["sandbox"]["disposition"], "released");
    assert_eq!(r["sandbox"]["agent_server_version"], "1.58.2");
    assert!(r["setup"][0]["stdout"].as_str().unwrap().contains("Hello from OpenHands Cloud sandbox!"));
    for s in r["steps"].as_array().unwrap() {
        assert_eq!(s["end_reason"], "finished");
    }
    assert_eq!(r["steps"][0]["final_message"], "I wrote 3 facts about the project into FACTS.txt.");
    assert!(r["totals"]["cost"].as_f64().unwrap() > 0.0);
    let events = read_events(&o.dir.path().join(format!("ohrun-reports/{0}/{0}", r["run"]["id"].as_str().unwrap())));
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "events exactly once");
    // FACTS.txt was written (wc -l reported 3 lines) and then deleted.
    assert!(events.iter().any(|e| e["kind"] == "ObservationEvent" && e.to_string().contains("3 FACTS.txt")));
    assert!(!o.dir.path().join("ws/FACTS.txt").exists());
}

#[test]
fn seed_job_on_the_cloud_api() {
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, Faults::default());
    let o = run(Api::Cloud, &emu, "facts-cloud", "", SEED_STEPS, &seed_script(), CLOUD_KEY);
    assert_seed_ran(&o, "cloud");
    assert_eq!((emu.creates(), emu.deletes()), (1, 1), "exactly one create and one delete");
    // Every Cloud call carried the Bearer key.
    assert!(emu.shared.requests.lock().unwrap().iter().all(|(_, auth)| auth == &format!("Bearer {CLOUD_KEY}")));
}

#[test]
fn seed_job_on_the_runtime_api() {
    let emu = Emulator::start(Api::Runtime, RUNTIME_KEY, Faults::default());
    let o = run(Api::Runtime, &emu, "facts-runtime", "", SEED_STEPS, &seed_script(), RUNTIME_KEY);
    assert_seed_ran(&o, "runtime");
    assert_eq!((emu.creates(), emu.deletes()), (1, 1), "exactly one start and one stop");
    assert!(emu.shared.requests.lock().unwrap().iter().all(|(_, auth)| auth == RUNTIME_KEY));
}

#[test]
fn keep_alive_leaves_the_sandbox_and_says_where_it_is() {
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, Faults::default());
    let o =
        run(Api::Cloud, &emu, "kept", "  keep_alive: true\n", "steps:\n  - message: hi\n", "replies: []\n", CLOUD_KEY);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(emu.deletes(), 0);
    assert_eq!(emu.statuses(), vec!["RUNNING".to_string()]);
    assert_eq!(o.report["sandbox"]["disposition"], "kept");
    let id = o.report["sandbox"]["id"].as_str().unwrap();
    assert!(o.stderr.contains(&format!("kept the sandbox: Cloud sandbox {id}")), "{}", o.stderr);
    // gc leaves what was kept on purpose alone, whether or not it can look at it (no key here).
    let gc = gc_json(&o.dir, false);
    assert_eq!((gc.code, gc.json()["items"][0]["state"].as_str()), (0, Some("kept")), "{}", gc.stdout);
    assert_eq!(emu.deletes(), 0);
}

/// `ohrun gc --json` on the ledger of a run made by `run` (in `dir/state`).
fn gc_json(dir: &tempfile::TempDir, with_key: bool) -> crate::support::Result {
    let mut cmd = Ohrun::new().env("OHRUN_STATE_DIR", dir.path().join("state")).env_remove("OPENHANDS_CLOUD_API_KEY");
    if with_key {
        cmd = cmd.env("OPENHANDS_CLOUD_API_KEY", CLOUD_KEY);
    }
    cmd.args(["gc", "--json"]).output()
}

#[test]
fn init_timeout_is_exit_3_and_the_sandbox_is_still_deleted() {
    let faults = Faults { start_delay: Duration::from_secs(60), ..Faults::default() };
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, faults);
    let o =
        run(Api::Cloud, &emu, "slow", "  init_timeout: 4s\n", "steps:\n  - message: hi\n", "replies: []\n", CLOUD_KEY);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("did not become ready within init_timeout (4s)"), "{}", o.stderr);
    assert_eq!((emu.creates(), emu.deletes()), (1, 1));
    assert_eq!(o.report["outcome"]["class"], "infrastructure");
}

#[test]
fn an_error_status_is_exit_3_and_the_runtime_is_stopped() {
    let emu = Emulator::start(Api::Runtime, RUNTIME_KEY, Faults { go_error: true, ..Faults::default() });
    let o = run(Api::Runtime, &emu, "broken", "", "steps:\n  - message: hi\n", "replies: []\n", RUNTIME_KEY);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("emulated: the image failed"), "the pod logs are shown:\n{}", o.stderr);
    assert_eq!(emu.deletes(), 1, "{}", o.stderr);
}

#[test]
fn a_rejected_key_is_exit_3_with_a_hint_naming_the_variable() {
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, Faults::default());
    let o = run(
        Api::Cloud,
        &emu,
        "bad-key",
        "",
        "steps:\n  - message: hi\n",
        "replies: []\n",
        "ohrun-planted-cloud-key-7c1f0e-but-wrong",
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("401"), "{}", o.stderr);
    assert!(o.stderr.contains("OPENHANDS_CLOUD_API_KEY"), "the hint names the variable:\n{}", o.stderr);
    assert_eq!(emu.creates(), 0);
}

#[test]
fn two_503s_then_success_are_retried_and_reported() {
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, Faults { failing_creates: 2, ..Faults::default() });
    let o = run(Api::Cloud, &emu, "busy", "", "steps:\n  - message: hi\n", "replies: []\n", CLOUD_KEY);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!((emu.creates(), emu.deletes()), (1, 1), "no duplicate sandbox");
    let retries = o.report["sandbox"]["api_retries"].as_array().unwrap();
    assert_eq!(retries.len(), 2, "{retries:?}");
    for r in retries {
        assert_eq!(r["status"], 503);
        assert_eq!(r["path"], "/api/v1/sandboxes");
        assert!(r["waited_ms"].as_u64().unwrap() >= 1000, "Retry-After: 1 was honoured");
    }
}

#[test]
fn a_sandbox_that_goes_missing_mid_step_is_exit_3_with_a_report() {
    let faults = Faults { missing_after: Some(Duration::from_secs(6)), ..Faults::default() };
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, faults);
    let script = "replies:\n  - tool: finish\n    args: {message: never}\n    delay: 120s\n";
    let o = run(Api::Cloud, &emu, "vanishing", "", "steps:\n  - message: Wait.\n    timeout: 5m\n", script, CLOUD_KEY);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert_eq!(o.report["steps"][0]["end_reason"], "lost");
    assert!(o.report["steps"][0]["error"]["detail"].as_str().unwrap().contains("MISSING"), "{}", o.report["steps"][0]);
    assert_eq!(o.report["outcome"]["class"], "infrastructure");
}

#[test]
fn a_delete_that_keeps_failing_is_exit_5_naming_the_sandbox() {
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, Faults { delete_status: Some(500), ..Faults::default() });
    let o = run(Api::Cloud, &emu, "undeletable", "", "steps:\n  - message: hi\n", "replies: []\n", CLOUD_KEY);
    assert_eq!(o.code, 5, "{}", o.stderr);
    let id = o.report["sandbox"]["id"].as_str().unwrap();
    assert!(o.stderr.contains(id), "the console names the sandbox:\n{}", o.stderr);
    assert_eq!(o.report["sandbox"]["disposition"], "release_failed");
    assert!(o.report["sandbox"]["api_retries"].as_array().unwrap().iter().any(|r| r["method"] == "DELETE"));
}

#[test]
fn plain_http_to_a_remote_host_is_refused_before_sending_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: insecure\nsandbox:\n  kind: cloud\n  api_url: http://cloud.example.com\n  api_key: ${OPENHANDS_CLOUD_API_KEY}\nllm: {model: m}\nsteps:\n  - message: hi\n",
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("OPENHANDS_CLOUD_API_KEY", CLOUD_KEY)
        .args(["run", "--rehearse"])
        .args([&job])
        .output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("allow_insecure_http"), "{}", out.stderr);
    assert!(!out.stderr.contains(CLOUD_KEY));
}

#[test]
fn a_session_key_never_goes_over_plain_http_to_a_far_host() {
    // A remote server named by the job: refused before anything is sent.
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: far\nsandbox: {kind: remote, url: 'http://agent.example.com:8000', session_key: '${K}', working_dir: /w}\nllm: {model: m}\nsteps:\n  - message: hi\n",
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("K", "planted-session-key-4e5f")
        .args(["run", "--rehearse"])
        .args([&job])
        .output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("`sandbox.url` is plain http") && out.stderr.contains("allow_insecure_http"),
        "{}",
        out.stderr
    );
    // An agent-server URL a provider returned: refused before the key goes there, and the sandbox deleted.
    for api in [Api::Cloud, Api::Runtime] {
        let key = if matches!(api, Api::Cloud) { CLOUD_KEY } else { RUNTIME_KEY };
        let emu = Emulator::start(api.clone(), key, Faults { far_host: Some("agent.invalid"), ..Faults::default() });
        let o = run(api, &emu, "far-agent", "", "steps:\n  - message: hi\n", "replies: []\n", key);
        assert_eq!(o.code, 3, "{}", o.stderr);
        assert!(o.stderr.contains("the agent-server URL the provider returned` is plain http"), "{}", o.stderr);
        assert_eq!((emu.creates(), emu.deletes()), (1, 1));
    }
}

/// Without any session key the conversation's create body still carries the LLM key and every `secrets:`
/// value: plain http to a far host is refused all the same — at once for the job's own URL (exit 2),
/// after provisioning, with the sandbox released, for a URL a provider returned (exit 3).
#[test]
fn keys_in_the_conversation_never_go_over_plain_http_to_a_far_host() {
    let dir = tempfile::tempdir().unwrap();
    for (name, llm, extra) in [
        ("far-secrets", "{model: m}", "secrets: [MY_TOKEN]\n"),
        ("far-llm-key", "{model: m, api_key: '${LLM_KEY}'}", ""),
        // A setup command's `env:` value from the environment travels in the command ohrun sends.
        ("far-setup-env", "{model: m}", "setup:\n  - run: echo hi\n    env: {TOKEN: '${MY_TOKEN}'}\n"),
    ] {
        let job = write_job(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\nsandbox: {{kind: remote, url: 'http://agent.example.com:8000', working_dir: /w}}\nllm: {llm}\n{extra}steps:\n  - message: hi\n"
            ),
        );
        let out = Ohrun::new()
            .current_dir(dir.path())
            .env("MY_TOKEN", "planted-token-0a1b2c")
            .env("LLM_KEY", "planted-llm-key-3d4e5f")
            .args(["run"])
            .args([&job])
            .output();
        assert_eq!(out.code, 2, "{name}: {}", out.stderr);
        assert!(out.stderr.contains("`sandbox.url` is plain http"), "{name}: {}", out.stderr);
    }
    for api in [Api::Cloud, Api::Runtime] {
        let (var, key) = match api {
            Api::Cloud => ("OPENHANDS_CLOUD_API_KEY", CLOUD_KEY),
            Api::Runtime => ("RUNTIME_API_KEY", RUNTIME_KEY),
        };
        let faults = Faults { far_host: Some("agent.invalid"), no_session_key: true, ..Faults::default() };
        let emu = Emulator::start(api.clone(), key, faults);
        let sandbox = sandbox_yaml(&api, &emu.url, "  working_dir: /w\n");
        let job = write_job(
            dir.path(),
            "provider.yaml",
            &format!(
                "name: far-provider\nsandbox:\n{sandbox}llm: {{model: m}}\nsecrets: [MY_TOKEN]\nsteps:\n  - message: hi\n"
            ),
        );
        let out = Ohrun::new()
            .current_dir(dir.path())
            .env(var, key)
            .env("MY_TOKEN", "planted-token-0a1b2c")
            .env("OHRUN_STATE_DIR", dir.path().join("state"))
            .args(["run", "--rehearse"])
            .args([&job])
            .output();
        assert_eq!(out.code, 3, "{}", out.stderr);
        assert!(out.stderr.contains("the agent-server URL the provider returned` is plain http"), "{}", out.stderr);
        assert_eq!((emu.creates(), emu.deletes()), (1, 1));
    }
}

#[test]
fn a_sandbox_paused_under_a_running_job_is_resumed_once_and_the_job_goes_on() {
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, Faults::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: terminal\n    args: {command: 'sleep 3; echo still here'}\n  - tool: finish\n    args: {message: survived the pause}\n",
    )
    .unwrap();
    let sandbox = sandbox_yaml(&Api::Cloud, &emu.url, &format!("  working_dir: {}\n", dir.path().join("ws").display()));
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: paused\nsandbox:\n{sandbox}llm: {{model: m}}\nsteps:\n  - message: Work.\nrehearsal: script.yaml\n"
        ),
    );
    let child = Ohrun::new()
        .current_dir(dir.path())
        .env("OPENHANDS_CLOUD_API_KEY", CLOUD_KEY)
        .args(["-vv", "run", "--rehearse"])
        .args([&job])
        .spawn();
    // The provider pauses the sandbox while the agent's command runs: every connection stays open.
    wait_for_event(dir.path(), "paused", "\"ActionEvent\"", Duration::from_secs(120));
    emu.pause_running();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report = read_report(&dir.path().join("ohrun-reports/paused/paused"));
    assert_eq!(report["steps"][0]["final_message"], "survived the pause");
    let resumes = emu.shared.requests.lock().unwrap().iter().filter(|(what, _)| what.ends_with("/resume")).count();
    assert_eq!(resumes, 1, "resumed exactly once");
    assert!(stderr.contains("resum"), "the console says so:\n{stderr}");
}

#[test]
fn a_429_on_start_is_retried_after_retry_after() {
    let faults = Faults { failing_creates: 1, failing_status: Some(429), ..Faults::default() };
    let emu = Emulator::start(Api::Runtime, RUNTIME_KEY, faults);
    let o = run(Api::Runtime, &emu, "rate-limited", "", "steps:\n  - message: hi\n", "replies: []\n", RUNTIME_KEY);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!((emu.creates(), emu.deletes()), (1, 1));
    let retries = o.report["sandbox"]["api_retries"].as_array().unwrap();
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert_eq!(retries[0]["status"], 429);
    assert_eq!(retries[0]["path"], "/start");
    assert!(retries[0]["waited_ms"].as_u64().unwrap() >= 1000);
}

/// Starts a job on the emulator in the background; returns the child and its temp dir.
fn spawn(
    api: Api,
    emulator: &Emulator,
    name: &str,
    sandbox_extra: &str,
    extra: &str,
    script: &str,
) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_in(dir.path(), api, emulator, name, sandbox_extra, extra, script);
    (child, dir)
}

/// `spawn` in `dir` (several runs may share it, and their sandbox ledger directory, `dir/state`).
fn spawn_in(
    dir: &Path,
    api: Api,
    emulator: &Emulator,
    name: &str,
    sandbox_extra: &str,
    extra: &str,
    script: &str,
) -> std::process::Child {
    std::fs::write(dir.join(format!("{name}.script.yaml")), script).unwrap();
    let var = match api {
        Api::Cloud => "OPENHANDS_CLOUD_API_KEY",
        Api::Runtime => "RUNTIME_API_KEY",
    };
    let key = match api {
        Api::Cloud => CLOUD_KEY,
        Api::Runtime => RUNTIME_KEY,
    };
    let sandbox =
        sandbox_yaml(&api, &emulator.url, &format!("  working_dir: {}\n{sandbox_extra}", dir.join("ws").display()));
    let job = write_job(
        dir,
        &format!("{name}.yaml"),
        &format!("name: {name}\nsandbox:\n{sandbox}llm: {{model: m}}\n{extra}rehearsal: {name}.script.yaml\n"),
    );
    Ohrun::new()
        .current_dir(dir)
        .env(var, key)
        .env("OHRUN_STATE_DIR", dir.join("state"))
        .args(["run", "--rehearse"])
        .args([&job])
        .spawn()
}

fn sigint_while_starting(api: Api, name: &str) {
    let emu = Emulator::start(
        api.clone(),
        match api {
            Api::Cloud => CLOUD_KEY,
            Api::Runtime => RUNTIME_KEY,
        },
        Faults { start_delay: Duration::from_secs(60), ..Faults::default() },
    );
    let (child, dir) = spawn(api, &emu, name, "", "steps:\n  - message: hi\n", "replies: []\n");
    wait_until(Duration::from_secs(30), "the sandbox was created", || emu.creates() == 1);
    std::thread::sleep(Duration::from_millis(500));
    let signalled = std::time::Instant::now();
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(signalled.elapsed() < Duration::from_secs(20), "took {:?} to stop", signalled.elapsed());
    assert_eq!(emu.deletes(), 1, "the sandbox that was starting was released");
    let report = read_report(&dir.path().join(format!("ohrun-reports/{name}/{name}")));
    assert_eq!(report["outcome"]["class"], "interrupted");
    assert!(report["sandbox"]["id"].as_str().is_some(), "its id is in run.json: {}", report["sandbox"]);
    assert_eq!(report["sandbox"]["disposition"], "released");
    assert_no_secret(&dir.path().join(format!("ohrun-reports/{name}/{name}")), &out.stdout, &out.stderr);
}

#[test]
fn sigint_while_a_cloud_sandbox_starts_deletes_it() {
    sigint_while_starting(Api::Cloud, "cloud-sigint");
}

#[test]
fn sigint_while_a_runtime_starts_stops_it() {
    sigint_while_starting(Api::Runtime, "runtime-sigint");
}

#[test]
fn a_failed_provisioning_keeps_the_sandbox_id_and_every_retry_in_the_report() {
    let faults = Faults { failing_creates: 2, go_error: true, ..Faults::default() };
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, faults);
    let o = run(Api::Cloud, &emu, "failed-start", "", "steps:\n  - message: hi\n", "replies: []\n", CLOUD_KEY);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.report["sandbox"]["id"].as_str().is_some_and(|id| id.starts_with("sbx")), "{}", o.report["sandbox"]);
    assert_eq!(o.report["sandbox"]["api_retries"].as_array().unwrap().len(), 2, "{}", o.report["sandbox"]);
    assert_eq!(o.report["sandbox"]["disposition"], "released");
    assert_eq!(emu.deletes(), 1);
}

#[test]
fn a_failed_release_after_a_failed_provisioning_is_exit_5_with_the_id() {
    let faults = Faults { go_error: true, delete_status: Some(500), ..Faults::default() };
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, faults);
    let o = run(Api::Cloud, &emu, "left-behind", "", "steps:\n  - message: hi\n", "replies: []\n", CLOUD_KEY);
    assert_eq!(o.code, 5, "5 outranks 3:\n{}", o.stderr);
    let id = o.report["sandbox"]["id"].as_str().expect("the id is recorded");
    assert!(o.stderr.contains(id), "the console names the sandbox:\n{}", o.stderr);
    assert_eq!(o.report["sandbox"]["disposition"], "release_failed");
    assert_eq!(o.report["outcome"]["class"], "left_behind");
}

#[test]
fn a_create_whose_answer_is_lost_is_never_adopted_and_its_candidate_is_reported() {
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, Faults { lost_creates: 1, ..Faults::default() });
    let o = run(Api::Cloud, &emu, "unsure", "", "steps:\n  - message: hi\n", "replies: []\n", CLOUD_KEY);
    assert_eq!(o.code, 5, "a sandbox may be left behind:\n{}", o.stderr);
    assert_eq!(emu.creates(), 1, "ohrun did not create a second sandbox");
    assert_eq!(emu.deletes(), 0, "nor did it delete one it cannot be sure is its own");
    let candidates: Vec<String> =
        o.report["sandbox"]["candidates"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    let existing: Vec<String> = emu.shared.sandboxes.lock().unwrap().keys().cloned().collect();
    assert_eq!(candidates, existing, "the candidate is reported");
    assert!(o.stderr.contains(&existing[0]), "{}", o.stderr);
    assert!(o.report["sandbox"]["id"].is_null(), "it was not adopted");
    // The ledger keeps the candidate: gc names it (exit 5) and never deletes what may not be ohrun's.
    let gc = gc_json(&o.dir, true);
    assert_eq!(gc.code, 5, "{}", gc.stdout);
    let item = &gc.json()["items"][0];
    assert_eq!(item["state"], "unidentified", "{item}");
    assert!(item["detail"].as_str().unwrap().contains(&existing[0]), "{item}");
    assert_eq!(emu.deletes(), 0);
}

#[test]
fn limits_timeout_bounds_provisioning_too() {
    let emu =
        Emulator::start(Api::Cloud, CLOUD_KEY, Faults { start_delay: Duration::from_secs(60), ..Faults::default() });
    let started = std::time::Instant::now();
    let o = run(
        Api::Cloud,
        &emu,
        "run-timeout",
        "  init_timeout: 300s\n",
        "limits: {timeout: 4s}\nsteps:\n  - message: hi\n",
        "replies: []\n",
        CLOUD_KEY,
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(started.elapsed() < Duration::from_secs(30), "the run's 4 s were not enforced ({:?})", started.elapsed());
    assert!(o.stderr.contains("limits.timeout"), "{}", o.stderr);
    assert_eq!(emu.deletes(), 1);
}

#[test]
fn ctrl_c_is_served_while_a_provider_probe_hangs() {
    let faults = Faults { slow_lookups: Some(Duration::from_secs(40)), ..Faults::default() };
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, faults);
    let script = "replies:\n  - tool: finish\n    args: {message: slow}\n    delay: 60s\n";
    let (child, dir) =
        spawn(Api::Cloud, &emu, "probe-hangs", "  init_timeout: 120s\n", "steps:\n  - message: Wait.\n", script);
    wait_for_event(dir.path(), "probe-hangs", "MessageEvent", Duration::from_secs(120));
    // Provisioning is over: a lookup the provider holds now is a probe, waiting 40 s for its answer.
    wait_until(Duration::from_secs(30), "a probe waits on the provider", || emu.held_lookups() > 0);
    let signalled = std::time::Instant::now();
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(90));
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(signalled.elapsed() < Duration::from_secs(15), "Ctrl-C waited for the probe: {:?}", signalled.elapsed());
}

#[test]
fn a_message_is_sent_once_even_when_the_sandbox_is_paused_while_it_is_sent() {
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, Faults { proxied: true, ..Faults::default() });
    let (child, dir) = spawn(
        Api::Cloud,
        &emu,
        "paused-send",
        "  api_timeout: 5s\n",
        "steps:\n  - message: Only once across a pause.\n",
        "replies: []\n",
    );
    wait_until(Duration::from_secs(120), "the sandbox runs behind its proxy", || {
        emu.proxy().is_some_and(|p| !p.requests_matching("/server_info").is_empty())
    });
    let proxy = emu.proxy().unwrap();
    // The server stores the message, its answer is lost, and the provider says the sandbox is paused.
    proxy.add_rule(crate::proxy::Rule {
        matches: |l| l.starts_with("POST") && l.contains("/events HTTP/1.1"),
        times: 1,
        action: crate::proxy::Action::LoseAnswer,
    });
    wait_until(Duration::from_secs(60), "the message was posted", || {
        proxy.requests_matching("POST").iter().any(|r| r.ends_with("/events"))
    });
    emu.mark_paused();
    let out = wait_output(child, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let posts = proxy.requests_matching("POST").into_iter().filter(|r| r.ends_with("/events")).count();
    assert_eq!(posts, 1, "the message was posted once");
    let resumes = emu.shared.requests.lock().unwrap().iter().filter(|(what, _)| what.ends_with("/resume")).count();
    assert_eq!(resumes, 1, "the sandbox was resumed");
    let report = read_report(&dir.path().join("ohrun-reports/paused-send/paused-send"));
    assert_eq!(report["steps"][0]["end_reason"], "finished");
    let events = read_events(&dir.path().join("ohrun-reports/paused-send/paused-send"));
    let sent = events.iter().filter(|e| e["kind"] == "MessageEvent" && e["source"] == "user").count();
    assert_eq!(sent, 1, "the server holds the message once");
}

#[test]
fn a_third_signal_exits_at_once_naming_the_sandbox_left_and_a_hangup_is_a_first() {
    let emu = Emulator::start(Api::Cloud, CLOUD_KEY, Faults { proxied: true, ..Faults::default() });
    let slow = "replies:\n  - tool: finish\n    args: {message: slow}\n    delay: 120s\n";
    let (child, dir) = spawn(Api::Cloud, &emu, "thrice", "", "steps:\n  - message: Wait.\n", slow);
    wait_for_event(dir.path(), "thrice", "MessageEvent", Duration::from_secs(120));
    // From now on the server answers nothing for a minute (its event socket stays open), so the graceful
    // stop cannot get anywhere before the third signal. Each signal is sent once the one before it has
    // shown in what ohrun asks the server, so none can merge with the next.
    let proxy = emu.proxy().unwrap();
    let requests = || proxy.requests_matching("").len();
    let polls = || proxy.requests_matching("GET /api/conversations/").len();
    let polled = polls();
    proxy.add_rule(crate::proxy::Rule {
        matches: |_| true,
        times: u32::MAX,
        action: crate::proxy::Action::Delay(Duration::from_secs(60)),
    });
    // The step's REST poll (every 5 s) is held too: it makes no other request meanwhile.
    wait_until(Duration::from_secs(30), "the step's poll is held", || polls() > polled);
    signal(&child, libc::SIGINT);
    wait_until(Duration::from_secs(30), "the first signal interrupted the agent", || {
        !proxy.requests_matching("/interrupt").is_empty()
    });
    let before_second = requests();
    signal(&child, libc::SIGINT);
    // The second stops waiting for the agent: the step ends and asks for its costs.
    wait_until(Duration::from_secs(30), "the second signal ended the wait", || requests() > before_second);
    let signalled = std::time::Instant::now();
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(30));
    // The graceful stop would have waited for the server up to its 7 s budget.
    assert!(signalled.elapsed() < Duration::from_secs(5), "took {:?}", signalled.elapsed());
    assert_eq!(out.code, 5, "{}", out.stderr);
    let checkpoint = read_checkpoint(&dir.path().join("ohrun-reports/thrice/thrice/attempt-1"));
    let id = checkpoint["sandbox"]["id"].as_str().expect("the checkpoint names the sandbox");
    assert!(out.stderr.contains(&format!("may still be running: cloud sandbox {id}")), "{}", out.stderr);
    assert!(out.stderr.contains("run `ohrun gc`"), "{}", out.stderr);
    assert_eq!(checkpoint["status"], "running");
    assert_eq!(emu.deletes(), 0, "nothing was released: that is why it is named");
    // What the third signal left, the ledger names: gc deletes it.
    let gc = Ohrun::new()
        .env("OHRUN_STATE_DIR", dir.path().join("state"))
        .env("OPENHANDS_CLOUD_API_KEY", CLOUD_KEY)
        .args(["gc"])
        .output();
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert!(gc.stderr.contains(&format!("removed: cloud {}", &id[..id.len().min(12)])), "{}", gc.stderr);
    assert_eq!((emu.deletes(), emu.ids()), (1, Vec::<String>::new()));

    // SIGHUP (the terminal went away) is a first signal: a graceful stop that releases the sandbox.
    let (child, dir) = spawn(Api::Cloud, &emu, "hangup", "", "steps:\n  - message: Wait.\n", slow);
    wait_for_event(dir.path(), "hangup", "MessageEvent", Duration::from_secs(120));
    signal(&child, libc::SIGHUP);
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.code, 130, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/hangup/hangup"));
    assert_eq!(
        (&report["outcome"]["class"], &report["sandbox"]["disposition"]),
        (&json!("interrupted"), &json!("released"))
    );
    assert_eq!(emu.deletes(), 2);
}

#[test]
fn a_stopped_runtime_session_that_ohrun_starts_again_is_recorded_and_stopped() {
    // The job names its session; the first run starts and stops it. A rerun finds it stopped and starts it
    // again: that start is this run's, so it is stopped at the end and reported as released, not as a
    // session someone else runs.
    let emu = Emulator::start(Api::Runtime, RUNTIME_KEY, Faults::default());
    let fixed = "  session_id: ohrun-test-fixed-session\n";
    for (n, name) in ["fixed-first", "fixed-again"].into_iter().enumerate() {
        let o = run(Api::Runtime, &emu, name, fixed, "steps:\n  - message: hi\n", "replies: []\n", RUNTIME_KEY);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(o.report["sandbox"]["disposition"], "released", "{}", o.report["sandbox"]);
        assert_eq!(o.report["sandbox"]["id"], "rt-ohrun-test-fixed-session", "{}", o.report["sandbox"]);
        assert_eq!((emu.creates(), emu.deletes()), (n as u32 + 1, n as u32 + 1), "started and stopped again");
        assert_eq!(emu.statuses(), vec!["STOPPED".to_string()]);
        // Its ledger entry was closed by the confirmed release (the file goes with its last entry).
        assert_eq!(std::fs::read_dir(o.dir.path().join("state/ledger")).unwrap().count(), 0, "{name}");
    }
}

#[test]
fn gc_never_stops_a_runtime_session_that_a_running_ohrun_is_attached_to() {
    // A run starts the job's session and is killed: its ledger entry stays open. A second run (the same
    // session_id) attaches to the session, which still runs. gc must leave the session alone while that
    // run holds it, and stop it once no running ohrun does.
    let emu = Emulator::start(Api::Runtime, RUNTIME_KEY, Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let fixed = "  session_id: ohrun-test-shared-session\n";
    let slow = "replies:\n  - tool: finish\n    args: {message: slow}\n    delay: 300s\n";
    let steps = "steps:\n  - message: Wait.\n    timeout: 10m\n";
    let killed = spawn_in(dir.path(), Api::Runtime, &emu, "starter", fixed, steps, slow);
    wait_for_event(dir.path(), "starter", "MessageEvent", Duration::from_secs(120));
    signal(&killed, libc::SIGKILL);
    let _ = wait_output(killed, Duration::from_secs(10));
    let attached = spawn_in(dir.path(), Api::Runtime, &emu, "attacher", fixed, steps, slow);
    wait_for_event(dir.path(), "attacher", "MessageEvent", Duration::from_secs(120));
    assert_eq!(emu.creates(), 1, "the second run attached to the running session");

    let gc = || {
        Ohrun::new()
            .env("OHRUN_STATE_DIR", dir.path().join("state"))
            .env("RUNTIME_API_KEY", RUNTIME_KEY)
            .args(["gc", "--json"])
            .output()
    };
    let held = gc();
    assert_eq!(held.code, 0, "{}", held.stderr);
    let items = held.json()["items"].as_array().unwrap().clone();
    let starter = items.iter().find(|i| i["run_id"] == "starter").expect("the killed run's entry");
    assert_eq!(starter["state"], "in_use", "{items:?}");
    assert!(starter["detail"].as_str().unwrap().contains("held by the running ohrun"), "{starter}");
    assert_eq!((emu.deletes(), emu.statuses()), (0, vec!["RUNNING".to_string()]), "gc stopped a session in use");

    // The attached run ends: the session is not its to stop, and now nothing holds it.
    signal(&attached, libc::SIGINT);
    let out = wait_output(attached, Duration::from_secs(60));
    assert_eq!(out.code, 130, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/attacher/attacher"));
    assert_eq!(report["sandbox"]["disposition"], "attached", "{}", report["sandbox"]);
    assert_eq!(emu.deletes(), 0);
    let removed = gc();
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let items = removed.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!((&items[0]["run_id"], &items[0]["state"]), (&json!("starter"), &json!("removed")), "{items:?}");
    assert_eq!((emu.deletes(), emu.statuses()), (1, vec!["STOPPED".to_string()]));
}
