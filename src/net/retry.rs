//! One retry policy for everything ohrun tries again: provider calls (Cloud, Runtime API), agent-server
//! calls, GitHub calls of a delivery, and a run's attempts after an infrastructure failure. A policy says
//! how many tries, how the wait grows (base, doubling, cap, jitter), how far a server's `Retry-After` is
//! honoured; a [`Retry`] class says whether a failed request may be sent again at all. "Never create
//! twice" stays with the caller: a create whose failure is [`Retry::Unclear`] is not idempotent, so the
//! policy does not repeat it, and the provider code looks for what it may have made first
//! (`backend::provider::create_never_blind`).

use crate::cancel::Cancel;
use std::time::{Duration, Instant};

/// What a failure says about sending the same request again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Refused before the server acted on it (429, a rate limit): any request may be sent again.
    Refused,
    /// May pass, but the server may have acted (5xx, no answer, a timeout): only a request that is
    /// harmless to repeat (a read, a PUT or PATCH of one resource) is sent again.
    Unclear,
    /// Will not pass by waiting (a 4xx other than 429, a refused key).
    Never,
}

impl Retry {
    /// The class of an HTTP answer's status, `None` when no answer came.
    pub fn of_status(status: Option<u16>) -> Retry {
        match status {
            None => Retry::Unclear,
            Some(429) => Retry::Refused,
            Some(s) if s >= 500 => Retry::Unclear,
            Some(_) => Retry::Never,
        }
    }

    /// Whether a request that failed so may be sent again.
    pub fn allows(self, idempotent: bool) -> bool {
        match self {
            Retry::Refused => true,
            Retry::Unclear => idempotent,
            Retry::Never => false,
        }
    }

    /// Worth another try later (busy, failing or silent), whoever decides whether to send it.
    pub fn is_transient(self) -> bool {
        self != Retry::Never
    }
}

/// A failure a policy can judge.
pub trait Failure {
    fn retry(&self) -> Retry;
    /// How long the server asked to wait, when it said.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// What to do with a `Retry-After` longer than [`RetryPolicy::max_retry_after`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongWait {
    /// Wait the longest honoured, then ask again (an agent-server or a provider that is busy for now).
    Shorten,
    /// Give up: the limit lasts longer than this call may (GitHub's hourly rate limit; resume later).
    GiveUp,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first one included.
    pub tries: u32,
    /// The wait before the second try; it doubles for each further one, up to `cap`.
    pub base: Duration,
    pub cap: Duration,
    /// Each wait is scaled by a random factor in 1 ± `jitter`, so that many clients do not retry in step.
    pub jitter: f64,
    /// The longest `Retry-After` honoured as it is.
    pub max_retry_after: Duration,
    pub long_wait: LongWait,
}

impl RetryPolicy {
    /// Cloud and Runtime API calls: 0.5 s, 1 s, 2 s, … 10 s over six tries; a provider asking for more
    /// than a minute is asked again after one.
    pub const PROVIDER: RetryPolicy = RetryPolicy {
        tries: 6,
        base: Duration::from_millis(500),
        cap: Duration::from_secs(10),
        jitter: 0.25,
        max_retry_after: Duration::from_secs(60),
        long_wait: LongWait::Shorten,
    };

    /// Agent-server reads: three tries, and at most 10 s for a server's Retry-After (the run's own
    /// limits bound the rest; a server that stays busy longer fails the read).
    pub const AGENT_READ: RetryPolicy =
        RetryPolicy { tries: 3, max_retry_after: Duration::from_secs(10), ..Self::PROVIDER };

    /// The calls a step cannot do without (send the message, start the run, create the conversation):
    /// five tries; between them the step asks the provider whether the sandbox is still there.
    pub const AGENT_ESSENTIAL: RetryPolicy = RetryPolicy { tries: 5, ..Self::AGENT_READ };

    /// An agent-server at its limit of runs at once (`max_concurrent_runs`, 10 by default in 1.58.2:
    /// creates and `/run`s beyond it are refused with 429 until another conversation's run ends): asked
    /// again every few seconds for as long as the caller's time allows, not a number of tries.
    pub const AGENT_BUSY: RetryPolicy =
        RetryPolicy { tries: u32::MAX, cap: Duration::from_secs(4), ..Self::AGENT_READ };

