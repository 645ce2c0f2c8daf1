//! The LLM of a job (`llm:`), and of an LLM judge (`verify.checks[].judge.llm`).

use super::values::{EnvString, SecretRef, Usd};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The LLM, as the SDK's `LLM(...)`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmSpec {
    /// litellm model id, e.g. `anthropic/claude-sonnet-4-5-20250929`.
    pub model: EnvString,
    /// OpenAI-compatible base URL, if not the provider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<EnvString>,
    /// API key, as a reference: `${LLM_API_KEY}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretRef>,
    /// Key of this LLM's entry in the cost stats.
    #[serde(default = "LlmSpec::default_usage_id")]
    pub usage_id: String,
    /// Price per input token in USD, overriding litellm's price map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_cost_per_token: Option<Usd>,
    /// Price per output token in USD, overriding litellm's price map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_cost_per_token: Option<Usd>,
    /// Other fields of the SDK's LLM (temperature, max_output_tokens, …), passed through as given.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub options: serde_json::Map<String, Value>,
}

impl LlmSpec {
    fn default_usage_id() -> String {
        "agent".into()
    }
}
