//! Trials (`repeat: N` in a job, `--repeat N`): each run id run N times, for pass@k and flakiness. A trial
//! is scheduled like a run of its own — its own folder `RUN_ID/trial-K/` (holding what a run's folder
//! holds: its run.json, report.html and an `attempt-N/` per attempt), its own sandbox and retries, its
//! place in the lanes and the budget, its own row in the summary (with `trial`). With one trial nothing of
//! this shows: the run keeps the folder and rows of a run without trials.
//!
//! Trials go out trial-major (every run id's first trial, then every second one, …): a batch stopped by
//! its budget, `--fail-fast` or a kill has tried many run ids, not all trials of the first few.

use super::on_disk::{report_path, reports_on_disk};
use super::options::BatchOptions;
use crate::job::{Plan, PlannedRun};
use crate::money::Usd;
use crate::report::summary::{RunSummary, Summary};
use crate::report::{OutcomeClass, RunReport, Verdict};
use crate::settings::{self, RunSettings};
use std::path::{Path, PathBuf};

/// What the batch schedules: one trial of a run (`trial` None when the run has one trial).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Unit {
    pub plan: usize,
    pub run: usize,
    pub trial: Option<u32>,
}

/// Every trial of every run, in plan order, a run's trials together (the summary's rows).
pub(super) fn units(plans: &[Plan], repeat: Option<u32>) -> Vec<Unit> {
    let mut units = Vec::new();
    for (p, plan) in plans.iter().enumerate() {
        for (r, run) in plan.runs.iter().enumerate() {
            let n = run.spec.trials(repeat);
            units.extend((1..=n).map(|k| Unit { plan: p, run: r, trial: (n > 1).then_some(k) }));
        }
    }
    units
}

/// The order the units start in: trial-major, plan order within a trial.
pub(super) fn dispatch_order(units: &[Unit]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by_key(|i| units[*i].trial.unwrap_or(1)); // stable: plan order within a trial
    order
}

/// A trial's folder in its run's folder (the run's folder itself without trials).
pub(super) fn folder(run_dir: &Path, trial: Option<u32>) -> PathBuf {
    match trial {
        Some(k) => run_dir.join(format!("trial-{k}")),
        None => run_dir.to_path_buf(),
    }
}

/// The variables ohrun gives setup commands and checks: which run, trial and attempt this is (trial 1
/// without trials), so that a script can tell its trials apart.
pub(super) fn ohrun_env(id: &str, trial: Option<u32>, attempt: u32) -> Vec<(String, String)> {
    vec![
        ("OHRUN_RUN_ID".to_string(), id.to_string()),
        ("OHRUN_TRIAL".to_string(), trial.unwrap_or(1).to_string()),
        ("OHRUN_ATTEMPT".to_string(), attempt.to_string()),
    ]
}

/// A run's settings for one trial and attempt: ohrun's variables in every setup command's environment
/// (the command's own `env:` wins), and, where the trials of a run would otherwise work in one directory
/// at once (a `remote` server, or a `local` one with a `working_dir`), `trial-K` below the configured one.
pub(super) fn for_trial(settings: &mut RunSettings, id: &str, trial: Option<u32>, attempt: u32) {
    for command in &mut settings.setup {
        let own = std::mem::take(&mut command.env);
        command.env = ohrun_env(id, trial, attempt).into_iter().chain(own).collect();
    }
    let Some(k) = trial else { return };
    match &mut settings.sandbox {
        crate::backend::Settings::Remote(remote) => {
            remote.working_dir = format!("{}/trial-{k}", remote.working_dir.trim_end_matches('/'));
        }
        crate::backend::Settings::Local(local) => {
            local.working_dir = local.working_dir.take().map(|w| w.join(format!("trial-{k}")));
        }
        _ => {}
    }
}

/// Every trial's first entry in the summary (pending; or, resuming, what a trial that succeeded before
/// left), and what the batch spent before and its dearest call (resuming).
pub(super) fn initial_entries(plans: &[Plan], units: &[Unit], opts: &BatchOptions) -> (Vec<RunSummary>, Usd, Usd) {
    let (mut spent, mut largest_call) = (Usd::ZERO, Usd::ZERO);
    let entries = units
        .iter()
        .map(|u| {
            let (plan, r) = (&plans[u.plan], &plans[u.plan].runs[u.run]);
            let pending = pending_entry(plan, r, u.trial);
            if !opts.resume {
                return pending;
            }
            let Ok(run_dir) = settings::report_dir(&r.spec, &r.id, &opts.out, &super::env) else {
                return pending;
            };
            let dir = folder(&run_dir, u.trial);
            let earlier = reports_on_disk(&dir, 1);
            spent += earlier.iter().map(|a| a.totals.cost).sum();
            largest_call = earlier.iter().map(|a| a.totals.largest_call).fold(largest_call, Usd::max);
            let refs: Vec<&RunReport> = earlier.iter().collect();
            // The newest attempt decides (the trial folder's copy may be missing after a kill).
            match earlier.last() {
                Some(last) if done(last) => RunSummary::ended(last, &refs, Some(report_path(&opts.out, &dir))),
                // To be run again: what it spent so far still counts.
                _ => pending.spent(&refs),
            }
        })
        .collect();
    (entries, spent, largest_call)
}

