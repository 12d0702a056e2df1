//! The replicated state machine's data and its pure apply function.
//!
//! Every federator applies the same committed commands in the same order to a
//! `FederationState`, so `apply` must be deterministic: no clocks (the proposer stamps
//! `now_ms`), no randomness, no I/O. It is tested here without Raft.

use std::collections::BTreeMap;
use std::sync::Arc;

use hansa_core::manifest::PolicyObject;
use hansa_core::rollout::{RevisionRecord, Rollout};
use hansa_core::{Cluster, ClusterHealth, OverrideObject, Placement, Taint, Workload, WorkloadKey};
use hansa_gossip::{Kind as RecordKind, Record, Timestamp};
use serde::{Deserialize, Serialize};

/// A workload as stored, with the counters the controllers key their work on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRecord {
    pub workload: Workload,
    /// +1 on any change of the workload; placements are solved for one generation.
    pub generation: u64,
    /// +1 when the template changes (starts at 1); replicas of an older revision are replaced.
    pub revision: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The override policies that select this workload, with their generations: when this
    /// changes, what the clusters run changes, so the revision moves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<(String, u64)>,
    /// The last `revisionHistoryLimit` revisions, oldest first, and any older one a cluster
    /// still runs (see [`super::revisions`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,
    /// The staged rollout of the latest revision across clusters (`spec.update.clusters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// A placement policy as stored (`PlacementPolicy`, `PropagationPolicy`,
/// `ClusterPropagationPolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRecord {
    pub policy: PolicyObject,
    /// +1 on every change.
    pub generation: u64,
}

/// An override policy as stored (`OverridePolicy`, `ClusterOverridePolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverrideRecord {
    pub policy: OverrideObject,
    pub generation: u64,
}

/// `PropagationPolicy/default/web`; cluster-scoped policies have an empty namespace.
pub fn policy_key(kind: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{kind}/{}/{name}", namespace.unwrap_or(""))
}

/// Everything the federation has decided. Maps are keyed by the key their values carry
/// (`Workload::key`, `Cluster::name`, the placement's namespace/workload); in JSON each map
/// is a list of its values, so `WorkloadKey` never has to be a JSON object key.
///
/// Workloads and placements, the maps that grow with the federation, hold their values
/// behind an `Arc`: a clone of the state shares them, and a change copies only the value it
/// changes (`Arc::make_mut`). A snapshot is encoded from such a clone, so applying goes on
/// while it is written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FederationState {
    #[serde(with = "keyed_list")]
    pub workloads: BTreeMap<WorkloadKey, Arc<WorkloadRecord>>,
    #[serde(with = "keyed_list")]
    pub clusters: BTreeMap<String, Cluster>,
    #[serde(with = "keyed_list")]
    pub placements: BTreeMap<WorkloadKey, Arc<Placement>>,
    /// Placement policies by [`policy_key`].
    #[serde(default, with = "keyed_list")]
    pub policies: BTreeMap<String, PolicyRecord>,
    /// Override policies by [`policy_key`].
    #[serde(default, with = "keyed_list")]
    pub overrides: BTreeMap<String, OverrideRecord>,
    /// Taints set by operators (`hansa taint`), by cluster; a cluster's `taints` are its
    /// agent's plus these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub operator_taints: BTreeMap<String, Vec<Taint>>,
    /// Peer mode: the replicated version of every object above, by its storage key
    /// (`workload/default/web`): who wrote it, when, and its generation, with the object
    /// itself as the body (DESIGN.md §2). Empty in hub mode.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "keyed_list"
    )]
    pub records: BTreeMap<String, Record>,
}

/// A change to the federation's state: the payload of a Raft log entry. Read by
/// `command_de` (kept in step with this), which skips serde's buffering of the tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum Command {
    /// Creates or updates workloads and policies, all or nothing (already validated by the
    /// API). Policies are stored first, so the workloads' revisions see them.
    PutWorkloads {
        workloads: Vec<Workload>,
        /// The proposer's clock: `apply` must not read one.
        now_ms: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        policies: Vec<PolicyObject>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        overrides: Vec<OverrideObject>,
    },
    /// Removes a placement or override policy by [`policy_key`].
    DeletePolicy {
        key: String,
    },
    /// Cordons (nothing new is placed) or uncordons a cluster.
    SetClusterCordon {
        name: String,
        cordoned: bool,
    },
    /// Changes the operator taints of a cluster: removes those `remove` names (`key`,
    /// `key:Effect`, `key=value:Effect`), then adds `add`, each replacing a taint with the same
    /// key and effect.
    SetClusterTaints {
        name: String,
        add: Vec<Taint>,
        remove: Vec<String>,
    },
    /// Removes a workload and its placement.
    DeleteWorkload {
        key: WorkloadKey,
    },
    /// Registers a cluster or updates its registration; the stored `cordoned` flag is kept.
    UpsertCluster {
        cluster: Cluster,
    },
    SetClusterHealth {
        name: String,
        health: ClusterHealth,
    },
    /// Ignored (the response says why) when the workload is gone or the placement was solved
    /// for another generation than the workload's current one.
    SetPlacement {
        placement: Placement,
    },
    /// The rollout controller's next step for a workload's rollout, computed from the stored
    /// rollout of the same `version` (ignored otherwise: someone else changed it meanwhile).
    SetRollout {
        key: WorkloadKey,
        rollout: Rollout,
    },
    /// An operator's `hansa rollout pause|resume|undo`.
    UpdateRollout {
        key: WorkloadKey,
        action: super::revisions::RolloutAction,
        now_ms: u64,
    },
    /// Commands proposed together as one log entry (group commit), applied in order exactly as
    /// if each were its own entry.
    Batch {
        commands: Vec<Command>,
    },
    /// Peer mode, a change made on this peer: applies `command`, then records every object it
    /// changed as a new version (generation + 1) stamped `hlc` by `origin`, for gossip.
    Stamped {
        command: Box<Command>,
        hlc: Timestamp,
        origin: String,
    },
    /// Peer mode, versions from other peers: each replaces its object when it beats the
    /// version held by the merge rule (generation, clock, origin, content); the rest are
    /// ignored, so merging is the same whatever order versions arrive in.
    Merge {
        records: Vec<Record>,
    },
    /// Peer mode: drops the versions of deleted objects (tombstones) deleted before
    /// `before_ms`, once every peer has had time to hear of the delete.
    ForgetTombstones {
        before_ms: u64,
    },
}

/// A command as a Raft log entry holds it: shared. Raft copies entries from the log's
/// in-memory tail, once for each follower's replication and once for the state machine;
/// shared, a copy is a reference count instead of a deep copy of the command's workloads.
/// Written and read exactly as the command itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged(pub Arc<Command>);

