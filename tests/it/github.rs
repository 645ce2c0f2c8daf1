//! An emulator of the part of GitHub's REST API that delivery uses: repositories, pull requests (found by
//! head, created, updated), labels, reviewers and issue comments. It records every request (method, path,
//! query, headers, body) and can be told to: refuse draft pull requests with 422, answer the first create
//! with a secondary-rate-limit 403 and `retry-after: 1`, or stall after a create (to kill ohrun then).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub accept: Option<String>,
    pub api_version: Option<String>,
    pub body: String,
    pub at: std::time::Instant,
}

#[derive(Default, Clone)]
pub struct GhFaults {
    /// 422 "Draft pull requests are not supported in this repository." on a draft create.
    pub refuse_drafts: bool,
    /// Answer this many creates with 403, `retry-after: 1` and a secondary-rate-limit message.
    pub rate_limited_creates: u32,
    /// After a create is made, wait this long before answering it.
    pub stall_after_create: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct Pr {
    pub repo: String,
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
    pub state: String,
    pub labels: Vec<String>,
    pub reviewers: Vec<String>,
}

#[derive(Default)]
struct Shared {
    token: String,
    faults: Mutex<GhFaults>,
    requests: Mutex<Vec<ApiRequest>>,
    prs: Mutex<Vec<Pr>>,
    /// (repo, issue, id, body)
    comments: Mutex<Vec<(String, u64, u64, String)>>,
}

pub struct GithubEmulator {
    pub url: String,
    shared: Arc<Shared>,
    _server: crate::transport::TestServer,
}

type S = State<Arc<Shared>>;

impl GithubEmulator {
    pub fn start(token: &str, faults: GhFaults) -> GithubEmulator {
        let shared = Arc::new(Shared { token: token.to_string(), faults: Mutex::new(faults), ..Default::default() });
        let router = axum::Router::new()
            .route("/repos/{o}/{r}", get(repo))
            .route("/repos/{o}/{r}/pulls", get(list_prs).post(create_pr))
            .route("/repos/{o}/{r}/pulls/{n}", patch(update_pr))
            .route("/repos/{o}/{r}/pulls/{n}/requested_reviewers", post(reviewers))
            .route("/repos/{o}/{r}/issues/{n}/labels", post(labels))
            .route("/repos/{o}/{r}/issues/{n}/comments", get(list_comments).post(add_comment))
            .route("/repos/{o}/{r}/issues/comments/{id}", patch(edit_comment))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());
        let server = crate::transport::TestServer::start(router);
        GithubEmulator { url: server.url.clone(), shared, _server: server }
    }

    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn prs(&self) -> Vec<Pr> {
        self.shared.prs.lock().unwrap().clone()
    }

    pub fn comments(&self) -> Vec<(String, u64, u64, String)> {
        self.shared.comments.lock().unwrap().clone()
    }

    pub fn set_faults(&self, faults: GhFaults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Closes pull request `number` of `owner/repo` (as a maintainer would, between two runs).
    pub fn close(&self, repo: &str, number: u64) {
        let mut prs = self.shared.prs.lock().unwrap();
        let pr = prs.iter_mut().find(|p| p.repo == repo && p.number == number).expect("the pull request exists");
        pr.state = "closed".into();
    }
}

async fn record(State(s): S, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    s.requests.lock().unwrap().push(ApiRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        authorization: header("authorization"),
        accept: header("accept"),
        api_version: header("x-github-api-version"),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        at: std::time::Instant::now(),
    });
    if header("authorization") != Some(format!("Bearer {}", s.token)) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Bad credentials"}))).into_response();
    }
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

fn pr_json(url_base: &str, p: &Pr) -> Value {
    let (owner, _) = p.head.split_once(':').unwrap_or_default();
    json!({
        "number": p.number, "state": p.state, "draft": p.draft, "title": p.title, "body": p.body,
        "html_url": format!("{url_base}/{}/pull/{}", p.repo, p.number),
        "head": {"label": p.head, "ref": p.head.split_once(':').map(|x| x.1).unwrap_or_default(), "repo": {"owner": {"login": owner}}},
        "base": {"ref": p.base}, "merged_at": null,
    })
}

const WEB: &str = "https://github.example";

async fn repo(Path((o, r)): Path<(String, String)>) -> Json<Value> {
    Json(json!({"full_name": format!("{o}/{r}"), "default_branch": "main"}))
}

async fn list_prs(State(s): S, Path((o, r)): Path<(String, String)>, RawQuery(q): RawQuery) -> Json<Value> {
    let q = q.unwrap_or_default();
    let head = q
        .split('&')
        .find_map(|kv| kv.strip_prefix("head="))
        .map(|h| percent_encoding::percent_decode_str(h).decode_utf8_lossy().into_owned());
    // As GitHub: open ones only unless `state=closed` or `state=all` is asked for.
    let state = q.split('&').find_map(|kv| kv.strip_prefix("state=")).unwrap_or("open").to_string();
    let wanted = |p: &Pr| match state.as_str() {
        "all" => true,
        "closed" => p.state != "open",
        _ => p.state == "open",
    };
    let repo = format!("{o}/{r}");
    let prs = s.prs.lock().unwrap();
    let found: Vec<Value> = prs
        .iter()
        .filter(|p| p.repo == repo && head.as_ref().is_none_or(|h| &p.head == h) && wanted(p))
        .map(|p| pr_json(WEB, p))
        .collect();
    Json(Value::Array(found))
}

