//! A judge check: an LLM asked whether the agent's work meets the criteria, shown the final diff, the
//! agent's final message and the files the check names. The call goes through the sandbox's agent-server
//! — a conversation of its own, in an empty directory, with no tools and none of the run's secrets — so
//! every provider the agent can use can judge, and its spend is counted like the agent's (the run's
//! totals, the batch's budget). Its answer must be one JSON object; anything else is a verifier error.

use super::Target;
use crate::agent::conversation::{Conversation, Progress};
use crate::agent::setup::{run_command, shell_quote};
use crate::agent::{Limits, SandboxProbe, SharedBudget};
use crate::cancel::Cancel;
use crate::job::checks::JudgeSpec;
use crate::job::model::{JobSpec, Message, Step};
use crate::money::Usd;
use crate::report::CheckResult;
use crate::report::writer::ReportWriter;
use crate::settings::RunSettings;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The most diff text a judge is shown; the rest is said to be cut.
const MAX_DIFF_CHARS: usize = 100_000;
const MAX_FILE_CHARS: usize = 20_000;

const RULES: &str = "You are a strict verifier of another AI agent's work. You have no tools: judge only from \
the evidence in the message. Answer with one JSON object and nothing else: \
{\"passed\": true or false, \"score\": a number from 0 to 1, \"explanation\": \"one or two sentences\"}. \
`passed` is true only when every criterion is met.";

/// What the judge is shown of the run.
pub struct Evidence {
    pub final_message: Option<String>,
    /// The final diff (the run's final patch as text, or the step diffs).
    pub diff: String,
}

/// Everything a judge needs from the run.
pub struct JudgeRun<'a> {
    pub spec: &'a JobSpec,
    /// The run's settings with the judge's LLM (and no secrets).
    pub settings: RunSettings,
    pub evidence: &'a Evidence,
    /// Where the judge's conversation log goes (`verify/judge-N/events.jsonl`).
    pub log_dir: std::path::PathBuf,
    pub run_deadline: Option<Instant>,
    /// The batch's budget, which admits the judge's calls as the run's.
    pub batch: Option<&'a dyn SharedBudget>,
    pub run_id: &'a str,
    /// What the run spent before this judge: the budget hears the judge's spend on top of it.
    pub spent_before: Usd,
    pub price_named: bool,
    pub probe: &'a dyn SandboxProbe,
}

/// The batch's budget as a judge's conversation sees it: its spend comes on top of the run's so far
/// (the budget keeps one running total per run, which never goes down).
struct OnTop<'a> {
    inner: &'a dyn SharedBudget,
    before: Usd,
}

impl SharedBudget for OnTop<'_> {
    fn update(&self, run_id: &str, cost: Usd) {
        self.inner.update(run_id, self.before + cost);
    }
    fn admit(&self, run_id: &str) -> crate::agent::Admission {
        self.inner.admit(run_id)
    }
    fn step_ended(&self, run_id: &str, answered: bool) {
        self.inner.step_ended(run_id, answered);
    }
    fn no_price(&self) {
        self.inner.no_price();
    }
    fn exhausted(&self) -> bool {
        self.inner.exhausted()
    }
}

