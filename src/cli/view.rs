//! `ohrun view DIR`: (re)writes report.html for a batch directory (its page and every run's) or for a run
//! directory, prints where it is, and opens it in the browser when there is a display. With `--serve` it
//! serves DIR on 127.0.0.1 instead: pages are drawn afresh from summary.json / run.json at each request
//! and reload themselves when those change, so a batch can be watched while it runs. The server answers
//! only requests that name it by a loopback name and carry its random token, and it serves report
//! artifacts only (never a workspace, a log or a key).

use super::ViewArgs;
use crate::agent::patch::PATCH_FILE;
use crate::exit_code::ExitCode;
use crate::report::html::{self, HTML_FILE, Live};
use crate::report::summary::JUNIT_FILE;
use crate::report::summary::{SUMMARY_FILE, Summary};
use crate::report::writer::EVENTS_FILE;
use crate::report::writer::{RUN_FILE, read_report};
use crate::runner::state::BATCH_FILE;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub fn run(args: &ViewArgs, quiet: bool) -> i32 {
    let page = match write_pages(&args.dir, quiet) {
        Ok(page) => page,
        Err(code) => return code,
    };
    println!("{}", page.display());
    if args.serve {
        return serve(&args.dir, args.port, !args.no_open && has_display());
    }
    if !args.no_open && has_display() {
        open_in_browser(page.as_os_str());
    }
    ExitCode::SUCCESS
}

/// Writes the pages of `dir` and returns the top one.
fn write_pages(dir: &Path, quiet: bool) -> Result<PathBuf, i32> {
    let failed = |e: std::io::Error| {
        eprintln!("error: cannot write {}: {e}", dir.join(HTML_FILE).display());
        ExitCode::INFRA
    };
    if dir.join(SUMMARY_FILE).is_file() {
        let Some(summary) = Summary::read(dir) else {
            eprintln!("error: {} is not a summary ohrun can read", dir.join(SUMMARY_FILE).display());
            return Err(ExitCode::USAGE);
        };
        let mut written = 0;
        for run in &summary.runs {
            let Some(report_path) = &run.report else { continue };
            // ohrun names each run's report relative to the batch directory; any other path (absolute, or
            // with `..`) would have a page written beside some other run.json.
            if !Path::new(report_path).components().all(|c| matches!(c, Component::Normal(_))) {
                if !quiet {
                    eprintln!("warning: {report_path:?} in summary.json is not a path in the batch directory; skipped");
                }
                continue;
            }
            let run_json = dir.join(report_path);
            let run_dir = run_json.parent().unwrap_or(dir);
            match read_report(&run_json) {
                Some(report) => {
                    html::write_run_page(run_dir, &report).map_err(failed)?;
                    written += 1;
                }
                None if !quiet => eprintln!("warning: {} cannot be read; its run has no page", run_json.display()),
                None => {}
            }
        }
        let page = html::write_batch_page(dir, &summary).map_err(failed)?;
        if !quiet {
            eprintln!("wrote the batch page and {written} run pages");
        }
        Ok(page)
    } else if dir.join(RUN_FILE).is_file() {
        let Some(report) = read_report(&dir.join(RUN_FILE)) else {
            eprintln!("error: {} is not a report ohrun can read", dir.join(RUN_FILE).display());
            return Err(ExitCode::USAGE);
        };
        html::write_run_page(dir, &report).map_err(failed)
    } else {
        eprintln!("error: {} has neither summary.json nor run.json", dir.display());
        if dir.join("trial-1").join(RUN_FILE).is_file() {
            // A run of several trials keeps a folder per trial and no report of its own.
            eprintln!(
                "  hint: this run has trials: name one of them (`{}`) or the batch directory",
                dir.join("trial-1").display()
            );
        } else {
            eprintln!("  hint: name a batch directory (`ohrun-reports/JOB`) or a run's directory in it");
        }
        Err(ExitCode::USAGE)
    }
}

fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()))
}

/// Hands the page to the desktop's browser; a failure only costs the convenience.
fn open_in_browser(target: &std::ffi::OsStr) {
    let spawned = std::process::Command::new("xdg-open")
        .arg(target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        // Reaped by a thread so it never lingers as a zombie while ohrun serves.
        Ok(mut child) => drop(std::thread::spawn(move || child.wait())),
        Err(e) => eprintln!("warning: cannot open a browser (xdg-open: {e}); open the path above"),
    }
}

