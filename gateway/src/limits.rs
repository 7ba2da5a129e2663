//! Per-connection limits that cost the sender, not the server: the send rate, the
//! frame budget over every inbound frame, and strikes for malformed frames.

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

/// What the frame budget says about one inbound frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget: read it.
    Read,
    /// Over the budget: refuse it (`rate_limited`) without reading it.
    Refuse,
    /// Refused too often: a sustained flood, close the connection (1008).
    Flood,
}

/// Every inbound frame of a connection (text, binary, ping, pong) costs one token of a
/// bucket of `burst` refilled at `rate` per second. A frame that finds the bucket empty
/// is refused; `burst` refusals within [`FrameBudget::WINDOW`] are a flood. So a client
/// that overshoots for a moment gets `rate_limited` and carries on, and one that keeps
/// sending at twice the rate is cut off within seconds, whatever it sends.
#[derive(Debug)]
pub struct FrameBudget {
    bucket: TokenBucket,
    max_refused: u32,
    refused: u32,
    window_start: Instant,
}

impl FrameBudget {
    pub const WINDOW: Duration = Duration::from_secs(10);

    /// The budget of `gateway` settings, never tighter than twice the send budget: a
    /// client sending at its full `sends_per_sec` also joins, reads history and pings,
    /// and must not be cut off by a budget meant for floods.
    pub fn for_gateway(g: &common::settings::GatewaySettings) -> Self {
        FrameBudget::new(
            g.frames_per_sec.max(g.sends_per_sec.saturating_mul(2)),
            g.frames_burst.max(g.burst.saturating_mul(2)),
        )
    }

    pub fn new(rate: u32, burst: u32) -> Self {
        FrameBudget {
            bucket: TokenBucket::new(rate, burst),
            max_refused: burst.max(1),
            refused: 0,
            window_start: Instant::now(),
        }
    }

    /// Charges one frame arriving at `now`.
    pub fn charge(&mut self, now: Instant) -> Verdict {
        if self.bucket.take(now) {
            return Verdict::Read;
        }
        if now.saturating_duration_since(self.window_start) > Self::WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused >= self.max_refused {
            Verdict::Flood
        } else {
            Verdict::Refuse
        }
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

    #[test]
    fn frame_budget_refuses_past_the_burst_then_calls_a_flood() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(10, 5);
        for _ in 0..5 {
            assert_eq!(b.charge(t0), Verdict::Read);
        }
        for _ in 0..4 {
            assert_eq!(b.charge(t0), Verdict::Refuse);
        }
        assert_eq!(b.charge(t0), Verdict::Flood);
    }

    #[test]
    fn frame_budget_forgives_refusals_spread_over_windows() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(1, 2);
        assert_eq!(b.charge(t0), Verdict::Read);
        assert_eq!(b.charge(t0), Verdict::Read);
        assert_eq!(b.charge(t0), Verdict::Refuse);
        // Eleven seconds later the bucket is full again and the window starts over.
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(b.charge(t1), Verdict::Read);
        assert_eq!(b.charge(t1), Verdict::Read);
        assert_eq!(b.charge(t1), Verdict::Refuse);
        assert_eq!(b.charge(t1), Verdict::Flood);
    }
}
