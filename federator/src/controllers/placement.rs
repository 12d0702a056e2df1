//! The placement controller: keeps every workload's stored placement equal to what the
//! engine decides for the current workloads and clusters. Runs on the leader only.
//!
//! It re-solves what is affected, debounced: a workload whose generation changed (or that has
//! no placement for its generation) alone; every workload when a cluster fact that placement
//! reads changed (labels, fields, taints, runtimes, health, cordon, allocatable, a cluster
//! joining or leaving); workloads with unplaced replicas when free capacity moved. A periodic
//! requeue re-solves the unplaced ones and, every few rounds, everything (lost wake-ups).
//! Workloads solved in one pass share capacity and go by priority (`place_all`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hansa_core::manifest::PolicyObject;
use hansa_core::{Cluster, Placement, Workload, WorkloadKey};
use hansa_policies::{place_all, Detail, Item};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::liveness::Liveness;
use crate::peer::PeerMode;
use crate::store::{Command, FederationState, Store, WorkloadRecord};

/// Placements stored in one log entry.
const PROPOSE_AT_ONCE: usize = 1024;
/// A pass over at most this many workloads is solved on the controller's task; a larger one
/// on a blocking thread.
const SOLVE_HERE: usize = 256;
/// Coalesces bursts of changes (an apply of many workloads, agents registering) into one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Re-solve even when nothing was signalled: a lost wake-up must not leave a stale placement.
const REQUEUE: Duration = Duration::from_secs(10);
/// Every this many requeues, re-solve every workload.
const FULL_EVERY: u32 = 6;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The clusters as the engine should see them: free capacity from the live heartbeat when
/// there is one. `place_all` adds back what the solved workloads' own replicas use.
/// In peer mode a cluster whose peer is down counts as unreachable.
fn live_clusters(
    state: &FederationState,
    live: &Liveness,
    peer: Option<&PeerMode>,
) -> Vec<Cluster> {
    state
        .clusters
        .values()
        .map(|cluster| {
            let mut cluster = cluster.clone();
            if let Some(soft) = live.get(&cluster.name).filter(|s| s.connected) {
                cluster.available = soft.available;
            }
            if let Some(peer) = peer {
                peer.overlay(&mut cluster);
            }
            cluster
        })
        .collect()
}

/// Decides the placement of `workload` on the current state, as the controller would if it
/// solved this workload alone: its own running replicas count as free. Used for previews and
/// `hansa explain`, with one decision per cluster (the store keeps only the chosen ones).
/// `workload` must already be bound to its placement policy (see [`bound`]).
pub fn solve(
    state: &FederationState,
    live: &Liveness,
    peer: Option<&PeerMode>,
    workload: &Workload,
    generation: u64,
) -> Placement {
    let clusters = live_clusters(state, live, peer);
    let item = Item {
        workload,
        generation,
        previous: state.placement(&workload.key()),
    };
    place_all(&clusters, &[item], now_ms(), Detail::Full)
        .pop()
        .unwrap_or_default()
}

/// `workload` with the placement of the stored policy that governs it (an inline placement
/// takes precedence).
pub fn bound<'w>(state: &FederationState, workload: &'w Workload) -> Cow<'w, Workload> {
    hansa_core::manifest::bound(workload, state.placement_policies())
}

/// What placement reads from a cluster, apart from free capacity.
#[derive(Debug, Clone, PartialEq)]
struct Facts(Cluster);

impl Facts {
    fn of(cluster: &Cluster) -> Facts {
        let mut c = cluster.clone();
        c.available = Default::default();
        Facts(c)
    }
}

/// What the last pass saw, to tell what changed since.
#[derive(Default)]
struct Seen {
    clusters: BTreeMap<String, Facts>,
    free: BTreeMap<String, hansa_core::Resources>,
    /// Placement policies and their generations.
    policies: BTreeMap<String, u64>,
    /// The workloads whose stored placement leaves replicas unplaced: solved again when free
    /// capacity moves. Kept up to date from the store's change feed.
    unplaced: BTreeSet<WorkloadKey>,
}

/// Why a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Change,
    Requeue { full: bool },
}