    /// The event socket, reconnected for as long as its step lasts: 250 ms doubling to 5 s, jittered so
    /// that the sockets of thousands of runs on one server that dropped together do not come back together.
    pub const EVENT_SOCKET: RetryPolicy = RetryPolicy {
        tries: u32::MAX,
        base: Duration::from_millis(250),
        cap: Duration::from_secs(5),
        ..Self::PROVIDER
    };

    /// A quick second look (a remote server's `/health`, a command just sent looked up by its tag): a few
    /// tries at `every`, no doubling — what is looked for is expected within seconds or not at all.
    pub const fn every(tries: u32, every: Duration) -> RetryPolicy {
        RetryPolicy {
            tries,
            base: every,
            cap: every,
            jitter: 0.0,
            max_retry_after: Duration::ZERO,
            long_wait: LongWait::Shorten,
        }
    }

    /// GitHub's REST API: a rate limit is waited out up to 2 minutes, a longer one fails the delivery
    /// (it can be resumed after the reset).
    pub const GITHUB: RetryPolicy = RetryPolicy {
        tries: 5,
        max_retry_after: Duration::from_secs(120),
        long_wait: LongWait::GiveUp,
        ..Self::PROVIDER
    };

    /// A run's attempts after an infrastructure failure: `retries` more, starting at the job's `backoff`
    /// (`retries.backoff`) and doubling without a practical cap.
    pub fn attempts(retries: u32, base: Duration) -> RetryPolicy {
        RetryPolicy {
            tries: retries.saturating_add(1),
            base,
            cap: base.saturating_mul(1 << 10),
            jitter: 0.25,
            max_retry_after: Duration::ZERO,
            long_wait: LongWait::Shorten,
        }
    }

