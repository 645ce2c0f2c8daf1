//! report.html and `ohrun view`, checked in a real browser: a real batch on the shared agent-server (12
//! runs, the scripted LLM, a step that writes a file, runs 3 and 7 failing in setup), its pages loaded in
//! headless Chromium (`--dump-dom`) through a proxy that records every request, with the console logged:
//! the pages must draw what the reports say, make no request and log nothing. `ohrun view --serve`
//! serves the same directory.
//!
//! Chromium is required: the one on PATH, or else Debian's, fetched once into the target dir without
//! installing anything (`browser.rs`); if that fails these tests fail, unless `OHRUN_TEST_SKIP_BROWSER=1`
//! says to skip the browser checks.

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

fn find_chromium() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

/// Headless Chromium, or None when the browser checks are skipped (`OHRUN_TEST_SKIP_BROWSER=1` and no
/// Chromium on PATH). Chromium on PATH is used; without one, Debian's is fetched once per machine into the
/// target dir and run from there, installing nothing (`browser.rs`), so that `cargo test` needs no
/// preparation on a fresh Debian machine. A failed fetch fails the test.
pub(crate) fn chromium() -> Option<PathBuf> {
    static BROWSER: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let skip = std::env::var("OHRUN_TEST_SKIP_BROWSER").is_ok_and(|v| v == "1");
    let found = BROWSER.get_or_init(|| match find_chromium() {
        Some(path) => Ok(path),
        None if skip => Err(String::new()),
        None => crate::browser::private_chromium(),
    });
    match found {
        Ok(path) => Some(path.clone()),
        Err(_) if skip => {
            eprintln!("OHRUN_TEST_SKIP_BROWSER=1: the browser checks are skipped");
            None
        }
        Err(e) => panic!(
            "these tests need Chromium: none is on PATH, and fetching Debian's privately into the target dir \
             failed: {e}\nInstall Chromium (Debian: apt-get install chromium), or set OHRUN_TEST_SKIP_BROWSER=1 \
             to skip the browser checks"
        ),
    }
}

/// What the browser saw of a page.
pub(crate) struct Loaded {
    pub(crate) dom: String,
    /// Console messages (errors, CSP violations, anything the page logged).
    pub(crate) console: Vec<String>,
    /// Requests that reached the proxy, other than Chromium's own background traffic.
    pub(crate) requests: Vec<String>,
}

/// Loads `url` in headless Chromium and dumps its DOM once loaded. Every request the browser makes goes
/// through a proxy of ours that records it and answers nothing (loopback too, unless `direct`).
pub(crate) fn load(browser: &Path, url: &str, direct: bool) -> Loaded {
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
        .arg(format!("--user-data-dir={}", profile.path().display()))
        // Its crash reports and dconf cache go into the throwaway profile, not the user's home.
        .env("HOME", profile.path())
        .env("XDG_CONFIG_HOME", profile.path().join("config"))
        .env("XDG_CACHE_HOME", profile.path().join("cache"));
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

pub(crate) fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The page drew itself completely: no console message, no request, the script's end reached.
pub(crate) fn assert_clean(page: &Loaded, what: &str) {
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
pub(crate) fn section<'a>(dom: &'a str, id: &str) -> &'a str {
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
    // (The embedded data is script text, where a `<` not starting `</` or `<!` stays as it is.)
    let drawn = &dom[..dom.find("id=\"data\"").expect("the data block")];
    assert!(drawn.contains("id=\"run-id\"") && !drawn.contains("<b>"), "no report text became markup");
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
    get_as(base, base, path)
}

/// The same with `host` as the Host header.
fn get_as(base: &str, host: &str, path: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(base).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head.to_ascii_lowercase(), body.to_string())
}

/// A running `ohrun view --serve DIR`: killed when dropped, unless stopped.
pub(crate) struct Serving {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    base: String,
    /// The URL it printed: `http://127.0.0.1:PORT/TOKEN/`.
    url: String,
    /// `/TOKEN`: what every path starts with.
    prefix: String,
}

