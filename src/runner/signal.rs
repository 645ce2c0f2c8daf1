//! SIGINT and SIGTERM become a counter the runner watches (through `Cancel`): the first asks for a
//! graceful stop (interrupt the agent, release the sandbox, write the report); a second changes nothing
//! yet; a third exits at once. The policy lives in the runner; this only counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

#[derive(Clone)]
pub struct Signals {
    pub count: watch::Receiver<u32>,
    terminated: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers (needs a tokio runtime).
    pub fn install() -> Signals {
        let (tx, rx) = watch::channel(0u32);
        let terminated = Arc::new(AtomicBool::new(false));
        let term_flag = terminated.clone();
        tokio::spawn(async move {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                return;
            };
            let mut n = 0;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => term_flag.store(true, Ordering::SeqCst),
                }
                n += 1;
                if n >= 3 {
                    std::process::exit(if term_flag.load(Ordering::SeqCst) { 143 } else { 130 });
                }
                let _ = tx.send(n);
            }
        });
        Signals { count: rx, terminated }
    }

    /// The cancellation signal long operations check.
    pub fn cancel(&self) -> crate::cancel::Cancel {
        crate::cancel::Cancel::new(self.count.clone())
    }

    pub fn interrupted(&self) -> bool {
        *self.count.borrow() > 0
    }

    /// SIGTERM rather than SIGINT (exit 143 instead of 130).
    pub fn terminated(&self) -> bool {
        self.terminated.load(Ordering::SeqCst)
    }
}
