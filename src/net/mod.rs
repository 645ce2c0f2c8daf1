//! What every HTTP client in ohrun shares, below both `agent` (the agent-server) and `backend` (the
//! provider APIs), `deliver` (GitHub) and `settings`: the one `reqwest::Client` of the process, its
//! redirect rule, the `Retry-After` header, the rule for plain http, and the retry policy (`retry`).

pub mod retry;

pub use retry::{Retry, RetryPolicy};

use reqwest::Url;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The most requests in flight to one origin (scheme, host, port) at once, from the whole process. Over
/// HTTP/1.1 each request in flight holds a connection, so 10,000 runs on one server calling it in one
/// burst (every step starts at once) took 10,000 descriptors besides their sockets and ran out of them;
/// beyond this many, a request waits for its turn (its own timeout starts when it is sent).
pub const MAX_IN_FLIGHT_PER_ORIGIN: usize = 256;

/// The turns for requests to `url`'s origin, shared by every client of the process.
pub fn origin_turns(url: &Url) -> Arc<Semaphore> {
    static TURNS: Mutex<Option<HashMap<String, Arc<Semaphore>>>> = Mutex::new(None);
    let origin = url.origin().ascii_serialization();
    let mut turns = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    turns
        .get_or_insert_with(HashMap::new)
        .entry(origin)
        .or_insert_with(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_ORIGIN)))
        .clone()
}

/// One HTTP client for the whole process: its connection pool and TLS roots are shared by every run
/// (building a client per run cost each run its own copy of the roots: ~0.3 MB and milliseconds of CPU
/// at 1,000 runs). Timeouts are set per request. Redirects are followed only within one origin: every
/// request ohrun makes may carry a key in a header of its own (`X-Session-API-Key`, `X-API-Key`) or in
/// its body, and reqwest's default policy strips only `Authorization` and `Cookie` on the way to another
/// host. A redirect elsewhere comes back as the 3xx it is ([`redirect_detail`]).
pub fn shared_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                // Runs send their requests in bursts (every run's step starts at once): without a cap the
                // pool kept every connection of the largest burst open for 90 s, 1.7 per run at 100 runs.
                .pool_max_idle_per_host(32)
                .user_agent(concat!("ohrun/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::custom(same_origin_only))
                .build()
                .expect("a TLS backend is available")
        })
        .clone()
}

/// Follows a redirect only to the origin (scheme, host, port) the request was first sent to, at most 5.
fn same_origin_only(attempt: reqwest::redirect::Attempt) -> reqwest::redirect::Action {
    let first = attempt.previous().first().map(Url::origin);
    if attempt.previous().len() > 5 || first != Some(attempt.url().origin()) {
        attempt.stop()
    } else {
        attempt.follow()
    }
}

/// What to say of a 3xx that was not followed: where it pointed, and why ohrun did not go there.
pub fn redirect_detail(status: u16, headers: &reqwest::header::HeaderMap) -> Option<String> {
    if !(300..400).contains(&status) {
        return None;
    }
    let to = headers.get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok()).unwrap_or("nowhere");
    Some(format!(
        "redirected to {to}; ohrun follows redirects only within the same scheme, host and port, since its requests carry keys"
    ))
}

/// The `Retry-After` a server sent, in seconds (the HTTP-date form is not used by the servers ohrun
/// talks to).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// http to a host that is not loopback sends the key in clear text.
pub fn check_transport(url: &str, allow_insecure_http: bool, what: &str) -> Result<(), String> {
    let Ok(parsed) = Url::parse(url) else {
        return Err(format!("`{what}` must be an http(s) URL, not `{url}`"));
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(&parsed) => Ok(()),
        "http" => Err(format!(
            "`{what}` is plain http to a host that is not loopback ({url}): the key would travel in clear text; use https, or set `allow_insecure_http: true`"
        )),
        _ => Err(format!("`{what}` must be an http(s) URL, not `{url}`")),
    }
}

/// True for URLs whose host is 127.0.0.0/8, ::1 or localhost.
pub fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub fn is_loopback_url(url: &str) -> bool {
    Url::parse(url).is_ok_and(|u| is_loopback(&u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_of_one_origin_share_their_turns_and_other_origins_have_their_own() {
        let url = |u: &str| Url::parse(u).unwrap();
        let a = origin_turns(&url("http://127.0.0.1:9101/x"));
        assert!(Arc::ptr_eq(&a, &origin_turns(&url("http://127.0.0.1:9101/api/other"))));
        assert!(!Arc::ptr_eq(&a, &origin_turns(&url("http://127.0.0.1:9102/x"))));
        assert_eq!(a.available_permits(), MAX_IN_FLIGHT_PER_ORIGIN);
    }
}
