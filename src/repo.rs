//! `repo:` on ohrun's side of the wire: the repository is cloned by the host's `git` into a private
//! temporary directory (the token only in that process's environment, as an `http.extraHeader`: never in
//! its arguments, the clone's `.git/config` or the sandbox), `ref` resolved to the base commit, then the
//! working tree with its `.git` is shipped to the sandbox as ONE archive — uploaded through the
//! agent-server's file API and unpacked by one shell command — not file by file.

use crate::agent::http::AgentClient;
use crate::agent::setup::{run_command, shell_quote};
use crate::cancel::Cancel;
use crate::report::redact;
use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The repository a run starts from (`repo:`).
#[derive(Clone, Debug)]
pub struct RepoSettings {
    pub url: String,
    pub git_ref: Option<String>,
    pub depth: Option<u32>,
    /// Registered with the redactor; only ever in the environment of ohrun's own `git`.
    pub token: Option<String>,
    pub timeout: std::time::Duration,
}

/// A clone on this machine, removed when dropped.
pub struct Cloned {
    _temp: tempfile::TempDir,
    pub dir: PathBuf,
    pub base_commit: String,
}

/// Why a clone or its copy failed, already redacted.
#[derive(Debug)]
pub enum Error {
    Failed(String),
    Interrupted,
}

/// Clones `repo` and checks out its `ref`; bounded by `repo.timeout` and `cancel`.
pub async fn clone(repo: &RepoSettings, cancel: &Cancel) -> Result<Cloned, Error> {
    let temp = tempfile::Builder::new()
        .prefix("ohrun-repo-")
        .tempdir()
        .map_err(|e| Error::Failed(format!("cannot make a temporary directory: {e}")))?;
    private(temp.path()).map_err(|e| Error::Failed(format!("cannot make the clone's directory private: {e}")))?;
    let dir = temp.path().join("repo");
    let git = Git { env: auth_env(repo.token.as_deref()), dir: dir.clone() };
    let work = async {
        checkout(&git, repo).await?;
        git.run(&["rev-parse", "HEAD"], true).await.map(|out| out.trim().to_string())
    };
    let mut cancel = cancel.clone();
    let base_commit = tokio::select! {
        r = tokio::time::timeout(repo.timeout, work) => r.map_err(|_| {
            Error::Failed(format!("the clone took longer than {}s (`repo.timeout`)", repo.timeout.as_secs()))
        })??,
        _ = cancel.wait() => return Err(Error::Interrupted),
    };
    Ok(Cloned { _temp: temp, dir, base_commit })
}

/// The working tree at `ref`: a branch or tag by `clone --branch`, a commit by fetching it.
async fn checkout(git: &Git, repo: &RepoSettings) -> Result<(), Error> {
    let depth = repo.depth.map(|d| format!("--depth={d}"));
    let target = git.dir.display().to_string();
    let mut args: Vec<&str> = vec!["clone", "--quiet"];
    args.extend(depth.as_deref());
    let commit = repo.git_ref.as_deref().filter(|r| is_full_sha(r));
    match (&repo.git_ref, commit) {
        (_, Some(_)) => args.push("--no-checkout"),
        (Some(r), None) => args.extend(["--branch", r.as_str()]),
        (None, None) => {}
    }
    args.extend(["--", repo.url.as_str(), target.as_str()]);
    git.run(&args, false).await?;
    let Some(sha) = commit else { return Ok(()) };
    let wanted = format!("{sha}^{{commit}}");
    if git.run(&["cat-file", "-e", &wanted], true).await.is_err() {
        let mut fetch = vec!["fetch", "--quiet"];
        fetch.extend(depth.as_deref());
        fetch.extend(["origin", sha]);
        git.run(&fetch, true).await?;
    }
    git.run(&["checkout", "--quiet", "--detach", sha], true).await.map(|_| ())
}

