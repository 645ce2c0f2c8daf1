//! A cancellation signal that long operations (provisioning, installing, a step) check at their safe
//! points: the first SIGINT/SIGTERM sets it. Operations never get dropped mid-request for it, so whatever
//! they created is known and can be released.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Cancel {
    count: watch::Receiver<u32>,
}

impl Cancel {
    pub fn new(count: watch::Receiver<u32>) -> Cancel {
        Cancel { count }
    }

    /// A signal that never fires (tools and tests that run without signal handling).
    pub fn never() -> Cancel {
        // One sender for all of them, alive for the whole process, so `wait` pends instead of returning.
        static NEVER: std::sync::OnceLock<watch::Sender<u32>> = std::sync::OnceLock::new();
        Cancel { count: NEVER.get_or_init(|| watch::channel(0).0).subscribe() }
    }

    /// How many times ohrun was asked to stop (0: not at all).
    pub fn count(&self) -> u32 {
        *self.count.borrow()
    }

    pub fn is_set(&self) -> bool {
        self.count() > 0
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
    pub async fn sleep(&mut self, d: std::time::Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_set(),
            _ = self.wait() => true,
        }
    }
}
