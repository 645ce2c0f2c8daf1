//! Delivery (`deliver:`): after a run ended and was verified, before its report's last write, its final
//! patch becomes a commit on ohrun's own branch (`git.rs`, pushed from ohrun's side) and a pull request
//! is opened or updated (`github.rs`). Idempotent by run id: the branch is named after it and
//! force-pushed, and the pull request is found by its head branch before one is created, so a retry, a
//! resume or a rerun updates what the first made; a pull request closed or merged meanwhile is left as
//! it is. `summary.rs` is the batch's comment on an issue.

pub mod git;
pub mod github;
pub mod summary;

use crate::job::deliver::{DeliverWhen, PrMode, PullRequestSpec};
use crate::report::{Delivery, DeliveryStatus, OutcomeClass, RunReport, Verdict};
use github::{Github, GithubError, PullRequest};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `deliver:` with its `${VAR}`s expanded (the token registered with the redactor).
#[derive(Clone, Debug)]
pub struct DeliverSettings {
    pub when: DeliverWhen,
    pub repository: String,
    /// Rendered; None: `ohrun/RUN_ID`.
    pub branch: Option<String>,
    pub commit_message: Option<String>,
    pub author: git::Author,
    pub pull_request: PullRequestSpec,
    pub api_url: String,
    pub token: Option<String>,
    pub timeout: Duration,
    /// The pull request's base is `repo.ref` (not `pull_request.base`): when GitHub refuses it (a tag),
    /// the default branch is used instead.
    pub base_from_repo: bool,
}

/// A repository URL: where it is, and its owner and name (the last two path segments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoUrl {
    pub url: String,
    pub owner: String,
    pub name: String,
}

impl RepoUrl {
    pub fn parse(text: &str) -> Result<RepoUrl, String> {
        let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "https" | "http") || url.query().is_some() || !url.username().is_empty() {
            return Err(format!("`{text}` is not an http(s) repository URL without credentials"));
        }
        let parts: Vec<&str> = url.path_segments().map(|s| s.filter(|p| !p.is_empty()).collect()).unwrap_or_default();
        let [.., owner, name] = parts.as_slice() else {
            return Err(format!("`{text}` does not end in OWNER/NAME"));
        };
        let name = name.strip_suffix(".git").unwrap_or(name);
        Ok(RepoUrl { url: text.to_string(), owner: owner.to_string(), name: name.to_string() })
    }

    /// The same repository under another owner (a fork), on the same host.
    pub fn fork(&self, owner: &str) -> RepoUrl {
        let mut url = reqwest::Url::parse(&self.url).expect("parsed before");
        let mut parts: Vec<String> =
            url.path_segments().map(|s| s.filter(|p| !p.is_empty()).map(str::to_string).collect()).unwrap_or_default();
        let at = parts.len() - 2;
        parts[at] = owner.to_string();
        url.set_path(&parts.join("/"));
        RepoUrl { url: url.to_string(), owner: owner.to_string(), name: self.name.clone() }
    }
}

/// One lock per API host for the batch: pull requests are created one at a time per host (GitHub's
/// secondary limits punish concurrent creates), whatever `--jobs` says.
#[derive(Default)]
pub struct Pacing {
    hosts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Pacing {
    fn lock_for(&self, host: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner()).entry(host.to_string()).or_default().clone()
    }
}

