//! The dispatcher's operations listener: its endpoints for operators on `dispatcher.listen`: `/healthz` (the process
//! runs), `/readyz` (consuming its shards with Redis reachable) and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::metrics::DispatcherMetrics;

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert("content-type", value);
    }
    response
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until `shutdown`.
pub async fn serve_health_and_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<DispatcherMetrics>,
    shutdown: CancellationToken,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "dispatcher HTTP listening");
    let m = metrics.clone();
    let healthz = warp::path!("healthz").map(|| text(StatusCode::OK, "ok".into(), "text/plain"));
    let readyz = warp::path!("readyz").map(move || {
        if m.is_ready() {
            text(StatusCode::OK, "ready".into(), "text/plain")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready".into(),
                "text/plain",
            )
        }
    });
    let render = warp::path!("metrics").map(move || {
        text(
            StatusCode::OK,
            metrics.render(),
            common::metrics::CONTENT_TYPE,
        )
    });
    let routes = healthz.or(readyz).unify().or(render).unify();
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown.cancelled_owned())
        .run()
        .await;
}
