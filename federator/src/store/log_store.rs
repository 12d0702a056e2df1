//! The Raft log in `<data_dir>/raft-log/` (see [`super::wal`]): entries, the vote, the
//! committed and the last purged log id. Every change that Raft relies on surviving a crash
//! (appended entries, the vote, truncation, purge) is fsynced before it is reported done. The
//! committed log id is only a hint for faster restarts: Raft reports it before applying every
//! entry, so it is kept in memory and written with the next append (or on close), rather than
//! with a write of its own on Raft's critical path.
//!
//! One writer thread performs every write, in the order submitted, several to one write and
//! fsync when they queue up. An append returns once its entries are readable, before they are
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
use tokio::sync::mpsc;

use super::db::io_error;
use super::error::StoreError;
use super::wal::{self, Batch, Index, Record};
use super::{NodeId, TypeConfig};

/// The tail keeps at most this many entries...
const TAIL_ENTRIES: usize = 1024;
/// ...and at most this many bytes of them (as encoded in the file).
const TAIL_BYTES: usize = 32 << 20;

type StorageResult<T> = Result<T, openraft::StorageError<NodeId>>;

/// The Raft log. Clones share the files and the tail (they are the log readers Raft hands to
/// its replication tasks).
#[derive(Clone)]
pub struct LogStore {
    dir: Arc<PathBuf>,
    index: Arc<Mutex<Index>>,
    committed: Arc<CommittedHint>,
    tail: Arc<Mutex<Tail>>,
    writes: std::sync::mpsc::Sender<Write>,
    /// Bytes of entries appended since the log was opened (see `compaction`).
    appended: Arc<std::sync::atomic::AtomicU64>,
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
    unsaved: Mutex<Option<Option<LogId<NodeId>>>>,
    /// Where the last hint goes when the log closes.
    writes: std::sync::mpsc::Sender<Write>,
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
    /// The writer writes it before it stops, so a clean restart applies nothing again.
    fn drop(&mut self) {
        if let Some(committed) = self.take() {
            let _ = self.writes.send(Write {
                op: Op::Committed(committed),
                done: Done::Nobody,
            });
        }
    }
}

impl LogStore {
    /// Opens the log in `dir`, refusing one written by another node, or damaged. A data
    /// directory from builds that kept the log in `raft.redb` beside it is carried over first.
    pub(crate) async fn open(
        dir: PathBuf,
        node_id: NodeId,
        open: mpsc::Sender<()>,
    ) -> Result<LogStore, StoreError> {
        let opening = dir.clone();
        let (writer, index) = tokio::task::spawn_blocking(move || {
            super::legacy_log::migrate(&opening, node_id)?;
            wal::open(&opening, node_id)
        })
        .await
        .map_err(|e| StoreError::storage(&dir, format!("opening the log failed: {e}")))??;
        let index = Arc::new(Mutex::new(index));
        let tail: Arc<Mutex<Tail>> = Arc::default();
        let (writes, queue) = std::sync::mpsc::channel();
        let writer_state = (index.clone(), tail.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || {
                write_in_order(writer, &writer_state.0, &writer_state.1, &queue);
                // The files are closed: `Store::shutdown` may return.
                drop(open);
            })
            .map_err(|e| StoreError::storage(&dir, format!("cannot start its writer: {e}")))?;
        Ok(LogStore {
            dir: Arc::new(dir),
            index,
            committed: Arc::new(CommittedHint {
                unsaved: Mutex::new(None),
                writes: writes.clone(),
            }),
            tail,
            writes,
            appended: Arc::default(),
        })
    }

    /// Bytes of entries appended since the log was opened, counted as they are submitted.
    pub(crate) fn appended_bytes(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.appended.clone()
    }

    /// Hands `write` to the writer thread.
    fn submit(&self, write: Write) -> Result<(), StoreError> {
        self.writes
            .send(write)
            .map_err(|_| StoreError::storage(self.dir.as_path(), "its writer has stopped"))
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
            .map_err(|_| StoreError::storage(self.dir.as_path(), "its writer has stopped"))?
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A write for the writer thread, and whom to tell when it is durable.
struct Write {
    op: Op,
    done: Done,
}

enum Op {
    /// Encoded entries, and the committed hint to store with them.
    Append {
        entries: Vec<(LogId<NodeId>, Vec<u8>)>,
        committed: Option<Option<LogId<NodeId>>>,
    },
    /// Removes the entries from this index on.
    Truncate(u64),
    /// Removes the entries up to and including this log id, and records it as purged.
    Purge(LogId<NodeId>),
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
}

enum Done {
    /// Raft's callback for an append.
    Flushed(LogFlushed<TypeConfig>),
    Waiter(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
    Nobody,
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
            Done::Nobody => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "could not write the committed log id on close");
                }
            }
        }
    }
}

