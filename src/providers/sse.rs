//! Incremental Server-Sent Events framing: bytes split anywhere in, event data streamed out, bounded memory.

use memchr::memchr2;

/// Event data beyond this is not handed on; the event is counted as dropped (cut).
pub(crate) const MAX_EVENT_DATA: u64 = 8 * 1024 * 1024;
/// Event names we act on are short (`message_stop`, `response.completed`).
const MAX_EVENT_NAME: usize = 64;
/// Enough of the data to recognise `[DONE]`.
const HEAD_LEN: usize = 16;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event; its data went to [`SseSink::data`] piece by piece before this.
#[derive(Debug)]
pub(crate) struct SseEvent<'a> {
    /// The `event:` field; empty means the default `message`.
    pub name: &'a [u8],
    /// The first bytes of the data.
    pub head: &'a [u8],
    /// Full data length, including any part not handed on.
    pub len: u64,
}

impl SseEvent<'_> {
    /// The data is exactly `text` (ignoring surrounding whitespace).
    pub(crate) fn data_is(&self, text: &[u8]) -> bool {
        self.len <= HEAD_LEN as u64 && self.head.trim_ascii() == text
    }
}

/// Receives event data (lines joined with `\n`) and then the event itself.
pub(crate) trait SseSink {
    fn data(&mut self, piece: &[u8]);
    fn event(&mut self, event: &SseEvent<'_>);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Start,
    Name,
    SkipSpace(Field),
    Value(Field),
    Ignore,
}

/// The SSE line/event state machine; holds no line buffer, only the event name and a data head.
#[derive(Debug)]
pub(crate) struct SseFramer {
    line: Line,
    field: [u8; 5],
    field_len: usize,
    after_cr: bool,
    bom_seen: usize,
    bom_done: bool,
    name: Vec<u8>,
    head: Vec<u8>,
    has_data: bool,
    len: u64,
    cut: bool,
    dropped: u64,
}

impl Default for SseFramer {
    fn default() -> Self {
        SseFramer::new()
    }
}

impl SseFramer {
    pub(crate) fn new() -> SseFramer {
        SseFramer {
            line: Line::Start,
            field: [0; 5],
            field_len: 0,
            after_cr: false,
            bom_seen: 0,
            bom_done: false,
            name: Vec::new(),
            head: Vec::new(),
            has_data: false,
            len: 0,
            cut: false,
            dropped: 0,
        }
    }

    /// Events whose data went over [`MAX_EVENT_DATA`] (only tests read it; ResponseFacts has no field for it).
    #[cfg(test)]
    pub(crate) fn dropped_events(&self) -> u64 {
        self.dropped
    }

    /// Bytes held in buffers (tests check memory stays bounded).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.name.capacity() + self.head.capacity()
    }

    /// Feed the next piece of the stream.
    pub(crate) fn feed<S: SseSink + ?Sized>(&mut self, input: &[u8], sink: &mut S) {
        let input = self.skip_bom(input, sink);
        self.feed_lines(input, sink);
    }

    /// End of stream: an event not closed by a blank line is dispatched only if the stream ended normally.
    pub(crate) fn finish<S: SseSink + ?Sized>(&mut self, complete: bool, sink: &mut S) {
        if complete {
            self.dispatch(sink);
        }
    }

