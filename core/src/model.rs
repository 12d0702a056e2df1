//! The federation's model: what users declare (workloads), what members report (clusters),
//! what the federation decides (placements) and what each member must run (assignments).
//!
//! These types are the vocabulary of every other crate; proto types are converted to and from
//! them at the edges. They serialise with serde (JSON in the Raft log and in API payloads).

use std::collections::BTreeMap;
use std::fmt;

pub use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::policy::{AffinityGroup, Requirement, SpreadConstraint, Taint, Toleration};

/// The namespace a workload lands in when its manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Identifies a workload across the federation.
///
/// Its strings are stored inline up to 24 bytes (`CompactString`): the state's maps are keyed
/// by it, and a search compares many keys, which would otherwise each be two pointers to chase.
/// Making a key from a workload's names allocates nothing either.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadKey {
    pub namespace: CompactString,
    pub name: CompactString,
}

impl WorkloadKey {
    pub fn new(namespace: impl Into<CompactString>, name: impl Into<CompactString>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which system's manifest a workload was written in. Later features (DNS names, rollout
/// semantics) follow the conventions of the manifest's home system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestFormat {
    #[default]
    Native,
    Kubernetes,
    Marathon,
}

/// A federated app: a task template, a replica count, a placement policy and a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub format: ManifestFormat,
    /// Desired replicas: in total for `Divided` scheduling, per cluster for `Duplicated`.
    pub replicas: u32,
    pub template: TaskTemplate,
    #[serde(default)]
    pub placement: PlacementSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// How a new revision replaces the old one within each cluster.
    #[serde(default, skip_serializing_if = "UpdateStrategy::is_default")]
    pub update: UpdateStrategy,
    /// How a new revision moves across clusters, and how many revisions are kept.
    #[serde(
        default,
        skip_serializing_if = "crate::rollout::RolloutSpec::is_default"
    )]
    pub rollout: crate::rollout::RolloutSpec,
}

impl Workload {
    pub fn key(&self) -> WorkloadKey {
        WorkloadKey::new(&self.namespace, &self.name)
    }
}

/// What one replica runs. A template with an `image` needs a container runtime; one without
/// runs `command` + `args` as a supervised process.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The program and its leading arguments (a container's entrypoint when `image` is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Environment conventions the runtime adds for the replica (ports, host, app id).
    #[serde(default)]
    pub env_convention: EnvConvention,
    /// When the docker runtime pulls `image` (ignored without an image).
    #[serde(default, skip_serializing_if = "ImagePullPolicy::is_default")]
    pub image_pull_policy: ImagePullPolicy,
    /// Labels the runtime puts on each replica (container labels), from override policies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// When a container runtime pulls a template's image (Kubernetes' `imagePullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ImagePullPolicy {
    /// Pull only when the node lacks the image.
    #[default]
    IfNotPresent,
    /// Pull before every start (a present image is used if the pull fails).
    Always,
    /// Never pull: an absent image is an error in the replica's status.
    Never,
}

impl ImagePullPolicy {
    pub fn is_default(&self) -> bool {
        *self == ImagePullPolicy::IfNotPresent
    }
}

impl TaskTemplate {
    /// The runtime kind this template needs.
    pub fn runtime_kind(&self) -> RuntimeKind {
        if self.image.is_some() {
            RuntimeKind::Docker
        } else {
            RuntimeKind::Process
        }
    }
}

/// Which extra environment variables a runtime gives a replica, besides `HANSA_*`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum EnvConvention {
    /// `PORT`, `PORT0`.., `PORT_<NAME>`, `HOST` and the `HANSA_*` variables.
    #[default]
    Hansa,
    /// Marathon's: also `PORTS`, `MARATHON_APP_ID`, `HOST`, `PORT_<containerPort>`.
    Marathon { app_id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A port a replica listens on. Host ports are allocated per replica unless `host_port` fixes one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    pub name: String,
    /// The port inside a container (ignored by the process runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    /// A fixed host port; `None` means allocate one dynamically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
}

