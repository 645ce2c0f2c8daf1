//! Checks that need the whole typed job (or the file system), each pointing back at its key.

use super::model::{AgentSpec, JobSpec, Message, Sandbox};
use super::parse::Document;
use super::source::{Path, Seg, key as k};
use super::values::{EnvString, HumanDuration, is_env_name};
use crate::diagnostic::Diagnostic;
use std::path::Path as FsPath;

fn path(parts: &[Seg]) -> Path {
    parts.to_vec()
}

/// What a batch directory holds beside its runs' folders: no run may be named like one.
const BATCH_FILES: [&str; 5] = ["report.html", "summary.json", "junit.xml", "batch.json", "compare.html"];

/// The most trials of one run.
const MAX_REPEAT: u32 = 1000;

/// A job name becomes part of file names and run ids: a run's folder is named after it, so a name that
/// starts with a dot (`.`, `..`, a hidden folder) would put the run on the batch's own files or above them.
pub fn check_name(name: &str, doc: &Document) -> Option<Diagnostic> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !BATCH_FILES.contains(&name.to_ascii_lowercase().as_str());
    (!ok).then(|| {
        Diagnostic::new(format!("`{name}` is not a valid job name"))
            .at(doc.span(&[k("name")]))
            .hint("use letters, digits, `-`, `_` and `.` only, not starting with `.` nor the name of a batch file (`report.html`, `summary.json`, …), e.g. `name: fix-flaky-tests`")
    })
}

/// The job file's directory, and what was found in it so far: every run of a plan names the same message,
/// check and rehearsal files, so each is looked up once per job file, not once per run.
pub struct JobDir<'p> {
    path: &'p FsPath,
    /// Relative path → (exists, is a file); shared by the threads that make a plan's runs.
    found: std::sync::Mutex<std::collections::HashMap<String, (bool, bool)>>,
}

impl<'p> JobDir<'p> {
    pub fn new(path: &'p FsPath) -> JobDir<'p> {
        JobDir { path, found: Default::default() }
    }

    fn look(&self, relative: &str) -> (bool, bool) {
        let mut found = self.found.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *found.entry(relative.to_string()).or_insert_with(|| {
            let meta = std::fs::metadata(self.path.join(relative));
            (meta.is_ok(), meta.is_ok_and(|m| m.is_file()))
        })
    }

    fn is_file(&self, relative: &str) -> bool {
        self.look(relative).1
    }

    fn exists(&self, relative: &str) -> bool {
        self.look(relative).0
    }
}

pub fn check(spec: &JobSpec, job_dir: &JobDir, doc: &Document) -> Vec<Diagnostic> {
    let mut c = Checker { doc, out: Vec::new(), durations: Vec::new(), env_strings: Vec::new() };
    c.steps(spec, job_dir);
    c.setup(spec);
    c.sandbox(&spec.sandbox);
    c.llm_and_agent(spec);
    c.limits_report_secrets(spec, job_dir);
    c.verify(spec, job_dir);
    c.repo_and_artifacts(spec);
    c.deliver(spec);
    c.finish()
}

/// Collects problems, and the durations and `${VAR}` strings to check once at the end.
struct Checker<'d, 's> {
    doc: &'d Document,
    out: Vec<Diagnostic>,
    durations: Vec<(Path, HumanDuration)>,
    env_strings: Vec<(Path, &'s EnvString)>,
}

impl<'s> Checker<'_, 's> {
    fn at(&mut self, p: Path, message: String, hint: &str) {
        self.out.push(Diagnostic::new(message).at(self.doc.span(&p)).hint(hint.to_string()));
    }

    fn env(&mut self, p: Path, s: &'s EnvString) {
        self.env_strings.push((p, s));
    }

    fn steps(&mut self, spec: &'s JobSpec, job_dir: &JobDir) {
        if spec.steps.is_empty() {
            self.at(path(&[k("steps")]), "a job needs at least one step".into(), "add `- message: ...` under `steps:`");
        }
        for (i, step) in spec.steps.iter().enumerate() {
            let sp = |key: &str| path(&[k("steps"), Seg::Index(i), k(key)]);
            self.durations.push((sp("timeout"), step.timeout));
            match &step.message {
                Message::Inline(text) if text.trim().is_empty() => self.at(
                    sp("message"),
                    format!("step {} has an empty message", i + 1),
                    "write what the agent should do",
                ),
                Message::File { file } if !job_dir.is_file(file) => self.at(
                    path(&[k("steps"), Seg::Index(i), k("message"), k("file")]),
                    format!("message file `{file}` does not exist"),
                    "paths are relative to the job file's directory",
                ),
                _ => {}
            }
        }
    }

