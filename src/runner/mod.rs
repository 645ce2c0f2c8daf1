//! Runs a plan: each run in turn (provision → setup → conversation → release), each with its own report
//! folder, one summary line per run at the end. Every exit path of a run writes its `run.json`.

pub mod signal;

use crate::agent::session::{self, Conversation};
use crate::backend::{self, Released};
use crate::console::{Console, StepProgress};
use crate::job::model::{CleanupPolicy, JobSpec};
use crate::job::{Plan, PlannedRun};
use crate::rehearse::Rehearsal;
use crate::rehearse::script::Script;
use crate::report::redact::Redactor;
use crate::report::writer::{EVENTS_FILE, ReportWriter, now_rfc3339, write_report};
use crate::report::{
    EndReason, JobInfo, Outcome, OutcomeClass, REPORT_FORMAT, RunInfo, RunReport, SandboxInfo, StepReport,
};
use crate::settings::{self, RehearsalLlm, RunSettings};
use signal::Signals;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct RunOptions {
    /// `Some(script)` when the LLM is replaced by a rehearsal.
    pub rehearsal: Option<Script>,
}

pub struct RunResult {
    pub report: RunReport,
    pub report_dir: PathBuf,
}

/// Runs every run of the plan in order and returns their reports and the process exit code.
pub async fn run_plan(plan: &Plan, opts: &RunOptions, console: &Console, signals: &Signals) -> (Vec<RunResult>, i32) {
    let mut results = Vec::new();
    for run in &plan.runs {
        if signals.interrupted() {
            break;
        }
        results.push(execute(plan, run, opts, console, signals).await);
    }
    console.clear();
    let worst = results.iter().map(|r| r.report.outcome.class).max().unwrap_or_default();
    let code = if signals.interrupted() {
        OutcomeClass::Interrupted.exit_code(signals.terminated())
    } else {
        worst.exit_code(false)
    };
    (results, code)
}

/// One run, start to finish; never panics on server or network trouble and always writes `run.json`.
async fn execute(plan: &Plan, run: &PlannedRun, opts: &RunOptions, console: &Console, signals: &Signals) -> RunResult {
    let started = Instant::now();
    let spec = &run.spec;
    let report_dir = PathBuf::from(&spec.report.dir);
    let mut report = RunReport {
        format: REPORT_FORMAT,
        ohrun_version: env!("CARGO_PKG_VERSION").to_string(),
        job: JobInfo {
            name: plan.job_name.clone(),
            file: plan.file.display().to_string(),
            file_hash: plan.file_hash.clone(),
        },
        run: RunInfo {
            id: run.id.clone(),
            index: run.index,
            matrix: run.matrix.as_ref().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        },
        rehearsal: opts.rehearsal.is_some(),
        started_at: now_rfc3339(),
        sandbox: SandboxInfo {
            kind: spec.sandbox.kind().to_string(),
            disposition: "not_provisioned".into(),
            ..Default::default()
        },
        events_file: EVENTS_FILE.to_string(),
        ..Default::default()
    };
    // Every step is listed from the start, so a run that fails early still reports what did not run.
    let job_dir = plan.file.parent().map(Path::to_path_buf).unwrap_or_default();
    report.steps = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| StepReport {
            index: i + 1,
            message: session::message_text(&s.message, &job_dir),
            end_reason: EndReason::NotRun,
            ..Default::default()
        })
        .collect();
    let prefix = format!("[{}]", run.id);
    console.activity(&format!("{prefix} starting ({} sandbox)", spec.sandbox.kind()));
    let outcome = attempt(run, &job_dir, opts, console, signals, &report_dir, &mut report, &prefix).await;
    report.outcome =
        Outcome { class: outcome.0, exit_code: outcome.0.exit_code(signals.terminated()), message: outcome.1 };
    report.ended_at = Some(now_rfc3339());
    report.duration_ms = Some(started.elapsed().as_millis() as u64);
    let redactor = outcome.2;
    if let Err(e) = write_report(&report_dir, &report, &redactor) {
        console.error(&format!("{prefix} cannot write {}/run.json: {e}", report_dir.display()));
    }
    console.clear();
    console.say(&summary_line(&report, &report_dir, console));
    RunResult { report, report_dir }
}

