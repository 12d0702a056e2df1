//! `hansa-bench-place`: the placement engine at federation scale.
//!
//! Generates a federation (clusters in 8 regions x 3 zones, 3 providers, tier labels, some
//! tainted, some without a container runtime, random free capacity) and workloads with a mix
//! of every policy the engine knows: label and field selectors, static and dynamic weights,
//! Duplicated, Aggregated, spread constraints, ordered fallback groups, Marathon constraints,
//! tolerations, min/max per cluster and priorities. Everything is seeded: the same run gives
//! the same federation, workloads and placements.
//!
//! Two measurements per federation size, both on the calling thread (pin it to one core):
//! - `place` one workload at a time (what a decision costs), on clusters indexed once:
//!   decisions per second and the p50/p99/max time per decision;
//! - `place_all` over every workload at once (shared capacity, higher priority first, as the
//!   placement controller does after a cluster change): placements per second.
//!
//! ```sh
//! cargo build --release -p hansa-tests --bin hansa-bench-place
//! taskset -c 1 target/release/hansa-bench-place --clusters 1000 --clusters 5000 --workloads 10000
//! ```
//!
//! Each measurement is followed by the stability check: solving again with the answer as
//! `previous` (and, for `place_all`, the answer's replicas counted as running) should change
//! nothing. Fingerprints of the answers (placements and explanation text) follow: a change
//! that should only make the engine faster must print the same ones as before.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use hansa_core::{
    AffinityGroup, Cluster, ClusterAffinity, ClusterHealth, Placement, PlacementSpec,
    ReplicaScheduling, Requirement, Resources, RuntimeKind, SelectorOperator, SpreadConstraint,
    SpreadKey, StaticWeight, Taint, TaintEffect, TaskTemplate, Toleration, Weighting, Workload,
};
use hansa_policies::{place, place_all, ClusterIndex, Detail, Item, Problem};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The federator's allocator, so the figures are the engine's as the federator runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Benchmark Hansa's placement engine")]
struct Args {
    /// Federation sizes to measure (repeat the flag).
    #[arg(long = "clusters", default_values_t = [1000, 5000])]
    clusters: Vec<usize>,
    /// Workloads to place at each size.
    #[arg(long, default_value_t = 10_000)]
    workloads: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const REGIONS: [&str; 8] = [
    "eu-west",
    "eu-central",
    "us-east",
    "us-west",
    "ap-south",
    "ap-east",
    "sa-east",
    "af-south",
];
const PROVIDERS: [&str; 3] = ["aws", "gcp", "onprem"];
const TIERS: [&str; 3] = ["gold", "silver", "bronze"];

fn federation(n: usize, rng: &mut StdRng) -> Vec<Cluster> {
    (0..n)
        .map(|i| {
            let region = REGIONS[i % REGIONS.len()];
            let allocatable = Resources {
                cpu_millis: rng.gen_range(16..256) * 1000,
                memory_bytes: rng.gen_range(32u64..1024) << 30,
                disk_bytes: 0,
            };
            let used = rng.gen_range(0..90);
            let available = Resources {
                cpu_millis: allocatable.cpu_millis * (100 - used) / 100,
                memory_bytes: allocatable.memory_bytes / 100 * (100 - used),
                disk_bytes: 0,
            };
            let mut taints = Vec::new();
            match i % 50 {
                0 | 1 => taints.push(taint("dedicated", "gpu", TaintEffect::NoSchedule)),
                2 => taints.push(taint("spot", "", TaintEffect::PreferNoSchedule)),
                _ => {}
            }
            Cluster {
                name: format!("c{i:05}"),
                region: region.to_string(),
                zone: format!("{region}-{}", ["a", "b", "c"][(i / 8) % 3]),
                provider: PROVIDERS[i % 3].to_string(),
                labels: [
                    ("tier".to_string(), TIERS[(i / 3) % 3].to_string()),
                    (
                        "env".to_string(),
                        if i % 4 == 0 { "staging" } else { "prod" }.to_string(),
                    ),
                ]
                .into(),
                runtimes: if i % 10 == 0 {
                    vec![RuntimeKind::Process]
                } else {
                    vec![RuntimeKind::Process, RuntimeKind::Docker]
                },
                addresses: Vec::new(),
                allocatable,
                available,
                health: if i % 97 == 0 {
                    ClusterHealth::Unreachable
                } else {
                    ClusterHealth::Ready
                },
                cordoned: i % 101 == 0,
                taints,
                nodes: Vec::new(),
            }
        })
        .collect()
}

fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
    Taint {
        key: key.into(),
        value: value.into(),
        effect,
        added_ms: 0,
    }
}

