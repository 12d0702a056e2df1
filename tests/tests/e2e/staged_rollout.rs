//! A staged rollout across two clusters: a revision that fails its health check stops in the
//! first cluster and, with autoRevert, returns it to revision 1 while the second cluster never
//! runs it; a healthy revision then rolls through both clusters one at a time, never dropping
//! below what maxUnavailable promises. The scenario runs here on the process runtime and in
//! `docker.rs` on a real Docker Engine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hansa_tests::{wait_for, Federation};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// Where the scenario runs: two clusters (updated first, second) and how a replica of a
/// revision is written (the manifest's `template:` fields, indented four spaces) for a
/// greeting and the path its health check asks for.
pub struct Scenario<'a> {
    pub fed: &'a Federation,
    pub first: &'a str,
    pub second: &'a str,
    pub template: &'a dyn Fn(&str, &str) -> String,
}

/// The process runtime's replica: the agent's demo HTTP server.
fn demo_http(greeting: &str, health_path: &str) -> String {
    format!(
        r#"    command: ["hansa-demo-http"]
    env: {{GREETING: "{greeting}"}}
    ports: [{{name: http}}]
    resources: {{cpu: 10m, memory: 8Mi}}
    healthCheck: {{http: {{port: http, path: {health_path}}}, intervalSeconds: 1, gracePeriodSeconds: 1}}
"#
    )
}

/// Two replicas in each cluster; the first cluster first, one cluster at a time.
fn manifest(s: &Scenario<'_>, greeting: &str, health_path: &str) -> String {
    let (first, second) = (s.first, s.second);
    format!(
        r#"apiVersion: hansa.dev/v1
kind: Workload
metadata: {{name: staged}}
spec:
  replicas: 2
  update:
    maxSurge: 1
    maxUnavailable: 1
    clusters:
      maxParallel: 1
      order: [{first}, {second}]
      minHealthySeconds: 3
      progressDeadlineSeconds: 90
      autoRevert: true
  template:
{}  placement:
    clusterAffinity: {{clusterNames: [{first}, {second}]}}
    replicaScheduling: {{type: Duplicated}}
"#,
        (s.template)(greeting, health_path)
    )
}

/// Per cluster: (healthy replicas, revisions of every listed replica, healthy of `revision`).
type Sample = BTreeMap<String, (usize, Vec<u64>, usize)>;

fn sample(fed: &Federation, revision: u64) -> Option<Sample> {
    let d = fed.hansa_json(&["describe", "workload", "staged"]).ok()?;
    let mut out = Sample::new();
    for cluster in d["clusters"].as_array()? {
        let replicas = cluster["replicas"].as_array().cloned().unwrap_or_default();
        let healthy = |r: &&Value| r["healthy"] == true;
        out.insert(
            cluster["cluster"].as_str()?.to_string(),
            (
                replicas.iter().filter(healthy).count(),
                replicas
                    .iter()
                    .filter_map(|r| r["revision"].as_u64())
                    .collect(),
                replicas
                    .iter()
                    .filter(healthy)
                    .filter(|r| r["revision"].as_u64() == Some(revision))
                    .count(),
            ),
        );
    }
    Some(out)
}

fn apply(s: &Scenario<'_>, greeting: &str, health_path: &str) {
    let file = s.fed.path("staged.yaml");
    std::fs::write(&file, manifest(s, greeting, health_path)).expect("manifest");
    s.fed
        .hansa_ok(&["apply", "-f", file.to_str().expect("path")]);
}

#[test]
fn staged_rollout_reverts_a_broken_revision_and_rolls_a_good_one_cluster_by_cluster() {
    let fed = Federation::new();
    let hub = fed.start_hub("fed-1");
    let mut agents = Vec::new();
    for (cluster, region, node) in [("eu-1", "eu", "127.0.43.1"), ("us-1", "us", "127.0.44.1")] {
        let cert = fed.issue("cluster", cluster);
        let config = fed.agent_config(cluster, region, node, &hub.api, (&cert.0, &cert.1));
        agents.push(fed.start_agent(cluster, &config));
    }
    fed.wait_clusters_ready(2, LIMIT);
    run(&Scenario {
        fed: &fed,
        first: "eu-1",
        second: "us-1",
        template: &demo_http,
    });
    drop(agents);
}

