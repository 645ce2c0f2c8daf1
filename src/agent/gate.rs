//! Every LLM call admitted by the batch's budget. Under a budget the conversation runs in confirmation
//! mode: after each call the agent stops with its action pending (`waiting_for_confirmation`, told by a
//! `full_state` once the run's events are flushed), and ohrun lets it go on (`POST /run`, which runs the
//! action and makes the next call) only once the budget admits that call. So no call starts unless the
//! money for it is held back (`runner::budget`). A lone `finish` or `think` needs no confirmation: such a
//! call follows without a stop, and the budget's check after every `stats` frame covers it.
//!
//! Each stop is known by its pending action's id, so a stale sign of a stop ohrun already let go (a late
//! REST status, a reconnect's snapshot) never lets a call through unadmitted. A `POST /run` that fails
//! (409: the last run is still winding down) waits for the next sign of the same stop. The server counts
//! `max_iterations` per `/run`, and each go-on is one, so ohrun counts the calls and ends the run at the
//! limit as the server would (`MaxIterationsReached`).

use super::http::{AgentClient, ApiError};
use super::{Admission, BoxFuture, SharedBudget};
use crate::money::Usd;
use std::time::{Duration, Instant};

/// The execution status of an agent stopped after a call, its action pending.
pub(super) const WAITING: &str = "waiting_for_confirmation";

/// How soon a call the budget held back (`Wait`) is asked about again: other runs' calls land within
/// moments.
const ASK_AGAIN: Duration = Duration::from_millis(100);

#[derive(Default)]
pub(super) struct Gate {
    /// The action the agent waits on, until ohrun has let it go on.
    pending: Option<String>,
    /// The action whose next call the budget admitted.
    admitted: Option<String>,
    /// The last action ohrun let go on.
    released: Option<String>,
    /// The `POST /run` that lets the agent go on, in flight.
    go_on: Option<BoxFuture<'static, Result<(), ApiError>>>,
    /// Held back by the budget: ask again then.
    ask_at: Option<Instant>,
    /// Calls the agent made in this run after its first (one per go-on).
    went_on: u32,
}

impl Gate {
    /// The agent stopped after a call with `action` (the last action logged) pending. False when that is
    /// no stop ohrun can let go (no action known): the caller then ends the run as the server says.
    pub fn stopped_at(&mut self, action: Option<&str>) -> bool {
        let Some(action) = action else { return false };
        if self.released.as_deref() != Some(action) {
            self.pending = Some(action.to_string());
        }
        true
    }

    /// The agent waits at a stop ohrun has not let go yet.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// The calls the agent made in this run so far (the server counts `max_iterations` per run, and each
    /// go-on is a run of its own there, so ohrun counts them).
    pub fn calls(&self) -> u32 {
        self.went_on + 1
    }

    /// When the budget is to be asked again (a `select!` branch wakes the wait then).
    pub fn ask_at(&self) -> Option<Instant> {
        self.ask_at
    }

    pub fn time_to_ask(&mut self) {
        self.ask_at = None;
    }

    /// At a stop: asks the budget for the next call (`spent`: what the run has spent, from the stop's own
    /// `stats`) and, admitted, lets the agent go on. Returns the budget's refusal (`Refuse`, `NoPrice`),
    /// which ends the step where it stands: no call is under way.
    pub fn advance(
        &mut self,
        budget: &dyn SharedBudget,
        run_id: &str,
        spent: Usd,
        (client, cid): (&AgentClient, &str),
    ) -> Option<Admission> {
        let action = self.pending.clone()?;
        if self.go_on.is_some() || self.ask_at.is_some() {
            return None;
        }
        if self.admitted.as_deref() != Some(action.as_str()) {
            budget.update(run_id, spent);
            match budget.admit(run_id) {
                Admission::Send => self.admitted = Some(action),
                Admission::Wait => {
                    self.ask_at = Some(Instant::now() + ASK_AGAIN);
                    return None;
                }
                refused => return Some(refused),
            }
        }
        let (client, cid) = (client.clone(), cid.to_string());
        self.go_on = Some(Box::pin(async move { client.go_on(&cid).await }));
        None
    }

    /// The `POST /run` in flight, if any (pends forever otherwise, so its `select!` branch stays quiet).
    pub async fn going_on(&mut self) -> Result<(), ApiError> {
        match &mut self.go_on {
            Some(f) => f.await,
            None => std::future::pending().await,
        }
    }

    pub fn is_going_on(&self) -> bool {
        self.go_on.is_some()
    }

    /// The `POST /run` came back. Failed, the same stop is let go at its next sign (its `full_state`, or
    /// REST while the socket is down), without asking the budget twice.
    pub fn went_on(&mut self, result: Result<(), ApiError>) {
        self.go_on = None;
        match result {
            Ok(()) => {
                self.released = self.pending.take();
                self.went_on += 1;
            }
            Err(e) => {
                tracing::info!("letting the agent go on failed ({e}); again at the next sign that it waits");
                self.pending = None;
            }
        }
    }
}
