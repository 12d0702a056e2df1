//! Conversions between wire messages and hansa-core types: the only place they meet.

use std::collections::BTreeMap;

use hansa_core as core;

use crate::v1;

/// A wire message that does not convert to a model value; names the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConvertError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> ConvertError {
    ConvertError {
        field,
        message: message.into(),
    }
}

impl From<core::Resources> for v1::Resources {
    fn from(r: core::Resources) -> Self {
        v1::Resources {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            disk_bytes: r.disk_bytes,
        }
    }
}

impl From<v1::Resources> for core::Resources {
    fn from(r: v1::Resources) -> Self {
        core::Resources {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            disk_bytes: r.disk_bytes,
        }
    }
}

fn protocol_from(s: &str) -> core::Protocol {
    if s.eq_ignore_ascii_case("udp") {
        core::Protocol::Udp
    } else {
        core::Protocol::Tcp
    }
}

impl From<&core::Endpoint> for v1::Endpoint {
    fn from(e: &core::Endpoint) -> Self {
        v1::Endpoint {
            name: e.name.clone(),
            address: e.address.clone(),
            port: u32::from(e.port),
            protocol: e.protocol.to_string(),
        }
    }
}

impl TryFrom<v1::Endpoint> for core::Endpoint {
    type Error = ConvertError;
    fn try_from(e: v1::Endpoint) -> Result<Self, ConvertError> {
        Ok(core::Endpoint {
            port: u16::try_from(e.port).map_err(|_| bad("endpoint.port", "out of range"))?,
            protocol: protocol_from(&e.protocol),
            name: e.name,
            address: e.address,
        })
    }
}

fn state_from(s: &str) -> Result<core::ReplicaState, ConvertError> {
    Ok(match s {
        "Starting" => core::ReplicaState::Starting,
        "Running" => core::ReplicaState::Running,
        "Unhealthy" => core::ReplicaState::Unhealthy,
        "Failed" => core::ReplicaState::Failed,
        "Stopping" => core::ReplicaState::Stopping,
        other => return Err(bad("replica.state", format!("unknown state {other:?}"))),
    })
}

impl From<&core::ReplicaStatus> for v1::ReplicaStatus {
    fn from(r: &core::ReplicaStatus) -> Self {
        v1::ReplicaStatus {
            id: r.id.clone(),
            namespace: r.workload.namespace.to_string(),
            workload: r.workload.name.to_string(),
            revision: r.revision,
            state: r.state.to_string(),
            healthy: r.healthy,
            restarts: r.restarts,
            endpoints: r.endpoints.iter().map(v1::Endpoint::from).collect(),
            message: r.message.clone(),
        }
    }
}

impl TryFrom<v1::ReplicaStatus> for core::ReplicaStatus {
    type Error = ConvertError;
    fn try_from(r: v1::ReplicaStatus) -> Result<Self, ConvertError> {
        Ok(core::ReplicaStatus {
            state: state_from(&r.state)?,
            workload: core::WorkloadKey::new(r.namespace, r.workload),
            id: r.id,
            revision: r.revision,
            healthy: r.healthy,
            restarts: r.restarts,
            endpoints: r
                .endpoints
                .into_iter()
                .map(core::Endpoint::try_from)
                .collect::<Result<_, _>>()?,
            message: r.message,
        })
    }
}

fn runtime_from(s: &str) -> Result<core::RuntimeKind, ConvertError> {
    match s {
        "process" => Ok(core::RuntimeKind::Process),
        "docker" => Ok(core::RuntimeKind::Docker),
        other => Err(bad(
            "cluster.runtimes",
            format!("unknown runtime {other:?}"),
        )),
    }
}

fn taint_effect_from(s: &str) -> Result<core::TaintEffect, ConvertError> {
    match s {
        "NoSchedule" => Ok(core::TaintEffect::NoSchedule),
        "PreferNoSchedule" => Ok(core::TaintEffect::PreferNoSchedule),
        "NoExecute" => Ok(core::TaintEffect::NoExecute),
        other => Err(bad(
            "cluster.taints.effect",
            format!("unknown taint effect {other:?} (NoSchedule, PreferNoSchedule or NoExecute)"),
        )),
    }
}

impl From<&core::Cluster> for v1::ClusterInfo {
    fn from(c: &core::Cluster) -> Self {
        v1::ClusterInfo {
            name: c.name.clone(),
            region: c.region.clone(),
            zone: c.zone.clone(),
            provider: c.provider.clone(),
            labels: c.labels.clone().into_iter().collect(),
            runtimes: c.runtimes.iter().map(ToString::to_string).collect(),
            addresses: c.addresses.clone(),
            allocatable: Some(c.allocatable.into()),
            agent_version: String::new(),
            taints: c
                .taints
                .iter()
                .map(|t| v1::Taint {
                    key: t.key.clone(),
                    value: t.value.clone(),
                    effect: t.effect.to_string(),
                })
                .collect(),
            nodes: c.nodes.iter().map(v1::NodeCapacity::from).collect(),
        }
    }
}

impl From<&core::NodeCapacity> for v1::NodeCapacity {
    fn from(n: &core::NodeCapacity) -> Self {
        v1::NodeCapacity {
            name: n.name.clone(),
            address: n.address.clone(),
            runtimes: n.runtimes.iter().map(ToString::to_string).collect(),
            allocatable: Some(n.allocatable.into()),
            available: Some(n.available.into()),
        }
    }
}

