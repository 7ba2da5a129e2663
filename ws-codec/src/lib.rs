//! Warren's WebSocket codec: RFC 6455 frames and RFC 7692 permessage-deflate over byte
//! buffers, with no I/O, so the unit tests and the fuzzer drive it directly and every
//! program that speaks WebSocket here shares it.
//!
//! - [`frame`]: headers read and written, masks, the rules of fragmentation and of close
//!   codes; the server's strict reading and a client's (or a test's) raw one.
//! - [`decoder`]: a client's bytes in, whole messages out ([`Decoder`]), with the limits,
//!   the incremental UTF-8 check and the inflating a server needs.
//! - [`deflate`]: permessage-deflate negotiation on both sides, and the compressor and
//!   decompressors, with their safeguards against truncated output and bombs.
//!
//! Who uses it: the gateway (`gateway/src/ws/`, the socket I/O, its write queue and the
//! compress-once event payload), the Autobahn echo server (`gateway/examples/ws_echo.rs`),
//! the load generator (inflating what the gateway compresses) and the hostile tests'
//! raw client (frames a library would refuse to send). Why Warren has its own layer
//! rather than a crate: README, "The WebSocket layer".

pub mod decoder;
pub mod deflate;
pub mod frame;

pub use decoder::{DecodeError, Decoder, Incoming};