fn summary_line(r: &RunReport, dir: &Path, console: &Console) -> String {
    let s = console.style;
    let mark = match r.outcome.class {
        OutcomeClass::Succeeded => s.ok("ok"),
        _ => s.error("FAILED"),
    };
    let done = r.steps.iter().filter(|st| st.end_reason != EndReason::NotRun).count();
    let why = r.outcome.message.as_deref().map(|m| format!(" — {m}")).unwrap_or_default();
    format!(
        "{mark} {} · {done}/{} steps · ${:.4} · {:.1}s · {}/run.json{why}",
        r.run.id,
        r.steps.len(),
        r.totals.cost,
        r.duration_ms.unwrap_or(0) as f64 / 1000.0,
        dir.display()
    )
}

type Attempt = (OutcomeClass, Option<String>, Redactor);

#[allow(clippy::too_many_arguments)]
async fn attempt(
    run: &PlannedRun,
    job_dir: &Path,
    opts: &RunOptions,
    console: &Console,
    signals: &Signals,
    report_dir: &Path,
    report: &mut RunReport,
    prefix: &str,
) -> Attempt {
    let spec = &run.spec;
    let run_deadline = spec.limits.timeout.map(|t| Instant::now() + t.0);

    // The rehearsal endpoint, if any, lives as long as this run.
    let rehearsal = match &opts.rehearsal {
        Some(script) => match Rehearsal::start(script.clone(), std::net::Ipv4Addr::LOCALHOST.into()).await {
            Ok(r) => Some(r),
            Err(e) => {
                return (
                    OutcomeClass::Infrastructure,
                    Some(format!("cannot start the rehearsal endpoint: {e}")),
                    Redactor::default(),
                );
            }
        },
        None => None,
    };
    let reh_llm = rehearsal.as_ref().map(|r| RehearsalLlm { base_url: r.base_url("127.0.0.1") });
    let settings: RunSettings = match settings::resolve(spec, job_dir, reh_llm.as_ref(), &|n| std::env::var(n).ok()) {
        Ok(s) => s,
        Err(problems) => {
            for p in &problems {
                console.error(&format!("{prefix} error: {p}"));
            }
            console.error(&format!("{prefix} hint: set the variables in the environment, or use `--rehearse` to try the job with a scripted LLM"));
            return (OutcomeClass::UsageError, Some(problems.join("; ")), Redactor::default());
        }
    };
    console.set_redactor(settings.redactor.clone());
    let redactor = settings.redactor.clone();
    let mut writer = match ReportWriter::create(report_dir, redactor.clone()) {
        Ok(w) => w,
        Err(e) => {
            return (
                OutcomeClass::UsageError,
                Some(format!("cannot create the report directory {}: {e}", report_dir.display())),
                redactor,
            );
        }
    };

    // Provision, unless interrupted meanwhile.
    console.activity(&format!("{prefix} provisioning the {} sandbox", spec.sandbox.kind()));
    let progress = |line: &str| console.say(&format!("{prefix} {line}"));
    let mut interrupt = signals.count.clone();
    let job_name = report.job.name.clone();
    let labels = [
        (backend::docker::LABEL_CREATED_BY, "ohrun"),
        (backend::docker::LABEL_RUN_ID, run.id.as_str()),
        (backend::docker::LABEL_JOB, job_name.as_str()),
    ];
    let provisioned = tokio::select! {
        p = backend::provision(&settings.sandbox, &labels, report_dir, &settings.secret_names, &progress) => p,
        _ = interrupt.changed() => return (OutcomeClass::Interrupted, Some("interrupted while provisioning".into()), redactor),
    };
    let sandbox = match provisioned {
        Ok(s) => s,
        Err(e) => {
            report.sandbox.disposition = "not_provisioned".into();
            let mut message = e.message.clone();
            console.error(&format!("{prefix} error: {}", e.message));
            if let Some(tail) = &e.log_tail {
                console.error(&format!("{prefix} last lines of the agent-server log:\n{tail}"));
                message.push_str(&format!("\n{tail}"));
            }
            if let Some(h) = &e.hint {
                console.error(&format!("{prefix} hint: {h}"));
            }
            return (OutcomeClass::Infrastructure, Some(message), redactor);
        }
    };
    report.sandbox.id = sandbox.id.clone();
    report.sandbox.agent_server_url = Some(sandbox.client.base_url().to_string());
    report.sandbox.agent_server_version = sandbox.server_version();
    report.sandbox.working_dir = Some(sandbox.working_dir.clone());
    report.sandbox.log_file = sandbox.log_file.clone();
    report.sandbox.provision_ms = Some(sandbox.provision_time.as_millis() as u64);
    report.sandbox.disposition = "provisioned".into();
    console.say(&format!(
        "{prefix} agent-server {} ready in {:.1}s; working dir {}",
        report.sandbox.agent_server_version.as_deref().unwrap_or("?"),
        sandbox.provision_time.as_secs_f64(),
        sandbox.working_dir
    ));

    let (class, message) =
        converse(spec, &settings, &sandbox, &mut writer, report, console, signals, job_dir, run_deadline, prefix).await;

    // Release according to the cleanup policy; a failed release is loud and wins the exit code.
    let keep = keeps(spec.cleanup, class);
    let hint = sandbox.attach_hint();
    // Shared with the sandbox, so retries made while releasing it are recorded too.
    let provider_api = sandbox.provider_api();
    console.activity(&format!("{prefix} releasing the sandbox"));
    let released = sandbox.release(keep).await;
    report.sandbox.api_retries = provider_api.map(|a| a.retries()).unwrap_or_default();
    report.sandbox.disposition = match &released {
        Released::Released => "released",
        Released::Kept => "kept",
        Released::Attached => "attached",
        Released::Failed(_) => "release_failed",
    }
    .into();
    match released {
        Released::Kept => console.say(&format!("{prefix} kept the sandbox: {hint}")),
        Released::Failed(e) => {
            report.sandbox.release_error = Some(e.clone());
            console.error(&format!("{prefix} error: the sandbox could not be released: {e}"));
            return (OutcomeClass::LeftBehind, Some(format!("the sandbox could not be released: {e}")), redactor);
        }
        _ => {}
    }
    drop(rehearsal);
    (class, message, redactor)
}

