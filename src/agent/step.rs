//! One run of the agent within a step: the message sent and the run started (`send.rs`), then the wait
//! until it is really over (what each event says is `classify.rs`'s).
//!
//! The completion rule (wire reference §8): after `POST /run` has returned, the run is over at the first
//! live `full_state` snapshot whose `execution_status` is not `running` — the server flushes every event of
//! the run to subscribers before that snapshot, so nothing is missing and no sleep is needed. A per-field
//! `error`/`stuck` status ends it at once; `idle` and a per-field `finished` never do. Frames read off the
//! socket before `/run` returned never end the run, nor does the snapshot a reconnect starts with unless
//! it shows the run over (and then only after the gap is filled from `events/search`). While the socket
//! is down, REST polling stands in: `error`/`stuck` at once, other terminal states only once REST has said
//! so for [`REST_GRACE`] (REST lags the socket).
//!
//! Nothing slow runs inside the loop itself: provider probes, REST polls, reconciles and the interrupt
//! call are futures the loop polls beside the socket, the deadline and Ctrl-C.

use super::classify::{Tracker, snapshot_terminal, terminal_status};
use super::conversation::{Conversation, Progress};
use super::gate::{Gate, WAITING};
use super::http::ApiError;
use super::{Admission, BoxFuture, Probe, SandboxProbe};
use crate::job::model::Step;
use crate::money::Usd;
use crate::report::{EndReason, StepError, Tokens, Totals};
use serde_json::Value;
use std::time::{Duration, Instant};

/// How often (in 1 s ticks) the provider is asked about the sandbox while a step runs normally.
const PROBE_EVERY_TICKS: u64 = 5;
/// How often (in 1 s ticks) REST is asked about the run while the socket is up: a half-open socket, or a
/// final frame that came before `/run` returned, must not leave the step waiting for its timeout.
const POLL_EVERY_TICKS: u64 = 5;
/// How many consecutive failed REST polls (one a second) make the server lost, when no probe says so sooner.
const LOST_AFTER_FAILED_POLLS: u32 = 30;
/// How long REST must report a terminal status before it is believed without the socket (the SDK's 30 s).
pub const REST_GRACE: Duration = Duration::from_secs(30);

/// Limits that apply to every step of a run.
pub struct Limits<'a> {
    pub run_deadline: Option<Instant>,
    pub max_cost: Option<Usd>,
    /// The budget of the batch this run is part of, if it has one (its conversation then runs in
    /// confirmation mode: every call is admitted, `gate.rs`).
    pub batch: Option<&'a dyn super::SharedBudget>,
    pub run_id: &'a str,
    /// The job named the price per token (so a call billed at zero is free, not a model without a price).
    pub price_named: bool,
    /// `agent.max_iterations`: the most LLM calls of one run of the agent.
    pub max_iterations: u32,
}

impl Limits<'_> {
    /// Tells the batch what this run has spent so far; true when the batch has no money left for another
    /// step (or for this one to go on).
    fn batch_exhausted(&self, spent: Usd) -> bool {
        self.batch.is_some_and(|b| {
            b.update(self.run_id, spent);
            b.exhausted()
        })
    }

    /// A cap is set (the run's own or the batch's).
    fn capped(&self) -> bool {
        self.max_cost.is_some() || self.batch.is_some()
    }
}

pub(super) struct StepContext<'a> {
    pub index: usize,
    pub total: usize,
    pub started: Instant,
    pub deadline: Instant,
    pub step: &'a Step,
    pub limits: &'a Limits<'a>,
    pub progress: &'a dyn Progress,
    /// What the conversation had spent when the step began.
    pub before: &'a Totals,
    pub probe: &'a dyn SandboxProbe,
}

/// Why ohrun stopped waiting, other than the server's own verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Timeout,
    Budget,
    /// A cap is set, and the model's calls are billed at $0: no price is known, so it cannot be kept.
    NoPrice,
    Interrupted,
}

/// Why a capped run stops when its model has no price.
const NO_PRICE: &str =
    "the agent-server has no price for this model (its calls were billed $0), so the cost cap cannot be kept";

