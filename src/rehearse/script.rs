//! The rehearsal script format (YAML):
//!
//! ```yaml
//! usage: { prompt_tokens: 1200, completion_tokens: 80 }   # reported by every reply unless it says otherwise
//! replies:
//!   - tool: terminal                                      # a tool call…
//!     args: { command: ls -la }
//!   - text: Which branch should I use?                    # …or a plain text answer (ends the agent's turn)
//!   - error: { status: 400, message: quota exceeded }     # …or an HTTP error from the "provider"
//!   - tool: finish
//!     args: { message: Done. }
//!     delay: 2s                                           # optional: answer after a pause
//! ```
//!
//! Agent calls take the replies in order across all steps. After the last one, every agent call gets a
//! `finish`, so a short script still ends.

use crate::job::values::HumanDuration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Token usage each reply reports unless it gives its own.
    #[serde(default)]
    pub usage: Usage,
    /// Answers to the agent's LLM calls, in order.
    #[serde(default)]
    pub replies: Vec<Reply>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage { prompt_tokens: 1000, completion_tokens: 100 }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// Tool to call: terminal, file_editor, task_tracker, finish, think, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The tool call's arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// Text content (alone: a plain answer; with `tool`: the thought before the call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Answer with an HTTP error instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    pub status: u16,
    pub message: String,
}

impl Reply {
    pub fn finish(message: &str) -> Reply {
        Reply { tool: Some("finish".into()), args: Some(json!({"message": message})), ..Reply::default() }
    }

    pub fn text(text: &str) -> Reply {
        Reply { text: Some(text.into()), ..Reply::default() }
    }

    /// The assistant message of a chat completion.
    pub fn to_message(&self, call_no: u64) -> Value {
        let mut message = json!({"role": "assistant", "content": self.text});
        if let Some(tool) = &self.tool {
            let args = self.args.clone().unwrap_or_else(|| json!({}));
            message["tool_calls"] = json!([{
                "id": format!("call_{call_no}"),
                "type": "function",
                "function": {"name": tool, "arguments": args.to_string()},
            }]);
        }
        message
    }
}
