//! `ohrun verify DIR`: regrade a finished batch (or one run) without the agent. Each run's checks run again
//! in a fresh sandbox of its kind, set up anew and given the run's saved final patch — or, to validate the
//! checks themselves, no change at all (`--patch empty`: a check that passes then cannot tell work from
//! none) or a reference solution (`--patch FILE`: every check should pass). Each run gets a new
//! `verify-N/verification.json` beside its old verdict, which is never touched.

use super::VerifyArgs;
use crate::console::Console;
use crate::exit_code::ExitCode;
use crate::job::checks::VerifySpec;
use crate::job::{PlanOptions, PlannedRun, plan_file};
use crate::report::summary::{SUMMARY_FILE, Summary};
use crate::report::verdict::{Regrade, VerifySandbox};
use crate::report::writer::{RUN_FILE, read_report, write_atomic};
use crate::report::{RunReport, Verdict, Verification};
use crate::runner::signal::Signals;
use crate::runner::state::BatchState;
use crate::settings::RunSettings;
use crate::verify::{self, Checker, Target, fresh};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One run to regrade: its folder, its final report and the attempt folder that holds its patch.
struct Graded {
    run_dir: PathBuf,
    report: RunReport,
    attempt_dir: PathBuf,
}

pub fn run(args: &VerifyArgs, quiet: bool) -> i32 {
    super::keep_environment_private();
    let (batch_dir, targets) = match targets(&args.dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("  hint: name a batch directory (with summary.json) or a run's directory (with run.json)");
            return ExitCode::USAGE;
        }
    };
    let patch = match Patch::parse(args.patch.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::USAGE;
        }
    };
    let vars = BatchState::read(&batch_dir).map(|s| s.vars).unwrap_or_default();
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let console = Console::new(quiet);
    let code = runtime.block_on(async {
        let signals = Signals::install();
        let mut outcomes = Vec::new();
        for t in &targets {
            outcomes.push(regrade(t, &patch, &vars, args, &batch_dir, &console, &signals).await);
        }
        conclude(&outcomes, &patch, args.json)
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// What the checks are given in place of the agent's work.
enum Patch {
    /// The run's own final patch.
    Final,
    /// No change at all.
    Empty,
    /// A reference solution, the same for every run.
    File(PathBuf, Vec<u8>),
}

impl Patch {
    fn parse(given: Option<&str>) -> Result<Patch, String> {
        match given {
            None | Some("final") => Ok(Patch::Final),
            Some("empty") => Ok(Patch::Empty),
            Some(file) => std::fs::read(file)
                .map(|bytes| Patch::File(PathBuf::from(file), bytes))
                .map_err(|e| format!("cannot read the patch {file}: {e}")),
        }
    }

    fn name(&self) -> String {
        match self {
            Patch::Final => "final".into(),
            Patch::Empty => "empty".into(),
            Patch::File(path, _) => path.display().to_string(),
        }
    }

    /// The bytes to apply for run `t`.
    fn bytes(&self, t: &Graded) -> Result<Vec<u8>, String> {
        match self {
            Patch::Empty => Ok(Vec::new()),
            Patch::File(_, bytes) => Ok(bytes.clone()),
            Patch::Final => {
                let info = t
                    .report
                    .final_patch
                    .as_ref()
                    .ok_or("the run has no final patch (its working directory was no git repository?)")?;
                if let Some(e) = &info.error {
                    return Err(format!("the run has no final patch: {e}"));
                }
                if info.redacted {
                    return Err("the run's final patch had a secret masked: it cannot be applied as taken".into());
                }
                let file = info.file.as_deref().ok_or("the run has no final patch")?;
                std::fs::read(t.attempt_dir.join(file)).map_err(|e| format!("cannot read its final patch: {e}"))
            }
        }
    }

    /// Where the fresh tree starts: a run's own final patch was taken against its base commit (setup's
    /// changes included), so the set-up tree goes back there first; no patch or a reference solution is
    /// applied to the set-up tree as the agent would have found it.
    fn base(&self, t: &Graded) -> Option<fresh::Base> {
        match self {
            Patch::Final => {
                let patch = t.report.final_patch.as_ref();
                Some(patch.map(|p| (p.base_commit.clone(), p.base_tree.clone())).unwrap_or_default())
            }
            Patch::Empty | Patch::File(..) => None,
        }
    }

    /// What a judge is shown: the run's own work for its own patch; for no change, nothing; for a
    /// reference solution, that solution — never the run's final message beside a change it did not make.
    fn evidence(&self, t: &Graded, bytes: &[u8]) -> verify::Evidence {
        match self {
            Patch::Final => verify::evidence(&t.attempt_dir, &t.report),
            Patch::Empty | Patch::File(..) => {
                verify::Evidence { final_message: None, diff: String::from_utf8_lossy(bytes).into_owned() }
            }
        }
    }
}

/// The runs under `dir`: every run of a batch (by its summary), the one run whose folder it is, or each
/// trial of a run with trials (`trial-K/run.json`).
fn targets(dir: &Path) -> Result<(PathBuf, Vec<Graded>), String> {
    if dir.join(SUMMARY_FILE).is_file() {
        let summary =
            Summary::read(dir).ok_or_else(|| format!("{} cannot be read", dir.join(SUMMARY_FILE).display()))?;
        let runs = summary.runs.iter().filter_map(|r| r.report.as_ref()).filter_map(|rel| {
            let run_json = dir.join(rel);
            target(run_json.parent()?, &run_json)
        });
        return Ok((dir.to_path_buf(), runs.collect()));
    }
    let batch_dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    if let Some(t) = target(dir, &dir.join(RUN_FILE)) {
        return Ok((batch_dir, vec![t]));
    }
    let trials: Vec<Graded> = (1..)
        .map(|k| dir.join(format!("trial-{k}")))
        .take_while(|trial| trial.is_dir())
        .filter_map(|trial| target(&trial, &trial.join(RUN_FILE)))
        .collect();
    if trials.is_empty() {
        return Err(format!("{} has neither summary.json nor a readable run.json", dir.display()));
    }
    Ok((batch_dir, trials))
}

/// The run's job file: its absolute path when recorded and still there, else the path as given.
fn job_file(report: &RunReport) -> PathBuf {
    match &report.job.path {
        Some(path) if Path::new(path).is_file() => PathBuf::from(path),
        _ => PathBuf::from(&report.job.file),
    }
}

fn target(run_dir: &Path, run_json: &Path) -> Option<Graded> {
    let report = read_report(run_json)?;
    // The run folder's run.json is a copy of its last attempt's: the patch is beside that one.
    let attempt_dir = run_dir.join(format!("attempt-{}", report.run.attempt));
    let attempt_dir = if attempt_dir.is_dir() { attempt_dir } else { run_dir.to_path_buf() };
    Some(Graded { run_dir: run_dir.to_path_buf(), report, attempt_dir })
}

/// What regrading one run came to.
struct Outcome {
    id: String,
    trial: Option<u32>,
    regrade: Option<Regrade>,
    error: Option<String>,
}

/// What a regrade needs before it provisions anything: the run planned again, its checks, the patch, the
/// settings (with the rehearsal endpoint, which lives as long as this does).
struct Prepared {
    planned: PlannedRun,
    spec: VerifySpec,
    bytes: Vec<u8>,
    job_dir: PathBuf,
    settings: RunSettings,
    _rehearsal: Option<crate::rehearse::Rehearsal>,
}

async fn prepare(t: &Graded, patch: &Patch, vars: &[String], args: &VerifyArgs) -> Result<Prepared, String> {
    let planned = plan_of(&t.report, vars)?;
    let spec = planned.spec.verify.clone().ok_or_else(|| "its job has no `verify:` checks".to_string())?;
    let bytes = patch.bytes(t)?;
    let job_dir = job_file(&t.report).parent().map(Path::to_path_buf).unwrap_or_default();
    let rehearsal = start_rehearsal(args.rehearse.as_deref(), &planned, &job_dir).await?;
    let reh_llm = rehearsal.as_ref().map(|r| crate::settings::RehearsalLlm { base_url: r.base_url("127.0.0.1") });
    let settings = crate::settings::resolve(&planned.spec, &job_dir, reh_llm.as_ref(), &|n| std::env::var(n).ok())
        .map_err(|p| p.to_string())?;
    Ok(Prepared { planned, spec: *spec, bytes, job_dir, settings, _rehearsal: rehearsal })
}

async fn regrade(
    t: &Graded,
    patch: &Patch,
    vars: &[String],
    args: &VerifyArgs,
    batch_dir: &Path,
    console: &Console,
    signals: &Signals,
) -> Outcome {
    let id = t.report.run.id.clone();
    let line = console.run_line(&format!("[{id}] "));
    let failed = |e: String| {
        line.error(&format!("error: {e}"));
        Outcome { id: id.clone(), trial: t.report.run.trial, regrade: None, error: Some(e) }
    };
    let p = match prepare(t, patch, vars, args).await {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let dir = t.run_dir.join(format!("verify-{}", next_number(&t.run_dir)));
    let started_at = crate::report::writer::now_rfc3339();
    let v = check_in_fresh_sandbox(t, patch, &p, (&dir, batch_dir), &line, signals).await;
    let verdict = v.verdict.unwrap_or(Verdict::Error);
    let score = v.score;
    let regrade = Regrade {
        format: 1,
        run_id: id.clone(),
        trial: t.report.run.trial,
        patch: patch.name(),
        earlier_verdict: t.report.verification.as_ref().and_then(|v| v.verdict),
        started_at,
        verification: v,
    };
    let written = serde_json::to_string_pretty(&regrade).map_err(std::io::Error::other).and_then(|text| {
        crate::report::writer::create_dir(&dir)?;
        write_atomic(&dir.join("verification.json"), &text)
    });
    if let Err(e) = written {
        return failed(format!("cannot write {}/verification.json: {e}", dir.display()));
    }
    line.say(&format!(
        "{}: {} · {}",
        dir.join("verification.json").display(),
        verdict.as_str(),
        score.map_or("-".into(), |s| format!("{s:.2}"))
    ));
    Outcome { id, trial: t.report.run.trial, regrade: Some(regrade), error: None }
}

/// The checks in a fresh sandbox of the run's kind, given the patch; the sandbox released (recorded in
/// the ledger as `RUN#verify-N` while it exists) and the verification with its verdict.
async fn check_in_fresh_sandbox(
    t: &Graded,
    patch: &Patch,
    p: &Prepared,
    (dir, batch_dir): (&Path, &Path),
    line: &crate::console::RunLine<'_>,
    signals: &Signals,
) -> Verification {
    let id = &t.report.run.id;
    let started = Instant::now();
    let mut v = Verification { mode: "fresh".into(), ..Verification::default() };
    let ledger_id = format!("{id}#{}", dir.file_name().unwrap_or_default().to_string_lossy());
    let ledger = crate::ledger::Slot::new(&crate::ledger::Ledger::default(), &ledger_id, dir, Some(batch_dir))
        .watched_by(signals.watcher());
    let say = |l: &str| line.say(l);
    let place = fresh::Place {
        run_id: id,
        job: &p.planned.spec.name,
        dir,
        hide_env: &p.settings.secret_names,
        deadline: p.planned.spec.limits.timeout.map(|t| Instant::now() + t.0),
        cancel: signals.cancel(),
        progress: &say,
        ledger: &ledger,
        relocate: fresh::relocates(&p.planned.spec.sandbox),
    };
    line.activity("provisioning a fresh sandbox");
    let mut backend = p.settings.sandbox.clone().backend();
    let ready = fresh::provision(&mut *backend, &place).await;
    v.checks = match &ready {
        Ok(ready) => {
            let target = Target { client: &ready.client, working_dir: &ready.working_dir };
            let checker = Checker {
                spec: &p.planned.spec,
                settings: &p.settings,
                probe: &*backend,
                log_dir: dir.to_path_buf(),
                spent_before: crate::money::Usd::ZERO,
                ids: (id, t.report.run.attempt, t.report.run.trial.unwrap_or(1)),
                budget_key: id,
                deadline: place.deadline,
                cancel: signals.cancel(),
                budget: None,
                voice: line,
            };
            let (base, evidence) = (patch.base(t), patch.evidence(t, &p.bytes));
            let mut cancel = signals.cancel();
            let results = match fresh::prepare(&target, &p.settings, base.as_ref(), &p.bytes, &mut cancel).await {
                Ok(()) => verify::check_in(&target, &p.spec, &p.job_dir, &checker, &evidence, &mut v.notices).await,
                Err(e) => vec![verify::setup_error("fresh sandbox", e)],
            };
            if place.relocate {
                fresh::remove_dir(&target).await;
            }
            results
        }
        Err(e) => vec![verify::setup_error("fresh sandbox", format!("it could not be provisioned: {}", e.message))],
    };
    verify::tell_setup_errors(&v.checks, line);
    line.activity("releasing the sandbox");
    let released = backend.release(false).await;
    if !matches!(released, crate::backend::Released::Failed(_)) {
        ledger.close(released.disposition());
    }
    v.sandbox = Some(VerifySandbox {
        kind: p.planned.spec.sandbox.kind().into(),
        id: backend.record().id,
        working_dir: ready.as_ref().ok().map(|r| r.working_dir.clone()),
        disposition: released.disposition().into(),
    });
    let (verdict, score) = verify::verdict(&v.checks);
    (v.verdict, v.score, v.duration_ms) = (Some(verdict), score, Some(started.elapsed().as_millis() as u64));
    v.cost = v.checks.iter().map(|c| c.cost).sum();
    v
}

/// The run's job planned again (with the batch's `--var`s) and the run found in it by id.
fn plan_of(report: &RunReport, vars: &[String]) -> Result<PlannedRun, String> {
    let file = &job_file(report);
    let opts = PlanOptions { vars: vars.to_vec(), ..PlanOptions::default() };
    let plan = plan_file(file, &opts)
        .map_err(|_| format!("its job file {} does not plan (run `ohrun validate` on it)", file.display()))?;
    plan.runs
        .into_iter()
        .find(|r| r.id == report.run.id)
        .ok_or_else(|| format!("its job file {} no longer has a run {}", file.display(), report.run.id))
}

/// `--rehearse`: the job's scripted LLM (for judges), as `ohrun run --rehearse` would use.
async fn start_rehearsal(
    given: Option<&str>,
    planned: &PlannedRun,
    job_dir: &Path,
) -> Result<Option<crate::rehearse::Rehearsal>, String> {
    let Some(given) = given else { return Ok(None) };
    let path = match (given.is_empty(), &planned.spec.rehearsal) {
        (false, _) => Some(PathBuf::from(given)),
        (true, Some(own)) => Some(job_dir.join(own)),
        (true, None) => None,
    };
    let script = match path {
        None => crate::rehearse::script::Script::default(),
        Some(p) => {
            super::run::load_script(&p).map_err(|_| format!("cannot load the rehearsal script {}", p.display()))?
        }
    };
    crate::rehearse::Rehearsal::start(script, std::net::Ipv4Addr::LOCALHOST.into())
        .await
        .map(Some)
        .map_err(|e| format!("cannot start the rehearsal endpoint: {e}"))
}

/// The first `verify-N` not taken in `run_dir`.
fn next_number(run_dir: &Path) -> u32 {
    (1..).find(|n| !run_dir.join(format!("verify-{n}")).exists()).unwrap_or(1)
}

/// The table, `--json`, and the exit code: for the runs' own patches and a reference, 0 when every run
/// passed, 1 when one failed, 3 when a check could not run; for `--patch empty`, 1 when a required check
/// passed without any change (it cannot tell work from none), else 0.
fn conclude(outcomes: &[Outcome], patch: &Patch, json: bool) -> i32 {
    let mut passing_unchanged: Vec<(String, String, bool)> = Vec::new();
    for o in outcomes {
        if let Some(r) = &o.regrade {
            let passed = r.verification.checks.iter().filter(|c| c.passed);
            passing_unchanged.extend(passed.map(|c| (c.name.clone(), o.id.clone(), c.required)));
        }
    }
    if json {
        let doc = serde_json::json!({
            "patch": patch.name(),
            "runs": outcomes.iter().map(|o| serde_json::json!({
                "id": o.id,
                "trial": o.trial,
                "verdict": o.regrade.as_ref().and_then(|r| r.verification.verdict),
                "score": o.regrade.as_ref().and_then(|r| r.verification.score),
                "earlier_verdict": o.regrade.as_ref().and_then(|r| r.earlier_verdict),
                "checks": o.regrade.as_ref().map(|r| r.verification.checks.iter().map(crate::report::scores::CheckBrief::of).collect::<Vec<_>>()),
                "error": o.error,
            })).collect::<Vec<_>>(),
            "pass_without_change": matches!(patch, Patch::Empty).then(|| passing_unchanged.iter().map(|(c, r, req)| serde_json::json!({"check": c, "run": r, "required": req})).collect::<Vec<_>>()),
        });
        crate::console::print_stdout(&serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    let verdicts: Vec<Option<Verdict>> =
        outcomes.iter().map(|o| o.regrade.as_ref().and_then(|r| r.verification.verdict)).collect();
    let unverified = verdicts.iter().filter(|v| matches!(v, None | Some(Verdict::Error))).count();
    if matches!(patch, Patch::Empty) {
        let required = passing_unchanged.iter().filter(|(_, _, req)| *req).count();
        if !passing_unchanged.is_empty() {
            eprintln!("checks that pass without any change (they cannot tell work from none):");
            for (check, run, req) in &passing_unchanged {
                eprintln!("  {check} (run {run}){}", if *req { "" } else { " — optional" });
            }
        }
        return if required > 0 {
            ExitCode::RUN_FAILED
        } else if unverified > 0 {
            // A check that could not run did not fail for want of a change: nothing is known of it.
            eprintln!("{unverified} runs could not be checked: whether their checks tell work from none is unknown");
            ExitCode::INFRA
        } else {
            eprintln!("every required check fails without a change: they can tell work from none");
            ExitCode::SUCCESS
        };
    }
    let count = |v: Verdict| verdicts.iter().filter(|x| **x == Some(v)).count();
    eprintln!(
        "regraded {} runs: {} passed, {} failed, {} could not be verified",
        outcomes.len(),
        count(Verdict::Passed),
        count(Verdict::Failed),
        unverified
    );
    if unverified > 0 {
        ExitCode::INFRA
    } else if count(Verdict::Failed) > 0 {
        ExitCode::RUN_FAILED
    } else {
        ExitCode::SUCCESS
    }
}
