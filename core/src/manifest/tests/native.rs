use std::collections::BTreeMap;

use super::{parse_err, parse_ok};
use crate::model::*;

const FULL: &str = r#"
apiVersion: hansa.dev/v1
kind: Workload
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 4
  template:
    image: nginx:1.27
    command: ["hansa-demo-http"]
    args: ["--greeting", "hi"]
    env: {GREETING: hello}
    ports:
      - name: http
        containerPort: 8080
        hostPort: 9000
      - name: metrics
        protocol: udp
    resources: {cpu: 100m, memory: 64Mi, disk: 1Gi}
    healthCheck:
      http: {port: http, path: /healthz}
      gracePeriodSeconds: 10
      intervalSeconds: 3
      timeoutSeconds: 2
      failureThreshold: 4
      successThreshold: 2
  placement:
    clusterAffinity: {clusterNames: [eu-1, us-1], exclude: [ap-1], matchLabels: {tier: gold}}
    replicaScheduling:
      type: Divided
      weighting: Static
      staticWeights:
        - clusters: {clusterNames: [eu-1]}
          weight: 3
        - clusters: {clusterNames: [us-1]}
          weight: 1
    constraints: [["region", "UNIQUE"]]
  service:
    ports: [{name: http, port: 80, targetPort: http, protocol: tcp}]
"#;

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(ToString::to_string).collect()
}

#[test]
fn reads_every_field() {
    let parsed = parse_ok("web.yaml", FULL);
    assert_eq!(parsed.warnings, Vec::<String>::new());
    let expected = Workload {
        name: "web".into(),
        namespace: "shop".into(),
        labels: BTreeMap::from([("app".into(), "web".into())]),
        format: ManifestFormat::Native,
        replicas: 4,
        template: TaskTemplate {
            image: Some("nginx:1.27".into()),
            command: names(&["hansa-demo-http"]),
            args: names(&["--greeting", "hi"]),
            env: BTreeMap::from([("GREETING".into(), "hello".into())]),
            ports: vec![
                PortSpec {
                    name: "http".into(),
                    container_port: Some(8080),
                    host_port: Some(9000),
                    protocol: Protocol::Tcp,
                },
                PortSpec {
                    name: "metrics".into(),
                    container_port: None,
                    host_port: None,
                    protocol: Protocol::Udp,
                },
            ],
            resources: Resources {
                cpu_millis: 100,
                memory_bytes: 64 << 20,
                disk_bytes: 1 << 30,
            },
            health_check: Some(HealthCheck {
                probe: Probe::Http {
                    port: "http".into(),
                    path: "/healthz".into(),
                },
                grace_seconds: 10,
                interval_seconds: 3,
                timeout_seconds: 2,
                failure_threshold: 4,
                success_threshold: 2,
            }),
            env_convention: EnvConvention::Hansa,
            image_pull_policy: Default::default(),
            labels: Default::default(),
        },
        placement: PlacementSpec {
            cluster_affinity: Some(ClusterAffinity {
                cluster_names: names(&["eu-1", "us-1"]),
                exclude: names(&["ap-1"]),
                match_labels: BTreeMap::from([("tier".into(), "gold".into())]),
                ..Default::default()
            }),
            replica_scheduling: ReplicaScheduling::Divided {
                weighting: Weighting::Static {
                    weights: vec![
                        StaticWeight {
                            clusters: ClusterAffinity {
                                cluster_names: names(&["eu-1"]),
                                ..Default::default()
                            },
                            weight: 3,
                        },
                        StaticWeight {
                            clusters: ClusterAffinity {
                                cluster_names: names(&["us-1"]),
                                ..Default::default()
                            },
                            weight: 1,
                        },
                    ],
                },
            },
            constraints: vec![names(&["region", "UNIQUE"])],
            ..Default::default()
        },
        service: Some(ServiceSpec {
            name: "web".into(),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                target_port: "http".into(),
                protocol: Protocol::Tcp,
            }],
        }),
        update: Default::default(),
        rollout: Default::default(),
    };
    assert_eq!(parsed.workloads, vec![expected]);
}

#[test]
fn minimal_process_workload_gets_defaults() {
    let parsed = parse_ok(
        "demo.yaml",
        "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {name: demo}\nspec:\n  template:\n    command: [hansa-demo-http]\n    resources: {cpu: 0.5, memory: 128974848}\n",
    );
    let w = &parsed.workloads[0];
    assert_eq!(w.key(), WorkloadKey::new("default", "demo"));
    assert_eq!(w.replicas, 1);
    assert_eq!(w.template.image, None);
    assert_eq!(w.template.runtime_kind(), RuntimeKind::Process);
    assert_eq!(w.template.resources.cpu_millis, 500);
    assert_eq!(w.template.resources.memory_bytes, 128_974_848);
    assert_eq!(w.placement, PlacementSpec::default());
    assert_eq!(w.service, None);
}

