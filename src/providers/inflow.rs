//! Body bytes on their way to a parser: decoded on the copy, stopped at a ratio, worked in slices.

use std::collections::VecDeque;

use bytes::Bytes;

use super::ParseStop;
use super::decode::{DecodeError, Flow, Stepped, StreamDecoder};

/// Decoded bytes allowed per compressed byte before the body is taken for a bomb and parsing
/// stops (deflate itself cannot pass about 1032:1; brotli and zstd can go far beyond).
pub const MAX_RATIO: u64 = 1000;
/// Decoded bytes always allowed, whatever the ratio: small, very repetitive bodies are parsed.
/// Beyond it the ratio binds, so a bomb of `n` compressed bytes costs at most `n × MAX_RATIO`
/// decoded bytes of work.
pub const FREE_DECODED: u64 = 1024 * 1024;
/// Most work one slice does: decoded bytes handed to the parser plus compressed bytes read
/// (a decoder hands its output on in pieces of at most 32 KiB, so a slice may end up to one
/// piece past this). About a third of a millisecond of decoding and parsing.
pub const WORK_SLICE: usize = 32 * 1024;
/// Most memory one body's decoder may hold (the stream picks its window: zstd up to the 8 MiB
/// we allow, brotli up to 16 MiB); past it, or past the capture budget, parsing stops. A zstd
/// frame asking for a larger window is refused from its header on (`memory_limit` too).
pub const MAX_DECODER_MEMORY: usize = 9 * 1024 * 1024;

/// A body's bytes from the wire to a parser's `sink`: queued as offered, decoded and handed on
/// in slices of bounded work, or all at once with [`Inflow::feed`].
pub(crate) struct Inflow {
    /// `None`: the identity coding, bytes go to the sink as they are.
    decoder: Option<StreamDecoder>,
    /// Offered bytes not decoded yet (the first may be partly used).
    queue: VecDeque<Bytes>,
    /// The decoder paused holding output: it has work even without input.
    resume: bool,
    raw_len: u64,
    decoded_len: u64,
    stop: Option<ParseStop>,
    /// [`Inflow::end_input`] was called: nothing more is taken.
    ended: bool,
}

impl Inflow {
    /// From `StreamDecoder::new`'s answer: an encoding it refuses stops the parse at once.
    pub(crate) fn new(decoder: Result<StreamDecoder, DecodeError>) -> Inflow {
        let (decoder, stop) = match decoder {
            Ok(d) if d.is_identity() => (None, None),
            Ok(d) => (Some(d), None),
            Err(_) => (None, Some(ParseStop::UnsupportedEncoding)),
        };
        Inflow {
            decoder,
            queue: VecDeque::new(),
            resume: false,
            raw_len: 0,
            decoded_len: 0,
            stop,
            ended: false,
        }
    }

    pub(crate) fn stop(&self) -> Option<ParseStop> {
        self.stop
    }

    /// Decoded bytes handed to the sink so far.
    pub(crate) fn decoded_len(&self) -> u64 {
        self.decoded_len
    }

    /// Bytes the decoder holds (window, state, output buffer).
    pub(crate) fn memory(&self) -> usize {
        self.decoder.as_ref().map_or(0, StreamDecoder::memory)
    }

    /// Stop here: the decoder and anything queued are dropped, the facts so far stay.
    pub(crate) fn give_up(&mut self, reason: ParseStop) {
        self.stop.get_or_insert(reason);
        self.end_input();
    }

    /// No more input will come: the decoder's memory goes now, not when the facts are read.
    pub(crate) fn end_input(&mut self) {
        self.decoder = None;
        self.queue.clear();
        self.resume = false;
        self.ended = true;
    }

    /// Offered bytes are waiting to be decoded.
    pub(crate) fn has_work(&self) -> bool {
        self.stop.is_none() && !self.ended && (self.resume || !self.queue.is_empty())
    }

    /// Queue a chunk as it arrived; [`Inflow::work`] decodes it.
    pub(crate) fn offer(&mut self, chunk: Bytes) {
        if self.stop.is_some() || self.ended || chunk.is_empty() {
            return;
        }
        self.raw_len = self.raw_len.saturating_add(chunk.len() as u64);
        self.queue.push_back(chunk);
    }

