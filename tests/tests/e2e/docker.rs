//! The docker runtime with a real Docker Engine: busybox httpd containers on two clusters
//! serve HTTP on their published endpoints; a killed container is replaced; `hansa logs`
//! reads a container's output; an absent image with `imagePullPolicy: Never` shows in the
//! workload's status; an agent restarted in steady state adopts its containers without
//! restarting any.
//!
//! The image is built here from Debian's busybox-static (`docker import`, no registry) under a
//! tag of this run, and removed at the end with every container the test's clusters ran.
//! Without an engine the test fails in CI (`CI=true`) and is skipped loudly elsewhere.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hansa_tests::{http_get, wait_for, Federation};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

/// Whether the engine answers; panics in CI when it does not.
fn engine_or_skip(test: &str) -> bool {
    let answered = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if answered {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(
        !ci,
        "{test}: no Docker Engine is reachable, and in CI the docker tests must run (scripts/docker-engine starts one)"
    );
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPED {test}: no Docker Engine is reachable (`docker info` failed).");
    eprintln!("!!! Run scripts/docker-engine (as root) or start dockerd, then run it again.");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!();
    false
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An image built from /bin/busybox (busybox-static) by `docker import`; removed on drop,
/// with every container of the given clusters.
struct TestImage {
    tag: String,
    clusters: Vec<String>,
}

impl TestImage {
    fn build(dir: &Path, clusters: &[&str]) -> TestImage {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox is missing: apt-get install busybox-static"
        );
        let root = dir.join("image-root");
        std::fs::create_dir_all(root.join("bin")).expect("image root");
        std::fs::create_dir_all(root.join("tmp")).expect("image root");
        std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
        for applet in [
            "sh", "httpd", "echo", "cat", "sleep", "mkdir", "true", "false",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("link");
        }
        let tarball = dir.join("image.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(status.success(), "tar failed");
        // Unique per test too: tests of one process must not remove each other's image.
        let tag = format!(
            "hansa-test/busybox:e2e-{}-{}",
            std::process::id(),
            clusters.first().copied().unwrap_or("none")
        );
        docker(&[
            "import",
            "--change",
            "ENV PATH=/bin",
            tarball.to_str().expect("path"),
            &tag,
        ]);
        TestImage {
            tag,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
        }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        for cluster in &self.clusters {
            let ids = Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=hansa.dev/cluster={cluster}"),
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in ids.split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

/// Cluster names unique to this run, so runs sharing an engine never see each other's
/// containers.
fn cluster_names() -> (String, String) {
    let tag = std::process::id() % 100_000;
    (format!("dk-eu-{tag}"), format!("dk-us-{tag}"))
}

fn manifest(image: &str, eu: &str, us: &str) -> String {
    format!(
        r#"apiVersion: hansa.dev/v1
kind: Workload
metadata:
  name: bbweb
spec:
  replicas: 1
  template:
    image: {image}
    imagePullPolicy: Never
    command: ["sh", "-c"]
    args: ["mkdir -p /www && echo \"hello from $HANSA_REPLICA_ID on $HANSA_CLUSTER\" > /www/index.html && echo \"serving $HANSA_REPLICA_ID on port $PORT0\" && exec httpd -f -p $PORT0 -h /www"]
    ports: [{{name: http}}]
    resources: {{cpu: 100m, memory: 32Mi}}
    healthCheck: {{http: {{port: http, path: /}}, intervalSeconds: 1, gracePeriodSeconds: 1}}
  placement:
    clusterAffinity: {{clusterNames: [{eu}, {us}]}}
    replicaScheduling: {{type: Duplicated}}
---
apiVersion: hansa.dev/v1
kind: Workload
metadata:
  name: absent
spec:
  replicas: 1
  template:
    image: hansa-test/absent:e2e
    imagePullPolicy: Never
    command: ["sh"]
  placement:
    clusterAffinity: {{clusterNames: [{eu}]}}
"#
    )
}

fn serves(replica: &str, cluster: &str, address: &str) -> bool {
    matches!(http_get(address, "/"), Ok((200, body)) if body.contains(replica) && body.contains(cluster))
}

/// Replica statuses of a workload from `describe -o json`, as JSON objects.
fn replicas(fed: &Federation, workload: &str) -> Vec<Value> {
    fed.hansa_json(&["describe", "workload", workload])
        .ok()
        .map(|d| {
            let mut all = Vec::new();
            collect_replicas(&d, &mut all);
            all
        })
        .unwrap_or_default()
}

/// Every object with `id`, `state` and `restarts` keys, wherever `describe` nests them.
fn collect_replicas(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("id") && map.contains_key("state") && map.contains_key("restarts") {
                out.push(value.clone());
            }
            for v in map.values() {
                collect_replicas(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_replicas(v, out)),
        _ => {}
    }
}

/// Container name -> (id, StartedAt) of a cluster's running containers.
fn containers(cluster: &str) -> BTreeMap<String, (String, String)> {
    let ids = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=hansa.dev/cluster={cluster}"),
    ]);
    ids.split_whitespace()
        .map(|id| {
            let line = docker(&[
                "inspect",
                "--format",
                "{{.Name}} {{.Id}} {{.State.StartedAt}}",
                id,
            ]);
            let mut parts = line.split_whitespace();
            let name = parts.next().unwrap_or_default().trim_start_matches('/');
            let full = parts.next().unwrap_or_default();
            let started = parts.next().unwrap_or_default();
            (name.to_string(), (full.to_string(), started.to_string()))
        })
        .collect()
}

fn docker_agent_config(
    fed: &Federation,
    cluster: &str,
    node: &str,
    api: &str,
) -> std::path::PathBuf {
    let cert = fed.issue("cluster", cluster);
    let path = fed.agent_config(cluster, "eu", node, api, (&cert.0, &cert.1));
    let text = std::fs::read_to_string(&path).expect("agent config");
    std::fs::write(
        &path,
        format!("runtimes = [\"process\", \"docker\"]\n{text}"),
    )
    .expect("agent config");
    path
}

#[test]
fn docker_replicas_serve_heal_log_and_are_adopted() {
    if !engine_or_skip("docker_replicas_serve_heal_log_and_are_adopted") {
        return;
    }
    let fed = Federation::new();
    let (eu, us) = cluster_names();
    let image = TestImage::build(fed.dir.path(), &[&eu, &us]);

    let hub = fed.start_hub("fed-1");
    let api = hub.api.clone();
    let eu_config = docker_agent_config(&fed, &eu, "127.0.20.1", &api);
    let us_config = docker_agent_config(&fed, &us, "127.0.21.1", &api);
    let mut eu_agent = fed.start_agent(&eu, &eu_config);
    let _us_agent = fed.start_agent(&us, &us_config);
    fed.wait_clusters_ready(2, LIMIT);

    let file = fed.path("bbweb.yaml");
    std::fs::write(&file, manifest(&image.tag, &eu, &us)).expect("manifest");
    fed.hansa_ok(&["apply", "-f", file.to_str().expect("path")]);

    // One httpd container per cluster serves on its published endpoint.
    let eps = wait_for("2 healthy endpoints that serve HTTP", LIMIT, || {
        let eps = fed.endpoints("bbweb");
        (eps.len() == 2 && eps.iter().all(|(c, r, a)| serves(r, c, a))).then_some(eps)
    });
    let clusters: Vec<&str> = eps.iter().map(|e| e.0.as_str()).collect();
    assert!(
        clusters.contains(&eu.as_str()) && clusters.contains(&us.as_str()),
        "{eps:?}"
    );
    for (cluster, replica, _) in &eps {
        let name = format!("hansa-{cluster}-{replica}");
        let labels = docker(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"hansa.dev/workload\"}} {{index .Config.Labels \"hansa.dev/revision\"}} {{.HostConfig.RestartPolicy.Name}}",
            &name,
        ]);
        assert_eq!(labels.trim(), "bbweb 1 no", "labels of {name}");
    }

    // An absent image with imagePullPolicy Never: Failed, and the status says why.
    let message = wait_for("the absent image in the status", LIMIT, || {
        replicas(&fed, "absent").into_iter().find_map(|r| {
            let message = r["message"].as_str()?.to_string();
            (r["state"] == "Failed" && message.contains("hansa-test/absent:e2e")).then_some(message)
        })
    });
    assert!(message.contains("imagePullPolicy is Never"), "{message}");

    // `hansa logs` reads the container's output through the federator and the agent.
    let (eu_replica, eu_address) = eps
        .iter()
        .find(|e| e.0 == eu)
        .map(|e| (e.1.clone(), e.2.clone()))
        .expect("an eu endpoint");
    let logs = wait_for("the replica's output from hansa logs", LIMIT, || {
        let out = fed.hansa(&["logs", "bbweb", "--cluster", &eu]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.contains("serving")).then_some(text)
    });
    assert!(logs.contains(&format!("serving {eu_replica}")), "{logs}");

    // A killed container is replaced: same replica, restarted, serving again.
    let name = format!("hansa-{eu}-{eu_replica}");
    let (old_id, _) = containers(&eu)
        .get(&name)
        .cloned()
        .expect("the eu container");
    docker(&["kill", &name]);
    wait_for("the killed container replaced and serving", LIMIT, || {
        let now = containers(&eu);
        let (id, _) = now.get(&name)?;
        (id != &old_id && serves(&eu_replica, &eu, &eu_address)).then_some(())
    });
    wait_for("the restart counted in the status", LIMIT, || {
        replicas(&fed, "bbweb").into_iter().find(|r| {
            r["id"] == eu_replica.as_str()
                && r["restarts"].as_u64() >= Some(1)
                && r["healthy"] == true
        })
    });

    // An agent restarted in steady state adopts its containers: none is restarted.
    let before = containers(&eu);
    assert!(!before.is_empty());
    eu_agent.kill9();
    let mut eu_agent = fed.start_agent(&eu, &eu_config);
    wait_for(
        "the restarted agent reporting its healthy replica",
        LIMIT,
        || {
            let log = eu_agent.log_text();
            let adopted = log.contains("adopted a replica started by a previous agent");
            let healthy = fed.endpoints("bbweb").iter().any(|e| e.0 == eu);
            (adopted && healthy).then_some(())
        },
    );
    // A few probe intervals later, still the very same containers.
    wait_for("two more healthy reports", LIMIT, || {
        let log = eu_agent.log_text();
        (log.matches("replica is healthy").count() >= 1).then_some(())
    });
    assert_eq!(
        containers(&eu),
        before,
        "the restarted agent must not restart containers"
    );
    assert!(serves(&eu_replica, &eu, &eu_address));

    // Delete: every container goes.
    fed.hansa_ok(&["delete", "workload", "bbweb"]);
    fed.hansa_ok(&["delete", "workload", "absent"]);
    wait_for(
        "every container of the test's clusters removed",
        LIMIT,
        || (containers(&eu).is_empty() && containers(&us).is_empty()).then_some(()),
    );
    eu_agent.terminate(Duration::from_secs(20));
}

/// The staged rollout scenario of `staged_rollout.rs`, on containers: busybox httpd serves
/// `/healthz` (a file); revision 2's health check asks for a path that is not there.
#[test]
fn docker_staged_rollout_reverts_a_broken_revision_and_rolls_a_good_one_cluster_by_cluster() {
    let test =
        "docker_staged_rollout_reverts_a_broken_revision_and_rolls_a_good_one_cluster_by_cluster";
    if !engine_or_skip(test) {
        return;
    }
    let fed = Federation::new();
    let run_tag = std::process::id() % 100_000;
    let (eu, us) = (
        format!("dk-roll-eu-{run_tag}"),
        format!("dk-roll-us-{run_tag}"),
    );
    let image = TestImage::build(fed.dir.path(), &[&eu, &us]);
    let hub = fed.start_hub("fed-1");
    let eu_config = docker_agent_config(&fed, &eu, "127.0.45.1", &hub.api);
    let us_config = docker_agent_config(&fed, &us, "127.0.46.1", &hub.api);
    let _eu_agent = fed.start_agent(&eu, &eu_config);
    let _us_agent = fed.start_agent(&us, &us_config);
    fed.wait_clusters_ready(2, LIMIT);
    let template = |greeting: &str, health_path: &str| {
        format!(
            r#"    image: {}
    imagePullPolicy: Never
    command: ["sh", "-c"]
    args: ["mkdir -p /www && echo {greeting} > /www/index.html && echo ok > /www/healthz && exec httpd -f -p $PORT0 -h /www"]
    ports: [{{name: http}}]
    resources: {{cpu: 10m, memory: 32Mi}}
    healthCheck: {{http: {{port: http, path: {health_path}}}, intervalSeconds: 1, gracePeriodSeconds: 1}}
"#,
            image.tag
        )
    };
    super::staged_rollout::run(&super::staged_rollout::Scenario {
        fed: &fed,
        first: &eu,
        second: &us,
        template: &template,
    });
}
