//! Runs a batch: every selected run of one or more job files, concurrently (`batch.rs`, its options in
//! `options.rs`), each run in its own directory with one `attempt-N/` per attempt (`claim.rs`; the
//! attempt in `attempt.rs`, `run.rs`, `verifying.rs`, `delivering.rs`, its report begun and ended in
//! `outcome.rs` and published in `publish.rs`), under a shared budget (`budget.rs`), on their own
//! sandboxes or on servers the batch shares (`shared.rs`), with the batch's plan on disk for `--resume`
//! (`state.rs`, `on_disk.rs`) and its rollups rewritten after every run (`report::summary`). Every exit
//! path of an attempt writes its `run.json`.

mod attempt;
mod batch;
pub mod budget;
mod checkpoint;
mod claim;
mod delivering;
mod on_disk;
mod options;
mod outcome;
mod publish;
mod run;
mod shared;
pub mod signal;
pub mod state;
pub mod trials;
mod verifying;
mod workspace;

pub use batch::run_batch;
pub use options::{BatchOptions, default_jobs};

use crate::report::RunReport;
use std::path::PathBuf;

/// One attempt's report and where it went.
pub struct RunResult {
    pub report: RunReport,
    /// Where run.json is, when it was written.
    pub report_file: Option<PathBuf>,
    /// run.json could not be written.
    pub write_failed: bool,
}

/// An environment variable of ohrun's process (what settings resolve `${VAR}` against).
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
