//! What a run leaves behind: `run.json` (written atomically on every exit path) and `events.jsonl`
//! (streamed as events arrive), with every secret value redacted.

pub mod html;
pub mod junit;
pub mod leak;
pub mod model;
pub mod redact;
pub mod scores;
pub mod summary;
pub mod verdict;
pub mod writer;

pub use model::*;
pub use verdict::{CheckResult, PatchInfo, Verdict, Verification};
