//! A connection's way out: its socket's write half, the frames waiting for it, and its
//! per-room state ([`super::rooms`]), shared by the connection's task and the gateway's
//! delivery loop.
//!
//! Fan-out without a wake per member: when nothing is queued for a connection and its
//! batch is empty, the delivery loop writes an event straight to the socket (one
//! vectored write of the frame header and the event's shared bytes, no copy) instead of
//! queueing it and waking the connection's task. Only what the socket does not take at
//! once goes into the batch, and a `Flush` marker wakes the task to finish it under its
//! stall timer, as before. Replies, kicks, events for a room still joining, and events
//! behind anything queued take the queue, so nothing overtakes anything.
//!
//! The lock is taken for a non-blocking write at most (never across an `.await`), and
//! the delivery loop only ever *tries* it: a connection whose task holds it gets the
//! event through its queue. With `gateway.write_coalesce_ms` set, every event takes the
//! queue, so the task can gather a connection's frames into one write.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::net::tcp::OwnedWriteHalf;

use super::mailbox::EventOut;
use super::rooms::{RoomState, Rooms};
use crate::metrics::GatewayMetrics;
use crate::ws::{self, Batch, Counts};

/// What the lock guards.
pub(crate) struct Out {
    pub(crate) batch: Batch,
    pub(crate) rooms: Rooms,
}

pub struct Outlet {
    io: OwnedWriteHalf,
    /// Items offered to the connection's queue and not yet taken into the batch by its
    /// task: while any is, an event written directly would overtake it.
    queued: AtomicUsize,
    /// Direct writes allowed (no write coalescing).
    direct: bool,
    out: Mutex<Out>,
}

/// What [`Outlet::try_direct`] did with an event.
pub enum Direct {
    /// Written whole.
    Written,
    /// Not for this connection (not in the room, or already seen): dropped.
    Filtered,
    /// Partly written: the rest is in the batch; the task must be woken to finish it.
    Rest,
    /// Not written: it goes through the queue.
    Queue,
}

impl Outlet {
    pub(crate) fn new(writer: ws::Writer, direct: bool) -> Outlet {
        Outlet {
            io: writer.io,
            queued: AtomicUsize::new(0),
            direct,
            out: Mutex::new(Out {
                batch: writer.batch,
                rooms: Rooms::default(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Out> {
        // Every update under this lock is a whole step (a frame appended, a room
        // inserted), so a panic cannot leave it half done: poisoning is safe to ignore.
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an item offered to the queue.
    pub fn queued(&self) {
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    /// An offered item was taken into the batch by the task, or the queue refused it.
    pub fn dequeued(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Writes `event` straight to the socket if the connection is idle and joined (or
    /// it is a user's own event); see the module doc. What it wrote is added to
    /// `counts`, which the delivery loop reports once per event, not once per member.
    pub fn try_direct(&self, event: &EventOut, counts: &mut Counts) -> Direct {
        if !self.direct || event.kicked || self.queued.load(Ordering::Acquire) != 0 {
            return Direct::Queue;
        }
        let Ok(mut out) = self.out.try_lock() else {
            return Direct::Queue;
        };
        if out.batch.is_closed() {
            return Direct::Filtered;
        }
        if self.queued.load(Ordering::Acquire) != 0 || !out.batch.is_empty() {
            return Direct::Queue;
        }
        match out.rooms.get_mut(&event.room) {
            Some(RoomState::Joined { filter }) => {
                if !filter.admit(event.seq, event.epoch.as_ref()) {
                    return Direct::Filtered;
                }
            }
            Some(RoomState::Joining { .. }) => return Direct::Queue,
            None if event.via_user => {}
            None => return Direct::Filtered,
        }
        let written = out.batch.write_shared_now(&self.io, &event.text);
        counts.add(out.batch.take_counts());
        match written {
            Ok(true) => Direct::Written,
            // The task finds a failed socket on its next flush.
            Ok(false) | Err(_) => Direct::Rest,
        }
    }

    /// Writes as much of the batch as the socket takes now: true when all of it went.
    pub(crate) fn try_flush(&self) -> io::Result<bool> {
        self.lock().batch.try_flush(&self.io)
    }

    /// Writes the whole batch, waiting for the socket as needed. Cancel-safe.
    pub(crate) async fn flush(&self) -> io::Result<()> {
        loop {
            if self.try_flush()? {
                return Ok(());
            }
            self.io.as_ref().writable().await?;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().batch.is_empty()
    }
}

/// Adds what writers wrote to the gateway's byte and compression counters.
pub fn report(m: &GatewayMetrics, counts: Counts) {
    m.ws_payload_bytes_out.inc_by(counts.bytes_out);
    if counts.bytes_saved > 0 || counts.event_compressions > 0 {
        m.ws_deflate_bytes_saved.inc_by(counts.bytes_saved);
        m.deflate_event_compressions
            .inc_by(counts.event_compressions);
    }
}
