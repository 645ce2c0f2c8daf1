//! A run's settings, resolved once from the rendered job and the environment, before anything is
//! provisioned: every `${VAR}` is expanded here (a missing one is a usage error, exit 2), every secret
//! value is registered with the redactor, and nothing downstream reads the environment again.

use crate::job::model::{JobSpec, Sandbox};
use crate::job::values::{EnvError, EnvString};
use crate::report::redact::Redactor;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
pub enum SandboxSettings {
    Local {
        command: Option<Vec<String>>,
        port: Option<u16>,
        working_dir: Option<PathBuf>,
        env: Vec<(String, String)>,
        init_timeout: Duration,
    },
    Docker(crate::backend::docker::DockerSettings),
    Cloud {
        settings: crate::backend::cloud::CloudSettings,
        keep_alive: bool,
    },
    Runtime {
        settings: crate::backend::runtime::RuntimeSettings,
        keep_alive: bool,
    },
    Remote {
        url: String,
        session_key: Option<String>,
        working_dir: String,
        api_timeout: Duration,
    },
}

#[derive(Clone, Debug)]
pub struct RunSettings {
    pub llm: LlmSettings,
    pub sandbox: SandboxSettings,
    /// Values of `secrets:` variables, handed to the agent as conversation secrets.
    pub secrets: Vec<(String, String)>,
    /// Every variable name the job reads through a secret reference (kept out of child processes).
    pub secret_names: Vec<String>,
    pub redactor: Redactor,
}

/// The rehearsal endpoint replacing the job's LLM, if any.
#[derive(Clone, Debug)]
pub struct RehearsalLlm {
    pub base_url: String,
}

