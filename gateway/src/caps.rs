//! The connection caps on this gateway: in all, and per user. A handshake takes a
//! [`ConnectionSlot`] before the upgrade; the connection gives it back when it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::user_cap;

/// The connection caps: per gateway and per user.
pub struct Caps {
    max_total: usize,
    max_per_user: usize,
    total: AtomicUsize,
    per_user: Mutex<HashMap<String, usize>>,
}

impl Caps {
    pub fn new(max_total: usize, max_per_user: usize) -> Self {
        Caps {
            max_total,
            max_per_user,
            total: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a slot for `user`, or None when a cap is reached.
    pub fn admit(self: &Arc<Self>, user: &str) -> Option<ConnectionSlot> {
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per_user.get(user).copied().unwrap_or(0);
        if mine >= self.max_per_user || self.total.load(Ordering::Acquire) >= self.max_total {
            return None;
        }
        per_user.insert(user.to_owned(), mine + 1);
        self.total.fetch_add(1, Ordering::AcqRel);
        Some(ConnectionSlot {
            caps: self.clone(),
            user: user.to_owned(),
            place: None,
        })
    }
}

/// A connection's slot under the caps, given back when dropped.
pub struct ConnectionSlot {
    caps: Arc<Caps>,
    user: String,
    /// The place among the user's connections on every gateway, when checked.
    pub place: Option<user_cap::Place>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_user = self.caps.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(&self.user);
            }
        }
        self.caps.total.fetch_sub(1, Ordering::AcqRel);
    }
}
