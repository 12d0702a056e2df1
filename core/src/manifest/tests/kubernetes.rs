use std::collections::BTreeMap;

use super::{parse_err, parse_ok};
use crate::manifest::{parse_manifests, ManifestFile};
use crate::model::*;

const FIXTURE: &str = include_str!("../../../tests/fixtures/hello-kubernetes.yaml");

#[test]
fn hello_kubernetes_fixture_parses_with_warnings() {
    let parsed = parse_ok("hello-kubernetes.yaml", FIXTURE);
    assert_eq!(parsed.workloads.len(), 1);
    let w = &parsed.workloads[0];
    assert_eq!(w.key(), WorkloadKey::new("default", "hello-world"));
    assert_eq!(w.format, ManifestFormat::Kubernetes);
    assert_eq!(w.replicas, 1);
    assert_eq!(w.template.image.as_deref(), Some("hello-world:latest"));
    assert_eq!(
        w.template.ports,
        [PortSpec {
            name: "p9001".into(),
            container_port: Some(9001),
            host_port: None,
            protocol: Protocol::Tcp,
        }]
    );
    assert_eq!(
        w.service,
        Some(ServiceSpec {
            name: "hello-world-service".into(),
            ports: vec![ServicePort {
                name: "p9001".into(),
                port: 9001,
                target_port: "p9001".into(),
                protocol: Protocol::Tcp,
            }],
        })
    );
    assert_eq!(
        parsed.warnings,
        [
            "hello-kubernetes.yaml doc 1: spec.selector: missing (required by apps/v1 Deployment); derived from spec.template.metadata.labels {app: hello-world}",
            "hello-kubernetes.yaml doc 2: spec.type: LoadBalancer is not used by Hansa (ignored)",
        ]
    );
}

/// The copy in core/tests/fixtures must stay the shared fixture (read when it is there, so
/// the crate builds without the shared folder).
#[test]
fn fixture_copies_match_the_shared_fixtures() {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    for (name, copy) in [
        ("hello-kubernetes.yaml", FIXTURE),
        (
            "hello-marathon.json",
            include_str!("../../../tests/fixtures/hello-marathon.json"),
        ),
    ] {
        match std::fs::read_to_string(shared.join(name)) {
            Ok(original) => {
                assert_eq!(
                    original, copy,
                    "core/tests/fixtures/{name} differs from shared/fixtures/{name}"
                );
                parse_ok(name, &original);
            }
            Err(e) => eprintln!("shared/fixtures/{name} not checked: {e}"),
        }
    }
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web, team: a}
  annotations: {note: x}
spec:
  replicas: 3
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: "10%"}}
  selector:
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: In, values: [front]}]
  template:
    metadata:
      labels: {app: web, tier: front}
    spec:
      restartPolicy: Always
      containers:
      - name: web
        image: nginx:1.27
        imagePullPolicy: IfNotPresent
        command: [nginx]
        args: ["-g", "daemon off;"]
        env:
        - {name: GREETING, value: hello}
        - {name: EMPTY}
        - name: SECRET
          valueFrom: {secretKeyRef: {name: s, key: k}}
        ports:
        - {name: http, containerPort: 8080}
        - {containerPort: 9090, protocol: UDP, hostPort: 19090}
        resources:
          requests: {cpu: 250m, memory: 64Mi}
          limits: {cpu: "1", memory: 128Mi, ephemeral-storage: 1Gi}
        livenessProbe:
          tcpSocket: {port: 8080}
        readinessProbe:
          httpGet: {path: /ready, port: http}
          initialDelaySeconds: 7
          periodSeconds: 4
          timeoutSeconds: 2
          failureThreshold: 5
          successThreshold: 1
"#;

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web-svc, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: web, port: 80, targetPort: http}
  - {port: 9090, protocol: UDP, nodePort: 30090}
"#;