impl TryFrom<v1::NodeCapacity> for core::NodeCapacity {
    type Error = ConvertError;
    fn try_from(n: v1::NodeCapacity) -> Result<Self, ConvertError> {
        Ok(core::NodeCapacity {
            runtimes: n
                .runtimes
                .iter()
                .map(|r| runtime_from(r))
                .collect::<Result<_, _>>()?,
            name: n.name,
            address: n.address,
            allocatable: n.allocatable.map(Into::into).unwrap_or_default(),
            available: n.available.map(Into::into).unwrap_or_default(),
        })
    }
}

impl From<&core::Unplaced> for v1::Unplaced {
    fn from(u: &core::Unplaced) -> Self {
        v1::Unplaced {
            namespace: u.workload.namespace.to_string(),
            workload: u.workload.name.to_string(),
            replicas: u.replicas,
            reason: u.reason.clone(),
        }
    }
}

impl From<v1::Unplaced> for core::Unplaced {
    fn from(u: v1::Unplaced) -> Self {
        core::Unplaced {
            workload: core::WorkloadKey::new(u.namespace, u.workload),
            replicas: u.replicas,
            reason: u.reason,
        }
    }
}

/// A registering agent's cluster. Health and `available` are the federator's to set.
impl TryFrom<v1::ClusterInfo> for core::Cluster {
    type Error = ConvertError;
    fn try_from(c: v1::ClusterInfo) -> Result<Self, ConvertError> {
        let allocatable: core::Resources = c.allocatable.map(Into::into).unwrap_or_default();
        Ok(core::Cluster {
            runtimes: c
                .runtimes
                .iter()
                .map(|r| runtime_from(r))
                .collect::<Result<_, _>>()?,
            name: c.name,
            region: c.region,
            zone: c.zone,
            provider: c.provider,
            labels: c.labels.into_iter().collect::<BTreeMap<_, _>>(),
            addresses: c.addresses,
            allocatable,
            available: allocatable,
            health: core::ClusterHealth::Ready,
            cordoned: false,
            taints: c
                .taints
                .into_iter()
                .map(|t| {
                    Ok(core::Taint {
                        effect: taint_effect_from(&t.effect)?,
                        key: t.key,
                        value: t.value,
                        added_ms: 0,
                    })
                })
                .collect::<Result<_, _>>()?,
            nodes: c
                .nodes
                .into_iter()
                .map(core::NodeCapacity::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl TryFrom<&core::Assignment> for v1::Assignment {
    type Error = serde_json::Error;
    fn try_from(a: &core::Assignment) -> Result<Self, serde_json::Error> {
        Ok(v1::Assignment {
            namespace: a.workload.namespace.to_string(),
            workload: a.workload.name.to_string(),
            revision: a.revision,
            replicas: a.replicas,
            template_json: serde_json::to_string(&a.template)?,
            update_json: serde_json::to_string(&a.update)?,
        })
    }
}

impl TryFrom<v1::Assignment> for core::Assignment {
    type Error = ConvertError;
    fn try_from(a: v1::Assignment) -> Result<Self, ConvertError> {
        Ok(core::Assignment {
            template: serde_json::from_str(&a.template_json)
                .map_err(|e| bad("assignment.template_json", e.to_string()))?,
            workload: core::WorkloadKey::new(a.namespace, a.workload),
            revision: a.revision,
            replicas: a.replicas,
            // Absent from an older federator: the default strategy.
            update: if a.update_json.is_empty() {
                core::UpdateStrategy::default()
            } else {
                serde_json::from_str(&a.update_json)
                    .map_err(|e| bad("assignment.update_json", e.to_string()))?
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_status_round_trips() {
        let status = core::ReplicaStatus {
            id: "web-abc123".into(),
            workload: core::WorkloadKey::new("default", "web"),
            revision: 2,
            state: core::ReplicaState::Unhealthy,
            healthy: false,
            restarts: 3,
            endpoints: vec![core::Endpoint {
                name: "http".into(),
                address: "127.0.1.1".into(),
                port: 31000,
                protocol: core::Protocol::Tcp,
            }],
            message: "health check failed".into(),
        };
        let wire = v1::ReplicaStatus::from(&status);
        assert_eq!(
            core::ReplicaStatus::try_from(wire).expect("converts"),
            status
        );
    }

    #[test]
    fn cluster_nodes_round_trip() {
        let node = |name: &str, cpu_millis: u64| core::NodeCapacity {
            name: name.into(),
            address: "10.0.0.1".into(),
            runtimes: vec![core::RuntimeKind::Process, core::RuntimeKind::Docker],
            allocatable: core::Resources {
                cpu_millis,
                memory_bytes: 1 << 30,
                disk_bytes: 0,
            },
            available: core::Resources {
                cpu_millis: cpu_millis / 2,
                ..Default::default()
            },
        };
        let info = v1::ClusterInfo {
            name: "eu-1".into(),
            nodes: vec![(&node("a", 1000)).into(), (&node("b", 2000)).into()],
            ..Default::default()
        };
        let cluster = core::Cluster::try_from(info).expect("valid");
        assert_eq!(cluster.nodes, [node("a", 1000), node("b", 2000)]);
        let back = v1::ClusterInfo::from(&cluster);
        assert_eq!(
            core::Cluster::try_from(back).expect("valid").nodes,
            cluster.nodes
        );

        let mut bad = v1::NodeCapacity::from(&node("a", 1000));
        bad.runtimes = vec!["vm".into()];
        core::NodeCapacity::try_from(bad).expect_err("unknown runtime");
    }

    #[test]
    fn bad_fields_are_named() {
        let err = core::ReplicaStatus::try_from(v1::ReplicaStatus {
            state: "Dancing".into(),
            ..Default::default()
        })
        .expect_err("unknown state");
        assert_eq!(err.to_string(), "replica.state: unknown state \"Dancing\"");
    }
}
