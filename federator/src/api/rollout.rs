//! `hansa rollout status|history|pause|resume|undo`: a workload's rollout across clusters,
//! joined with the replica health its agents report, and the operator's actions on it.

use hansa_core::rollout::{RolloutPhase, StageStatus};
use hansa_core::WorkloadKey;
use hansa_proto::v1::{GetRolloutRequest, RolloutResponse, UpdateRolloutRequest};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{namespace_or_default, now_ms, ApiError, FederationService};
use crate::controllers::assignments;
use crate::liveness::Liveness;
use crate::store::{Command, CommandResponse, FederationState, RolloutAction};

/// A workload's rollout as `hansa rollout status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub namespace: String,
    pub name: String,
    /// What the rollout is rolling out (or rolled back).
    pub revision: u64,
    /// The revision the workload is at: `revision`, unless a rollback reverted the workload to
    /// the stable one.
    #[serde(default)]
    pub current: u64,
    /// Whether `spec.update.clusters` stages the rollout.
    pub staged: bool,
    pub phase: RolloutPhase,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The last revision that completed a rollout.
    pub stable: u64,
    pub clusters: Vec<ClusterProgress>,
    pub history: Vec<RevisionView>,
    /// What an action did (`paused`, `undone to revision 1 as revision 4`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterProgress {
    pub cluster: String,
    /// The revision the cluster is assigned now.
    pub revision: u64,
    pub status: StageStatus,
    pub desired: u32,
    /// Healthy replicas of the assigned revision.
    pub healthy: u32,
    /// Healthy replicas of any revision.
    pub healthy_total: u32,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    pub revision: u64,
    pub created_ms: u64,
    /// The image, or the command, in one line.
    pub runs: String,
    /// What changed since the revision kept before it (`image a -> b`, `env GREETING`).
    #[serde(default)]
    pub change: String,
    /// Clusters assigned this revision now.
    pub clusters: Vec<String>,
}

impl FederationService {
    /// Call after the read index (`consistent_read`) when the caller wants a current view.
    pub(super) fn rollout_view(
        &self,
        request: GetRolloutRequest,
    ) -> Result<RolloutResponse, ApiError> {
        let key = WorkloadKey::new(namespace_or_default(&request.namespace), &request.name);
        let view = self
            .store
            .read(|state| view(state, &self.live, &key))
            .ok_or_else(|| ApiError::NotFound(format!("workload {key} not found")))?;
        encode(&view)
    }

    pub(super) async fn rollout_action(
        &self,
        who: &str,
        request: UpdateRolloutRequest,
    ) -> Result<RolloutResponse, ApiError> {
        let key = WorkloadKey::new(namespace_or_default(&request.namespace), &request.name);
        let action = match request.action.as_str() {
            "pause" => RolloutAction::Pause,
            "resume" => RolloutAction::Resume,
            "undo" => RolloutAction::Undo {
                to_revision: request.to_revision,
            },
            other => {
                return Err(ApiError::InvalidArgument(format!(
                    "action: must be pause, resume or undo (got {other:?})"
                )))
            }
        };
        if request.to_revision.is_some() && !matches!(action, RolloutAction::Undo { .. }) {
            return Err(ApiError::InvalidArgument(
                "to_revision: only undo takes a revision".into(),
            ));
        }
        if !self.store.read(|s| s.workloads.contains_key(&key)) {
            return Err(ApiError::NotFound(format!("workload {key} not found")));
        }
        let response = self
            .store
            .propose(Command::UpdateRollout {
                key: key.clone(),
                action: action.clone(),
                now_ms: now_ms(),
            })
            .await?;
        let message = match (&action, response) {
            (_, CommandResponse::Ignored(why)) => return Err(ApiError::InvalidArgument(why)),
            (RolloutAction::Undo { .. }, CommandResponse::Workloads(outcomes)) => {
                let revision = outcomes.first().map_or(0, |o| o.revision());
                format!(
                    "rolled back to the template of an earlier revision, as revision {revision}"
                )
            }
            (RolloutAction::Pause, _) => "paused".to_string(),
            (RolloutAction::Resume, _) => "resumed".to_string(),
            (RolloutAction::Undo { .. }, other) => {
                return Err(ApiError::Internal(format!(
                    "unexpected store response to an undo: {other:?}"
                )))
            }
        };
        info!(caller = %who, workload = %key, ?action, %message, "rollout action");
        let mut view = self
            .store
            .read(|state| view(state, &self.live, &key))
            .ok_or_else(|| ApiError::NotFound(format!("workload {key} not found")))?;
        view.message = message;
        encode(&view)
    }
}