/// Resource requests of one replica, or capacity of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Thousandths of a CPU core.
    #[serde(default)]
    pub cpu_millis: u64,
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub disk_bytes: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_bytes: 0,
        disk_bytes: 0,
    };

    /// How many replicas with requests `per` fit into `self`; unbounded requests give `u32::MAX`.
    pub fn fits(&self, per: &Resources) -> u32 {
        fn dim(have: u64, need: u64) -> u64 {
            have.checked_div(need).unwrap_or(u64::MAX)
        }
        let n = dim(self.cpu_millis, per.cpu_millis)
            .min(dim(self.memory_bytes, per.memory_bytes))
            .min(dim(self.disk_bytes, per.disk_bytes));
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_sub(other.disk_bytes),
        }
    }

    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_add(other.disk_bytes),
        }
    }

    /// The smaller of each dimension.
    pub fn min_each(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.min(other.cpu_millis),
            memory_bytes: self.memory_bytes.min(other.memory_bytes),
            disk_bytes: self.disk_bytes.min(other.disk_bytes),
        }
    }

    pub fn times(&self, n: u32) -> Resources {
        let n = u64::from(n);
        Resources {
            cpu_millis: self.cpu_millis.saturating_mul(n),
            memory_bytes: self.memory_bytes.saturating_mul(n),
            disk_bytes: self.disk_bytes.saturating_mul(n),
        }
    }
}

/// A replica's health check. Timing defaults are named functions so the manifest readers and
/// the runtime agree on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub probe: Probe,
    #[serde(default = "HealthCheck::default_grace_seconds")]
    pub grace_seconds: u32,
    #[serde(default = "HealthCheck::default_interval_seconds")]
    pub interval_seconds: u32,
    #[serde(default = "HealthCheck::default_timeout_seconds")]
    pub timeout_seconds: u32,
    #[serde(default = "HealthCheck::default_failure_threshold")]
    pub failure_threshold: u32,
    #[serde(default = "HealthCheck::default_success_threshold")]
    pub success_threshold: u32,
}

impl HealthCheck {
    pub fn default_grace_seconds() -> u32 {
        5
    }
    pub fn default_interval_seconds() -> u32 {
        2
    }
    pub fn default_timeout_seconds() -> u32 {
        1
    }
    pub fn default_failure_threshold() -> u32 {
        3
    }
    pub fn default_success_threshold() -> u32 {
        1
    }

    pub fn with_probe(probe: Probe) -> Self {
        Self {
            probe,
            grace_seconds: Self::default_grace_seconds(),
            interval_seconds: Self::default_interval_seconds(),
            timeout_seconds: Self::default_timeout_seconds(),
            failure_threshold: Self::default_failure_threshold(),
            success_threshold: Self::default_success_threshold(),
        }
    }
}

/// How a health check probes a replica. `port` names a port of the template (by name), or is
/// its index as a decimal string; empty means the first port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Probe {
    Http {
        #[serde(default)]
        port: String,
        #[serde(default = "Probe::default_path")]
        path: String,
    },
    Tcp {
        #[serde(default)]
        port: String,
    },
    Exec {
        command: Vec<String>,
    },
}

impl Probe {
    pub fn default_path() -> String {
        "/".to_string()
    }
}

/// Where a workload may go and how its replicas are divided: written inline in the workload,
/// or resolved from a policy object (`PlacementPolicy`, Karmada's `PropagationPolicy`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_affinity: Option<ClusterAffinity>,
    /// Ordered fallback groups (Karmada's `clusterAffinities`), each further restricting
    /// `cluster_affinity`: the first group that can take the workload is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_affinities: Vec<AffinityGroup>,
    /// With groups: fill the first group up to its capacity and spill the rest into the next.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
    #[serde(default)]
    pub replica_scheduling: ReplicaScheduling,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread_constraints: Vec<SpreadConstraint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Replicas every cluster that takes any receives at least (while capacity allows).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_per_cluster: u32,
    /// Replicas one cluster receives at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_cluster: Option<u32>,
    /// Higher is placed first when capacity is short.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    /// May take capacity from running replicas of lower-priority workloads (off by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preemption: bool,
    /// Marathon-style constraints (`[field, operator, value]`), kept as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Vec<String>>,
    /// The policy object this placement came from (`PlacementPolicy default/gold`), if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

