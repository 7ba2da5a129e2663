//! Per-connection limits that cost the sender, not the server.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes a token if one is available at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts malformed frames in a sliding window: three within ten seconds close the
/// connection (1008).
#[derive(Debug, Default)]
pub struct Strikes {
    at: VecDeque<Instant>,
}

impl Strikes {
    pub const LIMIT: usize = 3;
    pub const WINDOW: Duration = Duration::from_secs(10);

    /// Records a strike; true when the limit is reached.
    pub fn strike(&mut self, now: Instant) -> bool {
        while self
            .at
            .front()
            .is_some_and(|t| now.duration_since(*t) > Self::WINDOW)
        {
            self.at.pop_front();
        }
        self.at.push_back(now);
        self.at.len() >= Self::LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(110)));
        assert!(!b.take(t0 + Duration::from_millis(120)));
    }

    #[test]
    fn three_strikes_in_ten_seconds() {
        let t0 = Instant::now();
        let mut s = Strikes::default();
        assert!(!s.strike(t0));
        assert!(!s.strike(t0 + Duration::from_secs(1)));
        assert!(s.strike(t0 + Duration::from_secs(2)));
        let mut s = Strikes::default();
        assert!(!s.strike(t0));
        assert!(!s.strike(t0 + Duration::from_secs(6)));
        assert!(!s.strike(t0 + Duration::from_secs(12)));
    }
}
