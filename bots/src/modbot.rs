//! The moderation bot's loops: connect, consume, reconnect with backoff until told to
//! stop.
//!
//! For each event: read it, let the [`Moderator`] judge it, publish the commands it
//! calls for with confirms, and only then ack the event. An event is therefore never
//! lost to a crash or a lost connection: it comes back and is judged again (which can
//! count a strike twice; a delete of a deleted message is refused and only logged). The
//! dispatcher's answers arrive on the replies queue and are logged: a refused command
//! (the bot is not a moderator of the room, the target outranks it) is the operator's
//! to fix, not something a retry would change.

use std::time::{Duration, Instant};

use common::supervise::{supervise, Attempt, Backoff, Supervised};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use proto::amqp::{Event, EventBody, Reply};
use proto::client::Moderate;
use proto::server::{Message, ServerBody};
use tokio_util::sync::CancellationToken;

use crate::link::{self, Commands, Link, OpenError, SendError};
use crate::moderator::Moderator;
use crate::settings::BotSettings;

/// Tries for one command the broker keeps refusing, before it is given up (and logged).
const MAX_ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How long closing the connection may take on shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why one connection's session ended (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("setting up the bot's queues: {0}")]
    Open(#[from] OpenError),
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("sending a command: {0}")]
    Send(#[from] SendError),
    #[error("the broker cancelled the consumer of {0}")]
    Cancelled(&'static str),
    #[error("the channel closed before the ack")]
    AckLost,
}

/// The moderation bot: its settings and what it remembers across connections.
pub struct ModBot {
    settings: BotSettings,
    moderator: Moderator,
}

impl ModBot {
    pub fn new(settings: BotSettings, moderator: Moderator) -> ModBot {
        ModBot {
            settings,
            moderator,
        }
    }

    /// Connects and consumes until `shutdown`, reconnecting with backoff whenever the
    /// connection cannot be set up or is lost.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let backoff =
            Backoff::from_millis(self.settings.backoff_min_ms, self.settings.backoff_max_ms);
        supervise(&mut self, backoff, &shutdown).await;
    }

    /// One connection: events and replies until shutdown (`Ok`) or a failure (`Err`).
    async fn consume(
        &mut self,
        mut link: Link,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    let closing = link.connection.close(200, "shutting down".into());
                    let _closed = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
                    return Ok(());
                }
                next = link.events.next() => match next {
                    Some(Ok(delivery)) => self.handle(&link.commands, delivery).await?,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(SessionError::Cancelled("events")),
                },
                next = link.replies.next() => match next {
                    Some(Ok(delivery)) => log_reply(&delivery),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(SessionError::Cancelled("replies")),
                },
            }
        }
    }

    /// Judge → publish with confirms → ack.
    async fn handle(
        &mut self,
        commands: &Commands,
        delivery: Delivery,
    ) -> Result<(), SessionError> {
        if let Some(message) = message_in(&delivery) {
            for action in self.moderator.judge(&message, Instant::now()) {
                send(commands, action, &message).await?;
            }
        }
        if !delivery.acker.ack(BasicAckOptions::default()).await? {
            return Err(SessionError::AckLost);
        }
        Ok(())
    }
}

impl Supervised for ModBot {
    type Error = SessionError;

    async fn run_once(&mut self, attempt: &mut Attempt<'_>) -> Result<(), SessionError> {
        let shutdown = attempt.shutdown();
        let link = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            opened = link::open(&self.settings) => opened?,
        };
        attempt.healthy();
        tracing::info!(
            bot = %self.settings.name,
            login = %self.settings.login(),
            prefix = %self.settings.prefix,
            "consuming room events"
        );
        self.consume(link, shutdown).await
    }

    fn failed(&mut self, error: SessionError, _wait: Duration) {
        match error {
            SessionError::Open(e) => tracing::warn!(
                error = %e,
                "cannot set up the bot's queues (is the Warren stack up, and may this account use `{}.bot.{}.*`?)",
                self.settings.prefix,
                self.settings.name,
            ),
            e => tracing::warn!(error = %e, "connection lost; reconnecting"),
        }
    }
}

/// Sends one command, retrying a refusal a few times. Only a lost link is an error.
async fn send(
    commands: &Commands,
    action: Moderate,
    message: &Message,
) -> Result<(), SessionError> {
    let what = action.action;
    let reference = link::command_ref(what, &message.id);
    for attempt in 1..=MAX_ATTEMPTS {
        match commands.moderate(&action, &reference).await {
            Ok(()) => {
                tracing::info!(room = %message.room, user = %message.from.id, msg_id = %message.id, action = ?what, %reference, "sent a moderate command");
                return Ok(());
            }
            Err(e) if e.is_link_failure() => return Err(e.into()),
            Err(SendError::Nacked) if attempt < MAX_ATTEMPTS => {
                tracing::warn!(attempt, "the broker refused a moderate command; retrying");
                tokio::time::sleep(RETRY_PAUSE * attempt).await;
            }
            Err(e) => {
                tracing::error!(room = %message.room, msg_id = %message.id, action = ?what, error = %e, "giving up on a moderate command");
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The chat message an event delivery carries, if it is one.
fn message_in(delivery: &Delivery) -> Option<Message> {
    // Publishers set `type` to the body's kind: most events need no parsing at all.
    if let Some(kind) = delivery.properties.kind() {
        if kind.as_str() != "message" {
            return None;
        }
    }
    match serde_json::from_slice::<Event>(&delivery.data) {
        Ok(Event {
            body: EventBody::Message(message),
            ..
        }) => Some(message),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, routing_key = %delivery.routing_key, "skipping an event that cannot be read");
            None
        }
    }
}

/// Logs the dispatcher's answer to one of the bot's commands.
fn log_reply(delivery: &Delivery) {
    let reply: Reply = match serde_json::from_slice(&delivery.data) {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(error = %e, "skipping a reply that cannot be read");
            return;
        }
    };
    let reference = reply.frame.reference.unwrap_or_default();
    match reply.frame.body {
        ServerBody::Error(error) => tracing::warn!(
            %reference,
            code = error.code.as_str(),
            message = %error.message,
            "the dispatcher refused a command (is the bot a moderator of the room?)"
        ),
        body => tracing::debug!(%reference, answer = body.type_name(), "the dispatcher answered"),
    }
}
