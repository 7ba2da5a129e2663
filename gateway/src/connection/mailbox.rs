//! A connection's mailbox: what the rest of the gateway hands a connection ([`Outbound`])
//! and the cheap handle it is handed through ([`ConnHandle`]): the bounded queue to the
//! connection's task, its "cut off" switch, and its outlet for events written straight
//! to an idle socket.

use std::sync::Arc;

use proto::server::ServerFrame;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::outlet::{Direct, Outlet};
use crate::ws::{self, SharedPayload};

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
    pub text: SharedPayload,
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
