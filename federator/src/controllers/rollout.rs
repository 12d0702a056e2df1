//! The rollout controller: moves every staged rollout along (`hansa_core::rollout::step`),
//! from the replica health the agents report (soft state), and stores each step as a Raft
//! command. Runs on the leader only; the proposer's clock stamps every step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hansa_core::rollout::{step, Observed, RolloutPhase};
use hansa_core::{ReplicaState, ReplicaStatus, WorkloadKey};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::controllers::assignments;
use crate::liveness::Liveness;
use crate::store::{Command, CommandResponse, FederationState, Store};

/// How often rollouts are looked at: the resolution of `minHealthySeconds` and deadlines.
const TICK: Duration = Duration::from_millis(500);
/// Store changes arriving this close together are looked at once: a busy store changes many
/// times a millisecond.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Every this many looks, the progressing rollouts are found again by walking every workload
/// rather than from the store's change feed (lost wake-ups).
const FULL_EVERY: u32 = 120;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// In peer mode only the rollouts of workloads this peer owns are driven here.
pub async fn run(
    store: Store,
    live: Arc<Liveness>,
    peer: Option<Arc<crate::peer::PeerMode>>,
    stop: CancellationToken,
) {
    info!("rollout controller started");
    let mut changes = store.subscribe();
    // Registered before the first full walk, so no change falls between the two.
    let feed = store.changes();
    let mut tracked = BTreeSet::new();
    let mut looks = 0u32;
    loop {
        let changed = feed.take();
        let steps = store.read(|state| {
            if looks.is_multiple_of(FULL_EVERY) {
                tracked = state
                    .workloads
                    .keys()
                    .filter(|key| progressing(state, key))
                    .cloned()
                    .collect();
            } else {
                for key in changed {
                    if progressing(state, &key) {
                        tracked.insert(key);
                    } else {
                        tracked.remove(&key);
                    }
                }
            }
            looks = looks.wrapping_add(1);
            let mut steps = decide(state, &live, now_ms(), &tracked);
            if let Some(peer) = &peer {
                let live_peers = peer.live_peers();
                steps.retain(|command| match command {
                    Command::SetRollout { key, .. } => peer.owns(state, key, &live_peers),
                    _ => true,
                });
            }
            steps
        });
        for command in steps {
            if let Command::SetRollout { key, rollout } = &command {
                let stages: Vec<String> = rollout
                    .clusters
                    .iter()
                    .map(|(c, s)| format!("{c}={}@{}", s.status, s.revision))
                    .collect();
                info!(workload = %key, revision = rollout.revision, phase = %rollout.phase, reason = %rollout.reason, stages = %stages.join(" "), "rollout step");
            }
            match store.propose(command).await {
                Ok(CommandResponse::Ignored(why)) => info!(%why, "rollout step not taken"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "could not store a rollout step"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
            changed = changes.changed() => if changed.is_err() { break },
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(DEBOUNCE) => {}
        }
        changes.borrow_and_update();
    }
}

/// Whether the workload's rollout is one the controller moves along.
fn progressing(state: &FederationState, key: &WorkloadKey) -> bool {
    state
        .workloads
        .get(key)
        .and_then(|r| r.rollout.as_ref())
        .is_some_and(|r| r.phase == RolloutPhase::Progressing)
}

/// The next step of every progressing rollout.
pub fn decide_all(state: &FederationState, live: &Liveness, now_ms: u64) -> Vec<Command> {
    decide(state, live, now_ms, state.workloads.keys())
}

/// The next step of the progressing rollouts among `keys`.
pub fn decide<'k>(
    state: &FederationState,
    live: &Liveness,
    now_ms: u64,
    keys: impl IntoIterator<Item = &'k WorkloadKey>,
) -> Vec<Command> {
    keys.into_iter()
        .filter_map(|key| Some((key, state.workloads.get(key)?)))
        .filter_map(|(key, record)| {
            let rollout = record.rollout.as_ref()?;
            let spec = record.workload.rollout.clusters.as_ref()?;
            if rollout.phase != RolloutPhase::Progressing {
                return None;
            }
            let observed = observe(state, live, key, rollout.revision);
            let next = step(rollout, spec, &observed, now_ms)?;
            Some(Command::SetRollout {
                key: key.clone(),
                rollout: next,
            })
        })
        .collect()
}

/// What every cluster the workload is placed on reports about `revision`.
fn observe(
    state: &FederationState,
    live: &Liveness,
    key: &WorkloadKey,
    revision: u64,
) -> BTreeMap<String, Observed> {
    let Some(placement) = state.placements.get(key) else {
        return BTreeMap::new();
    };
    placement
        .clusters
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(cluster, placed)| {
            let desired =
                assignments::assignment(state, key, cluster).map_or(*placed, |a| a.replicas);
            let region = state
                .clusters
                .get(cluster)
                .map(|c| c.region.clone())
                .unwrap_or_default();
            let replicas = live
                .get(cluster)
                .filter(|l| l.connected)
                .map(|l| l.replicas)
                .unwrap_or_default();
            (
                cluster.clone(),
                observed(&replicas, key, revision, desired, region),
            )
        })
        .collect()
}

