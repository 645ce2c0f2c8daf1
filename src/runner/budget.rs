//! The budget a whole batch shares (`--max-cost`, `batch.max_cost`), enforced across concurrent runs.
//!
//! The agent-server spends money one LLM call at a time on its own, so ohrun admits every call: under a
//! budget each conversation runs in confirmation mode, the agent stops after each call's action, and ohrun
//! lets it go on — which makes its next call — only when the budget admits that call (`agent/gate.rs`). A
//! step's first call is admitted the same way, before its message is sent. An admitted call holds back a
//! reservation until the run's next call comes up (or its step ends): the dearest call seen so far plus the
//! largest growth from one call of a run to its next seen so far, `L + G`, since calls grow with the
//! context. A call is admitted only while what was spent, what running runs are spending, and every
//! reservation (its own included) stay below the cap. So the batch never spends more than the cap, except
//! by what a call costs beyond its reservation: one that grew by more than any before it, or calls the
//! agent chains without an action to confirm (a lone `think`), which the check after every `stats` frame
//! stops at once, as it stops every running step when the cap is reached.
//!
//! Until the price of a call and its growth are known (a run's first two calls, or a whole step of one)
//! only one run at a time may send, so that runs starting together cannot all spend blind; a resumed batch
//! knows the price from before (`L`), not the growth. A run kept from a call only by other runs'
//! reservations waits for them (they come back when those calls are made) instead of giving up. The spent
//! total includes earlier attempts and, on resume, what the batch spent before; a run's recorded spend
//! never goes down (the larger of its final figure and what its `stats` showed counts).

pub use crate::agent::Admission;
use crate::money::Usd;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug)]
pub struct Budget {
    cap: Usd,
    state: Mutex<State>,
}

/// A call admitted and not yet measured: what it holds back, and what its run had spent before it.
#[derive(Debug, Clone, Copy)]
struct Flight {
    reserved: Usd,
    from: Usd,
}

#[derive(Debug, Default)]
struct State {
    /// Finished attempts (and earlier invocations).
    spent: Usd,
    /// What each running attempt has spent so far, by run id.
    live: HashMap<String, Usd>,
    /// The admitted call of each run that has one under way.
    flights: HashMap<String, Flight>,
    /// Each running run's last measured call.
    last_call: HashMap<String, Usd>,
    /// The dearest call seen (`L`).
    largest_call: Usd,
    /// The largest growth from one call of a run to its next (`G`).
    largest_growth: Usd,
    /// The price and the growth of a call are known: a run made two calls, or a step ended with an answer.
    known: bool,
    /// The run allowed to send while they are not.
    pioneer: Option<String>,
    /// The model has no price: no cap can be kept, nothing more is sent.
    no_price: bool,
}

impl State {
    fn spending(&self) -> Usd {
        self.spent + self.live.values().copied().sum()
    }

    /// Spent, being spent, and what the calls under way still hold back.
    fn committed(&self) -> Usd {
        let held = self.flights.iter().map(|(id, f)| {
            let made = self.live.get(id).copied().unwrap_or_default().saturating_sub(f.from);
            f.reserved.saturating_sub(made)
        });
        self.spending() + held.sum()
    }

    /// What a call is expected to cost at most: the dearest so far plus the largest growth so far.
    fn bound(&self) -> Usd {
        self.largest_call + self.largest_growth
    }

    /// Run `id`'s call under way is over (its next one comes up, or its step ended): its cost is measured.
    fn land(&mut self, id: &str) {
        let Some(flight) = self.flights.remove(id) else { return };
        let call = self.live.get(id).copied().unwrap_or_default().saturating_sub(flight.from);
        if let Some(previous) = self.last_call.insert(id.to_string(), call) {
            self.largest_growth = self.largest_growth.max(call.saturating_sub(previous));
            self.known = true;
        }
        self.largest_call = self.largest_call.max(call);
    }
}

