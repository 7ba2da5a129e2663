//! RFC 6455 frames: pure functions over bytes, no I/O.
//!
//! The server's side: [`parse_header`] reads one client frame header and refuses what a
//! server must refuse whatever state the connection is in (reserved opcodes and bits,
//! unmasked frames, oversized or fragmented control frames, a 64-bit length with its top
//! bit set); [`Assembly`] decides, from the message in progress, what a frame means;
//! [`header`] and [`header_bytes`] write a server frame's header (servers never mask).
//!
//! The client's side, and any frame as it is on the wire: [`read_header`] reads a header
//! without judging it (a client reading its server, a test reading anyone);
//! [`write_header`] writes any header, reserved bits and opcodes included, masked or not,
//! and [`client_frame`] a whole masked frame. A test that must send what a library would
//! refuse to send builds it from these.

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    /// The opcode of the low four bits of a header's first byte; `None` if reserved.
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// The four bits on the wire.
    #[inline]
    pub const fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    #[inline]
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A client frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// "Per-message compressed" under permessage-deflate (RFC 7692 §6).
    pub rsv1: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    pub len: u64,
}

/// Why a client's frames break the protocol: the connection closes with 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation(pub &'static str);

/// Reads a client frame header from the start of `buf`. `Ok(None)`: not all of it has
/// arrived yet. `Ok(Some((header, n)))`: the header took `n` bytes; the payload follows.
pub fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, Violation> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x30 != 0 {
        return Err(Violation("reserved bits set"));
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(Violation("reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    if b1 & 0x80 == 0 {
        return Err(Violation("client frames must be masked"));
    }
    let Some((len, at)) = length(buf) else {
        return Ok(None);
    };
    if len >> 63 != 0 {
        return Err(Violation("frame length out of range"));
    }
    if opcode.is_control() && (!fin || len > 125) {
        return Err(Violation("control frames must be whole and short"));
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let header = Header {
        fin,
        rsv1,
        opcode,
        mask: mask.try_into().expect("four bytes"),
        len,
    };
    Ok(Some((header, at + 4)))
}

/// The payload length a header gives and where its length field ends, or `None` while
/// `buf` does not hold all of that field. `buf` holds the first two bytes.
fn length(buf: &[u8]) -> Option<(u64, usize)> {
    Some(match buf[1] & 0x7F {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    })
}

/// Any frame's header as it was sent, judged by no rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    /// The first byte: FIN, RSV1-3 and the opcode's four bits.
    pub first: u8,
    /// The masking key, on a client's frame.
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

impl RawHeader {
    pub fn fin(&self) -> bool {
        self.first & 0x80 != 0
    }

    /// "Per-message compressed" under permessage-deflate.
    pub fn rsv1(&self) -> bool {
        self.first & 0x40 != 0
    }

    /// The opcode's four bits (reserved ones included).
    pub fn opcode(&self) -> u8 {
        self.first & 0x0F
    }
}

/// Reads the header at the start of `buf`, whoever sent it and whatever it says:
/// `Some((header, n))` once all `n` bytes of it have arrived.
pub fn read_header(buf: &[u8]) -> Option<(RawHeader, usize)> {
    let first = *buf.first()?;
    let masked = *buf.get(1)? & 0x80 != 0;
    let (len, at) = length(buf)?;
    let (mask, at) = if masked {
        (Some(buf.get(at..at + 4)?.try_into().ok()?), at + 4)
    } else {
        (None, at)
    };
    Some((RawHeader { first, mask, len }, at))
}

/// Unmasks (or masks) a whole frame payload in place.
#[inline]
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes((&*chunk).try_into().expect("four bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// What a data frame does to the message being assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A control frame: handled at once, the message in progress (if any) goes on.
    Control,
    /// Starts a message (text or binary; compressed or not) that more frames continue.
    Start,
    /// Continues the message in progress.
    Continue,
    /// Ends a message: a whole unfragmented one, or the last fragment.
    Finish,
}

/// The state of fragmented-message assembly, as the protocol rules see it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Assembly {
    pub in_message: bool,
}

impl Assembly {
    /// Checks a header against the message in progress and the negotiated extension,
    /// and says what the frame does. Updates the state.
    pub fn step(&mut self, h: &Header, deflate: bool) -> Result<Step, Violation> {
        if h.opcode.is_control() {
            if h.rsv1 {
                return Err(Violation("control frames cannot be compressed"));
            }
            return Ok(Step::Control);
        }
        if h.rsv1 && !deflate {
            return Err(Violation("compressed frame without permessage-deflate"));
        }
        let step = match (h.opcode, self.in_message) {
            (OpCode::Continuation, false) => return Err(Violation("continuation of nothing")),
            (OpCode::Continuation, true) if h.rsv1 => {
                return Err(Violation("RSV1 on a continuation frame"))
            }
            (OpCode::Continuation, true) => Step::Continue,
            (_, true) => return Err(Violation("new message inside a fragmented one")),
            (_, false) => Step::Start,
        };
        self.in_message = !h.fin;
        Ok(match (step, h.fin) {
            (_, true) => Step::Finish,
            (s, false) => s,
        })
    }
}

/// A header's first byte (RSV2 and RSV3 clear).
#[inline]
pub fn first_byte(fin: bool, rsv1: bool, opcode: OpCode) -> u8 {
    (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.bits()
}

/// A server frame header (FIN set, unmasked) on the stack: the bytes and how many.
#[inline]
pub fn header_bytes(opcode: OpCode, compressed: bool, len: usize) -> ([u8; 10], usize) {
    unmasked_header(first_byte(true, compressed, opcode), len)
}

/// An unmasked header with this first byte, on the stack: the bytes and how many.
#[inline]
fn unmasked_header(first: u8, len: usize) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = first;
    let n = match len {
        0..=125 => {
            head[1] = len as u8;
            2
        }
        126..=0xFFFF => {
            head[1] = 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    (head, n)
}

/// Writes a server frame header (FIN set, unmasked) into `out`.
#[inline]
pub fn header(out: &mut Vec<u8>, opcode: OpCode, compressed: bool, len: usize) {
    // Byte by byte rather than through `header_bytes`: a copy of a variable length
    // measured several times slower on the fan-out path, which writes one per frame.
    out.push(first_byte(true, compressed, opcode));
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Writes any header into `out`: `first` as given (reserved bits and opcodes too), the
/// shortest length form, and the mask bit and key when `mask` is given.
#[inline]
pub fn write_header(out: &mut Vec<u8>, first: u8, mask: Option<[u8; 4]>, len: usize) {
    let (mut head, n) = unmasked_header(first, len);
    if let Some(mask) = mask {
        head[1] |= 0x80;
        out.extend_from_slice(&head[..n]);
        out.extend_from_slice(&mask);
    } else {
        out.extend_from_slice(&head[..n]);
    }
}

/// Writes a whole client frame into `out`: `first` as given, the payload masked with
/// `mask` (RFC 6455 §5.3).
pub fn client_frame(out: &mut Vec<u8>, first: u8, payload: &[u8], mask: [u8; 4]) {
    out.reserve(payload.len() + 14);
    write_header(out, first, Some(mask), payload.len());
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask);
}

/// The length, header included, of the server frame at the start of `buf`, which
/// [`header`] or [`header_bytes`] wrote.
#[inline]
pub fn server_frame_len(buf: &[u8]) -> usize {
    let (len, at) = match buf[1] & 0x7F {
        126 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 => {
            let len = u64::from_be_bytes(buf[2..10].try_into().expect("eight bytes"));
            (len as usize, 10)
        }
        n => (usize::from(n), 2),
    };
    at + len
}

/// Is this a close code a peer may send (RFC 6455 §7.4)?
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        client_frame(&mut out, b0, payload, [1, 2, 3, 4]);
        out
    }

    #[test]
    fn a_masked_text_frame_reads_back() {
        for len in [0, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let bytes = masked(0x81, &payload);
            let (h, n) = parse_header(&bytes).unwrap().unwrap();
            assert!(h.fin && !h.rsv1);
            assert_eq!(h.opcode, OpCode::Text);
            assert_eq!(h.len as usize, len);
            let mut body = bytes[n..].to_vec();
            unmask(&mut body, h.mask);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn a_partial_header_asks_for_more() {
        let bytes = masked(0x81, &[b'x'; 300]);
        for cut in 0..8 {
            assert_eq!(parse_header(&bytes[..cut]), Ok(None), "{cut} bytes");
        }
        assert!(parse_header(&bytes[..8]).unwrap().is_some());
    }

    #[test]
    fn what_a_server_must_refuse_is_refused() {
        let cases: [(&[u8], &str); 6] = [
            (&[0xA1, 0x80, 0, 0, 0, 0], "RSV2"),
            (&[0x91, 0x80, 0, 0, 0, 0], "RSV3"),
            (&[0x83, 0x80, 0, 0, 0, 0], "opcode 3"),
            (&[0x8B, 0x80, 0, 0, 0, 0], "opcode 11"),
            (&[0x81, 0x00], "unmasked"),
            (&[0x09, 0x80, 0, 0, 0, 0], "fragmented ping"),
        ];
        for (bytes, what) in cases {
            assert!(parse_header(bytes).is_err(), "{what}");
        }
        let long_ping = masked(0x89, &[0; 126]);
        assert!(parse_header(&long_ping).is_err());
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert!(parse_header(&huge).is_err());
    }

    fn h(fin: bool, rsv1: bool, opcode: OpCode) -> Header {
        Header {
            fin,
            rsv1,
            opcode,
            mask: [0; 4],
            len: 0,
        }
    }

    /// One uncompressed frame through `a`, without permessage-deflate.
    fn plain(a: &mut Assembly, fin: bool, opcode: OpCode) -> Result<Step, Violation> {
        a.step(&h(fin, false, opcode), false)
    }

    #[test]
    fn fragments_assemble_by_the_rules() {
        let mut a = Assembly::default();
        assert_eq!(plain(&mut a, false, OpCode::Text), Ok(Step::Start));
        assert_eq!(plain(&mut a, true, OpCode::Ping), Ok(Step::Control));
        assert_eq!(
            plain(&mut a, false, OpCode::Continuation),
            Ok(Step::Continue)
        );
        assert!(plain(&mut a, true, OpCode::Text).is_err());
        let mut a = Assembly::default();
        assert_eq!(plain(&mut a, false, OpCode::Text), Ok(Step::Start));
        assert_eq!(plain(&mut a, true, OpCode::Continuation), Ok(Step::Finish));
        assert!(!a.in_message);
        assert!(plain(&mut a, true, OpCode::Continuation).is_err());
    }

    #[test]
    fn rsv1_only_starts_a_message_and_only_when_negotiated() {
        let mut a = Assembly::default();
        assert!(a.step(&h(true, true, OpCode::Text), false).is_err());
        assert_eq!(a.step(&h(true, true, OpCode::Text), true), Ok(Step::Finish));
        assert!(a.step(&h(true, true, OpCode::Ping), true).is_err());
        assert_eq!(a.step(&h(false, true, OpCode::Text), true), Ok(Step::Start));
        assert!(a.step(&h(true, true, OpCode::Continuation), true).is_err());
    }

    #[test]
    fn server_headers_use_the_shortest_length() {
        for (len, want) in [
            (5usize, 2usize),
            (125, 2),
            (126, 4),
            (65_535, 4),
            (65_536, 10),
        ] {
            let mut out = Vec::new();
            header(&mut out, OpCode::Text, false, len);
            assert_eq!(out.len(), want, "{len}");
            assert_eq!(out[0], 0x81);
            assert_eq!(server_frame_len(&out), want + len, "{len}");
        }
        let mut out = Vec::new();
        header(&mut out, OpCode::Text, true, 3);
        assert_eq!(out, [0xC1, 3]);
    }

    #[test]
    fn any_header_reads_back_as_it_was_written() {
        for (first, mask, len) in [
            (0x81, None, 5usize),
            (0xC1, None, 300),
            (0x02, Some([9, 8, 7, 6]), 70_000),
            (0xB3, Some([1, 2, 3, 4]), 0),
        ] {
            let mut out = Vec::new();
            write_header(&mut out, first, mask, len);
            let want = RawHeader {
                first,
                mask,
                len: len as u64,
            };
            assert_eq!(read_header(&out), Some((want, out.len())));
            for cut in 0..out.len() {
                assert_eq!(read_header(&out[..cut]), None, "{cut} bytes");
            }
        }
        let mut out = Vec::new();
        write_header(&mut out, first_byte(true, true, OpCode::Text), None, 3);
        assert_eq!(out, [0xC1, 3]);
    }

    #[test]
    fn close_codes() {
        for ok in [1000, 1001, 1003, 1007, 1011, 3000, 4401, 4999] {
            assert!(valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert!(!valid_close_code(bad), "{bad}");
        }
    }
}
