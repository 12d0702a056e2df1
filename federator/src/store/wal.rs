//! The Raft log's files: an append-only sequence of checksummed records in numbered segment
//! files (`<data_dir>/raft-log/00000000000000000001.wal`, ...), in the manner of etcd's WAL.
//!
//! Every change is a record: an entry, the vote, the committed hint, a truncation, a purge.
//! A write appends its records at the end of the newest segment with one `write` and one
//! `fdatasync`, whatever it holds, so an append costs one small sequential write; the entries,
//! vote and purge point are rebuilt at open by reading the records back in order. Each
//! segment starts with a checkpoint of the vote, committed and purged ids, so a segment whose
//! entries are all purged can be deleted without losing them.
//!
//! The newest segment is preallocated ahead of its records (`fallocate`, in steps of
//! `PREALLOCATE`; zeros), as etcd does: a write that does not change the file's size needs no
//! metadata journalled by its `fdatasync`, which then costs about a third less (on ext4 here,
//! 130 -> 90 us for a 500-byte append). Its records end where the zeros begin. A segment is cut
//! to its records' length when it is closed.
//!
//! Damage is told from a torn write: only the end of the newest segment may be incomplete (a
//! crash during its last write, which was never acknowledged: the record runs past the end of
//! the file, or holds a sector that was never written), and it is cut off at open. A record
//! that fails its checksum anywhere else makes the log refuse to open, naming the file and the
//! offset.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{CommittedLeaderId, LogId, Vote};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::NodeId;

/// A segment is closed and a new one started once it grows past this.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Length (u32) and kind (u8), their checksum (u32), the body's checksum (u32). The header's
/// own checksum tells a damaged length from a record cut short by a crash.
const HEADER: usize = 13;
/// A record larger than this is damage, not data (an entry is far below the gRPC limit).
const MAX_RECORD: usize = 256 << 20;
/// An entry record's body starts with its log id: index, term, leader node.
const ENTRY_ID: usize = 24;
const LOCK_FILE: &str = "LOCK";
/// The write buffer kept between writes.
const KEEP_BUFFER: usize = 4 << 20;
/// The newest segment is allocated this far ahead of its records, at least.
const PREALLOCATE: u64 = 8 << 20;
/// The unit a disk writes whole: a torn write leaves sectors of zeros, never part of one.
const SECTOR: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Checkpoint = 1,
    Entry = 2,
    Vote = 3,
    Committed = 4,
    Truncate = 5,
    Purge = 6,
}

impl Kind {
    fn of(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Checkpoint,
            2 => Kind::Entry,
            3 => Kind::Vote,
            4 => Kind::Committed,
            5 => Kind::Truncate,
            6 => Kind::Purge,
            _ => return None,
        })
    }
}

/// The log's state apart from its entries, as of the last record read or written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) node_id: NodeId,
    pub(crate) vote: Option<Vote<NodeId>>,
    pub(crate) committed: Option<LogId<NodeId>>,
    pub(crate) purged: Option<LogId<NodeId>>,
}

/// Where an entry's record is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Location {
    pub(crate) log_id: LogId<NodeId>,
    segment: u64,
    /// Offset of the record's body (after the header) in its segment.
    offset: u64,
    len: u32,
    crc: u32,
}

/// What readers share with the writer: the live entries and the files that hold them.
pub(crate) struct Index {
    pub(crate) meta: Meta,
    /// The live entries, contiguous.
    entries: VecDeque<Location>,
    /// Open segments for reading, by number.
    files: BTreeMap<u64, Arc<File>>,
    dir: PathBuf,
}

impl Index {
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn last(&self) -> Option<LogId<NodeId>> {
        self.entries.back().map(|l| l.log_id)
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|l| l.log_id.index)
    }

    /// Where the entries of `[start, end)` are, with the files to read them from.
    pub(crate) fn locate(&self, start: u64, end: u64) -> Vec<(Location, Arc<File>, PathBuf)> {
        let Some(first) = self.first_index() else {
            return Vec::new();
        };
        let skip = usize::try_from(start.saturating_sub(first)).unwrap_or(usize::MAX);
        self.entries
            .iter()
            .skip(skip)
            .take_while(|l| l.log_id.index < end)
            .filter_map(|l| {
                let file = self.files.get(&l.segment)?;
                Some((*l, file.clone(), segment_path(&self.dir, l.segment)))
            })
            .collect()
    }

    fn push(&mut self, location: Location) {
        self.entries.push_back(location);
    }

    fn truncate(&mut self, from: u64) {
        while self.last().is_some_and(|l| l.index >= from) {
            self.entries.pop_back();
        }
    }

    fn purge(&mut self, upto: u64) {
        while self.first_index().is_some_and(|i| i <= upto) {
            self.entries.pop_front();
        }
    }
}