const MINIMAL: &str = "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {name: web}\nspec:\n  replicas: 1\n  template: {command: [app]}\n";

#[test]
fn negative_replicas_name_the_field_and_the_value() {
    let content = format!(
        "{MINIMAL}---\n{}",
        MINIMAL.replace("replicas: 1", "replicas: -1")
    );
    assert_eq!(
        parse_err("web.yaml", &content),
        ["web.yaml doc 2: spec.replicas: must be >= 0 (got -1)"]
    );
}

#[test]
fn unknown_fields_are_errors_with_their_path() {
    let content = MINIMAL.replace(
        "template: {command: [app]}",
        "template: {command: [app], imagee: nginx}",
    );
    assert_eq!(
        parse_err("web.yaml", &content),
        ["web.yaml doc 1: spec.template.imagee: unknown field `imagee`, expected one of `image`, `command`, `args`, `env`, `ports`, `resources`, `healthCheck`, `imagePullPolicy`"]
    );
}

#[test]
fn bad_names_are_errors() {
    let content = MINIMAL.replace("name: web", "name: Web_1");
    assert_eq!(
        parse_err("web.yaml", &content),
        ["web.yaml doc 1: metadata.name: \"Web_1\" is not a DNS label (1-63 lowercase letters, digits and '-', starting and ending with a letter or digit)"]
    );
}

#[test]
fn reads_a_staged_rollout_across_clusters() {
    use crate::rollout::{ClusterOrder, ClusterRollout, OnFailure, RolloutSpec};
    let content = MINIMAL.replace(
        "  replicas: 1\n",
        "  replicas: 1\n  update:\n    maxSurge: 1\n    revisionHistoryLimit: 3\n    clusters:\n      maxParallel: 2\n      order: [us-1, eu-1]\n      minHealthySeconds: 30\n      onFailure: rollback\n      progressDeadlineSeconds: 300\n      autoRevert: true\n",
    );
    let w = &parse_ok("web.yaml", &content).workloads[0];
    assert_eq!(
        w.rollout,
        RolloutSpec {
            clusters: Some(ClusterRollout {
                max_parallel: 2,
                order: ClusterOrder::Names(names(&["us-1", "eu-1"])),
                min_healthy_seconds: 30,
                on_failure: OnFailure::Rollback,
                progress_deadline_seconds: 300,
                auto_revert: true,
            }),
            revision_history_limit: 3,
        }
    );
    assert_eq!(w.update.max_surge, Amount::Count(1));

    let by_region = MINIMAL.replace(
        "  replicas: 1\n",
        "  replicas: 1\n  update: {clusters: {order: byRegion}}\n",
    );
    let w = &parse_ok("web.yaml", &by_region).workloads[0];
    let clusters = w.rollout.clusters.as_ref().unwrap();
    assert_eq!(clusters.order, ClusterOrder::ByRegion);
    // The defaults: one cluster at a time, 10 s healthy, pause on failure.
    assert_eq!(
        (
            clusters.max_parallel,
            clusters.min_healthy_seconds,
            clusters.on_failure
        ),
        (1, 10, OnFailure::Pause)
    );
    assert_eq!(w.rollout.revision_history_limit, 10);
}

#[test]
fn bad_rollout_fields_are_named() {
    let content = MINIMAL.replace(
        "  replicas: 1\n",
        "  replicas: 1\n  update:\n    revisionHistoryLimit: 0\n    clusters: {maxParallel: 0, order: [eu-1, eu-1, 3], onFailure: retry, progressDeadlineSeconds: 0, minHealthySeconds: -1}\n",
    );
    assert_eq!(
        parse_err("web.yaml", &content),
        [
            "web.yaml doc 1: spec.update.revisionHistoryLimit: must be >= 1 (got 0)",
            "web.yaml doc 1: spec.update.clusters.maxParallel: must be >= 1 (got 0)",
            "web.yaml doc 1: spec.update.clusters.minHealthySeconds: must be >= 0 (got -1)",
            "web.yaml doc 1: spec.update.clusters.progressDeadlineSeconds: must be >= 1 (got 0)",
            "web.yaml doc 1: spec.update.clusters.onFailure: must be pause or rollback (got \"retry\")",
            "web.yaml doc 1: spec.update.clusters.order[1]: cluster eu-1 is listed twice",
            "web.yaml doc 1: spec.update.clusters.order[2]: must be a cluster name (got 3)",
        ]
    );
    let content = MINIMAL.replace(
        "  replicas: 1\n",
        "  replicas: 1\n  update: {clusters: {order: byZone}}\n",
    );
    assert_eq!(
        parse_err("web.yaml", &content),
        ["web.yaml doc 1: spec.update.clusters.order: must be a list of cluster names or \"byRegion\" (got \"byZone\")"]
    );
}
