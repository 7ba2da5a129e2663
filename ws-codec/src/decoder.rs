//! The decoder: a client's bytes in, whole messages out, as a server reads them.
//! Pure, so the fuzzer and the unit tests drive it directly; the gateway's reader feeds
//! it what it reads from the socket.

use crate::deflate;
use crate::frame::{self, Assembly, OpCode, Step};

/// Spare capacity the read buffer keeps for the next read (see [`Decoder::spare`]).
pub const READ_CHUNK: usize = 4 << 10;

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

/// Why the decoder refused the client's bytes: the connection must close, with the
/// code each variant names.
#[derive(Debug)]
pub enum DecodeError {
    /// A protocol violation (1002).
    Protocol(&'static str),
    /// A message over `max_message`, before or after decompression (1009).
    TooBig,
    /// Text that is not UTF-8, or compressed data that does not inflate (1007).
    Invalid(&'static str),
}

/// The client side of the protocol without the socket: bytes in, whole messages out.
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
    /// The largest message, after decompression (1009 beyond it).
    max_message: usize,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    /// The last binary message, when binary payloads are kept ([`Decoder::keep_binary`]).
    binary: Option<Vec<u8>>,
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
    /// A decoder for a connection that may receive messages of up to `max_message`
    /// bytes (after inflating), with permessage-deflate negotiated or not.
    pub fn new(max_message: usize, deflate: bool) -> Decoder {
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
            max_message,
            deflate,
            binary: None,
        }
    }

    /// Keeps each binary message's payload for [`Decoder::take_binary`] (the chat
    /// refuses binary and does not; an echo server does).
    pub fn keep_binary(&mut self) {
        self.binary = Some(Vec::new());
    }

    /// The payload of the binary message [`Decoder::next_message`] last returned (empty
    /// unless [`Decoder::keep_binary`] was called).
    pub fn take_binary(&mut self) -> Vec<u8> {
        self.binary.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Adds bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.spare().extend_from_slice(bytes);
    }

    /// The buffer to read into, with at least [`READ_CHUNK`] bytes of spare capacity:
    /// a reader appends what it reads to it, and calls [`Decoder::next_message`].
    pub fn spare(&mut self) -> &mut Vec<u8> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK {
            self.buf.reserve(READ_CHUNK);
        }
        &mut self.buf
    }

    /// Consumes what was read until a message is complete (`Some`), or more bytes are
    /// needed (`None`). After an error the connection must close.
    pub fn next_message(&mut self) -> Result<Option<Incoming>, DecodeError> {
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
            let max = self.max_message as u64;
            if !header.opcode.is_control() && self.wire + header.len > max {
                return Err(DecodeError::TooBig);
            }
            let len = header.len as usize;
            if header.opcode.is_control() && avail.len() < at + len {
                // At most 125 bytes, read whole.
                return Ok(None);
            }
            let step = self
                .assembly
                .step(&header, self.deflate)
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
    fn payload(&mut self) -> Result<Option<Incoming>, DecodeError> {
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
        let max = self.max_message;
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
    fn check_utf8(&mut self) -> Result<(), DecodeError> {
        match std::str::from_utf8(&self.message[self.checked..]) {
            Ok(_) => self.checked = self.message.len(),
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => return Err(DecodeError::Invalid("invalid UTF-8")),
        }
        Ok(())
    }

    /// The whole message, its state cleared for the next one.
    fn finish(&mut self) -> Result<Incoming, DecodeError> {
        let message = std::mem::take(&mut self.message);
        let checked = std::mem::take(&mut self.checked);
        self.wire = 0;
        self.compressed = false;
        if !self.text {
            if let Some(binary) = self.binary.as_mut() {
                *binary = message;
            }
            return Ok(Incoming::Binary);
        }
        if checked != message.len() {
            return Err(DecodeError::Invalid("text ends inside a character"));
        }
        // Checked already; `from_utf8` checks again (fast next to parsing the JSON)
        // rather than `unsafe`.
        String::from_utf8(message)
            .map(Incoming::Text)
            .map_err(|_| DecodeError::Invalid("invalid UTF-8"))
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

fn protocol(v: frame::Violation) -> DecodeError {
    DecodeError::Protocol(v.0)
}

fn inflate_error(e: deflate::InflateError) -> DecodeError {
    match e {
        deflate::InflateError::TooBig => DecodeError::TooBig,
        deflate::InflateError::Corrupt => DecodeError::Invalid("bad compressed data"),
    }
}

fn control(opcode: OpCode, payload: &[u8]) -> Result<Incoming, DecodeError> {
    Ok(match opcode {
        OpCode::Ping => Incoming::Ping(payload.to_vec()),
        OpCode::Pong => Incoming::Pong,
        _ => match payload {
            [] => Incoming::Close(None),
            [_] => return Err(DecodeError::Protocol("one-byte close payload")),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !frame::valid_close_code(code) {
                    return Err(DecodeError::Protocol("invalid close code"));
                }
                if std::str::from_utf8(reason).is_err() {
                    return Err(DecodeError::Invalid("invalid UTF-8 in close reason"));
                }
                Incoming::Close(Some(code))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1000;

    fn decoder(deflate: bool) -> Decoder {
        Decoder::new(MAX, deflate)
    }

    /// A masked client frame.
    fn client(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::client_frame(&mut out, b0, payload, [9, 8, 7, 6]);
        out
    }

    fn all(d: &mut Decoder) -> Result<Vec<Incoming>, DecodeError> {
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
                Err(DecodeError::TooBig) => "too big",
                Err(DecodeError::Invalid(_)) => "invalid",
                Err(DecodeError::Protocol(_)) => "protocol",
                other => panic!("{bytes:?}: {other:?}"),
            };
            assert_eq!(got, want, "{bytes:?}");
        }
    }

    /// Feeds `parts` one by one; the error, if any, and how many parts it took.
    fn first_error(deflate: bool, parts: &[Vec<u8>]) -> Option<(usize, DecodeError)> {
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
        let invalid = |r: Option<(usize, DecodeError)>| {
            r.map(|(at, e)| (at, matches!(e, DecodeError::Invalid(_))))
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

    #[test]
    fn binary_payloads_are_kept_only_when_asked() {
        let bytes = [client(0x02, b"\x00\x01"), client(0x80, b"\xff")].concat();
        let mut d = decoder(false);
        d.feed(&bytes);
        assert_eq!(all(&mut d).unwrap(), [Incoming::Binary]);
        assert!(d.take_binary().is_empty());
        let mut d = decoder(false);
        d.keep_binary();
        d.feed(&bytes);
        assert_eq!(all(&mut d).unwrap(), [Incoming::Binary]);
        assert_eq!(d.take_binary(), b"\x00\x01\xff");
    }

    #[test]
    fn an_oversized_frame_is_refused_on_its_header() {
        let mut d = decoder(false);
        let mut head = vec![0x82, 0x80 | 126];
        head.extend_from_slice(&60_000u16.to_be_bytes());
        head.extend_from_slice(&[0; 4]);
        d.feed(&head);
        assert!(matches!(d.next_message(), Err(DecodeError::TooBig)));
    }
}
