//! `hansa dev`: the README's first command, as a new user runs it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hansa_tests::{alive, bin, http_get, recorded_pids, signal, wait_for, Federation, Process};

const LIMIT: Duration = Duration::from_secs(90);

/// Replica pids recorded under a `hansa dev` data directory, all clusters.
fn dev_replica_pids(data: &Path) -> Vec<u32> {
    let Ok(clusters) = std::fs::read_dir(data.join("clusters")) else {
        return Vec::new();
    };
    clusters
        .filter_map(|e| e.ok())
        .flat_map(|cluster| recorded_pids(&cluster.path()))
        .collect()
}

/// Waits until `hansa describe workload web` lists 4 endpoints that all answer HTTP 200.
fn wait_web_serving(fed: &Federation) -> serde_json::Value {
    wait_for("web to run 4/4 with serving endpoints", LIMIT, || {
        let d = fed.hansa_json(&["describe", "workload", "web"]).ok()?;
        let eps = d["endpoints"].as_array()?.clone();
        let serving = eps.len() == 4
            && eps.iter().all(|e| {
                let address = format!(
                    "{}:{}",
                    e["address"].as_str().unwrap_or_default(),
                    e["port"]
                );
                matches!(http_get(&address, "/"), Ok((200, _)))
            });
        serving.then_some(d)
    })
}

#[test]
fn dev_starts_a_federation_serves_web_and_stops_without_orphans() {
    let fed = Federation::new();
    let data = fed.path("dev-data");
    let web = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/examples/web.yaml");
    let mut command = Command::new(bin("hansa"));
    command
        .args(["dev", "--port", "0", "--data-dir"])
        .arg(&data)
        .args(["--apply", web])
        .env("HANSA_CONFIG", fed.path("cli.toml"))
        .env("RUST_LOG", "info");
    let mut dev = Process::spawn("hansa dev", command, fed.path("dev.log"));

    // The CLI context it wrote lets `hansa` work with no flags.
    let description = wait_web_serving(&fed);
    assert_eq!(
        description["summary"]["clusters"]["eu-1"], 3,
        "{description}"
    );
    assert_eq!(
        description["summary"]["clusters"]["us-1"], 1,
        "{description}"
    );
    let clusters = fed.hansa_json(&["get", "clusters"]).expect("clusters");
    let names: Vec<&str> = clusters
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["ap-1", "eu-1", "us-1"]);
    let log = dev.log_text();
    assert!(log.contains("API:"), "dev prints where the API is: {log}");

    let pids = dev_replica_pids(&data);
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(pids.iter().all(|p| alive(*p)));

    // Ctrl-C: a clean stop, and no replica outlives it.
    signal(dev.pid() as i32, nix::sys::signal::Signal::SIGINT);
    let status = dev.wait_exit(LIMIT);
    assert!(
        status.success(),
        "hansa dev exited with {status}: {}",
        dev.log_text()
    );
    for pid in pids {
        assert!(!alive(pid), "replica {pid} outlived hansa dev");
    }
}

#[test]
fn dev_peer_runs_a_peer_federation_with_no_master() {
    let fed = Federation::new();
    let data = fed.path("dev-peer-data");
    let web = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/examples/web.yaml");
    let mut command = Command::new(bin("hansa"));
    command
        .args([
            "dev",
            "--peer",
            "--port",
            "0",
            "--dns-port",
            "0",
            "--data-dir",
        ])
        .arg(&data)
        .args(["--apply", web])
        .env("HANSA_CONFIG", fed.path("cli.toml"))
        .env("RUST_LOG", "info");
    let mut dev = Process::spawn("hansa dev --peer", command, fed.path("dev-peer.log"));

    // Every peer sees the other two alive.
    wait_for("three peers, all alive", LIMIT, || {
        let peers = fed.hansa_json(&["get", "peers"]).ok()?;
        let states: Vec<&str> = peers
            .as_array()?
            .iter()
            .filter_map(|p| p["state"].as_str())
            .collect();
        (states == ["self", "alive", "alive"]).then_some(())
    });
    // The web example runs as in hub mode: 3 replicas in eu-1 and 1 in us-1, all serving.
    let description = wait_web_serving(&fed);
    assert_eq!(
        description["summary"]["clusters"]["eu-1"], 3,
        "{description}"
    );
    assert!(
        dev.log_text().contains("peer mode"),
        "dev says which mode: {}",
        dev.log_text()
    );

    let pids = dev_replica_pids(&data);
    signal(dev.pid() as i32, nix::sys::signal::Signal::SIGINT);
    let status = dev.wait_exit(LIMIT);
    assert!(
        status.success(),
        "hansa dev --peer exited with {status}: {}",
        dev.log_text()
    );
    for pid in pids {
        assert!(!alive(pid), "replica {pid} outlived hansa dev --peer");
    }
}
