//! A real agent-server that a test starts itself, the way a user or a provider would (`kind: remote`),
//! and a shared one for the tests that only need some server: many conversations on one server keep the
//! suite's wall time down.

use crate::support::*;
use serde_json::Value;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct ExternalServer {
    child: std::process::Child,
    /// Held open while the server should live: the wrapper stops the server when it closes, which the
    /// OS does when the test process exits (a static's Drop never runs).
    _lifeline: Option<std::process::ChildStdin>,
    pub url: String,
    pub key: String,
    _state: tempfile::TempDir,
}

impl ExternalServer {
    pub fn start() -> ExternalServer {
        Self::start_with(&[])
    }

    /// Starts one with extra environment (e.g. `OH_MAX_CONCURRENT_RUNS`) and waits until it answers.
    pub fn start_with(env: &[(&str, &str)]) -> ExternalServer {
        let port = free_port();
        let state = tempfile::tempdir().unwrap();
        let key = format!("remote-test-key-{}", uuid::Uuid::new_v4().simple());
        let mut child = spawn_agent_server(port, &key, state.path(), env);
        let lifeline = child.stdin.take();
        let url = format!("http://127.0.0.1:{port}");
        let server = ExternalServer { child, _lifeline: lifeline, url, key, _state: state };
        wait_until(Duration::from_secs(120), "the test's agent-server answers /health", || server.healthy());
        server
    }

    fn healthy(&self) -> bool {
        http(&self.url, "GET", "/health", &self.key).is_some_and(|(status, _)| status == 200)
    }

    /// The conversation's events as the server has them.
    pub fn events(&self, cid: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut path = format!("/api/conversations/{cid}/events/search?limit=100");
            if let Some(p) = &page {
                path.push_str(&format!("&page_id={p}"));
            }
            let (status, body) = http(&self.url, "GET", &path, &self.key).expect("the server answers");
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            out.extend(v["items"].as_array().unwrap().iter().cloned());
            match v["next_page_id"].as_str() {
                Some(p) => page = Some(p.to_string()),
                None => return out,
            }
        }
    }
}

impl Drop for ExternalServer {
    fn drop(&mut self) {
        // SAFETY: plain signals to our own child's process group (the wrapper and the server).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One agent-server for every test that just needs a server to talk to (each run has its own
/// conversation and working directory); it lives as long as the test binary.
pub fn shared() -> &'static ExternalServer {
    static SERVER: OnceLock<ExternalServer> = OnceLock::new();
    SERVER.get_or_init(|| ExternalServer::start_with(&[("OH_MAX_CONCURRENT_RUNS", "50")]))
}

/// A tiny blocking HTTP/1.1 request (the server speaks plain HTTP): status and body.
pub fn http(base: &str, method: &str, path: &str, key: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let hostport = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nX-Session-API-Key: {key}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
