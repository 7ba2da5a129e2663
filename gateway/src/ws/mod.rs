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
            partial: 0,
            closed: false,
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
///
/// A data frame's payload is taken as its bytes arrive, not once the frame is whole:
/// text is checked for UTF-8 (after inflating, if compressed) as it comes, so a bad
/// message is refused at its first bad byte (1007) rather than once a client that may
/// never finish it has sent the rest.
pub struct Decoder {
    /// Bytes read and not yet consumed, from `pos`. Empty (no allocation) when idle.
    buf: Vec<u8>,
    pos: usize,
    assembly: Assembly,
    /// The data frame whose payload is being read.
    frame: Option<Payload>,
    /// The message in progress, inflated if it is compressed.
    message: Vec<u8>,
    /// How much of a text `message` is known to be UTF-8; after it, at most the first
    /// bytes of one character that a frame or a read cut in two.
    checked: usize,
    /// The message's bytes on the wire so far (compressed, if it is).
    wire: u64,
    /// Inflates a compressed message that does not arrive in one piece.
    inflater: Option<deflate::Inflater>,
    compressed: bool,
    text: bool,
    config: Config,
}

/// Where the payload of the data frame being read stands.
struct Payload {
    mask: [u8; 4],
    /// Payload bytes taken so far: where the mask stands.
    taken: usize,
    left: usize,
    fin: bool,
}

impl Decoder {
    pub fn new(config: Config) -> Decoder {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            assembly: Assembly::default(),
            frame: None,
            message: Vec::new(),
            checked: 0,
            wire: 0,
            inflater: None,
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

    /// Consumes what was read until a message is complete (`Some`), or more bytes are
    /// needed (`None`). After an error the connection must close.
    pub fn next_message(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            if self.frame.is_some() {
                match self.payload()? {
                    Some(incoming) => {
                        self.release();
                        return Ok(Some(incoming));
                    }
                    // The rest of the frame has not arrived.
                    None if self.frame.is_some() => {
                        self.release();
                        return Ok(None);
                    }
                    // A fragment ended: the next frame follows.
                    None => continue,
                }
            }
            let avail = &self.buf[self.pos..];
            let Some((header, at)) = frame::parse_header(avail).map_err(protocol)? else {
                self.release();
                return Ok(None);
            };
            let max = self.config.max_message as u64;
            if !header.opcode.is_control() && self.wire + header.len > max {
                return Err(ReadError::TooBig);
            }
            let len = header.len as usize;
            if header.opcode.is_control() && avail.len() < at + len {
                // At most 125 bytes, read whole.
                return Ok(None);
            }
            let step = self
                .assembly
                .step(&header, self.config.deflate)
                .map_err(protocol)?;
            self.pos += at;
            if step == Step::Control {
                let payload = &mut self.buf[self.pos..self.pos + len];
                self.pos += len;
                frame::unmask(payload, header.mask);
                let incoming = control(header.opcode, payload)?;
                self.release();
                return Ok(Some(incoming));
            }
            if header.opcode != OpCode::Continuation {
                self.text = header.opcode == OpCode::Text;
                self.compressed = header.rsv1;
            }
            if !self.compressed {
                self.message.reserve(len);
            }
            self.wire += header.len;
            self.frame = Some(Payload {
                mask: header.mask,
                taken: 0,
                left: len,
                fin: header.fin,
            });
        }
    }

