//! Verification results wherever a batch's results show: a 4-run matrix on the shared agent-server (the
//! scripted LLM) whose agent writes the same answer in every run, with a check after its step, a required
//! check that fails in runs 2 and 4 (its stderr carries a pipe, colour codes and markup) and an optional
//! check that scores 0.5 with an explanation. The console's end lines, the `--json` lines, junit.xml,
//! the GitHub step summary and report.html (in Chromium) must each name the verdicts and the check that
//! failed; pass@k per run id is drawn from a merged summary with trials.

use crate::junit::assert_valid_junit;
use crate::server::shared;
use crate::support::*;
use crate::view::{assert_clean, chromium, file_url, load, section, serve};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const SCRIPT: &str = "replies:
  - tool: terminal
    args: {command: 'echo 42 > answer.txt'}
  - tool: finish
    args: {message: wrote the answer}
";

const JOB: &str = r#"name: verdicts
matrix:
  n: [1, 2, 3, 4]
sandbox:
  kind: remote
  url: @URL@
  session_key: ${SHARED_SESSION_KEY}
  working_dir: @WS@/{{ run.id }}
llm:
  model: m
  options: {num_retries: 0}
setup:
  - git init -q && git config user.email a@b && git config user.name a && echo base > base.txt && git add -A && git commit -qm base
steps:
  - message: Write the answer for run {{ n }}.
    checks:
      - name: answer written
        run: test -f answer.txt
verify:
  checks:
    - name: answer is right
      run: |
        echo "checking run {{ n }}: got $(cat answer.txt)"
        if [ {{ n }} = 2 ] || [ {{ n }} = 4 ]; then printf 'expected 41 in run {{ n }} | \033[31mred\033[0m <b>&</b>\n' >&2; exit 1; fi
    - name: half credit
      required: false
      run: |
        echo '{"score": 0.5, "explanation": "half right <i>"}' > "$OHRUN_VERIFY_OUT/reward.json"
rehearsal: script.yaml
"#;

struct Verified {
    /// The runs' working directories.
    ws: PathBuf,
    /// The batch directory.
    dir: PathBuf,
    /// Run ids in plan order: 1 and 3 pass, 2 and 4 fail `answer is right`.
    ids: Vec<String>,
    out: Result,
    step_summary: String,
}

impl Verified {
    fn passing(&self) -> [&String; 2] {
        [&self.ids[0], &self.ids[2]]
    }
    /// (n, run id) of the runs that fail `answer is right`.
    fn failing(&self) -> [(usize, &String); 2] {
        [(2, &self.ids[1]), (4, &self.ids[3])]
    }
}

/// The batch, run once per test binary.
fn verified() -> &'static Verified {
    static BATCH: OnceLock<Verified> = OnceLock::new();
    BATCH.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("verdicts-batch");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("script.yaml"), SCRIPT).unwrap();
        // The working directories are outside every git repository (the target dir is in ohrun's own): the
        // setup makes each one a repository of its own, whose final patch the page links to.
        // One per target dir (so per worktree), made anew at each run.
        let hash = std::hash::BuildHasher::hash_one(
            &std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default(),
            env!("CARGO_TARGET_TMPDIR"),
        );
        let ws = std::env::temp_dir().join(format!("ohrun-it-verdicts-{hash:016x}"));
        let _ = std::fs::remove_dir_all(&ws);
        std::fs::create_dir_all(&ws).unwrap();
        let text = JOB.replace("@URL@", &shared().url).replace("@WS@", &ws.display().to_string());
        let job = write_job(&root, "job.yaml", &text);
        let step_summary = root.join("step-summary.md");
        let out = Ohrun::new()
            .current_dir(&root)
            .env("SHARED_SESSION_KEY", &shared().key)
            .env_remove("GITHUB_ACTIONS")
            .env("GITHUB_STEP_SUMMARY", &step_summary)
            .args(["run", "--rehearse", "--json", "--jobs", "4"])
            .args([&job])
            .output();
        assert_eq!(out.code, 1, "two runs fail a check:\n{}", out.stderr);
        let plan = Ohrun::new().args(["plan", "--json"]).args([&job]).output();
        let ids =
            plan.json()["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        let step_summary = std::fs::read_to_string(&step_summary).unwrap();
        Verified { dir: root.join("ohrun-reports/verdicts"), ws, ids, out, step_summary }
    })
}

