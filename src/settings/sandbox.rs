//! The sandbox part of a run's settings: each kind's spec expanded into its backend's settings type.

use super::resolver::Resolver;
use crate::backend::{self, cloud::CloudSettings, docker::DockerSettings, local::LocalSettings};
use crate::backend::{remote::RemoteSettings, runtime::RuntimeSettings};
use crate::job::model::Sandbox;
use crate::job::sandbox::DockerSandbox;
use crate::net::is_loopback_url;
use std::path::{Path, PathBuf};

/// The sandbox's settings; `llm_base_url` decides a docker sandbox's network (a loopback LLM needs the
/// host's), `sends_secrets` whether a plain-http far server is refused.
pub(super) fn sandbox(
    spec: &Sandbox,
    job_dir: &Path,
    llm_base_url: Option<&str>,
    sends_secrets: bool,
    r: &mut Resolver,
) -> backend::Settings {
    match spec {
        Sandbox::Local(l) => backend::Settings::Local(LocalSettings {
            command: l.command.as_ref().map(|c| r.list(c, "sandbox.command")),
            port: l.port,
            working_dir: l.working_dir.as_ref().map(|w| PathBuf::from(r.text(w, "sandbox.working_dir"))),
            env: r.env_map(&l.env, "sandbox.env"),
            init_timeout: l.init_timeout.0,
        }),
        Sandbox::Remote(rm) => {
            let key_var = rm.session_key.as_ref().and_then(|k| k.0.var_names().first().map(|s| s.to_string()));
            let url = r.url(&rm.url, "sandbox.url", rm.allow_insecure_http, rm.session_key.is_some() || sends_secrets);
            backend::Settings::Remote(RemoteSettings {
                url,
                session_key: rm.session_key.as_ref().and_then(|k| r.secret(&k.0, "sandbox.session_key")),
                key_var,
                working_dir: r.text(&rm.working_dir, "sandbox.working_dir"),
                api_timeout: rm.api_timeout.0,
            })
        }
        Sandbox::Docker(d) => docker(d, job_dir, llm_base_url, r),
        Sandbox::Cloud(c) => backend::Settings::Cloud(CloudSettings {
            api_url: r.url(&c.api_url, "sandbox.api_url", c.allow_insecure_http, true),
            sends_secrets,
            key_var: c.api_key.0.var_names().first().map(|s| s.to_string()).unwrap_or_default(),
            api_key: r.secret(&c.api_key.0, "sandbox.api_key").unwrap_or_default(),
            sandbox_spec_id: r.optional(c.sandbox_spec_id.as_ref(), "sandbox.sandbox_spec_id"),
            init_timeout: c.init_timeout.0,
            api_timeout: c.api_timeout.0,
            working_dir: r.text(&c.working_dir, "sandbox.working_dir"),
            keep_alive: c.keep_alive,
            allow_insecure_http: c.allow_insecure_http,
        }),
        Sandbox::Runtime(rt) => backend::Settings::Runtime(RuntimeSettings {
            api_url: r.url(&rt.api_url, "sandbox.api_url", rt.allow_insecure_http, true),
            sends_secrets,
            allow_insecure_http: rt.allow_insecure_http,
            key_var: rt.api_key.0.var_names().first().map(|s| s.to_string()).unwrap_or_default(),
            api_key: r.secret(&rt.api_key.0, "sandbox.api_key").unwrap_or_default(),
            image: r.text(&rt.image, "sandbox.image"),
            image_pull_policy: format!("{:?}", rt.image_pull_policy),
            session_id: r.optional(rt.session_id.as_ref(), "sandbox.session_id"),
            resource_factor: rt.resource_factor,
            runtime_class: r.optional(rt.runtime_class.as_ref(), "sandbox.runtime_class"),
            target_type: format!("{:?}", rt.target_type).to_lowercase(),
            environment: r.forwarded(&rt.forward_env),
            init_timeout: rt.init_timeout.0,
            api_timeout: rt.api_timeout.0,
            pause_on_close: rt.pause_on_close,
            working_dir: r.text(&rt.working_dir, "sandbox.working_dir"),
            keep_alive: rt.keep_alive,
        }),
    }
}

/// A docker sandbox: forwarded and given env, bind mounts (host paths from the job's directory), network.
fn docker(d: &DockerSandbox, job_dir: &Path, llm_base_url: Option<&str>, r: &mut Resolver) -> backend::Settings {
    let mut env = r.forwarded(&d.forward_env);
    env.extend(r.env_map(&d.env, "sandbox.env"));
    let binds = d
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let host = PathBuf::from(r.text(&m.host, &format!("sandbox.mounts[{i}].host")));
            let host = if host.is_absolute() { host } else { job_dir.join(host) };
            let host = std::fs::canonicalize(&host).unwrap_or(host);
            let container = r.text(&m.container, &format!("sandbox.mounts[{i}].container"));
            format!("{}:{container}{}", host.display(), if m.read_only { ":ro" } else { "" })
        })
        .collect();
    // The container must reach the LLM: one on loopback is only reachable through the host's network.
    let network = r
        .optional(d.network.as_ref(), "sandbox.network")
        .or_else(|| llm_base_url.filter(|u| is_loopback_url(u)).map(|_| "host".to_string()));
    backend::Settings::Docker(DockerSettings {
        image: r.optional(d.image.as_ref(), "sandbox.image"),
        command: d.command.as_ref().map(|c| r.list(c, "sandbox.command")),
        binds,
        env,
        platform: r.optional(d.platform.as_ref(), "sandbox.platform"),
        network,
        memory_mb: d.memory_mb,
        cpus: d.cpus,
        init_timeout: d.init_timeout.0,
        working_dir: r.text(&d.working_dir, "sandbox.working_dir"),
    })
}

/// The rehearsal endpoint listens on this machine's loopback: a sandbox elsewhere cannot reach it, and
/// the agent would only retry until its LLM timeout. Say so now instead.
pub(super) fn refuse_far_rehearsal(sandbox: &backend::Settings, kind: &str, r: &mut Resolver) {
    if let Some(url) = sandbox.far_url().filter(|u| !u.is_empty() && !is_loopback_url(u)) {
        r.problems.push(format!(
            "--rehearse serves the scripted LLM on this machine's loopback, which a {kind} sandbox at {url} cannot reach; rehearse with `kind: local` or `kind: docker`"
        ));
    }
}