pub fn is_full_sha(r: &str) -> bool {
    matches!(r.len(), 40 | 64) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The token as HTTP Basic credentials (`x-access-token:TOKEN`, base64), as GitHub takes it from git.
/// Registered with the redactor: the header's value is what goes on the wire, so a leak of it is a leak
/// of the token.
pub fn basic_credentials(token: &str) -> String {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    redact::register(&basic);
    basic
}

/// Takes out of a git command's environment every `GIT_*` variable ohrun inherited: `GIT_DIR` or
/// `GIT_WORK_TREE` would point it at the user's own repository, `GIT_TRACE_CURL` would log the token's
/// header, `GIT_CONFIG_*` would add to or override ohrun's own settings.
pub fn scrub_git_env(cmd: &mut tokio::process::Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("GIT_")) {
            cmd.env_remove(&name);
        }
    }
}

/// The token as git's `http.extraHeader` through `GIT_CONFIG_*` (environment only: a process listing
/// or the clone's config never shows it); without a token, no header. Never follow a redirect with it.
fn auth_env(token: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![("GIT_TERMINAL_PROMPT".to_string(), "0".to_string())];
    let Some(token) = token else { return env };
    let basic = basic_credentials(token);
    env.extend([
        ("GIT_CONFIG_COUNT".into(), "2".into()),
        ("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into()),
        ("GIT_CONFIG_VALUE_0".into(), format!("Authorization: Basic {basic}")),
        ("GIT_CONFIG_KEY_1".into(), "http.followRedirects".into()),
        ("GIT_CONFIG_VALUE_1".into(), "false".into()),
    ]);
    env
}

struct Git {
    env: Vec<(String, String)>,
    dir: PathBuf,
}

impl Git {
    /// Runs `git ARGS` (in the clone when `inside`); its stdout, or its stderr's last lines, redacted.
    async fn run(&self, args: &[&str], inside: bool) -> Result<String, Error> {
        let mut cmd = tokio::process::Command::new("git");
        if inside {
            cmd.arg("-C").arg(&self.dir);
        }
        scrub_git_env(&mut cmd);
        cmd.args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = cmd.output().await.map_err(|e| Error::Failed(format!("cannot run git: {e}")))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = redact::apply(&stderr);
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
        Err(Error::Failed(format!("`git {}` failed: {tail}", args.first().copied().unwrap_or(""))))
    }
}

fn private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The clone (its `.git` included) as one gzipped tar archive: its top-level entries, not `.` (whose
/// private mode and owner the sandbox's working directory must not take).
pub async fn archive(dir: &Path) -> Result<Vec<u8>, Error> {
    let listed = std::fs::read_dir(dir).map_err(|e| Error::Failed(format!("cannot read the clone: {e}")))?;
    let mut names: Vec<std::ffi::OsString> = listed.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    names.sort();
    let out = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["-czf", "-", "--"])
        .args(&names)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::Failed(format!("cannot run tar: {e}")))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Failed(format!("archiving the clone failed: {}", redact::apply(why.trim()))));
    }
    Ok(out.stdout)
}

/// Uploads `archive` and unpacks it into `working_dir` with one command (owned by the server's user).
pub async fn ship(client: &AgentClient, archive: Vec<u8>, working_dir: &str, cancel: &Cancel) -> Result<(), Error> {
    let remote = format!("/tmp/ohrun-repo-{}.tar.gz", uuid::Uuid::new_v4().simple());
    client.upload_file(&remote, archive).await.map_err(|e| Error::Failed(format!("cannot copy the clone in: {e}")))?;
    let unpack = format!(
        "mkdir -p {wd} && tar -xzf {a} -C {wd} --no-same-owner --no-overwrite-dir -m; s=$?; rm -f {a}; exit $s",
        wd = shell_quote(working_dir),
        a = shell_quote(&remote)
    );
    let mut cancel = cancel.clone();
    match run_command(client, &unpack, "/", Duration::from_secs(600), &mut cancel).await {
        Ok(out) if out.exit_code == 0 => Ok(()),
        Ok(out) => Err(Error::Failed(format!(
            "unpacking the clone in the sandbox exited with {}: {}",
            out.exit_code,
            redact::apply(out.stderr.trim())
        ))),
        Err((_, crate::agent::Error::Interrupted)) => Err(Error::Interrupted),
        Err((_, e)) => Err(Error::Failed(format!("unpacking the clone in the sandbox failed: {e}"))),
    }
}

/// `url` without user name, password, query or fragment: what reports show.
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.scheme() != "file" || u.has_host() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}
