//! The user-facing gRPC API (`hansa.v1.Federation`) and the agent Sync service.

pub mod admin;
pub mod sync;
pub mod views;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hansa_core::manifest::{parse_manifests, ManifestFile};
use hansa_core::{Placement, Workload, WorkloadKey};
use hansa_proto::v1::{
    federation_server::Federation, ApplyRequest, ApplyResponse, ApplyResult, DeleteRequest,
    DeleteResponse, DescribeRequest, DescribeResponse, GetRequest, GetResponse, InfoRequest,
    InfoResponse,
};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::controllers::placement::solve;
use crate::liveness::Liveness;
use crate::security::{caller, Role};
use crate::store::{Command, CommandResponse, FederationState, PutOutcome, Store, StoreError};

use views::{
    ClusterEndpoint, ClusterReplicas, ClusterView, PlacementView, WorkloadDescription,
    WorkloadPhase, WorkloadView,
};

/// The API's error vocabulary, mapped once to gRPC status codes.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Internal(m) => Status::internal(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if e.is_unavailable() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

/// Set on a status the store gave up on (no quorum, no leader): the federator already waited,
/// so clients should not retry it at another federator.
pub const STORE_UNAVAILABLE: &str = "hansa-store-unavailable";

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        let unavailable = e.is_unavailable();
        let mut status: Status = ApiError::from(e).into();
        if unavailable {
            status.metadata_mut().insert(
                STORE_UNAVAILABLE,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        status
    }
}

/// Waits for a linearizable view unless the caller asked for this federator's (`--stale`).
async fn consistent_read(store: &Store, stale: bool) -> Result<(), Status> {
    if !stale {
        store.read_index().await?;
    }
    Ok(())
}

