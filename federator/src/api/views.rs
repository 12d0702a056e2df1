//! What the API returns for `get` and `describe`: store records joined with soft state.
//! Serialised as JSON on the wire; the CLI renders them as tables, YAML or JSON.

use std::collections::BTreeMap;

use hansa_core::{
    Cluster, ClusterHealth, Endpoint, Explanation, ManifestFormat, Placement, ReplicaStatus,
    Resources, Unplaced, Workload,
};
use serde::{Deserialize, Serialize};

/// Where a workload stands, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadPhase {
    /// No placement yet, or no cluster can take any replica.
    Pending,
    /// Placed, not every replica healthy yet.
    Progressing,
    /// Every placed replica is healthy, and all desired replicas are placed.
    Running,
    /// Some replicas are placed and healthy, others fit nowhere.
    Degraded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadView {
    pub namespace: String,
    pub name: String,
    pub format: ManifestFormat,
    pub generation: u64,
    pub revision: u64,
    /// Replicas the placement asks for across clusters.
    pub desired: u32,
    pub placed: u32,
    pub healthy: u32,
    pub phase: WorkloadPhase,
    pub clusters: BTreeMap<String, u32>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    #[serde(flatten)]
    pub cluster: Cluster,
    pub connected: bool,
    /// Milliseconds since the agent was last heard from by this federator, if ever.
    pub last_seen_ms: Option<u64>,
    /// Live free capacity from the last heartbeat.
    pub live_available: Option<Resources>,
    pub replicas: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementView {
    #[serde(flatten)]
    pub placement: Placement,
    pub desired: u32,
    pub pending: bool,
}

/// Replicas of one workload in one cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReplicas {
    pub cluster: String,
    pub health: ClusterHealth,
    pub assigned: u32,
    pub replicas: Vec<ReplicaStatus>,
    /// Assigned replicas the cluster's agent could place on none of its nodes, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplaced: Option<Unplaced>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadDescription {
    pub summary: WorkloadView,
    pub workload: Workload,
    pub explanation: Option<Explanation>,
    /// The engine's decision for every cluster, solved again now on the current state (the
    /// store keeps only the clusters that were chosen): what `hansa explain` prints.
    #[serde(default)]
    pub detailed: Option<Explanation>,
    /// Replicas per cluster of that fresh decision; equal to the stored placement unless
    /// something changed since it was stored.
    #[serde(default)]
    pub detailed_clusters: BTreeMap<String, u32>,
    pub clusters: Vec<ClusterReplicas>,
    /// Healthy endpoints, cluster by cluster.
    pub endpoints: Vec<ClusterEndpoint>,
    /// The override rules that change what each cluster runs, in the order they apply
    /// (`OverridePolicy default/eu-mirror rule 1`); clusters without any are absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEndpoint {
    pub cluster: String,
    pub replica: String,
    #[serde(flatten)]
    pub endpoint: Endpoint,
}

/// One peer of a peer-mode federation as the answering peer sees it (`hansa get peers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    pub name: String,
    /// The member cluster the peer runs next to.
    pub cluster: String,
    /// Its gossip (UDP) address.
    pub address: String,
    /// alive | suspect | down; `self` for the answering peer.
    pub state: String,
    /// How old the answering peer's view of it is: milliseconds since a datagram from it
    /// last arrived (`None`: only heard of through others; 0 for itself).
    pub age_ms: Option<u64>,
    /// Records (workloads, policies, placements, cluster facts) it was the last to write,
    /// as this peer holds them.
    pub records: usize,
}
