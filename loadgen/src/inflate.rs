//! permessage-deflate (RFC 7692) on the receiving side, for `--deflate`.
//!
//! tokio-tungstenite 0.29 has no permessage-deflate and refuses a frame with RSV1 set,
//! so [`Inflate`] sits between the TCP stream and tungstenite: it passes the HTTP
//! response head through, and when that head agreed the extension, it rewrites every
//! compressed server frame (RSV1 on the first frame of a text or binary message) into a
//! plain frame with the inflated payload before tungstenite sees it. Everything else —
//! plain frames, control frames, anything after a head that did not agree the
//! extension — passes through untouched. The clients never send compressed frames, so
//! writes pass straight through.
//!
//! Warren answers `server_no_context_takeover`: every message is a raw deflate stream of
//! its own, whose sender dropped the `00 00 FF FF` of its final sync flush. A message in
//! one frame (all of Warren's) is inflated with one decompressor per thread, which also
//! remembers the last few messages it inflated: every member of a room gets the same
//! compressed bytes, so the load generator inflates each event about once per thread,
//! not once per member. A message fragmented over several frames keeps a decompressor
//! of its own until its last frame.
//!
//! Frames are read and written, offers made and answers read, and messages inflated
//! with the codec the gateway runs (`warren-ws-codec`); what is here is the adapter and
//! the memory of recent messages.
//!
//! Bounded: a frame longer than [`MAX_FRAME`] on the wire, or a message that inflates to
//! more than that, fails the read (`InvalidData`). Cancel-safe: everything read from
//! the socket and not yet handed on lives in the struct, so a dropped read loses
//! nothing. [`Counters`] (shared by a run's connections) count the bytes read from the
//! socket and the bytes handed to tungstenite, after the response head.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ws_codec::deflate::{self, InflateError, Inflater};
use ws_codec::frame;

/// The longest frame accepted on the wire, and the longest message after inflating.
pub const MAX_FRAME: usize = 16 << 20;

/// The longest HTTP response head accepted before the frames start.
const MAX_HEAD: usize = 16 << 10;

/// What the client offers (it sends nothing compressed).
pub const OFFER: &str = deflate::CLIENT_OFFER;

/// Byte counts of a run's connections (after each response head).
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes read from the sockets: frames as the server sent them.
    pub wire: AtomicU64,
    /// Bytes handed to tungstenite: the same frames, compressed ones inflated.
    pub inflated: AtomicU64,
    /// Compressed frames rewritten.
    pub frames_inflated: AtomicU64,
    /// Of those, the ones inflated (the others were remembered: see [`Whole`]).
    pub inflations: AtomicU64,
    /// Connections whose server agreed permessage-deflate.
    pub agreed: AtomicU64,
}

/// A reading of [`Counters`], to subtract one from another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub wire: u64,
    pub inflated: u64,
    pub frames_inflated: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            wire: self.wire.load(Ordering::Relaxed),
            inflated: self.inflated.load(Ordering::Relaxed),
            frames_inflated: self.frames_inflated.load(Ordering::Relaxed),
        }
    }

    /// The report's fields: totals, and what arrived between `from` and `to`.
    pub fn report(&self, from: Snapshot, to: Snapshot) -> Value {
        let end = self.snapshot();
        json!({
            "agreed_connections": self.agreed.load(Ordering::Relaxed),
            "wire_bytes_in": end.wire,
            "inflated_bytes_in": end.inflated,
            "frames_inflated": end.frames_inflated,
            "inflations": self.inflations.load(Ordering::Relaxed),
            "wire_bytes_in_window": to.wire - from.wire,
            "inflated_bytes_in_window": to.inflated - from.inflated,
            "frames_inflated_in_window": to.frames_inflated - from.frames_inflated,
        })
    }
}

/// A stream whose compressed server frames are read inflated (see the module's doc).
pub struct Inflate<S> {
    inner: S,
    counters: Arc<Counters>,
    state: State,
    /// Rewritten bytes not yet handed on, from `pos`.
    out: Vec<u8>,
    pos: usize,
}

enum State {
    /// No rewriting, ever: bytes go straight to the reader (counted).
    Pass,
    /// In the response head: the bytes of it seen so far.
    Head(Vec<u8>),
    /// After a head that agreed permessage-deflate.
    Frames(Box<Rewriter>),
}