    /// One slice of work (at most [`WORK_SLICE`]); true while work is left.
    pub(crate) fn work(&mut self, sink: &mut dyn FnMut(&[u8])) -> bool {
        let mut done = 0usize;
        while done < WORK_SLICE && self.has_work() {
            let front = self.queue.pop_front().unwrap_or_default();
            let (used, work) = self.run(&front, WORK_SLICE.saturating_sub(done), sink);
            done = done.saturating_add(work.max(1));
            let rest = front.slice(used.min(front.len())..);
            if !rest.is_empty() {
                self.queue.push_front(rest);
            }
        }
        if self.stop.is_some() {
            self.end_input();
        }
        self.has_work()
    }

    /// Decode `chunk` (after anything still queued) now, in one go, up to the stop.
    pub(crate) fn feed(&mut self, chunk: &[u8], sink: &mut dyn FnMut(&[u8])) {
        while self.work(sink) {}
        if self.stop.is_some() || self.ended || chunk.is_empty() {
            return;
        }
        self.raw_len = self.raw_len.saturating_add(chunk.len() as u64);
        let mut rest = chunk;
        loop {
            let (used, _) = self.run(rest, usize::MAX, sink);
            rest = rest.get(used..).unwrap_or_default();
            if self.stop.is_some() {
                // A stopped decoder's window goes at once.
                return self.end_input();
            }
            if rest.is_empty() && !self.resume {
                return;
            }
        }
    }

