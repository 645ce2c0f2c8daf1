//! One conversation with the default agent: setup commands, then each step until it is really done.
//!
//! The completion rule (wire reference §8): after `POST /run` has returned, the step is done at the first
//! `full_state` snapshot whose `execution_status` is not `running` — the server flushes every event of the
//! run to subscribers before that snapshot, so nothing is missing and no sleep is needed. A per-field
//! `error`/`stuck` status ends it at once; `idle` and a per-field `finished` never do. While the socket is
//! down, REST polling stands in (only `error`/`stuck` at once; other terminal states once seen twice). The
//! event log is reconciled with `events/search` after reconnects and at the end, deduplicated by id.

use super::events::{EventSocket, WsEvent};
use super::http::AgentClient;
use crate::job::model::{AgentSpec, JobSpec, Message, OnQuestion, Step};
use crate::report::writer::{ReportWriter, now_rfc3339};
use crate::report::{EndReason, SetupResult, StepError, StepReport, Totals};
use crate::settings::RunSettings;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Why ohrun stopped waiting, other than the server's own verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Timeout,
    Budget,
    Interrupted,
}

/// Whether the sandbox is still there while a job runs (asked when the agent-server stops answering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Alive,
    /// It was paused by the provider and ohrun resumed it (once).
    Resumed,
    /// It is gone for good: why.
    Gone(String),
}

/// Asks the sandbox's provider about it; backends implement this.
pub trait SandboxProbe: Sync {
    fn probe(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Probe> + Send + '_>>;
}

/// How often (in 1 s ticks) the provider is asked about the sandbox while a step runs normally.
const PROBE_EVERY_TICKS: u64 = 5;

/// How many consecutive failed REST polls (one a second) make the server lost, when no probe says so sooner.
const LOST_AFTER_FAILED_POLLS: u32 = 30;

/// Progress the session reports while it waits.
pub trait Progress: Sync {
    /// Every second while step `index` (1-based) of `total` runs.
    fn step(&self, index: usize, total: usize, elapsed: Duration, events: usize, cost: f64);
    /// When a step has ended.
    fn step_done(&self, report: &StepReport, total: usize);
}

pub struct Conversation<'a> {
    pub client: &'a AgentClient,
    pub id: String,
    socket: Option<EventSocket>,
    seen: HashSet<String>,
    writer: &'a mut ReportWriter,
    /// Events logged so far (each once).
    pub event_count: usize,
    /// The latest cost seen in a `stats` frame, for budgets and the live line.
    live_cost: f64,
    interrupt: watch::Receiver<u32>,
    /// The server is gone: no more calls to it (each would only wait for its timeout).
    lost: bool,
}

/// The run-level result of the conversation part.
pub struct ConversationOutcome {
    pub steps: Vec<StepReport>,
    pub totals: Totals,
}

