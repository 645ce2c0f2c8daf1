//! The comparison as text tables for the console: counts, pass rates and the paired test, the deltas,
//! then the runs that changed (and those that could not be compared).

use super::metrics::Metric;
use super::pairs::{Change, PairEntry};
use super::{Comparison, FailOn};
use crate::stats::Interval;
use std::fmt::Write;

pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "BASE {} ({} runs)  →  NEW {} ({} runs)\n", c.base.dir, c.base.runs, c.new.dir, c.new.runs);
    counts(&mut out, c);
    out.push('\n');
    statistics(&mut out, c);
    for (change, title) in [
        (Change::Regressed, "regressed: passed in BASE, failed in NEW"),
        (Change::Fixed, "fixed: failed in BASE, passed in NEW"),
        (
            Change::NotComparable,
            "not comparable: an error or no result on a side (infrastructure is never a regression)",
        ),
        (Change::OnlyInBase, "only in BASE"),
        (Change::OnlyInNew, "only in NEW"),
    ] {
        runs(&mut out, c, change, title);
    }
    out
}

fn counts(out: &mut String, c: &Comparison) {
    let n = &c.counts;
    let rows = [
        ("regressed", n.regressed),
        ("fixed", n.fixed),
        ("both passed", n.both_passed),
        ("both failed", n.both_failed),
        ("not comparable", n.not_comparable),
        ("only in BASE", n.only_in_base),
        ("only in NEW", n.only_in_new),
    ];
    let rows: Vec<Vec<String>> = rows.iter().map(|(k, v)| vec![k.to_string(), v.to_string()]).collect();
    table(out, &[vec!["PAIRS".into(), "".into()]], &rows, &[false, true]);
}

fn statistics(out: &mut String, c: &Comparison) {
    let rate = |i: Option<Interval>| i.map_or("-".into(), |i| format!("{:.1} %", i.estimate * 100.0));
    let range = |i: Option<Interval>| i.map_or("".into(), |i| format!("{:.1}–{:.1}", i.low * 100.0, i.high * 100.0));
    let diff = c.difference.map_or("-".into(), |d| format!("{:+.1} pts", d.estimate * 100.0));
    let diff_range = c.difference.map_or("".into(), |d| format!("{:+.1} … {:+.1}", d.low * 100.0, d.high * 100.0));
    let significance = match (c.significant_drop, c.mcnemar_p < c.alpha) {
        (true, _) => format!("a significant drop at alpha {}", c.alpha),
        (false, true) => format!("a significant rise at alpha {}", c.alpha),
        (false, false) => format!("not significant at alpha {} (it may be chance)", c.alpha),
    };
    let mut rows = vec![
        vec!["pass rate".into(), "".into(), rate(c.pass_rate.base), rate(c.pass_rate.new), diff],
        vec!["".into(), "95 % interval".into(), range(c.pass_rate.base), range(c.pass_rate.new), diff_range],
        vec!["McNemar exact p".into(), "".into(), "".into(), "".into(), format!("{:.4}", c.mcnemar_p)],
    ];
    let m = &c.metrics;
    let score = |v: f64| format!("{v:.3}");
    let signed_score = |v: f64| format!("{v:+.3}");
    push_metric(&mut rows, "score", &m.score, &["mean", "median"], &score, &signed_score);
    push_metric(&mut rows, "cost", &m.cost, &["total", "median"], &|v| dollars(v, false), &|v| dollars(v, true));
    push_metric(&mut rows, "tokens", &m.tokens, &["total", "median"], &|v| format!("{v:.0}"), &|v| format!("{v:+.0}"));
    push_metric(&mut rows, "duration", &m.duration_ms, &["total", "median"], &|v| duration(v, false), &|v| {
        duration(v, true)
    });
    let head = vec!["".into(), "".into(), "BASE".into(), "NEW".into(), "CHANGE".into()];
    table(out, &[head], &rows, &[false, false, true, true, true]);
    let _ = writeln!(
        out,
        "  the change in pass rate is {significance} ({} regressed, {} fixed)",
        c.counts.regressed, c.counts.fixed
    );
}

type Format<'a> = &'a dyn Fn(f64) -> String;