#[test]
fn the_console_and_the_json_lines_carry_each_runs_verdict_and_the_pass_rate() {
    let v = verified();
    let lines: Vec<&str> = v.out.stderr.lines().collect();
    let end_line = |id: &str| {
        let lead = format!("[{id}] ");
        let found = lines.iter().find(|l| l.contains(&lead) && (l.contains("] ok ") || l.contains("] FAILED ")));
        found.unwrap_or_else(|| panic!("no end line for {id}:\n{}", v.out.stderr)).to_string()
    };
    for id in v.passing() {
        assert!(end_line(id).contains(&format!("] ok {id} · passed 0.83 · 1/1 steps")), "{}", end_line(id));
    }
    for (_, id) in v.failing() {
        let line = end_line(id);
        assert!(line.contains(&format!("] FAILED {id} · failed 0.50 · 1/1 steps")), "{line}");
        assert!(line.ends_with(" — checks failed: answer is right"), "{line}");
    }
    let last = lines.iter().rev().find(|l| l.contains("4 runs:")).expect("the batch's line");
    assert!(
        last.contains("4 runs: 2 succeeded, 2 failed · pass rate 50 % (95 % CI ")
            && last.contains(" %) · 2 passed, 2 failed · mean score 0.67 · $"),
        "{last}"
    );

    let json: Vec<Value> = v.out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let run = |id: &str| json.iter().find(|j| j["type"] == "run" && j["id"] == id).unwrap_or_else(|| panic!("{id}"));
    for id in v.passing() {
        assert_eq!(
            (&run(id)["verdict"], run(id)["score"].as_f64().map(|s| (s * 100.0).round())),
            (&json!("passed"), Some(83.0))
        );
    }
    for (n, id) in v.failing() {
        assert_eq!((&run(id)["verdict"], &run(id)["score"]), (&json!("failed"), &json!(0.5)));
        let failed = &run(id)["checks"][1];
        assert_eq!(
            (&failed["name"], &failed["passed"], &failed["exit_code"]),
            (&json!("answer is right"), &json!(false), &json!(1))
        );
        assert!(failed["output_tail"].as_str().unwrap().contains(&format!("expected 41 in run {n}")), "{failed}");
    }
    let summary = json.last().unwrap();
    assert_eq!((&summary["type"], &summary["verification"]["passed"]), (&json!("summary"), &json!(2)));
    assert_eq!(summary["verification"]["pass_rate"]["estimate"], 0.5, "{summary}");
    read_summary(&v.dir);
}

/// Each testcase of a junit.xml: from its attributes to the next testcase (or the end).
fn testcases(xml: &str) -> Vec<&str> {
    xml.split("<testcase ").skip(1).collect()
}

#[test]
fn junit_has_a_testcase_per_run_and_check_and_a_failure_naming_the_check_with_its_output() {
    let v = verified();
    let xml = std::fs::read_to_string(v.dir.join("junit.xml")).unwrap();
    assert_valid_junit(&xml);
    let cases = testcases(&xml);
    assert_eq!(cases.len(), 4 * 3, "a testcase per (run, check), none per run:\n{xml}");
    for id in &v.ids {
        let of_run: Vec<&&str> = cases.iter().filter(|c| c.contains(&format!("classname=\"{id}\""))).collect();
        let names: Vec<&str> = of_run.iter().map(|c| c.split('"').nth(1).unwrap()).collect();
        assert_eq!(names, ["answer written", "answer is right", "half credit"], "{xml}");
        let right = of_run[1];
        let failing = v.failing().iter().any(|(_, f)| *f == id);
        assert_eq!(right.contains("<failure"), failing, "{right}");
        // The optional check's failure does not fail the testcase; it says so.
        assert!(!of_run[2].contains("<failure") && of_run[2].contains("optional check failed"), "{}", of_run[2]);
        assert!(of_run[2].contains("explanation: half right &lt;i&gt;"), "{}", of_run[2]);
    }
    let (n, id) = v.failing()[0];
    let right = cases.iter().find(|c| c.starts_with(&format!("name=\"answer is right\" classname=\"{id}\"")));
    let right = right.unwrap();
    assert!(
        right.contains("<failure message=\"check `answer is right` failed: exit 1, value 0.00\" type=\"check\">"),
        "{right}"
    );
    // Its output tail, escaped, the colour codes (which XML cannot hold) dropped.
    assert!(right.contains(&format!("expected 41 in run {n} | red &lt;b&gt;&amp;&lt;/b&gt;")), "{right}");
    assert!(!xml.contains('\u{1b}'), "{xml}");
}

