//! The filter phase: may a cluster run one replica of a workload at all? Rules run in a fixed
//! order and the first that fails is the one reported, so an operator sees one reason per cluster.

use hansa_core::{
    Cluster, ClusterAffinity, ClusterHealth, ReplicaScheduling, Resources, RuntimeKind, Taint,
    TaintEffect, Weighting, Workload,
};

use crate::constraints::{self, Compiled};
use crate::index::{ClusterIndex, Selector};
pub use crate::reason::{rules, Filter, ResourceKind};
use crate::verdict::{Because, FilterRef, Note, Plain};

/// What a workload needs from every cluster, worked out once per `place` and numbered against
/// the clusters' index.
pub(crate) struct Needs<'w> {
    pub workload: &'w Workload,
    pub index: &'w ClusterIndex<'w>,
    pub runtime: RuntimeKind,
    pub constraints: Compiled,
    pub now_ms: u64,
    /// `clusterAffinity`.
    pub affinity: Option<Selector<'w>>,
    /// The selectors of static weights, in order (none unless the workload is weighted so).
    pub weights: Vec<Selector<'w>>,
    /// The selectors of the `clusterAffinities` groups, in order.
    pub groups: Vec<Selector<'w>>,
}

impl<'w> Needs<'w> {
    pub fn new(workload: &'w Workload, index: &'w ClusterIndex<'w>, now_ms: u64) -> Self {
        let placement = &workload.placement;
        let weights = match &placement.replica_scheduling {
            ReplicaScheduling::Divided {
                weighting: Weighting::Static { weights },
            } => weights
                .iter()
                .map(|w| Selector::new(&w.clusters, index))
                .collect(),
            _ => Vec::new(),
        };
        Needs {
            workload,
            index,
            runtime: workload.template.runtime_kind(),
            constraints: constraints::compile(&placement.constraints, index),
            now_ms,
            affinity: placement
                .cluster_affinity
                .as_ref()
                .map(|a| Selector::new(a, index)),
            weights,
            groups: placement
                .cluster_affinities
                .iter()
                .map(|g| Selector::new(&g.affinity, index))
                .collect(),
        }
    }
}

/// A cluster that passed the filter.
#[derive(Debug, Clone)]
pub(crate) struct Eligible<'a> {
    /// Replicas it fits (at least 1; `u32::MAX` when the workload requests nothing), capped
    /// by `maxPerCluster` and, for a cordoned or NoSchedule-tainted cluster, by what it runs.
    pub fits: u32,
    /// An untolerated PreferNoSchedule taint (this one): used only when the others cannot
    /// take it all.
    pub avoid: Option<&'a Taint>,
    pub note: Note<'a>,
    /// Set when the cluster only keeps what it runs: the filter that applies once it runs none.
    pub keeps_only: Option<FilterRef<'a>>,
}

/// Whether `affinity` selects `cluster`: all given parts must match (an empty affinity selects
/// every cluster). Used for a workload's clusterAffinity and for static weight selectors.
pub fn selects(affinity: &ClusterAffinity, cluster: &Cluster) -> Result<(), Filter> {
    let index = ClusterIndex::new(std::slice::from_ref(cluster));
    let selector = Selector::new(affinity, &index);
    selector.check(&index, 0).map_err(|f| f.to_filter())
}

/// Runs every filter rule for one cluster, with nothing running there yet. On success returns
/// how many replicas the cluster fits (at least 1; `u32::MAX` when the workload requests nothing).
pub fn filter_cluster(workload: &Workload, cluster: &Cluster) -> Result<u32, Filter> {
    let index = ClusterIndex::new(std::slice::from_ref(cluster));
    let needs = Needs::new(workload, &index, 0);
    let checked = check(&needs, 0, &cluster.available, 0);
    checked.map(|e| e.fits).map_err(|f| f.to_filter())
}

