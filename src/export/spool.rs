//! The spool: records the OTLP endpoint did not take, kept on disk, oldest first, until it does.
//!
//! Only the export worker touches it, from the blocking pool. Layout of `--spool-dir`:
//!
//! - `lock`: locked (`flock`) by the one llmtap using the directory while it runs.
//! - `<seq>.seg` (`seq` = the first record's sequence number, 20 digits): a segment, append-only,
//!   written by one process: `MAGIC`, two header frames (the encoded OTLP `Resource` and
//!   `InstrumentationScope` of the process that wrote it), then one frame per record, the
//!   protobuf-encoded `LogRecord` exactly as it would have been sent.
//! - A frame is `len: u32 LE | crc32: u32 LE | seq: u64 LE | payload[len]`; the CRC covers the
//!   sequence number and the payload. Header frames have `seq` 0; records have consecutive
//!   sequence numbers from 1 up, across segments and restarts.
//! - `ack`: `seq: u64 LE | crc32: u32 LE`: every record up to `seq` was delivered (or dropped);
//!   replaced by write-to-temp, fsync, rename after each delivered batch.
//!
//! Reading stops at the first frame that is cut short, fails its CRC, or is out of sequence:
//! what comes before is kept, the rest of that file is skipped and reported once.

use bytes::Bytes;
use std::collections::VecDeque;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// First bytes of every segment file (format version 1).
const MAGIC: &[u8; 8] = b"LLMTAPS1";
/// `len`, `crc32`, `seq`.
const FRAME_HEAD: u64 = 16;
/// A length above this is damage, not a record (records are capped far below).
const MAX_PAYLOAD: u32 = 256 << 20;
const SEGMENT_EXT: &str = "seg";
const ACK_FILE: &str = "ack";
const ACK_TMP: &str = "ack.tmp";
const LOCK_FILE: &str = "lock";
/// Spool files hold records (prompts, answers): the owner's only.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;
/// Segment size aimed at: an eighth of the bound, so dropping the oldest frees space in steps.
const MIN_SEGMENT_BYTES: u64 = 4 * 1024;
const MAX_SEGMENT_BYTES: u64 = 16 << 20;

/// `--spool-dir` and `--spool-max-bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    /// Bytes the segment files may take in all; beyond it the oldest records are dropped.
    pub max_bytes: u64,
}

/// Why the spool could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {}: {source}", .dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("spool directory {} is in use by another llmtap", .0.display())]
    Locked(PathBuf),
}

/// What the resource and scope of a segment's records are (encoded protobuf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub resource: Bytes,
    pub scope: Bytes,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    origin: Origin,
    /// Sequence number of its first record (from the file name).
    first_seq: u64,
    /// Sequence number of its last readable record; `first_seq - 1` when it has none.
    last_seq: u64,
    /// Where its records start (after the header).
    data_start: u64,
    /// End of its last readable frame.
    valid_len: u64,
    /// Bytes on disk (more than `valid_len` when the tail is damaged).
    file_len: u64,
}

impl Segment {
    fn pending_after(&self, acked: u64) -> u64 {
        self.last_seq
            .saturating_sub(acked.max(self.first_seq.saturating_sub(1)))
    }
}

/// Records read for sending; they stay in the spool until [`Spool::advance`].
#[derive(Debug)]
pub struct SpoolBatch {
    pub origin: Origin,
    pub records: Vec<Bytes>,
}

/// Just after the last delivered record of one segment.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    segment: u64,
    offset: u64,
    seq: u64,
}

#[derive(Debug)]
struct InFlight {
    segment: u64,
    upto: u64,
    end: u64,
    count: u64,
    /// Its segment was dropped to make room while it was out: its fate is decided on return.
    orphaned: bool,
}

/// What [`Spool::append`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    pub written: u64,
    /// Oldest records dropped to stay within the bound (or that the disk refused).
    pub dropped: u64,
}

/// The open spool of this process.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    origin: Origin,
    segments: VecDeque<Segment>,
    /// Append handle of the last segment, when it is this process's and still writable.
    active: Option<File>,
    acked: u64,
    next_seq: u64,
    /// Where the first undelivered record of a segment starts.
    cursor: Option<Cursor>,
    in_flight: Option<InFlight>,
    bytes: u64,
    _lock: File,
    ack_failed: bool,
    write_failed: bool,
}