#[test]
fn the_step_summary_shows_the_pass_rate_and_the_failed_check_of_each_failed_run() {
    let v = verified();
    let md = &v.step_summary;
    assert!(md.contains("**Verified:** pass rate 50 % (95 % CI ") && md.contains("2 passed, 2 failed"), "{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(rows.len(), 2 + 4, "a header, its rule and one row per run:\n{md}");
    assert!(rows[0].starts_with("| run | status | verdict | failed checks |"), "{md}");
    for (row, (_, id)) in rows[2..4].iter().zip(v.failing()) {
        assert!(
            row.starts_with(&format!(
                "| `{id}` | failed | failed 0.50 | answer is right (exit 1); half credit (optional) |"
            )),
            "{row}"
        );
    }
    for row in &rows[4..] {
        assert!(row.contains("| succeeded | passed 0.83 | half credit (optional) |"), "{row}");
    }
}

#[test]
fn the_run_page_shows_each_check_its_output_the_explanation_and_the_final_patch() {
    let v = verified();
    let (n, id) = v.failing()[0];
    let run_dir = v.dir.join(id);
    assert!(run_dir.join("attempt-1/final.patch").is_file());
    let Some(browser) = chromium() else { return };
    let page = load(&browser, &file_url(&run_dir.join("report.html")), false);
    assert_clean(&page, "a verified run's page");
    let dom = &page.dom;
    let drawn = &dom[..dom.find("id=\"data\"").expect("the data block")];
    assert!(drawn.contains("<span class=\"badge verdict bad\" title=\"score 0.50\">verdict failed</span>"), "{drawn}");
    let verification = &drawn[drawn.find("id=\"verification\"").expect("the verification section")..];
    let failed = "data-check=\"answer is right\" data-state=\"failed\"";
    assert!(verification.contains(failed), "{verification}");
    // Its output as text: the markup shown as written, the colour codes left out.
    assert!(
        verification.contains(&format!("expected 41 in run {n} | red &lt;b&gt;&amp;&lt;/b&gt;</pre>")),
        "{verification}"
    );
    assert!(verification.contains(&format!("checking run {n}: got 42</pre>")), "{verification}");
    assert!(verification.contains("data-check=\"half credit\" data-state=\"failed (optional)\""), "{verification}");
    assert!(verification.contains(">half right &lt;i&gt;</div>"), "the explanation:\n{verification}");
    // The step's own check under its step, not again among the final ones.
    let step = section(drawn, "step-1");
    assert!(step.contains("data-check=\"answer written\" data-state=\"passed\""), "{step}");
    assert!(!verification.contains("data-check=\"answer written\""), "{verification}");
    let report = read_report(&run_dir);
    let base = report["final_patch"]["base_commit"].as_str().unwrap();
    assert!(verification.contains(&format!("base commit: {base}")), "{verification}");
    assert!(verification.contains("<a href=\"attempt-1/final.patch\">final.patch</a>"), "{verification}");

    // Served, the page links to final.patch, which is served as text; the workspace still is not.
    let s = serve(&v.dir);
    let (status, _, served) = s.get(&format!("/{id}/report.html"));
    assert_eq!(status, 200);
    assert!(served.contains("\"final_patch\":\"attempt-1/final.patch\""), "{served}");
    let (status, head, patch) = s.get(&format!("/{id}/attempt-1/final.patch"));
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("text/plain") && head.contains("sandbox"), "{head}");
    assert!(patch.contains("+42"), "{patch}");
    assert_eq!(s.get(&format!("/{id}/attempt-1/workspace/answer.txt")).0, 404);
    assert!(!v.ws.join(id).join("final.patch").exists());
}

#[test]
fn the_batch_page_shows_verdicts_scores_the_failed_check_and_the_pass_rate() {
    let v = verified();
    let Some(browser) = chromium() else { return };
    let page = load(&browser, &file_url(&v.dir.join("report.html")), false);
    assert_clean(&page, "a verified batch's page");
    let dom = &page.dom;
    assert!(dom.contains("Verdict<span class=\"arrow\">") && dom.contains("Score<span class=\"arrow\">"), "{dom}");
    assert!(dom.contains("<div class=\"k\">Pass rate</div><div class=\"v\">50 %</div>"), "{dom}");
    let rows: Vec<&str> = dom.split("<tr class=\"run").skip(1).collect();
    assert_eq!(rows.len(), 4);
    for (row, (_, id)) in rows.iter().zip(v.failing()) {
        assert!(row.contains(&format!("data-id=\"{id}\"")), "failures first: {row}");
        assert!(row.contains("<span class=\"badge bad\">failed</span></td><td class=\"num\">0.50</td>"), "{row}");
        assert!(row.contains(">failed: answer is right</span>"), "{row}");
    }
    for row in &rows[2..] {
        assert!(row.contains("<span class=\"badge ok\">passed</span></td><td class=\"num\">0.83</td>"), "{row}");
    }
}

