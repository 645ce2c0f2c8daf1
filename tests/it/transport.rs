//! Keys travel only where they are meant to: a server that answers with a redirect to another origin
//! (another host, scheme or port) never receives them. reqwest's default policy would follow such a
//! redirect with every header but `Authorization` and `Cookie` — ohrun's keys are in headers of their
//! own (`X-Session-API-Key`, `X-API-Key`). Two servers: the one the job names, which redirects, and the
//! one it redirects to, which records every request and its headers.

use crate::support::*;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use std::sync::{Arc, Mutex};

/// A server on loopback (an axum router), run on a thread of its own until dropped.
pub struct TestServer {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(router: Router) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
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
        TestServer { url, shutdown: Some(tx), thread: Some(thread) }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;

/// The server redirected to: records each request and answers 200 with `{}`.
fn recorder() -> (TestServer, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let router = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push((uri.to_string(), headers));
            (StatusCode::OK, [("content-type", "application/json")], "{}")
        }
    });
    (TestServer::start(router), seen)
}

/// The server the job names: answers the calls that carry no key (`/health`, `/server_info`) itself when
/// `answers_unkeyed`, and redirects every other request, path and query kept, to `to` with a 307 (which
/// keeps the method and the body).
fn redirector(to: &str, answers_unkeyed: bool) -> TestServer {
    let to = to.to_string();
    let router = Router::new().fallback(move |uri: Uri| {
        let to = to.clone();
        async move {
            match uri.path() {
                "/health" if answers_unkeyed => (StatusCode::OK, "{}").into_response(),
                "/server_info" if answers_unkeyed => {
                    (StatusCode::OK, r#"{"version":"1.58.2","usable_tools":["terminal"]}"#).into_response()
                }
                _ => {
                    let target = format!("{to}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
                    (StatusCode::TEMPORARY_REDIRECT, [("location", target)]).into_response()
                }
            }
        }
    });
    TestServer::start(router)
}

/// No request the second server got carried `header`, and the key's value is in none of its headers.
fn assert_no_key(seen: &Seen, header: &str, key: &str) {
    for (uri, headers) in seen.lock().unwrap().iter() {
        assert!(headers.get(header).is_none(), "{header} followed the redirect to {uri}");
        for (name, value) in headers {
            assert!(!value.to_str().unwrap_or_default().contains(key), "the key followed the redirect in {name}");
        }
    }
}

#[test]
fn a_session_key_never_follows_a_redirect_to_another_origin() {
    let (elsewhere, seen) = recorder();
    let named = redirector(&elsewhere.url, true);
    let dir = tempfile::tempdir().unwrap();
    let key = "planted-session-key-redirected-77";
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: redirected\nsandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: /w}}\nllm: {{model: m}}\nsteps:\n  - message: hi\n",
            named.url
        ),
    );
    let out = Ohrun::new().current_dir(dir.path()).env("K", key).args(["run", "--rehearse"]).args([&job]).output();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("answered 307") && out.stderr.contains("redirected to"), "{}", out.stderr);
    assert_no_key(&seen, "x-session-api-key", key);
}

#[test]
fn a_provider_api_key_never_follows_a_redirect_to_another_origin() {
    let (elsewhere, seen) = recorder();
    let named = redirector(&elsewhere.url, false);
    let dir = tempfile::tempdir().unwrap();
    let key = "planted-cloud-key-redirected-88";
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: redirected-cloud\nsandbox:\n  kind: cloud\n  api_url: '{}'\n  api_key: '${{CLOUD_KEY}}'\nllm: {{model: m}}\nsteps:\n  - message: hi\n",
            named.url
        ),
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("CLOUD_KEY", key)
        .env("OHRUN_STATE_DIR", dir.path().join("state"))
        .args(["run", "--rehearse"])
        .args([&job])
        .output();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("redirected to"), "{}", out.stderr);
    assert_no_key(&seen, "x-api-key", key);
}
