//! The gateway's local view: which connections exist, which rooms they are in, which
//! users they belong to.
//!
//! Each map sits behind its own `std` mutex that is never held across an `.await`;
//! delivering an event either writes it to an idle socket without waiting (see
//! `connection/outlet.rs`) or pushes it onto a bounded channel (`try_send`), so fan-out
//! under the lock never waits on a socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::connection::{Direct, Outlet};
use crate::ws::{self, Shared};
use proto::server::ServerFrame;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the gateway hands a connection's task: one pointer, so a connection's queue
/// costs little while it is empty (its first block of slots is allocated up front).
#[derive(Debug)]
pub enum Outbound {
    /// An event, shared by every local member it goes to.
    Event(Arc<EventOut>),
    /// The dispatcher's answer to one of this connection's commands.
    Reply(Box<ReplyOut>),
    /// An event was written straight to the socket only in part: finish the batch.
    Flush,
}

/// An event for a room, serialised once for every local member.
#[derive(Debug)]
pub struct EventOut {
    pub room: Arc<str>,
    /// The message seq and epoch, for the join filter and duplicate suppression.
    pub seq: Option<u64>,
    pub epoch: Option<Arc<str>>,
    /// The frame: shared bytes, compressed at most once.
    pub text: Shared,
    /// Delivered through the user's binding (a direct message), not the room's.
    pub via_user: bool,
    /// This user was removed from the room (kick or ban): the connection leaves it.
    pub kicked: bool,
}

#[derive(Debug)]
pub struct ReplyOut {
    pub correlation: Option<String>,
    pub frame: ServerFrame,
}

/// A cheap handle on a connection: its outbound queue, its "cut off" switch, and its
/// outlet for direct writes.
#[derive(Clone)]
pub struct ConnHandle {
    pub tx: mpsc::Sender<Outbound>,
    /// Cancelled when the connection's queue overflowed (slow consumer).
    pub slow: CancellationToken,
    /// The connection's socket, for events written without a wake (`None`: queue only).
    pub outlet: Option<Arc<Outlet>>,
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle")
            .field("slow", &self.slow.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl ConnHandle {
    /// Queues without waiting; a full queue marks the connection as a slow consumer.
    /// Returns false when the message was not queued.
    pub fn offer(&self, message: Outbound) -> bool {
        if let Some(outlet) = &self.outlet {
            outlet.queued();
        }
        let refused = match self.tx.try_send(message) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.slow.cancel();
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => true,
        };
        if let (true, Some(outlet)) = (refused, &self.outlet) {
            outlet.dequeued();
        }
        false
    }

    /// An event for this connection: written straight to its socket when it is idle
    /// (what it wrote added to `counts`), queued for its task otherwise.
    pub fn deliver(&self, event: &Arc<EventOut>, counts: &mut ws::Counts) {
        if let Some(outlet) = &self.outlet {
            match outlet.try_direct(event, counts) {
                Direct::Written | Direct::Filtered => return,
                Direct::Rest => {
                    self.offer(Outbound::Flush);
                    return;
                }
                Direct::Queue => {}
            }
        }
        self.offer(Outbound::Event(event.clone()));
    }
}

type Members = HashMap<Arc<str>, ConnHandle>;

/// Connections by session, by room and by user.
#[derive(Default)]
pub struct Index {
    sessions: Mutex<Members>,
    rooms: Mutex<HashMap<String, Members>>,
    users: Mutex<HashMap<String, Members>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the maps half-updated
    // (every update is a single insert or remove), so poisoning is safe to ignore.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts for `/stats` and tests.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Counts {
    pub connections: usize,
    pub rooms: usize,
    pub users: usize,
}

impl Index {
    /// Registers a new connection. Returns true when it is the user's first one here.
    pub fn add_session(&self, session: &Arc<str>, user: &str, handle: ConnHandle) -> bool {
        lock(&self.sessions).insert(session.clone(), handle.clone());
        let mut users = lock(&self.users);
        let entry = users.entry(user.to_owned()).or_default();
        entry.insert(session.clone(), handle);
        entry.len() == 1
    }