/// Reads the JSON body of the entry at `location`, checking its checksum.
pub(crate) fn read_entry(
    file: &File,
    path: &Path,
    location: &Location,
) -> Result<Vec<u8>, StoreError> {
    let mut body = vec![0; location.len as usize];
    file.read_exact_at(&mut body, location.offset)
        .map_err(|e| {
            StoreError::storage(path, format!("read entry {}: {e}", location.log_id.index))
        })?;
    if checksum(Kind::Entry, &body) != location.crc {
        return Err(StoreError::corrupt(
            path,
            format!(
                "entry {} at offset {} fails its checksum",
                location.log_id.index, location.offset
            ),
        ));
    }
    body.drain(..ENTRY_ID);
    Ok(body)
}

fn checksum(kind: Kind, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind as u8]);
    hasher.update(body);
    hasher.finalize()
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.wal"))
}

/// One change, as the writer appends it.
pub(crate) enum Record<'a> {
    /// An entry's log id and its JSON.
    Entry(LogId<NodeId>, &'a [u8]),
    Vote(&'a Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
    /// Removes the entries from this index on.
    Truncate(u64),
    /// Removes the entries up to and including this log id.
    Purge(LogId<NodeId>),
}

/// Encodes records into a buffer; where each entry's body lands, relative to the buffer.
#[derive(Default)]
pub(crate) struct Batch {
    bytes: Vec<u8>,
    /// Entries: (log id, body offset in `bytes`, body length, checksum).
    entries: Vec<(LogId<NodeId>, usize, u32, u32)>,
    changes: Vec<Change>,
}

/// What a batch does to the index and the meta, applied once it is durable.
enum Change {
    Entry(usize),
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
    Truncate(u64),
    Purge(LogId<NodeId>),
}

impl Batch {
    pub(crate) fn push(&mut self, record: Record<'_>) -> Result<(), serde_json::Error> {
        match record {
            Record::Entry(log_id, json) => {
                let mut body = Vec::with_capacity(ENTRY_ID + json.len());
                body.extend_from_slice(&log_id.index.to_le_bytes());
                body.extend_from_slice(&log_id.leader_id.term.to_le_bytes());
                body.extend_from_slice(&log_id.leader_id.node_id.to_le_bytes());
                body.extend_from_slice(json);
                let at = self.append(Kind::Entry, &body);
                let crc = checksum(Kind::Entry, &body);
                self.changes.push(Change::Entry(self.entries.len()));
                self.entries.push((log_id, at, body.len() as u32, crc));
            }
            Record::Vote(vote) => {
                self.append(Kind::Vote, &serde_json::to_vec(vote)?);
                self.changes.push(Change::Vote(*vote));
            }
            Record::Committed(committed) => {
                self.append(Kind::Committed, &serde_json::to_vec(&committed)?);
                self.changes.push(Change::Committed(committed));
            }
            Record::Truncate(from) => {
                self.append(Kind::Truncate, &from.to_le_bytes());
                self.changes.push(Change::Truncate(from));
            }
            Record::Purge(log_id) => {
                self.append(Kind::Purge, &serde_json::to_vec(&log_id)?);
                self.changes.push(Change::Purge(log_id));
            }
        }
        Ok(())
    }

    /// Appends one record; the offset of its body.
    fn append(&mut self, kind: Kind, body: &[u8]) -> usize {
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.push(kind as u8);
        let header_crc = crc32fast::hash(&self.bytes[start..]);
        self.bytes.extend_from_slice(&header_crc.to_le_bytes());
        self.bytes
            .extend_from_slice(&checksum(kind, body).to_le_bytes());
        let at = self.bytes.len();
        self.bytes.extend_from_slice(body);
        at
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Empties the batch for the next write, keeping a moderate buffer: a fresh one per
    /// write would be fresh memory, faulted in each time.
    fn clear(&mut self) {
        self.bytes.clear();
        self.bytes.shrink_to(KEEP_BUFFER);
        self.entries.clear();
        self.changes.clear();
    }
}

/// The writing side: the newest segment, open for appending. Owned by the writer thread.
pub(crate) struct Writer {
    dir: PathBuf,
    /// Number, file and length of the segment being appended to (its records' length; the
    /// file is longer, preallocated).
    current: (u64, File, u64),
    /// The size of the current segment's file.
    allocated: u64,
    /// The highest entry index each closed segment ever held: a segment whose entries are all
    /// purged is deleted.
    closed: BTreeMap<u64, Option<u64>>,
    current_last: Option<u64>,
    /// Held for as long as the log is open: one process at a time.
    _lock: File,
    /// Set by a failed write: what is on disk is then unknown, and nothing more is written.
    failed: bool,
}

impl Writer {
    /// Writes `batch` at the end of the log, durably, then applies it to `index`.
    pub(crate) fn write(
        &mut self,
        batch: &mut Batch,
        index: &std::sync::Mutex<Index>,
    ) -> Result<(), StoreError> {
        let written = self.write_records(batch, index);
        batch.clear();
        written
    }

    fn write_records(
        &mut self,
        batch: &mut Batch,
        index: &std::sync::Mutex<Index>,
    ) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::storage(
                &self.dir,
                "an earlier write failed; restart the federator",
            ));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let end = self.current.2 + batch.bytes.len() as u64;
        if end > self.allocated {
            let size = end + PREALLOCATE;
            if let Err(e) = preallocate(&self.current.1, self.allocated, size) {
                return Err(self.failure("preallocate", e));
            }
            self.allocated = size;
        }
        let (segment, file, start) = (self.current.0, &self.current.1, self.current.2);
        let written = file
            .write_all_at(&batch.bytes, start)
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            return Err(self.failure("append", e));
        }
        self.current.2 += batch.bytes.len() as u64;
        let mut purged = None;
        {
            let mut index = index
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for change in batch.changes.drain(..) {
                match change {
                    Change::Entry(i) => {
                        let (log_id, at, len, crc) = batch.entries[i];
                        index.push(Location {
                            log_id,
                            segment,
                            offset: start + at as u64,
                            len,
                            crc,
                        });
                        self.current_last = self.current_last.max(Some(log_id.index));
                    }
                    Change::Vote(vote) => index.meta.vote = Some(vote),
                    Change::Committed(committed) => index.meta.committed = committed,
                    Change::Truncate(from) => index.truncate(from),
                    Change::Purge(log_id) => {
                        index.purge(log_id.index);
                        index.meta.purged = Some(log_id);
                        purged = Some(log_id.index);
                    }
                }
            }
        }
        if let Some(purged) = purged {
            self.delete_purged(purged, index);
        }
        if self.current.2 >= SEGMENT_BYTES {
            self.rotate(index)?;
        }
        Ok(())
    }

    /// Marks the log failed (what is on disk is unknown) and names the current segment.
    fn failure(&mut self, what: &str, e: std::io::Error) -> StoreError {
        self.failed = true;
        StoreError::storage(
            segment_path(&self.dir, self.current.0),
            format!("{what}: {e}"),
        )
    }

    /// Closes the current segment, cut to its records, and starts the next with a checkpoint
    /// of the current meta.
    fn rotate(&mut self, index: &std::sync::Mutex<Index>) -> Result<(), StoreError> {
        let (_, file, len) = &self.current;
        // Durable before the next segment exists: only the newest may end in zeros.
        if let Err(e) = file.set_len(*len).and_then(|()| file.sync_all()) {
            return Err(self.failure("cut to its records", e));
        }
        let meta = index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .meta
            .clone();
        let next = self.current.0 + 1;
        let (file, len) = create_segment(&self.dir, next, &meta).inspect_err(|_| {
            self.failed = true;
        })?;
        let reader = open_for_reading(&self.dir, next)?;
        let old = std::mem::replace(&mut self.current, (next, file, len));
        self.allocated = len;
        self.closed.insert(old.0, self.current_last.take());
        index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .files
            .insert(next, reader);
        Ok(())
    }

    /// Deletes the closed segments whose entries are all purged. Their meta is in every later
    /// segment's checkpoint, and the purge record that covers them is durable.
    fn delete_purged(&mut self, purged: u64, index: &std::sync::Mutex<Index>) {
        let gone: Vec<u64> = self
            .closed
            .iter()
            .take_while(|(_, last)| last.is_none_or(|last| last <= purged))
            .map(|(n, _)| *n)
            .collect();
        for number in gone {
            let path = segment_path(&self.dir, number);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not delete a purged Raft log segment");
                return;
            }
            self.closed.remove(&number);
            index
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .files
                .remove(&number);
        }
    }
}

