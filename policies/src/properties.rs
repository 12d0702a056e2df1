//! Properties of `place` over random federations and workloads.

use std::collections::BTreeMap;

use proptest::prelude::*;

use hansa_core::{
    AffinityGroup, Cluster, ClusterAffinity, ClusterDecision, ClusterHealth, DecisionOutcome,
    Placement, ReplicaScheduling, Requirement, Resources, RuntimeKind, SelectorOperator,
    SpreadConstraint, SpreadKey, StaticWeight, Taint, TaintEffect, Toleration, TolerationOperator,
    Weighting, Workload,
};

use crate::fixtures::{cluster, workload};
use crate::{place, weigh, Detail, Problem};

fn health() -> impl Strategy<Value = ClusterHealth> {
    prop_oneof![
        6 => Just(ClusterHealth::Ready),
        1 => Just(ClusterHealth::Unreachable),
        1 => Just(ClusterHealth::Unknown),
    ]
}

fn runtimes() -> impl Strategy<Value = Vec<RuntimeKind>> {
    prop_oneof![
        4 => Just(vec![RuntimeKind::Process, RuntimeKind::Docker]),
        1 => Just(vec![RuntimeKind::Process]),
        1 => Just(vec![RuntimeKind::Docker]),
        1 => Just(vec![]),
    ]
}

fn tier() -> impl Strategy<Value = Option<String>> {
    prop_oneof![Just(None), Just(Some("gold")), Just(Some("silver"))]
        .prop_map(|t| t.map(str::to_string))
}

fn resources() -> impl Strategy<Value = Resources> {
    (0u64..8_000, 0u64..(16 << 30)).prop_map(|(cpu_millis, memory_bytes)| Resources {
        cpu_millis,
        memory_bytes,
        disk_bytes: 0,
    })
}

/// 1..20 clusters named `c00`.. in a random input order.
pub(crate) fn clusters() -> impl Strategy<Value = Vec<Cluster>> {
    let one = (
        health(),
        any::<bool>(),
        runtimes(),
        tier(),
        resources(),
        (0usize..4, 0usize..3, 0u8..8),
    );
    prop::collection::vec(one, 1..20)
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(
                    |(i, (health, cordoned, runtimes, tier, available, (region, zone, taints)))| {
                        let mut c = cluster(&format!("c{i:02}"));
                        c.region = ["eu", "us", "ap", ""][region].to_string();
                        c.zone = ["a", "b", "c"][zone].to_string();
                        let all = [
                            ("gpu", TaintEffect::NoSchedule),
                            ("spot", TaintEffect::PreferNoSchedule),
                            ("maintenance", TaintEffect::NoExecute),
                        ];
                        c.taints = all
                            .iter()
                            .enumerate()
                            .filter(|(bit, _)| taints & (1 << bit) != 0 && i % 3 == 0)
                            .map(|(_, (key, effect))| Taint {
                                key: key.to_string(),
                                value: String::new(),
                                effect: *effect,
                                added_ms: 0,
                            })
                            .collect();
                        c.health = health;
                        c.cordoned = cordoned && i % 4 == 0;
                        c.runtimes = runtimes;
                        if let Some(tier) = tier {
                            c.labels.insert("tier".into(), tier);
                        }
                        c.available = available;
                        c
                    },
                )
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

fn some_names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(0usize..20, 0..6)
        .prop_map(|ids| ids.into_iter().map(|i| format!("c{i:02}")).collect())
}

fn affinity() -> impl Strategy<Value = ClusterAffinity> {
    let regions = prop::option::of(prop::sample::subsequence(vec!["eu", "us", "mars"], 1..3));
    (some_names(), some_names(), tier(), regions).prop_map(
        |(cluster_names, exclude, tier, regions)| ClusterAffinity {
            cluster_names,
            exclude,
            match_labels: tier.map(|t| ("tier".to_string(), t)).into_iter().collect(),
            field_selector: regions
                .map(|regions| Requirement {
                    key: "region".into(),
                    operator: SelectorOperator::In,
                    values: regions.into_iter().map(str::to_string).collect(),
                })
                .into_iter()
                .collect(),
            ..Default::default()
        },
    )
}

