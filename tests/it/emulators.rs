//! Offline doubles of the OpenHands Cloud API and the Runtime API (shared/docs/sandbox-apis.md §4). Only
//! provisioning is emulated: every sandbox is a real local agent-server process. Faults are injected per
//! test: slow starts, ERROR, 503 with Retry-After on create, failing deletes, a sandbox that goes MISSING
//! while a job runs. Every request is recorded with its auth header, so tests can check them.

use crate::support::{free_port, spawn_agent_server};
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default, Clone)]
pub struct Faults {
    /// Stay STARTING (pod pending) at least this long.
    pub start_delay: Duration,
    /// Go to ERROR (pod failed) instead of RUNNING.
    pub go_error: bool,
    /// Answer this many creates with `failing_status` (503 unless set) and Retry-After: 1, creating nothing.
    pub failing_creates: u32,
    pub failing_status: Option<u16>,
    /// Answer every delete/stop with this status.
    pub delete_status: Option<u16>,
    /// Kill the server and report MISSING this long after it became RUNNING.
    pub missing_after: Option<Duration>,
    /// Create the sandbox but answer this many creates with 503 anyway (the answer is lost).
    pub lost_creates: u32,
    /// Once a sandbox runs, answer each `GET /api/v1/sandboxes?id=` only after this long.
    pub slow_lookups: Option<Duration>,
    /// Put a fault proxy in front of each sandbox's agent-server (its AGENT_SERVER URL is the proxy's);
    /// a resume unblocks it.
    pub proxied: bool,
    /// Name this host (not loopback) in the agent-server URLs returned, over plain http.
    pub far_host: Option<&'static str>,
    /// Return no session key with the agent-server URL (a provider whose servers take none).
    pub no_session_key: bool,
}

pub struct Sandbox {
    pub id: String,
    pub status: String,
    pub port: u16,
    /// What AGENT_SERVER points at: the server's port, or its proxy's.
    pub url_port: u16,
    pub proxy: Option<Arc<crate::proxy::Proxy>>,
    pub key: String,
    /// The host of the agent-server URL returned.
    host: &'static str,
    /// No session key is returned with it.
    no_key: bool,
    child: Option<std::process::Child>,
    _state: tempfile::TempDir,
    running_since: Option<Instant>,
    created: Instant,
}

impl Sandbox {
    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: a signal to our own child's process group (the server and its wrapper).
            unsafe { libc::kill(-(c.id() as i32), sig) };
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// TERM first, so that the wrapper takes the server's tmux servers with it (they are out of the group's
/// reach); KILL if it has not gone within a few seconds.
fn kill(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let group = -(c.id() as i32);
        // SAFETY: signals to our own child's process group (the server and its wrapper).
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = c.wait();
    }
}

#[derive(Default)]
pub struct Shared {
    pub key: String,
    pub faults: Mutex<Faults>,
    pub sandboxes: Mutex<HashMap<String, Sandbox>>,
    /// (method and path, the auth header it carried)
    pub requests: Mutex<Vec<(String, String)>>,
    pub creates: Mutex<u32>,
    pub deletes: Mutex<u32>,
    /// Lookups being held by `slow_lookups` right now.
    pub held_lookups: Mutex<u32>,
}

pub struct Emulator {
    pub url: String,
    pub shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.sandboxes.lock().unwrap().clear();
    }
}

#[derive(Clone)]
pub enum Api {
    Cloud,
    Runtime,
}

