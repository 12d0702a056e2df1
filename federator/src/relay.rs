//! Agent soft state relayed to the leader (DESIGN.md §2). An agent streams to whichever
//! federator it reached; the leader's controllers (cluster health, placement) need to hear
//! about it too. Each follower sends what its own agents reported to the leader twice a
//! second, over the peer port, and gets the leader's view of all the other clusters back, so
//! that every federator's views (`hansa get clusters`, workload health) show every agent.
//! Nothing of it is written to the Raft log.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hansa_core::{ReplicaStatus, Resources};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::liveness::{ClusterLive, Liveness};
use crate::store::{RelayHandler, Store};
use crate::FederatorError;

/// How often a follower relays its agents' reports.
pub const RELAY_INTERVAL: Duration = Duration::from_millis(500);
/// How long the leader waits for one relay to be taken.
const RELAY_TIMEOUT: Duration = Duration::from_secs(1);

/// One cluster as the follower it streams to sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayedCluster {
    pub name: String,
    pub connected: bool,
    /// Time since the agent was last heard from, so the leader ages it correctly.
    pub silence_ms: u64,
    pub available: Resources,
    pub replicas: Vec<ReplicaStatus>,
    /// The API URL of the federator the agent streams to (empty from older federators).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub via: String,
}

/// The leader's side: relayed reports go into its `Liveness`; the answer is what it knows of
/// every other cluster. `api_url` is how others reach this federator's API.
pub fn handler(live: Arc<Liveness>, api_url: String) -> RelayHandler {
    Arc::new(move |from, report| {
        let clusters = serde_json::from_value::<Vec<RelayedCluster>>(report).unwrap_or_else(|e| {
            warn!(from, error = %e, "ignoring a malformed relayed report");
            Vec::new()
        });
        let theirs: HashSet<String> = clusters.iter().map(|c| c.name.clone()).collect();
        take(&live, clusters);
        let view: Vec<RelayedCluster> = live
            .reports()
            .into_iter()
            .filter(|(name, _)| !theirs.contains(name))
            .map(|(name, l)| relayed(name, l, &api_url))
            .collect();
        serde_json::to_value(view).unwrap_or_default()
    })
}

/// One cluster's report as relayed to other federators; `api_url` is this federator's, which
/// the agents streaming here are reached through.
pub fn relayed(name: String, live: ClusterLive, api_url: &str) -> RelayedCluster {
    RelayedCluster {
        name,
        connected: live.connected,
        silence_ms: u64::try_from(live.last_seen.elapsed().as_millis()).unwrap_or(u64::MAX),
        available: live.available,
        replicas: live.replicas,
        via: live.via.unwrap_or_else(|| api_url.to_string()),
    }
}

/// Records relayed reports; those of agents streaming to this federator itself are ignored.
fn take(live: &Liveness, clusters: Vec<RelayedCluster>) {
    for c in clusters {
        live.relayed(c);
    }
}

/// The follower's side: relays the clusters streaming to this federator while it does not lead.
pub async fn run(
    store: Store,
    live: Arc<Liveness>,
    api_url: String,
    shutdown: CancellationToken,
) -> Result<(), FederatorError> {
    let leadership = store.leadership();
    let mut tick = tokio::time::interval(RELAY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if *leadership.borrow() {
            continue;
        }
        // Sent even when empty: the answer is the leader's view of everyone else's agents.
        let clusters: Vec<RelayedCluster> = live
            .local_reports()
            .into_iter()
            .map(|(name, l)| relayed(name, l, &api_url))
            .collect();
        let report = match serde_json::to_value(&clusters) {
            Ok(report) => report,
            Err(e) => {
                warn!(error = %e, "cannot encode the relayed report");
                continue;
            }
        };
        match store.relay(report, RELAY_TIMEOUT).await {
            Ok(view) if view.is_null() => {}
            Ok(view) => match serde_json::from_value::<Vec<RelayedCluster>>(view) {
                Ok(clusters) => take(&live, clusters),
                Err(e) => debug!(error = %e, "ignoring the leader's malformed view"),
            },
            Err(e) => debug!(error = %e, "could not relay agent reports to the leader"),
        }
    }
}
