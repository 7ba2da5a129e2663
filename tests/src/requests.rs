//! The client frames a test sends most, as typed requests that wait for their answer
//! (`join`, `leave`, `send_acked`, `history`, `ping`), and readers that turn answers into
//! `proto` types. Each request picks a fresh `ref` and waits for the answer echoing it;
//! other frames that arrive meanwhile are set aside for the test to read.

use proto::client::{ClientBody, ClientFrame, History, Join, RoomOnly, Send};
use proto::server::{HistoryPage, Joined, Message, ServerBody, ServerFrame};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::client::Client;

/// The most pages `full_history` reads (100 messages each).
const MAX_HISTORY_PAGES: usize = 200;

/// An acknowledged send: the stored message's id and seq.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acked {
    pub id: String,
    pub seq: u64,
}

impl Client {
    /// Joins `room` and returns `joined`; panics on `error`.
    pub async fn join(&mut self, room: &str) -> Joined {
        self.join_with(Join {
            room: room.to_owned(),
            since: None,
            epoch: None,
        })
        .await
    }

    /// Joins with `since`/`epoch` for recovery.
    pub async fn join_since(&mut self, room: &str, since: u64, epoch: &str) -> Joined {
        self.join_with(Join {
            room: room.to_owned(),
            since: Some(since),
            epoch: Some(epoch.to_owned()),
        })
        .await
    }

    pub async fn join_with(&mut self, join: Join) -> Joined {
        let reference = self.new_ref("join");
        let room = join.room.clone();
        self.send_client_frame(&ClientFrame {
            reference: Some(reference.clone()),
            body: ClientBody::Join(join),
        })
        .await;
        let answer = self.answer(&reference).await;
        match frame(&answer).body {
            ServerBody::Joined(j) => j,
            _ => panic!("{}: join {room} answered {answer}", self.label),
        }
    }

    /// Leaves `room` and waits for `left`.
    pub async fn leave(&mut self, room: &str) {
        let reference = self.new_ref("leave");
        self.send_client_frame(&ClientFrame {
            reference: Some(reference.clone()),
            body: ClientBody::Leave(RoomOnly {
                room: room.to_owned(),
            }),
        })
        .await;
        self.answer_of_type(&reference, "left", &format!("leave {room}"))
            .await;
    }

    /// Sends `text` to `room` with `reference`; does not wait.
    pub async fn send(&mut self, room: &str, text: &str, reference: &str) {
        self.send_client_frame(&ClientFrame {
            reference: Some(reference.to_owned()),
            body: ClientBody::Send(Send {
                room: room.to_owned(),
                text: text.to_owned(),
            }),
        })
        .await;
    }

    /// Sends and waits for the `ack`; panics on anything else.
    pub async fn send_acked(&mut self, room: &str, text: &str) -> Acked {
        let reference = self.new_ref("send");
        self.send(room, text, &reference).await;
        let answer = self.answer(&reference).await;
        ack_of(&answer)
            .unwrap_or_else(|| panic!("{}: send to {room} answered {answer}", self.label))
    }

    /// One `history` page.
    pub async fn history(
        &mut self,
        room: &str,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> HistoryPage {
        let reference = self.new_ref("history");
        self.send_client_frame(&ClientFrame {
            reference: Some(reference.clone()),
            body: ClientBody::History(History {
                room: room.to_owned(),
                before,
                limit,
            }),
        })
        .await;
        let answer = self.answer(&reference).await;
        match frame(&answer).body {
            ServerBody::History(h) => h,
            _ => panic!("{}: history {room} answered {answer}", self.label),
        }
    }

    /// The room's whole kept history, ascending, read in pages of 100 via `before`.
    pub async fn full_history(&mut self, room: &str) -> Vec<Message> {
        let mut pages: Vec<Vec<Message>> = Vec::new();
        let mut before = None;
        for _ in 0..MAX_HISTORY_PAGES {
            let page = self
                .history(room, before, Some(proto::client::MAX_HISTORY_LIMIT))
                .await;
            let oldest = page.messages.first().map(|m| m.seq);
            let complete = page.complete;
            pages.push(page.messages);
            match oldest {
                Some(seq) if !complete && seq > 1 => before = Some(seq),
                _ => return pages.into_iter().rev().flatten().collect(),
            }
        }
        panic!(
            "{}: history of {room} has more than {MAX_HISTORY_PAGES} pages",
            self.label
        )
    }

    /// The texts of the room's whole kept history, oldest first.
    pub async fn history_texts(&mut self, room: &str) -> Vec<String> {
        let history = self.full_history(room).await;
        history.into_iter().map(|m| m.text).collect()
    }

    /// The seqs of the room's whole kept history, ascending.
    pub async fn history_seqs(&mut self, room: &str) -> Vec<u64> {
        let history = self.full_history(room).await;
        history.iter().map(|m| m.seq).collect()
    }

    /// `ping` with `reference`; returns the answer.
    pub async fn ping(&mut self, reference: &str) -> Value {
        self.send_frame(json!({"type": "ping", "ref": reference}))
            .await;
        self.answer(reference).await
    }
}

/// Reads a JSON frame as a `proto` server frame; panics with the JSON when it does not fit.
pub fn frame(v: &Value) -> ServerFrame {
    parse(v)
}

/// Reads any JSON as `T`; panics with the JSON when it does not fit.
pub fn parse<T: DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        panic!(
            "frame does not fit {}: {e}: {v}",
            std::any::type_name::<T>()
        )
    })
}

/// The `message` event in `v`, if it is one.
pub fn message_of(v: &Value) -> Option<Message> {
    (v["type"] == "message").then(|| parse(v))
}

/// The id and seq of a send's `ack`, if `v` is one.
pub fn ack_of(v: &Value) -> Option<Acked> {
    if v["type"] != "ack" {
        return None;
    }
    Some(Acked {
        id: v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("ack without id: {v}"))
            .to_owned(),
        seq: v["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("ack without seq: {v}")),
    })
}
