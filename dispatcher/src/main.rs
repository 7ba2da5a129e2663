//! `warren-dispatcher [--config FILE]`: runs the dispatcher until SIGTERM or SIGINT.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = common::Settings::from_args().context("loading settings")?;
    // Kept to the end of `main`: dropping it sends the last batched spans.
    let _telemetry =
        common::telemetry::init_service(&settings.log, &settings.trace, "warren-dispatcher");
    let result =
        common::shutdown::run_until_signal(|shutdown| warren_dispatcher::run(settings, shutdown))
            .await;
    result.context("dispatcher failed")
}
