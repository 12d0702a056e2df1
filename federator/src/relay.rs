//! Agent soft state relayed to the leader (DESIGN.md §2). An agent streams to whichever
//! federator it reached; the leader's controllers (cluster health, placement) need to hear
//! about it too. Each follower sends what its own agents reported to the leader twice a
//! second, over the peer port; nothing of it is written to the Raft log.

use std::sync::Arc;
use std::time::Duration;

use hansa_core::{ReplicaStatus, Resources};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::liveness::Liveness;
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
}

/// The leader's side: relayed reports go into its `Liveness`.
pub fn handler(live: Arc<Liveness>) -> RelayHandler {
    Arc::new(
        move |from, report| match serde_json::from_value::<Vec<RelayedCluster>>(report) {
            Ok(clusters) => {
                for c in clusters {
                    live.relayed(
                        &c.name,
                        c.connected,
                        Duration::from_millis(c.silence_ms),
                        c.available,
                        c.replicas,
                    );
                }
            }
            Err(e) => warn!(from, error = %e, "ignoring a malformed relayed report"),
        },
    )
}

/// The follower's side: relays the clusters streaming to this federator while it does not lead.
pub async fn run(
    store: Store,
    live: Arc<Liveness>,
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
        let clusters: Vec<RelayedCluster> = live
            .local_reports()
            .into_iter()
            .map(|(name, l)| RelayedCluster {
                name,
                connected: l.connected,
                silence_ms: u64::try_from(l.last_seen.elapsed().as_millis()).unwrap_or(u64::MAX),
                available: l.available,
                replicas: l.replicas,
            })
            .collect();
        if clusters.is_empty() {
            continue;
        }
        let report = match serde_json::to_value(&clusters) {
            Ok(report) => report,
            Err(e) => {
                warn!(error = %e, "cannot encode the relayed report");
                continue;
            }
        };
        if let Err(e) = store.relay(report, RELAY_TIMEOUT).await {
            debug!(error = %e, "could not relay agent reports to the leader");
        }
    }
}
