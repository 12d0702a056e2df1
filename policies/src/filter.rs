//! The filter phase: may a cluster run one replica of a workload at all? Rules run in a fixed
//! order and the first that fails is the one reported, so an operator sees one reason per cluster.

use std::fmt;

use hansa_core::{Cluster, ClusterAffinity, ClusterHealth, Resources, RuntimeKind, Workload};

use crate::quantity::{format_bytes, format_cpu};

/// Rule names as they appear in `DecisionOutcome::Filtered { rule, .. }`: the manifest field
/// (or cluster property) that excluded the cluster.
pub mod rules {
    pub const CLUSTER_NAMES: &str = "clusterNames";
    pub const EXCLUDE: &str = "exclude";
    pub const MATCH_LABELS: &str = "matchLabels";
    pub const HEALTH: &str = "health";
    pub const CORDONED: &str = "cordoned";
    pub const RUNTIME: &str = "runtime";
    pub const CAPACITY: &str = "capacity";
    /// Two input clusters share a name; only the first is considered.
    pub const DUPLICATE_NAME: &str = "duplicateName";
}

/// A resource a replica requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    Cpu,
    Memory,
    Disk,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Cpu => "cpu",
            ResourceKind::Memory => "memory",
            ResourceKind::Disk => "disk",
        })
    }
}

/// Why a cluster cannot run a replica. `Display` is the reason shown to operators; it names
/// the values involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    NotInClusterNames {
        names: Vec<String>,
    },
    Excluded,
    LabelMismatch {
        key: String,
        required: String,
        /// The cluster's value for `key`, if it has the label at all.
        found: Option<String>,
    },
    Unhealthy {
        health: ClusterHealth,
    },
    Cordoned,
    MissingRuntime {
        needed: RuntimeKind,
    },
    Insufficient {
        resource: ResourceKind,
        need: u64,
        free: u64,
    },
    DuplicateName,
}

impl Filter {
    /// The rule's name, one of [`rules`].
    pub fn rule(&self) -> &'static str {
        match self {
            Filter::NotInClusterNames { .. } => rules::CLUSTER_NAMES,
            Filter::Excluded => rules::EXCLUDE,
            Filter::LabelMismatch { .. } => rules::MATCH_LABELS,
            Filter::Unhealthy { .. } => rules::HEALTH,
            Filter::Cordoned => rules::CORDONED,
            Filter::MissingRuntime { .. } => rules::RUNTIME,
            Filter::Insufficient { .. } => rules::CAPACITY,
            Filter::DuplicateName => rules::DUPLICATE_NAME,
        }
    }

    /// Position of the rule in the pipeline; summaries list groups in this order.
    pub(crate) fn order(&self) -> u8 {
        match self {
            Filter::DuplicateName => 0,
            Filter::NotInClusterNames { .. } => 1,
            Filter::Excluded => 2,
            Filter::LabelMismatch { .. } => 3,
            Filter::Unhealthy { .. } => 4,
            Filter::Cordoned => 5,
            Filter::MissingRuntime { .. } => 6,
            Filter::Insufficient { .. } => 7,
        }
    }

    /// A short phrase shared by every cluster filtered the same way, for one-line summaries:
    /// `2 no container runtime (eu-1, us-1)`.
    pub(crate) fn group_label(&self) -> String {
        match self {
            Filter::NotInClusterNames { .. } => "not in clusterNames".to_string(),
            Filter::LabelMismatch { key, required, .. } => {
                format!("without label {key}={required}")
            }
            Filter::Unhealthy { health } => health.to_string(),
            Filter::Insufficient { resource, .. } => format!("insufficient {resource}"),
            Filter::Excluded
            | Filter::Cordoned
            | Filter::MissingRuntime { .. }
            | Filter::DuplicateName => self.to_string(),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::NotInClusterNames { names } => {
                write!(f, "not in clusterNames [{}]", names.join(", "))
            }
            Filter::Excluded => f.write_str("excluded by name"),
            Filter::LabelMismatch {
                key,
                required,
                found: Some(found),
            } => write!(
                f,
                "label {key}={required} required, cluster has {key}={found}"
            ),
            Filter::LabelMismatch {
                key,
                required,
                found: None,
            } => write!(
                f,
                "label {key}={required} required, cluster has no label {key}"
            ),
            Filter::Unhealthy {
                health: ClusterHealth::Unknown,
            } => f.write_str("cluster health is Unknown (not heard from yet)"),
            Filter::Unhealthy { health } => write!(f, "cluster is {health}"),
            Filter::Cordoned => f.write_str("cordoned"),
            Filter::MissingRuntime {
                needed: RuntimeKind::Docker,
            } => f.write_str("no container runtime"),
            Filter::MissingRuntime {
                needed: RuntimeKind::Process,
            } => f.write_str("no process runtime"),
            Filter::Insufficient {
                resource,
                need,
                free,
            } => {
                let (need, free) = match resource {
                    ResourceKind::Cpu => (format_cpu(*need), format_cpu(*free)),
                    ResourceKind::Memory | ResourceKind::Disk => {
                        let pair = (format_bytes(*need), format_bytes(*free));
                        // Approximations can print alike; then only exact bytes explain it.
                        if pair.0 == pair.1 {
                            (need.to_string(), free.to_string())
                        } else {
                            pair
                        }
                    }
                };
                write!(f, "insufficient {resource}: need {need}, free {free}")
            }
            Filter::DuplicateName => f.write_str("another cluster has the same name"),
        }
    }
}