/// What opening found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting from an earlier run.
    pub records: u64,
    /// Files found cut short or corrupt (each read up to the damage).
    pub damaged: u64,
}

impl Spool {
    /// Opens (creating) the directory, locks it, and reads what earlier runs left.
    pub fn open(settings: &SpoolSettings, origin: Origin) -> Result<(Spool, Recovery), SpoolError> {
        let dir = settings.dir.clone();
        let io = |source| SpoolError::Io {
            dir: dir.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(io)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        if let Err(error) = lock.try_lock() {
            return Err(match error {
                std::fs::TryLockError::WouldBlock => SpoolError::Locked(dir.clone()),
                std::fs::TryLockError::Error(e) => io(e),
            });
        }
        let mut recovery = Recovery::default();
        let acked = read_ack(&dir, &mut recovery);
        let (segments, seen) = scan_dir(&dir, acked, &mut recovery).map_err(io)?;
        let bytes = segments.iter().map(|s| s.file_len).sum();
        recovery.records = segments.iter().map(|s| s.pending_after(acked)).sum();
        let spool = Spool {
            max_bytes: settings.max_bytes,
            segment_bytes: (settings.max_bytes / 8).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            origin,
            segments,
            active: None,
            acked,
            next_seq: acked.max(seen) + 1,
            cursor: None,
            in_flight: None,
            bytes,
            _lock: lock,
            ack_failed: false,
            write_failed: false,
            dir,
        };
        Ok((spool, recovery))
    }

    /// Bytes the segment files take.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records not yet delivered (those out for sending included).
    pub fn pending(&self) -> u64 {
        let orphans = self
            .in_flight
            .as_ref()
            .filter(|f| f.orphaned)
            .map_or(0, |f| f.count);
        let stored: u64 = self
            .segments
            .iter()
            .map(|s| s.pending_after(self.acked))
            .sum();
        stored + orphans
    }

    /// Appends encoded records after everything spooled so far and fsyncs them; drops the
    /// oldest records (whole segments) first when they would not fit in the bound.
    pub fn append(&mut self, records: &[Vec<u8>]) -> Appended {
        let mut out = Appended::default();
        let sizes: Vec<u64> = records
            .iter()
            .map(|r| FRAME_HEAD + r.len() as u64)
            .collect();
        // Records that could not fit even in an empty spool go first (the oldest of the batch).
        let header = self.header_len();
        let mut need: u64 = sizes.iter().sum();
        let mut skip = 0;
        while skip < records.len() && header + need > self.max_bytes {
            need -= sizes[skip];
            skip += 1;
        }
        out.dropped += skip as u64;
        let records = &records[skip..];
        if records.is_empty() {
            return out;
        }
        loop {
            let rotate = self.must_rotate(need);
            let total = need + if rotate { header } else { 0 };
            if self.bytes + total <= self.max_bytes || self.segments.is_empty() {
                break;
            }
            out.dropped += self.drop_oldest();
        }
        match self.write(records, need) {
            Ok(()) => {
                out.written = records.len() as u64;
                if std::mem::take(&mut self.write_failed) {
                    tracing::info!(dir = %self.dir.display(), "the spool takes records again");
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut self.write_failed, true) {
                    tracing::warn!(dir = %self.dir.display(), %error, "cannot write to the spool; records dropped until it can (counted in dropped_spool_full)");
                }
                out.dropped += records.len() as u64;
            }
        }
        out
    }

    fn header_len(&self) -> u64 {
        MAGIC.len() as u64
            + 2 * FRAME_HEAD
            + (self.origin.resource.len() + self.origin.scope.len()) as u64
    }

    fn must_rotate(&self, need: u64) -> bool {
        match (&self.active, self.segments.back()) {
            (Some(_), Some(last)) => {
                last.last_seq >= last.first_seq && last.valid_len + need > self.segment_bytes
            }
            _ => true,
        }
    }

    /// Removes the oldest segment; returns how many undelivered records went with it.
    fn drop_oldest(&mut self) -> u64 {
        let Some(segment) = self.segments.pop_front() else {
            return 0;
        };
        let mut dropped = segment.pending_after(self.acked);
        if let Some(flight) = self.in_flight.as_mut()
            && flight.segment == segment.first_seq
            && !flight.orphaned
        {
            flight.orphaned = true;
            dropped = dropped.saturating_sub(flight.count);
        }
        self.acked = self.acked.max(segment.last_seq);
        self.forget(segment);
        dropped
    }

    /// Deletes a segment that left the list.
    fn forget(&mut self, segment: Segment) {
        if self.segments.is_empty() {
            self.active = None;
        }
        if self.cursor.is_some_and(|c| c.segment == segment.first_seq) {
            self.cursor = None;
        }
        self.bytes = self.bytes.saturating_sub(segment.file_len);
        if let Err(error) = std::fs::remove_file(&segment.path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %segment.path.display(), %error, "cannot delete a spool segment");
        }
    }

