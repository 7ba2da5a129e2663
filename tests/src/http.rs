//! A deliberately tiny HTTP/1.1 client over a raw TCP stream.
//!
//! The gateway's HTTP surface is small (`/healthz`, `/readyz`, `/stats`, and `/ws`
//! refusals), and refusals must be checked byte for byte before any WebSocket library
//! gets a say: a WebSocket client only keeps whatever part of an error body happened to
//! arrive with the headers. So requests are written by hand and the body is read by its
//! `Content-Length`, by chunks, or to the end of the stream.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take, connect to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Empty for `101 Switching Protocols`: what follows is WebSocket, not a body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, or `None` when it is not JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// `GET path` with `Connection: close`.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Writes `head` (a complete request head ending in an empty line, no body) and reads
/// the response. A `101` answer is returned as soon as its head is read.
pub async fn request(addr: SocketAddr, head: &str) -> anyhow::Result<HttpResponse> {
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(addr, head))
        .await
        .with_context(|| {
            format!("no complete HTTP answer from {addr} within {REQUEST_TIMEOUT:?}")
        })?
}

async fn exchange(addr: SocketAddr, head: &str) -> anyhow::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.write_all(head.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            bail!("response head larger than {MAX_HEAD} bytes");
        }
        if read_some(&mut stream, &mut buf).await? == 0 {
            bail!(
                "connection closed before the response head ended: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    };
    let head_text = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if status == 101 || status == 204 || status == 304 {
        return Ok(response);
    }
    let mut body = buf.split_off(head_end);
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = response
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    response.body = if chunked {
        loop {
            if let Some(decoded) = dechunk(&body)? {
                break decoded;
            }
            if read_some(&mut stream, &mut body).await? == 0 {
                bail!("connection closed inside a chunked body");
            }
        }
    } else if let Some(length) = length {
        if length > MAX_BODY {
            bail!("body of {length} bytes is larger than {MAX_BODY}");
        }
        while body.len() < length {
            if read_some(&mut stream, &mut body).await? == 0 {
                bail!(
                    "connection closed after {} of {length} body bytes",
                    body.len()
                );
            }
        }
        body.truncate(length);
        body
    } else {
        while read_some(&mut stream, &mut body).await? > 0 {}
        body
    };
    Ok(response)
}

async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    if buf.len() > MAX_HEAD + MAX_BODY {
        bail!("response larger than {} bytes", MAX_HEAD + MAX_BODY);
    }
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body; `None` while more bytes are needed.
fn dechunk(mut raw: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(raw, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&raw[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if raw.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_only_when_complete() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n0\r\n\r\n").unwrap(),
            Some(b"hello".to_vec())
        );
        assert_eq!(dechunk(b"5\r\nhel").unwrap(), None);
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            Some(b"abcde".to_vec())
        );
    }
}
