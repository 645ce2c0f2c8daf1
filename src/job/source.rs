//! Where every key and value of a YAML document is, by path. serde gives values without positions, so
//! this map (built from yaml-rust2's marked events) turns any path an error names back into
//! `line:col` — for errors found while deserializing and for those found long after.

use crate::diagnostic::Span;
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One step of a path into a document: a map key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub type Path = Vec<Seg>;

/// A path segment naming a map key.
pub fn key(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

/// Renders a path the way users write it: `steps[1].timeout`.
pub fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    key: Option<Span>,
    value: Option<Span>,
}

/// A problem the source map itself finds: YAML that serde would silently accept.
#[derive(Clone, Debug)]
pub struct DuplicateKey {
    pub key: String,
    pub span: Span,
    pub first: Span,
}

#[derive(Debug, Default)]
pub struct SourceMap {
    entries: HashMap<Path, Entry>,
    pub duplicates: Vec<DuplicateKey>,
}

impl SourceMap {
    /// Builds the map. A syntax error is serde_yaml's to report; where yaml-rust2 alone stops (the two
    /// disagree on a few characters, such as U+2028 after a value) the map holds what came before, so
    /// what is wrong further on still points at its nearest mapped ancestor.
    pub fn build(text: &str) -> SourceMap {
        let mut builder = Builder { lines: text.lines().collect(), ..Default::default() };
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut builder, false);
        // When yaml-rust2 stops before the document even starts (`?` alone), the whole job is at 1:1: every
        // lookup ends at the root, so every problem still points somewhere.
        let root = Entry { key: None, value: Some(Span { line: 1, col: 1, len: 1 }) };
        builder.entries.entry(Vec::new()).or_insert(root);
        SourceMap { entries: builder.entries, duplicates: builder.duplicates }
    }

    /// The span of the value at `path`, or of its nearest ancestor that has one.
    pub fn value_span(&self, path: &[Seg]) -> Option<Span> {
        (0..=path.len()).rev().find_map(|n| self.entries.get(&path[..n]).and_then(|e| e.value))
    }

    /// The span of the key at `path` (the key itself, not its value), else the value's.
    pub fn key_span(&self, path: &[Seg]) -> Option<Span> {
        self.entries.get(path).and_then(|e| e.key).or_else(|| self.value_span(path))
    }
}

enum Frame {
    Map { path: Path, key: Option<(String, Span)>, seen: HashMap<String, Span>, spanned: bool },
    Seq { path: Path, next: usize },
}

#[derive(Default)]
struct Builder<'a> {
    lines: Vec<&'a str>,
    stack: Vec<Frame>,
    entries: HashMap<Path, Entry>,
    duplicates: Vec<DuplicateKey>,
    done: bool,
}

