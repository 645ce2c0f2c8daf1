//! `ohrun view DIR`: (re)writes report.html for a batch directory (its page and every run's) or for a run
//! directory, prints where it is, and opens it in the browser when there is a display. With `--serve` it
//! serves DIR on 127.0.0.1 instead: pages are drawn afresh from summary.json / run.json at each request
//! and reload themselves when those change, so a batch can be watched while it runs.

use super::ViewArgs;
use crate::exit_code::ExitCode;
use crate::report::html::{self, HTML_FILE, Live};
use crate::report::summary::{SUMMARY_FILE, Summary};
use crate::report::writer::{RUN_FILE, read_report};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
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
        eprintln!("  hint: name a batch directory (`ohrun-reports/JOB`) or a run's directory in it");
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

fn serve(dir: &Path, port: u16, open: bool) -> i32 {
    let root = match dir.canonicalize() {
        Ok(r) => Arc::new(r),
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
        let url = match listener.local_addr() {
            Ok(addr) => format!("http://{addr}/"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::INFRA;
            }
        };
        println!("{url}");
        eprintln!("serving {} at {url} (pages follow the reports as they change); Ctrl-C stops", root.display());
        if open {
            open_in_browser(url.as_ref());
        }
        let app = axum::Router::new()
            .route("/__ohrun/version", axum::routing::get(version))
            .fallback(axum::routing::get(file))
            .with_state(root);
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

#[derive(serde::Deserialize)]
struct PageQuery {
    page: String,
}

/// The version of the report behind a page (the page polls it to know when to reload).
async fn version(State(root): State<Arc<PathBuf>>, Query(q): Query<PageQuery>) -> Response {
    let Some(path) = resolve(&root, &q.page) else { return StatusCode::NOT_FOUND.into_response() };
    let dir = if path.is_dir() { path } else { path.parent().map(Path::to_path_buf).unwrap_or_default() };
    match source_of(&dir) {
        Some((_, source)) => text(source_version(&source)),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A file of the served directory; a report page drawn afresh from its report.
async fn file(State(root): State<Arc<PathBuf>>, uri: Uri) -> Response {
    let Some(path) = resolve(&root, uri.path()) else { return StatusCode::NOT_FOUND.into_response() };
    if path.is_dir() {
        // Relative links in a page resolve against its directory only when the URL ends with a slash.
        if !uri.path().ends_with('/') {
            let to = format!("{}/", uri.path());
            return (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, to)]).into_response();
        }
        if source_of(&path).is_some() || path.join(HTML_FILE).is_file() {
            return page(path, format!("{}{HTML_FILE}", uri.path())).await;
        }
        return listing(&path);
    }
    if path.file_name().is_some_and(|n| n == HTML_FILE)
        && let Some(dir) = path.parent()
        && source_of(dir).is_some()
    {
        return page(dir.to_path_buf(), uri.path().to_string()).await;
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => raw(&path, bytes),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
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

/// The page of `dir` (served at `page_url`), drawn from its report, or the page file when there is none.
async fn page(dir: PathBuf, page_url: String) -> Response {
    let drawn = tokio::task::spawn_blocking(move || {
        let (kind, source) = source_of(&dir)?;
        const QUERY: &percent_encoding::AsciiSet =
            &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'.').remove(b'_');
        // The version is taken before the report is read: a change while drawing reloads once more.
        let live = Live {
            poll: format!("/__ohrun/version?page={}", percent_encoding::utf8_percent_encode(&page_url, QUERY)),
            version: source_version(&source),
        };
        Some(match kind {
            Source::Batch => html::batch_page(&dir, &Summary::read(&dir)?, Some(&live)),
            Source::Run => html::run_page(&dir, &read_report(&source)?, Some(&live)),
        })
    })
    .await
    .ok()
    .flatten();
    match drawn {
        Some(page) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], page)
            .into_response(),
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
        Some("png") => "image/png",
        _ if std::str::from_utf8(&bytes).is_ok() => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// A directory without a page: its entries, one per line.
fn listing(dir: &Path) -> Response {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() { format!("{name}/") } else { name }
        })
        .collect();
    names.sort();
    text(names.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::resolve;

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
