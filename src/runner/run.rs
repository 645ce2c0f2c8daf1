//! One attempt of a run, start to finish: settings, its evidence directory, provisioning (never abandoned
//! half-way: an interrupt is seen at its safe points, and whatever was created is released), setup, the
//! conversation, release, and `run.json` on every exit path. A failure at any phase is a [`Failure`]
//! whose class decides the exit code and whether another attempt may help.

use super::RunResult;
use super::attempt::{Attempt, Run};
use super::checkpoint::{Checkpoint, Checkpointed};
use super::outcome::{classify, finish, keeps, new_report, record_sandbox, worst};
use super::shared::{Lease, Starter};
use crate::agent::Limits;
use crate::agent::conversation::Conversation;
use crate::agent::diff::Snapshots;
use crate::agent::setup;
use crate::backend::install::AGENT_SERVER_VERSION;
use crate::backend::{self, Backend, Ready, Released};
use crate::console::StepProgress;
use crate::error::Failure;
use crate::job::model::{JobSpec, Sandbox, Share};
use crate::rehearse::Rehearsal;
use crate::report::writer::ReportWriter;
use crate::report::{OutcomeClass, RunReport};
use crate::settings::{self, RehearsalLlm, RunSettings};
use std::path::Path;
use std::time::{Duration, Instant};

/// One attempt; never panics on server or network trouble and always tries to write its `run.json`.
pub(super) async fn execute(a: &Attempt<'_>) -> RunResult {
    let started = Instant::now();
    let mut report = new_report(a.plan, a.planned, a.rehearsal.is_some(), a.number);
    report.run.trial = a.trial;
    a.line.activity(&format!("starting ({} sandbox)", a.planned.spec.sandbox.kind()));
    let run = Run {
        attempt: a,
        job_dir: a.plan.file.parent().map(Path::to_path_buf).unwrap_or_default(),
        run_deadline: a.planned.spec.limits.timeout.map(|t| started + t.0),
        checkpoint: Checkpoint::new(a.dir.clone(), &report),
        ledger: crate::ledger::Slot::new(a.ledger, a.label, &a.dir, Some(a.batch_dir)).watched_by(a.signals.watcher()),
    };
    // The first checkpoint, at once: the attempt's folder never stays without a run.json, however soon
    // ohrun is killed — and writing it is the check that the report can be written at all.
    let writable = run.checkpoint.try_save(&report);
    let outcome = run.attempt(&mut report, writable).await;
    finish(report, outcome, &a.dir, started, a.line, a.signals)
}

