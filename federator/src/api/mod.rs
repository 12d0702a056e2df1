//! The user-facing gRPC API (`hansa.v1.Federation`) and the agent Sync service.

pub mod admin;
pub mod policies;
pub mod rollout;
pub mod sync;
pub mod views;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hansa_core::manifest::{parse_manifests, ManifestFile};
use hansa_core::{Placement, Workload, WorkloadKey};
use hansa_proto::v1::{
    federation_server::Federation, ApplyRequest, ApplyResponse, ApplyResult, DeleteRequest,
    DeleteResponse, DescribeRequest, DescribeResponse, GetRequest, GetResponse, GetRolloutRequest,
    InfoRequest, InfoResponse, RolloutResponse, UpdateClusterRequest, UpdateClusterResponse,
    UpdateRolloutRequest,
};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::controllers::placement::{bound, solve};
use crate::liveness::Liveness;
use crate::security::{caller, Role};
use crate::store::{
    policy_key, Command, CommandResponse, FederationState, PutOutcome, Store, StoreError,
};
use policies::Effective;

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
    /// Peer mode's membership, when the federator runs as a peer.
    pub peer: Option<Arc<crate::peer::PeerMode>>,
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
        if parsed.workloads.is_empty() && parsed.policies.is_empty() && parsed.overrides.is_empty()
        {
            return Err(ApiError::InvalidArgument(
                "the files hold no workloads or policies".into(),
            )
            .into());
        }
        let keys: Vec<WorkloadKey> = parsed.workloads.iter().map(Workload::key).collect();
        if let Some(dup) = first_duplicate(&keys) {
            return Err(ApiError::InvalidArgument(format!(
                "workload {dup} is defined twice in this apply"
            ))
            .into());
        }
        let dry_run = request.dry_run;
        // What the placement controller will decide: the same pure function on the same state
        // with this apply's policies in force, and, for a dry run, how that differs from what
        // is in force; what the apply does to each policy.
        let (previews, policy_results) = self.store.read(|state| {
            let effective = Effective::new(
                state,
                &parsed.workloads,
                &parsed.policies,
                &parsed.overrides,
            );
            effective
                .check_overrides(&parsed.overrides)
                .map_err(ApiError::InvalidArgument)?;
            let previews: Vec<(Placement, String, String)> = parsed
                .workloads
                .iter()
                .map(|w| {
                    let key = w.key();
                    let action = policies::action(
                        state.workloads.get(&key).map(|r| &r.workload),
                        w,
                        dry_run,
                    );
                    let bound = hansa_core::manifest::bound(w, effective.placement.iter().copied());
                    let preview = solve(state, &self.live, self.peer.as_deref(), &bound, 0);
                    let change = placement_change(state.placement(&key), &preview);
                    (preview, change, action)
                })
                .collect();
            // In a dry run, a policy shows how the placement of each workload it governs would
            // change; the workloads of this apply show their own.
            let governs = |ws: Vec<&Workload>| {
                if ws.is_empty() {
                    return "governs no workload".to_string();
                }
                let names: Vec<String> = ws
                    .iter()
                    .map(|w| {
                        if !dry_run || keys.contains(&w.key()) {
                            return w.name.clone();
                        }
                        let bound =
                            hansa_core::manifest::bound(w, effective.placement.iter().copied());
                        let preview = solve(state, &self.live, self.peer.as_deref(), &bound, 0);
                        let change = placement_change(state.placement(&w.key()), &preview);
                        format!("{} [{change}]", w.name)
                    })
                    .collect();
                format!("governs {}", names.join(", "))
            };
            let mut results: Vec<ApplyResult> = parsed
                .policies
                .iter()
                .map(|p| ApplyResult {
                    kind: p.kind.clone(),
                    namespace: p.namespace.clone().unwrap_or_default(),
                    name: p.name.clone(),
                    action: policies::action(
                        state
                            .policies
                            .get(&policy_key(&p.kind, p.namespace.as_deref(), &p.name))
                            .map(|r| &r.policy),
                        p,
                        dry_run,
                    ),
                    pending: false,
                    placement: governs(effective.governed_by(p)),
                })
                .collect();
            results.extend(parsed.overrides.iter().map(|o| {
                let selected: Vec<&Workload> =
                    effective.workloads().filter(|w| o.selects(w)).collect();
                ApplyResult {
                    kind: o.kind.clone(),
                    namespace: o.namespace.clone().unwrap_or_default(),
                    name: o.name.clone(),
                    action: policies::action(
                        state
                            .overrides
                            .get(&policy_key(&o.kind, o.namespace.as_deref(), &o.name))
                            .map(|r| &r.policy),
                        o,
                        dry_run,
                    ),
                    pending: false,
                    placement: if selected.is_empty() {
                        "overrides no workload".into()
                    } else {
                        let names: Vec<String> = selected.iter().map(|w| w.name.clone()).collect();
                        format!("overrides {}", names.join(", "))
                    },
                }
            }));
            Ok::<_, ApiError>((previews, results))
        })?;
        let outcomes = if dry_run {
            vec![None; parsed.workloads.len()]
        } else {
            let response = self
                .store
                .propose(Command::PutWorkloads {
                    workloads: parsed.workloads.clone(),
                    now_ms: now_ms(),
                    policies: parsed.policies.clone(),
                    overrides: parsed.overrides.clone(),
                })
                .await?;
            let CommandResponse::Workloads(outcomes) = response else {
                return Err(ApiError::Internal(format!(
                    "unexpected store response to PutWorkloads: {response:?}"
                ))
                .into());
            };
            info!(
                caller = %who,
                workloads = keys.len(),
                policies = parsed.policies.len() + parsed.overrides.len(),
                "applied"
            );
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
                        None => dry,
                        Some(PutOutcome::Created { .. }) => "created".into(),
                        Some(PutOutcome::Configured { .. }) => "configured".into(),
                        Some(PutOutcome::Unchanged { .. }) => "unchanged".into(),
                    },
                    pending: preview.total() == 0,
                    placement: if dry_run {
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
                    .map(|c| json(&cluster_view(state, &self.live, self.peer.as_deref(), c)))
                    .collect::<Result<_, _>>()?,
                Kind::Placement => state
                    .placements
                    .iter()
                    .filter(|(k, _)| keep(&k.namespace, &k.name))
                    .map(|(_, p)| {
                        json(&PlacementView {
                            desired: p.total() + p.explanation.unplaced,
                            pending: p.total() == 0,
                            placement: (**p).clone(),
                        })
                    })
                    .collect::<Result<_, _>>()?,
                Kind::Policy(kind) => policies::views(state)
                    .into_iter()
                    .filter(|p| kind.is_none_or(|k| k == p.kind))
                    .filter(|p| {
                        keep(&p.namespace, &p.name)
                            || (p.namespace.is_empty() && (name.is_empty() || *name == p.name))
                    })
                    .map(|p| json(&p))
                    .collect::<Result<_, _>>()?,
                Kind::Peer => match &self.peer {
                    Some(peer) => peer
                        .peers(state)
                        .into_iter()
                        .filter(|p| name.is_empty() || name == &p.name)
                        .map(|p| json(&p))
                        .collect::<Result<_, _>>()?,
                    None => {
                        return Err(ApiError::InvalidArgument(
                            "this federation runs in hub mode, which has no peers: see its \
                             control plane with `hansa federators`"
                                .into(),
                        ))
                    }
                },
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
            .read(|state| describe_workload(state, &self.live, self.peer.as_deref(), &key))
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
        match normalize_kind(&request.kind)? {
            Kind::Workload => {}
            Kind::Policy(Some(kind)) => {
                let namespace = (!policies::cluster_scoped(kind))
                    .then(|| namespace_or_default(&request.namespace));
                let key = policy_key(kind, namespace, &request.name);
                let response = self
                    .store
                    .propose(Command::DeletePolicy { key: key.clone() })
                    .await?;
                if !matches!(response, CommandResponse::Deleted(true)) {
                    return Err(ApiError::NotFound(format!(
                        "{kind} {} not found",
                        match namespace {
                            Some(ns) => format!("{ns}/{}", request.name),
                            None => request.name.clone(),
                        }
                    ))
                    .into());
                }
                info!(caller = %who, policy = %key, "deleted");
                return Ok(Response::new(DeleteResponse { deleted: true }));
            }
            _ => {
                return Err(ApiError::InvalidArgument(format!(
                    "only workloads and policies (by kind: propagationpolicy, overridepolicy, \
                     ...) can be deleted (got kind {:?})",
                    request.kind
                ))
                .into())
            }
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

    async fn update_cluster(
        &self,
        request: Request<UpdateClusterRequest>,
    ) -> Result<Response<UpdateClusterResponse>, Status> {
        let who = caller(&request, &self.trust_domain, API_ROLES)?;
        let request = request.into_inner();
        let name = request.name.clone();
        let (exists, agent_taints, operator_taints) = self.store.read(|state| {
            let operator = state
                .operator_taints
                .get(&name)
                .cloned()
                .unwrap_or_default();
            let agent: Vec<hansa_core::Taint> = state
                .clusters
                .get(&name)
                .map(|c| {
                    c.taints
                        .iter()
                        .filter(|t| !operator.contains(t))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            (state.clusters.contains_key(&name), agent, operator)
        });
        if !exists {
            return Err(ApiError::NotFound(format!("cluster {name} is not registered")).into());
        }
        let now = now_ms();
        let mut add = Vec::new();
        for text in &request.add_taints {
            let mut taint = hansa_core::Taint::parse(text).map_err(ApiError::InvalidArgument)?;
            taint.added_ms = now;
            add.push(taint);
        }
        for pattern in &request.remove_taints {
            if operator_taints.iter().any(|t| t.matches(pattern)) {
                continue;
            }
            let why = if agent_taints.iter().any(|t| t.matches(pattern)) {
                format!(
                    "taint {pattern} on cluster {name} comes from its agent's configuration; \
                     remove it there"
                )
            } else {
                format!("cluster {name} has no taint {pattern}")
            };
            return Err(ApiError::NotFound(why).into());
        }
        if !add.is_empty() || !request.remove_taints.is_empty() {
            self.store
                .propose(Command::SetClusterTaints {
                    name: name.clone(),
                    add,
                    remove: request.remove_taints.clone(),
                })
                .await?;
            info!(caller = %who, cluster = %name, add = ?request.add_taints, remove = ?request.remove_taints, "taints changed");
        }
        if let Some(cordoned) = request.cordoned {
            self.store
                .propose(Command::SetClusterCordon {
                    name: name.clone(),
                    cordoned,
                })
                .await?;
            info!(caller = %who, cluster = %name, cordoned, "cordon changed");
        }
        let view = self.store.read(|state| {
            state
                .clusters
                .get(&name)
                .map(|c| cluster_view(state, &self.live, self.peer.as_deref(), c))
        });
        let view =
            view.ok_or_else(|| ApiError::NotFound(format!("cluster {name} is not registered")))?;
        Ok(Response::new(UpdateClusterResponse {
            cluster_json: json(&view)?,
        }))
    }

    async fn get_rollout(
        &self,
        request: Request<GetRolloutRequest>,
    ) -> Result<Response<RolloutResponse>, Status> {
        caller(&request, &self.trust_domain, API_ROLES)?;
        let request = request.into_inner();
        consistent_read(&self.store, request.stale).await?;
        Ok(Response::new(self.rollout_view(request)?))
    }

    async fn update_rollout(
        &self,
        request: Request<UpdateRolloutRequest>,
    ) -> Result<Response<RolloutResponse>, Status> {
        let who = caller(&request, &self.trust_domain, API_ROLES)?;
        let response = self
            .rollout_action(&who.to_string(), request.into_inner())
            .await?;
        Ok(Response::new(response))
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
    /// Placement and override policies; `Some(kind)` for one policy kind.
    Policy(Option<&'static str>),
    /// Peer mode's peers.
    Peer,
}

fn normalize_kind(kind: &str) -> Result<Kind, ApiError> {
    match kind.to_ascii_lowercase().as_str() {
        "workload" | "workloads" | "wl" => Ok(Kind::Workload),
        "cluster" | "clusters" => Ok(Kind::Cluster),
        "placement" | "placements" => Ok(Kind::Placement),
        "policy" | "policies" => Ok(Kind::Policy(None)),
        "peer" | "peers" => Ok(Kind::Peer),
        other => match policies::policy_kind(other) {
            Some(kind) => Ok(Kind::Policy(Some(kind))),
            None => Err(ApiError::InvalidArgument(format!(
                "unknown kind {other:?}: expected workloads, clusters, placements, policies, peers, or \
                 one policy kind (placementpolicy, propagationpolicy, \
                 clusterpropagationpolicy, overridepolicy, clusteroverridepolicy)"
            ))),
        },
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
                    .filter(|r| {
                        &r.workload == key
                            && r.revision == record.revision_for(cluster)
                            && r.healthy
                    })
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
        namespace: key.namespace.to_string(),
        name: key.name.to_string(),
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

/// In peer mode a cluster whose peer is down shows as `Unreachable` (see `PeerMode::overlay`).
fn cluster_view(
    state: &FederationState,
    live: &Liveness,
    peer: Option<&crate::peer::PeerMode>,
    cluster: &hansa_core::Cluster,
) -> ClusterView {
    let soft = live.get(&cluster.name);
    let mut cluster = cluster.clone();
    if let Some(peer) = peer {
        peer.overlay(&mut cluster);
    }
    let replicas: u32 = state
        .placements
        .values()
        .filter_map(|p| p.clusters.get(&cluster.name))
        .sum();
    ClusterView {
        cluster,
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
    peer: Option<&crate::peer::PeerMode>,
    key: &WorkloadKey,
) -> Option<WorkloadDescription> {
    let summary = workload_view(state, live, key)?;
    let record = state.workloads.get(key)?;
    let placement = state.placements.get(key);
    let fresh = solve(
        state,
        live,
        peer,
        &bound(state, &record.workload),
        record.generation,
    );
    let mut clusters = Vec::new();
    let mut endpoints = Vec::new();
    let assigned: BTreeMap<String, u32> = placement.map(|p| p.clusters.clone()).unwrap_or_default();
    for (name, cluster) in &state.clusters {
        let report = live.get(name);
        let unplaced = report
            .as_ref()
            .and_then(|l| l.unplaced.iter().find(|u| &u.workload == key).cloned());
        let replicas: Vec<_> = report
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
            unplaced,
        });
    }
    let overrides = crate::controllers::assignments::override_rules(state, &record.workload);
    Some(WorkloadDescription {
        summary,
        workload: record.workload.clone(),
        explanation: placement.map(|p| p.explanation.clone()),
        detailed: Some(fresh.explanation),
        detailed_clusters: fresh.clusters,
        clusters,
        endpoints,
        overrides,
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
