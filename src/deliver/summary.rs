//! What a delivery writes for people: a pull request's default body (the agent's final message, the
//! checks, the cost, the run id) and the batch's summary comment on an issue (`deliver.batch_summary`),
//! one comment per batch, found again by a hidden marker and replaced on resume or rerun.

use super::github::Github;
use crate::report::RunReport;
use crate::report::summary::{RunSummary, Summary};

/// The marker that makes the batch's comment findable again.
pub fn marker(batch_id: &str) -> String {
    format!("<!-- ohrun batch: {batch_id} -->")
}

/// A table cell: one line, no pipes.
fn cell(text: &str) -> String {
    text.replace(['\n', '\r'], " ").replace('|', "\\|")
}

/// The agent's final message, the checks, the cost and the run id.
pub fn default_body(r: &RunReport) -> String {
    let mut out = String::new();
    if let Some(m) = r.steps.iter().rev().find_map(|s| s.final_message.as_deref()) {
        out.push_str(&format!("{}\n\n", m.trim()));
    }
    if let Some(v) = &r.verification {
        let verdict = v.verdict.map_or("none", |v| v.as_str());
        let score = v.score.map(|s| format!(" · score {s:.2}")).unwrap_or_default();
        out.push_str(&format!("**Verification:** {verdict}{score}\n\n| check | passed | value |\n|---|---|---|\n"));
        for c in &v.checks {
            let value = c.value.map(|x| format!("{x:.2}")).unwrap_or_else(|| "–".into());
            let passed = if c.error.is_some() {
                "error"
            } else if c.passed {
                "yes"
            } else {
                "no"
            };
            out.push_str(&format!("| {} | {passed} | {value} |\n", cell(&c.name)));
        }
        out.push('\n');
    }
    out.push_str(&format!("**Cost:** ${} · {} LLM calls\n", r.totals.cost, r.totals.llm_calls));
    out
}

/// The batch's table: run, verdict, score, pull request, cost.
pub fn table(batch_id: &str, runs: &[(&RunSummary, Option<&str>)], summary: &Summary) -> String {
    let mut out = format!("{}\n### ohrun batch `{batch_id}`\n\n", marker(batch_id));
    out.push_str("| run | verdict | score | pull request | cost |\n|---|---|---|---|---|\n");
    for (run, pr) in runs {
        let verdict = run.verdict.map_or_else(|| run.status.as_str().to_string(), |v| v.as_str().to_string());
        let score = run.score.map(|s| format!("{s:.2}")).unwrap_or_else(|| "–".into());
        let pr = pr.map(cell).unwrap_or_else(|| "–".into());
        out.push_str(&format!("| `{}` | {verdict} | {score} | {pr} | ${} |\n", cell(&run.id), run.cost));
    }
    out.push_str(&format!(
        "\n{} runs · total ${}\n",
        runs.len(),
        summary.runs.iter().map(|r| r.cost).sum::<crate::money::Usd>()
    ));
    crate::report::redact::apply(&out).into_owned()
}

/// Posts the batch's comment, or replaces the one with its marker; the comment's URL.
pub async fn post(
    gh: &mut Github,
    issue: (&str, &str, u64),
    batch_id: &str,
    body: &str,
) -> Result<String, super::github::GithubError> {
    let (owner, repo, n) = issue;
    let existing = gh.find_comment((owner, repo), n, &marker(batch_id)).await?;
    gh.put_comment((owner, repo), n, existing, body).await
}
