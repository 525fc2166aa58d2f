//! Incremental JSON skimmer: picks small values at chosen paths out of a document of any size.

use memchr::memchr2;

/// Keys longer than this are kept as "too long" and match nothing (the keys we look for are short).
const KEY_MAX: usize = 40;
/// Deeper documents are abandoned: real provider bodies nest far less, and the stack stays bounded.
const MAX_DEPTH: usize = 256;
/// Largest captured value; bigger ones are skipped (usage objects, ids and error objects are far smaller).
pub(crate) const MAX_CAPTURE: usize = 64 * 1024;
/// Paths longer than this are never offered to the picker: none of the facts we read is deeper.
const MAX_PICK_DEPTH: usize = 4;

/// One open container on the way from the root to the current value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    arr: bool,
    index: u64,
    key_len: usize,
    key: [u8; KEY_MAX],
}

impl Frame {
    fn new(arr: bool) -> Frame {
        Frame {
            arr,
            index: 0,
            key_len: 0,
            key: [0; KEY_MAX],
        }
    }

    fn push_key(&mut self, bytes: &[u8]) {
        let end = self.key_len.saturating_add(bytes.len());
        match self.key.get_mut(self.key_len..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.key_len = end;
            }
            None => self.key_len = KEY_MAX + 1,
        }
    }

    fn seg(&self) -> Seg<'_> {
        if self.arr {
            return Seg::Idx(self.index);
        }
        match self.key.get(..self.key_len) {
            Some(key) => Seg::Key(key),
            None => Seg::Key(b"\0too long"),
        }
    }
}

/// One step of a path; `End` pads [`Path::segs`] past the path's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seg<'a> {
    Key(&'a [u8]),
    Idx(u64),
    End,
}

/// Where a value sits in the document: object keys and array indexes from the root.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Path<'a> {
    frames: &'a [Frame],
}

impl<'a> Path<'a> {
    /// The first four steps, padded with `End`, for slice-pattern matching.
    pub(crate) fn segs(&self) -> [Seg<'a>; MAX_PICK_DEPTH] {
        let mut out = [Seg::End; MAX_PICK_DEPTH];
        for (slot, frame) in out.iter_mut().zip(self.frames) {
            *slot = frame.seg();
        }
        out
    }

    /// The same path without a leading array index (Gemini streams its chunks as a JSON array).
    pub(crate) fn strip_index(self) -> Path<'a> {
        match self.frames.split_first() {
            Some((first, rest)) if first.arr => Path { frames: rest },
            _ => self,
        }
    }
}