#[allow(clippy::too_many_arguments)]
async fn converse(
    spec: &JobSpec,
    settings: &RunSettings,
    sandbox: &backend::Provisioned,
    writer: &mut ReportWriter,
    report: &mut RunReport,
    console: &Console,
    signals: &Signals,
    job_dir: &Path,
    run_deadline: Option<Instant>,
    prefix: &str,
) -> (OutcomeClass, Option<String>) {
    // Tool names are checked before anything is spent.
    if let (Some(wanted), Some(usable)) = (&spec.agent.tools, sandbox.usable_tools()) {
        let unknown: Vec<&String> = wanted.iter().filter(|t| !usable.contains(t)).collect();
        if !unknown.is_empty() {
            let names = unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            let msg = format!("the agent-server has no tool named {names}; it has: {}", usable.join(", "));
            console.error(&format!("{prefix} error: {msg}"));
            return (OutcomeClass::UsageError, Some(msg));
        }
    }

    let client = &sandbox.client;
    let mut interrupt = signals.count.clone();
    // The working directory may not exist yet (a remote server creates it with the conversation).
    let mkdir = format!("mkdir -p '{}'", sandbox.working_dir.replace('\'', "'\\''"));
    if let Err(e) = client.bash(&mkdir, "/", std::time::Duration::from_secs(60)).await {
        return (OutcomeClass::Infrastructure, Some(format!("cannot prepare the working directory: {e}")));
    }
    let total = spec.setup.len();
    let mut on_result = |r: &crate::report::SetupResult| {
        let status = if r.exit_code == 0 { "ok".to_string() } else { format!("exit {}", r.exit_code) };
        console.say(&format!("{prefix} setup: {} → {status} ({:.1}s)", r.command, r.duration_ms as f64 / 1000.0));
    };
    if total > 0 {
        console.activity(&format!("{prefix} running {total} setup command{}", if total == 1 { "" } else { "s" }));
    }
    let setup = tokio::select! {
        r = session::run_setup(client, spec, &sandbox.working_dir, &mut on_result) => r,
        _ = interrupt.changed() => return (OutcomeClass::Interrupted, Some("interrupted during setup".into())),
    };
    match setup {
        Ok(results) => {
            let failed = results
                .iter()
                .find(|r| r.exit_code != 0 && !r.allowed_to_fail)
                .map(|r| (r.command.clone(), r.exit_code, r.stderr.clone()));
            report.setup = results;
            if let Some((cmd, code, stderr)) = failed {
                let last = stderr.lines().last().unwrap_or("").to_string();
                return (OutcomeClass::Failed, Some(format!("setup command `{cmd}` exited with {code}: {last}")));
            }
        }
        Err(e) => return (OutcomeClass::Infrastructure, Some(format!("running setup failed: {e}"))),
    }

    console.activity(&format!("{prefix} starting the conversation"));
    let mut conv =
        match Conversation::start(client, spec, settings, &sandbox.working_dir, writer, signals.count.clone()).await {
            Ok(c) => c,
            Err(e) => return (OutcomeClass::Infrastructure, Some(e)),
        };
    report.conversation_id = Some(conv.id.clone());
    report.notes.push(
        "title generation (autotitle) is off, so every LLM call belongs to a step and the costs are complete".into(),
    );
    let progress = StepProgress { console, run_id: prefix };
    console.activity(&format!("{prefix} step 1/{}", spec.steps.len()));
    let max_cost = spec.limits.max_cost.map(|c| c.as_f64());
    let outcome = conv.run_steps(spec, job_dir, run_deadline, max_cost, &progress, sandbox).await;
    // Steps that ran replace their `not_run` entries; the rest stay as they were listed.
    for step in outcome.steps {
        let i = step.index - 1;
        report.steps[i] = step;
    }
    report.totals = outcome.totals;
    let (class, message) = classify(report);
    // A kept sandbox keeps its conversation too, so it can be inspected or continued.
    if !keeps(spec.cleanup, class)
        && let Err(e) = conv.close().await
    {
        tracing::warn!("deleting the conversation failed: {e}");
    }
    (class, message)
}

