//! Requests and matchers for rooms with rules (moderation, refusals, presence, dms),
//! as `tests/tests/rooms.rs` uses them. Answers stay JSON: a refusal's `code` is often
//! the point of the test.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::Client;

impl Client {
    /// Sends `moderate` with `fields` (`room`, `action`, `user` or `msg_id`, ...) and a
    /// fresh `ref`; returns the answer (`ack` or `error`).
    pub async fn moderate(&mut self, fields: Value) -> Value {
        let reference = self.new_ref("moderate");
        let mut frame = fields;
        frame["type"] = json!("moderate");
        frame["ref"] = json!(reference);
        self.send_frame(frame).await;
        self.answer(&reference).await
    }

    /// [`Client::moderate`], and panics unless it is acked; `what` names it in the panic.
    pub async fn moderate_acked(&mut self, fields: Value, what: &str) {
        assert_ack(&self.moderate(fields).await, what);
    }

    /// Sends a `join` and returns the answer, `joined` or `error`.
    pub async fn try_join(&mut self, room: &str) -> Value {
        let reference = self.new_ref("join");
        self.send_frame(json!({"type": "join", "room": room, "ref": reference}))
            .await;
        self.answer(&reference).await
    }

    /// [`Client::try_join`], and panics unless it is refused with `code`; `what` names
    /// the attempt in the panic.
    pub async fn join_refused(&mut self, room: &str, code: &str, what: &str) {
        assert_error(&self.try_join(room).await, code, what);
    }

    /// Sends `text` to `room` and returns the answer, `ack` or `error`.
    pub async fn try_send(&mut self, room: &str, text: &str) -> Value {
        let reference = self.new_ref("send");
        self.send(room, text, &reference).await;
        self.answer(&reference).await
    }

    /// Sends a `dm` and returns the answer.
    pub async fn dm(&mut self, to: &str, text: &str) -> Value {
        let reference = self.new_ref("dm");
        self.send_frame(json!({"type": "dm", "to": to, "text": text, "ref": reference}))
            .await;
        self.answer(&reference).await
    }

    /// The ids of the users `presence` lists in `room`, sorted.
    pub async fn presence_ids(&mut self, room: &str) -> Vec<String> {
        let reference = self.new_ref("presence");
        self.send_frame(json!({"type": "presence", "room": room, "ref": reference}))
            .await;
        let answer = self
            .answer_of_type(&reference, "presence", &format!("presence {room}"))
            .await;
        let mut ids: Vec<String> = answer["members"]
            .as_array()
            .unwrap_or_else(|| panic!("presence without members: {answer}"))
            .iter()
            .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Asks `presence` every 200 ms until it lists exactly `expected`; returns how long
    /// that took. Panics after `timeout` with the last list.
    pub async fn presence_becomes(
        &mut self,
        room: &str,
        expected: &[&str],
        timeout: Duration,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let ids = self.presence_ids(room).await;
            if ids == expected {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "{}: presence of {room} still {ids:?} after {timeout:?}, expected {expected:?}",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Panics if a frame matching `pred` is set aside or arrives within `window`. Every
    /// frame read meanwhile is consumed. For "this never came" checks.
    pub async fn none_within(&mut self, window: Duration, pred: impl Fn(&Value) -> bool) {
        let seen = self.drain_for(window).await;
        if let Some(v) = seen.iter().find(|v| pred(v)) {
            panic!("{}: unexpected frame {v}", self.label);
        }
    }
}

/// Panics unless `answer` is an `error` with `code`.
pub fn assert_error(answer: &Value, code: &str, what: &str) {
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some(code)),
        "{what}: {answer}"
    );
}

/// Panics unless `answer` is an `ack`.
pub fn assert_ack(answer: &Value, what: &str) {
    assert_eq!(answer["type"], "ack", "{what}: {answer}");
}

/// Matches the `moderation` event of `action` in `room`.
pub fn is_moderation<'a>(room: &'a str, action: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |v| v["type"] == "moderation" && v["room"] == room && v["action"] == action
}

/// Matches the `member` event (`joined` or `left`) of `user` in `room`.
pub fn is_member_event<'a>(
    room: &'a str,
    event: &'a str,
    user: &'a str,
) -> impl Fn(&Value) -> bool + 'a {
    move |v| {
        v["type"] == "member" && v["room"] == room && v["event"] == event && v["user"]["id"] == user
    }
}

/// Matches a `kicked` frame for `room`.
pub fn is_kicked(room: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["type"] == "kicked" && v["room"] == room
}

/// Matches a `typing` event of `user` in `room`.
pub fn is_typing<'a>(room: &'a str, user: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |v| v["type"] == "typing" && v["room"] == room && v["user"]["id"] == user
}
