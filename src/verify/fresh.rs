//! A fresh sandbox to verify in (`verify.mode: fresh`, and every `ohrun verify` regrade): a new sandbox of
//! the run's kind and settings, set up again, put at the commit the run started from, with the run's final
//! patch (or a reference patch, or none) applied. Nothing the agent did outside its working directory's
//! files — a replaced tool, a background process, a pre-written result — is there.

use super::Target;
use crate::agent::setup::{run_command, run_setup, shell_quote};
use crate::backend::{self, Backend, Ready};
use crate::cancel::Cancel;
use std::path::Path;
use std::time::{Duration, Instant};

/// Where the fresh sandbox is made, and what it is told.
pub struct Place<'a> {
    pub run_id: &'a str,
    pub job: &'a str,
    /// Its report directory (a local server's workspace and log go there).
    pub dir: &'a Path,
    pub hide_env: &'a [String],
    pub deadline: Option<Instant>,
    pub cancel: Cancel,
    pub progress: &'a (dyn Fn(&str) + Sync),
    pub ledger: &'a crate::ledger::Slot,
    /// The sandbox would be the run's own working directory (a remote server, a local one with a set
    /// `working_dir`): the fresh one is a new directory beside it ([`relocates`]).
    pub relocate: bool,
}

/// Whether a fresh sandbox of this kind would reuse the run's working directory: a remote server is the
/// same server, and a local server given a `working_dir` works in that very directory. Verifying there
/// would neither be fresh nor leave the user's directory alone.
pub fn relocates(sandbox: &crate::job::model::Sandbox) -> bool {
    use crate::job::model::Sandbox;
    match sandbox {
        Sandbox::Remote(_) => true,
        Sandbox::Local(l) => l.working_dir.is_some(),
        _ => false,
    }
}

/// Provisions the fresh sandbox.
pub async fn provision(backend: &mut dyn Backend, place: &Place<'_>) -> Result<Ready, backend::Error> {
    crate::report::writer::create_dir(place.dir)
        .map_err(|e| backend::Error::failed(format!("cannot create {}: {e}", place.dir.display())))?;
    let recorded = |_| {};
    let ctx = backend::Context {
        run_id: place.run_id,
        job: place.job,
        report_dir: place.dir,
        hide_env: place.hide_env,
        run_deadline: place.deadline,
        cancel: place.cancel.clone(),
        progress: place.progress,
        ledger: place.ledger,
        recorded: &recorded,
    };
    let mut ready = backend.provision(&ctx).await?;
    if place.relocate {
        let short = uuid::Uuid::new_v4().simple().to_string();
        ready.working_dir = format!("{}.ohrun-verify-{}", ready.working_dir.trim_end_matches('/'), &short[..8]);
    }
    Ok(ready)
}

/// The commit the run started from and its tree (`PatchInfo.base_commit`, `base_tree`).
pub type Base = (Option<String>, Option<String>);

/// The fresh working directory made and set up; then, for a run's own final patch (`base` given: it was
/// taken against the base commit, setup's changes included), put back at the base commit; then `patch`
/// applied (empty: nothing). Without `base` (a reference patch, or none) the set-up tree is kept, as the
/// agent would have found it.
pub async fn prepare(
    target: &Target<'_>,
    settings: &crate::settings::RunSettings,
    base: Option<&Base>,
    patch: &[u8],
    cancel: &mut Cancel,
) -> Result<(), String> {
    let wd = target.working_dir;
    let mkdir = format!("mkdir -p {}", shell_quote(wd));
    run_command(target.client, &mkdir, "/", Duration::from_secs(60), cancel).await.map_err(|(_, e)| e.to_string())?;
    // The run's repository first, as the run had it (`repo:`), then its setup.
    if let Some(repo) = &settings.repo {
        let shipped = async {
            let cloned = crate::repo::clone(repo, cancel).await?;
            let archive = crate::repo::archive(&cloned.dir).await?;
            crate::repo::ship(target.client, archive, wd, cancel).await
        };
        shipped.await.map_err(|e| match e {
            crate::repo::Error::Failed(why) => format!("cloning the repository into the fresh sandbox failed: {why}"),
            crate::repo::Error::Interrupted => "interrupted while cloning the repository".to_string(),
        })?;
    }
    let done = run_setup(target.client, &settings.setup, wd, cancel, &mut |_| {}).await;
    if let Some(e) = done.error {
        return Err(format!("setup in the fresh sandbox failed: {e}"));
    }
    if let Some(f) = done.failed() {
        return Err(format!("setup command `{}` exited with {} in the fresh sandbox", f.command, f.exit_code));
    }
    match base {
        None => {}
        Some((Some(commit), tree)) => at_base(target, commit, tree.as_deref(), cancel).await?,
        // A repository without a commit: the patch holds every file, so what setup made goes first.
        Some((None, _)) => {
            let clean = "unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE; git rev-parse -q --is-inside-work-tree >/dev/null 2>&1 && git clean -fdq; true";
            let _ = run_command(target.client, clean, wd, Duration::from_secs(120), cancel).await;
        }
    }
    if patch.is_empty() {
        return Ok(());
    }
    let remote = format!("/tmp/ohrun-final-{}.patch", uuid::Uuid::new_v4().simple());
    target.client.upload_file(&remote, patch.to_vec()).await.map_err(|e| format!("cannot copy the patch in: {e}"))?;
    let apply =
        format!("git apply --binary --whitespace=nowarn {r}; s=$?; rm -f {r}; exit $s", r = shell_quote(&remote));
    let out = run_command(target.client, &apply, wd, Duration::from_secs(300), cancel)
        .await
        .map_err(|(_, e)| e.to_string())?;
    if out.exit_code != 0 {
        return Err(format!("the patch does not apply in the fresh sandbox: {}", out.stderr.trim()));
    }
    Ok(())
}

/// The working tree exactly at the base commit, as the patch expects it: what setup changed or added
/// (and the patch holds, as it was taken relative to the base) is undone; files git ignores (a tool setup
/// built) stay. At the base commit; else checked out at it; else — a setup from scratch that made the same
/// tree under another commit — at that commit all the same.
async fn at_base(target: &Target<'_>, commit: &str, tree: Option<&str>, cancel: &mut Cancel) -> Result<(), String> {
    let script = format!(
        "unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE; \
         {{ [ \"$(git rev-parse -q --verify HEAD)\" = {b} ] && git reset -q --hard; }} || \
         {{ git cat-file -e {b}^{{commit}} 2>/dev/null && git checkout -q -f --detach {b}; }} || \
         {{ [ -n {t} ] && [ \"$(git rev-parse -q --verify 'HEAD^{{tree}}')\" = {t} ] && git reset -q --hard; }} || \
         {{ echo \"the base commit is not in this repository and HEAD's tree differs\" >&2; exit 1; }}; \
         git clean -fdq",
        b = shell_quote(commit),
        t = shell_quote(tree.unwrap_or(""))
    );
    let out = run_command(target.client, &script, target.working_dir, Duration::from_secs(120), cancel)
        .await
        .map_err(|(_, e)| e.to_string())?;
    if out.exit_code != 0 {
        return Err(format!("the fresh sandbox cannot be put at the base commit {commit}: {}", out.stderr.trim()));
    }
    Ok(())
}

/// A relocated fresh working directory is removed afterwards (the sandbox itself stays).
pub async fn remove_dir(target: &Target<'_>) {
    let rm = format!("rm -rf {}", shell_quote(target.working_dir));
    let _ = run_command(target.client, &rm, "/", Duration::from_secs(60), &mut Cancel::never()).await;
}
