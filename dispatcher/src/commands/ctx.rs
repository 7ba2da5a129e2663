//! What every command module works with: the command's [`Ctx`], the [`Failure`] that
//! stops a module early, and the steps most commands share (check the room id, read the
//! user's standing, put back a room from configuration the store lost).

use std::collections::HashMap;

use proto::amqp::Command;
use proto::codes::ErrorCode;
use proto::ids::{validate_room, RoomKind};
use proto::server::{ServerBody, ServerFrame, UserRef};

use super::{Outcome, Rules};
use crate::access::{self, ErrorReply};
use crate::store::{ConfiguredRoom, RoomStore, Standing, StoreError};

/// Why a command module stopped early: a refusal (answered) or a store failure (retried).
#[derive(Debug)]
pub(super) enum Failure {
    Refused(ErrorReply),
    Store(StoreError),
}

impl From<ErrorReply> for Failure {
    fn from(r: ErrorReply) -> Failure {
        Failure::Refused(r)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

/// What a command module works with.
pub(super) struct Ctx<'a> {
    pub(super) store: &'a RoomStore,
    pub(super) rules: &'a Rules,
    pub(super) configured: &'a HashMap<String, ConfiguredRoom>,
    pub(super) cmd: &'a Command,
    /// The delivery's `message_id`, when usable for dedup.
    pub(super) message_id: Option<&'a str>,
}

impl Ctx<'_> {
    pub(super) fn user(&self) -> &str {
        &self.cmd.actor.id
    }

    pub(super) fn user_ref(&self) -> UserRef {
        UserRef {
            id: self.cmd.actor.id.clone(),
            name: self.cmd.actor.name.clone(),
        }
    }

    /// The presence session of the command's connection. A bot has no connection; it
    /// gets one session of its own.
    pub(super) fn session(&self) -> String {
        match &self.cmd.conn {
            Some(conn) => conn.session.clone(),
            None => format!("amqp:{}", self.cmd.actor.id),
        }
    }

    pub(super) fn gateway(&self) -> String {
        self.cmd
            .conn
            .as_ref()
            .map(|c| c.gateway.clone())
            .unwrap_or_default()
    }

    pub(super) fn answer(&self, body: ServerBody) -> Outcome {
        Outcome {
            events: Vec::new(),
            reply: Some(ServerFrame::answer(self.cmd.reference.clone(), body)),
        }
    }

    pub(super) fn refuse(&self, refusal: ErrorReply) -> Outcome {
        Outcome {
            events: Vec::new(),
            reply: Some(ServerFrame::error(
                self.cmd.reference.clone(),
                refusal.code,
                refusal.message,
            )),
        }
    }

    /// The user's standing in a room, then [`Ctx::restore_lost`]: for commands that read
    /// nothing else first.
    pub(super) async fn standing(
        &self,
        room: &str,
        kind: &RoomKind<'_>,
    ) -> Result<Standing, StoreError> {
        let standing = self.read_standing(room, kind).await?;
        self.restore_lost(room, standing).await
    }

    /// Reads the user's standing in a room; dm rooms keep none. Writes nothing.
    pub(super) async fn read_standing(
        &self,
        room: &str,
        kind: &RoomKind<'_>,
    ) -> Result<Standing, StoreError> {
        if let RoomKind::Dm(..) = kind {
            return Ok(Standing::default());
        }
        self.store.standing(room, self.user()).await
    }

    /// The room from configuration that `standing`, just read, shows the store has lost
    /// (Redis restarted without its data, or was flushed, while this dispatcher stayed
    /// connected): it must be written again, or the next joiner would create it anew as
    /// a public room and own it.
    pub(super) fn lost_room(&self, room: &str, standing: &Standing) -> Option<&ConfiguredRoom> {
        match standing.meta {
            None => self.configured.get(room),
            Some(_) => None,
        }
    }

    /// Runs the step after a read of `standing`: writes the room from configuration
    /// again when the store has lost it ([`Ctx::lost_room`]) and reads the standing
    /// anew; otherwise returns `standing` as it is.
    pub(super) async fn restore_lost(
        &self,
        room: &str,
        standing: Standing,
    ) -> Result<Standing, StoreError> {
        let Some(declared) = self.lost_room(room, &standing) else {
            return Ok(standing);
        };
        tracing::warn!(
            room,
            "a room from configuration was missing from the store; writing it again"
        );
        self.store.configure(declared, common::now_ms()).await?;
        self.store.standing(room, self.user()).await
    }

    /// Refuses unless the user may read the room.
    pub(super) async fn check_reader(
        &self,
        room: &str,
        kind: &RoomKind<'_>,
    ) -> Result<(), Failure> {
        let standing = self.standing(room, kind).await?;
        let role = access::effective_role(kind, self.user(), standing.role);
        access::may_read(role, standing.banned)?;
        Ok(())
    }
}

/// Checks a room id from a command before it reaches a key.
pub(super) fn room_kind(room: &str) -> Result<RoomKind<'_>, ErrorReply> {
    validate_room(room).map_err(|e| ErrorReply::new(ErrorCode::BadRequest, format!("room: {e}")))
}
