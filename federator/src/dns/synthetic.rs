//! A generated federation for tests and the DNS benchmark: `workloads` workloads, each with
//! `replicas` healthy replicas in every one of three clusters (eu-1, us-1 in region eu and
//! us, ap-1), without processes behind them. The zone view built from it has the same names
//! and record counts as one built from real agents reporting the same replicas.

use std::collections::HashMap;

use hansa_core::{
    Cluster, ClusterHealth, Endpoint, Protocol, ReplicaState, ReplicaStatus, Workload, WorkloadKey,
};

use super::view::LiveCluster;
use crate::store::{FederationState, WorkloadRecord};

/// Cluster name, region, and the /16 its node addresses live in.
pub const CLUSTERS: [(&str, &str, u8); 3] =
    [("eu-1", "eu", 1), ("us-1", "us", 2), ("ap-1", "ap", 3)];

/// The workload names the generator uses, `w0`, `w1`, ...
pub fn workload_name(index: usize) -> String {
    format!("w{index}")
}

/// The address of replica `replica` of workload `index` in the cluster with `octet`.
pub fn replica_address(octet: u8, index: usize, replica: usize) -> std::net::Ipv4Addr {
    let n = index * 16 + replica;
    std::net::Ipv4Addr::new(10, octet, (n / 250) as u8, (n % 250 + 1) as u8)
}

pub fn cluster(name: &str, region: &str, addresses: &[&str]) -> Cluster {
    let mut cluster: Cluster = serde_json::from_value(serde_json::json!({
        "name": name,
        "region": region,
        "addresses": addresses,
    }))
    .unwrap_or_else(|e| panic!("a cluster from JSON: {e}"));
    cluster.health = ClusterHealth::Ready;
    cluster
}

pub fn workload(name: &str, namespace: &str) -> Workload {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "namespace": namespace,
        "replicas": 1,
        "template": { "command": ["true"], "ports": [{ "name": "http" }] },
    }))
    .unwrap_or_else(|e| panic!("a workload from JSON: {e}"))
}

pub fn record(workload: Workload) -> WorkloadRecord {
    WorkloadRecord {
        workload,
        generation: 1,
        revision: 1,
        created_ms: 0,
        updated_ms: 0,
        overrides: Vec::new(),
        history: Vec::new(),
        rollout: None,
    }
}

pub fn replica(
    id: &str,
    key: &WorkloadKey,
    healthy: bool,
    address: &str,
    port: u16,
) -> ReplicaStatus {
    ReplicaStatus {
        id: id.to_string(),
        workload: key.clone(),
        revision: 1,
        state: if healthy {
            ReplicaState::Running
        } else {
            ReplicaState::Unhealthy
        },
        healthy,
        restarts: 0,
        endpoints: vec![Endpoint {
            name: "http".into(),
            address: address.to_string(),
            port,
            protocol: Protocol::Tcp,
        }],
        message: String::new(),
    }
}

/// The generated federation: its state and every cluster's soft state.
pub fn federation(
    workloads: usize,
    replicas: usize,
) -> (FederationState, HashMap<String, LiveCluster>) {
    let mut state = FederationState::default();
    let mut live = HashMap::new();
    for (name, region, octet) in CLUSTERS {
        let block = format!("10.{octet}.0.0/16");
        state
            .clusters
            .insert(name.to_string(), cluster(name, region, &[block.as_str()]));
        live.insert(
            name.to_string(),
            LiveCluster {
                connected: true,
                replicas: Vec::new(),
            },
        );
    }
    for index in 0..workloads {
        let w = workload(&workload_name(index), "default");
        let key = w.key();
        state
            .workloads
            .insert(key.clone(), std::sync::Arc::new(record(w)));
        for (name, _, octet) in CLUSTERS {
            let replicas_of_cluster = live
                .get_mut(name)
                .map(|l| &mut l.replicas)
                .unwrap_or_else(|| unreachable!("every cluster was inserted above"));
            for r in 0..replicas {
                let address = replica_address(octet, index, r).to_string();
                replicas_of_cluster.push(replica(
                    &format!("{}-{r}", workload_name(index)),
                    &key,
                    true,
                    &address,
                    8000 + r as u16,
                ));
            }
        }
    }
    (state, live)
}
