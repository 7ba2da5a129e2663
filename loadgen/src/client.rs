//! One WebSocket client: dialled from a chosen source address, authenticated with an
//! HS256 token, and the few steps of PROTOCOL.md the modes need (`welcome`, `join`).
//!
//! Client buffers are small (4 KiB read buffer, writes go out at once) so that tens of
//! thousands of connections fit in a few loadgen processes, and the load generator's own
//! memory and CPU stay out of the way of what is measured.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::frames::{self, Inbound};
use crate::inflate::{self, Inflate};

/// A client connection: tungstenite over [`Inflate`], which inflates permessage-deflate
/// frames when the connection offered and the server agreed it, and passes the bytes
/// through otherwise.
pub type Ws = WebSocketStream<Inflate<TcpStream>>;

/// Where and how to connect.
#[derive(Clone)]
pub struct Dial {
    /// `ws://127.0.0.1:8080/ws`
    pub url: String,
    pub source_ip: Option<IpAddr>,
    pub timeout: Duration,
    /// `SO_RCVBUF` in bytes, set before connecting (so the advertised window stays
    /// small); `None` keeps the system's default and its autotuning.
    pub recv_buffer: Option<u32>,
    /// Offer permessage-deflate (`Sec-WebSocket-Extensions: permessage-deflate;
    /// client_max_window_bits`) and inflate what the server compresses.
    pub deflate: bool,
    /// Where this connection counts the bytes it reads (shared by a run).
    pub bytes: Arc<inflate::Counters>,
}

impl Dial {
    /// A dial with the system's receive buffer and no compression.
    pub fn plain(url: &str, source_ip: Option<IpAddr>, timeout: Duration) -> Dial {
        Dial {
            url: url.to_owned(),
            source_ip,
            timeout,
            recv_buffer: None,
            deflate: false,
            bytes: Default::default(),
        }
    }
}

/// Why a connection attempt failed, as a short key for counting (`http_429`,
/// `io_ConnectionRefused`, `timeout`, ...).
#[derive(Debug)]
pub struct DialError(pub String);

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<WsError> for DialError {
    fn from(e: WsError) -> Self {
        DialError(match e {
            WsError::Http(response) => format!("http_{}", response.status().as_u16()),
            WsError::Io(io) => format!("io_{:?}", io.kind()),
            WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".to_owned(),
            WsError::Protocol(p) => format!("protocol: {p}"),
            other => format!("ws: {other}"),
        })
    }
}

/// A WebSocket configuration for clients: 4 KiB read buffer, no write batching.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
}

/// Opens the TCP connection (from `source_ip` when given) and upgrades it, sending
/// `Authorization: Bearer <token>` when a token is given. Bounded by `dial.timeout`.
pub async fn dial(dial: &Dial, token: Option<&str>) -> Result<Ws, DialError> {
    match tokio::time::timeout(dial.timeout, dial_unbounded(dial, token)).await {
        Ok(result) => result,
        Err(_) => Err(DialError("timeout".to_owned())),
    }
}

async fn dial_unbounded(dial: &Dial, token: Option<&str>) -> Result<Ws, DialError> {
    let mut request = dial
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| DialError(format!("url {}: {e}", dial.url)))?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| DialError(format!("token header: {e}")))?;
        request.headers_mut().insert("authorization", value);
    }
    if dial.deflate {
        request.headers_mut().insert(
            "sec-websocket-extensions",
            HeaderValue::from_static(inflate::OFFER),
        );
    }
    let uri = request.uri();
    let host = uri
        .host()
        .ok_or_else(|| DialError(format!("no host in {}", dial.url)))?;
    let port = uri.port_u16().unwrap_or(80);
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| DialError(format!("{host}:{port} is not an IP address: {e}")))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| DialError(format!("io_{:?}", e.kind())))?;
    if let Some(ip) = dial.source_ip {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| DialError(format!("bind_{:?}", e.kind())))?;
    }
    if let Some(bytes) = dial.recv_buffer {
        socket
            .set_recv_buffer_size(bytes)
            .map_err(|e| DialError(format!("rcvbuf_{:?}", e.kind())))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| DialError(format!("io_{:?}", e.kind())))?;
    stream
        .set_nodelay(true)
        .map_err(|e| DialError(format!("io_{:?}", e.kind())))?;
    let stream = Inflate::new(stream, dial.deflate, dial.bytes.clone());
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(client_config())).await?;
    Ok(ws)
}