    /// `verify:`, every step's `checks:` and `repeat`.
    fn verify(&mut self, spec: &'s JobSpec, job_dir: &JobDir) {
        if spec.repeat == 0 || spec.repeat > MAX_REPEAT {
            self.at(path(&[k("repeat")]), format!("`repeat: {}` is out of range", spec.repeat), "use 1 to 1000 trials");
        }
        if let Some(v) = &spec.verify {
            if v.checks.is_empty() {
                self.at(
                    path(&[k("verify"), k("checks")]),
                    "`verify` has no checks".into(),
                    "add `- name: …` with `run:` or `judge:`",
                );
            }
            if let Some(files) = &v.files
                && !job_dir.exists(files)
            {
                self.at(
                    path(&[k("verify"), k("files")]),
                    format!("`verify.files` {files} does not exist"),
                    "paths are relative to the job file's directory",
                );
            }
            self.checks(&[k("verify"), k("checks")], &v.checks);
        }
        for (i, step) in spec.steps.iter().enumerate() {
            self.checks(&[k("steps"), Seg::Index(i), k("checks")], &step.checks);
        }
    }

    /// `repo:` (its URL: https, or http only to loopback; a token never over plain http to a far host)
    /// and `artifacts:` (relative globs that stay in the working directory).
    fn repo_and_artifacts(&mut self, spec: &'s JobSpec) {
        if let Some(repo) = &spec.repo {
            self.env(path(&[k("repo"), k("url")]), &repo.url);
            self.durations.push((path(&[k("repo"), k("timeout")]), repo.timeout));
            // A URL with `${VAR}`s is checked again once they are expanded (`settings::repo_settings`).
            if repo.url.var_names().is_empty()
                && let Some(problem) = super::repo::url_problem(&repo.url.0, repo.token.is_some())
            {
                self.at(
                    path(&[k("repo"), k("url")]),
                    problem,
                    "use `https://…` (or `http://127.0.0.1…` for a server on this machine)",
                );
            }
            if repo.git_ref.as_deref().is_some_and(|r| r.trim().is_empty() || r.starts_with('-')) {
                self.at(
                    path(&[k("repo"), k("ref")]),
                    "`repo.ref` must name a branch, a tag or a commit".into(),
                    "e.g. `ref: main`, `ref: v1.2.0` or a full commit sha; leave it out for the default branch",
                );
            }
            if repo.depth == Some(0) {
                self.at(
                    path(&[k("repo"), k("depth")]),
                    "`repo.depth: 0` clones nothing".into(),
                    "use 1 or more, or leave it out for the whole history",
                );
            }
        }
        for (i, a) in spec.artifacts.iter().enumerate() {
            let glob = a.path();
            let bad = glob.trim().is_empty()
                || glob.starts_with('/')
                || glob.split('/').any(|part| part == "..")
                || glob.contains(['\'', '\n', '\0']);
            if bad {
                let at = match a {
                    super::repo::ArtifactSpec::Glob(_) => path(&[k("artifacts"), Seg::Index(i)]),
                    super::repo::ArtifactSpec::Entry(_) => path(&[k("artifacts"), Seg::Index(i), k("path")]),
                };
                self.at(
                    at,
                    format!(
                        "artifact pattern `{glob}` is empty, absolute, leaves the working directory or holds a quote"
                    ),
                    "write a glob relative to the working directory, e.g. `dist/**` or `logs/*.log`",
                );
            }
        }
    }

    fn checks(&mut self, base: &[Seg], checks: &'s [crate::job::checks::CheckSpec]) {
        let mut names = std::collections::HashSet::new();
        for (i, c) in checks.iter().enumerate() {
            let at = |key: &str| -> Path { base.iter().cloned().chain([Seg::Index(i), k(key)]).collect() };
            let whole: Path = base.iter().cloned().chain([Seg::Index(i)]).collect();
            self.durations.push((at("timeout"), c.timeout));
            if !names.insert(c.name.as_str()) || c.name.trim().is_empty() {
                self.at(
                    at("name"),
                    format!("check name `{}` is empty or used twice", c.name),
                    "give each check a name of its own",
                );
            }
            match (&c.run, &c.judge) {
                (Some(_), Some(_)) | (None, None) => self.at(
                    whole,
                    format!("check `{}` needs exactly one of `run` and `judge`", c.name),
                    "`run: <command>` checks by exit code (or reward.json); `judge: {criteria: […]}` asks an LLM",
                ),
                (None, Some(j)) if j.criteria.is_empty() => self.at(
                    at("judge"),
                    format!("judge `{}` has no criteria", c.name),
                    "list what must hold, one sentence each, under `criteria:`",
                ),
                _ => {}
            }
            if !(c.weight.is_finite() && c.weight >= 0.0) {
                self.at(
                    at("weight"),
                    format!("weight {} is not a number ≥ 0", c.weight),
                    "weights are relative, e.g. 1 or 2",
                );
            }
            if !(0.0..=1.0).contains(&c.threshold) {
                self.at(at("threshold"), format!("threshold {} is outside 0–1", c.threshold), "a check's value is 0–1");
            }
            self.env_map(&at("env"), &c.env);
        }
    }