fn encode(view: &RolloutView) -> Result<RolloutResponse, ApiError> {
    Ok(RolloutResponse {
        rollout_json: serde_json::to_string(view)
            .map_err(|e| ApiError::Internal(format!("encode: {e}")))?,
    })
}

/// The rollout of `key` joined with what the agents report.
pub fn view(state: &FederationState, live: &Liveness, key: &WorkloadKey) -> Option<RolloutView> {
    let record = state.workloads.get(key)?;
    let placement = state.placements.get(key);
    let rollout = record.rollout.as_ref();
    let clusters: Vec<ClusterProgress> = placement
        .map(|p| {
            p.clusters
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(cluster, placed)| {
                    let revision = record.revision_for(cluster);
                    let desired = assignments::assignment(state, key, cluster)
                        .map_or(*placed, |a| a.replicas);
                    let replicas = live
                        .get(cluster)
                        .filter(|l| l.connected)
                        .map(|l| l.replicas)
                        .unwrap_or_default();
                    let healthy_of = |revision: Option<u64>| {
                        let n = replicas
                            .iter()
                            .filter(|r| &r.workload == key && r.healthy)
                            .filter(|r| revision.is_none_or(|v| r.revision == v))
                            .count();
                        u32::try_from(n).unwrap_or(u32::MAX)
                    };
                    let healthy = healthy_of(Some(revision));
                    let stage = rollout.and_then(|r| r.clusters.get(cluster));
                    let status = match stage {
                        Some(s) => s.status,
                        None if revision == record.revision && healthy >= desired => {
                            StageStatus::Updated
                        }
                        None if revision == record.revision => StageStatus::Updating,
                        None => StageStatus::Waiting,
                    };
                    ClusterProgress {
                        cluster: cluster.clone(),
                        revision,
                        status,
                        desired,
                        healthy,
                        healthy_total: healthy_of(None),
                        started_ms: stage.map_or(0, |s| s.started_ms),
                        healthy_since_ms: stage.and_then(|s| s.healthy_since_ms),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let (phase, reason, stable) = match rollout {
        Some(r) => (r.phase, r.reason.clone(), r.stable),
        // Unstaged: complete once every cluster holds the latest revision healthy.
        None if !clusters.is_empty()
            && clusters.iter().all(|c| c.status == StageStatus::Updated) =>
        {
            (RolloutPhase::Complete, String::new(), record.revision)
        }
        None => (RolloutPhase::Progressing, String::new(), record.revision),
    };
    let history = record
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| RevisionView {
            change: match i.checked_sub(1).and_then(|p| record.history.get(p)) {
                Some(before) => h.changes_since(before).join(", "),
                None => String::new(),
            },
            revision: h.revision,
            created_ms: h.created_ms,
            runs: match &h.template.image {
                Some(image) => image.clone(),
                None => h.template.command.join(" "),
            },
            clusters: clusters
                .iter()
                .filter(|c| c.revision == h.revision)
                .map(|c| c.cluster.clone())
                .collect(),
        })
        .collect();
    Some(RolloutView {
        namespace: key.namespace.to_string(),
        name: key.name.to_string(),
        revision: rollout.map_or(record.revision, |r| r.revision),
        current: record.revision,
        staged: record.workload.rollout.clusters.is_some(),
        phase,
        reason,
        stable,
        clusters,
        history,
        message: String::new(),
    })
}
