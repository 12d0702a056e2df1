//! Policy objects and operator actions end to end: a workload placed by a stored Karmada
//! PropagationPolicy, a per-cluster override seen in the replicas' environment, a policy change
//! re-solving the placement, a bad override refused, taints and cordons from the CLI.

use std::time::Duration;

use hansa_tests::{processes_with_env, wait_for, Federation};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn workload(marker: &str) -> String {
    format!(
        r#"apiVersion: hansa.dev/v1
kind: Workload
metadata: {{name: web, labels: {{app: web}}}}
spec:
  replicas: 4
  template:
    command: ["hansa-demo-http"]
    env: {{E2E_POLICY_RUN: "{marker}"}}
    ports: [{{name: http}}]
    resources: {{cpu: 50m, memory: 32Mi}}
"#
    )
}

fn propagation(clusters: &[&str]) -> String {
    let weights: String = clusters
        .iter()
        .map(|c| {
            format!("          - targetCluster: {{clusterNames: [{c}]}}\n            weight: 1\n")
        })
        .collect();
    format!(
        r#"apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {{name: web-pp, namespace: default}}
spec:
  resourceSelectors:
    - {{apiVersion: hansa.dev/v1, kind: Workload, labelSelector: {{matchLabels: {{app: web}}}}}}
  placement:
    clusterAffinity: {{clusterNames: [{}]}}
    replicaScheduling:
      replicaSchedulingType: Divided
      replicaDivisionPreference: Weighted
      weightPreference:
        staticWeightList:
{weights}"#,
        clusters.join(", ")
    )
}