/// Asks the judge; `base` is the result with its name, weight and flags filled in.
pub async fn run(
    target: &Target<'_>,
    judge: &JudgeSpec,
    run: JudgeRun<'_>,
    base: CheckResult,
    cancel: &mut Cancel,
) -> CheckResult {
    let started = Instant::now();
    let mut result = CheckResult { kind: "judge".into(), ..base };
    let message = prompt(target, judge, run.evidence, cancel).await;
    let (answer, spent) = converse(target, &run, &message, cancel).await;
    // What the judge's calls cost counts whether or not it answered.
    (result.cost, result.tokens, result.llm_calls) = (spent.cost, spent.tokens, spent.llm_calls);
    match answer {
        Ok(answer) => {
            match parse_answer(&answer) {
                Ok((passed, score, explanation)) => {
                    // The judge's own word decides whether it passed; its score is the value.
                    (result.passed, result.value, result.explanation) = (passed, Some(score), Some(explanation));
                    result.stdout_tail = super::check::tail(&answer);
                }
                Err(e) => {
                    result.stdout_tail = super::check::tail(&answer);
                    result.error = Some(e);
                }
            }
        }
        Err(e) => result.error = Some(e),
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    result
}

/// The message: the criteria, then the evidence.
async fn prompt(target: &Target<'_>, judge: &JudgeSpec, evidence: &Evidence, cancel: &mut Cancel) -> String {
    let mut text = String::from("Decide whether the agent's work meets every criterion below.\n\nCriteria:\n");
    for (i, c) in judge.criteria.iter().enumerate() {
        text.push_str(&format!("{}. {c}\n", i + 1));
    }
    text.push_str("\n## The agent's final message\n\n");
    text.push_str(evidence.final_message.as_deref().unwrap_or("(none)"));
    text.push_str("\n\n## The final diff of its working directory\n\n```diff\n");
    text.push_str(&cut(&evidence.diff, MAX_DIFF_CHARS));
    text.push_str("\n```\n");
    for file in &judge.files {
        let cat = format!("cat -- {}", shell_quote(file));
        let body = match run_command(target.client, &cat, target.working_dir, Duration::from_secs(30), cancel).await {
            Ok(out) if out.exit_code == 0 => cut(&out.stdout, MAX_FILE_CHARS),
            _ => "(this file does not exist or cannot be read)".to_string(),
        };
        text.push_str(&format!("\n## The file {file}\n\n```\n{body}\n```\n"));
    }
    text.push_str("\nAnswer with the JSON object only.");
    text
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}\n… (cut: {} more characters)", &text[..at], text[at..].chars().count()),
        None => text.to_string(),
    }
}

/// One conversation with the judge: its final message (or why there is none), and what its calls cost
/// either way.
async fn converse(
    target: &Target<'_>,
    run: &JudgeRun<'_>,
    message: &str,
    cancel: &Cancel,
) -> (Result<String, String>, crate::report::Totals) {
    let none = crate::report::Totals::default();
    let spec = judge_spec(run.spec, message);
    let mut writer = match ReportWriter::create(&run.log_dir) {
        Ok(w) => w,
        Err(e) => return (Err(format!("cannot write the judge's log: {e}")), none),
    };
    // An empty directory of its own: the server would `git init` a working directory that is no repository.
    let mk = "umask 077; mktemp -d \"${TMPDIR:-/tmp}/ohrun-judge.XXXXXXXX\"";
    let judge_dir = match run_command(target.client, mk, "/", Duration::from_secs(30), &mut cancel.clone()).await {
        Ok(out) if out.exit_code == 0 && out.stdout.trim().starts_with('/') => out.stdout.trim().to_string(),
        _ => return (Err("cannot make a directory for the judge's conversation".into()), none),
    };
    let on_top = run.batch.map(|inner| OnTop { inner, before: run.spent_before });
    let limits = Limits {
        run_deadline: run.run_deadline,
        max_cost: None,
        batch: on_top.as_ref().map(|b| b as &dyn SharedBudget),
        run_id: run.run_id,
        price_named: run.price_named,
        max_iterations: 5,
    };
    let confirm = limits.batch.is_some();
    let started =
        Conversation::start(target.client, (&spec, &run.settings), &judge_dir, confirm, &mut writer, cancel.clone())
            .await;
    let rm = format!("rm -rf {}", shell_quote(&judge_dir));
    let mut conv = match started {
        Ok(conv) => conv,
        Err(e) => {
            let _ = run_command(target.client, &rm, "/", Duration::from_secs(30), &mut Cancel::never()).await;
            return (Err(format!("the judge's conversation could not start: {e}")), none);
        }
    };
    let outcome = conv.run_steps(&spec, Path::new("."), &limits, &Quiet, run.probe, &Default::default()).await;
    let _ = conv.close().await;
    let _ = run_command(target.client, &rm, "/", Duration::from_secs(30), &mut Cancel::never()).await;
    (answer_of(outcome.steps.into_iter().next()), outcome.totals)
}

