//! The request parser: model, stream flag and output limit, picked from a body of any size as
//! it is forwarded (compressed or not), at the paths the request's API names.

use bytes::Bytes;

use super::acc::{json_count, json_string};
use super::decode::StreamDecoder;
use super::inflow::Inflow;
use super::shape::Provider;
use super::skim::{JsonSkim, Path, Picker, Seg};
use super::{ApiShape, ParseStop, RequestFacts};

/// A JSON path from the body's root, key by key (`[b"generationConfig", b"maxOutputTokens"]`).
pub(crate) type KeyPath = &'static [&'static [u8]];

/// Where an API's request body names its model, stream flag and output limit. Each value may
/// have several spellings (the last one the body has wins); limits come in order of
/// preference, the first one present wins (`max_completion_tokens` before `max_tokens`).
pub(crate) struct RequestKeys {
    pub(crate) model: &'static [KeyPath],
    pub(crate) stream: &'static [KeyPath],
    pub(crate) max_tokens: &'static [&'static [KeyPath]],
}

impl RequestKeys {
    /// `model` and `stream` at the top level of the body, and these output limits.
    pub(crate) const fn top_level(max_tokens: &'static [&'static [KeyPath]]) -> RequestKeys {
        RequestKeys {
            model: &[&[b"model"]],
            stream: &[&[b"stream"]],
            max_tokens,
        }
    }

    /// The model and the stream flag are in the path; the body has only output limits.
    pub(crate) const fn limits_only(max_tokens: &'static [&'static [KeyPath]]) -> RequestKeys {
        RequestKeys {
            model: &[],
            stream: &[],
            max_tokens,
        }
    }
}

/// Most output limits one API may list.
pub(crate) const MAX_LIMITS: usize = 3;

/// Nothing to pick (Unknown shapes).
static NO_KEYS: RequestKeys = RequestKeys::limits_only(&[]);

/// What the request body said, before the API gives it meaning.
#[derive(Debug, Default)]
pub(crate) struct Picked {
    pub(crate) model: Option<String>,
    pub(crate) stream: Option<bool>,
    /// The first output limit present, in the API's order of preference.
    pub(crate) max_tokens: Option<i64>,
}

impl Picked {
    /// The request facts, with the model and the stream flag as the API reads them.
    pub(crate) fn facts(self, model: Option<String>, stream: Option<bool>) -> RequestFacts {
        RequestFacts {
            model,
            stream,
            max_tokens: self.max_tokens,
            stopped: None,
        }
    }
}

/// Parse a request body (already decoded, may be truncated JSON → best effort, never panic).
pub fn parse_request(shape: ApiShape, path: &str, body: &[u8]) -> RequestFacts {
    let mut parser = RequestParser::new(shape, path, None);
    parser.feed(body);
    parser.finish()
}

/// Incremental request parser, fed every request body chunk as forwarded (compressed or not),
/// so the model is found even when it comes after a prompt longer than the capture cap.
///
/// Decoding stops at the same ratio as the response side (`MAX_RATIO`, past `FREE_DECODED`).
/// [`RequestParser::feed`] does all the work at once; [`RequestParser::offer`] queues a chunk
/// and [`RequestParser::work`] does one bounded slice of it, for callers inside a poll.
pub struct RequestParser {
    provider: Option<&'static dyn Provider>,
    path: String,
    skim: JsonSkim,
    picker: RequestPicker,
    inflow: Inflow,
}

/// Request values we pick are short (a model name, a number, a bool): larger ones are skipped.
const REQUEST_VALUE_MAX: usize = 1024;

impl RequestParser {
    pub fn new(shape: ApiShape, path: &str, content_encoding: Option<&str>) -> RequestParser {
        let provider = shape.provider();
        // An encoding we cannot decode: the body is opaque, facts stay unknown.
        let inflow = Inflow::new(StreamDecoder::new(content_encoding));
        let keys = provider.map_or(&NO_KEYS, |p| &p.api().keys);
        RequestParser {
            provider,
            path: path.to_string(),
            skim: JsonSkim::with_capture_limit(REQUEST_VALUE_MAX),
            picker: RequestPicker::new(keys),
            inflow,
        }
    }

    /// Parse `chunk` now (all of it, up to the ratio stop).
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.provider.is_none() {
            return;
        }
        let (skim, picker) = (&mut self.skim, &mut self.picker);
        self.inflow
            .feed(chunk, &mut |piece| skim.feed(piece, picker));
    }

    /// Queue `chunk` for [`RequestParser::work`] (zero-copy).
    pub fn offer(&mut self, chunk: Bytes) {
        if self.provider.is_some() {
            self.inflow.offer(chunk);
        }
    }

    /// Decode and parse at most `WORK_SLICE` bytes of what was offered; true while work is left.
    pub fn work(&mut self) -> bool {
        let (skim, picker) = (&mut self.skim, &mut self.picker);
        self.inflow.work(&mut |piece| skim.feed(piece, picker))
    }

    inflow_methods!();

    pub fn finish(mut self) -> RequestFacts {
        let Some(provider) = self.provider else {
            return RequestFacts::default();
        };
        self.skim.end(&mut self.picker);
        let stopped = self.inflow.stop();
        let whole = self.skim.is_done() && stopped.is_none();
        let facts = provider.request_facts(self.picker.into_picked(), &self.path, whole);
        RequestFacts { stopped, ..facts }
    }
}

/// Request fields, each from its own path so a huge `messages` array never needs buffering.
struct RequestPicker {
    keys: &'static RequestKeys,
    model: Option<String>,
    stream: Option<bool>,
    limits: [Option<i64>; MAX_LIMITS],
}

/// Which value a path holds.
enum Slot {
    Model,
    Stream,
    Limit(usize),
}

impl RequestPicker {
    fn new(keys: &'static RequestKeys) -> RequestPicker {
        RequestPicker {
            keys,
            model: None,
            stream: None,
            limits: [None; MAX_LIMITS],
        }
    }

    fn slot(&self, path: Path<'_>) -> Option<Slot> {
        let segs = path.segs();
        let any = |spellings: &[KeyPath]| spellings.iter().any(|keys| at(&segs, keys));
        if any(self.keys.model) {
            return Some(Slot::Model);
        }
        if any(self.keys.stream) {
            return Some(Slot::Stream);
        }
        let limits = self.keys.max_tokens.iter().take(MAX_LIMITS);
        limits
            .enumerate()
            .find_map(|(i, s)| any(s).then_some(Slot::Limit(i)))
    }

    fn into_picked(self) -> Picked {
        Picked {
            model: self.model,
            stream: self.stream,
            max_tokens: self.limits.iter().find_map(|l| *l),
        }
    }
}

/// `segs` is exactly the path `keys`, from the root.
fn at(segs: &[Seg<'_>], keys: KeyPath) -> bool {
    keys.len() < segs.len()
        && keys.iter().zip(segs).all(|(k, s)| *s == Seg::Key(k))
        && segs.get(keys.len()) == Some(&Seg::End)
}

impl Picker for RequestPicker {
    fn want(&self, path: Path<'_>) -> bool {
        self.slot(path).is_some()
    }

    fn take(&mut self, path: Path<'_>, raw: &[u8]) {
        match self.slot(path) {
            Some(Slot::Model) => self.model = json_string(raw),
            Some(Slot::Stream) => self.stream = serde_json::from_slice(raw).ok(),
            Some(Slot::Limit(i)) => {
                if let Some(slot) = self.limits.get_mut(i) {
                    *slot = json_count(raw);
                }
            }
            None => {}
        }
    }
}