impl std::error::Error for Filter {}

/// Whether `affinity` selects `cluster`: all given parts must match (an empty affinity selects
/// every cluster). Used for a workload's clusterAffinity and for static weight selectors.
pub fn selects(affinity: &ClusterAffinity, cluster: &Cluster) -> Result<(), Filter> {
    if !affinity.cluster_names.is_empty() && !affinity.cluster_names.contains(&cluster.name) {
        return Err(Filter::NotInClusterNames {
            names: affinity.cluster_names.clone(),
        });
    }
    if affinity.exclude.contains(&cluster.name) {
        return Err(Filter::Excluded);
    }
    for (key, required) in &affinity.match_labels {
        match cluster.labels.get(key) {
            Some(value) if value == required => {}
            found => {
                return Err(Filter::LabelMismatch {
                    key: key.clone(),
                    required: required.clone(),
                    found: found.cloned(),
                })
            }
        }
    }
    Ok(())
}

/// Runs every filter rule for one cluster. On success returns how many replicas the cluster
/// fits (at least 1; `u32::MAX` when the workload requests nothing).
pub fn filter_cluster(workload: &Workload, cluster: &Cluster) -> Result<u32, Filter> {
    if let Some(affinity) = &workload.placement.cluster_affinity {
        selects(affinity, cluster)?;
    }
    if cluster.health != ClusterHealth::Ready {
        return Err(Filter::Unhealthy {
            health: cluster.health,
        });
    }
    if cluster.cordoned {
        return Err(Filter::Cordoned);
    }
    let needed = workload.template.runtime_kind();
    if !cluster.runtimes.contains(&needed) {
        return Err(Filter::MissingRuntime { needed });
    }
    let requests = &workload.template.resources;
    match cluster.available.fits(requests) {
        0 => Err(shortage(requests, &cluster.available)),
        fits => Ok(fits),
    }
}