/// Writes a new segment holding only a checkpoint, durably: under a temporary name first, so
/// a crash never leaves a numbered segment without its checkpoint.
fn create_segment(dir: &Path, number: u64, meta: &Meta) -> Result<(File, u64), StoreError> {
    let path = segment_path(dir, number);
    let temporary = path.with_extension("wal.new");
    let error = |e: std::io::Error| StoreError::storage(&path, format!("create: {e}"));
    let mut batch = Batch::default();
    let body = serde_json::to_vec(meta).map_err(|e| StoreError::storage(&path, e))?;
    batch.append(Kind::Checkpoint, &body);
    let mut file = File::create(&temporary).map_err(error)?;
    file.write_all(&batch.bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, &path).map_err(error)?;
    sync_dir(dir)?;
    let file = OpenOptions::new().write(true).open(&path).map_err(error)?;
    Ok((file, batch.bytes.len() as u64))
}

/// Grows `file` from `from` to `to` bytes of zeros, allocated on disk where the file system
/// can (else sparse: still no size change per write).
fn preallocate(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    let offset = i64::try_from(from).map_err(std::io::Error::other)?;
    let len = i64::try_from(to - from).map_err(std::io::Error::other)?;
    match fallocate(file.as_raw_fd(), FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => file.set_len(to),
        Err(e) => Err(e.into()),
    }
}

