//! report.html and `ohrun view`, checked in a real browser: a real batch on the shared agent-server (12
//! runs, the scripted LLM, a step that writes a file, runs 3 and 7 failing in setup), its pages loaded in
//! headless Chromium (`--dump-dom`) through a proxy that records every request, with the console logged:
//! the pages must draw what the reports say, make no request and log nothing. `ohrun view --serve`
//! serves the same directory.
//!
//! Chromium (Debian's `chromium`, installed by `.ci/run`) is required: without it these tests fail,
//! unless `OHRUN_TEST_SKIP_BROWSER=1` says to skip the browser checks.

use crate::server::shared;
use crate::support::*;
use serde_json::Value;
use std::io::{BufRead, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Step 1 appends a line to a file through the terminal tool; step 2 only finishes.
const SCRIPT: &str = "replies:
  - tool: terminal
    args: {command: 'echo note from step one >> notes.txt'}
  - tool: finish
    args: {message: 'first done: <b>not bold</b>'}
  - tool: finish
    args: {message: second done}
";

/// Text that would be markup if the page ever put report text in as HTML.
const MARKUP: &str = "</script><b>not bold</b>";

struct Batch {
    dir: PathBuf,
    /// Run ids in plan order.
    ids: Vec<String>,
}

/// The batch every test here looks at, run once per test binary: 12 runs on the shared server, runs 3
/// and 7 failing in setup; then `ohrun view` writes its pages.
fn batch() -> &'static Batch {
    static BATCH: OnceLock<Batch> = OnceLock::new();
    BATCH.get_or_init(|| {
        // One fixed place under the target dir (a static is never dropped, so no tempdir).
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("view-batch");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("script.yaml"), SCRIPT).unwrap();
        let job = write_job(
            &root,
            "job.yaml",
            &format!(
                "name: pages\nmatrix:\n  n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]\nsandbox:\n  kind: remote\n  url: {}\n  \
                 session_key: ${{SHARED_SESSION_KEY}}\n  working_dir: {}/ws/{{{{ run.id }}}}\nllm:\n  model: m\n  \
                 options: {{num_retries: 0}}\nsetup:\n  - test {{{{ n }}}} -ne 3 && test {{{{ n }}}} -ne 7\n\
                 steps:\n  - message: 'Write a note for run {{{{ n }}}}. {MARKUP}'\n  - message: Second.\n\
                 rehearsal: script.yaml\n",
                shared().url,
                root.display()
            ),
        );
        let out = Ohrun::new()
            .current_dir(&root)
            .env("SHARED_SESSION_KEY", &shared().key)
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .args(["run", "--rehearse", "--jobs", "4"])
            .args([&job])
            .output();
        assert_eq!(out.code, 1, "two runs fail: {}", out.stderr);
        let dir = root.join("ohrun-reports/pages");
        // The batch wrote its page and every run's; `ohrun view` writes them again, from the reports.
        let plan = Ohrun::new().args(["plan", "--json"]).args([&job]).output();
        let ids: Vec<String> =
            plan.json()["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        for page in std::iter::once(dir.join("report.html")).chain(ids.iter().map(|id| dir.join(id).join("report.html"))) {
            assert!(page.is_file(), "the batch wrote {}", page.display());
        }
        let view = Ohrun::new().args(["view", "--no-open"]).args([&dir]).env_remove("DISPLAY").output();
        assert_eq!(view.code, 0, "{}", view.stderr);
        assert_eq!(view.stdout.trim(), dir.join("report.html").display().to_string());
        Batch { dir, ids }
    })
}

/// Headless Chromium, or None when the browser checks are skipped (`OHRUN_TEST_SKIP_BROWSER=1`).
fn chromium() -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file());
    if found.is_none() && std::env::var("OHRUN_TEST_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("OHRUN_TEST_SKIP_BROWSER=1: the browser checks are skipped");
        return None;
    }
    Some(found.expect(
        "these tests need Chromium (Debian: apt-get install chromium; .ci/run installs it); \
         OHRUN_TEST_SKIP_BROWSER=1 skips them",
    ))
}

/// What the browser saw of a page.
struct Loaded {
    dom: String,
    /// Console messages (errors, CSP violations, anything the page logged).
    console: Vec<String>,
    /// Requests that reached the proxy, other than Chromium's own background traffic.
    requests: Vec<String>,
}