impl From<Command> for Logged {
    fn from(command: Command) -> Logged {
        Logged(Arc::new(command))
    }
}

impl std::ops::Deref for Logged {
    type Target = Command;

    fn deref(&self) -> &Command {
        &self.0
    }
}

impl Serialize for Logged {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Logged {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Logged, D::Error> {
        Command::deserialize(deserializer).map(Logged::from)
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// One outcome per workload of `PutWorkloads`, in the command's order.
    Workloads(Vec<PutOutcome>),
    /// Whether `DeleteWorkload` found the workload.
    Deleted(bool),
    Done,
    /// The command changed nothing, for the reason given.
    Ignored(String),
    /// One response per command of a `Batch`, in the batch's order.
    Batch(Vec<CommandResponse>),
    /// `Stamped`: the command's own response, and the storage keys of the records written.
    Stamped {
        response: Box<CommandResponse>,
        records: Vec<String>,
    },
    /// `Merge`: how many versions won and replaced their objects.
    Merged(usize),
}

/// What `PutWorkloads` did to one workload, and its counters afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutOutcome {
    Created { generation: u64, revision: u64 },
    Configured { generation: u64, revision: u64 },
    Unchanged { generation: u64, revision: u64 },
}

impl PutOutcome {
    pub fn generation(&self) -> u64 {
        match *self {
            PutOutcome::Created { generation, .. }
            | PutOutcome::Configured { generation, .. }
            | PutOutcome::Unchanged { generation, .. } => generation,
        }
    }

    pub fn revision(&self) -> u64 {
        match *self {
            PutOutcome::Created { revision, .. }
            | PutOutcome::Configured { revision, .. }
            | PutOutcome::Unchanged { revision, .. } => revision,
        }
    }
}

/// One stored object; the unit peer mode versions and gossips.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ObjectKey {
    Workload(WorkloadKey),
    Cluster(String),
    Placement(WorkloadKey),
    /// A placement policy, by [`policy_key`].
    Policy(String),
    /// An override policy, by [`policy_key`].
    Override(String),
    /// A cluster's operator taints.
    OperatorTaints(String),
    /// Peer mode: the replicated version of an object, by the object's storage key.
    Record(String),
}

impl ObjectKey {
    /// The object's key in the state machine's table.
    pub(crate) fn storage_key(&self) -> String {
        match self {
            ObjectKey::Workload(k) => format!("workload/{}/{}", k.namespace, k.name),
            ObjectKey::Cluster(name) => format!("cluster/{name}"),
            ObjectKey::Placement(k) => format!("placement/{}/{}", k.namespace, k.name),
            ObjectKey::Policy(k) => format!("policy/{k}"),
            ObjectKey::Override(k) => format!("override/{k}"),
            ObjectKey::OperatorTaints(name) => format!("taints/{name}"),
            ObjectKey::Record(key) => format!("record/{key}"),
        }
    }

    /// The object stored under `key` (the inverse of `storage_key`); `None` for keys that
    /// name no replicated object.
    pub(crate) fn parse(key: &str) -> Option<ObjectKey> {
        let (prefix, rest) = key.split_once('/')?;
        let workload = || {
            let (namespace, name) = rest.split_once('/')?;
            (!namespace.is_empty() && !name.is_empty() && !name.contains('/'))
                .then(|| WorkloadKey::new(namespace, name))
        };
        let object = match prefix {
            "workload" => ObjectKey::Workload(workload()?),
            "placement" => ObjectKey::Placement(workload()?),
            "cluster" => ObjectKey::Cluster(rest.to_string()),
            "policy" => ObjectKey::Policy(rest.to_string()),
            "override" => ObjectKey::Override(rest.to_string()),
            "taints" => ObjectKey::OperatorTaints(rest.to_string()),
            _ => return None,
        };
        (!rest.is_empty()).then_some(object)
    }

    /// The gossip kind of an object's records.
    pub(crate) fn record_kind(&self) -> Option<RecordKind> {
        match self {
            ObjectKey::Workload(_) => Some(RecordKind::Workload),
            ObjectKey::Placement(_) => Some(RecordKind::Placement),
            ObjectKey::Policy(_) | ObjectKey::Override(_) => Some(RecordKind::Policy),
            ObjectKey::Cluster(_) | ObjectKey::OperatorTaints(_) => Some(RecordKind::ClusterFact),
            ObjectKey::Record(_) => None,
        }
    }
}

impl Command {
    /// `PutWorkloads` of workloads alone.
    pub fn put_workloads(workloads: Vec<Workload>, now_ms: u64) -> Command {
        Command::PutWorkloads {
            workloads,
            now_ms,
            policies: Vec::new(),
            overrides: Vec::new(),
        }
    }

    /// Every object applying this command to `state` may create, change or remove.
    pub(crate) fn touched_objects(&self, state: &FederationState) -> Vec<ObjectKey> {
        // A changed override policy may move the revision of any workload.
        let every_workload = || state.workloads.keys().cloned().map(ObjectKey::Workload);
        match self {
            Command::PutWorkloads {
                workloads,
                policies,
                overrides,
                ..
            } => {
                let mut objects: Vec<ObjectKey> = workloads
                    .iter()
                    .map(|w| ObjectKey::Workload(w.key()))
                    .chain(policies.iter().map(|p| {
                        ObjectKey::Policy(policy_key(&p.kind, p.namespace.as_deref(), &p.name))
                    }))
                    .chain(overrides.iter().map(|o| {
                        ObjectKey::Override(policy_key(&o.kind, o.namespace.as_deref(), &o.name))
                    }))
                    .collect();
                if !overrides.is_empty() {
                    objects.extend(every_workload());
                }
                objects
            }
            Command::DeletePolicy { key } => {
                let mut objects = vec![
                    ObjectKey::Policy(key.clone()),
                    ObjectKey::Override(key.clone()),
                ];
                if state.overrides.contains_key(key) {
                    objects.extend(every_workload());
                }
                objects
            }
            Command::SetClusterCordon { name, .. } => vec![ObjectKey::Cluster(name.clone())],
            Command::SetClusterTaints { name, .. } => vec![
                ObjectKey::Cluster(name.clone()),
                ObjectKey::OperatorTaints(name.clone()),
            ],
            Command::DeleteWorkload { key } => vec![
                ObjectKey::Workload(key.clone()),
                ObjectKey::Placement(key.clone()),
            ],
            Command::UpsertCluster { cluster } => vec![ObjectKey::Cluster(cluster.name.clone())],
            Command::SetClusterHealth { name, .. } => vec![ObjectKey::Cluster(name.clone())],
            Command::SetPlacement { placement } => {
                vec![ObjectKey::Placement(placement_key(placement))]
            }
            Command::SetRollout { key, .. } | Command::UpdateRollout { key, .. } => {
                vec![ObjectKey::Workload(key.clone())]
            }
            Command::Batch { commands } => commands
                .iter()
                .flat_map(|c| c.touched_objects(state))
                .collect(),
            Command::Stamped { command, .. } => {
                let objects = command.touched_objects(state);
                let records: Vec<ObjectKey> = objects
                    .iter()
                    .filter(|o| o.record_kind().is_some())
                    .map(|o| ObjectKey::Record(o.storage_key()))
                    .collect();
                objects.into_iter().chain(records).collect()
            }
            Command::ForgetTombstones { before_ms } => state
                .expired_tombstones(*before_ms)
                .map(|k| ObjectKey::Record(k.clone()))
                .collect(),
            Command::Merge { records } => records
                .iter()
                .filter_map(|r| ObjectKey::parse(&r.key))
                .flat_map(|o| {
                    let record = ObjectKey::Record(o.storage_key());
                    [o, record]
                })
                .collect(),
        }
    }
}

