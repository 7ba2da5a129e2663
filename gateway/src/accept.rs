//! The HTTP/1.1 server under the gateway's routes, with the limits `warp::serve` does
//! not offer: every TCP connection must send its complete request head within
//! `gateway.handshake_timeout_s` (a slowloris client that trickles one byte a second,
//! or one that sends nothing, is dropped), a request head is at most
//! [`MAX_REQUEST_HEAD`] bytes, and at most `gateway.max_pending_handshakes` connections
//! may be in their HTTP phase at once, at most `gateway.max_pending_handshakes_per_ip`
//! of them from one source (more are closed at accept), so that one address cannot
//! take every pending place and lock everybody else out.
//!
//! Each accepted connection is served by hyper's HTTP/1 connection with upgrades and
//! [`warp::service`] over the routes; once upgraded to WebSocket it belongs to
//! [`crate::connection`] and no longer counts as pending. HTTP/2 is not served: a
//! WebSocket upgrade is an HTTP/1.1 affair and the operator endpoints need nothing more.
//!
//! Shutdown: when `shutdown` is cancelled the listener closes, every HTTP connection is
//! told to finish its request in flight and not keep alive, and [`run`] returns when
//! they are all gone (the caller bounds the wait with the grace period).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
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
    /// From one source; 0: no per-source cap.
    pub max_pending_per_source: usize,
}

/// The routes an accept loop serves: a warp filter that answers every request.
pub trait Routes:
    Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static
{
}

impl<F> Routes for F where
    F: Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static
{
}

/// Accepts connections on `listener` and serves `routes` on each until `shutdown`.
pub async fn run(
    listener: TcpListener,
    routes: impl Routes,
    limits: HttpLimits,
    metrics: Arc<GatewayMetrics>,
    shutdown: CancellationToken,
) {
    let pending = Arc::new(Semaphore::new(limits.max_pending.max(1)));
    let sources = Sources::new(limits.max_pending_per_source);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(place) = sources.take(peer) else {
            metrics.handshakes_dropped_per_ip.inc();
            drop(stream);
            continue;
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            metrics.handshakes_dropped.inc();
            drop(stream);
            continue;
        };
        let connection = http_phase(
            stream,
            routes.clone(),
            limits,
            metrics.clone(),
            shutdown.clone(),
        );
        connections.spawn(async move {
            connection.await;
            drop((permit, place));
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Pending handshakes by source. A source is an IPv4 address, or an IPv6 /64: one host
/// usually has a whole /64, so counting IPv6 addresses one by one would cap nothing.
#[derive(Clone)]
struct Sources {
    /// Only sources with a pending handshake are in the map.
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
    cap: usize,
}

impl Sources {
    fn new(cap: usize) -> Sources {
        Sources {
            pending: Arc::default(),
            cap,
        }
    }

    /// A pending place for a connection from `peer`, while the source has one left.
    fn take(&self, peer: SocketAddr) -> Option<Place> {
        if self.cap == 0 {
            return Some(Place(None));
        }
        let source = source_of(peer.ip());
        let mut pending = self.lock();
        let count = pending.entry(source).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Place(Some((self.clone(), source))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Every update is one whole step: poisoning is safe to ignore.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's pending place under its source's cap, given back when dropped.
struct Place(Option<(Sources, IpAddr)>);

impl Drop for Place {
    fn drop(&mut self) {
        let Some((sources, source)) = self.0.take() else {
            return;
        };
        let mut pending = sources.lock();
        if let Some(count) = pending.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&source);
            }
        }
    }
}

/// The source a peer address counts under: IPv4 addresses (IPv4-mapped IPv6 ones too)
/// one by one, IPv6 ones by /64.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// One connection's HTTP phase: requests until it upgrades, closes, or times out.
async fn http_phase(
    stream: TcpStream,
    routes: impl Routes,
    limits: HttpLimits,
    metrics: Arc<GatewayMetrics>,
    shutdown: CancellationToken,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40_000)
    }

    /// Whether a place is free for each address, in turn (the places taken are kept).
    fn takes(sources: &Sources, ips: &[&str]) -> (Vec<bool>, Vec<Place>) {
        let taken: Vec<Option<Place>> = ips.iter().map(|ip| sources.take(peer(ip))).collect();
        let free = taken.iter().map(Option::is_some).collect();
        (free, taken.into_iter().flatten().collect())
    }

    #[test]
    fn each_source_has_its_own_pending_places() {
        let sources = Sources::new(2);
        // Two from one address, not a third (IPv4-mapped is the same); another address.
        let (free, a) = takes(&sources, &["10.0.0.1", "10.0.0.1", "10.0.0.1"]);
        assert_eq!(free, [true, true, false]);
        let (free, b) = takes(&sources, &["::ffff:10.0.0.1", "10.0.0.2"]);
        assert_eq!(free, [false, true]);
        drop(a);
        assert!(sources.take(peer("10.0.0.1")).is_some(), "places come back");
        drop(b);
        assert_eq!(sources.lock().len(), 0, "no source left behind");
    }

    #[test]
    fn ipv6_sources_are_64_bit_prefixes() {
        let sources = Sources::new(1);
        // The same /64, then another.
        let ips = ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:3::1"];
        let (free, _taken) = takes(&sources, &ips);
        assert_eq!(free, [true, false, true]);
    }

    #[test]
    fn no_cap_when_zero() {
        let sources = Sources::new(0);
        let many: Vec<_> = (0..100).map(|_| sources.take(peer("10.0.0.1"))).collect();
        assert!(many.iter().all(Option::is_some));
    }
}