/// Resolves `spec` against `env`; every problem is listed (one line each) so the user fixes them in one go.
pub fn resolve(
    spec: &JobSpec,
    job_dir: &Path,
    rehearsal: Option<&RehearsalLlm>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunSettings, Vec<String>> {
    let mut r = Resolver { env, problems: Vec::new(), redactor: Redactor::default(), secret_names: Vec::new() };
    let llm = match rehearsal {
        Some(reh) => LlmSettings {
            model: crate::rehearse::MODEL.to_string(),
            base_url: Some(reh.base_url.clone()),
            api_key: Some("rehearsal".to_string()),
            usage_id: spec.llm.usage_id.clone(),
            input_cost_per_token: Some(
                spec.llm
                    .input_cost_per_token
                    .map(|u| u.as_f64())
                    .unwrap_or_else(|| crate::rehearse::DEFAULT_INPUT_COST_PER_TOKEN.parse().unwrap_or(0.0)),
            ),
            output_cost_per_token: Some(
                spec.llm
                    .output_cost_per_token
                    .map(|u| u.as_f64())
                    .unwrap_or_else(|| crate::rehearse::DEFAULT_OUTPUT_COST_PER_TOKEN.parse().unwrap_or(0.0)),
            ),
            options: spec.llm.options.clone(),
        },
        None => LlmSettings {
            model: r.text(&spec.llm.model, "llm.model"),
            base_url: r.optional(spec.llm.base_url.as_ref(), "llm.base_url"),
            api_key: spec.llm.api_key.as_ref().and_then(|k| r.secret(&k.0, "llm.api_key")),
            usage_id: spec.llm.usage_id.clone(),
            input_cost_per_token: spec.llm.input_cost_per_token.map(|u| u.as_f64()),
            output_cost_per_token: spec.llm.output_cost_per_token.map(|u| u.as_f64()),
            options: spec.llm.options.clone(),
        },
    };
    let sandbox = match &spec.sandbox {
        Sandbox::Local(l) => SandboxSettings::Local {
            command: l.command.clone(),
            port: l.port,
            working_dir: l.working_dir.as_ref().map(PathBuf::from),
            env: l.env.iter().map(|(k, v)| (k.clone(), r.text(v, &format!("sandbox.env.{k}")))).collect(),
            init_timeout: l.init_timeout.0,
        },
        Sandbox::Remote(rm) => SandboxSettings::Remote {
            url: r.text(&rm.url, "sandbox.url"),
            session_key: rm.session_key.as_ref().and_then(|k| r.secret(&k.0, "sandbox.session_key")),
            working_dir: rm.working_dir.clone(),
            api_timeout: rm.api_timeout.0,
        },
        Sandbox::Docker(d) => {
            let mut env: Vec<(String, String)> = Vec::new();
            for name in &d.forward_env {
                if let Some(v) = (r.env)(name).filter(|v| !v.is_empty()) {
                    env.push((name.clone(), v));
                }
            }
            env.extend(d.env.iter().map(|(k, v)| (k.clone(), r.text(v, &format!("sandbox.env.{k}")))));
            let binds = d
                .mounts
                .iter()
                .map(|m| {
                    let host =
                        if Path::new(&m.host).is_absolute() { PathBuf::from(&m.host) } else { job_dir.join(&m.host) };
                    let host = std::fs::canonicalize(&host).unwrap_or(host);
                    format!("{}:{}{}", host.display(), m.container, if m.read_only { ":ro" } else { "" })
                })
                .collect();
            // The container must reach the LLM: one on loopback is only reachable through the host's network.
            let network = d
                .network
                .clone()
                .or_else(|| llm.base_url.as_deref().filter(|u| is_loopback_url(u)).map(|_| "host".to_string()));
            SandboxSettings::Docker(crate::backend::docker::DockerSettings {
                image: r.text(&d.image, "sandbox.image"),
                command: d.command.clone(),
                binds,
                env,
                platform: d.platform.clone(),
                network,
                memory_mb: d.memory_mb,
                cpus: d.cpus,
                init_timeout: d.init_timeout.0,
                working_dir: d.working_dir.clone(),
            })
        }
        Sandbox::Cloud(c) => {
            let api_url = r.text(&c.api_url, "sandbox.api_url");
            if let Err(e) = crate::backend::api::check_transport(&api_url, c.allow_insecure_http, "sandbox.api_url") {
                r.problems.push(e);
            }
            let key_var = c.api_key.0.var_names().first().map(|s| s.to_string()).unwrap_or_default();
            SandboxSettings::Cloud {
                settings: crate::backend::cloud::CloudSettings {
                    api_url,
                    api_key: r.secret(&c.api_key.0, "sandbox.api_key").unwrap_or_default(),
                    key_var,
                    sandbox_spec_id: r.optional(c.sandbox_spec_id.as_ref(), "sandbox.sandbox_spec_id"),
                    init_timeout: c.init_timeout.0,
                    api_timeout: c.api_timeout.0,
                    working_dir: c.working_dir.clone(),
                },
                keep_alive: c.keep_alive,
            }
        }
        Sandbox::Runtime(rt) => {
            let api_url = r.text(&rt.api_url, "sandbox.api_url");
            if let Err(e) = crate::backend::api::check_transport(&api_url, rt.allow_insecure_http, "sandbox.api_url") {
                r.problems.push(e);
            }
            let key_var = rt.api_key.0.var_names().first().map(|s| s.to_string()).unwrap_or_default();
            let environment = rt
                .forward_env
                .iter()
                .filter_map(|n| (r.env)(n).filter(|v| !v.is_empty()).map(|v| (n.clone(), v)))
                .collect();
            SandboxSettings::Runtime {
                settings: crate::backend::runtime::RuntimeSettings {
                    api_url,
                    api_key: r.secret(&rt.api_key.0, "sandbox.api_key").unwrap_or_default(),
                    key_var,
                    image: r.text(&rt.image, "sandbox.image"),
                    image_pull_policy: format!("{:?}", rt.image_pull_policy),
                    session_id: rt.session_id.clone(),
                    resource_factor: rt.resource_factor,
                    runtime_class: rt.runtime_class.clone(),
                    target_type: format!("{:?}", rt.target_type).to_lowercase(),
                    environment,
                    init_timeout: rt.init_timeout.0,
                    api_timeout: rt.api_timeout.0,
                    pause_on_close: rt.pause_on_close,
                    working_dir: rt.working_dir.clone(),
                },
                keep_alive: rt.keep_alive,
            }
        }
    };
    // The rehearsal endpoint listens on this machine's loopback: a sandbox elsewhere cannot reach it, and
    // the agent would only retry until its LLM timeout. Say so now instead.
    if rehearsal.is_some() {
        let far = match &sandbox {
            SandboxSettings::Cloud { settings, .. } => Some(settings.api_url.clone()),
            SandboxSettings::Runtime { settings, .. } => Some(settings.api_url.clone()),
            SandboxSettings::Remote { url, .. } => Some(url.clone()),
            _ => None,
        };
        if let Some(url) = far.filter(|u| !u.is_empty() && !is_loopback_url(u)) {
            r.problems.push(format!(
                "--rehearse serves the scripted LLM on this machine's loopback, which a {} sandbox at {url} cannot reach; rehearse with `kind: local` or `kind: docker`",
                spec.sandbox.kind()
            ));
        }
    }
    let mut secrets = Vec::new();
    for name in &spec.secrets {
        match (r.env)(name) {
            Some(v) if !v.is_empty() => {
                r.redactor.add(&v);
                r.secret_names.push(name.clone());
                secrets.push((name.clone(), v));
            }
            _ => r.problems.push(format!("environment variable {name} is not set (listed in `secrets`)")),
        }
    }
    if !r.problems.is_empty() {
        return Err(r.problems);
    }
    Ok(RunSettings { llm, sandbox, secrets, secret_names: r.secret_names, redactor: r.redactor })
}

/// True for http(s) URLs whose host is 127.0.0.0/8, ::1 or localhost.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

struct Resolver<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
    redactor: Redactor,
    secret_names: Vec<String>,
}

impl Resolver<'_> {
    fn text(&mut self, s: &EnvString, what: &str) -> String {
        match s.expand(|n| (self.env)(n)) {
            Ok(v) => v,
            Err(EnvError::Unset { name, message }) => {
                let extra = message.map(|m| format!(": {m}")).unwrap_or_default();
                self.problems.push(format!("environment variable {name} is not set (needed by `{what}`){extra}"));
                String::new()
            }
            Err(e) => {
                self.problems.push(format!("`{what}`: {e}"));
                String::new()
            }
        }
    }

    /// An optional value: unset or empty after expansion means absent.
    fn optional(&mut self, s: Option<&EnvString>, what: &str) -> Option<String> {
        s.map(|s| self.text(s, what)).filter(|v| !v.is_empty())
    }

    fn secret(&mut self, s: &EnvString, what: &str) -> Option<String> {
        self.secret_names.extend(s.var_names().into_iter().map(str::to_string));
        let v = self.text(s, what);
        if v.is_empty() {
            if !self.problems.iter().any(|p| p.contains(what)) {
                self.problems.push(format!("`{what}` is empty"));
            }
            return None;
        }
        self.redactor.add(&v);
        Some(v)
    }
}
