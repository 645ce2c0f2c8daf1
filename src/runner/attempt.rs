//! What one attempt is given (`Attempt`, from the batch) and what it holds while it runs (`Run`): the
//! types that run.rs, verifying.rs and delivering.rs each add their phase to.

use super::budget::Budget;
use super::checkpoint::Checkpoint;
use super::shared::SharedSandboxes;
use super::signal::Signals;
use crate::console::RunLine;
use crate::deliver::Pacing;
use crate::job::{Plan, PlannedRun};
use crate::rehearse::script::Script;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What one attempt needs.
pub(super) struct Attempt<'a> {
    pub plan: &'a Plan,
    pub planned: &'a PlannedRun,
    pub rehearsal: Option<&'a Script>,
    pub line: &'a RunLine<'a>,
    pub signals: &'a Signals,
    /// Where this attempt's evidence goes (`<run dir>/attempt-N`).
    pub dir: PathBuf,
    pub number: u32,
    /// Which trial of the run this attempt belongs to (`repeat`), when it has several.
    pub trial: Option<u32>,
    /// The run's id, `#K` for a trial: its name in the batch's budget, ledger and list of sandboxes.
    pub label: &'a str,
    pub budget: Option<&'a Budget>,
    /// A retry of a Runtime API run that lacked resources asks for more.
    pub resource_factor: Option<u8>,
    /// The batch's sandbox ledger.
    pub ledger: &'a crate::ledger::Ledger,
    /// The batch directory (for the sandbox ledger).
    pub batch_dir: &'a Path,
    /// The batch's shared servers (`sandbox.share: batch`).
    pub shared: &'a SharedSandboxes,
    /// With `--prefetch`, the places of the runs that talk to the agent: a run provisions and sets up
    /// ahead, then waits here for one before its first message.
    pub turns: Option<&'a tokio::sync::Semaphore>,
    /// With `--fail-fast`: set once a run of the batch failed; a run that got ahead then never sends
    /// its first message.
    pub stop_starting: Option<&'a std::sync::atomic::AtomicBool>,
    /// `deliver:`'s pacing per API host, or `--no-deliver`.
    pub delivering: Delivering<'a>,
}

/// What the batch gives each attempt for delivery.
pub(crate) enum Delivering<'a> {
    /// `--no-deliver`: nothing is sent anywhere.
    Off,
    /// One lock per API host, shared by the batch's runs.
    On(&'a Pacing),
}

pub(super) struct Run<'a> {
    pub(super) attempt: &'a Attempt<'a>,
    pub(super) job_dir: PathBuf,
    pub(super) run_deadline: Option<Instant>,
    pub(super) checkpoint: Checkpoint,
    pub(super) ledger: crate::ledger::Slot,
}
