//! The applied state in `<data_dir>/state.redb`, one row per object, plus an in-memory mirror
//! that readers use.
//!
//! Tables: `objects` (`workload/<ns>/<name>`, `cluster/<name>`, `placement/<ns>/<name>` ->
//! JSON), `meta` (last applied log id, last membership) and `snapshot` (the current snapshot's
//! meta and data). `apply` changes the mirror at once, and the file only every `DURABLE_EVERY`
//! entries or `DURABLE_AFTER`: then one fsynced write transaction holds every object changed
//! since the last one and the last applied log id together. The Raft log is durable, and after
//! a crash redb is back at its last write, with a consistent last applied id, from where Raft
//! re-applies the committed entries (a write without an fsync would not survive a crash either,
//! so writing each apply buys nothing but a write transaction per entry). A clean close writes
//! what is left. Snapshots (built and installed) are fsynced: Raft purges log entries only once
//! a snapshot covers them.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
use super::state::{Command, CommandResponse, FederationState, ObjectKey};
use super::{NodeId, TypeConfig};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// The applied objects are written (and fsynced) at least every this many entries, and at least
/// this often: bounds the replay after a crash.
const DURABLE_EVERY: u64 = 1000;
const DURABLE_AFTER: Duration = Duration::from_secs(1);

const LAST_APPLIED: &str = "last_applied";
const LAST_MEMBERSHIP: &str = "last_membership";
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
}

impl Shared {
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
    /// The last apply written to the file: its index and when (none yet: the next is).
    last_durable: (u64, Option<Instant>),
    /// Objects applied to the mirror since then, written with the next durable apply.
    unwritten: BTreeSet<ObjectKey>,
}

