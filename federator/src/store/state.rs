//! The replicated state machine's data and its pure apply function.
//!
//! Every federator applies the same committed commands in the same order to a
//! `FederationState`, so `apply` must be deterministic: no clocks (the proposer stamps
//! `now_ms`), no randomness, no I/O. It is tested here without Raft.

use std::collections::BTreeMap;

use hansa_core::{Cluster, ClusterHealth, Placement, Workload, WorkloadKey};
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
}

/// Everything the federation has decided. Maps are keyed by the key their values carry
/// (`Workload::key`, `Cluster::name`, the placement's namespace/workload); in JSON each map
/// is a list of its values, so `WorkloadKey` never has to be a JSON object key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FederationState {
    #[serde(with = "keyed_list")]
    pub workloads: BTreeMap<WorkloadKey, WorkloadRecord>,
    #[serde(with = "keyed_list")]
    pub clusters: BTreeMap<String, Cluster>,
    #[serde(with = "keyed_list")]
    pub placements: BTreeMap<WorkloadKey, Placement>,
}

/// A change to the federation's state: the payload of a Raft log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Command {
    /// Creates or updates workloads, all or nothing (already validated by the API).
    PutWorkloads {
        workloads: Vec<Workload>,
        /// The proposer's clock: `apply` must not read one.
        now_ms: u64,
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

/// One stored object; the unit the state machine persists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ObjectKey {
    Workload(WorkloadKey),
    Cluster(String),
    Placement(WorkloadKey),
}

impl ObjectKey {
    /// The object's key in the state machine's table.
    pub(crate) fn storage_key(&self) -> String {
        match self {
            ObjectKey::Workload(k) => format!("workload/{}/{}", k.namespace, k.name),
            ObjectKey::Cluster(name) => format!("cluster/{name}"),
            ObjectKey::Placement(k) => format!("placement/{}/{}", k.namespace, k.name),
        }
    }
}

impl Command {
    /// Every object applying this command may create, change or remove.
    pub(crate) fn touched_objects(&self) -> Vec<ObjectKey> {
        match self {
            Command::PutWorkloads { workloads, .. } => workloads
                .iter()
                .map(|w| ObjectKey::Workload(w.key()))
                .collect(),
            Command::DeleteWorkload { key } => vec![
                ObjectKey::Workload(key.clone()),
                ObjectKey::Placement(key.clone()),
            ],
            Command::UpsertCluster { cluster } => vec![ObjectKey::Cluster(cluster.name.clone())],
            Command::SetClusterHealth { name, .. } => vec![ObjectKey::Cluster(name.clone())],
            Command::SetPlacement { placement } => {
                vec![ObjectKey::Placement(placement_key(placement))]
            }
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
            Command::PutWorkloads { workloads, now_ms } => self.put_workloads(workloads, *now_ms),
            Command::DeleteWorkload { key } => {
                self.placements.remove(key);
                CommandResponse::Deleted(self.workloads.remove(key).is_some())
            }
            Command::UpsertCluster { cluster } => {
                let mut cluster = cluster.clone();
                if let Some(stored) = self.clusters.get(&cluster.name) {
                    cluster.cordoned = stored.cordoned;
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
        match self.workloads.get_mut(&workload.key()) {
            None => {
                self.workloads.insert(
                    workload.key(),
                    WorkloadRecord {
                        workload: workload.clone(),
                        generation: 1,
                        revision: 1,
                        created_ms: now_ms,
                        updated_ms: now_ms,
                    },
                );
                PutOutcome::Created {
                    generation: 1,
                    revision: 1,
                }
            }
            Some(record) if record.workload == *workload => PutOutcome::Unchanged {
                generation: record.generation,
                revision: record.revision,
            },
            Some(record) => {
                if record.workload.template != workload.template {
                    record.revision += 1;
                }
                record.generation += 1;
                record.workload = workload.clone();
                record.updated_ms = now_ms;
                PutOutcome::Configured {
                    generation: record.generation,
                    revision: record.revision,
                }
            }
        }
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
        self.placements.insert(key, placement.clone());
        CommandResponse::Done
    }
}

/// Serialises a map as the list of its values; deserialising rebuilds the keys from the values
/// and rejects duplicates.
mod keyed_list {
    use std::collections::BTreeMap;

    use hansa_core::{Cluster, Placement, WorkloadKey};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::WorkloadRecord;

    pub trait Keyed {
        type Key: Ord + std::fmt::Display;
        fn key(&self) -> Self::Key;
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
        state.apply(&Command::PutWorkloads { workloads, now_ms })
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

    /// The state machine persists only `touched_objects`; anything else a command changed
    /// would be lost on restart.
    #[test]
    fn commands_change_only_the_objects_they_declare() {
        let commands = vec![
            Command::UpsertCluster {
                cluster: cluster("eu-1"),
            },
            Command::PutWorkloads {
                workloads: vec![workload("web", "nginx:1", 2), workload("api", "api:1", 1)],
                now_ms: 1,
            },
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
            Command::PutWorkloads {
                workloads: vec![workload("web", "nginx:2", 2)],
                now_ms: 2,
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
                .touched_objects()
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

    fn objects(state: &FederationState) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
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
        let cmd = Command::PutWorkloads {
            workloads: vec![workload("web", "nginx:1", 2)],
            now_ms: 7,
        };
        let json = serde_json::to_vec(&cmd).unwrap();
        assert_eq!(serde_json::from_slice::<Command>(&json).unwrap(), cmd);
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
}
