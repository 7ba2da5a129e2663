//! The gateway's local view: which connections exist, which rooms they are in, which
//! users they belong to. Each entry is a connection's [`ConnHandle`] (its mailbox).
//!
//! Each map sits behind its own `std` mutex that is never held across an `.await`;
//! delivering an event either writes it to an idle socket without waiting (see
//! `connection/outlet.rs`) or pushes it onto a bounded channel (`try_send`), so fan-out
//! under the lock never waits on a socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use crate::connection::mailbox::ConnHandle;

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

/// Adds `session` under `key` (a room or a user). True when it is the key's first.
fn add(
    map: &Mutex<HashMap<String, Members>>,
    key: &str,
    session: &Arc<str>,
    handle: ConnHandle,
) -> bool {
    let mut map = lock(map);
    let entry = map.entry(key.to_owned()).or_default();
    entry.insert(session.clone(), handle);
    entry.len() == 1
}

/// Removes `session` from under `key`, and the key once it has nobody. True when
/// nobody is left under it.
fn remove(map: &Mutex<HashMap<String, Members>>, key: &str, session: &Arc<str>) -> bool {
    let mut map = lock(map);
    let Some(entry) = map.get_mut(key) else {
        return true;
    };
    entry.remove(session);
    if entry.is_empty() {
        map.remove(key);
        return true;
    }
    false
}

/// Calls `f` with each connection under `key`. Returns how many there were.
fn for_each(
    map: &Mutex<HashMap<String, Members>>,
    key: &str,
    mut f: impl FnMut(&ConnHandle),
) -> usize {
    let map = lock(map);
    let Some(members) = map.get(key) else {
        return 0;
    };
    members.values().for_each(&mut f);
    members.len()
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
        add(&self.users, user, session, handle)
    }

    /// Forgets a connection. Returns true when it was the user's last one here.
    pub fn remove_session(&self, session: &Arc<str>, user: &str) -> bool {
        lock(&self.sessions).remove(session);
        remove(&self.users, user, session)
    }

    /// Adds a connection to a room. Returns true when it is the room's first local member.
    pub fn join(&self, room: &str, session: &Arc<str>, handle: ConnHandle) -> bool {
        add(&self.rooms, room, session, handle)
    }

    /// Removes a connection from a room. Returns true when no local member is left.
    pub fn leave(&self, room: &str, session: &Arc<str>) -> bool {
        remove(&self.rooms, room, session)
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
    pub fn for_room(&self, room: &str, f: impl FnMut(&ConnHandle)) -> usize {
        for_each(&self.rooms, room, f)
    }

    /// Calls `f` with each local connection of `user`.
    pub fn for_user(&self, user: &str, f: impl FnMut(&ConnHandle)) -> usize {
        for_each(&self.users, user, f)
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
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    fn handle() -> ConnHandle {
        let (tx, _rx) = mpsc::channel(1);
        ConnHandle {
            tx,
            slow: CancellationToken::new(),
            outlet: None,
        }
    }

    #[test]
    fn first_and_last_members_are_reported() {
        let index = Index::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert!(index.join("r", &a, handle()));
        assert!(!index.join("r", &b, handle()));
        assert!(!index.leave("r", &a));
        assert!(index.leave("r", &b));
        assert!(!index.room_has_members("r"));
        assert_eq!(index.counts().rooms, 0);
    }

    #[test]
    fn sessions_and_users_leave_nothing_behind() {
        let index = Index::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert!(index.add_session(&a, "alice", handle()));
        assert!(!index.add_session(&b, "alice", handle()));
        assert!(!index.remove_session(&a, "alice"));
        assert!(index.remove_session(&b, "alice"));
        let c = index.counts();
        assert_eq!((c.connections, c.users, c.rooms), (0, 0, 0));
    }
}
