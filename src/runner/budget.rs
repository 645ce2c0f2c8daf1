//! The budget a whole batch shares (`--max-cost`, `batch.max_cost`), enforced across concurrent runs.
//!
//! Money is spent by the agent-server on its own, one LLM call at a time, so the cap is kept with
//! reservations: every running run holds back the price of one call (the dearest call seen so far), the
//! one it may be making when the cap is reached. No message is sent once what was spent, what runs are
//! spending now, and those reservations reach the cap; running steps are then stopped (a `/pause`, which
//! the server applies between calls: the overshoot stays within a call as long as the stop reaches the
//! server before the agent's next call returns, which a real model's latency makes the rule). A run
//! starts only if its own reservation fits; while other runs' reservations are what is in the way, it
//! waits for them instead of giving up. Until the price of a call is known (the
//! batch's first call; a resumed batch knows it from before) only one run at a time may send a message,
//! so that runs starting together cannot all spend blind. A batch so overshoots by at most about one
//! call. The spent total includes earlier attempts and, on resume, what the batch spent before.

pub use crate::agent::Admission;
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
    /// A call's price is known: a call was billed, or a step ended (its calls may be free).
    priced: bool,
    /// The run allowed to send while no price is known.
    pioneer: Option<String>,
}

impl State {
    fn committed(&self) -> Usd {
        self.spent + self.live.values().copied().sum() + reservations(self.largest_call, self.live.len())
    }
}

/// How many calls each running run holds back.
const CALLS_HELD: u64 = 1;

fn reservations(call: Usd, runs: usize) -> Usd {
    Usd { nanos: call.nanos.saturating_mul(CALLS_HELD * runs as u64) }
}

