//! Carries a Raft log over from `<data_dir>/raft.redb`, where builds before the segment log
//! kept it, into `<data_dir>/raft-log/`: entries, vote, committed and purged ids as they were.
//! The new log is written beside the old one and renamed into place whole, so a crash during
//! the copy leaves the old file to copy again; the old file is then kept as
//! `raft.redb.migrated`.

use std::path::Path;

use openraft::{Entry, LogId, Vote};
use redb::{ReadableTable, TableDefinition};

use super::error::StoreError;
use super::wal::{self, Batch, Record};
use super::{NodeId, TypeConfig};

const OLD_FILE: &str = "raft.redb";
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Copies the old log into `dir` when `dir` holds no log yet and the old file exists.
pub(crate) fn migrate(dir: &Path, node_id: NodeId) -> Result<(), StoreError> {
    let Some(data_dir) = dir.parent() else {
        return Ok(());
    };
    let old = data_dir.join(OLD_FILE);
    if wal::has_segments(dir) || !old.exists() {
        return Ok(());
    }
    let copying = dir.with_extension("migrating");
    if copying.exists() {
        std::fs::remove_dir_all(&copying)
            .map_err(|e| StoreError::storage(&copying, format!("remove: {e}")))?;
    }
    let (meta, entries) = read_old(&old, node_id)?;
    {
        let (mut writer, index) = wal::open(&copying, node_id)?;
        let index = std::sync::Mutex::new(index);
        let mut batch = Batch::default();
        let encode = |e: serde_json::Error| StoreError::storage(&old, format!("re-encode: {e}"));
        if let Some(purged) = meta.purged {
            batch.push(Record::Purge(purged)).map_err(encode)?;
        }
        if let Some(vote) = &meta.vote {
            batch.push(Record::Vote(vote)).map_err(encode)?;
        }
        for (log_id, bytes) in &entries {
            batch.push(Record::Entry(*log_id, bytes)).map_err(encode)?;
        }
        batch
            .push(Record::Committed(meta.committed))
            .map_err(encode)?;
        writer.write(&mut batch, &index)?;
    }
    if dir.exists() {
        // Only the lock file of an earlier attempt that found nothing to read.
        std::fs::remove_dir_all(dir)
            .map_err(|e| StoreError::storage(dir, format!("remove: {e}")))?;
    }
    std::fs::rename(&copying, dir).map_err(|e| StoreError::storage(dir, format!("rename: {e}")))?;
    std::fs::rename(&old, old.with_extension("redb.migrated"))
        .map_err(|e| StoreError::storage(&old, format!("rename: {e}")))?;
    tracing::info!(from = %old.display(), to = %dir.display(), entries = entries.len(), "carried the Raft log over to its new format");
    Ok(())
}

type OldLog = (wal::Meta, Vec<(LogId<NodeId>, Vec<u8>)>);

fn read_old(path: &Path, node_id: NodeId) -> Result<OldLog, StoreError> {
    let error = |e: redb::Error| StoreError::storage(path, e);
    let corrupt =
        |what: &str, e: serde_json::Error| StoreError::corrupt(path, format!("{what}: {e}"));
    let db = redb::Database::open(path).map_err(|e| error(e.into()))?;
    let txn = db.begin_read().map_err(|e| error(e.into()))?;
    let meta_table = txn.open_table(META).map_err(|e| error(e.into()))?;
    let get = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(meta_table
            .get(key)
            .map_err(|e| error(e.into()))?
            .map(|v| v.value().to_vec()))
    };
    let stored: Option<NodeId> = get("node_id")?
        .map(|b| serde_json::from_slice(&b).map_err(|e| corrupt("node_id", e)))
        .transpose()?;
    if let Some(stored) = stored.filter(|s| *s != node_id) {
        return Err(StoreError::WrongNode {
            path: path.to_path_buf(),
            stored,
            configured: node_id,
        });
    }
    let vote: Option<Vote<NodeId>> = get("vote")?
        .map(|b| serde_json::from_slice(&b).map_err(|e| corrupt("vote", e)))
        .transpose()?;
    let committed: Option<LogId<NodeId>> = get("committed")?
        .map(|b| {
            serde_json::from_slice::<Option<LogId<NodeId>>>(&b).map_err(|e| corrupt("committed", e))
        })
        .transpose()?
        .flatten();
    let purged: Option<LogId<NodeId>> = get("last_purged")?
        .map(|b| serde_json::from_slice(&b).map_err(|e| corrupt("last_purged", e)))
        .transpose()?;
    let log = txn.open_table(LOG).map_err(|e| error(e.into()))?;
    let mut entries = Vec::new();
    for row in log.iter().map_err(|e| error(e.into()))? {
        let (key, value) = row.map_err(|e| error(e.into()))?;
        let entry: Entry<TypeConfig> = serde_json::from_slice(value.value())
            .map_err(|e| corrupt(&format!("log entry {}", key.value()), e))?;
        entries.push((entry.log_id, value.value().to_vec()));
    }
    Ok((
        wal::Meta {
            node_id,
            vote,
            committed,
            purged,
        },
        entries,
    ))
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};
    use tokio::sync::mpsc;

    use super::super::log_store::LogStore;
    use super::*;

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(3, 1), index)
    }

    /// A log as builds before the segment log wrote it: entries 5 to 9 after a purge at 4.
    fn write_old_log(path: &Path) -> Vec<Entry<TypeConfig>> {
        let db = redb::Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        let entries: Vec<Entry<TypeConfig>> = (5..10)
            .map(|i| Entry {
                log_id: log_id(i),
                payload: EntryPayload::Blank,
            })
            .collect();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("node_id", json(&1u64).as_slice()).unwrap();
            meta.insert("vote", json(&Vote::new(3, 1)).as_slice())
                .unwrap();
            meta.insert("committed", json(&Some(log_id(8))).as_slice())
                .unwrap();
            meta.insert("last_purged", json(&log_id(4)).as_slice())
                .unwrap();
            let mut log = txn.open_table(LOG).unwrap();
            for entry in &entries {
                log.insert(
                    entry.log_id.index,
                    serde_json::to_vec(entry).unwrap().as_slice(),
                )
                .unwrap();
            }
        }
        txn.commit().unwrap();
        entries
    }

    fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    #[tokio::test]
    async fn a_redb_log_is_carried_over_whole() {
        let data = tempfile::TempDir::new().unwrap();
        let entries = write_old_log(&data.path().join(OLD_FILE));
        let (open, _) = mpsc::channel(1);
        let mut log = LogStore::open(data.path().join("raft-log"), 1, open)
            .await
            .unwrap();
        assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), entries);
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(8)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(4)));
        assert_eq!(state.last_log_id, Some(log_id(9)));
        assert!(!data.path().join(OLD_FILE).exists());
        assert!(data.path().join("raft.redb.migrated").exists());
    }
}
