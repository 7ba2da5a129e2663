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
//! - **fan-out CPU**: one event's bytes are shared ([`SharedPayload`]); writing them is one
//!   header and one copy into the batch that a single `write` sends.
//!
//! [`Reader`] and [`Writer`] are the two halves of one TCP connection. The reader is the
//! connection task's; the writer's socket half takes `&self` for every write, and its
//! [`Batch`] (the frames waiting to go out) is kept by the connection's outlet behind a
//! lock, so that the delivery loop can write an event straight to an idle socket. Both
//! are cancel-safe: progress lives in the struct, so a `select!` that drops a pending
//! `next()` or flush loses nothing.
//!
//! The protocol itself (frames, the decoder, permessage-deflate) is the `warren-ws-codec`
//! crate, re-exported here; this module is the gateway's I/O around it.

mod write;

use std::io;

use bytes::Bytes;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

pub use write::{Batch, Counts, SharedPayload, Writer};
pub use ws_codec::{deflate, frame, DecodeError, Decoder, Incoming};

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
    let mut decoder = Decoder::new(config.max_message, config.deflate);
    if !early.is_empty() {
        decoder.feed(&early);
    }
    let reader = Reader { io: read, decoder };
    let writer = Writer {
        io: write,
        batch: Batch::new(config),
    };
    (reader, writer)
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

impl From<DecodeError> for ReadError {
    fn from(e: DecodeError) -> ReadError {
        match e {
            DecodeError::Protocol(why) => ReadError::Protocol(why),
            DecodeError::TooBig => ReadError::TooBig,
            DecodeError::Invalid(why) => ReadError::Invalid(why),
        }
    }
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
