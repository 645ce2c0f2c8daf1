//! A small builder around the real `ohrun` binary, and helpers for the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Ohrun {
    cmd: Command,
}

impl Ohrun {
    pub fn new() -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ohrun"));
        cmd.current_dir(repo_root()).env("NO_COLOR", "1").env_remove("RUST_LOG").env("CI", "true");
        Ohrun { cmd }
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn output(mut self) -> Result {
        let out: Output = self.cmd.output().expect("ohrun runs");
        Result {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn spawn(mut self) -> std::process::Child {
        self.cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ohrun starts")
    }
}

#[derive(Debug)]
pub struct Result {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Result {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

/// The managed agent-server command (`.ci/run` installs it with `ohrun setup local`).
pub fn agent_server_command() -> Vec<String> {
    let venv = dirs_cache().join("agent-server-1.58.2");
    let python = venv.join("bin/python");
    assert!(
        venv.join(".complete").is_file(),
        "the managed agent-server is not installed at {}: run `cargo run -- setup local` first",
        venv.display()
    );
    vec![python.display().to_string(), "-m".into(), "openhands.agent_server".into()]
}

fn dirs_cache() -> PathBuf {
    std::env::var_os("OHRUN_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
        base.join("ohrun")
    })
}

/// Reads and schema-checks a run report.
pub fn read_report(dir: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(dir.join("run.json")).unwrap_or_else(|e| panic!("{}/run.json: {e}", dir.display()));
    let report: serde_json::Value = serde_json::from_str(&text).expect("run.json is JSON");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("schemas/report.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the report schema compiles");
    let errors: Vec<String> = validator.iter_errors(&report).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "run.json does not match schemas/report.schema.json: {errors:?}");
    report
}

/// The events of `events.jsonl`, in order.
pub fn read_events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// True while a process with this pid exists.
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// The pid ohrun recorded for a local sandbox.
pub fn sandbox_pid(report: &serde_json::Value) -> Option<i32> {
    report["sandbox"]["id"].as_str()?.strip_prefix("pid:")?.parse().ok()
}

/// Asserts no process of the sandbox remains (its whole process group).
pub fn assert_no_server_left(report: &serde_json::Value) {
    if let Some(pid) = sandbox_pid(report) {
        std::thread::sleep(Duration::from_millis(100));
        assert!(!process_alive(pid), "the agent-server (pid {pid}) is still running");
        // SAFETY: signal 0 to the process group only checks for existence.
        let group_alive = unsafe { libc::kill(-pid, 0) == 0 };
        assert!(!group_alive, "a process of the agent-server's group {pid} is still running");
    }
}

/// Writes a job file into `dir` and returns its path.
pub fn write_job(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts a real agent-server on 127.0.0.1:`port` with session key `key`, its state (and log) in
/// `state_dir`, the way a user or a provider would.
pub fn spawn_agent_server(port: u16, key: &str, state_dir: &Path) -> std::process::Child {
    let command = agent_server_command();
    let log = std::fs::File::create(state_dir.join("server.log")).unwrap();
    std::process::Command::new(&command[0])
        .args(&command[1..])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .current_dir(state_dir)
        .env("OH_SESSION_API_KEYS_0", key)
        .env("OH_ENABLE_VSCODE", "false")
        .env("OH_ENABLE_BROWSER", "false")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("TMUX_TMPDIR", state_dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