/// The workload a placement belongs to.
pub fn placement_key(placement: &Placement) -> WorkloadKey {
    WorkloadKey::new(&placement.namespace, &placement.workload)
}

impl FederationState {
    /// Applies one committed command. Deterministic: equal states and commands give equal
    /// results on every federator.
    pub fn apply(&mut self, cmd: &Command) -> CommandResponse {
        match cmd {
            Command::PutWorkloads {
                workloads,
                now_ms,
                policies,
                overrides,
            } => {
                self.put_policies(policies, overrides, *now_ms);
                self.put_workloads(workloads, *now_ms)
            }
            Command::DeletePolicy { key } => {
                let placement = self.policies.remove(key).is_some();
                let overrides = self.overrides.remove(key).is_some();
                if overrides {
                    // No clock in this command: new revisions show no creation time.
                    self.restamp_overrides(0);
                }
                CommandResponse::Deleted(placement || overrides)
            }
            Command::SetClusterCordon { name, cordoned } => match self.clusters.get_mut(name) {
                Some(cluster) => {
                    cluster.cordoned = *cordoned;
                    CommandResponse::Done
                }
                None => CommandResponse::Ignored(format!("cluster {name} is not registered")),
            },
            Command::SetClusterTaints { name, add, remove } => {
                let Some(cluster) = self.clusters.get_mut(name) else {
                    return CommandResponse::Ignored(format!("cluster {name} is not registered"));
                };
                let old = self.operator_taints.remove(name).unwrap_or_default();
                cluster.taints.retain(|t| !old.contains(t));
                let mut taints: Vec<Taint> = old
                    .into_iter()
                    .filter(|t| !remove.iter().any(|p| t.matches(p)))
                    .filter(|t| !add.iter().any(|a| a.key == t.key && a.effect == t.effect))
                    .collect();
                taints.extend(add.iter().cloned());
                cluster.taints.extend(taints.iter().cloned());
                if !taints.is_empty() {
                    self.operator_taints.insert(name.clone(), taints);
                }
                CommandResponse::Done
            }
            Command::DeleteWorkload { key } => {
                self.placements.remove(key);
                CommandResponse::Deleted(self.workloads.remove(key).is_some())
            }
            Command::UpsertCluster { cluster } => {
                let mut cluster = cluster.clone();
                if let Some(stored) = self.clusters.get(&cluster.name) {
                    cluster.cordoned = stored.cordoned;
                    // A taint keeps the time it first appeared (registrations after a capacity
                    // change carry none).
                    for taint in cluster.taints.iter_mut().filter(|t| t.added_ms == 0) {
                        if let Some(old) = stored.taints.iter().find(|o| {
                            o.key == taint.key && o.value == taint.value && o.effect == taint.effect
                        }) {
                            taint.added_ms = old.added_ms;
                        }
                    }
                }
                if let Some(taints) = self.operator_taints.get(&cluster.name) {
                    cluster.taints.extend(taints.iter().cloned());
                }
                self.clusters.insert(cluster.name.clone(), cluster);
                CommandResponse::Done
            }
            Command::SetClusterHealth { name, health } => match self.clusters.get_mut(name) {
                Some(cluster) => {
                    cluster.health = *health;
                    CommandResponse::Done
                }
                None => CommandResponse::Ignored(format!("cluster {name} is not registered")),
            },
            Command::SetPlacement { placement } => self.set_placement(placement),
            Command::SetRollout { key, rollout } => self.set_rollout(key, rollout),
            Command::UpdateRollout {
                key,
                action,
                now_ms,
            } => self.update_rollout(key, action, *now_ms),
            Command::Batch { commands } => {
                CommandResponse::Batch(commands.iter().map(|c| self.apply(c)).collect())
            }
            Command::Stamped {
                command,
                hlc,
                origin,
            } => self.apply_stamped(command, *hlc, origin),
            Command::Merge { records } => {
                CommandResponse::Merged(records.iter().filter(|r| self.merge(r)).count())
            }
            Command::ForgetTombstones { before_ms } => {
                let expired: Vec<String> = self.expired_tombstones(*before_ms).cloned().collect();
                for key in &expired {
                    self.records.remove(key);
                }
                CommandResponse::Merged(expired.len())
            }
        }
    }

    /// Keys of tombstones deleted before `before_ms`.
    fn expired_tombstones(&self, before_ms: u64) -> impl Iterator<Item = &String> {
        self.records
            .iter()
            .filter(move |(_, r)| r.deleted_at.is_some_and(|at| at < before_ms))
            .map(|(k, _)| k)
    }

    fn apply_stamped(
        &mut self,
        command: &Command,
        hlc: Timestamp,
        origin: &str,
    ) -> CommandResponse {
        let objects: std::collections::BTreeSet<ObjectKey> = command
            .touched_objects(self)
            .into_iter()
            .filter(|o| o.record_kind().is_some())
            .collect();
        let before: Vec<(ObjectKey, Option<Vec<u8>>)> = objects
            .into_iter()
            .map(|o| {
                let bytes = self.object_json(&o);
                (o, bytes)
            })
            .collect();
        let response = self.apply(command);
        let mut written = Vec::new();
        for (object, old) in before {
            let new = self.object_json(&object);
            let Some(kind) = object.record_kind().filter(|_| new != old) else {
                continue;
            };
            let key = object.storage_key();
            let generation = self.records.get(&key).map_or(1, |r| r.generation + 1);
            let record = match new {
                Some(body) => Record::live(kind, &key, generation, hlc, origin, body),
                None => Record::tombstone(kind, &key, generation, hlc, origin),
            };
            self.records.insert(key.clone(), record);
            written.push(key);
        }
        CommandResponse::Stamped {
            response: Box::new(response),
            records: written,
        }
    }