/// The workloads to re-solve, and updates `seen`. `changed` are the workloads whose record or
/// placement changed since the last pass: apart from a change that concerns every workload
/// (cluster facts, policies, the periodic full requeue), only they and the unplaced ones are
/// looked at, so a pass costs what changed, not what is stored.
fn affected(
    state: &FederationState,
    clusters: &[Cluster],
    seen: &mut Seen,
    trigger: Trigger,
    changed: BTreeSet<WorkloadKey>,
) -> BTreeSet<WorkloadKey> {
    let facts: BTreeMap<String, Facts> = clusters
        .iter()
        .map(|c| (c.name.clone(), Facts::of(c)))
        .collect();
    let free: BTreeMap<String, hansa_core::Resources> = clusters
        .iter()
        .map(|c| (c.name.clone(), c.available))
        .collect();
    let policies: BTreeMap<String, u64> = state
        .policies
        .iter()
        .map(|(k, r)| (k.clone(), r.generation))
        .collect();
    // A policy change may re-bind any workload without an inline placement.
    let facts_changed = facts != seen.clusters || policies != seen.policies;
    let free_changed = free != seen.free;
    seen.clusters = facts;
    seen.free = free;
    seen.policies = policies;
    let all = facts_changed || trigger == Trigger::Requeue { full: true };
    let unplaced = |key: &WorkloadKey| {
        state
            .placements
            .get(key)
            .is_some_and(|p| p.explanation.unplaced > 0)
    };
    let retry_unplaced = free_changed || matches!(trigger, Trigger::Requeue { .. });
    let wanted = |key: &WorkloadKey, record: &crate::store::WorkloadRecord| {
        let placement = state.placements.get(key);
        let stale = placement.is_none_or(|p| p.generation != record.generation);
        all || stale || (retry_unplaced && unplaced(key))
    };
    if all {
        seen.unplaced = state
            .placements
            .keys()
            .filter(|key| unplaced(key))
            .cloned()
            .collect();
        // Keyed by the workload's key: no key is built for a workload that is not picked.
        return state
            .workloads
            .iter()
            .filter(|(key, record)| wanted(key, record))
            .map(|(key, _)| key.clone())
            .collect();
    }
    for key in &changed {
        if unplaced(key) {
            seen.unplaced.insert(key.clone());
        } else {
            seen.unplaced.remove(key);
        }
    }
    let mut candidates = changed;
    if retry_unplaced {
        candidates.extend(seen.unplaced.iter().cloned());
    }
    candidates.retain(|key| state.workloads.get(key).is_some_and(|r| wanted(key, r)));
    candidates
}

/// What a pass solves, read from the state: the records of the workloads to solve with their
/// stored placements, and the placement policies. The records are shared (`Arc`), so this
/// costs what the pass solves, not what is stored, and the solving needs no lock.
struct Inputs {
    records: Vec<(Arc<WorkloadRecord>, Option<Arc<Placement>>)>,
    policies: Vec<PolicyObject>,
}

impl Inputs {
    fn read(state: &FederationState, keys: &BTreeSet<WorkloadKey>) -> Inputs {
        Inputs {
            records: keys
                .iter()
                .filter_map(|key| {
                    let record = state.workloads.get(key)?;
                    Some((record.clone(), state.placements.get(key).cloned()))
                })
                .collect(),
            policies: state.placement_policies().cloned().collect(),
        }
    }

    /// The placements that differ from what is stored.
    fn pass(&self, clusters: &[Cluster]) -> Vec<Placement> {
        let workloads: Vec<_> = self
            .records
            .iter()
            .map(|(record, _)| hansa_core::manifest::bound(&record.workload, &self.policies))
            .collect();
        let items: Vec<Item<'_>> = self
            .records
            .iter()
            .zip(&workloads)
            .map(|((record, previous), workload)| Item {
                workload,
                generation: record.generation,
                previous: previous.as_deref(),
            })
            .collect();
        // One placement per item, in the items' order.
        place_all(clusters, &items, now_ms(), Detail::Summary)
            .into_iter()
            .zip(&self.records)
            .filter(|(placement, (_, stored))| stored.as_deref() != Some(placement))
            .map(|(placement, _)| placement)
            .collect()
    }
}