/// The judge's final message, when its one step finished.
fn answer_of(step: Option<crate::report::StepReport>) -> Result<String, String> {
    let step = step.ok_or("the judge's conversation ended before it answered")?;
    if step.end_reason != crate::report::EndReason::Finished {
        let why = step.error.map(|e| format!(": {} {}", e.code, e.detail)).unwrap_or_default();
        return Err(format!("the judge did not answer ({}{why})", step.end_reason.as_str()));
    }
    step.final_message.ok_or_else(|| "the judge gave no answer".to_string())
}

/// The job's agent turned judge: no tools, no condenser, a few iterations, the rules in its prompt.
fn judge_spec(spec: &JobSpec, message: &str) -> JobSpec {
    let mut judge = spec.clone();
    judge.agent.tools = Some(Vec::new());
    judge.agent.condenser = false;
    judge.agent.max_iterations = 5;
    judge.agent.system_prompt_extra = Some(RULES.to_string());
    judge.secrets.clear();
    let mut step: Step = serde_json::from_value(serde_json::json!({"message": ""})).expect("a step");
    step.message = Message::Inline(message.to_string());
    step.timeout = crate::job::values::HumanDuration::secs(10 * 60);
    judge.steps = vec![step];
    judge
}

/// `{"passed": bool, "score": 0–1, "explanation": "…"}` from the judge's answer (the first JSON object in
/// it, so a model that wraps it in a code fence is still understood).
fn parse_answer(answer: &str) -> Result<(bool, f64, String), String> {
    let bad = |why: &str| {
        format!("the judge's answer {why}; it must be {{\"passed\": …, \"score\": 0–1, \"explanation\": …}}")
    };
    let start = answer.find('{').ok_or_else(|| bad("holds no JSON object"))?;
    let mut stream = serde_json::Deserializer::from_str(&answer[start..]).into_iter::<Value>();
    let v = match stream.next() {
        Some(Ok(v)) => v,
        _ => return Err(bad("holds no JSON object")),
    };
    let passed = v.get("passed").and_then(Value::as_bool).ok_or_else(|| bad("has no boolean `passed`"))?;
    let score = match v.get("score") {
        None | Some(Value::Null) => {
            if passed {
                1.0
            } else {
                0.0
            }
        }
        Some(s) => s.as_f64().filter(|s| (0.0..=1.0).contains(s)).ok_or_else(|| bad("has a `score` outside 0–1"))?,
    };
    let explanation = v.get("explanation").and_then(Value::as_str).unwrap_or_default();
    Ok((passed, score, crate::report::redact::cut(explanation, 2000)))
}

/// The judge's steps are not shown as the run's.
struct Quiet;

impl Progress for Quiet {
    fn step_done(&self, _: &crate::report::StepReport, _: usize) {}
    fn step(&self, _: usize, _: usize, _: Duration, _: usize, _: crate::money::Usd) {}
}

#[cfg(test)]
mod tests {
    use super::parse_answer;

    #[test]
    fn the_judges_answer_is_one_json_object() {
        assert_eq!(
            parse_answer("```json\n{\"passed\": true, \"score\": 0.9, \"explanation\": \"ok\"}\n```"),
            Ok((true, 0.9, "ok".to_string()))
        );
        assert_eq!(parse_answer(r#"{"passed": false}"#), Ok((false, 0.0, String::new())));
        assert!(parse_answer("It looks fine to me.").unwrap_err().contains("no JSON object"));
        assert!(parse_answer(r#"{"passed": "yes"}"#).unwrap_err().contains("no boolean"));
        assert!(parse_answer(r#"{"passed": true, "score": 7}"#).unwrap_err().contains("outside 0–1"));
    }
}