impl Budget {
    /// A budget of `cap`, of which `spent` is gone already (earlier attempts, a resumed batch), whose
    /// dearest call so far cost `largest_call` (zero when unknown).
    pub fn new(cap: Usd, spent: Usd, largest_call: Usd) -> Budget {
        Budget { cap, state: Mutex::new(State { spent, largest_call, ..State::default() }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cap(&self) -> Usd {
        self.cap
    }

    /// Everything spent so far, running attempts included.
    pub fn spent(&self) -> Usd {
        self.state().spending()
    }

    /// Starts run `id` if there is room for one more call: `Send` (started), `Wait` (only the calls under
    /// way are in the way: try again when one is made), `Refuse` (the money is gone), `NoPrice`.
    pub fn try_start(&self, id: &str) -> Admission {
        let mut s = self.state();
        if s.no_price {
            return Admission::NoPrice;
        }
        if s.spending() + s.bound() >= self.cap {
            return Admission::Refuse;
        }
        if s.committed() + s.bound() >= self.cap {
            return Admission::Wait;
        }
        s.live.insert(id.to_string(), Usd::ZERO);
        Admission::Send
    }

    /// What run `id` has spent so far (its conversation's running total; it never goes down).
    pub fn update(&self, id: &str, cost: Usd) {
        let mut s = self.state();
        let live = s.live.entry(id.to_string()).or_default();
        *live = (*live).max(cost);
    }

    /// May run `id` make its next call (send its message, or let its agent go on)? Its call under way,
    /// if any, is measured first. `Send` opens the new call's reservation.
    pub fn admit(&self, id: &str) -> Admission {
        let mut s = self.state();
        s.land(id);
        if s.no_price {
            return Admission::NoPrice;
        }
        let bound = s.bound();
        if s.spending() + bound >= self.cap {
            return Admission::Refuse;
        }
        if s.committed() + bound >= self.cap {
            // Only reservations of calls under way are in the way: they come back once those are made.
            return Admission::Wait;
        }
        if !s.known {
            match &s.pioneer {
                Some(p) if p != id => return Admission::Wait,
                _ => s.pioneer = Some(id.to_string()),
            }
        }
        let from = s.live.get(id).copied().unwrap_or_default();
        s.flights.insert(id.to_string(), Flight { reserved: bound, from });
        Admission::Send
    }

    /// Run `id`'s step ended: its last call is measured. If it was finding out the price and the agent
    /// finished its turn, the price is known (free calls are a price too; the growth is learnt as calls
    /// come); a step that ended before any answer (an error, an interrupt) hands the role on.
    pub fn step_ended(&self, id: &str, answered: bool) {
        let mut s = self.state();
        s.land(id);
        if s.pioneer.as_deref() == Some(id) {
            if answered {
                s.known = true;
            } else {
                s.pioneer = None;
            }
        }
    }

    /// Run `id`'s attempt ended having spent `cost` (its final total; what its `stats` showed, if more).
    pub fn finish(&self, id: &str, cost: Usd) {
        let mut s = self.state();
        let live = s.live.remove(id).unwrap_or_default();
        s.flights.remove(id);
        s.last_call.remove(id);
        s.spent += cost.max(live);
        if s.pioneer.as_deref() == Some(id) {
            s.pioneer = None;
        }
    }

    /// A run's calls were billed without a price: the cap cannot be kept, so no call is admitted any more.
    pub fn no_price(&self) {
        self.state().no_price = true;
    }

    /// What was spent, is being spent and is held back reaches the cap (calls cost more than they held
    /// back): every running step is to stop.
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

    fn no_price(&self) {
        Budget::no_price(self);
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
    fn each_call_under_way_holds_back_the_dearest_call_plus_the_largest_growth() {
        let b = Budget::new(usd("1.00"), Usd::ZERO, Usd::ZERO);
        assert_eq!(b.try_start("a"), Admission::Send);
        assert_eq!(b.admit("a"), Admission::Send);
        b.update("a", usd("0.10"));
        assert_eq!(b.admit("a"), Admission::Send); // first call 0.10: L = 0.10
        b.update("a", usd("0.25"));
        assert_eq!(b.admit("a"), Admission::Send); // second call 0.15: L = 0.15, G = 0.05, known
        assert_eq!(b.state().bound(), usd("0.20"));
        // Spent 0.25, a's call under way holds 0.20: 0.45. b may start and send: 0.45 + 0.20 < 1.00.
        assert_eq!((b.try_start("b"), b.admit("b")), (Admission::Send, Admission::Send));
        assert_eq!(b.try_start("c"), Admission::Send);
        assert_eq!(b.admit("c"), Admission::Send); // 0.25 + 3 × 0.20 = 0.85 < 1.00
        // A fourth call would reach the cap only because of the calls under way: it waits for them.
        assert_eq!(b.try_start("d"), Admission::Wait);
        // a's call cost 0.20 as held back: nothing changes in what is committed.
        b.update("a", usd("0.45"));
        assert!(!b.exhausted());
        // b's call overshoots its reservation (0.40 > 0.20) and takes the batch to the cap: stop.
        b.update("b", usd("0.40"));
        assert!(b.exhausted());
        assert_eq!(b.admit("c"), Admission::Refuse);
    }

    /// Runs whose calls are under way together, each call dearer than the one before by the same growth,
    /// under caps from $0.05 to $1: the batch ends at its cap or below it, never above — also a run alone,
    /// whose every next call is dearer than any seen before it.
    #[test]
    fn runs_whose_calls_grow_never_pass_the_cap() {
        let nanos = |n: u64| Usd { nanos: n };
        // Call k costs $0.004 + k × $0.003: the growth is known after the pioneer's first two calls.
        let call = |k: u64| nanos(4_000_000 + 3_000_000 * k);
        let caps = (0..76).map(|i| nanos(50_000_000 + 12_500_000 * i));
        for (runs, cap) in caps.flat_map(|cap| [(&["a"][..], cap), (&["a", "b", "c", "d", "e", "f"][..], cap)]) {
            let b = Budget::new(cap, Usd::ZERO, Usd::ZERO);
            let mut made: HashMap<&str, (u64, Usd)> = HashMap::new();
            let mut stopped = std::collections::HashSet::new();
            for r in runs {
                assert_eq!(b.try_start(r), Admission::Send);
            }
            while stopped.len() < runs.len() {
                // Every run that may, makes its next call; all of them are under way together.
                let mut admitted = Vec::new();
                for &r in runs {
                    if stopped.contains(r) {
                        continue;
                    }
                    match b.admit(r) {
                        Admission::Send => admitted.push(r),
                        Admission::Wait => {}
                        _ => _ = stopped.insert(r),
                    }
                }
                for r in admitted {
                    let (k, spent) = made.entry(r).or_insert((0, Usd::ZERO));
                    (*k, *spent) = (*k + 1, *spent + call(*k));
                    b.update(r, *spent);
                }
            }
            let total: Usd = made.values().map(|(_, spent)| *spent).sum();
            assert!(total <= cap, "{} runs spent {total} against a cap of {cap}", runs.len());
        }
    }

    #[test]
    fn one_run_finds_out_the_price_and_its_growth_before_the_others_send() {
        let b = Budget::new(usd("1.00"), Usd::ZERO, Usd::ZERO);
        assert_eq!((b.try_start("a"), b.try_start("b")), (Admission::Send, Admission::Send));
        assert_eq!((b.admit("a"), b.admit("b")), (Admission::Send, Admission::Wait));
        b.update("a", usd("0.01"));
        assert_eq!((b.admit("a"), b.admit("b")), (Admission::Send, Admission::Wait), "the growth is not known");
        b.update("a", usd("0.03"));
        assert_eq!((b.admit("a"), b.admit("b")), (Admission::Send, Admission::Send));
        // Free calls are a price as well: the pioneer's step ending with an answer is enough.
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

    #[test]
    fn what_a_run_spent_never_goes_down() {
        let b = Budget::new(usd("1.00"), Usd::ZERO, Usd::ZERO);
        assert_eq!(b.try_start("a"), Admission::Send);
        b.update("a", usd("0.40"));
        b.update("a", usd("0.10")); // a stale reading
        assert_eq!(b.spent(), usd("0.40"));
        b.finish("a", usd("0.20")); // a final figure from a stats read that failed
        assert_eq!(b.spent(), usd("0.40"));
    }

    #[test]
    fn without_a_price_nothing_more_is_admitted() {
        let b = Budget::new(usd("1.00"), Usd::ZERO, Usd::ZERO);
        assert_eq!((b.try_start("a"), b.admit("a")), (Admission::Send, Admission::Send));
        b.no_price();
        assert_eq!((b.admit("a"), b.try_start("b")), (Admission::NoPrice, Admission::NoPrice));
    }
}
