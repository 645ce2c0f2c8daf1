//! A command check: a shell command in the working directory, through the agent-server's bash endpoint.
//! It passes on exit 0, unless it leaves `reward.json` in `$OHRUN_VERIFY_OUT` — a directory made for it
//! right before it starts, so nothing the agent wrote while it worked can be there — whose score is then
//! its value. A command that times out or cannot be started is a verifier error, not a failure.

use super::Target;
use crate::agent::setup::{run_command, shell_quote};
use crate::cancel::Cancel;
use crate::report::CheckResult;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The last lines of a check's output kept in the report.
const TAIL_LINES: usize = 20;
const TAIL_CHARS: usize = 4000;

/// What a command check is given.
pub struct CommandCheck<'a> {
    pub name: &'a str,
    pub run: &'a str,
    pub env: &'a [(String, String)],
    pub timeout: Duration,
}

/// Runs the check; `base` is the result with its name, weight and flags filled in.
pub async fn run(target: &Target<'_>, check: &CommandCheck<'_>, base: CheckResult, cancel: &mut Cancel) -> CheckResult {
    let started = Instant::now();
    let mut result = CheckResult { kind: "run".into(), ..base };
    let out_dir = match fresh_out_dir(target, cancel).await {
        Ok(dir) => dir,
        Err(e) => return CheckResult { error: Some(e), duration_ms: ms(started), ..result },
    };
    let exports: String = check
        .env
        .iter()
        .chain([&("OHRUN_VERIFY_OUT".to_string(), out_dir.clone())])
        .map(|(k, v)| format!("export {k}={}; ", shell_quote(v)))
        .collect();
    let command = format!("{exports}{}", check.run);
    let ran = run_command(target.client, &command, target.working_dir, check.timeout, cancel).await;
    result.duration_ms = ms(started);
    match ran {
        Ok(out) => {
            result.stdout_tail = tail(&out.stdout);
            result.stderr_tail = tail(&out.stderr);
            if out.exit_code == -1 {
                result.error = Some(if out.elapsed + Duration::from_millis(500) >= check.timeout {
                    format!("timed out after {}", humantime::format_duration(check.timeout))
                } else {
                    "the command could not be run".into()
                });
            } else {
                result.exit_code = Some(out.exit_code);
                score(target, &out_dir, out.exit_code, &mut result, cancel).await;
            }
        }
        Err((_, e)) => result.error = Some(format!("the check could not run: {e}")),
    }
    let rm = format!("rm -rf {}", shell_quote(&out_dir));
    let _ = run_command(target.client, &rm, "/", Duration::from_secs(30), &mut Cancel::never()).await;
    result
}

/// A new, empty directory for the check's `reward.json` (its name is random and made now).
async fn fresh_out_dir(target: &Target<'_>, cancel: &mut Cancel) -> Result<String, String> {
    // `ohrun-verify-out-` and a random part: ohrun never makes `ohrun-verify-out.*`, so one found there was
    // made by someone else (`verify::notices`).
    let mk = "umask 077; mktemp -d \"${TMPDIR:-/tmp}/ohrun-verify-out-XXXXXXXXXX\"";
    match run_command(target.client, mk, "/", Duration::from_secs(30), cancel).await {
        Ok(out) if out.exit_code == 0 && out.stdout.trim().starts_with('/') => Ok(out.stdout.trim().to_string()),
        Ok(out) => Err(format!("cannot make the check's output directory: {}", out.stderr.trim())),
        Err((_, e)) => Err(format!("cannot make the check's output directory: {e}")),
    }
}

/// The check's value: its `reward.json` when it left one, else 1 for exit 0 and 0 otherwise.
async fn score(target: &Target<'_>, out_dir: &str, exit_code: i64, result: &mut CheckResult, cancel: &mut Cancel) {
    let cat = format!("cat {}/reward.json 2>/dev/null", shell_quote(out_dir));
    let reward = match run_command(target.client, &cat, "/", Duration::from_secs(30), cancel).await {
        Ok(out) if out.exit_code == 0 => Some(out.stdout),
        Ok(_) => None,
        Err((_, e)) => {
            result.error = Some(format!("cannot read the check's reward.json: {e}"));
            return;
        }
    };
    match reward.map(|text| parse_reward(&text)) {
        None => result.value = Some(if exit_code == 0 { 1.0 } else { 0.0 }),
        Some(Ok((value, explanation))) => (result.value, result.explanation) = (Some(value), explanation),
        Some(Err(e)) => result.error = Some(e),
    }
}

/// `{"score": 0.0–1.0, "explanation": "…"}`.
fn parse_reward(text: &str) -> Result<(f64, Option<String>), String> {
    let bad = |why: &str| format!("its reward.json {why}; it must be {{\"score\": 0.0–1.0, \"explanation\": \"…\"}}");
    let v: Value = serde_json::from_str(text).map_err(|_| bad("is not JSON"))?;
    let score = v.get("score").and_then(Value::as_f64).ok_or_else(|| bad("has no number `score`"))?;
    if !(0.0..=1.0).contains(&score) {
        return Err(bad(&format!("says score {score}")));
    }
    let explanation = v.get("explanation").and_then(Value::as_str).map(|s| crate::report::redact::cut(s, 2000));
    Ok((score, explanation))
}

/// The last lines of an output, redacted, at most `TAIL_CHARS` characters.
pub fn tail(text: &str) -> String {
    let clean = crate::report::redact::apply(text);
    let lines: Vec<&str> = clean.lines().collect();
    let last = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    let skip = last.chars().count().saturating_sub(TAIL_CHARS);
    last.chars().skip(skip).collect()
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reward_file_gives_the_value_or_a_clear_error() {
        assert_eq!(parse_reward(r#"{"score": 0.5, "explanation": "half"}"#), Ok((0.5, Some("half".into()))));
        assert_eq!(parse_reward(r#"{"score": 1}"#), Ok((1.0, None)));
        assert!(parse_reward(r#"{"score": 2}"#).unwrap_err().contains("says score 2"));
        assert!(parse_reward("passed").unwrap_err().contains("is not JSON"));
        assert!(parse_reward(r#"{"ok": true}"#).unwrap_err().contains("no number `score`"));
    }
}
