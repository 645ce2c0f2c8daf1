//! Matrix fan-out: the cartesian product of the axes, then `include` and `exclude` with GitHub
//! Actions' meaning, then a stable id per run derived only from the job name and the run's values.

use super::model::Matrix;
use indexmap::IndexMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub type Combo = IndexMap<String, Value>;

/// Number of combinations before include/exclude, without building them (saturating).
pub fn product_size(m: &Matrix) -> u128 {
    m.axes.values().fold(1u128, |acc, v| acc.saturating_mul(v.len() as u128))
}

/// Expands the matrix. `exclude` removes combinations that match every key an entry gives. An `include`
/// entry adds its other keys to every combination that has its values on the original axes (an entry
/// with no axis keys extends them all); one that matches none is added as a combination of its own.
pub fn expand(m: &Matrix) -> Vec<Combo> {
    let mut combos: Vec<Combo> = Vec::new();
    if !m.axes.is_empty() {
        combos.push(IndexMap::new());
        for (axis, values) in &m.axes {
            let mut next = Vec::with_capacity(combos.len() * values.len());
            for combo in &combos {
                for v in values {
                    let mut c = combo.clone();
                    c.insert(axis.clone(), v.clone());
                    next.push(c);
                }
            }
            combos = next;
        }
        combos.retain(|c| !m.exclude.iter().any(|ex| matches(c, ex)));
    }
    for inc in &m.include {
        let on_axes: Combo =
            inc.iter().filter(|(k, _)| m.axes.contains_key(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut extended = false;
        for c in combos.iter_mut().filter(|c| matches(c, &on_axes)) {
            for (k, v) in inc.iter().filter(|(k, _)| !m.axes.contains_key(*k)) {
                c.insert(k.clone(), v.clone());
            }
            extended = true;
        }
        if !extended {
            combos.push(inc.clone());
        }
    }
    combos
}

fn matches(combo: &Combo, pattern: &Combo) -> bool {
    pattern.iter().all(|(k, v)| combo.get(k) == Some(v))
}

/// A run id: the job name, a readable slug of the matrix values and a short hash of them. Comments,
/// other keys and the order of the axes do not change it; the values and the job name do.
pub fn run_id(job_name: &str, combo: Option<&Combo>) -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(96);
    slug_into(&mut id, job_name, 64);
    let Some(combo) = combo else { return id };
    let mut hashed = format!("{job_name}\n").into_bytes();
    canonical_object(&mut hashed, combo.iter());
    let mut readable = String::new();
    for v in combo.values().filter(|v| v.is_string() || v.is_number() || v.is_boolean()) {
        if !readable.is_empty() {
            readable.push('-');
        }
        let _ = match v {
            Value::String(s) => readable.write_str(s),
            other => write!(readable, "{other}"),
        };
    }
    let name_end = id.len();
    id.push('-');
    slug_into(&mut id, &readable, 48);
    if id.len() > name_end + 1 {
        id.push('-');
    }
    for b in Sha256::digest(&hashed).iter().take(4) {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// Appends `s` to `out` as a slug of at most `max` characters: lowercase letters, digits, `.` and `_`,
/// every other run of characters one `-`, none at either end.
fn slug_into(out: &mut String, s: &str, max: usize) {
    let start = out.len();
    let mut taken = 0;
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c.to_ascii_lowercase() } else { '-' };
        if c == '-' && (out.len() == start || out.ends_with('-')) {
            continue;
        }
        if taken == max {
            break;
        }
        out.push(c);
        taken += 1;
    }
    while out.len() > start && out.ends_with('-') {
        out.pop();
    }
}

/// JSON with object keys sorted at every level: the same values always give the same text.
pub fn canonical_json(v: &Value) -> String {
    let mut out = Vec::new();
    canonical_into(&mut out, v);
    String::from_utf8(out).expect("JSON text is UTF-8")
}

fn canonical_into(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Object(m) => canonical_object(out, m.iter()),
        Value::Array(a) => {
            out.push(b'[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_into(out, item);
            }
            out.push(b']');
        }
        // Scalars as serde_json writes them (strings escaped); writing to a Vec cannot fail.
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn canonical_object<'v>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'v String, &'v Value)>) {
    let mut entries: Vec<(&String, &Value)> = entries.collect();
    entries.sort_unstable_by_key(|(k, _)| *k);
    out.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        canonical_into(out, v);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matrix(v: Value) -> Matrix {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn product_include_exclude() {
        let m = matrix(json!({
            "os": ["a", "b"], "py": [1, 2],
            "exclude": [{"os": "b", "py": 2}],
            "include": [{"os": "a", "extra": true}, {"os": "c", "py": 9}]
        }));
        let combos = expand(&m);
        assert_eq!(combos.len(), 4);
        assert_eq!(combos[0].get("extra"), Some(&json!(true)));
        assert_eq!(combos[1].get("extra"), Some(&json!(true)));
        assert_eq!(combos[2].get("extra"), None);
        assert_eq!(combos[3], serde_json::from_value::<Combo>(json!({"os": "c", "py": 9})).unwrap());
        assert_eq!(product_size(&m), 4);
    }

    #[test]
    fn ids_are_stable_and_readable() {
        let c: Combo = serde_json::from_value(json!({"repo": "octocat/Hello-World"})).unwrap();
        let id = run_id("multi-repo", Some(&c));
        assert!(id.starts_with("multi-repo-octocat-hello-world-"), "{id}");
        assert_eq!(id, run_id("multi-repo", Some(&c)));
        let d: Combo = serde_json::from_value(json!({"repo": "octocat/hello-world"})).unwrap();
        assert_ne!(id, run_id("multi-repo", Some(&d)), "case differs, so the hash must");
        assert_eq!(run_id("facts", None), "facts");
    }

    #[test]
    fn ids_do_not_change_between_versions() {
        // Resume and compare find runs by id: these are the ids an earlier ohrun gave these values.
        let cases = [
            (
                json!({"a": "Ünïcode \"quoted\"\\x", "b": 3.5, "c": true}),
                "weird_job.1-n-code-quoted-x-3.5-true-85752b9e",
            ),
            (json!({"a": "", "b": -2, "c": null, "d": {"z": 1, "y": [1, "two"]}}), "weird_job.1-2-e20b6e79"),
            (
                json!({"a": "---lead--ing", "long": "a".repeat(80)}),
                "weird_job.1-lead-ing-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-61341195",
            ),
            (json!({"d": []}), "weird_job.1-8470ae16"),
        ];
        for (values, id) in cases {
            let combo: Combo = serde_json::from_value(values).unwrap();
            assert_eq!(run_id("Weird_Job.1", Some(&combo)), id);
        }
        assert_eq!(
            canonical_json(&json!({"b": [{"y": 1, "x": "\n"}], "a": null})),
            r#"{"a":null,"b":[{"x":"\n","y":1}]}"#
        );
    }
}
