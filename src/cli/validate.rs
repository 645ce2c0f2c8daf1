//! `ohrun validate FILE...`: parse, template and expand each file, report every problem, run nothing.

use super::{ValidateArgs, job_error_json, print_job_error};
use crate::exit_code::ExitCode;
use crate::job::plan_file;
use crate::style::Style;
use serde_json::json;

pub fn run(args: &ValidateArgs, style: Style, quiet: bool) -> i32 {
    let opts = args.job.plan_options(&args.files);
    let mut all_ok = true;
    let mut results = Vec::new();
    let mut plans = Vec::new();
    for file in &args.files {
        match plan_file(file, &opts) {
            Ok(plan) => {
                if args.json {
                    results.push(json!({"file": file, "ok": true, "runs": plan.runs.len(), "errors": []}));
                } else if !quiet {
                    let runs = plan.runs.len();
                    eprintln!(
                        "{} {} ({} run{})",
                        style.ok("valid"),
                        file.display(),
                        runs,
                        if runs == 1 { "" } else { "s" }
                    );
                }
                plans.push(plan);
            }
            Err(err) => {
                all_ok = false;
                if args.json {
                    results.push(json!({"file": file, "ok": false, "runs": 0, "errors": job_error_json(&err)}));
                } else {
                    print_job_error(&err, style);
                }
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results).unwrap_or_default());
    }
    if all_ok && super::run_dir_problems(&plans, None) {
        all_ok = false;
    }
    // The process ends here: freeing every run's spec one by one would only slow its exit (see plan.rs).
    std::mem::forget(plans);
    if all_ok { ExitCode::SUCCESS } else { ExitCode::USAGE }
}