/// The first resource of which `available` has less than one replica's `requests`.
fn shortage(requests: &Resources, available: &Resources) -> Filter {
    let dimensions = [
        (ResourceKind::Cpu, requests.cpu_millis, available.cpu_millis),
        (
            ResourceKind::Memory,
            requests.memory_bytes,
            available.memory_bytes,
        ),
        (
            ResourceKind::Disk,
            requests.disk_bytes,
            available.disk_bytes,
        ),
    ];
    let (resource, need, free) = dimensions
        .into_iter()
        .find(|(_, need, free)| free < need)
        .unwrap_or(dimensions[0]);
    Filter::Insufficient {
        resource,
        need,
        free,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{cluster, workload};
    use hansa_core::ReplicaScheduling;

    fn reason(workload: &Workload, cluster: &Cluster) -> (String, String) {
        let filter = filter_cluster(workload, cluster).expect_err("cluster should be filtered");
        (filter.rule().to_string(), filter.to_string())
    }

    fn with_affinity(affinity: ClusterAffinity) -> Workload {
        let mut w = workload(1, ReplicaScheduling::Duplicated);
        w.placement.cluster_affinity = Some(affinity);
        w
    }

    fn pair(rule: &str, reason: &str) -> (String, String) {
        (rule.to_string(), reason.to_string())
    }

    #[test]
    fn cluster_names_names_the_list() {
        let w = with_affinity(ClusterAffinity {
            cluster_names: vec!["eu-1".into(), "us-1".into()],
            ..Default::default()
        });
        assert_eq!(
            reason(&w, &cluster("ap-1")),
            pair("clusterNames", "not in clusterNames [eu-1, us-1]")
        );
        assert!(filter_cluster(&w, &cluster("eu-1")).is_ok());
    }

    #[test]
    fn exclude_by_name() {
        let w = with_affinity(ClusterAffinity {
            exclude: vec!["ap-1".into()],
            ..Default::default()
        });
        assert_eq!(
            reason(&w, &cluster("ap-1")),
            pair("exclude", "excluded by name")
        );
        assert!(filter_cluster(&w, &cluster("eu-1")).is_ok());
    }

    #[test]
    fn match_labels_names_required_and_found_values() {
        let w = with_affinity(ClusterAffinity {
            match_labels: [("tier".to_string(), "gold".to_string())].into(),
            ..Default::default()
        });
        let mut silver = cluster("eu-1");
        silver.labels.insert("tier".into(), "silver".into());
        assert_eq!(
            reason(&w, &silver),
            pair(
                "matchLabels",
                "label tier=gold required, cluster has tier=silver"
            )
        );
        assert_eq!(
            reason(&w, &cluster("us-1")),
            pair(
                "matchLabels",
                "label tier=gold required, cluster has no label tier"
            )
        );
        let mut gold = cluster("ap-1");
        gold.labels.insert("tier".into(), "gold".into());
        assert!(filter_cluster(&w, &gold).is_ok());
    }

    #[test]
    fn health_must_be_ready() {
        let w = workload(1, ReplicaScheduling::Duplicated);
        let mut c = cluster("eu-1");
        c.health = ClusterHealth::Unreachable;
        assert_eq!(reason(&w, &c), pair("health", "cluster is Unreachable"));
        c.health = ClusterHealth::Unknown;
        assert_eq!(
            reason(&w, &c),
            pair("health", "cluster health is Unknown (not heard from yet)")
        );
    }

    #[test]
    fn cordoned_clusters_take_nothing_new() {
        let w = workload(1, ReplicaScheduling::Duplicated);
        let mut c = cluster("eu-1");
        c.cordoned = true;
        assert_eq!(reason(&w, &c), pair("cordoned", "cordoned"));
    }

    #[test]
    fn runtime_follows_the_template() {
        let mut w = workload(1, ReplicaScheduling::Duplicated);
        let mut c = cluster("eu-1");
        c.runtimes = vec![RuntimeKind::Docker];
        assert_eq!(reason(&w, &c), pair("runtime", "no process runtime"));
        w.template.image = Some("nginx:1.27".into());
        assert!(filter_cluster(&w, &c).is_ok());
        c.runtimes = vec![RuntimeKind::Process];
        assert_eq!(reason(&w, &c), pair("runtime", "no container runtime"));
    }

    #[test]
    fn capacity_names_the_short_resource_in_kubernetes_units() {
        let mut w = workload(1, ReplicaScheduling::Duplicated);
        w.template.resources = Resources {
            cpu_millis: 500,
            memory_bytes: 512 << 20,
            disk_bytes: 0,
        };
        let mut c = cluster("eu-1");
        c.available = Resources {
            cpu_millis: 200,
            memory_bytes: 256 << 20,
            disk_bytes: 0,
        };
        assert_eq!(
            reason(&w, &c),
            pair("capacity", "insufficient cpu: need 500m, free 200m")
        );
        c.available.cpu_millis = 2000;
        assert_eq!(
            reason(&w, &c),
            pair("capacity", "insufficient memory: need 512Mi, free 256Mi")
        );
        c.available.memory_bytes = 1 << 30;
        assert_eq!(filter_cluster(&w, &c), Ok(2));
    }

    #[test]
    fn capacity_falls_back_to_bytes_when_approximations_print_alike() {
        let filter = Filter::Insufficient {
            resource: ResourceKind::Memory,
            need: 4_000_000_001,
            free: 4_000_000_000,
        };
        assert_eq!(
            filter.to_string(),
            "insufficient memory: need 4000000001, free 4000000000"
        );
    }

    #[test]
    fn requesting_nothing_fits_without_bound() {
        let mut w = workload(1, ReplicaScheduling::Duplicated);
        w.template.resources = Resources::ZERO;
        let mut c = cluster("eu-1");
        c.available = Resources::ZERO;
        assert_eq!(filter_cluster(&w, &c), Ok(u32::MAX));
    }

    #[test]
    fn first_failing_rule_wins() {
        let mut w = with_affinity(ClusterAffinity {
            cluster_names: vec!["eu-1".into()],
            ..Default::default()
        });
        w.template.image = Some("nginx:1.27".into());
        let mut c = cluster("ap-1");
        c.health = ClusterHealth::Unreachable;
        c.cordoned = true;
        c.runtimes.clear();
        c.available = Resources::ZERO;
        assert_eq!(reason(&w, &c).0, "clusterNames");
        c.name = "eu-1".into();
        assert_eq!(reason(&w, &c).0, "health");
        c.health = ClusterHealth::Ready;
        assert_eq!(reason(&w, &c).0, "cordoned");
        c.cordoned = false;
        assert_eq!(reason(&w, &c).0, "runtime");
        c.runtimes = vec![RuntimeKind::Docker];
        assert_eq!(reason(&w, &c).0, "capacity");
    }
}
