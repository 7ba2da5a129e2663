//! Gap repair: room events are transient, so the gateway itself makes sure its members
//! see every stored message of a room once, in order.
//!
//! [`Marks`] holds, per room with local members, the last `(epoch, seq)` this gateway
//! passed on. An event that skips ahead means messages were lost on the way (a broker
//! restart drops transient events; a dispatcher may publish out of order): the missing
//! range is read from the room's history in Redis, once for the room, and delivered in
//! order before the event. An event at or below the mark was already passed on (a
//! redelivery, a dispatcher's retry) and is dropped for the whole room at once. After a
//! lost broker link every marked room is read up to its newest message before anything
//! new is consumed.
//!
//! The marks start from the `joined` answers this gateway forwards (the room's seq when
//! the dispatcher handled the join), so even the first event after a join is checked.
//! A room's mark is forgotten when its last local member leaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use common::settings::RedisSettings;
use common::store::redis;
use common::store::RedisConnection;
use proto::keys::Keys;
use proto::server::Message;

/// Where a room stands.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mark {
    epoch: Arc<str>,
    seq: u64,
}

/// What to do with a room's message event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next one (or the first seen, or a new epoch): deliver it.
    Next,
    /// Already passed on: drop it.
    Seen,
    /// Messages `after + 1 .. seq` are missing: deliver them first, then this one.
    Gap { after: u64 },
}

/// The per-room marks. Shared by the consumer (which moves them) and connections
/// (which forget a room when its last local member leaves); the lock is never held
/// across an `.await`.
#[derive(Default)]
pub struct Marks(Mutex<HashMap<String, Mark>>);

impl Marks {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Mark>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `joined` answer: the room stood at `seq` when the dispatcher handled the join.
    /// A room already marked keeps its mark: events up to `seq` may still be on the way,
    /// and if they were lost the next event shows the gap.
    pub fn joined(&self, room: &str, epoch: &str, seq: u64) {
        self.lock().entry(room.to_owned()).or_insert_with(|| Mark {
            epoch: epoch.into(),
            seq,
        });
    }

    /// Judges a message event of `room` and moves the mark past it.
    pub fn judge(&self, room: &str, epoch: &Arc<str>, seq: u64) -> Verdict {
        let mut marks = self.lock();
        let Some(mark) = marks.get_mut(room) else {
            marks.insert(
                room.to_owned(),
                Mark {
                    epoch: epoch.clone(),
                    seq,
                },
            );
            return Verdict::Next;
        };
        if mark.epoch != *epoch {
            // The room's history was lost and started again: nothing to repair from.
            *mark = Mark {
                epoch: epoch.clone(),
                seq,
            };
            return Verdict::Next;
        }
        if seq <= mark.seq {
            return Verdict::Seen;
        }
        let after = mark.seq;
        mark.seq = seq;
        if seq == after + 1 {
            Verdict::Next
        } else {
            Verdict::Gap { after }
        }
    }

    /// Moves a room's mark to a repaired message (after a lost link), if it is newer.
    pub fn advance(&self, room: &str, epoch: &str, seq: u64) -> bool {
        match self.lock().get_mut(room) {
            Some(mark) if &*mark.epoch == epoch && seq > mark.seq => {
                mark.seq = seq;
                true
            }
            _ => false,
        }
    }

    /// Every marked room with where it stands (to read each up to date after a loss).
    pub fn all(&self) -> Vec<(String, String, u64)> {
        self.lock()
            .iter()
            .map(|(room, m)| (room.clone(), m.epoch.to_string(), m.seq))
            .collect()
    }

    /// Forgets `room` (its last local member left).
    pub fn forget(&self, room: &str) {
        self.lock().remove(room);
    }

    /// Forgets every room `keep` says no to.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|room, _| keep(room));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads ranges of a room's history, on a Redis connection made when first needed.
pub struct History {
    settings: RedisSettings,
    conn: Option<RedisConnection>,
}

impl History {
    pub fn new(settings: &RedisSettings) -> History {
        History {
            settings: settings.clone(),
            conn: None,
        }
    }

    /// The stored messages of `room` in `epoch` with `after < seq < before` (`before`
    /// `None`: up to the newest), ascending.
    pub async fn range(
        &mut self,
        room: &str,
        epoch: &str,
        after: u64,
        before: Option<u64>,
    ) -> redis::RedisResult<Vec<Message>> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self
                .conn
                .insert(common::store::connect(&self.settings).await?),
        };
        let upto = before.map_or_else(|| "+inf".to_owned(), |b| format!("({b}"));
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(Keys::new(self.settings.prefix.as_str()).history(room))
            .arg(format!("({after}"))
            .arg(upto);
        // Once more after a failure: the connection reconnects after a dropped one.
        let raw: Vec<String> = match cmd.query_async(conn).await {
            Ok(raw) => raw,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                cmd.query_async(conn).await?
            }
        };
        Ok(raw
            .iter()
            .filter_map(|json| serde_json::from_str::<Message>(json).ok())
            .filter(|m| m.epoch == epoch)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::{Gap, Next, Seen};

    /// What `marks` says of each seq of `epoch` in room "r", in turn.
    fn judged(marks: &Marks, epoch: &str, seqs: &[u64]) -> Vec<Verdict> {
        let epoch: Arc<str> = Arc::from(epoch);
        seqs.iter()
            .map(|&seq| marks.judge("r", &epoch, seq))
            .collect()
    }

    #[test]
    fn the_next_seq_passes_and_a_repeat_is_dropped() {
        let marks = Marks::default();
        marks.joined("r", "a", 5);
        assert_eq!(judged(&marks, "a", &[6, 6, 3, 7]), [Next, Seen, Seen, Next]);
    }

    #[test]
    fn a_skip_is_a_gap_from_the_mark() {
        let marks = Marks::default();
        marks.joined("r", "a", 5);
        // The late ones are then dropped: the repair delivered them.
        assert_eq!(
            judged(&marks, "a", &[9, 7, 10]),
            [Gap { after: 5 }, Seen, Next]
        );
    }

    #[test]
    fn a_later_joined_does_not_move_a_mark_and_a_new_epoch_restarts_it() {
        let marks = Marks::default();
        marks.joined("r", "a", 5);
        marks.joined("r", "a", 8);
        assert_eq!(judged(&marks, "a", &[9]), [Gap { after: 5 }]);
        assert_eq!(judged(&marks, "b", &[1, 2]), [Next, Next]);
        assert!(marks.advance("r", "b", 4));
        assert!(!marks.advance("r", "b", 3));
        marks.forget("r");
        assert!(marks.is_empty());
        // Unmarked: the first event seen starts the mark.
        assert_eq!(judged(&marks, "b", &[40]), [Next]);
    }
}
