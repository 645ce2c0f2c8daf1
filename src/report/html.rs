//! report.html: one self-contained page per run and per batch, for people who want to look rather than
//! read JSON. The page is the report's data as JSON in a `<script type="application/json">` block plus a
//! small vanilla script (`html/page.js`) and style sheet (`html/page.css`) that render it; nothing is
//! fetched (a Content-Security-Policy forbids every request), so the file works from `file://`, offline,
//! and as a CI artifact. The script only ever creates text nodes from report data, never markup.
//!
//! A batch page embeds only summary.json; each run page embeds its own events and diffs, which the
//! script renders only when the reader opens them, so a 1,000-run batch opens quickly.

use super::model::{OutcomeClass, ReportStatus, RunReport};
use super::summary::{SUMMARY_FILE, Summary};
use super::writer::{RUN_FILE, read_report, write_atomic};
use serde_json::{Value, json};
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

pub const HTML_FILE: &str = "report.html";

const CSS: &str = include_str!("html/page.css");
/// page.js, then the verification's drawing (function declarations only: page.js's last lines start drawing).
const JS: &str = concat!(include_str!("html/page.js"), "\n", include_str!("html/checks.js"));

/// A page opened from a file may make no request at all.
pub const CSP_FILE: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:";
/// A page served by `ohrun view --serve` may also ask its own server whether it changed.
pub const CSP_SERVED: &str =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; connect-src 'self'";

/// Any one string inside an embedded event is cut to this (a system prompt, a long command output).
const MAX_EVENT_STRING: usize = 16 * 1024;
/// The events a run page embeds in all; the ones past it are listed by kind only.
const MAX_EVENTS_BYTES: usize = 8 * 1024 * 1024;
/// A diff file is embedded up to this size.
const MAX_DIFF_BYTES: usize = 1024 * 1024;

/// How a served page learns it is out of date: it polls `poll` and reloads when the answer is no longer
/// `version`.
pub struct Live {
    pub poll: String,
    pub version: String,
}

/// Writes report.html beside the run's run.json: `dir` is the run's directory (with `attempt-N/`) or an
/// attempt's own directory.
pub fn write_run_page(dir: &Path, report: &RunReport) -> io::Result<PathBuf> {
    let path = dir.join(HTML_FILE);
    write_atomic(&path, &run_page(dir, report, None))?;
    Ok(path)
}

/// Writes report.html into the batch directory.
pub fn write_batch_page(batch_dir: &Path, summary: &Summary) -> io::Result<PathBuf> {
    let path = batch_dir.join(HTML_FILE);
    write_atomic(&path, &batch_page(batch_dir, summary, None))?;
    Ok(path)
}

