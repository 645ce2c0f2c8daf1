//! The statistics of verified runs: pass@k and pass^k over repeated trials, a batch's pass rate with a
//! 95 % interval that respects trials of one run id being alike (clustered), and the paired comparison
//! of two batches (McNemar's exact test and an interval for the difference in pass rates). Pure
//! functions over counts; exact where the numbers are small, with no crate beyond std.

/// C(n, k) as a float (exact for the small n of trials; never overflows: computed as a running product).
fn choose(n: u64, k: u64) -> f64 {
    if k > n {
        return 0.0;
    }
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The unbiased estimate of pass@k from `n` trials of which `c` passed: the chance that at least one of
/// k trials drawn without replacement passes, `1 − C(n−c, k) / C(n, k)` (Chen et al., 2021). None when
/// k is 0 or more than n.
pub fn pass_at_k(n: u64, c: u64, k: u64) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    Some(1.0 - choose(n - c, k) / choose(n, k))
}

/// The unbiased estimate of pass^k: the chance that k trials drawn without replacement all pass,
/// `C(c, k) / C(n, k)` (Yao et al., 2024, τ-bench). None when k is 0 or more than n.
pub fn pass_all_k(n: u64, c: u64, k: u64) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    Some(choose(c, k) / choose(n, k))
}

/// A proportion with its 95 % interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval of a proportion `p` seen over an effective sample size `n` (> 0).
fn wilson(p: f64, n: f64) -> Interval {
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * ((p * (1.0 - p) + z2 / (4.0 * n)) / n).sqrt() / (1.0 + z2 / n);
    Interval { estimate: p, low: (centre - half).max(0.0), high: (centre + half).min(1.0) }
}

/// The pass rate over clusters (one per run id: `(passed, verified trials)`) with a 95 % interval.
/// Trials of one run id are alike, so they carry less information than as many independent runs: the
/// cluster-robust variance of the ratio estimator (without small-sample factor, so that one trial per
/// run id is a design effect of exactly 1) gives the design effect, and the Wilson interval is
/// taken at the effective sample size `n / deff` (with one trial per run id it is the plain Wilson
/// interval). None when nothing was verified.
pub fn clustered_pass_rate(clusters: &[(u64, u64)]) -> Option<Interval> {
    let clusters: Vec<(f64, f64)> =
        clusters.iter().filter(|(_, n)| *n > 0).map(|(c, n)| (*c as f64, *n as f64)).collect();
    let total: f64 = clusters.iter().map(|(_, n)| n).sum();
    if total == 0.0 {
        return None;
    }
    let p = clusters.iter().map(|(c, _)| c).sum::<f64>() / total;
    let binomial = p * (1.0 - p) / total;
    let deff = if clusters.len() > 1 && binomial > 0.0 {
        let sum_sq: f64 = clusters.iter().map(|(c, n)| (c - p * n).powi(2)).sum();
        let robust = sum_sq / (total * total);
        // Never narrower than independent trials would give.
        (robust / binomial).max(1.0)
    } else {
        1.0
    };
    Some(wilson(p, total / deff))
}

/// Two batches' verdicts on the same (run id, trial) pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pairs {
    pub both_passed: u64,
    pub both_failed: u64,
    /// Passed in the base, failed in the new batch.
    pub regressed: u64,
    /// Failed in the base, passed in the new batch.
    pub fixed: u64,
}

impl Pairs {
    pub fn total(&self) -> u64 {
        self.both_passed + self.both_failed + self.regressed + self.fixed
    }

    /// McNemar's exact two-sided p-value: under "no change" the discordant pairs split as a fair coin,
    /// so p = min(1, 2 · P[X ≤ min(b, c)]) for X ~ Binomial(b + c, ½). 1 when no pair changed.
    pub fn mcnemar_p(&self) -> f64 {
        let n = self.regressed + self.fixed;
        if n == 0 {
            return 1.0;
        }
        let low = self.regressed.min(self.fixed);
        if n <= 1000 {
            // Directly, exact to the last bit for the small batches hand-computed values are checked on.
            let tail: f64 = (0..=low).map(|i| choose(n, i)).sum::<f64>() * 0.5f64.powi(n as i32);
            return (2.0 * tail).min(1.0);
        }
        // In logs: past about a thousand discordant pairs C(n, i) overflows and ½ⁿ underflows.
        let mut ln_term = n as f64 * 0.5f64.ln(); // ln P[X = 0]
        let mut ln_terms = Vec::with_capacity(low as usize + 1);
        for i in 0..=low {
            ln_terms.push(ln_term);
            ln_term += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
        }
        let top = ln_terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let tail = top.exp() * ln_terms.iter().map(|t| (t - top).exp()).sum::<f64>();
        (2.0 * tail).min(1.0)
    }