pub async fn run(
    store: Store,
    live: Arc<Liveness>,
    peer: Option<Arc<PeerMode>>,
    stop: CancellationToken,
) {
    info!("placement controller started");
    let mut changes = store.subscribe();
    let mut soft = live.subscribe();
    // Hub mode has no peers to watch: a sender that never sends (kept alive here).
    let idle = tokio::sync::watch::channel(0u64).0;
    let mut peers = peer
        .as_ref()
        .map_or_else(|| idle.subscribe(), |p| p.subscribe());
    // Registered before the first (full) pass, so no change falls between the two.
    let feed = store.changes();
    let mut seen = Seen::default();
    let mut trigger = Trigger::Requeue { full: true };
    let mut requeues = 0u32;
    loop {
        let changed = feed.take();
        let (clusters, keys) = store.read(|state| {
            let clusters = live_clusters(state, &live, peer.as_deref());
            let mut keys = affected(state, &clusters, &mut seen, trigger, changed);
            if let Some(peer) = &peer {
                let live_peers = peer.live_peers();
                keys.retain(|key| peer.owns(state, key, &live_peers));
            }
            (clusters, keys)
        });
        debug!(workloads = keys.len(), ?trigger, "placement pass");
        let inputs = store.read(|state| Inputs::read(state, &keys));
        let updates = if keys.len() <= SOLVE_HERE {
            inputs.pass(&clusters)
        } else {
            // Solving every workload takes seconds in a large federation: on a blocking
            // thread, so it holds up no tokio worker (nor the writes they serve).
            match tokio::task::spawn_blocking(move || inputs.pass(&clusters)).await {
                Ok(updates) => updates,
                Err(e) => {
                    // The next full pass solves them again.
                    warn!(error = %e, "a placement pass failed");
                    Vec::new()
                }
            }
        };
        // One log entry per chunk of placements, not one per workload.
        for chunk in updates.chunks(PROPOSE_AT_ONCE) {
            for placement in chunk {
                let workload = format!("{}/{}", placement.namespace, placement.workload);
                info!(%workload, clusters = ?placement.clusters, summary = %placement.explanation.summary, "placing");
            }
            let commands = chunk
                .iter()
                .map(|placement| Command::SetPlacement {
                    placement: placement.clone(),
                })
                .collect();
            if let Err(e) = store.propose(Command::Batch { commands }).await {
                warn!(placements = chunk.len(), error = %e, "could not store placements; retrying");
                feed.restore(
                    chunk
                        .iter()
                        .map(|p| WorkloadKey::new(&p.namespace, &p.workload)),
                );
            }
            if stop.is_cancelled() {
                break;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = changes.changed() => trigger = Trigger::Change,
            _ = soft.changed() => trigger = Trigger::Change,
            _ = peers.changed() => trigger = Trigger::Change,
            _ = tokio::time::sleep(REQUEUE) => {
                requeues += 1;
                trigger = Trigger::Requeue { full: requeues.is_multiple_of(FULL_EVERY) };
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(DEBOUNCE) => {}
        }
        changes.borrow_and_update();
        soft.borrow_and_update();
        peers.borrow_and_update();
    }
    info!("placement controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Command, ObjectKey};
    use hansa_core::{ClusterHealth, PlacementSpec, Resources, RuntimeKind, TaskTemplate};

    fn cluster(name: &str) -> Cluster {
        let room = Resources {
            cpu_millis: 4000,
            memory_bytes: 4 << 30,
            disk_bytes: 0,
        };
        Cluster {
            name: name.into(),
            region: "eu".into(),
            zone: String::new(),
            provider: String::new(),
            labels: BTreeMap::new(),
            runtimes: vec![RuntimeKind::Process],
            addresses: vec![],
            allocatable: room,
            available: room,
            health: ClusterHealth::Ready,
            cordoned: false,
            taints: Vec::new(),
            nodes: Vec::new(),
        }
    }

    fn workload(name: &str) -> Workload {
        Workload {
            name: name.into(),
            namespace: "default".into(),
            labels: BTreeMap::new(),
            format: Default::default(),
            replicas: 2,
            template: TaskTemplate {
                command: vec!["app".into()],
                ..Default::default()
            },
            placement: PlacementSpec::default(),
            service: None,
            update: Default::default(),
            rollout: Default::default(),
        }
    }

    /// Applies commands as the store would, noting the workloads they change for the next
    /// pass as the store's change feed does.
    fn apply(state: &mut FederationState, changed: &mut BTreeSet<WorkloadKey>, cmd: &Command) {
        for object in cmd.touched_objects(state) {
            if let ObjectKey::Workload(key) | ObjectKey::Placement(key) = object {
                changed.insert(key);
            }
        }
        state.apply(cmd);
    }

    /// One pass, with its placements applied; how many workloads it solved.
    fn settle(
        state: &mut FederationState,
        seen: &mut Seen,
        changed: &mut BTreeSet<WorkloadKey>,
        trigger: Trigger,
    ) -> usize {
        let clusters: Vec<Cluster> = state.clusters.values().cloned().collect();
        let keys = affected(state, &clusters, seen, trigger, std::mem::take(changed));
        for placement in Inputs::read(state, &keys).pass(&clusters) {
            apply(state, changed, &Command::SetPlacement { placement });
        }
        keys.len()
    }

    #[test]
    fn only_what_is_affected_is_solved_again() {
        let mut state = FederationState::default();
        let mut changed = BTreeSet::new();
        for name in ["eu-1", "eu-2"] {
            apply(
                &mut state,
                &mut changed,
                &Command::UpsertCluster {
                    cluster: cluster(name),
                },
            );
        }
        apply(
            &mut state,
            &mut changed,
            &Command::put_workloads(vec![workload("a"), workload("b")], 1),
        );
        let mut seen = Seen::default();
        let mut settle =
            |state: &mut FederationState, changed: &mut BTreeSet<WorkloadKey>, trigger| {
                settle(state, &mut seen, changed, trigger)
            };
        assert_eq!(settle(&mut state, &mut changed, Trigger::Change), 2);
        // Nothing changed but the placements just stored: nothing to solve.
        assert_eq!(settle(&mut state, &mut changed, Trigger::Change), 0);
        // One workload changed: only it.
        let mut a = workload("a");
        a.replicas = 3;
        apply(
            &mut state,
            &mut changed,
            &Command::put_workloads(vec![a], 2),
        );
        assert_eq!(settle(&mut state, &mut changed, Trigger::Change), 1);
        // A taint on a cluster: everything, and the taint moves the replicas away.
        let mut tainted = cluster("eu-2");
        tainted.taints.push(hansa_core::Taint {
            key: "maintenance".into(),
            value: String::new(),
            effect: hansa_core::TaintEffect::NoExecute,
            added_ms: 0,
        });
        apply(
            &mut state,
            &mut changed,
            &Command::UpsertCluster { cluster: tainted },
        );
        assert_eq!(settle(&mut state, &mut changed, Trigger::Change), 2);
        for p in state.placements.values() {
            assert_eq!(p.clusters.keys().collect::<Vec<_>>(), ["eu-1"], "{p:?}");
        }
        assert_eq!(
            settle(&mut state, &mut changed, Trigger::Requeue { full: false }),
            0
        );
        assert_eq!(
            settle(&mut state, &mut changed, Trigger::Requeue { full: true }),
            2
        );

        // A workload too big for the free capacity stays partly unplaced; it alone is solved
        // again when capacity frees up, though nothing changed it.
        state.clusters.get_mut("eu-1").unwrap().available.cpu_millis = 2000;
        let mut big = workload("big");
        big.replicas = 2;
        big.template.resources.cpu_millis = 1500;
        apply(
            &mut state,
            &mut changed,
            &Command::put_workloads(vec![big], 3),
        );
        assert_eq!(settle(&mut state, &mut changed, Trigger::Change), 1);
        let key = WorkloadKey::new("default", "big");
        assert!(state.placements[&key].explanation.unplaced > 0);
        assert_eq!(settle(&mut state, &mut changed, Trigger::Change), 0);
        // Free capacity is not a cluster fact: only the unplaced workload is looked at again.
        state.clusters.get_mut("eu-1").unwrap().available.cpu_millis = 4000;
        assert_eq!(settle(&mut state, &mut changed, Trigger::Change), 1);
        assert_eq!(state.placements[&key].explanation.unplaced, 0);
        assert_eq!(settle(&mut state, &mut changed, Trigger::Change), 0);
    }
}
