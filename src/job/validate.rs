//! Checks that need the whole typed job (or the file system), each pointing back at its key.

use super::model::{JobSpec, Message, Sandbox};
use super::parse::Document;
use super::source::{Path, Seg};
use super::values::{EnvString, HumanDuration, is_env_name};
use crate::diagnostic::Diagnostic;
use std::path::Path as FsPath;

fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

fn path(parts: &[Seg]) -> Path {
    parts.to_vec()
}

/// A job name becomes part of file names and run ids.
pub fn check_name(name: &str, doc: &Document) -> Option<Diagnostic> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    (!ok).then(|| {
        Diagnostic::new(format!("`{name}` is not a valid job name"))
            .at(doc.span(&[k("name")]))
            .hint("use letters, digits, `-`, `_` and `.` only, e.g. `name: fix-flaky-tests`")
    })
}

pub fn check(spec: &JobSpec, job_dir: &FsPath, doc: &Document) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut at = |p: Path, message: String, hint: &str| {
        out.push(Diagnostic::new(message).at(doc.span(&p)).hint(hint.to_string()));
    };

    if spec.steps.is_empty() {
        at(path(&[k("steps")]), "a job needs at least one step".into(), "add `- message: ...` under `steps:`");
    }
    let mut durations: Vec<(Path, HumanDuration)> = Vec::new();
    let mut env_strings: Vec<(Path, &EnvString)> = vec![(path(&[k("llm"), k("model")]), &spec.llm.model)];
    if let Some(b) = &spec.llm.base_url {
        env_strings.push((path(&[k("llm"), k("base_url")]), b));
    }
    for (i, step) in spec.steps.iter().enumerate() {
        let sp = |key: &str| path(&[k("steps"), Seg::Index(i), k(key)]);
        durations.push((sp("timeout"), step.timeout));
        match &step.message {
            Message::Inline(text) if text.trim().is_empty() => {
                at(sp("message"), format!("step {} has an empty message", i + 1), "write what the agent should do")
            }
            Message::File { file } if !job_dir.join(file).is_file() => at(
                path(&[k("steps"), Seg::Index(i), k("message"), k("file")]),
                format!("message file `{file}` does not exist"),
                "paths are relative to the job file's directory",
            ),
            _ => {}
        }
    }
    for (i, cmd) in spec.setup.iter().enumerate() {
        let sp = |key: &str| path(&[k("setup"), Seg::Index(i), k(key)]);
        durations.push((sp("timeout"), cmd.timeout));
        if cmd.run.trim().is_empty() {
            at(
                path(&[k("setup"), Seg::Index(i)]),
                format!("setup command {} is empty", i + 1),
                "remove it or write a command",
            );
        }
        for (name, v) in &cmd.env {
            env_strings.push((sp("env").into_iter().chain([k(name)]).collect(), v));
        }
    }
    let sb = |key: &str| path(&[k("sandbox"), k(key)]);
    match &spec.sandbox {
        Sandbox::Cloud(c) => {
            durations.push((sb("init_timeout"), c.init_timeout));
            durations.push((sb("api_timeout"), c.api_timeout));
            env_strings.push((sb("api_url"), &c.api_url));
            if let Some(s) = &c.sandbox_spec_id {
                env_strings.push((sb("sandbox_spec_id"), s));
            }
        }
        Sandbox::Runtime(r) => {
            durations.push((sb("init_timeout"), r.init_timeout));
            durations.push((sb("api_timeout"), r.api_timeout));
            env_strings.push((sb("api_url"), &r.api_url));
            env_strings.push((sb("image"), &r.image));
            if ![1, 2, 4, 8].contains(&r.resource_factor) {
                at(
                    sb("resource_factor"),
                    format!("resource_factor {} is not supported", r.resource_factor),
                    "use 1, 2, 4 or 8",
                );
            }
            for (i, name) in r.forward_env.iter().enumerate() {
                if !is_env_name(name) {
                    at(
                        path(&[k("sandbox"), k("forward_env"), Seg::Index(i)]),
                        format!("`{name}` is not an environment variable name"),
                        "use letters, digits and `_`",
                    );
                }
            }
        }
        Sandbox::Docker(d) => {
            durations.push((sb("init_timeout"), d.init_timeout));
            env_strings.push((sb("image"), &d.image));
            for (name, v) in &d.env {
                env_strings.push((path(&[k("sandbox"), k("env"), k(name)]), v));
            }
            for (i, m) in d.mounts.iter().enumerate() {
                if !m.container.starts_with('/') {
                    at(
                        path(&[k("sandbox"), k("mounts"), Seg::Index(i), k("container")]),
                        format!("container path `{}` is not absolute", m.container),
                        "write it like `/workspace/repo`",
                    );
                }
            }
        }
        Sandbox::Local(l) => {
            durations.push((sb("init_timeout"), l.init_timeout));
            for (name, v) in &l.env {
                env_strings.push((path(&[k("sandbox"), k("env"), k(name)]), v));
            }
            if l.command.as_ref().is_some_and(|c| c.is_empty()) {
                at(
                    sb("command"),
                    "`command` is empty".into(),
                    "remove it to let ohrun manage the agent-server, or name the program",
                );
            }
        }
        Sandbox::Remote(r) => {
            durations.push((sb("api_timeout"), r.api_timeout));
            env_strings.push((sb("url"), &r.url));
        }
    }
    for (p, d) in durations {
        if d.0.is_zero() {
            at(p, "a timeout of 0 would end before anything starts".into(), "use a positive duration like `90s`");
        }
    }
    for (p, s) in env_strings {
        if let Err((_, message)) = s.parts() {
            at(
                p,
                message,
                "environment references look like `${NAME}` or `${NAME:-default}`; write `$$` for a literal `$`",
            );
        }
    }
    for (i, name) in spec.secrets.iter().enumerate() {
        if !is_env_name(name) {
            at(
                path(&[k("secrets"), Seg::Index(i)]),
                format!("`{name}` is not an environment variable name"),
                "list the names of variables, e.g. `- GITHUB_TOKEN`, not their values",
            );
        }
    }
    if let Some(tools) = &spec.agent.tools
        && tools.is_empty()
    {
        at(
            path(&[k("agent"), k("tools")]),
            "the agent has no tools".into(),
            "remove `tools` to use the default agent's tools",
        );
    }
    if spec.limits.max_cost.is_some_and(|c| c.nanos == 0) {
        at(
            path(&[k("limits"), k("max_cost")]),
            "a budget of 0 allows no LLM call".into(),
            "set a positive amount like `2.50`, or remove it",
        );
    }
    if spec.report.dir.trim().is_empty() {
        at(path(&[k("report"), k("dir")]), "the report directory is empty".into(), "remove it to use the default");
    }
    if let Some(r) = &spec.rehearsal
        && !job_dir.join(r).is_file()
    {
        at(
            path(&[k("rehearsal")]),
            format!("rehearsal script `{r}` does not exist"),
            "paths are relative to the job file's directory",
        );
    }
    out
}
