//! The body of `POST /api/conversations`: the SDK's `get_default_agent(llm, cli_mode=...)` with the job's
//! LLM, title generation off (so every LLM call belongs to a step), and the job's secrets.

use crate::job::model::{AgentSpec, JobSpec};
use crate::settings::RunSettings;
use serde_json::{Value, json};

/// The whole create request for conversation `id` working in `working_dir`. `confirm_calls` (a batch
/// budget): the agent stops after each call's action until ohrun lets it go on, so that ohrun admits
/// every LLM call (`runner::budget`).
pub fn conversation_body(
    id: &str,
    spec: &JobSpec,
    settings: &RunSettings,
    working_dir: &str,
    confirm_calls: bool,
) -> Value {
    let policy = if confirm_calls { "AlwaysConfirm" } else { "NeverConfirm" };
    let mut body = json!({
        "conversation_id": id,
        "agent": agent_body(spec, settings),
        "workspace": {"working_dir": working_dir, "kind": "LocalWorkspace"},
        "max_iterations": spec.agent.max_iterations,
        "stuck_detection": true,
        "confirmation_policy": {"kind": policy},
        // Title generation is an extra LLM call that can be billed after the last step ended; off, every
        // call belongs to a step and the reported cost is complete.
        "autotitle": false,
    });
    if !settings.secrets.is_empty() {
        // 1.58 wants a SecretSource object per name (a plain string is refused with 422).
        body["secrets"] = settings
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), json!({"kind": "StaticSecret", "value": v})))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    body
}

/// The `agent` object of `get_default_agent(llm, cli_mode=...)`, with the job's LLM.
pub fn agent_body(spec: &JobSpec, settings: &RunSettings) -> Value {
    let llm = llm_body(settings, &settings.llm.usage_id);
    let tools: Vec<Value> = match &spec.agent.tools {
        Some(t) => t.iter().map(|name| json!({"name": name})).collect(),
        None => AgentSpec::DEFAULT_TOOLS.iter().map(|name| json!({"name": name})).collect(),
    };
    let mut agent = json!({
        "kind": "Agent",
        "llm": llm,
        "tools": tools,
        "system_prompt_kwargs": {"cli_mode": spec.agent.cli_mode, "llm_security_analyzer": true},
    });
    if spec.agent.condenser {
        agent["condenser"] = json!({
            "kind": "LLMSummarizingCondenser",
            "llm": llm_body(settings, "condenser"),
            "max_size": 80,
            "keep_first": 4,
        });
    }
    if let Some(extra) = &spec.agent.system_prompt_extra {
        agent["agent_context"] = json!({"system_message_suffix": extra});
    }
    agent
}

fn llm_body(settings: &RunSettings, usage_id: &str) -> Value {
    let l = &settings.llm;
    let mut llm = serde_json::Map::new();
    for (k, v) in &l.options {
        llm.insert(k.clone(), v.clone());
    }
    llm.insert("model".into(), json!(l.model));
    llm.insert("usage_id".into(), json!(usage_id));
    if let Some(k) = &l.api_key {
        llm.insert("api_key".into(), json!(k));
    }
    if let Some(b) = &l.base_url {
        llm.insert("base_url".into(), json!(b));
    }
    if let Some(p) = l.input_cost_per_token {
        llm.insert("input_cost_per_token".into(), json!(p));
    }
    if let Some(p) = l.output_cost_per_token {
        llm.insert("output_cost_per_token".into(), json!(p));
    }
    Value::Object(llm)
}