impl StateMachineStore {
    /// Opens the file and loads the applied state into memory.
    pub(crate) async fn open(
        path: PathBuf,
        open: mpsc::Sender<()>,
    ) -> Result<StateMachineStore, StoreError> {
        let file = DbFile::open(path, open).await?;
        let applied = blocking(&file, load).await?;
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        Ok(StateMachineStore {
            file,
            shared: Shared {
                applied: Arc::new(RwLock::new(applied)),
                applied_index: Arc::new(watch::channel(index).0),
            },
            writing: Arc::new(tokio::sync::Mutex::new(())),
            last_durable: (index, None),
            unwritten: BTreeSet::new(),
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
        let txn = file.db.begin_write().map_err(|e| file.error(e))?;
        for table in [OBJECTS, META, SNAPSHOT] {
            txn.open_table(table).map_err(|e| file.error(e))?;
        }
        let applied = Applied {
            state,
            ..Applied::default()
        };
        replace_all(file, &txn, &applied)?;
        txn.commit().map_err(|e| file.error(e))
    })
    .await
}

/// Reads the whole state. A snapshot newer than the objects (which the write ordering should
/// prevent) wins, since it is a complete committed state.
fn load(file: &DbFile) -> Result<Applied, StoreError> {
    let txn = file.db.begin_write().map_err(|e| file.error(e))?;
    for table in [OBJECTS, META, SNAPSHOT] {
        txn.open_table(table).map_err(|e| file.error(e))?;
    }
    txn.commit().map_err(|e| file.error(e))?;

    let txn = file.db.begin_read().map_err(|e| file.error(e))?;
    let meta = txn.open_table(META).map_err(|e| file.error(e))?;
    let mut applied = Applied::default();
    if let Some(v) = meta.get(LAST_APPLIED).map_err(|e| file.error(e))? {
        applied.last_applied = decode(file, LAST_APPLIED, v.value())?;
    }
    if let Some(v) = meta.get(LAST_MEMBERSHIP).map_err(|e| file.error(e))? {
        applied.last_membership = decode(file, LAST_MEMBERSHIP, v.value())?;
    }
    let objects = txn.open_table(OBJECTS).map_err(|e| file.error(e))?;
    for row in objects.iter().map_err(|e| file.error(e))? {
        let (key, value) = row.map_err(|e| file.error(e))?;
        load_object(file, &mut applied.state, key.value(), value.value())?;
    }

    let snapshot = read_snapshot(file)?;
    drop(txn);
    if let Some((meta, data)) = snapshot {
        if meta.last_log_id > applied.last_applied {
            let newer = decode_snapshot(file, &meta, &data)?;
            let txn = file.db.begin_write().map_err(|e| file.error(e))?;
            replace_all(file, &txn, &newer)?;
            txn.commit().map_err(|e| file.error(e))?;
            return Ok(newer);
        }
    }
    Ok(applied)
}

fn load_object(
    file: &DbFile,
    state: &mut FederationState,
    key: &str,
    value: &[u8],
) -> Result<(), StoreError> {
    let object = if key.starts_with("workload/") {
        let record: super::WorkloadRecord = decode(file, key, value)?;
        let object = ObjectKey::Workload(record.workload.key());
        state.workloads.insert(record.workload.key(), record);
        object
    } else if key.starts_with("cluster/") {
        let cluster: hansa_core::Cluster = decode(file, key, value)?;
        let object = ObjectKey::Cluster(cluster.name.clone());
        state.clusters.insert(cluster.name.clone(), cluster);
        object
    } else if key.starts_with("placement/") {
        let placement: hansa_core::Placement = decode(file, key, value)?;
        let workload = super::state::placement_key(&placement);
        state.placements.insert(workload.clone(), placement);
        ObjectKey::Placement(workload)
    } else if key.starts_with("policy/") {
        let record: super::state::PolicyRecord = decode(file, key, value)?;
        let p = &record.policy;
        let k = super::state::policy_key(&p.kind, p.namespace.as_deref(), &p.name);
        state.policies.insert(k.clone(), record);
        ObjectKey::Policy(k)
    } else if key.starts_with("override/") {
        let record: super::state::OverrideRecord = decode(file, key, value)?;
        let p = &record.policy;
        let k = super::state::policy_key(&p.kind, p.namespace.as_deref(), &p.name);
        state.overrides.insert(k.clone(), record);
        ObjectKey::Override(k)
    } else if let Some(object) = key.strip_prefix("record/") {
        let record: hansa_gossip::Record = decode(file, key, value)?;
        if record.key != object {
            return Err(file.corrupt(format!("record stored as {key:?} is for {:?}", record.key)));
        }
        state.records.insert(record.key.clone(), record);
        ObjectKey::Record(object.to_string())
    } else if let Some(name) = key.strip_prefix("taints/") {
        let taints: Vec<hansa_core::Taint> = decode(file, key, value)?;
        state.operator_taints.insert(name.to_string(), taints);
        ObjectKey::OperatorTaints(name.to_string())
    } else {
        return Err(file.corrupt(format!("unknown object {key:?}")));
    };
    if object.storage_key() != key {
        return Err(file.corrupt(format!(
            "object stored as {key:?} is {:?}",
            object.storage_key()
        )));
    }
    Ok(())
}

/// The bytes of one object as it is now, or `None` when it no longer exists.
fn object_bytes(
    file: &DbFile,
    state: &FederationState,
    object: &ObjectKey,
) -> Result<Option<Vec<u8>>, StoreError> {
    let key = object.storage_key();
    match object {
        ObjectKey::Workload(k) => state.workloads.get(k).map(|v| encode(&file.path, &key, v)),
        ObjectKey::Cluster(k) => state.clusters.get(k).map(|v| encode(&file.path, &key, v)),
        ObjectKey::Placement(k) => state.placements.get(k).map(|v| encode(&file.path, &key, v)),
        ObjectKey::Policy(k) => state.policies.get(k).map(|v| encode(&file.path, &key, v)),
        ObjectKey::Override(k) => state.overrides.get(k).map(|v| encode(&file.path, &key, v)),
        ObjectKey::OperatorTaints(k) => state
            .operator_taints
            .get(k)
            .map(|v| encode(&file.path, &key, v)),
        ObjectKey::Record(k) => state.records.get(k).map(|v| encode(&file.path, &key, v)),
    }
    .transpose()
}

/// Replaces every object and the meta rows with `applied`, and makes it the current snapshot's
/// base: used by `install_snapshot` and by `load`.
fn replace_all(file: &DbFile, txn: &WriteTransaction, applied: &Applied) -> Result<(), StoreError> {
    let mut objects = txn.open_table(OBJECTS).map_err(|e| file.error(e))?;
    objects.retain(|_, _| false).map_err(|e| file.error(e))?;
    let state = &applied.state;
    let keys = state
        .workloads
        .keys()
        .map(|k| ObjectKey::Workload(k.clone()))
        .chain(state.clusters.keys().map(|k| ObjectKey::Cluster(k.clone())))
        .chain(
            state
                .placements
                .keys()
                .map(|k| ObjectKey::Placement(k.clone())),
        )
        .chain(state.policies.keys().map(|k| ObjectKey::Policy(k.clone())))
        .chain(
            state
                .overrides
                .keys()
                .map(|k| ObjectKey::Override(k.clone())),
        )
        .chain(
            state
                .operator_taints
                .keys()
                .map(|k| ObjectKey::OperatorTaints(k.clone())),
        )
        .chain(state.records.keys().map(|k| ObjectKey::Record(k.clone())));
    for object in keys {
        if let Some(bytes) = object_bytes(file, state, &object)? {
            objects
                .insert(object.storage_key().as_str(), bytes.as_slice())
                .map_err(|e| file.error(e))?;
        }
    }
    write_meta(file, txn, applied.last_applied, &applied.last_membership)
}

fn write_meta(
    file: &DbFile,
    txn: &WriteTransaction,
    last_applied: Option<LogId<NodeId>>,
    membership: &Membership,
) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(|e| file.error(e))?;
    let last_applied = encode(&file.path, LAST_APPLIED, &last_applied)?;
    let membership = encode(&file.path, LAST_MEMBERSHIP, membership)?;
    meta.insert(LAST_APPLIED, last_applied.as_slice())
        .map_err(|e| file.error(e))?;
    meta.insert(LAST_MEMBERSHIP, membership.as_slice())
        .map_err(|e| file.error(e))?;
    Ok(())
}

