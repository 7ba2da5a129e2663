//! `warren-gateway`: loads settings (`--config FILE`, `WARREN__*`), serves until SIGTERM.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match common::Settings::from_args() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Kept to the end of `main`: dropping it sends the last batched spans.
    let _telemetry =
        common::telemetry::init_service(&settings.log, &settings.trace, "warren-gateway");
    if settings.uses_dev_secret() {
        tracing::warn!(
            "auth.secret is the built-in development secret: INSECURE, set WARREN__AUTH__SECRET"
        );
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        common::shutdown::signal().await;
        tracing::info!("shutdown requested");
        signal.cancel();
    });
    match warren_gateway::run(settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway failed");
            eprintln!("warren-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