fn scheduling() -> impl Strategy<Value = ReplicaScheduling> {
    let static_weights =
        prop::collection::vec((affinity(), 0u32..5), 0..4).prop_map(|entries| Weighting::Static {
            weights: entries
                .into_iter()
                .map(|(clusters, weight)| StaticWeight { clusters, weight })
                .collect(),
        });
    let weighting = prop_oneof![
        Just(Weighting::Equal),
        Just(Weighting::AvailableCapacity),
        static_weights,
    ];
    prop_oneof![
        1 => Just(ReplicaScheduling::Duplicated),
        3 => weighting.prop_map(|weighting| ReplicaScheduling::Divided { weighting }),
    ]
}

/// Every placement feature at once: spread constraints, tolerations, Marathon constraints,
/// ordered groups with or without overflow, Aggregated, min/max per cluster.
pub(crate) fn featured_workloads() -> impl Strategy<Value = Workload> {
    let scheduling = prop_oneof![
        3 => scheduling(),
        1 => Just(ReplicaScheduling::Aggregated),
    ];
    let spread = prop::option::of((0usize..3, 0u32..3, prop::option::of(1u32..3), any::<bool>()))
        .prop_map(|s| {
            s.map(|(key, min_groups, max_groups, skew)| SpreadConstraint {
                spread_by: [SpreadKey::Region, SpreadKey::Zone, SpreadKey::Cluster][key].clone(),
                min_groups,
                max_groups: max_groups.map(|m| m.max(min_groups)),
                max_skew: skew.then_some(1),
            })
        });
    let constraint = prop::option::of(prop_oneof![
        Just(vec!["zone", "UNIQUE"]),
        Just(vec!["region", "MAX_PER", "2"]),
        Just(vec!["zone", "GROUP_BY", "2"]),
        Just(vec!["region", "CLUSTER"]),
        Just(vec!["region", "LIKE", "eu|us"]),
        Just(vec!["tier", "UNLIKE", "gold"]),
    ]);
    let groups = prop::collection::vec(affinity(), 0..3);
    (
        workloads_with(scheduling),
        spread,
        constraint,
        groups,
        any::<bool>(),
        (0u32..3, prop::option::of(1u32..6), 0u8..4),
    )
        .prop_map(
            |(mut w, spread, constraint, groups, overflow, (min, max, tolerate))| {
                let p = &mut w.placement;
                p.spread_constraints = spread.into_iter().collect();
                p.constraints = constraint
                    .map(|c| vec![c.into_iter().map(str::to_string).collect()])
                    .unwrap_or_default();
                p.overflow = overflow && !groups.is_empty();
                p.cluster_affinities = groups
                    .into_iter()
                    .enumerate()
                    .map(|(i, affinity)| AffinityGroup {
                        name: format!("g{i}"),
                        affinity,
                    })
                    .collect();
                p.min_per_cluster = min;
                p.max_per_cluster = max.map(|m| m.max(min));
                p.tolerations = ["gpu", "spot", "maintenance"]
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| tolerate & (1 << bit) != 0)
                    .map(|(_, key)| Toleration {
                        key: key.to_string(),
                        operator: TolerationOperator::Exists,
                        ..Default::default()
                    })
                    .collect();
                w
            },
        )
}

fn divided_workloads() -> impl Strategy<Value = Workload> {
    workloads_with(scheduling().prop_filter("divided", |s| *s != ReplicaScheduling::Duplicated))
}

fn workloads_with(
    scheduling: impl Strategy<Value = ReplicaScheduling>,
) -> impl Strategy<Value = Workload> {
    let requests =
        (0u64..1_000, 0u64..(1 << 30)).prop_map(|(cpu_millis, memory_bytes)| Resources {
            cpu_millis,
            memory_bytes,
            disk_bytes: 0,
        });
    (
        0u32..60,
        scheduling,
        any::<bool>(),
        requests,
        prop::option::of(affinity()),
    )
        .prop_map(|(replicas, scheduling, image, requests, affinity)| {
            let mut w = workload(replicas, scheduling);
            w.template.image = image.then(|| "nginx:1.27".to_string());
            w.template.resources = requests;
            w.placement.cluster_affinity = affinity;
            w
        })
}

/// A previous placement of `app`, with random counts on some clusters.
fn previous() -> impl Strategy<Value = Option<Placement>> {
    prop::option::of(
        prop::collection::btree_map(0usize..20, 1u32..30, 0..10).prop_map(|counts| Placement {
            workload: "app".to_string(),
            namespace: "default".to_string(),
            clusters: counts
                .into_iter()
                .map(|(i, n)| (format!("c{i:02}"), n))
                .collect(),
            ..Default::default()
        }),
    )
}

