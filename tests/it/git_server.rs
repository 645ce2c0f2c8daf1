//! A git server over HTTP for the tests: `git http-backend` (CGI) behind a small axum server on
//! 127.0.0.1. It serves every bare repository under its root (clone, fetch and push: receive-pack is
//! on), can require a token (HTTP Basic, any user name, the token as password — GitHub's
//! `x-access-token:TOKEN`) and RECORDS every request (method, path, query, Authorization header).
//!
//! ```ignore
//! let git = GitServer::start();
//! let base = git.init_repo("svc", &[("README.md", "hi\n")]);   // bare `svc.git`, branch main, its commit
//! let url = git.url("svc");                                     // http://127.0.0.1:PORT/svc.git
//! git.require_token(Some("s3cret"));
//! … ; git.requests()                                            // what reached it
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// One request the server received.
#[derive(Clone, Debug)]
pub struct GitRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    root: PathBuf,
    token: Mutex<Option<String>>,
    /// The token is asked of pushes only (clones and fetches are public), as on a public GitHub repository.
    push_only: std::sync::atomic::AtomicBool,
    requests: Mutex<Vec<GitRequest>>,
}

pub struct GitServer {
    _root: tempfile::TempDir,
    base: String,
    shared: Arc<Shared>,
    _server: crate::transport::TestServer,
}

impl GitServer {
    /// A server on a free loopback port, serving the bare repositories of a fresh temporary root.
    pub fn start() -> GitServer {
        let root = tempfile::tempdir().unwrap();
        let shared = Arc::new(Shared { root: root.path().to_path_buf(), ..Default::default() });
        let router = Router::new().fallback(serve).with_state(shared.clone());
        let server = crate::transport::TestServer::start(router);
        GitServer { _root: root, base: server.url.clone(), shared, _server: server }
    }

    /// The URL of repository `name` (`name.git` under the root).
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.base)
    }

    /// Where the bare repository `name` is on disk.
    pub fn bare(&self, name: &str) -> PathBuf {
        self.shared.root.join(format!("{name}.git"))
    }

    /// From now on, every request must carry this token (None: no auth).
    pub fn require_token(&self, token: Option<&str>) {
        *self.shared.token.lock().unwrap() = token.map(str::to_string);
    }

    /// Pushes (receive-pack) must carry this token; clones and fetches need none.
    pub fn require_token_to_push(&self, token: &str) {
        self.shared.push_only.store(true, std::sync::atomic::Ordering::SeqCst);
        self.require_token(Some(token));
    }

    /// A repository `owner/name` with one commit of `files` on `main`: its URL.
    pub fn create_repo(&self, owner_name: &str, files: &[(&str, &str)]) -> String {
        self.init_repo(owner_name, files);
        self.url(owner_name)
    }

    /// `git ARGS` in the bare repository `owner/name`: its stdout, trimmed; None when git failed.
    pub fn git(&self, owner_name: &str, args: &[&str]) -> Option<String> {
        let out = std::process::Command::new("git").args(args).current_dir(self.bare(owner_name)).output().unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn requests(&self) -> Vec<GitRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// A new bare repository `name` (default branch `main`, pushes allowed) whose first commit holds
    /// `files`; returns that commit.
    pub fn init_repo(&self, name: &str, files: &[(&str, &str)]) -> String {
        let bare = self.bare(name);
        git(&self.shared.root, &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
        git(&bare, &["config", "http.receivepack", "true"]);
        git(&bare, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
        let work = self.work(name);
        git(&self.shared.root, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        self.commit(name, files, "initial")
    }

    /// A commit on `main` adding or replacing `files`; returns it.
    pub fn commit(&self, name: &str, files: &[(&str, &str)], message: &str) -> String {
        let work = self.work(name);
        for (path, text) in files {
            let file = work.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
        git(&work, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Tags the current `main` of `name` as `tag`.
    pub fn tag(&self, name: &str, tag: &str) {
        let work = self.work(name);
        git(&work, &["tag", tag]);
        git(&work, &["push", "-q", "origin", &format!("refs/tags/{tag}")]);
    }

    /// The commit a ref of the bare repository points at.
    pub fn rev(&self, name: &str, rev: &str) -> String {
        git(&self.bare(name), &["rev-parse", rev]).trim().to_string()
    }

    fn work(&self, name: &str) -> PathBuf {
        self.shared.root.join(".work").join(name)
    }
}

/// Runs git for the test's own setup (a fixed identity, no user config); its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `auth` (an Authorization header) carries `token` as HTTP Basic password.
fn authorized(auth: Option<&str>, token: &str) -> bool {
    let Some(encoded) = auth.and_then(|a| a.strip_prefix("Basic ")) else { return false };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    String::from_utf8_lossy(&decoded).split_once(':').is_some_and(|(_, password)| password == token)
}

async fn serve(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |h: &HeaderMap, name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let authorization = header(&parts.headers, "authorization");
    let query = parts.uri.query().unwrap_or("").to_string();
    shared.requests.lock().unwrap().push(GitRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: query.clone(),
        authorization: authorization.clone(),
    });
    let pushing = parts.uri.path().ends_with("git-receive-pack")
        || parts.uri.query().is_some_and(|q| q.contains("service=git-receive-pack"));
    let exempt = shared.push_only.load(std::sync::atomic::Ordering::SeqCst) && !pushing;
    let token = shared.token.lock().unwrap().clone().filter(|_| !exempt);
    if let Some(token) = token
        && !authorized(authorization.as_deref(), &token)
    {
        return (StatusCode::UNAUTHORIZED, [("WWW-Authenticate", "Basic realm=\"git\"")], "unauthorized")
            .into_response();
    }
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "too large").into_response();
    };
    cgi(&shared.root, &parts, &query, body).await
}

/// One request through `git http-backend`.
async fn cgi(root: &Path, parts: &axum::http::request::Parts, query: &str, body: Bytes) -> Response {
    use tokio::io::AsyncWriteExt;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output()).await;
    let _ = writer.await;
    let Ok(Ok(out)) = out else { return (StatusCode::GATEWAY_TIMEOUT, "git http-backend").into_response() };
    cgi_response(&out.stdout)
}

/// A CGI answer (headers, a blank line, the body) as an HTTP response.
fn cgi_response(raw: &[u8]) -> Response {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i + 4));
    let split = split.or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2)));
    let Some((end, body_at)) = split else { return (StatusCode::BAD_GATEWAY, raw.to_vec()).into_response() };
    let mut builder = Response::builder().status(StatusCode::OK);
    for line in String::from_utf8_lossy(&raw[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    builder.body(axum::body::Body::from(raw[body_at..].to_vec())).unwrap()
}