/// The run page for the run (or attempt) directory `dir`.
// Long on purpose: one page's data put together in the order the page shows it (run, steps, events,
// diffs, checks, artifacts), each part a few lines; split up, the order would be spread over files.
pub fn run_page(dir: &Path, report: &RunReport, live: Option<&Live>) -> String {
    // In a run's directory the evidence is in its attempt's folder; an attempt's folder holds it itself.
    let attempt = format!("attempt-{}", report.run.attempt);
    let (attempt_dir, prefix) = if dir.join(&attempt).is_dir() {
        (dir.join(&attempt), format!("{attempt}/"))
    } else {
        (dir.to_path_buf(), String::new())
    };
    let mut cut = Vec::new();
    // Every file the page reads is one ohrun writes in the attempt's folder, named as ohrun names it: a
    // report is data (perhaps a hostile run.json in a served directory), and its paths must not make the
    // page embed any other file.
    let mut refused = Vec::new();
    let events_path = match evidence(&attempt_dir, &report.events_file, plain_name(&report.events_file)) {
        Evidence::Found(path) => Some(path),
        Evidence::Missing => None,
        Evidence::Refused => {
            refused.push(format!("events file {:?}: {REFUSED}", report.events_file));
            None
        }
    };
    let (events, ranges) = read_events(events_path.as_deref(), report, &mut cut);
    let final_patch = report.final_patch.as_ref().and_then(|p| p.file.as_deref()).and_then(|file| {
        match evidence(&attempt_dir, file, file == crate::agent::patch::PATCH_FILE) {
            Evidence::Found(_) => Some(format!("{prefix}{}", encode_path(file))),
            Evidence::Missing => None,
            Evidence::Refused => {
                refused.push(format!("final patch {file:?}: {REFUSED}"));
                None
            }
        }
    });

    let served = live.is_some();
    let exists = |rel: &str| attempt_dir.join(rel).exists().then(|| format!("{prefix}{}", encode_path(rel)));
    let batch = if dir.parent().is_some_and(|p| p.join(SUMMARY_FILE).is_file()) {
        Some("../report.html")
    } else if prefix.is_empty() && dir.parent().and_then(Path::parent).is_some_and(|p| p.join(SUMMARY_FILE).is_file()) {
        Some("../../report.html")
    } else {
        trial_batch_link(dir, prefix.is_empty())
    };
    let links = json!({
        "run_json": RUN_FILE,
        "attempt_json": (!prefix.is_empty()).then(|| format!("{prefix}{RUN_FILE}")),
        "events": events_path.is_some().then(|| format!("{prefix}{}", encode_path(&report.events_file))),
        // `ohrun view --serve` serves report artifacts only: neither the log nor the workspace.
        "log": if served { None } else { exists("agent-server.log") },
        "workspace": if served { None } else { exists("workspace").map(|w| format!("{w}/")) },
        // Served too (`ohrun view --serve`): a report artifact, redacted like the step diffs.
        "final_patch": final_patch,
        "batch": batch,
    });
    let mut diff = |info: &Option<super::model::DiffInfo>, what: &str| {
        let file = info.as_ref()?.file.as_ref()?;
        match evidence(&attempt_dir, file, diff_name(file)) {
            Evidence::Found(path) => {
                let text = read_capped(&path, MAX_DIFF_BYTES, &mut cut, what);
                Some(json!({ "text": text, "link": format!("{prefix}{}", encode_path(file)) }))
            }
            Evidence::Missing => None,
            Evidence::Refused => {
                refused.push(format!("{what} {file:?}: {REFUSED}"));
                Some(json!({ "text": null, "link": null, "refused": REFUSED }))
            }
        }
    };
    let setup_diff = diff(&report.setup_diff, "the setup's diff");
    let step_diffs: Vec<Option<Value>> =
        report.steps.iter().map(|s| diff(&s.diff, &format!("step {}'s diff", s.index))).collect();

    // Earlier attempts (infrastructure failures that were retried), so the reader sees why they ended.
    // They are numbered from 1 with no gap: counting stops at the first missing one, whatever the report says.
    let earlier: Vec<Value> = (1..report.run.attempt)
        .map_while(|n| dir.join(format!("attempt-{n}")).is_dir().then_some(n))
        .filter_map(|n| {
            let r = read_report(&dir.join(format!("attempt-{n}")).join(RUN_FILE))?;
            // Still a checkpoint: ohrun ended during that attempt, which a resume counts as interrupted.
            let (class, message) = match r.status {
                ReportStatus::Running => {
                    (OutcomeClass::Interrupted, Some("ohrun ended during this attempt (killed?)".to_string()))
                }
                ReportStatus::Ended => (r.outcome.class, r.outcome.message),
            };
            Some(json!({
                "attempt": n,
                "class": class,
                "message": message,
                "link": format!("attempt-{n}/{RUN_FILE}"),
            }))
        })
        .collect();

    let data = json!({
        "page": "run",
        "report": report,
        "links": links,
        "events": events,
        "ranges": ranges,
        "diffs": { "setup": setup_diff, "steps": step_diffs },
        "earlier_attempts": earlier,
        "cut": cut,
        "refused": refused,
        "live": live_json(live),
    });
    page(&format!("{} · ohrun", report.run.id), &data, served)
}