/// Which clusters a workload may run on. All given parts must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAffinity {
    /// Only these clusters (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_names: Vec<String>,
    /// Never these clusters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Clusters whose labels contain all of these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Label requirements (In, NotIn, Exists, DoesNotExist), all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
    /// Requirements on the cluster's `region`, `zone` or `provider`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_selector: Vec<Requirement>,
}

/// How many replicas each selected cluster receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum ReplicaScheduling {
    /// Every selected cluster runs `replicas` replicas.
    Duplicated,
    /// `replicas` in total, divided among the selected clusters.
    Divided {
        #[serde(default)]
        weighting: Weighting,
    },
    /// `replicas` in total on as few clusters as can hold them.
    Aggregated,
}

impl Default for ReplicaScheduling {
    fn default() -> Self {
        ReplicaScheduling::Divided {
            weighting: Weighting::Equal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Weighting {
    /// Static weights per cluster; clusters not listed get weight 0, an empty list means equal.
    #[default]
    Equal,
    Static {
        weights: Vec<StaticWeight>,
    },
    /// Proportional to how many replicas each cluster can still fit.
    AvailableCapacity,
}

/// A weight for the clusters a selector picks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticWeight {
    pub clusters: ClusterAffinity,
    pub weight: u32,
}

/// How a workload is reached: its DNS name and ports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// The DNS label the service is known by (a Kubernetes Service's name, a Marathon app id).
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    /// The template port (by name) the service port reaches.
    pub target_port: String,
    #[serde(default)]
    pub protocol: Protocol,
}

/// The runtimes a member cluster can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Process,
    Docker,
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
        })
    }
}

/// A member cluster's health as the federation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ClusterHealth {
    /// Registered, agent connected and heartbeating.
    Ready,
    /// The agent has missed heartbeats for longer than the federation's grace period.
    Unreachable,
    /// Known from the store, not heard from since this federator started.
    #[default]
    Unknown,
}

impl fmt::Display for ClusterHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterHealth::Ready => "Ready",
            ClusterHealth::Unreachable => "Unreachable",
            ClusterHealth::Unknown => "Unknown",
        })
    }
}

/// A member cluster as its agent registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub runtimes: Vec<RuntimeKind>,
    /// Node addresses (or CIDRs) of the cluster: where its replicas' endpoints live.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// What the cluster can run in total.
    #[serde(default)]
    pub allocatable: Resources,
    /// What is still free, as last written to the store.
    #[serde(default)]
    pub available: Resources,
    #[serde(default)]
    pub health: ClusterHealth,
    #[serde(default)]
    pub cordoned: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// The cluster's nodes as its agent schedules onto them (`allocatable` and `available`
    /// above are their sums). Empty for agents that do not report nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeCapacity>,
}

/// One node of a member cluster: where its replicas' endpoints live and what it can run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCapacity {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub runtimes: Vec<RuntimeKind>,
    #[serde(default)]
    pub allocatable: Resources,
    /// allocatable minus the requests of the replicas the agent placed on the node.
    #[serde(default)]
    pub available: Resources,
}

/// Replicas of a workload that a cluster's agent could place on none of its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unplaced {
    pub workload: WorkloadKey,
    pub replicas: u32,
    pub reason: String,
}

