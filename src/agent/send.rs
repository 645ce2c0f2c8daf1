//! Sending a step's message and starting the agent's run: the message exactly once (after an unclear
//! failure, it is looked for among the stored messages before it is sent again), the run started with
//! retries, the provider asked whether the sandbox is still there when the server does not answer, and
//! a server at its limit of runs at once waited out. `step.rs` calls these, then waits for the end.

use super::Probe;
use super::conversation::Conversation;
use super::step::{StepContext, Verdict};
use crate::net::retry::{Failure, Retry, RetryPolicy};
use crate::report::EndReason;
use serde_json::Value;
use std::time::Duration;

/// How often a message or a run is tried, and the waits between, when the server answers unclearly.
const ESSENTIAL: RetryPolicy = RetryPolicy::AGENT_ESSENTIAL;

impl Conversation<'_> {
    pub(super) async fn send_and_start(&mut self, message: &str, ctx: &StepContext<'_>) -> Result<(), Verdict> {
        self.send_once(message, ctx).await?;
        self.start_run(ctx).await
    }

    pub(super) fn lost_verdict(&mut self, why: String) -> Verdict {
        self.lost = true;
        self.socket = None;
        Verdict::failed(EndReason::Lost, "ConnectionLost", why)
    }

    /// Sends the message exactly once. A 429 means it was stored (only the run was refused); after an
    /// unclear failure (no answer, 5xx) ohrun looks for it among the stored user messages, and sends again
    /// only when it is not there — also after the provider resumed a paused sandbox, which may process the
    /// first request late.
    pub(super) async fn send_once(&mut self, message: &str, ctx: &StepContext<'_>) -> Result<(), Verdict> {
        let since = self.last_ts.clone();
        // The user messages ohrun knows of: any other stored since `since` is this one.
        let known = self.user_message_ids.clone();
        for attempt in 1..=ESSENTIAL.tries {
            let (why, wait) = match self.client.send_message(&self.id, message).await {
                Ok(()) => return Ok(()),
                Err(e) if e.status == Some(429) => return Ok(()),
                Err(e) if e.retry() == Retry::Never => {
                    return Err(Verdict::failed(
                        EndReason::Error,
                        "MessageRefused",
                        format!("sending the message failed: {e}"),
                    ));
                }
                Err(e) => (format!("sending the message failed: {e}"), ESSENTIAL.next_wait(attempt, e.retry_after)),
            };
            if self.was_stored(since.as_deref(), &known, ctx, &why).await? {
                return Ok(());
            }
            let Some(wait) = wait else { return Err(self.lost_verdict(why)) };
            self.pause_before_retry(wait).await?;
        }
        Ok(())
    }

    /// Whether a user message ohrun did not know of was stored since `since`; while the server does not
    /// answer, its provider is asked (and a paused sandbox resumed) before looking again.
    pub(super) async fn was_stored(
        &mut self,
        since: Option<&str>,
        known: &[String],
        ctx: &StepContext<'_>,
        why: &str,
    ) -> Result<bool, Verdict> {
        for attempt in 1..=ESSENTIAL.tries {
            match self.client.user_messages(&self.id, since).await {
                Ok(events) => {
                    return Ok(events
                        .iter()
                        .filter_map(|e| e.get("id").and_then(Value::as_str))
                        .any(|id| !known.iter().any(|k| k == id)));
                }
                Err(_) => self.ask_provider(ctx, why).await?,
            }
            self.pause_before_retry(ESSENTIAL.backoff(attempt)).await?;
        }
        Err(self.lost_verdict(format!("{why}; the agent-server did not answer since")))
    }

    /// Starts the run; 429 (busy), 5xx and no answer are retried (a repeated `/run` on a started run is a
    /// harmless 409), never by sending the message again.
    pub(super) async fn start_run(&mut self, ctx: &StepContext<'_>) -> Result<(), Verdict> {
        let (mut unclear, mut busy) = (0, 0);
        loop {
            let e = match self.client.run(&self.id).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let why = format!("starting the run failed: {e}");
            let wait = match e.retry() {
                Retry::Never => return Err(Verdict::failed(EndReason::Error, "RunRefused", why)),
                // The server is at its limit of runs at once: a place frees when another run ends, so
                // this waits for as long as the step may take, not for a number of tries.
                Retry::Refused => {
                    busy += 1;
                    let Some(wait) = RetryPolicy::AGENT_BUSY.wait_for(busy, &e, false, Some(ctx.deadline)) else {
                        let detail = format!(
                            "{why}; the agent-server was at its limit of runs at once until the step's time ran out"
                        );
                        return Err(Verdict::failed(EndReason::Timeout, "ServerBusy", detail));
                    };
                    wait
                }
                Retry::Unclear => {
                    unclear += 1;
                    if e.status.is_none() {
                        self.ask_provider(ctx, &why).await?;
                    }
                    // The server's Retry-After when it sent one (a busy server knows best), else a backoff.
                    let Some(wait) = ESSENTIAL.next_wait(unclear, e.retry_after) else {
                        return Err(self.lost_verdict(why));
                    };
                    wait
                }
            };
            self.pause_before_retry(wait).await?;
        }
    }

    /// The server does not answer: is the sandbox still there? (A paused one is resumed.)
    pub(super) async fn ask_provider(&mut self, ctx: &StepContext<'_>, why: &str) -> Result<(), Verdict> {
        match ctx.probe.probe().await {
            Probe::Gone(gone) => Err(self.lost_verdict(format!("{why}; {gone}"))),
            Probe::Resumed => {
                tracing::warn!("the sandbox was paused by its provider; resumed it");
                Ok(())
            }
            Probe::Alive => Ok(()),
        }
    }

    pub(super) async fn pause_before_retry(&mut self, wait: Duration) -> Result<(), Verdict> {
        tracing::info!("trying again in {wait:?}");
        if self.cancel.sleep(wait).await {
            return Err(Verdict::failed(
                EndReason::Interrupted,
                "Interrupted",
                "interrupted before the run started".into(),
            ));
        }
        Ok(())
    }
}
