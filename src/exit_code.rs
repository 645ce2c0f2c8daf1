//! ohrun's exit codes: one namespace, each documented, never reused, and the one place that maps a run's
//! outcome class to its code. README and `--help` list them.

use crate::report::OutcomeClass;

/// The exit codes of `ohrun`.
pub struct ExitCode;

impl ExitCode {
    /// Every run succeeded (or, for `validate` and `plan`, every file is valid).
    pub const SUCCESS: i32 = 0;
    /// A run failed: an agent error, a step that timed out, a failed setup command, a question with
    /// `on_question: fail`. For `compare`: the comparison failed its `--fail-on` (a pair regressed, or the
    /// pass rate dropped significantly): the same meaning, work that got worse.
    pub const RUN_FAILED: i32 = 1;
    /// The job file or the command line is wrong; nothing was started. (Or a cost cap was set for a model
    /// without a price: the run stopped at its first call, which the job's price keys fix.) For `compare`:
    /// a batch without a readable summary.json, or one that lists a run twice.
    pub const USAGE: i32 = 2;
    /// Infrastructure: the sandbox could not be provisioned, an API or the network failed, or the report
    /// could not be written.
    pub const INFRA: i32 = 3;
    /// A run stopped because it reached its budget (`limits.max_cost`).
    pub const BUDGET: i32 = 4;
    /// A sandbox could not be released and may still be running (its id is in the report). For `gc`:
    /// something could not be removed, checked or identified, or (`--dry-run`) is left to remove.
    pub const LEFT_BEHIND: i32 = 5;
    /// Interrupted by SIGINT (Ctrl-C).
    pub const INTERRUPTED: i32 = 130;
    /// Terminated by SIGTERM.
    pub const TERMINATED: i32 = 143;

    /// The code of a run with this outcome; `terminated` tells SIGTERM from SIGINT.
    pub fn for_class(class: OutcomeClass, terminated: bool) -> i32 {
        match class {
            OutcomeClass::Succeeded => Self::SUCCESS,
            OutcomeClass::Failed => Self::RUN_FAILED,
            OutcomeClass::UsageError => Self::USAGE,
            OutcomeClass::Infrastructure => Self::INFRA,
            OutcomeClass::Budget => Self::BUDGET,
            OutcomeClass::LeftBehind => Self::LEFT_BEHIND,
            OutcomeClass::Interrupted if terminated => Self::TERMINATED,
            OutcomeClass::Interrupted => Self::INTERRUPTED,
            // Never a final outcome: a run that did not end counts as the infrastructure's failure, as a
            // pending one does.
            OutcomeClass::Running => Self::INFRA,
        }
    }

    /// The code of `compare`: 1 when the comparison failed its `--fail-on`, else 0.
    pub fn for_comparison(gate_failed: bool) -> i32 {
        if gate_failed { Self::RUN_FAILED } else { Self::SUCCESS }
    }

    /// The code of a comparison that could not be made.
    pub fn for_compare_error(e: &crate::compare::Error) -> i32 {
        match e {
            crate::compare::Error::NoSummary { .. } | crate::compare::Error::Duplicate { .. } => Self::USAGE,
            crate::compare::Error::Write { .. } => Self::INFRA,
        }
    }

    /// The table printed in `--help` and kept in README.md.
    pub const TABLE: &'static str = "\
Exit codes:
  0    every run succeeded (validate/plan: every file is valid)
  1    a run failed: agent error, step timeout, failed setup command (compare: its --fail-on failed)
  2    the job file or the command line is wrong; nothing was started (or a cost cap on a model without a price)
  3    infrastructure: provisioning, an API or the network failed, or the report could not be written
  4    a run reached its budget (limits.max_cost), or the batch its own (--max-cost)
  5    a sandbox could not be released and may still be running
  130  interrupted (SIGINT); 143 terminated (SIGTERM)
With several runs the most serious decides: 5, then 130/143, 3, 2, 4, 1, 0.";
}