    /// Installs a version from another peer if it wins; false when it loses or is malformed
    /// (a body that does not decode to its object, or names another).
    fn merge(&mut self, record: &Record) -> bool {
        let Some(object) = ObjectKey::parse(&record.key) else {
            return false;
        };
        if object.record_kind() != Some(record.kind) || record.validate().is_err() {
            return false;
        }
        if self
            .records
            .get(&record.key)
            .is_some_and(|held| record.precedence(held) != std::cmp::Ordering::Greater)
        {
            return false;
        }
        if !self.install(&object, record.body.as_deref()) {
            return false;
        }
        self.records.insert(record.key.clone(), record.clone());
        true
    }

    /// Sets (or with `None`, removes) one object from its JSON body.
    fn install(&mut self, object: &ObjectKey, body: Option<&[u8]>) -> bool {
        fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
            serde_json::from_slice(body).ok()
        }
        match (object, body) {
            (ObjectKey::Workload(k), Some(b)) => match decode::<WorkloadRecord>(b) {
                Some(r) if r.workload.key() == *k => {
                    self.workloads.insert(k.clone(), Arc::new(r));
                    true
                }
                _ => false,
            },
            (ObjectKey::Workload(k), None) => {
                self.workloads.remove(k);
                true
            }
            (ObjectKey::Placement(k), Some(b)) => match decode::<Placement>(b) {
                Some(p) if placement_key(&p) == *k => {
                    self.placements.insert(k.clone(), Arc::new(p));
                    true
                }
                _ => false,
            },
            (ObjectKey::Placement(k), None) => {
                self.placements.remove(k);
                true
            }
            (ObjectKey::Cluster(k), Some(b)) => match decode::<Cluster>(b) {
                Some(c) if c.name == *k => {
                    self.clusters.insert(k.clone(), c);
                    true
                }
                _ => false,
            },
            (ObjectKey::Cluster(k), None) => {
                self.clusters.remove(k);
                true
            }
            (ObjectKey::Policy(k), Some(b)) => match decode::<PolicyRecord>(b) {
                Some(r) if keyed_list::Keyed::key(&r) == *k => {
                    self.policies.insert(k.clone(), r);
                    true
                }
                _ => false,
            },
            (ObjectKey::Policy(k), None) => {
                self.policies.remove(k);
                true
            }
            (ObjectKey::Override(k), Some(b)) => match decode::<OverrideRecord>(b) {
                Some(r) if keyed_list::Keyed::key(&r) == *k => {
                    self.overrides.insert(k.clone(), r);
                    true
                }
                _ => false,
            },
            (ObjectKey::Override(k), None) => {
                self.overrides.remove(k);
                true
            }
            (ObjectKey::OperatorTaints(k), Some(b)) => match decode::<Vec<Taint>>(b) {
                Some(t) => {
                    self.operator_taints.insert(k.clone(), t);
                    true
                }
                None => false,
            },
            (ObjectKey::OperatorTaints(k), None) => {
                self.operator_taints.remove(k);
                true
            }
            (ObjectKey::Record(_), _) => false,
        }
    }

    /// One replicated object as JSON, `None` when absent.
    fn object_json(&self, object: &ObjectKey) -> Option<Vec<u8>> {
        fn json<T: Serialize>(value: Option<&T>) -> Option<Vec<u8>> {
            // These types always encode (string map keys only).
            value.and_then(|v| serde_json::to_vec(v).ok())
        }
        match object {
            ObjectKey::Workload(k) => json(self.workloads.get(k)),
            ObjectKey::Placement(k) => json(self.placements.get(k)),
            ObjectKey::Cluster(k) => json(self.clusters.get(k)),
            ObjectKey::Policy(k) => json(self.policies.get(k)),
            ObjectKey::Override(k) => json(self.overrides.get(k)),
            ObjectKey::OperatorTaints(k) => json(self.operator_taints.get(k)),
            ObjectKey::Record(_) => None,
        }
    }

    fn put_workloads(&mut self, workloads: &[Workload], now_ms: u64) -> CommandResponse {
        // The API rejects duplicates; checking again keeps the batch all or nothing even if a
        // caller skipped validation.
        let mut seen = std::collections::BTreeSet::new();
        for workload in workloads {
            let key = workload.key();
            if !seen.insert(key.clone()) {
                return CommandResponse::Ignored(format!(
                    "workload {key} appears twice in one apply; nothing was changed"
                ));
            }
        }
        let outcomes = workloads
            .iter()
            .map(|workload| self.put_workload(workload, now_ms))
            .collect();
        CommandResponse::Workloads(outcomes)
    }

    fn put_workload(&mut self, workload: &Workload, now_ms: u64) -> PutOutcome {
        use std::collections::btree_map::Entry;
        let selected = super::revisions::selected_overrides(&self.overrides, workload);
        // One search of the workloads; the placement is looked up only for a new revision.
        match self.workloads.entry(workload.key()) {
            Entry::Vacant(vacant) => {
                vacant.insert(Arc::new(WorkloadRecord {
                    workload: workload.clone(),
                    generation: 1,
                    revision: 1,
                    created_ms: now_ms,
                    updated_ms: now_ms,
                    overrides: override_stamp(&self.overrides, workload),
                    // `vec!` allocates room for one revision; a push would make room for four.
                    history: vec![RevisionRecord {
                        revision: 1,
                        template: workload.template.clone(),
                        overrides: selected,
                        created_ms: now_ms,
                    }],
                    rollout: None,
                }));
                PutOutcome::Created {
                    generation: 1,
                    revision: 1,
                }
            }
            Entry::Occupied(occupied) if occupied.get().workload == *workload => {
                let record = occupied.get();
                PutOutcome::Unchanged {
                    generation: record.generation,
                    revision: record.revision,
                }
            }
            Entry::Occupied(mut occupied) => {
                let record = Arc::make_mut(occupied.get_mut());
                let stamp = override_stamp(&self.overrides, workload);
                let new_revision =
                    record.workload.template != workload.template || record.overrides != stamp;
                record.generation += 1;
                record.workload = workload.clone();
                record.updated_ms = now_ms;
                record.overrides = stamp;
                if new_revision {
                    let placed = super::revisions::placed_clusters(
                        self.placements.get(occupied.key()).map(Arc::as_ref),
                    );
                    Arc::make_mut(occupied.get_mut()).new_revision(selected, &placed, now_ms);
                } else if workload.rollout.clusters.is_none() {
                    // No longer staged: every cluster runs the latest revision.
                    record.rollout = None;
                }
                let record = occupied.get();
                PutOutcome::Configured {
                    generation: record.generation,
                    revision: record.revision,
                }
            }
        }
    }

    fn put_policies(
        &mut self,
        policies: &[PolicyObject],
        overrides: &[OverrideObject],
        now_ms: u64,
    ) {
        for p in policies {
            let key = policy_key(&p.kind, p.namespace.as_deref(), &p.name);
            match self.policies.get_mut(&key) {
                Some(r) if r.policy == *p => {}
                Some(r) => {
                    r.policy = p.clone();
                    r.generation += 1;
                }
                None => {
                    self.policies.insert(
                        key,
                        PolicyRecord {
                            policy: p.clone(),
                            generation: 1,
                        },
                    );
                }
            }
        }
        for o in overrides {
            let key = policy_key(&o.kind, o.namespace.as_deref(), &o.name);
            match self.overrides.get_mut(&key) {
                Some(r) if r.policy == *o => {}
                Some(r) => {
                    r.policy = o.clone();
                    r.generation += 1;
                }
                None => {
                    self.overrides.insert(
                        key,
                        OverrideRecord {
                            policy: o.clone(),
                            generation: 1,
                        },
                    );
                }
            }
        }
        if !overrides.is_empty() {
            self.restamp_overrides(now_ms);
        }
    }

    /// The overrides that select `workload`, with their generations.
    pub fn override_stamp(&self, workload: &Workload) -> Vec<(String, u64)> {
        override_stamp(&self.overrides, workload)
    }

    /// After override policies changed: a new revision for every workload whose set of
    /// overrides (or their generations) changed. The workload's generation stays: placement
    /// does not read overrides.
    fn restamp_overrides(&mut self, now_ms: u64) {
        let (overrides, placements) = (&self.overrides, &self.placements);
        for (key, record) in self.workloads.iter_mut() {
            let stamp = override_stamp(overrides, &record.workload);
            if stamp != record.overrides {
                let record = Arc::make_mut(record);
                record.overrides = stamp;
                let selected = super::revisions::selected_overrides(overrides, &record.workload);
                let placed =
                    super::revisions::placed_clusters(placements.get(key).map(Arc::as_ref));
                record.new_revision(selected, &placed, now_ms);
            }
        }
    }

    /// The stored placement of the workload `key`.
    pub fn placement(&self, key: &WorkloadKey) -> Option<&Placement> {
        self.placements.get(key).map(Arc::as_ref)
    }

    /// The placement policies in force, for binding workloads (see
    /// [`hansa_core::manifest::governing`]).
    pub fn placement_policies(&self) -> impl Iterator<Item = &PolicyObject> + Clone {
        self.policies.values().map(|r| &r.policy)
    }

    /// The override policies that select `workload`, in the order they are applied.
    pub fn overrides_for(&self, workload: &Workload) -> Vec<&OverrideObject> {
        let mut out: Vec<&OverrideObject> = self
            .overrides
            .values()
            .map(|r| &r.policy)
            .filter(|o| o.selects(workload))
            .collect();
        out.sort_by(|a, b| a.apply_order().cmp(&b.apply_order()));
        out
    }

    fn set_placement(&mut self, placement: &Placement) -> CommandResponse {
        let key = placement_key(placement);
        let Some(record) = self.workloads.get(&key) else {
            return CommandResponse::Ignored(format!("workload {key} no longer exists"));
        };
        if placement.generation != record.generation {
            return CommandResponse::Ignored(format!(
                "placement for workload {key} was solved for generation {}, the workload is at \
                 generation {}",
                placement.generation, record.generation
            ));
        }
        self.placements.insert(key, Arc::new(placement.clone()));
        CommandResponse::Done
    }
}