/// One cluster's view of `revision`: its healthy replicas, and the first one failing (failing
/// its health check, exited, or restarted since it started).
pub fn observed(
    replicas: &[ReplicaStatus],
    key: &WorkloadKey,
    revision: u64,
    desired: u32,
    region: String,
) -> Observed {
    let ours = || {
        replicas
            .iter()
            .filter(move |r| &r.workload == key && r.revision == revision)
    };
    let healthy = u32::try_from(ours().filter(|r| r.healthy).count()).unwrap_or(u32::MAX);
    let failing = ours()
        .find(|r| {
            matches!(r.state, ReplicaState::Unhealthy | ReplicaState::Failed) || r.restarts > 0
        })
        .map(|r| {
            let mut why = format!("replica {} is {}", r.id, r.state);
            if r.restarts > 0 {
                why.push_str(&format!(" after {} restarts", r.restarts));
            }
            if !r.message.is_empty() {
                why.push_str(&format!(" ({})", r.message));
            }
            why
        });
    Observed {
        region,
        desired,
        healthy,
        failing,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hansa_core::manifest::{parse_manifests, ManifestFile};
    use hansa_core::rollout::StageStatus;
    use hansa_core::{Placement, Resources};

    use super::*;

    fn replica(id: &str, revision: u64, state: ReplicaState, restarts: u32) -> ReplicaStatus {
        ReplicaStatus {
            id: id.into(),
            workload: WorkloadKey::new("default", "web"),
            revision,
            state,
            healthy: state == ReplicaState::Running,
            restarts,
            endpoints: vec![],
            message: if state == ReplicaState::Unhealthy {
                "http /healthz: 404".into()
            } else {
                String::new()
            },
        }
    }

    #[test]
    fn only_replicas_of_the_revision_count_and_the_first_failing_one_is_named() {
        let key = WorkloadKey::new("default", "web");
        let mut other = replica("api-1", 2, ReplicaState::Failed, 3);
        other.workload = WorkloadKey::new("default", "api");
        let replicas = vec![
            replica("web-1", 1, ReplicaState::Failed, 4),
            replica("web-2", 2, ReplicaState::Running, 0),
            replica("web-3", 2, ReplicaState::Starting, 0),
            other,
        ];
        let seen = observed(&replicas, &key, 2, 2, "eu".into());
        assert_eq!((seen.healthy, seen.failing.as_deref()), (1, None));

        let mut replicas = replicas;
        replicas.push(replica("web-4", 2, ReplicaState::Unhealthy, 0));
        let seen = observed(&replicas, &key, 2, 2, "eu".into());
        assert_eq!(
            seen.failing.as_deref(),
            Some("replica web-4 is Unhealthy (http /healthz: 404)")
        );
        // A replica that came back after restarts is failing too: it crashed.
        let replicas = vec![replica("web-5", 2, ReplicaState::Running, 2)];
        let seen = observed(&replicas, &key, 2, 1, "eu".into());
        assert_eq!(
            seen.failing.as_deref(),
            Some("replica web-5 is Running after 2 restarts")
        );
    }

    /// From the store and the agents' reports to the command the controller proposes.
    #[test]
    fn decides_from_the_store_and_the_agents_reports() {
        let mut state = FederationState::default();
        for (name, region) in [("eu-1", "eu"), ("us-1", "us")] {
            state.apply(&Command::UpsertCluster {
                cluster: crate::dns::synthetic::cluster(name, region, &[]),
            });
        }
        let manifest = |v: &str| {
            format!(
                "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  update: {{clusters: {{minHealthySeconds: 0}}}}\n  template: {{command: [app], env: {{V: \"{v}\"}}}}\n"
            )
        };
        let apply = |state: &mut FederationState, v: &str| {
            let parsed = parse_manifests(&[ManifestFile {
                name: "web.yaml",
                content: &manifest(v),
            }])
            .unwrap();
            state.apply(&Command::put_workloads(parsed.workloads, 1));
        };
        apply(&mut state, "1");
        state.apply(&Command::SetPlacement {
            placement: Placement {
                workload: "web".into(),
                namespace: "default".into(),
                generation: 1,
                clusters: BTreeMap::from([("eu-1".into(), 1), ("us-1".into(), 1)]),
                explanation: Default::default(),
            },
        });
        let live = Liveness::new();
        // Nothing to roll out yet.
        assert!(decide_all(&state, &live, 10).is_empty());

        apply(&mut state, "2");
        let commands = decide_all(&state, &live, 20);
        let [Command::SetRollout { rollout, .. }] = commands.as_slice() else {
            panic!("{commands:?}")
        };
        assert_eq!(rollout.clusters["eu-1"].status, StageStatus::Updating);
        assert_eq!(rollout.clusters["us-1"].status, StageStatus::Waiting);
        state.apply(&commands[0]);

        // eu-1 reports its revision-2 replica healthy: eu-1 is done, us-1 starts.
        let session = live.connect("eu-1", Resources::ZERO);
        live.heartbeat(
            "eu-1",
            session,
            Resources::ZERO,
            vec![replica("web-1", 2, ReplicaState::Running, 0)],
        );
        let commands = decide_all(&state, &live, 30);
        state.apply(&commands[0]);
        let rollout = state.workloads[&WorkloadKey::new("default", "web")]
            .rollout
            .clone()
            .unwrap();
        assert_eq!(rollout.clusters["eu-1"].status, StageStatus::Updated);
        assert_eq!(rollout.clusters["us-1"].status, StageStatus::Updating);
    }
}