impl Run<'_> {
    pub(super) fn spec(&self) -> &JobSpec {
        &self.attempt.planned.spec
    }

    pub(super) fn say(&self, line: &str) {
        self.attempt.line.say(line);
    }

    /// `writable`: whether the first checkpoint could be written (nothing is started if not).
    async fn attempt(&self, report: &mut RunReport, writable: std::io::Result<()>) -> Result<(), Failure> {
        // The rehearsal endpoint, if any, lives as long as this attempt.
        let rehearsal = match self.attempt.rehearsal {
            Some(script) => {
                Some(Rehearsal::start(script.clone(), std::net::Ipv4Addr::LOCALHOST.into()).await.map_err(|e| {
                    Failure::new(OutcomeClass::Infrastructure, format!("cannot start the rehearsal endpoint: {e}"))
                })?)
            }
            None => None,
        };
        let settings = self.resolve(rehearsal.as_ref())?;
        writable.map_err(|e| self.unwritable(e))?;
        let mut writer = ReportWriter::create(&self.attempt.dir).map_err(|e| self.unwritable(e))?;
        let mut own = None;
        let mut lease = None;
        let provisioned = if self.shares_server() {
            self.lease(&settings, report).await.map(|(l, ready)| {
                lease = Some(l);
                ready
            })
        } else {
            let mut backend = settings.sandbox.clone().backend();
            let ready = self.provision(&mut *backend, &settings.secret_names, report).await;
            own = Some(backend);
            ready
        };
        self.checkpoint.save(report);
        let result = match &provisioned {
            Ok(ready) => {
                let probe = lease.as_ref().map(Lease::backend).or(own.as_deref()).expect("a sandbox was made");
                self.with_sandbox(ready, probe, &settings, &mut writer, report).await
            }
            Err(e) => Err(Failure::from(e.clone())),
        };
        if let Ok(ready) = &provisioned {
            Box::pin(self.collect_artifacts(ready, report, result.is_ok())).await;
        }
        self.checkpoint.save(report);
        let class = result.as_ref().err().map_or(OutcomeClass::Succeeded, |f| f.class);
        let keep = provisioned.is_ok() && keeps(self.spec().cleanup, class);
        let released = match (own, lease) {
            (Some(mut backend), _) => {
                let working_dir = provisioned.as_ref().map(|r| r.working_dir.clone()).unwrap_or_default();
                self.release(&mut *backend, keep, &working_dir, report).await
            }
            (None, Some(lease)) => {
                if keep {
                    lease.keep();
                }
                report.sandbox.disposition = Released::Shared.disposition().into();
                Released::Shared
            }
            (None, None) => Released::NothingToRelease,
        };
        self.attempt.signals.released(self.attempt.label);
        drop(rehearsal);
        let result = worst(result, released);
        Box::pin(self.deliver(&settings, report, result)).await
    }

    fn resolve(&self, rehearsal: Option<&Rehearsal>) -> Result<RunSettings, Failure> {
        let reh_llm = rehearsal.map(|r| RehearsalLlm { base_url: r.base_url("127.0.0.1") });
        let mut resolved = settings::resolve(self.spec(), &self.job_dir, reh_llm.as_ref(), &super::env);
        if let Ok(s) = &mut resolved {
            let a = self.attempt;
            super::trials::for_trial(s, &a.planned.id, a.trial, a.number);
        }
        if let (Ok(s), Some(factor)) = (&mut resolved, self.attempt.resource_factor)
            && let backend::Settings::Runtime(rt) = &mut s.sandbox
        {
            rt.resource_factor = factor;
        }
        resolved.map_err(|problems| {
            let about_llm = problems.problems.iter().any(|p| p.contains("`llm."));
            let hint = if about_llm && rehearsal.is_none() {
                "set the variables in the environment, or try the job with `--rehearse` (a scripted LLM: no key, no spend)"
            } else {
                "set the variables in the environment"
            };
            Failure::from(problems).hint(hint)
        })
    }

    fn unwritable(&self, e: std::io::Error) -> Failure {
        Failure::new(
            OutcomeClass::Infrastructure,
            format!("the report directory {} cannot be written: {e}", self.attempt.dir.display()),
        )
        .hint("free some space or fix its permissions; nothing was started")
    }

    async fn provision(
        &self,
        backend: &mut dyn Backend,
        hide_env: &[String],
        report: &mut RunReport,
    ) -> Result<Ready, backend::Error> {
        let kind = self.spec().sandbox.kind();
        self.attempt.line.activity(&format!("provisioning the {kind} sandbox"));
        let progress = |line: &str| self.say(line);
        let recorded = |record| self.checkpoint.sandbox_recorded(record);
        let ctx = backend::Context {
            run_id: &self.attempt.planned.id,
            job: &self.spec().name,
            report_dir: &self.attempt.dir,
            hide_env,
            run_deadline: self.run_deadline,
            cancel: self.attempt.signals.cancel(),
            progress: &progress,
            ledger: &self.ledger,
            recorded: &recorded,
        };
        let started = Instant::now();
        let ready = backend.provision(&ctx).await;
        record_sandbox(report, backend);
        if let Ok(ready) = &ready {
            tracing::info!("{kind} sandbox ready: agent-server at {}", ready.client.base_url());
            self.record_ready(report, ready, started);
        }
        ready
    }

    /// The server is ready (`started`: when this run began to wait for it): into the report and onto the
    /// console.
    fn record_ready(&self, report: &mut RunReport, ready: &Ready, started: Instant) {
        report.sandbox.agent_server_url = Some(ready.client.base_url().to_string());
        report.sandbox.agent_server_version = ready.server_version();
        report.sandbox.working_dir = Some(ready.working_dir.clone());
        report.sandbox.provision_ms = Some(started.elapsed().as_millis() as u64);
        report.sandbox.disposition = "provisioned".into();
        self.say(&format!(
            "agent-server {} ready in {:.1}s; working dir {}",
            report.sandbox.agent_server_version.as_deref().unwrap_or("?"),
            started.elapsed().as_secs_f64(),
            ready.working_dir
        ));
    }

    /// Everything that needs the ready server: checks, setup, the conversation.
    async fn with_sandbox(
        &self,
        ready: &Ready,
        backend: &dyn Backend,
        settings: &RunSettings,
        writer: &mut ReportWriter,
        report: &mut RunReport,
    ) -> Result<(), Failure> {
        self.check_server(ready, report)?;
        // Without a clone to ship into it first, the base snapshot's command makes the working directory.
        let cloning = settings.repo.is_some();
        if cloning || !self.spec().report.diffs {
            self.make_working_dir(ready).await?;
        }
        // Before the diffs' base snapshot: the clone is where the run starts, not what setup changed.
        self.bring_repo(ready, settings, report).await?;
        let (snapshots, head) = match self.snapshots(ready, !cloning, report).await? {
            Some((s, head)) => (Some(s), Some(head)),
            None => (None, None),
        };
        let result =
            self.set_up_and_converse(ready, backend, settings, writer, report, (snapshots.as_ref(), head)).await;
        // Already removed when the run got to its end; not when it stopped before.
        if let Some(s) = snapshots {
            s.remove().await;
        }
        result
    }

    /// The base snapshot of the working directory for the diffs (`report.diffs`), and the commit its
    /// repository is at (taken in the same command); None when they are off or the sandbox cannot take
    /// them (the report says why). `make_working_dir`: its command makes the working directory first;
    /// when it fails, the directory is made on its own, and a failure to is the run's.
    async fn snapshots<'r>(
        &self,
        ready: &'r Ready,
        make_working_dir: bool,
        report: &mut RunReport,
    ) -> Result<Option<(Snapshots<'r>, Option<String>)>, Failure> {
        if !self.spec().report.diffs {
            return Ok(None);
        }
        let mut cancel = self.attempt.signals.cancel();
        let (id, dir, deadline) = (&self.attempt.planned.id, &self.attempt.dir, self.run_deadline);
        let at = (ready.working_dir.as_str(), make_working_dir);
        match Snapshots::start(&ready.client, at, id, dir, deadline, &mut cancel).await {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                if make_working_dir {
                    self.make_working_dir(ready).await?;
                }
                report.warnings.push(format!("no workspace diffs: {e}"));
                Ok(None)
            }
        }
    }

    /// Setup (and what it changed), a place to talk to the agent, the conversation. `start_head`: the
    /// commit the working directory was at, when the base snapshot's command told it (`Some(None)`: none).
    // Long on purpose: the phases of a provisioned sandbox in their order, each with the report write
    // and the interrupt check that must follow it; every phase's body is already a method.
    async fn set_up_and_converse(
        &self,
        ready: &Ready,
        backend: &dyn Backend,
        settings: &RunSettings,
        writer: &mut ReportWriter,
        report: &mut RunReport,
        (snapshots, start_head): (Option<&Snapshots<'_>>, Option<Option<String>>),
    ) -> Result<(), Failure> {
        // The cloned repository's base commit, else the head the base snapshot saw, else asked now.
        let cloned = report.repo.as_ref().and_then(|r| r.base_commit.clone());
        let early_base = match (cloned, start_head) {
            (Some(b), _) => Some(b),
            (None, Some(head)) => head,
            (None, None) => self.start_commit(ready).await,
        };
        let setup = self.setup(ready, settings, report).await;
        let mut cancel = self.attempt.signals.cancel();
        // No setup commands, nothing for a setup diff to see (one snapshot less).
        let ran_setup = !settings.setup.is_empty();
        let setup_diff = async {
            match snapshots {
                Some(s) if ran_setup => Some(s.take_with_head("setup", false, self.run_deadline, &mut cancel).await),
                _ => None,
            }
        };
        if let Err(f) = &setup {
            report.setup_diff = setup_diff.await.map(|(diff, _)| diff);
            self.setup_failed(report, f);
            return setup;
        }
        // What setup changed is taken while the conversation is made: making it changes nothing in the
        // working directory, and the agent acts only on the first message, sent after both.
        let (taken, opened) = tokio::join!(setup_diff, self.open_conversation(ready, settings, writer, report));
        let head_after_setup = taken.and_then(|(diff, head)| {
            report.setup_diff = Some(diff);
            head
        });
        let (_place, waited, mut conv) = opened?;
        // The commit the final patch is taken against: before setup, or after it when setup made the
        // repository (told by the setup diff's command when there was one).
        let base = match (early_base, head_after_setup) {
            (Some(b), _) => Some(b),
            (None, Some(head)) => head,
            (None, None) if ran_setup => self.start_commit(ready).await,
            (None, None) => None,
        };
        if let Some(s) = snapshots {
            s.fold_patch(base.clone());
        }
        report.conversation_id = Some(conv.id.clone());
        report.notes.push(
            "title generation (autotitle) is off, so every LLM call belongs to a step and the costs are complete"
                .into(),
        );
        self.checkpoint.save(report);
        let cancel = self.attempt.signals.cancel();
        let console = StepProgress { line: self.attempt.line, cancel: &cancel };
        let progress = Checkpointed { inner: &console, checkpoint: &self.checkpoint };
        self.attempt.line.activity(&format!("step 1/{}", self.spec().steps.len()));
        let limits = Limits {
            run_deadline: self.run_deadline.map(|d| d + waited),
            max_cost: self.spec().limits.max_cost,
            batch: self.attempt.budget.map(|b| b as &dyn crate::agent::SharedBudget),
            run_id: self.attempt.label,
            price_named: settings.llm.input_cost_per_token.is_some() && settings.llm.output_cost_per_token.is_some(),
            max_iterations: self.spec().agent.max_iterations,
        };
        let step_checker = super::verifying::StepChecker {
            checker: self.checker(settings, backend, "verify", crate::money::Usd::ZERO),
            target: crate::verify::Target { client: &ready.client, working_dir: &ready.working_dir },
            attempt_dir: &self.attempt.dir,
            spent: std::sync::Mutex::new(crate::money::Usd::ZERO),
        };
        let after = crate::agent::steps::AfterStep {
            diffs: snapshots,
            checks: Some(&step_checker as &dyn crate::agent::steps::StepChecks),
        };
        let outcome = conv.run_steps(self.spec(), &self.job_dir, &limits, &progress, backend, &after).await;
        // Steps that ran replace their `not_run` entries; the rest stay as they were listed.
        for step in outcome.steps {
            let i = step.index - 1;
            report.steps[i] = step;
        }
        report.totals = outcome.totals;
        let mut result = classify(report);
        conv.settle_evidence().await;
        if let Some(e) = conv.evidence_error.take()
            && result.as_ref().err().is_none_or(|f| f.class < OutcomeClass::Infrastructure)
        {
            result = Err(Failure::new(OutcomeClass::Infrastructure, format!("the event log is incomplete: {e}")));
        }
        // Boxed, like the other once-a-run phases (artifacts, delivery): what a phase's future holds is then
        // allocated while it runs, instead of making every run's task as large as its largest phase for its
        // whole life (13 KB of a run task's 23 KB).
        let diffs = (base.as_deref(), snapshots);
        let result = Box::pin(self.after_steps((ready, backend, settings), diffs, report, result)).await;
        // A kept sandbox keeps its conversation too, so it can be inspected or continued.
        let class = result.as_ref().err().map_or(OutcomeClass::Succeeded, |f| f.class);
        let close = async {
            if !keeps(self.spec().cleanup, class)
                && let Err(e) = conv.close().await
            {
                tracing::warn!("deleting the conversation failed: {e}");
            }
        };
        // The snapshots are done with: removed while the conversation is deleted, not after it.
        let remove = async {
            if let Some(s) = snapshots {
                s.remove().await;
            }
        };
        tokio::join!(close, remove);
        result
    }

    /// A place to talk to the agent (`--prefetch`: waited for) and the conversation, created and followed.
    async fn open_conversation<'w>(
        &'w self,
        ready: &'w Ready,
        settings: &RunSettings,
        writer: &'w mut ReportWriter,
        report: &mut RunReport,
    ) -> Result<(Option<tokio::sync::SemaphorePermit<'w>>, Duration, Conversation<'w>), Failure> {
        let (place, waited) = self.wait_for_place(report).await?;
        self.attempt.line.activity("starting the conversation");
        let conv = Conversation::start(
            &ready.client,
            (self.spec(), settings),
            &ready.working_dir,
            self.attempt.budget.is_some(),
            writer,
            self.attempt.signals.cancel(),
        )
        .await?;
        Ok((place, waited, conv))
    }

    /// With `--prefetch`: waits, provisioned and set up, for one of the batch's places to talk to the
    /// agent (held until the attempt ends). How long it waited does not count against `limits.timeout`.
    async fn wait_for_place(
        &self,
        report: &mut RunReport,
    ) -> Result<(Option<tokio::sync::SemaphorePermit<'_>>, Duration), Failure> {
        let Some(turns) = self.attempt.turns else { return Ok((None, Duration::ZERO)) };
        let started = Instant::now();
        self.attempt.line.activity("ready; waiting for a place (--jobs)");
        let mut cancel = self.attempt.signals.cancel();
        let place = tokio::select! {
            place = turns.acquire() => place.ok(),
            _ = cancel.wait() => None,
        };
        let Some(place) = place else {
            return Err(Failure::new(OutcomeClass::Interrupted, "interrupted while waiting for a place".to_string()));
        };
        let waited = started.elapsed();
        report.sandbox.waited_for_place_ms = Some(waited.as_millis() as u64);
        if self.attempt.stop_starting.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst)) {
            let why = "not started: a run of the batch failed while this one waited for its place (--fail-fast)";
            return Err(Failure::new(OutcomeClass::Interrupted, why.to_string()));
        }
        Ok((Some(place), waited))
    }

    /// The server's version (a warning when it is not the one ohrun was tested with) and tool names.
    fn check_server(&self, ready: &Ready, report: &mut RunReport) -> Result<(), Failure> {
        if let Some(version) = ready.server_version()
            && version != AGENT_SERVER_VERSION
        {
            let warning = format!(
                "the agent-server is version {version}; ohrun {} was tested with {AGENT_SERVER_VERSION}",
                env!("CARGO_PKG_VERSION")
            );
            self.attempt.line.error(&format!("warning: {warning}"));
            report.warnings.push(warning);
        }
        let (Some(wanted), Some(usable)) = (&self.spec().agent.tools, ready.usable_tools()) else { return Ok(()) };
        let unknown: Vec<&str> = wanted.iter().filter(|t| !usable.contains(t)).map(String::as_str).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(Failure::new(
            OutcomeClass::UsageError,
            format!("the agent-server has no tool named {}; it has: {}", unknown.join(", "), usable.join(", ")),
        )
        .hint("fix `agent.tools`; no LLM call was made"))
    }

    /// The working directory may not exist yet (a remote server creates it with the conversation).
    async fn make_working_dir(&self, ready: &Ready) -> Result<(), Failure> {
        let mut cancel = self.attempt.signals.cancel();
        let mkdir = format!("mkdir -p {}", setup::shell_quote(&ready.working_dir));
        match setup::run_command(&ready.client, &mkdir, "/", Duration::from_secs(60), &mut cancel).await {
            Ok(out) if out.exit_code == 0 => Ok(()),
            // The job's `working_dir` is one the server's user cannot make: no attempt would do better.
            Ok(out) => Err(Failure::new(
                OutcomeClass::UsageError,
                format!("cannot make the working directory {}: {}", ready.working_dir, out.stderr.trim()),
            )
            .hint("set `sandbox.working_dir` to a directory the agent-server's user may create")),
            Err((_, e)) => {
                let f = Failure::from(e);
                Err(if f.class == OutcomeClass::Interrupted {
                    f
                } else {
                    f.hint("the agent-server could not prepare the working directory")
                })
            }
        }
    }

    async fn setup(&self, ready: &Ready, settings: &RunSettings, report: &mut RunReport) -> Result<(), Failure> {
        let client = &ready.client;
        let total = settings.setup.len();
        if total > 0 {
            self.attempt.line.activity(&format!("running {total} setup command{}", if total == 1 { "" } else { "s" }));
        }
        let mut on_result = |r: &crate::report::SetupResult| {
            let status = match (r.interrupted, r.exit_code) {
                (true, _) => "interrupted".to_string(),
                (_, 0) => "ok".to_string(),
                (_, code) => format!("exit {code}"),
            };
            self.say(&format!("setup: {} → {status} ({:.1}s)", r.command, r.duration_ms as f64 / 1000.0));
            self.checkpoint.setup_done(r);
        };
        let commands = self.bounded_by_run_deadline(&settings.setup);
        let done =
            setup::run_setup(client, &commands, &ready.working_dir, &self.attempt.signals.cancel(), &mut on_result)
                .await;
        let failed = done.failed().map(|r| {
            // Redacted whole before its last line is taken: a multi-line secret would leave its last line.
            let stderr = crate::report::redact::apply(&r.stderr);
            let last = stderr.lines().last().unwrap_or("").trim().to_string();
            let detail = if last.is_empty() { String::new() } else { format!(": {last}") };
            Failure::new(
                OutcomeClass::Failed,
                format!("setup command `{}` exited with {}{detail}", r.command, r.exit_code),
            )
        });
        report.setup = done.results;
        if let Some(e) = done.error {
            return Err(Failure::from(e));
        }
        failed.map_or(Ok(()), Err)
    }

    /// Setup commands may not run past the run's `limits.timeout`.
    fn bounded_by_run_deadline(
        &self,
        commands: &[crate::agent::setup::SetupCommand],
    ) -> Vec<crate::agent::setup::SetupCommand> {
        let left = self.run_deadline.map(|d| d.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)));
        commands
            .iter()
            .map(|c| crate::agent::setup::SetupCommand {
                timeout: left.map_or(c.timeout, |l| c.timeout.min(l)),
                ..c.clone()
            })
            .collect()
    }

    async fn release(
        &self,
        backend: &mut dyn Backend,
        keep: bool,
        working_dir: &str,
        report: &mut RunReport,
    ) -> Released {
        let hint = backend.attach_hint(working_dir);
        self.attempt.line.activity("releasing the sandbox");
        let released = backend.release(keep).await;
        record_sandbox(report, backend);
        report.sandbox.disposition = released.disposition().into();
        match &released {
            Released::Kept => self.say(&format!("kept the sandbox: {hint}")),
            Released::Failed(e) => report.sandbox.release_error = Some(e.clone()),
            _ => {}
        }
        // A lost create's candidates stay in the ledger too: `gc` names them (it never removes them).
        if !report.sandbox.candidates.is_empty() {
            self.ledger.update(|l| l.candidates = report.sandbox.candidates.clone());
        } else if !matches!(released, Released::Failed(_)) {
            self.ledger.close(released.disposition());
        }
        released
    }

    /// Whether this run uses the batch's shared server (`sandbox.share: batch`).
    fn shares_server(&self) -> bool {
        matches!(&self.spec().sandbox, Sandbox::Local(l) if l.share == Share::Batch)
    }

    /// A lease on the batch's shared server (started now if it is not running), and the server as this
    /// run sees it: in the report as if this run had provisioned it, with the time it waited for it.
    async fn lease(&self, settings: &RunSettings, report: &mut RunReport) -> Result<(Lease, Ready), backend::Error> {
        self.attempt.line.activity("waiting for the batch's shared agent-server");
        let progress = |line: &str| self.say(line);
        let starter = Starter {
            job: &self.spec().name,
            hide_env: &settings.secret_names,
            run_deadline: self.run_deadline,
            cancel: self.attempt.signals.cancel(),
            progress: &progress,
        };
        let started = Instant::now();
        let lease = self.attempt.shared.acquire(&settings.sandbox, &starter).await?;
        record_sandbox(report, lease.backend());
        report.sandbox.shared = Some(lease.dir().display().to_string());
        let ready = self.ready_on_shared(&lease, settings)?;
        self.record_ready(report, &ready, started);
        Ok((lease, ready))
    }

    /// The shared server, as this run sees it: its own working directory (the configured one, or a fresh
    /// `workspace/` in the attempt's directory, as a server of its own would have).
    fn ready_on_shared(&self, lease: &Lease, settings: &RunSettings) -> Result<Ready, backend::Error> {
        let backend::Settings::Local(local) = &settings.sandbox else { unreachable!("only local servers are shared") };
        let dir = backend::local::workspace(local.working_dir.as_deref(), &self.attempt.dir)?;
        let shared = lease.ready();
        Ok(Ready {
            client: shared.client.clone(),
            working_dir: dir.display().to_string(),
            server_info: shared.server_info.clone(),
        })
    }
}
