//! The only place that reads YAML. It turns text into a JSON value plus a [`SourceMap`], and typed
//! values out of that with every serde error mapped back to `line:col`. It keeps going after an error
//! where it safely can (unknown keys, bad values), so one pass reports most of a file's problems.

use super::model::LITERAL_SECRET_MESSAGE;
use super::source::{Path, Seg, SourceMap, display_path};
use crate::diagnostic::{Diagnostic, Source, Span, did_you_mean};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A parsed job file: its text, its data and where each piece of the data is in the text.
#[derive(Debug)]
pub struct Document {
    pub source: Source,
    pub value: Value,
    pub map: SourceMap,
}

impl Document {
    pub fn span(&self, path: &[Seg]) -> Option<Span> {
        self.map.value_span(path)
    }
}

/// Parses `text`; syntax errors, duplicate keys and a non-mapping top level are reported here.
pub fn load(source: Source) -> Result<Document, Vec<Diagnostic>> {
    if let Some(d) = odd_line_break(&source.text) {
        return Err(vec![d]);
    }
    let value: Value = match serde_yaml::from_str(&source.text) {
        Ok(v) => v,
        Err(e) => return Err(vec![syntax_error(&e, &source.text)]),
    };
    let map = SourceMap::build(&source.text);
    let mut diags: Vec<Diagnostic> = map
        .duplicates
        .iter()
        .map(|d| {
            Diagnostic::new(format!("duplicate key `{}`", d.key))
                .at(Some(d.span))
                .hint(format!("`{}` is already set on line {}; keep one of them", d.key, d.first.line))
        })
        .collect();
    match &value {
        Value::Object(_) => {}
        Value::Null => diags.push(
            Diagnostic::new("the job file is empty")
                .at(Some(Span { line: 1, col: 1, len: 0 }))
                .hint("a job needs at least `name`, `sandbox`, `llm` and `steps`; see jobs/local.yaml"),
        ),
        other => diags.push(
            Diagnostic::new(format!("a job file must be a mapping of keys, not {}", kind_of(other)))
                .at(map.value_span(&[]).or(Some(Span { line: 1, col: 1, len: 1 })))
                .hint("start with `name: my-job` on the first line"),
        ),
    }
    if diags.is_empty() { Ok(Document { source, value, map }) } else { Err(diags) }
}

fn syntax_error(e: &serde_yaml::Error, source: &str) -> Diagnostic {
    let text = e.to_string();
    // serde_yaml appends the position in words; we draw it instead, and keep what it was parsing.
    let message = text.split(" at line ").next().unwrap_or(&text).to_string();
    // A few errors come without one (a second document): every error still points somewhere.
    // By its byte offset: libyaml also breaks lines at U+0085, U+2028, U+2029 and a lone CR, which the
    // rendered source does not. A few errors come without one (a second document): every one points somewhere.
    let span = e.location().map(|l| span_at(source, l.index()));
    let span = Some(span.or_else(|| second_document(source)).unwrap_or(Span { line: 1, col: 1, len: 1 }));
    let context = text
        .split_once(", while ")
        .map(|(_, c)| c.replace(" at line ", " that starts at line ").replace(" column ", ", column "));
    let hint = if let Some(context) = context {
        format!("this happened while {context}; check that it is closed and indented consistently")
    } else if message.contains("cannot start any token") {
        "YAML does not allow tabs for indentation or a leading `@`/`` ` ``; use spaces, and quote the value".to_string()
    } else if message.contains("more than one document") {
        "a job file is one YAML document: remove the `---` or `...` that starts another here".to_string()
    } else if message.contains("mapping values are not allowed") {
        "a value containing `: ` must be quoted, e.g. message: \"a: b\"".to_string()
    } else {
        "check the indentation and the quoting around here".to_string()
    };
    Diagnostic::new(format!("invalid YAML: {message}")).at(span).hint(hint)
}

/// A line break that serde_yaml (libyaml, YAML 1.1) reads as one and the source map (yaml-rust2, YAML 1.2)
/// or the rendered source do not: the two would see different documents, and errors would point at the
/// wrong lines. Found by the fuzz driver; refused where it is.
fn odd_line_break(text: &str) -> Option<Diagnostic> {
    let (at, c) = text.char_indices().find(|&(i, c)| {
        matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}') || c == '\r' && text.as_bytes().get(i + 1) != Some(&b'\n')
    })?;
    let span = Some(span_at(text, at));
    Some(if c == '\r' {
        Diagnostic::new("a carriage return without a line feed")
            .at(span)
            .hint("save the file with LF (or CRLF) line endings")
    } else {
        Diagnostic::new(format!("U+{:04X} is a line break to some YAML readers and not to others", c as u32))
            .at(span)
            .hint(format!("use a newline, or write it as `\\u{:04X}` inside a double-quoted string", c as u32))
    })
}

