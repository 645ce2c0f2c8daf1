//! `ohrun run JOB...` (or just `ohrun JOB`): plan the jobs, take the selected runs, run them as a batch.
//! `--resume` rebuilds the batch's plan from its `batch.json` and refuses a changed job file unless
//! `--force`.

use super::{RunArgs, print_job_error};
use crate::console::Console;
use crate::exit_code::ExitCode;
use crate::job::{Plan, PlanOptions, parse, plan_file};
use crate::rehearse::script::Script;
use crate::runner::state::{BatchFlags, BatchState};
use crate::runner::{BatchOptions, run_batch, signal::Signals};
use crate::style::Style;
use std::path::{Path, PathBuf};

/// What to run: the job files and how, from the command line or (resuming) from the batch.
struct Invocation {
    files: Vec<PathBuf>,
    vars: Vec<String>,
    shard: Option<String>,
    filters: Vec<String>,
    rehearse: Option<String>,
    out: Option<PathBuf>,
    resume: bool,
}

pub fn run(args: &RunArgs, style: Style, quiet: bool) -> i32 {
    super::keep_environment_private();
    let inv = match invocation(args) {
        Ok(i) => i,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::USAGE;
        }
    };
    let plans = match plans(&inv, args.job.max_runs, style) {
        Ok(p) => p,
        Err(code) => return code,
    };
    crate::fd_limit::raise();
    let out = inv.out.clone().unwrap_or_else(|| super::default_out(&plans));
    if super::run_dir_problems(&plans, Some(&out)) {
        return ExitCode::USAGE;
    }
    let given = BatchFlags {
        jobs: args.jobs,
        prefetch: args.prefetch,
        retries: args.retries,
        max_cost: args.max_cost,
        fail_fast: args.fail_fast,
        repeat: args.repeat,
    };
    let before = match inv.resume.then(|| read_before(&out)).transpose() {
        Ok(before) => before,
        Err(code) => return code,
    };
    // A resume keeps the flags the batch had unless this names others, its trials among them.
    let flags = match &before {
        Some(b) => given.or(&b.flags),
        None => given,
    };
    let state = BatchState::of(&plans, &inv.vars, inv.shard.as_deref(), &inv.filters, inv.rehearse.as_deref(), flags);
    if let Some(before) = &before
        && let Err(code) = check_unchanged(&out, before, &state, args.force)
    {
        return code;
    }
    let mut rehearsals = Vec::new();
    for plan in &plans {
        match rehearsal(inv.rehearse.as_deref(), plan) {
            Ok(r) => rehearsals.push(r),
            Err(code) => return code,
        }
    }
    let flags = state.flags.clone();
    let max_cost = flags
        .max_cost
        .or_else(|| plans.iter().flat_map(|p| p.runs.first()).filter_map(|r| r.spec.batch.max_cost).min());
    let opts = BatchOptions {
        rehearsals,
        jobs: flags.jobs,
        prefetch: flags.prefetch,
        retries: flags.retries,
        repeat: flags.repeat,
        max_cost,
        fail_fast: flags.fail_fast,
        out,
        json: args.json,
        resume: inv.resume,
        state,
        no_deliver: args.no_deliver,
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let console = Console::new(quiet);
    let code = runtime.block_on(async {
        let signals = Signals::install();
        run_batch(plans, opts, console, signals).await
    });
    // Don't wait for stray tasks (a socket mid-reconnect): everything owned was released above.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

fn invocation(args: &RunArgs) -> Result<Invocation, String> {
    let mut inv = Invocation {
        files: args.files.clone(),
        vars: args.job.vars.clone(),
        shard: args.select.shard.clone(),
        filters: args.select.filter.clone(),
        rehearse: args.rehearse.clone(),
        out: args.out.clone(),
        resume: args.resume.is_some(),
    };
    match args.resume.as_ref().and_then(Option::as_deref) {
        None => {}
        // `--resume jobs/x.yaml`: a job file, resumed in its default batch directory.
        Some(p) if p.is_file() => inv.files.insert(0, p.to_path_buf()),
        Some(dir) => {
            let state = BatchState::read(dir)?;
            if inv.files.is_empty() {
                if state.vars.iter().any(|v| v.contains(crate::report::redact::MASK)) {
                    return Err(format!(
                        "{} keeps a `--var` value masked as a secret; name the job files and pass `--var` again",
                        dir.join(crate::runner::state::BATCH_FILE).display()
                    ));
                }
                inv.files = state.jobs.iter().map(|j| PathBuf::from(&j.file)).collect();
                inv.vars = state.vars;
                inv.shard = state.shard;
                inv.filters = state.filters;
                inv.rehearse = inv.rehearse.or(state.rehearse);
            }
            inv.out = Some(dir.to_path_buf());
        }
    }
    if inv.files.is_empty() {
        return Err("name a job file (or `--resume DIR` of a batch)".into());
    }
    Ok(inv)
}

/// Every job file planned and the selection applied; run ids must be unique across the files.
fn plans(inv: &Invocation, max_runs: usize, style: Style) -> Result<Vec<Plan>, i32> {
    let selection = crate::job::select::Selection::parse(inv.shard.as_deref(), &inv.filters).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::USAGE
    })?;
    let hidden_env = if inv.files.len() > 1 { crate::job::secret_env_names(&inv.files) } else { Default::default() };
    let opts = PlanOptions { vars: inv.vars.clone(), max_runs, hidden_env };
    let mut plans = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for file in &inv.files {
        let mut plan = plan_file(file, &opts).map_err(|err| {
            print_job_error(&err, style);
            ExitCode::USAGE
        })?;
        plan.runs.retain(|r| selection.keeps(r));
        for r in &plan.runs {
            if let Some(other) = seen.insert(r.id.clone(), file.clone()) {
                eprintln!("error: run id `{}` is in both {} and {}", r.id, other.display(), file.display());
                eprintln!("  hint: give the jobs different `name`s");
                return Err(ExitCode::USAGE);
            }
        }
        plans.push(plan);
    }
    Ok(plans)
}

