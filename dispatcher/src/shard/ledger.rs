//! The bookkeeping of a shard's window, without any I/O: which handled command's batch
//! may be sent now, and which run of commands may be acked.
//!
//! Entries are numbered in delivery order. An entry with a room is sent only when every
//! earlier entry of that room is confirmed (the others are held), so nothing of a room
//! ever overtakes an earlier publish of it, even one refused and sent again. Acks only
//! ever cover the confirmed run at the head: a `multiple` ack of its last entry cannot
//! reach an unconfirmed one. An abandoned entry (left unacked on stop) blocks its room
//! for good: what its room holds or gets later is abandoned too.

use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for an earlier entry of its room to be confirmed.
    Held,
    /// Sent, or waiting to be sent again after a refusal.
    Sending,
    Confirmed,
    /// Left unacked.
    Abandoned,
}

struct Slot<T> {
    item: T,
    room: Option<String>,
    state: State,
}

/// A window of entries carrying `T` each.
pub(super) struct Ledger<T> {
    /// The entry with id `n` is `slots[n - first]`.
    slots: VecDeque<Slot<T>>,
    first: u64,
    /// Per room, its unconfirmed entries in order: the first is sent, the others held.
    rooms: HashMap<String, VecDeque<u64>>,
    /// Rooms with an abandoned entry.
    abandoned: HashSet<String>,
}

impl<T> Ledger<T> {
    pub(super) fn new() -> Ledger<T> {
        Ledger {
            slots: VecDeque::new(),
            first: 0,
            rooms: HashMap::new(),
            abandoned: HashSet::new(),
        }
    }

    fn at(&self, id: u64) -> usize {
        let at = usize::try_from(id - self.first).expect("an id in the window");
        assert!(at < self.slots.len(), "an id in the window");
        at
    }

    pub(super) fn item_mut(&mut self, id: u64) -> &mut T {
        let at = self.at(id);
        &mut self.slots[at].item
    }

    #[cfg(test)]
    fn state(&self, id: u64) -> State {
        self.slots[self.at(id)].state
    }

    /// Adds an entry; `publishes` is false when it has nothing to publish (it is
    /// confirmed at once). Returns its id and whether to send its batch now.
    pub(super) fn push(&mut self, item: T, room: Option<String>, publishes: bool) -> (u64, bool) {
        let id = self.first + self.slots.len() as u64;
        let (room, state) = match room {
            _ if !publishes => (None, State::Confirmed),
            None => (None, State::Sending),
            Some(room) if self.abandoned.contains(&room) => (None, State::Abandoned),
            Some(room) => {
                let queue = self.rooms.entry(room.clone()).or_default();
                queue.push_back(id);
                let state = if queue.len() == 1 {
                    State::Sending
                } else {
                    State::Held
                };
                (Some(room), state)
            }
        };
        self.slots.push_back(Slot { item, room, state });
        (id, state == State::Sending)
    }

    /// Entry `id`'s batch is confirmed. Returns the entry of its room to send next.
    pub(super) fn confirm(&mut self, id: u64) -> Option<u64> {
        let at = self.at(id);
        let slot = &mut self.slots[at];
        debug_assert_eq!(slot.state, State::Sending);
        slot.state = State::Confirmed;
        let room = slot.room.take()?;
        let queue = self.rooms.get_mut(&room)?;
        debug_assert_eq!(queue.front(), Some(&id));
        queue.pop_front();
        let next = queue.front().copied();
        match next {
            Some(next) => {
                let at = self.at(next);
                self.slots[at].state = State::Sending;
            }
            None => {
                self.rooms.remove(&room);
            }
        }
        next
    }

    /// Leaves entry `id` unacked, and with it everything of its room held now or pushed
    /// later: sending those would let them overtake it.
    pub(super) fn abandon(&mut self, id: u64) {
        let at = self.at(id);
        let slot = &mut self.slots[at];
        slot.state = State::Abandoned;
        let Some(room) = slot.room.take() else {
            return;
        };
        for held in self.rooms.remove(&room).unwrap_or_default() {
            let at = self.at(held);
            let slot = &mut self.slots[at];
            if slot.state == State::Held {
                slot.state = State::Abandoned;
                slot.room = None;
            }
        }
        self.abandoned.insert(room);
    }

