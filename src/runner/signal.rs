//! SIGINT, SIGTERM and SIGHUP (the terminal went away) become a counter the runner watches (through
//! `Cancel`): the first asks for a graceful stop (interrupt the agent, release the sandbox, write the
//! report); a second stops waiting for the agent to come to rest (the sandbox is still released); a third
//! exits at once — after saying which sandboxes may be left (their checkpoint logs and the sandbox
//! ledger name them; `ohrun gc` removes them), with exit 5 when there are any. The policy lives in the
//! runner; this only counts, and keeps the list of sandboxes under way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Clone)]
pub struct Signals {
    pub count: watch::Receiver<u32>,
    /// When the first signal came (what `Cancel::stop_deadline` counts from).
    first: Arc<std::sync::OnceLock<std::time::Instant>>,
    terminated: Arc<AtomicBool>,
    under_way: UnderWay,
}

/// Sandboxes that exist beyond ohrun (a container, a provider's sandbox), by run id: what to say of each
/// if ohrun has to exit before releasing it. Filled by the runs' ledger slots ([`Signals::watcher`]).
#[derive(Clone, Default)]
struct UnderWay(Arc<Mutex<BTreeMap<String, String>>>);

impl UnderWay {
    fn set(&self, run_id: &str, what: Option<String>) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match what {
            Some(w) => list.insert(run_id.to_string(), w),
            None => list.remove(run_id),
        };
    }

    fn list(&self) -> BTreeMap<String, String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The third signal: no more waiting. Says what may be left, then exits (5 when something may be).
fn exit_now(terminated: bool, under_way: &UnderWay) -> ! {
    let left = under_way.list();
    if left.is_empty() {
        std::process::exit(if terminated { 143 } else { 130 });
    }
    // Written without panicking: after a hangup the terminal may be gone (EIO).
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    for (run, what) in &left {
        let line = format!("error: [{run}] ohrun exits now; may still be running: {what}");
        let _ = writeln!(err, "{}", crate::report::redact::apply(&line));
    }
    let hint = "hint: run `ohrun gc` to remove what is left (the sandbox ledger names it), or next time signal once and let ohrun release it";
    let _ = writeln!(err, "{hint}");
    std::process::exit(crate::exit_code::ExitCode::for_class(crate::report::OutcomeClass::LeftBehind, terminated));
}

/// Whether SIGHUP is ignored (as `nohup` leaves it), asked without changing it.
fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current disposition into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

impl Signals {
    /// Installs the handlers (needs a tokio runtime).
    pub fn install() -> Signals {
        let (tx, rx) = watch::channel(0u32);
        let terminated = Arc::new(AtomicBool::new(false));
        let term_flag = terminated.clone();
        let under_way = UnderWay::default();
        let first = Arc::new(std::sync::OnceLock::new());
        let first_set = first.clone();
        let left = under_way.clone();
        // A handler would replace `nohup`'s "ignore": SIGHUP is handled only when it is not ignored.
        let hangups_wanted = !hangup_ignored();
        // The streams are made here, before the task runs, and kept: a signal that arrives between two
        // passes of the loop is queued on its stream, never lost (a `ctrl_c()` made anew on each pass
        // would miss one that came while the previous one was being counted).
        use tokio::signal::unix::{SignalKind, signal};
        let streams = signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
        let mut hangup = if hangups_wanted { signal(SignalKind::hangup()).ok() } else { None };
        tokio::spawn(async move {
            let Ok((mut interrupt, mut term)) = streams else { return };
            let mut n = 0;
            loop {
                tokio::select! {
                    Some(_) = interrupt.recv() => {}
                    // A hangup counts once (a closing terminal may send it twice).
                    Some(_) = async { hangup.as_mut()?.recv().await } => hangup = None,
                    Some(_) = term.recv() => term_flag.store(true, Ordering::SeqCst),
                    else => return,
                }
                n += 1;
                let _ = first_set.set(std::time::Instant::now());
                if n >= 3 {
                    exit_now(term_flag.load(Ordering::SeqCst), &left);
                }
                let _ = tx.send(n);
            }
        });
        Signals { count: rx, first, terminated, under_way }
    }

    /// The cancellation signal long operations check.
    pub fn cancel(&self) -> crate::cancel::Cancel {
        crate::cancel::Cancel::new(self.count.clone(), self.first.clone())
    }

    pub fn interrupted(&self) -> bool {
        *self.count.borrow() > 0
    }

    /// What the runs' ledger slots tell of the sandboxes they hold, for the third signal's list.
    pub fn watcher(&self) -> crate::ledger::Watcher {
        let under_way = self.under_way.clone();
        Arc::new(move |run_id, what| under_way.set(run_id, what))
    }

    /// Run `run_id` released its sandbox (or kept it on purpose, or had none).
    pub fn released(&self, run_id: &str) {
        self.under_way.set(run_id, None);
    }

    /// SIGTERM rather than SIGINT (exit 143 instead of 130).
    pub fn terminated(&self) -> bool {
        self.terminated.load(Ordering::SeqCst)
    }
}