fn override_stamp(
    overrides: &BTreeMap<String, OverrideRecord>,
    workload: &Workload,
) -> Vec<(String, u64)> {
    overrides
        .iter()
        .filter(|(_, r)| r.policy.selects(workload))
        .map(|(k, r)| (k.clone(), r.generation))
        .collect()
}

/// Serialises a map as the list of its values; deserialising rebuilds the keys from the values
/// and rejects duplicates.
mod keyed_list {
    use std::collections::BTreeMap;

    use hansa_core::{Cluster, Placement, WorkloadKey};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{policy_key, OverrideRecord, PolicyRecord, Record, WorkloadRecord};

    pub trait Keyed {
        type Key: Ord + std::fmt::Display;
        fn key(&self) -> Self::Key;
    }

    impl<T: Keyed> Keyed for std::sync::Arc<T> {
        type Key = T::Key;
        fn key(&self) -> T::Key {
            T::key(self)
        }
    }

    impl Keyed for WorkloadRecord {
        type Key = WorkloadKey;
        fn key(&self) -> WorkloadKey {
            self.workload.key()
        }
    }

    impl Keyed for Cluster {
        type Key = String;
        fn key(&self) -> String {
            self.name.clone()
        }
    }

    impl Keyed for PolicyRecord {
        type Key = String;
        fn key(&self) -> String {
            let p = &self.policy;
            policy_key(&p.kind, p.namespace.as_deref(), &p.name)
        }
    }

    impl Keyed for OverrideRecord {
        type Key = String;
        fn key(&self) -> String {
            let p = &self.policy;
            policy_key(&p.kind, p.namespace.as_deref(), &p.name)
        }
    }

    impl Keyed for Record {
        type Key = String;
        fn key(&self) -> String {
            self.key.clone()
        }
    }

    impl Keyed for Placement {
        type Key = WorkloadKey;
        fn key(&self) -> WorkloadKey {
            super::placement_key(self)
        }
    }

    pub fn serialize<K, V, S>(map: &BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        V: Serialize,
        S: Serializer,
    {
        serializer.collect_seq(map.values())
    }

    pub fn deserialize<'de, V, D>(deserializer: D) -> Result<BTreeMap<V::Key, V>, D::Error>
    where
        V: Keyed + Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let values = Vec::<V>::deserialize(deserializer)?;
        let mut map = BTreeMap::new();
        for value in values {
            let key = value.key();
            if map.contains_key(&key) {
                return Err(D::Error::custom(format!("{key} is listed twice")));
            }
            map.insert(key, value);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hansa_core::{PlacementSpec, TaskTemplate};

    fn workload(name: &str, image: &str, replicas: u32) -> Workload {
        Workload {
            name: name.into(),
            namespace: "default".into(),
            labels: BTreeMap::new(),
            format: Default::default(),
            replicas,
            template: TaskTemplate {
                image: Some(image.into()),
                ..Default::default()
            },
            placement: PlacementSpec::default(),
            service: None,
            update: Default::default(),
            rollout: Default::default(),
        }
    }

    fn cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            region: "eu".into(),
            zone: String::new(),
            provider: String::new(),
            labels: BTreeMap::new(),
            runtimes: vec![],
            addresses: vec![],
            allocatable: Default::default(),
            available: Default::default(),
            health: ClusterHealth::Ready,
            cordoned: false,
            taints: Vec::new(),
            nodes: Vec::new(),
        }
    }