/// The line and column (counting `\n` line breaks and characters) of a byte offset into `text`.
fn span_at(text: &str, index: usize) -> Span {
    let end = crate::text::floor_char_boundary(text, index);
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Span { line: before.matches('\n').count() + 1, col: before[line_start..].chars().count() + 1, len: 1 }
}

/// Where the second document of a text starts (serde_yaml refuses one without saying where it is).
fn second_document(text: &str) -> Option<Span> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let mut starts = 0;
    loop {
        match parser.next_token().ok()? {
            (Event::DocumentStart, mark) => {
                starts += 1;
                if starts == 2 {
                    return Some(Span { line: mark.line(), col: mark.col() + 1, len: 1 });
                }
            }
            (Event::StreamEnd, _) => return None,
            _ => {}
        }
    }
}

pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The value at `path`, if any.
pub fn get<'a>(value: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.get(k),
        Seg::Index(i) => v.get(i),
    })
}

/// A mutable reference to the value at `path`, if any.
pub fn get_mut<'a>(value: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k),
        Seg::Index(i) => v.get_mut(i),
    })
}

fn remove(value: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    match (get_mut(value, parent), last) {
        (Some(Value::Object(m)), Seg::Key(k)) => m.shift_remove(k).is_some(),
        (Some(Value::Array(a)), Seg::Index(i)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// List items removed so far, by the list's path in the original document, so that paths into the
/// shrunken copy can be translated back to the user's file.
#[derive(Default)]
struct Removals {
    items: Vec<(Path, usize)>,
}

impl Removals {
    fn to_original(&self, work_path: &[Seg]) -> Path {
        let mut out: Path = Vec::with_capacity(work_path.len());
        for seg in work_path {
            let seg = match seg {
                Seg::Index(i) => {
                    let mut removed: Vec<usize> =
                        self.items.iter().filter(|(p, _)| *p == out).map(|(_, i)| *i).collect();
                    removed.sort_unstable();
                    let mut orig = *i;
                    for r in removed {
                        if r <= orig {
                            orig += 1;
                        }
                    }
                    Seg::Index(orig)
                }
                key => key.clone(),
            };
            out.push(seg);
        }
        out
    }
}

/// Deserializes `T` from `value` (which sits at `base` in the document), adding a diagnostic for every
/// problem found. Unknown keys and bad values are removed and decoding retried, so several problems are
/// reported at once; a missing required key ends the attempt.
pub fn decode<T: DeserializeOwned>(
    value: &Value,
    base: &[Seg],
    map: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    // Fast path: a valid value needs no path tracking and no copy (plans can have 10,000s of runs).
    if let Ok(v) = T::deserialize(value) {
        return Some(v);
    }
    let mut work = value.clone();
    let mut removed: Vec<Path> = Vec::new();
    let mut removals = Removals::default();
    let before = diags.len();
    for _ in 0..64 {
        let err = match serde_path_to_error::deserialize::<_, T>(&work) {
            Ok(v) => return (diags.len() == before).then_some(v),
            Err(e) => e,
        };
        let rel: Path = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let message = err.inner().to_string();
        let original = removals.to_original(&rel);
        let mut full: Path = base.to_vec();
        full.extend(original.iter().cloned());
        if let Some(field) = between(&message, "missing field `", "`") {
            let mut missing = original.clone();
            missing.push(Seg::Key(field.to_string()));
            // A key we removed for being wrong is already reported; its absence is not news.
            if !removed.contains(&missing) {
                diags.push(missing_key(field, &full, map));
            }
            return None;
        }
        diags.push(describe(&message, &full, &work, &rel, map));
        if rel.is_empty() || !remove(&mut work, &rel) {
            return None;
        }
        if let Some((&Seg::Index(i), list)) = original.split_last() {
            removals.items.push((list.to_vec(), i));
        }
        removed.push(original);
    }
    None
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// The backticked names after "expected" in a serde message.
fn expected_names(message: &str) -> Vec<&str> {
    let Some(idx) = message.find("expected") else {
        return Vec::new();
    };
    message[idx..].split('`').skip(1).step_by(2).collect()
}

fn where_(path: &[Seg]) -> String {
    match path.len() {
        0 => "the job".to_string(),
        _ => format!("`{}`", display_path(path)),
    }
}

fn missing_key(field: &str, full: &[Seg], map: &SourceMap) -> Diagnostic {
    let example = match field {
        "name" => "name: my-job",
        "sandbox" => "sandbox: { kind: local }",
        "llm" => "llm: { model: \"${LLM_MODEL:-anthropic/claude-sonnet-4-5-20250929}\", api_key: \"${LLM_API_KEY}\" }",
        "steps" => "steps: [{message: Say hello.}]",
        "api_key" => "api_key: ${MY_API_KEY}",
        "message" => "message: What to ask the agent",
        _ => "",
    };
    let d = Diagnostic::new(format!("missing key `{field}` in {}", where_(full))).at(map.value_span(full));
    if example.is_empty() {
        d.hint(format!("add `{field}:` here"))
    } else {
        d.hint(format!("add it, e.g. `{example}`"))
    }
}

fn describe(message: &str, full: &[Seg], work: &Value, rel: &[Seg], map: &SourceMap) -> Diagnostic {
    if let Some(field) = between(message, "unknown field `", "`") {
        let parent = &full[..full.len().saturating_sub(1)];
        let names = expected_names(message);
        let d = Diagnostic::new(format!("unknown key `{field}` in {}", where_(parent))).at(map.key_span(full));
        return match did_you_mean(field, names.iter().copied()) {
            Some(s) => d.hint(format!("did you mean `{s}`?")),
            None if names.is_empty() => d.hint("remove it"),
            None => d.hint(format!("the keys allowed here are: {}", names.join(", "))),
        };
    }
    if let Some(variant) = between(message, "unknown variant `", "`") {
        let names = expected_names(message);
        let d =
            Diagnostic::new(format!("`{variant}` is not a valid value for {}", where_(full))).at(map.value_span(full));
        return match did_you_mean(variant, names.iter().copied()) {
            Some(s) => d.hint(format!("did you mean `{s}`?")),
            None => d.hint(format!("use one of: {}", names.join(", "))),
        };
    }
    if message == LITERAL_SECRET_MESSAGE {
        return Diagnostic::new(format!("{} must not hold a literal secret", where_(full)))
            .at(map.value_span(full))
            .redacted()
            .hint("reference an environment variable instead, e.g. `api_key: ${LLM_API_KEY}`, and set it where ohrun runs");
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "another type"));
        let expected = english_type(expected);
        let found = match get(work, rel) {
            Some(v @ (Value::Array(_) | Value::Object(_))) => kind_of(v).to_string(),
            _ => found.to_string(),
        };
        return Diagnostic::new(format!("wrong type for {}: expected {expected}, found {found}", where_(full)))
            .at(map.value_span(full))
            .hint(type_hint(&expected));
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "another value"));
        return Diagnostic::new(format!("invalid value for {}: {found}", where_(full)))
            .at(map.value_span(full))
            .hint(format!("expected {expected}"));
    }
    if let Some(rest) = message.strip_prefix("invalid length ") {
        return Diagnostic::new(format!("wrong number of items in {}: {rest}", where_(full))).at(map.value_span(full));
    }
    // Our own deserializers' messages (durations, money, matrix axes) are already user-facing.
    Diagnostic::new(format!("invalid {}: {message}", where_(full))).at(map.value_span(full)).hint(custom_hint(message))
}

