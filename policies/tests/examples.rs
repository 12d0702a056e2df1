//! Every manifest in `policies/examples/` parses with the native reader, without warnings, and
//! places on a dev-like federation the way the README walk-through says.

use std::path::Path;

use hansa_core::manifest::{parse_manifests, ManifestFile};
use hansa_core::{
    Cluster, ClusterAffinity, ClusterHealth, Placement, PlacementSpec, ReplicaScheduling,
    RuntimeKind, StaticWeight, Weighting, Workload,
};
use hansa_policies::{place, Problem};

fn examples_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
}

/// Parses one file; it must hold exactly one workload and no warnings.
fn parse(name: &str, content: &str) -> Workload {
    let files = [ManifestFile { name, content }];
    let parsed = parse_manifests(&files).unwrap_or_else(|e| panic!("{name}:\n{e}"));
    assert!(
        parsed.warnings.is_empty(),
        "{name}: unexpected warnings {:?}",
        parsed.warnings
    );
    assert_eq!(
        parsed.workloads.len(),
        1,
        "{name}: one workload per example"
    );
    parsed.workloads.into_iter().next().expect("one workload")
}

fn load(file: &str) -> Workload {
    let path = examples_dir().join(file);
    let content = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse(file, &content)
}

/// `hansa dev`'s three clusters: ap-1, eu-1 and us-1 with room for 10, 20 and 30 replicas of
/// `web`; eu-1 and us-1 are labelled `tier=edge`.
fn federation(web: &Workload) -> Vec<Cluster> {
    [("ap-1", 10), ("eu-1", 20), ("us-1", 30)]
        .into_iter()
        .map(|(name, fits)| {
            let room = web.template.resources.times(fits);
            Cluster {
                name: name.to_string(),
                region: name.to_string(),
                zone: String::new(),
                provider: "local".to_string(),
                labels: if name == "ap-1" {
                    Default::default()
                } else {
                    [("tier".to_string(), "edge".to_string())].into()
                },
                runtimes: vec![RuntimeKind::Process],
                addresses: Vec::new(),
                allocatable: room,
                available: room,
                health: ClusterHealth::Ready,
                cordoned: false,
                taints: Vec::new(),
                nodes: Vec::new(),
            }
        })
        .collect()
}

fn solve(workload: &Workload) -> Placement {
    let clusters = federation(workload);
    let placement = place(&Problem::new(workload, 1, &clusters), None);
    assert_eq!(
        place(&Problem::new(workload, 1, &clusters), Some(&placement)),
        placement,
        "re-solving {} changes nothing",
        workload.name
    );
    placement
}

fn counts(placement: &Placement) -> Vec<(&str, u32)> {
    placement
        .clusters
        .iter()
        .map(|(name, n)| (name.as_str(), *n))
        .collect()
}

#[test]
fn examples_parse_and_place() {
    let mut seen = Vec::new();
    // The other examples (policies, Karmada, constraints) are checked in policy_examples.rs.
    for file in ["web-capacity.yaml", "web-duplicated.yaml", "web.yaml"] {
        {
            let workload = load(file);
            let placement = solve(&workload);
            assert!(
                placement.total() > 0,
                "{file}: {}",
                placement.explanation.summary
            );
            assert_eq!(placement.explanation.unplaced, 0, "{file}");
            seen.push(file.to_string());
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        ["web-capacity.yaml", "web-duplicated.yaml", "web.yaml"]
    );

    let web = load("web.yaml");
    assert_eq!((web.name.as_str(), web.replicas), ("web", 4));
    assert_eq!(web.template.command, ["hansa-demo-http"]);
    assert_eq!(web.service.as_ref().map(|s| s.name.as_str()), Some("web"));
    let weight = |name: &str, weight| StaticWeight {
        clusters: ClusterAffinity {
            cluster_names: vec![name.to_string()],
            ..Default::default()
        },
        weight,
    };
    assert_eq!(
        web.placement,
        PlacementSpec {
            replica_scheduling: ReplicaScheduling::Divided {
                weighting: Weighting::Static {
                    weights: vec![weight("eu-1", 3), weight("us-1", 1)],
                },
            },
            ..Default::default()
        }
    );
    let placement = solve(&web);
    assert_eq!(counts(&placement), [("eu-1", 3), ("us-1", 1)]);
    assert_eq!(
        placement.explanation.summary,
        "4/4 replicas on 2 clusters (eu-1=3, us-1=1)"
    );

    let duplicated = load("web-duplicated.yaml");
    assert_eq!(
        duplicated.placement.replica_scheduling,
        ReplicaScheduling::Duplicated
    );
    assert_eq!(counts(&solve(&duplicated)), [("eu-1", 1), ("us-1", 1)]);

    let capacity = load("web-capacity.yaml");
    assert_eq!(
        counts(&solve(&capacity)),
        [("ap-1", 1), ("eu-1", 2), ("us-1", 3)]
    );
}
