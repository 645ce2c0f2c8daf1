//! A git server over HTTP for the delivery tests: `git http-backend` (CGI) behind a small axum server on
//! loopback, serving the bare repositories under its root (`OWNER/NAME.git`). Reads are anonymous; a push
//! (`git-receive-pack`) needs the token, as `Authorization: Basic base64(x-access-token:TOKEN)`, when one
//! is set. Every request is recorded with its Authorization header.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct GitRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
}

struct Shared {
    root: PathBuf,
    token: Option<String>,
    requests: Mutex<Vec<GitRequest>>,
}

pub struct GitServer {
    pub url: String,
    root: tempfile::TempDir,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl GitServer {
    pub fn start(token: Option<&str>) -> GitServer {
        let root = tempfile::tempdir().unwrap();
        let shared = Arc::new(Shared {
            root: root.path().to_path_buf(),
            token: token.map(str::to_string),
            requests: Mutex::default(),
        });
        let router = axum::Router::new()
            .fallback(cgi)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        GitServer { url, root, shared, _stop: tx }
    }

    /// A bare repository `owner/name` whose `main` has one commit with `files`; its URL.
    pub fn create_repo(&self, owner_name: &str, files: &[(&str, &str)]) -> String {
        let bare = self.bare(owner_name);
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        git(&bare, &["config", "http.receivepack", "true"]);
        git(&bare, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
        let work = tempfile::tempdir().unwrap();
        git(work.path(), &["init", "-q", "-b", "main"]);
        for (name, text) in files {
            std::fs::write(work.path().join(name), text).unwrap();
        }
        git(work.path(), &["add", "-A"]);
        git(work.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]);
        git(work.path(), &["push", "-q", bare.to_str().unwrap(), "main"]);
        self.repo_url(owner_name)
    }

    pub fn repo_url(&self, owner_name: &str) -> String {
        format!("{}/{owner_name}.git", self.url)
    }

    pub fn bare(&self, owner_name: &str) -> PathBuf {
        self.root.path().join(format!("{owner_name}.git"))
    }

    /// `git ARGS` in the bare repository `owner/name`: its stdout, trimmed; None when git failed.
    pub fn git(&self, owner_name: &str, args: &[&str]) -> Option<String> {
        let out = Command::new("git").args(args).current_dir(self.bare(owner_name)).output().unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn requests(&self) -> Vec<GitRequest> {
        self.shared.requests.lock().unwrap().clone()
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn basic(token: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}")))
}

async fn cgi(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let query = query.unwrap_or_default();
    let authorization = header("authorization");
    s.requests.lock().unwrap().push(GitRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: query.clone(),
        authorization: authorization.clone(),
    });
    let pushing = query.contains("git-receive-pack") || uri.path().ends_with("git-receive-pack");
    if pushing
        && let Some(t) = &s.token
        && authorization.as_deref() != Some(basic(t).as_str())
    {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Basic realm=\"git\"")
            .body(Body::from("token needed"))
            .unwrap();
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &s.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", uri.path())
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", &query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "tester")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (name, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(v) = header(name) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&body).await;
    });
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output()).await;
    let _ = writer.await;
    let Ok(Ok(out)) = out else {
        return Response::builder().status(500).body(Body::from("http-backend failed")).unwrap();
    };
    cgi_response(&out.stdout)
}

/// A CGI answer (headers, a blank line, the body) as an HTTP response.
fn cgi_response(raw: &[u8]) -> Response {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((at, sep)) = split else {
        return Response::builder().status(500).body(Body::from("no CGI headers")).unwrap();
    };
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let mut resp = Response::builder().status(200);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value.trim().split(' ').next().and_then(|c| c.parse().ok()).unwrap_or(500);
            resp = resp.status(code);
        } else {
            resp = resp.header(name.trim(), value.trim());
        }
    }
    resp.body(Body::from(raw[at + sep..].to_vec())).unwrap()
}
