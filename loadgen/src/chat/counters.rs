//! What a chat run counts: per sender, and for the whole run (shared by every task).

use crate::measure::{Count, Errors, Latency, Window};

use super::retry;

/// What one sending member did.
#[derive(Default)]
pub(super) struct SenderStats {
    pub(super) sent: Count,
    pub(super) acked: Count,
    pub(super) refused: Count,
    /// Deliveries of this sender's messages (to anyone).
    pub(super) delivered: Count,
}

/// Counters shared by all tasks of a run.
pub(super) struct RunCounters {
    pub(super) window: Window,
    pub(super) latency: Latency,
    pub(super) ack_latency: Latency,
    pub(super) delivered: Count,
    pub(super) delivered_in_window: Count,
    /// Senders' own copies arriving in the window: messages delivered, not deliveries.
    pub(super) own_in_window: Count,
    pub(super) sent_in_window: Count,
    pub(super) acked_in_window: Count,
    pub(super) server_errors: Errors,
    pub(super) closed: Count,
    pub(super) senders: Vec<SenderStats>,
    /// Messages each reading connection got in the window.
    pub(super) per_reader: Vec<Count>,
    /// Deliveries in each second of the window.
    pub(super) by_second: Vec<Count>,
    /// With `--retry`: pending sends and what each member got.
    pub(super) track: Option<retry::Tracker>,
}