pub(super) struct Verdict {
    pub reason: EndReason,
    pub status: Option<String>,
    pub error: Option<StepError>,
    /// The agent's plain-text reply that ended its turn, if it ended with one.
    pub text_reply: Option<String>,
    /// The agent's last word in this run (its finish message or text reply).
    pub final_message: Option<String>,
    pub latency_ms: Option<f64>,
}

impl Verdict {
    pub(super) fn failed(reason: EndReason, code: &str, detail: String) -> Verdict {
        Verdict {
            reason,
            status: None,
            error: Some(StepError { code: code.into(), detail }),
            text_reply: None,
            final_message: None,
            latency_ms: None,
        }
    }
}

/// Polls an optional future; pends forever when there is none (so a `select!` branch stays quiet).
async fn maybe<T>(f: &mut Option<BoxFuture<'_, T>>) -> T {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn recv(socket: &mut Option<super::events::EventSocket>) -> Option<super::events::WsEvent> {
    match socket {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// One REST poll while the socket is down: the conversation's status and the events since the gap.
type Polled = (Result<Value, ApiError>, Result<Vec<Value>, ApiError>);

/// The state of the wait for one run's end.
struct Wait<'p> {
    armed: Instant,
    tracker: Tracker,
    stop: Option<Stop>,
    stop_deadline: Option<Instant>,
    socket_down: bool,
    /// Where the current socket gap began (the newest event logged before it), until it is filled.
    gap_since: Option<Option<String>>,
    /// A terminal status REST has reported, and since when.
    rest_terminal: Option<(String, Instant)>,
    /// The run is over (status, when the deciding frame was read); waiting only for a reconcile.
    over: Option<(String, Option<Instant>)>,
    failed_polls: u32,
    ticks: u64,
    probe: Option<BoxFuture<'p, Probe>>,
    poll: Option<BoxFuture<'static, Polled>>,
    reconcile: Option<BoxFuture<'static, Result<Vec<Value>, ApiError>>>,
    reconcile_again: bool,
    interrupt: Option<BoxFuture<'static, ()>>,
    /// The conversation's spend last handed to the progress (so each change is reported once).
    reported: (Usd, Tokens, u64),
    /// Under a batch budget: the stops after each call, let go once the budget admits the next.
    gate: Gate,
    gated: bool,
}

impl Wait<'_> {
    /// Under a batch budget, a run whose agent stopped after a call (`waiting_for_confirmation`) has not
    /// ended: the gate lets it go on when the budget admits the next call. False: the run is over.
    fn stopped_for_a_call(&mut self, status: &str) -> bool {
        self.gated
            && status == WAITING
            && self.stop.is_none()
            && self.gate.stopped_at(self.tracker.last_action.as_deref())
    }
}