/// Decides which values to capture and receives them, raw, once complete.
pub(crate) trait Picker {
    fn want(&self, path: Path<'_>) -> bool;
    fn take(&mut self, path: Path<'_>, raw: &[u8]);
    /// A value directly inside a root array ended (one Gemini stream chunk).
    fn element_end(&mut self) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Value,
    ArrFirst,
    ObjFirst,
    ObjKey,
    Key,
    KeyEsc,
    Colon,
    After,
    Str,
    StrEsc,
    Scalar,
    Done,
    Fail,
}

/// A value being captured: `start` is its offset in the current chunk, earlier bytes are in `buf`.
#[derive(Debug)]
struct Cap {
    depth: usize,
    start: usize,
    buf: Vec<u8>,
    too_big: bool,
}

/// Streaming JSON tokenizer that keeps only the open-container stack and one captured value.
#[derive(Debug)]
pub(crate) struct JsonSkim {
    st: St,
    frames: Vec<Frame>,
    cap: Option<Cap>,
    root_array: bool,
    /// Largest value captured (at most `MAX_CAPTURE`).
    cap_limit: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_scalar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

impl JsonSkim {
    pub(crate) fn new() -> JsonSkim {
        JsonSkim::with_capture_limit(MAX_CAPTURE)
    }

    /// Values longer than `limit` (at most `MAX_CAPTURE`) are skipped, so a body that stalls in
    /// the middle of one holds at most that much.
    pub(crate) fn with_capture_limit(limit: usize) -> JsonSkim {
        JsonSkim {
            st: St::Value,
            frames: Vec::new(),
            cap: None,
            root_array: false,
            cap_limit: limit.min(MAX_CAPTURE),
        }
    }

    /// Ready for the next document (the next SSE event).
    pub(crate) fn reset(&mut self) {
        self.st = St::Value;
        self.frames.clear();
        self.cap = None;
        self.root_array = false;
    }

    /// The root value closed.
    pub(crate) fn is_done(&self) -> bool {
        self.st == St::Done
    }

    /// The root value is an array.
    pub(crate) fn root_is_array(&self) -> bool {
        self.root_array
    }

    /// Feed the next piece of the document.
    pub(crate) fn feed<P: Picker + ?Sized>(&mut self, chunk: &[u8], p: &mut P) {
        if let Some(cap) = &mut self.cap {
            cap.start = 0;
        }
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            i = match self.st {
                St::Done | St::Fail => break,
                St::Str => self.scan_str(chunk, i, p),
                St::Key => self.scan_key(chunk, i),
                _ => {
                    if self.step(b, i, chunk, p) {
                        i.saturating_add(1)
                    } else {
                        i
                    }
                }
            };
        }
        self.spill(chunk);
    }

    /// The document ended: a pending root scalar (`42` cut by nothing) completes.
    pub(crate) fn end<P: Picker + ?Sized>(&mut self, p: &mut P) {
        if self.st == St::Scalar && self.frames.is_empty() {
            self.end_value(0, &[], p);
        }
    }

    fn scan_str<P: Picker + ?Sized>(&mut self, chunk: &[u8], i: usize, p: &mut P) -> usize {
        let rest = chunk.get(i..).unwrap_or_default();
        let Some(off) = memchr2(b'"', b'\\', rest) else {
            return chunk.len();
        };
        let at = i.saturating_add(off).saturating_add(1);
        if rest.get(off) == Some(&b'"') {
            self.end_value(at, chunk, p);
        } else {
            self.st = St::StrEsc;
        }
        at
    }

    fn scan_key(&mut self, chunk: &[u8], i: usize) -> usize {
        let rest = chunk.get(i..).unwrap_or_default();
        let off = memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
        let (text, tail) = rest.split_at(off);
        if let Some(top) = self.frames.last_mut() {
            top.push_key(text);
        }
        match tail.first() {
            Some(b'"') => self.st = St::Colon,
            Some(_) => self.st = St::KeyEsc,
            None => return chunk.len(),
        }
        i.saturating_add(off).saturating_add(1)
    }

    /// One byte outside strings; false when the byte must be looked at again in the new state.
    fn step<P: Picker + ?Sized>(&mut self, b: u8, i: usize, chunk: &[u8], p: &mut P) -> bool {
        if is_ws(b) && !matches!(self.st, St::Scalar | St::StrEsc | St::KeyEsc) {
            return true;
        }
        match self.st {
            St::ArrFirst if b == b']' => self.close(i, chunk, p),
            St::Value | St::ArrFirst => self.start_value(b, i, p),
            St::ObjFirst if b == b'}' => self.close(i, chunk, p),
            St::ObjFirst | St::ObjKey if b == b'"' => self.begin_key(),
            St::KeyEsc => {
                if let Some(top) = self.frames.last_mut() {
                    top.push_key(&[b]);
                }
                self.st = St::Key;
            }
            St::Colon if b == b':' => self.st = St::Value,
            St::After => self.after(b, i, chunk, p),
            St::StrEsc => self.st = St::Str,
            St::Scalar if is_scalar(b) => {}
            St::Scalar => {
                self.end_value(i, chunk, p);
                return false;
            }
            _ => self.fail(),
        }
        true
    }

    fn start_value<P: Picker + ?Sized>(&mut self, b: u8, i: usize, p: &mut P) {
        let depth = self.frames.len();
        if self.cap.is_none() && depth <= MAX_PICK_DEPTH && p.want(self.path(depth)) {
            self.cap = Some(Cap {
                depth,
                start: i,
                buf: Vec::new(),
                too_big: false,
            });
        }
        match b {
            b'{' | b'[' if depth >= MAX_DEPTH => self.fail(),
            b'{' => {
                self.frames.push(Frame::new(false));
                self.st = St::ObjFirst;
            }
            b'[' => {
                self.root_array |= depth == 0;
                self.frames.push(Frame::new(true));
                self.st = St::ArrFirst;
            }
            b'"' => self.st = St::Str,
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => self.st = St::Scalar,
            _ => self.fail(),
        }
    }

    fn begin_key(&mut self) {
        if let Some(top) = self.frames.last_mut() {
            top.key_len = 0;
        }
        self.st = St::Key;
    }

    fn after<P: Picker + ?Sized>(&mut self, b: u8, i: usize, chunk: &[u8], p: &mut P) {
        let Some(top) = self.frames.last_mut() else {
            return self.fail();
        };
        match (b, top.arr) {
            (b',', true) => {
                top.index = top.index.saturating_add(1);
                self.st = St::Value;
            }
            (b',', false) => self.st = St::ObjKey,
            (b']', true) | (b'}', false) => self.close(i, chunk, p),
            _ => self.fail(),
        }
    }

    fn close<P: Picker + ?Sized>(&mut self, i: usize, chunk: &[u8], p: &mut P) {
        self.frames.pop();
        self.end_value(i.saturating_add(1), chunk, p);
    }

    /// A value ended just before `end` in `chunk`: hand it over if it was being captured.
    fn end_value<P: Picker + ?Sized>(&mut self, end: usize, chunk: &[u8], p: &mut P) {
        let depth = self.frames.len();
        if let Some(mut cap) = self.cap.take_if(|c| c.depth == depth) {
            let path = Path {
                frames: self.frames.get(..depth).unwrap_or_default(),
            };
            let tail = chunk.get(cap.start..end).unwrap_or_default();
            // The same limit whether the value came in one chunk or several.
            let fits = !cap.too_big && cap.buf.len().saturating_add(tail.len()) <= self.cap_limit;
            if fits && cap.buf.is_empty() {
                p.take(path, tail);
            } else if fits {
                cap.buf.extend_from_slice(tail);
                p.take(path, &cap.buf);
            }
        }
        if depth == 0 {
            self.st = St::Done;
            return;
        }
        self.st = St::After;
        if depth == 1 && self.root_array {
            p.element_end();
        }
    }

    /// End of a chunk: keep the part of a value under capture that is in it.
    fn spill(&mut self, chunk: &[u8]) {
        let Some(cap) = &mut self.cap else { return };
        let part = chunk.get(cap.start..).unwrap_or_default();
        if cap.too_big || cap.buf.len().saturating_add(part.len()) > self.cap_limit {
            cap.too_big = true;
            cap.buf = Vec::new();
        } else {
            cap.buf.extend_from_slice(part);
        }
    }

    /// Bytes held in buffers (tests check memory stays bounded).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.frames.capacity() * std::mem::size_of::<Frame>()
            + self.cap.as_ref().map_or(0, |c| c.buf.capacity())
    }

    fn fail(&mut self) {
        self.st = St::Fail;
        self.cap = None;
    }

    fn path(&self, depth: usize) -> Path<'_> {
        Path {
            frames: self.frames.get(..depth).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captures every value at depth ≤ 2 whose last key is in `keys`, as (path, raw).
    /// Expected (path, raw value) pairs.
    type Pairs = &'static [(&'static str, &'static str)];

    struct Collect {
        keys: &'static [&'static [u8]],
        got: Vec<(String, String)>,
        elements: usize,
    }

    fn show(path: Path<'_>) -> String {
        path.segs()
            .iter()
            .filter_map(|s| match s {
                Seg::Key(k) => Some(String::from_utf8_lossy(k).into_owned()),
                Seg::Idx(i) => Some(i.to_string()),
                Seg::End => None,
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    impl Picker for Collect {
        fn want(&self, path: Path<'_>) -> bool {
            let segs = path.segs();
            let last = segs.iter().rev().find(|s| **s != Seg::End);
            matches!(last, Some(Seg::Key(k)) if self.keys.contains(k))
        }
        fn take(&mut self, path: Path<'_>, raw: &[u8]) {
            self.got
                .push((show(path), String::from_utf8_lossy(raw).into_owned()));
        }
        fn element_end(&mut self) {
            self.elements += 1;
        }
    }

    fn run(
        doc: &[u8],
        keys: &'static [&'static [u8]],
        split: usize,
    ) -> (Vec<(String, String)>, bool, usize) {
        let mut c = Collect {
            keys,
            got: Vec::new(),
            elements: 0,
        };
        let mut s = JsonSkim::new();
        for piece in doc.chunks(split.max(1)) {
            s.feed(piece, &mut c);
        }
        s.end(&mut c);
        (c.got, s.is_done(), c.elements)
    }

    #[test]
    fn picks_values_at_any_split() {
        let doc = br#" {"id":"a\"b","n":[1,{"usage":{"x":1}}],"usage": {"k": [1, 2]} ,"m":-1.5e3,"t":true}"#;
        let keys: &[&[u8]] = &[b"id", b"usage", b"m", b"t"];
        let want = vec![
            ("id".to_string(), r#""a\"b""#.to_string()),
            ("n.1.usage".to_string(), r#"{"x":1}"#.to_string()),
            ("usage".to_string(), r#"{"k": [1, 2]}"#.to_string()),
            ("m".to_string(), "-1.5e3".to_string()),
            ("t".to_string(), "true".to_string()),
        ];
        for split in 1..doc.len() + 1 {
            let (got, done, _) = run(doc, keys, split);
            assert_eq!(got, want, "split {split}");
            assert!(done);
        }
    }

    #[test]
    fn truncated_and_garbage_inputs() {
        let cases: &[(&[u8], Pairs, bool)] = &[
            (br#"{"max_tokens": 1024"#, &[], false),
            (
                br#"{"id": "x", "max_tokens": 10"#,
                &[("id", r#""x""#)],
                false,
            ),
            (b"\x00\xff{garbage", &[], false),
            (b"[DONE]", &[], false),
            (br#"{"id":1}}}}"#, &[("id", "1")], true),
            (b"", &[], false),
            (b"}", &[], false),
        ];
        for (doc, want, done) in cases {
            let (got, is_done, _) = run(doc, &[b"id", b"max_tokens"], 3);
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(&got, &want, "{}", String::from_utf8_lossy(doc));
            assert_eq!(is_done, *done);
        }
    }

    #[test]
    fn root_scalar_and_arrays() {
        let (got, done, _) = run(b"42", &[], 1);
        assert!(got.is_empty() && done);
        let (got, _, elements) = run(br#"[{"id":"a"},{"id":"b"}]"#, &[b"id"], 2);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, "1.id");
        assert_eq!(elements, 2);
    }

    #[test]
    fn oversized_capture_is_skipped_and_deep_nesting_fails_safely() {
        let mut doc = br#"{"usage":""#.to_vec();
        doc.extend(std::iter::repeat_n(b'a', MAX_CAPTURE + 10));
        doc.extend(br#"","id":"z"}"#);
        for split in [4096, doc.len()] {
            // Skipped whether it spans chunks or lies inside one.
            let (got, done, _) = run(&doc, &[b"usage", b"id"], split);
            assert_eq!(
                got,
                vec![("id".to_string(), r#""z""#.to_string())],
                "split {split}"
            );
            assert!(done);
        }
        let deep = "[".repeat(MAX_DEPTH + 5);
        let (got, done, _) = run(deep.as_bytes(), &[b"id"], 7);
        assert!(got.is_empty() && !done);
    }

    #[test]
    fn long_keys_do_not_match() {
        let long = format!(r#"{{"{}id":1,"id":2}}"#, "k".repeat(100));
        let (got, _, _) = run(long.as_bytes(), &[b"id"], 5);
        assert_eq!(got, vec![("id".to_string(), "2".to_string())]);
    }
}