impl Budget {
    /// A budget of `cap`, of which `spent` is gone already (earlier attempts, a resumed batch), whose
    /// dearest call so far cost `largest_call` (zero when unknown).
    pub fn new(cap: Usd, spent: Usd, largest_call: Usd) -> Budget {
        let priced = largest_call > Usd::ZERO;
        Budget { cap, state: Mutex::new(State { spent, largest_call, priced, ..State::default() }) }
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

    /// Starts run `id` if there is room for one more running attempt: `Send` (started), `Wait` (only the
    /// running runs' reservations are in the way: try again when one ends), `Refuse` (the money is gone).
    pub fn try_start(&self, id: &str) -> Admission {
        let mut s = self.state();
        let own = reservations(s.largest_call, 1);
        let spending = s.spent + s.live.values().copied().sum();
        if spending + own >= self.cap {
            return Admission::Refuse;
        }
        if s.committed() + own >= self.cap {
            return Admission::Wait;
        }
        s.live.insert(id.to_string(), Usd::ZERO);
        Admission::Send
    }

    /// What run `id` has spent so far (its conversation's running total).
    pub fn update(&self, id: &str, cost: Usd) {
        let mut s = self.state();
        let before = s.live.get(id).copied().unwrap_or_default();
        if cost > before {
            let call = cost.saturating_sub(before);
            s.largest_call = s.largest_call.max(call);
            s.priced = true;
            s.live.insert(id.to_string(), cost);
        }
    }

    /// May run `id` send a message now?
    pub fn admit(&self, id: &str) -> Admission {
        let mut s = self.state();
        if s.committed() >= self.cap {
            return Admission::Refuse;
        }
        if s.priced {
            return Admission::Send;
        }
        match &s.pioneer {
            Some(p) if p != id => Admission::Wait,
            _ => {
                s.pioneer = Some(id.to_string());
                Admission::Send
            }
        }
    }

    /// Run `id`'s step ended: if it was finding out the price and the agent finished its turn, what it
    /// spent is the price (free calls are a price too); a step that ended before any answer (an error, an
    /// interrupt) hands the role on.
    pub fn step_ended(&self, id: &str, answered: bool) {
        let mut s = self.state();
        if s.pioneer.as_deref() == Some(id) {
            if answered {
                s.priced = true;
            } else {
                s.pioneer = None;
            }
        }
    }

    /// Run `id`'s attempt ended having spent `cost` (its final total).
    pub fn finish(&self, id: &str, cost: Usd) {
        let mut s = self.state();
        s.live.remove(id);
        s.spent += cost;
        if s.pioneer.as_deref() == Some(id) {
            s.pioneer = None;
        }
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

    fn admit(&self, run_id: &str) -> Admission {
        Budget::admit(self, run_id)
    }

    fn step_ended(&self, run_id: &str, answered: bool) {
        Budget::step_ended(self, run_id, answered);
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
        let b = Budget::new(usd("1.00"), usd("0.10"), Usd::ZERO);
        assert_eq!((b.try_start("a"), b.try_start("b")), (Admission::Send, Admission::Send));
        b.update("a", usd("0.20")); // a call of 0.20: now each running run reserves 0.20
        assert!(!b.exhausted()); // 0.10 + 0.20 + 2 × 0.20 = 0.70
        assert_eq!(b.try_start("c"), Admission::Send); // 0.70 + 0.20 = 0.90 < 1.00
        // 0.90 + 0.20 reaches 1.00, but only because of the others' reservations: wait for them.
        assert_eq!(b.try_start("d"), Admission::Wait);
        b.update("b", usd("0.15"));
        assert!(b.exhausted()); // 0.10 + 0.35 + 0.60 = 1.05
        assert_eq!(b.admit("c"), Admission::Refuse);
        b.update("c", usd("0.60"));
        assert_eq!(b.try_start("d"), Admission::Refuse, "0.10 + 0.95 spent: no room for a call, ever");
        b.finish("a", usd("0.20"));
        b.finish("b", usd("0.15"));
        b.finish("c", usd("0.60"));
        assert_eq!(b.spent(), usd("1.05"));
    }

    #[test]
    fn one_run_finds_out_the_price_before_the_others_send() {
        let b = Budget::new(usd("1.00"), Usd::ZERO, Usd::ZERO);
        assert_eq!((b.try_start("a"), b.try_start("b")), (Admission::Send, Admission::Send));
        assert_eq!(b.admit("a"), Admission::Send);
        assert_eq!(b.admit("b"), Admission::Wait);
        assert_eq!(b.admit("a"), Admission::Send); // its next step
        b.update("a", usd("0.30"));
        assert_eq!(b.admit("b"), Admission::Send); // 0.30 + 2 × 0.30 < 1.00
        // Free calls are a price as well: the pioneer's step ending is enough.
        let free = Budget::new(usd("1.00"), Usd::ZERO, Usd::ZERO);
        assert_eq!((free.try_start("a"), free.try_start("b")), (Admission::Send, Admission::Send));
        assert_eq!((free.admit("a"), free.admit("b")), (Admission::Send, Admission::Wait));
        free.step_ended("a", true);
        assert_eq!(free.admit("b"), Admission::Send);
        // A pioneer that ends without a price hands the role on.
        let gone = Budget::new(usd("1.00"), Usd::ZERO, Usd::ZERO);
        assert_eq!((gone.try_start("a"), gone.try_start("b")), (Admission::Send, Admission::Send));
        assert_eq!((gone.admit("a"), gone.admit("b")), (Admission::Send, Admission::Wait));
        gone.finish("a", Usd::ZERO);
        assert_eq!(gone.admit("b"), Admission::Send);
        // So does one whose step ended without an answer (no call was billed: nothing was learned).
        let unanswered = Budget::new(usd("1.00"), Usd::ZERO, Usd::ZERO);
        assert_eq!((unanswered.try_start("a"), unanswered.try_start("b")), (Admission::Send, Admission::Send));
        assert_eq!((unanswered.admit("a"), unanswered.admit("b")), (Admission::Send, Admission::Wait));
        unanswered.step_ended("a", false);
        assert_eq!((unanswered.admit("b"), unanswered.admit("a")), (Admission::Send, Admission::Wait));
    }

    #[test]
    fn a_resumed_batch_knows_the_price_of_a_call() {
        let b = Budget::new(usd("0.10"), usd("0.07"), usd("0.03"));
        assert_eq!(b.try_start("a"), Admission::Refuse, "0.07 + a call of 0.03 reaches 0.10");
    }
}
