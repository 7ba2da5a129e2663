//! Tools for the hostile-input tests: a raw WebSocket client that can break the rules a
//! library would not let it break (reserved bits, fragments, invalid UTF-8, never
//! reading), its frames built and read with the codec the gateway runs (`ws-codec`);
//! the gateway's `/metrics` as numbers, its resident memory, RSA keys made with the
//! `openssl` CLI, and the check every hostile test ends with: the gateway still serves
//! a well-behaved client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use jsonwebtoken::{encode, EncodingKey, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use ws_codec::frame;

use crate::connect::Connect;
use crate::Stack;

/// How long a raw read or write may take before the test gives up on it.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_HEAD: usize = 64 * 1024;
/// The largest server frame a raw client accepts (a test never needs more).
const MAX_FRAME: usize = 16 << 20;

/// The opcodes' four bits, as a raw frame carries them.
pub mod opcode {
    use ws_codec::frame::OpCode;

    pub const CONTINUATION: u8 = OpCode::Continuation.bits();
    pub const TEXT: u8 = OpCode::Text.bits();
    pub const BINARY: u8 = OpCode::Binary.bits();
    pub const CLOSE: u8 = OpCode::Close.bits();
    pub const PING: u8 = OpCode::Ping.bits();
    pub const PONG: u8 = OpCode::Pong.bits();
}

/// One frame as it travelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    /// Compressed with permessage-deflate.
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == opcode::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The message's text, inflated first if the frame is compressed.
    pub fn message(&self) -> String {
        if self.rsv1 {
            String::from_utf8_lossy(&inflate(&self.payload)).into_owned()
        } else {
            self.text()
        }
    }
}

/// `data` as one permessage-deflate message, with no context from earlier messages.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    ws_codec::deflate::compress(data).expect("deflate")
}

/// One permessage-deflate message's payload, inflated (as much of it as inflates).
pub fn inflate(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ws_codec::deflate::decompress(data, &mut out, MAX_FRAME).ok();
    out
}

/// What a bounded raw read produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawRead {
    Frame(RawFrame),
    /// The server closed the TCP connection (or reset it).
    Eof,
    Timeout,
}

/// A WebSocket connection spoken byte by byte: the test writes exactly the frames it
/// wants, and reads (or does not read) when it wants.
pub struct RawWs {
    pub stream: TcpStream,
    /// The upgrade answer's status and headers.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    buf: Vec<u8>,
}

