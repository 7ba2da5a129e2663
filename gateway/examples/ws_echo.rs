//! An echo server on the gateway's WebSocket layer, for conformance testing
//! (`scripts/autobahn.sh` runs Autobahn|Testsuite's `fuzzingclient` against it).
//!
//! Everything a client's bytes meet is the gateway's own: the accept loop and HTTP/1.1
//! connections ([`warren_gateway::accept::run`]), the upgrade as `upgrade.rs` makes it
//! (`warp::ws()` checks the request, the socket is taken back from hyper with what was
//! read past the handshake, [`ws::deflate::negotiate`] answers the permessage-deflate
//! offers), and [`Decoder`] (the `warren-ws-codec` crate), which is what the gateway's
//! `ws::Reader` runs on the bytes it reads: framing, fragmentation, control frames, UTF-8, inflating and size
//! limits are judged there, and a refusal closes with the code the gateway's connection
//! task uses (1002, 1007, 1009). Replies are framed with [`ws::frame::header`] and
//! compressed with [`ws::deflate::compress`] when that makes them smaller, as the
//! gateway's `Batch` does.
//!
//! The chat refuses binary (1003) and its decoder drops binary payloads; this one keeps
//! them ([`Decoder::keep_binary`]) to echo them.
//!
//! Usage: `cargo run -p warren-gateway --example ws_echo -- [ADDR]` (default
//! `127.0.0.1:9001`; port 0 picks a free one). Prints `listening on ADDR` once bound.
//! SIGTERM or SIGINT stops it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use proto::codes::close;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use warren_gateway::accept::{self, HttpLimits};
use warren_gateway::metrics::GatewayMetrics;
use warren_gateway::ws::frame::{self, OpCode};
use warren_gateway::ws::{self, DecodeError, Decoder, Incoming};

/// The largest message, after decompression. Autobahn's largest (9.1.6, 9.2.6) is
/// 16 MiB; the gateway's own limit (`gateway.max_frame_bytes`) is far smaller.
const MAX_MESSAGE: usize = 64 << 20;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 << 10;

/// How long a close frame (with the replies before it) may take to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:9001")
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    // The script waits for this line to learn the port.
    println!("listening on {}", listener.local_addr()?);

    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => return eprintln!("ws_echo: no SIGTERM handler: {e}"),
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        signal.cancel();
    });

    let route = warp::get()
        .and(warp::header::headers_cloned())
        // Taken before `warp::ws()` consumes it, as the gateway does.
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ws())
        .map(upgrade);
    let limits = HttpLimits {
        handshake_timeout: Duration::from_secs(10),
        max_pending: 1024,
        max_pending_per_source: 0,
    };
    accept::run(
        listener,
        route,
        limits,
        Arc::new(GatewayMetrics::new()),
        shutdown,
    )
    .await;
    Ok(())
}

/// `101 Switching Protocols`, with permessage-deflate agreed as the gateway agrees it,
/// and the echo spawned on the upgraded socket.
fn upgrade(
    headers: HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    _validated: warp::ws::Ws,
) -> Response {
    let (Some(on_upgrade), Some(key)) = (on_upgrade, headers.get("sec-websocket-key")) else {
        return warp::reply::with_status("not an upgradable request", StatusCode::BAD_REQUEST)
            .into_response();
    };
    let offers = headers.get_all("sec-websocket-extensions");
    let extensions = ws::deflate::negotiate(offers.iter().filter_map(|v| v.to_str().ok()));
    let deflate = extensions.is_some();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return eprintln!("ws_echo: upgrade did not complete: {e}"),
        };
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            return eprintln!("ws_echo: upgraded connection is not a TCP stream");
        };
        echo(parts.io.into_inner(), parts.read_buf, deflate).await;
    });
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert("connection", HeaderValue::from_static("upgrade"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", accept);
    }
    if let Some(value) = extensions {
        h.insert("sec-websocket-extensions", HeaderValue::from_static(value));
    }
    response
}

/// One connection: every whole message goes back as it came, until the client closes
/// (answered with 1000, as the gateway answers), the decoder refuses something
/// (answered with the gateway's code for it), or the socket ends.
async fn echo(stream: TcpStream, early: Bytes, deflate: bool) {
    let mut decoder = Decoder::new(MAX_MESSAGE, deflate);
    decoder.keep_binary();
    decoder.feed(&early);
    let mut out = Vec::new();
    let mut chunk = vec![0; READ_CHUNK];
    let ending = loop {
        let incoming = match decoder.next_message() {
            Ok(Some(incoming)) => incoming,
            Ok(None) => {
                // Everything read is consumed: send the replies, then read on.
                if write_all(&stream, &mut out).await.is_err() {
                    break None;
                }
                match read(&stream, &mut chunk).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => decoder.feed(&chunk[..n]),
                }
                continue;
            }
            Err(e) => break refusal(e),
        };
        match incoming {
            Incoming::Text(text) => reply(&mut out, OpCode::Text, text.as_bytes(), deflate),
            Incoming::Binary => {
                let payload = decoder.take_binary();
                reply(&mut out, OpCode::Binary, &payload, deflate);
            }
            Incoming::Ping(payload) => reply(&mut out, OpCode::Pong, &payload, false),
            Incoming::Pong => {}
            Incoming::Close(_) => break Some((close::NORMAL, "bye")),
        }
    };
    if let Some((code, reason)) = ending {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        reply(&mut out, OpCode::Close, &payload, false);
        // Then the socket is dropped, as the gateway drops it: the server closes TCP.
        let _ = tokio::time::timeout(CLOSE_GRACE, write_all(&stream, &mut out)).await;
    }
}

/// The close the gateway's connection task sends for a refusal.
fn refusal(e: DecodeError) -> Option<(u16, &'static str)> {
    Some(match e {
        DecodeError::Protocol(why) => (close::PROTOCOL_ERROR, why),
        DecodeError::Invalid(why) => (close::INVALID_PAYLOAD, why),
        DecodeError::TooBig => (close::TOO_BIG, "message too big"),
    })
}

/// Queues one frame; a data frame compressed when permessage-deflate was agreed and
/// compressing makes it smaller.
fn reply(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], deflate: bool) {
    if deflate {
        if let Some(packed) = ws::deflate::compress(payload).filter(|p| p.len() < payload.len()) {
            frame::header(out, opcode, true, packed.len());
            out.extend_from_slice(&packed);
            return;
        }
    }
    frame::header(out, opcode, false, payload.len());
    out.extend_from_slice(payload);
}

async fn read(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn write_all(stream: &TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    let mut pos = 0;
    while pos < out.len() {
        stream.writable().await?;
        match stream.try_write(&out[pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    out.clear();
    Ok(())
}
