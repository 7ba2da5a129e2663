//! The write half of a connection: the frames waiting to go out ([`Batch`]) and the
//! socket they go to, and an event's payload shared by every member ([`SharedPayload`]),
//! compressed at most once for all of them.

use std::io::{self, IoSlice};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::net::tcp::OwnedWriteHalf;

use super::deflate;
use super::frame::{self, OpCode};
use super::Config;

/// A text frame's payload shared by every connection it goes to, with its compressed
/// form made at most once, by the first connection that wants it.
#[derive(Debug, Clone)]
pub struct SharedPayload(Arc<PayloadInner>);

#[derive(Debug)]
struct PayloadInner {
    text: Bytes,
    /// `None` when compressing does not make it smaller.
    deflated: OnceLock<Option<Bytes>>,
}

impl SharedPayload {
    pub fn new(text: impl Into<Bytes>) -> SharedPayload {
        SharedPayload(Arc::new(PayloadInner {
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

impl From<String> for SharedPayload {
    fn from(s: String) -> SharedPayload {
        SharedPayload::new(s)
    }
}

impl From<&'static str> for SharedPayload {
    fn from(s: &'static str) -> SharedPayload {
        SharedPayload::new(Bytes::from_static(s.as_bytes()))
    }
}

/// The compressed form of `text`, if it is smaller.
fn smaller(text: &[u8]) -> Option<Vec<u8>> {
    deflate::compress(text).filter(|packed| packed.len() < text.len())
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
    /// An empty batch for a connection that agreed `config`.
    pub fn new(config: Config) -> Batch {
        Batch {
            buf: Vec::new(),
            pos: 0,
            partial: 0,
            closed: false,
            config,
            counts: Counts::default(),
        }
    }

    /// An event's shared payload and whether it is compressed: compressed (once, for
    /// everybody) where negotiated and worth it.
    fn payload_of<'a>(&mut self, text: &'a SharedPayload) -> (&'a [u8], bool) {
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
    pub fn shared(&mut self, text: &SharedPayload) {
        let (payload, compressed) = self.payload_of(text);
        self.frame(OpCode::Text, compressed, payload);
    }

    /// Writes an event's shared text to `io` at once, header and shared payload in one
    /// vectored write, with no copy into the batch; whatever the socket does not take
    /// goes into the batch. Only for an empty batch (frames must not overtake each
    /// other). True when all of it went.
    pub fn write_shared_now(
        &mut self,
        io: &OwnedWriteHalf,
        text: &SharedPayload,
    ) -> io::Result<bool> {
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

    fn batch() -> Batch {
        Batch::new(Config {
            max_message: 1000,
            deflate: false,
            deflate_min: 0,
        })
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
}
