//! The weigh phase: how strongly each eligible cluster pulls replicas towards itself.

use hansa_core::{ReplicaScheduling, Weighting};

use crate::filter::Needs;

/// The weight of one eligible cluster (at position `at` in the index) that fits `fits`
/// replicas.
///
/// - Duplicated and Equal: 1.
/// - Static: the weight of the first entry whose selector picks the cluster, 0 if none; an
///   empty list means Equal (as the model documents).
/// - AvailableCapacity: the replicas the cluster fits (Karmada's dynamic weight). A cluster
///   with no bound (the workload requests nothing) counts as fitting the desired count.
pub(crate) fn weigh(needs: &Needs<'_>, at: usize, fits: u32) -> u64 {
    let workload = needs.workload;
    let weighting = match &workload.placement.replica_scheduling {
        ReplicaScheduling::Duplicated | ReplicaScheduling::Aggregated => return 1,
        ReplicaScheduling::Divided { weighting } => weighting,
    };
    match weighting {
        Weighting::Equal => 1,
        Weighting::Static { weights } if weights.is_empty() => 1,
        Weighting::Static { weights } => weights
            .iter()
            .zip(&needs.weights)
            .find(|(_, selector)| selector.check(needs.index, at).is_ok())
            .map_or(0, |(entry, _)| u64::from(entry.weight)),
        Weighting::AvailableCapacity if fits == u32::MAX => u64::from(workload.replicas),
        Weighting::AvailableCapacity => u64::from(fits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{cluster, divided, static_weights, workload};
    use crate::index::ClusterIndex;
    use hansa_core::{ClusterAffinity, StaticWeight, Workload};

    /// The weight of a cluster of this name that fits `fits`.
    fn weight(workload: &Workload, name: &str, fits: u32) -> u64 {
        let clusters = [cluster(name)];
        let index = ClusterIndex::new(&clusters);
        weigh(&Needs::new(workload, &index, 0), 0, fits)
    }

    #[test]
    fn static_weight_is_the_first_matching_entry_or_zero() {
        let mut w = workload(4, static_weights(&[("eu-1", 3), ("us-1", 1)]));
        assert_eq!(weight(&w, "eu-1", 10), 3);
        assert_eq!(weight(&w, "us-1", 10), 1);
        assert_eq!(weight(&w, "ap-1", 10), 0);

        // A catch-all entry after a specific one: the specific one wins for eu-1.
        if let ReplicaScheduling::Divided {
            weighting: Weighting::Static { weights },
        } = &mut w.placement.replica_scheduling
        {
            weights.push(StaticWeight {
                clusters: ClusterAffinity::default(),
                weight: 2,
            });
        }
        assert_eq!(weight(&w, "eu-1", 10), 3);
        assert_eq!(weight(&w, "ap-1", 10), 2);
    }

    #[test]
    fn empty_static_list_means_equal() {
        let w = workload(4, divided(Weighting::Static { weights: vec![] }));
        assert_eq!(weight(&w, "eu-1", 10), 1);
    }

    #[test]
    fn available_capacity_weighs_by_fit() {
        let w = workload(12, divided(Weighting::AvailableCapacity));
        assert_eq!(weight(&w, "eu-1", 18), 18);
        assert_eq!(weight(&w, "eu-1", u32::MAX), 12);
    }
}