pub(crate) fn serve(dir: &Path) -> Serving {
    let port = free_port();
    let mut child =
        Ohrun::new().args(["view", "--serve", "--no-open", "--port", &port.to_string()]).args([dir]).spawn();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || lines.map_while(std::result::Result::ok).for_each(|l| drop(tx.send(l))));
    let mut serving = Serving { child, base: format!("127.0.0.1:{port}"), url: String::new(), prefix: String::new() };
    serving.url = loop {
        let line = rx.recv_timeout(Duration::from_secs(120)).expect("view --serve prints its URL");
        if line.starts_with("http://") {
            break line;
        }
    };
    // The URL carries a token: 32 hex digits.
    let token = serving.url.strip_prefix(&format!("http://127.0.0.1:{port}/")).and_then(|t| t.strip_suffix('/'));
    let token = token.unwrap_or_else(|| panic!("the URL has the token: {}", serving.url)).to_string();
    assert!(token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    serving.prefix = format!("/{token}");
    serving
}

impl Serving {
    /// GET a path after the token.
    pub(crate) fn get(&self, path: &str) -> (u16, String, String) {
        get(&self.base, &format!("{}{path}", self.prefix))
    }

    /// Stops it as Ctrl-C does; its exit code.
    fn stop(mut self) -> Option<i32> {
        signal(&self.child, libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "view --serve did not stop within 15 s of SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn view_serve_serves_the_batch_follows_it_and_stops_on_sigint() {
    let b = batch();
    let s = serve(&b.dir);

    let (status, head, body) = s.get("/");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("frame-ancestors 'none'") && head.contains("nosniff"), "{head}");
    assert!(body.contains("connect-src 'self'") && body.contains("\"live\":{\"poll\""), "a served page polls");
    let id = &b.ids[0];
    let (status, _, run_page) = s.get(&format!("/{id}/report.html"));
    assert_eq!(status, 200);
    assert!(run_page.contains("\"page\":\"run\""));
    assert!(run_page.contains("\"log\":null"), "a served page links only to what is served");
    for artifact in [
        "/summary.json".to_string(),
        "/junit.xml".to_string(),
        "/batch.json".to_string(),
        format!("/{id}/run.json"),
        format!("/{id}/attempt-1/run.json"),
        format!("/{id}/attempt-1/steps/1.diff"),
    ] {
        assert!(b.dir.join(&artifact[1..]).is_file(), "the batch wrote {artifact}");
        assert_eq!(s.get(&artifact).0, 200, "{artifact}");
    }
    let (status, head, _) = s.get(&format!("/{id}/attempt-1/events.jsonl"));
    assert_eq!(status, 200);
    assert!(head.contains("text/plain") && head.contains("sandbox"), "other files are never pages: {head}");
    let (status, head, _) = s.get(&format!("/{id}"));
    assert_eq!(status, 308, "a directory gets its slash");
    assert!(head.contains(&format!("location: {}/{id}/\r\n", s.prefix)), "{head}");
    assert_eq!(s.get("/../pages/summary.json").0, 404, "nothing outside the directory");
    assert_eq!(s.get("/missing.json").0, 404);

    // The page's version follows summary.json: a rewritten summary reloads the page. The page polls
    // with the token.
    let poll = body.split("\"poll\":\"").nth(1).and_then(|p| p.split('"').next()).unwrap().to_string();
    assert!(poll.starts_with(&format!("{}/__ohrun/version?page=", s.prefix)), "{poll}");
    let version = || get(&s.base, &poll).2;
    let before = version();
    assert!(body.contains(&format!("\"version\":\"{before}\"")), "{before}");
    let summary = std::fs::File::options().write(true).open(b.dir.join("summary.json")).unwrap();
    summary.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
    assert_ne!(version(), before);

    if let Some(browser) = chromium() {
        let page = load(&browser, &s.url, true);
        assert!(page.console.is_empty(), "{:?}", page.console);
        assert!(page.dom.contains("data-rendered=\"1\"") && page.dom.split("<tr class=\"run").count() == 13);
        // A run page through its link's URL: drawn, its step diff embedded.
        let page = load(&browser, &format!("{}{id}/report.html", s.url), true);
        assert!(page.console.is_empty(), "{:?}", page.console);
        assert!(page.dom.contains("data-rendered=\"1\""), "{}", page.dom);
        assert!(page.dom.contains("<span class=\"add\">+note from step one</span>"), "{}", page.dom);
    }
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn view_serve_answers_only_to_its_own_host_names() {
    let b = batch();
    let s = serve(&b.dir);
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let path = format!("{}/summary.json", s.prefix);
    // A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) sends its own Host.
    for host in ["attacker.example", &format!("attacker.example:{port}"), "127.0.0.1:1", "localhost"] {
        let (status, head, body) = get_as(&s.base, host, &path);
        assert_eq!(status, 421, "Host {host}: {head}");
        assert!(!body.contains("\"runs\""), "{body}");
    }
    for host in [format!("localhost:{port}"), format!("[::1]:{port}"), s.base.clone()] {
        assert_eq!(get_as(&s.base, &host, &path).0, 200, "Host {host}");
    }
    // A request in absolute form names its authority in the request line: a foreign one is refused even
    // with a Host header of ours.
    let absolute = format!("http://attacker.example:{port}{path}");
    let (status, head, body) = get_as(&s.base, &s.base, &absolute);
    assert_eq!(status, 421, "{absolute}: {head}");
    assert!(!body.contains("\"runs\""), "{body}");
    assert_eq!(get_as(&s.base, &s.base, &format!("http://{}{path}", s.base)).0, 200);
}

/// With a display, `view --serve` opens the browser on a private launcher page: the URL's token is in
/// that file (mode 0600), never in the opener's arguments, which every local user can read.
#[test]
fn view_serve_never_puts_its_token_in_a_process_argument() {
    let b = batch();
    let bin = tempfile::tempdir().unwrap();
    let log = bin.path().join("xdg-open.log");
    let opener = bin.path().join("xdg-open");
    std::fs::write(
        &opener,
        format!("#!/bin/sh\n{{ printf 'argv: %s\\n' \"$*\"; stat -c 'mode: %a' \"$1\"; cat \"$1\"; }} > {}.tmp; mv {0}.tmp {0}\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&opener, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let mut child =
        Ohrun::new().env("PATH", path).env("DISPLAY", ":99").args(["view", "--serve"]).args([&b.dir]).spawn();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.find_map(|l| l.ok().filter(|l| l.starts_with("http://"))).expect("view --serve prints its URL");
    let token = url.trim().trim_end_matches('/').rsplit('/').next().unwrap().to_string();
    assert_eq!(token.len(), 32, "{url}");
    wait_until(Duration::from_secs(30), "the opener ran", || log.is_file());
    signal(&child, libc::SIGINT);
    let _ = child.wait();
    let seen = std::fs::read_to_string(&log).unwrap();
    let argv = seen.lines().next().unwrap();
    assert!(argv.starts_with("argv: /") && !argv.contains(&token), "{seen}");
    assert!(seen.contains("mode: 600") && seen.contains(url.trim()), "the launcher carries the URL, privately: {seen}");
}

#[test]
fn view_serve_needs_its_token() {
    let b = batch();
    let s = serve(&b.dir);
    let token = &s.prefix[1..];
    let wrong: String = token.chars().map(|c| if c == '0' { '1' } else { '0' }).collect();
    for path in [
        "/".to_string(),
        "/summary.json".to_string(),
        "/report.html".to_string(),
        "/__ohrun/version?page=/".to_string(),
        format!("/{}/summary.json", b.ids[0]),
        format!("/{wrong}/summary.json"),
        format!("/{}/summary.json", &token[..31]),
        format!("/{token}0/summary.json"),
        format!("/summary.json?token={token}"),
    ] {
        let (status, head, body) = get(&s.base, &path);
        assert_eq!(status, 403, "{path}: {head}");
        assert!(!body.contains("\"runs\"") && !body.contains("<html"), "{path}: {body}");
    }
    assert_eq!(s.get("/summary.json").0, 200);
    let (status, head, _) = get(&s.base, &s.prefix);
    assert_eq!(status, 308, "{head}");
    assert!(head.contains(&format!("location: {}/\r\n", s.prefix)), "{head}");
}

#[test]
fn view_serve_serves_report_artifacts_only() {
    let b = batch();
    // What a local run's attempt folder also holds: the agent's workspace (with whatever it wrote there,
    // a report of its own included), the agent-server's log and key. Run 2's folder, so the other tests'
    // pages stay as they were.
    let id = &b.ids[1];
    let attempt = b.dir.join(id).join("attempt-1");
    let ws = attempt.join("workspace");
    std::fs::create_dir_all(ws.join("steps")).unwrap();
    std::fs::write(ws.join(".env"), "API_TOKEN=workspace-secret-4711\n").unwrap();
    std::fs::copy(attempt.join("run.json"), ws.join("run.json")).unwrap();
    std::fs::write(ws.join("steps/1.diff"), "+workspace-secret-4711\n").unwrap();
    std::fs::write(ws.join("report.html"), "<script>workspace-secret-4711</script>").unwrap();
    std::fs::write(attempt.join("agent-server.log"), "log workspace-secret-4711\n").unwrap();
    std::fs::write(attempt.join("agent-server.key"), "workspace-secret-4711").unwrap();
    std::fs::write(attempt.join("notes.txt"), "workspace-secret-4711").unwrap();
    let link = attempt.join("steps/99.diff");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("../workspace/.env", &link).unwrap();

    let s = serve(&b.dir);
    let a = format!("/{id}/attempt-1");
    let served = [
        format!("{a}/workspace/.env"),
        format!("{a}/workspace/run.json"),
        format!("{a}/workspace/steps/1.diff"),
        format!("{a}/workspace/report.html"),
        format!("{a}/workspace/"),
        format!("{a}/workspace"),
        format!("{a}/agent-server.log"),
        format!("{a}/agent-server.key"),
        format!("{a}/notes.txt"),
        format!("{a}/steps/99.diff"),
        format!("{a}/steps/"),
        format!("/__ohrun/version?page={a}/workspace/"),
    ]
    .into_iter()
    .filter_map(|path| {
        let (status, _, body) = s.get(&path);
        (status != 404 || body.contains("workspace-secret-4711")).then(|| format!("{path}: {status}"))
    })
    .collect::<Vec<_>>();
    assert!(served.is_empty(), "served, not 404: {served:#?}");
    // The attempt's own page and files are served, and the page does not link to what is not.
    let (status, _, page) = s.get(&format!("{a}/"));
    assert_eq!(status, 200);
    assert!(page.contains("\"page\":\"run\"") && !page.contains("workspace-secret-4711"));
    assert!(page.contains("\"workspace\":null") && page.contains("\"log\":null"), "{page}");
    assert_eq!(s.get(&format!("{a}/events.jsonl")).0, 200);
    assert_eq!(s.get(&format!("/__ohrun/version?page={a}/")).0, 200);
}

/// A run directory whose run.json names files outside its attempt's folder: the outside files hold
/// markers that must never reach the page.
fn hostile_run(root: &Path) -> PathBuf {
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let event = serde_json::json!({"kind": "MessageEvent", "source": "user",
        "llm_message": {"content": "OUTSIDE-EVENTS-7f3a"}});
    std::fs::write(outside.join("events.txt"), format!("{event}\n")).unwrap();
    std::fs::write(outside.join("a.diff"), "+OUTSIDE-DIFF-ABS-91c2\n").unwrap();
    std::fs::write(outside.join("b.diff"), "+OUTSIDE-DIFF-REL-5d0e\n").unwrap();
    std::fs::write(outside.join("c.diff"), "+OUTSIDE-DIFF-LINK-c3b8\n").unwrap();
    let run = root.join("run");
    let attempt = run.join("attempt-1");
    std::fs::create_dir_all(attempt.join("steps")).unwrap();
    std::os::unix::fs::symlink(outside.join("c.diff"), attempt.join("steps/2.diff")).unwrap();
    let mut report = read_report(&batch().dir.join(&batch().ids[0]));
    report["run"]["attempt"] = 1.into();
    report["events_file"] = outside.join("events.txt").display().to_string().into();
    let diff = report["steps"][0]["diff"].clone();
    assert!(diff.is_object(), "{report}");
    let with_file = |file: &str| {
        let mut d = diff.clone();
        d["file"] = file.into();
        d
    };
    report["setup_diff"] = with_file(&outside.join("a.diff").display().to_string());
    report["steps"][0]["diff"] = with_file("../../outside/b.diff");
    report["steps"][1]["diff"] = with_file("steps/2.diff");
    std::fs::write(run.join("run.json"), report.to_string()).unwrap();
    run
}

const OUTSIDE: [&str; 4] =
    ["OUTSIDE-EVENTS-7f3a", "OUTSIDE-DIFF-ABS-91c2", "OUTSIDE-DIFF-REL-5d0e", "OUTSIDE-DIFF-LINK-c3b8"];

#[test]
fn a_report_cannot_make_its_page_show_files_outside_its_attempt() {
    let root = tempfile::tempdir().unwrap();
    let run = hostile_run(root.path());
    let view = Ohrun::new().args(["view", "--no-open"]).args([&run]).env_remove("DISPLAY").output();
    assert_eq!(view.code, 0, "{}", view.stderr);
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    let shown: Vec<&str> = OUTSIDE.into_iter().filter(|m| html.contains(m)).collect();
    assert!(shown.is_empty(), "{shown:?} in the page");
    assert_eq!(html.matches("not shown: unexpected path").count(), 1 + 3 + 3, "said once per file, and per diff");
    assert!(html.contains("\"events\":null"), "no link to the events file");

    // The same report served.
    let s = serve(&run);
    let (status, _, page) = s.get("/");
    assert_eq!(status, 200);
    let shown: Vec<&str> = OUTSIDE.into_iter().filter(|m| page.contains(m)).collect();
    assert!(shown.is_empty(), "{shown:?} in the served page");
    assert!(page.contains("not shown: unexpected path"));

    if let Some(browser) = chromium() {
        let page = load(&browser, &file_url(&run.join("report.html")), false);
        assert_clean(&page, "the page of a hostile report");
        assert!(page.dom.contains("The report names files ohrun does not write"), "{}", page.dom);
    }
}

#[test]
fn view_refuses_a_directory_without_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = Ohrun::new().args(["view", "--no-open"]).args([dir.path()]).output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("neither summary.json nor run.json"), "{}", out.stderr);
}

#[test]
fn the_seed_job_on_a_local_agent_server_has_a_page_with_its_steps_and_diff() {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env_remove("LLM_API_KEY")
        .args(["run", "--rehearse"])
        .args([repo_root().join("jobs/local.yaml")])
        .output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run_dir = dir.path().join("ohrun-reports/facts-local/facts-local");
    let report = read_report(&run_dir);
    let Some(browser) = chromium() else { return };
    let page = load(&browser, &file_url(&run_dir.join("report.html")), false);
    assert_clean(&page, "the local seed run's page");
    let dom = &page.dom;
    assert!(dom.contains("id=\"run-id\">facts-local<"), "{dom}");
    for s in report["steps"].as_array().unwrap() {
        let step = section(dom, &format!("step-{}", s["index"]));
        assert!(step.contains(">finished<") && step.contains(&cost(&s["cost"])), "{s}:\n{step}");
    }
    // Step 1 wrote FACTS.txt on the local server; step 2 deleted it.
    assert!(section(dom, "step-1").contains("<span class=\"add\">+This is a git repository.</span>"));
    assert!(section(dom, "step-2").contains("<span class=\"del\">-This is a git repository.</span>"));
}
