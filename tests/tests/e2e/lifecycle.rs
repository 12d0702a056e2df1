//! The whole path: apply, place 3:1, run, heal a crashed replica, survive a federator
//! kill -9, adopt replicas after an agent restart, delete.

use std::collections::BTreeSet;
use std::time::Duration;

use hansa_tests::{alive, http_get, processes_with_env, signal, wait_for, Federation};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn manifest(marker: &str) -> String {
    format!(
        r#"apiVersion: hansa.dev/v1
kind: Workload
metadata:
  name: web
spec:
  replicas: 4
  template:
    command: ["hansa-demo-http"]
    env: {{E2E_RUN: "{marker}", GREETING: "hello from the e2e test"}}
    ports: [{{name: http}}]
    resources: {{cpu: 50m, memory: 32Mi}}
    healthCheck: {{http: {{port: http, path: /healthz}}, intervalSeconds: 1, gracePeriodSeconds: 1}}
  placement:
    replicaScheduling:
      type: Divided
      weighting: Static
      staticWeights:
        - clusters: {{clusterNames: [eu-1]}}
          weight: 3
        - clusters: {{clusterNames: [us-1]}}
          weight: 1
"#
    )
}

fn all_serve(eps: &[(String, String, String)]) -> bool {
    eps.iter().all(|(cluster, replica, address)| {
        matches!(http_get(address, "/"), Ok((200, body)) if body.contains(replica.as_str()) && body.contains(cluster.as_str()))
    })
}

fn placement(fed: &Federation) -> Option<Value> {
    let items = fed.hansa_json(&["get", "placements"]).ok()?;
    items
        .as_array()?
        .iter()
        .find(|p| p["workload"] == "web")
        .map(|p| p["clusters"].clone())
}

#[test]
fn apply_run_heal_restart_adopt_delete() {
    let fed = Federation::new();
    let hub = fed.start_hub("fed-1");
    let (mut federator, api, fconfig) = (hub.process, hub.api, hub.config);

    let eu = fed.issue("cluster", "eu-1");
    let us = fed.issue("cluster", "us-1");
    let eu_config = fed.agent_config("eu-1", "eu", "127.0.10.1", &api, (&eu.0, &eu.1));
    let us_config = fed.agent_config("us-1", "us", "127.0.11.1", &api, (&us.0, &us.1));
    let mut eu_agent = fed.start_agent("eu-1", &eu_config);
    let _us_agent = fed.start_agent("us-1", &us_config);
    fed.wait_clusters_ready(2, LIMIT);

    // Apply: 4 replicas, 3:1 by weight.
    let marker = format!("e2e-{}", std::process::id());
    let file = fed.path("web.yaml");
    std::fs::write(&file, manifest(&marker)).expect("manifest");
    let out = fed.hansa_ok(&["apply", "-f", file.to_str().expect("path")]);
    assert!(
        out.contains("workload/web created: eu-1=3 us-1=1"),
        "apply said: {out}"
    );

    // Four replica processes answer HTTP on the endpoints describe lists.
    let eps = wait_for("4 healthy endpoints that serve", LIMIT, || {
        let eps = fed.endpoints("web");
        (eps.len() == 4 && all_serve(&eps)).then_some(eps)
    });
    let per_cluster = |c: &str| eps.iter().filter(|e| e.0 == c).count();
    assert_eq!((per_cluster("eu-1"), per_cluster("us-1")), (3, 1));
    assert_eq!(processes_with_env("E2E_RUN", &marker).len(), 4);
    let table = fed.hansa_ok(&["get", "workloads"]);
    assert!(
        table.contains("web") && table.contains("4/4") && table.contains("Running"),
        "{table}"
    );

    // A killed replica is restarted.
    let victim = fed.replica_pids("us-1")[0];
    signal(victim as i32, nix::sys::signal::Signal::SIGKILL);
    wait_for("the killed replica to be restarted", LIMIT, || {
        let d = fed.hansa_json(&["describe", "workload", "web"]).ok()?;
        let restarted = d["clusters"]
            .as_array()?
            .iter()
            .flat_map(|c| c["replicas"].as_array().cloned().unwrap_or_default())
            .any(|r| r["restarts"].as_u64() >= Some(1));
        let eps = fed.endpoints("web");
        (restarted && eps.len() == 4 && all_serve(&eps)).then_some(())
    });
    assert!(!alive(victim));
    assert_eq!(processes_with_env("E2E_RUN", &marker).len(), 4);

    // kill -9 the federator and restart it: same workloads and placements, replicas untouched.
    let before: BTreeSet<u32> = processes_with_env("E2E_RUN", &marker).into_iter().collect();
    let placed = placement(&fed).expect("placement before the crash");
    federator.kill9();
    let _federator = fed.start_federator("fed-1", &fconfig);
    wait_for(
        "the restarted federator to show the placement",
        LIMIT,
        || (placement(&fed)? == placed).then_some(()),
    );
    wait_for(
        "agents to reconnect and report 4 healthy replicas",
        LIMIT,
        || (fed.endpoints("web").len() == 4).then_some(()),
    );
    let after: BTreeSet<u32> = processes_with_env("E2E_RUN", &marker).into_iter().collect();
    assert_eq!(
        before, after,
        "replicas must survive a federator crash untouched"
    );

    // kill -9 an agent and restart it: its replicas are adopted, not duplicated.
    eu_agent.kill9();
    let _eu_agent = fed.start_agent("eu-1", &eu_config);
    wait_for("the restarted agent to report its replicas", LIMIT, || {
        let clusters = fed.hansa_json(&["get", "clusters"]).ok()?;
        let eu = clusters
            .as_array()?
            .iter()
            .find(|c| c["name"] == "eu-1")?
            .clone();
        (eu["connected"] == true && fed.endpoints("web").len() == 4).then_some(())
    });
    // Give a duplicate every chance to appear before counting.
    std::thread::sleep(Duration::from_secs(2));
    let adopted: BTreeSet<u32> = processes_with_env("E2E_RUN", &marker).into_iter().collect();
    assert_eq!(
        before, adopted,
        "an agent restart must adopt, not restart or duplicate"
    );

    // Delete: every replica process is gone.
    let out = fed.hansa_ok(&["delete", "workload", "web"]);
    assert!(out.contains("deleted"), "{out}");
    wait_for("every replica to stop", LIMIT, || {
        processes_with_env("E2E_RUN", &marker)
            .is_empty()
            .then_some(())
    });
    let out = fed.hansa(&["describe", "workload", "web"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
