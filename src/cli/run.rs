//! `ohrun run FILE` (or just `ohrun FILE`): plan the job, then run every run of it in turn.

use super::{RunArgs, print_job_error};
use crate::console::{Console, print_stdout};
use crate::exit_code::ExitCode;
use crate::job::{parse, plan_file};
use crate::rehearse::script::Script;
use crate::runner::{RunOptions, run_plan, signal::Signals};
use crate::style::Style;
use std::path::PathBuf;

pub fn run(args: &RunArgs, style: Style, quiet: bool) -> i32 {
    let plan = match plan_file(&args.file, &args.job.plan_options()) {
        Ok(p) => p,
        Err(err) => {
            print_job_error(&err, style);
            return ExitCode::USAGE;
        }
    };
    let rehearsal = match &args.rehearse {
        None => None,
        Some(given) => {
            // `--rehearse=SCRIPT` wins; plain `--rehearse` uses the job's own script, else an empty one.
            let job_dir = plan.file.parent().map(PathBuf::from).unwrap_or_default();
            let path = match (given.is_empty(), plan.runs.first().and_then(|r| r.spec.rehearsal.clone())) {
                (false, _) => Some(PathBuf::from(given)),
                (true, Some(own)) => Some(job_dir.join(own)),
                (true, None) => None,
            };
            match path {
                None => Some(Script::default()),
                Some(path) => match load_script(&path) {
                    Ok(s) => Some(s),
                    Err(code) => return code,
                },
            }
        }
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let console = Console::new(quiet);
    let (results, code) = runtime.block_on(async {
        let signals = Signals::install();
        run_plan(&plan, &RunOptions { rehearsal }, &console, &signals).await
    });
    if args.json {
        let reports: Vec<&crate::report::RunReport> = results.iter().map(|r| &r.report).collect();
        let value = if reports.len() == 1 { serde_json::to_value(reports[0]) } else { serde_json::to_value(&reports) };
        print_stdout(&serde_json::to_string_pretty(&value.unwrap_or_default()).unwrap_or_default());
    }
    // Don't wait for stray tasks (a socket mid-reconnect): everything owned was released above.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
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