fn push_metric(rows: &mut Vec<Vec<String>>, name: &str, m: &Metric, which: &[&str], plain: Format, signed: Format) {
    for (i, what) in which.iter().enumerate() {
        let pick = |s: &super::metrics::Stat| match *what {
            "total" => Some(s.total),
            "mean" => s.mean,
            _ => s.median,
        };
        let show = |v: Option<f64>, f: Format| v.map_or("-".to_string(), f);
        let label = if i == 0 { format!("{name} ({} pairs)", m.pairs) } else { String::new() };
        rows.push(vec![
            label,
            what.to_string(),
            show(pick(&m.base), plain),
            show(pick(&m.new), plain),
            show(pick(&m.change), signed),
        ]);
    }
}

fn runs(out: &mut String, c: &Comparison, change: Change, title: &str) {
    let list: Vec<&PairEntry> = c.runs.iter().filter(|e| e.change == change).collect();
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title} ({})", list.len());
    let last = match change {
        Change::NotComparable => "WHY",
        Change::Regressed | Change::Fixed => "CHECKS THAT CHANGED",
        _ => "",
    };
    let rows: Vec<Vec<String>> = list.iter().map(|e| vec![e.id.clone(), e.trial.to_string(), detail(e)]).collect();
    table(out, &[vec!["ID".into(), "TRIAL".into(), last.into()]], &rows, &[false, true, false]);
}

/// What the last column says of a pair: why it is not comparable, or which checks changed.
fn detail(e: &PairEntry) -> String {
    if let Some(why) = &e.reason {
        return why.clone();
    }
    let state = |s: Option<super::pairs::CheckState>| s.map_or("absent", |s| s.as_str());
    let checks: Vec<String> =
        e.checks.iter().map(|c| format!("{}: {} → {}", c.name, state(c.base), state(c.new))).collect();
    checks.join("; ")
}

/// Rows with their columns padded to the widest cell (right-aligned where `right`), indented by two.
fn table(out: &mut String, head: &[Vec<String>], rows: &[Vec<String>], right: &[bool]) {
    let all: Vec<&Vec<String>> = head.iter().chain(rows).collect();
    let widths: Vec<usize> = (0..right.len())
        .map(|i| all.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0))
        .collect();
    for row in all {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(right)
            .map(|((cell, w), r)| if *r { format!("{cell:>w$}") } else { format!("{cell:<w$}") })
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
}

fn dollars(v: f64, signed: bool) -> String {
    let sign = if !signed {
        ""
    } else if v < 0.0 {
        "-"
    } else {
        "+"
    };
    let a = v.abs();
    if a >= 1.0 { format!("{sign}${a:.2}") } else { format!("{sign}${a:.4}") }
}

fn duration(ms: f64, signed: bool) -> String {
    let sign = if !signed {
        ""
    } else if ms < 0.0 {
        "-"
    } else {
        "+"
    };
    let a = ms.abs();
    let text = if a < 1000.0 {
        format!("{a:.0} ms")
    } else if a < 60_000.0 {
        format!("{:.1} s", a / 1000.0)
    } else {
        let m = (a / 60_000.0).floor();
        format!("{m:.0}m {:.0}s", (a - m * 60_000.0) / 1000.0)
    };
    format!("{sign}{text}")
}

/// The line that says what the gate decided, for stderr.
pub fn gate_line(c: &Comparison) -> Option<String> {
    let n = &c.counts;
    match c.gate.fail_on {
        FailOn::Never => None,
        FailOn::Regression if c.gate.failed => {
            Some(format!("regression: {} pair(s) passed in BASE and failed in NEW (--fail-on regression)", n.regressed))
        }
        FailOn::Regression => Some("no regression (--fail-on regression)".to_string()),
        FailOn::Significant if c.gate.failed => Some(format!(
            "significant drop: pass rate {:+.1} pts, McNemar p = {:.4} < alpha {} (--fail-on significant)",
            c.difference.map_or(0.0, |d| d.estimate * 100.0),
            c.mcnemar_p,
            c.alpha
        )),
        FailOn::Significant => Some(format!(
            "no significant drop at alpha {} (McNemar p = {:.4}; {} regressed, {} fixed) (--fail-on significant)",
            c.alpha, c.mcnemar_p, n.regressed, n.fixed
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn money_and_time_read_as_on_the_report_pages() {
        assert_eq!(super::dollars(0.3, true), "+$0.3000");
        assert_eq!(super::dollars(-12.5, true), "-$12.50");
        assert_eq!(super::duration(90_000.0, false), "1m 30s");
        assert_eq!(super::duration(-1500.0, true), "-1.5 s");
    }
}