impl<S> Inflate<S> {
    /// `offered`: the request offered permessage-deflate, so the response head is
    /// read for the answer; otherwise every byte passes through.
    pub fn new(inner: S, offered: bool, counters: Arc<Counters>) -> Inflate<S> {
        Inflate {
            inner,
            counters,
            state: if offered {
                State::Head(Vec::new())
            } else {
                State::Pass
            },
            out: Vec::new(),
            pos: 0,
        }
    }

    /// `input` just read from the socket, rewritten into `out` (head bytes included).
    fn process(&mut self, mut input: &[u8]) -> io::Result<()> {
        if let State::Head(head) = &mut self.state {
            let Some(end) = head_end(head, input) else {
                head.extend_from_slice(input);
                if head.len() > MAX_HEAD {
                    return Err(invalid("response head too long"));
                }
                self.out.extend_from_slice(input);
                return Ok(());
            };
            head.extend_from_slice(&input[..end]);
            self.out.extend_from_slice(&input[..end]);
            input = &input[end..];
            if agrees(head) {
                self.counters.agreed.fetch_add(1, Ordering::Relaxed);
                self.state = State::Frames(Box::default());
            } else {
                self.state = State::Pass;
            }
            self.count(input.len() as u64, 0);
            if matches!(self.state, State::Pass) {
                self.out.extend_from_slice(input);
                self.count(0, input.len() as u64);
                return Ok(());
            }
        } else {
            self.count(input.len() as u64, 0);
        }
        match &mut self.state {
            State::Frames(rewriter) => {
                let before = self.out.len();
                let (frames, inflations) = rewriter.feed(input, &mut self.out)?;
                if frames > 0 {
                    let c = &self.counters;
                    c.frames_inflated.fetch_add(frames, Ordering::Relaxed);
                    c.inflations.fetch_add(inflations, Ordering::Relaxed);
                }
                self.count(0, (self.out.len() - before) as u64);
            }
            _ => {
                self.out.extend_from_slice(input);
                self.count(0, input.len() as u64);
            }
        }
        Ok(())
    }

