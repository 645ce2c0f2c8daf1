//! A small builder around the real `ohrun` binary, and helpers for the end-to-end tests.
//!
//! What the tests need, ohrun gets itself: the managed agent-server venv is installed on first use
//! (`ohrun setup local`, locked, so parallel tests install once) and the default Docker image is built by
//! the first docker test that needs it. Every process a test starts is bounded by a timeout.
//!
//! `OHRUN_TEST_BIN` runs the tests against another ohrun binary (an older build, to watch a test fail).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one ohrun invocation may take in a test unless the test says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Every ohrun a test starts gets the signals the tests send it with their default dispositions and
/// unblocked, whatever the test process inherited: under `nohup cargo test` SIGHUP is ignored, and a
/// shell without job control starts background commands with SIGINT and SIGQUIT ignored; both are
/// inherited across exec and would silently change what the signal tests see.
pub fn default_signals(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGPIPE] {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn ohrun_bin() -> PathBuf {
    std::env::var_os("OHRUN_TEST_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ohrun")))
}

pub struct Ohrun {
    cmd: Command,
    timeout: Duration,
}

impl Ohrun {
    pub fn new() -> Self {
        Self::redacted(true)
    }

    /// `redacted: false` runs `ohrun-unredacted`: the same program with redaction switched off, built only
    /// for the tests (the `test-hooks` feature), so a test can prove it would see a leak. A build for users
    /// has no such binary and no such switch.
    pub fn redacted(redacted: bool) -> Self {
        let program = if redacted || std::env::var_os("OHRUN_TEST_BIN").is_some() {
            ohrun_bin()
        } else {
            PathBuf::from(env!("CARGO_BIN_EXE_ohrun-unredacted"))
        };
        let mut cmd = Command::new(program);
        cmd.current_dir(repo_root()).env("NO_COLOR", "1").env_remove("RUST_LOG").env("CI", "true");
        default_signals(&mut cmd);
        // The tests' sandbox ledgers stay out of the user's own (a gc test names its own directory).
        cmd.env("OHRUN_STATE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("ohrun-state"));
        Ohrun { cmd, timeout: DEFAULT_TIMEOUT }
    }

    /// Spawned as under `nohup`: SIGHUP ignored (after the harness's reset to defaults).
    pub fn hangup_ignored(mut self) -> Self {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            self.cmd.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                Ok(())
            });
        }
        self
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

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// No file ohrun writes may grow beyond `bytes`: a write past it fails with EFBIG, as on a full disk
    /// (SIGXFSZ, which would kill it instead, is ignored, and stays so across exec).
    pub fn file_size_limit(mut self, bytes: u64) -> Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            self.cmd.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// ohrun starts with these soft and hard limits of open files (RLIMIT_NOFILE), as `prlimit` would set.
    pub fn open_file_limit(mut self, soft: u64, hard: u64) -> Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            self.cmd.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// Runs to the end (killed and failing the test after the timeout).
    pub fn output(self) -> Result {
        let timeout = self.timeout;
        let child = self.spawn();
        wait_output(child, timeout)
    }

    pub fn spawn(mut self) -> Child {
        self.cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("ohrun starts")
    }
}

/// Waits for a spawned ohrun, killing it (and failing) after `timeout`; the output is read meanwhile so
/// a full pipe never stalls it.
pub fn wait_output(mut child: Child, timeout: Duration) -> Result {
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!("ohrun did not finish within {timeout:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Result {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
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

/// The managed agent-server command, installed on first use by `ohrun setup local` (as a user's first
/// `ohrun run` would).
pub fn agent_server_command() -> Vec<String> {
    static INSTALLED: OnceLock<Vec<String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let out = Ohrun::new().args(["setup", "local"]).timeout(Duration::from_secs(900)).output();
            assert_eq!(out.code, 0, "`ohrun setup local` failed:\n{}", out.stderr);
            let venv = ohrun_home().join("agent-server-1.58.2");
            vec![venv.join("bin/python").display().to_string(), "-m".into(), "openhands.agent_server".into()]
        })
        .clone()
}

pub fn ohrun_home() -> PathBuf {
    std::env::var_os("OHRUN_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
        base.join("ohrun")
    })
}

/// Reads and schema-checks a run report (only the format check is skipped under `OHRUN_TEST_BIN`).
pub fn read_report(dir: &Path) -> serde_json::Value {
    read_checked(&dir.join("run.json"), "report")
}

/// The latest checkpoint of the attempt in `attempt` while it runs (or after ohrun was killed), schema-
/// checked: the last whole line of its checkpoints.jsonl, else the run.json it was born with; `Null` when
/// there is neither yet.
pub fn read_checkpoint(attempt: &Path) -> serde_json::Value {
    let log = std::fs::read_to_string(attempt.join("checkpoints.jsonl")).unwrap_or_default();
    let latest = log.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    let Some(doc) =
        latest.or_else(|| serde_json::from_str(&std::fs::read_to_string(attempt.join("run.json")).ok()?).ok())
    else {
        return serde_json::Value::Null;
    };
    check_schema(&doc, "report", &attempt.display().to_string());
    doc
}

