//! `ohrun compare BASE NEW`: did a batch get worse than an earlier one? Runs are matched by (run id,
//! trial), each pair classified (`pairs.rs`), and the paired statistics of `crate::stats` say how much the
//! pass rate changed and whether that could be chance (McNemar's exact test). Infrastructure errors are in
//! no pair's verdict: a pair with an `error` on either side is "not comparable", never a regression.
//!
//! `Comparison` is the `--json` document (`schemas/compare.schema.json`); `table.rs` prints it for people
//! and `html.rs` draws it as compare.html.

pub mod html;
pub mod metrics;
pub mod pairs;
pub mod table;

use crate::report::summary::{SUMMARY_FILE, Summary};
use crate::stats::{self, Interval};
use pairs::{Change, PairEntry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Bumped when a field of the `--json` document changes meaning or disappears.
pub const COMPARE_FORMAT: u32 = 1;
/// The page `compare` writes.
pub const HTML_FILE: &str = "compare.html";

/// What makes `compare` exit 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FailOn {
    /// Nothing: exit 0 whatever the result.
    #[default]
    Never,
    /// Any pair that passed in BASE and failed in NEW.
    Regression,
    /// A drop in pass rate that is significant at `--alpha` (McNemar's exact test).
    Significant,
}

/// The comparison of two batches: `ohrun compare --json`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Comparison {
    /// `COMPARE_FORMAT`.
    pub format: u32,
    pub ohrun_version: String,
    pub base: BatchRef,
    pub new: BatchRef,
    pub counts: Counts,
    /// Each side's pass rate over the comparable pairs (the same runs on both sides), with a 95 % interval
    /// clustered by run id; None without comparable pairs.
    pub pass_rate: Rates,
    /// NEW's pass rate minus BASE's over the comparable pairs, with a 95 % interval; None without pairs.
    pub difference: Option<Interval>,
    /// McNemar's exact two-sided p-value: the chance of a split of regressions and fixes at least this
    /// lopsided if nothing had changed (1 when no pair changed).
    pub mcnemar_p: f64,
    /// The significance level (`--alpha`).
    pub alpha: f64,
    /// `mcnemar_p < alpha` and the pass rate went down.
    pub significant_drop: bool,
    /// Score, cost, tokens and duration of the runs in both batches, and how they changed.
    pub metrics: metrics::Metrics,
    /// `--fail-on`, and whether the comparison failed it (then the exit code is 1).
    pub gate: Gate,
    /// Every (run id, trial) of either batch: regressed first, then fixed, not comparable, only in one
    /// batch, both failed, both passed; plan order within each.
    pub runs: Vec<PairEntry>,
}

/// One side of the comparison.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct BatchRef {
    /// The directory (or summary.json) as given.
    pub dir: String,
    /// How many runs its summary.json lists.
    pub runs: usize,
    /// Its summary.json's `updated_at`.
    pub updated_at: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct Counts {
    /// Passed in BASE, failed in NEW.
    pub regressed: u64,
    /// Failed in BASE, passed in NEW.
    pub fixed: u64,
    pub both_passed: u64,
    pub both_failed: u64,
    /// In both, but a side has no pass or fail: a verdict `error` (verifier or infrastructure), or no
    /// verdict and a status other than succeeded or failed.
    pub not_comparable: u64,
    pub only_in_base: u64,
    pub only_in_new: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Rates {
    pub base: Option<Interval>,
    pub new: Option<Interval>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct Gate {
    pub fail_on: FailOn,
    pub failed: bool,
}

/// Why a comparison could not be made; `crate::exit_code` maps each to its code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: no readable {SUMMARY_FILE}: {why}", path.display())]
    NoSummary { path: PathBuf, why: String },
    #[error("{}: run `{id}` trial {trial} is listed twice", path.display())]
    Duplicate { path: PathBuf, id: String, trial: u32 },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

impl Error {
    pub fn hint(&self) -> &'static str {
        match self {
            Error::NoSummary { .. } => "name batch directories of `ohrun run` (its `--out`) or of `ohrun merge`",
            Error::Duplicate { .. } => "compare one batch (or one merge of shards) with another",
            Error::Write { .. } => "choose a writable directory with --out",
        }
    }
}

/// A batch's summary.json: `path` is its directory (or the file itself).
pub fn load(path: &Path) -> Result<Summary, Error> {
    let file = if path.is_dir() { path.join(SUMMARY_FILE) } else { path.to_path_buf() };
    let fail = |why: String| Error::NoSummary { path: path.to_path_buf(), why };
    let text = std::fs::read_to_string(&file).map_err(|e| fail(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| fail(e.to_string()))
}

/// Compares `new` with `base` (named `dirs` for the document).
pub fn compare(
    base: (&Path, &Summary),
    new: (&Path, &Summary),
    alpha: f64,
    fail_on: FailOn,
) -> Result<Comparison, Error> {
    let entries = pairs::match_runs(base, new)?;
    let counts = count(&entries);
    let comparable: Vec<&PairEntry> = entries.iter().filter(|e| e.change.is_comparable()).collect();
    let pairs = stats::Pairs {
        both_passed: counts.both_passed,
        both_failed: counts.both_failed,
        regressed: counts.regressed,
        fixed: counts.fixed,
    };
    let difference = pairs.difference();
    let mcnemar_p = pairs.mcnemar_p();
    let significant_drop = mcnemar_p < alpha && difference.is_some_and(|d| d.estimate < 0.0);
    let failed = match fail_on {
        FailOn::Never => false,
        FailOn::Regression => counts.regressed > 0,
        FailOn::Significant => significant_drop,
    };
    Ok(Comparison {
        format: COMPARE_FORMAT,
        ohrun_version: env!("CARGO_PKG_VERSION").to_string(),
        base: batch_ref(base),
        new: batch_ref(new),
        pass_rate: Rates {
            base: pass_rate(&comparable, Change::base_passed),
            new: pass_rate(&comparable, Change::new_passed),
        },
        difference,
        mcnemar_p,
        alpha,
        significant_drop,
        metrics: metrics::Metrics::of(&entries),
        gate: Gate { fail_on, failed },
        counts,
        runs: entries,
    })
}

fn batch_ref((dir, summary): (&Path, &Summary)) -> BatchRef {
    BatchRef { dir: dir.display().to_string(), runs: summary.runs.len(), updated_at: summary.updated_at.clone() }
}

fn count(entries: &[PairEntry]) -> Counts {
    let n = |c: Change| entries.iter().filter(|e| e.change == c).count() as u64;
    Counts {
        regressed: n(Change::Regressed),
        fixed: n(Change::Fixed),
        both_passed: n(Change::BothPassed),
        both_failed: n(Change::BothFailed),
        not_comparable: n(Change::NotComparable),
        only_in_base: n(Change::OnlyInBase),
        only_in_new: n(Change::OnlyInNew),
    }
}

/// One side's pass rate over the comparable pairs, clustered by run id (its trials are alike).
fn pass_rate(comparable: &[&PairEntry], passed: fn(Change) -> bool) -> Option<Interval> {
    let mut clusters: indexmap::IndexMap<&str, (u64, u64)> = indexmap::IndexMap::new();
    for e in comparable {
        let c = clusters.entry(&e.id).or_default();
        c.0 += u64::from(passed(e.change));
        c.1 += 1;
    }
    stats::clustered_pass_rate(&clusters.into_values().collect::<Vec<_>>())
}
