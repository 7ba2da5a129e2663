//! `warren-dispatcher [--config FILE]`: runs the dispatcher until SIGTERM or SIGINT.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = common::Settings::from_args().context("loading settings")?;
    common::telemetry::init(&settings.log);
    let result =
        common::shutdown::run_until_signal(|shutdown| warren_dispatcher::run(settings, shutdown))
            .await;
    result.context("dispatcher failed")
}
