//! The fuzz driver (`harness = false`): the job parser, template expander and matrix (`plan_text`), and
//! the decoding of event-socket frames (`decode_text`, `read_event`, the stats readers), fed with
//! structure-aware mutations of real inputs and with random bytes. Plain `cargo test` runs a short smoke
//! run after replaying every input in `tests/fuzz-regressions/`; the long run:
//!
//!     OHRUN_FUZZ_EXECS=1000000 cargo test --release --locked --test fuzz
//!
//! `OHRUN_FUZZ_SEED` (default fixed, so the smoke run is the same every time), `OHRUN_FUZZ_SECS` (a time
//! bound; 15 s unless `OHRUN_FUZZ_EXECS` is given), `OHRUN_FUZZ_TARGET` (`job` or `event`; both by default).
//! The invariants: nothing panics, every job error points at file:line:column and renders, and no input
//! takes more than `HANG` (a fuzzer finds endless loops too). The first input that breaks one is written
//! to `tests/fuzz-regressions/<target>-<hash>.txt` and the run fails.

use ohrun::agent::{events, read_event, stats};
use ohrun::diagnostic::Source;
use ohrun::job::{PlanOptions, plan_text};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::hint::black_box;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longer than this on one input is a hang (a debug build parses a job in well under a second).
const HANG: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Job,
    Event,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Job => "job",
            Target::Event => "event",
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_or<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    Some(v.parse().unwrap_or_else(|_| panic!("{name}={v} is not valid")))
}

fn main() {
    // Like a libtest binary: `--list` lists, and a filter that does not match skips the run.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("fuzz: test");
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| "fuzz".contains(f.as_str())) {
        return;
    }
    let long = std::env::var_os("OHRUN_FUZZ_EXECS").is_some();
    let execs: u64 = env_or("OHRUN_FUZZ_EXECS").unwrap_or(20_000);
    let seed: u64 = env_or("OHRUN_FUZZ_SEED").unwrap_or(0x0e5e_ed00);
    let secs: Option<u64> = env_or("OHRUN_FUZZ_SECS").or((!long).then_some(15));
    let only: Option<String> = env_or("OHRUN_FUZZ_TARGET");
    let targets: Vec<Target> =
        [Target::Job, Target::Event].into_iter().filter(|t| only.as_deref().is_none_or(|o| o == t.name())).collect();
    assert!(!targets.is_empty(), "OHRUN_FUZZ_TARGET is `job` or `event`");

    // The seed jobs' own directory: what they refer to (a rehearsal script) is there; nothing is written.
    let dir = repo().join("jobs");
    std::thread::spawn(watchdog);
    let replayed = replay(&dir);

    let corpus = Corpus::load();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = Seen::default();
    let started = Instant::now();
    let deadline = secs.map(|s| started + Duration::from_secs(s));
    let mut done = 0u64;
    while done < execs && deadline.is_none_or(|d| Instant::now() < d) {
        let target = targets[(done % targets.len() as u64) as usize];
        let input = match target {
            Target::Job => corpus.job_input(&mut rng),
            Target::Event => corpus.event_input(&mut rng),
        };
        let vars = random_vars(&mut rng);
        check(target, &input, &vars, &dir, &mut seen);
        done += 1;
        if long && done.is_multiple_of((execs / 10).max(1)) {
            eprintln!("fuzz: {done} executions, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    println!(
        "fuzz: seed {seed}, {done} executions ({}) in {:.1} s; {} job inputs planned, {} distinct kinds of job error; \
         {replayed} regressions replayed; no panic",
        targets.iter().map(|t| t.name()).collect::<Vec<_>>().join(" + "),
        started.elapsed().as_secs_f64(),
        seen.plans,
        seen.errors.len()
    );
}

/// The input being run, for the watchdog.
static RUNNING: Mutex<Option<(Target, String, Instant)>> = Mutex::new(None);

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let Some((target, input, since)) = RUNNING.lock().unwrap().as_ref()
            && since.elapsed() > HANG
        {
            let path = save(*target, input);
            eprintln!("fuzz: an input took more than {HANG:?}; written to {}", path.display());
            std::process::exit(1);
        }
    }
}