/// Whether this run delivers; `Err` says why not.
pub fn decide(when: DeliverWhen, report: &RunReport) -> Result<(), String> {
    let class = report.outcome.class;
    if matches!(class, OutcomeClass::Interrupted | OutcomeClass::Infrastructure | OutcomeClass::LeftBehind) {
        return Err(format!(
            "the run did not end cleanly ({})",
            crate::report::summary::RunStatus::from_class(class).as_str()
        ));
    }
    if let Some(k) = report.run.trial {
        // Every trial of a run id would push to one branch and update one pull request, racing.
        return Err(format!(
            "trial {k} of a run with trials: trials deliver nothing (run without --repeat to deliver)"
        ));
    }
    let verdict = report.verification.as_ref().and_then(|v| v.verdict);
    let stopped_at_step = report.steps.iter().any(|s| s.stopped_by_checks);
    let agent_finished = !stopped_at_step
        && (class == OutcomeClass::Succeeded || report.verification.as_ref().is_some_and(|v| v.not_verified.is_none()));
    let wanted = match when {
        DeliverWhen::Always => Ok(()),
        DeliverWhen::Finished if agent_finished => Ok(()),
        DeliverWhen::Finished => Err("the agent did not finish (deliver.when: finished)".to_string()),
        DeliverWhen::Passed => match (verdict, report.verification.is_some()) {
            (Some(Verdict::Passed), _) | (None, false) if class == OutcomeClass::Succeeded => Ok(()),
            (Some(v), _) => Err(format!("the verdict is {} (deliver.when: passed)", v.as_str())),
            _ => Err(format!(
                "the run {} (deliver.when: passed)",
                crate::report::summary::RunStatus::from_class(class).as_str()
            )),
        },
    };
    wanted?;
    let Some(patch) = &report.final_patch else {
        return Err("the run has no final patch (its working directory is not a git repository)".into());
    };
    if let Some(e) = &patch.error {
        return Err(format!("the run has no final patch: {e}"));
    }
    if patch.redacted {
        return Err("a secret was masked in the final patch: it is never delivered".into());
    }
    if patch.base_commit.is_none() || patch.file.is_none() {
        return Err("the run has no final patch".into());
    }
    if patch.paths == 0 {
        return Err("the agent changed nothing: nothing pushed".into());
    }
    Ok(())
}

/// What one delivery needs beside its settings.
pub struct Context<'a> {
    pub report: &'a RunReport,
    /// The attempt's directory (its `final.patch`).
    pub attempt_dir: &'a Path,
    pub pacing: &'a Pacing,
}

/// Delivers one run's work (or says why not); never panics, never fails the caller: the record says.
pub async fn deliver(s: &DeliverSettings, ctx: &Context<'_>) -> Delivery {
    let started = Instant::now();
    let mut d = Delivery::default();
    if let Err(why) = decide(s.when, ctx.report) {
        d.reason = Some(why);
    } else if let Err(why) = Delivering::new(s, ctx, &mut d).run().await {
        d.status = DeliveryStatus::Failed;
        d.reason = Some(crate::report::redact::apply(&why).into_owned());
    }
    d.duration_ms = started.elapsed().as_millis() as u64;
    d
}

struct Delivering<'a> {
    s: &'a DeliverSettings,
    ctx: &'a Context<'a>,
    d: &'a mut Delivery,
    deadline: Instant,
}

impl<'a> Delivering<'a> {
    fn new(s: &'a DeliverSettings, ctx: &'a Context<'a>, d: &'a mut Delivery) -> Self {
        Delivering { s, ctx, d, deadline: Instant::now() + s.timeout }
    }

    async fn run(&mut self) -> Result<(), String> {
        let upstream = RepoUrl::parse(&self.s.repository)?;
        let target = match &self.s.pull_request.fork_owner {
            Some(owner) => upstream.fork(owner),
            None => upstream.clone(),
        };
        let branch = self.s.branch.clone().unwrap_or_else(|| format!("ohrun/{}", self.ctx.report.run.id));
        self.d.repository = Some(format!("{}/{}", target.owner, target.name));
        self.d.branch = Some(branch.clone());
        let mut gh = Github::new(&self.s.api_url, self.s.token.clone(), self.deadline)?;
        let up = (upstream.owner.as_str(), upstream.name.as_str());
        // A pull request closed or merged meanwhile is left alone, and so is its branch.
        let found = if self.opens_pr() { Some(self.found(&mut gh, up, &target.owner, &branch).await?) } else { None };
        if let Some(Some(pr)) = &found
            && !pr.is_open()
        {
            self.record_pr(pr, false);
            self.d.status = DeliveryStatus::Skipped;
            self.d.reason = Some(format!("pull request #{} is {}: not reopened, nothing pushed", pr.number, pr.state));
            self.d.api_retries = gh.retries;
            return Ok(());
        }
        if !self.push(&upstream, &target, &branch).await? {
            return Ok(());
        }
        let Some(found) = found else {
            self.d.status = DeliveryStatus::Delivered;
            return Ok(());
        };
        let result = self.open_or_update(&mut gh, up, &target.owner, &branch, found).await;
        self.d.api_retries = std::mem::take(&mut gh.retries);
        result
    }

