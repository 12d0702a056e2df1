//! Builders for tests: clusters and workloads with sensible defaults, and the in-code
//! equivalents of `examples/*.yaml`.

use std::collections::BTreeMap;

use hansa_core::{
    Cluster, ClusterAffinity, ClusterHealth, HealthCheck, PlacementSpec, PortSpec, Probe,
    ReplicaScheduling, Resources, RuntimeKind, ServicePort, ServiceSpec, StaticWeight,
    TaskTemplate, Weighting, Workload,
};

/// Requests of one replica in [`workload`]: 100m cpu, 64Mi memory.
pub(crate) const REQUESTS: Resources = Resources {
    cpu_millis: 100,
    memory_bytes: 64 << 20,
    disk_bytes: 0,
};

/// A Ready cluster with both runtimes and room for 100 replicas of [`workload`].
pub(crate) fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        region: String::new(),
        zone: String::new(),
        provider: String::new(),
        labels: BTreeMap::new(),
        runtimes: vec![RuntimeKind::Process, RuntimeKind::Docker],
        addresses: Vec::new(),
        allocatable: REQUESTS.times(100),
        available: REQUESTS.times(100),
        health: ClusterHealth::Ready,
        cordoned: false,
        taints: Vec::new(),
        nodes: Vec::new(),
    }
}

/// A cluster with room for exactly `fits` replicas of [`workload`].
pub(crate) fn cluster_fitting(name: &str, fits: u32) -> Cluster {
    let mut c = cluster(name);
    c.available = REQUESTS.times(fits);
    c
}

/// A process workload `app` requesting [`REQUESTS`] per replica.
pub(crate) fn workload(replicas: u32, scheduling: ReplicaScheduling) -> Workload {
    Workload {
        name: "app".to_string(),
        namespace: "default".to_string(),
        labels: BTreeMap::new(),
        format: Default::default(),
        replicas,
        template: TaskTemplate {
            command: vec!["app".to_string()],
            resources: REQUESTS,
            ..Default::default()
        },
        placement: PlacementSpec {
            replica_scheduling: scheduling,
            ..Default::default()
        },
        service: None,
        update: Default::default(),
        rollout: Default::default(),
    }
}

pub(crate) fn divided(weighting: Weighting) -> ReplicaScheduling {
    ReplicaScheduling::Divided { weighting }
}

/// Divided by static weights, one cluster name per entry.
pub(crate) fn static_weights(weights: &[(&str, u32)]) -> ReplicaScheduling {
    divided(Weighting::Static {
        weights: weights
            .iter()
            .map(|(name, weight)| StaticWeight {
                clusters: names(&[name]),
                weight: *weight,
            })
            .collect(),
    })
}

pub(crate) fn names(names: &[&str]) -> ClusterAffinity {
    ClusterAffinity {
        cluster_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

/// `examples/web.yaml`, built in code.
pub(crate) fn web() -> Workload {
    Workload {
        name: "web".to_string(),
        namespace: "default".to_string(),
        labels: [("app".to_string(), "web".to_string())].into(),
        format: Default::default(),
        replicas: 4,
        template: TaskTemplate {
            command: vec!["hansa-demo-http".to_string()],
            env: [("GREETING".to_string(), "hello from Hansa".to_string())].into(),
            ports: vec![PortSpec {
                name: "http".to_string(),
                ..Default::default()
            }],
            resources: Resources {
                cpu_millis: 50,
                memory_bytes: 32 << 20,
                disk_bytes: 0,
            },
            health_check: Some(HealthCheck::with_probe(Probe::Http {
                port: "http".to_string(),
                path: "/healthz".to_string(),
            })),
            ..Default::default()
        },
        placement: PlacementSpec {
            replica_scheduling: static_weights(&[("eu-1", 3), ("us-1", 1)]),
            ..Default::default()
        },
        service: Some(ServiceSpec {
            name: "web".to_string(),
            ports: vec![ServicePort {
                name: "http".to_string(),
                port: 80,
                target_port: "http".to_string(),
                protocol: Default::default(),
            }],
        }),
        update: Default::default(),
        rollout: Default::default(),
    }
}

/// `examples/web-duplicated.yaml`: one replica on every cluster labelled `tier=edge`.
pub(crate) fn web_duplicated() -> Workload {
    let mut w = web();
    w.replicas = 1;
    w.placement = PlacementSpec {
        cluster_affinity: Some(ClusterAffinity {
            match_labels: [("tier".to_string(), "edge".to_string())].into(),
            ..Default::default()
        }),
        replica_scheduling: ReplicaScheduling::Duplicated,
        ..Default::default()
    };
    w
}

/// `examples/web-capacity.yaml`: 6 replicas divided by what each cluster can still fit.
pub(crate) fn web_capacity() -> Workload {
    let mut w = web();
    w.replicas = 6;
    w.placement = PlacementSpec {
        replica_scheduling: divided(Weighting::AvailableCapacity),
        ..Default::default()
    };
    w
}

/// The three clusters of `hansa dev`: Ready, process runtime, plenty of room.
pub(crate) fn dev_federation() -> Vec<Cluster> {
    ["ap-1", "eu-1", "us-1"]
        .into_iter()
        .map(|name| {
            let mut c = cluster(name);
            c.runtimes = vec![RuntimeKind::Process];
            c
        })
        .collect()
}