/// What a write of the applied state changes: the rows of `objects` as they are in `applied`
/// (`None`: deleted), and the meta rows.
struct Rows {
    objects: Vec<(String, Option<Vec<u8>>)>,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
}

fn capture(
    file: &DbFile,
    applied: &Applied,
    objects: &BTreeSet<ObjectKey>,
) -> Result<Rows, StoreError> {
    let objects = objects
        .iter()
        .map(|object| {
            Ok((
                object.storage_key(),
                object_bytes(file, &applied.state, object)?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Rows {
        objects,
        last_applied: applied.last_applied,
        membership: applied.last_membership.clone(),
    })
}

/// Writes `rows` in one fsynced transaction.
fn write_rows(file: &DbFile, rows: &Rows) -> Result<(), StoreError> {
    let txn = file.db.begin_write().map_err(|e| file.error(e))?;
    {
        let mut objects = txn.open_table(OBJECTS).map_err(|e| file.error(e))?;
        for (key, bytes) in &rows.objects {
            match bytes {
                Some(bytes) => objects.insert(key.as_str(), bytes.as_slice()),
                None => objects.remove(key.as_str()),
            }
            .map_err(|e| file.error(e))?;
        }
    }
    write_meta(file, &txn, rows.last_applied, &rows.membership)?;
    txn.commit().map_err(|e| file.error(e))
}

impl Drop for StateMachineStore {
    /// A clean close writes what was applied since the last write, so a restart replays nothing.
    fn drop(&mut self) {
        if self.unwritten.is_empty() {
            return;
        }
        let applied = self.shared.read();
        let written = capture(&self.file, &applied, &self.unwritten)
            .and_then(|rows| write_rows(&self.file, &rows));
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not write the applied state on close; it will be replayed from the Raft log");
        }
    }
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
        let touched = &mut self.unwritten;
        // Readers see the entries before they are on this node's disk: they are committed,
        // and Raft re-applies them after a crash.
        {
            let mut applied = self.shared.write();
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => CommandResponse::Done,
                    // Each command of a batch sees the state its predecessors left.
                    EntryPayload::Normal(Command::Batch { commands }) => CommandResponse::Batch(
                        commands
                            .iter()
                            .map(|cmd| {
                                touched.extend(cmd.touched_objects(&applied.state));
                                applied.state.apply(cmd)
                            })
                            .collect(),
                    ),
                    EntryPayload::Normal(cmd) => {
                        touched.extend(cmd.touched_objects(&applied.state));
                        applied.state.apply(&cmd)
                    }
                    EntryPayload::Membership(membership) => {
                        applied.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        CommandResponse::Done
                    }
                };
                responses.push(response);
            }
        }
        let (durable_index, durable_at) = self.last_durable;
        let durable = last.index >= durable_index + DURABLE_EVERY
            || durable_at.is_none_or(|at| at.elapsed() >= DURABLE_AFTER);
        if durable {
            let unwritten = std::mem::take(&mut self.unwritten);
            let rows = {
                let applied = self.shared.read();
                capture(&self.file, &applied, &unwritten)
            }
            .map_err(|e| io_error(ErrorSubject::Apply(last), ErrorVerb::Write, e))?;
            blocking(&self.file, move |file| write_rows(file, &rows))
                .await
                .map_err(|e| io_error(ErrorSubject::Apply(last), ErrorVerb::Write, e))?;
            self.last_durable = (last.index, Some(Instant::now()));
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
        let applied = decode_snapshot(&self.file, meta, &data)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, e))?;
        let meta = meta.clone();
        let applied = blocking(&self.file, move |file| {
            // One transaction: the old state, the new state and the snapshot are never mixed.
            let txn = file.db.begin_write().map_err(|e| file.error(e))?;
            replace_all(file, &txn, &applied)?;
            write_snapshot(file, &txn, &meta, &data)?;
            txn.commit().map_err(|e| file.error(e))?;
            Ok(applied)
        })
        .await
        .map_err(|e| io_error(subject, ErrorVerb::Write, e))?;
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        *self.shared.write() = applied;
        self.unwritten.clear();
        self.last_durable = (index, Some(Instant::now()));
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
        let (data, last_log_id, last_membership) = {
            let _writing = self.writing.lock().await;
            let applied = self.shared.read();
            (
                encode(&self.file.path, "snapshot", &*applied),
                applied.last_applied,
                applied.last_membership.clone(),
            )
        };
        let data = data.map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
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
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
