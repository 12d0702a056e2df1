//! Properties of `place_all` (shared capacity) and of capacity changes.

use proptest::prelude::*;

use hansa_core::{Cluster, ReplicaScheduling, Resources, Weighting};

use crate::fixtures::{cluster, cluster_fitting, workload, REQUESTS};
use crate::{place, place_all, Detail, Item, Problem};

fn sizes() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..30, 1..10)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Workloads placed together never use more than a cluster has, whatever their
    /// priorities and preemption, and a batch is deterministic.
    #[test]
    fn place_all_never_exceeds_capacity(
        fits in sizes(),
        specs in prop::collection::vec((0u32..40, 0i32..3, any::<bool>(), 1u64..4), 1..8),
    ) {
        let clusters: Vec<Cluster> = fits
            .iter()
            .enumerate()
            .map(|(i, &f)| cluster_fitting(&format!("c{i:02}"), f))
            .collect();
        let workloads: Vec<_> = specs
            .iter()
            .enumerate()
            .map(|(i, &(replicas, priority, preemption, size))| {
                let mut w = workload(replicas, ReplicaScheduling::Divided { weighting: Weighting::Equal });
                w.name = format!("w{i}");
                w.template.resources = REQUESTS.times(u32::try_from(size).unwrap_or(1));
                w.placement.priority = priority;
                w.placement.preemption = preemption;
                w
            })
            .collect();
        let items: Vec<Item<'_>> = workloads
            .iter()
            .map(|w| Item { workload: w, generation: 1, previous: None })
            .collect();
        let placements = place_all(&clusters, &items, 0, Detail::Summary);
        prop_assert_eq!(&place_all(&clusters, &items, 0, Detail::Summary), &placements);
        for c in &clusters {
            let used = workloads
                .iter()
                .zip(&placements)
                .fold(Resources::ZERO, |acc, (w, p)| {
                    acc.saturating_add(&w.template.resources.times(p.clusters.get(&c.name).copied().unwrap_or(0)))
                });
            prop_assert!(
                used.cpu_millis <= c.available.cpu_millis && used.memory_bytes <= c.available.memory_bytes,
                "{} uses {:?} of {:?}", c.name, used, c.available
            );
        }
    }

    /// The bound: when one cluster's free capacity changes, every cluster keeps at least what
    /// it ran (capped at what it now fits) minus one replica (a rounded-up seat that moves as
    /// quotas shift). So only the replicas that no longer fit move, plus at most one per
    /// other cluster.
    #[test]
    fn a_capacity_change_moves_only_what_must_move(
        n in 2usize..10,
        replicas in 0u32..80,
        weights in prop::collection::vec(1u32..4, 10),
        changed in 0usize..10,
        new_fit in 0u32..40,
        equal in any::<bool>(),
    ) {
        let mut clusters: Vec<Cluster> = (0..n).map(|i| cluster(&format!("c{i:02}"))).collect();
        let scheduling = if equal {
            ReplicaScheduling::Divided { weighting: Weighting::Equal }
        } else {
            crate::fixtures::static_weights(
                &clusters.iter().zip(&weights).map(|(c, w)| (c.name.as_str(), *w)).collect::<Vec<_>>(),
            )
        };
        let w = workload(replicas, scheduling);
        let before = place(&Problem::new(&w, 1, &clusters), None);
        let changed = changed % n;
        clusters[changed].available = REQUESTS.times(new_fit);
        let after = place(&Problem::new(&w, 2, &clusters), Some(&before));
        for c in &clusters {
            let fit = c.available.fits(&REQUESTS);
            let old = before.clusters.get(&c.name).copied().unwrap_or(0);
            let new = after.clusters.get(&c.name).copied().unwrap_or(0);
            prop_assert!(new + 1 >= old.min(fit), "{}: {old} -> {new} (fits {fit})", c.name);
        }
    }
}
