//! A rolling update within a cluster on the process runtime: a new revision replaces the old
//! one under maxSurge/maxUnavailable, and, sampled throughout, the healthy replicas never drop
//! below `replicas - maxUnavailable`.

use std::time::{Duration, Instant};

use hansa_tests::{wait_for, Federation};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

fn manifest(greeting: &str) -> String {
    format!(
        r#"apiVersion: hansa.dev/v1
kind: Workload
metadata: {{name: roll}}
spec:
  replicas: 4
  update: {{maxSurge: 1, maxUnavailable: 1}}
  template:
    command: ["hansa-demo-http"]
    env: {{GREETING: "{greeting}"}}
    ports: [{{name: http}}]
    resources: {{cpu: 10m, memory: 8Mi}}
    healthCheck: {{http: {{port: http, path: /healthz}}, intervalSeconds: 1, gracePeriodSeconds: 1}}
"#
    )
}

/// (healthy replicas, healthy replicas of `revision`, replicas listed) as describe shows them.
fn sample(fed: &Federation, revision: u64) -> Option<(usize, usize, usize)> {
    let d = fed.hansa_json(&["describe", "workload", "roll"]).ok()?;
    let replicas: Vec<Value> = d["clusters"]
        .as_array()?
        .iter()
        .flat_map(|c| c["replicas"].as_array().cloned().unwrap_or_default())
        .collect();
    let healthy = |r: &&Value| r["healthy"] == true;
    Some((
        replicas.iter().filter(healthy).count(),
        replicas
            .iter()
            .filter(healthy)
            .filter(|r| r["revision"].as_u64() == Some(revision))
            .count(),
        replicas.len(),
    ))
}

#[test]
fn a_rolling_update_keeps_max_unavailable() {
    let fed = Federation::new();
    let hub = fed.start_hub("fed-1");
    let cert = fed.issue("cluster", "eu-1");
    let config = fed.agent_config("eu-1", "eu", "127.0.40.1", &hub.api, (&cert.0, &cert.1));
    let _agent = fed.start_agent("eu-1", &config);
    fed.wait_clusters_ready(1, LIMIT);

    let file = fed.path("roll.yaml");
    std::fs::write(&file, manifest("one")).expect("manifest");
    fed.hansa_ok(&["apply", "-f", file.to_str().expect("path")]);
    wait_for("4 healthy replicas of revision 1", LIMIT, || {
        let (healthy, current, _) = sample(&fed, 1)?;
        (healthy == 4 && current == 4).then_some(())
    });

    std::fs::write(&file, manifest("two")).expect("manifest");
    fed.hansa_ok(&["apply", "-f", file.to_str().expect("path")]);
    let started = Instant::now();
    let mut samples = 0;
    let mut lowest = usize::MAX;
    let mut most = 0;
    loop {
        assert!(
            started.elapsed() < LIMIT,
            "the update did not finish: lowest healthy {lowest}, {samples} samples"
        );
        let Some((healthy, current, listed)) = sample(&fed, 2) else {
            continue;
        };
        samples += 1;
        lowest = lowest.min(healthy);
        most = most.max(listed);
        assert!(
            healthy >= 3,
            "maxUnavailable 1 of 4: only {healthy} healthy replicas (sample {samples})"
        );
        if current == 4 && listed == 4 {
            break;
        }
    }
    eprintln!(
        "rolling update: {samples} samples in {:.1} s, lowest healthy {lowest}, most replicas {most}",
        started.elapsed().as_secs_f64()
    );
    assert!(samples >= 3, "too few samples to mean anything: {samples}");
    fed.hansa_ok(&["delete", "workload", "roll"]);
}
