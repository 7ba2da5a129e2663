//! The gateway's WebSocket layer: RFC 6455 for a server, with permessage-deflate
//! (RFC 7692).
//!
//! Written here rather than taken from a crate for three measured reasons
//! (BENCHMARKS.md, README "The WebSocket layer"):
//! - **compression once per event**: with `server_no_context_takeover` one compressed
//!   frame fits every member, but no Rust WebSocket crate lets a caller write a frame
//!   it compressed itself (tungstenite refuses RSV1 and has no deflate at all; yawc
//!   compresses inside its sink, once per connection);
//! - **idle memory**: an idle connection holds no buffer at all — the reader allocates
//!   when bytes arrive and frees when they are consumed, the writer frees after each
//!   flush — where tungstenite keeps a read and a write buffer per connection;
//! - **fan-out CPU**: one event's bytes are shared ([`Shared`]); writing them is one
//!   header and one copy into the batch that a single `write` sends.
//!
//! [`Reader`] and [`Writer`] are the two halves of one TCP connection. The reader is the
//! connection task's; the writer's socket half takes `&self` for every write, and its
//! [`Batch`] (the frames waiting to go out) is kept by the connection's outlet behind a
//! lock, so that the delivery loop can write an event straight to an idle socket. Both
//! are cancel-safe: progress lives in the struct, so a `select!` that drops a pending
//! `next()` or flush loses nothing.

pub mod deflate;
pub mod frame;

use std::io::{self, IoSlice};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use frame::{Assembly, OpCode, Step};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4 << 10;

/// What the connection negotiated and may receive.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The largest message, after decompression (1009 beyond it).
    pub max_message: usize,
    /// permessage-deflate was negotiated.
    pub deflate: bool,
    /// Texts shorter than this go out uncompressed even under permessage-deflate.
    pub deflate_min: usize,
}

/// Splits an upgraded TCP connection into its WebSocket halves. `early` is what the
/// HTTP layer had already read past the handshake.
pub fn split(stream: TcpStream, early: Bytes, config: Config) -> (Reader, Writer) {
    let (read, write) = stream.into_split();
    let mut decoder = Decoder::new(config);
    if !early.is_empty() {
        decoder.feed(&early);
    }
    let reader = Reader { io: read, decoder };
    let writer = Writer {
        io: write,
        batch: Batch {
            buf: Vec::new(),
            pos: 0,
            config,
            counts: Counts::default(),
        },
    };
    (reader, writer)
}

/// A text frame's payload shared by every connection it goes to, with its compressed
/// form made at most once, by the first connection that wants it.
#[derive(Debug, Clone)]
pub struct Shared(Arc<SharedInner>);

#[derive(Debug)]
struct SharedInner {
    text: Bytes,
    /// `None` when compressing does not make it smaller.
    deflated: OnceLock<Option<Bytes>>,
}

impl Shared {
    pub fn new(text: impl Into<Bytes>) -> Shared {
        Shared(Arc::new(SharedInner {
            text: text.into(),
            deflated: OnceLock::new(),
        }))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0.text
    }

    /// The compressed form, and whether this call was the one that made it.
    fn deflated(&self) -> (Option<&Bytes>, bool) {
        let mut made = false;
        let packed = self.0.deflated.get_or_init(|| {
            made = true;
            smaller(&self.0.text).map(Bytes::from)
        });
        (packed.as_ref(), made)
    }
}

impl From<String> for Shared {
    fn from(s: String) -> Shared {
        Shared::new(s)
    }
}

impl From<&'static str> for Shared {
    fn from(s: &'static str) -> Shared {
        Shared::new(Bytes::from_static(s.as_bytes()))
    }
}

/// The compressed form of `text`, if it is smaller.
fn smaller(text: &[u8]) -> Option<Vec<u8>> {
    deflate::compress(text).filter(|packed| packed.len() < text.len())
}

/// A whole message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The client's close frame: the status it gave, if any.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// A protocol violation (1002).
    Protocol(&'static str),
    /// A message over `max_message`, before or after decompression (1009).
    TooBig,
    /// Text that is not UTF-8, or compressed data that does not inflate (1007).
    Invalid(&'static str),
    /// The TCP connection ended or failed: nothing can be written back.
    Gone(Option<io::Error>),
}

/// The read half: frames in, whole messages out.
pub struct Reader {
    io: OwnedReadHalf,
    decoder: Decoder,
}

impl Reader {
    /// The next whole message. Cancel-safe: the only await is for readiness, and every
    /// byte read is in the decoder before the next one.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(incoming) = self.decoder.next_message()? {
                return Ok(incoming);
            }
            self.io
                .readable()
                .await
                .map_err(|e| ReadError::Gone(Some(e)))?;
            let buf = self.decoder.spare();
            match self.io.try_read_buf(buf) {
                Ok(0) => return Err(ReadError::Gone(None)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(ReadError::Gone(Some(e))),
            }
        }
    }
}

