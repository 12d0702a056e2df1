//! `place` end to end, on small federations an operator would recognise.

use std::collections::BTreeMap;

use hansa_core::{
    Cluster, ClusterAffinity, ClusterHealth, DecisionOutcome, Placement, ReplicaScheduling,
    RuntimeKind, Weighting, Workload,
};

use crate::fixtures::*;
use crate::{place, Problem};

fn solve(workload: &Workload, clusters: &[Cluster], previous: Option<&Placement>) -> Placement {
    place(&Problem::new(workload, 7, clusters), previous)
}

fn counts(placement: &Placement) -> Vec<(&str, u32)> {
    placement
        .clusters
        .iter()
        .map(|(name, n)| (name.as_str(), *n))
        .collect()
}

fn outcome<'p>(placement: &'p Placement, cluster: &str) -> &'p DecisionOutcome {
    &placement
        .explanation
        .clusters
        .iter()
        .find(|d| d.cluster == cluster)
        .unwrap_or_else(|| panic!("no decision for {cluster}"))
        .outcome
}

#[test]
fn web_example_puts_three_in_europe_and_one_in_america() {
    let placement = solve(&web(), &dev_federation(), None);
    assert_eq!(counts(&placement), [("eu-1", 3), ("us-1", 1)]);
    assert_eq!(
        placement.explanation.summary,
        "4/4 replicas on 2 clusters (eu-1=3, us-1=1)"
    );
    assert_eq!(placement.explanation.unplaced, 0);
    assert_eq!(
        (placement.workload.as_str(), placement.namespace.as_str()),
        ("web", "default")
    );
    assert_eq!(placement.generation, 7);
    // ap-1 is eligible but no static weight selects it.
    assert_eq!(
        outcome(&placement, "ap-1"),
        &DecisionOutcome::Selected {
            replicas: 0,
            score: 0,
            fits: 100 * 2,
            note: String::new(),
        }
    );
}

#[test]
fn web_duplicated_runs_one_replica_per_edge_cluster() {
    let mut clusters = dev_federation();
    for c in clusters.iter_mut().filter(|c| c.name != "ap-1") {
        c.labels.insert("tier".into(), "edge".into());
    }
    let placement = solve(&web_duplicated(), &clusters, None);
    assert_eq!(counts(&placement), [("eu-1", 1), ("us-1", 1)]);
    assert_eq!(
        placement.explanation.summary,
        "2/2 replicas on 2 clusters (eu-1=1, us-1=1)"
    );
}

#[test]
fn web_capacity_follows_free_room() {
    let mut clusters = dev_federation();
    let per = web().template.resources;
    for (c, fits) in clusters.iter_mut().zip([10, 20, 30]) {
        c.available = per.times(fits);
    }
    let placement = solve(&web_capacity(), &clusters, None);
    assert_eq!(counts(&placement), [("ap-1", 1), ("eu-1", 2), ("us-1", 3)]);
}

#[test]
fn decisions_are_one_per_cluster_in_name_order() {
    let clusters = [cluster("us-1"), cluster("ap-1"), cluster("eu-1")];
    let placement = solve(&workload(3, divided(Weighting::Equal)), &clusters, None);
    let names: Vec<&str> = placement
        .explanation
        .clusters
        .iter()
        .map(|d| d.cluster.as_str())
        .collect();
    assert_eq!(names, ["ap-1", "eu-1", "us-1"]);
}

#[test]
fn duplicated_gives_every_eligible_cluster_the_count_it_fits() {
    let mut down = cluster("ap-1");
    down.health = ClusterHealth::Unreachable;
    let clusters = [down, cluster_fitting("eu-1", 1), cluster("us-1")];
    let placement = solve(&workload(2, ReplicaScheduling::Duplicated), &clusters, None);
    assert_eq!(counts(&placement), [("eu-1", 1), ("us-1", 2)]);
    assert_eq!(placement.explanation.unplaced, 1);
    assert_eq!(
        placement.explanation.summary,
        "3/4 replicas placed, 1 unplaced: insufficient capacity (eu-1 fits 1); \
         filtered: 1 Unreachable (ap-1)"
    );
}

#[test]
fn static_weights_three_to_one() {
    let clusters = [cluster("eu-1"), cluster("us-1")];
    let of = |replicas| {
        let w = workload(replicas, static_weights(&[("eu-1", 3), ("us-1", 1)]));
        counts(&solve(&w, &clusters, None))
            .into_iter()
            .map(|(_, n)| n)
            .collect::<Vec<_>>()
    };
    assert_eq!(of(4), [3, 1]);
    assert_eq!(of(5), [4, 1]);
}