/// serde names Rust types ("u32", "f64"); users think in "a whole number".
fn english_type(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        other => other.to_string(),
    }
}

fn type_hint(expected: &str) -> String {
    if expected.contains("duration") {
        "write a duration like `90s`, `5m` or `1h30m`".into()
    } else if expected.contains("list") {
        "write a list, one `- item` per line".into()
    } else if expected.contains("a string") || expected.contains("message text") {
        "quote the value to make it text".into()
    } else if expected.contains("bool") {
        "write `true` or `false`".into()
    } else if expected.contains("number") {
        "write a number without quotes".into()
    } else {
        format!("write {expected} here")
    }
}

fn custom_hint(message: &str) -> String {
    if message.contains("duration") || message.contains("unit") {
        "durations look like `90s`, `5m`, `1h30m` or `250ms`".into()
    } else if message.contains("dollars") || message.contains("decimal") {
        "amounts are US dollars, like `2.50`".into()
    } else {
        "see `ohrun schema job` for what this key accepts".into()
    }
}

/// Parses a whole YAML file into `T` (used for files other than jobs, such as rehearsal scripts), with
/// the same positioned errors.
pub fn load_typed<T: DeserializeOwned>(source: Source) -> Result<T, Vec<Diagnostic>> {
    let doc = load(source)?;
    let mut diags = Vec::new();
    decode(&doc.value, &[], &doc.map, &mut diags).ok_or(diags)
}

/// A YAML (or JSON) list of values, e.g. a matrix axis kept in a file of its own.
pub fn yaml_list(text: &str) -> Result<Vec<Value>, String> {
    serde_yaml::from_str::<Vec<Value>>(text).map_err(|e| e.to_string())
}