#[test]
fn deployment_with_all_used_fields() {
    let parsed = parse_ok("web.yaml", &format!("{DEPLOYMENT}---{SERVICE}"));
    let w = &parsed.workloads[0];
    assert_eq!(w.key(), WorkloadKey::new("shop", "web"));
    assert_eq!(w.replicas, 3);
    assert_eq!(
        w.labels,
        BTreeMap::from([("app".into(), "web".into()), ("team".into(), "a".into())])
    );
    let t = &w.template;
    assert_eq!(t.command, ["nginx"]);
    assert_eq!(t.args, ["-g", "daemon off;"]);
    assert_eq!(
        t.env,
        BTreeMap::from([
            ("GREETING".into(), "hello".into()),
            ("EMPTY".into(), String::new())
        ])
    );
    assert_eq!(
        t.ports,
        [
            PortSpec {
                name: "http".into(),
                container_port: Some(8080),
                host_port: None,
                protocol: Protocol::Tcp
            },
            PortSpec {
                name: "p9090".into(),
                container_port: Some(9090),
                host_port: Some(19090),
                protocol: Protocol::Udp
            },
        ]
    );
    assert_eq!(
        t.resources,
        Resources {
            cpu_millis: 250,
            memory_bytes: 64 << 20,
            disk_bytes: 1 << 30
        }
    );
    assert_eq!(
        t.health_check,
        Some(HealthCheck {
            probe: Probe::Http {
                port: "http".into(),
                path: "/ready".into()
            },
            grace_seconds: 7,
            interval_seconds: 4,
            timeout_seconds: 2,
            failure_threshold: 5,
            success_threshold: 1,
        })
    );
    let service = w.service.as_ref().unwrap();
    assert_eq!(service.name, "web-svc");
    assert_eq!(
        service.ports,
        [
            ServicePort {
                name: "web".into(),
                port: 80,
                target_port: "http".into(),
                protocol: Protocol::Tcp
            },
            ServicePort {
                name: "p9090".into(),
                port: 9090,
                target_port: "p9090".into(),
                protocol: Protocol::Udp
            },
        ]
    );
    assert_eq!(
        parsed.warnings,
        [
            "web.yaml doc 1: metadata.annotations: is not used by Hansa (ignored)",
            "web.yaml doc 1: spec.template.spec.containers[0].env[2].valueFrom: is not supported by Hansa; SECRET is not set (ignored)",
            "web.yaml doc 1: spec.template.spec.containers[0].resources.limits: are not enforced by Hansa (placement uses requests; a limit stands in for a missing request)",
            "web.yaml doc 1: spec.template.spec.containers[0].livenessProbe: is not used by Hansa: the readinessProbe is the health check (ignored)",
            "web.yaml doc 1: spec.template.spec.containers[0].imagePullPolicy: IfNotPresent is not used by Hansa (ignored)",
            "web.yaml doc 1: spec.template.spec.restartPolicy: Always is not used by Hansa (ignored)",
            "web.yaml doc 2: spec.ports[1].nodePort: 30090 is not used by Hansa (ignored)",
        ]
    );
    assert_eq!(
        parsed.workloads[0].update,
        UpdateStrategy {
            max_surge: Amount::Count(1),
            max_unavailable: Amount::Percent(10),
        }
    );
}

#[test]
fn service_and_deployment_join_across_files_in_any_order() {
    let files = [
        ManifestFile {
            name: "svc.yaml",
            content: SERVICE,
        },
        ManifestFile {
            name: "other.json",
            content: r#"{"id": "/shop/batch", "cmd": "run"}"#,
        },
        ManifestFile {
            name: "deploy.yaml",
            content: DEPLOYMENT,
        },
    ];
    let parsed = parse_manifests(&files).unwrap();
    let names: Vec<String> = parsed
        .workloads
        .iter()
        .map(|w| w.key().to_string())
        .collect();
    assert_eq!(names, ["shop/batch", "shop/web"]);
    assert_eq!(
        parsed.workloads[1].service.as_ref().unwrap().name,
        "web-svc"
    );
}

#[test]
fn service_selecting_nothing_is_a_warning_and_a_second_service_an_error() {
    let lonely = SERVICE.replace("{app: web}", "{app: other}");
    let parsed = parse_ok("web.yaml", &format!("{DEPLOYMENT}---{lonely}"));
    assert_eq!(parsed.workloads[0].service, None);
    assert!(parsed.warnings.contains(
        &"web.yaml doc 2: spec.selector: {app: other} matches no Deployment's pod template labels in namespace shop; Service web-svc is ignored".to_string()
    ));
    let second = SERVICE.replace("web-svc", "web-svc2");
    assert_eq!(
        parse_err("web.yaml", &format!("{DEPLOYMENT}---{SERVICE}---{second}")),
        ["web.yaml doc 3: spec.selector: Deployment web already has Service web-svc (web.yaml doc 2); Hansa gives a workload one Service"]
    );
}

#[test]
fn service_selecting_two_deployments_is_an_error() {
    let twin = DEPLOYMENT.replace("name: web\n  namespace", "name: web2\n  namespace");
    assert_eq!(
        parse_err("web.yaml", &format!("{DEPLOYMENT}---{twin}---{SERVICE}")),
        ["web.yaml doc 3: spec.selector: {app: web} matches the pods of several Deployments (web, web2); a Service must select exactly one"]
    );
}

