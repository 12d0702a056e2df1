//! Properties of `place_all` (shared capacity) and of capacity changes.

use proptest::prelude::*;

use std::collections::BTreeMap;

use hansa_core::{Cluster, Placement, ReplicaScheduling, Resources, Weighting, Workload};

use crate::fixtures::{cluster, cluster_fitting, workload, REQUESTS};
use crate::properties::{clusters, featured_workloads};
use crate::{place, place_all, Detail, Item, Problem};

fn sizes() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..30, 1..10)
}

/// What `placements` use on each cluster.
fn usage(workloads: &[Workload], placements: &[Option<Placement>]) -> BTreeMap<String, Resources> {
    let mut used: BTreeMap<String, Resources> = BTreeMap::new();
    for (w, p) in workloads.iter().zip(placements) {
        for (name, n) in p.iter().flat_map(|p| &p.clusters) {
            let u = used.entry(name.clone()).or_insert(Resources::ZERO);
            *u = u.saturating_add(&w.template.resources.times(*n));
        }
    }
    used
}

/// A batch of every placement feature at once: priorities, preemption, and a previous
/// placement (or none) per workload.
fn batch() -> impl Strategy<Value = Vec<(Workload, Option<BTreeMap<usize, u32>>)>> {
    let one = (
        featured_workloads(),
        0i32..3,
        any::<bool>(),
        prop::option::of(prop::collection::btree_map(0usize..20, 1u32..8, 0..5)),
    );
    prop::collection::vec(one, 1..6).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (mut w, priority, preemption, previous))| {
                w.name = format!("w{i}");
                w.placement.priority = priority;
                w.placement.preemption = preemption;
                (w, previous)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The property for batches: placing the batch again with its own answer as
    /// `previous`, and that answer's replicas counted as running (what the agents then report
    /// as free), changes no workload's replica counts.
    #[test]
    fn place_all_again_with_its_answer_changes_nothing(cs in clusters(), specs in batch()) {
        let workloads: Vec<Workload> = specs.iter().map(|(w, _)| w.clone()).collect();
        let previous: Vec<Option<Placement>> = specs
            .iter()
            .map(|(w, counts)| {
                counts.as_ref().map(|counts| Placement {
                    workload: w.name.clone(),
                    namespace: w.namespace.clone(),
                    clusters: counts.iter().map(|(c, n)| (format!("c{c:02}"), *n)).collect(),
                    ..Default::default()
                })
            })
            .collect();
        let items: Vec<Item<'_>> = workloads
            .iter()
            .zip(&previous)
            .map(|(w, p)| Item { workload: w, generation: 1, previous: p.as_ref() })
            .collect();
        let answer = place_all(&cs, &items, 0, Detail::Summary);

        // Free with nothing of the batch running stays; the answer's replicas now run.
        let before = usage(&workloads, &previous);
        let answer_opt: Vec<Option<Placement>> = answer.iter().cloned().map(Some).collect();
        let after = usage(&workloads, &answer_opt);
        let running: Vec<Cluster> = cs
            .iter()
            .map(|c| {
                let mut c = c.clone();
                let held = before.get(&c.name).copied().unwrap_or(Resources::ZERO);
                let mut base = c.available.saturating_add(&held);
                for (b, limit) in [
                    (&mut base.cpu_millis, c.allocatable.cpu_millis),
                    (&mut base.memory_bytes, c.allocatable.memory_bytes),
                    (&mut base.disk_bytes, c.allocatable.disk_bytes),
                ] {
                    if limit > 0 {
                        *b = (*b).min(limit);
                    }
                }
                c.available = base.saturating_sub(&after.get(&c.name).copied().unwrap_or(Resources::ZERO));
                c
            })
            .collect();
        let items: Vec<Item<'_>> = workloads
            .iter()
            .zip(&answer)
            .map(|(w, p)| Item { workload: w, generation: 1, previous: Some(p) })
            .collect();
        let again = place_all(&running, &items, 0, Detail::Summary);
        for (a, b) in answer.iter().zip(&again) {
            prop_assert_eq!(&a.clusters, &b.clusters, "{} moved", a.workload);
        }
    }

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

/// A lower-priority workload filling the room a higher-priority one weighed by must not
/// move the higher one when the batch is solved again (it moved 1 of 4 replicas before).
#[test]
fn a_lower_priority_workload_does_not_reweigh_a_higher_one() {
    let clusters = vec![cluster_fitting("a", 10), cluster_fitting("b", 10)];
    let mut high = workload(
        4,
        ReplicaScheduling::Divided {
            weighting: Weighting::AvailableCapacity,
        },
    );
    high.name = "high".into();
    high.placement.priority = 1;
    let mut low = workload(
        10,
        ReplicaScheduling::Divided {
            weighting: Weighting::Equal,
        },
    );
    low.name = "low".into();
    low.placement.cluster_affinity = Some(hansa_core::ClusterAffinity {
        cluster_names: vec!["a".into()],
        ..Default::default()
    });
    let first = place_all(
        &clusters,
        &[
            Item {
                workload: &high,
                generation: 1,
                previous: None,
            },
            Item {
                workload: &low,
                generation: 1,
                previous: None,
            },
        ],
        0,
        Detail::Summary,
    );
    assert_eq!(
        first[0].clusters,
        [("a".to_string(), 2), ("b".to_string(), 2)].into()
    );
    assert_eq!(first[1].clusters, [("a".to_string(), 8)].into());
    // Both now run: a is full, b has 8 free.
    let running = vec![cluster_fitting("a", 0), cluster_fitting("b", 8)];
    let again = place_all(
        &running,
        &[
            Item {
                workload: &high,
                generation: 1,
                previous: Some(&first[0]),
            },
            Item {
                workload: &low,
                generation: 1,
                previous: Some(&first[1]),
            },
        ],
        0,
        Detail::Summary,
    );
    assert_eq!(again[0].clusters, first[0].clusters);
    assert_eq!(again[1].clusters, first[1].clusters);
}