#[test]
fn static_weight_zero_gets_nothing_even_when_listed() {
    let clusters = [cluster("ap-1"), cluster("eu-1"), cluster("us-1")];
    let w = workload(6, static_weights(&[("eu-1", 2), ("us-1", 0), ("ap-1", 1)]));
    let placement = solve(&w, &clusters, None);
    assert_eq!(counts(&placement), [("ap-1", 2), ("eu-1", 4)]);
    assert!(matches!(
        outcome(&placement, "us-1"),
        DecisionOutcome::Selected {
            replicas: 0,
            score: 0,
            ..
        }
    ));
}

#[test]
fn all_weights_zero_places_nothing_and_says_why() {
    let clusters = [cluster("ap-1"), cluster("eu-1")];
    let w = workload(4, static_weights(&[("us-1", 1)]));
    let placement = solve(&w, &clusters, None);
    assert!(placement.clusters.is_empty());
    assert_eq!(placement.explanation.unplaced, 4);
    assert_eq!(
        placement.explanation.summary,
        "0/4 replicas placed, 4 unplaced: not in staticWeights (weight 0): ap-1, eu-1"
    );
}

#[test]
fn equal_division_of_ten_over_three_is_stable() {
    let clusters = [cluster("a"), cluster("b"), cluster("c")];
    let w = workload(10, divided(Weighting::Equal));
    let fresh = solve(&w, &clusters, None);
    assert_eq!(counts(&fresh), [("a", 4), ("b", 3), ("c", 3)]);

    let previous = Placement {
        workload: "app".into(),
        namespace: "default".into(),
        clusters: BTreeMap::from([("a".into(), 3), ("b".into(), 4), ("c".into(), 3)]),
        ..Default::default()
    };
    let kept = solve(&w, &clusters, Some(&previous));
    assert_eq!(counts(&kept), [("a", 3), ("b", 4), ("c", 3)]);
    assert_eq!(solve(&w, &clusters, Some(&kept)), kept);
}

#[test]
fn previous_of_another_workload_is_ignored() {
    let clusters = [cluster("a"), cluster("b"), cluster("c")];
    let w = workload(10, divided(Weighting::Equal));
    let other = Placement {
        workload: "other".into(),
        namespace: "default".into(),
        clusters: BTreeMap::from([("c".into(), 10)]),
        ..Default::default()
    };
    assert_eq!(
        counts(&solve(&w, &clusters, Some(&other))),
        [("a", 4), ("b", 3), ("c", 3)]
    );
}

#[test]
fn scaling_up_by_one_moves_one_replica() {
    let clusters = [cluster("a"), cluster("b"), cluster("c")];
    let before = solve(&workload(10, divided(Weighting::Equal)), &clusters, None);
    let after = solve(
        &workload(11, divided(Weighting::Equal)),
        &clusters,
        Some(&before),
    );
    assert_eq!(counts(&before), [("a", 4), ("b", 3), ("c", 3)]);
    assert_eq!(counts(&after), [("a", 4), ("b", 4), ("c", 3)]);
}

#[test]
fn available_capacity_divides_like_karmada() {
    let clusters = [
        cluster_fitting("a", 6),
        cluster_fitting("b", 12),
        cluster_fitting("c", 18),
    ];
    let placement = solve(
        &workload(12, divided(Weighting::AvailableCapacity)),
        &clusters,
        None,
    );
    assert_eq!(counts(&placement), [("a", 2), ("b", 4), ("c", 6)]);
    assert!(matches!(
        outcome(&placement, "c"),
        DecisionOutcome::Selected {
            replicas: 6,
            score: 18,
            fits: 18,
            ..
        }
    ));
}

#[test]
fn a_full_cluster_spills_to_the_others_by_weight() {
    let clusters = [cluster("ap-1"), cluster_fitting("eu-1", 4), cluster("us-1")];
    let w = workload(8, static_weights(&[("eu-1", 3), ("us-1", 1)]));
    let placement = solve(&w, &clusters, None);
    // eu-1 would get 6, fits 4; the 2 left go to us-1, not to ap-1 (weight 0).
    assert_eq!(counts(&placement), [("eu-1", 4), ("us-1", 4)]);
    assert_eq!(placement.explanation.unplaced, 0);
}

#[test]
fn partial_placement_names_the_full_clusters() {
    let clusters = [cluster_fitting("eu-1", 2), cluster_fitting("us-1", 1)];
    let placement = solve(&workload(5, divided(Weighting::Equal)), &clusters, None);
    assert_eq!(counts(&placement), [("eu-1", 2), ("us-1", 1)]);
    assert_eq!(placement.explanation.unplaced, 2);
    assert_eq!(
        placement.explanation.summary,
        "3/5 replicas placed, 2 unplaced: insufficient capacity (eu-1 fits 2, us-1 fits 1)"
    );
}

