//! Rooms that nobody uses expire (`rooms.idle_expiry_s`).
//!
//! Every key that lives as long as a room gets the same expiry, renewed by whoever uses
//! the room: the dispatcher after each command on it ([`Touched`], flushed every
//! [`RoomsSettings::touch_every`](common::settings::RoomsSettings::touch_every), at most
//! 10 s), and each gateway while the room has a local member. A room that sees neither
//! for the whole period disappears at once, all of it; the next join creates it anew, with
//! a new epoch, so clients reload instead of recovering.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::RoomStore;

/// The rooms commands touched since the last flush.
#[derive(Default)]
pub struct Touched(Mutex<HashSet<String>>);

impl Touched {
    pub fn touch(&self, room: String) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(room);
    }

    fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Renews the touched rooms' expiry every `every`, until `stop` (then once more).
pub async fn run(
    store: RoomStore,
    touched: Arc<Touched>,
    idle: Duration,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            _ = ticks.tick() => false,
        };
        let rooms = touched.take();
        if !rooms.is_empty() {
            if let Err(e) = store.touch_rooms(&rooms, idle).await {
                // Put them back: the next round tries again.
                tracing::warn!(error = %e, rooms = rooms.len(), "room expiry not renewed");
                for room in rooms {
                    touched.touch(room);
                }
            }
        }
        if stopping {
            break;
        }
    }
}
