//! The cluster health controller: turns agent silence into `Unreachable` (and a returning
//! agent back into `Ready`) in the store, so placement moves replicas away from dead clusters.
//! Runs on the leader only.

use std::sync::Arc;
use std::time::Duration;

use hansa_core::ClusterHealth;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::liveness::Liveness;
use crate::peer::PeerMode;
use crate::store::{Command, Store};

const TICK: Duration = Duration::from_millis(500);

pub async fn run(
    store: Store,
    live: Arc<Liveness>,
    peer: Option<Arc<PeerMode>>,
    grace: Duration,
    stop: CancellationToken,
) {
    // A new leader has not heard from agents that streamed to the old one: give them the
    // grace period to reconnect (or be relayed) before calling them Unreachable.
    let leading_since = std::time::Instant::now();
    loop {
        let transitions: Vec<(String, ClusterHealth)> = store.read(|state| {
            state
                .clusters
                .values()
                // A peer decides only its own cluster's health; the others' follow their
                // peers' liveness (`PeerMode::overlay`).
                .filter(|cluster| {
                    peer.as_ref()
                        .is_none_or(|p| p.manages_cluster(&cluster.name))
                })
                .filter_map(|cluster| {
                    let connected = live.get(&cluster.name).is_some_and(|h| h.connected);
                    let alive = connected
                        || live.silence(&cluster.name) < grace
                        || leading_since.elapsed() < grace;
                    match cluster.health {
                        ClusterHealth::Ready if !alive => {
                            Some((cluster.name.clone(), ClusterHealth::Unreachable))
                        }
                        ClusterHealth::Unknown if !alive => {
                            Some((cluster.name.clone(), ClusterHealth::Unreachable))
                        }
                        ClusterHealth::Unreachable | ClusterHealth::Unknown if connected => {
                            Some((cluster.name.clone(), ClusterHealth::Ready))
                        }
                        _ => None,
                    }
                })
                .collect()
        });
        for (name, health) in transitions {
            info!(cluster = %name, %health, "cluster health changed");
            if let Err(e) = store
                .propose(Command::SetClusterHealth {
                    name: name.clone(),
                    health,
                })
                .await
            {
                warn!(cluster = %name, error = %e, "could not record a health change");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}