    fn placement(name: &str, generation: u64) -> Placement {
        Placement {
            workload: name.into(),
            namespace: "default".into(),
            generation,
            clusters: BTreeMap::from([("eu-1".to_string(), 2)]),
            explanation: Default::default(),
        }
    }

    fn put(state: &mut FederationState, workloads: Vec<Workload>, now_ms: u64) -> CommandResponse {
        state.apply(&Command::put_workloads(workloads, now_ms))
    }

    #[test]
    fn put_creates_then_reports_unchanged_then_configured() {
        let mut state = FederationState::default();
        let web = workload("web", "nginx:1", 2);
        assert_eq!(
            put(&mut state, vec![web.clone()], 10),
            CommandResponse::Workloads(vec![PutOutcome::Created {
                generation: 1,
                revision: 1
            }])
        );
        assert_eq!(
            put(&mut state, vec![web.clone()], 20),
            CommandResponse::Workloads(vec![PutOutcome::Unchanged {
                generation: 1,
                revision: 1
            }])
        );
        let record = &state.workloads[&web.key()];
        assert_eq!((record.created_ms, record.updated_ms), (10, 10));

        // Scaling changes the spec but not the template: a new generation, the same revision.
        let scaled = workload("web", "nginx:1", 5);
        assert_eq!(
            put(&mut state, vec![scaled], 30),
            CommandResponse::Workloads(vec![PutOutcome::Configured {
                generation: 2,
                revision: 1
            }])
        );
        // A new image changes the template: both move.
        let upgraded = workload("web", "nginx:2", 5);
        assert_eq!(
            put(&mut state, vec![upgraded.clone()], 40),
            CommandResponse::Workloads(vec![PutOutcome::Configured {
                generation: 3,
                revision: 2
            }])
        );
        let record = &state.workloads[&web.key()];
        assert_eq!(record.workload, upgraded);
        assert_eq!((record.created_ms, record.updated_ms), (10, 40));
    }

    #[test]
    fn a_label_change_is_a_new_generation_of_the_same_revision() {
        let mut state = FederationState::default();
        put(&mut state, vec![workload("web", "nginx:1", 2)], 1);
        let mut labelled = workload("web", "nginx:1", 2);
        labelled.labels.insert("team".into(), "edge".into());
        assert_eq!(
            put(&mut state, vec![labelled], 2),
            CommandResponse::Workloads(vec![PutOutcome::Configured {
                generation: 2,
                revision: 1
            }])
        );
    }

    #[test]
    fn a_batch_with_a_duplicate_changes_nothing() {
        let mut state = FederationState::default();
        put(&mut state, vec![workload("api", "api:1", 1)], 1);
        let before = state.clone();
        let response = put(
            &mut state,
            vec![
                workload("web", "nginx:1", 2),
                workload("api", "api:2", 1),
                workload("web", "nginx:2", 2),
            ],
            2,
        );
        assert!(
            matches!(&response, CommandResponse::Ignored(why) if why.contains("default/web")),
            "{response:?}"
        );
        assert_eq!(state, before);
    }

    #[test]
    fn a_batch_reports_one_outcome_per_workload_in_order() {
        let mut state = FederationState::default();
        put(&mut state, vec![workload("b", "b:1", 1)], 1);
        let response = put(
            &mut state,
            vec![workload("c", "c:1", 1), workload("b", "b:1", 1)],
            2,
        );
        assert_eq!(
            response,
            CommandResponse::Workloads(vec![
                PutOutcome::Created {
                    generation: 1,
                    revision: 1
                },
                PutOutcome::Unchanged {
                    generation: 1,
                    revision: 1
                },
            ])
        );
    }

    #[test]
    fn placements_for_another_generation_or_a_missing_workload_are_ignored() {
        let mut state = FederationState::default();
        let gone = state.apply(&Command::SetPlacement {
            placement: placement("web", 1),
        });
        assert!(matches!(gone, CommandResponse::Ignored(_)), "{gone:?}");

        put(&mut state, vec![workload("web", "nginx:1", 2)], 1);
        put(&mut state, vec![workload("web", "nginx:1", 3)], 2);
        let stale = state.apply(&Command::SetPlacement {
            placement: placement("web", 1),
        });
        assert!(
            matches!(&stale, CommandResponse::Ignored(why) if why.contains("generation 1")),
            "{stale:?}"
        );
        assert!(state.placements.is_empty());

        let current = state.apply(&Command::SetPlacement {
            placement: placement("web", 2),
        });
        assert_eq!(current, CommandResponse::Done);
        assert_eq!(
            state.placements[&WorkloadKey::new("default", "web")].generation,
            2
        );
    }

    #[test]
    fn delete_removes_the_placement_too() {
        let mut state = FederationState::default();
        put(&mut state, vec![workload("web", "nginx:1", 2)], 1);
        state.apply(&Command::SetPlacement {
            placement: placement("web", 1),
        });
        let key = WorkloadKey::new("default", "web");
        assert_eq!(
            state.apply(&Command::DeleteWorkload { key: key.clone() }),
            CommandResponse::Deleted(true)
        );
        assert!(state.workloads.is_empty() && state.placements.is_empty());
        assert_eq!(
            state.apply(&Command::DeleteWorkload { key }),
            CommandResponse::Deleted(false)
        );
    }

    #[test]
    fn upsert_cluster_keeps_the_stored_cordon() {
        let mut state = FederationState::default();
        state.apply(&Command::UpsertCluster {
            cluster: cluster("eu-1"),
        });
        state.clusters.get_mut("eu-1").unwrap().cordoned = true;

        let mut again = cluster("eu-1");
        again.region = "eu-west".into();
        state.apply(&Command::UpsertCluster { cluster: again });
        let stored = &state.clusters["eu-1"];
        assert!(stored.cordoned);
        assert_eq!(stored.region, "eu-west");
    }

    #[test]
    fn health_of_an_unknown_cluster_is_ignored() {
        let mut state = FederationState::default();
        let response = state.apply(&Command::SetClusterHealth {
            name: "nowhere".into(),
            health: ClusterHealth::Unreachable,
        });
        assert!(matches!(response, CommandResponse::Ignored(_)));
        state.apply(&Command::UpsertCluster {
            cluster: cluster("eu-1"),
        });
        state.apply(&Command::SetClusterHealth {
            name: "eu-1".into(),
            health: ClusterHealth::Unreachable,
        });
        assert_eq!(state.clusters["eu-1"].health, ClusterHealth::Unreachable);
    }

