//! Shell commands in the sandbox through the agent-server's bash endpoint: the job's setup commands, in
//! order, each in the working directory unless it says otherwise. A command runs in one request that the
//! server answers when it has exited (`run_command`); when ohrun is interrupted the command is stopped on
//! the server and recorded as interrupted, with whatever output had come back.

use super::Error;
use super::http::AgentClient;
use crate::cancel::Cancel;
use crate::report::SetupResult;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A setup command with its `${VAR}`s expanded.
#[derive(Clone, Debug)]
pub struct SetupCommand {
    pub run: String,
    /// Relative to the sandbox's working directory unless absolute.
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    pub timeout: std::time::Duration,
    pub allow_failure: bool,
}

/// How long ohrun waits beyond a command's own timeout for the server to report its end.
const MARGIN: Duration = super::http::BASH_ANSWER_MARGIN;

/// What running the setup commands gave.
pub struct Setup {
    pub results: Vec<SetupResult>,
    /// Why the commands stopped early (the server failed, or ohrun was interrupted).
    pub error: Option<Error>,
}

impl Setup {
    /// The first command that failed without being allowed to.
    pub fn failed(&self) -> Option<&SetupResult> {
        self.results.iter().find(|r| r.exit_code != 0 && !r.allowed_to_fail && !r.interrupted)
    }
}

/// Runs the setup commands in order; stops at the first failure that is not allowed to fail.
pub async fn run_setup(
    client: &AgentClient,
    commands: &[SetupCommand],
    working_dir: &str,
    cancel: &Cancel,
    on_result: &mut (dyn FnMut(&SetupResult) + Send),
) -> Setup {
    let mut results = Vec::new();
    for cmd in commands {
        let cwd = match &cmd.cwd {
            Some(c) if c.starts_with('/') => c.clone(),
            Some(c) => format!("{}/{c}", working_dir.trim_end_matches('/')),
            None => working_dir.to_string(),
        };
        // The bash endpoint has no env field: export in the same shell, values quoted.
        let exports: String = cmd.env.iter().map(|(k, v)| format!("export {k}={}; ", shell_quote(v))).collect();
        let mut cancel = cancel.clone();
        let run = run_command(client, &format!("{exports}{}", cmd.run), &cwd, cmd.timeout, &mut cancel).await;
        let mut result =
            SetupResult { command: cmd.run.clone(), cwd, allowed_to_fail: cmd.allow_failure, ..Default::default() };
        let error = match run {
            Ok(out) => {
                result.exit_code = out.exit_code;
                result.timed_out = out.exit_code == -1 && out.elapsed + Duration::from_millis(500) >= cmd.timeout;
                (result.stdout, result.stderr, result.duration_ms) =
                    (out.stdout, out.stderr, out.elapsed.as_millis() as u64);
                None
            }
            Err((out, e)) => {
                result.exit_code = -1;
                result.interrupted = matches!(e, Error::Interrupted);
                (result.stdout, result.stderr, result.duration_ms) =
                    (out.stdout, out.stderr, out.elapsed.as_millis() as u64);
                Some(e)
            }
        };
        on_result(&result);
        let stop = error.is_some() || (result.exit_code != 0 && !cmd.allow_failure);
        results.push(result);
        if stop {
            return Setup { results, error };
        }
    }
    Setup { results, error: None }
}