    /// Forgets a connection. Returns true when it was the user's last one here.
    pub fn remove_session(&self, session: &Arc<str>, user: &str) -> bool {
        lock(&self.sessions).remove(session);
        let mut users = lock(&self.users);
        match users.get_mut(user) {
            Some(entry) => {
                entry.remove(session);
                if entry.is_empty() {
                    users.remove(user);
                    true
                } else {
                    false
                }
            }
            None => true,
        }
    }

    /// Adds a connection to a room. Returns true when it is the room's first local member.
    pub fn join(&self, room: &str, session: &Arc<str>, handle: ConnHandle) -> bool {
        let mut rooms = lock(&self.rooms);
        let entry = rooms.entry(room.to_owned()).or_default();
        entry.insert(session.clone(), handle);
        entry.len() == 1
    }

    /// Removes a connection from a room. Returns true when no local member is left.
    pub fn leave(&self, room: &str, session: &Arc<str>) -> bool {
        let mut rooms = lock(&self.rooms);
        match rooms.get_mut(room) {
            Some(entry) => {
                entry.remove(session);
                if entry.is_empty() {
                    rooms.remove(room);
                    true
                } else {
                    false
                }
            }
            None => true,
        }
    }

    pub fn room_has_members(&self, room: &str) -> bool {
        lock(&self.rooms).contains_key(room)
    }

    pub fn user_has_sessions(&self, user: &str) -> bool {
        lock(&self.users).contains_key(user)
    }

    /// Every room with at least one local connection (to rebind after a reconnect).
    pub fn rooms(&self) -> Vec<String> {
        lock(&self.rooms).keys().cloned().collect()
    }

    /// Every user with at least one local connection (to register them again).
    pub fn users(&self) -> Vec<String> {
        lock(&self.users).keys().cloned().collect()
    }

    /// Calls `f` with each local member of `room`. Returns how many there were.
    pub fn for_room(&self, room: &str, mut f: impl FnMut(&ConnHandle)) -> usize {
        let rooms = lock(&self.rooms);
        match rooms.get(room) {
            Some(members) => {
                members.values().for_each(&mut f);
                members.len()
            }
            None => 0,
        }
    }

    /// Calls `f` with each local connection of `user`.
    pub fn for_user(&self, user: &str, mut f: impl FnMut(&ConnHandle)) -> usize {
        let users = lock(&self.users);
        match users.get(user) {
            Some(conns) => {
                conns.values().for_each(&mut f);
                conns.len()
            }
            None => 0,
        }
    }

    pub fn session(&self, session: &str) -> Option<ConnHandle> {
        lock(&self.sessions).get(session).cloned()
    }

    /// Every connection (for shutdown).
    pub fn all(&self) -> Vec<ConnHandle> {
        lock(&self.sessions).values().cloned().collect()
    }

    pub fn counts(&self) -> Counts {
        Counts {
            connections: lock(&self.sessions).len(),
            rooms: lock(&self.rooms).len(),
            users: lock(&self.users).len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> (ConnHandle, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(1);
        (
            ConnHandle {
                tx,
                slow: CancellationToken::new(),
                outlet: None,
            },
            rx,
        )
    }

    #[test]
    fn first_and_last_members_are_reported() {
        let index = Index::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert!(index.join("r", &a, handle().0));
        assert!(!index.join("r", &b, handle().0));
        assert!(!index.leave("r", &a));
        assert!(index.leave("r", &b));
        assert!(!index.room_has_members("r"));
        assert_eq!(index.counts().rooms, 0);
    }

    #[test]
    fn sessions_and_users_leave_nothing_behind() {
        let index = Index::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert!(index.add_session(&a, "alice", handle().0));
        assert!(!index.add_session(&b, "alice", handle().0));
        assert!(!index.remove_session(&a, "alice"));
        assert!(index.remove_session(&b, "alice"));
        let c = index.counts();
        assert_eq!((c.connections, c.users, c.rooms), (0, 0, 0));
    }

    #[test]
    fn a_full_queue_marks_the_connection_slow() {
        let (h, _rx) = handle();
        let event = || {
            Outbound::Event(Arc::new(EventOut {
                room: "r".into(),
                seq: None,
                epoch: None,
                text: "x".into(),
                via_user: false,
                kicked: false,
            }))
        };
        assert!(h.offer(event()));
        assert!(!h.slow.is_cancelled());
        assert!(!h.offer(event()));
        assert!(h.slow.is_cancelled());
    }
}
