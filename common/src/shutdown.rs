//! The shutdown signal: SIGTERM (compose, Kubernetes) or SIGINT (a terminal).

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Runs a service (`start` is given its shutdown token) until it ends by itself or the
/// process is asked to stop; then cancels the token and waits for the service to drain.
pub async fn run_until_signal<F: Future>(start: impl FnOnce(CancellationToken) -> F) -> F::Output {
    let shutdown = CancellationToken::new();
    let service = start(shutdown.clone());
    tokio::pin!(service);
    tokio::select! {
        result = &mut service => result,
        () = signal() => {
            tracing::info!("shutting down");
            shutdown.cancel();
            service.await
        }
    }
}

/// Resolves when the process is asked to stop.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
