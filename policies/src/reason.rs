//! Why a cluster cannot run a replica: the [`Filter`] values of the filter and select phases,
//! and how operators read them.

use std::fmt;

use hansa_core::{ClusterHealth, Requirement, RuntimeKind, Taint};

use crate::quantity::{format_bytes, format_cpu};

/// Rule names as they appear in `DecisionOutcome::Filtered { rule, .. }`: the manifest field
/// (or cluster property) that excluded the cluster.
pub mod rules {
    pub const CLUSTER_NAMES: &str = "clusterNames";
    pub const EXCLUDE: &str = "exclude";
    pub const MATCH_LABELS: &str = "matchLabels";
    pub const MATCH_EXPRESSIONS: &str = "matchExpressions";
    pub const FIELD_SELECTOR: &str = "fieldSelector";
    pub const HEALTH: &str = "health";
    pub const CORDONED: &str = "cordoned";
    pub const TAINTS: &str = "taints";
    pub const RUNTIME: &str = "runtime";
    pub const CONSTRAINTS: &str = "constraints";
    pub const CAPACITY: &str = "capacity";
    pub const CLUSTER_AFFINITIES: &str = "clusterAffinities";
    pub const SPREAD_CONSTRAINTS: &str = "spreadConstraints";
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
    /// A matchExpressions (`field: false`) or fieldSelector (`field: true`) requirement failed.
    Requirement {
        requirement: Requirement,
        field: bool,
        found: Option<String>,
    },
    Unhealthy {
        health: ClusterHealth,
    },
    Cordoned,
    Untolerated {
        taint: Taint,
        /// Set when a NoExecute toleration's `tolerationSeconds` have run out.
        expired_after: Option<u64>,
    },
    MissingRuntime {
        needed: RuntimeKind,
    },
    /// A Marathon constraint failed: `constraint` as written, `found` the cluster's value.
    Constraint {
        constraint: String,
        found: Option<String>,
    },
    Insufficient {
        resource: ResourceKind,
        need: u64,
        free: u64,
    },
    /// Not in the clusterAffinities group in use.
    AffinityGroup {
        reason: String,
    },
    /// An untolerated PreferNoSchedule taint, and other clusters take the workload.
    Avoided {
        taint: String,
    },
    /// Left out by a spread constraint (or a Marathon CLUSTER/GROUP_BY constraint).
    Spread {
        reason: String,
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
            Filter::Requirement { field: false, .. } => rules::MATCH_EXPRESSIONS,
            Filter::Requirement { field: true, .. } => rules::FIELD_SELECTOR,
            Filter::Unhealthy { .. } => rules::HEALTH,
            Filter::Cordoned => rules::CORDONED,
            Filter::Untolerated { .. } | Filter::Avoided { .. } => rules::TAINTS,
            Filter::MissingRuntime { .. } => rules::RUNTIME,
            Filter::Constraint { .. } => rules::CONSTRAINTS,
            Filter::Insufficient { .. } => rules::CAPACITY,
            Filter::AffinityGroup { .. } => rules::CLUSTER_AFFINITIES,
            Filter::Spread { .. } => rules::SPREAD_CONSTRAINTS,
            Filter::DuplicateName => rules::DUPLICATE_NAME,
        }
    }

    /// Position of the rule in the pipeline; breaks ties between equally large groups in
    /// summaries.
    pub(crate) fn order(&self) -> u8 {
        match self {
            Filter::DuplicateName => 0,
            Filter::NotInClusterNames { .. } => 1,
            Filter::Excluded => 2,
            Filter::LabelMismatch { .. } => 3,
            Filter::Requirement { .. } => 4,
            Filter::Unhealthy { .. } => 5,
            Filter::Cordoned => 6,
            Filter::Untolerated { .. } | Filter::Avoided { .. } => 7,
            Filter::MissingRuntime { .. } => 8,
            Filter::Constraint { .. } => 9,
            Filter::Insufficient { .. } => 10,
            Filter::AffinityGroup { .. } => 11,
            Filter::Spread { .. } => 12,
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
            Filter::Requirement { requirement, .. } => format!("excluded by {requirement}"),
            Filter::Unhealthy { health } => health.to_string(),
            Filter::Untolerated { taint, .. } => format!("untolerated taint {taint}"),
            Filter::Avoided { taint } => format!("avoided for taint {taint}"),
            Filter::Constraint { constraint, .. } => format!("failing constraint {constraint}"),
            Filter::Insufficient { resource, need, .. } => {
                format!("insufficient {resource}: need {}", amount(*resource, *need))
            }
            Filter::Excluded
            | Filter::Cordoned
            | Filter::MissingRuntime { .. }
            | Filter::AffinityGroup { .. }
            | Filter::Spread { .. }
            | Filter::DuplicateName => self.to_string(),
        }
    }
}

fn amount(resource: ResourceKind, value: u64) -> String {
    match resource {
        ResourceKind::Cpu => format_cpu(value),
        ResourceKind::Memory | ResourceKind::Disk => format_bytes(value),
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
            Filter::Requirement {
                requirement,
                found: Some(found),
                ..
            } => write!(
                f,
                "excluded by {requirement}: cluster has {}={found}",
                requirement.key
            ),
            Filter::Requirement {
                requirement,
                found: None,
                ..
            } => write!(
                f,
                "excluded by {requirement}: cluster has no {}",
                requirement.key
            ),
            Filter::Unhealthy {
                health: ClusterHealth::Unknown,
            } => f.write_str("cluster health is Unknown (not heard from yet)"),
            Filter::Unhealthy { health } => write!(f, "cluster is {health}"),
            Filter::Cordoned => f.write_str("cordoned"),
            Filter::Untolerated {
                taint,
                expired_after: None,
            } => write!(f, "untolerated taint {taint}"),
            Filter::Untolerated {
                taint,
                expired_after: Some(seconds),
            } => write!(
                f,
                "untolerated taint {taint}: tolerationSeconds {seconds} have passed"
            ),
            Filter::MissingRuntime {
                needed: RuntimeKind::Docker,
            } => f.write_str("no container runtime"),
            Filter::MissingRuntime {
                needed: RuntimeKind::Process,
            } => f.write_str("no process runtime"),
            Filter::Constraint {
                constraint,
                found: Some(found),
            } => write!(f, "constraint {constraint} fails: cluster has {found:?}"),
            Filter::Constraint {
                constraint,
                found: None,
            } => write!(
                f,
                "constraint {constraint} fails: cluster has no such field"
            ),
            Filter::Insufficient {
                resource,
                need,
                free,
            } => {
                let (shown_need, shown_free) = (amount(*resource, *need), amount(*resource, *free));
                // Approximations can print alike; then only exact bytes explain it.
                if shown_need == shown_free {
                    write!(f, "insufficient {resource}: need {need}, free {free}")
                } else {
                    write!(
                        f,
                        "insufficient {resource}: need {shown_need}, free {shown_free}"
                    )
                }
            }
            Filter::Avoided { taint } => write!(
                f,
                "untolerated taint {taint}: other clusters take the workload"
            ),
            Filter::AffinityGroup { reason } | Filter::Spread { reason } => f.write_str(reason),
            Filter::DuplicateName => f.write_str("another cluster has the same name"),
        }
    }
}

impl std::error::Error for Filter {}