/// Runs the setup commands in order; stops at the first failure that is not allowed to fail.
pub async fn run_setup(
    client: &AgentClient,
    spec: &JobSpec,
    working_dir: &str,
    on_result: &mut dyn FnMut(&SetupResult),
) -> Result<Vec<SetupResult>, String> {
    let mut results = Vec::new();
    for cmd in &spec.setup {
        let cwd = match &cmd.cwd {
            Some(c) if c.starts_with('/') => c.clone(),
            Some(c) => format!("{}/{c}", working_dir.trim_end_matches('/')),
            None => working_dir.to_string(),
        };
        // The bash endpoint has no env field: export in the same shell, values quoted.
        let exports: String = cmd.env.iter().map(|(k, v)| format!("export {k}={}; ", shell_quote(&v.0))).collect();
        let started = Instant::now();
        let out =
            client.bash(&format!("{exports}{}", cmd.run), &cwd, cmd.timeout.0).await.map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        let timed_out = out.exit_code == -1 && elapsed + Duration::from_millis(500) >= cmd.timeout.0;
        let result = SetupResult {
            command: cmd.run.clone(),
            cwd,
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            duration_ms: elapsed.as_millis() as u64,
            timed_out,
            allowed_to_fail: cmd.allow_failure,
        };
        on_result(&result);
        let failed = result.exit_code != 0 && !cmd.allow_failure;
        results.push(result);
        if failed {
            return Ok(results);
        }
    }
    Ok(results)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The `agent` object of `get_default_agent(llm, cli_mode=...)`, with the job's LLM.
pub fn agent_body(spec: &JobSpec, settings: &RunSettings) -> Value {
    let llm = llm_body(settings, &settings.llm.usage_id);
    let tools: Vec<Value> = match &spec.agent.tools {
        Some(t) => t.iter().map(|name| json!({"name": name})).collect(),
        None => AgentSpec::DEFAULT_TOOLS.iter().map(|name| json!({"name": name})).collect(),
    };
    let mut agent = json!({
        "kind": "Agent",
        "llm": llm,
        "tools": tools,
        "system_prompt_kwargs": {"cli_mode": spec.agent.cli_mode, "llm_security_analyzer": true},
    });
    if spec.agent.condenser {
        agent["condenser"] = json!({
            "kind": "LLMSummarizingCondenser",
            "llm": llm_body(settings, "condenser"),
            "max_size": 80,
            "keep_first": 4,
        });
    }
    if let Some(extra) = &spec.agent.system_prompt_extra {
        agent["agent_context"] = json!({"system_message_suffix": extra});
    }
    agent
}

fn llm_body(settings: &RunSettings, usage_id: &str) -> Value {
    let l = &settings.llm;
    let mut llm = serde_json::Map::new();
    for (k, v) in &l.options {
        llm.insert(k.clone(), v.clone());
    }
    llm.insert("model".into(), json!(l.model));
    llm.insert("usage_id".into(), json!(usage_id));
    if let Some(k) = &l.api_key {
        llm.insert("api_key".into(), json!(k));
    }
    if let Some(b) = &l.base_url {
        llm.insert("base_url".into(), json!(b));
    }
    if let Some(p) = l.input_cost_per_token {
        llm.insert("input_cost_per_token".into(), json!(p));
    }
    if let Some(p) = l.output_cost_per_token {
        llm.insert("output_cost_per_token".into(), json!(p));
    }
    Value::Object(llm)
}

/// Σ accumulated cost and tokens over every usage id of a `stats` value, and the number of LLM calls.
pub fn sum_stats(stats: &Value) -> Totals {
    let mut t = Totals::default();
    let Some(usage) = stats.get("usage_to_metrics").and_then(Value::as_object) else { return t };
    for (usage_id, m) in usage {
        let cost = m.get("accumulated_cost").and_then(Value::as_f64).unwrap_or(0.0);
        t.cost += cost;
        t.cost_by_usage.insert(usage_id.clone(), json!(cost));
        if let Some(u) = m.get("accumulated_token_usage") {
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            t.tokens.prompt += n("prompt_tokens");
            t.tokens.completion += n("completion_tokens");
            t.tokens.cache_read += n("cache_read_tokens");
            t.tokens.cache_write += n("cache_write_tokens");
            t.tokens.reasoning += n("reasoning_tokens");
        }
        t.llm_calls += m.get("costs").and_then(Value::as_array).map(|c| c.len() as u64).unwrap_or(0);
    }
    t
}

impl<'a> Conversation<'a> {
    /// Creates the conversation and subscribes to its events (the subscribe-time snapshot is stale).
    pub async fn start(
        client: &'a AgentClient,
        spec: &JobSpec,
        settings: &RunSettings,
        working_dir: &str,
        writer: &'a mut ReportWriter,
        interrupt: watch::Receiver<u32>,
    ) -> Result<Conversation<'a>, String> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut body = json!({
            "conversation_id": id,
            "agent": agent_body(spec, settings),
            "workspace": {"working_dir": working_dir, "kind": "LocalWorkspace"},
            "max_iterations": spec.agent.max_iterations,
            "stuck_detection": true,
            "confirmation_policy": {"kind": "NeverConfirm"},
            // Title generation is an extra LLM call that can be billed after the last step ended; off, every
            // call belongs to a step and the reported cost is complete.
            "autotitle": false,
        });
        if !settings.secrets.is_empty() {
            // 1.58 wants a SecretSource object per name (a plain string is refused with 422).
            body["secrets"] = settings
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), json!({"kind": "StaticSecret", "value": v})))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        client.create_conversation(&body).await.map_err(|e| format!("creating the conversation failed: {e}"))?;
        let (socket, _stale) = EventSocket::connect(client, &id, Duration::from_secs(30)).await?;
        let mut conv = Conversation {
            client,
            id,
            socket: Some(socket),
            seen: HashSet::new(),
            writer,
            event_count: 0,
            live_cost: 0.0,
            interrupt,
            lost: false,
        };
        conv.reconcile().await;
        Ok(conv)
    }

    /// Logs an event once (by id). `full_state` snapshots are transient and never persisted by the server,
    /// so they are not part of the log.
    fn log(&mut self, event: &Value) -> bool {
        if is_full_state(event) {
            return false;
        }
        let Some(id) = event.get("id").and_then(Value::as_str) else { return false };
        if !self.seen.insert(id.to_string()) {
            return false;
        }
        if let Err(e) = self.writer.event(event) {
            tracing::warn!("cannot write the event log: {e}");
        }
        self.event_count += 1;
        true
    }

    fn lost(&mut self, why: String) -> Verdict {
        self.lost = true;
        self.socket = None;
        Verdict::lost(why)
    }

    /// Fills gaps from `events/search`; returns the new events.
    pub async fn reconcile(&mut self) -> Vec<Value> {
        if self.lost {
            return Vec::new();
        }
        match self.client.all_events(&self.id).await {
            Ok(events) => events.into_iter().filter(|e| self.log(e)).collect(),
            Err(e) => {
                tracing::warn!("reconciling events failed: {e}");
                Vec::new()
            }
        }
    }

    async fn stats(&self) -> Option<Totals> {
        if self.lost {
            return None;
        }
        self.client.conversation(&self.id).await.ok().and_then(|c| c.get("stats").map(sum_stats))
    }

    /// Runs the steps in order and returns the reports of those that ran; a step that fails (error, stuck,
    /// timeout, budget, interrupt) ends the run there.
    pub async fn run_steps(
        &mut self,
        spec: &JobSpec,
        job_dir: &Path,
        run_deadline: Option<Instant>,
        max_cost: Option<f64>,
        progress: &dyn Progress,
        probe: &dyn SandboxProbe,
    ) -> ConversationOutcome {
        let mut steps = Vec::new();
        let mut before = self.stats().await.unwrap_or_default();
        let total = spec.steps.len();
        for (i, step) in spec.steps.iter().enumerate() {
            let text = message_text(&step.message, job_dir);
            let mut report =
                StepReport { index: i + 1, message: text.clone(), started_at: now_rfc3339(), ..Default::default() };
            let started = Instant::now();
            let events_before = self.event_count;
            self.run_step(step, &text, &mut report, total, run_deadline, max_cost, progress, probe).await;
            report.ended_at = Some(now_rfc3339());
            report.duration_ms = Some(started.elapsed().as_millis() as u64);
            report.event_count = self.event_count - events_before;
            let after = self.stats().await.unwrap_or_else(|| before.clone());
            report.cost = (after.cost - before.cost).max(0.0);
            report.tokens = after.tokens.minus(before.tokens);
            report.llm_calls = after.llm_calls.saturating_sub(before.llm_calls);
            before = after;
            progress.step_done(&report, total);
            let reason = report.end_reason;
            let ok = matches!(reason, EndReason::Finished) || (reason == EndReason::Question && report.error.is_none());
            steps.push(report);
            if !ok {
                break;
            }
        }
        // Late events (and late stats) are never lost: one last reconcile and the authoritative totals.
        self.reconcile().await;
        let mut totals = self.stats().await.unwrap_or(before);
        totals.events = self.event_count;
        ConversationOutcome { steps, totals }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &mut self,
        step: &Step,
        text: &str,
        report: &mut StepReport,
        total: usize,
        run_deadline: Option<Instant>,
        max_cost: Option<f64>,
        progress: &dyn Progress,
        probe: &dyn SandboxProbe,
    ) {
        let started = Instant::now();
        let step_deadline = started + step.timeout.0;
        let deadline = run_deadline.map_or(step_deadline, |r| r.min(step_deadline));
        let index = report.index - 1;
        let mut message = text.to_string();
        loop {
            let verdict =
                self.one_run(&message, index, total, started, deadline, max_cost, step, progress, probe).await;
            report.final_message = self.final_message().await;
            report.execution_status = verdict.status.clone();
            report.completion_latency_ms = verdict.latency_ms;
            let question =
                verdict.reason == EndReason::Finished && verdict.text_reply.as_deref().is_some_and(is_question);
            if question {
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
            report.end_reason = verdict.reason;
            report.error = verdict.error;
            return;
        }
    }

    /// The agent's last word for this step (its finish message or text reply), as the server has it.
    async fn final_message(&self) -> Option<String> {
        if self.lost {
            return None;
        }
        self.client.final_response(&self.id).await.ok().filter(|s| !s.is_empty())
    }

    /// Sends one message, starts a run and waits for its end.
    #[allow(clippy::too_many_arguments)]
    async fn one_run(
        &mut self,
        message: &str,
        index: usize,
        total: usize,
        started: Instant,
        deadline: Instant,
        max_cost: Option<f64>,
        step: &Step,
        progress: &dyn Progress,
        probe: &dyn SandboxProbe,
    ) -> Verdict {
        // If the server does not answer, ask its provider: a paused sandbox is resumed (once) and the message
        // sent again; the message endpoint is safe to repeat only because a failed send stored nothing.
        let mut resumed = false;
        loop {
            let sent = match self.client.send_message(&self.id, message).await {
                Ok(()) => self.client.run(&self.id).await.map_err(|e| format!("starting the run failed: {e}")),
                Err(e) => Err(format!("sending the message failed: {e}")),
            };
            match sent {
                Ok(()) => break,
                Err(e) if !resumed => match probe.probe().await {
                    Probe::Resumed => resumed = true,
                    Probe::Gone(why) => return self.lost(format!("{e}; {why}")),
                    Probe::Alive => return self.lost(e),
                },
                Err(e) => return self.lost(e),
            }
        }
        // Armed: from here on, a non-running snapshot means this run is over.
        let mut stop: Option<Stop> = None;
        let mut stop_deadline: Option<Instant> = None;
        let mut last_error: Option<StepError> = None;
        let mut text_reply: Option<String> = None;
        let mut rest_terminal: Option<String> = None;
        let mut socket_down = false;
        let mut ticks = 0u64;
        let mut failed_polls = 0u32;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let events_at_start = self.event_count;
        let (status, latency) = loop {
            if let Some(limit) = max_cost
                && stop.is_none()
                && self.live_cost > limit
            {
                stop = Some(Stop::Budget);
                stop_deadline = Some(Instant::now() + step.max_wait.0);
                let _ = self.client.interrupt(&self.id).await;
            }
            let wait_until = stop_deadline.unwrap_or(deadline);
            let socket_alive = self.socket.is_some();
            tokio::select! {
                ev = recv(&mut self.socket), if socket_alive => match ev {
                    Some(WsEvent::Frame(v)) => {
                        let received = Instant::now();
                        self.log(&v);
                        track(&v, &mut last_error, &mut text_reply, &mut self.live_cost);
                        if let Some(status) = terminal_status(&v) {
                            let latency = received.elapsed().as_secs_f64() * 1000.0;
                            break (status, Some(latency));
                        }
                    }
                    Some(WsEvent::Disconnected) => socket_down = true,
                    Some(WsEvent::Reconnected) => {
                        socket_down = false;
                        for v in self.reconcile().await {
                            track(&v, &mut last_error, &mut text_reply, &mut self.live_cost);
                        }
                    }
                    Some(WsEvent::Closed(why)) => {
                        tracing::warn!("{why}; following the run over REST");
                        self.socket = None;
                    }
                    None => self.socket = None,
                },
                _ = tick.tick() => {
                    progress.step(index + 1, total, started.elapsed(), self.event_count - events_at_start, self.live_cost);
                    ticks += 1;
                    // A provider may pause a sandbox under a running job with every connection still open:
                    // ask it now and then, not only when the server stops answering.
                    if ticks.is_multiple_of(PROBE_EVERY_TICKS) && !socket_down && self.socket.is_some() {
                        match probe.probe().await {
                            Probe::Gone(why) => return self.lost(why),
                            Probe::Resumed => tracing::warn!("the sandbox was paused by its provider; resumed it"),
                            Probe::Alive => {}
                        }
                    }
                    if self.socket.is_none() || socket_down {
                        // REST fallback: error/stuck at once, other terminal states once seen twice.
                        let polled = self.client.conversation(&self.id).await;
                        if polled.is_err() {
                            // The server does not answer: ask its provider whether the sandbox still exists.
                            failed_polls += 1;
                            match probe.probe().await {
                                Probe::Gone(why) => return self.lost(why),
                                Probe::Resumed => tracing::warn!("the sandbox was paused by its provider; resumed it"),
                                Probe::Alive if failed_polls >= LOST_AFTER_FAILED_POLLS => {
                                    return self.lost(format!("the agent-server did not answer for {failed_polls} s"));
                                }
                                Probe::Alive => {}
                            }
                        } else {
                            failed_polls = 0;
                        }
                        if let Ok(info) = polled {
                            let status = info.get("execution_status").and_then(Value::as_str).unwrap_or("").to_string();
                            for v in self.reconcile().await {
                                track(&v, &mut last_error, &mut text_reply, &mut self.live_cost);
                            }
                            if status == "error" || status == "stuck" {
                                break (status, None);
                            }
                            if ["finished", "paused", "waiting_for_confirmation"].contains(&status.as_str()) {
                                if rest_terminal.as_deref() == Some(status.as_str()) {
                                    break (status, None);
                                }
                                rest_terminal = Some(status);
                            } else {
                                rest_terminal = None;
                            }
                        }
                    }
                },
                _ = tokio::time::sleep_until(wait_until.into()) => {
                    if stop.is_some() {
                        // The agent did not come to rest after the interrupt within max_wait.
                        break ("running".to_string(), None);
                    }
                    stop = Some(Stop::Timeout);
                    stop_deadline = Some(Instant::now() + step.max_wait.0);
                    let _ = self.client.interrupt(&self.id).await;
                },
                _ = self.interrupt.changed() => {
                    if stop.is_none() {
                        stop = Some(Stop::Interrupted);
                        stop_deadline = Some(Instant::now() + step.max_wait.0);
                        let _ = self.client.interrupt(&self.id).await;
                    }
                },
            }
        };
        if let Some(quiet) = step.quiet_for.map(|q| q.0.0).filter(|q| !q.is_zero()) {
            self.drain_quiet(quiet, step.max_wait.0, &mut last_error, &mut text_reply).await;
        }
        let reason = match (stop, status.as_str()) {
            (Some(Stop::Timeout), _) => EndReason::Timeout,
            (Some(Stop::Budget), _) => EndReason::Budget,
            (Some(Stop::Interrupted), _) => EndReason::Interrupted,
            (None, "finished") => EndReason::Finished,
            (None, "error") => EndReason::Error,
            (None, "stuck") => EndReason::Stuck,
            (None, _) => EndReason::Paused,
        };
        if reason == EndReason::Error && last_error.is_none() {
            // The error event can trail the status frame over REST; look for it once more.
            for v in self.reconcile().await {
                track(&v, &mut last_error, &mut text_reply, &mut self.live_cost);
            }
        }
        Verdict { reason, status: Some(status), error: last_error, text_reply, latency_ms: latency }
    }

    /// The opt-in quiet window: keep reading until no frame came for `quiet`, at most `max_wait`.
    async fn drain_quiet(
        &mut self,
        quiet: Duration,
        max_wait: Duration,
        err: &mut Option<StepError>,
        text: &mut Option<String>,
    ) {
        let hard = Instant::now() + max_wait;
        while self.socket.is_some() {
            let until = (Instant::now() + quiet).min(hard);
            match tokio::time::timeout_at(until.into(), recv(&mut self.socket)).await {
                Ok(Some(WsEvent::Frame(v))) => {
                    self.log(&v);
                    track(&v, err, text, &mut self.live_cost);
                }
                Ok(Some(WsEvent::Reconnected)) => {
                    self.reconcile().await;
                }
                Ok(Some(WsEvent::Disconnected)) => return,
                Ok(_) => self.socket = None,
                Err(_) => return,
            }
            if Instant::now() >= hard {
                return;
            }
        }
    }

    /// Deletes the conversation (its persisted data and terminal sessions).
    pub async fn close(mut self) -> Result<(), String> {
        self.socket = None;
        if self.lost {
            return Err("the agent-server is gone".into());
        }
        self.client.delete_conversation(&self.id).await.map_err(|e| e.to_string())
    }
}

