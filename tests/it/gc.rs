//! What ohrun leaves when it is stopped. SIGINT during a batch releases every sandbox (local, docker, the
//! Cloud emulator) and writes every report; after SIGKILL, `ohrun gc` finds what is left from the sandbox
//! ledger and removes it — and never touches what a running ohrun holds, a process that merely reuses a
//! recorded pid, or a container labelled for another ledger.

use crate::docker::{DOCKER_TIMEOUT, IMAGE, containers_of, docker, engine_ready};
use crate::emulators::{Api, Emulator, Faults};
use crate::provider_apis::CLOUD_KEY;
use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every run's agent starts a command in its terminal (so there is a tmux server to leave behind), then
/// waits on an LLM answer that outlasts the test: each run is mid-step when stopped.
const SCRIPT: &str = "replies:\n  - tool: terminal\n    args: {command: 'sleep 300'}\n  - tool: finish\n    args: {message: never}\n    delay: 300s\n";
const KEY_VAR: &str = "OPENHANDS_CLOUD_API_KEY";

enum Kind {
    Local,
    Docker,
    Cloud(Emulator),
}

impl Kind {
    fn cloud() -> Kind {
        Kind::Cloud(Emulator::start(Api::Cloud, CLOUD_KEY, Faults::default()))
    }

    fn sandbox(&self, dir: &Path) -> String {
        match self {
            Kind::Local => "sandbox: {kind: local}\n".into(),
            Kind::Docker => "sandbox: {kind: docker}\n".into(),
            Kind::Cloud(emu) => format!(
                "sandbox:\n  kind: cloud\n  api_url: {}\n  api_key: ${{{KEY_VAR}}}\n  working_dir: {}/ws/{{{{ run.id }}}}\n",
                emu.url,
                dir.display()
            ),
        }
    }

    /// How long a batch may take to get every run to its step (docker may build its image first).
    fn start_timeout(&self) -> Duration {
        match self {
            Kind::Docker => DOCKER_TIMEOUT,
            _ => Duration::from_secs(240),
        }
    }
}

/// A job of `runs` runs whose one step waits on `sleep 300`.
fn batch_job(dir: &Path, name: &str, runs: usize, kind: &Kind) -> PathBuf {
    std::fs::write(dir.join("script.yaml"), SCRIPT).unwrap();
    let values: Vec<String> = (1..=runs).map(|n| n.to_string()).collect();
    let text = format!(
        "name: {name}\nmatrix:\n  n: [{}]\n{}llm: {{model: m}}\nsteps:\n  - message: Wait, run {{{{ n }}}}.\n    timeout: 10m\nrehearsal: script.yaml\n",
        values.join(", "),
        kind.sandbox(dir)
    );
    write_job(dir, "job.yaml", &text)
}

/// `ohrun run` with its ledger in `state` and its temp dir `tmp`, where the test sees what it leaves.
fn start(dir: &Path, job: &Path, args: &[&str], state: &Path, tmp: &Path, timeout: Duration) -> std::process::Child {
    Ohrun::new()
        .current_dir(dir)
        .env(KEY_VAR, CLOUD_KEY)
        .env("OHRUN_STATE_DIR", state)
        .env("TMPDIR", tmp)
        .timeout(timeout)
        .args(["run", "--rehearse"])
        .args(args)
        .args([job])
        .spawn()
}

/// The ledger files in `state`.
fn ledgers(state: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(state.join("ledger")) else { return Vec::new() };
    entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "jsonl")).collect()
}