/// The batch page seen from a trial's folder (`RUN/trial-K/`, a level deeper than a run's) or from an
/// attempt's folder in it (`in_attempt`).
fn trial_batch_link(dir: &Path, in_attempt: bool) -> Option<&'static str> {
    let trial = if in_attempt { dir.parent()? } else { dir };
    trial.file_name()?.to_str()?.strip_prefix("trial-")?.parse::<u32>().ok()?;
    trial.ancestors().nth(2).filter(|b| b.join(SUMMARY_FILE).is_file())?;
    Some(if in_attempt { "../../../report.html" } else { "../../report.html" })
}

/// What the page says instead of a file whose path in the report is not one ohrun writes.
const REFUSED: &str = "not shown: unexpected path";

enum Evidence {
    Found(PathBuf),
    Missing,
    Refused,
}

/// The file `rel` of the attempt's folder `attempt_dir`, when `rel` has the shape ohrun gives it
/// (`shaped`) and is that very file: no symlink anywhere in `rel`, nothing outside the folder.
fn evidence(attempt_dir: &Path, rel: &str, shaped: bool) -> Evidence {
    if !shaped {
        return Evidence::Refused;
    }
    let Ok(base) = attempt_dir.canonicalize() else { return Evidence::Missing };
    let expected = base.join(rel);
    match expected.canonicalize() {
        Ok(real) if real == expected && real.is_file() => Evidence::Found(real),
        Ok(_) => Evidence::Refused,
        Err(_) => Evidence::Missing,
    }
}