    /// Takes what has arrived of the current data frame's payload into the message,
    /// inflating and checking it as it comes; the message itself once its last byte
    /// is in.
    fn payload(&mut self) -> Result<Option<Incoming>, ReadError> {
        let Some(frame) = self.frame.as_mut() else {
            return Ok(None);
        };
        let take = frame.left.min(self.buf.len() - self.pos);
        if take == 0 && frame.left > 0 {
            return Ok(None);
        }
        let piece = &mut self.buf[self.pos..self.pos + take];
        let mut mask = frame.mask;
        mask.rotate_left(frame.taken % 4);
        frame::unmask(piece, mask);
        frame.taken += take;
        frame.left -= take;
        self.pos += take;
        let last = frame.left == 0 && frame.fin;
        if frame.left == 0 {
            self.frame = None;
        }
        let max = self.config.max_message;
        let message = &mut self.message;
        if !self.compressed {
            message.extend_from_slice(piece);
        } else if last && self.inflater.is_none() {
            // The whole message at once: this thread's decompressor does it.
            deflate::decompress(piece, message, max).map_err(inflate_error)?;
        } else {
            let inflater = self.inflater.get_or_insert_with(Default::default);
            inflater.push(piece, message, max).map_err(inflate_error)?;
            if last {
                let inflater = self.inflater.take().expect("inflating");
                inflater.finish(message, max).map_err(inflate_error)?;
            }
        }
        if self.text {
            self.check_utf8()?;
        }
        if !last {
            return Ok(None);
        }
        self.finish().map(Some)
    }

    /// Checks the text that came since the last check. A character cut at the end is
    /// left for the next piece to complete: std's validator calls bytes incomplete only
    /// when they begin some character, and refuses at once those that begin none
    /// (`C0`, `ED A0`, `F4 90`), so a bad text is refused at its first bad byte.
    fn check_utf8(&mut self) -> Result<(), ReadError> {
        match std::str::from_utf8(&self.message[self.checked..]) {
            Ok(_) => self.checked = self.message.len(),
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => return Err(ReadError::Invalid("invalid UTF-8")),
        }
        Ok(())
    }

