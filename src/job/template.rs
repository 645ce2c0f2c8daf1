//! minijinja templates in string values. Rendering happens on the parsed data, one string at a time,
//! so a value can never inject YAML structure. Undefined names are errors (strict mode).

use super::parse::{Document, get_mut};
use super::source::{Path, Seg};
use crate::diagnostic::{Diagnostic, did_you_mean};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// Keys whose strings are never templates: they define the template context or the run's identity.
const NOT_TEMPLATED: [&str; 4] = ["name", "vars", "matrix", "rehearsal"];

/// Names the template context always has, beside the job's vars and matrix axes.
pub const RESERVED: [&str; 5] = ["vars", "matrix", "env", "job", "run"];

pub struct Templates {
    env: Environment<'static>,
    /// Where each compiled template sits in the document, by template name (its index).
    slots: Vec<Path>,
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

impl Templates {
    /// Compiles every templated string of `doc`, reporting syntax errors.
    pub fn compile(doc: &Document, diags: &mut Vec<Diagnostic>) -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build() {
            env.set_syntax(syntax);
        }
        let mut found = Vec::new();
        if let Value::Object(top) = &doc.value {
            for (k, v) in top.iter().filter(|(k, _)| !NOT_TEMPLATED.contains(&k.as_str())) {
                collect(v, &mut vec![Seg::Key(k.clone())], &mut found);
            }
        }
        let mut slots = Vec::new();
        for (path, text) in found {
            let name = slots.len().to_string();
            match env.add_template_owned(name, text.clone()) {
                Ok(()) => slots.push(path),
                Err(e) => diags.push(template_error(doc, &path, &text, &e, &[])),
            }
        }
        Templates { env, slots }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The top-level keys that hold templates, in the document's order, each once.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for path in &self.slots {
            if let Some(Seg::Key(k)) = path.first()
                && !keys.contains(&k.as_str())
            {
                keys.push(k);
            }
        }
        keys
    }

    /// Renders every template into `value` (a copy of the document's data) with `ctx`; with `key`, only
    /// those under that top-level key, into `value` being a copy of that key's value.
    pub fn render_into(
        &self,
        (value, key): (&mut Value, Option<&str>),
        ctx: &minijinja::Value,
        doc: &Document,
        (context_names, secret_env): (&[String], &std::collections::HashSet<String>),
        diags: &mut Vec<Diagnostic>,
    ) {
        for (i, path) in self.slots.iter().enumerate() {
            let within = match (key, path.first()) {
                (None, _) => &path[..],
                (Some(k), Some(Seg::Key(first))) if first == k => &path[1..],
                _ => continue,
            };
            let Ok(template) = self.env.get_template(&i.to_string()) else {
                continue;
            };
            match template.render(ctx) {
                Ok(out) => {
                    if let Some(slot) = get_mut(value, within) {
                        *slot = Value::String(out);
                    }
                }
                Err(e) => {
                    let names: Vec<&str> = context_names.iter().map(String::as_str).collect();
                    let d = secret_env_error(doc, path, template.source(), &e, secret_env)
                        .unwrap_or_else(|| template_error(doc, path, template.source(), &e, &names));
                    diags.push(d);
                }
            }
        }
    }
}

fn collect(v: &Value, path: &mut Path, out: &mut Vec<(Path, String)>) {
    match v {
        Value::String(s) if is_template(s) => out.push((path.clone(), s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                collect(item, path, out);
                path.pop();
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                path.push(Seg::Key(k.clone()));
                collect(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// `{{ env.X }}` where X is a secret of the batch: refused with a reason, not as a mere undefined name.
fn secret_env_error(
    doc: &Document,
    path: &[Seg],
    text: &str,
    e: &minijinja::Error,
    secret_env: &std::collections::HashSet<String>,
) -> Option<Diagnostic> {
    if e.kind() != minijinja::ErrorKind::UndefinedError {
        return None;
    }
    let piece = e.range().and_then(|r| text.get(r))?.trim();
    let name = piece
        .strip_prefix("env.")
        .or_else(|| piece.strip_prefix("env[").map(|n| n.trim_matches(|c| "]'\"".contains(c))))?;
    if !secret_env.contains(name) {
        return None;
    }
    let span = doc.span(path).and_then(|at| doc.source.find_after(at, piece)).or_else(|| doc.span(path));
    Some(
        Diagnostic::new(format!("`{piece}` would render a secret: {name} is read as `${{{name}}}` or listed in `secrets:` by a job of this batch"))
            .at(span)
            .hint(format!("templates never see secrets; list it in this job's `secrets:` (the agent reads it as ${name}), or use `${{{name}}}` in a field that takes one")),
    )
}

fn template_error(doc: &Document, path: &[Seg], text: &str, e: &minijinja::Error, names: &[&str]) -> Diagnostic {
    let value_span = doc.span(path);
    let piece = e.range().and_then(|r| text.get(r)).filter(|p| !p.is_empty());
    let span = match (value_span, piece) {
        (Some(at), Some(piece)) => doc.source.find_after(at, piece).or(value_span),
        _ => value_span,
    };
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    match e.kind() {
        minijinja::ErrorKind::UndefinedError => {
            let expr = piece.unwrap_or("?").trim();
            let root = expr.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or(expr);
            let d = Diagnostic::new(format!("undefined template variable `{expr}`")).at(span);
            match did_you_mean(root, names.iter().copied()) {
                Some(s) if s != root => d.hint(format!("did you mean `{s}`?")),
                _ if names.contains(&root) => d.hint(format!("`{root}` has no such attribute here")),
                _ => d.hint(format!("define it under `vars:` or as a matrix axis; known names: {}", names.join(", "))),
            }
        }
        minijinja::ErrorKind::SyntaxError | minijinja::ErrorKind::BadEscape => {
            Diagnostic::new(format!("template syntax error{detail}"))
                .at(span)
                .hint("templates look like `{{ name }}`; write `{{ '{{' }}` for literal braces")
        }
        _ => Diagnostic::new(format!("template error: {}{detail}", e.kind()))
            .at(span)
            .hint("see https://docs.rs/minijinja for the template language"),
    }
}
