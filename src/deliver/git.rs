//! The host-side push: a private temporary clone (0700) of the repository at the run's base commit, the
//! final patch applied and committed, force-pushed to ohrun's own branch. The sandbox is never involved,
//! so the token never enters it. The token travels only as an `http.<origin>.extraHeader` set through
//! `GIT_CONFIG_*` environment variables: never in an argument (visible in `ps`), a URL (kept in git's
//! messages) or a config file. Every git command is bounded by the delivery's deadline and sees no user or
//! system configuration (no credential helper, no hooks, no prompt).

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

/// A commit's author and committer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Author {
    pub fn ohrun() -> Author {
        Author { name: "ohrun".into(), email: "ohrun@users.noreply.github.com".into() }
    }

    /// `Name <email>`.
    pub fn parse(text: &str) -> Option<Author> {
        let (name, rest) = text.split_once('<')?;
        let email = rest.strip_suffix('>')?.trim();
        let name = name.trim();
        (!name.is_empty() && email.contains('@') && !email.contains(['<', '>', '\n']))
            .then(|| Author { name: name.to_string(), email: email.to_string() })
    }
}

/// What to push, and where.
pub struct Push<'a> {
    /// Where the base commit is fetched from (the upstream).
    pub fetch_url: &'a str,
    /// Where the branch goes (the upstream, or the fork).
    pub push_url: &'a str,
    pub base_commit: &'a str,
    pub patch: &'a Path,
    pub branch: &'a str,
    pub message: &'a str,
    pub author: &'a Author,
    pub token: Option<&'a str>,
    pub deadline: Instant,
    /// The sandbox's final tree: a commit whose tree differs is never pushed.
    pub expected_tree: Option<&'a str>,
}

/// What was pushed.
#[derive(Debug)]
pub enum Pushed {
    /// The commit and its tree.
    Commit { commit: String, tree: String },
    /// The patch changes nothing: nothing was pushed.
    Empty,
}

/// Clone, apply, commit, push. The error is git's own message (redacted), with what ohrun was doing.
pub async fn push(p: &Push<'_>) -> Result<Pushed, String> {
    let dir =
        tempfile::Builder::new().prefix("ohrun-deliver-").tempdir().map_err(|e| format!("a temporary clone: {e}"))?;
    let git = Git { dir: dir.path(), push: p };
    git.run("initialising the clone", &["init", "-q", "."]).await?;
    git.fetch_base().await?;
    git.run("checking out the base commit", &["checkout", "-q", "--detach", p.base_commit]).await?;
    let patch = p.patch.to_str().ok_or("the patch's path is not UTF-8")?;
    git.run("applying the final patch", &["apply", "--index", "--binary", "--whitespace=nowarn", patch]).await?;
    if git.run("comparing with the base", &["diff", "--cached", "--quiet"]).await.is_ok() {
        return Ok(Pushed::Empty);
    }
    git.run("committing", &["commit", "-q", "--no-verify", "--allow-empty-message", "-m", p.message]).await?;
    let commit = git.run("reading the commit", &["rev-parse", "HEAD"]).await?;
    let tree = git.run("reading the tree", &["rev-parse", "HEAD^{tree}"]).await?;
    if let Some(expected) = p.expected_tree.filter(|t| *t != tree) {
        return Err(format!(
            "the patch on the base commit gives tree {tree}, not the sandbox's final tree {expected}: nothing pushed"
        ));
    }
    let refspec = format!("+HEAD:refs/heads/{}", p.branch);
    git.run("pushing the branch", &["push", "-q", "--no-verify", p.push_url, &refspec]).await?;
    Ok(Pushed::Commit { commit, tree })
}

struct Git<'a> {
    dir: &'a Path,
    push: &'a Push<'a>,
}

impl Git<'_> {
    /// Only the base commit (shallow); a server that refuses to fetch a commit by id gets a full fetch.
    async fn fetch_base(&self) -> Result<(), String> {
        let url = self.push.fetch_url;
        // A push to a fork needs the base's history: the fork may lack it, and a shallow clone cannot send it.
        let depth = if self.push.push_url == url { "--depth=1" } else { "--no-tags" };
        let by_id = ["fetch", "-q", "--no-tags", depth, url, self.push.base_commit];
        if self.run("fetching the base commit", &by_id).await.is_ok() {
            return Ok(());
        }
        let all = ["fetch", "-q", "--no-tags", url, "+refs/heads/*:refs/remotes/origin/*"];
        self.run("fetching the repository", &all).await?;
        let object = format!("{}^{{commit}}", self.push.base_commit);
        self.run("finding the base commit", &["cat-file", "-e", &object]).await.map(drop).map_err(|_| {
            format!(
                "the base commit {} is not in {url}: the run did not start from that repository",
                self.push.base_commit
            )
        })
    }

    /// One git command in the clone; its trimmed stdout.
    async fn run(&self, doing: &str, args: &[&str]) -> Result<String, String> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("-C").arg(self.dir).args(args).kill_on_drop(true);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        isolate(&mut cmd, self.dir, self.push);
        let left = self.push.deadline.saturating_duration_since(Instant::now());
        let out = match tokio::time::timeout(left, cmd.output()).await {
            Err(_) => return Err(format!("{doing}: git took longer than the delivery's timeout")),
            Ok(Err(e)) => return Err(format!("{doing}: cannot run git: {e}")),
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = crate::report::redact::apply(stderr.trim()).into_owned();
        Err(format!("{doing}: git {} failed: {}", args[0], crate::report::redact::cut(&said, 600)))
    }
}

/// No user or system configuration, no prompt, no redirect, the author, and the token as a header for
/// the push URL's origin only.
fn isolate(cmd: &mut tokio::process::Command, home: &Path, p: &Push<'_>) {
    crate::repo::scrub_git_env(cmd);
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env("SSH_ASKPASS", "")
        .env("GIT_AUTHOR_NAME", &p.author.name)
        .env("GIT_AUTHOR_EMAIL", &p.author.email)
        .env("GIT_COMMITTER_NAME", &p.author.name)
        .env("GIT_COMMITTER_EMAIL", &p.author.email);
    let mut config: Vec<(String, String)> = vec![
        ("http.followRedirects".into(), "false".into()),
        ("credential.helper".into(), String::new()),
        ("core.hooksPath".into(), "/dev/null".into()),
        ("protocol.file.allow".into(), "never".into()),
    ];
    if let Some(token) = p.token {
        let basic = crate::repo::basic_credentials(token);
        for origin in origins(&[p.fetch_url, p.push_url]) {
            config.push((format!("http.{origin}/.extraHeader"), format!("Authorization: Basic {basic}")));
        }
    }
    cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
    for (i, (k, v)) in config.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), k).env(format!("GIT_CONFIG_VALUE_{i}"), v);
    }
}

/// The distinct origins (`scheme://host:port`) of the URLs.
fn origins(urls: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in urls.iter().filter_map(|u| reqwest::Url::parse(u).ok()) {
        let origin = u.origin().ascii_serialization();
        if !out.contains(&origin) {
            out.push(origin);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_and_origins() {
        assert_eq!(
            Author::parse("Fix Bot <bot@x.org>"),
            Some(Author { name: "Fix Bot".into(), email: "bot@x.org".into() })
        );
        assert_eq!(Author::parse("bot@x.org"), None);
        assert_eq!(Author::parse("<bot@x.org>"), None);
        let o = origins(&["https://github.com/a/b.git", "https://github.com/c/b.git", "http://127.0.0.1:9/x"]);
        assert_eq!(o, vec!["https://github.com".to_string(), "http://127.0.0.1:9".to_string()]);
    }
}