/// Whether the cleanup policy keeps what a run with this outcome used.
fn keeps(policy: CleanupPolicy, class: OutcomeClass) -> bool {
    match policy {
        CleanupPolicy::Always => false,
        CleanupPolicy::OnSuccess => class != OutcomeClass::Succeeded,
        CleanupPolicy::Never => true,
    }
}

/// The run's class from its steps: the first step that did not finish decides.
fn classify(report: &RunReport) -> (OutcomeClass, Option<String>) {
    for s in &report.steps {
        let detail = s.error.as_ref().map(|e| format!(": {} {}", e.code, e.detail)).unwrap_or_default();
        let class = match s.end_reason {
            EndReason::Finished | EndReason::NotRun => continue,
            EndReason::Question if s.error.is_none() => continue,
            EndReason::Budget => OutcomeClass::Budget,
            EndReason::Interrupted => OutcomeClass::Interrupted,
            EndReason::Lost => OutcomeClass::Infrastructure,
            EndReason::Error | EndReason::Stuck | EndReason::Timeout | EndReason::Paused | EndReason::Question => {
                OutcomeClass::Failed
            }
        };
        let reason =
            serde_json::to_value(s.end_reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        return (class, Some(format!("step {} ended: {reason}{detail}", s.index)));
    }
    (OutcomeClass::Succeeded, None)
}
