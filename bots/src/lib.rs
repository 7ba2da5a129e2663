//! Bots: programs that join Warren through RabbitMQ instead of WebSocket, each as its
//! own user. A bot consumes room events from its own queue and publishes commands under
//! its own AMQP account; the dispatcher makes that account's login the bot's user id
//! (with `bot: true`) whatever the command's `actor` says. `docs/BOTS.md` is the guide.
//!
//! This crate holds the moderation bot, `warren-modbot`. [`run`] is the whole bot; the
//! binary only loads settings and waits for a signal. How the modules fit:
//! - [`settings`]: the bot's own configuration (`WARREN_BOT__*`, `--config FILE`).
//! - [`words`] and [`strikes`]: the word list and the per-(room, user) strike count.
//! - [`moderator`]: the rule, pure: which messages get deleted, who gets muted.
//! - [`link`]: the bot's queues and its confirmed command publisher.
//! - [`modbot`]: the connection loop: consume → judge → publish with confirms → ack.
//!
//! `bots/python/echo_bot.py` is a second bot, in Python, written from the contract alone.

pub mod link;
pub mod modbot;
pub mod moderator;
pub mod settings;
pub mod strikes;
pub mod words;

use tokio_util::sync::CancellationToken;

pub use settings::BotSettings;

/// Why the bot could not run. A lost or refused connection is not an error: it is
/// retried until shutdown.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
}

/// Runs the moderation bot until `shutdown` is cancelled.
pub async fn run(settings: BotSettings, shutdown: CancellationToken) -> Result<(), BotError> {
    let moderator = moderator::Moderator::new(
        settings.login(),
        settings.word_list()?,
        settings.strikes,
        settings.mute(),
        settings.strike_window(),
    );
    modbot::ModBot::new(settings, moderator).run(shutdown).await;
    Ok(())
}
