//! A run's settings, resolved once from the rendered job and the environment, before anything is
//! provisioned: every `${VAR}` is expanded here (a missing one is a usage error, exit 2), every secret
//! value is registered with the redactor, and nothing downstream reads the environment again. Each
//! backend owns its settings type; `sandbox.rs` assembles them, `resolver.rs` expands and registers.

mod resolver;
mod sandbox;

pub use resolver::Problems;
use resolver::Resolver;

use crate::agent::setup::SetupCommand;
use crate::backend;
use crate::job::checks::CheckSpec;
use crate::job::model::{JobSpec, LlmSpec};
use crate::job::values::EnvString;
use crate::repo::RepoSettings;
use crate::report::redact;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct LlmSettings {
    pub model: String,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub usage_id: String,
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub options: serde_json::Map<String, Value>,
}

#[derive(Clone, Debug)]
pub struct RunSettings {
    pub llm: LlmSettings,
    pub sandbox: backend::Settings,
    pub setup: Vec<SetupCommand>,
    /// Values of `secrets:` variables, handed to the agent as conversation secrets.
    pub secrets: Vec<(String, String)>,
    /// Every variable name the job reads through a secret reference (kept out of child processes).
    pub secret_names: Vec<String>,
    /// Each check's `env:` (keyed `verify.checks[i]`, `steps[j].checks[i]`), expanded.
    pub check_env: std::collections::HashMap<String, Vec<(String, String)>>,
    /// The LLM of each judge that names its own (same keys); the others judge with `llm`.
    pub judge_llm: std::collections::HashMap<String, LlmSettings>,
    /// `deliver:`, resolved (the token registered with the redactor and kept from every child process).
    pub deliver: Option<crate::deliver::DeliverSettings>,
    /// `repo:`, its URL and token expanded.
    pub repo: Option<RepoSettings>,
}

/// Where a check sits in the job: `verify.checks[i]`, or `steps[j].checks[i]` (`step` is 0-based).
pub fn check_key(step: Option<usize>, index: usize) -> String {
    match step {
        Some(j) => format!("steps[{j}].checks[{index}]"),
        None => format!("verify.checks[{index}]"),
    }
}

/// The rehearsal endpoint replacing the job's LLM, if any.
#[derive(Clone, Debug)]
pub struct RehearsalLlm {
    pub base_url: String,
}

/// The directory of run `run_id`: `report.dir` with its `${VAR}`s expanded, else the run's folder in the
/// batch directory `batch_dir`.
pub fn report_dir(
    spec: &JobSpec,
    run_id: &str,
    batch_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, Problems> {
    let Some(dir) = &spec.report.dir else { return Ok(batch_dir.join(run_id)) };
    let mut r = Resolver::new(env);
    let dir = r.text(dir, "report.dir");
    r.finish(PathBuf::from(dir))
}

/// Where the runs of a batch (`(id, spec)` each) write, checked before anything starts: never the batch
/// directory or above it (run.json and report.html would replace the batch's pages, or land outside it),
/// never inside another run's directory or the same one. Runs whose `report.dir` cannot be resolved yet
/// are left to fail on their own.
pub fn check_run_dirs<'a>(
    runs: impl Iterator<Item = (&'a str, &'a JobSpec)>,
    batch_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Problems> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let batch = lexical_absolute(&cwd, batch_dir);
    let mut problems = Vec::new();
    let mut dirs: Vec<(Vec<u8>, PathBuf, &str)> = Vec::new();
    for (id, spec) in runs {
        let Ok(dir) = report_dir(spec, id, batch_dir, env) else { continue };
        let dir = lexical_absolute(&cwd, &dir);
        if batch.starts_with(&dir) {
            problems.push(format!(
                "run {id} would write its report into {}, which is the batch directory {} or above it",
                dir.display(),
                batch.display()
            ));
        }
        dirs.push((component_order(&dir), dir, id));
    }
    // In component order a directory's descendants come right after it. The key sorts bytes (the
    // separator lowest), which is that order without comparing `Path`s component by component: at 100,000
    // runs that comparison was a tenth of `ohrun plan`.
    dirs.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(b.2)));
    let mut outer: Option<(&PathBuf, &str)> = None;
    for (_, dir, id) in &dirs {
        match outer {
            Some((top, other)) if dir.starts_with(top) => problems.push(format!(
                "run {id} would write its report into {}, inside the report directory of run {other}",
                dir.display()
            )),
            _ => outer = Some((dir, id)),
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(Problems { problems }) }
}

/// A path's bytes with the separator as the lowest byte: sorted so, paths are in component order.
fn component_order(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().iter().map(|&b| if b == b'/' { 0 } else { b }).collect()
}

