//! A member cluster of two nodes (two loopback addresses, process runtime): replicas fill the
//! first node to its capacity before the second gets any, endpoints carry each node's
//! address, capacity is reported per node, and neither a replica restart nor an agent restart
//! moves anything.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hansa_tests::{http_get, processes_with_env, signal, wait_for, Federation};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
const NODE_A: &str = "127.0.0.41";
const NODE_B: &str = "127.0.0.42";

fn agent_config(
    fed: &Federation,
    api: &str,
    cert: &(std::path::PathBuf, std::path::PathBuf),
) -> std::path::PathBuf {
    let text = format!(
        r#"cluster = "eu-1"
region = "eu"
federators = ["{api}"]
data_dir = "{data}"
heartbeat_ms = 500
stop_grace_seconds = 3

# Listed b first: the tie between empty nodes goes by name, not by order.
[[nodes]]
name = "node-b"
address = "{NODE_B}"
process = true
capacity = {{ cpu = "1", memory = "1Gi", disk = "10Gi" }}

[[nodes]]
name = "node-a"
address = "{NODE_A}"
process = true
capacity = {{ cpu = "1", memory = "1Gi", disk = "10Gi" }}

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
"#,
        data = fed.agent_data("eu-1").display(),
        ca = fed.pki.join("ca.crt").display(),
        cert = cert.0.display(),
        key = cert.1.display(),
    );
    let path = fed.path("agent-eu-1-nodes.toml");
    std::fs::write(&path, text).expect("agent config");
    path
}

fn manifest(marker: &str) -> String {
    format!(
        r#"apiVersion: hansa.dev/v1
kind: Workload
metadata:
  name: web
spec:
  replicas: 6
  template:
    command: ["hansa-demo-http"]
    env: {{E2E_RUN: "{marker}"}}
    ports: [{{name: http}}]
    resources: {{cpu: 250m, memory: 64Mi}}
    healthCheck: {{http: {{port: http, path: /healthz}}, intervalSeconds: 1, gracePeriodSeconds: 1}}
"#
    )
}

/// (replica id, endpoint address without port), for replicas whose endpoints serve HTTP.
fn serving(fed: &Federation) -> BTreeMap<String, String> {
    fed.endpoints("web")
        .into_iter()
        .filter(|(_, replica, address)| {
            matches!(http_get(address, "/"), Ok((200, body)) if body.contains(replica.as_str()))
        })
        .map(|(_, replica, address)| {
            let host = address.rsplit_once(':').map_or(address.clone(), |(h, _)| h.to_string());
            (replica, host)
        })
        .collect()
}

fn cluster(fed: &Federation) -> Option<Value> {
    let clusters = fed.hansa_json(&["get", "clusters"]).ok()?;
    clusters
        .as_array()?
        .iter()
        .find(|c| c["name"] == "eu-1")
        .cloned()
}