impl Emulator {
    pub fn start(api: Api, key: &str, faults: Faults) -> Emulator {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shared = Arc::new(Shared { key: key.to_string(), faults: Mutex::new(faults), ..Default::default() });
        let router = match api {
            Api::Cloud => Router::new()
                .route("/api/v1/sandboxes", post(cloud_create).get(cloud_get))
                .route("/api/v1/sandboxes/search", get(cloud_search))
                .route("/api/v1/sandboxes/{id}", axum::routing::delete(cloud_delete))
                .route("/api/v1/sandboxes/{id}/pause", post(cloud_pause))
                .route("/api/v1/sandboxes/{id}/resume", post(cloud_resume)),
            Api::Runtime => Router::new()
                .route("/sessions/{sid}", get(rt_session))
                .route("/start", post(rt_start))
                .route("/stop", post(rt_stop))
                .route("/pause", post(rt_pause))
                .route("/resume", post(rt_resume)),
        }
        .with_state(shared.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let monitor_state = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let server = axum::serve(listener, router).with_graceful_shutdown(async {
                    let _ = rx.await;
                });
                tokio::select! {
                    _ = server => {}
                    _ = monitor(monitor_state) => {}
                }
            });
        });
        Emulator { url, shared, shutdown: Some(tx), thread: Some(thread) }
    }

    pub fn creates(&self) -> u32 {
        *self.shared.creates.lock().unwrap()
    }

    pub fn deletes(&self) -> u32 {
        *self.shared.deletes.lock().unwrap()
    }

    /// How many lookups `slow_lookups` holds right now.
    pub fn held_lookups(&self) -> u32 {
        *self.shared.held_lookups.lock().unwrap()
    }

    /// The provider pauses every running sandbox now (the server process is frozen).
    pub fn pause_running(&self) {
        for s in self.shared.sandboxes.lock().unwrap().values_mut().filter(|s| s.status == "RUNNING") {
            s.signal(libc::SIGSTOP);
            s.status = "PAUSED".into();
        }
    }

    /// The fault proxy in front of the (first) sandbox, when `proxied`.
    pub fn proxy(&self) -> Option<Arc<crate::proxy::Proxy>> {
        self.shared.sandboxes.lock().unwrap().values().find_map(|s| s.proxy.clone())
    }

    /// The provider reports every running sandbox PAUSED (its proxy, if any, answers nothing meanwhile;
    /// the server process itself runs on, as a frozen one would resume).
    pub fn mark_paused(&self) {
        for s in self.shared.sandboxes.lock().unwrap().values_mut().filter(|s| s.status == "RUNNING") {
            s.status = "PAUSED".into();
            if let Some(p) = &s.proxy {
                p.set_blocked(true);
            }
        }
    }

    /// The ids of the sandboxes that exist (not deleted).
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.shared.sandboxes.lock().unwrap().keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn statuses(&self) -> Vec<String> {
        self.shared.sandboxes.lock().unwrap().values().map(|s| s.status.clone()).collect()
    }
}

/// Moves sandboxes along: STARTING → RUNNING once the server answers (and the start delay passed);
/// RUNNING → MISSING when the fault says so.
async fn monitor(shared: Arc<Shared>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let faults = shared.faults.lock().unwrap().clone();
        let starting: Vec<(String, u16, Instant)> = shared
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.status == "STARTING")
            .map(|s| (s.id.clone(), s.port, s.created))
            .collect();
        for (id, port, created) in starting {
            if created.elapsed() < faults.start_delay {
                continue;
            }
            let healthy = matches!(http.get(format!("http://127.0.0.1:{port}/health")).send().await, Ok(r) if r.status().is_success());
            if (healthy || faults.go_error)
                && let Some(s) = shared.sandboxes.lock().unwrap().get_mut(&id)
            {
                s.status = if faults.go_error { "ERROR".into() } else { "RUNNING".into() };
                s.running_since = Some(Instant::now());
            }
        }
        if let Some(after) = faults.missing_after {
            for s in shared.sandboxes.lock().unwrap().values_mut() {
                if s.status == "RUNNING" && s.running_since.is_some_and(|t| t.elapsed() >= after) {
                    kill(&mut s.child);
                    s.status = "MISSING".into();
                }
            }
        }
    }
}

fn spawn_sandbox(id: &str, faults: &Faults) -> Sandbox {
    let proxied = faults.proxied;
    let port = free_port();
    let state = tempfile::tempdir().unwrap();
    let key = format!("emulated-session-{}", uuid::Uuid::new_v4().simple());
    // Its temp files (the diff snapshots among them) go with the sandbox, as on a provider's machine.
    let tmp = state.path().to_str().expect("a UTF-8 temp dir");
    let child = spawn_agent_server(port, &key, state.path(), &[("TMPDIR", tmp)]);
    let proxy = proxied.then(|| Arc::new(crate::proxy::Proxy::start(&format!("127.0.0.1:{port}"))));
    Sandbox {
        id: id.to_string(),
        status: "STARTING".into(),
        port,
        url_port: proxy.as_ref().map_or(port, |p| p.port),
        proxy,
        key,
        host: faults.far_host.unwrap_or("127.0.0.1"),
        no_key: faults.no_session_key,
        child: Some(child),
        _state: state,
        running_since: None,
        created: Instant::now(),
    }
}

fn record(shared: &Shared, what: String, headers: &HeaderMap, header: &str) -> bool {
    let auth = headers.get(header).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    shared.requests.lock().unwrap().push((what, auth.clone()));
    let expected = if header == "authorization" { format!("Bearer {}", shared.key) } else { shared.key.clone() };
    auth == expected
}

/// A refused create: 503 (or the fault's status) with Retry-After: 1, its detail echoing the API key the
/// request carried (as a careless provider might): what ohrun records of it must be redacted.
fn busy(faults: &Faults, key: &str) -> Response {
    let status = StatusCode::from_u16(faults.failing_status.unwrap_or(503)).unwrap();
    let detail = format!("busy, try later (request made with key {key})");
    (status, [("retry-after", "1")], axum::Json(json!({ "detail": detail }))).into_response()
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "NoCredentialsError"}))).into_response()
}

