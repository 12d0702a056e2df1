//! The Raft log in `<data_dir>/raft.redb`: entries, the vote, the committed and the last
//! purged log id. Every change that Raft relies on surviving a crash (appended entries, the
//! vote, truncation, purge) is committed with redb's default `Durability::Immediate` — an fsync
//! — before it is reported done. The committed log id is only a hint for faster restarts: Raft
//! reports it before applying every entry, so it is kept in memory and written with the next
//! append (or on close), rather than with a write transaction of its own on Raft's critical path.
//!
//! One writer thread performs every write, in the order submitted, several to a transaction
//! when they queue up. An append returns once its entries are readable, before they are
//! durable; Raft hears of the flush through the append's callback. The leader uses that to
//! replicate while it writes (see `vendor/openraft/HANSA-PATCH.md`), and relies on the order:
//! a vote saved after an append is durable only with the append.
//!
//! The newest entries are also kept decoded in memory ([`Tail`]): replication to every
//! follower and the state machine read the entries just appended, and would otherwise read
//! them back from the file and decode them once per reader.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, Vote};
use redb::{Durability, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::db::{blocking, decode, encode, io_error, DbFile};
use super::error::StoreError;
use super::{NodeId, TypeConfig};

/// Log entries by index, JSON-encoded `Entry<TypeConfig>`.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// The vote, committed and last purged log ids, and the owning node id.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const NODE_ID: &str = "node_id";

/// The tail keeps at most this many entries...
const TAIL_ENTRIES: usize = 1024;
/// ...and at most this many bytes of them (as encoded in the file).
const TAIL_BYTES: usize = 32 << 20;

type StorageResult<T> = Result<T, openraft::StorageError<NodeId>>;

/// The redb-backed Raft log. Clones share the file and the tail (they are the log readers
/// Raft hands to its replication tasks).
#[derive(Clone)]
pub struct LogStore {
    file: Arc<DbFile>,
    committed: Arc<CommittedHint>,
    tail: Arc<Mutex<Tail>>,
    writes: std::sync::mpsc::Sender<Write>,
}

/// The newest entries of the log, contiguous, each as encoded in the file. Appends enter when
/// they are submitted, before they are durable; entries leave before a truncation or purge
/// removes them from the file, and the bound only evicts entries that are durable. So the log
/// is the file up to the tail's first entry, then the tail.
#[derive(Default)]
struct Tail {
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
    /// The last index whose append is durable.
    durable: Option<u64>,
}

impl Tail {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    /// Adds entries that follow the tail (anything else starts it over).
    fn push(&mut self, entries: impl IntoIterator<Item = (Entry<TypeConfig>, usize)>) {
        for (entry, size) in entries {
            if self
                .last_index()
                .is_some_and(|last| last + 1 != entry.log_id.index)
            {
                self.clear();
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        self.trim();
    }

    /// Evicts the oldest durable entries while the tail is over its bound.
    fn trim(&mut self) {
        while self.entries.len() > TAIL_ENTRIES || self.bytes > TAIL_BYTES {
            let durable = self.durable;
            if self.first_index().is_none_or(|first| Some(first) > durable) {
                break;
            }
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// Drops the entries from `index` on.
    fn truncate(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Drops the entries up to and including `index`.
    fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries in `range` from `start` on (the log has nothing past the tail's end).
    fn get_from(&self, start: u64, range: &impl RangeBounds<u64>) -> Vec<Entry<TypeConfig>> {
        let skip = self
            .first_index()
            .map_or(0, |first| start.saturating_sub(first));
        self.entries
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take_while(|(e, _)| range.contains(&e.log_id.index))
            .map(|(e, _)| e.clone())
            .collect()
    }
}

/// The committed log id Raft reported last, while no write has stored it yet.
struct CommittedHint {
    file: Arc<DbFile>,
    unsaved: Mutex<Option<Option<LogId<NodeId>>>>,
}

impl CommittedHint {
    fn take(&self) -> Option<Option<LogId<NodeId>>> {
        self.unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for CommittedHint {
    fn drop(&mut self) {
        let Some(committed) = self.take() else {
            return;
        };
        let file = &self.file;
        let written = encode(&file.path, COMMITTED, &committed).and_then(|bytes| {
            let mut txn = file.db.begin_write().map_err(|e| file.error(e))?;
            // `DbFile` commits durably when it closes, right after this.
            txn.set_durability(Durability::None);
            txn.open_table(META)
                .map_err(|e| file.error(e))?
                .insert(COMMITTED, bytes.as_slice())
                .map_err(|e| file.error(e))?;
            txn.commit().map_err(|e| file.error(e))
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not write the committed log id on close");
        }
    }
}

impl LogStore {
    /// Opens the log, refusing a file written by another node or one whose contents do not
    /// decode or do not form a contiguous log.
    pub(crate) async fn open(
        path: PathBuf,
        node_id: NodeId,
        open: mpsc::Sender<()>,
    ) -> Result<LogStore, StoreError> {
        let file = DbFile::open(path, open).await?;
        blocking(&file, move |file| {
            let txn = file.db.begin_write().map_err(|e| file.error(e))?;
            {
                txn.open_table(LOG).map_err(|e| file.error(e))?;
                let mut meta = txn.open_table(META).map_err(|e| file.error(e))?;
                let stored = match meta.get(NODE_ID).map_err(|e| file.error(e))? {
                    Some(v) => Some(decode::<NodeId>(file, NODE_ID, v.value())?),
                    None => None,
                };
                match stored {
                    Some(stored) if stored != node_id => {
                        return Err(StoreError::WrongNode {
                            path: file.path.clone(),
                            stored,
                            configured: node_id,
                        })
                    }
                    Some(_) => {}
                    None => {
                        let bytes = encode(&file.path, NODE_ID, &node_id)?;
                        meta.insert(NODE_ID, bytes.as_slice())
                            .map_err(|e| file.error(e))?;
                    }
                }
            }
            txn.commit().map_err(|e| file.error(e))?;
            verify(file)
        })
        .await?;
        let committed = Arc::new(CommittedHint {
            file: file.clone(),
            unsaved: Mutex::new(None),
        });
        let tail: Arc<Mutex<Tail>> = Arc::default();
        let (writes, queue) = std::sync::mpsc::channel();
        let writer = (file.clone(), tail.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_in_order(&writer.0, &writer.1, &queue))
            .map_err(|e| {
                StoreError::storage(&file.path, format!("cannot start its writer: {e}"))
            })?;
        Ok(LogStore {
            file,
            committed,
            tail,
            writes,
        })
    }

    /// Hands `write` to the writer thread.
    fn submit(&self, write: Write) -> Result<(), StoreError> {
        self.writes
            .send(write)
            .map_err(|_| StoreError::storage(&self.file.path, "its writer has stopped"))
    }

    /// Submits a write and waits until it is durable.
    async fn write(&self, op: Op) -> Result<(), StoreError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.submit(Write {
            op,
            done: Done::Waiter(done),
        })?;
        result
            .await
            .map_err(|_| StoreError::storage(&self.file.path, "its writer has stopped"))?
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        read_meta(&self.file, key)
    }
}

/// A write for the writer thread, and whom to tell when it is durable.
struct Write {
    op: Op,
    done: Done,
}

enum Op {
    /// Encoded entries by index, and the committed hint to store with them.
    Append {
        rows: Vec<(u64, Vec<u8>)>,
        committed: Option<Vec<u8>>,
    },
    /// Removes the entries from this index on.
    Truncate(u64),
    /// Removes the entries up to and including this index, and records the purged log id.
    Purge { upto: u64, log_id: Vec<u8> },
    /// Sets a `META` key.
    Meta { key: &'static str, value: Vec<u8> },
}

enum Done {
    /// Raft's callback for an append.
    Flushed(LogFlushed<TypeConfig>),
    Waiter(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

impl Done {
    fn report(self, result: Result<(), StoreError>) {
        match self {
            Done::Flushed(callback) => {
                callback.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())))
            }
            // The waiter may have given up (Raft shutting down); the write stands.
            Done::Waiter(waiter) => {
                let _ = waiter.send(result);
            }
        }
    }
}

/// The writer thread: performs writes in the order submitted, each batch that queued up
/// behind the previous commit in one durable transaction. Ends when every `LogStore` clone is
/// gone and the queue is empty.
fn write_in_order(file: &DbFile, tail: &Mutex<Tail>, queue: &std::sync::mpsc::Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let durable = tail.lock().unwrap_or_else(PoisonError::into_inner).durable;
        let written = write_batch(file, &batch, durable);
        let failed = written.is_err();
        match &written {
            Ok(durable) => {
                let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                tail.durable = *durable;
                tail.trim();
            }
            // The file may not hold what the tail does: read everything from the file.
            Err(_) => tail.lock().unwrap_or_else(PoisonError::into_inner).clear(),
        }
        for write in batch {
            write.done.report(match &written {
                Ok(_) => Ok(()),
                Err(e) => Err(StoreError::storage(&file.path, e.to_string())),
            });
        }
        if failed {
            tracing::error!(path = %file.path.display(), "the Raft log could not be written");
        }
    }
}

/// One durable transaction for `batch`; the last durable index after it.
fn write_batch(
    file: &DbFile,
    batch: &[Write],
    mut durable: Option<u64>,
) -> Result<Option<u64>, StoreError> {
    let txn = file.db.begin_write().map_err(|e| file.error(e))?;
    {
        let mut log = txn.open_table(LOG).map_err(|e| file.error(e))?;
        let mut meta = txn.open_table(META).map_err(|e| file.error(e))?;
        for write in batch {
            match &write.op {
                Op::Append { rows, committed } => {
                    for (index, bytes) in rows {
                        log.insert(*index, bytes.as_slice())
                            .map_err(|e| file.error(e))?;
                    }
                    if let Some(committed) = committed {
                        meta.insert(COMMITTED, committed.as_slice())
                            .map_err(|e| file.error(e))?;
                    }
                    if let Some((last, _)) = rows.last() {
                        durable = Some(*last);
                    }
                }
                Op::Truncate(from) => {
                    log.retain_in(*from.., |_, _| false)
                        .map_err(|e| file.error(e))?;
                    durable = durable.map(|d| d.min(from.saturating_sub(1)));
                }
                Op::Purge { upto, log_id } => {
                    // One transaction: the purged id and the removal are never seen apart.
                    meta.insert(LAST_PURGED, log_id.as_slice())
                        .map_err(|e| file.error(e))?;
                    log.retain_in(..=*upto, |_, _| false)
                        .map_err(|e| file.error(e))?;
                }
                Op::Meta { key, value } => {
                    meta.insert(*key, value.as_slice())
                        .map_err(|e| file.error(e))?;
                }
            }
        }
    }
    // Durability::Immediate (the default): fsynced when commit returns.
    txn.commit().map_err(|e| file.error(e))?;
    Ok(durable)
}

fn read_meta<T: DeserializeOwned>(file: &DbFile, key: &str) -> Result<Option<T>, StoreError> {
    let txn = file.db.begin_read().map_err(|e| file.error(e))?;
    let table = txn.open_table(META).map_err(|e| file.error(e))?;
    let value = table.get(key).map_err(|e| file.error(e))?;
    value.map(|v| decode(file, key, v.value())).transpose()
}

/// Decodes everything once at open: a log that cannot be read in full is not served at all.
fn verify(file: &DbFile) -> Result<(), StoreError> {
    read_meta::<Vote<NodeId>>(file, VOTE)?;
    read_meta::<Option<LogId<NodeId>>>(file, COMMITTED)?;
    let last_purged = read_meta::<LogId<NodeId>>(file, LAST_PURGED)?;
    let txn = file.db.begin_read().map_err(|e| file.error(e))?;
    let table = txn.open_table(LOG).map_err(|e| file.error(e))?;
    let mut previous = last_purged.map(|l| l.index);
    for row in table.iter().map_err(|e| file.error(e))? {
        let (key, value) = row.map_err(|e| file.error(e))?;
        let index = key.value();
        let entry: Entry<TypeConfig> = decode(file, &format!("log entry {index}"), value.value())?;
        if entry.log_id.index != index {
            return Err(file.corrupt(format!(
                "log entry stored at index {index} says it is entry {}",
                entry.log_id.index
            )));
        }
        if let Some(previous) = previous {
            if index != previous + 1 {
                return Err(file.corrupt(format!("the log jumps from index {previous} to {index}")));
            }
        }
        previous = Some(index);
    }
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        // The log is the file up to the tail's first entry, then the tail. The writer may
        // evict from the tail's front while the file is read; then read again.
        loop {
            let Some(first) = self.tail().first_index() else {
                return read_entries(&self.file, start..end)
                    .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e));
            };
            let mut entries = if start < first {
                read_entries(&self.file, start..end.min(first))
                    .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?
            } else {
                Vec::new()
            };
            let tail = self.tail();
            if tail.first_index() != Some(first) {
                continue;
            }
            entries.extend(tail.get_from(start.max(first), &(start..end)));
            return Ok(entries);
        }
    }
}

/// The entries in `range` as the file has them.
fn read_entries(
    file: &DbFile,
    range: impl RangeBounds<u64>,
) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
    let txn = file.db.begin_read().map_err(|e| file.error(e))?;
    let table = txn.open_table(LOG).map_err(|e| file.error(e))?;
    let mut entries = Vec::new();
    for row in table.range(range).map_err(|e| file.error(e))? {
        let (key, value) = row.map_err(|e| file.error(e))?;
        entries.push(decode(
            file,
            &format!("log entry {}", key.value()),
            value.value(),
        )?);
    }
    Ok(entries)
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let read = || -> Result<LogState<TypeConfig>, StoreError> {
            let last_purged_log_id = self.read_meta::<LogId<NodeId>>(LAST_PURGED)?;
            let file = &self.file;
            let txn = file.db.begin_read().map_err(|e| file.error(e))?;
            let table = txn.open_table(LOG).map_err(|e| file.error(e))?;
            let last = match table.last().map_err(|e| file.error(e))? {
                Some((key, value)) => {
                    let entry: Entry<TypeConfig> =
                        decode(file, &format!("log entry {}", key.value()), value.value())?;
                    Some(entry.log_id)
                }
                None => None,
            };
            // Appends still being written are in the tail.
            let submitted = self.tail().entries.back().map(|(e, _)| e.log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id: submitted.or(last).or(last_purged_log_id),
            })
        };
        read().map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let value = encode(&self.file.path, VOTE, vote)
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        // After every append submitted before it: a saved vote implies a durable log.
        self.write(Op::Meta { key: VOTE, value })
            .await
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta(VOTE)
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        *self
            .committed
            .unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        let unsaved = *self
            .committed
            .unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(committed) = unsaved {
            return Ok(committed);
        }
        self.read_meta::<Option<LogId<NodeId>>>(COMMITTED)
            .map(Option::flatten)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let path = self.file.path.clone();
        let mut appended = Vec::new();
        let rows = entries
            .into_iter()
            .map(|entry| {
                let bytes = encode(&path, "log entry", &entry)?;
                let index = entry.log_id.index;
                appended.push((entry, bytes.len()));
                Ok((index, bytes))
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let committed = self
            .committed
            .take()
            .map(|committed| encode(&path, COMMITTED, &committed))
            .transpose()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Readable at once; durable when the callback says so.
        self.tail().push(appended);
        self.submit(Write {
            op: Op::Append { rows, committed },
            done: Done::Flushed(callback),
        })
        .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.tail().truncate(log_id.index);
        self.write(Op::Truncate(log_id.index))
            .await
            .map_err(|e| io_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let bytes = encode(&self.file.path, LAST_PURGED, &log_id)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.tail().purge(log_id.index);
        self.write(Op::Purge {
            upto: log_id.index,
            log_id: bytes,
        })
        .await
        .map_err(|e| io_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};
    use tempfile::TempDir;

    use super::*;

    fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry<TypeConfig>> {
        indexes
            .map(|index| Entry {
                log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    async fn append(log: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
        log.blocking_append(entries).await.unwrap();
    }

    /// Every range read through the tail equals the file's, across appends, a conflicting
    /// truncation, a purge and a tail that outgrew its bound.
    #[tokio::test]
    async fn the_tail_answers_as_the_file_does() {
        let dir = TempDir::new().unwrap();
        let (open, _) = mpsc::channel(1);
        let mut log = LogStore::open(dir.path().join("raft.redb"), 1, open)
            .await
            .unwrap();
        let check = |log: &LogStore| {
            let log = log.clone();
            async move {
                let mut log = log;
                for start in 0..14 {
                    for end in start..14 {
                        let from_file = read_entries(&log.file, start..end).unwrap();
                        assert_eq!(
                            log.try_get_log_entries(start..end).await.unwrap(),
                            from_file
                        );
                        let from_file = read_entries(&log.file, start..).unwrap();
                        assert_eq!(log.try_get_log_entries(start..).await.unwrap(), from_file);
                    }
                }
            }
        };
        append(&mut log, entries(1, 1..=10)).await;
        assert_eq!(log.tail().first_index(), Some(1));
        check(&log).await;
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 6))
            .await
            .unwrap();
        append(&mut log, entries(2, 6..=8)).await;
        check(&log).await;
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await
            .unwrap();
        check(&log).await;
        assert_eq!(log.tail().first_index(), Some(4));
        // Past its bound the tail keeps the newest entries; older ones come from the file.
        append(&mut log, entries(2, 9..=(TAIL_ENTRIES as u64 + 20))).await;
        assert_eq!(log.tail().first_index(), Some(21));
        check(&log).await;
    }

    /// An append is readable as soon as it is submitted, and a vote saved after it is durable
    /// only with it: the writer keeps the order writes were submitted in.
    #[tokio::test]
    async fn writes_are_durable_in_the_order_submitted() {
        let dir = TempDir::new().unwrap();
        let (open, _) = mpsc::channel(1);
        let mut log = LogStore::open(dir.path().join("raft.redb"), 1, open)
            .await
            .unwrap();
        append(&mut log, entries(1, 1..=3)).await;
        let mut pending = Vec::new();
        for index in 4..=40 {
            let entry = entries(1, index..=index).remove(0);
            let (done, flushed) = tokio::sync::oneshot::channel();
            log.tail().push([(entry, 10)]);
            log.submit(Write {
                op: Op::Append {
                    rows: vec![(
                        index,
                        encode(&log.file.path, "entry", &entries(1, index..=index)[0]).unwrap(),
                    )],
                    committed: None,
                },
                done: Done::Waiter(done),
            })
            .unwrap();
            pending.push(flushed);
        }
        // Readable before anyone waited for the writes.
        let read = log.try_get_log_entries(2..41).await.unwrap();
        assert_eq!(
            read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            (2..41).collect::<Vec<_>>()
        );
        let vote = Vote::new(2, 1);
        log.save_vote(&vote).await.unwrap();
        for mut flushed in pending {
            assert!(
                matches!(flushed.try_recv(), Ok(Ok(()))),
                "an append submitted before the vote is not durable yet"
            );
        }
        assert_eq!(read_entries(&log.file, ..).unwrap().len(), 40);
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(
            log.get_log_state()
                .await
                .unwrap()
                .last_log_id
                .map(|l| l.index),
            Some(40)
        );
    }
}