/// Runs one input; a broken invariant writes it to the regressions and ends the run.
fn check(target: Target, input: &str, vars: &[String], dir: &Path, seen: &mut Seen) {
    *RUNNING.lock().unwrap() = Some((target, input.to_string(), Instant::now()));
    let outcome = catch_unwind(AssertUnwindSafe(|| match target {
        Target::Job => run_job(input, vars, dir, seen),
        Target::Event => run_event(input),
    }));
    *RUNNING.lock().unwrap() = None;
    if outcome.is_err() {
        let path = save(target, input);
        eprintln!("fuzz: {} input panicked (vars {vars:?}); written to {}", target.name(), path.display());
        std::process::exit(1);
    }
}

/// Writes a failing input to `tests/fuzz-regressions/` (named by its hash, so a rerun finds the same file).
fn save(target: Target, input: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    input.hash(&mut h);
    let path = repo().join(format!("tests/fuzz-regressions/{}-{:016x}.txt", target.name(), h.finish()));
    std::fs::write(&path, input).unwrap();
    path
}

/// Replays every saved input (its target is its name's prefix); returns how many.
fn replay(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("tests/fuzz-regressions")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let target = match name.split('-').next() {
            Some("job") => Target::Job,
            Some("event") => Target::Event,
            _ => continue,
        };
        let input = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        *RUNNING.lock().unwrap() = Some((target, input.clone(), Instant::now()));
        let outcome = catch_unwind(AssertUnwindSafe(|| match target {
            Target::Job => VARS.iter().for_each(|vars| run_job(&input, vars, dir, &mut Seen::default())),
            Target::Event => run_event(&input),
        }));
        *RUNNING.lock().unwrap() = None;
        assert!(outcome.is_ok(), "the saved input {} still fails", path.display());
        n += 1;
    }
    n
}

/// `--var` arguments: mostly none (any problem with them stops the plan before the matrix is expanded).
const VARS: [&[&str]; 4] = [&[], &["branch=dev"], &["x=1", "="], &["host", "repo=a/b"]];

fn random_vars(rng: &mut fastrand::Rng) -> Vec<String> {
    let i = if rng.u8(..) < 200 { 0 } else { rng.usize(1..VARS.len()) };
    VARS[i].iter().map(|s| s.to_string()).collect()
}

/// The parser, templates and matrix on one text: an error must say where (line and column of the job
/// file or of the `--var` argument) and render.
fn run_job(text: &str, vars: &[impl AsRef<str>], dir: &Path, seen: &mut Seen) {
    let vars = vars.iter().map(|v| v.as_ref().to_string()).collect();
    let opts = PlanOptions { vars, max_runs: 1000, ..Default::default() };
    let Err(err) = plan_text(Source { name: "fuzz.yaml".into(), text: text.to_string() }, dir, &opts) else {
        seen.plans += 1;
        return;
    };
    assert!(!err.reports.is_empty(), "an error without a report");
    for report in &err.reports {
        let rendered = report.render(ohrun::style::Style::plain());
        let lines = report.source.text.lines().count();
        for d in &report.diagnostics {
            let span = d.span.unwrap_or_else(|| panic!("`{}` has no line:column", d.message));
            assert!(
                span.line >= 1 && span.col >= 1 && span.line <= lines + 1,
                "`{}` points at {}:{} of a text of {lines} lines",
                d.message,
                span.line,
                span.col
            );
            let at = format!("{}:{}:{}", report.source.name, span.line, span.col);
            assert!(rendered.contains(&at), "the rendering does not say {at}:\n{rendered}");
            seen.errors.insert(shape(&d.message));
        }
    }
}

/// What the job inputs came to: how many planned, and the kinds of error the others met.
#[derive(Default)]
struct Seen {
    plans: u64,
    errors: HashSet<String>,
}

/// An error message without its particulars (quoted names, numbers): what kind of error it is.
fn shape(message: &str) -> String {
    let mut quoted = false;
    let mut out = String::new();
    for c in message.chars() {
        if c == '`' {
            quoted = !quoted;
            out.push_str(if quoted { "`…" } else { "`" });
        } else if !quoted {
            out.push(if c.is_ascii_digit() { '0' } else { c });
        }
    }
    out
}

/// A frame's text through everything that reads server events: decoding (a raw record when it is not
/// JSON), the wait's tracker and completion rule, and the cost readers (of an event, of a conversation's
/// `stats`, of an event log).
fn run_event(text: &str) {
    let event = events::decode_text(text).unwrap_or_else(|raw| raw);
    black_box(read_event(&event));
    black_box(stats::sum_stats(&event));
    black_box(event.get("value").map(stats::sum_stats));
    black_box(stats::last_stats_in(text));
    black_box(events::decode_binary(text.as_bytes()));
}

