//! What a person sees while jobs run. On a terminal (and not in CI): one live line per running run (its
//! step, elapsed time, events, cost) above an overall bar (done, failed, remaining, spend), redrawn in
//! place. In CI or a pipe: plain lines, each stamped with the time, one per state change. `-q`: errors
//! only. The mode is decided once, from facts passed in, so it is easy to test. Every line passes the
//! redactor, and lines of parallel runs never mix mid-line: each is written whole, with its run's prefix.

use crate::agent::conversation::Progress;
use crate::money::Usd;
use crate::report::redact;
use crate::report::{EndReason, StepReport};
use crate::style::Style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Live lines that update in place.
    Live,
    /// One line per event, nothing redrawn (CI logs, pipes).
    Plain,
    /// Errors only.
    Quiet,
}

impl Mode {
    /// Live only for a terminal outside CI; quiet wins over everything.
    pub fn resolve(is_terminal: bool, is_ci: bool, quiet: bool) -> Mode {
        match (quiet, is_terminal && !is_ci) {
            (true, _) => Mode::Quiet,
            (false, true) => Mode::Live,
            (false, false) => Mode::Plain,
        }
    }
}

pub struct Console {
    pub mode: Mode,
    pub style: Style,
    multi: MultiProgress,
    overall: Mutex<Option<Overall>>,
}

/// The overall bar and what it shows: runs done (of which failed), to go, and the money spent — by the
/// runs that ended and, live, by those under way (each run line's latest cost).
struct Overall {
    bar: ProgressBar,
    failed: u64,
    remaining: u64,
    finished: Usd,
    running: std::collections::HashMap<String, Usd>,
}

impl Overall {
    fn redraw(&self) {
        let spent = self.finished + self.running.values().copied().sum();
        self.bar.set_message(format!("done · {} failed · {} to go · ${spent}", self.failed, self.remaining));
    }
}

impl Console {
    pub fn new(quiet: bool) -> Console {
        let is_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        let mode = Mode::resolve(std::io::stderr().is_terminal(), is_ci, quiet);
        let target = if mode == Mode::Live { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Console {
            mode,
            style: Style::for_stderr(),
            multi: MultiProgress::with_draw_target(target),
            overall: Mutex::new(None),
        }
    }

    /// A line of progress (not shown with -q).
    pub fn say(&self, line: &str) {
        if self.mode != Mode::Quiet {
            self.print(line);
        }
    }

    /// A line that must be seen even with -q.
    pub fn error(&self, line: &str) {
        self.print(line);
    }

    fn print(&self, line: &str) {
        let line = redact::apply(line);
        match self.mode {
            Mode::Live => {
                let _ = self.multi.println(line.as_ref());
            }
            // One locked write for all lines, so parallel runs never interleave within one; a terminal
            // that went away (EIO after a hangup) must not panic the run that is releasing its sandbox.
            _ => {
                use std::io::Write;
                let _ = writeln!(std::io::stderr().lock(), "{}", prefixed(&stamp(), &line));
            }
        }
    }

    /// The live line of one run (in plain mode, its state changes are printed as lines), its lines led by
    /// `lead` (`[run-id] `, or nothing when the run is alone).
    pub fn run_line(&self, lead: &str) -> RunLine<'_> {
        let bar = (self.mode == Mode::Live).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            let b = match self.overall.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                Some(overall) => self.multi.insert_before(&overall.bar, b),
                None => self.multi.add(b),
            };
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        RunLine { console: self, lead: lead.to_string(), bar }
    }

    /// Starts the overall bar of a batch of `total` runs (live mode; nothing elsewhere).
    pub fn start_overall(&self, total: u64) {
        if self.mode != Mode::Live {
            return;
        }
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let overall = Overall { bar, failed: 0, remaining: total, finished: Usd::ZERO, running: Default::default() };
        overall.redraw();
        *self.overall.lock().unwrap_or_else(|e| e.into_inner()) = Some(overall);
    }

    /// Moves the overall bar: runs done, of which failed, and the money the ended runs spent; the run led
    /// by `ended` (if any) has just been counted among them, so its live cost goes in the same redraw.
    pub fn overall(&self, done: u64, failed: u64, remaining: u64, spent: Usd, ended: Option<&str>) {
        if let Some(o) = self.overall.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            (o.failed, o.remaining, o.finished) = (failed, remaining, spent);
            if let Some(lead) = ended {
                o.running.remove(lead);
            }
            o.redraw();
            o.bar.set_position(done);
        }
    }

    /// What the run led by `lead` has spent so far.
    fn running_cost(&self, lead: &str, cost: Usd) {
        if let Some(o) = self.overall.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            o.running.insert(lead.to_string(), cost);
            o.redraw();
        }
    }

    /// Ends every live line.
    pub fn clear(&self) {
        if let Some(overall) = self.overall.lock().unwrap_or_else(|e| e.into_inner()).take() {
            overall.bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// Every line of `text` behind `prefix`, so a multi-line message (a log tail) keeps its run's mark.
fn prefixed(prefix: &str, text: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}")).collect::<Vec<_>>().join("\n")
}

/// `HH:MM:SS ` in plain mode, so a CI log shows when each state change happened.
fn stamp() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now.get(11..19).map(|t| format!("{t} ")).unwrap_or_default()
}

