//! A simulated agent-server for scale benchmarks (`bench/scale.py`): the REST + WebSocket protocol of
//! shared/docs/agent-server-api.md as ohrun uses it, with no agent, no LLM and no terminal behind it, so
//! that one process can hold a thousand conversations and the numbers measured are ohrun's own.
//!
//! Each run of a conversation emits `--actions` terminal action/observation pairs (each followed by a
//! `stats` update, one simulated LLM call each) spread over `--step-time`, then a `finish` action, the
//! per-field `execution_status: finished` and, last, the authoritative `full_state` snapshot — the order
//! the real server keeps. `/interrupt` and `/pause` end a run at once with a `paused` snapshot. Shell
//! commands (setup) end at once with exit code 0 and no output.
//!
//! `cargo run --release --example sim_agent_server -- --port 8000 --key KEY --step-time 2s --actions 5`

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What the simulation does per run.
#[derive(Clone)]
struct Config {
    key: Option<String>,
    step_time: Duration,
    actions: u32,
    /// The cost of one simulated LLM call.
    call_cost: f64,
}

#[derive(Default)]
struct Conversation {
    events: Vec<Value>,
    status: String,
    subscribers: Vec<mpsc::UnboundedSender<String>>,
    /// Bumped by each run and each interrupt: a run whose number is no longer current stops.
    run: u64,
    calls: u32,
}

#[derive(Default)]
struct Server {
    conversations: Mutex<HashMap<String, Conversation>>,
    /// Last timestamp handed out: every event gets a later one (ohrun compares them as strings).
    last_micros: Mutex<u128>,
}

type Shared = Arc<(Server, Config)>;

/// Event sockets open now, and the most open at once (`GET /sim/stats`): how many runs were really
/// under way together.
static SOCKETS: AtomicUsize = AtomicUsize::new(0);
static PEAK_SOCKETS: AtomicUsize = AtomicUsize::new(0);

/// Counts an open event socket for as long as it lives.
struct Counted;

impl Counted {
    fn new() -> Counted {
        let now = SOCKETS.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK_SOCKETS.fetch_max(now, Ordering::SeqCst);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        SOCKETS.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let port: u16 = arg("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let config = Config {
        key: arg("--key"),
        step_time: arg("--step-time")
            .and_then(|t| humantime::parse_duration(&t).ok())
            .unwrap_or(Duration::from_secs(1)),
        actions: arg("--actions").and_then(|n| n.parse().ok()).unwrap_or(3),
        call_cost: 0.001,
    };
    // A long accept queue: 10,000 runs connect within a second or two, and the default (1,024) would
    // make the rest wait for SYN retries.
    let listening = tokio::net::TcpSocket::new_v4().expect("socket");
    listening.set_reuseaddr(true).expect("SO_REUSEADDR");
    listening.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port))).expect("bind");
    let listener = listening.listen(65_535).expect("listen");
    // The first line says where it listens (the benchmark reads it).
    println!("http://{}", listener.local_addr().expect("address"));
    let shared: Shared = Arc::new((Server::default(), config));
    raise_open_file_limit();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely: wait for some to close rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut head = [0u8; 16];
            let n = stream.peek(&mut head).await.unwrap_or(0);
            if head[..n].starts_with(b"GET /sockets/") {
                socket(stream, shared).await;
            } else {
                http(stream, shared).await;
            }
        });
    }
}

impl Server {
    /// Naive local ISO time with microseconds, strictly increasing.
    fn timestamp(&self) -> String {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_micros();
        let mut last = self.last_micros.lock().unwrap();
        *last = (*last + 1).max(now);
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(*last as u64);
        humantime::format_rfc3339_micros(t).to_string().trim_end_matches('Z').to_string()
    }

    /// Records `event` (unless it is a transient snapshot) and sends it to every subscriber.
    fn emit(&self, cid: &str, mut event: Value, persist: bool) {
        event["id"] = json!(uuid::Uuid::new_v4().to_string());
        event["timestamp"] = json!(self.timestamp());
        let mut conversations = self.conversations.lock().unwrap();
        let Some(c) = conversations.get_mut(cid) else { return };
        let text = event.to_string();
        c.subscribers.retain(|s| s.send(text.clone()).is_ok());
        if persist {
            c.events.push(event);
        }
    }

    fn state_event(&self, cid: &str, key: &str, value: Value) {
        let event =
            json!({"kind": "ConversationStateUpdateEvent", "source": "environment", "key": key, "value": value});
        self.emit(cid, event, key != "full_state");
    }

    fn full_state(&self, cid: &str, calls: u32, status: &str, cost: f64) -> Value {
        json!({"id": cid, "execution_status": status, "stats": stats(calls, cost), "max_iterations": 500})
    }
}

/// `stats` as the server reports it: one usage id, `calls` calls so far.
fn stats(calls: u32, cost: f64) -> Value {
    let costs: Vec<Value> = (0..calls).map(|_| json!({"model": "sim", "cost": cost})).collect();
    json!({"usage_to_metrics": {"agent": {
        "model_name": "sim",
        "accumulated_cost": cost * f64::from(calls),
        "accumulated_token_usage": {"prompt_tokens": 1000 * calls, "completion_tokens": 50 * calls},
        "costs": costs,
    }}})
}

