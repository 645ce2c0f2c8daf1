//! `ohrun merge DIR...`: one summary.json and junit.xml from several batch directories — the shards of one
//! plan, run on several machines. Each run appears once (a run in two directories is an error), in plan
//! order; the exit code is the one the whole plan would have had, so a last CI job can gate on it.

use super::MergeArgs;
use crate::exit_code::ExitCode;
use crate::money::Usd;
use crate::report::OutcomeClass;
use crate::report::summary::{BudgetSummary, RunSummary, Summary};
use crate::report::writer::{create_dir, relative};
use crate::runner::state::BatchState;
use std::path::{Path, PathBuf};

pub fn run(args: &MergeArgs, quiet: bool) -> i32 {
    if let Err(e) = create_dir(&args.out) {
        eprintln!("error: cannot create {}: {e}", args.out.display());
        return ExitCode::INFRA;
    }
    let (runs, duration_ms, caps) = match collect(&args.dirs, &args.out) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let missing = missing_shards(&args.dirs);
    let mut merged = Summary::new(runs);
    merged.recount(duration_ms);
    let merged = merged.with_budget(caps.iter().copied().max(), caps.len());
    if let Err(e) = merged.write(&args.out) {
        eprintln!("error: cannot write {}: {e}", args.out.display());
        return ExitCode::INFRA;
    }
    if let Err(e) = merged.publish_to_github() {
        eprintln!("warning: {e}");
    }
    if !quiet {
        let counts: Vec<String> = merged.totals.by_status.iter().map(|(k, v)| format!("{v} {k}")).collect();
        eprintln!(
            "merged {} runs ({}) · ${} into {}",
            merged.totals.runs,
            counts.join(", "),
            merged.totals.cost,
            args.out.display()
        );
    }
    if let Some(b) = merged.budget.as_ref().filter(|b| b.over_cap || !quiet) {
        report_budget(b);
    }
    if !missing.is_empty() {
        eprintln!("error: shard {} of this plan is not among the directories merged", missing.join(", "));
        eprintln!("  hint: its runs are missing from the summary; merge every shard's directory");
        return ExitCode::for_class(merged.worst_class().max(OutcomeClass::Infrastructure), false);
    }
    ExitCode::for_class(merged.worst_class(), false)
}

/// The shards' total against their cap: each kept it on its own, so together they may have spent more
/// (a warning, shown even with `-q`).
fn report_budget(b: &BudgetSummary) {
    let (lead, verdict) = match b.over_cap {
        true => ("warning", format!("over it by ${}", b.spent.saturating_sub(b.cap))),
        false => ("budget", "within it".to_string()),
    };
    eprintln!(
        "{lead}: ${} spent against a batch budget of ${}, {verdict} (a cap holds per process: each of these {} kept it on its own, up to ${} together)",
        b.spent,
        b.cap,
        if b.processes == 1 { "1 batch".to_string() } else { format!("{} batches", b.processes) },
        Usd { nanos: b.cap.nanos.saturating_mul(b.processes as u64) },
    );
}

/// The shards (`i/n`) of the plan that no directory holds, from each directory's batch.json: a merge
/// that lacks one would pass over its runs in silence.
fn missing_shards(dirs: &[PathBuf]) -> Vec<String> {
    let shards: Vec<(u64, u64)> = dirs
        .iter()
        .filter_map(|d| BatchState::read(d).ok()?.shard)
        .filter_map(|s| {
            let (i, n) = s.split_once('/')?;
            Some((i.trim().parse().ok()?, n.trim().parse().ok()?))
        })
        .collect();
    let counts: std::collections::BTreeSet<u64> = shards.iter().map(|(_, n)| *n).collect();
    counts
        .iter()
        .flat_map(|n| (1..=*n).filter(|i| !shards.contains(&(*i, *n))).map(move |i| format!("{i}/{n}")))
        .collect()
}

/// Every run of every directory, in plan order, with report paths relative to `out`; the longest
/// shard's wall time (shards run side by side); and the caps of the shards that had a budget.
fn collect(dirs: &[PathBuf], out: &Path) -> Result<(Vec<RunSummary>, u64, Vec<Usd>), i32> {
    let mut runs = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut duration_ms = 0;
    let mut caps = Vec::new();
    for dir in dirs {
        let Some(summary) = Summary::read(dir) else {
            eprintln!("error: {} has no readable summary.json", dir.display());
            eprintln!("  hint: name the batch directories of `ohrun run` (its `--out`)");
            return Err(ExitCode::USAGE);
        };
        duration_ms = duration_ms.max(summary.totals.duration_ms);
        caps.extend(summary.budget.as_ref().map(|b| b.cap));
        for mut r in summary.runs {
            // A run's trials are rows of one id: a shard takes all of them.
            if let Some(other) = seen.insert((r.id.clone(), r.trial), dir.clone()) {
                let run = crate::report::run_label(&r.id, r.trial);
                eprintln!("error: run `{run}` is in both {} and {}", other.display(), dir.display());
                eprintln!("  hint: merge the shards of one plan (`--shard i/n`), each once");
                return Err(ExitCode::USAGE);
            }
            r.report = r.report.map(|p| relative(&dir.join(p), out).display().to_string());
            runs.push(r);
        }
    }
    runs.sort_by(|a, b| (&a.job_file, a.index, a.trial).cmp(&(&b.job_file, b.index, b.trial)));
    Ok((runs, duration_ms, caps))
}