/// An HS256 token for `user`, valid for an hour.
pub fn token(secret: &str, user: &str) -> Result<String, crate::Error> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    encode(
        &Header::default(),
        &json!({"sub": user, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| crate::Error::from(format!("sign token: {e}")))
}

/// Reads frames until `welcome` (the gateway's first frame).
pub async fn welcome(ws: &mut Ws) -> Result<(), DialError> {
    loop {
        match next_text(ws).await? {
            text if text.starts_with("{\"type\":\"welcome\"") => return Ok(()),
            text => match frames::classify(&text) {
                Inbound::Other(kind) if kind == "welcome" => return Ok(()),
                Inbound::Error { code, .. } => return Err(DialError(format!("error_{code}"))),
                _ => {}
            },
        }
    }
}

/// Sends `join` and reads frames until its `joined` (other frames are dropped: nothing
/// is sent to the room before every member has joined). `joined` is recognised by its
/// first bytes: in a big room it lists every member, too long to parse for nothing.
pub async fn join(ws: &mut Ws, room: &str) -> Result<(), DialError> {
    let frame = json!({"type": "join", "room": room, "ref": "j"}).to_string();
    ws.send(Message::text(frame)).await?;
    loop {
        let text = next_text(ws).await?;
        if text.starts_with("{\"type\":\"joined\"") {
            return Ok(());
        }
        match frames::classify(&text) {
            Inbound::Other(kind) if kind == "joined" => return Ok(()),
            Inbound::Error { code, .. } => return Err(DialError(format!("join_{code}"))),
            _ => {}
        }
    }
}

async fn next_text(ws: &mut Ws) -> Result<String, DialError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None => return Err(DialError("closed".to_owned())),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// The `n`-th of `ips`, round robin; `None` when the list is empty.
pub fn pick_ip(ips: &[IpAddr], n: usize) -> Option<IpAddr> {
    if ips.is_empty() {
        None
    } else {
        Some(ips[n % ips.len()])
    }
}

/// Parses `--source-ip` items (`127.0.0.2`, or a range `127.0.0.2-127.0.0.9` on the last
/// octet).
pub fn parse_ips(items: &[String]) -> Result<Vec<IpAddr>, crate::Error> {
    let mut out = Vec::new();
    for item in items {
        if let Some((a, b)) = item.split_once('-') {
            let a: std::net::Ipv4Addr = a
                .parse()
                .map_err(|e| crate::Error::from(format!("--source-ip {item}: {e}")))?;
            let b: std::net::Ipv4Addr = b
                .parse()
                .map_err(|e| crate::Error::from(format!("--source-ip {item}: {e}")))?;
            let (ao, bo) = (a.octets(), b.octets());
            if ao[..3] != bo[..3] || ao[3] > bo[3] {
                return Err(
                    format!("--source-ip {item}: a range varies the last octet only").into(),
                );
            }
            for last in ao[3]..=bo[3] {
                out.push(IpAddr::from([ao[0], ao[1], ao[2], last]));
            }
        } else {
            out.push(
                item.parse()
                    .map_err(|e| crate::Error::from(format!("--source-ip {item}: {e}")))?,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_ranges_expand_on_the_last_octet() {
        let ips = parse_ips(&["127.0.0.2-127.0.0.4".into(), "127.0.0.9".into()]).unwrap();
        let shown: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        assert_eq!(shown, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9"]);
        assert!(parse_ips(&["127.0.0.4-127.0.1.5".into()]).is_err());
        assert_eq!(pick_ip(&ips, 5), Some(ips[1]));
        assert_eq!(pick_ip(&[], 5), None);
    }

    #[test]
    fn tokens_are_three_part_jwts() {
        let t = token("s", "alice").unwrap();
        assert_eq!(t.split('.').count(), 3);
    }
}
