//! `ohrun plan FILE`: every run the job expands to, with its id, sandbox, matrix values and step count.

use super::{PlanArgs, job_error_json, print_job_error};
use crate::exit_code::ExitCode;
use crate::job::plan_file;
use crate::style::Style;
use serde_json::{Value, json};
use std::io::Write;

pub fn run(args: &PlanArgs, style: Style) -> i32 {
    let plan = match plan_file(&args.file, &args.job.plan_options()) {
        Ok(p) => p,
        Err(err) => {
            if args.json {
                println!("{}", json!({"file": args.file, "ok": false, "errors": job_error_json(&err)}));
            } else {
                print_job_error(&err, style);
            }
            return ExitCode::USAGE;
        }
    };
    // One buffered write: plans can have many thousands of runs.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        let runs: Vec<Value> = plan
            .runs
            .iter()
            .map(|r| json!({"index": r.index, "id": r.id, "sandbox": r.spec.sandbox.kind(), "steps": r.spec.steps.len(), "matrix": r.matrix}))
            .collect();
        let doc = json!({"file": plan.file, "job": plan.job_name, "file_hash": plan.file_hash, "runs": runs, "total": plan.runs.len()});
        let _ = serde_json::to_writer_pretty(&mut out, &doc);
        let _ = writeln!(out);
    } else {
        let id_width = plan.runs.iter().map(|r| r.id.len()).max().unwrap_or(2).max(2);
        let _ = writeln!(out, "{:>5}  {:id_width$}  {:8}  {:>5}  MATRIX", "#", "ID", "SANDBOX", "STEPS");
        for r in &plan.runs {
            let matrix = r
                .matrix
                .as_ref()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", scalar(v))).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:>5}  {:id_width$}  {:8}  {:>5}  {matrix}",
                r.index,
                r.id,
                r.spec.sandbox.kind(),
                r.spec.steps.len()
            );
        }
        let n = plan.runs.len();
        let _ = writeln!(out, "{n} run{} of job `{}`", if n == 1 { "" } else { "s" }, plan.job_name);
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