    /// Pops the confirmed run at the head, oldest first: acking the last covers them all.
    pub(super) fn pop_confirmed(&mut self, mut each: impl FnMut(T)) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.state == State::Confirmed)
        {
            if let Some(slot) = self.slots.pop_front() {
                self.first += 1;
                each(slot.item);
            }
        }
    }

    /// Takes every entry left; with it, whether each was confirmed.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = (T, bool)> + '_ {
        self.rooms.clear();
        self.first += self.slots.len() as u64;
        self.slots
            .drain(..)
            .map(|s| (s.item, s.state == State::Confirmed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(r: &str) -> Option<String> {
        Some(r.to_owned())
    }

    fn popped(l: &mut Ledger<&'static str>) -> Vec<&'static str> {
        let mut out = Vec::new();
        l.pop_confirmed(|item| out.push(item));
        out
    }

    #[test]
    fn a_room_sends_one_batch_at_a_time_in_order_and_others_go_on() {
        let mut l = Ledger::new();
        assert_eq!(l.push("a1", room("a"), true), (0, true));
        assert_eq!(l.push("a2", room("a"), true), (1, false));
        assert_eq!(l.push("b1", room("b"), true), (2, true));
        assert_eq!(l.push("a3", room("a"), true), (3, false));
        assert_eq!(l.push("dead", None, true), (4, true));
        assert_eq!(l.state(1), State::Held);
        // b1 is confirmed before a1: nothing to ack yet, nothing of a released.
        assert_eq!(l.confirm(2), None);
        assert!(popped(&mut l).is_empty());
        // a1 confirmed: a2 goes out (a3 still waits); only a1 may be acked, a2 is not
        // confirmed yet.
        assert_eq!(l.confirm(0), Some(1));
        assert_eq!(l.state(1), State::Sending);
        assert_eq!(l.state(3), State::Held);
        assert_eq!(popped(&mut l), vec!["a1"]);
        assert_eq!(l.confirm(1), Some(3));
        assert_eq!(popped(&mut l), vec!["a2", "b1"]);
        assert_eq!(l.confirm(3), None);
        assert_eq!(popped(&mut l), vec!["a3"]);
        assert_eq!(l.confirm(4), None);
        assert_eq!(popped(&mut l), vec!["dead"]);
        // A room with nothing unconfirmed sends at once again.
        assert_eq!(l.push("a4", room("a"), true), (5, true));
    }

    #[test]
    fn nothing_to_publish_is_confirmed_at_once_but_acked_in_turn() {
        let mut l = Ledger::new();
        assert_eq!(l.push("a1", room("a"), true), (0, true));
        assert_eq!(l.push("quiet", room("a"), false), (1, false));
        assert_eq!(l.state(1), State::Confirmed);
        assert!(popped(&mut l).is_empty());
        assert_eq!(l.confirm(0), None);
        assert_eq!(popped(&mut l), vec!["a1", "quiet"]);
    }

    #[test]
    fn an_abandoned_entry_blocks_its_room_and_is_never_acked() {
        let mut l = Ledger::new();
        l.push("a1", room("a"), true);
        l.push("b1", room("b"), true);
        l.push("a2", room("a"), true);
        l.abandon(0);
        assert_eq!(l.state(2), State::Abandoned);
        // Handled later: abandoned too, never sent.
        assert_eq!(l.push("a3", room("a"), true), (3, false));
        assert_eq!(l.state(3), State::Abandoned);
        assert_eq!(l.confirm(1), None);
        // The head is abandoned: no multiple ack may pass it.
        assert!(popped(&mut l).is_empty());
        let left: Vec<_> = l.drain().collect();
        assert_eq!(
            left,
            vec![("a1", false), ("b1", true), ("a2", false), ("a3", false)]
        );
    }
}
