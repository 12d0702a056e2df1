//! The applied state, kept in memory, and its snapshots in `<data_dir>/state.redb`.
//!
//! The state machine lives in memory (the mirror that readers use); the file holds only the
//! current snapshot (table `snapshot`: its meta and the state as one JSON document) and, for a
//! control plane restored from a backup, the state it starts from (`meta`/`base`). A restart
//! loads the snapshot (or the base) and Raft re-applies the log entries after it, which it
//! keeps until a newer snapshot covers them: snapshots are fsynced before Raft purges the log.
//! So `apply` does no I/O at all, as in Consul's and Nomad's state stores, instead of writing
//! every changed object again beside the log that already holds it.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StoredMembership,
};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::db::{blocking, decode, encode, io_error, DbFile};
use super::error::StoreError;
use hansa_core::WorkloadKey;

use super::state::{Command, CommandResponse, FederationState, ObjectKey};
use super::{NodeId, TypeConfig};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
/// Written by builds that stored every applied object; dropped on open (the snapshot and the
/// Raft log hold the same state).
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");

/// `meta`: the state a restored control plane starts from, before its first log entry.
const BASE: &str = "base";
const SNAPSHOT_META: &str = "meta";
const SNAPSHOT_DATA: &str = "data";

type StorageResult<T> = Result<T, openraft::StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// The state as of a log id. Kept together behind one lock so a snapshot is consistent.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Applied {
    pub(crate) last_applied: Option<LogId<NodeId>>,
    pub(crate) last_membership: Membership,
    pub(crate) state: FederationState,
}

/// What the readers share with the state machine.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) applied: Arc<RwLock<Applied>>,
    /// The last applied log index, bumped after every applied batch.
    pub(crate) applied_index: Arc<watch::Sender<u64>>,
    /// Who wants to hear which workloads changed (see [`ChangeFeed`]).
    feeds: Arc<Mutex<Vec<Weak<ChangeFeed>>>>,
    /// The size of the current snapshot's data (see `compaction`).
    pub(crate) snapshot_bytes: Arc<AtomicU64>,
}

/// The workloads whose record or placement changed since its owner last took them: lets a
/// controller look at what changed rather than walk every workload on every pass.
#[derive(Debug, Default)]
pub struct ChangeFeed {
    changed: Mutex<BTreeSet<WorkloadKey>>,
}

impl ChangeFeed {
    /// Everything changed since the last call.
    pub fn take(&self) -> BTreeSet<WorkloadKey> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts keys back, to be taken again (their changes were not acted on).
    pub fn restore(&self, keys: impl IntoIterator<Item = WorkloadKey>) {
        self.changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(keys);
    }
}

