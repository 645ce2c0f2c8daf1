//! One conversation with the default agent: create it, follow its events, reconcile the event log, read
//! the costs, delete it. Its steps are run by `steps.rs` (the sequence) and `step.rs` (one run of the
//! agent until it is really done).
//!
//! Every event is logged once (deduplicated by id) as the server sent it; so is every socket frame ohrun
//! could not read, as a raw record (`events.rs`). Reconciles ask `events/search` only for what is new
//! (`timestamp__gte` the newest event logged, or the last one before a socket gap).

use super::Error;
use super::events::{EventSocket, WsEvent};
use super::http::{AgentClient, ApiError};
use super::stats::sum_stats;
use crate::cancel::Cancel;
use crate::job::model::{JobSpec, Message};
use crate::money::Usd;
use crate::net::retry::{Failure, Retry, RetryPolicy};
use crate::report::writer::ReportWriter;
use crate::report::{StepReport, Totals};
use crate::settings::RunSettings;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Progress the conversation reports while it waits.
pub trait Progress: Sync {
    /// Every second while step `index` (1-based) of `total` runs.
    fn step(&self, index: usize, total: usize, elapsed: Duration, events: usize, cost: Usd);
    /// When a step has ended.
    fn step_done(&self, report: &StepReport, total: usize);
    /// When a step starts (its report holds its message and start time).
    fn step_started(&self, _report: &StepReport) {}
    /// When what the conversation spent grew during step `index`: `before` is what it had spent when the
    /// step began, `now` what it has spent now (as its `stats` frames say).
    fn spend(&self, _index: usize, _before: &Totals, _now: &Totals) {}
}

pub struct Conversation<'a> {
    pub client: &'a AgentClient,
    pub id: String,
    pub(super) socket: Option<EventSocket>,
    seen: HashSet<String>,
    writer: &'a mut ReportWriter,
    /// Events logged so far (each once).
    pub event_count: usize,
    /// The newest event timestamp logged, as the server wrote it.
    pub(super) last_ts: Option<String>,
    /// What the latest `stats` frames say was spent, for budgets, the live line and the checkpoints (and
    /// the floor of the final figures, should the last stats not be readable).
    pub(super) live: Totals,
    pub(super) cancel: Cancel,
    /// The server is gone: no more calls to it (each would only wait for its timeout).
    pub(super) lost: bool,
    /// The first event that could not be written to events.jsonl: the evidence is incomplete.
    pub evidence_error: Option<String>,
    /// Ids of the user messages logged, so a message whose POST failed unclearly can be found.
    pub(super) user_message_ids: Vec<String>,
}

/// What draining the socket before a run found.
pub(super) struct Drained {
    /// Where a socket gap began (the newest event logged before it), when there was one.
    pub gap_since: Option<Option<String>>,
    /// The socket is down now (reconnecting, or gone).
    pub socket_down: bool,
}