/// What a command printed and how it ended.
#[derive(Debug, Default)]
pub struct Output {
    /// -1 when it timed out or could not start.
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs one command to its end; on failure, what had come back so far and why it stopped.
///
/// One request (`execute_bash_command`), answered when the command has exited: no polling, so the server
/// scans its bash-event store once per command instead of once per poll. The command carries a tag (a
/// first line that is a shell comment) by which ohrun finds it again when it must: to stop it when ohrun
/// is interrupted, and to follow it by polling when the request itself was cut (a proxy that closes long
/// requests). A server without the endpoint gets the start-and-poll way.
pub async fn run_command(
    client: &AgentClient,
    command: &str,
    cwd: &str,
    timeout: Duration,
    cancel: &mut Cancel,
) -> Result<Output, (Output, Error)> {
    let started = Instant::now();
    if cancel.is_set() {
        return Err((Output::default(), Error::Interrupted));
    }
    let tag = format!("ohrun-command-{:016x}", fastrand::u64(..));
    let tagged = format!("# {tag}\n{command}");
    let answer = tokio::select! {
        answer = client.execute_bash(&tagged, cwd, timeout) => answer,
        _ = cancel.wait() => {
            if let Some(id) = find(client, &tag).await {
                let _ = client.stop_bash(&id).await;
            }
            return Err((Output { elapsed: started.elapsed(), ..Output::default() }, Error::Interrupted));
        }
    };
    match answer {
        Ok(v) => Ok(output_of(&v, started)),
        // A server older than the endpoint.
        Err(e) if matches!(e.status, Some(404 | 405)) => {
            let id = match client.start_bash(&tagged, cwd, timeout).await {
                Ok(id) => id,
                Err(e) => return Err((Output::default(), e.into())),
            };
            follow(client, &id, started, timeout, cancel).await
        }
        // No answer (or a gateway's): the command may be running; follow it if it is.
        Err(e) if e.status.is_none() || matches!(e.status, Some(502..=504)) => match find(client, &tag).await {
            Some(id) => follow(client, &id, started, timeout, cancel).await,
            None => Err((Output { elapsed: started.elapsed(), ..Output::default() }, e.into())),
        },
        Err(e) => Err((Output { elapsed: started.elapsed(), ..Output::default() }, e.into())),
    }
}

/// The id of the command tagged `tag`; looked for a few times over a second, since a request just sent
/// may not have reached the server yet.
async fn find(client: &AgentClient, tag: &str) -> Option<String> {
    let policy = crate::net::RetryPolicy::every(5, Duration::from_millis(200));
    policy.first_some(|| async { client.find_bash(tag).await.ok().flatten() }).await
}

/// The answer of `execute_bash_command` (a `BashOutput` with every chunk joined; `null` for no output).
fn output_of(v: &Value, started: Instant) -> Output {
    let text = |key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    Output {
        exit_code: v.get("exit_code").and_then(Value::as_i64).unwrap_or(-1),
        stdout: text("stdout"),
        stderr: text("stderr"),
        elapsed: started.elapsed(),
    }
}

/// Follows a started command by polling its output until it exits (or its time is up: then it is
/// stopped, exit -1); interrupted, it is stopped on the server.
async fn follow(
    client: &AgentClient,
    id: &str,
    started: Instant,
    timeout: Duration,
    cancel: &mut Cancel,
) -> Result<Output, (Output, Error)> {
    let mut out = Output::default();
    let deadline = started + timeout + MARGIN;
    let mut last = -1i64;
    let mut interval = Duration::from_millis(20);
    loop {
        let chunks = match client.bash_output(id, last).await {
            Ok(c) => c,
            Err(e) => {
                out.elapsed = started.elapsed();
                return Err((out, e.into()));
            }
        };
        for chunk in &chunks {
            out.stdout.push_str(chunk.get("stdout").and_then(Value::as_str).unwrap_or_default());
            out.stderr.push_str(chunk.get("stderr").and_then(Value::as_str).unwrap_or_default());
            last = last.max(chunk.get("order").and_then(Value::as_i64).unwrap_or(last));
            if let Some(code) = chunk.get("exit_code").and_then(Value::as_i64) {
                out.exit_code = code;
                out.elapsed = started.elapsed();
                return Ok(out);
            }
        }
        if Instant::now() >= deadline {
            let _ = client.stop_bash(id).await;
            out.exit_code = -1;
            out.elapsed = started.elapsed();
            return Ok(out);
        }
        if cancel.sleep(interval).await {
            let _ = client.stop_bash(id).await;
            out.elapsed = started.elapsed();
            return Err((out, Error::Interrupted));
        }
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `name` in the sandbox's temporary directory (`$TMPDIR`, else `/tmp`), as shell words.
pub fn in_temp_dir(name: &str) -> String {
    format!("\"${{TMPDIR:-/tmp}}\"/{}", shell_quote(name))
}
