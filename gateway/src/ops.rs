//! The operations listener (`gateway.ops_listen`, loopback by default): `/healthz`,
//! `/readyz`, `/metrics` and `/stats`. It answers until the very end, so `/readyz` says
//! 503 while the gateway drains.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::state::Gateway;

/// The operations listener's routes: `/healthz`, `/readyz`, `/metrics` and `/stats`
/// (counts only: no user id or room name ever leaves through it).
pub fn routes(gw: Arc<Gateway>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let with_gw = warp::any().map(move || gw.clone());
    let healthz = warp::path!("healthz")
        .map(|| warp::reply::with_status("ok", StatusCode::OK).into_response());
    let readyz = warp::path!("readyz")
        .and(with_gw.clone())
        .map(|gw: Arc<Gateway>| {
            if gw.is_ready() {
                warp::reply::with_status("ready", StatusCode::OK).into_response()
            } else {
                warp::reply::with_status("not ready", StatusCode::SERVICE_UNAVAILABLE)
                    .into_response()
            }
        });
    let metrics = warp::path!("metrics")
        .and(with_gw.clone())
        .map(|gw: Arc<Gateway>| {
            gw.metrics.ready.set(i64::from(gw.is_ready()));
            warp::http::Response::builder()
                .header("content-type", common::metrics::CONTENT_TYPE)
                .body(gw.metrics.render().into())
                .unwrap_or_default()
        });
    let stats = warp::path!("stats").and(with_gw).map(|gw: Arc<Gateway>| {
        let counts = gw.index.counts();
        warp::reply::json(&json!({
            "gateway": gw.id,
            "connections": counts.connections,
            "rooms": counts.rooms,
            "users": counts.users,
            "bindings": gw.broker.binding_count(),
            "ready": gw.is_ready(),
            // Every task of the runtime: about one per connection plus a fixed few.
            "tasks": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        }))
        .into_response()
    });
    healthz
        .or(readyz)
        .unify()
        .or(stats)
        .unify()
        .or(metrics)
        .unify()
}