    fn write(&mut self, records: &[Vec<u8>], need: u64) -> std::io::Result<()> {
        if self.must_rotate(need) {
            self.start_segment()?;
        }
        let (Some(file), Some(segment)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(std::io::Error::other("no segment to write to"));
        };
        let mut buf = Vec::with_capacity(need as usize);
        let first = segment.last_seq + 1;
        for (i, record) in records.iter().enumerate() {
            put_frame(&mut buf, first + i as u64, record);
        }
        let written = file.write_all(&buf).and_then(|()| file.sync_data());
        if let Err(error) = written {
            // Never leave a torn frame where the next append would follow it.
            let _ = file.set_len(segment.valid_len);
            segment.file_len = file.metadata().map_or(segment.file_len, |m| m.len());
            self.active = None;
            return Err(error);
        }
        segment.last_seq += records.len() as u64;
        segment.valid_len += need;
        segment.file_len = segment.valid_len;
        self.bytes += need;
        self.next_seq = segment.last_seq + 1;
        Ok(())
    }

    fn start_segment(&mut self) -> std::io::Result<()> {
        self.active = None;
        // A segment that never got a record would only be in the way (and share the new name).
        if let Some(last) = self.segments.back()
            && last.last_seq < last.first_seq
            && let Some(empty) = self.segments.pop_back()
        {
            self.forget(empty);
        }
        let first_seq = self.next_seq;
        let path = self.dir.join(format!("{first_seq:020}.{SEGMENT_EXT}"));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(FILE_MODE)
            .open(&path)?;
        let mut head = MAGIC.to_vec();
        put_frame(&mut head, 0, &self.origin.resource);
        put_frame(&mut head, 0, &self.origin.scope);
        if let Err(error) = file.write_all(&head).and_then(|()| file.sync_data()) {
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        // The new name must survive a power cut too (if this fails, only that is at risk).
        if let Err(error) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::debug!(dir = %self.dir.display(), %error, "cannot fsync the spool directory");
        }
        let len = head.len() as u64;
        self.bytes += len;
        self.segments.push_back(Segment {
            path,
            origin: self.origin.clone(),
            first_seq,
            last_seq: first_seq - 1,
            data_start: len,
            valid_len: len,
            file_len: len,
        });
        self.active = Some(file);
        Ok(())
    }

    /// The oldest undelivered records, up to the limits (at least one), from one segment.
    /// `None` when nothing is waiting or one batch is already out. Damage found on the way
    /// is skipped; the second value counts the records lost to it.
    pub fn take(&mut self, max_records: usize, max_bytes: usize) -> (Option<SpoolBatch>, u64) {
        let mut lost = 0;
        if self.in_flight.is_some() {
            return (None, 0);
        }
        loop {
            self.prune();
            let Some(index) = self
                .segments
                .iter()
                .position(|s| s.pending_after(self.acked) > 0)
            else {
                return (None, lost);
            };
            let (batch, damaged) = self.read_batch(index, max_records.max(1), max_bytes);
            lost += damaged;
            if batch.is_some() {
                return (batch, lost);
            }
        }
    }

    /// Deletes the oldest segments while they hold nothing undelivered.
    fn prune(&mut self) {
        while self
            .segments
            .front()
            .is_some_and(|s| s.pending_after(self.acked) == 0)
        {
            if let Some(done) = self.segments.pop_front() {
                self.forget(done);
            }
        }
    }

