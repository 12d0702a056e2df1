use std::collections::BTreeMap;

use super::{parse_err, parse_ok};
use crate::model::*;

const FIXTURE: &str = include_str!("../../../tests/fixtures/hello-marathon.json");

#[test]
fn hello_marathon_fixture_parses() {
    let parsed = parse_ok("hello-marathon.json", FIXTURE);
    assert_eq!(parsed.workloads.len(), 1);
    let w = &parsed.workloads[0];
    assert_eq!(
        w.key(),
        WorkloadKey::new("default", "marathon-demo-application")
    );
    assert_eq!(w.format, ManifestFormat::Marathon);
    assert_eq!(w.replicas, 1);
    assert_eq!(w.template.image.as_deref(), Some("hello_world:latest"));
    assert_eq!(
        w.template.resources,
        Resources {
            cpu_millis: 1000,
            memory_bytes: 128 << 20,
            disk_bytes: 0
        }
    );
    assert_eq!(
        w.template.ports,
        [PortSpec {
            name: "port0".into(),
            container_port: Some(9001),
            host_port: None,
            protocol: Protocol::Tcp,
        }]
    );
    assert_eq!(
        w.template.env_convention,
        EnvConvention::Marathon {
            app_id: "/marathon-demo-application".into()
        }
    );
    assert_eq!(w.placement, PlacementSpec::default());
    assert_eq!(
        w.service,
        Some(ServiceSpec {
            name: "marathon-demo-application".into(),
            ports: vec![ServicePort {
                name: "port0".into(),
                port: 9001,
                target_port: "port0".into(),
                protocol: Protocol::Tcp,
            }],
        })
    );
    assert_eq!(
        parsed.warnings,
        [
            "hello-marathon.json doc 1: container.type: DOCKER is not used by Hansa (ignored)",
            "hello-marathon.json doc 1: networks: is not used by Hansa (ignored)",
        ]
    );
}

const FULL: &str = r#"{
  "id": "/prod/web",
  "cmd": "python3 -m http.server $PORT0",
  "cpus": 0.25,
  "mem": 64,
  "disk": 10.5,
  "instances": 3,
  "requirePorts": true,
  "portDefinitions": [
    {"port": 8080, "name": "http"},
    {"port": 0, "protocol": "udp,tcp", "name": "dns"}
  ],
  "env": {"GREETING": "hi", "DB_PASSWORD": {"secret": "db"}},
  "secrets": {"db": {"source": "/db/password"}},
  "healthChecks": [
    {"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 30,
     "intervalSeconds": 10, "timeoutSeconds": 5, "maxConsecutiveFailures": 2},
    {"protocol": "TCP"}
  ],
  "constraints": [["hostname", "UNIQUE"], ["region", "LIKE", "eu-.*"]],
  "labels": {"team": "shop", "HAPROXY_0_VHOST": "web.example.com", "note": "free text here"},
  "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.2},
  "backoffSeconds": 1
}"#;

#[test]
fn app_with_all_used_fields() {
    let parsed = parse_ok("web.json", FULL);
    let w = &parsed.workloads[0];
    assert_eq!(w.key(), WorkloadKey::new("prod", "web"));
    assert_eq!(w.replicas, 3);
    let t = &w.template;
    assert_eq!(t.image, None);
    assert_eq!(t.runtime_kind(), RuntimeKind::Process);
    assert_eq!(
        t.command,
        ["/bin/sh", "-c", "python3 -m http.server $PORT0"]
    );
    assert_eq!(t.env, BTreeMap::from([("GREETING".into(), "hi".into())]));
    assert_eq!(
        t.resources,
        Resources {
            cpu_millis: 250,
            memory_bytes: 64 << 20,
            disk_bytes: (10 << 20) + (1 << 19)
        }
    );
    let port = |name: &str, host: Option<u16>, protocol| PortSpec {
        name: name.into(),
        container_port: None,
        host_port: host,
        protocol,
    };
    assert_eq!(
        t.ports,
        [
            port("http", Some(8080), Protocol::Tcp),
            port("dns", None, Protocol::Udp),
            port("dns-tcp", None, Protocol::Tcp),
        ]
    );
    assert_eq!(
        t.health_check,
        Some(HealthCheck {
            probe: Probe::Http {
                port: "http".into(),
                path: "/health".into()
            },
            grace_seconds: 30,
            interval_seconds: 10,
            timeout_seconds: 5,
            failure_threshold: 2,
            success_threshold: 1,
        })
    );
    assert_eq!(
        t.env_convention,
        EnvConvention::Marathon {
            app_id: "/prod/web".into()
        }
    );
    assert_eq!(
        w.placement.constraints,
        [vec!["hostname", "UNIQUE"], vec!["region", "LIKE", "eu-.*"]]
    );
    assert_eq!(w.placement.replica_scheduling, ReplicaScheduling::default());
    assert_eq!(
        w.labels,
        BTreeMap::from([
            ("team".into(), "shop".into()),
            ("HAPROXY_0_VHOST".into(), "web.example.com".into())
        ])
    );
    let service = w.service.as_ref().unwrap();
    assert_eq!(service.name, "web");
    assert_eq!(
        service.ports,
        [ServicePort {
            name: "http".into(),
            port: 8080,
            target_port: "http".into(),
            protocol: Protocol::Tcp
        }]
    );
    assert_eq!(
        parsed.warnings,
        [
            "web.json doc 1: env.DB_PASSWORD: secrets are not supported by Hansa; DB_PASSWORD is not set (ignored)",
            "web.json doc 1: healthChecks[1]: Hansa runs one health check per app, the first (ignored)",
            "web.json doc 1: labels.note: label note: value \"free text here\" must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit; not kept as a label (ignored)",
            "web.json doc 1: backoffSeconds: 1 is not used by Hansa (ignored)",
            "web.json doc 1: secrets: is not used by Hansa (ignored)",
        ]
    );
    assert_eq!(
        parsed.workloads[0].update,
        UpdateStrategy {
            max_surge: Amount::Percent(20),
            max_unavailable: Amount::Percent(50),
        }
    );
}