/// The federation's decision for one workload: replicas per cluster, and why.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub workload: String,
    pub namespace: String,
    /// The workload generation this placement was solved for.
    pub generation: u64,
    /// Replicas per cluster; clusters with none are absent.
    pub clusters: BTreeMap<String, u32>,
    pub explanation: Explanation,
}

impl Placement {
    pub fn total(&self) -> u32 {
        self.clusters.values().sum()
    }
}

/// Why a placement is what it is: one entry per cluster considered, and a summary.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// One line an operator can read, e.g. `4/4 replicas placed on 2 clusters` or
    /// `0/3 clusters fit: 1 not selected by clusterNames (ap-1); ...`.
    pub summary: String,
    /// Replicas the policy asked for but no cluster could take.
    #[serde(default)]
    pub unplaced: u32,
    /// The policy object that applied (empty: the workload's inline placement).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
    pub clusters: Vec<ClusterDecision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDecision {
    pub cluster: String,
    pub outcome: DecisionOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum DecisionOutcome {
    /// The cluster was not eligible; `reason` names the rule and the values involved.
    Filtered { rule: String, reason: String },
    /// The cluster was eligible; `replicas` may be 0 when others took them all.
    Selected {
        replicas: u32,
        /// Weight or score used to divide replicas.
        score: u64,
        /// How many replicas the cluster could fit at most (`u32::MAX`: unbounded).
        fits: u32,
        /// Anything else that shaped the count: `fallback group 2 (us)`, `cordoned: keeps
        /// what it runs`, `PreferNoSchedule taint gpu:PreferNoSchedule`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        note: String,
    },
}

/// What one cluster must run for one workload: the rendered template and a replica count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub workload: WorkloadKey,
    /// Changes whenever the template changes; replicas of another revision are replaced.
    pub revision: u64,
    pub replicas: u32,
    pub template: TaskTemplate,
    /// How replicas of another revision are replaced.
    #[serde(default)]
    pub update: UpdateStrategy,
}

/// A count of replicas, or a percentage of the desired count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl Amount {
    /// Reads `3` or `"25%"`.
    pub fn parse(v: &serde_json::Value) -> Result<Amount, String> {
        match v {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Amount::Count)
                .ok_or_else(|| format!("expected a non-negative count or a percentage, got {n}")),
            serde_json::Value::String(s) => {
                let pct = s
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<u32>().ok())
                    .filter(|p| *p <= 100);
                match (pct, s.trim().parse::<u32>()) {
                    (Some(p), _) => Ok(Amount::Percent(p)),
                    (None, Ok(n)) => Ok(Amount::Count(n)),
                    _ => Err(format!(
                        "expected a count or a percentage from 0% to 100%, got {s:?}"
                    )),
                }
            }
            other => Err(format!("expected a count or a percentage, got {other}")),
        }
    }

    /// The count for `desired` replicas, percentages rounded up or down.
    pub fn of(self, desired: u32, round_up: bool) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let scaled = u64::from(desired) * u64::from(p);
                let n = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                u32::try_from(n).unwrap_or(u32::MAX)
            }
        }
    }

    pub fn is_zero(self) -> bool {
        matches!(self, Amount::Count(0) | Amount::Percent(0))
    }
}

impl TryFrom<serde_json::Value> for Amount {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Amount, String> {
        Amount::parse(&v)
    }
}