fn open_for_reading(dir: &Path, number: u64) -> Result<Arc<File>, StoreError> {
    let path = segment_path(dir, number);
    File::open(&path)
        .map(Arc::new)
        .map_err(|e| StoreError::storage(&path, format!("open: {e}")))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::storage(dir, format!("sync the directory: {e}")))
}

/// Opens (or creates) the log in `dir` for node `node_id`: reads every segment back, cuts off
/// an incomplete last write, and refuses damage.
pub(crate) fn open(dir: &Path, node_id: NodeId) -> Result<(Writer, Index), StoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::storage(dir, format!("create the directory: {e}")))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::storage(&lock_path, format!("open: {e}")))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StoreError::InUse {
                path: dir.to_path_buf(),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(StoreError::storage(&lock_path, format!("lock: {e}")))
        }
    }
    let mut numbers = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| StoreError::storage(dir, e))? {
        let item = item.map_err(|e| StoreError::storage(dir, e))?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".wal") {
            match stem.parse::<u64>() {
                Ok(n) if stem.len() == 20 => numbers.push(n),
                _ => {
                    return Err(StoreError::corrupt(
                        item.path(),
                        "is not a segment this log wrote",
                    ))
                }
            }
        } else if name.ends_with(".wal.new") {
            // A segment whose creation did not finish: never used.
            let _ = std::fs::remove_file(item.path());
        }
    }
    numbers.sort_unstable();
    if let Some(pair) = numbers.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(StoreError::corrupt(
            segment_path(dir, pair[1]),
            format!("segment {} is missing before it", pair[0] + 1),
        ));
    }

    let mut index = Index {
        meta: Meta {
            node_id,
            ..Meta::default()
        },
        entries: VecDeque::new(),
        files: BTreeMap::new(),
        dir: dir.to_path_buf(),
    };
    let mut closed = BTreeMap::new();
    let mut current_last = None;
    let mut current_len = 0;
    // The last entry missing before the oldest segment (see `replay`).
    let mut gap: Option<u64> = None;
    for (i, &number) in numbers.iter().enumerate() {
        let last_segment = i + 1 == numbers.len();
        let (len, highest) = replay(dir, number, i == 0, last_segment, &mut index, &mut gap)?;
        if index.meta.node_id != node_id {
            return Err(StoreError::WrongNode {
                path: dir.to_path_buf(),
                stored: index.meta.node_id,
                configured: node_id,
            });
        }
        index.files.insert(number, open_for_reading(dir, number)?);
        if last_segment {
            current_last = highest;
            current_len = len;
        } else {
            closed.insert(number, highest);
        }
    }
    if let Some(upto) = gap {
        let purged = index.meta.purged.map_or(0, |p| p.index);
        if purged < upto {
            return Err(StoreError::corrupt(
                segment_path(dir, numbers[0]),
                format!(
                    "entries {}..={upto} are missing before it, and no purge covers them",
                    purged + 1
                ),
            ));
        }
    }
    let (current, allocated) = match numbers.last() {
        Some(&number) => {
            let path = segment_path(dir, number);
            let error = |e: std::io::Error| StoreError::storage(&path, format!("open: {e}"));
            let file = OpenOptions::new().write(true).open(&path).map_err(error)?;
            let allocated = file.metadata().map_err(error)?.len();
            ((number, file, current_len), allocated)
        }
        None => {
            let (file, len) = create_segment(dir, 1, &index.meta)?;
            index.files.insert(1, open_for_reading(dir, 1)?);
            ((1, file, len), len)
        }
    };
    Ok((
        Writer {
            dir: dir.to_path_buf(),
            current,
            allocated,
            closed,
            current_last,
            _lock: lock,
            failed: false,
        },
        index,
    ))
}

