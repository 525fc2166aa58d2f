//! A cheap first pass before the redaction regexes: one scan for literals that every match
//! of a pattern must contain, so that a pattern's regex runs only on text that holds one of
//! its literals.
//!
//! The literals are derived from each pattern, not declared: a walk over the pattern's HIR
//! (`regex-syntax`, parsed as `regex::Regex::new` parses it) finds, for every sub-expression,
//! the strings it matches when they are few (`exact`), and sets that every match starts with
//! (`prefix`), ends with (`suffix`) or contains (`inner`). A concatenation joins neighbours
//! (the `suffix` of one, the `exact` sets after it, the `prefix` of the next), so
//! `"(?P<field>…token)"` needs `token"`, which `"max_tokens"` does not contain. Any part of a
//! needed literal is needed too, so literals that share an end are cut to it (`api_key"`,
//! `secret_key"` → `key"`) to keep the set small.
//!
//! Literals are lower-cased and the text is searched ASCII case-insensitively (a lower-cased
//! copy, a chunk at a time, through a SIMD "packed" searcher; an Aho-Corasick automaton where
//! that is not available): a superset, so a match is never missed. The two non-ASCII letters
//! that `(?i)` relates to ASCII ones, the Kelvin sign (`k`) and the long s (`s`), are folded
//! into their ASCII letter; a text holding either makes every pattern a candidate. A pattern
//! whose best set has a literal shorter than [`MIN_LITERAL`] bytes, or has no set at all, is
//! always run.

use aho_corasick::packed::{self, Searcher};
use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind, Span};
use memchr::memmem::Finder;
use regex_syntax::hir::{Class, Hir, HirKind};

/// Shortest literal worth searching for: shorter ones hit almost any text.
const MIN_LITERAL: usize = 3;
/// Most literals one set may hold; a larger one is given up (the walk keeps a smaller one).
const MAX_SET: usize = 128;
/// Most characters a class may have to be spelled out as literals.
const MAX_CLASS: usize = 8;
/// Most repetitions of a small sub-expression spelled out (`[_-]?`, `\\?`).
const MAX_REPEAT: u32 = 3;
/// Patterns a candidate set can name; with more, every pattern always runs.
const MAX_PATTERNS: usize = 256;
/// Shortest end two literals may be cut to when they share it.
const MIN_SHARED: usize = 4;
/// Sets this small are searched as they are.
const SMALL_SET: usize = 4;
/// Longest literal searched for (a longer one is cut: any part of a needed literal is needed).
const MAX_LITERAL: usize = 32;
/// Bytes of text lower-cased and searched at a time.
const CHUNK: usize = 4096;
/// Texts shorter than this (header values, paths) go through the automaton.
const SHORT_TEXT: usize = 64;
/// The non-ASCII characters `(?i)` makes equal to an ASCII letter, and that letter.
const FOLDED: [(char, u8); 2] = [('\u{212A}', b'k'), ('\u{17F}', b's')];

/// A set of literals (lower-cased, sorted, no duplicates).
type Lits = Vec<Vec<u8>>;

/// Patterns that may match a text: one bit per pattern index, or all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Candidates {
    bits: [u64; MAX_PATTERNS / 64],
    all: bool,
}

impl Candidates {
    /// Every pattern, however many there are.
    pub(super) fn all() -> Candidates {
        Candidates {
            bits: [u64::MAX; MAX_PATTERNS / 64],
            all: true,
        }
    }

    fn insert(&mut self, index: usize) {
        if let Some(word) = self.bits.get_mut(index / 64) {
            *word |= 1 << (index % 64);
        }
    }

    fn union(&mut self, other: &Candidates) {
        for (word, more) in self.bits.iter_mut().zip(other.bits) {
            *word |= more;
        }
        self.all |= other.all;
    }

    fn covers(&self, other: &Candidates) -> bool {
        self.bits
            .iter()
            .zip(other.bits)
            .all(|(word, o)| word & o == o)
    }