fn query_values(query: &Option<String>, name: &str) -> Vec<String> {
    query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.replace("%2F", "/").replace("%3A", ":"))
        .collect()
}

fn cloud_info(s: &Sandbox) -> Value {
    let running = s.status == "RUNNING";
    json!({
        "id": s.id,
        "created_by_user_id": "emulated-user",
        "sandbox_spec_id": "emulated-spec",
        "status": s.status,
        "session_api_key": if running && !s.no_key { json!(s.key) } else { Value::Null },
        "exposed_urls": if running {
            json!([{"name": "AGENT_SERVER", "url": format!("http://{}:{}", s.host, s.url_port), "port": s.url_port}])
        } else { Value::Null },
        "created_at": "2026-11-25T00:00:00Z",
    })
}

async fn cloud_create(State(shared): State<Arc<Shared>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if !record(&shared, format!("POST /api/v1/sandboxes?{}", q.clone().unwrap_or_default()), &headers, "authorization")
    {
        return unauthorized();
    }
    {
        let mut faults = shared.faults.lock().unwrap();
        if faults.failing_creates > 0 {
            faults.failing_creates -= 1;
            return busy(&faults, &shared.key);
        }
    }
    *shared.creates.lock().unwrap() += 1;
    let id = format!("sbx{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let faults = shared.faults.lock().unwrap().clone();
    let sandbox = spawn_sandbox(&id, &faults);
    let info = cloud_info(&sandbox);
    shared.sandboxes.lock().unwrap().insert(id, sandbox);
    let mut faults = shared.faults.lock().unwrap();
    if faults.lost_creates > 0 {
        faults.lost_creates -= 1;
        return busy(&faults, &shared.key);
    }
    axum::Json(info).into_response()
}

async fn cloud_get(State(shared): State<Arc<Shared>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if !record(&shared, "GET /api/v1/sandboxes".into(), &headers, "authorization") {
        return unauthorized();
    }
    let slow = shared.faults.lock().unwrap().slow_lookups;
    let running = shared.sandboxes.lock().unwrap().values().any(|s| s.status == "RUNNING");
    if let Some(delay) = slow.filter(|_| running) {
        *shared.held_lookups.lock().unwrap() += 1;
        tokio::time::sleep(delay).await;
        *shared.held_lookups.lock().unwrap() -= 1;
    }
    let boxes = shared.sandboxes.lock().unwrap();
    let items: Vec<Value> =
        query_values(&q, "id").iter().map(|id| boxes.get(id).map(cloud_info).unwrap_or(Value::Null)).collect();
    axum::Json(items).into_response()
}

async fn cloud_search(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !record(&shared, "GET /api/v1/sandboxes/search".into(), &headers, "authorization") {
        return unauthorized();
    }
    let items: Vec<Value> = shared.sandboxes.lock().unwrap().values().map(cloud_info).collect();
    axum::Json(json!({"items": items, "next_page_id": null})).into_response()
}

async fn cloud_delete(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    if !record(&shared, format!("DELETE /api/v1/sandboxes/{id}"), &headers, "authorization") {
        return unauthorized();
    }
    // Like the older route: the handler reads `?sandbox_id=` and answers 422 without it.
    if query_values(&q, "sandbox_id") != vec![id.clone()] {
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"detail": "sandbox_id is required"})))
            .into_response();
    }
    if let Some(status) = shared.faults.lock().unwrap().delete_status {
        return (StatusCode::from_u16(status).unwrap(), axum::Json(json!({"detail": "delete failed"}))).into_response();
    }
    *shared.deletes.lock().unwrap() += 1;
    match shared.sandboxes.lock().unwrap().remove(&id) {
        Some(_) => axum::Json(json!({"success": true})).into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"detail": "Not Found"}))).into_response(),
    }
}

async fn cloud_pause(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !record(&shared, format!("POST /api/v1/sandboxes/{id}/pause"), &headers, "authorization") {
        return unauthorized();
    }
    set_status(&shared, &id, "PAUSED")
}

async fn cloud_resume(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !record(&shared, format!("POST /api/v1/sandboxes/{id}/resume"), &headers, "authorization") {
        return unauthorized();
    }
    set_status(&shared, &id, "RUNNING")
}

