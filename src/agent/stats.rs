//! Costs and tokens from a conversation's `stats` (`usage_to_metrics`, keyed by usage id). The server
//! computes costs in floating point; each usage id's total is taken to the nearest nano-dollar and summed
//! exactly, so reports never show float noise and step costs add up to the total.

use crate::money::Usd;
use crate::report::{Tokens, Totals};
use serde_json::Value;

/// Σ accumulated cost and tokens over every usage id of a `stats` value, and the number of LLM calls.
pub fn sum_stats(stats: &Value) -> Totals {
    let mut t = Totals::default();
    let Some(usage) = stats.get("usage_to_metrics").and_then(Value::as_object) else { return t };
    for (usage_id, m) in usage {
        let cost = Usd::from_f64(m.get("accumulated_cost").and_then(Value::as_f64).unwrap_or(0.0));
        t.cost += cost;
        t.cost_by_usage.insert(usage_id.clone(), cost);
        if let Some(u) = m.get("accumulated_token_usage") {
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            let usage = Tokens {
                prompt: n("prompt_tokens"),
                completion: n("completion_tokens"),
                cache_read: n("cache_read_tokens"),
                cache_write: n("cache_write_tokens"),
                reasoning: n("reasoning_tokens"),
            };
            // Saturating: absurd counts from a server must not overflow (found by the fuzz driver).
            t.tokens = t.tokens.plus(usage);
        }
        let calls = m.get("costs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        t.llm_calls += calls.len() as u64;
        for call in calls {
            t.largest_call = t.largest_call.max(Usd::from_f64(call.get("cost").and_then(Value::as_f64).unwrap_or(0.0)));
        }
    }
    t
}

/// The conversation's totals as of the last `stats` an event log holds (a run whose report was never
/// written, because ohrun was killed, still spent this). A final partial line is skipped.
pub fn last_stats_in(events_jsonl: &str) -> Option<Totals> {
    events_jsonl.lines().rev().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        stats_in(&v).map(sum_stats)
    })
}

/// Raises `live` to the totals an event's `stats` show, if it carries any; true when that changed them.
/// (A socket `stats` frame has no list of calls, so `llm_calls` grows only with a `full_state`.)
pub fn raise(live: &mut Totals, event: &Value) -> bool {
    let Some(seen) = stats_in(event).map(sum_stats) else { return false };
    let before = (live.cost, live.tokens, live.llm_calls);
    *live = std::mem::take(live).at_least(&seen);
    before != (live.cost, live.tokens, live.llm_calls)
}

/// The `stats` an event carries: a `stats` update, or the stats of a `full_state` snapshot.
pub fn stats_in(event: &Value) -> Option<&Value> {
    if event.get("kind").and_then(Value::as_str) != Some("ConversationStateUpdateEvent") {
        return None;
    }
    match event.get("key").and_then(Value::as_str) {
        Some("stats") => event.get("value"),
        Some("full_state") => event.pointer("/value/stats"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn costs_sum_every_usage_id_exactly() {
        let stats = json!({"usage_to_metrics": {
            "agent": {"accumulated_cost": 0.05351399999999999, "accumulated_token_usage": {"prompt_tokens": 10, "completion_tokens": 2}, "costs": [{"cost": 0.02}, {"cost": 0.033514}]},
            "condenser": {"accumulated_cost": 0.25, "accumulated_token_usage": {"prompt_tokens": 5, "completion_tokens": 1, "cache_read_tokens": 3}, "costs": [{}]}
        }});
        let t = sum_stats(&stats);
        assert_eq!(t.cost.to_string(), "0.303514");
        assert_eq!(serde_json::to_value(&t).unwrap()["cost_by_usage"]["agent"], json!(0.053514));
        assert_eq!(t.tokens.prompt, 15);
        assert_eq!(t.tokens.cache_read, 3);
        assert_eq!(t.llm_calls, 3);
        assert_eq!(t.largest_call.to_string(), "0.033514");
    }

    #[test]
    fn the_last_stats_of_an_event_log_count_and_a_torn_line_does_not() {
        let stats = |cost: f64| json!({"kind": "ConversationStateUpdateEvent", "key": "stats", "value": {"usage_to_metrics": {"agent": {"accumulated_cost": cost, "costs": [{"cost": cost}]}}}});
        let log = format!("{}\n{}\n{{\"kind\": \"Message", stats(0.1), stats(0.3));
        assert_eq!(last_stats_in(&log).unwrap().cost.to_string(), "0.3");
        assert!(last_stats_in("{\"kind\": \"MessageEvent\"}\n").is_none());
    }

    #[test]
    fn absurd_token_counts_saturate() {
        let usage = json!({"accumulated_token_usage": {"prompt_tokens": u64::MAX}});
        let t = sum_stats(&json!({"usage_to_metrics": {"a": usage.clone(), "b": usage}}));
        assert_eq!(t.tokens.prompt, u64::MAX);
    }
}