/// Reads segment `number` into `index`; its length once an incomplete tail is cut off, and the
/// highest entry index it holds.
fn replay(
    dir: &Path,
    number: u64,
    first_segment: bool,
    last_segment: bool,
    index: &mut Index,
    gap: &mut Option<u64>,
) -> Result<(u64, Option<u64>), StoreError> {
    let path = segment_path(dir, number);
    let bytes =
        std::fs::read(&path).map_err(|e| StoreError::storage(&path, format!("read: {e}")))?;
    let corrupt =
        |at: usize, detail: String| StoreError::corrupt(&path, format!("at offset {at}: {detail}"));
    let mut at = 0;
    let mut highest = None;
    while at < bytes.len() {
        let record = match parse(&bytes[at..]) {
            Ok(record) => record,
            // The newest segment's preallocated end: its records stop here.
            Err(_) if last_segment && at > 0 && bytes[at..].iter().all(|b| *b == 0) => break,
            Err(problem) => {
                // Only the newest segment's last write may be incomplete.
                if !(last_segment && at > 0 && torn(&bytes, at, &problem)) {
                    return Err(corrupt(at, problem.to_string()));
                }
                tracing::warn!(path = %path.display(), offset = at, "cutting off an incomplete write at the end of the Raft log");
                // Cut, then zeros again: what the torn write left beyond its first unwritten
                // sector must not be read as records later.
                let file = OpenOptions::new().write(true).open(&path).and_then(|f| {
                    let size = f.metadata()?.len();
                    f.set_len(at as u64)?;
                    preallocate(&f, at as u64, size.max(at as u64))?;
                    f.sync_all()
                });
                file.map_err(|e| {
                    StoreError::storage(&path, format!("cut off the incomplete end: {e}"))
                })?;
                break;
            }
        };
        let (kind, body, crc) = record;
        let body_at = at + HEADER;
        if at == 0 && kind != Kind::Checkpoint {
            return Err(corrupt(
                at,
                "the segment does not start with a checkpoint".into(),
            ));
        }
        let json = |what: &str| -> Result<serde_json::Value, StoreError> {
            serde_json::from_slice(body).map_err(|e| corrupt(at, format!("{what}: {e}")))
        };
        match kind {
            Kind::Checkpoint => {
                if at != 0 {
                    return Err(corrupt(at, "a checkpoint inside a segment".into()));
                }
                let meta: Meta = serde_json::from_value(json("checkpoint")?)
                    .map_err(|e| corrupt(at, format!("checkpoint: {e}")))?;
                if first_segment {
                    index.meta = meta;
                } else if meta != index.meta {
                    return Err(corrupt(
                        at,
                        format!(
                            "its checkpoint {meta:?} differs from the state the earlier segments leave {:?}",
                            index.meta
                        ),
                    ));
                }
            }
            Kind::Entry => {
                if body.len() < ENTRY_ID {
                    return Err(corrupt(
                        at,
                        "an entry record too short for its log id".into(),
                    ));
                }
                let word = |i: usize| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&body[i * 8..i * 8 + 8]);
                    u64::from_le_bytes(w)
                };
                let log_id = LogId::new(CommittedLeaderId::new(word(1), word(2)), word(0));
                let expected = match index.last() {
                    Some(last) => Some(last.index + 1),
                    None => index.meta.purged.map(|p| p.index + 1),
                };
                // The oldest segment left may start after a gap: the segments before it were
                // deleted once a purge covered their entries, and that purge record comes
                // later in the log than this segment's checkpoint. `open` checks that one does.
                let after_deleted = first_segment && index.last().is_none() && gap.is_none();
                if after_deleted && expected.is_some_and(|e| log_id.index > e) {
                    *gap = Some(log_id.index - 1);
                } else if expected.is_some_and(|e| e != log_id.index) {
                    return Err(corrupt(
                        at,
                        format!(
                            "entry {} follows entry {}",
                            log_id.index,
                            expected.map_or(0, |e| e - 1)
                        ),
                    ));
                }
                index.push(Location {
                    log_id,
                    segment: number,
                    offset: body_at as u64,
                    len: body.len() as u32,
                    crc,
                });
                highest = highest.max(Some(log_id.index));
            }
            Kind::Vote => {
                index.meta.vote = Some(
                    serde_json::from_value(json("vote")?)
                        .map_err(|e| corrupt(at, format!("vote: {e}")))?,
                );
            }
            Kind::Committed => {
                index.meta.committed = serde_json::from_value(json("committed")?)
                    .map_err(|e| corrupt(at, format!("committed: {e}")))?;
            }
            Kind::Truncate => {
                let from = <[u8; 8]>::try_from(body)
                    .map(u64::from_le_bytes)
                    .map_err(|_| corrupt(at, "a truncation record of the wrong size".into()))?;
                index.truncate(from);
            }
            Kind::Purge => {
                let log_id: LogId<NodeId> = serde_json::from_value(json("purge")?)
                    .map_err(|e| corrupt(at, format!("purge: {e}")))?;
                index.purge(log_id.index);
                index.meta.purged = Some(log_id);
            }
        }
        at = body_at + body.len();
    }
    Ok((at as u64, highest))
}