const LAUNCHER_FILE: &str = "open.html";

/// A page only the user can read that sends the browser on to `url`: what `xdg-open` is given instead of
/// the URL itself, whose token any local user could read in the process table.
fn launcher(url: &str) -> std::io::Result<tempfile::TempDir> {
    use std::io::Write;
    let dir = tempfile::Builder::new().prefix("ohrun-view-").tempdir()?; // 0700
    let mut page = crate::report::writer::create_private(&dir.path().join(LAUNCHER_FILE))?;
    writeln!(
        page,
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url={url}\"><title>ohrun view</title><a href=\"{url}\">{url}</a>"
    )?;
    Ok(dir)
}

/// What the server knows: the directory it serves, the token every URL carries and the port it is on.
struct Served {
    root: PathBuf,
    token: String,
    port: u16,
}

fn serve(dir: &Path, port: u16, open: bool) -> i32 {
    let root = match dir.canonicalize() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            return ExitCode::USAGE;
        }
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on 127.0.0.1:{port}: {e}");
                return ExitCode::INFRA;
            }
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::INFRA;
            }
        };
        // Any local process (or a web page, through the browser) can reach the port: every URL carries
        // a random token (122 random bits), and only this port's own loopback names are accepted as Host.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let url = format!("http://{addr}/{token}/");
        println!("{url}");
        eprintln!("serving {} at {url} (pages follow the reports as they change); Ctrl-C stops", root.display());
        // Kept until the server stops: the browser may read it late.
        let _launcher = open.then(|| match launcher(&url) {
            Ok(dir) => {
                open_in_browser(dir.path().join(LAUNCHER_FILE).as_os_str());
                Some(dir)
            }
            Err(e) => {
                eprintln!("warning: cannot open a browser ({e}); open the URL above");
                None
            }
        });
        let served = Arc::new(Served { root, token, port: addr.port() });
        let app = axum::Router::new().fallback(axum::routing::get(handle)).with_state(served);
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let server = axum::serve(listener, app).with_graceful_shutdown(stop);
        // A browser may hold a connection open; after Ctrl-C it gets a moment, not a veto.
        let result = tokio::select! {
            r = server => r,
            () = async {
                let _ = tokio::signal::ctrl_c().await;
                tokio::time::sleep(Duration::from_secs(3)).await;
            } => Ok(()),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: the server stopped: {e}");
                ExitCode::INFRA
            }
        }
    })
}

/// Every request: the Host must be this server's (no DNS rebinding), and so must the authority of a
/// request in absolute form (`GET http://host:port/…`), the path must start with the token, and what it
/// names must be a report artifact.
async fn handle(State(s): State<Arc<Served>>, headers: HeaderMap, uri: Uri) -> Response {
    let authority = uri.authority().map(|a| a.as_str());
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(authority);
    let ours = |h: Option<&str>| h.is_some_and(|h| host_allowed(h, s.port));
    if !ours(host) || (authority.is_some() && !ours(authority)) {
        return (StatusCode::MISDIRECTED_REQUEST, "this server answers only to 127.0.0.1, localhost and [::1]\n")
            .into_response();
    }
    let Some(rest) = without_token(uri.path(), &s.token) else {
        return (StatusCode::FORBIDDEN, "use the URL `ohrun view --serve` printed (it has the token)\n")
            .into_response();
    };
    if rest.is_empty() {
        return (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, format!("/{}/", s.token))]).into_response();
    }
    if rest == VERSION_PATH {
        return match Query::<PageQuery>::try_from_uri(&uri) {
            Ok(Query(q)) => version(&s, &q.page),
            Err(_) => StatusCode::BAD_REQUEST.into_response(),
        };
    }
    file(&s, rest).await
}

/// Where a served page asks whether it changed (after the token).
const VERSION_PATH: &str = "/__ohrun/version";

