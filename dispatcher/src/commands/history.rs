//! `history`: a page of stored messages older than `before` (or the newest), ascending.

use proto::client::{History, MAX_HISTORY_LIMIT};
use proto::server::{HistoryPage, Message, ServerBody};

use proto::codes::ErrorCode;
use proto::ids::RoomKind;

use super::ctx::{room_kind, Ctx, Failure};
use super::Outcome;
use crate::access::ErrorReply;

/// The page size when the client names none.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;

pub(super) async fn history(ctx: &Ctx<'_>, args: &History) -> Result<Outcome, Failure> {
    let room = args.room.as_str();
    let kind = room_kind(room)?;
    // A global admin may read any room but a dm room without joining it, as they may
    // join any (an operator inspecting a room should not show up in it).
    if !(ctx.cmd.actor.is_admin() && kind == RoomKind::Public) {
        ctx.check_reader(room, &kind).await?;
    } else if ctx.standing(room, &kind).await?.meta.is_none() {
        return Err(ErrorReply::new(ErrorCode::NoSuchRoom, "no such room").into());
    }
    let limit = page_size(args.limit);
    // One more than asked: if it exists, the page is not the oldest.
    let newest_first = ctx
        .store
        .newest_before(room, args.before, limit + 1)
        .await?;
    let (messages, complete) = page(newest_first, limit);
    Ok(ctx.answer(ServerBody::History(HistoryPage {
        room: room.to_owned(),
        messages,
        complete,
    })))
}

/// The requested limit, defaulted and capped at `MAX_HISTORY_LIMIT`. `limit: 0` asks for
/// no message (the page then only says, through `complete`, whether any exist).
pub fn page_size(limit: Option<u32>) -> u64 {
    u64::from(
        limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
            .min(MAX_HISTORY_LIMIT),
    )
}

/// Turns up to `limit + 1` messages, newest first, into a page in ascending order and
/// whether it reaches the oldest stored message.
pub fn page(mut newest_first: Vec<Message>, limit: u64) -> (Vec<Message>, bool) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let complete = newest_first.len() <= limit;
    newest_first.truncate(limit);
    newest_first.reverse();
    (newest_first, complete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::msgs;

    fn seqs(m: &[Message]) -> Vec<u64> {
        m.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn limits_default_to_50_and_cap_at_100() {
        assert_eq!(page_size(None), 50);
        assert_eq!(page_size(Some(10)), 10);
        assert_eq!(page_size(Some(1000)), 100);
        assert_eq!(page_size(Some(0)), 0, "limit 0 asks for no message");
    }

    #[test]
    fn a_page_is_ascending_and_knows_if_older_ones_exist() {
        let (page1, complete) = page(msgs(&[9, 8, 7]), 2);
        assert_eq!(seqs(&page1), vec![8, 9]);
        assert!(!complete);
        let (page2, complete) = page(msgs(&[2, 1]), 2);
        assert_eq!(seqs(&page2), vec![1, 2]);
        assert!(complete);
        let (empty, complete) = page(Vec::new(), 5);
        assert!(empty.is_empty() && complete);
    }
}
