//! Errors about a user's input, drawn the way a compiler draws them: what is wrong, where
//! (`path:line:col`), the offending line with a caret under the offending text, and what to do next.

use crate::style::Style;
use std::fmt::Write;

/// A place in a source text. `line` and `col` are 1-based; `col` and `len` count characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub line: usize,
    pub col: usize,
    pub len: usize,
}

/// A text that diagnostics point into: a job file, or a command-line argument.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<Span>,
    pub hint: Option<String>,
    /// Hide the text under the caret (it may be a secret).
    pub redact: bool,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic { message: message.into(), span: None, hint: None, redact: false }
    }

    pub fn at(mut self, span: Option<Span>) -> Self {
        self.span = span;
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn redacted(mut self) -> Self {
        self.redact = true;
        self
    }

    /// Renders this diagnostic against `source` (the file its span points into).
    pub fn render(&self, source: &Source, style: Style) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}: {}", style.error("error"), style.bold(&self.message));
        match self.span {
            Some(span) => {
                let _ = writeln!(out, "  {} {}:{}:{}", style.dim("-->"), source.name, span.line, span.col);
                if let Some(line) = source.text.lines().nth(span.line.saturating_sub(1)) {
                    let gutter = span.line.to_string();
                    let pad = " ".repeat(gutter.len());
                    let (shown, col, len) = display_line(line, span, self.redact);
                    let _ = writeln!(out, "{pad} {}", style.dim("|"));
                    let _ = writeln!(out, "{} {} {shown}", style.dim(&gutter), style.dim("|"));
                    let carets = "^".repeat(len.max(1));
                    let _ = writeln!(out, "{pad} {} {}{}", style.dim("|"), " ".repeat(col), style.error(&carets));
                }
            }
            None => {
                let _ = writeln!(out, "  {} {}", style.dim("-->"), source.name);
            }
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "  {} {hint}", style.hint("hint:"));
        }
        out
    }
}

/// The line as shown (tabs expanded, secret masked), and the caret's column and width in it.
fn display_line(line: &str, span: Span, redact: bool) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    let start = span.col.saturating_sub(1).min(chars.len());
    let end = (start + span.len).min(chars.len());
    let mut shown = String::new();
    let mut caret_col = 0;
    let mut caret_len = 0;
    for (i, c) in chars.iter().enumerate() {
        if i == start {
            caret_col = shown.chars().count();
        }
        let piece = match c {
            '\t' => "    ".to_string(),
            _ if redact && i >= start && i < end => "*".to_string(),
            c => c.to_string(),
        };
        if i >= start && i < end {
            caret_len += piece.chars().count();
        }
        shown.push_str(&piece);
    }
    if start >= chars.len() {
        caret_col = shown.chars().count();
    }
    (shown, caret_col, caret_len.max(span.len.min(1)))
}

/// All the problems found in one source, reported together.
#[derive(Clone, Debug)]
pub struct Report {
    pub source: Source,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn render(&self, style: Style) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            out.push_str(&d.render(&self.source, style));
            out.push('\n');
        }
        if self.diagnostics.len() > 1 {
            let _ =
                writeln!(out, "{} {} errors in {}", style.error("error:"), self.diagnostics.len(), self.source.name);
        }
        out
    }
}

/// The closest candidate by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1) && *d < word.len().max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

impl Source {
    /// Byte offset of a span's start.
    pub fn offset(&self, span: Span) -> Option<usize> {
        let line_start =
            if span.line <= 1 { 0 } else { self.text.match_indices('\n').nth(span.line - 2).map(|(i, _)| i + 1)? };
        let line = &self.text[line_start..];
        let col_bytes = line.char_indices().nth(span.col.saturating_sub(1)).map(|(i, _)| i).unwrap_or(line.len());
        Some(line_start + col_bytes)
    }

    /// The span of `needle`'s first occurrence at or after `from`, if any.
    pub fn find_after(&self, from: Span, needle: &str) -> Option<Span> {
        let start = self.offset(from)?;
        let at = start + self.text.get(start..)?.find(needle)?;
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        let len = needle.lines().next().map(|l| l.chars().count()).unwrap_or(1);
        Some(Span { line, col, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_under_the_span() {
        let source = Source { name: "a.yaml".into(), text: "name: x\nstpes: []\n".into() };
        let d = Diagnostic::new("unknown key `stpes`")
            .at(Some(Span { line: 2, col: 1, len: 5 }))
            .hint("did you mean `steps`?");
        let out = d.render(&source, Style::plain());
        assert_eq!(
            out,
            "error: unknown key `stpes`\n  --> a.yaml:2:1\n  |\n2 | stpes: []\n  | ^^^^^\n  hint: did you mean `steps`?\n"
        );
    }

    #[test]
    fn redacts_secret() {
        let source = Source { name: "a".into(), text: "key: sk-live".into() };
        let d = Diagnostic::new("x").at(Some(Span { line: 1, col: 6, len: 7 })).redacted();
        let out = d.render(&source, Style::plain());
        assert!(!out.contains("sk-live"), "{out}");
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("stpes", ["steps", "setup"]), Some("steps"));
        assert_eq!(did_you_mean("zzz", ["steps", "setup"]), None);
    }
}