/// The runs of the batch whose agent has started its `sleep`.
fn runs_waiting(batch: &Path) -> Vec<String> {
    let Ok(runs) = std::fs::read_dir(batch) else { return Vec::new() };
    let mut ids: Vec<String> = runs
        .flatten()
        .filter(|r| {
            std::fs::read_to_string(r.path().join("attempt-1/events.jsonl"))
                .is_ok_and(|t| t.contains("\"tool_name\":\"terminal\""))
        })
        .map(|r| r.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

fn wait_for_runs(batch: &Path, n: usize, timeout: Duration) -> Vec<String> {
    wait_until(timeout, &format!("{n} runs wait on their agent's command"), || runs_waiting(batch).len() >= n);
    runs_waiting(batch)
}

/// SIGINT while three of six runs are mid-step and a fourth waits, provisioned ahead (`--prefetch 1`), for
/// its place: exit 130 within `limit`, every started run's report says interrupted and released, the
/// others were never started, and nothing of any sandbox is left.
fn sigint_during_a_batch(kind: Kind, name: &str, limit: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let job = batch_job(dir.path(), name, 6, &kind);
    let batch = dir.path().join("ohrun-reports").join(name);
    let state = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--jobs", "3", "--prefetch", "1"];
    let timeout = kind.start_timeout() + Duration::from_secs(120);
    let child = start(dir.path(), &job, &args, state.path(), tmp.path(), timeout);
    let waiting = wait_for_runs(&batch, 3, kind.start_timeout());
    wait_until(kind.start_timeout(), "a fourth run waits for its place", || {
        std::fs::read_dir(&batch).into_iter().flatten().flatten().any(|r| {
            let id = r.file_name().to_string_lossy().into_owned();
            !waiting.contains(&id)
                && read_checkpoint(&r.path().join("attempt-1"))["sandbox"]["disposition"] == "provisioned"
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(120));
    let took = signalled.elapsed();
    eprintln!("{name}: exit {} {took:?} after SIGINT", out.code);
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(took <= limit, "took {took:?} to stop (limit {limit:?}): {}", out.stderr);
    let summary = read_summary(&batch);
    let runs = summary["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "{summary}");
    let mut started = Vec::new();
    for r in runs {
        let id = r["id"].as_str().unwrap().to_string();
        if !batch.join(&id).join("attempt-1").is_dir() {
            assert_eq!(r["status"], "not_started", "{r}");
            continue;
        }
        let report = read_report(&batch.join(&id));
        // The run that waited for its place never sent a message.
        let step = if waiting.contains(&id) { "interrupted" } else { "not_run" };
        assert_eq!(
            (&report["status"], &report["outcome"]["class"], &report["steps"][0]["end_reason"]),
            (&json!("ended"), &json!("interrupted"), &json!(step)),
            "{id}: {report}"
        );
        assert_eq!(report["sandbox"]["disposition"], "released", "{id}: {}", report["sandbox"]);
        match &kind {
            Kind::Local => assert_no_server_left(&report),
            Kind::Docker => assert_eq!(containers_of(&id), Vec::<String>::new(), "{id}'s container is left"),
            Kind::Cloud(_) => {}
        }
        started.push(id);
    }
    assert_eq!(started.len(), 4, "the three runs under way and the one ahead had started: {started:?}");
    assert!(waiting.iter().all(|id| started.contains(id)), "{waiting:?} / {started:?}");
    // Every release was confirmed: the ledger closed every entry, and its file went with the last.
    assert_eq!(ledgers(state.path()), Vec::<PathBuf>::new());
    // A local server's state directory went with its release.
    assert_eq!(names_in(tmp.path()), Vec::<String>::new(), "left in the temp dir");
    if let Kind::Cloud(emu) = &kind {
        assert_eq!((emu.ids(), emu.deletes()), (Vec::<String>::new(), 4), "every Cloud sandbox was deleted");
    }
}

#[test]
fn sigint_during_a_local_batch_stops_every_run_and_leaves_no_server() {
    agent_server_command();
    sigint_during_a_batch(Kind::Local, "int-local", Duration::from_secs(10));
}

#[test]
fn sigint_during_a_docker_batch_stops_every_run_and_leaves_no_container() {
    if !engine_ready() {
        return;
    }
    sigint_during_a_batch(Kind::Docker, "int-docker", Duration::from_secs(10));
}

#[test]
fn sigint_during_a_cloud_batch_stops_every_run_and_deletes_every_sandbox() {
    agent_server_command();
    // Within `api_timeout` (60 s by default) for the provider kinds.
    sigint_during_a_batch(Kind::cloud(), "int-cloud", Duration::from_secs(60));
}

/// `ohrun gc --json ARGS` with the ledgers in `state`.
fn gc(state: &Path, args: &[&str], with_key: bool) -> (i32, Value, String) {
    gc_env(state, args, with_key, &[])
}

/// `gc` with more environment.
fn gc_env(state: &Path, args: &[&str], with_key: bool, env: &[(&str, &Path)]) -> (i32, Value, String) {
    let mut cmd = Ohrun::new().env("OHRUN_STATE_DIR", state).env_remove(KEY_VAR).args(["gc", "--json"]).args(args);
    if with_key {
        cmd = cmd.env(KEY_VAR, CLOUD_KEY);
    }
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = cmd.timeout(Duration::from_secs(120)).output();
    assert!(!out.stdout.contains(CLOUD_KEY) && !out.stderr.contains(CLOUD_KEY), "the key reached the console");
    let json = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    (out.code, json, out.stderr)
}

/// (run id, backend) of the items in `state`.
fn items(outcome: &Value, state: &str) -> BTreeSet<(String, String)> {
    outcome["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == state)
        .map(|i| (i["run_id"].as_str().unwrap().to_string(), i["backend"].as_str().unwrap().to_string()))
        .collect()
}

/// Processes started by ohrun as `sh -c … ohrun-watchdog …`.
fn watchdogs_of(pid: u32) -> Vec<i32> {
    children_of(pid)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.windows(14).any(|w| w == b"ohrun-watchdog"))
        })
        .collect()
}

/// The `TMUX_TMPDIR=…` entry of a local server's environment: every process it started carries it.
fn tmux_entry(pid: i32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|b| *b == 0)
        .find(|e| e.starts_with(b"TMUX_TMPDIR="))
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .expect("a local server has its own TMUX_TMPDIR")
}

/// What is left of the runs' sandboxes, as the test sees it (process table, engine, emulator).
fn left(kind: &Kind, batch: &Path, ids: &[String], tmux: &[String]) -> usize {
    match kind {
        Kind::Local => {
            let servers = ids
                .iter()
                .filter_map(|id| sandbox_pid(&read_checkpoint(&last_attempt(&batch.join(id)))))
                .filter(|pid| process_alive(*pid))
                .count();
            servers + tmux.iter().map(|e| processes_with_env(e).len()).sum::<usize>()
        }
        Kind::Docker => ids.iter().map(|id| containers_of(id).len()).sum(),
        Kind::Cloud(emu) => emu.ids().len(),
    }
}

/// SIGKILL during a two-run batch; `gc --dry-run` lists exactly the two sandboxes left, `gc` removes them,
/// and a second look finds nothing, not even a ledger file.
fn gc_after_sigkill(kind: Kind, name: &str) {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = batch_job(dir.path(), name, 2, &kind);
    let batch = dir.path().join("ohrun-reports").join(name);
    let tmp = tempfile::tempdir().unwrap();
    let timeout = kind.start_timeout() + Duration::from_secs(120);
    let child = start(dir.path(), &job, &["--jobs", "2"], state.path(), tmp.path(), timeout);
    let ids = wait_for_runs(&batch, 2, kind.start_timeout());
    let mut tmux = Vec::new();
    let mut reap = Reap(Vec::new());
    if let Kind::Local = kind {
        // A local server's watchdog stops it when ohrun dies: kill the watchdogs too, as a crash that took
        // them along would, so that gc has something to find.
        for pid in watchdogs_of(child.id()) {
            // SAFETY: a signal to a process this test's child started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for id in &ids {
            let pid = sandbox_pid(&read_checkpoint(&last_attempt(&batch.join(id)))).expect("the server's pid");
            tmux.push(tmux_entry(pid));
            reap.0.push(tmux.last().unwrap().clone());
        }
    }
    signal(&child, libc::SIGKILL);
    let _ = wait_output(child, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    assert!(left(&kind, &batch, &ids, &tmux) >= 2, "the killed batch left its sandboxes");
    let server_dirs = names_in(tmp.path()).into_iter().filter(|n| n.starts_with("ohrun-agent-server-")).count();
    assert_eq!(server_dirs, if let Kind::Local = kind { 2 } else { 0 }, "{:?}", names_in(tmp.path()));

    let expected: BTreeSet<(String, String)> = ids.iter().map(|id| (id.clone(), kind_name(&kind).into())).collect();
    // A dry run that finds something left says so in its exit code too (5, as gc that cannot remove it).
    let (code, dry, stderr) = gc(state.path(), &["--dry-run"], true);
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(items(&dry, "left"), expected, "{dry}");
    assert_eq!(dry["items"].as_array().unwrap().len(), 2, "nothing else is listed: {dry}");
    assert!(left(&kind, &batch, &ids, &tmux) >= 2, "a dry run removes nothing");
    if let Kind::Cloud(_) = kind {
        // Without the key gc cannot even look: it says which variable to set, and exit 5.
        let (code, keyless, _) = gc(state.path(), &["--dry-run"], false);
        assert_eq!(code, 5, "{keyless}");
        let detail = keyless["items"][0]["detail"].as_str().unwrap();
        assert!(detail.contains(KEY_VAR), "{detail}");
    }

    let (code, removed, stderr) = gc(state.path(), &[], true);
    assert_eq!(code, 0, "{stderr}{removed}");
    assert_eq!(items(&removed, "removed"), expected, "{removed}");
    wait_until(Duration::from_secs(15), "nothing of the sandboxes is left", || left(&kind, &batch, &ids, &tmux) == 0);
    let (code, again, _) = gc(state.path(), &["--dry-run"], true);
    assert_eq!((code, again["items"].as_array().unwrap().len()), (0, 0), "{again}");
    assert_eq!(ledgers(state.path()), Vec::<PathBuf>::new());
    // Nothing of the runs is left on this machine: no server state, no workspace snapshot (a provider's
    // or a container's snapshots are in its sandbox).
    assert_eq!(names_in(tmp.path()), Vec::<String>::new(), "left in the temp dir");
    if let Kind::Local = kind {
        assert_eq!(ids.iter().flat_map(|id| snapshots_in_tmp(id)).collect::<Vec<_>>(), Vec::<String>::new());
    }
}

/// If the test fails after the watchdogs are gone, nothing it started may outlive it: every process that
/// carries one of these `TMUX_TMPDIR=` entries (server, tmux, shells) is killed.
struct Reap(Vec<String>);

impl Drop for Reap {
    fn drop(&mut self) {
        for entry in &self.0 {
            for pid in processes_with_env(entry) {
                // SAFETY: a signal to a process the test's own ohrun started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Local => "local",
        Kind::Docker => "docker",
        Kind::Cloud(_) => "cloud",
    }
}

#[test]
fn gc_removes_the_local_servers_a_killed_batch_left() {
    agent_server_command();
    gc_after_sigkill(Kind::Local, "gc-local");
}

#[test]
fn gc_removes_the_containers_a_killed_batch_left() {
    if !engine_ready() {
        return;
    }
    gc_after_sigkill(Kind::Docker, "gc-docker");
}

#[test]
fn gc_deletes_the_cloud_sandboxes_a_killed_batch_left() {
    agent_server_command();
    gc_after_sigkill(Kind::cloud(), "gc-cloud");
}

/// A ledger line as ohrun writes it.
fn line(v: Value) -> String {
    format!("{v}\n")
}

fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn gc_never_signals_a_reused_pid_nor_what_a_running_ohrun_holds_and_respects_older_than() {
    let state = tempfile::tempdir().unwrap();
    let ledger = state.path().join("ledger");
    std::fs::create_dir_all(&ledger).unwrap();
    let mut reused = std::process::Command::new("sleep").arg("120").spawn().unwrap();
    let mut recent = std::process::Command::new("sleep").arg("120").spawn().unwrap();
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let entry = |n: u64, run: &str, created_at: &str, process: Value| {
        line(json!({"op": "entry", "n": n, "sandbox": {
            "backend": "local", "run_id": run, "report_dir": "/nowhere", "created_at": created_at, "process": process}}))
    };
    // An ohrun that is gone (no such pid): one server whose pid now belongs to another process (another
    // start time), one that is still that very process but younger than --older-than.
    let gone_owner = json!({"pid": 4_194_999, "start": 1});
    let text = line(json!({"op": "owner", "process": gone_owner, "ohrun": "0", "created_at": now}))
        + &entry(
            1,
            "reused-pid",
            "2026-01-01T00:00:00Z",
            json!({"pid": reused.id(), "start": start_time(reused.id()) + 1}),
        )
        + &entry(2, "recent", &now, json!({"pid": recent.id(), "start": start_time(recent.id())}));
    std::fs::write(ledger.join("4194999-1.jsonl"), text).unwrap();
    // A running ohrun (this test process stands in for it): its sandbox is in use, whatever it is.
    let me = json!({"pid": std::process::id(), "start": start_time(std::process::id())});
    let running = ledger.join(format!("{}-{}.jsonl", std::process::id(), start_time(std::process::id())));
    let text = line(json!({"op": "owner", "process": me, "ohrun": "0", "created_at": now}))
        + &line(json!({"op": "entry", "n": 1, "sandbox": {
            "backend": "docker", "run_id": "held", "report_dir": "/nowhere", "created_at": now, "id": "0123456789ab"}}));
    std::fs::write(&running, text).unwrap();

    let (code, outcome, stderr) = gc(state.path(), &["--older-than", "1h"], false);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(items(&outcome, "gone"), BTreeSet::from([("reused-pid".into(), "local".into())]), "{outcome}");
    assert_eq!(items(&outcome, "younger"), BTreeSet::from([("recent".into(), "local".into())]), "{outcome}");
    assert_eq!(items(&outcome, "in_use"), BTreeSet::from([("held".into(), "docker".into())]), "{outcome}");
    assert!(reused.try_wait().unwrap().is_none(), "a process that only reuses a recorded pid was signalled");
    assert!(recent.try_wait().unwrap().is_none(), "a server younger than --older-than was stopped");

    let (code, outcome, stderr) = gc(state.path(), &[], false);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(items(&outcome, "removed"), BTreeSet::from([("recent".into(), "local".into())]), "{outcome}");
    assert!(recent.wait().unwrap().signal().is_some(), "the recorded server was stopped");
    assert!(reused.try_wait().unwrap().is_none());
    assert!(!ledger.join("4194999-1.jsonl").exists(), "a dead owner's ledger goes once nothing in it is left");
    assert!(running.exists(), "a running ohrun's ledger is never touched");
    let _ = reused.kill();
    let _ = reused.wait();
}

/// A `sleep 120` standing in for a server (or an ohrun), killed when the test ends however it ends.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start(configure: impl FnOnce(&mut std::process::Command)) -> Sleeper {
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("120");
        configure(&mut cmd);
        Sleeper(cmd.spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Still running (not even exited and waiting to be reaped).
    fn running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private directory named like a local server's state directory, the only kind gc removes.
fn server_state_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ohrun-agent-server-").tempdir().unwrap()
}

/// The ledger of a gone ohrun (`owner`) with one local entry naming `sandbox` (besides backend, run id, …).
fn local_ledger(state: &Path, owner: Value, run: &str, sandbox: Value) -> PathBuf {
    let ledger = state.join("ledger");
    std::fs::create_dir_all(&ledger).unwrap();
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let mut entry = json!({"backend": "local", "run_id": run, "report_dir": "/nowhere", "created_at": now});
    entry.as_object_mut().unwrap().extend(sandbox.as_object().unwrap().clone());
    let file = ledger.join(format!("{}-{}.jsonl", owner["pid"], owner["start"]));
    let text = line(json!({"op": "owner", "process": owner, "ohrun": "0", "created_at": now}))
        + &line(json!({"op": "entry", "n": 1, "sandbox": entry}));
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn gc_finds_a_local_server_whose_pid_was_never_recorded_by_its_environment_never_its_directory() {
    // ohrun died between starting the server and recording its pid: the entry names only the server's
    // private state directory, which the server carries in its environment (a `sleep` stands in for it).
    // A process that merely runs in that directory (a shell someone opened there) is not the server.
    let state = tempfile::tempdir().unwrap();
    let server_dir = server_state_dir();
    let server_dir_path = std::fs::canonicalize(server_dir.path()).unwrap();
    let mut server = Sleeper::start(|c| {
        c.env("OHRUN_SERVER_STATE_DIR", &server_dir_path);
    });
    let mut bystander = Sleeper::start(|c| {
        c.current_dir(&server_dir_path);
    });
    let owner = json!({"pid": 4_194_997, "start": 1});
    local_ledger(state.path(), owner, "unrecorded", json!({"state_dir": server_dir_path}));
    let (code, dry, _) = gc(state.path(), &["--dry-run"], false);
    assert_eq!((code, items(&dry, "left")), (5, BTreeSet::from([("unrecorded".into(), "local".into())])), "{dry}");
    let detail = dry["items"][0]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("agent-server pid {} in", server.pid())), "only the server is named: {detail}");
    let (code, removed, _) = gc(state.path(), &[], false);
    assert_eq!((code, items(&removed, "removed")), (0, BTreeSet::from([("unrecorded".into(), "local".into())])));
    assert!(server.0.wait().unwrap().signal().is_some(), "the server was stopped");
    assert!(bystander.running(), "a process that only runs in the state directory was signalled");
    assert!(!server_dir_path.exists(), "the state directory was removed");
}

#[test]
fn gc_removes_the_state_directory_of_a_server_that_is_gone() {
    // The server and its tmux servers are gone (its watchdog stopped them, say), but what they kept is
    // still there: bash output, conversations. That is left behind too, and gc removes it.
    let state = tempfile::tempdir().unwrap();
    let server_dir = server_state_dir();
    std::fs::create_dir_all(server_dir.path().join("bash_events")).unwrap();
    std::fs::write(server_dir.path().join("bash_events/output"), "what the agent's command printed").unwrap();
    let gone = json!({"pid": 4_194_995, "start": 1});
    let sandbox = json!({"process": gone, "state_dir": server_dir.path()});
    local_ledger(state.path(), json!({"pid": 4_194_994, "start": 1}), "server-gone", sandbox);
    let (code, dry, _) = gc(state.path(), &["--dry-run"], false);
    assert_eq!((code, items(&dry, "left")), (5, BTreeSet::from([("server-gone".into(), "local".into())])), "{dry}");
    let detail = dry["items"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("state directory"), "{detail}");
    let (code, removed, _) = gc(state.path(), &[], false);
    assert_eq!((code, items(&removed, "removed")), (0, BTreeSet::from([("server-gone".into(), "local".into())])));
    assert!(!server_dir.path().exists(), "the state directory is left");
    assert_eq!(ledgers(state.path()), Vec::<PathBuf>::new());
}

#[test]
fn without_procfs_gc_removes_nothing_whose_owner_may_run_and_says_why() {
    // The ledger's owner: a pid that runs, recorded with another start time (with procfs: a reused pid,
    // the owner is gone). Its server still runs, in its state directory.
    let state = tempfile::tempdir().unwrap();
    let no_procfs = tempfile::tempdir().unwrap();
    let owner = Sleeper::start(|_| {});
    let mut server = Sleeper::start(|_| {});
    let server_dir = server_state_dir();
    let process = json!({"pid": server.pid(), "start": start_time(server.pid())});
    let sandbox = json!({"process": process, "state_dir": server_dir.path()});
    let ledger = local_ledger(state.path(), json!({"pid": owner.pid(), "start": 1}), "no-procfs", sandbox);
    let without = [("OHRUN_PROCFS", no_procfs.path())];

    // Whether the owner runs cannot be told: in use, and why, with the way out.
    let (code, outcome, stderr) = gc_env(state.path(), &[], false, &without);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(items(&outcome, "in_use"), BTreeSet::from([("no-procfs".into(), "local".into())]), "{outcome}");
    let detail = outcome["items"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("cannot tell whether"), "{detail}");
    assert!(detail.contains(&format!("--force-dead {}", owner.pid())), "{detail}");
    assert!(server.running() && server_dir.path().exists(), "something of a sandbox in use was removed");
    // The human form says it too.
    let human =
        Ohrun::new().env("OHRUN_STATE_DIR", state.path()).env("OHRUN_PROCFS", no_procfs.path()).args(["gc"]).output();
    assert!(human.stderr.contains("in use: local of run no-procfs: cannot tell whether"), "{}", human.stderr);

    // Forced: the owner counts as gone, but whether its server is still that very process cannot be told
    // either: not signalled, exit 5.
    let (code, outcome, stderr) = gc_env(state.path(), &["--force-dead", &owner.pid().to_string()], false, &without);
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(items(&outcome, "failed"), BTreeSet::from([("no-procfs".into(), "local".into())]), "{outcome}");
    assert!(server.running() && server_dir.path().exists(), "a server gc cannot identify was touched");
    assert!(ledger.exists(), "an entry gc could not remove is kept");

    // With procfs the owner is gone (its pid runs another process): the server and its directory go.
    let (code, outcome, stderr) = gc(state.path(), &[], false);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(items(&outcome, "removed"), BTreeSet::from([("no-procfs".into(), "local".into())]), "{outcome}");
    assert!(server.0.wait().unwrap().signal().is_some(), "the server was stopped");
    assert!(!server_dir.path().exists(), "its state directory was removed");
}

#[test]
fn gc_finds_a_container_by_its_ledger_label_and_only_for_its_own_ledger() {
    if !engine_ready() {
        return;
    }
    let setup = Ohrun::new().args(["setup", "docker"]).timeout(DOCKER_TIMEOUT).output();
    assert_eq!(setup.code, 0, "{}", setup.stderr);
    let state = tempfile::tempdir().unwrap();
    let ledger = std::path::absolute(state.path().join("ledger")).unwrap();
    std::fs::create_dir_all(&ledger).unwrap();
    // Labelled as a dead ohrun (no such pid) would have labelled it before learning its id; one for
    // this ledger, one for another.
    let create = |file: &str, run: &str| {
        let (ok, id) = docker(&[
            "create",
            "--label",
            "dev.ohrun.created-by=ohrun",
            "--label",
            &format!("dev.ohrun.run-id={run}"),
            "--label",
            &format!("dev.ohrun.ledger={file}#1"),
            "--entrypoint",
            "sleep",
            IMAGE,
            "60",
        ]);
        assert!(ok, "docker create: {id}");
        id
    };
    let ours = create(&ledger.join("4194998-1.jsonl").display().to_string(), "labelled-here");
    let theirs = create("/elsewhere/ledger/4194998-1.jsonl", "labelled-elsewhere");
    let (code, dry, stderr) = gc(state.path(), &["--dry-run"], false);
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(items(&dry, "left"), BTreeSet::from([("labelled-here".into(), "docker".into())]), "{dry}");
    let (code, removed, stderr) = gc(state.path(), &[], false);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(items(&removed, "removed"), BTreeSet::from([("labelled-here".into(), "docker".into())]));
    assert_eq!(containers_of("labelled-here"), Vec::<String>::new(), "{ours} was not removed");
    assert_eq!(containers_of("labelled-elsewhere").len(), 1, "another ledger's container was touched");
    docker(&["rm", "-f", &theirs]);
}

/// Every entry under `dir` (not `dir` itself) that another user could read, or that is no directory, file
/// or socket of this user's alone: its path and mode. (tmux makes its sockets group-writable itself; they
/// sit in a private directory.)
fn readable_by_others(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let allowed = if meta.file_type().is_socket() { 0o770 } else { 0o700 };
        if mode & !allowed != 0 {
            found.push(format!("{:o} {}", mode, entry.path().display()));
        }
        if meta.is_dir() {
            found.extend(readable_by_others(&entry.path()));
        }
    }
    found
}

/// The names in `dir`.
fn names_in(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    let mut names: Vec<String> = entries.map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The diff snapshot directories of run `run_id` in /tmp (where they went before they moved into the
/// server's state directory).
fn snapshots_in_tmp(run_id: &str) -> Vec<String> {
    names_in(Path::new("/tmp")).into_iter().filter(|n| n.starts_with(&format!("ohrun-snap-{run_id}-"))).collect()
}

#[test]
fn a_sigkilled_local_run_leaves_nothing_readable_and_gc_leaves_nothing_at_all() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    let dir_path = std::fs::canonicalize(dir.path()).unwrap();
    // The run's temp dir is the test's own, so that everything ohrun and its server put there is seen.
    let tmp = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let workspace = dir_path.join("ohrun-reports/private/private/attempt-1/workspace");
    // The agent edits a file (the editor keeps a history of it) and prints a secret in its terminal (the
    // server keeps the output), then waits.
    let script = format!(
        "replies:\n  - tool: file_editor\n    args: {{command: create, path: {}, file_text: \"notes\\n\"}}\n\
         \x20 - tool: terminal\n    args: {{command: 'echo \"$PRIVATE_TOKEN\" | base64; sleep 300'}}\n\
         \x20 - tool: finish\n    args: {{message: never}}\n",
        workspace.join("notes.txt").display()
    );
    std::fs::write(dir.path().join("script.yaml"), script).unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: private\nsandbox: {kind: local}\nllm: {model: m}\nsecrets: [PRIVATE_TOKEN]\nsteps:\n  - message: Wait.\n    timeout: 10m\nrehearsal: script.yaml\n",
    );
    let child = Ohrun::new()
        .current_dir(dir.path())
        .env("TMPDIR", tmp.path())
        .env("OHRUN_STATE_DIR", state.path())
        .env("PRIVATE_TOKEN", "private-token-5d1e")
        .timeout(Duration::from_secs(300))
        .args(["run", "--rehearse"])
        .args([&job])
        .spawn();
    let mut reap = Reap(Vec::new());
    wait_for_event(dir.path(), "private", "\"tool_name\":\"terminal\"", Duration::from_secs(240));
    let server = children_of(child.id()).into_iter().find(|pid| !watchdogs_of(child.id()).contains(pid));
    reap.0.push(tmux_entry(server.expect("ohrun's agent-server child")));
    let server_dirs: Vec<String> =
        names_in(tmp.path()).into_iter().filter(|n| n.starts_with("ohrun-agent-server-")).collect();
    assert_eq!(server_dirs.len(), 1, "{:?}", names_in(tmp.path()));
    // While it runs: the server's state, its editor history and the diff snapshots are its user's alone.
    assert_eq!(readable_by_others(tmp.path()), Vec::<String>::new());
    assert_eq!(snapshots_in_tmp("private"), Vec::<String>::new(), "the snapshots are outside the server's directory");

    let watchdogs = watchdogs_of(child.id());
    assert_eq!(watchdogs.len(), 1);
    signal(&child, libc::SIGKILL);
    let _ = wait_output(child, Duration::from_secs(10));
    // The watchdog stops the server and its tmux servers (and removes what they kept), then exits.
    wait_until(Duration::from_secs(30), "the watchdog, the server, tmux and the agent's command are gone", || {
        processes_with_env(&reap.0[0]).is_empty() && !process_alive(watchdogs[0])
    });
    let (code, outcome, stderr) = gc(state.path(), &[], false);
    assert_eq!(code, 0, "{stderr}{outcome}");
    assert_eq!(names_in(tmp.path()), Vec::<String>::new(), "left in the temp dir after gc");
    assert_eq!(snapshots_in_tmp("private"), Vec::<String>::new());
    assert_eq!(ledgers(state.path()), Vec::<PathBuf>::new());
}