impl Conversation<'_> {
    /// Sends `message`, starts a run and waits for its end.
    pub(super) async fn one_run(&mut self, message: &str, ctx: &StepContext<'_>) -> Verdict {
        if let Err(v) = self.admitted(ctx).await {
            return v;
        }
        let verdict = self.send_and_wait(message, ctx).await;
        if let Some(b) = ctx.limits.batch {
            b.update(ctx.limits.run_id, self.live.cost);
            b.step_ended(ctx.limits.run_id, matches!(verdict.reason, EndReason::Finished | EndReason::Question));
        }
        verdict
    }

    /// Waits until the batch's budget lets this message go (another run may be finding out what a call
    /// costs); Ctrl-C and the step's deadline still count.
    async fn admitted(&mut self, ctx: &StepContext<'_>) -> Result<(), Verdict> {
        let Some(budget) = ctx.limits.batch else { return Ok(()) };
        budget.update(ctx.limits.run_id, self.live.cost);
        let mut cancel = self.cancel.clone();
        loop {
            match budget.admit(ctx.limits.run_id) {
                Admission::Send => return Ok(()),
                Admission::Refuse => {
                    return Err(Verdict::failed(
                        EndReason::Budget,
                        "BatchBudget",
                        "the batch's budget was reached before this message was sent".into(),
                    ));
                }
                Admission::NoPrice => return Err(Verdict::failed(EndReason::Budget, "NoPrice", NO_PRICE.into())),
                // Polled: the price arrives from another run's frames, a tenth of a second is soon enough.
                Admission::Wait => tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = cancel.wait() => return Err(Verdict::failed(EndReason::Interrupted, "Interrupted", "interrupted before the message was sent".into())),
                    _ = tokio::time::sleep_until(ctx.deadline.into()) => {
                        return Err(Verdict::failed(EndReason::Timeout, "Timeout", "the step's time ran out while the batch's budget held it back".into()));
                    }
                },
            }
        }
    }

    async fn send_and_wait(&mut self, message: &str, ctx: &StepContext<'_>) -> Verdict {
        let drained = self.drain_queued();
        if let Some(since) = drained.gap_since {
            // The gap of a reconnect between steps; bounded like every wait outside the loop below.
            let _ = tokio::time::timeout(ctx.step.max_wait.0, self.reconcile(since)).await;
        }
        // Sending and starting may retry (and ask the provider); Ctrl-C and the deadline still count.
        let mut cancel = self.cancel.clone();
        let started = tokio::select! {
            r = self.send_and_start(message, ctx) => r,
            _ = cancel.wait() => Err(Verdict::failed(EndReason::Interrupted, "Interrupted", "interrupted before the run started".into())),
            _ = tokio::time::sleep_until(ctx.deadline.into()) => {
                Err(Verdict::failed(EndReason::Timeout, "Timeout", "the step's time ran out before its run could start".into()))
            }
        };
        if let Err(v) = started {
            // The message may have been stored and the run started before the answer was lost.
            if !self.lost {
                let _ = tokio::time::timeout(Duration::from_secs(5), self.client.interrupt(&self.id)).await;
            }
            return v;
        }
        tracing::info!("step {}: message sent, run started", ctx.index);
        let verdict = self.wait_for_end(Instant::now(), drained.socket_down, ctx).await;
        tracing::info!("step {}: the run ended ({})", ctx.index, verdict.reason.as_str());
        verdict
    }

    /// The wait: socket frames, ticks (progress, probes, REST polls while the socket is down), the
    /// deadline and Ctrl-C, with the slow calls in flight beside them.
    // Long on purpose: one `select!` over every source of the wait, so that their priorities read in one
    // place; each branch hands its work to a method.
    async fn wait_for_end(&mut self, armed: Instant, socket_down: bool, ctx: &StepContext<'_>) -> Verdict {
        let mut w = Wait {
            armed,
            tracker: Tracker::default(),
            stop: None,
            stop_deadline: None,
            socket_down: socket_down || self.socket.is_none(),
            gap_since: None,
            rest_terminal: None,
            over: None,
            failed_polls: 0,
            ticks: 0,
            probe: None,
            poll: None,
            reconcile: None,
            reconcile_again: false,
            interrupt: None,
            reported: (ctx.before.cost, ctx.before.tokens, ctx.before.llm_calls),
            gate: Gate::default(),
            gated: ctx.limits.batch.is_some(),
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cancel = self.cancel.clone();
        let mut again = self.cancel.clone();
        let (status, decided) = loop {
            if let Some(over) = w.over.take() {
                if w.reconcile.is_some() {
                    w.over = Some(over);
                } else if !w.stopped_for_a_call(&over.0) {
                    break over;
                }
            }
            self.check_limits(&mut w, ctx);
            self.report_spend(&mut w, ctx);
            if let Some(refused) = self.advance_gate(&mut w, ctx) {
                break refused;
            }
            let wait_until = w.stop_deadline.unwrap_or(ctx.deadline);
            let socket_open = self.socket.is_some();
            let ask_at = w.gate.ask_at();
            tokio::select! {
                ev = recv(&mut self.socket), if socket_open => self.on_socket(ev, &mut w),
                p = maybe(&mut w.probe), if w.probe.is_some() => {
                    w.probe = None;
                    match p {
                        Probe::Gone(why) => return self.lost_verdict(why),
                        Probe::Resumed => tracing::warn!("the sandbox was paused by its provider; resumed it"),
                        Probe::Alive => {}
                    }
                    if w.failed_polls >= LOST_AFTER_FAILED_POLLS {
                        return self.lost_verdict(format!("the agent-server did not answer for {} s", w.failed_polls));
                    }
                }
                polled = maybe(&mut w.poll), if w.poll.is_some() => {
                    w.poll = None;
                    self.on_poll(polled, &mut w, ctx.probe);
                }
                events = maybe(&mut w.reconcile), if w.reconcile.is_some() => {
                    w.reconcile = None;
                    self.on_reconciled(events, &mut w);
                }
                _ = maybe(&mut w.interrupt), if w.interrupt.is_some() => w.interrupt = None,
                went = w.gate.going_on(), if w.gate.is_going_on() => w.gate.went_on(went),
                _ = tokio::time::sleep_until(ask_at.unwrap_or(ctx.deadline).into()), if ask_at.is_some() => {
                    w.gate.time_to_ask();
                }
                _ = tick.tick() => self.on_tick(&mut w, ctx),
                _ = tokio::time::sleep_until(wait_until.into()) => {
                    if w.stop.is_some() {
                        // The agent did not come to rest within max_wait after the interrupt.
                        break ("running".to_string(), None);
                    }
                    self.stop(&mut w, Stop::Timeout, ctx.step);
                }
                _ = cancel.wait(), if w.stop.is_none() => self.stop(&mut w, Stop::Interrupted, ctx.step),
                // A second signal: no more waiting for the agent to come to rest; on to the release.
                _ = again.above(1), if w.stop.is_some() => break ("running".to_string(), None),
            }
        };
        let latency_ms = decided.map(|t| t.elapsed().as_secs_f64() * 1000.0);
        self.verdict(status, latency_ms, w.stop, w.tracker, ctx.step).await
    }

    /// The budgets: stop the agent once the run, or the batch, has spent its money — or at once, when a
    /// cap is set and the model turns out to have no price (every call billed $0 would pass any cap).
    fn check_limits(&mut self, w: &mut Wait<'_>, ctx: &StepContext<'_>) {
        if w.stop.is_some() {
            return;
        }
        let unpriced = self.live.cost == Usd::ZERO && self.live.tokens.billed() > 0;
        if unpriced && ctx.limits.capped() && !ctx.limits.price_named {
            if let Some(b) = ctx.limits.batch {
                b.no_price();
            }
            return self.stop(w, Stop::NoPrice, ctx.step);
        }
        let run_over = ctx.limits.max_cost.is_some_and(|limit| self.live.cost > limit);
        if ctx.limits.batch_exhausted(self.live.cost) || run_over {
            self.stop(w, Stop::Budget, ctx.step);
        }
    }

    /// At a stop after a call: the budget's verdict on the next one (a refusal ends the step there), or
    /// the end of the run the server would have made at `max_iterations`.
    fn advance_gate(&mut self, w: &mut Wait<'_>, ctx: &StepContext<'_>) -> Option<(String, Option<Instant>)> {
        let budget = ctx.limits.batch.filter(|_| w.stop.is_none() && !self.lost)?;
        if w.gate.is_waiting() && w.gate.calls() >= ctx.limits.max_iterations {
            let detail = format!("Agent reached maximum iterations limit ({}).", ctx.limits.max_iterations);
            w.tracker.last_error = Some(StepError { code: "MaxIterationsReached".into(), detail });
            return Some(("error".to_string(), None));
        }
        let refused = w.gate.advance(budget, ctx.limits.run_id, self.live.cost, (self.client, &self.id))?;
        w.stop = Some(if refused == Admission::NoPrice { Stop::NoPrice } else { Stop::Budget });
        Some((WAITING.to_string(), None))
    }

    /// What the step has spent so far, to the progress (the checkpoint) each time it grew.
    fn report_spend(&self, w: &mut Wait<'_>, ctx: &StepContext<'_>) {
        let now = (self.live.cost, self.live.tokens, self.live.llm_calls);
        if now != w.reported {
            w.reported = now;
            ctx.progress.spend(ctx.index, ctx.before, &self.live);
        }
    }

    /// Interrupts the agent (without waiting for the call) and gives it `max_wait` to come to rest.
    fn stop(&mut self, w: &mut Wait<'_>, why: Stop, step: &Step) {
        w.stop = Some(why);
        // `max_wait` for the agent to come to rest — within the stop's own budget after a signal.
        let rest = Instant::now() + step.max_wait.0;
        w.stop_deadline = Some(self.cancel.stop_deadline().map_or(rest, |d| d.min(rest)));
        if self.lost {
            return;
        }
        let (client, id) = (self.client.clone(), self.id.clone());
        w.interrupt = Some(Box::pin(async move {
            if let Err(e) = client.interrupt(&id).await {
                tracing::warn!("interrupting the agent failed: {e}");
            }
        }));
    }

    fn on_socket(&mut self, ev: Option<super::events::WsEvent>, w: &mut Wait<'_>) {
        use super::events::WsEvent;
        match ev {
            Some(WsEvent::Frame(f)) => {
                let after_arming = f.received >= w.armed;
                if f.snapshot {
                    // The state at (re)subscription: the run's end only if it shows it over, and only once
                    // the gap before it is filled.
                    if let Some(status) = snapshot_terminal(&f.event).filter(|_| after_arming) {
                        w.over = Some((status, Some(f.received)));
                    }
                    return;
                }
                self.log(&f.event);
                w.tracker.track(&f.event, &mut self.live);
                if after_arming && let Some(status) = terminal_status(&f.event) {
                    w.over = Some((status, Some(f.received)));
                }
            }
            Some(WsEvent::Disconnected) => {
                w.socket_down = true;
                w.gap_since.get_or_insert_with(|| self.last_ts.clone());
            }
            Some(WsEvent::Reconnected) => {
                w.socket_down = false;
                self.start_reconcile(w);
            }
            Some(WsEvent::Closed(why)) => {
                tracing::warn!("{why}; following the run over REST");
                self.socket = None;
                w.socket_down = true;
                w.gap_since.get_or_insert_with(|| self.last_ts.clone());
            }
            None => {
                self.socket = None;
                w.socket_down = true;
                w.gap_since.get_or_insert_with(|| self.last_ts.clone());
            }
        }
    }

    /// Fills the socket gap from `events/search`, from where it began.
    fn start_reconcile(&mut self, w: &mut Wait<'_>) {
        if w.reconcile.is_some() {
            w.reconcile_again = true;
            return;
        }
        let since = w.gap_since.take().unwrap_or_else(|| self.last_ts.clone());
        let (client, id) = (self.client.clone(), self.id.clone());
        w.reconcile = Some(Box::pin(async move { client.events(&id, since.as_deref()).await }));
    }

    fn on_reconciled(&mut self, events: Result<Vec<Value>, ApiError>, w: &mut Wait<'_>) {
        match events {
            Ok(events) => {
                for v in self.absorb(events) {
                    w.tracker.track(&v, &mut self.live);
                }
            }
            Err(e) => {
                tracing::warn!("reconciling events failed: {e}");
                w.reconcile_again = true;
            }
        }
        if std::mem::take(&mut w.reconcile_again) {
            self.start_reconcile(w);
        }
    }

    fn on_tick<'a>(&mut self, w: &mut Wait<'a>, ctx: &StepContext<'a>) {
        let events = self.event_count;
        ctx.progress.step(ctx.index, ctx.total, ctx.started.elapsed(), events, self.live.cost);
        w.ticks += 1;
        // A provider may pause a sandbox under a running job with every connection still open: ask it now
        // and then, not only when the server stops answering.
        if w.ticks.is_multiple_of(PROBE_EVERY_TICKS) && !w.socket_down && w.probe.is_none() && !self.lost {
            w.probe = Some(ctx.probe.probe());
        }
        let poll_due = w.socket_down || w.ticks.is_multiple_of(POLL_EVERY_TICKS);
        if poll_due && w.poll.is_none() && !self.lost {
            let since = w.gap_since.clone().unwrap_or_else(|| self.last_ts.clone());
            let (client, id) = (self.client.clone(), self.id.clone());
            w.poll = Some(Box::pin(async move {
                let info = client.conversation(&id).await;
                let events = client.events(&id, since.as_deref()).await;
                (info, events)
            }));
        }
    }

    /// A REST poll came back: its events fill the gap; its status ends the run only for `error`/`stuck`
    /// or once it has held for [`REST_GRACE`].
    fn on_poll<'p>(&mut self, polled: Polled, w: &mut Wait<'p>, probe: &'p dyn SandboxProbe) {
        let (info, events) = polled;
        let Ok(info) = info else {
            // The server does not answer: ask its provider whether the sandbox still exists.
            w.failed_polls += 1;
            if w.probe.is_none() {
                w.probe = Some(probe.probe());
            }
            return;
        };
        w.failed_polls = 0;
        if let Some(stats) = info.get("stats") {
            self.live = std::mem::take(&mut self.live).at_least(&super::stats::sum_stats(stats));
        }
        if let Ok(events) = events {
            for v in self.absorb(events) {
                w.tracker.track(&v, &mut self.live);
            }
            if w.socket_down {
                w.gap_since = Some(self.last_ts.clone());
            }
        }
        let status = info.get("execution_status").and_then(Value::as_str).unwrap_or("").to_string();
        // A stop after a call, as REST sees it (its pending action tells a stale status from a new stop).
        if w.stopped_for_a_call(&status) {
            return;
        }
        match status.as_str() {
            "error" | "stuck" => w.over = Some((status, None)),
            "finished" | "paused" | "waiting_for_confirmation" => match &w.rest_terminal {
                Some((seen, since)) if *seen == status && since.elapsed() >= REST_GRACE => {
                    w.over = Some((status, None))
                }
                Some((seen, _)) if *seen == status => {}
                _ => w.rest_terminal = Some((status, Instant::now())),
            },
            _ => w.rest_terminal = None,
        }
    }

    async fn verdict(
        &mut self,
        status: String,
        latency_ms: Option<f64>,
        stop: Option<Stop>,
        mut tracker: Tracker,
        step: &Step,
    ) -> Verdict {
        if let Some(quiet) = step.quiet_for.map(|q| q.0.0).filter(|q| !q.is_zero()) {
            self.drain_quiet(quiet, step.max_wait.0, &mut tracker).await;
        }
        let reason = match (stop, status.as_str()) {
            // A cap that cannot be kept fails the run however far its agent got.
            (Some(Stop::NoPrice), _) => EndReason::Budget,
            // The agent finished on its own just as ohrun asked it to stop: the step is done, and says so.
            (_, "finished") => EndReason::Finished,
            (Some(Stop::Timeout), _) => EndReason::Timeout,
            (Some(Stop::Budget), _) => EndReason::Budget,
            (Some(Stop::Interrupted), _) => EndReason::Interrupted,
            (None, "error") => EndReason::Error,
            (None, "stuck") => EndReason::Stuck,
            (None, _) => EndReason::Paused,
        };
        if reason == EndReason::Error && tracker.last_error.is_none() {
            // The error event can trail the status frame over REST; look for it once more.
            let since = self.last_ts.clone();
            if let Ok(events) = tokio::time::timeout(step.max_wait.0, self.reconcile(since)).await {
                for v in events {
                    tracker.track(&v, &mut self.live);
                }
            }
        }
        let error = match stop {
            Some(Stop::NoPrice) => Some(StepError { code: "NoPrice".into(), detail: NO_PRICE.into() }),
            _ => tracker.last_error,
        };
        Verdict {
            reason,
            status: Some(status),
            error,
            text_reply: tracker.text_reply,
            final_message: tracker.final_message,
            latency_ms,
        }
    }

    /// The opt-in quiet window: keep reading until no frame came for `quiet`, at most `max_wait`.
    async fn drain_quiet(&mut self, quiet: Duration, max_wait: Duration, tracker: &mut Tracker) {
        use super::events::WsEvent;
        let hard = Instant::now() + max_wait;
        while self.socket.is_some() && Instant::now() < hard {
            let until = (Instant::now() + quiet).min(hard);
            match tokio::time::timeout_at(until.into(), recv(&mut self.socket)).await {
                Ok(Some(WsEvent::Frame(f))) => {
                    if self.log(&f.event) {
                        tracker.track(&f.event, &mut self.live);
                    }
                }
                Ok(Some(WsEvent::Reconnected)) => {
                    let since = self.last_ts.clone();
                    self.reconcile(since).await;
                }
                Ok(Some(WsEvent::Disconnected)) | Err(_) => return,
                Ok(_) => self.socket = None,
            }
        }
    }
}