    fn opens_pr(&self) -> bool {
        self.s.pull_request.mode != PrMode::None
    }

    async fn found(
        &self,
        gh: &mut Github,
        up: (&str, &str),
        head_owner: &str,
        branch: &str,
    ) -> Result<Option<PullRequest>, String> {
        gh.find_pr(up.0, up.1, head_owner, branch).await.map_err(|e| format!("looking for the pull request: {e}"))
    }

    /// The commit on the branch; `Err` for a failed push. An empty change ends the delivery as skipped
    /// (false).
    async fn push(&mut self, upstream: &RepoUrl, target: &RepoUrl, branch: &str) -> Result<bool, String> {
        let r = self.ctx.report;
        let patch = r.final_patch.as_ref().expect("decided");
        let message = self.commit_message();
        // Absolute: git runs in the temporary clone.
        let file = std::path::absolute(self.ctx.attempt_dir.join(patch.file.as_deref().unwrap_or("final.patch")))
            .map_err(|e| format!("the final patch's path: {e}"))?;
        let push = git::Push {
            fetch_url: &upstream.url,
            push_url: &target.url,
            base_commit: patch.base_commit.as_deref().unwrap_or_default(),
            patch: &file,
            branch,
            message: &message,
            author: &self.s.author,
            token: self.s.token.as_deref(),
            deadline: self.deadline,
            expected_tree: patch.tree.as_deref(),
        };
        match git::push(&push).await? {
            git::Pushed::Empty => {
                self.d.reason = Some("the final patch changes nothing on the base commit: nothing pushed".into());
                Ok(false)
            }
            git::Pushed::Commit { commit, .. } => {
                self.d.commit = Some(commit);
                Ok(true)
            }
        }
    }

    fn commit_message(&self) -> String {
        let r = self.ctx.report;
        self.s.commit_message.clone().unwrap_or_else(|| format!("ohrun: {} ({})", r.job.name, r.run.id))
    }

    /// Updates the open pull request, or creates one (one at a time per API host, looked for again once
    /// the lock is held: a run of the same id may have made it meanwhile).
    async fn open_or_update(
        &mut self,
        gh: &mut Github,
        up: (&str, &str),
        head_owner: &str,
        branch: &str,
        found: Option<PullRequest>,
    ) -> Result<(), String> {
        let title = self.title();
        let body = self.body();
        let pr = match found {
            Some(pr) => gh.update_pr(up, pr.number, (&title, &body)).await.map_err(|e| format!("updating: {e}"))?,
            None => {
                let lock = self.ctx.pacing.lock_for(&gh.host());
                let _turn = lock.lock().await;
                match self.found(gh, up, head_owner, branch).await? {
                    Some(pr) => {
                        gh.update_pr(up, pr.number, (&title, &body)).await.map_err(|e| format!("updating: {e}"))?
                    }
                    None => self.create(gh, up, &format!("{head_owner}:{branch}"), (&title, &body)).await?,
                }
            }
        };
        self.record_pr(&pr, self.d.pr_created);
        self.d.status = DeliveryStatus::Delivered;
        // Once, when it is made: a nightly update must not request the reviewers' attention again.
        if self.d.pr_created {
            self.labels_and_reviewers(gh, up, pr.number).await;
        }
        Ok(())
    }

