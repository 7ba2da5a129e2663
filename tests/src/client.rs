//! A WebSocket client that speaks Warren's frames, as a test wants to read them.
//!
//! Frames come back as `serde_json::Value` so that a test can look at exactly what the
//! server sent (extra fields, missing ones); [`frame`] and the typed requests of
//! [`crate::requests`] (`join`, `send_acked`, `history`, ...) turn them into `proto`
//! types when the shape is not the point. Every wait is bounded: [`RECV_TIMEOUT`] unless
//! a test says otherwise.
//!
//! Frames that [`Client::recv_until`] passes over are set aside, not dropped: the next
//! `recv` returns them first, in arrival order, so "exactly once" checks see everything.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::client::ClientFrame;
use proto::server::{ServerBody, Welcome};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use crate::connect::{Connect, TokenVia};
pub use crate::requests::{ack_of, frame, message_of, parse, Acked};

/// How long a helper waits for one expected frame.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(15);
/// Frames set aside by `recv_until` beyond this mean a test is not reading what it gets.
const MAX_SET_ASIDE: usize = 100_000;

/// What one bounded read produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Recv {
    Frame(Value),
    Timeout,
    /// The server closed (code and reason when it sent a close frame) or the stream ended.
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

/// Why the server refused to upgrade.
#[derive(Debug)]
pub enum ConnectError {
    /// An HTTP answer other than 101; `body` is whatever arrived with the head.
    Refused {
        status: u16,
        body: String,
    },
    Other(anyhow::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused { status, body } => {
                write!(f, "refused with HTTP {status}: {body}")
            }
            ConnectError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One WebSocket connection to a gateway, past its `welcome`. Owns its socket: a test
/// that needs several clients at once moves each into its own task.
pub struct Client {
    ws: Ws,
    /// `user@gw<i>`, for failure messages.
    pub label: String,
    /// The server's first frame.
    pub welcome: Welcome,
    /// The subprotocol the server selected, if any.
    pub subprotocol: Option<String>,
    set_aside: VecDeque<Value>,
    next_ref: u64,
}

impl Client {
    /// Opens `ws://addr/ws` as `connect` says and reads the `welcome` frame.
    pub async fn connect(
        addr: std::net::SocketAddr,
        connect: &Connect,
        label: &str,
    ) -> Result<Client, ConnectError> {
        let url = format!("ws://{addr}{}", connect.path());
        let mut request = url
            .into_client_request()
            .map_err(|e| ConnectError::Other(e.into()))?;
        for (k, v) in connect.headers() {
            let value = HeaderValue::from_str(&v).map_err(|e| ConnectError::Other(e.into()))?;
            request.headers_mut().insert(k, value);
        }
        let opened =
            tokio::time::timeout(RECV_TIMEOUT, tokio_tungstenite::connect_async(request)).await;
        let (mut ws, response) = match opened {
            Err(_) => {
                return Err(ConnectError::Other(anyhow::anyhow!(
                    "no upgrade from {addr} within {RECV_TIMEOUT:?}"
                )))
            }
            Ok(Err(tungstenite::Error::Http(response))) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                return Err(ConnectError::Refused {
                    status: response.status().as_u16(),
                    body: body.into_owned(),
                });
            }
            Ok(Err(e)) => return Err(ConnectError::Other(e.into())),
            Ok(Ok(opened)) => opened,
        };
        let subprotocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let first = match read(&mut ws, RECV_TIMEOUT, label).await {
            Recv::Frame(v) => v,
            other => {
                return Err(ConnectError::Other(anyhow::anyhow!(
                    "{label}: no welcome frame: {other:?}"
                )))
            }
        };
        let welcome = match frame(&first).body {
            ServerBody::Welcome(w) => w,
            _ => {
                return Err(ConnectError::Other(anyhow::anyhow!(
                    "{label}: first frame is not welcome: {first}"
                )))
            }
        };
        Ok(Client {
            ws,
            label: label.to_owned(),
            welcome,
            subprotocol,
            set_aside: VecDeque::new(),
            next_ref: 0,
        })
    }

    /// A fresh `ref`, unique on this connection.
    pub fn new_ref(&mut self, what: &str) -> String {
        self.next_ref += 1;
        format!("{what}-{}", self.next_ref)
    }

    /// Sends any JSON as one text frame.
    pub async fn send_frame(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// Sends a `proto` client frame.
    pub async fn send_client_frame(&mut self, frame: &ClientFrame) {
        self.send_frame(serde_json::to_value(frame).expect("client frames serialise"))
            .await;
    }

    /// Sends raw text, valid JSON or not.
    pub async fn send_text(&mut self, text: &str) {
        self.send_ws(WsMessage::text(text.to_owned())).await;
    }

    /// Sends any WebSocket message (binary, ping, close...). Panics when the socket is gone.
    pub async fn send_ws(&mut self, message: WsMessage) {
        let sent = tokio::time::timeout(RECV_TIMEOUT, self.ws.send(message)).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: send failed: {e}", self.label),
            Err(_) => panic!(
                "{}: send did not complete within {RECV_TIMEOUT:?}",
                self.label
            ),
        }
    }

    /// The next frame (set-aside ones first), or why there is none within `timeout`.
    pub async fn try_recv(&mut self, timeout: Duration) -> Recv {
        if let Some(v) = self.set_aside.pop_front() {
            return Recv::Frame(v);
        }
        read(&mut self.ws, timeout, &self.label).await
    }

    /// The next frame; panics on timeout or close.
    pub async fn recv(&mut self) -> Value {
        match self.try_recv(RECV_TIMEOUT).await {
            Recv::Frame(v) => v,
            other => panic!("{}: expected a frame, got {other:?}", self.label),
        }
    }

    /// The first frame satisfying `pred` within `timeout`; frames passed over are set
    /// aside for later reads. Panics on timeout or close.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        if let Some(i) = self.set_aside.iter().position(&pred) {
            return self.set_aside.remove(i).expect("index is in range");
        }
        let deadline = Instant::now() + timeout;
        let mut fresh = VecDeque::new();
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Read the socket only: the set-aside frames were already checked.
            let got = read(&mut self.ws, left, &self.label).await;
            match got {
                Recv::Frame(v) if pred(&v) => break v,
                Recv::Frame(v) => {
                    fresh.push_back(v);
                    assert!(
                        self.set_aside.len() + fresh.len() <= MAX_SET_ASIDE,
                        "{}: more than {MAX_SET_ASIDE} frames set aside; is the test reading its frames?",
                        self.label
                    );
                }
                other => {
                    let seen: Vec<String> =
                        fresh.iter().rev().take(5).map(Value::to_string).collect();
                    panic!(
                        "{}: wanted frame not seen ({other:?}); last frames passed over: {seen:?}",
                        self.label
                    )
                }
            }
        };
        self.set_aside.extend(fresh);
        found
    }

    /// The answer echoing `reference` (any type: ack, joined, error, ...).
    pub async fn answer(&mut self, reference: &str) -> Value {
        self.recv_until(
            |v| v["ref"] == reference && v["type"] != "message",
            RECV_TIMEOUT,
        )
        .await
    }

    /// The answer echoing `reference`; panics unless its type is `kind`. `what` names the
    /// request in the panic message.
    pub async fn answer_of_type(&mut self, reference: &str, kind: &str, what: &str) -> Value {
        let answer = self.answer(reference).await;
        assert_eq!(
            answer["type"], kind,
            "{}: {what} answered {answer}",
            self.label
        );
        answer
    }

    /// Every frame that is set aside or arrives within `window`, and no more. For
    /// "nothing else arrives" checks.
    pub async fn drain_for(&mut self, window: Duration) -> Vec<Value> {
        let mut out: Vec<Value> = self.set_aside.drain(..).collect();
        self.read_until(Instant::now() + window, |v| out.push(v))
            .await;
        out
    }

    /// Waits for the server to close this connection; returns the close code.
    pub async fn closed_with(&mut self, timeout: Duration) -> Option<u16> {
        match self.read_until(Instant::now() + timeout, drop).await {
            Recv::Closed { code, .. } => code,
            _ => panic!("{}: not closed within {timeout:?}", self.label),
        }
    }

    /// Hands every frame to `each` until `deadline` or the close: what ended the reading
    /// (a timeout or the close).
    async fn read_until(&mut self, deadline: Instant, mut each: impl FnMut(Value)) -> Recv {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_recv(left).await {
                Recv::Frame(v) => each(v),
                ended => return ended,
            }
        }
    }

    /// Closes the connection politely and waits (bounded) for the server's close.
    pub async fn close(mut self) {
        let _closing = tokio::time::timeout(Duration::from_secs(5), self.ws.close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The next text frame from the socket, skipping control frames, within `timeout`.
async fn read(ws: &mut Ws, timeout: Duration, label: &str) -> Recv {
    let deadline = Instant::now() + timeout;
    loop {
        let next = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Recv::Timeout,
            Ok(next) => next,
        };
        match next {
            None => {
                return Recv::Closed {
                    code: None,
                    reason: "stream ended".into(),
                }
            }
            Some(Err(e)) => {
                return Recv::Closed {
                    code: None,
                    reason: format!("socket error: {e}"),
                }
            }
            Some(Ok(WsMessage::Text(text))) => match serde_json::from_str(text.as_str()) {
                Ok(v) => return Recv::Frame(v),
                Err(e) => {
                    panic!("{label}: server sent a text frame that is not JSON ({e}): {text}")
                }
            },
            Some(Ok(WsMessage::Close(close))) => {
                return Recv::Closed {
                    code: close.as_ref().map(|c| u16::from(c.code)),
                    reason: close.map(|c| c.reason.to_string()).unwrap_or_default(),
                }
            }
            Some(Ok(WsMessage::Binary(b))) => {
                panic!("{label}: server sent a binary frame of {} bytes", b.len())
            }
            // Pings are answered by tungstenite itself; pongs and raw frames say nothing.
            Some(Ok(_)) => continue,
        }
    }
}
