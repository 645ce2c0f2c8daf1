//! Costs and tokens from a conversation's `stats` (`usage_to_metrics`, keyed by usage id). The server
//! computes costs in floating point; each usage id's total is taken to the nearest nano-dollar and summed
//! exactly, so reports never show float noise and step costs add up to the total.

use crate::money::Usd;
use crate::report::Totals;
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
            t.tokens.prompt += n("prompt_tokens");
            t.tokens.completion += n("completion_tokens");
            t.tokens.cache_read += n("cache_read_tokens");
            t.tokens.cache_write += n("cache_write_tokens");
            t.tokens.reasoning += n("reasoning_tokens");
        }
        t.llm_calls += m.get("costs").and_then(Value::as_array).map(|c| c.len() as u64).unwrap_or(0);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn costs_sum_every_usage_id_exactly() {
        let stats = json!({"usage_to_metrics": {
            "agent": {"accumulated_cost": 0.05351399999999999, "accumulated_token_usage": {"prompt_tokens": 10, "completion_tokens": 2}, "costs": [{}, {}]},
            "condenser": {"accumulated_cost": 0.25, "accumulated_token_usage": {"prompt_tokens": 5, "completion_tokens": 1, "cache_read_tokens": 3}, "costs": [{}]}
        }});
        let t = sum_stats(&stats);
        assert_eq!(t.cost.to_string(), "0.303514");
        assert_eq!(serde_json::to_value(&t).unwrap()["cost_by_usage"]["agent"], json!(0.053514));
        assert_eq!(t.tokens.prompt, 15);
        assert_eq!(t.tokens.cache_read, 3);
        assert_eq!(t.llm_calls, 3);
    }
}
