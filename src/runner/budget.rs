//! The budget a whole batch shares (`--max-cost`, `batch.max_cost`), enforced across concurrent runs.
//!
//! Money is spent by the agent-server on its own, one LLM call at a time, so the cap is kept with
//! reservations: every running run holds back the price of one more call (the dearest call seen so far).
//! No run starts and no step is sent once what was spent, what runs are spending now, and those
//! reservations reach the cap; running steps are then stopped. A batch so overshoots by at most the
//! calls already in flight when the cap was reached. The spent total includes earlier attempts and, on
//! resume, what the batch spent before.

use crate::money::Usd;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug)]
pub struct Budget {
    cap: Usd,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Finished attempts (and earlier invocations).
    spent: Usd,
    /// What each running attempt has spent so far, by run id.
    live: HashMap<String, Usd>,
    /// The dearest single LLM call seen: the reservation of each running attempt.
    largest_call: Usd,
}

impl State {
    fn committed(&self) -> Usd {
        self.spent + self.live.values().copied().sum() + reservations(self.largest_call, self.live.len())
    }
}

fn reservations(call: Usd, runs: usize) -> Usd {
    Usd { nanos: call.nanos.saturating_mul(runs as u64) }
}

impl Budget {
    /// A budget of `cap`, of which `spent` is gone already (earlier attempts, a resumed batch).
    pub fn new(cap: Usd, spent: Usd) -> Budget {
        Budget { cap, state: Mutex::new(State { spent, ..State::default() }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cap(&self) -> Usd {
        self.cap
    }

    /// Everything spent so far, running attempts included.
    pub fn spent(&self) -> Usd {
        let s = self.state();
        s.spent + s.live.values().copied().sum()
    }

    /// Starts run `id` if there is room for one more running attempt; false (and nothing started) when not.
    pub fn try_start(&self, id: &str) -> bool {
        let mut s = self.state();
        if s.committed() + s.largest_call >= self.cap {
            return false;
        }
        s.live.insert(id.to_string(), Usd::ZERO);
        true
    }

    /// What run `id` has spent so far (its conversation's running total).
    pub fn update(&self, id: &str, cost: Usd) {
        let mut s = self.state();
        let before = s.live.get(id).copied().unwrap_or_default();
        if cost > before {
            let call = cost.saturating_sub(before);
            s.largest_call = s.largest_call.max(call);
            s.live.insert(id.to_string(), cost);
        }
    }

    /// Run `id`'s attempt ended having spent `cost` (its final total).
    pub fn finish(&self, id: &str, cost: Usd) {
        let mut s = self.state();
        s.live.remove(id);
        s.spent += cost;
    }

    /// No more money for new steps: spent, running and reserved reach the cap.
    pub fn exhausted(&self) -> bool {
        self.state().committed() >= self.cap
    }
}

impl crate::agent::SharedBudget for Budget {
    fn update(&self, run_id: &str, cost: Usd) {
        Budget::update(self, run_id, cost);
    }

    fn exhausted(&self) -> bool {
        Budget::exhausted(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Usd {
        Usd::parse(s).unwrap()
    }

    #[test]
    fn running_runs_reserve_a_call_each() {
        let b = Budget::new(usd("1.00"), usd("0.10"));
        assert!(b.try_start("a") && b.try_start("b"));
        b.update("a", usd("0.20")); // a call of 0.20: now each running run reserves 0.20
        assert!(!b.exhausted()); // 0.10 + 0.20 + 2 × 0.20 = 0.70
        assert!(b.try_start("c")); // 0.70 + 0.20 = 0.90 < 1.00
        assert!(!b.try_start("d")); // 0.10 + 0.20 + 3 × 0.20 = 0.90, + 0.20 ≥ 1.00
        b.update("b", usd("0.15"));
        assert!(b.exhausted()); // 0.10 + 0.35 + 0.60 = 1.05
        b.finish("a", usd("0.20"));
        b.finish("b", usd("0.15"));
        b.finish("c", Usd::ZERO);
        assert_eq!(b.spent(), usd("0.45"));
        assert!(!b.exhausted());
    }
}
