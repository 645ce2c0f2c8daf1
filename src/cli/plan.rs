//! `ohrun plan JOB...`: every run the jobs expand to (after `--shard` and `--filter`, as `run` would take
//! them), with its id, sandbox, matrix values and step count. No network.

use super::{PlanArgs, job_error_json, print_job_error};
use crate::exit_code::ExitCode;
use crate::job::{Plan, plan_file};
use crate::style::Style;
use serde_json::{Value, json};
use std::io::Write;

pub fn run(args: &PlanArgs, style: Style) -> i32 {
    let selection = match args.select.selection() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::USAGE;
        }
    };
    let mut plans = Vec::new();
    let opts = args.job.plan_options(&args.files);
    for file in &args.files {
        match plan_file(file, &opts) {
            Ok(mut p) => {
                let all = p.runs.len();
                p.runs.retain(|r| selection.keeps(r));
                plans.push((p, all));
            }
            Err(err) => {
                if args.json {
                    println!("{}", json!({"file": file, "ok": false, "errors": job_error_json(&err)}));
                } else {
                    print_job_error(&err, style);
                }
                return ExitCode::USAGE;
            }
        }
    }
    if super::run_dir_problems_of(plans.iter().map(|(p, _)| p), None) {
        return ExitCode::USAGE;
    }
    // One buffered write: plans can have many thousands of runs.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        let doc = match plans.as_slice() {
            [(one, all)] => plan_json(one, *all),
            many => {
                json!({"plans": many.iter().map(|(p, all)| plan_json(p, *all)).collect::<Vec<_>>(), "total": many.iter().map(|(p, _)| p.runs.len()).sum::<usize>()})
            }
        };
        let _ = serde_json::to_writer_pretty(&mut out, &doc);
        let _ = writeln!(out);
    } else {
        for (plan, all) in &plans {
            write_table(&mut out, plan, *all);
        }
    }
    let _ = out.flush();
    // The process ends here: freeing every run's spec one by one (a tenth of the time at 100,000 runs)
    // would only give the memory back to a process that is exiting.
    std::mem::forget(plans);
    ExitCode::SUCCESS
}

/// `total` is what was selected; `expanded`, what the job expands to before `--shard` and `--filter`.
fn plan_json(plan: &Plan, all: usize) -> Value {
    let runs: Vec<Value> = plan
        .runs
        .iter()
        .map(|r| {
            let mut run = json!({"index": r.index, "id": r.id, "sandbox": r.spec.sandbox.kind(), "steps": r.spec.steps.len(), "matrix": r.matrix, "deliver": delivery(r)});
            if let Some(repo) = &r.spec.repo {
                // As written: `${VAR}`s are resolved when the run starts, never in a plan.
                let url = crate::repo::display_url(&repo.url.0);
                run["repo"] = json!({"url": url, "ref": repo.git_ref, "depth": repo.depth});
            }
            run
        })
        .collect();
    json!({"file": plan.file, "job": plan.job_name, "file_hash": plan.file_hash, "runs": runs, "total": plan.runs.len(), "expanded": all})
}

/// The runs of `plan` that were selected, of `all` it expands to.
fn write_table(out: &mut impl Write, plan: &Plan, all: usize) {
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
        if let Some(repo) = &r.spec.repo {
            let at = repo.git_ref.as_deref().unwrap_or("(default branch)");
            let _ = writeln!(out, "{:>5}  repo {} @ {at}", "", crate::repo::display_url(&repo.url.0));
        }
        if let Some(d) = delivery(r) {
            let pr = d["pull_request"].as_str().unwrap_or_default();
            let _ = writeln!(
                out,
                "{:>5}  └ deliver ({}): branch {} of {}; {pr}",
                "",
                d["when"].as_str().unwrap_or_default(),
                d["branch"].as_str().unwrap_or_default(),
                d["repository"].as_str().unwrap_or_default(),
            );
        }
    }
    let n = plan.runs.len();
    let of = if n == all { String::new() } else { format!(" (selected of {all})") };
    let _ = writeln!(out, "{n} run{} of job `{}`{of}", if n == 1 { "" } else { "s" }, plan.job_name);
}

/// What `deliver:` would do for the run, and where (`${VAR}`s as written: a plan reads no secret).
fn delivery(r: &crate::job::PlannedRun) -> Option<Value> {
    use crate::job::deliver::PrMode;
    let d = r.spec.deliver.as_ref()?;
    let repository = match (&d.repository, &r.spec.repo) {
        (Some(u), _) => u.0.clone(),
        (None, Some(repo)) => crate::repo::display_url(&repo.url.0),
        (None, None) => String::new(),
    };
    let branch = d.branch.clone().unwrap_or_else(|| format!("ohrun/{}", r.id));
    let upstream = crate::deliver::RepoUrl::parse(&repository).ok();
    let pushed_to = match (&upstream, &d.pull_request.fork_owner) {
        (Some(u), Some(owner)) => u.fork(owner).url,
        _ => repository.clone(),
    };
    let on = upstream.map(|u| format!("{}/{}", u.owner, u.name)).unwrap_or_else(|| repository.clone());
    let pr = match d.pull_request.mode {
        PrMode::None => "no pull request".to_string(),
        PrMode::Draft => format!("draft pull request on {on} via {}", d.api_url.0),
        PrMode::Ready => format!("pull request on {on} via {}", d.api_url.0),
    };
    Some(json!({"when": d.when.as_str(), "repository": pushed_to, "branch": branch, "pull_request": pr}))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
