//! A batch: the selected runs of one or more job files, run concurrently in one process (one tokio task per
//! run, started in plan order in a lane per sandbox kind, or one lane of `--jobs` for all), each in its own directory with an
//! `attempt-N/` per attempt; each trial of a run (`--repeat`) is scheduled like a run (`trials.rs`).
//! Infrastructure failures are retried with backoff; agent and job failures never are. After every run
//! the rollups are rewritten (summary.json, junit.xml; in a large batch, at most one rewrite per
//! 0.2 ms × runs when many end at once), so a crash leaves a true partial summary; `--resume` reruns only
//! what did not succeed (of trials: what left no verdict), from each run's own run.json.

use super::attempt::{Attempt, Delivering};
use super::budget::{Admission, Budget};
use super::claim::Claim;
use super::on_disk::{report_path, reports_on_disk};
use super::options::{BatchOptions, default_jobs, default_prefetch};
use super::outcome;
use super::publish::publish;
use super::run;
use super::shared::SharedSandboxes;
use super::signal::Signals;
use super::state::BATCH_FILE;
use super::trials::{self, Unit};
use crate::backend::Released;
use crate::console::{Console, RunLine, json_line, print_stdout};
use crate::error::Failure;
use crate::exit_code::ExitCode;
use crate::job::{Plan, PlannedRun};
use crate::net::RetryPolicy;
use crate::report::disk;
use crate::report::summary::{JUNIT_FILE, RunStatus, RunSummary, SUMMARY_FILE, SharedSandbox, Summary};
use crate::report::writer::create_dir;
use crate::report::{OutcomeClass, RunReport, run_label};
use crate::report::{html, leak};
use crate::settings;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The least time between two rewrites of the rollups while runs end, per run in the batch (a rewrite
/// costs in proportion to the runs): 1.2 ms for 6 runs, 200 ms for 1,000; at most `MAX_ROLLUP_GAP`.
const ROLLUP_GAP_PER_RUN: Duration = Duration::from_micros(200);
const MAX_ROLLUP_GAP: Duration = Duration::from_millis(500);

struct Batch {
    plans: Vec<Plan>,
    /// The trials to run (one per run without `repeat`), in the summary's order.
    units: Vec<Unit>,
    /// Agent-servers the runs share (`sandbox.share: batch`).
    shared: SharedSandboxes,
    /// The batch's sandbox ledger (what `ohrun gc` reads after a crash).
    ledger: crate::ledger::Ledger,
    opts: BatchOptions,
    console: Console,
    signals: Signals,
    summary: Mutex<Summary>,
    /// What the overall progress shows, kept as runs end (guarded by `summary`'s lock when changed).
    tally: Mutex<Tally>,
    budget: Option<Budget>,
    /// Set by the first run that did not succeed (for `--fail-fast`).
    failed: AtomicBool,
    write_failed: AtomicBool,
    /// A run ended: the rollups are to be rewritten (`write_rollups_when_due`).
    rollups_due: tokio::sync::Notify,
    /// Held while the rollups are written (one writer at a time).
    rollups_writing: Mutex<()>,
    /// A batch of one run (and one trial): its lines need no run id.
    alone: bool,
    started: Instant,
    /// Pull requests are created one at a time per API host (`deliver:`).
    pacing: crate::deliver::Pacing,
}

/// Runs the batch and returns the process exit code. Each run is a tokio task of its own.
pub async fn run_batch(plans: Vec<Plan>, opts: BatchOptions, console: Console, signals: Signals) -> i32 {
    let units = trials::units(&plans, opts.repeat);
    let at_once: usize = lanes(&plans, opts.jobs).iter().map(|(_, width)| width).sum::<usize>().min(units.len());
    if let Some(why) = crate::fd_limit::raise().and_then(|limit| crate::fd_limit::shortfall(at_once, limit)) {
        console.error(&format!("error: {why}"));
        console.error("hint: run fewer at once (`--jobs`), or raise the hard limit (`ulimit -Hn`, systemd's LimitNOFILE=, /etc/security/limits.conf); nothing was started");
        return ExitCode::USAGE;
    }
    let _lock = match lock_batch_dir(&opts.out) {
        Ok(lock) => lock,
        Err((code, message, hint)) => {
            console.error(&format!("error: {message}"));
            console.error(&format!("hint: {hint}"));
            return code;
        }
    };
    // Every secret the runs will use is known to the redactor before batch.json is written.
    for plan in &plans {
        for r in &plan.runs {
            let _ = settings::resolve(&r.spec, plan.file.parent().unwrap_or(Path::new("")), None, &super::env);
        }
    }
    if let Err(e) = opts.state.write(&opts.out) {
        console.error(&format!("error: cannot write {}/batch.json: {e}", opts.out.display()));
        return ExitCode::INFRA;
    }
    let (entries, spent, largest_call) = trials::initial_entries(&plans, &units, &opts);
    let ledger = crate::ledger::Ledger::default();
    let batch = Arc::new(Batch {
        shared: SharedSandboxes::new(&opts.out, &ledger),
        ledger,
        // The cap is this process's: each shard of a plan keeps its own (summary.json says so).
        tally: Mutex::new(entries.iter().fold(Tally::default(), |t, e| t.with(e, 1))),
        summary: Mutex::new(Summary::new(entries).with_budget(opts.max_cost, 1)),
        budget: opts.max_cost.map(|cap| Budget::new(cap, spent, largest_call)),
        failed: AtomicBool::new(false),
        rollups_due: tokio::sync::Notify::new(),
        rollups_writing: Mutex::new(()),
        write_failed: AtomicBool::new(false),
        alone: units.len() == 1,
        started: Instant::now(),
        pacing: crate::deliver::Pacing::default(),
        plans,
        units,
        opts,
        console,
        signals,
    });
    batch.write_rollups();
    batch.console.start_overall(batch.units.len() as u64);
    let rollups = tokio::spawn(batch.clone().write_rollups_when_due());
    let mut dispatchers = tokio::task::JoinSet::new();
    for (lane, width) in lanes(&batch.plans, batch.opts.jobs) {
        let batch = batch.clone();
        let queue: Vec<usize> = trials::dispatch_order(&batch.units)
            .into_iter()
            .filter(|i| batch.opts.jobs.is_some() || batch.planned(*i).1.spec.sandbox.kind() == lane)
            .collect();
        dispatchers.spawn(async move { batch.dispatch(queue, width).await });
    }
    while let Some(joined) = dispatchers.join_next().await {
        if let Err(e) = joined {
            // A lane's dispatcher panicked: its runs not yet started stay pending (counted as infrastructure).
            batch.console.error(&format!("error: a lane of the batch ended abnormally: {e}"));
            batch.write_failed.store(true, Ordering::SeqCst);
        }
    }
    rollups.abort();
    batch.release_shared().await;
    if !batch.opts.no_deliver && !batch.signals.interrupted() {
        let mut summary = batch.summary.lock().unwrap_or_else(|e| e.into_inner()).clone();
        summary.recount(batch.started.elapsed().as_millis() as u64);
        super::delivering::post_batch_summary(&batch.plans, &summary, &batch.opts.out, &batch.console).await;
    }
    batch.console.clear();
    batch.finish()
}

/// The counts the overall progress shows, kept as runs end: recounting the whole summary at every run's
/// end made each end cost O(N) (10^8 entries visited over a 10,000-run batch).
#[derive(Clone, Copy, Default)]
struct Tally {
    runs: u64,
    pending: u64,
    /// Succeeded, or not started: not failures.
    not_failed: u64,
    cost: crate::money::Usd,
}

impl Tally {
    /// With `entry` counted in (`sign` 1) or out (-1).
    fn with(mut self, entry: &RunSummary, sign: i8) -> Tally {
        let add = |n: u64, yes: bool| {
            if !yes {
                n
            } else if sign > 0 {
                n + 1
            } else {
                n.saturating_sub(1)
            }
        };
        self.runs = add(self.runs, true);
        self.pending = add(self.pending, entry.status == RunStatus::Pending);
        self.not_failed = add(self.not_failed, matches!(entry.status, RunStatus::Succeeded | RunStatus::NotStarted));
        self.cost = if sign > 0 { self.cost + entry.cost } else { self.cost.saturating_sub(entry.cost) };
        self
    }
}

/// The lanes runs queue in, each with how many of its runs run at once: one per sandbox kind (its
/// `default_jobs`), or a single lane of `--jobs` for all.
fn lanes(plans: &[Plan], jobs: Option<usize>) -> Vec<(&'static str, usize)> {
    if let Some(n) = jobs {
        return vec![("all", n.max(1))];
    }
    let mut kinds: Vec<&'static str> =
        plans.iter().flat_map(|p| p.runs.iter().map(|r| r.spec.sandbox.kind())).collect();
    kinds.sort();
    kinds.dedup();
    kinds.into_iter().map(|k| (k, default_jobs(k))).collect()
}

/// One ohrun process per batch directory at a time. Another process holding it is a usage error (exit 2:
/// wait, or use another directory); a directory that cannot be made or written is infrastructure (exit 3,
/// as for any report that cannot be written).
fn lock_batch_dir(dir: &Path) -> Result<std::fs::File, (i32, String, &'static str)> {
    const WRITABLE: &str = "give the batch a directory you can write with `--out`, or fix its permissions";
    create_dir(dir).map_err(|e| {
        (ExitCode::INFRA, format!("cannot create the batch directory {}: {e}", dir.display()), WRITABLE)
    })?;
    super::claim::lock(&dir.join(super::claim::BATCH_LOCK)).map_err(|e| match e {
        super::claim::Locked::By(holder) => (
            ExitCode::USAGE,
            format!("another ohrun ({holder}) is running the batch in {} right now", dir.display()),
            "wait for it to finish, or give this batch another directory with `--out`",
        ),
        super::claim::Locked::Io(e) => {
            (ExitCode::INFRA, format!("cannot lock the batch directory {}: {e}", dir.display()), WRITABLE)
        }
    })
}

impl Batch {
    /// Starts the runs of one lane in plan order (trials trial-major), each as a task of its own once one of the lane's places
    /// is free, and waits for them all. `width` runs talk to their agents at once; with a prefetch, that
    /// many more provision and set up meanwhile, then wait for a turn (`Attempt::turns`).
    async fn dispatch(self: Arc<Self>, queue: Vec<usize>, width: usize) {
        let kinds: Vec<&str> = queue.iter().map(|i| self.planned(*i).1.spec.sandbox.kind()).collect();
        let prefetch = self.opts.prefetch.unwrap_or_else(|| default_prefetch(&kinds, width));
        let places = Arc::new(Semaphore::new(width + prefetch));
        let turns = (prefetch > 0).then(|| Arc::new(Semaphore::new(width)));
        let mut tasks = tokio::task::JoinSet::new();
        for index in queue {
            if self.entry(index).status != RunStatus::Pending {
                continue; // succeeded before (resuming)
            }
            let Ok(place) = places.clone().acquire_owned().await else { break };
            let batch = self.clone();
            let turns = turns.clone();
            tasks.spawn(async move {
                batch.run_one(index, turns.as_deref()).await;
                drop(place);
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                // A run's task panicked: its entry stays pending, which the exit code counts as infrastructure.
                self.console.error(&format!("error: a run's task ended abnormally: {e}"));
                self.write_failed.store(true, Ordering::SeqCst);
            }
        }
    }

    /// The plan and the run of unit `index`.
    fn planned(&self, index: usize) -> (&Plan, &PlannedRun) {
        let u = self.units[index];
        (&self.plans[u.plan], &self.plans[u.plan].runs[u.run])
    }

    /// One trial of a run (the run itself without trials), in its own folder, until its last attempt.
    async fn run_one(&self, index: usize, turns: Option<&Semaphore>) {
        let (_, r) = self.planned(index);
        let trial = self.units[index].trial;
        let label = run_label(&r.id, trial);
        if self.signals.interrupted() || (self.opts.fail_fast && self.failed.load(Ordering::SeqCst)) {
            return self
                .record(index, not_started(self.entry(index), "not started: the batch stopped before it got here"));
        }
        let line = self.console.run_line(&self.lead(&r.id, trial));
        let dir = match settings::report_dir(&r.spec, &r.id, &self.opts.out, &super::env) {
            Ok(dir) => trials::folder(&dir, trial),
            Err(problems) => {
                return self.fail_early(
                    index,
                    &line,
                    Failure::from(problems).hint("set the variable, or change `report.dir`"),
                );
            }
        };
        let claim = match Claim::take(&dir, &r.id, &self.opts.out) {
            Ok(c) => c,
            Err(f) => return self.fail_early(index, &line, f),
        };
        if let Some(refused) = self.budget_start(&label).await {
            if self.signals.interrupted() {
                return self.record(index, not_started(self.entry(index), "not started: the batch was interrupted"));
            }
            let mut e = self.entry(index);
            let (status, why) = self.refusal(refused, "not started");
            (e.status, e.end_reason, e.message) = (status, Some("budget".into()), Some(why));
            return self.record(index, e);
        }
        let first = claim.next_attempt();
        let (last, not_retried) = self.attempts(index, &claim, &line, turns).await;
        let counted = if self.opts.resume { 1 } else { first };
        let all = reports_on_disk(&claim.dir, counted);
        let refs: Vec<&RunReport> = all.iter().collect();
        line.say(&outcome::summary_line(&last.report, last.report_file.as_deref(), self.console.style));
        drop(line);
        let mut entry = RunSummary::ended(&last.report, &refs, Some(report_path(&self.opts.out, &claim.dir)));
        if let Some((status, why)) = not_retried {
            let failed = entry.message.take().unwrap_or_default();
            (entry.status, entry.end_reason) = (status, Some(status.as_str().to_string()));
            entry.message = Some(format!("{why} (attempt {} failed: {failed})", entry.attempts));
        }
        self.record(index, entry);
    }

    /// The attempts of one run: again after an infrastructure failure, while retries and money last. The
    /// last attempt's result, and why it was not retried when a retry was due but a signal or the
    /// budget stopped it (the run's status then says so).
    async fn attempts(
        &self,
        index: usize,
        claim: &Claim,
        line: &RunLine<'_>,
        turns: Option<&Semaphore>,
    ) -> (super::RunResult, Option<(RunStatus, String)>) {
        let (plan, r) = self.planned(index);
        let Unit { plan: plan_index, trial, .. } = self.units[index];
        let label = run_label(&r.id, trial);
        let retries = self.opts.retries.unwrap_or(r.spec.retries.max);
        let first = claim.next_attempt();
        let mut factor: Option<u8> = None;
        let mut number = first;
        loop {
            let attempt = Attempt {
                plan,
                planned: r,
                rehearsal: self.opts.rehearsals.get(plan_index).and_then(Option::as_ref),
                line,
                signals: &self.signals,
                dir: claim.attempt_dir(number),
                number,
                trial,
                label: &label,
                budget: self.budget.as_ref(),
                resource_factor: factor,
                batch_dir: &self.opts.out,
                ledger: &self.ledger,
                shared: &self.shared,
                turns,
                stop_starting: self.opts.fail_fast.then_some(&self.failed),
                delivering: if self.opts.no_deliver { Delivering::Off } else { Delivering::On(&self.pacing) },
            };
            let mut result = run::execute(&attempt).await;
            if let Some(b) = &self.budget {
                b.finish(&label, result.report.totals.cost);
            }
            // The run's page and the leak scan read the event log back: all of it must be on disk first.
            crate::report::disk::settled().await;
            disk::off_runtime(|| publish(claim, &mut result, line, self.signals.terminated()));
            if result.write_failed {
                self.write_failed.store(true, Ordering::SeqCst);
            }
            // Stopped before its first message by --fail-fast (no signal came): it did not start.
            if result.report.outcome.class == OutcomeClass::Interrupted
                && !self.signals.interrupted()
                && self.opts.fail_fast
                && self.failed.load(Ordering::SeqCst)
            {
                let why = "not started: a run of the batch failed while this one waited for its place (--fail-fast)";
                return (result, Some((RunStatus::NotStarted, why.into())));
            }
            let tries_left = number - first < retries;
            if !(result.report.outcome.retryable && tries_left) || self.signals.interrupted() {
                return (result, None);
            }
            factor = self.grown_factor(r, &result, factor);
            let wait = RetryPolicy::attempts(retries, r.spec.retries.backoff.0).backoff(number - first + 1);
            let why = result
                .report
                .outcome
                .message
                .as_deref()
                .map(crate::report::redact::first_line)
                .unwrap_or_else(|| "infrastructure".into());
            line.say(&format!("attempt {number} failed ({why}); attempt {} in {:.1}s", number + 1, wait.as_secs_f64()));
            if self.signals.cancel().sleep(wait).await {
                return (result, Some((RunStatus::Interrupted, "interrupted while waiting to retry".into())));
            }
            if let Some(refused) = self.budget_start(&label).await {
                return (result, Some(self.refusal(refused, "not retried")));
            }
            number += 1;
        }
    }

    /// Takes run `id`'s place in the batch's budget: waits while only the calls under way hold the money
    /// back; the refusal (`Refuse`, `NoPrice`) when the run may not start, `Refuse` also when ohrun was
    /// interrupted meanwhile.
    async fn budget_start(&self, id: &str) -> Option<Admission> {
        let budget = self.budget.as_ref()?;
        let mut cancel = self.signals.cancel();
        loop {
            match budget.try_start(id) {
                Admission::Send => return None,
                // Polled: a call under way lands (and frees its reservation) soon; a fifth of a second is soon enough.
                Admission::Wait => {
                    if cancel.sleep(Duration::from_millis(200)).await {
                        return Some(Admission::Refuse);
                    }
                }
                refused => return Some(refused),
            }
        }
    }

    /// A run's status and why, when the budget kept it from starting (`what`: "not started", "not retried").
    fn refusal(&self, refused: Admission, what: &str) -> (RunStatus, String) {
        let cap = self.budget.as_ref().map(Budget::cap).unwrap_or_default();
        match refused {
            Admission::NoPrice => (
                RunStatus::UsageError,
                format!(
                    "{what}: the model has no price on the agent-server, so the batch's budget (${cap}) cannot be kept"
                ),
            ),
            _ => (RunStatus::Budget, format!("{what}: the batch's budget (${cap}) was reached")),
        }
    }

    /// A Runtime API run that lacked resources asks for twice the resource factor (at most 8), when its
    /// job opted in.
    fn grown_factor(&self, r: &PlannedRun, result: &super::RunResult, now: Option<u8>) -> Option<u8> {
        let crate::job::model::Sandbox::Runtime(rt) = &r.spec.sandbox else { return now };
        if !r.spec.retries.grow_resource_factor || !result.report.outcome.lacked_resources {
            return now;
        }
        Some((now.unwrap_or(rt.resource_factor) * 2).min(8))
    }

    fn fail_early(&self, index: usize, line: &RunLine<'_>, f: Failure) {
        outcome::print_failure(line, &f);
        let mut e = self.entry(index);
        (e.status, e.end_reason, e.message) = (RunStatus::from_class(f.class), Some("report".into()), Some(f.message));
        self.record(index, e);
    }

    /// What leads the lines of run `id` (of its trial): its id (`id#K`), unless the batch has no other run.
    fn lead(&self, id: &str, trial: Option<u32>) -> String {
        if self.alone { String::new() } else { format!("[{}] ", run_label(id, trial)) }
    }

    fn entry(&self, index: usize) -> RunSummary {
        self.summary.lock().unwrap_or_else(|e| e.into_inner()).runs[index].clone()
    }

    /// A run ended: into the summary, onto disk, onto the console (and stdout with `--json`).
    fn record(&self, index: usize, entry: RunSummary) {
        if entry.status.class().is_some_and(|c| c != OutcomeClass::Succeeded) {
            self.failed.store(true, Ordering::SeqCst);
        }
        if self.opts.json {
            print_stdout(&json_line("run", serde_json::to_value(&entry).unwrap_or_default()));
        }
        let lead = self.lead(&entry.id, entry.trial);
        {
            let mut summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
            let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
            *tally = tally.with(&summary.runs[index], -1).with(&entry, 1);
            summary.runs[index] = entry;
        }
        self.show_progress(Some(&lead));
        self.rollups_due.notify_one();
    }

    /// Rewrites the rollups (summary.json, junit.xml) when runs ended: at once after a quiet spell, and
    /// in a burst of run ends once per gap (`ROLLUP_GAP_PER_RUN`) for all of them. Each rewrite is the
    /// whole file, written and fsynced: one per run end made a thousand-run batch O(N²) on disk.
    async fn write_rollups_when_due(self: Arc<Self>) {
        let runs = self.summary.lock().unwrap_or_else(|e| e.into_inner()).runs.len() as u32;
        let gap = (ROLLUP_GAP_PER_RUN * runs).min(MAX_ROLLUP_GAP);
        let mut last = Instant::now() - gap;
        loop {
            self.rollups_due.notified().await;
            tokio::time::sleep_until((last + gap).into()).await;
            self.write_rollups();
            last = Instant::now();
        }
    }

    /// Rewrites the rollups now.
    fn write_rollups(&self) {
        // A copy, written with the summary's lock released: run ends go on being recorded meanwhile. One
        // writer at a time, each with a copy newer than the last one's: the final rollups are never
        // overwritten by an older copy still being written.
        let _writing = self.rollups_writing.lock().unwrap_or_else(|e| e.into_inner());
        let summary = {
            let mut summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
            summary.recount(self.started.elapsed().as_millis() as u64);
            summary.clone()
        };
        if let Err(e) = disk::off_runtime(|| summary.write(&self.opts.out)) {
            self.write_failed.store(true, Ordering::SeqCst);
            self.console.error(&format!("error: cannot write the batch summary in {}: {e}", self.opts.out.display()));
        }
    }

    /// Moves the overall bar (`ended`: the lead of the run that just ended).
    fn show_progress(&self, ended: Option<&str>) {
        let t = *self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let done = t.runs - t.pending;
        self.console.overall(done, done - t.not_failed, t.pending, t.cost, ended);
    }

    /// The last word: the summary's final form, the CI rollups, the exit code.
    fn finish(&self) -> i32 {
        self.write_rollups();
        self.show_progress(None);
        let summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        let ours_from = summary.publish_to_github().unwrap_or_else(|e| {
            self.console.error(&format!("warning: {e}"));
            None
        });
        if let Err(e) = html::write_batch_page(&self.opts.out, &summary) {
            self.console.error(&format!("warning: cannot write {}/{}: {e}", self.opts.out.display(), html::HTML_FILE));
        }
        let mut worst = summary.worst_class();
        if self.rollups_leak(ours_from) {
            worst = worst.max(OutcomeClass::Failed);
        }
        if self.signals.interrupted() {
            worst = worst.max(OutcomeClass::Interrupted);
        }
        if self.write_failed.load(Ordering::SeqCst) {
            worst = worst.max(OutcomeClass::Infrastructure);
        }
        let code = ExitCode::for_class(worst, self.signals.terminated());
        if self.opts.json {
            let mut totals = serde_json::to_value(&summary.totals).unwrap_or_default();
            totals["batch"] = serde_json::json!(self.opts.out.display().to_string());
            totals["exit_code"] = serde_json::json!(code);
            if let Some(v) = &summary.verification {
                totals["verification"] = serde_json::json!(v.batch);
            }
            print_stdout(&json_line("summary", totals));
        }
        if summary.runs.len() > 1 {
            self.console.say(&trials::batch_line(&summary, &self.opts.out.join(SUMMARY_FILE)));
        }
        code
    }
}

impl Batch {
    /// Releases the servers the runs shared, now that no run holds them, into the summary and onto the
    /// console.
    async fn release_shared(&self) {
        for ended in self.shared.release_all().await {
            let release_error = match &ended.released {
                Released::Failed(e) => {
                    self.console
                        .error(&format!("error: the shared agent-server {} could not be stopped: {e}", ended.name));
                    self.console.error("hint: it may still be running: `ohrun gc` finds it");
                    Some(e.clone())
                }
                Released::Kept => {
                    self.console.say(&format!("kept the shared agent-server {}: {}", ended.name, ended.attach_hint));
                    None
                }
                _ => None,
            };
            let mut summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
            summary.shared_sandboxes.push(SharedSandbox {
                name: ended.name,
                id: ended.record.id,
                runs: ended.runs,
                disposition: ended.released.disposition().to_string(),
                release_error,
            });
        }
    }

    /// The leak scan of the batch's own files (batch.json, summary.json, junit.xml, the GitHub step
    /// summary): true, with an error on the console, when a secret is in one of them.
    /// (`step_summary_from`: where ohrun's part of the step summary begins; what is before it is not ours.)
    fn rollups_leak(&self, step_summary_from: Option<(PathBuf, usize)>) -> bool {
        let mut files: Vec<(PathBuf, usize)> = [BATCH_FILE, SUMMARY_FILE, JUNIT_FILE, html::HTML_FILE]
            .iter()
            .map(|f| (self.opts.out.join(f), 0))
            .collect();
        // The shared servers' logs too (`sandbox.share: batch`).
        files.extend(leak::files_under(&self.opts.out.join("shared")).into_iter().map(|f| (f, 0)));
        files.extend(step_summary_from);
        let leaks = leak::scan_from(&files);
        for l in &leaks {
            self.console.error(&format!("error: secret leak: a secret value was found in {l}"));
        }
        !leaks.is_empty()
    }
}

fn not_started(mut e: RunSummary, why: &str) -> RunSummary {
    (e.status, e.end_reason, e.message) = (RunStatus::NotStarted, Some("not_started".into()), Some(why.to_string()));
    e
}