    async fn create(
        &mut self,
        gh: &mut Github,
        up: (&str, &str),
        head: &str,
        text: (&str, &str),
    ) -> Result<PullRequest, String> {
        let base = match &self.s.pull_request.base {
            Some(b) => b.clone(),
            None => gh.default_branch(up.0, up.1).await.map_err(|e| format!("reading the default branch: {e}"))?,
        };
        let draft = self.s.pull_request.mode == PrMode::Draft;
        let created = match gh.create_pr(up, head, &base, text, draft).await {
            Err(GithubError::Status { status: 422, message, .. })
                if draft && message.to_lowercase().contains("draft") =>
            {
                self.d.warnings.push(format!(
                    "the repository does not accept draft pull requests ({message}): opened a ready one"
                ));
                gh.create_pr(up, head, &base, text, false).await
            }
            Err(GithubError::Status { status: 422, message, .. })
                if self.s.base_from_repo && message.to_lowercase().contains("base") =>
            {
                // `repo.ref` was a tag, say: the default branch is the base after all.
                let refused = base;
                let base =
                    gh.default_branch(up.0, up.1).await.map_err(|e| format!("reading the default branch: {e}"))?;
                self.d
                    .warnings
                    .push(format!("base `{refused}` refused ({message}): the pull request is against `{base}`"));
                gh.create_pr(up, head, &base, text, draft).await
            }
            other => other,
        };
        let pr = match created {
            Ok(pr) => pr,
            // GitHub's list lags its creates: one made meanwhile (a run of the same id) is found and updated.
            Err(GithubError::Status { status: 422, message, .. })
                if message.to_lowercase().contains("already exists") =>
            {
                let (head_owner, branch) = head.split_once(':').unwrap_or_default();
                let pr = self.found(gh, up, head_owner, branch).await?.ok_or_else(|| format!("creating: {message}"))?;
                return gh.update_pr(up, pr.number, text).await.map_err(|e| format!("updating: {e}"));
            }
            // No clear answer: it may have been made. Look before anything else (never create blindly).
            Err(e @ GithubError::Unclear { .. }) => {
                let head_owner = head.split(':').next().unwrap_or_default();
                let branch = head.split_once(':').map(|(_, b)| b).unwrap_or_default();
                self.found(gh, up, head_owner, branch).await?.ok_or_else(|| format!("creating: {e}"))?
            }
            Err(e) => return Err(format!("creating: {e}")),
        };
        self.d.pr_created = true;
        Ok(pr)
    }

    /// Labels and reviewers: what fails is a warning (the pull request is there).
    async fn labels_and_reviewers(&mut self, gh: &mut Github, up: (&str, &str), number: u64) {
        let pr = &self.s.pull_request;
        if !pr.labels.is_empty()
            && let Err(e) = gh.add_labels(up, number, &pr.labels).await
        {
            self.d.warnings.push(format!("labels not added: {e}"));
        }
        if !pr.reviewers.is_empty()
            && let Err(e) = gh.request_reviewers(up, number, &pr.reviewers).await
        {
            self.d.warnings.push(format!("reviewers not requested: {e}"));
        }
    }

    fn record_pr(&mut self, pr: &PullRequest, created: bool) {
        self.d.pr_number = Some(pr.number);
        self.d.pr_url = Some(pr.url.clone());
        self.d.pr_state = Some(pr.state.clone());
        self.d.pr_created = created;
    }

    fn title(&self) -> String {
        let fallback = || self.commit_message().lines().next().unwrap_or_default().to_string();
        self.s.pull_request.title.clone().unwrap_or_else(fallback)
    }

    fn body(&self) -> String {
        let r = self.ctx.report;
        let mut body = match &self.s.pull_request.body {
            Some(b) => b.clone(),
            None => summary::default_body(r),
        };
        body.push_str(&format!("\n\n<sub>ohrun run `{}` · job `{}`</sub>\n", r.run.id, r.job.name));
        crate::report::redact::apply(&body).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls() {
        let r = RepoUrl::parse("https://github.com/acme/tools.git").unwrap();
        assert_eq!((r.owner.as_str(), r.name.as_str()), ("acme", "tools"));
        assert_eq!(r.fork("me").url, "https://github.com/me/tools.git");
        let r = RepoUrl::parse("http://127.0.0.1:9/git/acme/tools").unwrap();
        assert_eq!(r.fork("me").url, "http://127.0.0.1:9/git/me/tools");
        assert!(RepoUrl::parse("https://x:y@github.com/a/b").is_err());
        assert!(RepoUrl::parse("git@github.com:a/b.git").is_err());
        assert!(RepoUrl::parse("https://github.com/a").is_err());
    }
}
