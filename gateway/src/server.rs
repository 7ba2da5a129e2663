//! The HTTP/1.1 server under the gateway's routes, with the limits `warp::serve` does
//! not offer: every TCP connection must send its complete request head within
//! `gateway.handshake_timeout_s` (a slowloris client that trickles one byte a second,
//! or one that sends nothing, is dropped), a request head is at most
//! [`MAX_REQUEST_HEAD`] bytes, and at most `gateway.max_pending_handshakes` connections
//! may be in their HTTP phase at once (more are closed at accept).
//!
//! Each accepted connection is served by hyper's HTTP/1 connection with upgrades and
//! [`warp::service`] over the routes; once upgraded to WebSocket it belongs to
//! [`crate::connection`] and no longer counts as pending. HTTP/2 is not served: a
//! WebSocket upgrade is an HTTP/1.1 affair and the operator endpoints need nothing more.
//!
//! Shutdown: when `shutdown` is cancelled the listener closes, every HTTP connection is
//! told to finish its request in flight and not keep alive, and [`serve`] returns when
//! they are all gone (the caller bounds the wait with the grace period).

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::metrics::GatewayMetrics;

/// The largest request head (request line and headers) a client may send; a token in
/// a header, the query and a cookie fit many times over. hyper answers 431 beyond it.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// How long the accept loop pauses after an error that is not about one connection
/// (e.g. out of file descriptors), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The limits of the HTTP phase of a connection.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub handshake_timeout: Duration,
    pub max_pending: usize,
}

/// Accepts connections on `listener` and serves `routes` on each until `shutdown`.
pub async fn serve<F>(
    listener: TcpListener,
    routes: F,
    limits: HttpLimits,
    metrics: Arc<GatewayMetrics>,
    shutdown: CancellationToken,
) where
    F: Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static,
{
    let pending = Arc::new(Semaphore::new(limits.max_pending.max(1)));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            metrics.handshakes_dropped.inc();
            drop(stream);
            continue;
        };
        let connection = serve_one(
            stream,
            routes.clone(),
            limits,
            metrics.clone(),
            shutdown.clone(),
        );
        connections.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// One connection's HTTP phase: requests until it upgrades, closes, or times out.
async fn serve_one<F>(
    stream: TcpStream,
    routes: F,
    limits: HttpLimits,
    metrics: Arc<GatewayMetrics>,
    shutdown: CancellationToken,
) where
    F: Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static,
{
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let service = TowerToHyperService::new(warp::service(routes));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        .max_header_size(MAX_REQUEST_HEAD);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics.handshake_timeouts.inc();
            tracing::debug!("request head not received within handshake_timeout_s");
        } else {
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        }
    }
}

/// Errors that concern one connection only (it was reset before we accepted it).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