/// (name, address, allocatable cpu, available cpu) per node, as `hansa get clusters` shows.
fn nodes(cluster: &Value) -> Vec<(String, String, u64, u64)> {
    cluster["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    (
                        n["name"].as_str().unwrap_or_default().to_string(),
                        n["address"].as_str().unwrap_or_default().to_string(),
                        n["allocatable"]["cpuMillis"].as_u64().unwrap_or_default(),
                        n["available"]["cpuMillis"].as_u64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn on_node(placed: &BTreeMap<String, String>, address: &str) -> usize {
    placed.values().filter(|a| a.as_str() == address).count()
}

#[test]
fn replicas_fill_one_node_then_the_next_and_stay_put() {
    let fed = Federation::new();
    let hub = fed.start_hub("fed-1");
    let cert = fed.issue("cluster", "eu-1");
    let config = agent_config(&fed, &hub.api, &cert);
    let mut agent = fed.start_agent("eu-1", &config);
    fed.wait_clusters_ready(1, LIMIT);

    // The cluster's capacity is the sum over its nodes; each node is listed with its own.
    let registered = cluster(&fed).expect("cluster eu-1");
    assert_eq!(registered["allocatable"]["cpuMillis"], 2000, "{registered}");
    assert_eq!(
        nodes(&registered),
        [
            ("node-b".to_string(), NODE_B.to_string(), 1000, 1000),
            ("node-a".to_string(), NODE_A.to_string(), 1000, 1000),
        ],
        "{registered}"
    );

    let marker = format!("e2e-nodes-{}", std::process::id());
    let file = fed.path("web.yaml");
    std::fs::write(&file, manifest(&marker)).expect("manifest");
    fed.hansa_ok(&["apply", "-f", file.to_str().expect("path")]);

    // 1 cpu per node, 250m per replica: four on node-a (first by name), then two on node-b.
    let placed = wait_for("6 replicas serving", LIMIT, || {
        let placed = serving(&fed);
        (placed.len() == 6).then_some(placed)
    });
    assert_eq!(
        (on_node(&placed, NODE_A), on_node(&placed, NODE_B)),
        (4, 2),
        "{placed:?}"
    );
    assert_eq!(processes_with_env("E2E_RUN", &marker).len(), 6);

    // Per-node free capacity reaches the federator.
    let reported = wait_for("per-node available capacity", LIMIT, || {
        let c = cluster(&fed)?;
        let n = nodes(&c);
        (n.iter().map(|n| n.3).collect::<Vec<_>>() == [500, 0]).then_some(c)
    });
    assert_eq!(reported["available"]["cpuMillis"], 500, "{reported}");
    let table = fed.hansa_ok(&["get", "clusters"]);
    let row = |node: &str| {
        table
            .lines()
            .find(|l| l.contains(node))
            .map(str::split_whitespace)
            .map(Iterator::collect::<Vec<_>>)
    };
    assert_eq!(
        row("node-a"),
        Some(vec![
            "eu-1",
            "node-a",
            NODE_A,
            "process",
            "0/1",
            "768Mi/1Gi"
        ]),
        "{table}"
    );

    // A killed replica on node-b restarts there, under the same id.
    let (victim, _) = placed
        .iter()
        .find(|(_, address)| address.as_str() == NODE_B)
        .expect("a replica on node-b");
    let pids = processes_with_env("HANSA_REPLICA_ID", victim);
    assert_eq!(pids.len(), 1, "one process for {victim}");
    signal(pids[0] as i32, nix::sys::signal::Signal::SIGKILL);
    wait_for("the killed replica to restart on its node", LIMIT, || {
        let now = processes_with_env("HANSA_REPLICA_ID", victim);
        (now.len() == 1 && now != pids && serving(&fed) == placed).then_some(())
    });

    // An agent restart adopts every replica where it runs: same ids, nodes and processes.
    let before: BTreeSet<u32> = processes_with_env("E2E_RUN", &marker).into_iter().collect();
    agent.kill9();
    let _agent = fed.start_agent("eu-1", &config);
    wait_for("the restarted agent to report its replicas", LIMIT, || {
        let c = cluster(&fed)?;
        (c["connected"] == true && serving(&fed) == placed).then_some(())
    });
    // Give a duplicate or a move every chance to appear before comparing.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(serving(&fed), placed, "nothing moved");
    let after: BTreeSet<u32> = processes_with_env("E2E_RUN", &marker).into_iter().collect();
    assert_eq!(
        before, after,
        "an agent restart must adopt, not restart or move"
    );

    fed.hansa_ok(&["delete", "workload", "web"]);
    wait_for("every replica to stop", LIMIT, || {
        processes_with_env("E2E_RUN", &marker)
            .is_empty()
            .then_some(())
    });

    // Fragmentation: 2 cpu free in sum, but 1 per node. Three 600m replicas fit the
    // cluster's total, so the federator assigns them all; the third fits no node, and
    // describe says so.
    wait_for("the freed capacity to be reported", LIMIT, || {
        let c = cluster(&fed)?;
        (nodes(&c).iter().all(|n| n.3 == 1000)).then_some(())
    });
    let big = manifest(&marker)
        .replace("name: web", "name: big")
        .replace("replicas: 6", "replicas: 3")
        .replace("cpu: 250m", "cpu: 600m");
    std::fs::write(&file, big).expect("manifest");
    fed.hansa_ok(&["apply", "-f", file.to_str().expect("path")]);
    let text = wait_for("the unplaced replica in describe", LIMIT, || {
        let text = fed.hansa_ok(&["describe", "workload", "big"]);
        text.contains("not placed").then_some(text)
    });
    assert!(
        text.contains("eu-1: 1 replica(s) not placed: no node has room: needs cpu 600m memory 64Mi; largest free: node-a (cpu 400m memory 960Mi"),
        "{text}"
    );
    let described = fed
        .hansa_json(&["describe", "workload", "big"])
        .expect("describe -o json");
    assert_eq!(
        described["clusters"][0]["unplaced"]["replicas"], 1,
        "{described}"
    );
    assert_eq!(processes_with_env("E2E_RUN", &marker).len(), 2);
    fed.hansa_ok(&["delete", "workload", "big"]);
    wait_for("every replica to stop", LIMIT, || {
        processes_with_env("E2E_RUN", &marker)
            .is_empty()
            .then_some(())
    });
}