async fn create_pr(State(s): S, Path((o, r)): Path<(String, String)>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let faults = s.faults.lock().unwrap().clone();
    if faults.rate_limited_creates > 0 {
        s.faults.lock().unwrap().rate_limited_creates -= 1;
        let message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";
        return (StatusCode::FORBIDDEN, [("retry-after", "1")], Json(json!({"message": message}))).into_response();
    }
    let draft = v["draft"].as_bool().unwrap_or(false);
    if draft && faults.refuse_drafts {
        let e = json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": "Draft pull requests are not supported in this repository."}]});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(e)).into_response();
    }
    let repo = format!("{o}/{r}");
    let pr = {
        let mut prs = s.prs.lock().unwrap();
        let head = v["head"].as_str().unwrap_or_default().to_string();
        if prs.iter().any(|p| p.repo == repo && p.head == head && p.state == "open") {
            let e = json!({"message": "Validation Failed", "errors": [{"message": format!("A pull request already exists for {head}.")}]});
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(e)).into_response();
        }
        let number = prs.iter().filter(|p| p.repo == repo).count() as u64 + 1;
        let pr = Pr {
            repo,
            number,
            head,
            base: v["base"].as_str().unwrap_or_default().to_string(),
            title: v["title"].as_str().unwrap_or_default().to_string(),
            body: v["body"].as_str().unwrap_or_default().to_string(),
            draft,
            state: "open".into(),
            labels: Vec::new(),
            reviewers: Vec::new(),
        };
        prs.push(pr.clone());
        pr
    };
    if let Some(d) = faults.stall_after_create {
        tokio::time::sleep(d).await;
    }
    (StatusCode::CREATED, Json(pr_json(WEB, &pr))).into_response()
}

fn with_pr<T>(s: &Shared, repo: &str, n: u64, f: impl FnOnce(&mut Pr) -> T) -> Option<T> {
    s.prs.lock().unwrap().iter_mut().find(|p| p.repo == repo && p.number == n).map(f)
}

async fn update_pr(State(s): S, Path((o, r, n)): Path<(String, String, u64)>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let updated = with_pr(&s, &format!("{o}/{r}"), n, |p| {
        if let Some(t) = v["title"].as_str() {
            p.title = t.to_string();
        }
        if let Some(b) = v["body"].as_str() {
            p.body = b.to_string();
        }
        pr_json(WEB, p)
    });
    match updated {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response(),
    }
}

async fn labels(State(s): S, Path((o, r, n)): Path<(String, String, u64)>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let names: Vec<String> =
        v["labels"].as_array().into_iter().flatten().filter_map(|l| l.as_str().map(str::to_string)).collect();
    with_pr(&s, &format!("{o}/{r}"), n, |p| {
        for l in names {
            if !p.labels.contains(&l) {
                p.labels.push(l);
            }
        }
    });
    Json(json!([])).into_response()
}

async fn reviewers(State(s): S, Path((o, r, n)): Path<(String, String, u64)>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let names: Vec<String> =
        v["reviewers"].as_array().into_iter().flatten().filter_map(|l| l.as_str().map(str::to_string)).collect();
    with_pr(&s, &format!("{o}/{r}"), n, |p| p.reviewers = names);
    (StatusCode::CREATED, Json(json!({}))).into_response()
}

async fn list_comments(State(s): S, Path((o, r, n)): Path<(String, String, u64)>) -> Json<Value> {
    let repo = format!("{o}/{r}");
    let c = s.comments.lock().unwrap();
    Json(Value::Array(c.iter().filter(|x| x.0 == repo && x.1 == n).map(|x| json!({"id": x.2, "body": x.3})).collect()))
}

async fn add_comment(State(s): S, Path((o, r, n)): Path<(String, String, u64)>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut c = s.comments.lock().unwrap();
    let id = 1000 + c.len() as u64;
    c.push((format!("{o}/{r}"), n, id, v["body"].as_str().unwrap_or_default().to_string()));
    (StatusCode::CREATED, Json(json!({"id": id, "html_url": format!("{WEB}/{o}/{r}/issues/{n}#issuecomment-{id}")})))
        .into_response()
}

async fn edit_comment(
    State(s): S,
    Path((_o, _r, id)): Path<(String, String, u64)>,
    method: Method,
    body: Bytes,
) -> Response {
    let _ = method;
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut c = s.comments.lock().unwrap();
    match c.iter_mut().find(|x| x.2 == id) {
        Some(x) => {
            x.3 = v["body"].as_str().unwrap_or_default().to_string();
            Json(json!({"id": id, "html_url": format!("{WEB}/{}/issues/{}#issuecomment-{id}", x.0, x.1)}))
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response(),
    }
}
