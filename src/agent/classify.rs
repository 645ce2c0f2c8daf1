//! What a step's wait reads out of each server event: the agent's last error, reply, final message and
//! pending action (`Tracker`), the live cost, and the completion rule's two questions — does this live
//! frame end the run (`terminal_status`), does a reconnect's snapshot show it over (`snapshot_terminal`).
//! Pure functions of the event, so the fuzz driver can feed them anything.

use super::conversation::is_full_state;
use crate::money::Usd;
use crate::report::{StepError, Totals};
use serde_json::Value;

/// What the stream said about this run so far.
#[derive(Default)]
pub(super) struct Tracker {
    pub(super) last_error: Option<StepError>,
    pub(super) text_reply: Option<String>,
    pub(super) final_message: Option<String>,
    /// The id of the last action: the one an agent stopped for a confirmation waits on.
    pub(super) last_action: Option<String>,
}

impl Tracker {
    pub(super) fn track(&mut self, v: &Value, live: &mut Totals) {
        match v.get("kind").and_then(Value::as_str).unwrap_or("") {
            "ConversationErrorEvent" => {
                self.last_error = Some(StepError {
                    code: v.get("code").and_then(Value::as_str).unwrap_or("Error").to_string(),
                    detail: v.get("detail").and_then(Value::as_str).unwrap_or("").to_string(),
                });
            }
            "MessageEvent" if v.get("source").and_then(Value::as_str) == Some("agent") => {
                let text: String = v
                    .pointer("/llm_message/content")
                    .and_then(Value::as_array)
                    .map(|parts| {
                        parts
                            .iter()
                            .filter_map(|p| p.get("text").and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                self.final_message = Some(text.clone()).filter(|t| !t.is_empty());
                self.text_reply = Some(text);
            }
            "ActionEvent" => {
                self.text_reply = None;
                self.last_action = v.get("id").and_then(Value::as_str).map(str::to_string);
                if v.get("tool_name").and_then(Value::as_str) == Some("finish")
                    && let Some(m) = v.pointer("/action/message").and_then(Value::as_str)
                {
                    self.final_message = Some(m.to_string());
                }
            }
            "ConversationStateUpdateEvent" => {
                super::stats::raise(live, v);
            }
            _ => {}
        }
    }
}

/// The status that ends a run, if this live frame carries one.
pub(super) fn terminal_status(v: &Value) -> Option<String> {
    if v.get("kind").and_then(Value::as_str) != Some("ConversationStateUpdateEvent") {
        return None;
    }
    match v.get("key").and_then(Value::as_str) {
        Some("full_state") => {
            let status = v.get("value")?.get("execution_status")?.as_str()?;
            (status != "running").then(|| status.to_string())
        }
        Some("execution_status") => {
            let status = v.get("value")?.as_str()?;
            (status == "error" || status == "stuck").then(|| status.to_string())
        }
        _ => None,
    }
}

/// The status a reconnect's snapshot shows, when it shows the run over (`idle` is before a run).
pub(super) fn snapshot_terminal(v: &Value) -> Option<String> {
    let status = v.pointer("/value/execution_status")?.as_str()?;
    (is_full_state(v) && !matches!(status, "running" | "idle")).then(|| status.to_string())
}

/// What the wait reads out of one server event — the tracker's error, reply and cost, the completion rule,
/// a reconnect snapshot's status — all at once: the fuzz driver (`tests/fuzz.rs`) feeds it mutated
/// events, and none of it may panic whatever the server sends.
#[doc(hidden)]
pub fn read_event(event: &Value) -> (Option<String>, Option<String>, Usd) {
    let (mut tracker, mut live) = (Tracker::default(), Totals::default());
    tracker.track(event, &mut live);
    (terminal_status(event), snapshot_terminal(event), live.cost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(key: &str, value: Value) -> Value {
        json!({"kind": "ConversationStateUpdateEvent", "id": "x", "key": key, "value": value})
    }

    #[test]
    fn completion_rule() {
        // The authoritative end: a non-running full_state.
        assert_eq!(
            terminal_status(&state("full_state", json!({"execution_status": "finished"}))).as_deref(),
            Some("finished")
        );
        assert_eq!(
            terminal_status(&state("full_state", json!({"execution_status": "paused"}))).as_deref(),
            Some("paused")
        );
        assert_eq!(terminal_status(&state("full_state", json!({"execution_status": "running"}))), None);
        // Per-field error and stuck end a step at once; finished and idle never do.
        assert_eq!(terminal_status(&state("execution_status", json!("error"))).as_deref(), Some("error"));
        assert_eq!(terminal_status(&state("execution_status", json!("stuck"))).as_deref(), Some("stuck"));
        assert_eq!(terminal_status(&state("execution_status", json!("finished"))), None);
        assert_eq!(terminal_status(&state("execution_status", json!("idle"))), None);
        assert_eq!(terminal_status(&json!({"kind": "ActionEvent", "id": "y"})), None);
    }

    #[test]
    fn a_reconnect_snapshot_ends_a_run_only_when_it_shows_it_over() {
        assert_eq!(snapshot_terminal(&state("full_state", json!({"execution_status": "idle"}))), None);
        assert_eq!(snapshot_terminal(&state("full_state", json!({"execution_status": "running"}))), None);
        assert_eq!(
            snapshot_terminal(&state("full_state", json!({"execution_status": "finished"}))).as_deref(),
            Some("finished")
        );
    }

    #[test]
    fn questions_errors_and_final_messages_are_tracked() {
        let mut t = Tracker::default();
        let mut cost = Totals::default();
        let msg = json!({"kind": "MessageEvent", "source": "agent", "llm_message": {"content": [{"type": "text", "text": "Which one?"}]}});
        t.track(&msg, &mut cost);
        assert_eq!(t.text_reply.as_deref(), Some("Which one?"));
        assert_eq!(t.final_message.as_deref(), Some("Which one?"));
        t.track(&json!({"kind": "ActionEvent", "tool_name": "finish", "action": {"message": "done"}}), &mut cost);
        assert!(t.text_reply.is_none(), "a later tool call means the turn did not end with the question");
        assert_eq!(t.final_message.as_deref(), Some("done"));
        t.track(&json!({"kind": "ConversationErrorEvent", "code": "X", "detail": "d"}), &mut cost);
        assert_eq!(t.last_error.map(|e| e.code), Some("X".into()));
    }
}
