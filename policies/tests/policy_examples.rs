//! The feature examples in `policies/examples/`: each file is parsed with hansa-core's reader
//! (policies bound to their workloads as the federation binds them) and placed on a small
//! federation; the placement and the explanation are what each file's comment promises.

use std::path::Path;

use hansa_core::manifest::{bind, parse_manifests, ManifestFile, Parsed};
use hansa_core::{
    Cluster, ClusterHealth, DecisionOutcome, Placement, Resources, RuntimeKind, Taint, TaintEffect,
    Workload,
};
use hansa_policies::{place, Problem};

fn examples_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
}

fn parse(file: &str) -> Parsed {
    let path = examples_dir().join(file);
    let content = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let files = [ManifestFile {
        name: file,
        content: &content,
    }];
    let mut parsed = parse_manifests(&files).unwrap_or_else(|e| panic!("{file}:\n{e}"));
    bind(&mut parsed.workloads, &parsed.policies);
    parsed
}

fn only_workload(file: &str) -> Workload {
    let parsed = parse(file);
    assert!(parsed.warnings.is_empty(), "{file}: {:?}", parsed.warnings);
    assert_eq!(parsed.workloads.len(), 1, "{file}");
    parsed.workloads.into_iter().next().expect("one workload")
}

fn cluster(name: &str, region: &str, zone: &str, provider: &str) -> Cluster {
    let room = Resources {
        cpu_millis: 2000,
        memory_bytes: 2 << 30,
        disk_bytes: 0,
    };
    Cluster {
        name: name.into(),
        region: region.into(),
        zone: zone.into(),
        provider: provider.into(),
        labels: Default::default(),
        runtimes: vec![RuntimeKind::Process, RuntimeKind::Docker],
        addresses: Vec::new(),
        allocatable: room,
        available: room,
        health: ClusterHealth::Ready,
        cordoned: false,
        taints: Vec::new(),
        nodes: Vec::new(),
    }
}

/// eu-1 (gold), eu-2 (tainted dedicated=gpu:NoSchedule), us-1 (silver), us-2 (onprem),
/// ap-1 (cordoned); each has 2 cpu and 2Gi free.
fn federation() -> Vec<Cluster> {
    let mut eu1 = cluster("eu-1", "eu", "eu-a", "aws");
    eu1.labels.insert("tier".into(), "gold".into());
    let mut eu2 = cluster("eu-2", "eu", "eu-b", "gcp");
    eu2.taints.push(Taint {
        key: "dedicated".into(),
        value: "gpu".into(),
        effect: TaintEffect::NoSchedule,
        added_ms: 0,
    });
    let mut us1 = cluster("us-1", "us", "us-a", "aws");
    us1.labels.insert("tier".into(), "silver".into());
    let us2 = cluster("us-2", "us", "us-b", "onprem");
    let mut ap1 = cluster("ap-1", "ap", "ap-a", "aws");
    ap1.cordoned = true;
    vec![eu1, eu2, us1, us2, ap1]
}

fn solve(w: &Workload, clusters: &[Cluster]) -> Placement {
    let placement = place(&Problem::new(w, 1, clusters), None);
    assert_eq!(
        place(&Problem::new(w, 1, clusters), Some(&placement)),
        placement,
        "re-solving {} changes nothing",
        w.name
    );
    placement
}

fn counts(p: &Placement) -> Vec<(&str, u32)> {
    p.clusters.iter().map(|(c, n)| (c.as_str(), *n)).collect()
}

fn reason<'p>(p: &'p Placement, cluster: &str) -> (&'p str, &'p str) {
    match &p
        .explanation
        .clusters
        .iter()
        .find(|d| d.cluster == cluster)
        .unwrap_or_else(|| panic!("no decision for {cluster}"))
        .outcome
    {
        DecisionOutcome::Filtered { rule, reason } => (rule, reason),
        other => panic!("{cluster} was not filtered: {other:?}"),
    }
}

#[test]
fn karmada_dynamic_weight_divides_12_as_2_4_6() {
    let parsed = parse("karmada-dynamic-weight.yaml");
    assert_eq!(
        parsed.warnings,
        ["karmada-dynamic-weight.yaml doc 2: spec.propagateDeps: true is not used by Hansa (ignored)"]
    );
    assert_eq!(parsed.policies.len(), 1);
    let w = &parsed.workloads[0];
    assert_eq!(
        w.placement.policy,
        "PropagationPolicy default/nginx-propagation"
    );
    // Clusters that fit 6, 12 and 18 replicas of 100m/64Mi.
    let clusters: Vec<Cluster> = [("member1", 6u32), ("member2", 12), ("member3", 18)]
        .into_iter()
        .map(|(name, fits)| {
            let mut c = cluster(name, "eu", "", "");
            c.available = w.template.resources.times(fits);
            c
        })
        .collect();
    let p = solve(w, &clusters);
    assert_eq!(counts(&p), [("member1", 2), ("member2", 4), ("member3", 6)]);
    assert_eq!(
        p.explanation.policy,
        "PropagationPolicy default/nginx-propagation"
    );
}

#[test]
fn karmada_fallback_groups_and_spread() {
    let w = only_workload("karmada-fallback-spread.yaml");
    let p = solve(&w, &federation());
    // The primary group (region eu) takes all 6 over exactly 2 clusters; eu-2's gpu taint is
    // tolerated.
    assert_eq!(counts(&p), [("eu-1", 3), ("eu-2", 3)]);
    assert_eq!(reason(&p, "ap-1"), ("cordoned", "cordoned"));
    assert_eq!(
        reason(&p, "us-1"),
        (
            "clusterAffinities",
            "in clusterAffinities group backup, not used: primary takes the workload"
        )
    );
    assert_eq!(
        reason(&p, "us-2"),
        (
            "clusterAffinities",
            "in no clusterAffinities group (primary, backup)"
        )
    );
}

