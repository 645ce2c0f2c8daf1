//! `ohrun compare BASE NEW` on batch directories written here by hand (summary.json as `ohrun run`
//! writes it, checked against its schema; a report.html stub where a run page is linked): the console
//! table, `--json` (checked against its schema), the exit codes of `--fail-on`, the usage errors, and
//! compare.html in headless Chromium.

use crate::support::*;
use crate::view::{assert_clean, chromium, file_url, load, section};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A check as summary.json lists it: name, passed, error.
type Check<'a> = (&'a str, bool, bool);

/// A run of a verifying job: `verdict` passed, failed or error.
fn run(id: &str, verdict: &str, checks: &[Check]) -> Value {
    let status = match verdict {
        "passed" => "succeeded",
        "failed" => "failed",
        _ => "errored",
    };
    let checks: Vec<Value> = checks
        .iter()
        .map(|(name, passed, error)| json!({"name": name, "passed": passed, "value": null, "error": error}))
        .collect();
    let score = if verdict == "passed" { 1.0 } else { 0.0 };
    json!({"id": id, "status": status, "verdict": verdict, "score": score, "checks": checks})
}

/// Writes a batch directory with a summary.json of `runs` (each completed with what every entry has).
fn batch(root: &Path, name: &str, runs: &[Value]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let runs: Vec<Value> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut full = json!({
                "index": i + 1, "job": "nightly", "job_file": "jobs/nightly.yaml", "matrix": null, "end_reason": null,
                "message": null, "attempts": 1, "cost": 0.25, "llm_calls": 3, "duration_ms": 60_000,
                "tokens": {"prompt": 1000, "completion": 200, "cache_read": 0, "cache_write": 0, "reasoning": 0},
                "report": format!("{}/run.json", r["id"].as_str().unwrap()),
            });
            full.as_object_mut().unwrap().extend(r.as_object().unwrap().clone());
            full
        })
        .collect();
    let summary = json!({
        "format": 1, "ohrun_version": "0.1.0", "updated_at": "2026-12-04T03:17:00.000Z", "runs": runs,
        "totals": {"runs": runs.len(), "by_status": {}, "cost": 0, "llm_calls": 0, "duration_ms": 0,
                   "tokens": {"prompt": 0, "completion": 0, "cache_read": 0, "cache_write": 0, "reasoning": 0}},
    });
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    read_summary(&dir); // as `ohrun run` writes it
    dir
}

/// A check name that would be markup if any output put it in as HTML.
const MARKUP_CHECK: &str = "tests </script><b>pass</b>";

/// Last night: the agent broke `regress`, mended `fix`; `infra`'s verifier failed tonight (an error, no
/// regression); three runs passed and one failed both nights; `gone` and `added` are in one night each.
fn nights(root: &Path) -> (PathBuf, PathBuf) {
    let ok = |id: &str| run(id, "passed", &[(MARKUP_CHECK, true, false)]);
    let base = batch(
        root,
        "last-night",
        &[
            run("regress", "passed", &[(MARKUP_CHECK, true, false), ("lint", true, false)]),
            run("fix", "failed", &[(MARKUP_CHECK, false, false)]),
            ok("infra"),
            ok("steady-1"),
            ok("steady-2"),
            ok("steady-3"),
            run("stuck", "failed", &[(MARKUP_CHECK, false, false)]),
            ok("gone"),
        ],
    );
    let new = batch(
        root,
        "tonight",
        &[
            ok("added"),
            run("regress", "failed", &[(MARKUP_CHECK, false, false), ("lint", true, false)]),
            ok("fix"),
            run("infra", "error", &[(MARKUP_CHECK, false, true)]),
            ok("steady-1"),
            ok("steady-2"),
            ok("steady-3"),
            run("stuck", "failed", &[(MARKUP_CHECK, false, false)]),
        ],
    );
    // The regressed run's page, as the batch wrote it: compare.html links to it.
    std::fs::create_dir_all(new.join("regress")).unwrap();
    std::fs::write(new.join("regress/report.html"), "<!doctype html>").unwrap();
    (base, new)
}

fn compare(base: &Path, new: &Path, extra: &[&str]) -> Result {
    Ohrun::new().args(["compare"]).args([base, new]).args(extra).env_remove("GITHUB_STEP_SUMMARY").output()
}

/// The lines of the table's section that starts with `title`, up to the next blank line.
fn table_section<'a>(table: &'a str, title: &str) -> Vec<&'a str> {
    let start = table.find(&format!("\n{title}")).unwrap_or_else(|| panic!("no `{title}` in:\n{table}"));
    table[start + 1..].lines().take_while(|l| !l.trim().is_empty()).collect()
}