impl<'a> Conversation<'a> {
    /// Creates the conversation and subscribes to its events (the subscribe-time snapshot is stale).
    /// `confirm_calls`: a batch budget admits each LLM call (confirmation mode, `step.rs`).
    pub async fn start(
        client: &'a AgentClient,
        (spec, settings): (&JobSpec, &RunSettings),
        working_dir: &str,
        confirm_calls: bool,
        writer: &'a mut ReportWriter,
        cancel: Cancel,
    ) -> Result<Conversation<'a>, Error> {
        let id = uuid::Uuid::new_v4().to_string();
        let body = super::request::conversation_body(&id, spec, settings, working_dir, confirm_calls);
        // A server at its limit of runs at once refuses creates too: waited out for as long as the first
        // step (and the run) may take.
        let first_step = spec.steps.first().map_or(Duration::from_secs(30 * 60), |s| s.timeout.0);
        let busy_for = spec.limits.timeout.map_or(first_step, |t| t.0.min(first_step));
        create(client, &id, &body, (&cancel, Instant::now() + busy_for)).await?;
        let (socket, _stale) =
            EventSocket::connect(client, &id, Duration::from_secs(30)).await.map_err(Error::Socket)?;
        tracing::info!("conversation {id} created; following its events");
        let mut conv = Conversation {
            client,
            id,
            socket: Some(socket),
            seen: HashSet::new(),
            writer,
            event_count: 0,
            last_ts: None,
            live: Totals::default(),
            cancel,
            lost: false,
            evidence_error: None,
            user_message_ids: Vec::new(),
        };
        conv.reconcile(None).await;
        Ok(conv)
    }

    /// Logs an event once (by id). `full_state` snapshots are transient and never persisted by the server,
    /// so they are not part of the log. A record without an id (a raw frame ohrun could not read, JSON
    /// without one) is logged as it came, each time it came — it cannot be deduplicated — and is not
    /// counted as a server event.
    pub(super) fn log(&mut self, event: &Value) -> bool {
        if is_full_state(event) {
            return false;
        }
        if let Some(id) = event.get("id").and_then(Value::as_str) {
            if !self.seen.insert(id.to_string()) {
                return false;
            }
            if let Some(ts) = event.get("timestamp").and_then(Value::as_str)
                && self.last_ts.as_deref().is_none_or(|last| ts > last)
            {
                self.last_ts = Some(ts.to_string());
            }
            if event.get("kind").and_then(Value::as_str) == Some("MessageEvent")
                && event.get("source").and_then(Value::as_str) == Some("user")
            {
                self.user_message_ids.push(id.to_string());
            }
            self.event_count += 1;
        }
        if let Err(e) = self.writer.event(event)
            && self.evidence_error.is_none()
        {
            tracing::error!("cannot write the event log: {e}");
            self.evidence_error = Some(format!("cannot write {}: {e}", self.writer.events_path().display()));
        }
        true
    }

    /// Waits until the event log is on disk; a write that failed is the evidence's error, as in `log`.
    pub async fn settle_evidence(&mut self) {
        if let Err(e) = self.writer.settled().await
            && self.evidence_error.is_none()
        {
            self.evidence_error = Some(format!("cannot write {}: {e}", self.writer.events_path().display()));
        }
    }

    /// Logs the events not seen yet and returns them. Reconciles overlap (`timestamp__gte`), so an item
    /// without an id would be logged again by each: only the socket's id-less frames are kept.
    pub(super) fn absorb(&mut self, events: Vec<Value>) -> Vec<Value> {
        events.into_iter().filter(|e| e.get("id").is_some_and(Value::is_string) && self.log(e)).collect()
    }

    /// Fills gaps from `events/search` (everything at or after `since`); returns the new events.
    pub(super) async fn reconcile(&mut self, since: Option<String>) -> Vec<Value> {
        self.reconcile_checked(since).await.unwrap_or_default()
    }

    /// [`Self::reconcile`], None when the server could not be asked.
    pub(super) async fn reconcile_checked(&mut self, since: Option<String>) -> Option<Vec<Value>> {
        if self.lost {
            return None;
        }
        match self.client.events(&self.id, since.as_deref()).await {
            Ok(events) => Some(self.absorb(events)),
            Err(e) => {
                tracing::warn!("reconciling events failed: {e}");
                None
            }
        }
    }

    /// Takes in what arrived on the socket before the next run starts: late events of the last run and
    /// the snapshot of a reconnect. They are logged, never taken as the end of the next run.
    pub(super) fn drain_queued(&mut self) -> Drained {
        let mut drained = Drained { gap_since: None, socket_down: false };
        while let Some(ev) = self.socket.as_mut().and_then(|s| s.try_recv()) {
            match ev {
                WsEvent::Frame(f) => {
                    self.log(&f.event);
                    super::stats::raise(&mut self.live, &f.event);
                }
                WsEvent::Disconnected => {
                    drained.gap_since.get_or_insert_with(|| self.last_ts.clone());
                    drained.socket_down = true;
                }
                WsEvent::Reconnected => drained.socket_down = false,
                WsEvent::Closed(why) => {
                    tracing::warn!("{why}; following the conversation over REST");
                    self.socket = None;
                }
            }
        }
        drained.socket_down |= self.socket.is_none();
        drained
    }

    pub(super) async fn stats(&self) -> Option<Totals> {
        if self.lost {
            return None;
        }
        self.client.conversation(&self.id).await.ok().and_then(|c| c.get("stats").map(sum_stats))
    }

    /// Deletes the conversation (its persisted data and terminal sessions).
    pub async fn close(mut self) -> Result<(), Error> {
        self.socket = None;
        if self.lost {
            return Ok(());
        }
        let cancel = self.cancel.clone();
        match bounded_if_stopping(&cancel, self.client.delete_conversation(&self.id)).await {
            Some(done) => done.map_err(Error::from),
            None => {
                tracing::warn!(
                    "stopping: the conversation {} was not deleted in time; it stays on the server",
                    self.id
                );
                Ok(())
            }
        }
    }
}

