//! The browser client, served by the gateway at `/`, and the development token
//! endpoint `POST /dev/token` (only when `gateway.dev_tokens` is on).

use std::sync::Arc;

use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::Gateway;

/// The web client's routes.
pub fn routes(_gw: Arc<Gateway>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path::end().and(warp::get()).map(|| {
        warp::http::Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .body("Warren gateway: the web client is not built yet.".into())
            .unwrap_or_default()
    })
}
