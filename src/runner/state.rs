//! `batch.json`: what a batch directory was made from — the job files and their hashes, every run id with
//! a hash of its rendered job, and how the runs were chosen — so that `--resume` can rebuild the same plan
//! and refuse (with the affected ids) when a job file changed meanwhile.

use crate::job::Plan;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

pub const BATCH_FILE: &str = "batch.json";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BatchState {
    pub format: u32,
    pub ohrun_version: String,
    pub created_at: String,
    pub jobs: Vec<JobEntry>,
    /// Every run of the batch (after `--shard` and `--filter`), by id: the hash of its rendered job
    /// (without `repeat`, which `trials` records).
    pub runs: BTreeMap<String, String>,
    /// The runs with more than one trial (`repeat`, `--repeat`): how many.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trials: BTreeMap<String, u32>,
    /// The command line's `--var`, `--shard`, `--filter` and `--rehearse`, so a resume plans the same.
    pub vars: Vec<String>,
    pub shard: Option<String>,
    pub filters: Vec<String>,
    pub rehearse: Option<String>,
    /// `--jobs`, `--retries`, `--max-cost`, `--fail-fast` and `--repeat` as given, so that a resume (a
    /// restarted CI pod, say) keeps the same cap, retries, width and trials unless it names others.
    #[serde(default)]
    pub flags: BatchFlags,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BatchFlags {
    pub jobs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<usize>,
    pub retries: Option<u32>,
    pub max_cost: Option<crate::money::Usd>,
    pub fail_fast: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
}

impl BatchFlags {
    /// These flags, with what they leave unset taken from `earlier`.
    pub fn or(self, earlier: &BatchFlags) -> BatchFlags {
        BatchFlags {
            jobs: self.jobs.or(earlier.jobs),
            prefetch: self.prefetch.or(earlier.prefetch),
            retries: self.retries.or(earlier.retries),
            max_cost: self.max_cost.or(earlier.max_cost),
            fail_fast: self.fail_fast || earlier.fail_fast,
            repeat: self.repeat.or(earlier.repeat),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JobEntry {
    pub file: String,
    pub hash: String,
}

/// The hash of a run's rendered job and of the message files it names (relative to `job_dir`): a change
/// to anything a trial of the run would do changes it. How many trials is not part of it (`trials`): a
/// changed `repeat` is told as such, and a job without it hashes as before trials existed.
/// `messages`: the message files read so far (each is read once per batch, not once per run).
pub fn spec_hash(
    spec: &crate::job::model::JobSpec,
    job_dir: &Path,
    messages: &mut std::collections::HashMap<std::path::PathBuf, String>,
) -> String {
    let mut hasher = Sha256::new();
    let one_trial = crate::job::model::JobSpec { repeat: 1, ..spec.clone() };
    // Written straight into the hasher: no JSON string per run.
    let _ = serde_json::to_writer(HashWriter(&mut hasher), &one_trial);
    for step in &spec.steps {
        if let crate::job::model::Message::File { file } = &step.message {
            let text = messages
                .entry(job_dir.join(file))
                .or_insert_with(|| crate::agent::conversation::message_text(&step.message, job_dir));
            hasher.update(text.as_bytes());
        }
    }
    hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A writer that feeds a hasher.
struct HashWriter<'h>(&'h mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BatchState {
    pub fn of(
        plans: &[Plan],
        vars: &[String],
        shard: Option<&str>,
        filters: &[String],
        rehearse: Option<&str>,
        flags: BatchFlags,
    ) -> BatchState {
        BatchState {
            format: 1,
            ohrun_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: crate::report::writer::now_rfc3339(),
            jobs: plans
                .iter()
                .map(|p| JobEntry { file: p.file.display().to_string(), hash: p.file_hash.clone() })
                .collect(),
            runs: {
                let mut messages = std::collections::HashMap::new();
                plans
                    .iter()
                    .flat_map(|p| p.runs.iter().map(move |r| (p, r)))
                    .map(|(p, r)| {
                        let job_dir = p.file.parent().unwrap_or(Path::new(""));
                        (r.id.clone(), spec_hash(&r.spec, job_dir, &mut messages))
                    })
                    .collect()
            },
            trials: plans
                .iter()
                .flat_map(|p| p.runs.iter())
                .map(|r| (r.id.clone(), r.spec.trials(flags.repeat)))
                .filter(|(_, n)| *n > 1)
                .collect(),
            vars: vars.to_vec(),
            shard: shard.map(str::to_string),
            filters: filters.to_vec(),
            rehearse: rehearse.map(str::to_string),
            flags,
        }
    }

    pub fn read(dir: &Path) -> Result<BatchState, String> {
        let path = dir.join(BATCH_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not a batch file: {e}", path.display()))
    }

    /// Writes batch.json, secrets masked (a `--var` may carry one; register the runs' secrets first).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        crate::report::writer::write_atomic(&dir.join(BATCH_FILE), &crate::report::redact::apply(&text))
    }

    /// What changed between the batch that was and the plan now: runs added, removed, changed, or with
    /// another number of trials, and an LLM that changed between scripted and real (a batch is one or
    /// the other).
    pub fn diff(&self, now: &BatchState) -> Vec<String> {
        let mut out = Vec::new();
        let llm = |s: &BatchState| if s.rehearse.is_some() { "the scripted LLM (--rehearse)" } else { "the real LLM" };
        if self.rehearse.is_some() != now.rehearse.is_some() {
            out.push(format!("~ the batch ran with {}, this would use {}", llm(self), llm(now)));
        }
        for (id, hash) in &now.runs {
            match self.runs.get(id) {
                None => out.push(format!("+ {id} (new)")),
                Some(h) if h != hash => out.push(format!("~ {id} (changed)")),
                Some(_) => {
                    let trials = |s: &BatchState| s.trials.get(id).copied().unwrap_or(1);
                    if trials(self) != trials(now) {
                        let (was, is) = (trials(self), trials(now));
                        out.push(format!("~ {id} ({was} trial{}, now {is})", if was == 1 { "" } else { "s" }));
                    }
                }
            }
        }
        out.extend(self.runs.keys().filter(|id| !now.runs.contains_key(*id)).map(|id| format!("- {id} (gone)")));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(trials: &[(&str, u32)]) -> BatchState {
        BatchState {
            runs: [("a", "h1"), ("b", "h2")].iter().map(|(id, h)| (id.to_string(), h.to_string())).collect(),
            trials: trials.iter().map(|(id, n)| (id.to_string(), *n)).collect(),
            ..BatchState::default()
        }
    }

    #[test]
    fn another_number_of_trials_is_a_change_of_plan() {
        assert!(state(&[("a", 5)]).diff(&state(&[("a", 5)])).is_empty());
        assert_eq!(state(&[("a", 5)]).diff(&state(&[("a", 3)])), ["~ a (5 trials, now 3)"]);
        assert_eq!(state(&[]).diff(&state(&[("b", 2)])), ["~ b (1 trial, now 2)"]);
    }

    #[test]
    fn a_resume_keeps_the_repeat_it_was_started_with_unless_told_otherwise() {
        let earlier = BatchFlags { repeat: Some(5), ..BatchFlags::default() };
        assert_eq!(BatchFlags::default().or(&earlier).repeat, Some(5));
        assert_eq!(BatchFlags { repeat: Some(2), ..BatchFlags::default() }.or(&earlier).repeat, Some(2));
    }
}