    /// One decoder call over at most `room` bytes of `input`, pausing once `room` decoded bytes
    /// went to the sink; returns (input bytes used, work done).
    fn run(&mut self, input: &[u8], room: usize, sink: &mut dyn FnMut(&[u8])) -> (usize, usize) {
        let input = input.get(..room.min(input.len())).unwrap_or_default();
        let Some(decoder) = self.decoder.as_mut() else {
            sink(input);
            self.decoded_len = self.decoded_len.saturating_add(input.len() as u64);
            return (input.len(), input.len());
        };
        let budget = self.raw_len.saturating_mul(MAX_RATIO).max(FREE_DECODED);
        let decoded_len = &mut self.decoded_len;
        let (mut over, mut made) = (false, 0usize);
        let mut emit = |piece: &[u8]| {
            let next = decoded_len.saturating_add(piece.len() as u64);
            if next > budget {
                over = true;
                return Flow::Stop;
            }
            *decoded_len = next;
            sink(piece);
            made = made.saturating_add(piece.len());
            if made >= room { Flow::Pause } else { Flow::Go }
        };
        let used = match decoder.step(input, &mut emit) {
            Ok(Stepped::Consumed) => {
                self.resume = false;
                input.len()
            }
            Ok(Stepped::Paused(used)) => {
                self.resume = true;
                used
            }
            Err(error) => {
                self.stop = Some(match error {
                    DecodeError::TooLarge { .. } => ParseStop::MemoryLimit,
                    _ => ParseStop::CorruptEncoding,
                });
                input.len()
            }
        };
        if over {
            self.stop = Some(ParseStop::RatioLimit);
        }
        (used, made.saturating_add(used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn inflow(encoding: &str) -> Inflow {
        Inflow::new(StreamDecoder::new(Some(encoding)))
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// `packed` fed whole and offered in `chunk`-byte pieces worked in slices: (stop, bytes out).
    fn both_ways(encoding: &str, packed: &[u8], chunk: usize) -> [(Option<ParseStop>, usize); 2] {
        let mut fed = inflow(encoding);
        let mut n = 0;
        fed.feed(packed, &mut |p| n += p.len());
        let mut worked = inflow(encoding);
        let mut m = 0;
        for piece in packed.chunks(chunk) {
            worked.offer(Bytes::copy_from_slice(piece));
            while worked.work(&mut |p| m += p.len()) {}
        }
        assert_eq!(
            (fed.memory(), worked.memory()),
            (0, 0),
            "stopped decoders are freed"
        );
        [(fed.stop(), n), (worked.stop(), m)]
    }

    #[test]
    fn a_bad_gzip_crc_stops_with_corrupt_encoding() {
        let data = br#"{"model":"m","stream":true}"#.repeat(2000);
        let good = gzip(&data);
        let mut i = inflow("gzip");
        i.feed(&good, &mut |_| {});
        assert_eq!(i.stop(), None);
        let mut bad = good.clone();
        let at = bad.len() - 6;
        bad[at] ^= 1;
        for chunk in [1, 100, bad.len()] {
            let want = (Some(ParseStop::CorruptEncoding), data.len());
            assert_eq!(
                both_ways("gzip", &bad, chunk),
                [want, want],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_zstd_window_over_the_limit_stops_with_memory_limit() {
        let mut packed = Vec::new();
        let mut e = zstd::stream::write::Encoder::new(&mut packed, 3).unwrap();
        e.window_log(24).unwrap();
        e.include_contentsize(false).unwrap();
        e.write_all(&[b'x'; 4096]).unwrap();
        e.finish().unwrap();
        for chunk in [1, 7, packed.len()] {
            let want = (Some(ParseStop::MemoryLimit), 0);
            assert_eq!(
                both_ways("zstd", &packed, chunk),
                [want, want],
                "chunk {chunk}"
            );
        }
    }
}

#[cfg(test)]
mod measure {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    fn compress(enc: &str, data: &[u8]) -> Vec<u8> {
        let level = flate2::Compression::default();
        match enc {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "deflate" => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "br" => {
                let mut out = Vec::new();
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
                drop(w);
                out
            }
            _ => zstd::encode_all(data, 3).unwrap(),
        }
    }

    /// Bomb figures: `cargo test --release --lib measure_decoding -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn measure_decoding() {
        use crate::providers::bomb_tests::{HEAD, TAIL, bomb};
        for (enc, expanded) in [("br", 3u64 << 30), ("zstd", 3 << 30), ("gzip", 1 << 30)] {
            let body = bomb(enc, HEAD, expanded, TAIL);
            let mut best_fed = std::time::Duration::MAX;
            let mut best_worked = std::time::Duration::MAX;
            let (mut dec_fed, mut dec_worked, mut slices, mut stop) = (0, 0, 0, None);
            for _ in 0..5 {
                let mut i = Inflow::new(StreamDecoder::new(Some(enc)));
                let t = Instant::now();
                for piece in body.chunks(1024) {
                    i.feed(piece, &mut |_| {});
                }
                best_fed = best_fed.min(t.elapsed());
                dec_fed = i.decoded_len();
                let mut i = Inflow::new(StreamDecoder::new(Some(enc)));
                let t = Instant::now();
                i.offer(Bytes::from(body.clone()));
                slices = 0;
                while i.work(&mut |_| {}) {
                    slices += 1;
                }
                best_worked = best_worked.min(t.elapsed());
                dec_worked = i.decoded_len();
                stop = i.stop();
            }
            println!(
                "{enc} bomb of {} bytes: fed in 1 KiB pieces {dec_fed} bytes decoded in {best_fed:?}; offered whole {dec_worked} bytes in {} slices, {best_worked:?}, {stop:?}",
                body.len(),
                slices + 1
            );
        }
        // Ordinary bodies: a 20 MB JSON-ish text, fed whole.
        let text: Vec<u8> = (0..400_000u32)
            .flat_map(|i| format!("data: {{\"i\":{i},\"text\":\"héllo wörld\"}}\n\n").into_bytes())
            .collect();
        for enc in ["gzip", "deflate", "br", "zstd"] {
            let packed = compress(enc, &text);
            let mut best = std::time::Duration::MAX;
            let mut n = 0;
            for _ in 0..5 {
                let mut i = Inflow::new(StreamDecoder::new(Some(enc)));
                let t = Instant::now();
                for piece in packed.chunks(16 * 1024) {
                    i.offer(Bytes::copy_from_slice(piece));
                    while i.work(&mut |_| {}) {}
                }
                best = best.min(t.elapsed());
                n = i.decoded_len();
            }
            println!(
                "{enc} text of {} bytes ({} packed): {n} decoded, {best:?}",
                text.len(),
                packed.len()
            );
        }
    }
}