/// Every rule, in order. `running` is how many replicas of the workload the cluster runs now:
/// a cordoned or NoSchedule-tainted cluster keeps those and takes nothing new. `at` is the
/// cluster's position in the index.
pub(crate) fn check<'a>(
    needs: &'a Needs<'a>,
    at: usize,
    available: &Resources,
    running: u32,
) -> Result<Eligible<'a>, FilterRef<'a>> {
    let placement = &needs.workload.placement;
    let index = needs.index;
    let facts = index.facts(at);
    if let Some(affinity) = &needs.affinity {
        affinity.check(index, at)?;
    }
    if facts.health != ClusterHealth::Ready {
        return Err(Plain::Unhealthy(facts.health).into());
    }
    let mut keep_only = None;
    let mut keeps_only: Option<FilterRef<'a>> = None;
    let mut because = Because::Nothing;
    if facts.cordoned {
        if running == 0 {
            return Err(Plain::Cordoned.into());
        }
        keep_only = Some(running);
        keeps_only = Some(Plain::Cordoned.into());
        because = Because::Cordoned;
    }
    let mut avoid = None;
    let untolerated = |taint| FilterRef::Untolerated {
        taint,
        expired_after: None,
    };
    let taints: &'a [Taint] = if facts.tainted {
        &index.clusters()[at].taints
    } else {
        &[]
    };
    for taint in taints {
        let toleration = placement.tolerations.iter().find(|t| t.tolerates(taint));
        match (taint.effect, toleration) {
            (TaintEffect::NoExecute, Some(t)) => {
                if let Some(seconds) = t.toleration_seconds {
                    let until = taint.added_ms.saturating_add(seconds.saturating_mul(1000));
                    if needs.now_ms >= until {
                        return Err(keeps_only.unwrap_or(FilterRef::Untolerated {
                            taint,
                            expired_after: Some(seconds),
                        }));
                    }
                    // Tolerated for a while: keep what runs there, start nothing new.
                    if running == 0 {
                        return Err(untolerated(taint));
                    }
                    keep_only = Some(keep_only.unwrap_or(running).min(running));
                    keeps_only.get_or_insert(untolerated(taint));
                    because = Because::ToleratedFor(taint, seconds);
                }
            }
            (_, Some(_)) => {}
            (TaintEffect::NoExecute, None) => {
                return Err(keeps_only.unwrap_or(untolerated(taint)));
            }
            (TaintEffect::NoSchedule, None) => {
                if running == 0 {
                    return Err(untolerated(taint));
                }
                keep_only = Some(keep_only.unwrap_or(running).min(running));
                keeps_only.get_or_insert(untolerated(taint));
                because = Because::KeepsFor(taint);
            }
            (TaintEffect::PreferNoSchedule, None) => {
                avoid.get_or_insert(taint);
                if matches!(because, Because::Nothing) {
                    because = Because::Avoids(taint);
                }
            }
        }
    }
    // A rule further down fails: with nothing running, the first rule above would have.
    let first = |later: FilterRef<'a>| keeps_only.clone().unwrap_or(later);
    if !index.offers(at, needs.runtime) {
        return Err(first(Plain::MissingRuntime(needs.runtime).into()));
    }
    for test in &needs.constraints.tests {
        if let Err(found) = test.check(index, at) {
            return Err(first(FilterRef::Constraint { test, found }));
        }
    }
    let requests = &needs.workload.template.resources;
    let mut fits = match available.fits(requests) {
        0 => return Err(first(shortage(requests, available).into())),
        fits => fits,
    };
    if let Some(keep) = keep_only {
        fits = fits.min(keep);
    }
    if let Some(max) = placement.max_per_cluster {
        fits = fits.min(max);
    }
    Ok(Eligible {
        fits,
        avoid,
        note: Note {
            because,
            group: None,
        },
        keeps_only,
    })
}

/// The first resource of which `available` has less than one replica's `requests`.
fn shortage(requests: &Resources, available: &Resources) -> Plain {
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
    Plain::Insufficient {
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
