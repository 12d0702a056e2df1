//! What each cluster must run, derived from workloads and placements. Pure.

use hansa_core::Assignment;

use crate::store::FederationState;

/// The assignment set of `cluster`, sorted by workload.
pub fn for_cluster(state: &FederationState, cluster: &str) -> Vec<Assignment> {
    state
        .placements
        .iter()
        .filter_map(|(key, placement)| {
            let replicas = *placement.clusters.get(cluster)?;
            let record = state.workloads.get(key)?;
            (replicas > 0).then(|| Assignment {
                workload: key.clone(),
                revision: record.revision,
                replicas,
                template: record.workload.template.clone(),
            })
        })
        .collect()
}