/// A file name alone (ohrun writes `events.jsonl`): no directory, nothing absolute, no `.` or `..`.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// `steps/setup.diff` or `steps/N.diff`, the only names ohrun gives a diff.
fn diff_name(file: &str) -> bool {
    file.strip_prefix("steps/").and_then(|f| f.strip_suffix(".diff")).is_some_and(|stem| {
        stem == "setup" || (!stem.is_empty() && stem.len() <= 10 && stem.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The batch page for the batch directory `dir`.
pub fn batch_page(dir: &Path, summary: &Summary, live: Option<&Live>) -> String {
    let title = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "batch".to_string());
    // Each run's page is report.html beside its run.json.
    let links: Vec<Option<String>> = summary
        .runs
        .iter()
        .map(|r| r.report.as_ref().map(|p| encode_path(&Path::new(p).with_file_name(HTML_FILE).to_string_lossy())))
        .collect();
    let data = json!({
        "page": "batch",
        "title": title,
        "summary": summary,
        "links": links,
        "live": live_json(live),
    });
    page(&format!("{title} · ohrun"), &data, live.is_some())
}

fn live_json(live: Option<&Live>) -> Value {
    live.map_or(Value::Null, |l| json!({ "poll": l.poll, "version": l.version }))
}

fn page(title: &str, data: &Value, served: bool) -> String {
    let csp = if served { CSP_SERVED } else { CSP_FILE };
    document(title, data, csp, JS, "run.json and summary.json hold the same data")
}

/// An ohrun page (report.html, compare.html): the shared style sheet, `data` embedded as JSON, and
/// `script`, which draws it; `elsewhere` says where else its data is, for a browser without JavaScript.
pub(crate) fn document(title: &str, data: &Value, csp: &str, script: &str, elsewhere: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"ohrun {version}\">\n\
         <link rel=\"icon\" href=\"data:,\">\n<title>{title}</title>\n<style>\n{CSS}</style></head>\n\
         <body>\n<noscript>This page is drawn by JavaScript; {elsewhere}.</noscript>\n\
         <main id=\"app\"></main>\n<script type=\"application/json\" id=\"data\">{data}</script>\n<script>\n{script}</script>\n\
         </body></html>",
        version = env!("CARGO_PKG_VERSION"),
        title = escape_html(title),
        data = embed_json(data),
    )
}

/// JSON that can sit inside a `<script>` element: no `</` and no `<!` (so neither `</script>` nor `<!--`
/// can end or bend the element: without them the HTML tokenizer never leaves the script's data state);
/// `\u003c` is the same string to JSON.parse. Every other `<` stays as it is, and the text is redacted
/// before that escaping: a secret's JSON-escaped form is masked here (and found by the leak scan where it
/// survives) even when it contains a `<`.
fn embed_json(data: &Value) -> String {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    let json = super::redact::apply(&json);
    let mut out = String::with_capacity(json.len());
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '<' && matches!(chars.peek(), Some('/' | '!')) {
            out.push_str("\\u003c");
        } else {
            out.push(c);
        }
    }
    out
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative file path as a URL path (each segment percent-encoded, `/` kept).
pub(crate) fn encode_path(path: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');
    percent_encoding::utf8_percent_encode(path, SEGMENT).to_string()
}

/// The attempt's events (long strings cut, the page's budget kept), and the index range of each part of
/// the conversation: before the first step, then each step. A step starts with its message, the user
/// `MessageEvent`s being the step messages and the replies ohrun sent for `on_question`, in order.
fn read_events(path: Option<&Path>, report: &RunReport, cut: &mut Vec<String>) -> (Vec<Value>, Vec<[usize; 2]>) {
    let mut events = Vec::new();
    let mut bytes = 0;
    let (mut long_strings, mut stubs) = (0, 0);
    if let Some(file) = path.and_then(|p| std::fs::File::open(p).ok()) {
        for line in io::BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            let mut event = serde_json::from_str(&line)
                .unwrap_or_else(|e| json!({ "kind": "ohrun.UnreadableLine", "error": e.to_string(), "raw": line }));
            long_strings += cut_strings(&mut event);
            bytes += serde_json::to_string(&event).map_or(line.len(), |s| s.len());
            if bytes > MAX_EVENTS_BYTES {
                // Past the budget an event keeps what the list shows of it, so the steps still line up.
                stubs += 1;
                event = stub(&event);
            }
            events.push(event);
        }
    }
    if long_strings > 0 {
        cut.push(format!(
            "{long_strings} long text(s) in events are cut to {} KiB here; events.jsonl has them whole",
            MAX_EVENT_STRING / 1024
        ));
    }
    if stubs > 0 {
        cut.push(format!(
            "the last {stubs} events are listed by kind only (the page embeds at most {} MiB of events); \
             events.jsonl has them whole",
            MAX_EVENTS_BYTES / (1024 * 1024)
        ));
    }

    // The user message that starts each step: the step's own message, then one per reply it was sent.
    let mut starts = Vec::new();
    let mut ordinal = 0;
    for s in &report.steps {
        starts.push(ordinal);
        ordinal += 1 + s.replies as usize;
    }
    let mut ranges = vec![[0, 0]; report.steps.len() + 1];
    let mut messages = 0;
    for (i, e) in events.iter().enumerate() {
        if e["kind"] == "MessageEvent" && e["source"] == "user" {
            messages += 1;
        }
        // Part 0 is before the first message; part k is step k from its message on.
        let part = if messages == 0 { 0 } else { starts.iter().rposition(|&s| s < messages).map_or(0, |k| k + 1) };
        if ranges[part][1] == 0 && ranges[part][0] == 0 {
            ranges[part] = [i, i];
        }
        ranges[part][1] = i + 1;
    }
    (events, ranges)
}

/// Cuts every string longer than the cap inside `v`; how many were cut.
fn cut_strings(v: &mut Value) -> usize {
    match v {
        Value::String(s) if s.len() > MAX_EVENT_STRING => {
            let total = s.len();
            s.truncate(crate::text::floor_char_boundary(s, MAX_EVENT_STRING));
            s.push_str(&format!("\n… [cut: {total} bytes in all; see events.jsonl]"));
            1
        }
        Value::Array(a) => a.iter_mut().map(cut_strings).sum(),
        Value::Object(o) => o.values_mut().map(cut_strings).sum(),
        _ => 0,
    }
}

fn stub(event: &Value) -> Value {
    let mut s = serde_json::Map::new();
    for key in ["id", "kind", "source", "timestamp", "tool_name", "summary", "key"] {
        if let Some(v) = event.get(key) {
            s.insert(key.to_string(), v.clone());
        }
    }
    s.insert("ohrun_cut".into(), Value::Bool(true));
    Value::Object(s)
}

/// A text file up to `cap` bytes (what was cut is said in `cut`); None when it cannot be read.
fn read_capped(path: &Path, cap: usize, cut: &mut Vec<String>, what: &str) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if text.len() > cap {
        cut.push(format!("{what} is cut to {} KiB here (it has {} bytes)", cap / 1024, text.len()));
        text.truncate(crate::text::floor_char_boundary(&text, cap));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StepReport;

    #[test]
    fn embedded_json_cannot_end_the_script_and_reads_back_the_same() {
        let v = json!({"m": "</script><!--<script>x</SCRIPT >a<b"});
        let text = embed_json(&v);
        assert!(!text.contains("</") && !text.contains("<!"), "{text}");
        // Any other `<` stays literal, so a secret's JSON-escaped form can still be seen (and masked).
        assert!(text.contains("a<b") && text.contains("<script>x"), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    }

    #[test]
    fn only_the_names_ohrun_gives_its_evidence_are_read() {
        assert!(plain_name("events.jsonl"));
        for bad in ["", ".", "..", "/tmp/x", "../x", "a/b", "a\\b"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
        assert!(diff_name("steps/setup.diff") && diff_name("steps/12.diff"));
        for bad in ["steps/.diff", "steps/../x.diff", "/steps/1.diff", "steps/1.diff/..", "steps/1a.diff", "x/1.diff"] {
            assert!(!diff_name(bad), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let attempt = dir.path().join("attempt-1");
        std::fs::create_dir_all(attempt.join("steps")).unwrap();
        std::fs::write(dir.path().join("outside.txt"), "outside").unwrap();
        std::fs::write(attempt.join("steps/1.diff"), "+x").unwrap();
        std::os::unix::fs::symlink("../../outside.txt", attempt.join("steps/2.diff")).unwrap();
        assert!(matches!(evidence(&attempt, "steps/1.diff", true), Evidence::Found(_)));
        assert!(matches!(evidence(&attempt, "steps/2.diff", true), Evidence::Refused), "a symlink out");
        assert!(matches!(evidence(&attempt, "steps/3.diff", true), Evidence::Missing));
        assert!(matches!(evidence(&attempt, "../outside.txt", false), Evidence::Refused));
    }

    #[test]
    fn events_are_split_at_each_steps_message_and_its_replies() {
        let dir = tempfile::tempdir().unwrap();
        let ev = |kind: &str, source: &str| json!({"kind": kind, "source": source}).to_string();
        let lines = [
            ev("SystemPromptEvent", "agent"),
            ev("MessageEvent", "user"),
            ev("ActionEvent", "agent"),
            ev("MessageEvent", "user"), // the reply to step 1's question
            ev("ActionEvent", "agent"),
            ev("MessageEvent", "user"), // step 2
            ev("ActionEvent", "agent"),
        ];
        std::fs::write(dir.path().join("events.jsonl"), lines.join("\n")).unwrap();
        let report = RunReport {
            steps: vec![StepReport { replies: 1, ..StepReport::default() }, StepReport::default()],
            ..RunReport::default()
        };
        let (events, ranges) = read_events(Some(&dir.path().join("events.jsonl")), &report, &mut Vec::new());
        assert_eq!(events.len(), 7);
        assert_eq!(ranges, vec![[0, 1], [1, 5], [5, 7]]);
    }

    #[test]
    fn long_strings_are_cut_and_said() {
        let mut v = json!({"a": ["x".repeat(MAX_EVENT_STRING + 10)]});
        assert_eq!(cut_strings(&mut v), 1);
        assert!(v["a"][0].as_str().unwrap().ends_with("see events.jsonl]"));
    }

    #[test]
    fn titles_are_escaped() {
        assert_eq!(escape_html("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
        assert_eq!(encode_path("a b/run.json"), "a%20b/run.json");
    }
}