/// Loads `url` in headless Chromium and dumps its DOM once loaded. Every request the browser makes goes
/// through a proxy of ours that records it and answers nothing (loopback too, unless `direct`).
fn load(browser: &Path, url: &str, direct: bool) -> Loaded {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = proxy.local_addr().unwrap().port();
    proxy.set_nonblocking(true).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorder = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match proxy.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 512];
                        let n = conn.read(&mut buf).unwrap_or(0);
                        let first = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string();
                        seen.lock().unwrap().push(first);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(browser);
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    if !direct {
        cmd.arg(format!("--proxy-server=http://127.0.0.1:{proxy_port}")).arg("--proxy-bypass-list=<-loopback>");
    }
    let child =
        cmd.arg(url).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).spawn();
    let child = child.expect("chromium starts");
    let pid = child.id() as i32;
    let out = wait_bounded(child, Duration::from_secs(90), pid);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    recorder.join().unwrap();
    // Chromium's own calls home (time, updates, accounts) are not the page's.
    let own = ["google.com", "googleapis.com", "gstatic.com"];
    let requests = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !own.iter().any(|host| r.split_whitespace().nth(1).is_some_and(|u| host_of(u).ends_with(host))))
        .cloned()
        .collect();
    let console = out.1.lines().filter(|l| l.contains(":CONSOLE")).map(str::to_string).collect();
    Loaded { dom: out.0, console, requests }
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', ':']).next().unwrap_or("")
}

/// Waits for the browser (killing its whole process group after `timeout`): (stdout, stderr).
fn wait_bounded(mut child: std::process::Child, timeout: Duration, group: i32) -> (String, String) {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            // SAFETY: a signal to the process group of our own child.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            panic!("chromium did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (out.join().unwrap(), err.join().unwrap())
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The page drew itself completely: no console message, no request, the script's end reached.
fn assert_clean(page: &Loaded, what: &str) {
    assert!(page.console.is_empty(), "{what} logged to the console:\n{}", page.console.join("\n"));
    assert!(page.requests.is_empty(), "{what} made requests: {:?}", page.requests);
    assert!(page.dom.contains("data-rendered=\"1\""), "{what} did not finish drawing:\n{}", page.dom);
    assert!(!page.dom.contains("id=\"render-error\""), "{what}:\n{}", page.dom);
}

/// The cost as the page prints it.
fn cost(v: &Value) -> String {
    let c = v.as_f64().unwrap();
    if c >= 1.0 { format!("${c:.2}") } else { format!("${c:.4}") }
}

/// The part of `dom` from the element with `id` to the end of its section.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    &rest[..rest.find("</section>").unwrap_or(rest.len())]
}

#[test]
fn the_browser_checks_see_console_errors_and_requests() {
    let Some(browser) = chromium() else { return };
    // A page that requests things and throws: the checks the report pages pass must catch both.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!doctype html><body><img src=\"http://example.invalid/x.png\">\
         <script>fetch('http://example.invalid/data').catch(() => {}); null.boom;</script></body>",
    )
    .unwrap();
    let loaded = load(&browser, &file_url(&page), false);
    assert!(loaded.console.iter().any(|l| l.contains("Uncaught TypeError")), "{:?}", loaded.console);
    assert!(loaded.requests.iter().any(|r| r.contains("example.invalid/x.png")), "{:?}", loaded.requests);
    assert!(loaded.requests.iter().any(|r| r.contains("example.invalid/data")), "{:?}", loaded.requests);
}

#[test]
fn a_run_page_shows_its_steps_costs_and_diff_and_requests_nothing() {
    let b = batch();
    let id = &b.ids[0];
    let run_dir = b.dir.join(id);
    let report = read_report(&run_dir);
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.contains("default-src 'none'") && !html.contains("connect-src"), "a file page may fetch nothing");
    assert!(!html.contains(MARKUP), "report text is embedded escaped");
    let Some(browser) = chromium() else { return };
    let page = load(&browser, &file_url(&run_dir.join("report.html")), false);
    assert_clean(&page, "the run page");
    let dom = &page.dom;

    assert!(dom.contains(&format!("id=\"run-id\">{id}<")), "{dom}");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for s in steps {
        let step = section(dom, &format!("step-{}", s["index"]));
        assert!(step.contains(&format!(">{}<", s["end_reason"].as_str().unwrap())), "end reason of {s}:\n{step}");
        assert!(step.contains(&cost(&s["cost"])), "cost {} of step {}:\n{step}", cost(&s["cost"]), s["index"]);
    }
    // The line step 1 added, coloured as an addition.
    assert_eq!(steps[0]["diff"]["insertions"], 1, "{}", steps[0]);
    let step1 = section(dom, "step-1");
    assert!(step1.contains("<span class=\"add\">+note from step one</span>"), "{step1}");
    // Report text is text: the markup in the step message and the agent's reply shows as written.
    assert!(step1.contains("&lt;/script&gt;&lt;b&gt;not bold&lt;/b&gt;"), "{step1}");
    assert!(step1.contains("first done: &lt;b&gt;not bold&lt;/b&gt;"), "{step1}");
    assert!(!dom.contains("<b>"), "no report text became markup");
    // Event bodies are drawn only when opened; the list says how many there are.
    assert!(!dom.contains("class=\"evbody\""), "event bodies are drawn lazily");
    assert!(step1.contains("Actions and observations"), "{step1}");
    for link in ["href=\"run.json\"", "href=\"attempt-1/events.jsonl\"", "href=\"../report.html\""] {
        assert!(dom.contains(link), "{link}");
    }
}

