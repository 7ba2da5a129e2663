//! One module per command, behind [`Handler::handle`].
//!
//! A handler reads and writes the store and returns an [`Outcome`]: the events to publish
//! and the answer for the command's connection. It publishes nothing itself, so the
//! shard can retry a store failure without having sent half a result, and publish
//! everything with confirms before it acks the command. Permission decisions are pure
//! functions in [`crate::access`], [`crate::moderation`] and [`crate::recovery`]; these
//! modules only fetch what those need and act on the verdict.

mod audit;
mod ctx;
mod history;
mod join;
mod leave;
mod moderate;
mod presence;
mod send;
mod typing;

use std::collections::HashMap;
use std::sync::Arc;

use common::Settings;
use proto::amqp::{gateway_key, room_key, Command, CommandBody, EventBody};
use proto::codes::ErrorCode;
use proto::server::ServerFrame;

use crate::access::ErrorReply;
use crate::metrics::DispatcherMetrics;
use crate::retention::Touched;
use crate::store::{ConfiguredRoom, Retention, RoomMeta, RoomStore, StoreError};
use ctx::{Ctx, Failure};

/// The settings that shape chat behaviour.
#[derive(Debug, Clone)]
pub struct Rules {
    pub auto_create: bool,
    pub max_text_bytes: usize,
    /// The deployment's default; a room from configuration may override it.
    pub history_on_join: u64,
    /// The deployment's default; a room from configuration may override its limit.
    pub retention: Retention,
    /// Rooms with more present users get no `member` events.
    pub max_event_members: usize,
    /// Above `max_event_members`, how many members a `joined` carries (a sample).
    pub max_join_members: usize,
    /// How long a kicked user stays out of the room, ms (0: may rejoin at once).
    pub kick_hold_ms: u64,
    /// Rooms one user may create per hour (0: no limit).
    pub max_created_per_hour: u64,
    /// A user's sends, dms and typing per second, and burst, across gateways (0: none).
    pub user_sends: (u32, u32),
    /// A bot's commands per second, and burst (0: none).
    pub bot_commands: (u32, u32),
}

impl Rules {
    pub fn from_settings(settings: &Settings) -> Rules {
        Rules {
            auto_create: settings.rooms.auto_create,
            max_text_bytes: settings.gateway.max_text_bytes,
            history_on_join: settings.dispatcher.history_on_join,
            retention: Retention {
                history_limit: settings.dispatcher.history_limit,
                dedup_ttl_s: settings.dispatcher.dedup_ttl_s,
            },
            max_event_members: settings.presence.max_event_members,
            max_join_members: settings.presence.max_join_members,
            kick_hold_ms: settings.dispatcher.kick_hold_s * 1000,
            max_created_per_hour: settings.rooms.max_created_per_hour,
            user_sends: (
                settings.dispatcher.user_sends_per_sec,
                settings.dispatcher.user_send_burst,
            ),
            bot_commands: (
                settings.dispatcher.bot_commands_per_sec,
                settings.dispatcher.bot_command_burst,
            ),
        }
    }

    /// How many messages a join of a room with `meta` gets when it cannot recover.
    pub fn history_on_join(&self, meta: Option<&RoomMeta>) -> u64 {
        meta.and_then(|m| m.history_on_join)
            .unwrap_or(self.history_on_join)
    }

    /// What a room with `meta` keeps.
    pub fn retention(&self, meta: Option<&RoomMeta>) -> Retention {
        Retention {
            history_limit: meta
                .and_then(|m| m.history_limit)
                .unwrap_or(self.retention.history_limit),
            ..self.retention
        }
    }
}

/// An event and where it is published: once per room key, and once per user it is
/// addressed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// Room keys (`room.<room>.<kind>`): one publish each.
    pub keys: Vec<String>,
    /// Users the event is also addressed to: one publish each, routing key
    /// `user.<user>.<kind>`, `CC` the gateways that hold the user.
    pub users: Vec<UserCopy>,
    pub event: EventBody,
    /// The sender's `ack`, carried by this event to the sender's gateway.
    pub ack: Option<EventAck>,
}

/// A copy of an event for one user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserCopy {
    pub user: String,
    /// `gw.<id>` of every gateway holding the user, filled in by [`Handler::handle`].
    pub cc: Vec<String>,
}

impl UserCopy {
    pub fn to(user: &str) -> UserCopy {
        UserCopy {
            user: user.to_owned(),
            cc: Vec::new(),
        }
    }
}

/// The `ack` of a `send` or `dm` from a gateway connection, produced by that gateway
/// from the event itself (no reply is published): the event names the session and the
/// `ref`, and lists the gateway's own key in its `CC` so that it surely gets a copy.
#[derive(Debug, Clone, PartialEq)]
pub struct EventAck {
    pub session: String,
    pub reference: Option<String>,
    /// The sender's gateway id.
    pub gateway: String,
    /// For a dm: the sender's own user copy carries the ack (the sender need not be in
    /// the dm room); otherwise the first room key's publish does.
    pub on_user: Option<String>,
}

impl EventAck {
    /// The key the ack's publish adds to its `CC`.
    pub fn gateway_key(&self) -> String {
        gateway_key(&self.gateway)
    }
}

impl Routed {
    /// An event for the room's own key, `room.<room>.<kind>`.
    pub fn room(event: EventBody) -> Routed {
        Routed {
            keys: vec![room_key(event.room(), event.kind())],
            users: Vec::new(),
            event,
            ack: None,
        }
    }

    /// An event for `users` only (`user.<user>.<kind>` each).
    pub fn users(event: EventBody, users: &[&str]) -> Routed {
        Routed {
            keys: Vec::new(),
            users: users.iter().map(|u| UserCopy::to(u)).collect(),
            event,
            ack: None,
        }
    }
}