#[test]
fn compare_lists_the_regression_and_the_fix_and_keeps_the_error_apart() {
    let root = tempfile::tempdir().unwrap();
    let (base, new) = nights(root.path());
    let out = compare(&base, &new, &[]);
    assert_eq!(out.code, 0, "the default gate never fails: {}", out.stderr);
    let table = &out.stdout;
    let regressed = table_section(table, "regressed:");
    assert_eq!(regressed.len(), 3, "{table}");
    assert!(
        regressed[2].contains("regress") && regressed[2].contains(&format!("{MARKUP_CHECK}: passed → failed")),
        "{table}"
    );
    assert!(!regressed[2].contains("lint"), "a check that did not change is not listed: {table}");
    let fixed = table_section(table, "fixed:");
    assert!(fixed.len() == 3 && fixed[2].contains("fix ") && fixed[2].contains("failed → passed"), "{table}");
    let not_comparable = table_section(table, "not comparable:");
    assert!(not_comparable[0].contains("infrastructure is never a regression"), "{table}");
    assert!(not_comparable[2].contains("infra") && not_comparable[2].contains("new: verdict error"), "{table}");
    assert!(table_section(table, "only in BASE")[2].contains("gone"), "{table}");
    assert!(table_section(table, "only in NEW")[2].contains("added"), "{table}");
    // 6 comparable pairs: 4 passed on each side, no change in rate, McNemar p = 1.
    assert!(
        table.lines().any(|l| l.contains("pass rate") && l.matches("66.7 %").count() == 2 && l.contains("+0.0 pts")),
        "{table}"
    );
    assert!(table.lines().any(|l| l.contains("McNemar exact p") && l.contains("1.0000")), "{table}");
    assert!(out.stderr.contains(&format!("wrote {}", new.join("compare.html").display())), "{}", out.stderr);

    let json = compare(&base, &new, &["--json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let doc = json.json();
    check_schema(&doc, "compare", "`ohrun compare --json`");
    assert_eq!(
        doc["counts"],
        json!({"regressed": 1, "fixed": 1, "both_passed": 3, "both_failed": 1, "not_comparable": 1, "only_in_base": 1, "only_in_new": 1})
    );
    let runs = doc["runs"].as_array().unwrap();
    let order: Vec<(&str, &str)> =
        runs.iter().map(|r| (r["id"].as_str().unwrap(), r["change"].as_str().unwrap())).collect();
    assert_eq!(
        order,
        [
            ("regress", "regressed"),
            ("fix", "fixed"),
            ("infra", "not_comparable"),
            ("gone", "only_in_base"),
            ("added", "only_in_new"),
            ("stuck", "both_failed"),
            ("steady-1", "both_passed"),
            ("steady-2", "both_passed"),
            ("steady-3", "both_passed"),
        ]
    );
    assert_eq!(runs[0]["checks"], json!([{"name": MARKUP_CHECK, "base": "passed", "new": "failed"}]));
    assert_eq!((runs[0]["trial"].as_u64(), runs[2]["reason"].as_str()), (Some(1), Some("new: verdict error")));
    assert_eq!(
        (doc["pass_rate"]["base"]["estimate"].as_f64(), doc["difference"]["estimate"].as_f64()),
        (Some(4.0 / 6.0), Some(0.0))
    );
    assert_eq!((doc["mcnemar_p"].as_f64(), doc["significant_drop"].as_bool()), (Some(1.0), Some(false)));
    // Cost and time: the 7 runs in both nights, the same each night.
    assert_eq!(
        (doc["metrics"]["cost"]["pairs"].as_u64(), doc["metrics"]["cost"]["base"]["total"].as_f64()),
        (Some(7), Some(1.75))
    );
    assert_eq!(doc["metrics"]["tokens"]["change"]["total"].as_f64(), Some(0.0));

    let gate = compare(&base, &new, &["--fail-on", "regression"]);
    assert_eq!(gate.code, 1, "a regression fails the gate: {}", gate.stderr);
    assert!(gate.stderr.contains("regression: 1 pair(s) passed in BASE and failed in NEW"), "{}", gate.stderr);
    let significant = compare(&base, &new, &["--fail-on", "significant", "--json"]);
    assert_eq!(significant.code, 0, "one regression against one fix is no significant drop: {}", significant.stderr);
    assert_eq!(significant.json()["gate"], json!({"fail_on": "significant", "failed": false}));
}

#[test]
fn only_a_significant_drop_fails_fail_on_significant() {
    let root = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (1..=12).map(|i| format!("r{i}")).collect();
    let all = |verdict: &dyn Fn(usize) -> &'static str| -> Vec<Value> {
        ids.iter().enumerate().map(|(i, id)| run(id, verdict(i), &[("tests", verdict(i) == "passed", false)])).collect()
    };
    let base = batch(root.path(), "base", &all(&|_| "passed"));
    // 8 of 12 regressed, none fixed: p = 2 · 0.5^8 = 0.0078.
    let new = batch(root.path(), "new", &all(&|i| if i < 8 { "failed" } else { "passed" }));
    let out = compare(&base, &new, &["--fail-on", "significant", "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let doc = out.json();
    assert_eq!((doc["counts"]["regressed"].as_u64(), doc["mcnemar_p"].as_f64()), (Some(8), Some(2.0 / 256.0)));
    assert_eq!((doc["significant_drop"].as_bool(), doc["gate"]["failed"].as_bool()), (Some(true), Some(true)));
    assert!(doc["difference"]["high"].as_f64().unwrap() < 0.0, "{}", doc["difference"]);
    assert!(out.stderr.contains("significant drop: pass rate -66.7 pts"), "{}", out.stderr);
    // At a stricter level the same drop passes; a rise is never a failure.
    assert_eq!(compare(&base, &new, &["--fail-on", "significant", "--alpha", "0.001"]).code, 0);
    assert_eq!(compare(&new, &base, &["--fail-on", "significant"]).code, 0);
    assert_eq!(compare(&base, &new, &[]).code, 0);
}

#[test]
fn jobs_that_verify_nothing_compare_by_status_and_a_merge_or_a_summary_file_is_a_batch() {
    let root = tempfile::tempdir().unwrap();
    let plain = |id: &str, status: &str| json!({"id": id, "status": status});
    let base = batch(root.path(), "base", &[plain("a", "succeeded"), plain("b", "failed"), plain("c", "succeeded")]);
    let new = batch(root.path(), "new", &[plain("a", "failed"), plain("b", "succeeded"), plain("c", "budget")]);
    let merged = root.path().join("merged");
    let merge = Ohrun::new()
        .args(["merge"])
        .args([&base])
        .args(["--out"])
        .args([&merged])
        .env_remove("GITHUB_STEP_SUMMARY")
        .output();
    assert!(merged.join("summary.json").is_file(), "{}", merge.stderr);
    let elsewhere = root.path().join("pages");
    let out = Ohrun::new()
        .args(["compare", "--json", "--fail-on", "regression", "--out"])
        .args([&elsewhere, &merged, &new.join("summary.json")])
        .output();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let doc = out.json();
    let changes: Vec<&str> = doc["runs"].as_array().unwrap().iter().map(|r| r["change"].as_str().unwrap()).collect();
    assert_eq!(changes, ["regressed", "fixed", "not_comparable"]);
    assert_eq!(doc["runs"][2]["reason"], "new: budget, no verdict");
    assert!(elsewhere.join("compare.html").is_file() && !new.join("compare.html").exists());
}

#[test]
fn a_batch_without_a_summary_or_with_a_run_twice_is_a_usage_error() {
    let root = tempfile::tempdir().unwrap();
    let good = batch(root.path(), "good", &[run("a", "passed", &[])]);
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = compare(&empty, &good, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("no readable summary.json") && out.stderr.contains("hint:"), "{}", out.stderr);
    let twice = batch(root.path(), "twice", &[run("a", "passed", &[]), run("a", "failed", &[])]);
    let out = compare(&good, &twice, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("run `a` trial 1 is listed twice"), "{}", out.stderr);
    for bad in [&["--alpha", "1.5"][..], &["--fail-on", "sometimes"]] {
        assert_eq!(compare(&good, &good, bad).code, 2, "{bad:?}");
    }
    assert!(!good.join("compare.html").exists(), "nothing is written for a usage error");
}

#[test]
fn compare_html_shows_the_regressed_runs_and_requests_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (base, new) = nights(root.path());
    assert_eq!(compare(&base, &new, &["-q"]).code, 0);
    let page = new.join("compare.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("default-src 'none'") && !html.contains("connect-src"), "the page may fetch nothing");
    assert!(!html.contains(MARKUP_CHECK), "report text is embedded escaped");
    let Some(browser) = chromium() else { return };
    let loaded = load(&browser, &file_url(&page), false);
    assert_clean(&loaded, "compare.html");
    let regressed = section(&loaded.dom, "regressed");
    assert!(regressed.contains("data-id=\"regress\""), "{regressed}");
    assert!(regressed.contains("href=\"regress/report.html\""), "the run's page is linked: {regressed}");
    assert!(regressed.contains("tests &lt;/script&gt;&lt;b&gt;pass&lt;/b&gt;: passed → failed"), "{regressed}");
    assert!(section(&loaded.dom, "fixed").contains("data-id=\"fix\""));
    let not_comparable = section(&loaded.dom, "not-comparable");
    assert!(
        not_comparable.contains("data-id=\"infra\"") && not_comparable.contains("new: verdict error"),
        "{not_comparable}"
    );
    let drawn = &loaded.dom[..loaded.dom.find("id=\"data\"").expect("the data block")];
    assert!(!drawn.contains("<b>"), "no report text became markup");
}
