//! What history a `joined` answer carries.
//!
//! A client that rejoins with `since` (the last seq it saw) and the `epoch` it belongs to
//! should get exactly the messages it missed, and `recovered: true` only when all of them
//! are still in history. Anything else — no `since`, another epoch (the store lost the
//! room), a `since` the room never reached, missed messages already trimmed — gets the
//! newest `history_on_join` messages and `recovered: false`, and the client reloads.

use proto::server::Message;

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
    match (since, client_epoch) {
        (Some(after), Some(epoch)) if epoch == room_epoch && after <= latest => {
            Backfill::Missed { after }
        }
        _ => Backfill::Recent,
    }
}

/// True when `messages` (ascending) are exactly the seqs `after + 1 ..= latest`.
pub fn is_complete(after: u64, latest: u64, messages: &[Message]) -> bool {
    let expected = latest.saturating_sub(after);
    messages.len() as u64 == expected
        && messages
            .iter()
            .zip(after + 1..)
            .all(|(m, seq)| m.seq == seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::server::Author;

    fn msgs(seqs: &[u64]) -> Vec<Message> {
        seqs.iter()
            .map(|&seq| Message {
                room: "r".into(),
                id: format!("m{seq}"),
                seq,
                epoch: "e".into(),
                from: Author {
                    id: "a".into(),
                    name: "A".into(),
                    bot: false,
                },
                text: "t".into(),
                ts: seq,
            })
            .collect()
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
        assert_eq!(backfill(Some(3), None, "e", 7), Backfill::Recent);
        assert_eq!(backfill(Some(3), Some("old"), "e", 7), Backfill::Recent);
        // A since the room never reached: the room was reset under the same epoch.
        assert_eq!(backfill(Some(9), Some("e"), "e", 7), Backfill::Recent);
    }

    #[test]
    fn complete_means_every_missed_seq_is_there() {
        assert!(is_complete(3, 6, &msgs(&[4, 5, 6])));
        assert!(is_complete(6, 6, &msgs(&[])));
        // Trimmed: 4 is gone.
        assert!(!is_complete(3, 6, &msgs(&[5, 6])));
        // A hole (an unreadable entry was skipped).
        assert!(!is_complete(3, 6, &msgs(&[4, 6, 7])));
    }
}