    fn setup(&mut self, spec: &'s JobSpec) {
        for (i, cmd) in spec.setup.iter().enumerate() {
            let sp = |key: &str| path(&[k("setup"), Seg::Index(i), k(key)]);
            self.durations.push((sp("timeout"), cmd.timeout));
            if cmd.run.trim().is_empty() {
                self.at(
                    path(&[k("setup"), Seg::Index(i)]),
                    format!("setup command {} is empty", i + 1),
                    "remove it or write a command",
                );
            }
            if let Some(cwd) = &cmd.cwd {
                self.env(sp("cwd"), cwd);
            }
            self.env_map(&sp("env"), &cmd.env);
        }
    }

    fn sandbox(&mut self, sandbox: &'s Sandbox) {
        let sb = |key: &str| path(&[k("sandbox"), k(key)]);
        match sandbox {
            Sandbox::Cloud(c) => {
                self.durations.extend([(sb("init_timeout"), c.init_timeout), (sb("api_timeout"), c.api_timeout)]);
                self.env(sb("api_url"), &c.api_url);
                self.env(sb("working_dir"), &c.working_dir);
                if let Some(s) = &c.sandbox_spec_id {
                    self.env(sb("sandbox_spec_id"), s);
                }
            }
            Sandbox::Runtime(r) => self.runtime(r),
            Sandbox::Docker(d) => self.docker(d),
            Sandbox::Local(l) => {
                self.durations.push((sb("init_timeout"), l.init_timeout));
                self.env_map(&path(&[k("sandbox"), k("env")]), &l.env);
                if let Some(w) = &l.working_dir {
                    self.env(sb("working_dir"), w);
                }
                match &l.command {
                    Some(c) if c.is_empty() => self.at(
                        sb("command"),
                        "`command` is empty".into(),
                        "remove it to let ohrun manage the agent-server, or name the program",
                    ),
                    Some(c) => self.env_list(&[k("sandbox"), k("command")], c),
                    None => {}
                }
            }
            Sandbox::Remote(r) => {
                self.durations.push((sb("api_timeout"), r.api_timeout));
                self.env(sb("url"), &r.url);
                self.env(sb("working_dir"), &r.working_dir);
            }
        }
    }

    /// An `env:` map: its keys become variable names in a shell, its values may refer to ohrun's environment.
    fn env_map(&mut self, base: &Path, map: &'s indexmap::IndexMap<String, EnvString>) {
        for (name, v) in map {
            let at: Path = base.iter().cloned().chain([k(name)]).collect();
            if !is_env_name(name) {
                self.out.push(
                    Diagnostic::new(format!("`{name}` is not an environment variable name"))
                        .at(self.doc.map.key_span(&at))
                        .hint("use letters, digits and `_`, not starting with a digit"),
                );
            }
            self.env(at, v);
        }
    }

    fn env_list(&mut self, base: &[Seg], items: &'s [EnvString]) {
        for (i, item) in items.iter().enumerate() {
            self.env(base.iter().cloned().chain([Seg::Index(i)]).collect(), item);
        }
    }

    fn runtime(&mut self, r: &'s super::model::RuntimeSandbox) {
        let sb = |key: &str| path(&[k("sandbox"), k(key)]);
        self.durations.extend([(sb("init_timeout"), r.init_timeout), (sb("api_timeout"), r.api_timeout)]);
        for (key, v) in [
            ("image", Some(&r.image)),
            ("session_id", r.session_id.as_ref()),
            ("runtime_class", r.runtime_class.as_ref()),
        ] {
            if let Some(v) = v {
                self.env(sb(key), v);
            }
        }
        self.env(sb("api_url"), &r.api_url);
        self.env(sb("working_dir"), &r.working_dir);
        if ![1, 2, 4, 8].contains(&r.resource_factor) {
            self.at(
                sb("resource_factor"),
                format!("resource_factor {} is not supported", r.resource_factor),
                "use 1, 2, 4 or 8",
            );
        }
        self.env_names(&[k("sandbox"), k("forward_env")], &r.forward_env);
    }