#[test]
fn groups_and_lists_of_apps() {
    let group = r#"{"id": "/shop", "apps": [{"id": "web", "cmd": "web"}],
        "groups": [{"id": "back", "apps": [{"id": "/shop/back/db", "container": {"docker": {"image": "postgres"}}, "args": ["-c", "fsync=off"]}]}]}"#;
    let parsed = parse_ok("shop.json", group);
    let keys: Vec<String> = parsed
        .workloads
        .iter()
        .map(|w| w.key().to_string())
        .collect();
    assert_eq!(keys, ["shop/web", "shop-back/db"]);
    let db = &parsed.workloads[1].template;
    assert!(db.command.is_empty());
    assert_eq!(db.args, ["-c", "fsync=off"]);

    let list = r#"[{"id": "a", "args": ["/bin/a", "--fast"]}, {"id": "b", "cmd": "b", "portDefinitions": []}]"#;
    let parsed = parse_ok("apps.json", list);
    assert_eq!(parsed.workloads[0].template.command, ["/bin/a", "--fast"]);
    // Like Marathon, an app that declares no ports gets one dynamic port ($PORT0).
    let port0 = PortSpec {
        name: "port0".into(),
        ..Default::default()
    };
    assert_eq!(parsed.workloads[0].template.ports, [port0]);
    assert_eq!(parsed.workloads[0].service.as_ref().unwrap().ports, []);
    assert_eq!(parsed.workloads[1].template.ports, []);
    assert_eq!(parsed.workloads[1].name, "b");
}

#[test]
fn app_errors_name_the_field() {
    assert_eq!(
        parse_err(
            "a.json",
            r#"{"id": "/a", "cmd": "x", "instances": "three"}"#
        ),
        ["a.json doc 1: instances: expected an integer, got string \"three\""]
    );
    assert_eq!(
        parse_err("a.json", r#"{"id": "/a", "cmd": "x", "instances": -1}"#),
        ["a.json doc 1: instances: must be >= 0 (got -1)"]
    );
    assert_eq!(
        parse_err("a.json", r#"{"id": "/Prod/web", "cmd": "x"}"#),
        ["a.json doc 1: id: \"Prod\" is not a DNS label (1-63 lowercase letters, digits and '-', starting and ending with a letter or digit); Hansa makes DNS names from Marathon ids"]
    );
    assert_eq!(
        parse_err("a.json", r#"{"id": "/a", "cmd": "x", "mem": -5}"#),
        ["a.json doc 1: mem: invalid quantity \"-5\": must not be negative"]
    );
    assert_eq!(
        parse_err("a.json", r#"{"id": "/a"}"#),
        ["a.json doc 1: cmd: missing: an app without container.docker.image needs cmd or args"]
    );
    assert_eq!(
        parse_err("a.json", r#"[{"id": "/a", "cmd": "x", "healthChecks": [{"protocol": "TCP", "portIndex": 1}]}]"#),
        ["a.json doc 1: [0].healthChecks[0].portIndex: 1 is not a port of this app (its ports: port0)"]
    );
    assert_eq!(
        parse_err("a.json", r#"{"id": "/a", "cmd": "x", "constraints": [["hostname", "UNIQ"]]}"#),
        ["a.json doc 1: constraints[0]: unknown constraint operator \"UNIQ\" (use one of UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS)"]
    );
}

#[test]
fn malformed_json_names_the_position() {
    assert_eq!(
        parse_err("a.json", "{\"id\": \"/a\",\n \"cmd\": }"),
        ["a.json doc 1: invalid JSON: expected value at line 2 column 9"]
    );
}

#[test]
fn a_label_stages_an_apps_rollout_across_clusters() {
    use crate::rollout::{ClusterOrder, ClusterRollout};
    let app = r#"{"id": "/web", "cmd": "web", "labels": {"team": "a",
        "HANSA_ROLLOUT_CLUSTERS": "{\"maxParallel\": 1, \"order\": [\"eu-1\", \"us-1\"], \"minHealthySeconds\": 30, \"autoRevert\": true}"}}"#;
    let parsed = parse_ok("web.json", app);
    let w = &parsed.workloads[0];
    assert_eq!(
        w.rollout.clusters,
        Some(ClusterRollout {
            order: ClusterOrder::Names(vec!["eu-1".into(), "us-1".into()]),
            min_healthy_seconds: 30,
            auto_revert: true,
            ..ClusterRollout::default()
        })
    );
    assert_eq!(
        w.labels,
        BTreeMap::from([("team".to_string(), "a".to_string())]),
        "read, not kept as a label"
    );
    assert_eq!(
        parse_err(
            "web.json",
            r#"{"id": "/web", "cmd": "web", "labels": {"HANSA_ROLLOUT_CLUSTERS": "{\"onFailure\": \"stop\"}"}}"#
        ),
        ["web.json doc 1: labels.HANSA_ROLLOUT_CLUSTERS.onFailure: must be pause or rollback (got \"stop\")"]
    );
}