    /// The wait after failed try number `attempt` (1-based) with no word from the server: `base`,
    /// doubling, at most `cap`, then jittered.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self.base.saturating_mul(1 << attempt.saturating_sub(1).min(20));
        doubled.min(self.cap).mul_f64(1.0 - self.jitter + fastrand::f64() * 2.0 * self.jitter)
    }

    /// The wait before the next try after try number `attempt` failed, given the server's Retry-After;
    /// `None` when no try is left (or the server asks for longer than this policy waits).
    pub fn next_wait(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempt >= self.tries {
            return None;
        }
        match retry_after {
            Some(d) if d > self.max_retry_after && self.long_wait == LongWait::GiveUp => None,
            Some(d) => Some(d.min(self.max_retry_after)),
            None => Some(self.backoff(attempt)),
        }
    }

    /// Calls `once` until it succeeds or fails for good: a failure its class does not allow to repeat
    /// (see [`Retry::allows`] with `idempotent`), no try left, a wait that would pass `deadline`, or
    /// `cancel` firing before or during a wait. `on_retry` hears of each retry before its wait (the
    /// report's retry log). The last failure is returned as it is.
    pub async fn run<T, E, F, Fut>(
        &self,
        idempotent: bool,
        deadline: Option<Instant>,
        cancel: &mut Cancel,
        mut once: F,
        mut on_retry: impl FnMut(u32, &E, Duration),
    ) -> Result<T, E>
    where
        E: Failure,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match once().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Some(wait) = self.wait_for(attempt, &failure, idempotent, deadline) else { return Err(failure) };
            if cancel.is_set() {
                return Err(failure);
            }
            on_retry(attempt, &failure, wait);
            if cancel.sleep(wait).await {
                return Err(failure);
            }
        }
    }

    /// Calls `once` up to `tries` times, `backoff` apart, until it gives something: a second look where a
    /// miss only means "not yet" (no failure to classify, no Retry-After).
    pub async fn first_some<T, Fut: Future<Output = Option<T>>>(&self, mut once: impl FnMut() -> Fut) -> Option<T> {
        for attempt in 1..=self.tries {
            if let Some(found) = once().await {
                return Some(found);
            }
            if attempt < self.tries {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
        }
        None
    }

    /// The wait before another try after `failure`, or `None` when there is to be none (its class, the
    /// tries, the deadline).
    pub fn wait_for<E: Failure>(
        &self,
        attempt: u32,
        failure: &E,
        idempotent: bool,
        deadline: Option<Instant>,
    ) -> Option<Duration> {
        if !failure.retry().allows(idempotent) {
            return None;
        }
        let wait = self.next_wait(attempt, failure.retry_after())?;
        let too_late = deadline.is_some_and(|d| Instant::now() + wait >= d);
        (!too_late).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fails(Option<u16>, Option<Duration>);
    impl Failure for Fails {
        fn retry(&self) -> Retry {
            Retry::of_status(self.0)
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }

    #[test]
    fn classes_decide_what_may_be_sent_again() {
        assert!(Retry::of_status(Some(429)).allows(false), "a 429 did nothing: even a create is repeated");
        assert!(!Retry::of_status(Some(502)).allows(false), "a 5xx may come after the work was done");
        assert!(Retry::of_status(None).allows(true));
        assert!(!Retry::of_status(Some(404)).allows(true));
        assert!(!Retry::of_status(Some(404)).is_transient());
    }

    #[test]
    fn waits_double_up_to_the_cap_within_the_jitter() {
        let p = RetryPolicy::PROVIDER;
        for (attempt, nominal) in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 10.0), (30, 10.0)] {
            let w = p.backoff(attempt).as_secs_f64();
            assert!(w >= nominal * 0.75 && w <= nominal * 1.25, "attempt {attempt}: {w}");
        }
        let runs = RetryPolicy::attempts(3, Duration::from_secs(2));
        assert_eq!(runs.tries, 4);
        assert!(runs.backoff(3) >= Duration::from_secs(6), "2 s doubled twice, less a quarter");
    }

    #[test]
    fn retry_after_is_honoured_shortened_or_given_up_on() {
        let long = Some(Duration::from_secs(3600));
        assert_eq!(RetryPolicy::PROVIDER.next_wait(1, Some(Duration::from_secs(3))), Some(Duration::from_secs(3)));
        assert_eq!(RetryPolicy::AGENT_READ.next_wait(1, long), Some(Duration::from_secs(10)));
        assert_eq!(RetryPolicy::GITHUB.next_wait(1, long), None, "an hour-long rate limit fails the call");
        assert_eq!(RetryPolicy::AGENT_READ.next_wait(3, None), None, "three tries in all");
    }

    #[test]
    fn a_deadline_or_a_class_stops_the_retries() {
        let p = RetryPolicy::PROVIDER;
        let soon = Some(Instant::now() + Duration::from_millis(100));
        assert_eq!(p.wait_for(1, &Fails(Some(503), None), true, soon), None);
        assert_eq!(p.wait_for(1, &Fails(Some(503), None), false, None), None);
        assert!(p.wait_for(1, &Fails(Some(429), None), false, None).is_some());
    }

    #[tokio::test]
    async fn run_tries_until_it_works_and_logs_each_retry() {
        let mut tries = 0;
        let mut log = Vec::new();
        let quick = RetryPolicy { base: Duration::from_millis(1), ..RetryPolicy::PROVIDER };
        let result: Result<u32, Fails> = quick
            .run(
                true,
                None,
                &mut Cancel::never(),
                || {
                    tries += 1;
                    let n = tries;
                    async move { if n < 3 { Err(Fails(None, None)) } else { Ok(n) } }
                },
                |attempt, _, _| log.push(attempt),
            )
            .await;
        assert_eq!(result.ok(), Some(3));
        assert_eq!(log, [1, 2]);
    }

    #[tokio::test]
    async fn run_stops_at_once_when_cancelled() {
        let (tx, rx) = tokio::sync::watch::channel(1);
        let mut calls = 0;
        let result: Result<(), Fails> = RetryPolicy::PROVIDER
            .run(
                true,
                None,
                &mut Cancel::new(rx, Default::default()),
                || {
                    calls += 1;
                    async { Err(Fails(Some(503), None)) }
                },
                |_, _, _| {},
            )
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "no second try once ohrun is stopping");
        drop(tx);
    }

    #[tokio::test]
    async fn a_second_look_stops_at_the_first_find_and_after_its_tries() {
        let quick = RetryPolicy::every(3, Duration::from_millis(1));
        let mut calls = 0;
        let found = quick.first_some(|| {
            calls += 1;
            std::future::ready((calls == 2).then_some(calls))
        });
        assert_eq!(found.await, Some(2));
        let mut calls = 0;
        let never = quick.first_some(|| {
            calls += 1;
            std::future::ready(None::<()>)
        });
        assert_eq!(never.await, None);
        assert_eq!(calls, 3);
    }
}