#[test]
fn nothing_fits_groups_clusters_by_rule() {
    let mut w = workload(3, divided(Weighting::Equal));
    w.template.image = Some("nginx:1.27".into());
    w.placement.cluster_affinity = Some(names(&["eu-1", "us-1"]));
    let clusters: Vec<Cluster> = ["us-1", "ap-1", "eu-1"]
        .into_iter()
        .map(|name| {
            let mut c = cluster(name);
            c.runtimes = vec![RuntimeKind::Process];
            c
        })
        .collect();
    let placement = solve(&w, &clusters, None);
    assert!(placement.clusters.is_empty());
    assert_eq!(placement.explanation.unplaced, 3);
    assert_eq!(
        placement.explanation.summary,
        "0/3 clusters fit: 2 no container runtime (eu-1, us-1); 1 not in clusterNames (ap-1)"
    );
}

#[test]
fn an_empty_federation_is_named_as_such() {
    let placement = solve(&workload(2, ReplicaScheduling::Duplicated), &[], None);
    assert_eq!(placement.explanation.unplaced, 2);
    assert_eq!(
        placement.explanation.summary,
        "0/0 clusters fit: the federation has no member clusters"
    );
}

#[test]
fn scaled_to_zero() {
    let placement = solve(
        &workload(0, divided(Weighting::Equal)),
        &[cluster("a")],
        None,
    );
    assert!(placement.clusters.is_empty());
    assert_eq!(
        placement.explanation.summary,
        "0/0 replicas: scaled to zero"
    );
}

#[test]
fn a_duplicate_cluster_name_is_considered_once() {
    let clusters = [cluster("a"), cluster("a")];
    let placement = solve(&workload(2, divided(Weighting::Equal)), &clusters, None);
    assert_eq!(counts(&placement), [("a", 2)]);
    assert_eq!(placement.explanation.clusters.len(), 2);
    assert!(matches!(
        &placement.explanation.clusters[1].outcome,
        DecisionOutcome::Filtered { rule, .. } if rule == "duplicateName"
    ));
}

#[test]
fn exclude_and_labels_combine() {
    let mut w = workload(4, divided(Weighting::Equal));
    w.placement.cluster_affinity = Some(ClusterAffinity {
        exclude: vec!["us-2".into()],
        match_labels: [("tier".to_string(), "gold".to_string())].into(),
        ..Default::default()
    });
    let clusters: Vec<Cluster> = ["eu-1", "us-1", "us-2"]
        .into_iter()
        .map(|name| {
            let mut c = cluster(name);
            if name != "us-1" {
                c.labels.insert("tier".into(), "gold".into());
            }
            c
        })
        .collect();
    let placement = solve(&w, &clusters, None);
    assert_eq!(counts(&placement), [("eu-1", 4)]);
    assert_eq!(
        placement.explanation.summary,
        "4/4 replicas on 1 cluster (eu-1=4)"
    );
}

/// The fixtures above stand for `examples/*.yaml` (tests/examples.rs runs the real parser on
/// them): check each file is YAML and agrees with its fixture, so the two cannot drift apart.
#[test]
fn examples_agree_with_their_fixtures() {
    use serde_norway::Value;
    let examples = [
        (include_str!("../examples/web.yaml"), web(), "Divided"),
        (
            include_str!("../examples/web-duplicated.yaml"),
            web_duplicated(),
            "Duplicated",
        ),
        (
            include_str!("../examples/web-capacity.yaml"),
            web_capacity(),
            "Divided",
        ),
    ];
    for (yaml, fixture, scheduling) in examples {
        let doc: Value = serde_norway::from_str(yaml).expect("example is YAML");
        assert_eq!(doc["apiVersion"].as_str(), Some("hansa.dev/v1"));
        assert_eq!(doc["kind"].as_str(), Some("Workload"));
        assert_eq!(
            doc["metadata"]["name"].as_str(),
            Some(fixture.name.as_str())
        );
        let spec = &doc["spec"];
        assert_eq!(spec["replicas"].as_u64(), Some(u64::from(fixture.replicas)));
        assert_eq!(
            spec["template"]["command"][0].as_str(),
            Some("hansa-demo-http")
        );
        assert_eq!(
            spec["placement"]["replicaScheduling"]["type"].as_str(),
            Some(scheduling)
        );
    }
}
