//! Supervising a service's long-lived link (a broker connection, a Redis registration):
//! [`supervise`] runs it, and when a run fails waits with capped exponential backoff
//! and full jitter ([`Backoff`]) before the next; a run that came up (said so through
//! [`Attempt::healthy`]) starts the waits over from the shortest. Shutdown ends a wait
//! at once, and a run is expected to watch it too and end with `Ok`.
//!
//! Every reconnect loop of Warren is one [`Supervised`] value: the gateway's broker link
//! and liveness registration, the dispatcher's connection, the moderation bot's. What
//! differs between them (what a run does, what a failure clears and logs) is theirs;
//! when to try again is decided here only.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// One run: how many failed before it, the shutdown it watches, and how it says it
/// came up.
#[derive(Debug)]
pub struct Attempt<'a> {
    restarts: u64,
    healthy: bool,
    shutdown: &'a CancellationToken,
}

impl<'a> Attempt<'a> {
    /// Cancelled when the service stops: the run then ends with `Ok`.
    pub fn shutdown(&self) -> &'a CancellationToken {
        self.shutdown
    }

    /// How many runs failed before this one (0 on the first).
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The run is up and working: if it fails later, the next wait is the shortest.
    pub fn healthy(&mut self) {
        self.healthy = true;
    }
}

/// Something [`supervise`] runs again after every failure.
pub trait Supervised {
    /// Why a run failed.
    type Error;

    /// One run, until shutdown (`Ok`) or a failure (`Err`: run again after a wait).
    fn run_once(
        &mut self,
        attempt: &mut Attempt<'_>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// After a failed run and before the wait: log it, clear what the run had set up.
    fn failed(&mut self, error: Self::Error, wait: Duration);
}

/// Runs `task` until a run ends with `Ok` or `shutdown` is cancelled, waiting
/// `backoff` between a failed run and the next.
pub async fn supervise<S: Supervised>(
    task: &mut S,
    mut backoff: Backoff,
    shutdown: &CancellationToken,
) {
    let mut restarts = 0;
    while !shutdown.is_cancelled() {
        let mut attempt = Attempt {
            restarts,
            healthy: false,
            shutdown,
        };
        let error = match task.run_once(&mut attempt).await {
            Ok(()) => return,
            Err(error) => error,
        };
        if attempt.healthy {
            backoff.reset();
        }
        let wait = backoff.next();
        task.failed(error, wait);
        restarts += 1;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// From the `*_backoff_min_ms` / `*_backoff_max_ms` settings.
    pub fn from_millis(min_ms: u64, max_ms: u64) -> Self {
        Backoff::new(Duration::from_millis(min_ms), Duration::from_millis(max_ms))
    }

    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next wait: a random time up to `min * 2^attempt`, capped at `max`, never
    /// below `min`.
    // Not an Iterator: a backoff never ends, and `reset` has no iterator meaning.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Duration {
        let factor = 1u64 << self.attempt.min(20);
        self.attempt = self.attempt.saturating_add(1);
        let cap = (self.min.as_millis() as u64)
            .saturating_mul(factor)
            .min(self.max.as_millis() as u64);
        let floor = self.min.as_millis() as u64;
        let ms = if cap > floor {
            rand::rng().random_range(floor..=cap)
        } else {
            floor
        };
        Duration::from_millis(ms)
    }

    /// Called once a connection is up again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        for _ in 0..50 {
            let d = b.next();
            assert!(
                d >= Duration::from_millis(100) && d <= Duration::from_millis(1000),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }

    /// Fails `fail` times (coming up first on the runs `healthy` names), then stops.
    struct Flaky {
        fail: u64,
        healthy: Vec<u64>,
        waits: Vec<Duration>,
        restarts: Vec<u64>,
    }

    impl Supervised for Flaky {
        type Error = ();

        async fn run_once(&mut self, attempt: &mut Attempt<'_>) -> Result<(), ()> {
            self.restarts.push(attempt.restarts());
            if self.healthy.contains(&attempt.restarts()) {
                attempt.healthy();
            }
            if attempt.restarts() < self.fail {
                Err(())
            } else {
                Ok(())
            }
        }

        fn failed(&mut self, (): (), wait: Duration) {
            self.waits.push(wait);
        }
    }

    #[tokio::test]
    async fn failed_runs_wait_longer_until_one_comes_up() {
        let mut task = Flaky {
            fail: 4,
            healthy: vec![2],
            waits: Vec::new(),
            restarts: Vec::new(),
        };
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_secs(60));
        supervise(&mut task, backoff, &CancellationToken::new()).await;
        assert_eq!(task.restarts, [0, 1, 2, 3, 4]);
        let ms: Vec<u128> = task.waits.iter().map(Duration::as_millis).collect();
        // Up to 1, 2, then 1 again after the run that came up, then up to 2.
        assert!(
            ms[0] == 1 && ms[1] <= 2 && ms[2] == 1 && ms[3] <= 2,
            "{ms:?}"
        );
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait() {
        let mut task = Flaky {
            fail: u64::MAX,
            healthy: Vec::new(),
            waits: Vec::new(),
            restarts: Vec::new(),
        };
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.cancel();
        });
        let backoff = Backoff::from_millis(60_000, 60_000);
        let supervised = supervise(&mut task, backoff, &shutdown);
        tokio::time::timeout(Duration::from_secs(10), supervised)
            .await
            .expect("shutdown ends the wait");
        assert_eq!(task.restarts, [0]);
    }
}