/// The client side of the protocol without the socket: bytes in, whole messages out.
/// Pure, so the fuzzer and the unit tests drive it directly.
pub struct Decoder {
    /// Bytes read and not yet consumed, from `pos`. Empty (no allocation) when idle.
    buf: Vec<u8>,
    pos: usize,
    assembly: Assembly,
    /// The fragmented message in progress.
    message: Vec<u8>,
    compressed: bool,
    text: bool,
    config: Config,
}

impl Decoder {
    pub fn new(config: Config) -> Decoder {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            assembly: Assembly::default(),
            message: Vec::new(),
            compressed: false,
            text: false,
            config,
        }
    }

    /// Adds bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.spare().extend_from_slice(bytes);
    }

    /// The buffer to read into, with at least [`READ_CHUNK`] bytes of spare capacity.
    fn spare(&mut self) -> &mut Vec<u8> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK {
            self.buf.reserve(READ_CHUNK);
        }
        &mut self.buf
    }

    /// Consumes frames already read until one completes a message (`Some`), or more
    /// bytes are needed (`None`). After an error the connection must close.
    pub fn next_message(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let avail = &self.buf[self.pos..];
            let Some((header, at)) = frame::parse_header(avail).map_err(protocol)? else {
                self.release();
                return Ok(None);
            };
            let max = self.config.max_message as u64;
            if !header.opcode.is_control() && self.message.len() as u64 + header.len > max {
                return Err(ReadError::TooBig);
            }
            let len = header.len as usize;
            if avail.len() < at + len {
                // The header promises `len` bytes, no more than `max_message`: make room.
                let missing = at + len - avail.len();
                self.buf.reserve(missing.max(READ_CHUNK));
                return Ok(None);
            }
            let start = self.pos + at;
            self.pos = start + len;
            let payload = &mut self.buf[start..start + len];
            frame::unmask(payload, header.mask);
            let step = self
                .assembly
                .step(&header, self.config.deflate)
                .map_err(protocol)?;
            let done = match step {
                Step::Control => Some(control(header.opcode, payload)?),
                Step::Start => {
                    self.text = header.opcode == OpCode::Text;
                    self.compressed = header.rsv1;
                    self.message.extend_from_slice(payload);
                    None
                }
                Step::Continue => {
                    self.message.extend_from_slice(payload);
                    None
                }
                // A whole message in one frame.
                Step::Finish if header.opcode != OpCode::Continuation => {
                    self.text = header.opcode == OpCode::Text;
                    self.compressed = header.rsv1;
                    let payload = payload.to_vec();
                    Some(self.finish(payload)?)
                }
                // The last fragment.
                Step::Finish => {
                    self.message.extend_from_slice(payload);
                    let whole = std::mem::take(&mut self.message);
                    Some(self.finish(whole)?)
                }
            };
            if let Some(incoming) = done {
                self.release();
                return Ok(Some(incoming));
            }
        }
    }

    /// A whole message's payload: inflated if it was compressed, checked if it is text.
    fn finish(&mut self, payload: Vec<u8>) -> Result<Incoming, ReadError> {
        let payload = if std::mem::take(&mut self.compressed) {
            deflate::decompress(&payload, self.config.max_message).map_err(|e| match e {
                deflate::InflateError::TooBig => ReadError::TooBig,
                deflate::InflateError::Corrupt => ReadError::Invalid("bad compressed data"),
            })?
        } else {
            payload
        };
        if !self.text {
            return Ok(Incoming::Binary);
        }
        String::from_utf8(payload)
            .map(Incoming::Text)
            .map_err(|_| ReadError::Invalid("invalid UTF-8"))
    }

    /// Frees the read buffer once everything in it is consumed: idle costs nothing.
    fn release(&mut self) {
        if self.pos == self.buf.len() && self.pos > 0 {
            self.buf = Vec::new();
            self.pos = 0;
        } else if self.pos > READ_CHUNK {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

fn protocol(v: frame::Violation) -> ReadError {
    ReadError::Protocol(v.0)
}

fn control(opcode: OpCode, payload: &[u8]) -> Result<Incoming, ReadError> {
    Ok(match opcode {
        OpCode::Ping => Incoming::Ping(payload.to_vec()),
        OpCode::Pong => Incoming::Pong,
        _ => match payload {
            [] => Incoming::Close(None),
            [_] => return Err(ReadError::Protocol("one-byte close payload")),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !frame::valid_close_code(code) {
                    return Err(ReadError::Protocol("invalid close code"));
                }
                if std::str::from_utf8(reason).is_err() {
                    return Err(ReadError::Invalid("invalid UTF-8 in close reason"));
                }
                Incoming::Close(Some(code))
            }
        },
    })
}

/// The write half: the socket, whose writes take `&self` (so several owners may share
/// it, each holding the [`Batch`]'s lock while it writes), and the frames waiting.
pub struct Writer {
    pub io: OwnedWriteHalf,
    pub batch: Batch,
}

/// The frames waiting to be written: gathered, then written by [`Batch::try_flush`] (and,
/// when the socket does not take them at once, by the owner waiting for it to be
/// writable and trying again).
pub struct Batch {
    /// The batch, written from `pos`. Freed after every flush: idle costs nothing.
    buf: Vec<u8>,
    pos: usize,
    config: Config,
    counts: Counts,
}

/// What a writer did since its counts were last taken.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Payload bytes put on the wire.
    pub bytes_out: u64,
    /// Bytes compression kept off the wire.
    pub bytes_saved: u64,
    /// Events this writer compressed for everybody (each event is compressed once).
    pub event_compressions: u64,
}