fn set_status(shared: &Shared, id: &str, status: &str) -> Response {
    match shared.sandboxes.lock().unwrap().get_mut(id) {
        Some(s) => {
            s.signal(if status == "PAUSED" { libc::SIGSTOP } else { libc::SIGCONT });
            if let Some(p) = &s.proxy {
                p.set_blocked(status == "PAUSED");
            }
            s.status = status.into();
            axum::Json(json!({"success": true})).into_response()
        }
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"detail": "Not Found"}))).into_response(),
    }
}

// ---- Runtime API ----

fn runtime_info(s: &Sandbox) -> Value {
    let (status, pod) = match s.status.as_str() {
        // Kubernetes-style capitalisation on purpose; a null pod_status while it starts.
        "STARTING" if s.created.elapsed() < Duration::from_millis(500) => ("running", Value::Null),
        "STARTING" => ("running", json!("Pending")),
        "RUNNING" => ("running", json!("Ready")),
        "PAUSED" => ("paused", json!("Ready")),
        "ERROR" => ("error", json!("Failed")),
        _ => ("stopped", json!("not found")),
    };
    json!({
        "runtime_id": format!("rt-{}", s.id),
        "session_id": s.id,
        "url": format!("http://{}:{}", s.host, s.port),
        "session_api_key": if s.no_key { Value::Null } else { json!(s.key) },
        "status": status,
        "pod_status": pod,
        "restart_count": 0,
        "pod_logs": if s.status == "ERROR" { "emulated: the image failed" } else { "" },
    })
}

async fn rt_session(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(sid): Path<String>) -> Response {
    if !record(&shared, format!("GET /sessions/{sid}"), &headers, "x-api-key") {
        return unauthorized();
    }
    match shared.sandboxes.lock().unwrap().get(&sid) {
        Some(s) if s.status != "MISSING" => axum::Json(runtime_info(s)).into_response(),
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({"detail": "session not found"}))).into_response(),
    }
}

async fn rt_start(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !record(&shared, "POST /start".into(), &headers, "x-api-key") {
        return unauthorized();
    }
    {
        let mut faults = shared.faults.lock().unwrap();
        if faults.failing_creates > 0 {
            faults.failing_creates -= 1;
            return busy(&faults, &shared.key);
        }
    }
    let Some(sid) = body.get("session_id").and_then(Value::as_str).map(str::to_string) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"detail": "session_id is required"}))).into_response();
    };
    if body.get("image").and_then(Value::as_str).is_none() {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"detail": "image is required"}))).into_response();
    }
    // A session that exists is returned as it is, unless it stopped: then it is started again.
    if let Some(existing) = shared.sandboxes.lock().unwrap().get(&sid).filter(|s| s.status != "STOPPED") {
        return axum::Json(runtime_info(existing)).into_response();
    }
    *shared.creates.lock().unwrap() += 1;
    let faults = shared.faults.lock().unwrap().clone();
    let sandbox = spawn_sandbox(&sid, &faults);
    let info = runtime_info(&sandbox);
    shared.sandboxes.lock().unwrap().insert(sid, sandbox);
    axum::Json(info).into_response()
}

fn by_runtime_id<'a>(boxes: &'a mut HashMap<String, Sandbox>, body: &Value) -> Option<&'a mut Sandbox> {
    let rid = body.get("runtime_id").and_then(Value::as_str)?;
    boxes.values_mut().find(|s| format!("rt-{}", s.id) == rid)
}

async fn rt_stop(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !record(&shared, "POST /stop".into(), &headers, "x-api-key") {
        return unauthorized();
    }
    if let Some(status) = shared.faults.lock().unwrap().delete_status {
        return (StatusCode::from_u16(status).unwrap(), axum::Json(json!({"detail": "stop failed"}))).into_response();
    }
    *shared.deletes.lock().unwrap() += 1;
    let mut boxes = shared.sandboxes.lock().unwrap();
    match by_runtime_id(&mut boxes, &body) {
        Some(s) => {
            kill(&mut s.child);
            s.status = "STOPPED".into();
            axum::Json(json!({})).into_response()
        }
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"detail": "runtime not found"}))).into_response(),
    }
}

async fn rt_pause(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    rt_set(&shared, &headers, &body, "POST /pause", "PAUSED")
}

async fn rt_resume(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    rt_set(&shared, &headers, &body, "POST /resume", "RUNNING")
}

fn rt_set(shared: &Shared, headers: &HeaderMap, body: &Value, what: &str, status: &str) -> Response {
    if !record(shared, what.into(), headers, "x-api-key") {
        return unauthorized();
    }
    let mut boxes = shared.sandboxes.lock().unwrap();
    match by_runtime_id(&mut boxes, body) {
        Some(s) => {
            s.status = status.into();
            axum::Json(json!({})).into_response()
        }
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"detail": "runtime not found"}))).into_response(),
    }
}