    /// The indices below `count` in the set, in order.
    pub(super) fn indices(&self, count: usize) -> impl Iterator<Item = usize> + '_ {
        let all = self.all.then_some(0..count);
        let bits = (!self.all).then(|| {
            self.bits.iter().enumerate().flat_map(|(at, word)| {
                let mut word = *word;
                std::iter::from_fn(move || {
                    let bit = word.trailing_zeros() as usize;
                    word &= word.wrapping_sub(1);
                    (bit < 64).then_some(at * 64 + bit)
                })
            })
        });
        all.into_iter()
            .flatten()
            .chain(bits.into_iter().flatten().filter(move |i| *i < count))
    }

    #[cfg(test)]
    pub(super) fn contains(&self, index: usize) -> bool {
        self.all
            || self
                .bits
                .get(index / 64)
                .is_some_and(|word| word & (1 << (index % 64)) != 0)
    }
}

/// The compiled prefilter of an ordered list of patterns.
#[derive(Debug, Clone)]
pub(super) struct Prefilter {
    /// `None` when no pattern has usable literals.
    scanner: Option<Scanner>,
    /// The literals, and for each the patterns that need it.
    literals: Vec<(Vec<u8>, Candidates)>,
    /// Patterns without usable literals: candidates for every text.
    always: Candidates,
    /// Patterns the scanner can report: once all of them are found the scan stops.
    filtered: Candidates,
    /// Finders of the [`FOLDED`] characters: a text with one makes every pattern a candidate.
    folded: Vec<Finder<'static>>,
}

/// How the literals are searched.
#[derive(Debug, Clone)]
enum Scanner {
    /// Teddy on a lower-cased copy, leftmost-longest; `owners[i]`: the patterns of literal `i`
    /// and of every literal that is a prefix of it (the ones that match where it does).
    Packed {
        searcher: Searcher,
        owners: Vec<Candidates>,
        /// For texts shorter than [`SHORT_TEXT`], where setting Teddy up costs more.
        automaton: AhoCorasick,
    },
    /// An ASCII case-insensitive automaton reporting every (overlapping) occurrence.
    Automaton(AhoCorasick),
}

impl Prefilter {
    /// The prefilter of these patterns (regex sources, in order).
    pub(super) fn new<'p>(patterns: impl ExactSizeIterator<Item = &'p str>) -> Prefilter {
        let count = patterns.len();
        let mut prefilter = Prefilter {
            scanner: None,
            literals: Vec::new(),
            always: Candidates::default(),
            filtered: Candidates::default(),
            folded: FOLDED
                .iter()
                .map(|(c, _)| Finder::new(c.encode_utf8(&mut [0; 4]).as_bytes()).into_owned())
                .collect(),
        };
        if count > MAX_PATTERNS {
            prefilter.always = Candidates::all();
            return prefilter;
        }
        for (index, pattern) in patterns.enumerate() {
            match required_literals(pattern) {
                Some(set) => prefilter.add(index, set),
                None => prefilter.always.insert(index),
            }
        }
        prefilter.scanner = build_scanner(&prefilter.literals);
        if prefilter.scanner.is_none() {
            prefilter.always.union(&prefilter.filtered);
            prefilter.filtered = Candidates::default();
        }
        prefilter
    }

    fn add(&mut self, index: usize, set: Lits) {
        self.filtered.insert(index);
        for literal in set {
            match self.literals.iter_mut().find(|(l, _)| *l == literal) {
                Some((_, owners)) => owners.insert(index),
                None => {
                    let mut owners = Candidates::default();
                    owners.insert(index);
                    self.literals.push((literal, owners));
                }
            }
        }
    }

    /// The patterns that may match `text`: those a literal of which occurs, and the
    /// unfiltered ones.
    pub(super) fn candidates(&self, text: &str) -> Candidates {
        let mut found = self.always;
        let Some(scanner) = &self.scanner else {
            return found;
        };
        let bytes = text.as_bytes();
        if !bytes.is_ascii() && self.folded.iter().any(|f| f.find(bytes).is_some()) {
            found.union(&self.filtered);
            return found;
        }
        let hit = match scanner {
            Scanner::Packed {
                searcher, owners, ..
            } if bytes.len() >= SHORT_TEXT => self.scan_packed(searcher, owners, bytes),
            Scanner::Packed { automaton, .. } | Scanner::Automaton(automaton) => {
                self.scan_automaton(automaton, text)
            }
        };
        found.union(&hit);
        found
    }

    fn scan_packed(&self, searcher: &Searcher, owners: &[Candidates], bytes: &[u8]) -> Candidates {
        thread_local! {
            /// The lower-cased chunk: kept, so a scan neither allocates nor zeroes it.
            static LOWER: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(Vec::with_capacity(CHUNK));
        }
        LOWER.with(|lower| match lower.try_borrow_mut() {
            Ok(mut lower) => self.scan_chunks(searcher, owners, bytes, &mut lower),
            // Not reentrant; a nested call (there is none) gets its own buffer.
            Err(_) => self.scan_chunks(searcher, owners, bytes, &mut Vec::new()),
        })
    }

    /// Lower-cased chunks (overlapping by a literal's length) through the packed searcher;
    /// every position a literal starts at is reported once, with the longest literal there.
    fn scan_chunks(
        &self,
        searcher: &Searcher,
        owners: &[Candidates],
        bytes: &[u8],
        lower: &mut Vec<u8>,
    ) -> Candidates {
        let mut hit = Candidates::default();
        let mut start = 0;
        loop {
            let end = bytes.len().min(start + CHUNK);
            lower.clear();
            lower.extend_from_slice(&bytes[start..end]);
            lower.make_ascii_lowercase();
            let mut at = 0;
            while let Some(m) = searcher.find_in(&lower[..], Span::from(at..lower.len())) {
                if let Some(owners) = owners.get(m.pattern().as_usize()) {
                    hit.union(owners);
                }
                if hit.covers(&self.filtered) {
                    return hit;
                }
                at = m.start() + 1;
            }
            if end == bytes.len() {
                return hit;
            }
            start = end - (MAX_LITERAL - 1);
        }
    }

    fn scan_automaton(&self, automaton: &AhoCorasick, text: &str) -> Candidates {
        let mut hit = Candidates::default();
        for m in automaton.find_overlapping_iter(text) {
            if let Some((_, owners)) = self.literals.get(m.pattern().as_usize()) {
                hit.union(owners);
                if hit.covers(&self.filtered) {
                    break;
                }
            }
        }
        hit
    }

    /// The literals pattern `index` is searched by (empty: it always runs).
    #[cfg(test)]
    pub(super) fn literals_of(&self, index: usize) -> Vec<String> {
        self.literals
            .iter()
            .filter(|(_, owners)| owners.contains(index))
            .map(|(literal, _)| String::from_utf8_lossy(literal).into_owned())
            .collect()
    }
}