    /// Peer mode versions only `touched_objects`; anything else a command changed would
    /// never reach the other peers.
    #[test]
    fn commands_change_only_the_objects_they_declare() {
        let commands = vec![
            Command::UpsertCluster {
                cluster: cluster("eu-1"),
            },
            Command::put_workloads(
                vec![workload("web", "nginx:1", 2), workload("api", "api:1", 1)],
                1,
            ),
            Command::SetPlacement {
                placement: placement("web", 1),
            },
            Command::SetPlacement {
                placement: placement("api", 1),
            },
            Command::SetClusterHealth {
                name: "eu-1".into(),
                health: ClusterHealth::Unreachable,
            },
            Command::put_workloads(vec![workload("web", "nginx:2", 2)], 2),
            // Policies only: an override moves the revisions of the workloads it selects.
            policies_command(),
            Command::SetClusterCordon {
                name: "eu-1".into(),
                cordoned: true,
            },
            Command::SetClusterTaints {
                name: "eu-1".into(),
                add: vec![Taint::parse("dedicated=gpu:NoSchedule").unwrap()],
                remove: vec![],
            },
            Command::UpsertCluster {
                cluster: cluster("eu-1"),
            },
            Command::SetClusterTaints {
                name: "eu-1".into(),
                add: vec![],
                remove: vec!["dedicated".into()],
            },
            Command::DeletePolicy {
                key: policy_key("OverridePolicy", Some("default"), "pin"),
            },
            Command::DeletePolicy {
                key: policy_key("PlacementPolicy", Some("default"), "gold"),
            },
            Command::DeleteWorkload {
                key: WorkloadKey::new("default", "api"),
            },
        ];
        let mut state = FederationState::default();
        for cmd in &commands {
            let before = objects(&state);
            state.apply(cmd);
            let after = objects(&state);
            let touched: Vec<String> = cmd
                .touched_objects(&state_before(&commands, cmd))
                .iter()
                .map(ObjectKey::storage_key)
                .collect();
            for key in before.keys().chain(after.keys()) {
                if before.get(key) != after.get(key) {
                    assert!(touched.contains(key), "{cmd:?} changed {key} undeclared");
                }
            }
        }
    }

    /// A placement policy and an override policy selecting `web`.
    fn policies_command() -> Command {
        let parsed = hansa_core::manifest::parse_manifests(&[hansa_core::ManifestFile {
            name: "p.yaml",
            content: r#"
apiVersion: hansa.dev/v1
kind: PlacementPolicy
metadata: {name: gold}
spec:
  selector: {names: [web]}
  placement: {clusterAffinity: {clusterNames: [eu-1]}}
---
apiVersion: hansa.dev/v1
kind: OverridePolicy
metadata: {name: pin}
spec:
  selector: {names: [web]}
  rules: [{image: {tag: pinned}}]
"#,
        }])
        .unwrap();
        Command::PutWorkloads {
            workloads: vec![],
            now_ms: 3,
            policies: parsed.policies,
            overrides: parsed.overrides,
        }
    }

    /// The state just before `cmd` when `commands` are applied in order.
    fn state_before(commands: &[Command], cmd: &Command) -> FederationState {
        let mut state = FederationState::default();
        for c in commands {
            if std::ptr::eq(c, cmd) {
                break;
            }
            state.apply(c);
        }
        state
    }

    #[test]
    fn operator_taints_survive_registrations_and_come_off_by_name() {
        let mut state = FederationState::default();
        let mut agent = cluster("eu-1");
        agent.taints = vec![Taint::parse("zone=edge:PreferNoSchedule").unwrap()];
        state.apply(&Command::UpsertCluster {
            cluster: agent.clone(),
        });
        let mut gpu = Taint::parse("dedicated=gpu:NoSchedule").unwrap();
        gpu.added_ms = 5;
        state.apply(&Command::SetClusterTaints {
            name: "eu-1".into(),
            add: vec![gpu.clone()],
            remove: vec![],
        });
        // The agent registers again (a capacity change): the operator's taint stays.
        state.apply(&Command::UpsertCluster {
            cluster: agent.clone(),
        });
        assert_eq!(state.clusters["eu-1"].taints.len(), 2);
        assert!(state.clusters["eu-1"].taints.contains(&gpu));
        state.apply(&Command::SetClusterTaints {
            name: "eu-1".into(),
            add: vec![],
            remove: vec!["dedicated:NoSchedule".into()],
        });
        assert_eq!(state.clusters["eu-1"].taints, agent.taints);
        assert!(state.operator_taints.is_empty());
    }

    #[test]
    fn a_policy_change_keeps_workload_generations_and_overrides_move_revisions() {
        let mut state = FederationState::default();
        put(&mut state, vec![workload("web", "nginx:1", 2)], 1);
        let key = WorkloadKey::new("default", "web");
        state.apply(&policies_command());
        let record = &state.workloads[&key];
        assert_eq!((record.generation, record.revision), (1, 2));
        assert_eq!(state.policies.len(), 1);
        // The same policies again: nothing moves.
        state.apply(&policies_command());
        let record = &state.workloads[&key];
        assert_eq!((record.generation, record.revision), (1, 2));
        // A template change moves the revision once; the override stamp stays.
        put(&mut state, vec![workload("web", "nginx:2", 2)], 2);
        assert_eq!(state.workloads[&key].revision, 3);
        assert_eq!(state.workloads[&key].overrides.len(), 1);
    }