/// The seeds: every job file of the repository (the first `valid`) and the golden bad ones; real events.
struct Corpus {
    jobs: Vec<Vec<u8>>,
    valid: usize,
    events: Vec<Value>,
}

const YAML_TOKENS: &[&str] = &[
    ": ",
    "- ",
    "\n",
    "\t",
    "  ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!str ",
    "!!int ",
    "!!binary ",
    "!custom ",
    "|\n",
    "|-\n",
    ">+\n",
    "# ",
    "'",
    "\"",
    "\\",
    "? ",
    "---\n",
    "...\n",
    "%YAML 1.2\n---\n",
    "~",
    "null",
    "yes",
    "0o17",
    "0x1F",
    "1_000",
    ".inf",
    "-.nan",
    "$",
    "${",
    "${X}",
    "${LLM_API_KEY}",
    "${X:-d}",
    "$${X}",
    "\r\n",
    "\0",
    "key: value\n",
    "- a\n- b\n",
];

const TEMPLATES: &[&str] = &[
    "{{ ",
    " }}",
    "{% ",
    " %}",
    "{#",
    "#}",
    "{{ repo }}",
    "{{ vars.branch }}",
    "{{ host | upper }}",
    "{{ matrix }}",
    "{{ env.HOME }}",
    "{{ job.name }}",
    "{{ run }}",
    "{{ nope }}",
    "{{ 1/0 }}",
    "{{ a.b.c.d }}",
    "{% if repo %}a{% else %}b{% endif %}",
    "{% for v in [1, 2] %}{{ v }}{% endfor %}",
    "{% raw %}{{{% endraw %}",
    "{% set a = 1 %}",
    "{{ range(3) | list }}",
    "{{ repo ~ repo }}",
    "{% include 'x' %}",
    "{% extends 'y' %}",
    "{% macro m() %}{% endmacro %}",
    "{{ '\u{0}' }}",
    "{{ vars['x'] }}",
    "{{ repo[0:2] }}",
    "{{ (1, 2) }}",
];

const MATRIX_BLOCKS: &[&str] = &[
    "matrix:\n  a: [1, 2, 3]\n  b: [x, y]\n",
    "matrix:\n  a: [1, 2]\n  include:\n    - {a: 3, c: z}\n  exclude:\n    - {a: 1}\n",
    "matrix:\n  a: []\n",
    "matrix:\n  a: {file: values.txt}\n",
    "matrix:\n  repo:\n    - {name: r1, url: u}\n    - {name: r2}\n",
    "matrix:\n  a: [1,2,3,4,5,6,7,8,9,10]\n  b: [1,2,3,4,5,6,7,8,9,10]\n  c: [1,2,3,4,5,6,7,8,9,10]\n",
    "matrix:\n  vars: [1]\n  run: [2]\n",
    "matrix:\n  a: [1, 1, 1]\n  exclude: [{b: 2}]\n  include: [{}]\n",
    "matrix: [1, 2]\n",
    "matrix:\n  a: [[1], {x: 1}, null, 1.5, true]\n",
];

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "-0",
    "1.5",
    "1e309",
    "-1e309",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "9223372036854775807",
    "-9223372036854775808",
    "0.000000001",
    "1e-400",
    "99999999999h",
    "18446744073709551615s",
    "0s",
    "1.5.5",
    "4294967296",
    "65536",
    "$99999999999999999999.99",
];

const UNICODE: &[&str] =
    &["é", "\u{202e}", "\u{feff}", "🦀", "e\u{301}", "\u{10ffff}", "\u{fffd}", "𝕏", "\u{2028}", "ı", "ﬁ", "\u{85}"];

/// Strings the event readers look for, to put where they look.
const EVENT_STRINGS: &[&str] = &[
    "ConversationStateUpdateEvent",
    "MessageEvent",
    "ActionEvent",
    "ConversationErrorEvent",
    "ObservationEvent",
    "full_state",
    "stats",
    "execution_status",
    "running",
    "finished",
    "error",
    "stuck",
    "idle",
    "paused",
    "agent",
    "user",
    "finish",
    "",
    "ohrun.RawFrame",
];