impl Shared {
    /// A feed of the workloads changed from now on, for as long as it is held.
    pub(crate) fn changes(&self) -> Arc<ChangeFeed> {
        let feed = Arc::new(ChangeFeed::default());
        self.feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&feed));
        feed
    }

    /// Hands `changed` to every live feed.
    fn publish(&self, changed: &BTreeSet<WorkloadKey>) {
        let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        feeds.retain(|feed| match feed.upgrade() {
            Some(feed) => {
                feed.restore(changed.iter().cloned());
                true
            }
            None => false,
        });
    }

    fn watched(&self) -> bool {
        !self
            .feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A panic while holding the lock cannot leave `Applied` half-changed in a way a reader
        // could misuse: `FederationState::apply` does not panic, and Raft stops on failure.
        self.applied.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Applied> {
        self.applied.write().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct StateMachineStore {
    file: Arc<DbFile>,
    shared: Shared,
    /// Held while applying and while capturing or installing a snapshot, so they never
    /// interleave.
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl StateMachineStore {
    /// Opens the file and loads the snapshot (or the base state) into memory.
    pub(crate) async fn open(
        path: PathBuf,
        open: mpsc::Sender<()>,
    ) -> Result<StateMachineStore, StoreError> {
        let file = DbFile::open(path, open).await?;
        let (applied, snapshot_bytes) = blocking(&file, load).await?;
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        Ok(StateMachineStore {
            file,
            shared: Shared {
                applied: Arc::new(RwLock::new(applied)),
                applied_index: Arc::new(watch::channel(index).0),
                feeds: Arc::default(),
                snapshot_bytes: Arc::new(AtomicU64::new(snapshot_bytes)),
            },
            writing: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    pub(crate) fn shared(&self) -> Shared {
        self.shared.clone()
    }
}

/// Writes `state` into a new state machine file, as the state before the first log entry
/// (restoring a backup into a new control plane).
pub(crate) async fn seed(
    path: PathBuf,
    state: FederationState,
    open: mpsc::Sender<()>,
) -> Result<(), StoreError> {
    let file = DbFile::open(path, open).await?;
    blocking(&file, move |file| {
        let base = encode(&file.path, BASE, &state)?;
        let txn = file.db.begin_write().map_err(|e| file.error(e))?;
        txn.open_table(SNAPSHOT).map_err(|e| file.error(e))?;
        txn.open_table(META)
            .map_err(|e| file.error(e))?
            .insert(BASE, base.as_slice())
            .map_err(|e| file.error(e))?;
        txn.commit().map_err(|e| file.error(e))
    })
    .await
}

/// Reads the state to start from: the current snapshot, else the base state, else nothing;
/// and the snapshot's size.
fn load(file: &DbFile) -> Result<(Applied, u64), StoreError> {
    let txn = file.db.begin_write().map_err(|e| file.error(e))?;
    txn.open_table(META).map_err(|e| file.error(e))?;
    txn.open_table(SNAPSHOT).map_err(|e| file.error(e))?;
    txn.delete_table(OBJECTS).map_err(|e| file.error(e))?;
    txn.commit().map_err(|e| file.error(e))?;

    if let Some((meta, data)) = read_snapshot(file)? {
        return Ok((decode_snapshot(file, &meta, &data)?, data.len() as u64));
    }
    let txn = file.db.begin_read().map_err(|e| file.error(e))?;
    let meta = txn.open_table(META).map_err(|e| file.error(e))?;
    let state = match meta.get(BASE).map_err(|e| file.error(e))? {
        Some(v) => decode(file, "the restored base state", v.value())?,
        None => FederationState::default(),
    };
    Ok((
        Applied {
            state,
            ..Applied::default()
        },
        0,
    ))
}

type SnapshotRow = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

fn read_snapshot(file: &DbFile) -> Result<Option<SnapshotRow>, StoreError> {
    let txn = file.db.begin_read().map_err(|e| file.error(e))?;
    let table = txn.open_table(SNAPSHOT).map_err(|e| file.error(e))?;
    let meta = table.get(SNAPSHOT_META).map_err(|e| file.error(e))?;
    let data = table.get(SNAPSHOT_DATA).map_err(|e| file.error(e))?;
    match (meta, data) {
        (Some(meta), Some(data)) => Ok(Some((
            decode(file, "snapshot meta", meta.value())?,
            data.value().to_vec(),
        ))),
        (None, None) => Ok(None),
        _ => Err(file.corrupt("the snapshot is missing its meta or its data")),
    }
}

fn write_snapshot(
    file: &DbFile,
    txn: &WriteTransaction,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> Result<(), StoreError> {
    let meta = encode(&file.path, "snapshot meta", meta)?;
    let mut table = txn.open_table(SNAPSHOT).map_err(|e| file.error(e))?;
    table
        .insert(SNAPSHOT_META, meta.as_slice())
        .map_err(|e| file.error(e))?;
    table
        .insert(SNAPSHOT_DATA, data)
        .map_err(|e| file.error(e))?;
    Ok(())
}

/// A snapshot's data must describe exactly the state its meta claims.
fn decode_snapshot(
    file: &DbFile,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> Result<Applied, StoreError> {
    let applied: Applied = decode(file, "snapshot data", data)?;
    if applied.last_applied != meta.last_log_id || applied.last_membership != meta.last_membership {
        return Err(file.corrupt(format!(
            "snapshot {} holds the state at {:?}",
            meta.snapshot_id, applied.last_applied
        )));
    }
    Ok(applied)
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResponse>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let _writing = self.writing.lock().await;
        let mut responses = Vec::with_capacity(entries.len());
        let watched = self.shared.watched();
        let mut changed = BTreeSet::new();
        {
            let mut applied = self.shared.write();
            let mut apply = |state: &mut FederationState, cmd: &Command| {
                if watched {
                    changed.extend(cmd.touched_objects(state).into_iter().filter_map(|object| {
                        match object {
                            ObjectKey::Workload(key) | ObjectKey::Placement(key) => Some(key),
                            _ => None,
                        }
                    }));
                }
                state.apply(cmd)
            };
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => CommandResponse::Done,
                    // Each command of a batch sees the state its predecessors left.
                    EntryPayload::Normal(logged) => match &*logged {
                        Command::Batch { commands } => CommandResponse::Batch(
                            commands
                                .iter()
                                .map(|cmd| apply(&mut applied.state, cmd))
                                .collect(),
                        ),
                        cmd => apply(&mut applied.state, cmd),
                    },
                    EntryPayload::Membership(membership) => {
                        applied.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        CommandResponse::Done
                    }
                };
                responses.push(response);
            }
        }
        if !changed.is_empty() {
            self.shared.publish(&changed);
        }
        self.shared.applied_index.send_replace(last.index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            file: self.file.clone(),
            shared: self.shared.clone(),
            writing: self.writing.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let _writing = self.writing.lock().await;
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let size = data.len() as u64;
        let applied = decode_snapshot(&self.file, meta, &data)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, e))?;
        let meta = meta.clone();
        // Durable before it replaces the state: Raft may purge the log it covers once it returns.
        blocking(&self.file, move |file| {
            let txn = file.db.begin_write().map_err(|e| file.error(e))?;
            write_snapshot(file, &txn, &meta, &data)?;
            txn.commit().map_err(|e| file.error(e))
        })
        .await
        .map_err(|e| io_error(subject, ErrorVerb::Write, e))?;
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        *self.shared.write() = applied;
        self.shared.snapshot_bytes.store(size, Ordering::Relaxed);
        self.shared.applied_index.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let snapshot = blocking(&self.file, read_snapshot)
            .await
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(snapshot.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Serialises the mirror (state, last applied, membership) as one JSON document and makes it
/// the current snapshot, unless a newer one was installed meanwhile.
pub struct SnapshotBuilder {
    file: Arc<DbFile>,
    shared: Shared,
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // A clone shares the workloads and placements (see `FederationState`), so the locks
        // are held for a copy of the maps' nodes, not for encoding the whole state: applying
        // goes on while the clone is encoded and written on a blocking thread.
        let applied = {
            let _writing = self.writing.lock().await;
            self.shared.read().clone()
        };
        let (last_log_id, last_membership) =
            (applied.last_applied, applied.last_membership.clone());
        // Sized from the last snapshot: growing a buffer of tens of MiB by doubling would copy
        // it again and again into fresh memory.
        let last = self.shared.snapshot_bytes.load(Ordering::Relaxed) as usize;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}-{now_ms}", l.leader_id, l.index),
            None => format!("empty-{now_ms}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let (meta, data) = blocking(&self.file, move |file| {
            let mut data = Vec::with_capacity(last + last / 4 + 4096);
            serde_json::to_writer(&mut data, &applied).map_err(|e| {
                StoreError::storage(&file.path, format!("encode the snapshot: {e}"))
            })?;
            drop(applied);
            let txn = file.db.begin_write().map_err(|e| file.error(e))?;
            let current = {
                let table = txn.open_table(SNAPSHOT).map_err(|e| file.error(e))?;
                let current = table.get(SNAPSHOT_META).map_err(|e| file.error(e))?;
                current
                    .map(|v| {
                        decode::<SnapshotMeta<NodeId, BasicNode>>(file, "snapshot meta", v.value())
                    })
                    .transpose()?
            };
            if current.is_none_or(|c| c.last_log_id <= meta.last_log_id) {
                write_snapshot(file, &txn, &meta, &data)?;
                txn.commit().map_err(|e| file.error(e))?;
            }
            Ok((meta, data))
        })
        .await
        .map_err(|e| io_error(subject, ErrorVerb::Write, e))?;
        self.shared
            .snapshot_bytes
            .store(data.len() as u64, Ordering::Relaxed);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