impl From<Amount> for serde_json::Value {
    fn from(a: Amount) -> serde_json::Value {
        match a {
            Amount::Count(n) => n.into(),
            Amount::Percent(p) => format!("{p}%").into(),
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// How replicas of a new revision replace the old ones within a cluster, with Kubernetes'
/// Deployment semantics: at most `max_surge` replicas above the desired count (percentages
/// rounded up) and at most `max_unavailable` below it not ready (rounded down). When both come
/// to 0, one replica may be unavailable, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    pub max_surge: Amount,
    pub max_unavailable: Amount,
}

impl Default for UpdateStrategy {
    /// Kubernetes' defaults: 25% and 25%.
    fn default() -> Self {
        UpdateStrategy {
            max_surge: Amount::Percent(25),
            max_unavailable: Amount::Percent(25),
        }
    }
}

impl UpdateStrategy {
    /// Marathon's `upgradeStrategy`: `minimumHealthCapacity` and `maximumOverCapacity`, both
    /// fractions of the instance count (Marathon's defaults are 1 and 1).
    pub fn marathon(minimum_health_capacity: f64, maximum_over_capacity: f64) -> UpdateStrategy {
        let pct = |f: f64| (f.clamp(0.0, 1.0) * 100.0).round() as u32;
        UpdateStrategy {
            max_surge: Amount::Percent(pct(maximum_over_capacity)),
            max_unavailable: Amount::Percent(100 - pct(minimum_health_capacity)),
        }
    }

    /// (surge, unavailable) for `desired` replicas.
    pub fn resolve(&self, desired: u32) -> (u32, u32) {
        let surge = self.max_surge.of(desired, true);
        let unavailable = self.max_unavailable.of(desired, false);
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    }

    pub fn is_default(&self) -> bool {
        *self == UpdateStrategy::default()
    }
}

/// The state of one replica, as its agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    /// Started, not yet past its health check (or its grace period).
    Starting,
    /// Running and healthy (or running with no health check).
    Running,
    /// Running but failing its health check.
    Unhealthy,
    /// Exited or failed to start; will be restarted after a backoff.
    Failed,
    /// Being stopped because it is surplus or of an old revision.
    Stopping,
}

impl fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicaState::Starting => "Starting",
            ReplicaState::Running => "Running",
            ReplicaState::Unhealthy => "Unhealthy",
            ReplicaState::Failed => "Failed",
            ReplicaState::Stopping => "Stopping",
        })
    }
}

/// An address and port a replica serves on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The template port's name.
    pub name: String,
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.address.contains(':') {
            write!(f, "[{}]:{}", self.address, self.port)
        } else {
            write!(f, "{}:{}", self.address, self.port)
        }
    }
}

/// One replica as reported by its cluster's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Unique within the cluster, e.g. `web-3f9c2a`.
    pub id: String,
    pub workload: WorkloadKey,
    pub revision: u64,
    pub state: ReplicaState,
    pub healthy: bool,
    pub restarts: u32,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Why the replica is in its state, when there is something to say.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_counts_the_tightest_dimension() {
        let have = Resources {
            cpu_millis: 4000,
            memory_bytes: 1 << 30,
            disk_bytes: 0,
        };
        let per = Resources {
            cpu_millis: 500,
            memory_bytes: 256 << 20,
            disk_bytes: 0,
        };
        assert_eq!(have.fits(&per), 4);
        assert_eq!(have.fits(&Resources::ZERO), u32::MAX);
    }

    #[test]
    fn clusters_stored_before_nodes_read_and_write_as_before() {
        let old = serde_json::json!({"name": "eu-1", "allocatable": {"cpuMillis": 4000}});
        let cluster: Cluster = serde_json::from_value(old).expect("a cluster without nodes");
        assert!(cluster.nodes.is_empty());
        let written = serde_json::to_value(&cluster).expect("json");
        assert!(written.get("nodes").is_none(), "{written}");

        let mut with_nodes = cluster;
        with_nodes.nodes.push(NodeCapacity {
            name: "node-a".into(),
            address: "10.0.0.1".into(),
            ..NodeCapacity::default()
        });
        let written = serde_json::to_value(&with_nodes).expect("json");
        assert_eq!(written["nodes"][0]["name"], "node-a");
        let back: Cluster = serde_json::from_value(written).expect("round trip");
        assert_eq!(back, with_nodes);
    }

    #[test]
    fn default_scheduling_is_divided_equally() {
        assert_eq!(
            ReplicaScheduling::default(),
            ReplicaScheduling::Divided {
                weighting: Weighting::Equal
            }
        );
    }
}