    fn count(&self, wire: u64, inflated: u64) {
        if wire > 0 {
            self.counters.wire.fetch_add(wire, Ordering::Relaxed);
        }
        if inflated > 0 {
            self.counters
                .inflated
                .fetch_add(inflated, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.out.len() {
                let n = (this.out.len() - this.pos).min(buf.remaining());
                buf.put_slice(&this.out[this.pos..this.pos + n]);
                this.pos += n;
                if this.pos == this.out.len() {
                    this.out.clear();
                    this.pos = 0;
                    // A large message's buffer is not kept.
                    if this.out.capacity() > 64 << 10 {
                        this.out = Vec::new();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let n = buf.filled().len() - before;
            if n == 0 {
                // End of stream (a frame cut short is tungstenite's to report).
                return Poll::Ready(Ok(()));
            }
            if matches!(this.state, State::Pass) {
                this.count(n as u64, n as u64);
                return Poll::Ready(Ok(()));
            }
            // Read into the caller's buffer, rewritten into `out`, handed on above.
            let result = this.process(&buf.filled()[before..]);
            buf.set_filled(before);
            result?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflate<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Where the head ends in `input` (the index just past `\r\n\r\n`), given the head's
/// bytes so far.
fn head_end(head: &[u8], input: &[u8]) -> Option<usize> {
    const END: &[u8] = b"\r\n\r\n";
    // The terminator may straddle the two: look at up to 3 bytes of the head too.
    let keep = head.len().min(3);
    let mut joined = head[head.len() - keep..].to_vec();
    joined.extend_from_slice(&input[..input.len().min(MAX_HEAD + 4)]);
    joined
        .windows(4)
        .position(|w| w == END)
        .map(|i| i + 4 - keep)
}

/// Whether a response head agreed permessage-deflate.
fn agrees(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n").skip(1).any(|line| {
        let Some((name, value)) = line.split_once(':') else {
            return false;
        };
        name.trim().eq_ignore_ascii_case("sec-websocket-extensions") && deflate::agreed(value)
    })
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("permessage-deflate: {what}"),
    )
}

/// Whole messages remembered per thread, with what they inflate to, at most...
const RECENT: usize = 2048;
/// ...and at most this many bytes (compressed and inflated) in all.
const RECENT_BYTES: usize = 8 << 20;
/// Only messages this small (compressed) are remembered.
const RECENT_MAX: usize = 4 << 10;

/// Inflates every message that arrives in one frame (each is a deflate stream of its
/// own), and remembers the last ones: under fan-out every member of a room gets the
/// same compressed bytes, which always inflate to the same text, so the load generator
/// inflates each event about once per thread rather than once per member and stays out
/// of the way of what it measures (inflating a chat event costs it about 2 µs). The
/// memory is enough for every event in flight when a thousand members join at once.
struct Whole {
    /// compressed → inflated.
    recent: HashMap<Vec<u8>, Vec<u8>>,
    /// The keys of `recent`, oldest first (forgotten in that order).
    order: VecDeque<Vec<u8>>,
    bytes: usize,
}

thread_local! {
    static WHOLE: RefCell<Whole> = RefCell::new(Whole {
        recent: HashMap::new(),
        order: VecDeque::new(),
        bytes: 0,
    });
}

impl Whole {
    /// Writes the plain frame for the one-frame message `payload` into `out`; true when
    /// it had to be inflated (not remembered).
    fn frame(&mut self, first: u8, payload: &[u8], out: &mut Vec<u8>) -> io::Result<bool> {
        if let Some(plain) = self.recent.get(payload) {
            out.reserve(plain.len() + 10);
            write_header(out, first, plain.len());
            out.extend_from_slice(plain);
            return Ok(false);
        }
        let mut plain = Vec::new();
        deflate::decompress(payload, &mut plain, MAX_FRAME).map_err(inflate_error)?;
        out.reserve(plain.len() + 10);
        write_header(out, first, plain.len());
        out.extend_from_slice(&plain);
        let size = payload.len() + plain.len();
        if payload.len() <= RECENT_MAX && size <= RECENT_BYTES / 64 {
            while self.order.len() >= RECENT || self.bytes + size > RECENT_BYTES {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                if let Some(p) = self.recent.remove(&old) {
                    self.bytes -= old.len() + p.len();
                }
            }
            self.bytes += size;
            self.order.push_back(payload.to_vec());
            self.recent.insert(payload.to_vec(), plain);
        }
        Ok(true)
    }
}

/// The frame layer of a connection after its head: rewrites compressed frames.
#[derive(Default)]
pub struct Rewriter {
    /// Bytes of the current frame's header, or of a compressed frame's payload.
    pending: Vec<u8>,
    phase: Phase,
    /// In a compressed message fragmented over frames: its own decompressor, and how
    /// many bytes it has inflated to so far.
    fragmented: Option<(Box<Inflater>, usize)>,
}

#[derive(Default)]
enum Phase {
    /// Reading a frame header into `pending`.
    #[default]
    Header,
    /// Passing this many more payload bytes of a plain frame through.
    Pass(usize),
    /// Collecting a compressed payload of this length into `pending`.
    Collect(Compressed),
}

#[derive(Clone, Copy)]
struct Compressed {
    /// The first header byte to write: FIN and opcode, RSV1 cleared.
    first: u8,
    fin: bool,
    /// The first frame of its message (RSV1 set), not a continuation.
    starts: bool,
    len: usize,
}

/// A server frame header (unmasked) for `len` payload bytes.
fn write_header(out: &mut Vec<u8>, first: u8, len: usize) {
    frame::write_header(out, first, None, len);
}

impl Rewriter {
    /// Rewrites `input` (any piece of the stream) into `out`; returns the compressed
    /// frames rewritten, and how many of them had to be inflated (the others were
    /// remembered).
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> io::Result<(u64, u64)> {
        let mut inflated = (0, 0);
        while !input.is_empty() {
            match self.phase {
                Phase::Pass(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.phase = if n == left {
                        Phase::Header
                    } else {
                        Phase::Pass(left - n)
                    };
                }
                Phase::Collect(c) => {
                    let n = (c.len - self.pending.len()).min(input.len());
                    self.pending.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.pending.len() == c.len {
                        inflated.0 += 1;
                        inflated.1 += u64::from(self.inflate_frame(c, out)?);
                    }
                }
                Phase::Header => {
                    // Take header bytes one piece at a time until it is whole (at most 14).
                    let had = self.pending.len();
                    let n = (14 - had).min(input.len());
                    self.pending.extend_from_slice(&input[..n]);
                    let Some((header, at)) = frame::read_header(&self.pending) else {
                        input = &input[n..];
                        continue;
                    };
                    let (first, masked, len) = (header.first, header.mask.is_some(), header.len);
                    // Only the header's bytes are used; the rest stays in `input`.
                    input = &input[at - had..];
                    self.pending.truncate(at);
                    if len > MAX_FRAME as u64 {
                        return Err(invalid("frame over 16 MiB"));
                    }
                    let len = len as usize;
                    let opcode = first & 0x0F;
                    let rsv1 = first & 0x40 != 0;
                    let starts = rsv1 && !masked && (opcode == 1 || opcode == 2);
                    let continues = !rsv1 && opcode == 0 && self.fragmented.is_some();
                    if starts || continues {
                        if starts {
                            // A new message: a fragmented one before it was left
                            // unfinished, which tungstenite reports; start afresh.
                            self.fragmented = None;
                        }
                        self.pending.clear();
                        self.pending.reserve(len);
                        self.phase = Phase::Collect(Compressed {
                            first: first & !0x40,
                            fin: first & 0x80 != 0,
                            starts,
                            len,
                        });
                        if len == 0 {
                            inflated.0 += 1;
                            inflated.1 += u64::from(self.inflate_frame(self.compressed(), out)?);
                        }
                    } else {
                        // Plain, control, or not ours to judge: as it came.
                        out.extend_from_slice(&self.pending);
                        self.pending.clear();
                        self.phase = if len == 0 {
                            Phase::Header
                        } else {
                            Phase::Pass(len)
                        };
                    }
                }
            }
        }
        Ok(inflated)
    }

    fn compressed(&self) -> Compressed {
        match self.phase {
            Phase::Collect(c) => c,
            _ => unreachable!("called while collecting"),
        }
    }

    /// The collected payload of `c` inflated, as a plain frame into `out`; true when
    /// it was inflated here (false: remembered from another member's copy).
    fn inflate_frame(&mut self, c: Compressed, out: &mut Vec<u8>) -> io::Result<bool> {
        let payload = std::mem::take(&mut self.pending);
        let mut ran = true;
        if c.starts && c.fin {
            // The whole message in one frame: the thread's decompressor.
            ran = WHOLE.with(|w| w.borrow_mut().frame(c.first, &payload, out))?;
        } else {
            let mut plain = Vec::with_capacity(payload.len() * 3 + 64);
            if c.starts {
                self.fragmented = Some((Box::default(), 0));
            }
            let Some((inflater, so_far)) = self.fragmented.as_mut() else {
                return Err(invalid("continuation without a compressed message"));
            };
            let limit = MAX_FRAME - *so_far;
            inflater
                .push(&payload, &mut plain, limit)
                .map_err(inflate_error)?;
            *so_far += plain.len();
            if c.fin {
                if let Some((inflater, _)) = self.fragmented.take() {
                    inflater.finish(&mut plain, limit).map_err(inflate_error)?;
                }
            }
            out.reserve(plain.len() + 10);
            write_header(out, c.first, plain.len());
            out.extend_from_slice(&plain);
        }
        // Keep the buffer for the next header unless it grew large.
        self.pending = payload;
        self.pending.clear();
        if self.pending.capacity() > 64 << 10 {
            self.pending = Vec::new();
        }
        self.phase = Phase::Header;
        Ok(ran)
    }
}

fn inflate_error(e: InflateError) -> io::Error {
    match e {
        InflateError::TooBig => invalid("message inflates past 16 MiB"),
        InflateError::Corrupt => invalid("bad compressed data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Warren sends: a raw deflate stream, its sync flush's tail removed.
    fn deflate(data: &[u8]) -> Vec<u8> {
        deflate::compress(data).unwrap()
    }

    /// A server frame: FIN, RSV1 and opcode as given, unmasked.
    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let first = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode;
        let mut out = Vec::new();
        write_header(&mut out, first, payload.len());
        out.extend_from_slice(payload);
        out
    }

    /// A JSON-ish text of `n` bytes: random letters (they compress to about 60 %), or
    /// with `seed` 0 a pattern that compresses to almost nothing.
    fn text(n: usize, seed: u32) -> Vec<u8> {
        let mut t = format!("{{\"type\":\"message\",\"room\":\"r{seed}\",\"text\":\"").into_bytes();
        let mut x = seed;
        while t.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let letter = if seed == 0 { t.len() as u32 } else { x >> 16 };
            t.push(b'a' + (letter % 26) as u8);
        }
        t
    }

    /// A stream of every kind of frame, and what tungstenite should see for it.
    fn streams() -> (Vec<u8>, Vec<u8>) {
        let (mut wire, mut plain) = (Vec::new(), Vec::new());
        let mut both = |w: Vec<u8>, p: Vec<u8>| {
            wire.extend(w);
            plain.extend(p);
        };
        let small = text(40, 1);
        both(frame(true, false, 1, &small), frame(true, false, 1, &small));
        let t = text(300, 2);
        both(
            frame(true, true, 1, &deflate(&t)),
            frame(true, false, 1, &t),
        );
        // Ping between messages, passed through.
        both(frame(true, false, 9, b"hi"), frame(true, false, 9, b"hi"));
        // Longer than 125 and 65,535 inflated: both extended length forms.
        let big = text(70_000, 0);
        both(
            frame(true, true, 1, &deflate(&big)),
            frame(true, false, 1, &big),
        );
        // A compressed message in three fragments with a ping between them.
        let m = text(5_000, 4);
        let packed = deflate(&m);
        let (a, rest) = packed.split_at(packed.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        let mut d = Inflater::default();
        let (mut pa, mut pb, mut pc) = (Vec::new(), Vec::new(), Vec::new());
        d.push(a, &mut pa, MAX_FRAME).unwrap();
        d.push(b, &mut pb, MAX_FRAME).unwrap();
        d.push(c, &mut pc, MAX_FRAME).unwrap();
        d.finish(&mut pc, MAX_FRAME).unwrap();
        assert_eq!([&pa[..], &pb[..], &pc[..]].concat(), m);
        both(frame(false, true, 1, a), frame(false, false, 1, &pa));
        both(frame(true, false, 9, b""), frame(true, false, 9, b""));
        both(frame(false, false, 0, b), frame(false, false, 0, &pb));
        both(frame(true, false, 0, c), frame(true, false, 0, &pc));
        // A plain fragmented message: passed through.
        both(frame(false, false, 1, b"ab"), frame(false, false, 1, b"ab"));
        both(frame(true, false, 0, b"cd"), frame(true, false, 0, b"cd"));
        // Binary, compressed; an empty compressed message; a close.
        let bin = vec![7u8; 1000];
        both(
            frame(true, true, 2, &deflate(&bin)),
            frame(true, false, 2, &bin),
        );
        both(
            frame(true, true, 1, &deflate(b"")),
            frame(true, false, 1, b""),
        );
        both(
            frame(true, false, 8, &[3, 232, b'o', b'k']),
            frame(true, false, 8, &[3, 232, b'o', b'k']),
        );
        (wire, plain)
    }

    fn feed_split(wire: &[u8], cuts: &[usize]) -> io::Result<(Vec<u8>, u64)> {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        let mut n = 0;
        let mut at = 0;
        for &cut in cuts.iter().chain([wire.len()].iter()) {
            n += r.feed(&wire[at..cut], &mut out)?.0;
            at = cut;
        }
        Ok((out, n))
    }

    #[test]
    fn rewrites_the_same_at_every_split() {
        let (wire, plain) = streams();
        // Long enough that both compressed and plain frames use the 16-bit length.
        assert!(wire.len() > 2_000, "{}", wire.len());
        let (whole, frames) = feed_split(&wire, &[]).unwrap();
        assert_eq!(whole, plain);
        assert_eq!(frames, 7);
        for cut in 0..=wire.len() {
            let (out, n) = feed_split(&wire, &[cut]).unwrap();
            assert!(out == plain && n == 7, "split at {cut}");
        }
        // And byte by byte.
        let cuts: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(feed_split(&wire, &cuts).unwrap(), (plain, 7));
    }

    #[test]
    fn a_message_seen_before_is_not_inflated_again() {
        let t = text(300, 9);
        let wire = frame(true, true, 1, &deflate(&t));
        let plain = frame(true, false, 1, &t);
        let (mut a, mut b) = (Rewriter::default(), Rewriter::default());
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        assert_eq!(a.feed(&wire, &mut out_a).unwrap(), (1, 1));
        assert_eq!(b.feed(&wire[..5], &mut out_b).unwrap(), (0, 0));
        assert_eq!(b.feed(&wire[5..], &mut out_b).unwrap(), (1, 0));
        assert_eq!((out_a == plain, out_b == plain), (true, true));
        // A different message is inflated; after RECENT others, the first is forgotten.
        for i in 0..RECENT {
            let other = frame(true, true, 1, &deflate(&text(300, 100 + i as u32)));
            assert_eq!(a.feed(&other, &mut Vec::new()).unwrap(), (1, 1));
        }
        let mut again = Vec::new();
        assert_eq!(a.feed(&wire, &mut again).unwrap(), (1, 1));
        assert_eq!(again, plain);
    }

    #[test]
    fn refuses_oversized_frames_and_bombs() {
        let mut r = Rewriter::default();
        let mut header = Vec::new();
        write_header(&mut header, 0x81, MAX_FRAME + 1);
        assert!(r.feed(&header, &mut Vec::new()).is_err());
        // 17 MiB of zeros deflate to a few KiB.
        let bomb = deflate(&vec![0u8; MAX_FRAME + (1 << 20)]);
        assert!(bomb.len() < 64 << 10);
        let mut r = Rewriter::default();
        let err = r
            .feed(&frame(true, true, 1, &bomb), &mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("16 MiB"), "{err}");
        let mut r = Rewriter::default();
        assert!(r
            .feed(&frame(true, true, 1, &[0xFF; 40]), &mut Vec::new())
            .is_err());
    }

    #[test]
    fn reads_the_head_and_agreement() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n";
        assert!(agrees(head));
        assert!(!agrees(b"HTTP/1.1 101 x\r\nUpgrade: websocket\r\n\r\n"));
        assert!(!agrees(
            b"HTTP/1.1 101 x\r\nX-Note: permessage-deflate\r\n\r\n"
        ));
        assert_eq!(head_end(b"", head), Some(head.len()));
        assert_eq!(head_end(b"HTTP/1.1 101 x\r\n\r", b"\nabc"), Some(1));
        assert_eq!(head_end(b"", b"HTTP/1.1 101 x\r\n"), None);
    }

    /// `data` as a socket might hand it out: in pieces of the given sizes, in turn, each
    /// after a poll that is not ready yet.
    fn pieces(data: &[u8], sizes: &[usize]) -> impl AsyncRead + Unpin {
        let mut chunks = Vec::new();
        let mut at = 0;
        for &size in sizes.iter().cycle() {
            if at == data.len() {
                break;
            }
            let n = size.min(data.len() - at);
            chunks.push(io::Result::Ok(bytes::Bytes::copy_from_slice(
                &data[at..at + n],
            )));
            at += n;
        }
        let not_ready_first =
            futures_util::StreamExt::then(futures_util::stream::iter(chunks), |chunk| async move {
                tokio::task::yield_now().await;
                chunk
            });
        tokio_util::io::StreamReader::new(Box::pin(not_ready_first))
    }

    async fn read_all<S: AsyncRead + Unpin>(mut s: S, chunk: usize) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let mut rb = ReadBuf::new(&mut buf);
            std::future::poll_fn(|cx| Pin::new(&mut s).poll_read(cx, &mut rb)).await?;
            let n = rb.filled().len();
            if n == 0 {
                return Ok(all);
            }
            all.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn the_adapter_passes_the_head_and_inflates_after_it() {
        let (wire, plain) = streams();
        for (agreed, offered) in [(true, true), (false, true), (true, false)] {
            let head: &[u8] = if agreed {
                b"HTTP/1.1 101 Switching Protocols\r\nsec-websocket-extensions: permessage-deflate\r\n\r\n"
            } else {
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
            };
            let data = [head, &wire[..]].concat();
            for (sizes, chunk) in [(vec![1], 4096), (vec![7, 300, 2], 100), (vec![1 << 20], 3)] {
                let counters = Arc::new(Counters::default());
                let src = pieces(&data, &sizes);
                let got = read_all(Inflate::new(src, offered, counters.clone()), chunk)
                    .await
                    .unwrap();
                let rewritten = agreed && offered;
                let want = if rewritten {
                    [head, &plain[..]].concat()
                } else {
                    data.clone()
                };
                assert!(got == want, "agreed {agreed} offered {offered}");
                let s = counters.snapshot();
                let after_head = if offered { wire.len() } else { data.len() } as u64;
                assert_eq!(s.wire, after_head);
                let handed = if rewritten {
                    plain.len()
                } else {
                    after_head as usize
                };
                assert_eq!(s.inflated, handed as u64);
                assert_eq!(s.frames_inflated, if rewritten { 7 } else { 0 });
                assert_eq!(
                    counters.agreed.load(Ordering::Relaxed),
                    u64::from(rewritten)
                );
            }
        }
    }
}