    /// A UTF-8 BOM may open the stream; bytes that only looked like one are replayed.
    fn skip_bom<'a, S: SseSink + ?Sized>(&mut self, mut input: &'a [u8], sink: &mut S) -> &'a [u8] {
        while !self.bom_done {
            let Some((&b, rest)) = input.split_first() else {
                return input;
            };
            if BOM.get(self.bom_seen) == Some(&b) {
                self.bom_seen = self.bom_seen.saturating_add(1);
                self.bom_done = self.bom_seen == BOM.len();
                input = rest;
            } else {
                self.bom_done = true;
                self.feed_lines(BOM.get(..self.bom_seen).unwrap_or_default(), sink);
            }
        }
        input
    }

    fn feed_lines<S: SseSink + ?Sized>(&mut self, mut input: &[u8], sink: &mut S) {
        while let Some((&b, rest)) = input.split_first() {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                input = rest;
                continue;
            }
            input = match self.line {
                Line::Start => self.line_start(b, rest, input, sink),
                Line::Name => self.name_byte(b, sink, rest),
                Line::SkipSpace(f) => {
                    self.line = Line::Value(f);
                    if b == b' ' { rest } else { input }
                }
                Line::Value(f) => self.value(f, input, sink),
                Line::Ignore => self.value(Field::Other, input, sink),
            };
        }
    }

    fn line_start<'a, S: SseSink + ?Sized>(
        &mut self,
        b: u8,
        rest: &'a [u8],
        input: &'a [u8],
        sink: &mut S,
    ) -> &'a [u8] {
        match b {
            b'\r' | b'\n' => {
                self.after_cr = b == b'\r';
                self.dispatch(sink);
                rest
            }
            b':' => {
                self.line = Line::Ignore;
                rest
            }
            _ => {
                self.field_len = 0;
                self.line = Line::Name;
                input
            }
        }
    }

    fn name_byte<'a, S: SseSink + ?Sized>(
        &mut self,
        b: u8,
        sink: &mut S,
        rest: &'a [u8],
    ) -> &'a [u8] {
        match b {
            b':' => {
                let f = self.field_kind();
                self.begin_value(f, sink);
                self.line = Line::SkipSpace(f);
            }
            b'\r' | b'\n' => {
                // A line with no colon is a field with an empty value.
                let f = self.field_kind();
                self.begin_value(f, sink);
                self.end_line(b);
            }
            _ => {
                if let Some(slot) = self.field.get_mut(self.field_len) {
                    *slot = b;
                }
                self.field_len = self.field_len.saturating_add(1);
            }
        }
        rest
    }

    fn field_kind(&self) -> Field {
        match self.field.get(..self.field_len) {
            Some(b"data") => Field::Data,
            Some(b"event") => Field::Event,
            _ => Field::Other,
        }
    }

    fn begin_value<S: SseSink + ?Sized>(&mut self, f: Field, sink: &mut S) {
        match f {
            Field::Data if self.has_data => self.data(b"\n", sink),
            Field::Data => self.has_data = true,
            Field::Event => self.name.clear(),
            Field::Other => {}
        }
    }

    /// The rest of a line's value up to the line end, which is consumed too.
    fn value<'a, S: SseSink + ?Sized>(
        &mut self,
        f: Field,
        input: &'a [u8],
        sink: &mut S,
    ) -> &'a [u8] {
        let end = memchr2(b'\r', b'\n', input).unwrap_or(input.len());
        let (text, tail) = input.split_at(end);
        match f {
            Field::Data => self.data(text, sink),
            Field::Event => {
                let room = MAX_EVENT_NAME.saturating_sub(self.name.len());
                self.name
                    .extend_from_slice(text.get(..room.min(text.len())).unwrap_or_default());
            }
            Field::Other => {}
        }
        match tail.split_first() {
            Some((&eol, rest)) => {
                self.end_line(eol);
                rest
            }
            None => tail,
        }
    }

    fn end_line(&mut self, eol: u8) {
        self.line = Line::Start;
        self.after_cr = eol == b'\r';
    }

    fn data<S: SseSink + ?Sized>(&mut self, piece: &[u8], sink: &mut S) {
        let room = HEAD_LEN.saturating_sub(self.head.len()).min(piece.len());
        self.head
            .extend_from_slice(piece.get(..room).unwrap_or_default());
        let allowed = MAX_EVENT_DATA.saturating_sub(self.len);
        self.len = self.len.saturating_add(piece.len() as u64);
        if self.cut {
            return;
        }
        let pass = usize::try_from(allowed)
            .unwrap_or(usize::MAX)
            .min(piece.len());
        if pass > 0 {
            sink.data(piece.get(..pass).unwrap_or_default());
        }
        if pass < piece.len() {
            self.cut = true;
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    fn dispatch<S: SseSink + ?Sized>(&mut self, sink: &mut S) {
        if self.has_data {
            sink.event(&SseEvent {
                name: &self.name,
                head: &self.head,
                len: self.len,
            });
        }
        self.name.clear();
        self.head.clear();
        self.has_data = false;
        self.len = 0;
        self.cut = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected (event name, data) pairs.
    type Events = &'static [(&'static str, &'static str)];

    #[derive(Default)]
    struct Rec {
        cur: Vec<u8>,
        events: Vec<(String, String)>,
    }

    impl SseSink for Rec {
        fn data(&mut self, piece: &[u8]) {
            self.cur.extend_from_slice(piece);
        }
        fn event(&mut self, ev: &SseEvent<'_>) {
            let data = String::from_utf8_lossy(&std::mem::take(&mut self.cur)).into_owned();
            self.events
                .push((String::from_utf8_lossy(ev.name).into_owned(), data));
        }
    }

    fn run(input: &[u8], split: usize, complete: bool) -> Vec<(String, String)> {
        let mut f = SseFramer::new();
        let mut rec = Rec::default();
        for piece in input.chunks(split.max(1)) {
            f.feed(piece, &mut rec);
        }
        f.finish(complete, &mut rec);
        rec.events
    }

    fn ev(name: &str, data: &str) -> (String, String) {
        (name.to_string(), data.to_string())
    }

    #[test]
    fn framing_table() {
        let cases: &[(&str, &[u8], Events)] = &[
            ("lf", b"event: a\ndata: x\n\n", &[("a", "x")]),
            ("crlf", b"event: a\r\ndata: x\r\n\r\n", &[("a", "x")]),
            ("cr", b"event: a\rdata: x\r\r", &[("a", "x")]),
            (
                "multi-line data",
                b"data: 1\ndata:2\ndata:  3\n\n",
                &[("", "1\n2\n 3")],
            ),
            (
                "comment and unknown",
                b": ping\nid: 7\nretry: 10\nfoo: bar\ndata: x\n\n",
                &[("", "x")],
            ),
            ("no data no event", b"event: a\n\ndata: y\n\n", &[("", "y")]),
            ("empty data", b"data\n\ndata:\n\n", &[("", ""), ("", "")]),
            ("bom", b"\xEF\xBB\xBFdata: b\n\n", &[("", "b")]),
            ("not a bom", b"\xEFdata: b\n\n", &[]),
            ("utf8", "data: héllo ✓\n\n".as_bytes(), &[("", "héllo ✓")]),
            (
                "event name reset",
                b"event: a\ndata: 1\n\ndata: 2\n\n",
                &[("a", "1"), ("", "2")],
            ),
            ("unterminated", b"data: [DONE]\n", &[("", "[DONE]")]),
            (
                "unterminated no newline",
                b"data: [DONE]",
                &[("", "[DONE]")],
            ),
            (
                "mixed endings",
                b"data: a\r\n\ndata: b\r\r\n",
                &[("", "a"), ("", "b")],
            ),
        ];
        for (what, input, want) in cases {
            let want: Vec<_> = want.iter().map(|(n, d)| ev(n, d)).collect();
            for split in 1..=input.len().max(1) {
                assert_eq!(run(input, split, true), want, "{what} split {split}");
            }
        }
    }

    #[test]
    fn cut_stream_drops_unterminated_event() {
        assert_eq!(run(b"data: a\n\ndata: {\"par", 3, false), vec![ev("", "a")]);
    }

    #[test]
    fn oversized_event_is_cut_and_counted() {
        let mut f = SseFramer::new();
        let mut rec = Rec::default();
        let big = vec![b'x'; 1 << 20];
        f.feed(b"data: ", &mut rec);
        for _ in 0..9 {
            f.feed(&big, &mut rec);
        }
        f.feed(b"\n\ndata: ok\n\n", &mut rec);
        assert_eq!(f.dropped_events(), 1);
        assert_eq!(rec.events.len(), 2);
        assert_eq!(rec.events[0].1.len() as u64, MAX_EVENT_DATA);
        assert_eq!(rec.events[1].1, "ok");
    }
}