    /// The whole message, its state cleared for the next one.
    fn finish(&mut self) -> Result<Incoming, ReadError> {
        let message = std::mem::take(&mut self.message);
        let checked = std::mem::take(&mut self.checked);
        self.wire = 0;
        self.compressed = false;
        if !self.text {
            return Ok(Incoming::Binary);
        }
        if checked != message.len() {
            return Err(ReadError::Invalid("text ends inside a character"));
        }
        // Checked already; `from_utf8` checks again (fast next to parsing the JSON)
        // rather than `unsafe`.
        String::from_utf8(message)
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

fn inflate_error(e: deflate::InflateError) -> ReadError {
    match e {
        deflate::InflateError::TooBig => ReadError::TooBig,
        deflate::InflateError::Corrupt => ReadError::Invalid("bad compressed data"),
    }
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
    /// Where the rest of a frame that a direct write left half written ends, at the
    /// start of `buf` (0 when `buf` starts with a frame): whole frames follow it.
    partial: usize,
    /// A close frame is in the batch or gone: nothing may follow it (RFC 6455 §5.5.1).
    closed: bool,
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
        self.partial = self.buf.len();
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
        self.closed = true;
    }

    /// A close frame was queued: the connection sends nothing more.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Drops the frames the socket has not begun to take, for a client that stopped
    /// reading: its close frame then comes right after what is already on its way. The
    /// frame the socket took part of stays, since a client can read nothing after half
    /// a frame.
    pub fn discard_unsent(&mut self) {
        let mut end = self.partial;
        while end < self.pos {
            end += frame::server_frame_len(&self.buf[end..]);
        }
        self.buf.truncate(end);
    }

    fn frame(&mut self, opcode: OpCode, compressed: bool, payload: &[u8]) {
        if self.closed {
            return;
        }
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
        self.partial = 0;
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

    /// Feeds `parts` one by one; the error, if any, and how many parts it took.
    fn first_error(deflate: bool, parts: &[Vec<u8>]) -> Option<(usize, ReadError)> {
        let mut d = decoder(deflate);
        for (i, part) in parts.iter().enumerate() {
            d.feed(part);
            if let Err(e) = all(&mut d) {
                return Some((i + 1, e));
            }
        }
        None
    }

    #[test]
    fn invalid_utf8_is_refused_at_its_first_byte_not_at_the_end_of_the_message() {
        let invalid = |r: Option<(usize, ReadError)>| {
            r.map(|(at, e)| (at, matches!(e, ReadError::Invalid(_))))
        };
        // A first fragment with a bad byte, and no more fragments.
        let parts = [client(0x01, b"{\"type\":\"ping\",\"x\":\"\xff")];
        assert_eq!(invalid(first_error(false, &parts)), Some((1, true)));
        // A frame whose first bytes have arrived, the bad one among them.
        let whole = client(0x81, b"abc\xc0\xafdef ghi jkl");
        let parts = [whole[..10].to_vec(), whole[10..].to_vec()];
        assert_eq!(invalid(first_error(false, &parts)), Some((1, true)));
        // `F4` may start a character; `F4 90` starts none (Autobahn 6.4.2 and 6.4.4).
        let parts = [
            client(0x01, "κόσμε".as_bytes()),
            client(0x00, b"\xf4"),
            client(0x00, b"\x90\x80\x80"),
            client(0x80, b"edited"),
        ];
        assert_eq!(invalid(first_error(false, &parts)), Some((3, true)));
        // Inflated text is checked as it inflates: a compressed first fragment.
        let packed = deflate::compress(b"{\"type\":\"ping\",\"x\":\"\xed\xa0\x80").unwrap();
        let parts = [client(0x41, &packed)];
        assert_eq!(invalid(first_error(true, &parts)), Some((1, true)));
        // A character cut at the end of the message.
        let parts = [client(0x01, b"ab\xc3"), client(0x80, b"")];
        assert_eq!(invalid(first_error(false, &parts)), Some((2, true)));
    }

    #[test]
    fn characters_cut_by_fragments_and_reads_are_whole_again() {
        let text = "ok: é € 𝄞 κόσμε".as_bytes();
        let packed = deflate::compress(text).unwrap();
        let fragments = |first: u8, data: &[u8], cut: usize| {
            [client(first, &data[..cut]), client(0x80, &data[cut..])].concat()
        };
        for (deflate, data) in [(false, text), (true, &packed[..])] {
            for cut in 1..data.len() {
                let bytes = fragments(if deflate { 0x41 } else { 0x01 }, data, cut);
                let mut d = decoder(deflate);
                let mut got = Vec::new();
                for b in bytes {
                    d.feed(&[b]);
                    got.extend(all(&mut d).unwrap());
                }
                let want = [Incoming::Text("ok: é € 𝄞 κόσμε".into())];
                assert_eq!(got, want, "deflate {deflate}, cut {cut}");
            }
        }
    }

    fn batch() -> Batch {
        Batch {
            buf: Vec::new(),
            pos: 0,
            partial: 0,
            closed: false,
            config: decoder(false).config,
            counts: Counts::default(),
        }
    }

    #[test]
    fn a_slow_readers_close_follows_the_frame_on_its_way_and_nothing_after() {
        let mut b = batch();
        for text in ["first", "second", "third"] {
            b.text(text);
        }
        let first = 2 + "first".len();
        // The socket took part of the first frame: it goes out whole, then the close.
        b.pos = 3;
        b.discard_unsent();
        b.close(1013, "slow");
        b.text("never");
        let mut want = vec![0x81, 5];
        want.extend_from_slice(b"first");
        want.extend_from_slice(&[0x88, 6, 0x03, 0xF5]);
        want.extend_from_slice(b"slow");
        assert_eq!(b.buf, want);
        assert!(b.is_closed());
        // Nothing of the batch taken: only the close goes.
        let mut b = batch();
        b.text("first");
        b.discard_unsent();
        assert!(b.buf.is_empty());
        // At a frame boundary: what follows is dropped.
        let mut b = batch();
        b.text("first");
        b.text("second");
        b.pos = first;
        b.discard_unsent();
        assert_eq!(b.buf.len(), first);
        // Behind the rest of a direct write, which is no whole frame.
        let mut b = batch();
        b.buf.extend_from_slice(b"rest of a frame");
        b.partial = b.buf.len();
        b.text("queued");
        b.pos = 4;
        b.discard_unsent();
        assert_eq!(b.buf, b"rest of a frame");
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
