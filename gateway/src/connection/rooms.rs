//! A connection's state in each of its rooms: joining (events held until `joined` says
//! where history ends) or joined (the [`SeqFilter`] passes each message once, in
//! order). Read by the connection's task and by the delivery loop's direct writes, under
//! the outlet's lock.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxBuildHasher;

use super::filter::SeqFilter;
use super::mailbox::EventOut;

/// A connection's state in one room.
pub(crate) enum RoomState {
    /// Join sent; events held until `joined` tells where history ends.
    Joining {
        held: Vec<Arc<EventOut>>,
        filter: SeqFilter,
    },
    Joined {
        filter: SeqFilter,
    },
}

/// What to do with an event for one of the connection's rooms.
pub(crate) enum Offered {
    /// Write it now.
    Write,
    /// Nothing to write now: held for a room still joining, or already seen.
    Skip,
    /// Too much held for a room still joining: the client is not keeping up.
    Overflow,
}

/// The connection's rooms.
///
/// FxHash: looked up once per delivery, where SipHash cost more than the rest of the
/// lookup. The map holds at most `gateway.max_rooms_per_connection` keys of one client,
/// so there is no table for an attacker to flood.
#[derive(Default)]
pub(crate) struct Rooms(HashMap<String, RoomState, FxBuildHasher>);

impl Rooms {
    /// Whether the connection is in `room` (joined or joining).
    pub(crate) fn contains(&self, room: &str) -> bool {
        self.0.contains_key(room)
    }

    /// Whether joining `room` would pass `max` rooms.
    pub(crate) fn full_for(&self, room: &str, max: usize) -> bool {
        !self.0.contains_key(room) && self.0.len() >= max
    }

    pub(crate) fn get_mut(&mut self, room: &str) -> Option<&mut RoomState> {
        self.0.get_mut(room)
    }

    /// A join goes out: events are held from now on. A room joined again keeps its
    /// filter, so nothing already delivered is delivered twice.
    pub(crate) fn start_joining(&mut self, room: &str) {
        let filter = match self.0.get(room) {
            Some(RoomState::Joined { filter }) | Some(RoomState::Joining { filter, .. }) => {
                filter.clone()
            }
            None => SeqFilter::default(),
        };
        self.0.insert(
            room.to_owned(),
            RoomState::Joining {
                held: Vec::new(),
                filter,
            },
        );
    }

    /// Forgets `room`; true when the connection was in it.
    pub(crate) fn remove(&mut self, room: &str) -> bool {
        self.0.remove(room).is_some()
    }

    /// Forgets every room and names them.
    pub(crate) fn drain(&mut self) -> Vec<String> {
        self.0.drain().map(|(room, _)| room).collect()
    }

    /// A room event that came through the queue: written, held or skipped. `max_held`
    /// bounds what a room still joining may hold.
    pub(crate) fn offer(&mut self, event: &Arc<EventOut>, max_held: usize) -> Offered {
        match self.0.get_mut(&*event.room) {
            Some(RoomState::Joining { held, .. }) => {
                if held.len() >= max_held {
                    return Offered::Overflow;
                }
                held.push(event.clone());
                Offered::Skip
            }
            Some(RoomState::Joined { filter }) => {
                if filter.admit(event.seq, event.epoch.as_ref()) {
                    Offered::Write
                } else {
                    Offered::Skip
                }
            }
            None if event.via_user => Offered::Write,
            None => Offered::Skip,
        }
    }

    /// `joined` came for `room` at `seq` of `epoch`: the room is joined, and the held
    /// events after that point are returned, in order, to be written after the answer.
    pub(crate) fn joined(&mut self, room: String, seq: u64, epoch: &str) -> Vec<Arc<EventOut>> {
        let mut filter = SeqFilter::at(seq, epoch);
        match self.0.remove(&room) {
            Some(RoomState::Joining { held, .. }) => {
                let passed = held
                    .into_iter()
                    .filter(|event| filter.admit(event.seq, event.epoch.as_ref()))
                    .collect();
                self.0.insert(room, RoomState::Joined { filter });
                passed
            }
            // A second answer to a repeated join: the filter stands.
            Some(joined) => {
                self.0.insert(room, joined);
                Vec::new()
            }
            // Left before the answer came.
            None => Vec::new(),
        }
    }
}
