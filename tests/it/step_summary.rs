//! The GitHub step summary (`$GITHUB_STEP_SUMMARY`): one markdown table row per run, whatever the run's
//! message holds.

use crate::support::*;
use serde_json::json;

#[test]
fn a_message_with_line_breaks_and_pipes_keeps_the_step_summary_one_row_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("shard");
    std::fs::create_dir(&shard).unwrap();
    let tokens = json!({"prompt": 0, "completion": 0, "cache_read": 0, "cache_write": 0, "reasoning": 0});
    let run = |id: &str, status: &str, message: Option<&str>| {
        json!({"id": id, "index": 1, "job": "j", "job_file": "j.yaml", "matrix": null, "status": status,
               "end_reason": message.map(|_| "error"), "message": message, "attempts": 1, "cost": 0.0,
               "tokens": tokens, "llm_calls": 0, "duration_ms": 1000, "report": null})
    };
    // A message as a failure's can come: several lines (a log tail, a provider's answer) with a pipe.
    let summary = json!({"format": 1, "ohrun_version": "0.1.0", "updated_at": "2026-12-01T00:00:00Z",
        "runs": [run("a", "failed", Some("exit 1 | see below\nTraceback:\r\n  boom")), run("b", "succeeded", None)],
        "totals": {"runs": 2, "by_status": {}, "cost": 0.0, "tokens": tokens, "llm_calls": 0, "duration_ms": 1000}});
    std::fs::write(shard.join("summary.json"), summary.to_string()).unwrap();
    let step_summary = dir.path().join("step-summary.md");
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env_remove("GITHUB_ACTIONS")
        .env("GITHUB_STEP_SUMMARY", &step_summary)
        .args(["merge", "shard", "--out", "merged"])
        .output();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let table = std::fs::read_to_string(&step_summary).unwrap();
    let rows: Vec<&str> = table.lines().skip_while(|l| !l.starts_with('|')).collect();
    assert_eq!(rows.len(), 4, "a header, its rule and one row per run:\n{table}");
    assert!(rows.iter().all(|r| r.starts_with('|') && r.ends_with('|')), "{table}");
    assert!(rows[2].contains("| error: exit 1 \\| see below<br>Traceback:<br>  boom |"), "{table}");
}