    /// The change in pass rate (new − base) with a 95 % interval: the estimate `(c − b)/n`, and the
    /// Agresti–Min adjusted Wald interval for paired proportions — half a pair added to each cell
    /// (`b̃ = b + ½`, `c̃ = c + ½`, `ñ = n + 2`), `(c̃ − b̃)/ñ ± z · √(b̃ + c̃ − (c̃ − b̃)²/ñ) / ñ` — which,
    /// unlike the plain Wald interval, never collapses to a point when every pair agrees or all changes go
    /// one way; clipped to [−1, 1]. None without pairs.
    pub fn difference(&self) -> Option<Interval> {
        let n = self.total() as f64;
        if n == 0.0 {
            return None;
        }
        let (b, c) = (self.regressed as f64, self.fixed as f64);
        let (bt, ct, nt) = (b + 0.5, c + 0.5, n + 2.0);
        let centre = (ct - bt) / nt;
        let half = Z95 * (bt + ct - (ct - bt).powi(2) / nt).max(0.0).sqrt() / nt;
        Some(Interval { estimate: (c - b) / n, low: (centre - half).max(-1.0), high: (centre + half).min(1.0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn pass_at_k_matches_hand_computed_values() {
        // 5 trials, 3 passed (trials 1, 3, 4 of the flaky run in issue J).
        assert!(close(pass_at_k(5, 3, 1).unwrap(), 0.6));
        // 1 − C(2,2)/C(5,2) = 1 − 1/10
        assert!(close(pass_at_k(5, 3, 2).unwrap(), 0.9));
        // 1 − C(2,3)/C(5,3) = 1 − 0
        assert!(close(pass_at_k(5, 3, 3).unwrap(), 1.0));
        assert!(close(pass_at_k(5, 0, 5).unwrap(), 0.0));
        assert!(close(pass_at_k(10, 1, 3).unwrap(), 0.3));
        assert_eq!(pass_at_k(5, 3, 6), None);
        assert_eq!(pass_at_k(5, 3, 0), None);
    }

    #[test]
    fn pass_all_k_matches_hand_computed_values() {
        assert!(close(pass_all_k(5, 3, 1).unwrap(), 0.6));
        // C(3,2)/C(5,2) = 3/10
        assert!(close(pass_all_k(5, 3, 2).unwrap(), 0.3));
        // C(3,3)/C(5,3) = 1/10
        assert!(close(pass_all_k(5, 3, 3).unwrap(), 0.1));
        assert!(close(pass_all_k(5, 3, 4).unwrap(), 0.0));
        assert!(close(pass_all_k(4, 4, 4).unwrap(), 1.0));
    }

    #[test]
    fn mcnemar_exact_p_values_match_hand_computed_cases() {
        let p = |b, c| Pairs { regressed: b, fixed: c, both_passed: 10, both_failed: 3 }.mcnemar_p();
        assert!(close(p(0, 0), 1.0));
        // b=1, c=1: 2·(1+2)/4 = 1.5 → 1
        assert!(close(p(1, 1), 1.0));
        // b=0, c=5: 2·(1/32)
        assert!(close(p(0, 5), 0.0625));
        // b=1, c=9: 2·(1 + 10)/1024
        assert!(close(p(1, 9), 22.0 / 1024.0));
        // b=2, c=8: 2·(1 + 10 + 45)/1024
        assert!(close(p(2, 8), 112.0 / 1024.0));
        assert!(close(p(8, 2), 112.0 / 1024.0));
        // b=0, c=6: 2/64
        assert!(close(p(0, 6), 0.03125));
    }

    #[test]
    fn the_paired_difference_and_its_interval() {
        let pairs = Pairs { both_passed: 6, both_failed: 2, regressed: 1, fixed: 1 };
        let d = pairs.difference().unwrap();
        assert!(close(d.estimate, 0.0));
        // b̃ = c̃ = 1.5, ñ = 12: half = 1.96 · √3 / 12, centred on 0.
        assert!(close(d.high, Z95 * 3f64.sqrt() / 12.0) && close(d.low, -d.high));
        // Every pair fixed: estimate 1, and an interval that is not a point (b̃ = ½, c̃ = 4½, ñ = 6).
        let all_fixed = Pairs { fixed: 4, ..Pairs::default() }.difference().unwrap();
        let (centre, half) = (4.0 / 6.0, Z95 * (5.0 - 16.0 / 6.0f64).sqrt() / 6.0);
        assert!(close(all_fixed.estimate, 1.0) && close(all_fixed.low, centre - half) && all_fixed.high == 1.0);
        // No pair changed: estimate 0 with a width of its own.
        let none = Pairs { both_passed: 5, ..Pairs::default() }.difference().unwrap();
        assert!(close(none.estimate, 0.0) && none.high > 0.1 && close(none.low, -none.high));
        assert_eq!(Pairs::default().difference(), None);
    }

    #[test]
    fn mcnemar_holds_for_many_discordant_pairs() {
        // 600 against 500: z = 100/√1100 ≈ 3.015, two-sided p ≈ 0.0026 (normal approximation; exact ≈ 0.0028).
        let p = Pairs { regressed: 600, fixed: 500, ..Pairs::default() }.mcnemar_p();
        assert!(p > 0.002 && p < 0.0035, "{p}");
        assert!(Pairs { regressed: 5000, fixed: 5000, ..Pairs::default() }.mcnemar_p() > 0.99);
    }

    #[test]
    fn a_clustered_pass_rate_is_wilson_with_one_trial_each_and_wider_when_trials_agree() {
        // 4 of 6 runs passed, one trial each: the plain Wilson interval (0.300, 0.903).
        let one = clustered_pass_rate(&[(1, 1), (1, 1), (1, 1), (1, 1), (0, 1), (0, 1)]).unwrap();
        assert!(close(one.estimate, 4.0 / 6.0));
        assert!((one.low - 0.3000).abs() < 1e-3 && (one.high - 0.9032).abs() < 1e-3, "{one:?}");
        // The same rate from 3 run ids × 2 trials that always agree: as informative as 3 runs.
        let clustered = clustered_pass_rate(&[(2, 2), (2, 2), (0, 2)]).unwrap();
        let three = clustered_pass_rate(&[(1, 1), (1, 1), (0, 1)]).unwrap();
        assert!(close(clustered.estimate, three.estimate));
        assert!((clustered.low - three.low).abs() < 1e-9 && (clustered.high - three.high).abs() < 1e-9);
        assert_eq!(clustered_pass_rate(&[(0, 0)]), None);
        let all = clustered_pass_rate(&[(3, 3)]).unwrap();
        assert!(close(all.high, 1.0) && all.low < 1.0);
    }
}