/// One run: actions over `step_time`, then the end in the real server's order.
async fn run(shared: Shared, cid: String, number: u64) {
    let (server, config) = &*shared;
    let still_current = |calls: &mut u32| {
        let mut conversations = server.conversations.lock().unwrap();
        let c = conversations.get_mut(&cid)?;
        (c.run == number).then(|| {
            c.calls += 1;
            *calls = c.calls;
        })
    };
    server.state_event(&cid, "execution_status", json!("running"));
    let pause = config.step_time / (config.actions + 1);
    let mut calls = 0;
    for i in 0..=config.actions {
        tokio::time::sleep(pause).await;
        if still_current(&mut calls).is_none() {
            return;
        }
        let (tool, action) = if i < config.actions {
            ("terminal", json!({"command": format!("echo {i}"), "kind": "TerminalAction"}))
        } else {
            ("finish", json!({"message": "done", "kind": "FinishAction"}))
        };
        let event =
            json!({"kind": "ActionEvent", "source": "agent", "tool_name": tool, "action": action, "thought": []});
        server.emit(&cid, event, true);
        if i < config.actions {
            let observation = json!({"kind": "ObservationEvent", "source": "environment", "tool_name": tool,
                "observation": {"content": [{"type": "text", "text": format!("{i}")}], "exit_code": 0, "kind": "TerminalObservation"}});
            server.emit(&cid, observation, true);
        }
        server.state_event(&cid, "stats", stats(calls, config.call_cost));
    }
    let done = {
        let mut conversations = server.conversations.lock().unwrap();
        match conversations.get_mut(&cid) {
            Some(c) if c.run == number => {
                c.status = "finished".into();
                true
            }
            _ => false,
        }
    };
    if done {
        server.state_event(&cid, "execution_status", json!("finished"));
        let snapshot = server.full_state(&cid, calls, "finished", config.call_cost);
        server.state_event(&cid, "full_state", snapshot);
    }
}

/// The event socket: first-frame auth, the subscribe-time snapshot, then every event as emitted.
async fn socket(stream: TcpStream, shared: Shared) {
    let mut path = String::new();
    // The handshake callback's type (and its large error) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                    resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
    let _counted = Counted::new();
    let cid = path.trim_start_matches("/sockets/events/").to_string();
    let (server, config) = &*shared;
    if config.key.is_some() {
        let auth = ws.next().await;
        let given = auth
            .and_then(|m| m.ok())
            .and_then(|m| serde_json::from_str::<Value>(m.to_text().ok()?).ok())
            .and_then(|v| v.get("session_api_key").and_then(Value::as_str).map(str::to_string));
        if given != config.key {
            let _ = ws.close(None).await;
            return;
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let snapshot = {
        let mut conversations = server.conversations.lock().unwrap();
        let Some(c) = conversations.get_mut(&cid) else { return };
        c.subscribers.push(tx);
        server.full_state(&cid, c.calls, &c.status, config.call_cost)
    };
    let first = json!({"kind": "ConversationStateUpdateEvent", "id": uuid::Uuid::new_v4().to_string(),
        "timestamp": server.timestamp(), "source": "environment", "key": "full_state", "value": snapshot});
    if ws.send(Message::text(first.to_string())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(text) => if ws.send(Message::text(text)).await.is_err() { return },
                None => return,
            },
            incoming = ws.next() => if !matches!(incoming, Some(Ok(_))) { return },
        }
    }
}

