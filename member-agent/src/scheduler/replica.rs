//! One replica as the scheduler tracks it, across restarts of its process.

use std::sync::Arc;

use hansa_core::{Endpoint, ReplicaState, ReplicaStatus, Resources, TaskTemplate, WorkloadKey};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::backoff::Backoff;

/// One replica as the scheduler tracks it, across restarts of its process.
pub(super) struct Replica {
    pub(super) id: String,
    pub(super) workload: WorkloadKey,
    pub(super) revision: u64,
    /// The node it was placed on; it stays there across restarts and agent restarts.
    pub(super) node: String,
    /// The assignment's template; unknown for an adopted replica whose revision is not (or not
    /// yet) assigned.
    pub(super) template: Option<Arc<TaskTemplate>>,
    pub(super) host_ports: Vec<u16>,
    pub(super) endpoints: Vec<Endpoint>,
    /// Creation order, for choosing surplus replicas.
    pub(super) seq: u64,
    pub(super) phase: Phase,
    pub(super) restarts: u32,
    pub(super) backoff: Backoff,
    /// Since when the current run is healthy; `None` while starting or failed.
    pub(super) healthy_since: Option<Instant>,
    pub(super) message: String,
    /// Why the runtime holding it did not answer the last look (its node's Docker Engine is
    /// unreachable, say): it may still run, but nothing vouches for it.
    pub(super) unreachable: Option<String>,
    /// Bumped on every start, so verdicts about an earlier run are ignored.
    pub(super) instance: u64,
    /// Wall-clock start of the current run (the health grace counts from it).
    pub(super) started_at_ms: u64,
    pub(super) prober: Option<AbortHandle>,
    pub(super) stop_in_flight: bool,
}

pub(super) enum Phase {
    /// The process runs: `Starting` until healthy, then `Running`.
    Live,
    /// Failed (exited, could not start, or unhealthy); restarts once `until` has passed and
    /// what is left of the failed run has been cleaned up. `shown` is `Failed` or `Unhealthy`.
    Backoff {
        until: Instant,
        shown: ReplicaState,
        cleaned: bool,
    },
    /// Being stopped for good; leaves the table once stopped.
    Retiring,
}

impl Replica {
    pub(super) fn ready(&self) -> bool {
        matches!(self.phase, Phase::Live)
            && self.healthy_since.is_some()
            && self.unreachable.is_none()
    }

    pub(super) fn state(&self) -> ReplicaState {
        match &self.phase {
            Phase::Live if self.unreachable.is_some() => ReplicaState::Unhealthy,
            Phase::Live if self.healthy_since.is_some() => ReplicaState::Running,
            Phase::Live => ReplicaState::Starting,
            Phase::Backoff { shown, .. } => *shown,
            Phase::Retiring => ReplicaState::Stopping,
        }
    }

    pub(super) fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            id: self.id.clone(),
            workload: self.workload.clone(),
            revision: self.revision,
            state: self.state(),
            healthy: self.ready(),
            restarts: self.restarts,
            endpoints: self.endpoints.clone(),
            message: self.unreachable.as_ref().unwrap_or(&self.message).clone(),
        }
    }

    pub(super) fn requests(&self) -> Resources {
        self.template
            .as_ref()
            .map(|t| t.resources)
            .unwrap_or_default()
    }

    pub(super) fn stop_probing(&mut self) {
        if let Some(prober) = self.prober.take() {
            prober.abort();
        }
    }
}
