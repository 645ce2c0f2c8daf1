//! Talking to an agent-server: REST (`http`), the event WebSocket (`events`), the setup commands
//! (`setup`), the conversation (`conversation`), its steps in order (`steps`), a message sent once and
//! its run started (`send`), what each event says (`classify`) and the wait for a run's end (`step`).

mod classify;
pub mod conversation;
pub mod diff;
pub mod events;
mod gate;
pub mod http;
pub mod patch;
pub mod request;
mod send;
pub mod setup;
pub mod stats;
mod step;
pub mod steps;

pub use classify::read_event;
pub use step::{Limits, REST_GRACE};

use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether the sandbox is still there while a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Alive,
    /// It was paused by the provider and ohrun resumed it (once).
    Resumed,
    /// It is gone for good: why.
    Gone(String),
}

/// Asks the sandbox's provider about it (every backend answers this).
pub trait SandboxProbe: Send + Sync {
    fn probe(&self) -> BoxFuture<'_, Probe>;
}

/// Whether a run may make its next LLM call (send its message, or let its agent go on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Send,
    /// Not yet: another run is finding out what a call costs, or calls under way hold the money back.
    Wait,
    /// The batch's money is gone.
    Refuse,
    /// The model's calls cost nothing to the agent-server (it has no price for it), so no cap can be kept.
    NoPrice,
}

/// A budget several runs share: told what a run has spent so far, it admits each LLM call of a run and
/// says when no money is left.
pub trait SharedBudget: Sync {
    fn update(&self, run_id: &str, cost: crate::money::Usd);
    /// May this run make its next call: now, later, or not at all.
    fn admit(&self, run_id: &str) -> Admission;
    /// A step of this run ended; `answered`: the agent finished its turn (so its calls were billed).
    fn step_ended(&self, run_id: &str, answered: bool);
    /// This run's calls were billed without a price: no call is admitted any more.
    fn no_price(&self);
    fn exhausted(&self) -> bool;
}

/// Why the conversation part of a run could not go on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] http::ApiError),
    /// The event socket could not be opened or authenticated.
    #[error("{0}")]
    Socket(String),
    /// ohrun was asked to stop.
    #[error("interrupted")]
    Interrupted,
}