#[derive(Debug, PartialEq, Eq)]
enum Problem {
    /// The record runs past the end of the file.
    Incomplete,
    Header,
    Checksum,
    Kind(u8),
    TooLarge(usize),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Incomplete => write!(f, "a record runs past the end of the file"),
            Problem::Header => write!(f, "a record header fails its checksum"),
            Problem::Checksum => write!(f, "a record fails its checksum"),
            Problem::Kind(k) => write!(f, "a record of unknown kind {k}"),
            Problem::TooLarge(n) => write!(f, "a record claims {n} bytes"),
        }
    }
}

/// Whether the record that fails to read at offset `at` of the segment `bytes` is the last
/// write, cut short by a crash: it runs past the end of the file, or a sector it spans was
/// never written (the preallocated zeros are still there) and nothing but zeros follows it.
/// A disk writes whole sectors, so a lost one is all zeros from the record's start or from
/// the sector's; a record's header and JSON hold no such run. A record with data after it
/// was not the last write: it was acknowledged, and its damage is refused, not cut off.
fn torn(bytes: &[u8], at: usize, problem: &Problem) -> bool {
    if *problem == Problem::Incomplete {
        return true;
    }
    // The record's extent as its header gives it; a damaged header, its own bytes.
    let claimed = match problem {
        Problem::Checksum => {
            let mut w = [0u8; 4];
            w.copy_from_slice(&bytes[at..at + 4]);
            HEADER + u32::from_le_bytes(w) as usize
        }
        _ => HEADER,
    };
    let end = at.saturating_add(claimed).min(bytes.len());
    if bytes[end..].iter().any(|b| *b != 0) {
        return false;
    }
    let mut sector = at - at % SECTOR;
    while sector < end {
        let part = &bytes[sector.max(at)..(sector + SECTOR).min(bytes.len())];
        if part.iter().all(|b| *b == 0) {
            return true;
        }
        sector += SECTOR;
    }
    false
}

/// The record at the start of `bytes`: kind, body and checksum.
fn parse(bytes: &[u8]) -> Result<(Kind, &[u8], u32), Problem> {
    if bytes.len() < HEADER {
        return Err(Problem::Incomplete);
    }
    let word = |i: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&bytes[i..i + 4]);
        u32::from_le_bytes(w)
    };
    if crc32fast::hash(&bytes[..5]) != word(5) {
        return Err(Problem::Header);
    }
    let len = word(0) as usize;
    let kind = Kind::of(bytes[4]).ok_or(Problem::Kind(bytes[4]))?;
    let crc = word(9);
    if len > MAX_RECORD {
        return Err(Problem::TooLarge(len));
    }
    let body = bytes.get(HEADER..HEADER + len).ok_or(Problem::Incomplete)?;
    if checksum(kind, body) != crc {
        return Err(Problem::Checksum);
    }
    Ok((kind, body, crc))
}