struct Verdict {
    reason: EndReason,
    status: Option<String>,
    error: Option<StepError>,
    /// The agent's plain-text reply that ended its turn, if it ended with one.
    text_reply: Option<String>,
    latency_ms: Option<f64>,
}

impl Verdict {
    fn lost(detail: String) -> Verdict {
        Verdict {
            reason: EndReason::Lost,
            status: None,
            error: Some(StepError { code: "ConnectionLost".into(), detail }),
            text_reply: None,
            latency_ms: None,
        }
    }
}

async fn recv(socket: &mut Option<EventSocket>) -> Option<WsEvent> {
    match socket {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn is_full_state(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("ConversationStateUpdateEvent")
        && v.get("key").and_then(Value::as_str) == Some("full_state")
}

/// The status that ends a run, if this frame carries one.
fn terminal_status(v: &Value) -> Option<String> {
    if v.get("kind").and_then(Value::as_str) != Some("ConversationStateUpdateEvent") {
        return None;
    }
    match v.get("key").and_then(Value::as_str) {
        Some("full_state") => {
            let status = v.get("value")?.get("execution_status")?.as_str()?;
            (status != "running").then(|| status.to_string())
        }
        Some("execution_status") => {
            let status = v.get("value")?.as_str()?;
            (status == "error" || status == "stuck").then(|| status.to_string())
        }
        _ => None,
    }
}

/// Remembers what the report needs from the stream: the last error, the agent's text reply, live cost.
fn track(v: &Value, last_error: &mut Option<StepError>, text_reply: &mut Option<String>, live_cost: &mut f64) {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    match kind {
        "ConversationErrorEvent" => {
            *last_error = Some(StepError {
                code: v.get("code").and_then(Value::as_str).unwrap_or("Error").to_string(),
                detail: v.get("detail").and_then(Value::as_str).unwrap_or("").to_string(),
            });
        }
        "MessageEvent" if v.get("source").and_then(Value::as_str) == Some("agent") => {
            let text: String = v
                .pointer("/llm_message/content")
                .and_then(Value::as_array)
                .map(|parts| {
                    parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
                })
                .unwrap_or_default();
            *text_reply = Some(text);
        }
        "ActionEvent" => *text_reply = None,
        "ConversationStateUpdateEvent" => {
            let stats = match v.get("key").and_then(Value::as_str) {
                Some("stats") => v.get("value"),
                Some("full_state") => v.pointer("/value/stats"),
                _ => None,
            };
            if let Some(s) = stats {
                *live_cost = sum_stats(s).cost.max(*live_cost);
            }
        }
        _ => {}
    }
}

/// A plain-text turn that ends in a question asks the user something.
fn is_question(text: &str) -> bool {
    text.trim_end().ends_with('?')
}

pub fn message_text(message: &Message, job_dir: &Path) -> String {
    match message {
        Message::Inline(t) => t.clone(),
        Message::File { file } => std::fs::read_to_string(job_dir.join(file)).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(key: &str, value: Value) -> Value {
        json!({"kind": "ConversationStateUpdateEvent", "id": "x", "key": key, "value": value})
    }

    #[test]
    fn completion_rule() {
        // The authoritative end: a non-running full_state.
        assert_eq!(
            terminal_status(&state("full_state", json!({"execution_status": "finished"}))).as_deref(),
            Some("finished")
        );
        assert_eq!(
            terminal_status(&state("full_state", json!({"execution_status": "paused"}))).as_deref(),
            Some("paused")
        );
        assert_eq!(terminal_status(&state("full_state", json!({"execution_status": "running"}))), None);
        // Per-field error and stuck end a step at once; finished and idle never do.
        assert_eq!(terminal_status(&state("execution_status", json!("error"))).as_deref(), Some("error"));
        assert_eq!(terminal_status(&state("execution_status", json!("stuck"))).as_deref(), Some("stuck"));
        assert_eq!(terminal_status(&state("execution_status", json!("finished"))), None);
        assert_eq!(terminal_status(&state("execution_status", json!("idle"))), None);
        assert_eq!(terminal_status(&json!({"kind": "ActionEvent", "id": "y"})), None);
    }

    #[test]
    fn costs_sum_every_usage_id() {
        let stats = json!({"usage_to_metrics": {
            "agent": {"accumulated_cost": 0.5, "accumulated_token_usage": {"prompt_tokens": 10, "completion_tokens": 2}, "costs": [{}, {}]},
            "condenser": {"accumulated_cost": 0.25, "accumulated_token_usage": {"prompt_tokens": 5, "completion_tokens": 1, "cache_read_tokens": 3}, "costs": [{}]}
        }});
        let t = sum_stats(&stats);
        assert_eq!(t.cost, 0.75);
        assert_eq!(t.tokens.prompt, 15);
        assert_eq!(t.tokens.cache_read, 3);
        assert_eq!(t.llm_calls, 3);
    }

    #[test]
    fn questions_and_errors_are_tracked() {
        let (mut err, mut text, mut cost) = (None, None, 0.0);
        let msg = json!({"kind": "MessageEvent", "source": "agent", "llm_message": {"content": [{"type": "text", "text": "Which one?"}]}});
        track(&msg, &mut err, &mut text, &mut cost);
        assert!(text.as_deref().is_some_and(is_question));
        track(&json!({"kind": "ActionEvent"}), &mut err, &mut text, &mut cost);
        assert!(text.is_none(), "a later tool call means the turn did not end with the question");
        track(&json!({"kind": "ConversationErrorEvent", "code": "X", "detail": "d"}), &mut err, &mut text, &mut cost);
        assert_eq!(err.map(|e| e.code), Some("X".into()));
    }
}