/// The scenario, on a federation whose two clusters are Ready; deletes its workload at the end.
pub fn run(scenario: &Scenario<'_>) {
    let fed = scenario.fed;
    let (eu1, us1) = (scenario.first, scenario.second);

    // Revision 1: created everywhere at once; `rollout status` waits for it.
    apply(scenario, "one", "/healthz");
    fed.hansa_ok(&["rollout", "status", "staged", "--timeout", "90"]);
    let s = sample(fed, 1).expect("describe");
    assert_eq!(s[eu1].2 + s[us1].2, 4, "{s:?}");

    // Revision 2 fails its health check: it stops in the first cluster, and autoRevert brings
    // that cluster back.
    apply(scenario, "two", "/broken");
    let started = Instant::now();
    let status = std::thread::scope(|scope| {
        let watch = scope.spawn(|| fed.hansa(&["rollout", "status", "staged", "--timeout", "90"]));
        let mut eu_saw_two = false;
        while !watch.is_finished() {
            if let Some(s) = sample(fed, 2) {
                let us = &s[us1];
                assert!(
                    !us.1.contains(&2),
                    "{us1} runs revision 2 while {eu1} fails it: {s:?}"
                );
                eu_saw_two |= s[eu1].1.contains(&2);
            }
        }
        assert!(eu_saw_two, "{eu1} never started revision 2");
        watch.join().expect("watch thread")
    });
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(!status.status.success(), "rollout status should fail");
    assert!(
        stderr.contains("rolled back") && stderr.contains(eu1),
        "{stderr}"
    );
    eprintln!(
        "revision 2 rolled back after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    wait_for(
        "the first cluster back on two healthy replicas of revision 1",
        LIMIT,
        || {
            let s = sample(fed, 1)?;
            let eu = &s[eu1];
            (eu.2 == 2 && eu.1.iter().all(|r| *r == 1)).then_some(())
        },
    );
    let s = sample(fed, 1).expect("describe");
    assert!(s[us1].1.iter().all(|r| *r == 1), "{s:?}");
    // The workload itself went back to revision 1; revision 2 stays in the history.
    let history = fed.hansa_ok(&["rollout", "history", "staged"]);
    let note = |revision: &str, note: &str| {
        history
            .lines()
            .any(|l| l.starts_with(revision) && l.contains(note))
    };
    assert!(
        note("1 ", "current") && note("2 ", "rolled back"),
        "{history}"
    );

    // Revision 3 is healthy: the first cluster, then the second once the first is done; never below
    // 2 - maxUnavailable healthy in a cluster, nor below 4 - 1 in all.
    apply(scenario, "three", "/healthz");
    let started = Instant::now();
    let mut samples = 0;
    let mut lowest = usize::MAX;
    loop {
        assert!(
            started.elapsed() < LIMIT,
            "revision 3 did not roll out: {samples} samples, lowest healthy {lowest}"
        );
        let Some(s) = sample(fed, 3) else { continue };
        samples += 1;
        let (eu, us) = (&s[eu1], &s[us1]);
        let total = eu.0 + us.0;
        lowest = lowest.min(total);
        assert!(
            eu.0 >= 1 && us.0 >= 1,
            "a cluster below maxUnavailable: {s:?}"
        );
        assert!(total >= 3, "only {total} healthy replicas: {s:?}");
        if us.1.contains(&3) {
            assert_eq!(eu.2, 2, "{us1} started before {eu1} was done: {s:?}");
        }
        if eu.2 == 2 && us.2 == 2 && eu.1.len() == 2 && us.1.len() == 2 {
            break;
        }
    }
    eprintln!(
        "revision 3: {samples} samples in {:.1} s, lowest healthy {lowest}",
        started.elapsed().as_secs_f64()
    );
    assert!(samples >= 5, "too few samples to mean anything: {samples}");
    let out = fed.hansa_ok(&["rollout", "status", "staged", "--timeout", "60"]);
    assert!(
        out.contains("revision 3 rolled out to every cluster"),
        "{out}"
    );

    let history = fed.hansa_ok(&["rollout", "history", "staged"]);
    for line in ["1 ", "2 ", "3 "] {
        assert!(
            history.lines().any(|l| l.starts_with(line)),
            "revision {line}missing from:\n{history}"
        );
    }
    assert!(history.contains(&format!("{eu1},{us1}")), "{history}");
    // Revision 2 changed the health check; 3 changed it back.
    assert!(history.contains("healthCheck"), "{history}");

    // Operator actions on a finished rollout say why they do nothing; undo makes revision 4
    // (revision 1's template), which rolls out like any other and can be paused and resumed.
    let out = fed.hansa(&["rollout", "pause", "staged"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to pause"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fed.hansa_ok(&["rollout", "undo", "staged", "--to-revision", "1"]);
    assert!(out.contains("as revision 4"), "{out}");
    fed.hansa_ok(&["rollout", "pause", "staged"]);
    let out = fed.hansa(&["rollout", "status", "staged"]);
    assert!(!out.status.success(), "a paused rollout is not a success");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("paused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Paused longer than the first cluster needs: the second one is not started.
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_secs(6) {
        if let Some(s) = sample(fed, 4) {
            assert!(
                !s[us1].1.contains(&4),
                "{us1} started revision 4 while the rollout was paused: {s:?}"
            );
        }
    }
    fed.hansa_ok(&["rollout", "resume", "staged"]);
    let out = fed.hansa_ok(&["rollout", "status", "staged", "--timeout", "90"]);
    assert!(
        out.contains("revision 4 rolled out to every cluster"),
        "{out}"
    );
    let s = sample(fed, 4).expect("describe");
    assert_eq!(s[eu1].2 + s[us1].2, 4, "{s:?}");

    fed.hansa_ok(&["delete", "workload", "staged"]);
}
