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
    let name = slug(job_name, 64);
    let Some(combo) = combo else { return name };
    let canonical = canonical_json(&Value::Object(combo.iter().map(|(k, v)| (k.clone(), v.clone())).collect()));
    let digest = Sha256::digest(format!("{job_name}\n{canonical}").as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let readable: Vec<String> = combo
        .values()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
        .collect();
    let values = slug(&readable.join("-"), 48);
    if values.is_empty() { format!("{name}-{hash}") } else { format!("{name}-{values}-{hash}") }
}

fn slug(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c.to_ascii_lowercase() } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    let out: String = out.chars().take(max).collect();
    out.trim_end_matches('-').to_string()
}

/// JSON with object keys sorted at every level: the same values always give the same text.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> =
                keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical_json(&m[*k]))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
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
}
