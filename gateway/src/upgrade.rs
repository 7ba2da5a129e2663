//! The public listener's routes ([`routes`]): `/ws`, with every refusal made before
//! the upgrade, and the web client ([`crate::web_client`]). The operations endpoints
//! are on a listener of their own ([`crate::ops`]), so none of them is reachable
//! through the public port or a load balancer in front of it.

use std::sync::Arc;

use proto::codes::refusal;
use serde_json::json;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::caps::ConnectionSlot;
use crate::state::Gateway;
use crate::{connection, ws};

/// A refusal made before the upgrade: a status and a JSON body `{error, message}`.
struct HandshakeRefusal {
    status: StatusCode,
    error: &'static str,
    message: &'static str,
}

fn refuse(status: StatusCode, error: &'static str, message: &'static str) -> HandshakeRefusal {
    HandshakeRefusal {
        status,
        error,
        message,
    }
}

impl HandshakeRefusal {
    /// Counts the refusal, then answers it.
    fn counted(self, gw: &Gateway) -> Response {
        let code = crate::metrics::Code::of(self.error);
        gw.metrics.refusals.get_or_create(&code).inc();
        self.into_response()
    }

    fn into_response(self) -> Response {
        let body = warp::reply::json(&json!({ "error": self.error, "message": self.message }));
        warp::reply::with_status(body, self.status).into_response()
    }
}

/// The public listener's routes: `/ws` and the web client.
pub fn routes(gw: Arc<Gateway>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let gw_for_web = gw.clone();
    let with_gw = warp::any().map(move || gw.clone());
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let upgrade = warp::path!("ws")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(query)
        // Taken before `warp::ws()` consumes it: the gateway finishes the upgrade itself.
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ws())
        .and(with_gw.clone())
        .then(upgrade);
    let not_upgrade = warp::path!("ws")
        .and(warp::header::headers_cloned())
        .and(query)
        .and(with_gw)
        .map(|headers: HeaderMap, query: String, gw: Arc<Gateway>| {
            match admit(&gw, &headers, &query) {
                Err(refusal) => refusal.counted(&gw),
                Ok(_) => refuse(
                    StatusCode::UPGRADE_REQUIRED,
                    "bad_request",
                    "a WebSocket upgrade is required",
                )
                .into_response(),
            }
        });
    let web = crate::web_client::routes(gw_for_web);
    upgrade.or(not_upgrade).unify().or(web).unify()
}

/// Answers a valid upgrade request (`warp::ws()` checked its headers) with `101` and
/// hands the upgraded TCP connection to a connection task, which speaks WebSocket over
/// it with the gateway's own layer ([`crate::ws`]: compression once per event, no
/// buffers held by idle connections). permessage-deflate is agreed here when the client
/// offers it and `gateway.compression` is on.
async fn upgrade(
    headers: HeaderMap,
    query: String,
    on_upgrade: Option<OnUpgrade>,
    _validated: warp::ws::Ws,
    gw: Arc<Gateway>,
) -> Response {
    let (claims, mut slot) = match admit(&gw, &headers, &query) {
        Ok(ok) => ok,
        Err(refusal) => return refusal.counted(&gw),
    };
    // The user's connections on every gateway (a round trip to Redis), after the checks
    // that cost nothing.
    match gw.user_cap.claim(&claims.sub).await {
        Ok(place) => slot.place = place,
        Err(()) => {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                refusal::TOO_MANY_CONNECTIONS,
                "connection limit reached for this user across gateways",
            )
            .counted(&gw)
        }
    }
    let (Some(on_upgrade), Some(key)) = (on_upgrade, headers.get("sec-websocket-key")) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "not an upgradable request",
        )
        .into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let offered_subprotocol = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == proto::SUBPROTOCOL);
    let g = &gw.settings.gateway;
    let extensions = g
        .compression
        .then(|| {
            let offers = headers.get_all("sec-websocket-extensions");
            ws::deflate::negotiate(offers.iter().filter_map(|v| v.to_str().ok()))
        })
        .flatten();
    let config = ws::Config {
        max_message: g.max_frame_bytes,
        deflate: extensions.is_some(),
        deflate_min: g.compress_min_bytes,
    };
    let tracker = gw.tracker.clone();
    tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!(error = %e, "upgrade did not complete"),
        };
        // The gateway's accept loop serves plain TCP (`accept.rs`): take the socket back,
        // with whatever the client sent right behind its handshake.
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            return tracing::error!("upgraded connection is not a TCP stream");
        };
        if config.deflate {
            gw.metrics.deflate_connections.inc();
        }
        let socket = ws::split(parts.io.into_inner(), parts.read_buf, config);
        connection::run(gw, socket, claims, slot).await;
    });
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert("connection", HeaderValue::from_static("upgrade"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", accept);
    }
    if let Some(value) = extensions {
        h.insert("sec-websocket-extensions", HeaderValue::from_static(value));
    }
    if offered_subprotocol {
        response.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(proto::SUBPROTOCOL),
        );
    }
    response
}

/// Every check made before the upgrade, in the order of PROTOCOL.md.
fn admit(
    gw: &Gateway,
    headers: &HeaderMap,
    query: &str,
) -> Result<(common::auth::Claims, ConnectionSlot), HandshakeRefusal> {
    if let Some(origin) = headers.get("origin") {
        let allowed = origin
            .to_str()
            .map(|o| gw.settings.gateway.allowed_origins.iter().any(|a| a == o))
            .unwrap_or(false);
        if !allowed {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                refusal::FORBIDDEN_ORIGIN,
                "origin not allowed",
            ));
        }
    }
    let token = token_from(headers, query).ok_or_else(|| {
        refuse(
            StatusCode::UNAUTHORIZED,
            refusal::UNAUTHORIZED,
            "missing token",
        )
    })?;
    let claims = gw.verifier.verify(&token).map_err(|e| {
        tracing::debug!(error = %e, "token refused");
        refuse(
            StatusCode::UNAUTHORIZED,
            refusal::UNAUTHORIZED,
            "invalid or expired token",
        )
    })?;
    if !gw.is_ready() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            refusal::UNAVAILABLE,
            "gateway not ready",
        ));
    }
    let slot = gw.caps.admit(&claims.sub).ok_or_else(|| {
        refuse(
            StatusCode::TOO_MANY_REQUESTS,
            refusal::TOO_MANY_CONNECTIONS,
            "connection limit reached",
        )
    })?;
    Ok((claims, slot))
}

/// The token from `Authorization: Bearer`, else `?token=`, else the `warren_token` cookie.
fn token_from(headers: &HeaderMap, query: &str) -> Option<String> {
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        if let Some(token) = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
        {
            return Some(token.trim().to_owned());
        }
    }
    if let Some(token) = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
    {
        if !token.is_empty() {
            return Some(token.to_owned());
        }
    }
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("warren_token=").map(str::to_owned))
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn token_comes_from_header_query_or_cookie() {
        assert_eq!(
            token_from(&headers(&[("authorization", "Bearer abc")]), ""),
            Some("abc".into())
        );
        assert_eq!(token_from(&headers(&[]), "x=1&token=qq"), Some("qq".into()));
        assert_eq!(
            token_from(&headers(&[("cookie", "a=b; warren_token=cc; z=1")]), ""),
            Some("cc".into())
        );
        assert_eq!(
            token_from(&headers(&[("authorization", "Basic xyz")]), "token="),
            None
        );
        // The header wins over the query.
        assert_eq!(
            token_from(&headers(&[("authorization", "Bearer h")]), "token=q"),
            Some("h".into())
        );
    }
}
