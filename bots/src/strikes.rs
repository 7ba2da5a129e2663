//! Strikes per (room, user): how many of a user's messages the bot deleted lately.
//!
//! Kept in memory only: a restarted bot starts counting again, which errs on the side
//! of the user. Bounded twice: a strike older than the window is forgotten, and past
//! [`MAX_TRACKED`] pairs the oldest is dropped, so a flood of distinct senders cannot
//! grow the map without end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The most (room, user) pairs remembered at once.
pub const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    last: Instant,
}

#[derive(Debug)]
pub struct Strikes {
    entries: HashMap<(String, String), Entry>,
    window: Duration,
    capacity: usize,
}

impl Strikes {
    pub fn new(window: Duration) -> Strikes {
        Strikes::with_capacity(window, MAX_TRACKED)
    }

    fn with_capacity(window: Duration, capacity: usize) -> Strikes {
        Strikes {
            entries: HashMap::new(),
            window,
            capacity: capacity.max(1),
        }
    }

    /// Counts a strike at `now`; returns the user's strikes in the room, this one included.
    /// A user whose last strike is older than the window starts again at 1.
    pub fn add(&mut self, room: &str, user: &str, now: Instant) -> u32 {
        let key = (room.to_owned(), user.to_owned());
        let count = match self.entries.get(&key) {
            Some(e) if now.saturating_duration_since(e.last) < self.window => e.count + 1,
            _ => 1,
        };
        if !self.entries.contains_key(&key) {
            self.make_room(now);
        }
        self.entries.insert(key, Entry { count, last: now });
        count
    }

    /// Forgets a user's strikes in a room (after a mute).
    pub fn clear(&mut self, room: &str, user: &str) {
        self.entries.remove(&(room.to_owned(), user.to_owned()));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.capacity {
            return;
        }
        let window = self.window;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last) < window);
        while self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn strikes_count_per_room_and_user() {
        let mut s = Strikes::new(MIN);
        let t = Instant::now();
        assert_eq!(s.add("r", "bob", t), 1);
        assert_eq!(s.add("r", "bob", t), 2);
        assert_eq!(s.add("other", "bob", t), 1);
        assert_eq!(s.add("r", "eve", t), 1);
        s.clear("r", "bob");
        assert_eq!(s.add("r", "bob", t), 1);
    }

    #[test]
    fn old_strikes_are_forgotten() {
        let mut s = Strikes::new(MIN);
        let t = Instant::now();
        assert_eq!(s.add("r", "bob", t), 1);
        assert_eq!(s.add("r", "bob", t + MIN / 2), 2);
        assert_eq!(s.add("r", "bob", t + MIN * 2), 1);
    }

    #[test]
    fn the_map_stays_bounded() {
        let mut s = Strikes::with_capacity(MIN, 3);
        let t = Instant::now();
        for (i, user) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            s.add("r", user, t + Duration::from_secs(i as u64));
        }
        assert_eq!(s.len(), 3);
        // The newest survive.
        assert_eq!(s.add("r", "e", t + Duration::from_secs(5)), 2);
    }
}