/// Whether a resume leaves a trial (or run) as it is: it succeeded, or — a trial — its agent or its
/// checks failed. Such a failure is one of the samples pass@k and the pass rate are made of: running it
/// again until it passes would count only the passes. What left no verdict (an infrastructure error, a
/// budget stop, an interrupt, a kill) is a missing sample, run again.
fn done(last: &RunReport) -> bool {
    let judged =
        || last.verification.as_ref().is_some_and(|v| matches!(v.verdict, Some(Verdict::Passed | Verdict::Failed)));
    match last.outcome.class {
        OutcomeClass::Succeeded => true,
        OutcomeClass::Failed => last.run.trial.is_some() && judged(),
        _ => false,
    }
}

fn pending_entry(plan: &Plan, r: &PlannedRun, trial: Option<u32>) -> RunSummary {
    RunSummary {
        id: r.id.clone(),
        index: r.index,
        job: plan.job_name.clone(),
        job_file: plan.file.display().to_string(),
        matrix: r.matrix.as_ref().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        trial,
        ..RunSummary::default()
    }
}

/// The batch's last line: how many runs (`N trials of M runs` with trials) ended how, the pass rate with
/// its 95 % interval when runs were verified, the money, where the summary is.
pub(super) fn batch_line(summary: &Summary, file: &Path) -> String {
    let rows = summary.runs.len();
    let ids = summary.runs.iter().map(|r| &r.id).collect::<std::collections::HashSet<_>>().len();
    let what = match (rows, ids) {
        (rows, 1) if rows > 1 => format!("{rows} trials of 1 run"),
        (rows, ids) if ids < rows => format!("{rows} trials of {ids} runs"),
        (rows, _) => format!("{rows} runs"),
    };
    let counts: Vec<String> = summary.totals.by_status.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let verified = summary.verification.as_ref().map(|v| format!(" · {}", v.batch.line()));
    format!(
        "{what}: {}{} · ${} · {}",
        counts.join(", "),
        verified.unwrap_or_default(),
        summary.totals.cost,
        file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(run: usize, trial: Option<u32>) -> Unit {
        Unit { plan: 0, run, trial }
    }

    #[test]
    fn trials_start_trial_major_in_plan_order() {
        let units = [unit(0, Some(1)), unit(0, Some(2)), unit(1, Some(1)), unit(1, Some(2)), unit(2, None)];
        let order: Vec<Unit> = dispatch_order(&units).into_iter().map(|i| units[i]).collect();
        assert_eq!(order, [unit(0, Some(1)), unit(1, Some(1)), unit(2, None), unit(0, Some(2)), unit(1, Some(2))]);
    }

    #[test]
    fn one_trial_keeps_the_run_folder_and_name() {
        let run = Path::new("/b/r");
        assert_eq!((folder(run, None), crate::report::run_label("r", None)), (run.to_path_buf(), "r".to_string()));
        assert_eq!(
            (folder(run, Some(3)), crate::report::run_label("r", Some(3))),
            (run.join("trial-3"), "r#3".to_string())
        );
    }

    #[test]
    fn setup_gets_ohrun_variables_under_its_own_and_shared_directories_split_by_trial() {
        let spec = "name: t\nsandbox: {kind: remote, url: 'http://127.0.0.1:9', working_dir: /w/}\nllm: {model: m}\n\
                    setup:\n  - run: make\n    env: {OHRUN_TRIAL: mine}\nsteps:\n  - message: hi\n";
        let source = crate::diagnostic::Source { name: "t.yaml".into(), text: spec.into() };
        let (_, runs) = crate::job::plan_text(source, Path::new("."), &Default::default()).unwrap();
        let spec = &runs[0].spec;
        let mut s = settings::resolve(spec, Path::new(""), None, &|_| None).unwrap();
        for_trial(&mut s, "r", Some(2), 3);
        let env = &s.setup[0].env;
        assert_eq!(env[..3], ohrun_env("r", Some(2), 3)[..]);
        assert_eq!(env.last().unwrap(), &("OHRUN_TRIAL".to_string(), "mine".to_string()), "its own comes last");
        let crate::backend::Settings::Remote(remote) = &s.sandbox else { panic!() };
        assert_eq!(remote.working_dir, "/w/trial-2");
    }
}