/// `HOST:PORT` names this server: its port, and a loopback name (not one a DNS answer could point here).
fn host_allowed(host: &str, port: u16) -> bool {
    let Some((name, p)) = host.rsplit_once(':') else { return false };
    p == port.to_string() && ["127.0.0.1", "localhost", "[::1]"].iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// The URL path after `/TOKEN` (empty, or starting with `/`), when it starts with the token.
fn without_token<'a>(path: &'a str, token: &str) -> Option<&'a str> {
    let path = path.strip_prefix('/')?;
    let (first, rest) = path.find('/').map_or((path, ""), |i| path.split_at(i));
    // The same time whatever the guess, so a guess learns nothing from how long the answer took.
    let same = first.len() == token.len() && first.bytes().zip(token.bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0;
    same.then_some(rest)
}

#[derive(serde::Deserialize)]
struct PageQuery {
    page: String,
}

/// The version of the report behind a page (the page polls it to know when to reload).
fn version(s: &Served, page: &str) -> Response {
    let Some(path) = resolve(&s.root, page).filter(|p| servable(&s.root, p)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let dir = if path.is_dir() { path } else { path.parent().map(Path::to_path_buf).unwrap_or_default() };
    match source_of(&dir) {
        Some((_, source)) => text(source_version(&source)),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A report artifact of the served directory (`url_path` is after the token); a report page drawn afresh
/// from its report.
async fn file(s: &Served, url_path: &str) -> Response {
    let Some(path) = resolve(&s.root, url_path).filter(|p| servable(&s.root, p)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let poll = |page_url: &str| {
        const QUERY: &percent_encoding::AsciiSet =
            &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'.').remove(b'_');
        format!("/{}{VERSION_PATH}?page={}", s.token, percent_encoding::utf8_percent_encode(page_url, QUERY))
    };
    if path.is_dir() {
        // Relative links in a page resolve against its directory only when the URL ends with a slash.
        if !url_path.ends_with('/') {
            let to = format!("/{}{url_path}/", s.token);
            return (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, to)]).into_response();
        }
        return page(path, poll(&format!("{url_path}{HTML_FILE}"))).await;
    }
    if path.file_name().is_some_and(|n| n == HTML_FILE)
        && let Some(dir) = path.parent()
        && source_of(dir).is_some()
    {
        return page(dir.to_path_buf(), poll(url_path)).await;
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => raw(&path, bytes),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The files a served directory shows: the pages and the reports, events and diffs ohrun writes, and an
/// attempt's `final.patch` (beside its run.json: redacted, like the step diffs, and only what they show
/// too). Never the agent's workspace (a local run's `workspace/` holds whatever the agent wrote, `.env` files
/// included), the agent-server's log or key, or anything else.
const ARTIFACTS: [&str; 6] = [HTML_FILE, RUN_FILE, SUMMARY_FILE, JUNIT_FILE, BATCH_FILE, EVENTS_FILE];

/// Whether `path` (resolved, under `root`) is a report artifact, or a directory with a page.
fn servable(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else { return false };
    if rel.components().any(|c| c.as_os_str() == "workspace") {
        return false;
    }
    if path.is_dir() {
        return source_of(path).is_some();
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    let in_steps = path.parent().and_then(Path::file_name).is_some_and(|d| d == "steps");
    let patch = name == PATCH_FILE && path.parent().is_some_and(|d| d.join(RUN_FILE).is_file());
    path.is_file() && (ARTIFACTS.contains(&name) || (in_steps && name.ends_with(".diff")) || patch)
}

#[derive(Clone, Copy)]
enum Source {
    Batch,
    Run,
}

/// What the page of `dir` is drawn from: summary.json (a batch) or run.json (a run).
fn source_of(dir: &Path) -> Option<(Source, PathBuf)> {
    [(Source::Batch, SUMMARY_FILE), (Source::Run, RUN_FILE)]
        .into_iter()
        .map(|(kind, name)| (kind, dir.join(name)))
        .find(|(_, p)| p.is_file())
}

fn source_version(path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let nanos = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", meta.map_or(0, |m| m.len()))
}

/// The page of `dir`, drawn from its report; it polls `poll` to learn when to reload.
async fn page(dir: PathBuf, poll: String) -> Response {
    let drawn = tokio::task::spawn_blocking(move || {
        let (kind, source) = source_of(&dir)?;
        // The version is taken before the report is read: a change while drawing reloads once more.
        let live = Live { poll, version: source_version(&source) };
        Some(match kind {
            Source::Batch => html::batch_page(&dir, &Summary::read(&dir)?, Some(&live)),
            Source::Run => html::run_page(&dir, &read_report(&source)?, Some(&live)),
        })
    })
    .await
    .ok()
    .flatten();
    match drawn {
        Some(page) => {
            let mut response = page.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            // The page's own policy (also in its `<meta>`), and no framing by another site.
            if let Ok(csp) = HeaderValue::from_str(&format!("{}; frame-ancestors 'none'", html::CSP_SERVED)) {
                headers.insert(header::CONTENT_SECURITY_POLICY, csp);
            }
            headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            response
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `path` under `root` for a URL path, or None when it would leave it (`..`, a symlink out).
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(url_path).decode_utf8().ok()?;
    let mut path = root.to_path_buf();
    for part in Path::new(decoded.as_ref()).components() {
        match part {
            Component::Normal(p) => path.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    let real = path.canonicalize().ok()?;
    real.starts_with(root).then_some(real)
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// Any other file: JSON as JSON, the rest as plain text or bytes, never as a page of its own (a file the
/// agent wrote is not to run scripts on this origin).
fn raw(path: &Path, bytes: Vec<u8>) -> Response {
    let kind = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        _ if std::str::from_utf8(&bytes).is_ok() => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::{host_allowed, resolve, servable, without_token};

    #[test]
    fn only_loopback_names_of_this_port_and_the_token_are_accepted() {
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080", "[::1]:8080"] {
            assert!(host_allowed(ok, 8080), "{ok}");
        }
        for bad in ["attacker.example:8080", "127.0.0.1:8081", "127.0.0.1", "localhost", "127.0.0.1.nip.io:8080", ""] {
            assert!(!host_allowed(bad, 8080), "{bad}");
        }
        let token = "0123456789abcdef0123456789abcdef";
        assert_eq!(without_token(&format!("/{token}/a/run.json"), token), Some("/a/run.json"));
        assert_eq!(without_token(&format!("/{token}"), token), Some(""));
        assert_eq!(without_token("/", token), None);
        assert_eq!(without_token("/a/run.json", token), None);
        assert_eq!(without_token(&format!("/{}/", &token[1..]), token), None);
        assert_eq!(without_token(&format!("/{token}0/"), token), None);
    }

    #[test]
    fn only_report_artifacts_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let attempt = root.join("r/attempt-1");
        std::fs::create_dir_all(attempt.join("steps")).unwrap();
        std::fs::create_dir_all(attempt.join("workspace/steps")).unwrap();
        let files = ["run.json", "events.jsonl", "steps/1.diff", "agent-server.log", "agent-server.key", "x.txt"];
        for f in files.iter().chain(&["final.patch", "steps/final.patch"]) {
            std::fs::write(attempt.join(f), "{}").unwrap();
        }
        for f in ["run.json", "steps/1.diff", ".env", "final.patch"] {
            std::fs::write(attempt.join("workspace").join(f), "{}").unwrap();
        }
        for f in ["run.json", "events.jsonl", "steps/1.diff", "final.patch", ""] {
            assert!(servable(&root, &attempt.join(f)), "{f}");
        }
        for f in ["agent-server.log", "agent-server.key", "x.txt", "steps", "workspace", "workspace/run.json"] {
            assert!(!servable(&root, &attempt.join(f)), "{f}");
        }
        // A final.patch only beside a run.json, never in a workspace.
        for f in ["steps/final.patch", "workspace/final.patch"] {
            assert!(!servable(&root, &attempt.join(f)), "{f}");
        }
        assert!(!servable(&root, &attempt.join("workspace/steps/1.diff")));
    }

    #[test]
    fn paths_stay_inside_the_served_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("a")).unwrap();
        std::fs::write(root.join("a/x.json"), "{}").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/out")).unwrap();
        assert_eq!(resolve(&root, "/a/x.json"), Some(root.join("a/x.json")));
        assert_eq!(resolve(&root, "/"), Some(root.clone()));
        assert_eq!(resolve(&root, "/a/../a/x.json"), None);
        assert_eq!(resolve(&root, "/a/%2e%2e/a/x.json"), None);
        assert_eq!(resolve(&root, "/a/out/passwd"), None, "a symlink out of the directory");
    }
}