/// What the batch to resume recorded.
fn read_before(out: &Path) -> Result<BatchState, i32> {
    BatchState::read(out).map_err(|e| {
        eprintln!("error: {e}");
        eprintln!("  hint: `--resume` continues a batch that ran before; run it without `--resume` first");
        ExitCode::USAGE
    })
}

/// A resumed batch must be the same plan, unless `--force`: changed, added or removed runs, and runs
/// with another number of trials, are listed.
fn check_unchanged(out: &Path, before: &BatchState, now: &BatchState, force: bool) -> Result<(), i32> {
    let diff = before.diff(now);
    if diff.is_empty() || force {
        return Ok(());
    }
    eprintln!("error: the plan changed since the batch in {} started:", out.display());
    for line in &diff {
        eprintln!("  {line}");
    }
    eprintln!(
        "  hint: `--force` resumes anyway (changed runs that succeeded are not rerun); or start a new batch with `--out`"
    );
    Err(ExitCode::USAGE)
}

/// The scripted LLM of one job: `--rehearse=SCRIPT`, else its own `rehearsal:` script, else an empty one.
fn rehearsal(given: Option<&str>, plan: &Plan) -> Result<Option<Script>, i32> {
    let Some(given) = given else { return Ok(None) };
    let job_dir = plan.file.parent().map(PathBuf::from).unwrap_or_default();
    let path = match (given.is_empty(), plan.runs.first().and_then(|r| r.spec.rehearsal.clone())) {
        (false, _) => Some(PathBuf::from(given)),
        (true, Some(own)) => Some(job_dir.join(own)),
        (true, None) => None,
    };
    match path {
        None => Ok(Some(Script::default())),
        Some(path) => load_script(&path).map(Some),
    }
}

pub(super) fn load_script(path: &std::path::Path) -> Result<Script, i32> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read the rehearsal script {}: {e}", path.display());
        ExitCode::USAGE
    })?;
    let source = crate::diagnostic::Source { name: path.display().to_string(), text };
    parse::load_typed(source.clone()).map_err(|diags| {
        let report = crate::diagnostic::Report { source, diagnostics: diags };
        eprint!("{}", report.render(Style::for_stderr()));
        ExitCode::USAGE
    })
}
