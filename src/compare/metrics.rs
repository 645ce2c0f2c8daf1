//! Score, cost, tokens and duration of the runs both batches have, side by side. Every pair counts
//! (not comparable ones too: an errored run's money and time were spent); a figure only a side has — a
//! score, a duration — counts where both sides have it, so the two columns are about the same runs.

use super::pairs::{PairEntry, Side};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Metrics {
    /// The verification score (0–1): compare means and medians; a total of scores means little.
    pub score: Metric,
    /// USD.
    pub cost: Metric,
    /// Prompt and completion tokens.
    pub tokens: Metric,
    /// Of each run's last attempt, in milliseconds.
    pub duration_ms: Metric,
}

/// One figure over the pairs that have it on both sides.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Metric {
    /// How many pairs have it on both sides.
    pub pairs: u64,
    pub base: Stat,
    pub new: Stat,
    /// NEW minus BASE: of the totals, the means and the medians (the change of the median, not the median
    /// of the changes).
    pub change: Stat,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Stat {
    pub total: f64,
    /// None without pairs.
    pub mean: Option<f64>,
    pub median: Option<f64>,
}

impl Metrics {
    pub fn of(entries: &[PairEntry]) -> Metrics {
        let both: Vec<(&Side, &Side)> =
            entries.iter().filter_map(|e| Some((e.base.as_ref()?, e.new.as_ref()?))).collect();
        // Cost in nano-dollars while summing (exact in f64 below 9 million dollars), dollars at the end.
        let cost = metric(&both, |s| Some(s.cost.nanos as f64)).scaled(1e-9);
        Metrics {
            score: metric(&both, |s| s.score),
            cost,
            tokens: metric(&both, |s| Some(s.tokens as f64)),
            duration_ms: metric(&both, |s| s.duration_ms.map(|d| d as f64)),
        }
    }
}

fn metric(pairs: &[(&Side, &Side)], value: impl Fn(&Side) -> Option<f64>) -> Metric {
    let (base, new): (Vec<f64>, Vec<f64>) = pairs.iter().filter_map(|(b, n)| Some((value(b)?, value(n)?))).unzip();
    let (b, n) = (stat(base.clone()), stat(new));
    let change = Stat {
        total: n.total - b.total,
        mean: n.mean.zip(b.mean).map(|(n, b)| n - b),
        median: n.median.zip(b.median).map(|(n, b)| n - b),
    };
    Metric { pairs: base.len() as u64, base: b, new: n, change }
}

fn stat(mut values: Vec<f64>) -> Stat {
    let total: f64 = values.iter().sum();
    let mean = (!values.is_empty()).then(|| total / values.len() as f64);
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let median = match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    };
    Stat { total, mean, median }
}

impl Metric {
    /// The same figure in another unit (nano-dollars to dollars), rounded to what that unit was exact to.
    fn scaled(self, factor: f64) -> Metric {
        let places = (-factor.log10()).round() as i32;
        let round = |v: f64| {
            let shift = 10f64.powi(places);
            (v * factor * shift).round() / shift
        };
        let stat = |s: Stat| Stat { total: round(s.total), mean: s.mean.map(round), median: s.median.map(round) };
        Metric { pairs: self.pairs, base: stat(self.base), new: stat(self.new), change: stat(self.change) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Usd;
    use crate::report::summary::Summary;
    use std::path::Path;

    #[test]
    fn totals_means_and_medians_of_the_runs_both_sides_have() {
        let run = |id: &str, cost: &str, score: Option<f64>, ms: Option<u64>| crate::report::summary::RunSummary {
            id: id.into(),
            cost: Usd::parse(cost).unwrap(),
            score,
            duration_ms: ms,
            ..Default::default()
        };
        let base = Summary {
            runs: vec![
                run("a", "0.1", Some(1.0), Some(1000)),
                run("b", "0.2", Some(0.5), None),
                run("gone", "9", None, None),
            ],
            ..Summary::default()
        };
        let new = Summary {
            runs: vec![
                run("a", "0.3", Some(0.5), Some(4000)),
                run("b", "0.2", None, Some(5)),
                run("added", "9", None, None),
            ],
            ..Summary::default()
        };
        let entries = super::super::pairs::match_runs((Path::new("b"), &base), (Path::new("n"), &new)).unwrap();
        let m = Metrics::of(&entries);
        // Cost: a and b only; 0.1 + 0.2 is 0.3 exactly, not 0.30000000000000004.
        assert_eq!((m.cost.pairs, m.cost.base.total, m.cost.new.total), (2, 0.3, 0.5));
        assert_eq!((m.cost.change.total, m.cost.change.median), (0.2, Some(0.1)));
        assert_eq!((m.cost.base.median, m.cost.new.median), (Some(0.15), Some(0.25)));
        // Score and duration: only the pair that has them on both sides.
        assert_eq!((m.score.pairs, m.score.base.mean, m.score.change.mean), (1, Some(1.0), Some(-0.5)));
        assert_eq!((m.duration_ms.pairs, m.duration_ms.change.total), (1, 3000.0));
        assert_eq!(Metrics::of(&[]).score.change, Stat::default());
    }
}