/// The packed searcher over the lower-cased literals (with an automaton for short texts), or
/// else the automaton alone.
fn build_scanner(literals: &[(Vec<u8>, Candidates)]) -> Option<Scanner> {
    if literals.is_empty() {
        return None;
    }
    let build = |kind| {
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(kind)
            .build(literals.iter().map(|(l, _)| l))
    };
    let automaton = build(Some(AhoCorasickKind::DFA))
        .or_else(|_| build(None))
        .ok()?;
    let mut config = packed::Config::new();
    config.match_kind(packed::MatchKind::LeftmostLongest);
    // Teddy's own guess is 64 literals; a few more cost little next to a byte-wise scan.
    config.heuristic_pattern_limits(false);
    let Some(searcher) = config
        .builder()
        .extend(literals.iter().map(|(l, _)| l))
        .build()
    else {
        return Some(Scanner::Automaton(automaton));
    };
    let owners = literals
        .iter()
        .map(|(literal, _)| {
            let mut owners = Candidates::default();
            for (_, of) in literals.iter().filter(|(o, _)| literal.starts_with(o)) {
                owners.union(of);
            }
            owners
        })
        .collect();
    Some(Scanner::Packed {
        searcher,
        owners,
        automaton,
    })
}

/// A set of literals every match of `pattern` contains, if one worth searching for exists.
fn required_literals(pattern: &str) -> Option<Lits> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .ok()?;
    let set = walk(&hir).inner.filter(|set| score(set) >= MIN_LITERAL)?;
    Some(simplified(set))
}

/// A set that is needed as surely, and no larger: literals cut to [`MAX_LITERAL`] bytes and
/// without those that contain another one (text holding the longer holds the shorter too);
/// a set of more than [`SMALL_SET`] literals is also tried with each literal cut to the
/// longest end it shares with another (its last bytes, or its first), and the smallest of the
/// three is kept.
fn simplified(set: Lits) -> Lits {
    let cut = |mut literal: Vec<u8>| {
        literal.truncate(MAX_LITERAL);
        literal
    };
    let set = without_redundant(normalize(set.into_iter().map(cut).collect()));
    if set.len() <= SMALL_SET {
        return set;
    }
    let by_suffix = without_redundant(shared_ends(&set, |l, n| &l[l.len() - n..]));
    let by_prefix = without_redundant(shared_ends(&set, |l, n| &l[..n]));
    let smallest = [by_suffix, by_prefix]
        .into_iter()
        .min_by_key(|s| (s.len(), std::cmp::Reverse(score(s))));
    match smallest {
        Some(smaller) if smaller.len() < set.len() && score(&smaller) >= MIN_SHARED => smaller,
        _ => set,
    }
}