    fn objects(state: &FederationState) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &state.policies {
            out.insert(
                ObjectKey::Policy(k.clone()).storage_key(),
                serde_json::to_string(v).unwrap(),
            );
        }
        for (k, v) in &state.overrides {
            out.insert(
                ObjectKey::Override(k.clone()).storage_key(),
                serde_json::to_string(v).unwrap(),
            );
        }
        for (k, v) in &state.operator_taints {
            out.insert(
                ObjectKey::OperatorTaints(k.clone()).storage_key(),
                serde_json::to_string(v).unwrap(),
            );
        }
        for (k, v) in &state.workloads {
            out.insert(
                ObjectKey::Workload(k.clone()).storage_key(),
                serde_json::to_string(v).unwrap(),
            );
        }
        for (k, v) in &state.clusters {
            out.insert(
                ObjectKey::Cluster(k.clone()).storage_key(),
                serde_json::to_string(v).unwrap(),
            );
        }
        for (k, v) in &state.placements {
            out.insert(
                ObjectKey::Placement(k.clone()).storage_key(),
                serde_json::to_string(v).unwrap(),
            );
        }
        out
    }

    #[test]
    fn state_round_trips_through_json_and_rejects_duplicates() {
        let mut state = FederationState::default();
        put(&mut state, vec![workload("web", "nginx:1", 2)], 1);
        state.apply(&Command::UpsertCluster {
            cluster: cluster("eu-1"),
        });
        state.apply(&Command::SetPlacement {
            placement: placement("web", 1),
        });
        let json = serde_json::to_string(&state).unwrap();
        let back: FederationState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);

        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let clusters = value["clusters"].as_array_mut().unwrap();
        clusters.push(clusters[0].clone());
        let err = serde_json::from_value::<FederationState>(value).unwrap_err();
        assert!(err.to_string().contains("eu-1 is listed twice"), "{err}");
    }

    #[test]
    fn commands_round_trip_through_json() {
        for cmd in [
            Command::put_workloads(vec![workload("web", "nginx:1", 2)], 7),
            policies_command(),
        ] {
            let json = serde_json::to_vec(&cmd).unwrap();
            assert_eq!(serde_json::from_slice::<Command>(&json).unwrap(), cmd);
        }
        let response = CommandResponse::Workloads(vec![PutOutcome::Created {
            generation: 1,
            revision: 1,
        }]);
        let json = serde_json::to_vec(&response).unwrap();
        assert_eq!(
            serde_json::from_slice::<CommandResponse>(&json).unwrap(),
            response
        );
    }

    fn stamp(ms: u64, peer: &str) -> Timestamp {
        Timestamp {
            physical_ms: ms,
            logical: 0,
            node: hansa_gossip::NodeId::from_name(peer),
        }
    }

    fn stamped(state: &mut FederationState, cmd: Command, ms: u64, peer: &str) -> Vec<Record> {
        let cmd = Command::Stamped {
            command: Box::new(cmd),
            hlc: stamp(ms, peer),
            origin: peer.into(),
        };
        match state.apply(&cmd) {
            CommandResponse::Stamped { records, .. } => {
                records.iter().map(|k| state.records[k].clone()).collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn stamped_writes_version_only_what_changed() {
        let mut state = FederationState::default();
        let written = stamped(
            &mut state,
            Command::put_workloads(vec![workload("web", "nginx:1", 2)], 10),
            10,
            "p1",
        );
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].key, "workload/default/web");
        assert_eq!(
            (written[0].generation, written[0].origin.as_str()),
            (1, "p1")
        );
        // The same apply again changes nothing, so writes no version.
        let again = stamped(
            &mut state,
            Command::put_workloads(vec![workload("web", "nginx:1", 2)], 20),
            20,
            "p1",
        );
        assert!(again.is_empty(), "{again:?}");
        // A delete is a tombstone one generation up, for the workload and not its absent
        // placement.
        let deleted = stamped(
            &mut state,
            Command::DeleteWorkload {
                key: WorkloadKey::new("default", "web"),
            },
            30,
            "p2",
        );
        assert_eq!(deleted.len(), 1);
        assert!(deleted[0].is_tombstone());
        assert_eq!(
            (deleted[0].generation, deleted[0].origin.as_str()),
            (2, "p2")
        );
    }

    #[test]
    fn merge_installs_winners_and_refuses_losers_and_lies() {
        let mut origin = FederationState::default();
        let mut records = stamped(
            &mut origin,
            Command::put_workloads(vec![workload("web", "nginx:1", 2)], 10),
            10,
            "p1",
        );
        records.extend(stamped(
            &mut origin,
            Command::UpsertCluster {
                cluster: cluster("eu-1"),
            },
            11,
            "p1",
        ));
        let mut other = FederationState::default();
        assert_eq!(
            other.apply(&Command::Merge {
                records: records.clone()
            }),
            CommandResponse::Merged(2)
        );
        assert_eq!(other.workloads, origin.workloads);
        assert_eq!(other.clusters, origin.clusters);
        // Again: nothing wins over itself.
        assert_eq!(
            other.apply(&Command::Merge { records }),
            CommandResponse::Merged(0)
        );
        // A body naming another object than its key is refused.
        let lie = Record::live(
            RecordKind::Workload,
            "workload/default/api",
            9,
            stamp(50, "p3"),
            "p3",
            serde_json::to_vec(&origin.workloads[&WorkloadKey::new("default", "web")])
                .expect("json"),
        );
        assert_eq!(
            other.apply(&Command::Merge { records: vec![lie] }),
            CommandResponse::Merged(0)
        );
        assert!(!other
            .workloads
            .contains_key(&WorkloadKey::new("default", "api")));
    }

    #[test]
    fn old_tombstones_are_forgotten_and_live_records_kept() {
        let mut state = FederationState::default();
        stamped(
            &mut state,
            Command::put_workloads(
                vec![workload("web", "img", 1), workload("api", "img", 1)],
                1,
            ),
            10,
            "p1",
        );
        stamped(
            &mut state,
            Command::DeleteWorkload {
                key: WorkloadKey::new("default", "web"),
            },
            20,
            "p1",
        );
        let forget = |before_ms| Command::ForgetTombstones { before_ms };
        assert_eq!(state.apply(&forget(20)), CommandResponse::Merged(0));
        assert!(state.records.contains_key("workload/default/web"));
        assert_eq!(state.apply(&forget(21)), CommandResponse::Merged(1));
        assert!(!state.records.contains_key("workload/default/web"));
        assert!(state.records.contains_key("workload/default/api"));
    }

    proptest::proptest! {
        /// Peers that receive the same versions in any order, any number of times, end with
        /// the same state.
        #[test]
        fn merging_is_independent_of_order(
            writes in proptest::collection::vec((0usize..3, 0usize..3, 1u32..5, proptest::bool::ANY), 1..12),
            order in proptest::collection::vec(0usize..1000, 0..40),
        ) {
            let peers = ["p1", "p2", "p3"];
            let names = ["web", "api", "db"];
            // Each peer writes on its own copy: concurrent versions of the same keys.
            let mut copies = vec![FederationState::default(); 3];
            let mut versions: Vec<Record> = Vec::new();
            for (i, (peer, name, replicas, delete)) in writes.into_iter().enumerate() {
                let cmd = if delete {
                    Command::DeleteWorkload { key: WorkloadKey::new("default", names[name]) }
                } else {
                    Command::put_workloads(vec![workload(names[name], "img", replicas)], 1)
                };
                versions.extend(stamped(&mut copies[peer], cmd, 100 + i as u64 % 4, peers[peer]));
            }
            let mut forward = FederationState::default();
            forward.apply(&Command::Merge { records: versions.clone() });
            let mut shuffled = FederationState::default();
            let mut remaining = versions.clone();
            for pick in order {
                if remaining.is_empty() { break }
                let record = remaining.remove(pick % remaining.len());
                shuffled.apply(&Command::Merge { records: vec![record.clone(), record] });
            }
            shuffled.apply(&Command::Merge { records: remaining });
            let mut backward = FederationState::default();
            versions.reverse();
            backward.apply(&Command::Merge { records: versions });
            proptest::prop_assert_eq!(&forward, &shuffled);
            proptest::prop_assert_eq!(&forward, &backward);
        }
    }
}
