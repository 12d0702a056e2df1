//! Controllers run on the Raft leader only: they start when this node gains leadership and
//! stop when it loses it, so there are never two placers (or rollout drivers) at once. In
//! peer mode every peer leads its own store; its controllers then place and roll out only the
//! workloads it owns and decide only its own cluster's health (see `crate::peer`).

pub mod assignments;
pub mod health;
pub mod placement;
pub mod rollout;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::liveness::Liveness;
use crate::peer::PeerMode;
use crate::store::Store;

/// Starts and stops the leader's controllers as leadership comes and goes, until `shutdown`.
pub async fn run_on_leadership(
    store: Store,
    live: Arc<Liveness>,
    peer: Option<Arc<PeerMode>>,
    cluster_grace: Duration,
    shutdown: CancellationToken,
) {
    let mut leadership = store.leadership();
    loop {
        let is_leader = *leadership.borrow_and_update();
        if is_leader {
            info!("this federator leads: starting controllers");
            let term = shutdown.child_token();
            let mut controllers = JoinSet::new();
            controllers.spawn(placement::run(
                store.clone(),
                live.clone(),
                peer.clone(),
                term.clone(),
            ));
            controllers.spawn(rollout::run(
                store.clone(),
                live.clone(),
                peer.clone(),
                term.clone(),
            ));
            controllers.spawn(health::run(
                store.clone(),
                live.clone(),
                peer.clone(),
                cluster_grace,
                term.clone(),
            ));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = leadership.changed() => {
                        if changed.is_err() || !*leadership.borrow_and_update() { break }
                    }
                }
            }
            term.cancel();
            while controllers.join_next().await.is_some() {}
            info!("controllers stopped");
        }
        if shutdown.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = leadership.changed() => if changed.is_err() { return },
        }
    }
}
