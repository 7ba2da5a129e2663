//! What history a `joined` answer carries.
//!
//! A client that rejoins with `since` (the last seq it saw) and the `epoch` it belongs to
//! should get exactly the messages it missed, and `recovered: true` only when all of them
//! are still in history. Anything else — no `since`, another epoch (the store lost the
//! room), a `since` the room never reached, missed messages already trimmed — gets the
//! newest `history_on_join` messages and `recovered: false`, and the client reloads.
//!
//! A message a moderator deleted is not missed: it is simply no longer in history. What
//! tells a deletion from a loss is the room's floor, the highest seq ever trimmed: the
//! rejoin is recovered when nothing after `since` was trimmed and every stored entry in
//! the range could be read.

use crate::store::Missed;

/// Which messages a join should fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backfill {
    /// Every message with `after < seq <= latest`.
    Missed { after: u64 },
    /// The newest `history_on_join` messages.
    Recent,
}

/// Decides from the client's `since`/`epoch` and the room's epoch and latest seq.
pub fn backfill(
    since: Option<u64>,
    client_epoch: Option<&str>,
    room_epoch: &str,
    latest: u64,
) -> Backfill {
    // `epoch` is optional: `since` alone is read in the room's current epoch.
    match (since, client_epoch) {
        (Some(after), epoch) if epoch.is_none_or(|e| e == room_epoch) && after <= latest => {
            Backfill::Missed { after }
        }
        _ => Backfill::Recent,
    }
}

/// True when `missed` holds every message after `after` up to `latest` that was not
/// deleted: none trimmed, none unreadable, all in range and ascending.
pub fn is_complete(after: u64, latest: u64, missed: &Missed) -> bool {
    let mut last = after;
    let ordered = missed.messages.iter().all(|m| {
        let fits = m.seq > last && m.seq <= latest;
        last = m.seq;
        fits
    });
    missed.floor <= after && missed.unreadable == 0 && ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::msgs;

    fn missed(seqs: &[u64], floor: u64, unreadable: usize) -> Missed {
        Missed {
            messages: msgs(seqs),
            unreadable,
            floor,
        }
    }

    #[test]
    fn since_in_the_same_epoch_asks_for_the_missed_messages() {
        assert_eq!(
            backfill(Some(3), Some("e"), "e", 7),
            Backfill::Missed { after: 3 }
        );
        assert_eq!(
            backfill(Some(7), Some("e"), "e", 7),
            Backfill::Missed { after: 7 }
        );
        assert_eq!(
            backfill(Some(0), Some("e"), "e", 0),
            Backfill::Missed { after: 0 }
        );
    }

    #[test]
    fn anything_else_gets_recent_history() {
        assert_eq!(backfill(None, None, "e", 7), Backfill::Recent);
        assert_eq!(backfill(None, Some("e"), "e", 7), Backfill::Recent);
        // `epoch` is optional: `since` alone recovers in the room's current epoch.
        assert_eq!(
            backfill(Some(3), None, "e", 7),
            Backfill::Missed { after: 3 }
        );
        assert_eq!(backfill(Some(3), Some("old"), "e", 7), Backfill::Recent);
        // A since the room never reached: the room was reset under the same epoch.
        assert_eq!(backfill(Some(9), Some("e"), "e", 7), Backfill::Recent);
    }

    #[test]
    fn complete_means_nothing_missed_was_trimmed_or_unreadable() {
        assert!(is_complete(3, 6, &missed(&[4, 5, 6], 0, 0)));
        assert!(is_complete(6, 6, &missed(&[], 6, 0)));
        // Trimmed: 4 is gone, and the floor says so.
        assert!(!is_complete(3, 6, &missed(&[5, 6], 4, 0)));
        // Deleted: 5 is gone, but nothing after 3 was trimmed.
        assert!(is_complete(3, 6, &missed(&[4, 6], 3, 0)));
        // An unreadable entry was skipped.
        assert!(!is_complete(3, 6, &missed(&[4, 6], 0, 1)));
        // Out of range or out of order: not what was asked for.
        assert!(!is_complete(3, 6, &missed(&[4, 6, 7], 0, 0)));
        assert!(!is_complete(3, 6, &missed(&[5, 4], 0, 0)));
    }
}