/// Whether `dir` holds a log's segments.
pub(crate) fn has_segments(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut items| {
        items.any(|i| i.is_ok_and(|i| i.file_name().to_string_lossy().ends_with(".wal")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn write(writer: &mut Writer, index: &std::sync::Mutex<Index>, records: Vec<Record<'_>>) {
        let mut batch = Batch::default();
        for record in records {
            batch.push(record).unwrap();
        }
        writer.write(&mut batch, index).unwrap();
    }

    fn entries(index: &Index) -> Vec<(u64, Vec<u8>)> {
        index
            .locate(0, u64::MAX)
            .iter()
            .map(|(l, file, path)| (l.log_id.index, read_entry(file, path, l).unwrap()))
            .collect()
    }

    fn reopen(dir: &Path, writer: Writer) -> (Writer, std::sync::Mutex<Index>) {
        drop(writer);
        let (writer, index) = open(dir, 1).unwrap();
        (writer, std::sync::Mutex::new(index))
    }

    #[test]
    fn records_read_back_as_written_across_segments_truncations_and_purges() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut writer, index) = open(dir.path(), 1).unwrap();
        let index = std::sync::Mutex::new(index);
        let big = vec![b'x'; 1 << 20];
        for i in 1..=100 {
            write(&mut writer, &index, vec![Record::Entry(log_id(1, i), &big)]);
        }
        // 100 MiB: a second segment. The first was cut to its records when it was closed.
        assert_eq!(index.lock().unwrap().files.len(), 2);
        let first = std::fs::read(segment_path(dir.path(), 1)).unwrap();
        assert_eq!(first.last(), Some(&b'x'));
        write(
            &mut writer,
            &index,
            vec![
                Record::Truncate(91),
                Record::Entry(log_id(2, 91), b"{\"a\":1}"),
                Record::Vote(&Vote::new(2, 1)),
                Record::Committed(Some(log_id(2, 91))),
            ],
        );
        let before = entries(&index.lock().unwrap());
        assert_eq!(before.len(), 91);
        assert_eq!(before[90], (91, b"{\"a\":1}".to_vec()));
        let (mut writer, index) = reopen(dir.path(), writer);
        {
            let index = index.lock().unwrap();
            assert_eq!(entries(&index), before);
            assert_eq!(index.meta.vote, Some(Vote::new(2, 1)));
            assert_eq!(index.meta.committed, Some(log_id(2, 91)));
            assert_eq!(index.last(), Some(log_id(2, 91)));
        }
        // Purging past the first segment's entries deletes it.
        write(&mut writer, &index, vec![Record::Purge(log_id(1, 70))]);
        assert_eq!(index.lock().unwrap().files.len(), 1);
        assert!(!segment_path(dir.path(), 1).exists());
        let (_writer, index) = reopen(dir.path(), writer);
        let index = index.lock().unwrap();
        assert_eq!(index.first_index(), Some(71));
        assert_eq!(index.meta.purged, Some(log_id(1, 70)));
        assert_eq!(index.meta.vote, Some(Vote::new(2, 1)));
    }

    /// Entry 1, purged, then entries 2 to 80 of 1 MiB: two segments, the second's checkpoint
    /// saying "purged up to 1".
    fn purged_once_over_two_segments(dir: &Path) -> (Writer, std::sync::Mutex<Index>) {
        let (mut writer, index) = open(dir, 1).unwrap();
        let index = std::sync::Mutex::new(index);
        let big = vec![b'x'; 1 << 20];
        write(&mut writer, &index, vec![Record::Entry(log_id(1, 1), &big)]);
        write(&mut writer, &index, vec![Record::Purge(log_id(1, 1))]);
        for i in 2..=80 {
            write(&mut writer, &index, vec![Record::Entry(log_id(1, i), &big)]);
        }
        (writer, index)
    }

    #[test]
    fn a_log_whose_oldest_segments_a_later_purge_deleted_opens() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut writer, index) = purged_once_over_two_segments(dir.path());
        assert_eq!(index.lock().unwrap().files.len(), 2);
        // A purge in segment 2 past every entry of segment 1 deletes it: segment 2 now starts
        // at an entry after a gap, and the purge that explains the gap comes after it.
        write(&mut writer, &index, vec![Record::Purge(log_id(1, 75))]);
        assert!(!segment_path(dir.path(), 1).exists());
        let (_writer, index) = reopen(dir.path(), writer);
        let index = index.lock().unwrap();
        assert_eq!(index.first_index(), Some(76));
        assert_eq!(index.last(), Some(log_id(1, 80)));
        assert_eq!(index.meta.purged, Some(log_id(1, 75)));
    }

    #[test]
    fn a_gap_no_purge_covers_is_damage() {
        let dir = tempfile::TempDir::new().unwrap();
        let (writer, _) = purged_once_over_two_segments(dir.path());
        drop(writer);
        // Segment 1 lost by other means: nothing explains the entries it held.
        std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
        let err = open(dir.path(), 1).err().unwrap();
        assert!(
            matches!(&err, StoreError::Corrupt { path: p, .. } if *p == segment_path(dir.path(), 2)),
            "{err:?}"
        );
        assert!(err.to_string().contains("are missing"), "{err}");
    }

    /// Entries 1 to 3 (`{}`), then the log closed; the segment's path and its records' length.
    fn three_entries(dir: &Path) -> (PathBuf, usize) {
        let (mut writer, index) = open(dir, 1).unwrap();
        let index = std::sync::Mutex::new(index);
        for i in 1..=3 {
            write(
                &mut writer,
                &index,
                vec![Record::Entry(log_id(1, i), b"{}")],
            );
        }
        let len = writer.current.2 as usize;
        (segment_path(dir, 1), len)
    }

    #[test]
    fn an_incomplete_last_write_is_cut_off_but_damage_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let (path, len) = three_entries(dir.path());
        let whole = std::fs::read(&path).unwrap();
        // Preallocated: zeros follow the records.
        assert!(whole.len() as u64 > PREALLOCATE && whole[len..].iter().all(|b| *b == 0));

        // A crash in the middle of the last write, before the file was preallocated: its end
        // never reached the disk.
        std::fs::write(&path, &whole[..len - 3]).unwrap();
        let (writer, index) = open(dir.path(), 1).unwrap();
        assert_eq!(index.last(), Some(log_id(1, 2)));
        drop(writer);
        // The cut is made on disk: the next write follows entry 2.
        let (mut writer, index) = open(dir.path(), 1).unwrap();
        let index = std::sync::Mutex::new(index);
        write(
            &mut writer,
            &index,
            vec![Record::Entry(log_id(1, 3), b"{}")],
        );
        let len = writer.current.2 as usize;
        drop(writer);

        // A flipped byte in an earlier record is damage, named with the file.
        let mut damaged = std::fs::read(&path).unwrap();
        let entry_two = len - 2 * (HEADER + ENTRY_ID + 2) + HEADER + 2;
        damaged[entry_two] ^= 0x5a;
        std::fs::write(&path, &damaged).unwrap();
        let err = open(dir.path(), 1).err().unwrap();
        assert!(
            matches!(&err, StoreError::Corrupt { path: p, .. } if *p == path),
            "{err:?}"
        );
    }

    #[test]
    fn a_sector_a_crash_left_unwritten_cuts_the_write_off_for_good() {
        let dir = tempfile::TempDir::new().unwrap();
        let (path, len) = three_entries(dir.path());
        // A large fourth entry whose write reached the disk but for one sector in its middle.
        let (mut writer, index) = open(dir.path(), 1).unwrap();
        let index = std::sync::Mutex::new(index);
        let big = vec![b'x'; 8 * SECTOR];
        write(&mut writer, &index, vec![Record::Entry(log_id(1, 4), &big)]);
        drop(writer);
        let mut bytes = std::fs::read(&path).unwrap();
        let lost = (len / SECTOR + 3) * SECTOR;
        bytes[lost..lost + SECTOR].fill(0);
        std::fs::write(&path, &bytes).unwrap();

        let (mut writer, index) = open(dir.path(), 1).unwrap();
        assert_eq!(index.last(), Some(log_id(1, 3)));
        // The rest of the torn write is gone too: a short entry 4 in its place reads back,
        // and nothing of the old one after it.
        let index = std::sync::Mutex::new(index);
        write(
            &mut writer,
            &index,
            vec![Record::Entry(log_id(1, 4), b"{\"short\":1}")],
        );
        let (_writer, index) = reopen(dir.path(), writer);
        let index = index.lock().unwrap();
        assert_eq!(index.last(), Some(log_id(1, 4)));
        assert_eq!(entries(&index)[3].1, b"{\"short\":1}".to_vec());
    }

    #[test]
    fn a_lost_sector_before_the_last_write_is_damage() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut writer, index) = open(dir.path(), 1).unwrap();
        let index = std::sync::Mutex::new(index);
        let big = vec![b'x'; 8 * SECTOR];
        write(&mut writer, &index, vec![Record::Entry(log_id(1, 1), &big)]);
        write(
            &mut writer,
            &index,
            vec![Record::Entry(log_id(1, 2), b"{}")],
        );
        drop(writer);
        // Entry 2 was written after entry 1, so entry 1 was acknowledged: a sector of zeros
        // inside it is damage, not a torn last write.
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2 * SECTOR..3 * SECTOR].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let err = open(dir.path(), 1).err().unwrap();
        assert!(
            matches!(&err, StoreError::Corrupt { path: p, .. } if *p == path),
            "{err:?}"
        );
    }

    #[test]
    fn one_process_and_one_node_at_a_time() {
        let dir = tempfile::TempDir::new().unwrap();
        let (writer, _) = open(dir.path(), 1).unwrap();
        assert!(matches!(
            open(dir.path(), 1).err().unwrap(),
            StoreError::InUse { .. }
        ));
        drop(writer);
        assert!(matches!(
            open(dir.path(), 2).err().unwrap(),
            StoreError::WrongNode {
                stored: 1,
                configured: 2,
                ..
            }
        ));
    }
}