/// `path` made absolute from `cwd`, `.` and `..` resolved by name (it may not exist).
fn lexical_absolute(cwd: &Path, path: &Path) -> PathBuf {
    let abs = cwd.join(path);
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Resolves `spec` against `env`.
pub fn resolve(
    spec: &JobSpec,
    job_dir: &Path,
    rehearsal: Option<&RehearsalLlm>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunSettings, Problems> {
    let mut r = Resolver::new(env);
    let llm = llm(&spec.llm, rehearsal, &mut r);
    let secrets = conversation_secrets(spec, &mut r);
    // The conversation's create body carries the LLM key and every `secrets:` value: the agent-server's
    // URL must then not be plain http to a far host, whether or not a session key is sent too.
    let sends_secrets = (rehearsal.is_none() && llm.api_key.is_some()) || !secrets.is_empty() || sends_env_values(spec);
    let sandbox = sandbox::sandbox(&spec.sandbox, job_dir, llm.base_url.as_deref(), sends_secrets, &mut r);
    if rehearsal.is_some() {
        sandbox::refuse_far_rehearsal(&sandbox, spec.sandbox.kind(), &mut r);
    }
    let setup = spec
        .setup
        .iter()
        .enumerate()
        .map(|(i, cmd)| SetupCommand {
            run: cmd.run.clone(),
            cwd: cmd.cwd.as_ref().map(|c| r.text(c, &format!("setup[{i}].cwd"))),
            env: r.env_map(&cmd.env, &format!("setup[{i}].env")),
            timeout: cmd.timeout.0,
            allow_failure: cmd.allow_failure,
        })
        .collect();
    let (check_env, judge_llm) = checks(spec, rehearsal, &mut r);
    let repo = spec.repo.as_ref().map(|repo| repo_settings(repo, &mut r));
    let deliver = spec.deliver.as_ref().map(|d| deliver(d, &mut r, repo.as_ref()));
    let secret_names = std::mem::take(&mut r.secret_names);
    r.finish(RunSettings { llm, sandbox, setup, secrets, secret_names, check_env, judge_llm, repo, deliver })
}

/// `repo:` expanded: the token a secret, the URL checked again now that its `${VAR}`s have values.
fn repo_settings(repo: &crate::job::repo::RepoSpec, r: &mut Resolver) -> RepoSettings {
    let token = repo.token.as_ref().and_then(|t| r.secret(&t.0, "repo.token"));
    let url = r.text(&repo.url, "repo.url");
    resolver::register_url_credentials(&url);
    if let Some(problem) = crate::job::repo::url_problem(&url, token.is_some()) {
        r.problems.push(problem);
    }
    RepoSettings { url, git_ref: repo.git_ref.clone(), depth: repo.depth, token, timeout: repo.timeout.0 }
}

/// `deliver:` alone (for the batch's summary comment, which needs no sandbox or LLM).
pub fn resolve_deliver(
    spec: &JobSpec,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<crate::deliver::DeliverSettings>, Problems> {
    let mut r = Resolver::new(env);
    let repo = spec.repo.as_ref().map(|repo| repo_settings(repo, &mut r));
    let deliver = spec.deliver.as_ref().map(|d| deliver(d, &mut r, repo.as_ref()));
    r.finish(deliver)
}

/// `deliver:`: the token is a secret; the API and the repository must not get it over plain http to a
/// host that is not loopback (no `allow_insecure_http` here: a token for GitHub never travels in clear).
/// Without a `repository` it is the run's `repo:` (its URL, and its `ref` as the pull request's base when
/// that is a branch name rather than a commit id).
fn deliver(
    d: &crate::job::deliver::DeliverSpec,
    r: &mut Resolver,
    repo: Option<&RepoSettings>,
) -> crate::deliver::DeliverSettings {
    let token = d.token.as_ref().and_then(|t| r.secret(&t.0, "deliver.token"));
    let carries = token.is_some();
    let api_url = r.url(&d.api_url, "deliver.api_url", false, carries);
    let repository = match &d.repository {
        Some(u) => r.url(u, "deliver.repository", false, carries),
        None => repo.map(|repo| repo.url.clone()).unwrap_or_default(),
    };
    let mut pull_request = d.pull_request.clone();
    let mut base_from_repo = false;
    if pull_request.base.is_none() {
        let branch = repo.and_then(|repo| repo.git_ref.clone()).filter(|r| !crate::repo::is_full_sha(r));
        base_from_repo = branch.is_some();
        pull_request.base = branch;
    }
    crate::deliver::DeliverSettings {
        when: d.when,
        repository,
        branch: d.branch.clone(),
        commit_message: d.commit_message.clone(),
        author: d
            .author
            .as_deref()
            .and_then(crate::deliver::git::Author::parse)
            .unwrap_or_else(crate::deliver::git::Author::ohrun),
        pull_request,
        api_url,
        token,
        timeout: d.timeout.0,
        base_from_repo,
    }
}

type CheckSettings =
    (std::collections::HashMap<String, Vec<(String, String)>>, std::collections::HashMap<String, LlmSettings>);

/// Every check's `env:` and every judge's own LLM, resolved like the job's.
fn checks(spec: &JobSpec, rehearsal: Option<&RehearsalLlm>, r: &mut Resolver) -> CheckSettings {
    let finals = spec.verify.iter().flat_map(|v| v.checks.iter().enumerate().map(|(i, c)| (check_key(None, i), c)));
    let per_step = spec
        .steps
        .iter()
        .enumerate()
        .flat_map(|(j, s)| s.checks.iter().enumerate().map(move |(i, c)| (check_key(Some(j), i), c)));
    let all: Vec<(String, &CheckSpec)> = finals.chain(per_step).collect();
    let mut env = std::collections::HashMap::new();
    let mut judges = std::collections::HashMap::new();
    for (key, check) in all {
        if !check.env.is_empty() {
            env.insert(key.clone(), r.env_map(&check.env, &format!("{key}.env")));
        }
        if let Some(l) = check.judge.as_ref().and_then(|j| j.llm.as_ref()) {
            judges.insert(key, llm(l, rehearsal, r));
        }
    }
    (env, judges)
}

/// Values from the environment that requests to the agent-server carry: a setup command's or a check's
/// `env:` (exported in the command ohrun sends; treated as secrets, so they must not go in clear text).
fn sends_env_values(spec: &JobSpec) -> bool {
    let refers = |m: &indexmap::IndexMap<String, EnvString>| m.values().any(|v| !v.var_names().is_empty());
    let checks = spec.verify.iter().flat_map(|v| &v.checks).chain(spec.steps.iter().flat_map(|s| &s.checks));
    spec.setup.iter().any(|c| refers(&c.env)) || checks.clone().any(|c| refers(&c.env))
}

/// The values of `secrets:`, registered with the redactor.
fn conversation_secrets(spec: &JobSpec, r: &mut Resolver) -> Vec<(String, String)> {
    let mut secrets = Vec::new();
    for name in &spec.secrets {
        match (r.env)(name) {
            Some(v) if !v.is_empty() => {
                redact::register(&v);
                r.secret_names.push(name.clone());
                secrets.push((name.clone(), v));
            }
            _ => r.problems.push(format!("environment variable {name} is not set (listed in `secrets`)")),
        }
    }
    secrets
}

fn llm(l: &LlmSpec, rehearsal: Option<&RehearsalLlm>, r: &mut Resolver) -> LlmSettings {
    // The key is a secret whether or not a rehearsal replaces the LLM: its variable stays out of every
    // process ohrun starts and its value out of every output.
    let api_key = l.api_key.as_ref().and_then(|k| match rehearsal {
        Some(_) => r.secret_if_set(&k.0),
        None => r.secret(&k.0, "llm.api_key"),
    });
    let price = |own: Option<crate::money::Usd>, default: &str| {
        own.map(|u| u.as_f64()).or_else(|| rehearsal.map(|_| default.parse().unwrap_or(0.0)))
    };
    LlmSettings {
        model: match rehearsal {
            Some(_) => crate::rehearse::MODEL.to_string(),
            None => r.text(&l.model, "llm.model"),
        },
        base_url: match rehearsal {
            Some(reh) => Some(reh.base_url.clone()),
            None => l.base_url.as_ref().map(|u| r.url(u, "llm.base_url", true, false)).filter(|u| !u.is_empty()),
        },
        api_key: if rehearsal.is_some() { Some("rehearsal".to_string()) } else { api_key },
        usage_id: l.usage_id.clone(),
        input_cost_per_token: price(l.input_cost_per_token, crate::rehearse::DEFAULT_INPUT_COST_PER_TOKEN),
        output_cost_per_token: price(l.output_cost_per_token, crate::rehearse::DEFAULT_OUTPUT_COST_PER_TOKEN),
        options: l.options.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> JobSpec {
        let (_, runs) = crate::job::plan_text(
            crate::diagnostic::Source { name: "t.yaml".into(), text: yaml.into() },
            Path::new("."),
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        runs.into_iter().next().unwrap().spec
    }

    #[test]
    fn every_path_field_expands_environment_references() {
        let s = spec(
            "name: t\nsandbox: {kind: local, working_dir: '${W}/ws', env: {TOKEN: '${TOK}'}}\nllm: {model: m}\n\
             setup:\n  - run: echo hi\n    cwd: '${SUB:-sub}'\n    env: {A: '${TOK}'}\nsteps:\n  - message: hi\nreport: {dir: '${OUT}/r'}\n",
        );
        let env = |n: &str| match n {
            "W" => Some("/tmp/w".to_string()),
            "TOK" => Some("tok-value-123".to_string()),
            "OUT" => Some("/tmp/out".to_string()),
            _ => None,
        };
        let settings = resolve(&s, Path::new("."), None, &env).unwrap();
        let backend::Settings::Local(local) = &settings.sandbox else { panic!() };
        assert_eq!(local.working_dir.as_deref(), Some(Path::new("/tmp/w/ws")));
        assert_eq!(local.env, vec![("TOKEN".to_string(), "tok-value-123".to_string())]);
        assert_eq!(settings.setup[0].cwd.as_deref(), Some("sub"));
        assert_eq!(settings.setup[0].env, vec![("A".to_string(), "tok-value-123".to_string())]);
        assert_eq!(report_dir(&s, "t", Path::new("b"), &env).unwrap(), PathBuf::from("/tmp/out/r"));
        // A value that came from the environment is a secret.
        assert_eq!(redact::apply("x tok-value-123 y"), "x *** y");
        let missing = report_dir(&s, "t", Path::new("b"), &|_| None).unwrap_err();
        assert!(missing.problems[0].contains("OUT"), "{missing}");
    }

    #[test]
    fn credentials_in_urls_are_secrets() {
        let s = spec(
            "name: t\nsandbox: {kind: remote, url: 'http://127.0.0.1:9/${PREFIX}', working_dir: /w}\n\
             llm: {model: m, base_url: 'https://bob:${PASS}@llm.example/v1?api_key=${QKEY}&region=eu-west'}\nsteps:\n  - message: hi\n",
        );
        let env = |n: &str| match n {
            "PREFIX" => Some("url-path-token-77".to_string()),
            "PASS" => Some("p@ss-word-99".to_string()),
            "QKEY" => Some("query-key-value-55".to_string()),
            _ => None,
        };
        resolve(&s, Path::new("."), None, &env).unwrap();
        let text = "url-path-token-77 p@ss-word-99 p%40ss-word-99 query-key-value-55 bob eu-west";
        assert_eq!(redact::apply(text), "*** *** *** *** bob eu-west");
        // A value the URL parser has to encode is found all the same.
        let s = spec(
            "name: t\nsandbox: {kind: remote, url: 'http://127.0.0.1:9/${ODD}/', working_dir: /w}\nllm: {model: m}\nsteps:\n  - message: hi\n",
        );
        let odd = |n: &str| (n == "ODD").then(|| "odd\"path secret/77".to_string());
        resolve(&s, Path::new("."), None, &odd).unwrap();
        assert_eq!(redact::apply("x odd\"path secret/77 y"), "x *** y");
    }

    #[test]
    fn a_far_plain_http_server_is_refused_when_the_conversation_carries_a_key() {
        let job = |extra: &str| {
            spec(&format!(
                "name: t\nsandbox: {{kind: remote, url: 'http://agent.example:8000', working_dir: /w{extra}}}\nllm: {{model: m, api_key: '${{K}}'}}\nsteps:\n  - message: hi\n"
            ))
        };
        let env = |n: &str| (n == "K").then(|| "llm-key-over-http-31".to_string());
        let refused = resolve(&job(""), Path::new("."), None, &env).unwrap_err();
        assert!(refused.problems[0].contains("`sandbox.url` is plain http"), "{refused}");
        assert!(resolve(&job(", allow_insecure_http: true"), Path::new("."), None, &env).is_ok());
        // Without any key in the conversation, plain http is the user's business.
        let keyless = spec(
            "name: t\nsandbox: {kind: remote, url: 'http://agent.example:8000', working_dir: /w}\nllm: {model: m}\nsteps:\n  - message: hi\n",
        );
        assert!(resolve(&keyless, Path::new("."), None, &|_| None).is_ok());
    }

    #[test]
    fn the_llm_key_stays_secret_in_a_rehearsal() {
        let s = spec("name: t\nsandbox: {kind: local}\nllm: {model: m, api_key: '${KEY}'}\nsteps:\n  - message: hi\n");
        let env = |n: &str| (n == "KEY").then(|| "rehearsal-key-not-needed".to_string());
        let reh = RehearsalLlm { base_url: "http://127.0.0.1:9/v1".into() };
        let settings = resolve(&s, Path::new("."), Some(&reh), &env).unwrap();
        assert!(settings.secret_names.contains(&"KEY".to_string()));
        assert_eq!(redact::apply("rehearsal-key-not-needed"), "***");
        // Unset is fine in a rehearsal.
        assert!(resolve(&s, Path::new("."), Some(&reh), &|_| None).is_ok());
    }
}
