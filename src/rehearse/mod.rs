//! Rehearsal: an OpenAI-compatible `/v1/chat/completions` endpoint that answers from a script, so a job
//! can be tried end to end with no provider and no spend. Each agent call (a request that offers tools)
//! takes the next scripted reply; side calls without tools (title generation, condensation) get a short
//! text and leave the script alone. Every answer carries realistic `usage`, so costs are computed for real
//! by the agent-server from the job's per-token prices.

pub mod script;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use script::{Reply, Script};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Default prices when the job sets none, so a rehearsal shows a non-zero cost (USD per token).
pub const DEFAULT_INPUT_COST_PER_TOKEN: &str = "0.000003";
pub const DEFAULT_OUTPUT_COST_PER_TOKEN: &str = "0.000015";
/// The model name the agent-server is told to use: `openai/` makes litellm speak the OpenAI protocol.
pub const MODEL: &str = "openai/rehearsal";

#[derive(Debug, Default)]
struct Counters {
    next_reply: usize,
    scripted_calls: u64,
    side_calls: u64,
    exhausted_calls: u64,
}

struct Shared {
    script: Script,
    counters: Mutex<Counters>,
}

/// A running rehearsal endpoint; stops when dropped.
pub struct Rehearsal {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// How many calls a rehearsal answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub scripted: u64,
    pub side: u64,
    /// Agent calls that came after the script ran out (answered with `finish`).
    pub beyond_script: u64,
}

impl Rehearsal {
    /// Starts the endpoint on `bind` (port chosen by the OS).
    pub async fn start(script: Script, bind: IpAddr) -> std::io::Result<Rehearsal> {
        Self::start_on(script, bind, 0).await
    }

    /// Starts the endpoint on `bind:port` (0: any free port).
    pub async fn start_on(script: Script, bind: IpAddr, port: u16) -> std::io::Result<Rehearsal> {
        let listener = tokio::net::TcpListener::bind((bind, port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared { script, counters: Mutex::new(Counters::default()) });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Rehearsal { addr, shared, task })
    }

    /// The base URL to give litellm, seen from `host`.
    pub fn base_url(&self, host: &str) -> String {
        format!("http://{host}:{}/v1", self.addr.port())
    }

    pub fn calls(&self) -> CallCounts {
        let c = self.shared.counters.lock().unwrap_or_else(|e| e.into_inner());
        CallCounts { scripted: c.scripted_calls, side: c.side_calls, beyond_script: c.exhausted_calls }
    }
}

impl Drop for Rehearsal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn chat(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"message": "body is not JSON"}})))
            .into_response();
    };
    let offers_tools = request.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    let model = request.get("model").and_then(Value::as_str).unwrap_or("rehearsal").to_string();
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let (reply, call_no) = {
        let mut c = shared.counters.lock().unwrap_or_else(|e| e.into_inner());
        if offers_tools {
            c.scripted_calls += 1;
            let n = c.scripted_calls;
            match shared.script.replies.get(c.next_reply) {
                Some(r) => {
                    c.next_reply += 1;
                    (r.clone(), n)
                }
                None => {
                    c.exhausted_calls += 1;
                    (Reply::finish("(rehearsal) The script has no more replies, so the agent finishes here."), n)
                }
            }
        } else {
            c.side_calls += 1;
            (Reply::text("Rehearsal"), c.side_calls + 1_000_000)
        }
    };
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay.0).await;
    }
    if let Some(err) = &reply.error {
        let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error": {"message": err.message, "type": "rehearsal_error", "code": err.status}});
        return (status, axum::Json(body)).into_response();
    }
    let usage = reply.usage.unwrap_or(shared.script.usage);
    let message = reply.to_message(call_no);
    let finish_reason = if message.get("tool_calls").is_some() { "tool_calls" } else { "stop" };
    let usage_json = json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    });
    let id = format!("rehearsal-{call_no}");
    if stream {
        return sse(&id, &model, &message, finish_reason, &usage_json);
    }
    axum::Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage_json,
    }))
    .into_response()
}

/// The same answer as server-sent events: the message in one delta, then the finish reason and usage.
fn sse(id: &str, model: &str, message: &Value, finish_reason: &str, usage: &Value) -> Response {
    let mut delta = message.clone();
    if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
        for (i, call) in calls.iter_mut().enumerate() {
            call["index"] = json!(i);
        }
    }
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c =
            json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": choices});
        if let Some(u) = usage {
            c["usage"] = u.clone();
        }
        format!("data: {c}\n\n")
    };
    let mut body = chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}]), None);
    body.push_str(&chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish_reason}]), Some(usage)));
    body.push_str("data: [DONE]\n\n");
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}
