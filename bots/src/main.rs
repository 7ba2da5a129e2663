//! `warren-modbot [--config FILE]`: the moderation bot, until SIGTERM or SIGINT.
//! Settings: `WARREN_BOT__*` environment variables over the file over the defaults.

use anyhow::Context;
use warren_bots::BotSettings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = BotSettings::from_args().context("loading settings")?;
    common::telemetry::init(&settings.log());
    let result =
        common::shutdown::run_until_signal(|shutdown| warren_bots::run(settings, shutdown)).await;
    result.context("moderation bot failed")
}
