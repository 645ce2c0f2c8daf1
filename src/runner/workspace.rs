//! What enters the sandbox's working directory before setup (`repo:`, through `crate::repo`) and what
//! leaves it before release (`artifacts:`, through `crate::artifacts`), wired into an attempt.

use super::attempt::Run;
use crate::backend::Ready;
use crate::error::Failure;
use crate::report::repo::RepoInfo;
use crate::report::{OutcomeClass, RunReport};
use crate::settings::RunSettings;
use std::time::Instant;

impl Run<'_> {
    /// Clones `repo:` on this side and ships it into the working directory. A failure is a setup failure
    /// (exit 1) with git's message, redacted.
    pub(super) async fn bring_repo(
        &self,
        ready: &Ready,
        settings: &RunSettings,
        report: &mut RunReport,
    ) -> Result<(), Failure> {
        let Some(repo) = &settings.repo else { return Ok(()) };
        let started = Instant::now();
        let url = crate::repo::display_url(&repo.url);
        self.attempt.line.activity(&format!("cloning {url}"));
        report.repo = Some(RepoInfo {
            url: url.clone(),
            git_ref: repo.git_ref.clone(),
            depth: repo.depth,
            ..RepoInfo::default()
        });
        let cancel = self.attempt.signals.cancel();
        let shipped = async {
            let cloned = crate::repo::clone(repo, &cancel).await?;
            let archive = crate::repo::archive(&cloned.dir).await?;
            let bytes = archive.len() as u64;
            crate::repo::ship(&ready.client, archive, &ready.working_dir, &cancel).await?;
            Ok::<_, crate::repo::Error>((cloned.base_commit, bytes))
        }
        .await;
        let info = report.repo.as_mut().expect("set above");
        info.duration_ms = started.elapsed().as_millis() as u64;
        match shipped {
            Ok((base, bytes)) => {
                self.say(&format!(
                    "cloned {url} at {} ({bytes} bytes shipped, {:.1}s)",
                    &base[..base.len().min(12)],
                    started.elapsed().as_secs_f64()
                ));
                (info.base_commit, info.archive_bytes) = (Some(base), bytes);
                Ok(())
            }
            Err(crate::repo::Error::Interrupted) => {
                Err(Failure::new(OutcomeClass::Interrupted, format!("interrupted while cloning {url}")))
            }
            Err(crate::repo::Error::Failed(why)) => {
                let f = Failure::new(OutcomeClass::Failed, format!("cloning {url} failed: {why}"))
                    .hint("check `repo.url`, `repo.ref` and `repo.token`");
                self.setup_failed(report, &f);
                Err(f)
            }
        }
    }
}

impl Run<'_> {
    /// `artifacts:` from the working directory into `attempt-N/artifacts/`, before release, whatever the
    /// outcome (unless the sandbox is gone); what was over `artifacts_max` is a warning naming it.
    pub(super) async fn collect_artifacts(&self, ready: &Ready, report: &mut RunReport, succeeded: bool) {
        use crate::job::repo::ArtifactWhen;
        let patterns: Vec<&str> = self
            .spec()
            .artifacts
            .iter()
            .filter(|a| match a.when() {
                ArtifactWhen::Always => true,
                ArtifactWhen::OnSuccess => succeeded,
                ArtifactWhen::OnFailure => !succeeded,
            })
            .map(|a| a.path())
            .collect();
        let lost = report.steps.iter().any(|s| s.end_reason == crate::report::EndReason::Lost);
        if patterns.is_empty() || lost {
            return;
        }
        self.attempt.line.activity("collecting artifacts");
        let max = self.spec().artifacts_max.0;
        let found =
            crate::artifacts::collect(&ready.client, &ready.working_dir, &patterns, max, &self.attempt.dir).await;
        if !found.skipped.is_empty() {
            let names: Vec<String> = found.skipped.iter().map(|s| format!("{} ({} bytes)", s.path, s.size)).collect();
            let warning = format!("artifacts over `artifacts_max` ({max} bytes) were skipped: {}", names.join(", "));
            self.attempt.line.error(&format!("warning: {warning}"));
            report.warnings.push(warning);
        }
        if let Some(e) = &found.error {
            let warning = format!("artifacts: {e}");
            self.attempt.line.error(&format!("warning: {warning}"));
            report.warnings.push(warning);
        }
        let bytes: u64 = found.files.iter().map(|f| f.size).sum();
        self.say(&format!("collected {} artifact(s), {bytes} bytes", found.files.len()));
        report.artifacts = Some(found);
    }
}
