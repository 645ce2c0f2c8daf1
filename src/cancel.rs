//! A cancellation signal that long operations (provisioning, installing, a step) check at their safe
//! points: the first SIGINT/SIGTERM sets it. Operations never get dropped mid-request for it, so whatever
//! they created is known and can be released.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a graceful stop may take in all before the sandboxes are released (so that ohrun exits
/// within about 10 s, release included, even when a server stops answering).
const STOP_BUDGET: Duration = Duration::from_secs(7);

#[derive(Clone)]
pub struct Cancel {
    count: watch::Receiver<u32>,
    /// When the first signal came: set by whoever sends the count, before the count rises.
    first: Arc<OnceLock<Instant>>,
}

impl Cancel {
    pub fn new(count: watch::Receiver<u32>, first: Arc<OnceLock<Instant>>) -> Cancel {
        Cancel { count, first }
    }

    /// A signal that never fires (tools and tests that run without signal handling).
    pub fn never() -> Cancel {
        // One sender for all of them, alive for the whole process, so `wait` pends instead of returning.
        static NEVER: std::sync::OnceLock<watch::Sender<u32>> = std::sync::OnceLock::new();
        Cancel { count: NEVER.get_or_init(|| watch::channel(0).0).subscribe(), first: Arc::default() }
    }

    /// How many times ohrun was asked to stop (0: not at all).
    pub fn count(&self) -> u32 {
        *self.count.borrow()
    }

    pub fn is_set(&self) -> bool {
        self.count() > 0
    }

    /// The moment by which the graceful part of a stop (the agent coming to rest, the last events, costs,
    /// the conversation's delete) must be over; None until a signal came.
    pub fn stop_deadline(&self) -> Option<Instant> {
        self.first.get().map(|first| *first + STOP_BUDGET)
    }

    /// Resolves when the count rises above `seen` (immediately if it already has).
    pub async fn above(&mut self, seen: u32) {
        let _ = self.count.wait_for(|n| *n > seen).await;
    }

    /// Resolves once cancellation was asked for.
    pub async fn wait(&mut self) {
        self.above(0).await;
    }

    /// Sleeps `d`, or less if cancelled meanwhile; true when it was cancelled.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_set(),
            _ = self.wait() => true,
        }
    }
}
