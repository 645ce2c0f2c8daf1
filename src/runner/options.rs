//! What a batch is told from the command line, and the defaults of its width per sandbox kind.

use super::state::BatchState;
use crate::money::Usd;
use crate::rehearse::script::Script;
use std::path::PathBuf;

pub struct BatchOptions {
    /// The scripted LLM of each plan (same order), when rehearsing.
    pub rehearsals: Vec<Option<Script>>,
    /// How many runs at once, whatever their kind (default: per kind, `default_jobs`).
    pub jobs: Option<usize>,
    /// How many runs beyond those may provision and set up ahead (default: `default_prefetch`).
    pub prefetch: Option<usize>,
    /// `--retries`, overriding each job's `retries.max`.
    pub retries: Option<u32>,
    /// `--repeat`, overriding each job's `repeat`: trials per run.
    pub repeat: Option<u32>,
    /// The batch's budget (`--max-cost`, else the smallest `batch.max_cost` of the jobs).
    pub max_cost: Option<Usd>,
    pub fail_fast: bool,
    /// The batch directory: batch.json, summary.json, junit.xml.
    pub out: PathBuf,
    pub json: bool,
    /// Skip runs that succeeded before, and count what the batch spent before.
    pub resume: bool,
    pub state: BatchState,
    /// `--no-deliver`: no run pushes a branch, opens a pull request or comments.
    pub no_deliver: bool,
}

/// How many runs of a kind run at once unless `--jobs` says otherwise. A local or docker run starts a
/// whole agent-server (about 400 MB, and most of two cores for ~10 s while it starts); a remote server
/// runs many conversations, up to its own `max_concurrent_runs` (10 by default); Cloud and Runtime
/// sandboxes cost ohrun nothing but money and the provider's quota.
pub fn default_jobs(kind: &str) -> usize {
    match kind {
        "local" | "docker" => 2,
        _ => 4,
    }
}

/// How many runs of a lane `jobs` wide get their sandbox and setup ready ahead, unless `--prefetch` says
/// otherwise: for Cloud and Runtime sandboxes, half as many again (their start is the provider's time, so
/// it overlaps the runs under way for free); none for local and docker (their servers start on this
/// machine's CPU: measured on 2 cores, a 12-run local batch took 3 % longer with two more starting at
/// once, BENCHMARKS.md) and none for `remote` (nothing to start).
pub fn default_prefetch(kinds: &[&str], jobs: usize) -> usize {
    if kinds.iter().any(|k| matches!(*k, "cloud" | "runtime")) { jobs.div_ceil(2) } else { 0 }
}