#[test]
fn the_batch_page_lists_every_run_failures_first() {
    let b = batch();
    let summary = read_summary(&b.dir);
    let Some(browser) = chromium() else { return };
    let page = load(&browser, &file_url(&b.dir.join("report.html")), false);
    assert_clean(&page, "the batch page");
    let rows: Vec<&str> = page.dom.split("<tr class=\"run").skip(1).collect();
    assert_eq!(rows.len(), 12, "{}", page.dom);
    // Runs 3 and 7 failed in setup: first, in plan order, with their end reason; the others follow.
    let failed = [&b.ids[2], &b.ids[6]];
    for (row, id) in rows.iter().zip(failed) {
        assert!(row.contains(&format!("data-id=\"{id}\"")), "{row}");
        assert!(row.contains(">failed<") && row.contains(">setup<"), "{row}");
    }
    for row in &rows[2..] {
        assert!(row.contains(">succeeded<") && row.contains(">finished<"), "{row}");
    }
    // Each row links to its run's page, which exists.
    for id in &b.ids {
        assert!(page.dom.contains(&format!("href=\"{id}/report.html\"")), "{id}");
        assert!(b.dir.join(id).join("report.html").is_file(), "{id}");
    }
    assert!(page.dom.contains(&cost(&summary["totals"]["cost"])), "the total cost");
    assert!(page.dom.contains("12 runs, failures first"));
}

/// GET `path` from `base` (`127.0.0.1:PORT`): status, head, body.
fn get(base: &str, path: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(base).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {base}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn view_serve_serves_the_batch_follows_it_and_stops_on_sigint() {
    let b = batch();
    let port = free_port();
    let mut child =
        Ohrun::new().args(["view", "--serve", "--no-open", "--port", &port.to_string()]).args([&b.dir]).spawn();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || lines.map_while(std::result::Result::ok).for_each(|l| drop(tx.send(l))));
    let url = loop {
        let line = rx.recv_timeout(Duration::from_secs(120)).expect("view --serve prints its URL");
        if line.starts_with("http://") {
            break line;
        }
    };
    assert_eq!(url, format!("http://127.0.0.1:{port}/"));
    let base = format!("127.0.0.1:{port}");

    let (status, head, body) = get(&base, "/");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.contains("connect-src 'self'") && body.contains("\"live\":{\"poll\""), "a served page polls");
    let id = &b.ids[0];
    let (status, _, run_page) = get(&base, &format!("/{id}/report.html"));
    assert_eq!(status, 200);
    assert!(run_page.contains("\"page\":\"run\""));
    let (status, head, _) = get(&base, &format!("/{id}/attempt-1/events.jsonl"));
    assert_eq!(status, 200);
    assert!(head.contains("text/plain") && head.contains("sandbox"), "other files are never pages: {head}");
    assert_eq!(get(&base, &format!("/{id}")).0, 308, "a directory gets its slash");
    assert_eq!(get(&base, "/../pages/summary.json").0, 404, "nothing outside the directory");
    assert_eq!(get(&base, "/missing.json").0, 404);

    // The page's version follows summary.json: a rewritten summary reloads the page.
    let version = || get(&base, "/__ohrun/version?page=/").2;
    let before = version();
    let summary = std::fs::File::options().write(true).open(b.dir.join("summary.json")).unwrap();
    summary.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
    assert_ne!(version(), before);

    if let Some(browser) = chromium() {
        let page = load(&browser, &url, true);
        assert!(page.console.is_empty(), "{:?}", page.console);
        assert!(page.dom.contains("data-rendered=\"1\"") && page.dom.split("<tr class=\"run").count() == 13);
    }

    signal(&child, libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("view --serve did not stop within 15 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn view_refuses_a_directory_without_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = Ohrun::new().args(["view", "--no-open"]).args([dir.path()]).output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("neither summary.json nor run.json"), "{}", out.stderr);
}
