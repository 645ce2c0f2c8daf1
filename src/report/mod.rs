//! What a run leaves behind: `run.json` (written atomically on every exit path) and `events.jsonl`
//! (streamed as events arrive), with every secret value redacted.

pub mod disk;
pub mod html;
pub mod junit;
pub mod leak;
pub mod model;
pub mod redact;
pub mod repo;
pub mod scores;
pub mod summary;
pub mod verdict;
pub mod writer;

pub use model::*;
pub use verdict::{CheckResult, PatchInfo, Verdict, Verification};

/// How a run's trial is named where runs are listed (console, JUnit, the step summary): `RUN_ID#K`, or the
/// run id when the run has one trial.
pub fn run_label(id: &str, trial: Option<u32>) -> String {
    match trial {
        Some(k) => format!("{id}#{k}"),
        None => id.to_string(),
    }
}
