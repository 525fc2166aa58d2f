//! AWS event-stream framing (`application/vnd.amazon.eventstream`, Bedrock's ConverseStream):
//! binary messages, each a prelude (total length, headers length, prelude CRC32), headers, a
//! payload and a message CRC32, all big-endian. Read incrementally from pieces of any size in
//! bounded memory: the payload is handed on as it comes, only the headers are held.
//!
//! Not `aws-smithy-eventstream`: its `MessageFrameDecoder` wants each whole message in one
//! buffer (up to 4 GiB as the prelude claims, no cap of its own) and copies the payload out; it
//! also pulls in `aws-smithy-types` and asks for a newer Rust than this crate's.

use super::ParseStop;

/// Largest message AWS sends or accepts (16 MiB); a longer one stops the parse.
pub(crate) const MAX_MESSAGE: u32 = 16 << 20;
/// Largest headers block AWS allows (128 KiB): the only part of a message held in memory.
pub(crate) const MAX_HEADERS: u32 = 128 << 10;
/// Total length, headers length, prelude CRC.
const PRELUDE: usize = 12;
/// The message CRC.
const CRC: usize = 4;
/// A message with no headers and no payload: the prelude and the message CRC.
const MIN_MESSAGE: u32 = 16;
/// A headers buffer that grew past this is given back after its message.
const KEEP_HEADERS: usize = 4096;
/// Header value types whose value is a 2-byte length and that many bytes.
const TYPE_BYTES: u8 = 6;
const TYPE_STRING: u8 = 7;

/// The headers of one message, read on demand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Headers<'a>(pub(crate) &'a [u8]);

impl<'a> Headers<'a> {
    /// The value of the string header `name` (`:event-type`, `:message-type`, …); None when
    /// absent, of another type, or when the headers are malformed before it.
    pub(crate) fn string(&self, name: &[u8]) -> Option<&'a [u8]> {
        let mut rest = self.0;
        while let Some((&name_len, after)) = rest.split_first() {
            let (key, after) = after.split_at_checked(usize::from(name_len))?;
            let (&kind, after) = after.split_first()?;
            let (value, after) = header_value(kind, after)?;
            if kind == TYPE_STRING && key == name {
                return Some(value);
            }
            rest = after;
        }
        None
    }
}

/// One header value of type `kind` at the start of `input`, and what follows it.
fn header_value(kind: u8, input: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = match kind {
        // bool true, bool false, byte, short, int, long, bytes, string, timestamp, uuid.
        0 | 1 => 0,
        2 => 1,
        3 => 2,
        4 => 4,
        5 | 8 => 8,
        9 => 16,
        TYPE_BYTES | TYPE_STRING => {
            let (len, rest) = input.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*len));
            return rest.split_at_checked(len);
        }
        _ => return None,
    };
    input.split_at_checked(len)
}

/// Where the framer delivers messages.
pub(crate) trait FrameSink {
    /// Payload bytes of the current message, in order, as they arrive: not yet checked
    /// against the message CRC, so a reader applies what a message says in `message`.
    fn payload(&mut self, piece: &[u8]);
    /// The current message ended and its CRC matched.
    fn message(&mut self, headers: &Headers<'_>);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Prelude,
    Headers,
    Payload,
    Crc,
    Stopped(ParseStop),
}

/// Incremental event-stream reader; see the module doc.
#[derive(Debug)]
pub(crate) struct EventStreamFramer {
    state: State,
    /// The prelude (or the message CRC) so far.
    small: [u8; PRELUDE],
    small_len: usize,
    headers: Vec<u8>,
    headers_len: usize,
    payload_left: u32,
    crc: crc32fast::Hasher,
}

impl EventStreamFramer {
    pub(crate) fn new() -> EventStreamFramer {
        EventStreamFramer {
            state: State::Prelude,
            small: [0; PRELUDE],
            small_len: 0,
            headers: Vec::new(),
            headers_len: 0,
            payload_left: 0,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Why reading stopped (an oversized or corrupt message); nothing after it is read.
    pub(crate) fn stop(&self) -> Option<ParseStop> {
        match self.state {
            State::Stopped(reason) => Some(reason),
            _ => None,
        }
    }

    /// Bytes held for the current message (its headers).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.headers.capacity()
    }

    /// Read `input`, handing payloads and ended messages to `sink`.
    pub(crate) fn feed<S: FrameSink + ?Sized>(&mut self, mut input: &[u8], sink: &mut S) {
        while !input.is_empty() {
            input = match self.state {
                State::Prelude => self.prelude(input),
                State::Headers => self.take_headers(input),
                State::Payload => self.payload(input, sink),
                State::Crc => self.message_crc(input, sink),
                State::Stopped(_) => return,
            };
        }
    }

    /// Copies into `small` up to `want` bytes in all; returns the rest and whether it is full.
    fn fill<'i>(&mut self, input: &'i [u8], want: usize) -> (&'i [u8], bool) {
        let room = want.saturating_sub(self.small_len).min(input.len());
        let (head, rest) = input.split_at(room);
        let end = self.small_len.saturating_add(room);
        if let Some(dst) = self.small.get_mut(self.small_len..end) {
            dst.copy_from_slice(head);
        }
        self.small_len = end;
        (rest, end >= want)
    }