impl Builder<'_> {
    fn scalar_span(&self, value: &str, style: TScalarStyle, mark: Marker) -> Span {
        let line = mark.line();
        let col = mark.col() + 1;
        let rest: usize =
            self.lines.get(line.saturating_sub(1)).map(|l| l.chars().count().saturating_sub(col - 1)).unwrap_or(0);
        let len = match style {
            TScalarStyle::Plain => value.lines().next().map(|l| l.chars().count()).unwrap_or(0),
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => value.chars().count() + 2,
            _ => 1,
        };
        Span { line, col, len: len.min(rest.max(1)) }
    }

    /// Path of the node that starts now, and whether it is a map key.
    fn place(&mut self) -> Option<(Path, bool)> {
        match self.stack.last_mut()? {
            Frame::Map { path, key: None, .. } => Some((path.clone(), true)),
            Frame::Map { path, key: Some((k, _)), .. } => {
                let mut p = path.clone();
                p.push(Seg::Key(k.clone()));
                Some((p, false))
            }
            Frame::Seq { path, next } => {
                let mut p = path.clone();
                p.push(Seg::Index(*next));
                *next += 1;
                Some((p, false))
            }
        }
    }

    fn record_value(&mut self, path: Path, span: Span) {
        let key_span = match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => key.take().map(|(_, s)| s),
            _ => None,
        };
        // An empty value (`steps:`) is reported at its key, not on whatever line comes next.
        let span = match key_span {
            Some(k) if span.line != k.line && span.len == 0 => k,
            _ => span,
        };
        self.entries.insert(path, Entry { key: key_span, value: Some(span) });
    }

    fn node(&mut self, value: Option<(&str, TScalarStyle)>, mark: Marker, opens: Option<bool>) {
        let (path, is_key) = self.place().unwrap_or_default();
        if is_key {
            let (text, style) = value.unwrap_or(("", TScalarStyle::Plain));
            let span = self.scalar_span(text, style, mark);
            let mut first_key_of = None;
            let mut duplicate_of = None;
            if let Some(Frame::Map { key, seen, spanned, path: map_path }) = self.stack.last_mut() {
                if !*spanned {
                    *spanned = true;
                    first_key_of = Some(map_path.clone());
                }
                match seen.get(text) {
                    Some(first) => duplicate_of = Some(*first),
                    None => {
                        seen.insert(text.to_string(), span);
                    }
                }
                *key = Some((text.to_string(), span));
            }
            if let Some(first) = duplicate_of {
                self.duplicates.push(DuplicateKey { key: text.to_string(), span, first });
            }
            // A block mapping's own marker lands after its first key; point at that key instead.
            if let Some(e) = first_key_of.and_then(|p| self.entries.get_mut(&p))
                && e.key.is_none_or(|k| k.line != span.line)
            {
                e.value = Some(span);
            }
            if let Some(is_map) = opens {
                // A complex (non-scalar) key: tracked so the document stays balanced, never looked up.
                self.push(Vec::new(), is_map);
            }
            return;
        }
        let span = match value {
            Some((text, style)) => self.scalar_span(text, style, mark),
            None => Span { line: mark.line(), col: mark.col() + 1, len: 1 },
        };
        self.record_value(path.clone(), span);
        if let Some(is_map) = opens {
            self.push(path, is_map);
        }
    }

    fn push(&mut self, path: Path, is_map: bool) {
        self.stack.push(if is_map {
            Frame::Map { path, key: None, seen: HashMap::new(), spanned: false }
        } else {
            Frame::Seq { path, next: 0 }
        });
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        match ev {
            Event::Scalar(value, style, _, _) => self.node(Some((&value, style)), mark, None),
            Event::Alias(_) => self.node(None, mark, None),
            Event::MappingStart(..) => self.node(None, mark, Some(true)),
            Event::SequenceStart(..) => self.node(None, mark, Some(false)),
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            // Only the first document counts, as for serde_yaml.
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Seg {
        Seg::Key(k.into())
    }

    #[test]
    fn finds_keys_and_values() {
        let text = "name: x\nsteps:\n  - message: 'hi'\n    timeout: 5m\n";
        let map = SourceMap::build(text);
        let p = vec![key("steps"), Seg::Index(0), key("timeout")];
        assert_eq!(map.value_span(&p), Some(Span { line: 4, col: 14, len: 2 }));
        assert_eq!(map.key_span(&p), Some(Span { line: 4, col: 5, len: 7 }));
        let m = vec![key("steps"), Seg::Index(0), key("message")];
        assert_eq!(map.value_span(&m), Some(Span { line: 3, col: 14, len: 4 }));
        assert_eq!(display_path(&p), "steps[0].timeout");
        // An unknown deeper path falls back to the nearest ancestor.
        let deeper = vec![key("steps"), Seg::Index(0), key("nope")];
        assert_eq!(map.value_span(&deeper), map.value_span(&[key("steps"), Seg::Index(0)]));
    }

    #[test]
    fn duplicate_keys() {
        let map = SourceMap::build("a: 1\nb: 2\na: 3\n");
        assert_eq!(map.duplicates.len(), 1);
        assert_eq!(map.duplicates[0].span.line, 3);
    }
}