pub struct FederationService {
    pub name: String,
    pub store: Store,
    pub live: Arc<Liveness>,
    pub trust_domain: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

const API_ROLES: &[Role] = &[Role::User, Role::Federator];

#[tonic::async_trait]
impl Federation for FederationService {
    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let who = caller(&request, &self.trust_domain, API_ROLES)?;
        let request = request.into_inner();
        if request.files.is_empty() {
            return Err(ApiError::InvalidArgument("no manifest files given".into()).into());
        }
        let files: Vec<ManifestFile<'_>> = request
            .files
            .iter()
            .map(|f| ManifestFile {
                name: &f.name,
                content: &f.content,
            })
            .collect();
        let parsed =
            parse_manifests(&files).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        let policy_results: Vec<ApplyResult> = parsed
            .policies
            .iter()
            .map(|p| {
                let bound: Vec<String> = parsed
                    .workloads
                    .iter()
                    .filter(|w| w.placement.policy == p.display_name())
                    .map(|w| w.name.clone())
                    .collect();
                ApplyResult {
                    kind: p.kind.clone(),
                    namespace: p.namespace.clone().unwrap_or_default(),
                    name: p.name.clone(),
                    action: "bound".into(),
                    pending: false,
                    placement: if bound.is_empty() {
                        "selects no workload in this apply".into()
                    } else {
                        format!("placement of {}", bound.join(", "))
                    },
                }
            })
            .collect();
        if parsed.workloads.is_empty() {
            return Err(ApiError::InvalidArgument("the files hold no workloads".into()).into());
        }
        let keys: Vec<WorkloadKey> = parsed.workloads.iter().map(Workload::key).collect();
        if let Some(dup) = first_duplicate(&keys) {
            return Err(ApiError::InvalidArgument(format!(
                "workload {dup} is defined twice in this apply"
            ))
            .into());
        }
        // What the placement controller will decide: the same pure function on the same state,
        // and, for a dry run, how that differs from what is in force.
        let previews: Vec<(Placement, String, &'static str)> = self.store.read(|state| {
            parsed
                .workloads
                .iter()
                .map(|w| {
                    let key = w.key();
                    let action = match state.workloads.get(&key) {
                        None => "would be created (dry run)",
                        Some(r) if r.workload == *w => "unchanged (dry run)",
                        Some(_) => "would be configured (dry run)",
                    };
                    let preview = solve(state, &self.live, w, 0);
                    let change = placement_change(state.placements.get(&key), &preview);
                    (preview, change, action)
                })
                .collect()
        });
        let outcomes = if request.dry_run {
            vec![None; parsed.workloads.len()]
        } else {
            let response = self
                .store
                .propose(Command::PutWorkloads {
                    workloads: parsed.workloads.clone(),
                    now_ms: now_ms(),
                })
                .await?;
            let CommandResponse::Workloads(outcomes) = response else {
                return Err(ApiError::Internal(format!(
                    "unexpected store response to PutWorkloads: {response:?}"
                ))
                .into());
            };
            info!(caller = %who, workloads = keys.len(), "applied");
            outcomes.into_iter().map(Some).collect()
        };
        let mut results: Vec<ApplyResult> = parsed
            .workloads
            .iter()
            .zip(previews)
            .zip(outcomes)
            .map(
                |((workload, (preview, change, dry)), outcome)| ApplyResult {
                    kind: "workload".into(),
                    namespace: workload.namespace.clone(),
                    name: workload.name.clone(),
                    action: match outcome {
                        None => dry.into(),
                        Some(PutOutcome::Created { .. }) => "created".into(),
                        Some(PutOutcome::Configured { .. }) => "configured".into(),
                        Some(PutOutcome::Unchanged { .. }) => "unchanged".into(),
                    },
                    pending: preview.total() == 0,
                    placement: if request.dry_run {
                        format!("{} [{change}]", describe_placement(&preview))
                    } else {
                        describe_placement(&preview)
                    },
                },
            )
            .collect();
        results.extend(policy_results);
        Ok(Response::new(ApplyResponse {
            results,
            warnings: parsed.warnings,
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        caller(&request, &self.trust_domain, API_ROLES)?;
        let request = request.into_inner();
        consistent_read(&self.store, request.stale).await?;
        let items = self.store.read(|state| -> Result<Vec<String>, ApiError> {
            let ns = &request.namespace;
            let name = &request.name;
            let keep =
                |n: &str, s: &str| (ns.is_empty() || ns == n) && (name.is_empty() || name == s);
            let items: Vec<String> = match normalize_kind(&request.kind)? {
                Kind::Workload => state
                    .workloads
                    .keys()
                    .filter(|k| keep(&k.namespace, &k.name))
                    .filter_map(|k| workload_view(state, &self.live, k))
                    .map(|v| json(&v))
                    .collect::<Result<_, _>>()?,
                Kind::Cluster => state
                    .clusters
                    .values()
                    .filter(|c| name.is_empty() || name == &c.name)
                    .map(|c| json(&cluster_view(state, &self.live, c)))
                    .collect::<Result<_, _>>()?,
                Kind::Placement => state
                    .placements
                    .iter()
                    .filter(|(k, _)| keep(&k.namespace, &k.name))
                    .map(|(_, p)| {
                        json(&PlacementView {
                            desired: p.total() + p.explanation.unplaced,
                            pending: p.total() == 0,
                            placement: p.clone(),
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            if items.is_empty() && !name.is_empty() {
                return Err(ApiError::NotFound(format!(
                    "{} {:?} not found{}",
                    request.kind,
                    name,
                    if ns.is_empty() {
                        String::new()
                    } else {
                        format!(" in namespace {ns}")
                    }
                )));
            }
            Ok(items)
        })?;
        Ok(Response::new(GetResponse { items_json: items }))
    }

    async fn describe(
        &self,
        request: Request<DescribeRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        caller(&request, &self.trust_domain, API_ROLES)?;
        let request = request.into_inner();
        consistent_read(&self.store, request.stale).await?;
        let key = WorkloadKey::new(namespace_or_default(&request.namespace), &request.name);
        let description = self
            .store
            .read(|state| describe_workload(state, &self.live, &key))
            .ok_or_else(|| ApiError::NotFound(format!("workload {key} not found")))?;
        let description_json = serde_json::to_string(&description)
            .map_err(|e| ApiError::Internal(format!("encode description: {e}")))?;
        Ok(Response::new(DescribeResponse { description_json }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let who = caller(&request, &self.trust_domain, API_ROLES)?;
        let request = request.into_inner();
        if normalize_kind(&request.kind)? != Kind::Workload {
            return Err(ApiError::InvalidArgument(format!(
                "only workloads can be deleted (got kind {:?})",
                request.kind
            ))
            .into());
        }
        let key = WorkloadKey::new(namespace_or_default(&request.namespace), &request.name);
        let response = self
            .store
            .propose(Command::DeleteWorkload { key: key.clone() })
            .await?;
        let deleted = matches!(response, CommandResponse::Deleted(true));
        if !deleted {
            return Err(ApiError::NotFound(format!("workload {key} not found")).into());
        }
        info!(caller = %who, workload = %key, "deleted");
        Ok(Response::new(DeleteResponse { deleted }))
    }

    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let who = caller(&request, &self.trust_domain, API_ROLES)?;
        let metrics = self.store.metrics();
        let leader_address = metrics
            .current_leader
            .and_then(|id| {
                metrics
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.addr.clone())
            })
            .unwrap_or_default();
        Ok(Response::new(InfoResponse {
            federator: self.name.clone(),
            mode: "hub".into(),
            trust_domain: self.trust_domain.clone(),
            caller: who.uri(),
            leader_id: metrics.current_leader.unwrap_or(0),
            leader_address,
            term: metrics.current_term,
            last_applied: metrics.last_applied.map(|l| l.index).unwrap_or(0),
        }))
    }
}

fn json<T: serde::Serialize>(view: &T) -> Result<String, ApiError> {
    serde_json::to_string(view).map_err(|e| ApiError::Internal(format!("encode: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Workload,
    Cluster,
    Placement,
}

fn normalize_kind(kind: &str) -> Result<Kind, ApiError> {
    match kind.to_ascii_lowercase().as_str() {
        "workload" | "workloads" | "wl" => Ok(Kind::Workload),
        "cluster" | "clusters" => Ok(Kind::Cluster),
        "placement" | "placements" => Ok(Kind::Placement),
        other => Err(ApiError::InvalidArgument(format!(
            "unknown kind {other:?}: expected workloads, clusters or placements"
        ))),
    }
}

fn namespace_or_default(ns: &str) -> &str {
    if ns.is_empty() {
        hansa_core::DEFAULT_NAMESPACE
    } else {
        ns
    }
}

fn first_duplicate(keys: &[WorkloadKey]) -> Option<&WorkloadKey> {
    let mut seen = std::collections::BTreeSet::new();
    keys.iter().find(|k| !seen.insert(*k))
}

/// How `preview` differs from the placement in force: `eu-1 3->2, us-1 1->2`, `new`, or
/// `no change`.
pub fn placement_change(current: Option<&Placement>, preview: &Placement) -> String {
    let Some(current) = current else {
        return "new placement".to_string();
    };
    let names: std::collections::BTreeSet<&String> = current
        .clusters
        .keys()
        .chain(preview.clusters.keys())
        .collect();
    let changes: Vec<String> = names
        .into_iter()
        .filter_map(|name| {
            let before = current.clusters.get(name).copied().unwrap_or(0);
            let after = preview.clusters.get(name).copied().unwrap_or(0);
            (before != after).then(|| format!("{name} {before}->{after}"))
        })
        .collect();
    if changes.is_empty() {
        "no change".to_string()
    } else {
        changes.join(", ")
    }
}

/// `eu-1=3 us-1=1`, or the explanation's summary when nothing is placed.
pub fn describe_placement(p: &Placement) -> String {
    if p.total() == 0 {
        return format!("Pending: {}", p.explanation.summary);
    }
    let parts: Vec<String> = p.clusters.iter().map(|(c, n)| format!("{c}={n}")).collect();
    if p.explanation.unplaced > 0 {
        format!("{} ({})", parts.join(" "), p.explanation.summary)
    } else {
        parts.join(" ")
    }
}

fn workload_view(
    state: &FederationState,
    live: &Liveness,
    key: &WorkloadKey,
) -> Option<WorkloadView> {
    let record = state.workloads.get(key)?;
    let placement = state.placements.get(key);
    let clusters = placement.map(|p| p.clusters.clone()).unwrap_or_default();
    let placed: u32 = clusters.values().sum();
    let desired = placement
        .map(|p| p.total() + p.explanation.unplaced)
        .unwrap_or(record.workload.replicas);
    let healthy: u32 = clusters
        .iter()
        .map(|(cluster, assigned)| {
            let healthy = live.get(cluster).map_or(0, |l| {
                l.replicas
                    .iter()
                    .filter(|r| &r.workload == key && r.revision == record.revision && r.healthy)
                    .count()
            });
            u32::try_from(healthy).unwrap_or(u32::MAX).min(*assigned)
        })
        .sum();
    let phase = if placed == 0 {
        WorkloadPhase::Pending
    } else if placed < desired {
        WorkloadPhase::Degraded
    } else if healthy < placed {
        WorkloadPhase::Progressing
    } else {
        WorkloadPhase::Running
    };
    Some(WorkloadView {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        format: record.workload.format,
        generation: record.generation,
        revision: record.revision,
        desired,
        placed,
        healthy,
        phase,
        clusters,
        created_ms: record.created_ms,
        updated_ms: record.updated_ms,
    })
}

fn cluster_view(
    state: &FederationState,
    live: &Liveness,
    cluster: &hansa_core::Cluster,
) -> ClusterView {
    let soft = live.get(&cluster.name);
    let replicas: u32 = state
        .placements
        .values()
        .filter_map(|p| p.clusters.get(&cluster.name))
        .sum();
    ClusterView {
        cluster: cluster.clone(),
        connected: soft.as_ref().is_some_and(|s| s.connected),
        last_seen_ms: soft
            .as_ref()
            .map(|s| u64::try_from(s.last_seen.elapsed().as_millis()).unwrap_or(u64::MAX)),
        live_available: soft.as_ref().map(|s| s.available),
        replicas,
    }
}

fn describe_workload(
    state: &FederationState,
    live: &Liveness,
    key: &WorkloadKey,
) -> Option<WorkloadDescription> {
    let summary = workload_view(state, live, key)?;
    let record = state.workloads.get(key)?;
    let placement = state.placements.get(key);
    let fresh = solve(state, live, &record.workload, record.generation);
    let mut clusters = Vec::new();
    let mut endpoints = Vec::new();
    let assigned: BTreeMap<String, u32> = placement.map(|p| p.clusters.clone()).unwrap_or_default();
    for (name, cluster) in &state.clusters {
        let replicas: Vec<_> = live
            .get(name)
            .map(|l| {
                l.replicas
                    .into_iter()
                    .filter(|r| &r.workload == key)
                    .collect()
            })
            .unwrap_or_default();
        let count = assigned.get(name).copied().unwrap_or(0);
        if count == 0 && replicas.is_empty() {
            continue;
        }
        for replica in replicas.iter().filter(|r| r.healthy) {
            endpoints.extend(replica.endpoints.iter().map(|e| ClusterEndpoint {
                cluster: name.to_string(),
                replica: replica.id.clone(),
                endpoint: e.clone(),
            }));
        }
        clusters.push(ClusterReplicas {
            cluster: name.to_string(),
            health: cluster.health,
            assigned: count,
            replicas,
        });
    }
    Some(WorkloadDescription {
        summary,
        workload: record.workload.clone(),
        explanation: placement.map(|p| p.explanation.clone()),
        detailed: Some(fresh.explanation),
        detailed_clusters: fresh.clusters,
        clusters,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(counts: &[(&str, u32)]) -> Placement {
        Placement {
            clusters: counts.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn dry_run_names_each_cluster_that_changes() {
        let current = placement(&[("eu-1", 3), ("us-1", 1)]);
        let preview = placement(&[("eu-1", 2), ("us-1", 2)]);
        assert_eq!(
            placement_change(Some(&current), &preview),
            "eu-1 3->2, us-1 1->2"
        );
        let moved = placement(&[("ap-1", 4)]);
        assert_eq!(
            placement_change(Some(&current), &moved),
            "ap-1 0->4, eu-1 3->0, us-1 1->0"
        );
        assert_eq!(placement_change(Some(&current), &current), "no change");
        assert_eq!(placement_change(None, &current), "new placement");
    }
}