/// How long the bookkeeping after an interrupt (the last events, the costs, the conversation's delete)
/// may take: a stop must stay bounded even when the server has stopped answering.
const STOPPING_GRACE: Duration = Duration::from_secs(3);

/// `work`, bounded when `cancel` is set (None if the time ran out) by [`STOPPING_GRACE`] and by what is
/// left of the stop's budget (at least a moment, so a healthy server still answers); as it is otherwise.
pub(super) async fn bounded_if_stopping<T>(cancel: &Cancel, work: impl std::future::Future<Output = T>) -> Option<T> {
    if !cancel.is_set() {
        return Some(work.await);
    }
    let left = cancel
        .stop_deadline()
        .map_or(STOPPING_GRACE, |d| d.saturating_duration_since(Instant::now()))
        .clamp(Duration::from_millis(500), STOPPING_GRACE);
    tokio::time::timeout(left, work).await.ok()
}

pub(super) fn is_full_state(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("ConversationStateUpdateEvent")
        && v.get("key").and_then(Value::as_str) == Some("full_state")
}

pub fn message_text(message: &Message, job_dir: &Path) -> String {
    match message {
        Message::Inline(t) => t.clone(),
        Message::File { file } => std::fs::read_to_string(job_dir.join(file)).unwrap_or_default(),
    }
}

/// Creates the conversation, never twice. The id is ohrun's own, so after an unclear failure (no answer,
/// 5xx) ohrun asks for that id: if the create went through after all, that conversation is this run's;
/// if not, it tries again (after the server's Retry-After, or a backoff), three tries in all as for a
/// read. A 429 (the server at its limit of runs at once) made nothing: asked again until `busy_until`.
async fn create(
    client: &AgentClient,
    id: &str,
    body: &Value,
    (cancel, busy_until): (&Cancel, Instant),
) -> Result<(), ApiError> {
    let (mut unclear, mut busy) = (0, 0);
    loop {
        let e = match client.create_conversation(body).await {
            Ok(_) => return Ok(()),
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => e,
        };
        let wait = if e.retry() == Retry::Refused {
            busy += 1;
            let Some(wait) = RetryPolicy::AGENT_BUSY.wait_for(busy, &e, false, Some(busy_until)) else { return Err(e) };
            wait
        } else {
            unclear += 1;
            if client.conversation(id).await.is_ok() {
                tracing::info!("{e}; but conversation {id} exists: it is this run's");
                return Ok(());
            }
            let Some(wait) = RetryPolicy::AGENT_READ.next_wait(unclear, e.retry_after) else { return Err(e) };
            wait
        };
        if cancel.clone().sleep(wait).await {
            return Err(e);
        }
        tracing::info!("{e}; creating conversation {id} again");
    }
}
