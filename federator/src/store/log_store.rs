//! The Raft log in `<data_dir>/raft.redb`: entries, the vote, the committed and the last
//! purged log id. Every change that Raft relies on surviving a crash (appended entries, the
//! vote, truncation, purge) is committed with redb's default `Durability::Immediate` — an fsync
//! — before it is reported done. The committed log id is only a hint for faster restarts: Raft
//! reports it before applying every entry, so it is kept in memory and written with the next
//! append (or on close), rather than with a write transaction of its own on Raft's critical path.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, Vote};
use redb::{Durability, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
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

type StorageResult<T> = Result<T, openraft::StorageError<NodeId>>;

/// The redb-backed Raft log. Clones share the file (they are the log readers Raft hands to
/// its replication tasks).
#[derive(Clone)]
pub struct LogStore {
    file: Arc<DbFile>,
    committed: Arc<CommittedHint>,
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
        Ok(LogStore { file, committed })
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        read_meta(&self.file, key)
    }

    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let bytes = encode(&self.file.path, key, value)?;
        blocking(&self.file, move |file| {
            let mut txn = file.db.begin_write().map_err(|e| file.error(e))?;
            txn.set_durability(durability);
            txn.open_table(META)
                .map_err(|e| file.error(e))?
                .insert(key, bytes.as_slice())
                .map_err(|e| file.error(e))?;
            txn.commit().map_err(|e| file.error(e))
        })
        .await
    }
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
        let read = || -> Result<Vec<Entry<TypeConfig>>, StoreError> {
            let file = &self.file;
            let txn = file.db.begin_read().map_err(|e| file.error(e))?;
            let table = txn.open_table(LOG).map_err(|e| file.error(e))?;
            let mut entries = Vec::new();
            for row in table.range(range.clone()).map_err(|e| file.error(e))? {
                let (key, value) = row.map_err(|e| file.error(e))?;
                entries.push(decode(
                    file,
                    &format!("log entry {}", key.value()),
                    value.value(),
                )?);
            }
            Ok(entries)
        };
        read().map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
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
            Ok(LogState {
                last_purged_log_id,
                last_log_id: last.or(last_purged_log_id),
            })
        };
        read().map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.write_meta(VOTE, vote, Durability::Immediate)
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
        let rows = entries
            .into_iter()
            .map(|entry| {
                let bytes = encode(&path, "log entry", &entry)?;
                Ok((entry.log_id.index, bytes))
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let committed = self
            .committed
            .take()
            .map(|committed| encode(&path, COMMITTED, &committed))
            .transpose()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let written = blocking(&self.file, move |file| {
            let txn = file.db.begin_write().map_err(|e| file.error(e))?;
            {
                let mut log = txn.open_table(LOG).map_err(|e| file.error(e))?;
                for (index, bytes) in &rows {
                    log.insert(*index, bytes.as_slice())
                        .map_err(|e| file.error(e))?;
                }
                if let Some(committed) = &committed {
                    txn.open_table(META)
                        .map_err(|e| file.error(e))?
                        .insert(COMMITTED, committed.as_slice())
                        .map_err(|e| file.error(e))?;
                }
            }
            // Durability::Immediate (the default): fsynced when commit returns.
            txn.commit().map_err(|e| file.error(e))
        })
        .await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        blocking(&self.file, move |file| {
            let txn = file.db.begin_write().map_err(|e| file.error(e))?;
            txn.open_table(LOG)
                .map_err(|e| file.error(e))?
                .retain_in(log_id.index.., |_, _| false)
                .map_err(|e| file.error(e))?;
            txn.commit().map_err(|e| file.error(e))
        })
        .await
        .map_err(|e| io_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let bytes = encode(&self.file.path, LAST_PURGED, &log_id)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        blocking(&self.file, move |file| {
            let txn = file.db.begin_write().map_err(|e| file.error(e))?;
            {
                // One transaction: the purged id and the removal are never seen apart.
                let mut meta = txn.open_table(META).map_err(|e| file.error(e))?;
                meta.insert(LAST_PURGED, bytes.as_slice())
                    .map_err(|e| file.error(e))?;
                txn.open_table(LOG)
                    .map_err(|e| file.error(e))?
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(|e| file.error(e))?;
            }
            txn.commit().map_err(|e| file.error(e))
        })
        .await
        .map_err(|e| io_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))
    }
}