    fn prelude<'i>(&mut self, input: &'i [u8]) -> &'i [u8] {
        let (rest, full) = self.fill(input, PRELUDE);
        if full {
            self.small_len = 0;
            let prelude = self.small;
            match check_prelude(&prelude) {
                Ok((total, headers_len)) => self.start(&prelude, total, headers_len),
                Err(reason) => self.halt(reason),
            }
        }
        rest
    }

    /// A checked prelude: the message's headers and payload come next.
    fn start(&mut self, prelude: &[u8; PRELUDE], total: u32, headers_len: u32) {
        self.crc = crc32fast::Hasher::new();
        self.crc.update(prelude);
        self.headers.clear();
        self.headers_len = usize::try_from(headers_len).unwrap_or(usize::MAX);
        self.payload_left = total
            .saturating_sub(MIN_MESSAGE)
            .saturating_sub(headers_len);
        self.state = State::Headers;
        self.skip_empty();
    }

    /// Moves past a headers block or a payload of length zero.
    fn skip_empty(&mut self) {
        if self.state == State::Headers && self.headers.len() >= self.headers_len {
            self.state = State::Payload;
        }
        if self.state == State::Payload && self.payload_left == 0 {
            self.state = State::Crc;
        }
    }

    fn take_headers<'i>(&mut self, input: &'i [u8]) -> &'i [u8] {
        let want = self.headers_len.saturating_sub(self.headers.len());
        let (head, rest) = input.split_at(want.min(input.len()));
        self.crc.update(head);
        self.headers.extend_from_slice(head);
        self.skip_empty();
        rest
    }

    fn payload<'i, S: FrameSink + ?Sized>(&mut self, input: &'i [u8], sink: &mut S) -> &'i [u8] {
        let left = usize::try_from(self.payload_left).unwrap_or(usize::MAX);
        let (head, rest) = input.split_at(left.min(input.len()));
        self.crc.update(head);
        sink.payload(head);
        let used = u32::try_from(head.len()).unwrap_or(u32::MAX);
        self.payload_left = self.payload_left.saturating_sub(used);
        self.skip_empty();
        rest
    }

    fn message_crc<'i, S: FrameSink + ?Sized>(
        &mut self,
        input: &'i [u8],
        sink: &mut S,
    ) -> &'i [u8] {
        let (rest, full) = self.fill(input, CRC);
        if !full {
            return rest;
        }
        self.small_len = 0;
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new());
        if crc.finalize() != be32(&self.small, 0) {
            self.halt(ParseStop::CorruptFrame);
            return rest;
        }
        sink.message(&Headers(&self.headers));
        if self.headers.capacity() > KEEP_HEADERS {
            self.headers = Vec::new();
        }
        self.state = State::Prelude;
        rest
    }

    fn halt(&mut self, reason: ParseStop) {
        self.state = State::Stopped(reason);
        self.headers = Vec::new();
    }
}

/// (total length, headers length) of a prelude whose CRC and lengths hold.
fn check_prelude(prelude: &[u8; PRELUDE]) -> Result<(u32, u32), ParseStop> {
    let (total, headers_len) = (be32(prelude, 0), be32(prelude, 4));
    let head = prelude.get(..8).unwrap_or_default();
    if crc32fast::hash(head) != be32(prelude, 8) {
        return Err(ParseStop::CorruptFrame);
    }
    if total > MAX_MESSAGE || headers_len > MAX_HEADERS {
        return Err(ParseStop::FrameLimit);
    }
    if total < MIN_MESSAGE || headers_len > total.saturating_sub(MIN_MESSAGE) {
        return Err(ParseStop::CorruptFrame);
    }
    Ok((total, headers_len))
}

/// The big-endian `u32` at `at` (0 past the end, which the callers' fixed sizes rule out).
fn be32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at.saturating_add(4))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
}