/// Each literal cut to the longest end (at least [`MIN_SHARED`] bytes) that another literal
/// also ends (or starts) with; a literal that shares none stays whole.
fn shared_ends(set: &Lits, end: fn(&[u8], usize) -> &[u8]) -> Lits {
    let cut = |literal: &Vec<u8>| {
        (MIN_SHARED..=literal.len())
            .rev()
            .map(|n| end(literal, n))
            .find(|e| {
                set.iter()
                    .any(|o| o != literal && o.len() >= e.len() && end(o, e.len()) == *e)
            })
            .map_or_else(|| literal.clone(), <[u8]>::to_vec)
    };
    normalize(set.iter().map(cut).collect())
}

/// The set without literals that contain another of its literals (text holding the longer
/// one holds the shorter one too).
fn without_redundant(set: Lits) -> Lits {
    let keep = |literal: &Vec<u8>| {
        !set.iter().any(|other| {
            other.len() < literal.len()
                && literal.windows(other.len()).any(|w| w == other.as_slice())
        })
    };
    set.iter().filter(|l| keep(l)).cloned().collect()
}

/// What is known about the strings one sub-expression matches.
#[derive(Debug, Clone, Default)]
struct Facts {
    /// Every string it matches, when they are few.
    exact: Option<Lits>,
    /// Every match starts with one of these.
    prefix: Option<Lits>,
    /// Every match ends with one of these.
    suffix: Option<Lits>,
    /// Every match contains one of these (the best such set found).
    inner: Option<Lits>,
}

impl Facts {
    fn exact(set: Lits) -> Facts {
        Facts {
            exact: Some(set.clone()),
            prefix: Some(set.clone()),
            suffix: Some(set.clone()),
            inner: Some(set),
        }
    }
}

fn walk(hir: &Hir) -> Facts {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Facts::exact(vec![Vec::new()]),
        HirKind::Literal(literal) => Facts::exact(vec![literal.0.to_ascii_lowercase()]),
        HirKind::Class(class) => class_literals(class).map_or_else(Facts::default, Facts::exact),
        HirKind::Capture(capture) => walk(&capture.sub),
        HirKind::Repetition(rep) => repetition(rep.min, rep.max, walk(&rep.sub)),
        HirKind::Concat(subs) => concat(&subs.iter().map(walk).collect::<Vec<_>>()),
        HirKind::Alternation(subs) => alternation(&subs.iter().map(walk).collect::<Vec<_>>()),
    }
}

/// The characters of a small class, each one literal.
fn class_literals(class: &Class) -> Option<Lits> {
    let set: Lits = match class {
        Class::Unicode(class) => {
            let chars = class.ranges().iter().flat_map(|r| r.start()..=r.end());
            if chars.clone().nth(MAX_CLASS).is_some() {
                return None;
            }
            chars
                .map(|c| match FOLDED.iter().find(|(folded, _)| *folded == c) {
                    Some((_, ascii)) => vec![*ascii],
                    None => c.encode_utf8(&mut [0; 4]).as_bytes().to_ascii_lowercase(),
                })
                .collect()
        }
        Class::Bytes(class) => {
            let bytes = class.ranges().iter().flat_map(|r| r.start()..=r.end());
            if bytes.clone().nth(MAX_CLASS).is_some() {
                return None;
            }
            bytes.map(|b| vec![b.to_ascii_lowercase()]).collect()
        }
    };
    Some(normalize(set))
}

fn repetition(min: u32, max: Option<u32>, sub: Facts) -> Facts {
    if let (Some(exact), Some(max)) = (&sub.exact, max)
        && let Some(set) = (max <= MAX_REPEAT)
            .then(|| spelled_repetition(exact, min, max))
            .flatten()
    {
        return Facts::exact(set);
    }
    if min == 0 {
        return Facts::default();
    }
    // At least one match of the sub-expression: it starts, ends and contains the whole.
    Facts { exact: None, ..sub }
}