/// What each cluster fits, given what the previous placement runs there (a cordoned cluster
/// keeps what it runs).
fn fits_with(
    workload: &Workload,
    clusters: &[Cluster],
    previous: Option<&Placement>,
) -> BTreeMap<String, u32> {
    let index = crate::ClusterIndex::new(clusters);
    let needs = crate::filter::Needs::new(workload, &index, 0);
    clusters
        .iter()
        .enumerate()
        .filter_map(|(at, c)| {
            let running = previous
                .and_then(|p| p.clusters.get(&c.name).copied())
                .unwrap_or(0);
            let e = crate::filter::check(&needs, at, &c.available, running).ok()?;
            Some((c.name.clone(), e.fits))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_cluster_exceeds_its_fit(w in featured_workloads(), cs in clusters(), prev in previous()) {
        let placement = place(&Problem::new(&w, 1, &cs), prev.as_ref());
        let fits = fits_with(&w, &cs, prev.as_ref());
        for (name, &n) in &placement.clusters {
            prop_assert!(n > 0);
            let fit = fits.get(name).copied();
            prop_assert!(fit.is_some_and(|f| n <= f), "{name} got {n}, fits {fit:?}");
            if w.placement.replica_scheduling == ReplicaScheduling::Duplicated {
                prop_assert!(n <= w.replicas);
            }
        }
    }

    /// Divided: everything that can be placed is: placed == min(desired, sum of the fits of
    /// the eligible clusters with positive weight). With Equal or AvailableCapacity weighting
    /// every eligible cluster has positive weight (for AvailableCapacity once desired > 0), so
    /// there it is min(desired, total fit); with Static weights, clusters of weight 0 take no
    /// replicas even when the others are full.
    #[test]
    fn divided_places_all_that_fits(w in divided_workloads(), cs in clusters(), prev in previous()) {
        let placement = place(&Problem::new(&w, 1, &cs), prev.as_ref());
        let fits = fits_with(&w, &cs, prev.as_ref());
        let index = crate::ClusterIndex::new(&cs);
        let needs = crate::filter::Needs::new(&w, &index, 0);
        let room: u64 = cs
            .iter()
            .enumerate()
            .filter_map(|(at, c)| {
                let fit = *fits.get(&c.name)?;
                (weigh::weigh(&needs, at, fit) > 0).then_some(u64::from(fit))
            })
            .sum();
        let placed = u64::from(placement.total());
        prop_assert_eq!(placed, room.min(u64::from(w.replicas)));
        prop_assert_eq!(placed + u64::from(placement.explanation.unplaced), u64::from(w.replicas));
        if matches!(
            w.placement.replica_scheduling,
            ReplicaScheduling::Divided { weighting: Weighting::Equal | Weighting::AvailableCapacity }
        ) {
            let total_fit: u64 = fits.values().map(|&f| u64::from(f)).sum();
            prop_assert_eq!(placed, total_fit.min(u64::from(w.replicas)));
        }
    }

    #[test]
    fn duplicated_unplaced_is_the_shortfall(
        w in workloads_with(Just(ReplicaScheduling::Duplicated)),
        cs in clusters(),
    ) {
        let placement = place(&Problem::new(&w, 1, &cs), None);
        let index = crate::ClusterIndex::new(&cs);
        let needs = crate::filter::Needs::new(&w, &index, 0);
        let eligible: Vec<crate::filter::Eligible> = cs
            .iter()
            .enumerate()
            .filter_map(|(at, c)| crate::filter::check(&needs, at, &c.available, 0).ok())
            .collect();
        // PreferNoSchedule clusters run copies only when no other cluster can.
        let preferred = eligible.iter().any(|e| e.avoid.is_none());
        let fits: Vec<u32> = eligible
            .iter()
            .filter(|e| !preferred || e.avoid.is_none())
            .map(|e| e.fits)
            .collect();
        let expected: u64 = if fits.is_empty() {
            u64::from(w.replicas)
        } else {
            fits.iter().map(|&f| u64::from(w.replicas - w.replicas.min(f))).sum()
        };
        prop_assert_eq!(u64::from(placement.explanation.unplaced), expected);
    }

    #[test]
    fn same_input_same_output_in_any_order(
        w in featured_workloads(),
        cs in clusters(),
        prev in previous(),
        seed in any::<u64>(),
    ) {
        let problem = Problem::new(&w, 3, &cs);
        let first = place(&problem, prev.as_ref());
        prop_assert_eq!(&place(&problem, prev.as_ref()), &first);
        let mut reordered = cs.clone();
        let len = reordered.len();
        reordered.rotate_left(usize::try_from(seed % len as u64).unwrap_or(0));
        reordered.reverse();
        prop_assert_eq!(&place(&Problem::new(&w, 3, &reordered), prev.as_ref()), &first);
    }

    #[test]
    fn solving_again_with_the_answer_changes_nothing(
        w in featured_workloads(),
        cs in clusters(),
        prev in previous(),
    ) {
        let problem = Problem::new(&w, 5, &cs);
        let answer = place(&problem, prev.as_ref());
        prop_assert_eq!(place(&problem, Some(&answer)), answer);
    }

    #[test]
    fn explanation_matches_the_placement(w in featured_workloads(), cs in clusters(), prev in previous()) {
        let placement = place(&Problem::new(&w, 1, &cs), prev.as_ref());
        let decisions = &placement.explanation.clusters;
        prop_assert_eq!(decisions.len(), cs.len());
        prop_assert!(decisions.windows(2).all(|d| d[0].cluster <= d[1].cluster));
        let selected: BTreeMap<String, u32> = decisions
            .iter()
            .filter_map(|d| match d.outcome {
                DecisionOutcome::Selected { replicas, .. } if replicas > 0 => {
                    Some((d.cluster.clone(), replicas))
                }
                _ => None,
            })
            .collect();
        prop_assert_eq!(&selected, &placement.clusters);
        prop_assert!(!placement.explanation.summary.is_empty());
        prop_assert!(!placement.explanation.summary.contains('\n'));
    }

    /// Where a summary looks only at an affinity's candidates, those hold every cluster the
    /// affinity picks, in position order.
    #[test]
    fn candidates_hold_every_cluster_an_affinity_picks(a in affinity(), cs in clusters()) {
        let index = crate::ClusterIndex::new(&cs);
        let selector = crate::index::Selector::new(&a, &index);
        if let Some(candidates) = selector.candidates(&index) {
            prop_assert!(candidates.windows(2).all(|w| w[0] < w[1]));
            for (at, c) in cs.iter().enumerate() {
                if selector.check(&index, at).is_ok() {
                    prop_assert!(candidates.contains(&at), "{} picked, not a candidate", c.name);
                }
            }
        }
    }

    /// A summary is the full explanation cut to the chosen clusters: the same placement, the
    /// same summary line (which names filtered clusters when replicas are unplaced).
    #[test]
    fn summary_detail_is_full_detail_cut_to_the_chosen(
        w in featured_workloads(),
        cs in clusters(),
        prev in previous(),
    ) {
        // In name order too, where a summary looks only at the clusters an affinity may pick.
        let mut sorted = cs.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        for cs in [&cs, &sorted] {
            let full = place(&Problem::new(&w, 1, cs), prev.as_ref());
            let problem = Problem {
                detail: Detail::Summary,
                ..Problem::new(&w, 1, cs)
            };
            let summary = place(&problem, prev.as_ref());
            let chosen: Vec<ClusterDecision> = full
                .explanation
                .clusters
                .iter()
                .filter(|d| full.clusters.contains_key(&d.cluster))
                .cloned()
                .collect();
            prop_assert_eq!(&summary.clusters, &full.clusters);
            prop_assert_eq!(&summary.explanation.summary, &full.explanation.summary);
            prop_assert_eq!(summary.explanation.unplaced, full.explanation.unplaced);
            prop_assert_eq!(&summary.explanation.clusters, &chosen);
        }
    }

    /// With equal weights and room everywhere, scaling up by one adds one replica and moves none.
    #[test]
    fn scaling_up_by_one_moves_nothing(replicas in 0u32..50, n in 1usize..12) {
        let cs: Vec<Cluster> = (0..n).map(|i| cluster(&format!("c{i:02}"))).collect();
        let scheduling = ReplicaScheduling::Divided { weighting: Weighting::Equal };
        let before = place(&Problem::new(&workload(replicas, scheduling.clone()), 1, &cs), None);
        let after = place(
            &Problem::new(&workload(replicas + 1, scheduling), 2, &cs),
            Some(&before),
        );
        let moved: u32 = cs
            .iter()
            .map(|c| {
                let old = before.clusters.get(&c.name).copied().unwrap_or(0);
                let new = after.clusters.get(&c.name).copied().unwrap_or(0);
                old.abs_diff(new)
            })
            .sum();
        prop_assert_eq!(moved, 1);
    }
}