/// Reads and schema-checks a batch's summary.json.
pub fn read_summary(batch_dir: &Path) -> serde_json::Value {
    read_checked(&batch_dir.join("summary.json"), "summary")
}

/// A JSON file that must match `schemas/SCHEMA.schema.json`.
fn read_checked(file: &Path, schema: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let doc: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
    check_schema(&doc, schema, &file.display().to_string());
    doc
}

/// `doc` (`what`) must match `schemas/SCHEMA.schema.json`.
pub fn check_schema(doc: &serde_json::Value, schema: &str, what: &str) {
    if std::env::var_os("OHRUN_TEST_BIN").is_some() {
        return; // another build writes its own format: only its behaviour is under test
    }
    let schema_file = repo_root().join(format!("schemas/{schema}.schema.json"));
    let schema_doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(schema_file).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema_doc).expect("the schema compiles");
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{what} does not match schemas/{schema}.schema.json: {errors:?}");
}

/// The pids of a process's children (of all its threads: a child is listed under the thread that forked it).
pub fn children_of(pid: u32) -> Vec<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    tasks
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The events of the last attempt of the run in `dir` (or of the attempt `dir` itself).
pub fn read_events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(last_attempt(dir).join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// The highest-numbered `attempt-N` directory in a run directory; `dir` itself when it has none.
pub fn last_attempt(dir: &Path) -> std::path::PathBuf {
    let numbers = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("attempt-")?.parse::<u32>().ok());
    match numbers.max() {
        Some(n) => dir.join(format!("attempt-{n}")),
        None => dir.to_path_buf(),
    }
}

/// True while a process with this pid exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name in parentheses: `pid (comm) S ...`.
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next().unwrap_or('?'));
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// The pid ohrun recorded for a local sandbox.
pub fn sandbox_pid(report: &serde_json::Value) -> Option<i32> {
    report["sandbox"]["id"].as_str()?.strip_prefix("pid:")?.parse().ok()
}

/// Asserts no process of the sandbox remains (its whole process group).
pub fn assert_no_server_left(report: &serde_json::Value) {
    if let Some(pid) = sandbox_pid(report) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
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
/// `state_dir`, the way a user or a provider would. It runs under a small shell, in a process group of
/// its own, that stops it when the shell's stdin closes — when the returned child's stdin is dropped, or
/// the test process exits — so no server outlives the tests. Signal the group (`-pid`) to reach the
/// server itself.
pub fn spawn_agent_server(port: u16, key: &str, state_dir: &Path, extra_env: &[(&str, &str)]) -> Child {
    let command = agent_server_command();
    let log = std::fs::File::create(state_dir.join("server.log")).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        // A background job's stdin is /dev/null in a script: the pipe is kept as fd 3 for the watcher.
        // Its tmux servers daemonize out of every group: they are killed by their sockets when it ends.
        .arg(r#"exec 3<&0; "$@" 3<&- & pid=$!; tmux_down() { for s in "$TMUX_TMPDIR"/*/*; do [ -S "$s" ] && tmux -S "$s" kill-server 2>/dev/null; done; }; trap 'kill -TERM $pid 2>/dev/null; sleep 1; tmux_down' TERM INT; (cat <&3 >/dev/null; kill -TERM $pid 2>/dev/null; sleep 1; tmux_down) & exec 3<&-; wait $pid; tmux_down"#)
        .arg("agent-server")
        .args(&command)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .current_dir(state_dir)
        .env("OH_SESSION_API_KEYS_0", key)
        .env("OH_ENABLE_VSCODE", "false")
        .env("OH_ENABLE_BROWSER", "false")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("TMUX_TMPDIR", state_dir)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (polling every 50 ms, at most `timeout`) until `cond` holds; fails the test with `what` otherwise.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most `timeout`) until the event log of run `name` — the only run of job `name`, first
/// attempt, in the default batch directory under `dir` — holds `text`.
pub fn wait_for_event(dir: &Path, name: &str, text: &str, timeout: Duration) {
    let events = dir.join(format!("ohrun-reports/{name}/{name}/attempt-1/events.jsonl"));
    wait_until(timeout, &format!("the event log of {name} holds {text}"), || {
        std::fs::read_to_string(&events).unwrap_or_default().contains(text)
    });
}

/// Sends `sig` to a child process.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Every file under `dir` (recursively) with its text, for leak checks.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    out
}

/// The pids of every process whose environment holds `entry` (`NAME=value`).
pub fn processes_with_env(entry: &str) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == entry.as_bytes()))
        })
        .collect()
}