impl Counts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: Counts) {
        self.bytes_out += other.bytes_out;
        self.bytes_saved += other.bytes_saved;
        self.event_compressions += other.event_compressions;
    }
}

impl Batch {
    /// An event's shared payload and whether it is compressed: compressed (once, for
    /// everybody) where negotiated and worth it.
    fn payload_of<'a>(&mut self, text: &'a Shared) -> (&'a [u8], bool) {
        let plain = text.as_bytes();
        if self.config.deflate && plain.len() >= self.config.deflate_min {
            let (packed, made) = text.deflated();
            self.counts.event_compressions += u64::from(made);
            if let Some(packed) = packed {
                self.counts.bytes_saved += (plain.len() - packed.len()) as u64;
                return (packed, true);
            }
        }
        (plain, false)
    }

    /// An event's shared text, queued in the batch.
    pub fn shared(&mut self, text: &Shared) {
        let (payload, compressed) = self.payload_of(text);
        self.frame(OpCode::Text, compressed, payload);
    }

    /// Writes an event's shared text to `io` at once, header and shared payload in one
    /// vectored write, with no copy into the batch; whatever the socket does not take
    /// goes into the batch. Only for an empty batch (frames must not overtake each
    /// other). True when all of it went.
    pub fn write_shared_now(&mut self, io: &OwnedWriteHalf, text: &Shared) -> io::Result<bool> {
        debug_assert!(self.is_empty(), "a direct write would overtake the batch");
        let (payload, compressed) = self.payload_of(text);
        let (head, n) = frame::header_bytes(OpCode::Text, compressed, payload.len());
        let head = &head[..n];
        self.counts.bytes_out += payload.len() as u64;
        let written = match io.try_write_vectored(&[IoSlice::new(head), IoSlice::new(payload)]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        let total = head.len() + payload.len();
        if written == total {
            return Ok(true);
        }
        // The rest, in order, for the owner to finish.
        if written < head.len() {
            self.buf.extend_from_slice(&head[written..]);
            self.buf.extend_from_slice(payload);
        } else {
            self.buf.extend_from_slice(&payload[written - head.len()..]);
        }
        Ok(false)
    }

    /// A text for this connection alone (a reply): compressed here if worth it.
    pub fn text(&mut self, text: &str) {
        let plain = text.as_bytes();
        if self.config.deflate && plain.len() >= self.config.deflate_min {
            if let Some(packed) = smaller(plain) {
                self.counts.bytes_saved += (plain.len() - packed.len()) as u64;
                return self.frame(OpCode::Text, true, &packed);
            }
        }
        self.frame(OpCode::Text, false, plain);
    }

    pub fn ping(&mut self) {
        self.frame(OpCode::Ping, false, &[]);
    }

    pub fn pong(&mut self, payload: &[u8]) {
        self.frame(OpCode::Pong, false, payload);
    }

    pub fn close(&mut self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        // A control frame's payload is at most 125 bytes.
        let reason = &reason.as_bytes()[..reason.len().min(123)];
        payload.extend_from_slice(reason);
        self.frame(OpCode::Close, false, &payload);
    }

    fn frame(&mut self, opcode: OpCode, compressed: bool, payload: &[u8]) {
        self.buf.reserve(payload.len() + 10);
        frame::header(&mut self.buf, opcode, compressed, payload.len());
        self.buf.extend_from_slice(payload);
        self.counts.bytes_out += payload.len() as u64;
    }

    /// Nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Writes as much of the batch as `io` takes now, without waiting: true when all of
    /// it went.
    pub fn try_flush(&mut self, io: &OwnedWriteHalf) -> io::Result<bool> {
        while self.pos < self.buf.len() {
            match io.try_write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.buf = Vec::new();
        self.pos = 0;
        Ok(true)
    }

    /// What this writer did since the last call.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1000;

    fn decoder(deflate: bool) -> Decoder {
        Decoder::new(Config {
            max_message: MAX,
            deflate,
            deflate_min: 0,
        })
    }

    /// A masked client frame.
    fn client(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [9, 8, 7, 6];
        let mut out = vec![b0];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        frame::unmask(&mut body, mask);
        out.extend_from_slice(&body);
        out
    }

    fn all(d: &mut Decoder) -> Result<Vec<Incoming>, ReadError> {
        let mut out = Vec::new();
        while let Some(m) = d.next_message()? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn messages_arrive_whole_whatever_the_byte_boundaries() {
        let mut bytes = client(0x01, b"hel");
        bytes.extend(client(0x89, b"p"));
        bytes.extend(client(0x80, b"lo"));
        bytes.extend(client(0x81, "é".as_bytes()));
        bytes.extend(client(0x88, &[0x03, 0xE8]));
        let want = vec![
            Incoming::Ping(b"p".to_vec()),
            Incoming::Text("hello".into()),
            Incoming::Text("é".into()),
            Incoming::Close(Some(1000)),
        ];
        let mut d = decoder(false);
        d.feed(&bytes);
        assert_eq!(all(&mut d).unwrap(), want);
        let mut d = decoder(false);
        let mut got = Vec::new();
        for b in &bytes {
            d.feed(&[*b]);
            got.extend(all(&mut d).unwrap());
        }
        assert_eq!(got, want);
        assert_eq!(d.buf.capacity(), 0, "nothing held once everything is read");
    }

    #[test]
    fn compressed_messages_inflate() {
        let packed = deflate::compress(b"hello hello hello").unwrap();
        let mut d = decoder(true);
        d.feed(&client(0xC1, &packed));
        let (a, b) = packed.split_at(3);
        d.feed(&client(0x41, a));
        d.feed(&client(0x80, b));
        let want = Incoming::Text("hello hello hello".into());
        assert_eq!(all(&mut d).unwrap(), vec![want.clone(), want]);
    }

    #[test]
    fn limits_and_violations_have_their_errors() {
        let cases: Vec<(bool, Vec<u8>, &str)> = vec![
            (false, client(0x81, &[b'a'; MAX + 1]), "too big"),
            (
                false,
                [client(0x01, &[b'a'; 600]), client(0x80, &[b'a'; 600])].concat(),
                "too big",
            ),
            (
                true,
                client(0xC1, &deflate::compress(&[b'a'; MAX + 1]).unwrap()),
                "too big",
            ),
            (false, client(0x81, &[0xFF]), "invalid"),
            (true, client(0xC1, &[0xFF, 0xFF, 0xFF]), "invalid"),
            (false, client(0xC1, b"x"), "protocol"),
            (false, client(0x80, b"x"), "protocol"),
            (false, client(0x88, &[3]), "protocol"),
            (false, client(0x88, &[0x03, 0xED]), "protocol"),
            (false, client(0x88, &[0x03, 0xE8, 0xFF]), "invalid"),
            (false, vec![0x81, 0x01, b'x'], "protocol"),
        ];
        for (deflate, bytes, want) in cases {
            let mut d = decoder(deflate);
            d.feed(&bytes);
            let got = match all(&mut d) {
                Err(ReadError::TooBig) => "too big",
                Err(ReadError::Invalid(_)) => "invalid",
                Err(ReadError::Protocol(_)) => "protocol",
                other => panic!("{bytes:?}: {other:?}"),
            };
            assert_eq!(got, want, "{bytes:?}");
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_on_its_header() {
        let mut d = decoder(false);
        let mut head = vec![0x82, 0x80 | 126];
        head.extend_from_slice(&60_000u16.to_be_bytes());
        head.extend_from_slice(&[0; 4]);
        d.feed(&head);
        assert!(matches!(d.next_message(), Err(ReadError::TooBig)));
    }
}