/// What handling one command produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub events: Vec<Routed>,
    /// The answer to the command's connection, if it gets one.
    pub reply: Option<ServerFrame>,
}

impl Outcome {
    /// Fills in the gateways each user copy goes to, in one store round trip.
    async fn address(&mut self, store: &RoomStore) -> Result<(), StoreError> {
        let users: Vec<&str> = self
            .events
            .iter()
            .flat_map(|r| r.users.iter().map(|c| c.user.as_str()))
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        let mut holders = store.holders(&users).await?;
        for copy in self.events.iter_mut().flat_map(|r| r.users.iter_mut()) {
            if let Some(gateways) = holders.get_mut(&copy.user) {
                copy.cc = gateways.iter().map(|g| gateway_key(g)).collect();
            }
        }
        Ok(())
    }
}

/// Handles commands against the store. Cloning is shallow.
#[derive(Clone)]
pub struct Handler {
    store: RoomStore,
    rules: Arc<Rules>,
    metrics: Arc<DispatcherMetrics>,
    /// The rooms commands touched, for their expiry (`None`: rooms never expire).
    touched: Option<Arc<Touched>>,
    /// Rooms from configuration, by id: written again when the store has lost them.
    configured: Arc<HashMap<String, ConfiguredRoom>>,
}

impl Handler {
    pub fn new(
        store: RoomStore,
        rules: Rules,
        configured: &[ConfiguredRoom],
        metrics: Arc<DispatcherMetrics>,
        touched: Option<Arc<Touched>>,
    ) -> Handler {
        Handler {
            store,
            rules: Arc::new(rules),
            metrics,
            touched,
            configured: Arc::new(
                configured
                    .iter()
                    .map(|room| (room.id.clone(), room.clone()))
                    .collect(),
            ),
        }
    }

    /// Handles one command. `message_id` is the delivery's AMQP `message_id` when it is
    /// usable as a dedup key (see [`crate::intake::dedup_id`]). `Err` means Redis failed
    /// and nothing was decided: retry the same command later. Refusals and damaged data
    /// are answers, not errors.
    pub async fn handle(
        &self,
        cmd: &Command,
        message_id: Option<&str>,
    ) -> Result<Outcome, StoreError> {
        let ctx = Ctx {
            store: &self.store,
            rules: &self.rules,
            configured: &self.configured,
            cmd,
            message_id,
        };
        if let Some(refusal) = self.over_budget(cmd).await? {
            return Ok(ctx.refuse(refusal));
        }
        if let Some(touched) = &self.touched {
            touched.touch(cmd.room());
        }
        let result = match &cmd.body {
            CommandBody::Join(args) => join::join(&ctx, args).await,
            CommandBody::Leave(args) => leave::leave(&ctx, args).await,
            CommandBody::Send(args) => send::send(&ctx, args).await,
            CommandBody::Dm(args) => send::dm(&ctx, args).await,
            CommandBody::History(args) => history::history(&ctx, args).await,
            CommandBody::Presence(args) => presence::presence(&ctx, args).await,
            CommandBody::Typing(args) => typing::typing(&ctx, args).await,
            CommandBody::Moderate(args) => moderate::moderate(&ctx, args).await,
        };
        let result = match result {
            Ok(mut outcome) => match outcome.address(&self.store).await {
                Ok(()) => Ok(outcome),
                Err(e) => Err(Failure::Store(e)),
            },
            Err(failure) => Err(failure),
        };
        match result {
            Ok(outcome) => Ok(outcome),
            Err(Failure::Refused(refusal)) => Ok(ctx.refuse(refusal)),
            Err(Failure::Store(StoreError::Data(what))) => {
                tracing::error!(kind = cmd.body.kind(), room = %cmd.room(), %what, "damaged data in the store");
                Ok(ctx.refuse(ErrorReply::new(
                    ErrorCode::Internal,
                    "stored data is damaged",
                )))
            }
            Err(Failure::Store(StoreError::Refused(e))) => {
                // What was written before the refusal stays (each write is whole); a
                // retry of a send finds it through dedup.
                tracing::warn!(kind = cmd.body.kind(), room = %cmd.room(), error = %e, "the store refuses writes");
                self.metrics.store_refusals.inc();
                Ok(ctx.refuse(ErrorReply::new(
                    ErrorCode::Unavailable,
                    "the store is full; try again later",
                )))
            }
            Err(Failure::Store(e)) => Err(e),
        }
    }
}

impl Handler {
    /// A bot's command, or a user's `send`, `dm` or `typing`, past its budget: the
    /// refusal to answer.
    /// The buckets live in Redis, so the budget holds across gateways and dispatchers.
    async fn over_budget(&self, cmd: &Command) -> Result<Option<ErrorReply>, StoreError> {
        let (what, (per_sec, burst)) = if cmd.actor.bot {
            ("bot", self.rules.bot_commands)
        } else if matches!(
            cmd.body,
            CommandBody::Send(_) | CommandBody::Dm(_) | CommandBody::Typing(_)
        ) {
            ("sends", self.rules.user_sends)
        } else {
            return Ok(None);
        };
        if per_sec == 0 {
            return Ok(None);
        }
        let taken = match self
            .store
            .take_token(what, &cmd.actor.id, per_sec, burst.max(1))
            .await
        {
            Ok(taken) => taken,
            // A full store cannot record the spend: let the command meet the refusal on
            // its own writes (reads still answer), rather than refuse it here for that.
            Err(StoreError::Refused(_)) => true,
            Err(e) => return Err(e),
        };
        Ok((!taken).then(|| {
            ErrorReply::new(
                ErrorCode::RateLimited,
                format!("at most {per_sec} a second (burst {burst}) for this user"),
            )
        }))
    }
}