    /// Reads a batch from segment `index`; on damage, what was read before it is the batch
    /// and the segment ends there (the second value counts the records lost).
    fn read_batch(
        &mut self,
        index: usize,
        max_records: usize,
        max_bytes: usize,
    ) -> (Option<SpoolBatch>, u64) {
        let segment = &self.segments[index];
        let start = match self.cursor {
            Some(c) if c.segment == segment.first_seq => c,
            _ => Cursor {
                segment: segment.first_seq,
                offset: segment.data_start,
                seq: segment.first_seq - 1,
            },
        };
        let limits = Limits {
            end: segment.valid_len,
            acked: self.acked,
            max_records,
            max_bytes,
        };
        let (records, at, damage) = match open_at(&segment.path, start.offset, limits.end) {
            Ok(mut reader) => read_records(&mut reader, start, &limits),
            Err(error) => (Vec::new(), start, Some(error.to_string())),
        };
        let lost = match damage {
            Some(reason) => self.cut_segment(index, at, &reason),
            None => 0,
        };
        if records.is_empty() {
            return (None, lost);
        }
        let segment = &self.segments[index];
        self.in_flight = Some(InFlight {
            segment: segment.first_seq,
            upto: at.seq,
            end: at.offset,
            count: records.len() as u64,
            orphaned: false,
        });
        let origin = segment.origin.clone();
        (Some(SpoolBatch { origin, records }), lost)
    }

    /// A segment turned out damaged after it was indexed: it ends at `at` from now on.
    /// Returns the undelivered records lost.
    fn cut_segment(&mut self, index: usize, at: Cursor, reason: &str) -> u64 {
        let is_last = index + 1 == self.segments.len();
        let acked = self.acked;
        let segment = &mut self.segments[index];
        let before = segment.pending_after(acked);
        segment.last_seq = at.seq;
        segment.valid_len = at.offset;
        let lost = before.saturating_sub(segment.pending_after(acked));
        tracing::warn!(file = %segment.path.display(), offset = at.offset, reason, lost, "spool segment damaged: read up to the damage, the rest is skipped");
        if is_last {
            // Never append after damage.
            self.active = None;
        }
        lost
    }

    /// The batch out for sending was taken by the endpoint (or refused for good): forget it.
    pub fn advance(&mut self) {
        let Some(flight) = self.in_flight.take() else {
            return;
        };
        if flight.orphaned {
            return;
        }
        self.acked = self.acked.max(flight.upto);
        self.cursor = Some(Cursor {
            segment: flight.segment,
            offset: flight.end,
            seq: flight.upto,
        });
        self.write_ack();
        self.prune();
    }

    /// The batch out for sending was not taken: it is sent again later. Returns how many of
    /// its records are lost because their segment was dropped to make room meanwhile.
    pub fn release(&mut self) -> u64 {
        match self.in_flight.take() {
            Some(flight) if flight.orphaned => flight.count,
            _ => 0,
        }
    }

    fn write_ack(&mut self) {
        let mut data = self.acked.to_le_bytes().to_vec();
        data.extend_from_slice(&crc(&[&self.acked.to_le_bytes()]).to_le_bytes());
        let tmp = self.dir.join(ACK_TMP);
        let result = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&data).and_then(|()| f.sync_data()))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(ACK_FILE)));
        match result {
            Ok(()) => self.ack_failed = false,
            Err(error) if !self.ack_failed => {
                self.ack_failed = true;
                tracing::warn!(dir = %self.dir.display(), %error, "cannot record delivered spool records; after a restart they may be sent again");
            }
            Err(_) => {}
        }
    }
}

/// Where reading a segment for a batch stops.
struct Limits {
    /// End of the segment's readable frames.
    end: u64,
    /// Records up to this sequence number are skipped (delivered already).
    acked: u64,
    max_records: usize,
    max_bytes: usize,
}

/// Reads records after `start` up to the limits; returns them, the position after the last
/// frame read, and the damage that stopped the reading, if any.
fn read_records(
    reader: &mut impl Read,
    start: Cursor,
    limits: &Limits,
) -> (Vec<Bytes>, Cursor, Option<String>) {
    let mut at = start;
    let mut records = Vec::new();
    let mut bytes = 0usize;
    while records.len() < limits.max_records && at.offset < limits.end {
        let (seq, payload) = match read_frame(reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => return (records, at, Some(Damage::Torn.to_string())),
            Err(damage) => return (records, at, Some(damage.to_string())),
        };
        let expected = at.seq + 1;
        if seq != expected {
            let damage = Damage::Sequence {
                expected,
                found: seq,
            };
            return (records, at, Some(damage.to_string()));
        }
        if !records.is_empty() && bytes + payload.len() > limits.max_bytes {
            break;
        }
        at.offset += FRAME_HEAD + payload.len() as u64;
        at.seq = seq;
        if seq > limits.acked {
            bytes += payload.len();
            records.push(Bytes::from(payload));
        }
    }
    (records, at, None)
}

