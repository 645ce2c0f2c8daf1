//! The steps of a conversation, in order: each step's message, the agent's runs until it is done
//! (`step.rs`), answers to its questions when the job says so, the step's costs, then what happens after
//! it (its diff, its checks); a step that fails ends the run there.

use super::SandboxProbe;
use super::conversation::{Conversation, Progress, bounded_if_stopping, message_text};
use super::step::{Limits, Verdict};
use crate::agent::diff::Snapshots;
use crate::job::model::{JobSpec, OnQuestion, Step};
use crate::report::writer::now_rfc3339;
use crate::report::{EndReason, StepError, StepReport, Totals};
use std::path::Path;
use std::time::Instant;

/// Checks run right after a step (`steps[].checks`): their results, and whether the run stops there (a
/// required check with `on_fail: stop` failed, or could not run).
pub trait StepChecks: Sync {
    fn after<'a>(
        &'a self,
        step: &'a crate::job::model::Step,
        report: &'a StepReport,
    ) -> super::BoxFuture<'a, (Vec<crate::report::CheckResult>, bool)>;
}

/// What happens after each step that finished: its diff, then its checks.
#[derive(Default)]
pub struct AfterStep<'a> {
    pub diffs: Option<&'a Snapshots<'a>>,
    pub checks: Option<&'a dyn StepChecks>,
}

/// The conversation part of a run.
pub struct Outcome {
    pub steps: Vec<StepReport>,
    pub totals: Totals,
}

impl Conversation<'_> {
    /// Runs the steps in order and returns the reports of those that ran; a step that fails (error, stuck,
    /// timeout, budget, interrupt) ends the run there.
    pub async fn run_steps(
        &mut self,
        spec: &JobSpec,
        job_dir: &Path,
        limits: &Limits<'_>,
        progress: &dyn Progress,
        probe: &dyn SandboxProbe,
        then: &AfterStep<'_>,
    ) -> Outcome {
        let mut steps = Vec::new();
        // The conversation was just created (`Conversation::start`): it has spent nothing yet.
        let mut before = Totals::default();
        // `before` is what the server said after the last step, whose run the server said was over.
        let mut settled = false;
        let total = spec.steps.len();
        for (i, step) in spec.steps.iter().enumerate() {
            let text = message_text(&step.message, job_dir);
            let mut report =
                StepReport { index: i + 1, message: text.clone(), started_at: now_rfc3339(), ..Default::default() };
            let started = Instant::now();
            let events_before = self.event_count;
            progress.step_started(&report);
            self.run_step(step, &text, &mut report, total, limits, (progress, &before), probe).await;
            report.ended_at = Some(now_rfc3339());
            report.duration_ms = Some(started.elapsed().as_millis() as u64);
            report.event_count = self.event_count - events_before;
            // After the last step nothing changes the tree before the final patch, unless its checks run
            // commands: then the patch is taken on its own, after them.
            let last = i + 1 == total && step.checks.is_empty();
            let (read, diff) = self.costs_and_diff(&report, then.diffs, last, limits.run_deadline).await;
            report.diff = diff;
            // Never less than the step's stats frames showed: a failed read must not make money unspent.
            settled = read.is_some() && report.end_reason == EndReason::Finished;
            let after = read.unwrap_or_else(|| before.clone()).at_least(&self.live);
            report.cost = after.cost.saturating_sub(before.cost);
            report.tokens = after.tokens.minus(before.tokens);
            report.llm_calls = after.llm_calls.saturating_sub(before.llm_calls);
            before = after;
            let reason = report.end_reason;
            let ok = matches!(reason, EndReason::Finished) || (reason == EndReason::Question && report.error.is_none());
            let mut stop = false;
            if let Some(checks) = then.checks
                && ok
                && !step.checks.is_empty()
                && !self.cancel.is_set()
            {
                (report.checks, stop) = checks.after(step, &report).await;
                report.stopped_by_checks = stop;
            }
            progress.step_done(&report, total);
            steps.push(report);
            if !ok || stop || self.cancel.is_set() {
                break;
            }
        }
        // Late events (and late stats) are never lost: one last reconcile and the authoritative totals.
        let since = self.last_ts.clone();
        let cancel = self.cancel.clone();
        let late = bounded_if_stopping(&cancel, self.reconcile_checked(since)).await.flatten();
        // After a finished run that nothing followed, the last step's read is the total: no LLM call was
        // in flight (a request less per run, waited for in a busy server's queue).
        let read = if settled && late.is_some_and(|events| events.is_empty()) {
            Some(before.clone())
        } else {
            bounded_if_stopping(&self.cancel, self.stats()).await.flatten()
        };
        let mut totals = read.unwrap_or(before).at_least(&self.live);
        totals.events = self.event_count;
        Outcome { steps, totals }
    }

    /// The conversation's costs after a step, and what the step changed (not once ohrun is stopping, nor
    /// on a server that is gone), taken at once: two requests side by side, not one behind the other in a
    /// busy server's queue.
    async fn costs_and_diff(
        &self,
        report: &StepReport,
        diffs: Option<&Snapshots<'_>>,
        last: bool,
        deadline: Option<Instant>,
    ) -> (Option<Totals>, Option<crate::report::DiffInfo>) {
        let diffs = diffs.filter(|_| !self.cancel.is_set() && report.end_reason != EndReason::Lost);
        let (name, mut cancel) = (report.index.to_string(), self.cancel.clone());
        let diff = async {
            match diffs {
                Some(s) => Some(s.take(&name, last, deadline, &mut cancel).await),
                None => None,
            }
        };
        let (read, diff) = tokio::join!(bounded_if_stopping(&self.cancel, self.stats()), diff);
        (read.flatten(), diff)
    }

    /// One step: its message, then the agent's runs until it is done (answering questions when the job
    /// says so).
    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &mut self,
        step: &Step,
        text: &str,
        report: &mut StepReport,
        total: usize,
        limits: &Limits<'_>,
        (progress, before): (&dyn Progress, &Totals),
        probe: &dyn SandboxProbe,
    ) {
        let started = Instant::now();
        let step_deadline = started + step.timeout.0;
        let deadline = limits.run_deadline.map_or(step_deadline, |r| r.min(step_deadline));
        let ctx = super::step::StepContext {
            index: report.index,
            total,
            started,
            deadline,
            step,
            limits,
            progress,
            before,
            probe,
        };
        let mut message = text.to_string();
        loop {
            let verdict: Verdict = self.one_run(&message, &ctx).await;
            report.final_message = verdict.final_message.clone().or(report.final_message.take());
            report.execution_status = verdict.status.clone();
            report.completion_latency_ms = verdict.latency_ms;
            let question =
                verdict.reason == EndReason::Finished && verdict.text_reply.as_deref().is_some_and(is_question);
            if !question {
                report.end_reason = verdict.reason;
                report.error = verdict.error;
                return;
            }
            if let OnQuestion::Reply { text, max_replies } = &step.on_question
                && report.replies < *max_replies
            {
                report.replies += 1;
                message = text.clone();
                continue;
            }
            // `on_question: fail` makes the question an error of the step.
            report.end_reason = EndReason::Question;
            report.error = matches!(step.on_question, OnQuestion::Fail).then(|| StepError {
                code: "QuestionForUser".into(),
                detail: verdict.text_reply.clone().unwrap_or_default(),
            });
            return;
        }
    }
}

/// A plain-text turn that ends in a question asks the user something.
fn is_question(text: &str) -> bool {
    text.trim_end().ends_with('?')
}