fn override_policy(marker: &str) -> String {
    format!(
        r#"apiVersion: hansa.dev/v1
kind: OverridePolicy
metadata: {{name: eu2-env}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  rules:
    - clusters: {{clusterNames: [eu-2]}}
      env: {{E2E_POLICY_SIDE: "eu2-{marker}"}}
"#
    )
}

fn placement(fed: &Federation, name: &str) -> Option<Value> {
    let items = fed.hansa_json(&["get", "placements"]).ok()?;
    items
        .as_array()?
        .iter()
        .find(|p| p["workload"] == name)
        .map(|p| p["clusters"].clone())
}

fn placed_as(fed: &Federation, name: &str, want: Value) -> Option<()> {
    (placement(fed, name)? == want).then_some(())
}

#[test]
fn stored_policies_overrides_taints_and_cordons() {
    let fed = Federation::new();
    let hub = fed.start_hub("fed-1");
    let api = hub.api.clone();
    let mut agents = Vec::new();
    for (cluster, region, node) in [
        ("eu-1", "eu", "127.0.30.1"),
        ("eu-2", "eu", "127.0.30.2"),
        ("us-1", "us", "127.0.30.3"),
    ] {
        let cert = fed.issue("cluster", cluster);
        let config = fed.agent_config(cluster, region, node, &api, (&cert.0, &cert.1));
        agents.push(fed.start_agent(cluster, &config));
    }
    fed.wait_clusters_ready(3, LIMIT);

    // The policy is applied on its own, before the workload it selects: it is stored.
    let marker = format!("pol-{}", std::process::id());
    let pp = fed.path("pp.yaml");
    std::fs::write(&pp, propagation(&["eu-1", "eu-2"])).expect("policy");
    let out = fed.hansa_ok(&["apply", "-f", pp.to_str().expect("path")]);
    assert!(out.contains("governs no workload"), "{out}");
    let web = fed.path("web.yaml");
    std::fs::write(&web, workload(&marker)).expect("workload");
    let over = fed.path("override.yaml");
    std::fs::write(&over, override_policy(&marker)).expect("override");
    let out = fed.hansa_ok(&[
        "apply",
        "-f",
        web.to_str().expect("path"),
        "-f",
        over.to_str().expect("path"),
    ]);
    assert!(out.contains("eu-1=2 eu-2=2"), "{out}");
    wait_for(
        "4 replicas, the 2 on eu-2 with the override's env",
        LIMIT,
        || {
            let all = processes_with_env("E2E_POLICY_RUN", &marker).len();
            let eu2 = processes_with_env("E2E_POLICY_SIDE", &format!("eu2-{marker}")).len();
            (all == 4 && eu2 == 2).then_some(())
        },
    );
    let explain = fed.hansa_ok(&["explain", "workload", "web"]);
    assert!(
        explain.contains("PropagationPolicy default/web-pp"),
        "{explain}"
    );
    assert!(
        explain.contains("eu-2: OverridePolicy default/eu2-env rule 1"),
        "{explain}"
    );
    let policies = fed.hansa_ok(&["get", "policies"]);
    assert!(
        policies.contains("PropagationPolicy") && policies.contains("OverridePolicy"),
        "{policies}"
    );

    // An override that cannot apply is refused, naming the policy, the rule and the workload.
    let bad = fed.path("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: hansa.dev/v1\nkind: OverridePolicy\nmetadata: {name: bad}\nspec:\n  \
         selector: {names: [web]}\n  rules: [{patch: [{op: replace, path: /nope, value: 1}]}]\n",
    )
    .expect("bad override");
    let out = fed.hansa(&["apply", "-f", bad.to_str().expect("path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("OverridePolicy default/bad rule 1: cannot apply to workload default/web: patch replace /nope: /nope does not exist"),
        "{err}"
    );

    // Deleting the override is a new revision: eu-2's replicas are replaced without the env.
    fed.hansa_ok(&["delete", "overridepolicy", "eu2-env"]);
    wait_for(
        "eu-2's replicas replaced without the override",
        LIMIT,
        || {
            let all = processes_with_env("E2E_POLICY_RUN", &marker).len();
            let eu2 = processes_with_env("E2E_POLICY_SIDE", &format!("eu2-{marker}")).len();
            (all == 4 && eu2 == 0).then_some(())
        },
    );

    // Changing the stored policy alone re-solves the workload it governs; a dry run first
    // shows how.
    std::fs::write(&pp, propagation(&["eu-1", "us-1"])).expect("policy");
    let out = fed.hansa_ok(&["apply", "--dry-run", "-f", pp.to_str().expect("path")]);
    assert!(
        out.contains("would be configured (dry run): governs web [eu-2 2->0, us-1 0->2]"),
        "{out}"
    );
    fed.hansa_ok(&["apply", "-f", pp.to_str().expect("path")]);
    wait_for("the placement to follow the policy", LIMIT, || {
        placed_as(&fed, "web", serde_json::json!({"eu-1": 2, "us-1": 2}))
    });

    // A NoExecute taint from the CLI moves the replicas away; removing it by key works.
    let out = fed.hansa_ok(&["taint", "us-1", "dedicated=gpu:NoExecute"]);
    assert!(out.contains("dedicated=gpu:NoExecute"), "{out}");
    wait_for("the taint to move us-1's replicas", LIMIT, || {
        placed_as(&fed, "web", serde_json::json!({"eu-1": 4}))
    });
    let out = fed.hansa(&["taint", "us-1", "nosuch-"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cluster us-1 has no taint nosuch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fed.hansa_ok(&["taint", "us-1", "dedicated-"]);
    let clusters = fed
        .hansa_json(&["get", "clusters", "us-1"])
        .expect("clusters");
    assert_eq!(clusters[0]["taints"], serde_json::json!(null));

    // A cordoned cluster takes nothing new.
    let out = fed.hansa_ok(&["cordon", "eu-1"]);
    assert!(out.contains("cluster/eu-1 cordoned"), "{out}");
    let api_file = fed.path("api.yaml");
    std::fs::write(
        &api_file,
        "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {name: api}\nspec:\n  replicas: 2\n  \
         template: {command: [hansa-demo-http], resources: {cpu: 10m, memory: 8Mi}}\n  \
         placement: {clusterAffinity: {clusterNames: [eu-1, eu-2]}}\n",
    )
    .expect("api");
    let out = fed.hansa_ok(&["apply", "-f", api_file.to_str().expect("path")]);
    assert!(out.contains("api created: eu-2=2"), "{out}");
    fed.hansa_ok(&["uncordon", "eu-1"]);
    let clusters = fed.hansa_ok(&["get", "clusters"]);
    assert!(!clusters.contains("Cordoned"), "{clusters}");

    fed.hansa_ok(&["delete", "workload", "api"]);
    fed.hansa_ok(&["delete", "workload", "web"]);
    fed.hansa_ok(&["delete", "propagationpolicy", "web-pp"]);
    wait_for("every replica stopped", LIMIT, || {
        processes_with_env("E2E_POLICY_RUN", &marker)
            .is_empty()
            .then_some(())
    });
    drop(agents);
}
