//! `warren-dispatcher [--config FILE]`: runs the dispatcher until SIGTERM or SIGINT.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = common::Settings::from_args().context("loading settings")?;
    common::telemetry::init(&settings.log);
    let shutdown = CancellationToken::new();
    let service = warren_dispatcher::run(settings, shutdown.clone());
    tokio::pin!(service);
    let result = tokio::select! {
        result = &mut service => result,
        () = common::shutdown::signal() => {
            tracing::info!("shutting down");
            shutdown.cancel();
            service.await
        }
    };
    result.context("dispatcher failed")
}