const EVENT_KEYS: &[&str] = &[
    "kind",
    "key",
    "value",
    "id",
    "timestamp",
    "source",
    "code",
    "detail",
    "llm_message",
    "content",
    "text",
    "tool_name",
    "action",
    "message",
    "execution_status",
    "stats",
    "usage_to_metrics",
    "accumulated_cost",
    "accumulated_token_usage",
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "costs",
    "cost",
];

fn pick<'a, T>(rng: &mut fastrand::Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

impl Corpus {
    fn load() -> Corpus {
        let seeds = |dir: &str| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect();
            files.sort(); // the same seeds in the same order: a seed reproduces a run
            files.iter().map(|p| std::fs::read(p).unwrap()).collect::<Vec<_>>()
        };
        let mut jobs = seeds("jobs");
        let valid = jobs.len();
        jobs.extend(seeds("tests/golden"));
        let events = std::fs::read_to_string(repo().join("tests/fixtures/fuzz-events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        Corpus { jobs, valid, events }
    }

    /// A seed job with a few structure-aware edits (one half the time, rarely eight), or random bytes.
    /// Half the seeds are valid jobs, so that many inputs get through to the templates and the matrix.
    fn job_input(&self, rng: &mut fastrand::Rng) -> String {
        if rng.u8(..) < 8 {
            return String::from_utf8_lossy(&random_bytes(rng, 512)).into_owned();
        }
        let seeds = if rng.bool() { &self.jobs[..self.valid] } else { &self.jobs[..] };
        let mut text = pick(rng, seeds).clone();
        for _ in 0..1 + (0..7).take_while(|_| rng.bool()).count() {
            self.edit_job(&mut text, rng);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn edit_job(&self, text: &mut Vec<u8>, rng: &mut fastrand::Rng) {
        let at = rng.usize(..=text.len());
        let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        let line = rng.usize(..lines.len());
        match rng.u8(..15) {
            0 => insert(text, at, random_bytes(rng, 8)),
            1 => drop(text.drain(at..(at + rng.usize(1..16)).min(text.len()))),
            2 => {
                if let Some(b) = text.get_mut(at) {
                    *b = rng.u8(..);
                }
            }
            3 => insert(text, at, pick(rng, YAML_TOKENS)),
            4 => insert(text, at, pick(rng, TEMPLATES)),
            5 => insert(text, at, pick(rng, UNICODE)),
            // Replace the value on a line (after `: ` or `- `) with an extreme number or duration.
            6 => {
                let l = &mut lines[line];
                let cut = l.windows(2).position(|w| w == b": " || w == b"- ").map_or(l.len(), |i| i + 2);
                l.truncate(cut);
                l.extend_from_slice(pick(rng, NUMBERS).as_bytes());
                *text = lines.join(&b'\n');
            }
            7 => {
                let dup = lines[line].clone();
                lines.insert(line, dup);
                *text = lines.join(&b'\n');
            }
            8 => {
                lines.remove(line);
                *text = lines.join(&b'\n');
            }
            9 => {
                let other = rng.usize(..lines.len());
                lines.swap(line, other);
                *text = lines.join(&b'\n');
            }
            // A line of another seed.
            10 => {
                let seed = pick(rng, &self.jobs);
                let foreign: Vec<&[u8]> = seed.split(|&b| b == b'\n').collect();
                lines.insert(line, pick(rng, &foreign).to_vec());
                *text = lines.join(&b'\n');
            }
            // A matrix block at the top level, replacing the seed's own when it has one.
            11 => {
                let block = pick(rng, MATRIX_BLOCKS).as_bytes();
                match lines.iter().position(|l| l.starts_with(b"matrix:")) {
                    Some(i) => {
                        let end = (i + 1..lines.len()).find(|&j| !lines[j].starts_with(b" ")).unwrap_or(lines.len());
                        lines.splice(i..end, [block.strip_suffix(b"\n").unwrap_or(block).to_vec()]);
                        *text = lines.join(&b'\n');
                    }
                    None => text.extend_from_slice(block),
                }
            }
            // Indent or dedent a line.
            12 => {
                let l = &mut lines[line];
                if rng.bool() {
                    l.splice(0..0, *b"  ");
                } else {
                    let spaces = l.iter().take(2).take_while(|&&b| b == b' ').count();
                    l.drain(..spaces);
                }
                *text = lines.join(&b'\n');
            }
            13 => {
                let depth = rng.usize(1..300);
                let (open, close) = if rng.bool() { ("[", "]") } else { ("{a: ", "}") };
                insert(text, at, format!("{}1{}", open.repeat(depth), close.repeat(depth)));
            }
            _ => text.truncate(at),
        }
    }

    /// A real event with 1–4 structural edits, serialized, now and then with a few byte edits; or random bytes.
    fn event_input(&self, rng: &mut fastrand::Rng) -> String {
        if rng.u8(..) < 8 {
            return String::from_utf8_lossy(&random_bytes(rng, 256)).into_owned();
        }
        let mut event = pick(rng, &self.events).clone();
        for _ in 0..rng.usize(1..=4) {
            mutate_json(&mut event, rng);
        }
        let mut text = event.to_string().into_bytes();
        if rng.u8(..) < 50 {
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..=text.len());
                match rng.u8(..3) {
                    0 => insert(&mut text, at, random_bytes(rng, 4)),
                    1 => drop(text.drain(at..(at + rng.usize(1..8)).min(text.len()))),
                    _ => insert(&mut text, at, pick(rng, NUMBERS)),
                }
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

fn insert(text: &mut Vec<u8>, at: usize, piece: impl AsRef<[u8]>) {
    text.splice(at..at, piece.as_ref().iter().copied());
}

fn random_bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    (0..rng.usize(..max)).map(|_| rng.u8(..)).collect()
}

/// One edit at a random node of `v`: a walk down picks the node, which is replaced, or gets a key or an
/// item added, removed or renamed — mostly with the names and values the readers look for.
fn mutate_json(v: &mut Value, rng: &mut fastrand::Rng) {
    let mut node = v;
    loop {
        let children = match node {
            Value::Object(m) => m.len(),
            Value::Array(a) => a.len(),
            _ => 0,
        };
        if children == 0 || rng.u8(..4) == 0 {
            break;
        }
        let i = rng.usize(..children);
        node = match node {
            Value::Object(m) => m.values_mut().nth(i).unwrap(),
            Value::Array(a) => &mut a[i],
            _ => unreachable!(),
        };
    }
    let nth_key =
        |m: &serde_json::Map<String, Value>, rng: &mut fastrand::Rng| m.keys().nth(rng.usize(..m.len())).cloned();
    match (node, rng.u8(..6)) {
        (Value::Object(m), 0) if !m.is_empty() => drop(m.remove(&nth_key(m, rng).unwrap())),
        (Value::Object(m), 1) => drop(m.insert(pick(rng, EVENT_KEYS).to_string(), random_value(rng, 3))),
        (Value::Object(m), 2) if !m.is_empty() => {
            let value = m.remove(&nth_key(m, rng).unwrap()).unwrap();
            m.insert(pick(rng, EVENT_KEYS).to_string(), value);
        }
        (Value::Array(a), 0) if !a.is_empty() => drop(a.remove(rng.usize(..a.len()))),
        (Value::Array(a), 1) if !a.is_empty() => a.push(a[rng.usize(..a.len())].clone()),
        (node, _) => *node = random_value(rng, 3),
    }
}

/// A JSON value that is often one the readers care about, sometimes anything.
fn random_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    match rng.u8(..11) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => json!(*pick(rng, &[u64::MAX, 0, 1, u64::MAX / 2 + 1, 1 << 53])),
        3 => json!(*pick(rng, &[i64::MIN, -1, i64::MAX])),
        4 => json!(*pick(rng, &[f64::MAX, f64::MIN_POSITIVE, -0.0, 0.1, 1e300, -1e300, 1e19])),
        5 | 6 => Value::String(pick(rng, EVENT_STRINGS).to_string()),
        7 => Value::String(format!("{}{}", pick(rng, EVENT_STRINGS), pick(rng, UNICODE))),
        8 if depth > 0 => Value::Array((0..rng.usize(..4)).map(|_| random_value(rng, depth - 1)).collect()),
        9 if depth > 0 => Value::Object(
            (0..rng.usize(..4)).map(|_| (pick(rng, EVENT_KEYS).to_string(), random_value(rng, depth - 1))).collect(),
        ),
        _ => json!(rng.u64(..)),
    }
}