#[test]
fn the_batch_page_shows_pass_at_k_of_each_run_id_with_trials() {
    // Five trials of one run id (passed on trials 1, 3 and 4) and one run of another, with the rollup
    // ohrun computes for them (`report::scores`, unit-tested against the closed forms): the page draws it.
    let dir = tempfile::tempdir().unwrap();
    let tokens = json!({"prompt": 0, "completion": 0, "cache_read": 0, "cache_write": 0, "reasoning": 0});
    let run = |id: &str, trial: Option<u32>, passed: bool| {
        let (status, verdict) = if passed { ("succeeded", "passed") } else { ("failed", "failed") };
        json!({"id": id, "index": 1, "job": "j", "job_file": "j.yaml", "matrix": null, "status": status,
               "end_reason": if passed { "finished" } else { "checks" }, "message": null, "attempts": 1, "cost": 0.01,
               "tokens": tokens, "llm_calls": 1, "duration_ms": 1000, "report": null, "trial": trial,
               "verdict": verdict, "score": if passed { 1.0 } else { 0.0 },
               "checks": [{"name": "tests", "passed": passed, "value": if passed { 1.0 } else { 0.0 }}]})
    };
    let mut runs: Vec<Value> = [true, false, true, true, false]
        .iter()
        .enumerate()
        .map(|(i, p)| run("flaky", Some(i as u32 + 1), *p))
        .collect();
    runs.push(run("steady", None, true));
    let tally = json!({"passed": 4, "failed": 2, "error": 0, "pass_rate": {"estimate": 0.6667, "low": 0.4, "high": 0.86},
        "mean_score": 0.6667, "cost_per_pass": 0.015});
    let verification = json!({"batch": tally, "jobs": {"j": tally}, "trials": {"flaky": {"trials": 5, "passed": 3, "errors": 0,
        "pass_at": {"1": 0.6, "2": 0.9, "3": 1.0, "4": 1.0, "5": 1.0},
        "pass_all": {"1": 0.6, "2": 0.3, "3": 0.1, "4": 0.0, "5": 0.0}, "mean_score": 0.6, "flaky": true}}});
    let summary = json!({"format": 1, "ohrun_version": "0.1.0", "updated_at": "2026-12-01T00:00:00Z", "runs": runs,
        "totals": {"runs": 6, "by_status": {"succeeded": 4, "failed": 2}, "cost": 0.06, "tokens": tokens, "llm_calls": 6,
                   "duration_ms": 1000},
        "verification": verification});
    std::fs::write(dir.path().join("summary.json"), summary.to_string()).unwrap();
    read_summary(dir.path());
    let view = Ohrun::new().args(["view", "--no-open"]).args([dir.path()]).env_remove("DISPLAY").output();
    assert_eq!(view.code, 0, "{}", view.stderr);
    let Some(browser) = chromium() else { return };
    let page = load(&browser, &file_url(&dir.path().join("report.html")), false);
    assert_clean(&page, "a batch page with trials");
    let trials = &page.dom[page.dom.find("id=\"trials\"").expect("the trials table")..];
    let trials = &trials[..trials.find("</table>").unwrap()];
    let flaky = &trials[trials.find("data-id=\"flaky\"").unwrap()..];
    let flaky = &flaky[..flaky.find("</tr>").unwrap()];
    assert!(flaky.contains("<td class=\"num\">5</td><td class=\"num\">3</td>"), "{flaky}");
    assert!(flaky.contains("<td class=\"pass-at\">1: 0.60 · 2: 0.90 · 3: 1.00 · 4: 1.00 · 5: 1.00</td>"), "{flaky}");
    assert!(flaky.contains("<td class=\"pass-all\">1: 0.60 · 2: 0.30 · 3: 0.10 · 4: 0.00 · 5: 0.00</td>"), "{flaky}");
    assert!(flaky.contains(">flaky</span>"), "{flaky}");
    assert!(!trials.contains("data-id=\"steady\""), "a run id of one trial has no row");
    assert!(page.dom.contains("<div class=\"k\">Pass rate</div><div class=\"v\">67 %</div>"), "{}", page.dom);
}