/// `exact` repeated `min` to `max` times, every count spelled out.
fn spelled_repetition(exact: &Lits, min: u32, max: u32) -> Option<Lits> {
    let mut all = Vec::new();
    let mut power = vec![Vec::new()];
    for count in 0..=max {
        if count >= min {
            all.extend(power.iter().cloned());
        }
        if count < max {
            power = product(&power, exact)?;
        }
    }
    (all.len() <= MAX_SET).then(|| normalize(all))
}

fn concat(subs: &[Facts]) -> Facts {
    let exact = subs.iter().try_fold(vec![Vec::new()], |acc, sub| {
        product(&acc, sub.exact.as_ref()?)
    });
    if let Some(exact) = exact {
        return Facts::exact(exact);
    }
    let prefix = edge(subs.iter(), |sub| &sub.prefix, product);
    let suffix = edge(
        subs.iter().rev(),
        |sub| &sub.suffix,
        |set, next| product(next, set),
    );
    let mut inner = concat_inner(subs);
    consider(&mut inner, prefix.clone());
    consider(&mut inner, suffix.clone());
    Facts {
        exact: None,
        prefix,
        suffix,
        inner,
    }
}

/// The set a concatenation starts with (walked backwards: ends with): the exact sets at that
/// edge joined, then the first inexact one's edge set, as far as the sets stay small.
fn edge<'f>(
    subs: impl Iterator<Item = &'f Facts>,
    edge_of: impl Fn(&Facts) -> &Option<Lits>,
    join: impl Fn(&Lits, &Lits) -> Option<Lits>,
) -> Option<Lits> {
    let mut set = vec![Vec::new()];
    for sub in subs {
        let Some(exact) = &sub.exact else {
            return Some(
                edge_of(sub)
                    .as_ref()
                    .and_then(|e| join(&set, e))
                    .unwrap_or(set),
            );
        };
        match join(&set, exact) {
            Some(joined) => set = joined,
            None => break,
        }
    }
    Some(set)
}

/// The best set every match of a concatenation contains: runs of neighbours joined (what the
/// part so far ends with, then exact sets, then what the next part starts with), or a part's
/// own inner set.
fn concat_inner(subs: &[Facts]) -> Option<Lits> {
    let mut best = None;
    // What every match of the parts so far ends with.
    let mut run: Option<Lits> = Some(vec![Vec::new()]);
    for sub in subs {
        match &sub.exact {
            Some(exact) => {
                run = match run.as_ref().and_then(|r| product(r, exact)) {
                    Some(joined) => Some(joined),
                    None => {
                        consider(&mut best, run.take());
                        Some(exact.clone())
                    }
                };
            }
            None => {
                if let (Some(r), Some(prefix)) = (&run, &sub.prefix) {
                    consider(&mut best, product(r, prefix));
                }
                consider(&mut best, run.take());
                consider(&mut best, sub.inner.clone());
                run = sub.suffix.clone();
            }
        }
    }
    consider(&mut best, run);
    best
}

fn alternation(subs: &[Facts]) -> Facts {
    let union_of = |field: fn(&Facts) -> &Option<Lits>| {
        let mut all = Vec::new();
        for sub in subs {
            all.extend(field(sub).as_ref()?.iter().cloned());
        }
        let all = normalize(all);
        (all.len() <= MAX_SET).then_some(all)
    };
    if let Some(exact) = union_of(|f| &f.exact) {
        return Facts::exact(exact);
    }
    let prefix = union_of(|f| &f.prefix);
    let suffix = union_of(|f| &f.suffix);
    let mut inner = union_of(|f| &f.inner);
    consider(&mut inner, prefix.clone());
    consider(&mut inner, suffix.clone());
    Facts {
        exact: None,
        prefix,
        suffix,
        inner,
    }
}

/// Every `a` followed by every `b`, if there are not too many.
fn product(a: &Lits, b: &Lits) -> Option<Lits> {
    if a.len().saturating_mul(b.len()) > MAX_SET {
        return None;
    }
    let joined = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| [x.as_slice(), y].concat()))
        .collect();
    Some(normalize(joined))
}

fn normalize(mut set: Lits) -> Lits {
    set.sort_unstable();
    set.dedup();
    set
}

/// How good a set is as a filter: its shortest literal (0 for an empty set, which only an
/// expression that matches nothing has).
fn score(set: &Lits) -> usize {
    set.iter().map(Vec::len).min().unwrap_or(0)
}

