//! `warren-modbot [--config FILE]`: the moderation bot, until SIGTERM or SIGINT.
//! Settings: `WARREN_BOT__*` environment variables over the file over the defaults.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use warren_bots::BotSettings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = BotSettings::from_args().context("loading settings")?;
    common::telemetry::init(&settings.log());
    let shutdown = CancellationToken::new();
    let bot = warren_bots::run(settings, shutdown.clone());
    tokio::pin!(bot);
    let result = tokio::select! {
        result = &mut bot => result,
        () = common::shutdown::signal() => {
            tracing::info!("shutting down");
            shutdown.cancel();
            bot.await
        }
    };
    result.context("moderation bot failed")
}
