//! What shapes a job's runs before they are expanded: matrix axes read from files beside the job, the
//! matrix's axes and size checked, and `--var name=value` applied to `vars:`.

use super::model::Matrix;
use super::parse::{self, Document};
use super::source::key;
use super::{expand, template};
use crate::diagnostic::{Diagnostic, Report, Source, Span, did_you_mean};
use indexmap::IndexMap;
use serde_json::Value;
use std::path::Path;

/// `matrix: {repo: {file: repos.txt}}`: the axis' values come from a file beside the job file — one per line
/// (blank lines and `#` comments skipped), or a YAML/JSON list when the file says so by its name. They are
/// put in place before anything else reads the matrix, so ids and checks are the same as if written inline.
pub(super) fn load_matrix_files(doc: &mut Document, job_dir: &Path, diags: &mut Vec<Diagnostic>) {
    let Some(Value::Object(matrix)) = doc.value.get("matrix") else { return };
    let from_files: Vec<(String, String)> = matrix
        .iter()
        .filter_map(|(axis, v)| Some((axis.clone(), v.as_object()?.get("file")?.as_str()?.to_string())))
        .collect();
    for (axis, file) in from_files {
        let at = doc.span(&[key("matrix"), key(&axis), key("file")]);
        let path = job_dir.join(&file);
        let values = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read `{file}`: {e}"))
            .and_then(|text| axis_values(&file, &text));
        match values {
            Ok(values) if values.is_empty() => diags.push(
                Diagnostic::new(format!("`{file}` has no values for matrix axis `{axis}`"))
                    .at(at)
                    .hint("write one value per line, or a YAML list"),
            ),
            Ok(values) => doc.value["matrix"][&axis] = Value::Array(values),
            Err(message) => diags.push(
                Diagnostic::new(message)
                    .at(at)
                    .hint("the path is relative to the job file; one value per line, or a YAML/JSON list"),
            ),
        }
    }
}

fn axis_values(file: &str, text: &str) -> Result<Vec<Value>, String> {
    if [".yaml", ".yml", ".json"].iter().any(|ext| file.ends_with(ext)) {
        return parse::yaml_list(text).map_err(|e| format!("`{file}` is not a YAML/JSON list: {e}"));
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| Value::String(l.to_string()))
        .collect())
}

pub(super) fn check_matrix(
    m: &Matrix,
    vars: &IndexMap<String, Value>,
    max_runs: usize,
    doc: &Document,
    diags: &mut Vec<Diagnostic>,
) {
    for axis in m.axes.keys() {
        let at = doc.map.key_span(&[key("matrix"), key(axis)]);
        let valid = axis.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && axis.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !valid {
            diags.push(
                Diagnostic::new(format!("matrix axis `{axis}` is not a valid name"))
                    .at(at)
                    .hint("templates refer to axes by name: use letters, digits and `_`"),
            );
        } else if template::RESERVED.contains(&axis.as_str()) {
            diags.push(
                Diagnostic::new(format!("matrix axis `{axis}` shadows a built-in template name"))
                    .at(at)
                    .hint(format!("rename it; reserved: {}", template::RESERVED.join(", "))),
            );
        } else if vars.contains_key(axis) {
            diags.push(
                Diagnostic::new(format!("matrix axis `{axis}` has the same name as a var"))
                    .at(at)
                    .hint("rename one of them so `{{ name }}` is unambiguous"),
            );
        }
    }
    let size = expand::product_size(m).saturating_add(m.include.len() as u128);
    if size > max_runs as u128 {
        diags.push(
            Diagnostic::new(format!("the matrix expands to {size} runs, more than the limit of {max_runs}"))
                .at(doc.map.key_span(&[key("matrix")]))
                .hint("split the job, add `exclude` entries, or raise the limit with `--max-runs`"),
        );
    }
}

/// Applies `--var name=value`; problems come back as reports on the argument itself.
pub(super) fn apply_var_overrides(doc: &mut Document, args: &[String]) -> Vec<Report> {
    let mut reports = Vec::new();
    let declared: Vec<String> =
        doc.value.get("vars").and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default();
    for arg in args {
        let source = Source { name: "--var".into(), text: arg.clone() };
        let whole = Some(Span { line: 1, col: 1, len: arg.chars().count().max(1) });
        let problem = match arg.split_once('=') {
            None => Some(
                Diagnostic::new(format!("`--var {arg}` is missing `=value`"))
                    .at(whole)
                    .hint(format!("write `--var {arg}=value`")),
            ),
            Some((name, _)) if name.trim().is_empty() => {
                Some(Diagnostic::new("`--var` needs a name before `=`").at(whole).hint("write `--var name=value`"))
            }
            Some((name, _)) if !declared.iter().any(|d| d == name) => {
                let d = Diagnostic::new(format!("`{name}` is not declared under `vars:`")).at(Some(Span {
                    line: 1,
                    col: 1,
                    len: name.chars().count(),
                }));
                Some(match did_you_mean(name, declared.iter().map(String::as_str)) {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None if declared.is_empty() => {
                        d.hint("the job declares no vars; add a `vars:` map to the job file")
                    }
                    None => d.hint(format!("declared vars: {}", declared.join(", "))),
                })
            }
            Some((name, value)) => {
                if let Some(Value::Object(vars)) = doc.value.get_mut("vars") {
                    vars.insert(name.to_string(), Value::String(value.to_string()));
                }
                None
            }
        };
        if let Some(d) = problem {
            reports.push(Report { source, diagnostics: vec![d] });
        }
    }
    reports
}