/// HTTP/1.1 with keep-alive, one request after the other on the connection.
async fn http(stream: TcpStream, shared: Shared) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let (mut length, mut key) = (0usize, None);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "x-session-api-key" => key = Some(value.trim().to_string()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let authorized = shared.1.key.is_none() || key == shared.1.key || target == "/health";
        let (status, answer) =
            if authorized { route(&shared, &method, &target, body) } else { (401, json!({"detail": "Unauthorized"})) };
        let text = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status} SIM\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if write.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn route(shared: &Shared, method: &str, target: &str, body: Value) -> (u16, Value) {
    let (server, config) = &**shared;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["health"]) => (200, json!("OK")),
        ("GET", ["sim", "stats"]) => (
            200,
            json!({"sockets": SOCKETS.load(Ordering::SeqCst), "peak_sockets": PEAK_SOCKETS.load(Ordering::SeqCst)}),
        ),
        ("GET", ["server_info"]) => (
            200,
            json!({"version": "1.58.2", "usable_tools": ["terminal", "file_editor", "task_tracker", "finish", "think"]}),
        ),
        // Shell commands (ohrun prepares the working directory with one) end at once, successfully: the
        // simulation runs nothing.
        ("POST", ["api", "bash", "start_bash_command"]) => {
            (200, json!({"id": uuid::Uuid::new_v4().simple().to_string()}))
        }
        ("POST", ["api", "bash", "execute_bash_command"]) => {
            (200, json!({"kind": "BashOutput", "order": 0, "stdout": "", "stderr": "", "exit_code": 0}))
        }
        ("GET", ["api", "bash", "bash_events", "search"]) => (
            200,
            json!({"items": [{"kind": "BashOutput", "order": 0, "stdout": "", "stderr": "", "exit_code": 0}], "next_page_id": null}),
        ),
        ("POST", ["api", "bash", "bash_commands", _, "stop"]) => (200, json!({"success": true})),
        ("GET", ["api", "conversations", "count"]) => (200, json!(server.conversations.lock().unwrap().len())),
        ("POST", ["api", "conversations"]) => {
            let cid = body.get("conversation_id").and_then(Value::as_str).unwrap_or_default().to_string();
            let mut conversations = server.conversations.lock().unwrap();
            conversations
                .entry(cid.clone())
                .or_insert_with(|| Conversation { status: "idle".into(), ..Default::default() });
            (201, json!({"id": cid, "execution_status": "idle"}))
        }
        ("GET", ["api", "conversations", cid]) => match server.conversations.lock().unwrap().get(*cid) {
            Some(c) => (200, server.full_state(cid, c.calls, &c.status, config.call_cost)),
            None => (404, json!({"detail": "Not Found"})),
        },
        ("DELETE", ["api", "conversations", cid]) => {
            let gone = server.conversations.lock().unwrap().remove(*cid);
            (if gone.is_some() { 200 } else { 404 }, json!({"success": gone.is_some()}))
        }
        ("POST", ["api", "conversations", cid, "events"]) => {
            if !server.conversations.lock().unwrap().contains_key(*cid) {
                return (404, json!({"detail": "Not Found"}));
            }
            let text = body.pointer("/content/0/text").cloned().unwrap_or(Value::Null);
            let event = json!({"kind": "MessageEvent", "source": "user",
                "llm_message": {"role": "user", "content": [{"type": "text", "text": text}]}});
            server.emit(cid, event, true);
            if body.get("run").and_then(Value::as_bool) == Some(true) {
                return start_run(shared, cid);
            }
            (200, json!({"success": true}))
        }
        ("POST", ["api", "conversations", cid, "run"]) => start_run(shared, cid),
        ("POST", ["api", "conversations", cid, "interrupt" | "pause"]) => {
            let calls = {
                let mut conversations = server.conversations.lock().unwrap();
                let Some(c) = conversations.get_mut(*cid) else { return (404, json!({"detail": "Not Found"})) };
                c.run += 1;
                c.status = "paused".into();
                c.calls
            };
            server.state_event(cid, "execution_status", json!("paused"));
            server.state_event(cid, "full_state", server.full_state(cid, calls, "paused", config.call_cost));
            (200, json!({"success": true}))
        }
        ("GET", ["api", "conversations", cid, "events", "search"]) => search(server, cid, query),
        _ => (404, json!({"detail": format!("no route for {method} {path}")})),
    }
}

fn start_run(shared: &Shared, cid: &str) -> (u16, Value) {
    let number = {
        let mut conversations = shared.0.conversations.lock().unwrap();
        let Some(c) = conversations.get_mut(cid) else { return (404, json!({"detail": "Not Found"})) };
        if c.status == "running" {
            return (409, json!({"detail": "Conversation already running. Wait for completion or pause first."}));
        }
        c.status = "running".into();
        c.run += 1;
        c.run
    };
    tokio::spawn(run(shared.clone(), cid.to_string(), number));
    (200, json!({"success": true}))
}

/// `events/search`: `kind` (or `kind__eq`), `source`, `timestamp__gte`, `limit`, `page_id` (an index),
/// oldest first.
fn search(server: &Server, cid: &str, query: &str) -> (u16, Value) {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().replace('+', " "))
    };
    let conversations = server.conversations.lock().unwrap();
    let Some(c) = conversations.get(cid) else { return (404, json!({"detail": "Not Found"})) };
    let kind = param("kind").or_else(|| param("kind__eq"));
    let source = param("source");
    let since = param("timestamp__gte");
    let limit: usize = param("limit").and_then(|l| l.parse().ok()).unwrap_or(100).clamp(1, 100);
    let start: usize = param("page_id").and_then(|p| p.parse().ok()).unwrap_or(0);
    let matching: Vec<&Value> = c
        .events
        .iter()
        .filter(|e| kind.as_deref().is_none_or(|k| e["kind"] == k))
        .filter(|e| source.as_deref().is_none_or(|s| e["source"] == s))
        .filter(|e| since.as_deref().is_none_or(|s| e["timestamp"].as_str().unwrap_or("") >= s))
        .collect();
    let page: Vec<&Value> = matching.iter().skip(start).take(limit).copied().collect();
    let next = (start + limit < matching.len()).then(|| (start + limit).to_string());
    (200, json!({"items": page, "next_page_id": next}))
}

/// A connection per run and a socket per conversation: raise the soft descriptor limit to the hard one.
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