/// Why a frame could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("cut short")]
    Torn,
    #[error("length {0} is not plausible")]
    Length(u32),
    #[error("checksum mismatch")]
    Checksum,
    #[error("record {found} where {expected} was expected")]
    Sequence { expected: u64, found: u64 },
    #[error("not a spool segment")]
    Magic,
}

fn put_frame(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let seq_bytes = seq.to_le_bytes();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(&[&seq_bytes, payload]).to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(payload);
}

fn crc(parts: &[&[u8]]) -> u32 {
    let mut crc = flate2::Crc::new();
    for part in parts {
        crc.update(part);
    }
    crc.sum()
}

/// The next frame: `Ok(None)` at a clean end of input.
fn read_frame(reader: &mut impl Read) -> Result<Option<(u64, Vec<u8>)>, Damage> {
    let mut head = [0u8; FRAME_HEAD as usize];
    match read_full(reader, &mut head) {
        0 => return Ok(None),
        n if n < head.len() => return Err(Damage::Torn),
        _ => {}
    }
    let [l0, l1, l2, l3, c0, c1, c2, c3, seq @ ..] = head;
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    if len > MAX_PAYLOAD {
        return Err(Damage::Length(len));
    }
    let mut payload = Vec::new();
    let got = reader
        .take(u64::from(len))
        .read_to_end(&mut payload)
        .map_err(|_| Damage::Torn)?;
    if got < len as usize {
        return Err(Damage::Torn);
    }
    if crc(&[&seq, &payload]) != u32::from_le_bytes([c0, c1, c2, c3]) {
        return Err(Damage::Checksum);
    }
    Ok(Some((u64::from_le_bytes(seq), payload)))
}

/// A reader of `path` from `offset` up to `end`.
fn open_at(path: &Path, offset: u64, end: u64) -> std::io::Result<impl Read> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    Ok(BufReader::new(file).take(end.saturating_sub(offset)))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}

fn read_ack(dir: &Path, recovery: &mut Recovery) -> u64 {
    let path = dir.join(ACK_FILE);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot read the spool's delivery mark; everything in it is sent again");
            return 0;
        }
    };
    if let Ok::<[u8; 12], _>([s0, s1, s2, s3, s4, s5, s6, s7, c0, c1, c2, c3]) = data.try_into() {
        let seq = [s0, s1, s2, s3, s4, s5, s6, s7];
        if crc(&[&seq]) == u32::from_le_bytes([c0, c1, c2, c3]) {
            return u64::from_le_bytes(seq);
        }
    }
    recovery.damaged += 1;
    tracing::warn!(file = %path.display(), "spool delivery mark is damaged; everything in the spool is sent again");
    0
}

/// The segments in `dir`, oldest first, each read up to any damage, and the highest sequence
/// number seen; segments with nothing left to deliver are deleted.
fn scan_dir(
    dir: &Path,
    acked: u64,
    recovery: &mut Recovery,
) -> std::io::Result<(VecDeque<Segment>, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        let stem = path.file_stem().and_then(|s| s.to_str());
        match stem.and_then(|s| s.parse::<u64>().ok()) {
            Some(first_seq) if first_seq > 0 => found.push((first_seq, path)),
            _ => tracing::warn!(file = %path.display(), "not a spool segment name; left alone"),
        }
    }
    found.sort();
    let mut segments = VecDeque::new();
    let mut seen = 0;
    for (first_seq, path) in found {
        let segment = scan_segment(path, first_seq, recovery);
        // A segment overlapping the one before cannot be put in order: it is not sent.
        let overlaps = first_seq <= seen;
        seen = seen.max(segment.last_seq).max(first_seq);
        if overlaps || segment.pending_after(acked) == 0 {
            if overlaps {
                recovery.damaged += 1;
                tracing::warn!(file = %segment.path.display(), "spool segment overlaps an older one; deleted");
            }
            if let Err(error) = std::fs::remove_file(&segment.path) {
                tracing::warn!(file = %segment.path.display(), %error, "cannot delete a spent spool segment");
            }
            continue;
        }
        segments.push_back(segment);
    }
    Ok((segments, seen))
}