fn requirement(key: &str, operator: SelectorOperator, values: &[&str]) -> Requirement {
    Requirement {
        key: key.into(),
        operator,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

/// One workload of the mix; `kind` picks the policy.
fn workload(i: usize, clusters: usize, rng: &mut StdRng) -> Workload {
    let region = |rng: &mut StdRng| REGIONS[rng.gen_range(0..REGIONS.len())];
    let mut placement = PlacementSpec {
        priority: rng.gen_range(0..4),
        ..Default::default()
    };
    let kind = i % 10;
    match kind {
        // Divided equally over gold clusters in production.
        0..=2 => {
            placement.cluster_affinity = Some(ClusterAffinity {
                match_labels: [("tier".to_string(), "gold".to_string())].into(),
                match_expressions: vec![requirement("env", SelectorOperator::In, &["prod"])],
                ..Default::default()
            });
        }
        // Static weights by region.
        3 => {
            let (a, b) = (region(rng), region(rng));
            let by_region = |r: &str| ClusterAffinity {
                field_selector: vec![requirement("region", SelectorOperator::In, &[r])],
                ..Default::default()
            };
            placement.replica_scheduling = ReplicaScheduling::Divided {
                weighting: Weighting::Static {
                    weights: vec![
                        StaticWeight {
                            clusters: by_region(a),
                            weight: 2,
                        },
                        StaticWeight {
                            clusters: by_region(b),
                            weight: 1,
                        },
                    ],
                },
            };
        }
        // Dynamic weights, spread over 2 to 3 regions.
        4 | 5 => {
            placement.replica_scheduling = ReplicaScheduling::Divided {
                weighting: Weighting::AvailableCapacity,
            };
            placement.spread_constraints = vec![SpreadConstraint {
                spread_by: SpreadKey::Region,
                min_groups: 2,
                max_groups: Some(3),
                max_skew: None,
            }];
        }
        // One replica in each of a few named clusters.
        6 => {
            placement.replica_scheduling = ReplicaScheduling::Duplicated;
            placement.cluster_affinity = Some(ClusterAffinity {
                cluster_names: (0..5)
                    .map(|_| format!("c{:05}", rng.gen_range(0..clusters)))
                    .collect(),
                ..Default::default()
            });
        }
        // Aggregated within two regions, tolerating the gpu taint.
        7 => {
            placement.replica_scheduling = ReplicaScheduling::Aggregated;
            placement.cluster_affinity = Some(ClusterAffinity {
                field_selector: vec![requirement(
                    "region",
                    SelectorOperator::In,
                    &[region(rng), region(rng)],
                )],
                ..Default::default()
            });
            placement.tolerations = vec![Toleration {
                key: "dedicated".into(),
                value: "gpu".into(),
                ..Default::default()
            }];
        }
        // Ordered fallback: a home region first, then anywhere on one provider, overflowing.
        8 => {
            placement.cluster_affinities = vec![
                AffinityGroup {
                    name: "home".into(),
                    affinity: ClusterAffinity {
                        field_selector: vec![requirement(
                            "region",
                            SelectorOperator::In,
                            &[region(rng)],
                        )],
                        ..Default::default()
                    },
                },
                AffinityGroup {
                    name: "elsewhere".into(),
                    affinity: ClusterAffinity {
                        field_selector: vec![requirement(
                            "provider",
                            SelectorOperator::In,
                            &[PROVIDERS[rng.gen_range(0..3)]],
                        )],
                        ..Default::default()
                    },
                },
            ];
            placement.overflow = i % 20 == 8;
            placement.max_per_cluster = Some(4);
        }
        // Marathon constraints: one replica per zone, balanced over regions.
        _ => {
            placement.constraints = vec![
                vec!["zone".into(), "UNIQUE".into()],
                vec!["region".into(), "GROUP_BY".into(), "3".into()],
                vec!["provider".into(), "UNLIKE".into(), "onprem".into()],
            ];
        }
    }
    let image = kind.is_multiple_of(2).then(|| "nginx:1.27".to_string());
    Workload {
        name: format!("w{i:05}"),
        namespace: "bench".into(),
        labels: BTreeMap::new(),
        format: Default::default(),
        replicas: rng.gen_range(1..=12),
        template: TaskTemplate {
            command: if image.is_some() {
                Vec::new()
            } else {
                vec!["app".into()]
            },
            image,
            resources: Resources {
                cpu_millis: rng.gen_range(1..=8) * 250,
                memory_bytes: rng.gen_range(1u64..=16) << 28,
                disk_bytes: 0,
            },
            ..Default::default()
        },
        placement,
        service: None,
        update: Default::default(),
        rollout: Default::default(),
    }
}

/// Workloads solved again with `Detail::Full` for the fingerprint (every cluster's reason).
const FULL_SAMPLE: usize = 300;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// The policy of each workload kind (`i % 10`), as `workload` builds it.
const MIX: [&str; 10] = [
    "Divided Equal, matchLabels tier=gold + matchExpressions env In [prod]",
    "Divided Equal, matchLabels tier=gold + matchExpressions env In [prod]",
    "Divided Equal, matchLabels tier=gold + matchExpressions env In [prod]",
    "Divided Static weights 2:1 by region (fieldSelector)",
    "Divided AvailableCapacity, spread by region minGroups 2 maxGroups 3",
    "Divided AvailableCapacity, spread by region minGroups 2 maxGroups 3",
    "Duplicated on 5 clusterNames",
    "Aggregated in 2 regions, tolerating dedicated=gpu:NoSchedule",
    "clusterAffinities home region then provider (overflow on half), maxPerCluster 4",
    "constraints zone UNIQUE, region GROUP_BY 3, provider UNLIKE onprem",
];

fn print_mix(workloads: usize) {
    println!("policy mix (workload i takes kind i % 10):");
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for (kind, policy) in MIX.iter().enumerate() {
        let count = (0..workloads).filter(|i| i % 10 == kind).count();
        match seen.iter_mut().find(|(name, _)| name == policy) {
            Some((_, n)) => *n += count,
            None => seen.push((policy, count)),
        }
    }
    for (name, count) in seen {
        println!("  {count:>6}  {name}");
    }
    println!(
        "  all: priority 0-3, 1-12 replicas, 250m-2 cpu and 256Mi-4Gi per replica, even kinds \
         need a container runtime; clusters: 8 regions x 3 zones, 3 providers, tier/env \
         labels, 4% NoSchedule and 2% PreferNoSchedule taints, 10% without containers, \
         ~1% unreachable, ~1% cordoned, 11-100% of capacity free"
    );
}

/// A digest of answers, placements and explanation text: equal digests across builds mean the
/// engine decided and explained alike (a faster engine must print the same ones).
fn fingerprint(answers: &[Placement]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    for p in answers {
        format!("{p:?}").hash(&mut hasher);
    }
    hasher.finish()
}

/// Workloads whose replica counts differ between two answers.
fn changed(a: &[Placement], b: &[Placement]) -> usize {
    a.iter()
        .zip(b)
        .filter(|(a, b)| a.clusters != b.clusters)
        .count()
}

fn main() {
    let args = Args::parse();
    println!(
        "hansa-bench-place: {} workloads, seed {}, {} build, one thread (pin it: taskset -c 1)",
        args.workloads,
        args.seed,
        if cfg!(debug_assertions) {
            "debug (use --release for figures)"
        } else {
            "release"
        }
    );
    print_mix(args.workloads);
    for &n in &args.clusters {
        let mut rng = StdRng::seed_from_u64(args.seed);
        let mut clusters = federation(n, &mut rng);
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        let workloads: Vec<Workload> = (0..args.workloads)
            .map(|i| workload(i, n, &mut rng))
            .collect();
        println!();
        println!("{n} clusters, {} workloads", workloads.len());

        // The clusters indexed once, as `place_all` does per batch.
        let start = Instant::now();
        let index = ClusterIndex::new(&clusters);
        println!("  cluster index built in {}", micros(start.elapsed()));

        // One decision at a time.
        let mut times = Vec::with_capacity(workloads.len());
        let mut answers = Vec::with_capacity(workloads.len());
        let start = Instant::now();
        for w in &workloads {
            let t = Instant::now();
            let problem = Problem {
                detail: Detail::Summary,
                ..Problem::indexed(w, 1, &index)
            };
            let p = place(&problem, None);
            times.push(t.elapsed());
            answers.push(p);
        }
        let total = start.elapsed();
        times.sort_unstable();
        let placed: u64 = answers.iter().map(|p| u64::from(p.total())).sum();
        let pending = answers.iter().filter(|p| p.total() == 0).count();
        let partial = answers
            .iter()
            .filter(|p| p.explanation.unplaced > 0)
            .count();
        println!(
            "  place, one at a time: {:.0} decisions/s; per decision p50 {}, p99 {}, max {} \
             ({placed} replicas placed, {pending} workloads with none, {partial} with some \
             unplaced)",
            workloads.len() as f64 / total.as_secs_f64(),
            micros(percentile(&times, 0.50)),
            micros(percentile(&times, 0.99)),
            micros(times.last().copied().unwrap_or_default()),
        );
        let again: Vec<Placement> = workloads
            .iter()
            .zip(&answers)
            .map(|(w, p)| {
                let problem = Problem {
                    detail: Detail::Summary,
                    ..Problem::indexed(w, 1, &index)
                };
                place(&problem, Some(p))
            })
            .collect();
        println!(
            "  place, solved again with its own answer: {} of {} changed",
            changed(&answers, &again),
            workloads.len()
        );
        // Full detail (one decision per cluster) for a sample, to fingerprint every reason.
        let full: Vec<Placement> = workloads
            .iter()
            .take(FULL_SAMPLE)
            .map(|w| place(&Problem::indexed(w, 1, &index), None))
            .collect();
        println!(
            "  fingerprints: place {:016x}, full detail of {} {:016x}",
            fingerprint(&answers),
            full.len(),
            fingerprint(&full)
        );

        // Every workload at once, sharing capacity, by priority.
        let items: Vec<Item<'_>> = workloads
            .iter()
            .map(|w| Item {
                workload: w,
                generation: 1,
                previous: None,
            })
            .collect();
        let start = Instant::now();
        let placements = place_all(&clusters, &items, 0, Detail::Summary);
        let total = start.elapsed();
        let placed: u64 = placements.iter().map(|p| u64::from(p.total())).sum();
        println!(
            "  place_all (shared capacity, priorities): {:.0} placements/s, {:.2} s \
             ({placed} replicas placed)",
            workloads.len() as f64 / total.as_secs_f64(),
            total.as_secs_f64(),
        );
        // Solving again with the answer in force: what the agents report as free with it
        // running, and each workload's placement as its previous.
        let items_again: Vec<Item<'_>> = workloads
            .iter()
            .zip(&placements)
            .map(|(w, p)| Item {
                workload: w,
                generation: 1,
                previous: Some(p),
            })
            .collect();
        let mut running = clusters.clone();
        for (w, p) in workloads.iter().zip(&placements) {
            for (name, n) in &p.clusters {
                if let Ok(i) = running.binary_search_by(|c| c.name.as_str().cmp(name)) {
                    let c = &mut running[i];
                    c.available = c.available.saturating_sub(&w.template.resources.times(*n));
                }
            }
        }
        let start = Instant::now();
        let again = place_all(&running, &items_again, 0, Detail::Summary);
        let total = start.elapsed();
        println!(
            "  place_all solved again with its answer in force: {} of {} changed ({:.2} s)",
            changed(&placements, &again),
            workloads.len(),
            total.as_secs_f64(),
        );
        println!(
            "  fingerprints: place_all {:016x}, again {:016x}",
            fingerprint(&placements),
            fingerprint(&again)
        );
    }
}