/// One message in the wire format, for fixtures and tests: string headers and a payload.
#[cfg(test)]
pub(crate) fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(TYPE_STRING);
        block.extend_from_slice(&(value.len() as u16).to_be_bytes());
        block.extend_from_slice(value.as_bytes());
    }
    let total = (PRELUDE + block.len() + payload.len() + CRC) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(&block);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testkit::{Rng, random_pieces};

    /// Records what the framer delivered: (event type, payload) per message.
    #[derive(Default)]
    struct Seen {
        payload: Vec<u8>,
        messages: Vec<(String, Vec<u8>)>,
    }

    impl FrameSink for Seen {
        fn payload(&mut self, piece: &[u8]) {
            self.payload.extend_from_slice(piece);
        }
        fn message(&mut self, headers: &Headers<'_>) {
            let kind = headers.string(b":event-type").unwrap_or(b"-");
            let kind = String::from_utf8_lossy(kind).into_owned();
            self.messages
                .push((kind, std::mem::take(&mut self.payload)));
        }
    }

    fn read(pieces: &[&[u8]]) -> (Seen, Option<ParseStop>) {
        let mut framer = EventStreamFramer::new();
        let mut seen = Seen::default();
        for piece in pieces {
            framer.feed(piece, &mut seen);
        }
        (seen, framer.stop())
    }

    fn stream() -> Vec<u8> {
        let mut out = encode(
            &[(":event-type", "messageStart"), (":message-type", "event")],
            br#"{"role":"assistant"}"#,
        );
        out.extend(encode(&[], b""));
        out.extend(encode(&[(":event-type", "metadata")], br#"{"usage":{}}"#));
        out
    }

    #[test]
    fn messages_come_whole_in_any_chunking() {
        let body = stream();
        let want = vec![
            (
                "messageStart".to_string(),
                br#"{"role":"assistant"}"#.to_vec(),
            ),
            ("-".to_string(), Vec::new()),
            ("metadata".to_string(), br#"{"usage":{}}"#.to_vec()),
        ];
        let mut rng = Rng(3);
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        for pieces in [vec![body.as_slice()], bytes, random_pieces(&body, &mut rng)] {
            let (seen, stop) = read(&pieces);
            assert_eq!((seen.messages, stop), (want.clone(), None));
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_stops_at_that_message() {
        let body = stream();
        // Where each message ends: its first four bytes say.
        let mut ends = Vec::new();
        let mut at = 0;
        while at < body.len() {
            at += be32(&body, at) as usize;
            ends.push(at);
        }
        for at in 0..body.len() {
            for bit in [0x01, 0x80] {
                let mut bad = body.clone();
                bad[at] ^= bit;
                let (seen, stop) = read(&[&bad]);
                let before = ends.iter().filter(|end| **end <= at).count();
                assert_eq!(seen.messages.len(), before, "flip at {at}");
                assert!(stop.is_some(), "flip at {at}");
            }
        }
    }

    #[test]
    fn oversized_and_inconsistent_preludes_stop() {
        let prelude = |total: u32, headers: u32| {
            let mut p = total.to_be_bytes().to_vec();
            p.extend_from_slice(&headers.to_be_bytes());
            p.extend_from_slice(&crc32fast::hash(&p).to_be_bytes());
            p
        };
        let cases = [
            (prelude(MAX_MESSAGE + 1, 0), ParseStop::FrameLimit),
            (prelude(u32::MAX, 0), ParseStop::FrameLimit),
            (prelude(1 << 20, MAX_HEADERS + 1), ParseStop::FrameLimit),
            (prelude(15, 0), ParseStop::CorruptFrame),
            (prelude(20, 5), ParseStop::CorruptFrame),
            (
                b"\0\0\0\x10\0\0\0\0\0\0\0\0".to_vec(),
                ParseStop::CorruptFrame,
            ),
        ];
        for (bytes, want) in cases {
            let (seen, stop) = read(&[&bytes, &[0u8; 64]]);
            assert_eq!((seen.messages.len(), stop), (0, Some(want)), "{bytes:?}");
        }
    }

    #[test]
    fn a_big_payload_is_passed_on_not_held() {
        let payload = vec![b'x'; 15 << 20];
        let body = encode(&[(":event-type", "contentBlockDelta")], &payload);
        let mut framer = EventStreamFramer::new();
        let mut seen = Seen::default();
        let mut most = 0;
        for piece in body.chunks(64 * 1024) {
            framer.feed(piece, &mut seen);
            most = most.max(framer.held());
        }
        assert!(most < KEEP_HEADERS, "held {most}");
        assert_eq!(seen.messages.len(), 1);
        assert_eq!(seen.messages[0].1.len(), payload.len());
    }

    #[test]
    fn headers_of_every_type_are_skipped_to_the_one_asked() {
        let mut block = Vec::new();
        let values: [(u8, &[u8]); 9] = [
            (0, b""),
            (1, b""),
            (2, b"\x01"),
            (3, b"\x00\x02"),
            (4, b"\0\0\0\x03"),
            (5, b"\0\0\0\0\0\0\0\x04"),
            (6, b"\x00\x02ab"),
            (8, b"\0\0\0\0\0\0\0\x05"),
            (9, &[7u8; 16]),
        ];
        for (kind, value) in values {
            block.extend_from_slice(b"\x01h");
            block.push(kind);
            block.extend_from_slice(value);
        }
        block.extend_from_slice(b"\x04name\x07\x00\x05value");
        let headers = Headers(&block);
        assert_eq!(headers.string(b"name"), Some(&b"value"[..]));
        assert_eq!(headers.string(b"h"), None);
        assert_eq!(Headers(b"\x04name\x07\x00\x09short").string(b"name"), None);
        assert_eq!(Headers(b"\x04name\x0f").string(b"name"), None);
    }
}