    fn docker(&mut self, d: &'s super::model::DockerSandbox) {
        let sb = |key: &str| path(&[k("sandbox"), k(key)]);
        self.durations.push((sb("init_timeout"), d.init_timeout));
        self.env(sb("working_dir"), &d.working_dir);
        for (key, v) in
            [("image", d.image.as_ref()), ("platform", d.platform.as_ref()), ("network", d.network.as_ref())]
        {
            if let Some(v) = v {
                self.env(sb(key), v);
            }
        }
        if let Some(c) = &d.command {
            self.env_list(&[k("sandbox"), k("command")], c);
        }
        self.env_map(&path(&[k("sandbox"), k("env")]), &d.env);
        for (i, m) in d.mounts.iter().enumerate() {
            let mp = |key: &str| path(&[k("sandbox"), k("mounts"), Seg::Index(i), k(key)]);
            self.env(mp("host"), &m.host);
            self.env(mp("container"), &m.container);
            if !m.container.0.starts_with('/') && !m.container.0.starts_with("${") {
                self.at(
                    mp("container"),
                    format!("container path `{}` is not absolute", m.container.0),
                    "write it like `/workspace/repo`",
                );
            }
        }
        self.env_names(&[k("sandbox"), k("forward_env")], &d.forward_env);
    }

    fn env_names(&mut self, base: &[Seg], names: &[String]) {
        for (i, name) in names.iter().enumerate() {
            if !is_env_name(name) {
                self.at(
                    base.iter().cloned().chain([Seg::Index(i)]).collect(),
                    format!("`{name}` is not an environment variable name"),
                    "list the names of variables, e.g. `- GITHUB_TOKEN`, not their values",
                );
            }
        }
    }

