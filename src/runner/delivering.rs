//! The runner's side of delivery (`crate::deliver` has the push and the API): after the sandbox was
//! released and the verdict is known, before the attempt's last report write. A delivery that failed is
//! the infrastructure's (exit 3), not retried (another attempt would run the agent again; `--resume`
//! does, and finds the same branch and pull request); the verdict stands as it was.

use super::attempt::{Delivering, Run};
use super::outcome::set_outcome;
use crate::deliver;
use crate::error::Failure;
use crate::report::{Delivery, DeliveryStatus, OutcomeClass, RunReport};
use crate::settings::RunSettings;

impl Run<'_> {
    /// Delivers the attempt's work when the job asks for it; the attempt's result with the delivery's.
    pub(super) async fn deliver(
        &self,
        settings: &RunSettings,
        report: &mut RunReport,
        result: Result<(), Failure>,
    ) -> Result<(), Failure> {
        let Some(s) = &settings.deliver else { return result };
        let pacing = match self.attempt.delivering {
            Delivering::Off => {
                let reason = "--no-deliver: nothing was pushed or sent".to_string();
                report.delivery = Some(Delivery { reason: Some(reason), ..Default::default() });
                return result;
            }
            Delivering::On(p) => p,
        };
        // The outcome as it stands decides whether to deliver (`finish` sets it again, the same).
        set_outcome(report, result.as_ref().err(), self.attempt.signals.terminated());
        self.attempt.line.activity("delivering");
        let ctx = deliver::Context { report, attempt_dir: &self.attempt.dir, pacing };
        let delivery = deliver::deliver(s, &ctx).await;
        self.say(&describe(&delivery));
        let failed = (delivery.status == DeliveryStatus::Failed).then(|| delivery.reason.clone().unwrap_or_default());
        report.delivery = Some(delivery);
        self.checkpoint.save(report);
        match (failed, result) {
            (Some(why), Ok(())) => Err(Failure::new(OutcomeClass::Infrastructure, format!("delivery failed: {why}"))
                .hint("the verdict stands; `ohrun run --resume` runs it again and delivers to the same branch and pull request")),
            (_, result) => result,
        }
    }
}

/// The console's line about it.
fn describe(d: &Delivery) -> String {
    let why = d.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    match d.status {
        DeliveryStatus::Delivered => {
            let pr = d.pr_url.as_deref().map(|u| format!(", pull request {u}")).unwrap_or_default();
            format!("delivered: branch {}{pr}", d.branch.as_deref().unwrap_or_default())
        }
        DeliveryStatus::Skipped => format!("not delivered{why}"),
        DeliveryStatus::Failed => format!("delivery failed{why}"),
    }
}

/// `deliver.batch_summary`: one comment on the issue with the batch's table, found again by its marker
/// (the batch directory's name) and replaced on a resume or rerun. Once, after every run ended; a
/// failure is a warning on the console (each run's own delivery is in its run.json).
pub(super) async fn post_batch_summary(
    plans: &[crate::job::Plan],
    summary: &crate::report::summary::Summary,
    out: &std::path::Path,
    console: &crate::console::Console,
) {
    let wanted = plans.iter().flat_map(|p| &p.runs).find_map(|r| {
        let issue = r.spec.deliver.as_ref()?.batch_summary.as_ref()?.issue.clone();
        Some((r, issue))
    });
    let Some((run, issue)) = wanted else { return };
    let Some((owner, repo, n)) = crate::job::deliver::parse_issue(&issue) else { return };
    let Some(s) = crate::settings::resolve_deliver(&run.spec, &super::env).ok().flatten() else {
        console.error("warning: the batch summary was not posted: `deliver:` could not be resolved");
        return;
    };
    let batch_id = std::path::absolute(out)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "batch".into());
    let rows: Vec<_> =
        summary.runs.iter().map(|r| (r, r.delivery.as_ref().and_then(|d| d.pr_url.as_deref()))).collect();
    let body = deliver::summary::table(&batch_id, &rows, summary);
    let deadline = std::time::Instant::now() + s.timeout;
    let posted = match deliver::github::Github::new(&s.api_url, s.token.clone(), deadline) {
        Ok(mut gh) => {
            deliver::summary::post(&mut gh, (owner, repo, n), &batch_id, &body).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    match posted {
        Ok(url) => console.say(&format!("batch summary: {url}")),
        Err(e) => console.error(&format!("warning: the batch summary was not posted on {issue}: {e}")),
    }
}