/// The writer thread: performs writes in the order submitted, each batch that queued up
/// behind the previous one in one write and one fsync. Ends when every `LogStore` clone is
/// gone and the queue is empty.
fn write_in_order(
    mut writer: wal::Writer,
    index: &Mutex<Index>,
    tail: &Mutex<Tail>,
    queue: &std::sync::mpsc::Receiver<Write>,
) {
    let mut records = Batch::default();
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let mut durable = tail.lock().unwrap_or_else(PoisonError::into_inner).durable;
        let encoded = batch.iter().try_for_each(|write| match &write.op {
            Op::Append { entries, committed } => {
                for (log_id, bytes) in entries {
                    records.push(Record::Entry(*log_id, bytes))?;
                    durable = Some(log_id.index);
                }
                match committed {
                    Some(committed) => records.push(Record::Committed(*committed)),
                    None => Ok(()),
                }
            }
            Op::Truncate(from) => {
                durable = durable.map(|d| d.min(from.saturating_sub(1)));
                records.push(Record::Truncate(*from))
            }
            Op::Purge(log_id) => records.push(Record::Purge(*log_id)),
            Op::Vote(vote) => records.push(Record::Vote(vote)),
            Op::Committed(committed) => records.push(Record::Committed(*committed)),
        });
        let written = match encoded {
            Ok(()) => writer.write(&mut records, index),
            Err(e) => {
                records = Batch::default();
                Err(StoreError::storage(
                    writer_dir(index),
                    format!("encode: {e}"),
                ))
            }
        };
        match &written {
            Ok(()) => {
                let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                tail.durable = durable;
                tail.trim();
            }
            // The file may not hold what the tail does: read everything from the file.
            Err(e) => {
                tail.lock().unwrap_or_else(PoisonError::into_inner).clear();
                tracing::error!(error = %e, "the Raft log could not be written");
            }
        }
        for write in batch {
            write.done.report(match &written {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::storage(writer_dir(index), e.to_string())),
            });
        }
    }
}

fn writer_dir(index: &Mutex<Index>) -> PathBuf {
    index
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .dir()
        .to_path_buf()
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
                return read_entries(&self.index, start, end)
                    .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e));
            };
            let mut entries = if start < first {
                read_entries(&self.index, start, end.min(first))
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

/// The entries of `[start, end)` as the files have them.
fn read_entries(
    index: &Mutex<Index>,
    start: u64,
    end: u64,
) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
    let located = index
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .locate(start, end);
    located
        .iter()
        .map(|(location, file, path)| {
            let json = wal::read_entry(file, path, location)?;
            serde_json::from_slice(&json).map_err(|e| {
                StoreError::corrupt(path, format!("log entry {}: {e}", location.log_id.index))
            })
        })
        .collect()
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let (last_purged_log_id, last) = {
            let index = self.index();
            (index.meta.purged, index.last())
        };
        // Appends still being written are in the tail.
        let submitted = self.tail().entries.back().map(|(e, _)| e.log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: submitted.or(last).or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        // After every append submitted before it: a saved vote implies a durable log.
        self.write(Op::Vote(*vote))
            .await
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.index().meta.vote)
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
        Ok(unsaved.unwrap_or(self.index().meta.committed))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut appended = Vec::new();
        let encoded = entries
            .into_iter()
            .map(|entry| {
                let bytes = serde_json::to_vec(&entry).map_err(|e| {
                    StoreError::storage(self.dir.as_path(), format!("encode a log entry: {e}"))
                })?;
                let log_id = entry.log_id;
                appended.push((entry, bytes.len()));
                Ok((log_id, bytes))
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let bytes: usize = encoded.iter().map(|(_, b)| b.len()).sum();
        self.appended
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        // Readable at once; durable when the callback says so.
        self.tail().push(appended);
        self.submit(Write {
            op: Op::Append {
                entries: encoded,
                committed: self.committed.take(),
            },
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
        self.tail().purge(log_id.index);
        self.write(Op::Purge(log_id))
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

    fn entry_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
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
        let mut log = LogStore::open(dir.path().join("raft-log"), 1, open)
            .await
            .unwrap();
        let check = |log: &LogStore| {
            let log = log.clone();
            async move {
                let mut log = log;
                for start in 0..14 {
                    for end in start..14 {
                        let from_file = read_entries(&log.index, start, end).unwrap();
                        assert_eq!(
                            log.try_get_log_entries(start..end).await.unwrap(),
                            from_file
                        );
                        let from_file = read_entries(&log.index, start, u64::MAX).unwrap();
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
        let mut log = LogStore::open(dir.path().join("raft-log"), 1, open)
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
                    entries: vec![(
                        entry_id(index),
                        serde_json::to_vec(&entries(1, index..=index)[0]).unwrap(),
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
        assert_eq!(read_entries(&log.index, 0, u64::MAX).unwrap().len(), 40);
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
