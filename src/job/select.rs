//! Which runs of a plan an invocation takes: `--shard i/n` (stable by run id, so the shards of a CI matrix
//! cover every id exactly once, also when the job file gains a run) and `--filter` (on ids or matrix
//! values). `plan` and `run` select the same way.

use super::PlannedRun;
use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// (index, count), 1-based index.
    pub shard: Option<(u64, u64)>,
    pub filters: Vec<Filter>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `KEY=V1,V2`: the run's matrix value of KEY is one of the values.
    Matrix { key: String, values: Vec<String> },
    /// Anything else: the run id contains it (or matches it, with `*` wildcards).
    Id(String),
}

impl Selection {
    /// From the command line's `--shard` and `--filter` values; an error says what is wrong and how to fix it.
    pub fn parse(shard: Option<&str>, filters: &[String]) -> Result<Selection, String> {
        let shard = shard.map(parse_shard).transpose()?;
        let filters = filters.iter().map(|f| parse_filter(f)).collect::<Result<_, _>>()?;
        Ok(Selection { shard, filters })
    }

    pub fn is_everything(&self) -> bool {
        self.shard.is_none() && self.filters.is_empty()
    }

    /// Whether this invocation takes the run: in its shard, and matching every filter.
    pub fn keeps(&self, run: &PlannedRun) -> bool {
        self.shard.is_none_or(|(i, n)| shard_of(&run.id, n) == i) && self.filters.iter().all(|f| f.matches(run))
    }
}

/// The shard (1-based) that run `id` falls in when there are `n`: a hash of the id alone.
pub fn shard_of(id: &str, n: u64) -> u64 {
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % n + 1
}

fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let bad = || format!("`--shard {text}` must look like `2/5`: this shard's number (from 1) and how many there are");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n): (u64, u64) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || i == 0 || i > n {
        return Err(format!("`--shard {text}`: the shard's number must be between 1 and {n}"));
    }
    Ok((i, n))
}

fn parse_filter(text: &str) -> Result<Filter, String> {
    if text.trim().is_empty() {
        return Err("`--filter` needs a run id (or part of one, `*` for any text) or `key=value`".into());
    }
    Ok(match text.split_once('=') {
        Some((key, values)) if !key.is_empty() => Filter::Matrix {
            key: key.trim().to_string(),
            values: values.split(',').map(|v| v.trim().to_string()).collect(),
        },
        _ => Filter::Id(text.to_string()),
    })
}

impl Filter {
    fn matches(&self, run: &PlannedRun) -> bool {
        match self {
            Filter::Matrix { key, values } => {
                let Some(v) = run.matrix.as_ref().and_then(|m| m.get(key)) else { return false };
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                values.contains(&text)
            }
            Filter::Id(pattern) if pattern.contains('*') => glob(pattern, &run.id),
            Filter::Id(part) => run.id.contains(part.as_str()),
        }
    }
}

/// `*` matches any text; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_id_exactly_once() {
        let ids: Vec<String> = (0..1000).map(|i| format!("job-{i}")).collect();
        for n in [1, 2, 3, 7] {
            let mut seen = vec![0; ids.len()];
            for i in 1..=n {
                for (k, id) in ids.iter().enumerate() {
                    if shard_of(id, n) == i {
                        seen[k] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|c| *c == 1), "{n} shards");
        }
        // A shard depends on the id alone: another run in the plan moves no one.
        assert_eq!(shard_of("job-5", 3), shard_of("job-5", 3));
    }

    #[test]
    fn parse_and_match() {
        assert!(Selection::parse(Some("0/3"), &[]).is_err());
        assert!(Selection::parse(Some("4/3"), &[]).is_err());
        assert!(Selection::parse(Some("x"), &[]).is_err());
        assert_eq!(Selection::parse(Some("2/3"), &[]).unwrap().shard, Some((2, 3)));
        let f = parse_filter("repo=alpha,beta").unwrap();
        assert_eq!(f, Filter::Matrix { key: "repo".into(), values: vec!["alpha".into(), "beta".into()] });
        assert!(glob("multi-*-4f*", "multi-repo-4f2a"));
        assert!(!glob("multi-*-4f*", "multi-repo-5f2a"));
        assert!(glob("*", "anything"));
        assert!(glob("a*", "a"));
        assert!(!glob("ab*ba", "aba"));
    }
}