/// Reads a segment's frames up to the first damage (reported once).
fn scan_segment(path: PathBuf, first_seq: u64, recovery: &mut Recovery) -> Segment {
    let mut segment = Segment {
        path,
        origin: Origin {
            resource: Bytes::new(),
            scope: Bytes::new(),
        },
        first_seq,
        last_seq: first_seq - 1,
        data_start: 0,
        valid_len: 0,
        file_len: 0,
    };
    let file = match File::open(&segment.path) {
        Ok(file) => file,
        Err(error) => {
            recovery.damaged += 1;
            tracing::warn!(file = %segment.path.display(), %error, "cannot read a spool segment; skipped");
            return segment;
        }
    };
    segment.file_len = file.metadata().map_or(0, |m| m.len());
    let mut reader = BufReader::new(file);
    if let Err(damage) = scan_frames(&mut reader, &mut segment) {
        recovery.damaged += 1;
        tracing::warn!(
            file = %segment.path.display(),
            offset = segment.valid_len,
            %damage,
            kept = segment.last_seq + 1 - segment.first_seq,
            skipped_bytes = segment.file_len.saturating_sub(segment.valid_len),
            "spool segment damaged: read up to the damage, the rest is skipped"
        );
    }
    segment
}

fn scan_frames(reader: &mut impl Read, segment: &mut Segment) -> Result<(), Damage> {
    let mut magic = [0u8; MAGIC.len()];
    if read_full(reader, &mut magic) < magic.len() || &magic != MAGIC {
        return Err(Damage::Magic);
    }
    let mut header = Vec::new();
    let mut at = MAGIC.len() as u64;
    for _ in 0..2 {
        match read_frame(reader)? {
            Some((0, payload)) => {
                at += FRAME_HEAD + payload.len() as u64;
                header.push(Bytes::from(payload));
            }
            Some((found, _)) => return Err(Damage::Sequence { expected: 0, found }),
            None => return Err(Damage::Torn),
        }
    }
    let scope = header.pop().unwrap_or_default();
    let resource = header.pop().unwrap_or_default();
    segment.origin = Origin { resource, scope };
    segment.data_start = at;
    segment.valid_len = at;
    while let Some((seq, payload)) = read_frame(reader)? {
        let expected = segment.last_seq + 1;
        if seq != expected {
            return Err(Damage::Sequence {
                expected,
                found: seq,
            });
        }
        segment.last_seq = seq;
        segment.valid_len += FRAME_HEAD + payload.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            resource: Bytes::from_static(b"resource"),
            scope: Bytes::from_static(b"scope"),
        }
    }

    fn open(dir: &Path, max_bytes: u64) -> (Spool, Recovery) {
        let settings = SpoolSettings {
            dir: dir.to_path_buf(),
            max_bytes,
        };
        Spool::open(&settings, origin()).unwrap()
    }

    fn records(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range
            .map(|i| format!("record-{i:04}").into_bytes())
            .collect()
    }

    /// Takes and delivers everything, returning the payloads in order.
    fn drain(spool: &mut Spool, per_batch: usize) -> Vec<String> {
        let mut out = Vec::new();
        while let (Some(batch), _) = spool.take(per_batch, usize::MAX) {
            assert_eq!(batch.origin, origin());
            out.extend(
                batch
                    .records
                    .iter()
                    .map(|r| String::from_utf8(r.to_vec()).unwrap()),
            );
            spool.advance();
        }
        out
    }

    fn names(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("record-{i:04}")).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn records_come_back_in_order_once_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, recovery) = open(dir.path(), 1 << 20);
        assert_eq!(recovery, Recovery::default());
        assert_eq!(spool.append(&records(0..5)).written, 5);
        assert_eq!(spool.append(&records(5..8)).written, 3);
        assert_eq!(spool.pending(), 8);
        // A batch not taken by the endpoint comes back the same.
        let (batch, _) = spool.take(3, usize::MAX);
        assert_eq!(batch.unwrap().records.len(), 3);
        assert!(
            spool.take(3, usize::MAX).0.is_none(),
            "one batch out at a time"
        );
        assert_eq!(spool.release(), 0);
        let (batch, _) = spool.take(3, usize::MAX);
        assert_eq!(batch.unwrap().records[0], b"record-0000"[..]);
        spool.advance();
        drop(spool);

        // Reopened: the first three are not sent again; new records go after the old.
        let (mut spool, recovery) = open(dir.path(), 1 << 20);
        assert_eq!(recovery.records, 5);
        spool.append(&records(8..10));
        assert_eq!(drain(&mut spool, 2), names(3..10));
        assert_eq!(spool.pending(), 0);
        assert!(segment_files(dir.path()).is_empty());
        assert_eq!(spool.bytes(), 0);
        drop(spool);
        let (mut spool, recovery) = open(dir.path(), 1 << 20);
        assert_eq!(recovery.records, 0);
        // Sequence numbers go on from where they were: a new file, never an old name.
        spool.append(&records(10..11));
        let name = segment_files(dir.path())[0].clone();
        assert_eq!(
            name.file_name().unwrap().to_str().unwrap(),
            "00000000000000000011.seg"
        );
    }

    #[test]
    fn a_batch_respects_the_byte_limit_but_holds_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path(), 1 << 20);
        spool.append(&records(0..4));
        let (batch, _) = spool.take(100, 25);
        assert_eq!(batch.unwrap().records.len(), 2);
        spool.advance();
        let (batch, _) = spool.take(100, 1);
        assert_eq!(batch.unwrap().records.len(), 1);
    }

    /// Every cut of a segment file (a SIGKILL or power cut while writing): opening never
    /// fails and keeps exactly the records whose frames are whole.
    #[test]
    fn every_cut_of_a_segment_keeps_the_whole_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path(), 1 << 20);
        spool.append(&records(0..3));
        drop(spool);
        let path = segment_files(dir.path())[0].clone();
        let full = std::fs::read(&path).unwrap();
        let header = MAGIC.len() + 2 * FRAME_HEAD as usize + 8 + 5;
        let frame = FRAME_HEAD as usize + 11;
        assert_eq!(full.len(), header + 3 * frame);
        for cut in 0..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let _ = std::fs::remove_file(dir.path().join(ACK_FILE));
            let (mut spool, recovery) = open(dir.path(), 1 << 20);
            let whole = cut.saturating_sub(header) / frame;
            let whole = if cut < header { 0 } else { whole };
            assert_eq!(recovery.records, whole as u64, "cut at {cut}");
            // A cut between two frames looks like a shorter file: nothing to report.
            let torn = cut < header || !(cut - header).is_multiple_of(frame);
            assert_eq!(recovery.damaged, u64::from(torn), "cut at {cut}");
            if whole == 0 {
                // Nothing worth keeping: the file is gone.
                assert!(!path.exists(), "cut at {cut}");
                continue;
            }
            drop(spool.take(100, usize::MAX));
            spool.release();
            assert_eq!(
                drain(&mut spool, 100),
                names(0..whole as u32),
                "cut at {cut}"
            );
            drop(spool);
            assert!(!path.exists());
        }
    }

    /// Every flipped bit: opening never fails and keeps the records before the damaged frame.
    #[test]
    fn every_flipped_bit_keeps_the_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path(), 1 << 20);
        spool.append(&records(0..3));
        drop(spool);
        let path = segment_files(dir.path())[0].clone();
        let full = std::fs::read(&path).unwrap();
        let header = MAGIC.len() + 2 * FRAME_HEAD as usize + 8 + 5;
        let frame = FRAME_HEAD as usize + 11;
        for at in 0..full.len() {
            for bit in [0x01u8, 0x80] {
                let mut data = full.clone();
                data[at] ^= bit;
                std::fs::write(&path, &data).unwrap();
                let _ = std::fs::remove_file(dir.path().join(ACK_FILE));
                let (mut spool, recovery) = open(dir.path(), 1 << 20);
                let kept = if at < header {
                    0
                } else {
                    (at - header) / frame
                };
                assert_eq!(recovery.records, kept as u64, "bit {bit:#x} of byte {at}");
                assert_eq!(recovery.damaged, 1, "bit {bit:#x} of byte {at}");
                assert_eq!(drain(&mut spool, 100), names(0..kept as u32));
            }
        }
    }

    #[test]
    fn damage_found_while_sending_ends_the_segment_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path(), 1 << 20);
        spool.append(&records(0..5));
        let path = segment_files(dir.path())[0].clone();
        let mut data = std::fs::read(&path).unwrap();
        let header = MAGIC.len() + 2 * FRAME_HEAD as usize + 8 + 5;
        let frame = FRAME_HEAD as usize + 11;
        data[header + 3 * frame + FRAME_HEAD as usize] ^= 0x40;
        std::fs::write(&path, &data).unwrap();
        let (batch, lost) = spool.take(100, usize::MAX);
        assert_eq!((batch.unwrap().records.len(), lost), (3, 2));
        spool.advance();
        assert_eq!(spool.pending(), 0);
        // Nothing is appended after damage: new records start a new file.
        spool.append(&records(5..6));
        assert_eq!(drain(&mut spool, 100), names(5..6));
    }

    #[test]
    fn the_bound_drops_the_oldest_segments_and_counts_their_records() {
        let dir = tempfile::tempdir().unwrap();
        // Segments of 4 KiB (the floor), a 12 KiB bound; 1 KiB records.
        let max = 12 * 1024;
        let (mut spool, _) = open(dir.path(), max);
        let big = |i: u32| {
            let mut r = format!("{i:04}").into_bytes();
            r.resize(1000, b'.');
            r
        };
        let mut dropped = 0;
        for i in 0..40 {
            dropped += spool.append(&[big(i)]).dropped;
            assert!(spool.bytes() <= max, "{} bytes", spool.bytes());
        }
        assert!(dropped > 0);
        assert_eq!(spool.pending() + dropped, 40);
        let on_disk: u64 = segment_files(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(on_disk, spool.bytes());
        let mut got = Vec::new();
        while let (Some(batch), _) = spool.take(100, usize::MAX) {
            got.extend(batch.records.iter().map(|r| r[..4].to_vec()));
            spool.advance();
        }
        let want: Vec<Vec<u8>> = (dropped as u32..40)
            .map(|i| format!("{i:04}").into_bytes())
            .collect();
        assert_eq!(got, want, "the newest remain, in order");
        // A record bigger than the whole bound cannot be kept at all.
        let huge = vec![0u8; max as usize];
        assert_eq!(
            spool.append(&[huge]),
            Appended {
                written: 0,
                dropped: 1
            }
        );
    }

    #[test]
    fn a_batch_out_when_its_segment_is_dropped_is_decided_on_return() {
        let dir = tempfile::tempdir().unwrap();
        let max = 12 * 1024;
        let (mut spool, _) = open(dir.path(), max);
        let big = vec![b'x'; 3000];
        spool.append(std::slice::from_ref(&big));
        let (batch, _) = spool.take(10, usize::MAX);
        assert!(batch.is_some());
        // Fill until the segment that batch came from is dropped.
        let mut dropped = 0;
        for _ in 0..6 {
            dropped += spool.append(std::slice::from_ref(&big)).dropped;
        }
        assert!(dropped > 0);
        let before = spool.pending();
        // Not taken: it is lost now (counted by the caller) ...
        assert_eq!(spool.release(), 1);
        assert_eq!(spool.pending(), before - 1);

        // ... taken: it counts as delivered, and nothing is sent twice.
        let (batch, _) = spool.take(1, usize::MAX);
        assert!(batch.is_some());
        for _ in 0..6 {
            spool.append(std::slice::from_ref(&big));
        }
        let before = spool.pending();
        spool.advance();
        assert_eq!(spool.pending(), before - 1);
    }

    #[test]
    fn a_damaged_ack_file_means_sending_again_not_losing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path(), 1 << 20);
        spool.append(&records(0..4));
        drop(spool.take(2, usize::MAX));
        spool.advance();
        drop(spool);
        std::fs::write(dir.path().join(ACK_FILE), b"garbage").unwrap();
        let (mut spool, recovery) = open(dir.path(), 1 << 20);
        assert_eq!((recovery.records, recovery.damaged), (4, 1));
        assert_eq!(drain(&mut spool, 100), names(0..4));
    }

    #[test]
    fn one_directory_one_spool_and_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("nested/spool");
        let (mut spool, _) = open(&spool_dir, 1 << 20);
        let settings = SpoolSettings {
            dir: spool_dir.clone(),
            max_bytes: 1 << 20,
        };
        assert!(matches!(
            Spool::open(&settings, origin()),
            Err(SpoolError::Locked(_))
        ));
        spool.append(&records(0..1));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&spool_dir), DIR_MODE);
        assert_eq!(mode(&segment_files(&spool_dir)[0]), FILE_MODE);
        drop(spool);
        assert!(
            Spool::open(&settings, origin()).is_ok(),
            "the lock goes with the spool"
        );
    }
}
