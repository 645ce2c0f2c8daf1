//! What a person sees while jobs run. On a terminal (and not in CI) a live spinner line per step; else
//! plain, stable lines. The mode is decided once, from facts passed in, so it is easy to test.

use crate::agent::conversation::Progress;
use crate::money::Usd;
use crate::report::redact;
use crate::report::{EndReason, StepReport};
use crate::style::Style;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A live line that updates in place.
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
    bar: Mutex<Option<ProgressBar>>,
}

impl Console {
    pub fn new(quiet: bool) -> Console {
        let is_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        Console {
            mode: Mode::resolve(std::io::stderr().is_terminal(), is_ci, quiet),
            style: Style::for_stderr(),
            bar: Mutex::new(None),
        }
    }

    fn redact(&self, text: &str) -> String {
        redact::apply(text).into_owned()
    }

    /// A line of progress (not shown with -q).
    pub fn say(&self, line: &str) {
        if self.mode != Mode::Quiet {
            self.error(line);
        }
    }

    /// A line that must be seen even with -q.
    pub fn error(&self, line: &str) {
        let line = self.redact(line);
        match self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Starts (or changes) the live line; in plain mode prints it once.
    pub fn activity(&self, message: &str) {
        let message = self.redact(message);
        match self.mode {
            Mode::Live => {
                let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
                let b = bar.get_or_insert_with(|| {
                    let b = ProgressBar::new_spinner();
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                });
                b.set_message(message);
            }
            Mode::Plain => eprintln!("{message}"),
            Mode::Quiet => {}
        }
    }

    fn update(&self, message: String) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.set_message(message);
        }
    }

    /// Ends the live line.
    pub fn clear(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// Prints `text` on stdout (a `--json` document), through the redactor like everything else.
pub fn print_stdout(text: &str) {
    println!("{}", redact::apply(text));
}

/// `code: detail`, or just the code when there is no detail (no stray `: `).
pub fn code_and_detail(code: &str, detail: &str) -> String {
    if detail.trim().is_empty() { code.to_string() } else { format!("{code}: {detail}") }
}

/// The live line of a step: what runs, elapsed time, events, cost so far.
pub struct StepProgress<'a> {
    pub console: &'a Console,
    pub run_id: &'a str,
    pub cancel: &'a crate::cancel::Cancel,
}

impl Progress for StepProgress<'_> {
    fn step_done(&self, s: &StepReport, total: usize) {
        let error = s.error.as_ref().map(|e| format!(" · {}", code_and_detail(&e.code, &e.detail))).unwrap_or_default();
        self.console.say(&format!(
            "{} step {}/{total}: {} · {} events · ${} · {:.1}s{error}",
            self.run_id,
            s.index,
            s.end_reason.as_str(),
            s.event_count,
            s.cost,
            s.duration_ms.unwrap_or(0) as f64 / 1000.0
        ));
        // The next step is announced only if it will run.
        let goes_on = s.end_reason == EndReason::Finished || (s.end_reason == EndReason::Question && s.error.is_none());
        if s.index < total && goes_on && !self.cancel.is_set() {
            self.console.activity(&format!("{} step {}/{total}", self.run_id, s.index + 1));
        }
    }

    fn step(&self, index: usize, total: usize, elapsed: Duration, events: usize, cost: Usd) {
        if self.console.mode == Mode::Live {
            self.console.update(format!(
                "{} step {index}/{total} · {}s · {events} events · ${cost}",
                self.run_id,
                elapsed.as_secs()
            ));
        }
    }
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
}