/// Keeps the better of `best` and `candidate`: the longer shortest literal, then fewer literals.
fn consider(best: &mut Option<Lits>, candidate: Option<Lits>) {
    let Some(candidate) = candidate else {
        return;
    };
    let better = match best {
        None => true,
        Some(current) => {
            let (new, old) = (score(&candidate), score(current));
            new > old || (new == old && candidate.len() < current.len())
        }
    };
    if better {
        *best = Some(candidate);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn literals(pattern: &str) -> Vec<String> {
        required_literals(pattern)
            .unwrap_or_default()
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    #[test]
    fn literal_prefixes_and_escapes() {
        assert_eq!(literals(r"sk-ant-[A-Za-z0-9_\-]{8,}"), ["sk-ant-"]);
        assert_eq!(
            literals(r"(?:(?-u:\b)|\\[nrtbf])(?P<secret>sk-[A-Za-z0-9_\-]{20,})"),
            ["sk-"]
        );
        assert_eq!(
            literals(r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,247}").len(),
            4
        );
        assert_eq!(literals(r"AIza[0-9A-Za-z_\-]{35}"), ["aiza"]);
    }

    #[test]
    fn case_insensitive_letters_fold_their_unicode_variants() {
        let set = literals(r"(?i)bearer\s+(?P<secret>\S+)");
        assert_eq!(set, ["bearer"]);
        let set = literals(r#"(?i)"(?P<field>[a-z]{0,64}token)"\s*:"#);
        assert_eq!(set, ["token\""]);
        assert_eq!(literals(r"(?i)secret"), ["secret"]);
        // A text holding a Kelvin sign or a long s makes every pattern a candidate.
        let prefilter = Prefilter::new([r"(?i)token", r"x{3}abc"].into_iter());
        let kelvin = prefilter.candidates("to\u{212A}en");
        assert!(kelvin.contains(0) && kelvin.contains(1));
        assert!(!prefilter.candidates("to-ken").contains(0));
    }

    #[test]
    fn sets_are_cut_to_shared_ends() {
        let set = literals(r#"(?i)"[a-z]{0,9}(?:api[_-]?key|secret[_-]?key|token|password)""#);
        assert_eq!(set, ["key\"", "password\"", "token\""]);
        // Small sets stay as they are: the shared end would be weaker.
        assert_eq!(literals(r"private key(?: block)?-----").len(), 2);
    }

    #[test]
    fn patterns_without_a_literal_always_run() {
        for pattern in [
            r"[A-Za-z0-9]{40}",
            r"a|bc",
            r"(?:x)?y",
            r"\w+=\w+",
            r"[^a]",
            r"",
        ] {
            assert!(required_literals(pattern).is_none(), "{pattern}");
        }
    }

    #[test]
    fn candidates_are_found_anywhere_and_in_any_case() {
        let patterns = [r"sk-ant-[a-z]{3,}", r"AIza[0-9A-Za-z]{3}", r"[0-9]{5}"];
        let prefilter = Prefilter::new(patterns.iter().copied());
        let check = |text: &str, want: [bool; 3]| {
            let found = prefilter.candidates(text);
            let got = [0, 1, 2].map(|i| found.contains(i));
            assert_eq!(got, want, "{text}");
        };
        check("nothing here", [false, false, true]);
        check("xx SK-ANT-abc", [true, false, true]);
        check("aizaXYZ and sk-ant-", [true, true, true]);
        assert_eq!(prefilter.literals_of(2), Vec::<String>::new());
    }

    #[test]
    fn too_many_patterns_turn_the_filter_off() {
        let patterns: Vec<String> = (0..300).map(|i| format!("lit{i:03}x")).collect();
        let prefilter = Prefilter::new(patterns.iter().map(String::as_str));
        let found = prefilter.candidates("");
        assert!((0..patterns.len()).all(|i| found.contains(i)));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod dump {
    #[test]
    fn dump_embedded() {
        let config = crate::redact::RedactionConfig::default();
        let p = super::Prefilter::new(config.body_patterns.iter().map(|p| p.regex.as_str()));
        for (i, pat) in config.body_patterns.iter().enumerate() {
            let l = p.literals_of(i);
            println!("{} ({}): {:?}", pat.name, l.len(), l);
        }
        println!(
            "total literals {} packed {}",
            p.literals.len(),
            matches!(p.scanner, Some(super::Scanner::Packed { .. }))
        );
    }
}
