//! Rooms under a steady stream of sends, for the tests that disturb what is underneath
//! (a dispatcher killed, a broker node stopped): one paced sender and one reader per
//! room, on different gateways, each driving in its own task, released phase by phase.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto::ids::shard_of;
use tokio::task::JoinHandle;

use super::{checks, Controls, Ended, Member};
use crate::{eventually, Client, Stack};

/// Longest a member waits with nothing arriving once its own sends are acked.
const IDLE: Duration = Duration::from_secs(60);
/// Bound on a member's whole stream.
const DEADLINE: Duration = Duration::from_secs(240);

/// Rooms whose shards differ, so that a stream keeps several dispatchers busy.
pub fn rooms_on_distinct_shards(shards: u32, n: usize) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    (0..)
        .map(|i| format!("spread{i}"))
        .filter(|room| seen.insert(shard_of(room, shards)))
        .take(n)
        .collect()
}

/// A sender and a reader in one room.
pub struct RoomStream {
    pub room: String,
    total: usize,
    sender: JoinHandle<(Member, Client, Ended)>,
    reader: JoinHandle<(Member, Client, Ended)>,
    quota: Arc<AtomicUsize>,
}

impl RoomStream {
    /// Joins a sender of `total` messages (on gateway `i % 2`) and a reader (on the
    /// other) to `room`, and starts both; the sender sends only what [`RoomStream::allow`]
    /// releases.
    pub async fn start(
        stack: &Stack,
        controls: &Controls,
        room: &str,
        i: usize,
        total: usize,
    ) -> RoomStream {
        let mut sender_client = stack.connect(i % 2, &format!("{room}-s")).await;
        let mut reader_client = stack.connect((i + 1) % 2, &format!("{room}-r")).await;
        let mut sender = Member::new(room, &format!("{room}-s"), total, controls).paced();
        sender.gap = Duration::from_millis(10);
        let mut reader = Member::new(room, &format!("{room}-r"), 0, controls);
        sender.join(&mut sender_client).await;
        reader.join(&mut reader_client).await;
        let quota = sender.quota.clone();
        RoomStream {
            room: room.to_owned(),
            total,
            sender: drive(sender, sender_client, total),
            reader: drive(reader, reader_client, total),
            quota,
        }
    }

    /// `rooms` streams of `total` messages each, in rooms on distinct shards (so that
    /// several dispatchers are busy), senders and readers alternating gateways.
    pub async fn spread(
        stack: &Stack,
        controls: &Controls,
        rooms: usize,
        total: usize,
    ) -> Vec<RoomStream> {
        let mut streams = Vec::new();
        for (i, room) in rooms_on_distinct_shards(stack.shards(), rooms)
            .iter()
            .enumerate()
        {
            streams.push(RoomStream::start(stack, controls, room, i, total).await);
        }
        streams
    }

    /// Lets the sender send `more` messages.
    pub fn allow(&self, more: usize) {
        Member::allow(&self.quota, more);
    }

    /// Waits for both streams to complete, then checks that every acked message is in
    /// history exactly once, gapless, and was shown to both members once, in order.
    /// Returns the deliveries checked.
    pub async fn finish(self) -> usize {
        let (sender, _) = joined(self.sender).await;
        let (reader, mut reader_client) = joined(self.reader).await;
        let history = reader_client.full_history(&self.room).await;
        checks::assert_nothing_acked_lost(&[&sender], &[&sender, &reader], &history, self.total)
    }
}

fn drive(
    mut member: Member,
    mut client: Client,
    total: usize,
) -> JoinHandle<(Member, Client, Ended)> {
    tokio::spawn(async move {
        let ended = member.drive(&mut client, Some(total), IDLE, DEADLINE).await;
        (member, client, ended)
    })
}

async fn joined(task: JoinHandle<(Member, Client, Ended)>) -> (Member, Client) {
    let (member, client, ended) = tokio::time::timeout(DEADLINE + Duration::from_secs(30), task)
        .await
        .expect("a member's task did not end")
        .expect("a member's task panicked");
    assert_eq!(
        ended,
        Ended::Complete,
        "{}: how its stream ended",
        member.label
    );
    (member, client)
}

/// Waits (up to `within`) until the members' first acks reach `n`; returns the count.
pub async fn acked_reaches(controls: &Controls, n: usize, within: Duration) -> usize {
    let acked = controls.acked.clone();
    eventually(&format!("{n} acks"), within, move || {
        let acked = acked.clone();
        async move {
            let got = acked.load(Ordering::SeqCst);
            if got >= n {
                Ok(got)
            } else {
                Err(format!("{got} acks"))
            }
        }
    })
    .await
}