impl RawWs {
    /// Opens a TCP connection, sends the upgrade request `connect` describes plus
    /// `extra` headers, and reads the answer's head. With `recv_buffer`, the socket's
    /// receive buffer is set that small before connecting, so a client that stops
    /// reading makes the server's writes block after a few KiB.
    pub async fn open(
        addr: SocketAddr,
        connect: &Connect,
        extra: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> anyhow::Result<RawWs> {
        RawWs::open_from(None, addr, connect, extra, recv_buffer).await
    }

    /// [`RawWs::open`] from the source address `from` (another loopback address, such
    /// as 127.0.0.2, is another client as far as the server can tell).
    pub async fn open_from(
        from: Option<IpAddr>,
        addr: SocketAddr,
        connect: &Connect,
        extra: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> anyhow::Result<RawWs> {
        let socket = TcpSocket::new_v4()?;
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        if let Some(ip) = from {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let mut stream = tokio::time::timeout(RAW_TIMEOUT, socket.connect(addr))
            .await
            .context("connect timed out")??;
        let mut head = connect.raw_upgrade_head(&addr.to_string());
        head.truncate(head.len() - 2);
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut buf = Vec::new();
        let deadline = Instant::now() + RAW_TIMEOUT;
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                bail!("answer head larger than {MAX_HEAD} bytes");
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
                .await
                .context("no answer head in time")??;
            if n == 0 {
                bail!("closed before the answer head ended");
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        buf.drain(..end);
        Ok(RawWs {
            stream,
            status,
            headers,
            buf,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Writes one masked client frame with the given FIN, RSV1 and opcode.
    pub async fn send_frame(
        &mut self,
        fin: bool,
        rsv1: bool,
        opcode: u8,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let bytes = encode_client_frame(fin, rsv1, opcode, payload, rand::random());
        tokio::time::timeout(RAW_TIMEOUT, self.stream.write_all(&bytes))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
    }

    pub async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send_frame(true, false, opcode::TEXT, text.as_bytes())
            .await
    }

    /// The next frame within `timeout`.
    pub async fn read_frame(&mut self, timeout: Duration) -> RawRead {
        let deadline = Instant::now() + timeout;
        loop {
            match decode_server_frame(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return RawRead::Frame(frame);
                }
                Ok(None) => {}
                Err(e) => panic!("the server sent a malformed frame: {e:#}"),
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return RawRead::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return RawRead::Eof,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the server's close frame (its code) or the end of the connection
    /// (`None`), within `timeout`; panics when neither comes.
    pub async fn closed_with(&mut self, timeout: Duration) -> Option<u16> {
        match self.close_within(timeout).await {
            RawRead::Frame(f) => f.close_code(),
            RawRead::Eof => None,
            RawRead::Timeout => panic!("raw client: not closed within {timeout:?}"),
        }
    }

    /// Reads, skipping other frames, until the server's close frame (`Frame`), the end
    /// of the connection (`Eof`) or `timeout` (`Timeout`).
    pub async fn close_within(&mut self, timeout: Duration) -> RawRead {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .read_frame(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                RawRead::Frame(f) if f.opcode != opcode::CLOSE => continue,
                other => return other,
            }
        }
    }

    /// Every frame until the connection ends, within `timeout`; `None` on timeout.
    pub async fn read_to_end(&mut self, timeout: Duration) -> Option<Vec<RawFrame>> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            match self
                .read_frame(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                RawRead::Frame(f) => frames.push(f),
                RawRead::Eof => return Some(frames),
                RawRead::Timeout => return None,
            }
        }
    }
}

/// A TCP connection to `addr` from the source address `from`, that sends nothing.
pub async fn connect_from(from: IpAddr, addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(RAW_TIMEOUT, socket.connect(addr))
        .await
        .context("connect timed out")?
        .context("connect")
}

/// A client frame: masked, as RFC 6455 requires of clients, with whatever FIN, RSV1
/// and opcode bits the test asks for.
pub fn encode_client_frame(
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: &[u8],
    mask: [u8; 4],
) -> Vec<u8> {
    let first = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | (opcode & 0x0f);
    let mut out = Vec::new();
    frame::client_frame(&mut out, first, payload, mask);
    out
}

/// One unmasked server frame from the front of `buf` and the bytes it took, or `None`
/// while more bytes are needed.
pub fn decode_server_frame(buf: &[u8]) -> anyhow::Result<Option<(RawFrame, usize)>> {
    let Some((header, at)) = frame::read_header(buf) else {
        return Ok(None);
    };
    if header.mask.is_some() {
        bail!("server frames must not be masked");
    }
    let len = usize::try_from(header.len)?;
    if len > MAX_FRAME {
        bail!("server frame of {len} bytes");
    }
    if buf.len() < at + len {
        return Ok(None);
    }
    let frame = RawFrame {
        fin: header.fin(),
        rsv1: header.rsv1(),
        opcode: header.opcode(),
        payload: buf[at..at + len].to_vec(),
    };
    Ok(Some((frame, at + len)))
}

// ---- what the gateway says about itself -------------------------------------------

/// `/metrics` of gateway `i` as `name{labels}` → value (comments skipped).
pub async fn metrics(stack: &Stack, i: usize) -> HashMap<String, f64> {
    let response = stack.ops_get(i, "/metrics").await;
    assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
    response
        .text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A sample of [`metrics`], 0 when absent.
pub fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

/// Resident memory (KiB) of the process listening on `addr` (127.0.0.1 only), found
/// through `/proc`: the listening socket's inode, then the process holding it.
pub fn rss_kib_of_listener(addr: SocketAddr) -> anyhow::Result<u64> {
    let port = format!("0100007F:{:04X}", addr.port());
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let inode = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 9 && f[1] == port && f[3] == "0A")
        .map(|f| f[9].to_owned())
        .with_context(|| format!("no listener on {addr} in /proc/net/tcp"))?;
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == wanted.as_str())
        });
        if holds {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .context("no VmRSS");
        }
    }
    bail!("no process holds the listener on {addr}")
}

/// The check every hostile test ends with: a fresh, well-behaved client on gateway `i`
/// connects, joins, sends, gets its `ack` and its `message`, and a `pong`.
pub async fn assert_still_serves(stack: &Stack, i: usize, user: &str) {
    let mut c = stack.connect(i, user).await;
    let room = format!("calm-{user}").to_ascii_lowercase();
    c.join(&room).await;
    let acked = c.send_acked(&room, "still here").await;
    c.recv_until(crate::is_message_with_id(&acked.id), RAW_TIMEOUT)
        .await;
    let pong = c.ping("still-serving").await;
    assert_eq!(pong["type"], "pong", "{user}: {pong}");
    c.close().await;
}

// ---- keys and tokens ------------------------------------------------------------

/// A token must connect on gateway 0 as `user`.
pub async fn assert_connects_as(stack: &Stack, what: &str, token: &str, user: &str) {
    let client = stack
        .connect_with(0, &Connect::token(token), what)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(client.welcome.user.id, user, "{what}");
    client.close().await;
}

/// A forged token must be refused at the handshake with 401 `unauthorized`.
pub async fn assert_unauthorized(stack: &Stack, what: &str, token: &str) {
    let answer = stack.handshake(0, &Connect::token(token)).await;
    assert_eq!(answer.status, 401, "{what}: {}", answer.text());
    assert_eq!(
        answer.json().expect("JSON body")["error"],
        "unauthorized",
        "{what}"
    );
}

/// `<target>/test-logs`, where stacks write their logs and tests their keys.
pub fn test_logs_dir() -> PathBuf {
    crate::process::target_dir().join("test-logs")
}

/// An RSA key pair made by the `openssl` CLI under `dir`: (private PEM, public PEM,
/// public PEM path).
pub fn rsa_keypair(dir: &Path, name: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let private = dir.join(format!("{name}-private.pem"));
    let public = dir.join(format!("{name}-public.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .output()
        .context("run openssl genpkey")?;
    if !made.status.success() {
        bail!("openssl genpkey: {}", String::from_utf8_lossy(&made.stderr));
    }
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .context("run openssl pkey")?;
    if !out.status.success() {
        bail!("openssl pkey: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((std::fs::read(&private)?, std::fs::read(&public)?, public))
}

/// Signs `claims` under `header` (any algorithm, any `kid`, `jwk`...) with `key`.
pub fn sign_with(header: &Header, claims: &impl serde::Serialize, key: &EncodingKey) -> String {
    encode(header, claims, key).expect("signing a test token")
}