    fn llm_and_agent(&mut self, spec: &'s JobSpec) {
        self.env(path(&[k("llm"), k("model")]), &spec.llm.model);
        if let Some(b) = &spec.llm.base_url {
            self.env(path(&[k("llm"), k("base_url")]), b);
        }
        self.literal(path(&[k("llm"), k("usage_id")]), &spec.llm.usage_id);
        let Some(tools) = &spec.agent.tools else { return };
        if tools.is_empty() {
            self.at(
                path(&[k("agent"), k("tools")]),
                "the agent has no tools".into(),
                "remove `tools` to use the default agent's tools",
            );
        }
        for (i, tool) in tools.iter().enumerate() {
            let at = path(&[k("agent"), k("tools"), Seg::Index(i)]);
            self.literal(at.clone(), tool);
            // ohrun's own server has a known set of tools; another server may have more.
            if uses_managed_server(&spec.sandbox) && !AgentSpec::KNOWN_TOOLS.contains(&tool.as_str()) {
                let hint = match crate::diagnostic::did_you_mean(tool, AgentSpec::KNOWN_TOOLS) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "the agent-server {} has: {}",
                        AgentSpec::KNOWN_TOOLS_VERSION,
                        AgentSpec::KNOWN_TOOLS.join(", ")
                    ),
                };
                self.at(at, format!("unknown tool `{tool}`"), &hint);
            }
        }
    }

    /// A field ohrun uses as written: a `${VAR}` in it would be kept literally, so it is refused.
    fn literal(&mut self, p: Path, value: &str) {
        if value.contains("${") {
            let what = p
                .iter()
                .map(|s| match s {
                    Seg::Key(k) => k.clone(),
                    Seg::Index(i) => format!("[{i}]"),
                })
                .collect::<Vec<_>>()
                .join(".")
                .replace(".[", "[");
            self.at(p, format!("`${{…}}` is not expanded in `{what}`"), "write the value itself; environment references work in paths, URLs, names and `env:` values (see README)");
        }
    }

    fn limits_report_secrets(&mut self, spec: &'s JobSpec, job_dir: &JobDir) {
        if spec.limits.max_cost.is_some_and(|c| c.nanos == 0) {
            self.at(
                path(&[k("limits"), k("max_cost")]),
                "a budget of 0 allows no LLM call".into(),
                "set a positive amount like `2.50`, or remove it",
            );
        }
        if let Some(dir) = &spec.report.dir {
            if dir.0.trim().is_empty() {
                self.at(
                    path(&[k("report"), k("dir")]),
                    "the report directory is empty".into(),
                    "remove it to use the default",
                );
            }
            self.env(path(&[k("report"), k("dir")]), dir);
        }
        self.env_names(&[k("secrets")], &spec.secrets);
        if let Some(r) = &spec.rehearsal {
            self.literal(path(&[k("rehearsal")]), r);
            if !r.contains("${") && !job_dir.is_file(r) {
                self.at(
                    path(&[k("rehearsal")]),
                    format!("rehearsal script `{r}` does not exist"),
                    "paths are relative to the job file's directory",
                );
            }
        }
    }

    /// `deliver:` — a branch git accepts, an issue it can find, GitHub logins, and a repository to push to.
    fn deliver(&mut self, spec: &'s JobSpec) {
        use super::deliver::{branch_problem, is_login, parse_issue};
        let Some(d) = &spec.deliver else { return };
        let dp = |keys: &[&str]| -> Path { std::iter::once(k("deliver")).chain(keys.iter().map(|x| k(x))).collect() };
        self.durations.push((dp(&["timeout"]), d.timeout));
        self.env(dp(&["api_url"]), &d.api_url);
        match &d.repository {
            Some(r) => {
                self.env(dp(&["repository"]), r);
                if !r.0.contains("${") && crate::deliver::RepoUrl::parse(&r.0).is_err() {
                    self.at(
                        dp(&["repository"]),
                        format!("`{}` is not a repository URL ohrun can push to", r.0),
                        "write `https://HOST/OWNER/NAME.git` (or http:// to a loopback host)",
                    );
                }
            }
            None if spec.repo.is_some() => {} // the run's own `repo:`
            None => self.at(
                path(&[k("deliver")]),
                "`deliver` needs the repository to push to".into(),
                "add `repo:` to the job, or `repository: https://github.com/OWNER/NAME.git` under `deliver:`",
            ),
        }
        if let Some(b) = &d.branch
            && let Some(why) = branch_problem(b)
        {
            self.at(
                dp(&["branch"]),
                format!("`{b}` is not a branch name git accepts: {why}"),
                "e.g. `ohrun/{{ run.id }}`",
            );
        }
        if let Some(a) = &d.author
            && crate::deliver::git::Author::parse(a).is_none()
        {
            self.at(
                dp(&["author"]),
                format!("`{a}` is not `Name <email>`"),
                "e.g. `author: \"Fix Bot <bot@example.com>\"`",
            );
        }
        let pr = &d.pull_request;
        for (i, login) in pr.reviewers.iter().enumerate() {
            if !is_login(login) {
                let at = path(&[k("deliver"), k("pull_request"), k("reviewers"), Seg::Index(i)]);
                self.at(at, format!("`{login}` is not a GitHub user name"), "letters, digits and `-`");
            }
        }
        for (i, label) in pr.labels.iter().enumerate() {
            if label.trim().is_empty() {
                let at = path(&[k("deliver"), k("pull_request"), k("labels"), Seg::Index(i)]);
                self.at(at, "a label is empty".into(), "remove it or name the label");
            }
        }
        if let Some(f) = &pr.fork_owner
            && !is_login(f)
        {
            self.at(
                dp(&["pull_request", "fork_owner"]),
                format!("`{f}` is not a GitHub owner name"),
                "letters, digits and `-`",
            );
        }
        if let Some(s) = &d.batch_summary
            && parse_issue(&s.issue).is_none()
        {
            self.at(
                dp(&["batch_summary", "issue"]),
                format!("`{}` does not name an issue", s.issue),
                "write `OWNER/REPO#NUMBER`, e.g. `acme/tools#12`",
            );
        }
    }

    fn finish(mut self) -> Vec<Diagnostic> {
        for (p, d) in std::mem::take(&mut self.durations) {
            if d.0.is_zero() {
                self.at(
                    p,
                    "a timeout of 0 would end before anything starts".into(),
                    "use a positive duration like `90s`",
                );
            }
        }
        for (p, s) in std::mem::take(&mut self.env_strings) {
            if let Err((_, message)) = s.parts() {
                self.at(
                    p,
                    message,
                    "environment references look like `${NAME}` or `${NAME:-default}`; write `$$` for a literal `$`",
                );
            }
        }
        self.out
    }
}

/// True when the sandbox runs ohrun's own agent-server (whose tools are known before it starts).
fn uses_managed_server(sandbox: &Sandbox) -> bool {
    match sandbox {
        Sandbox::Local(l) => l.command.is_none(),
        Sandbox::Docker(d) => d.command.is_none() && d.image.is_none(),
        _ => false,
    }
}