#[test]
fn native_policy_spreads_over_two_regions() {
    let parsed = parse("web-policy.yaml");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let w = &parsed.workloads[0];
    assert_eq!(w.placement.policy, "PlacementPolicy default/web-regions");
    let p = solve(w, &federation());
    assert_eq!(counts(&p), [("eu-1", 2), ("us-1", 1), ("us-2", 1)]);
    assert_eq!(
        reason(&p, "ap-1"),
        (
            "fieldSelector",
            "excluded by region NotIn [ap]: cluster has region=ap"
        )
    );
    assert_eq!(
        reason(&p, "eu-2"),
        ("taints", "untolerated taint dedicated=gpu:NoSchedule")
    );
}

#[test]
fn marathon_constraints_on_cluster_attributes() {
    let w = only_workload("marathon-constraints.yaml");
    let p = solve(&w, &federation());
    // One per zone, none onprem, one per region: eu-1 and us-1 only; the third fits nowhere.
    assert_eq!(counts(&p), [("eu-1", 1), ("us-1", 1)]);
    assert_eq!(p.explanation.unplaced, 1);
    assert_eq!(
        reason(&p, "us-2"),
        (
            "constraints",
            r#"constraint ["provider", "UNLIKE", "onprem"] fails: cluster has "onprem""#
        )
    );
    assert!(
        p.explanation
            .summary
            .starts_with("2/3 replicas placed, 1 unplaced: limited by constraints"),
        "{}",
        p.explanation.summary
    );
}

#[test]
fn aggregated_uses_the_fewest_clusters_and_tolerates() {
    let w = only_workload("aggregated-tolerations.yaml");
    let p = solve(&w, &federation());
    // 1 cpu / 1Gi per replica: every cluster fits 2, so 5 need three clusters.
    assert_eq!(counts(&p), [("eu-1", 2), ("eu-2", 2), ("us-1", 1)]);
}

#[test]
fn overflow_fills_the_first_group_then_spills() {
    let w = only_workload("fallback-overflow.yaml");
    let p = solve(&w, &federation());
    // eu: only eu-1 (eu-2's taint is not tolerated), 20 fit; the other 10 go to us.
    assert_eq!(counts(&p), [("eu-1", 20), ("us-1", 5), ("us-2", 5)]);
}

#[test]
fn nothing_fits_reads_as_an_operator_needs_it() {
    let mut w = only_workload("marathon-constraints.yaml");
    w.placement = Default::default();
    w.placement.cluster_affinity = Some(hansa_core::ClusterAffinity {
        field_selector: vec![hansa_core::Requirement {
            key: "region".into(),
            operator: hansa_core::SelectorOperator::In,
            values: vec!["eu".into(), "us".into()],
        }],
        ..Default::default()
    });
    w.template.resources = Resources {
        cpu_millis: 100,
        memory_bytes: 512 << 20,
        disk_bytes: 0,
    };
    let mut clusters = federation();
    clusters.retain(|c| c.name != "ap-1");
    let mut eu3 = cluster("eu-3", "eu", "eu-c", "aws");
    eu3.taints = clusters[1].taints.clone();
    clusters.push(eu3);
    clusters[0].taints = clusters[1].taints.clone();
    clusters[1].taints.clear();
    clusters[1].name = "ap-1".into();
    clusters[1].region = "ap".into();
    clusters[2].available.memory_bytes = 256 << 20;
    clusters[3].available.memory_bytes = 128 << 20;
    let p = solve(&w, &clusters);
    assert_eq!(
        p.explanation.summary,
        "0/5 clusters fit: 2 untolerated taint dedicated=gpu:NoSchedule (eu-1, eu-3); \
         2 insufficient memory: need 512Mi, free 256Mi on us-1, 128Mi on us-2; \
         1 excluded by region In [eu, us] (ap-1)"
    );
}

/// Karmada's override example: the PropagationPolicy places the Deployment Duplicated on
/// member1 and member2 (the override's rendering is tested with the assignments, in
/// federator/src/controllers/assignments.rs).
#[test]
fn karmada_override_example_is_placed_by_its_propagation_policy() {
    let parsed = parse("karmada-override.yaml");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    assert_eq!(parsed.overrides.len(), 1);
    let clusters = vec![
        cluster("member1", "eu", "eu-a", "onprem"),
        cluster("member2", "eu", "eu-b", "onprem"),
        cluster("member3", "us", "us-a", "onprem"),
    ];
    let p = solve(&parsed.workloads[0], &clusters);
    assert_eq!(counts(&p), [("member1", 2), ("member2", 2)]);
    assert_eq!(
        p.explanation.policy,
        "PropagationPolicy default/nginx-propagation"
    );
}

/// Every example file is covered by a test here or in examples.rs.
#[test]
fn every_example_is_tested() {
    let mut files: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("policies/examples exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "aggregated-tolerations.yaml",
            "fallback-overflow.yaml",
            "karmada-dynamic-weight.yaml",
            "karmada-fallback-spread.yaml",
            "karmada-override.yaml",
            "marathon-constraints.yaml",
            "web-capacity.yaml",
            "web-duplicated.yaml",
            "web-policy.yaml",
            "web.yaml",
        ]
    );
}
