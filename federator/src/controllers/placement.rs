//! The placement controller: keeps every workload's stored placement equal to what the
//! engine decides for the current workloads and clusters. Runs on the leader only.

use std::sync::Arc;
use std::time::Duration;

use hansa_core::{Cluster, Placement, Workload};
use hansa_policies::{place, Problem};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::liveness::Liveness;
use crate::store::{Command, FederationState, Store};

/// Coalesces bursts of changes (an apply of many workloads, agents registering) into one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Re-solve even when nothing was signalled: a lost wake-up must not leave a stale placement.
const REQUEUE: Duration = Duration::from_secs(10);

/// The clusters as the engine should see them for `workload`: free capacity from the live
/// heartbeat when there is one, plus what the workload's own current replicas use there (they
/// would be replaced by the new decision, not added to it).
fn clusters_for(
    state: &FederationState,
    live: &Liveness,
    workload: &Workload,
    previous: Option<&Placement>,
) -> Vec<Cluster> {
    let requests = workload.template.resources;
    state
        .clusters
        .values()
        .map(|cluster| {
            let mut cluster = cluster.clone();
            if let Some(soft) = live.get(&cluster.name).filter(|s| s.connected) {
                cluster.available = soft.available;
            }
            let own = previous
                .and_then(|p| p.clusters.get(&cluster.name))
                .copied()
                .unwrap_or(0);
            cluster.available = cluster
                .available
                .saturating_add(&requests.times(own))
                .min_each(&cluster.allocatable);
            cluster
        })
        .collect()
}

/// Decides the placement of `workload` on the current state. Pure apart from reading soft state.
pub fn solve(
    state: &FederationState,
    live: &Liveness,
    workload: &Workload,
    generation: u64,
) -> Placement {
    let previous = state.placements.get(&workload.key());
    let clusters = clusters_for(state, live, workload, previous);
    place(
        &Problem {
            workload,
            generation,
            clusters: &clusters,
        },
        previous,
    )
}

/// Every placement that differs from what is stored.
fn pass(state: &FederationState, live: &Liveness) -> Vec<Placement> {
    state
        .workloads
        .values()
        .filter_map(|record| {
            let placement = solve(state, live, &record.workload, record.generation);
            let stored = state.placements.get(&record.workload.key());
            (stored != Some(&placement)).then_some(placement)
        })
        .collect()
}

pub async fn run(store: Store, live: Arc<Liveness>, stop: CancellationToken) {
    info!("placement controller started");
    let mut changes = store.subscribe();
    let mut soft = live.subscribe();
    loop {
        let updates = store.read(|state| pass(state, &live));
        for placement in updates {
            let workload = format!("{}/{}", placement.namespace, placement.workload);
            info!(%workload, clusters = ?placement.clusters, summary = %placement.explanation.summary, "placing");
            if let Err(e) = store.propose(Command::SetPlacement { placement }).await {
                warn!(%workload, error = %e, "could not store a placement; retrying");
            }
            if stop.is_cancelled() {
                break;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = changes.changed() => {}
            _ = soft.changed() => {}
            _ = tokio::time::sleep(REQUEUE) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(DEBOUNCE) => {}
        }
        changes.borrow_and_update();
        soft.borrow_and_update();
    }
    info!("placement controller stopped");
}