/// One run's line: what it is doing now. Its messages carry the run's prefix.
pub struct RunLine<'c> {
    console: &'c Console,
    pub lead: String,
    bar: Option<ProgressBar>,
}

impl RunLine<'_> {
    /// A new state of the run: the live line changes, or (plain) a line is printed.
    pub fn activity(&self, message: &str) {
        let message = format!("{}{message}", self.lead);
        match &self.bar {
            Some(bar) => bar.set_message(redact::apply(&message).into_owned()),
            None => self.console.say(&message),
        }
    }

    /// A passing detail (elapsed time, events so far): live lines only.
    fn update(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(redact::apply(&format!("{}{message}", self.lead)).into_owned());
        }
    }

    /// A line about this run (not shown with -q).
    pub fn say(&self, line: &str) {
        // Redacted before each line gets its prefix: a multi-line secret (a PEM key) matches only whole.
        self.console.say(&prefixed(&self.lead, &redact::apply(line)));
    }

    /// A line about this run that must be seen even with -q.
    pub fn error(&self, line: &str) {
        self.console.error(&prefixed(&self.lead, &redact::apply(line)));
    }
}

impl Drop for RunLine<'_> {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            self.console.multi.remove(&bar);
        }
    }
}

/// `code: detail`, or just the code when there is no detail (no stray `: `).
pub fn code_and_detail(code: &str, detail: &str) -> String {
    if detail.trim().is_empty() { code.to_string() } else { format!("{code}: {detail}") }
}

/// Prints `text` on stdout (a `--json` document), through the redactor like everything else.
pub fn print_stdout(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{}", redact::apply(text));
}

/// The steps of one run, on its line.
pub struct StepProgress<'a> {
    pub line: &'a RunLine<'a>,
    pub cancel: &'a crate::cancel::Cancel,
}

impl Progress for StepProgress<'_> {
    fn step_done(&self, s: &StepReport, total: usize) {
        let error = s.error.as_ref().map(|e| format!(" · {}", code_and_detail(&e.code, &e.detail))).unwrap_or_default();
        self.line.say(&format!(
            "step {}/{total}: {} · {} events · ${} · {:.1}s{error}",
            s.index,
            s.end_reason.as_str(),
            s.event_count,
            s.cost,
            s.duration_ms.unwrap_or(0) as f64 / 1000.0
        ));
        // The next step is announced only if it will run.
        let goes_on = s.end_reason == EndReason::Finished || (s.end_reason == EndReason::Question && s.error.is_none());
        if s.index < total && goes_on && !self.cancel.is_set() {
            self.line.activity(&format!("step {}/{total}", s.index + 1));
        }
    }

    fn step(&self, index: usize, total: usize, elapsed: Duration, events: usize, cost: Usd) {
        self.line.update(format!("step {index}/{total} · {}s · {events} events · ${cost}", elapsed.as_secs()));
        if self.line.bar.is_some() {
            self.line.console.running_cost(&self.line.lead, cost);
        }
    }
}

/// `{"type": kind, …value}`: one line of `--json`.
pub fn json_line(kind: &str, value: serde_json::Value) -> String {
    let mut object = serde_json::Map::new();
    object.insert("type".into(), serde_json::json!(kind));
    if let serde_json::Value::Object(fields) = value {
        object.extend(fields);
    }
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::Mode;

    #[test]
    fn mode_decision_table() {
        assert_eq!(Mode::resolve(true, false, false), Mode::Live);
        assert_eq!(Mode::resolve(true, true, false), Mode::Plain);
        assert_eq!(Mode::resolve(false, false, false), Mode::Plain);
        assert_eq!(Mode::resolve(true, false, true), Mode::Quiet);
    }

    #[test]
    fn every_line_of_a_message_keeps_its_prefix() {
        assert_eq!(super::prefixed("[r] ", "error: x\nlog 1\nlog 2"), "[r] error: x\n[r] log 1\n[r] log 2");
        assert_eq!(super::prefixed("[r] ", ""), "");
    }
}