#[test]
fn deployment_errors_point_at_the_field() {
    let two = DEPLOYMENT.replace(
        "      - name: web\n",
        "      - {name: side, image: busybox}\n      - name: web\n",
    );
    assert_eq!(
        parse_err("web.yaml", &two),
        ["web.yaml doc 1: spec.template.spec.containers[1]: a second container is not supported: Hansa runs one task per replica; put each container in a Deployment of its own"]
    );
    let bad_selector = DEPLOYMENT.replace("matchLabels: {app: web}", "matchLabels: {app: api}");
    assert_eq!(
        parse_err("web.yaml", &bad_selector),
        ["web.yaml doc 1: spec.selector: does not match spec.template.metadata.labels {app: web, tier: front} (matchLabels app: api); Kubernetes rejects such a Deployment"]
    );
    let negative = DEPLOYMENT.replace("replicas: 3", "replicas: -2");
    assert_eq!(
        parse_err("web.yaml", &negative),
        ["web.yaml doc 1: spec.replicas: must be >= 0 (got -2)"]
    );
    let bad_probe = DEPLOYMENT.replace("port: http}", "port: 8081}");
    assert_eq!(
        parse_err("web.yaml", &bad_probe),
        ["web.yaml doc 1: spec.template.spec.containers[0].readinessProbe.httpGet.port: 8081 is not a port of this container (its ports: http 8080, p9090 9090)"]
    );
    let bad_cpu = DEPLOYMENT.replace("cpu: 250m", "cpu: lots");
    assert_eq!(
        parse_err("web.yaml", &bad_cpu),
        ["web.yaml doc 1: spec.template.spec.containers[0].resources.requests.cpu: invalid quantity \"lots\": expected a number with an optional suffix like 100m, 0.5, 64Mi or 1G"]
    );
    let bad_target = SERVICE.replace("targetPort: http", "targetPort: 8081");
    assert_eq!(
        parse_err("web.yaml", &format!("{DEPLOYMENT}---{bad_target}")),
        ["web.yaml doc 2: spec.ports[0].targetPort: Deployment web has no containerPort 8081 (its ports: http 8080, p9090 9090)"]
    );
}

#[test]
fn no_selector_and_no_template_labels_is_an_error() {
    let content = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: [{name: x, image: x}]\n";
    assert_eq!(
        parse_err("x.yaml", content),
        ["x.yaml doc 1: spec.selector: missing (required by apps/v1 Deployment), and spec.template.metadata.labels is empty too; add labels to the pod template and a selector matching them"]
    );
}

#[test]
fn an_annotation_stages_a_deployments_rollout_across_clusters() {
    use crate::rollout::{ClusterOrder, ClusterRollout, OnFailure};
    let staged = DEPLOYMENT
        .replace(
            "annotations: {note: x}",
            "annotations:\n    hansa.dev/rollout-clusters: '{maxParallel: 2, order: byRegion, onFailure: rollback, autoRevert: true}'",
        )
        .replace("  replicas: 3\n", "  replicas: 3\n  revisionHistoryLimit: 4\n");
    let parsed = parse_ok("web.yaml", &format!("{staged}---{SERVICE}"));
    let w = &parsed.workloads[0];
    assert_eq!(
        w.rollout.clusters,
        Some(ClusterRollout {
            max_parallel: 2,
            order: ClusterOrder::ByRegion,
            on_failure: OnFailure::Rollback,
            auto_revert: true,
            ..ClusterRollout::default()
        })
    );
    assert_eq!(w.rollout.revision_history_limit, 4);
    // Hansa's annotation is read, so only the other fields are warned about.
    assert!(
        !parsed.warnings.iter().any(|w| w.contains("annotations")),
        "{:?}",
        parsed.warnings
    );

    let with = |annotation: &str| {
        let bad = DEPLOYMENT.replace(
            "annotations: {note: x}",
            &format!("annotations:\n    {annotation}"),
        );
        parse_err("web.yaml", &bad)
    };
    assert_eq!(
        with("hansa.dev/rollout-clusters: '{maxParallel: 0}'"),
        ["web.yaml doc 1: metadata.annotations[\"hansa.dev/rollout-clusters\"].maxParallel: must be >= 1 (got 0)"]
    );
    let unknown = with("hansa.dev/rollout-clusters: '{parallel: 2}'");
    assert!(
        unknown[0].starts_with("web.yaml doc 1: metadata.annotations[\"hansa.dev/rollout-clusters\"]: must hold the fields of spec.update.clusters")
            && unknown[0].contains("parallel"),
        "{unknown:?}"
    );
    assert_eq!(
        with("hansa.dev/rollout: x"),
        ["web.yaml doc 1: metadata.annotations[\"hansa.dev/rollout\"]: unknown Hansa annotation (known: hansa.dev/rollout-clusters)"]
    );
}
