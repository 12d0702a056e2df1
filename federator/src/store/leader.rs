//! The one place that finds the leader, hands it a request (here when this node leads, over
//! the peer link otherwise), follows "not the leader" answers and retries until a deadline.
//! Writes (`propose`) and peer requests (read index, membership, relay) both go through
//! `Store::with_leader`.
//!
//! While it retries, a watchdog checks that a majority of the voters is reachable at all: a
//! leader change is worth waiting for, a lost quorum is not, so the caller hears "no quorum"
//! in well under a second instead of at the deadline.

use std::future::Future;
use std::time::Duration;

use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, RaftMetrics};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::network::{forward_client_write, ClientWriteResult};
use super::peer::{self, PeerAnswer, PeerError, PeerRequest, PeerResult};
use super::state::{Command, CommandResponse};
use super::{leader_of, NodeId, Store, StoreError};

/// How long to wait for another leader after one failed, before asking the metrics again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// "Forward to the leader" hints followed in a row before pausing (they can go in circles
/// while an election settles).
const MAX_HOPS: u32 = 3;
/// A request slower than this starts the quorum watchdog; normal ones never do.
const QUORUM_GRACE: Duration = Duration::from_millis(250);
/// How long a peer may take to answer the watchdog's status probe. A stopped federator
/// refuses the connection at once; this bounds one that is cut off.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the watchdog probes while a request keeps retrying; concurrent requests share
/// one probe's result for this long.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// The leader as the retry loop aims at it.
pub(super) struct Target {
    pub(super) id: NodeId,
    pub(super) addr: String,
    /// This node is the leader: answer here, without the network.
    pub(super) local: bool,
}

/// What one try at the leader came to.
pub(super) enum Attempt<T> {
    Done(T),
    /// Final: retrying cannot help (or could apply a change twice).
    Failed(StoreError),
    /// Try again: at `next` when known (the answer named the leader), else at whoever the
    /// metrics name once they name someone else or a moment has passed.
    Retry {
        next: Option<(NodeId, String)>,
        why: StoreError,
    },
}

/// How many voters answered the last probe.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reachability {
    pub(super) reachable: usize,
    pub(super) voters: usize,
}

impl Reachability {
    /// A node that knows no voters yet (not joined) cannot judge, and waits for its deadline.
    fn has_quorum(&self) -> bool {
        self.voters == 0 || self.reachable * 2 > self.voters
    }
}

impl Store {
    /// Proposes a command and waits until it is committed and applied. A follower forwards it
    /// to the leader. Fails with `QuorumLost` as soon as a majority of the federators is
    /// unreachable, else after `propose_timeout` with `NoLeader` or `NoQuorum`.
    ///
    /// In peer mode the command is stamped (see [`super::Replicator`]) and the versions it
    /// wrote go to gossip; the answer is the command's own response.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResponse, StoreError> {
        let Some(replicator) = self.inner.replicator.get() else {
            return self.propose_as_is(cmd).await;
        };
        let stamped = Command::Stamped {
            command: Box::new(cmd),
            hlc: replicator.stamp(),
            origin: replicator.origin().to_string(),
        };
        match self.propose_as_is(stamped).await? {
            CommandResponse::Stamped { response, records } => {
                let written = self.read(|state| {
                    records
                        .iter()
                        .filter_map(|key| state.records.get(key).cloned())
                        .collect::<Vec<_>>()
                });
                if !written.is_empty() {
                    replicator.written(written);
                }
                Ok(*response)
            }
            other => Ok(other),
        }
    }

    /// Proposes `cmd` exactly as given.
    pub(super) async fn propose_as_is(&self, cmd: Command) -> Result<CommandResponse, StoreError> {
        let deadline = Instant::now() + self.inner.propose_timeout;
        let timeout = self.inner.propose_timeout;
        self.with_leader(deadline, |target| {
            let cmd = cmd.clone();
            async move { self.write_at(target, cmd, deadline, timeout).await }
        })
        .await
    }

    /// Sends a peer request to the leader (or answers it here when this node leads).
    pub(super) async fn on_leader(
        &self,
        request: PeerRequest,
        deadline: Instant,
    ) -> Result<PeerAnswer, StoreError> {
        self.with_leader(deadline, |target| {
            let request = request.clone();
            async move {
                let answer = if target.local {
                    self.inner.local.answer(request).await
                } else {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match peer::call(&self.inner.connections, &target.addr, &request, remaining)
                        .await
                    {
                        Ok(answer) => answer,
                        // Peer requests are safe to repeat: any transport failure is retried.
                        Err(status) => {
                            return Attempt::Retry {
                                next: None,
                                why: StoreError::Forward {
                                    leader: target.id,
                                    addr: target.addr,
                                    detail: status.message().to_string(),
                                },
                            }
                        }
                    }
                };
                peer_attempt(answer)
            }
        })
        .await
    }

    /// Runs `send` against the leader until it is done, fails for good, `deadline` passes or
    /// the quorum is found lost.
    pub(super) async fn with_leader<T, F, Fut>(
        &self,
        deadline: Instant,
        mut send: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(Target) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let attempts = async {
            let mut metrics = self.inner.raft.metrics();
            let mut hint: Option<(NodeId, String)> = None;
            // The leader that failed last, and why.
            let mut failed: Option<(NodeId, StoreError)> = None;
            let mut hops = 0u32;
            loop {
                let (id, addr) = match hint.take() {
                    Some(target) => target,
                    None => {
                        if let Some((previous, _)) = &failed {
                            let previous = *previous;
                            let pause = deadline.min(Instant::now() + RETRY_PAUSE);
                            // Ends early once the metrics name another leader.
                            let _ = timeout_at(
                                pause,
                                metrics.wait_for(|m| {
                                    leader_of(m).is_some_and(|(id, _)| id != previous)
                                }),
                            )
                            .await;
                            if Instant::now() >= deadline {
                                return Err(failed.map_or(StoreError::NoLeader, |(_, why)| why));
                            }
                        }
                        match self.wait_for_leader(&mut metrics, deadline).await {
                            Ok(leader) => leader,
                            Err(StoreError::NoLeader) => {
                                return Err(failed.map_or(StoreError::NoLeader, |(_, why)| why))
                            }
                            Err(e) => return Err(e),
                        }
                    }
                };
                let local = id == self.inner.node_id;
                match send(Target {
                    id,
                    addr: addr.clone(),
                    local,
                })
                .await
                {
                    Attempt::Done(value) => return Ok(value),
                    Attempt::Failed(e) => return Err(e),
                    Attempt::Retry { next, why } => {
                        debug!(leader = id, %addr, reason = %why, "the leader did not take the request; retrying");
                        hops += 1;
                        hint = next.filter(|_| hops <= MAX_HOPS);
                        if hint.is_none() {
                            hops = 0;
                        }
                        failed = Some((id, why));
                    }
                }
            }
        };
        tokio::select! {
            biased;
            result = attempts => result,
            lost = self.quorum_lost() => Err(lost),
        }
    }

    /// One write at the leader: proposed here, or forwarded over the peer link.
    async fn write_at(
        &self,
        target: Target,
        cmd: Command,
        deadline: Instant,
        timeout: Duration,
    ) -> Attempt<CommandResponse> {
        let too_late = || Attempt::Failed(StoreError::NoQuorum(timeout));
        if target.local {
            return match timeout_at(deadline, self.inner.local.proposer.write(cmd)).await {
                Err(_) => too_late(),
                Ok(result) => write_attempt(result, |e| StoreError::Fatal(e.to_string())),
            };
        }
        let forwarded = timeout_at(
            deadline,
            forward_client_write(&self.inner.connections, &target.addr, &cmd),
        )
        .await;
        let forward_error = |detail: String| StoreError::Forward {
            leader: target.id,
            addr: target.addr.clone(),
            detail,
        };
        match forwarded {
            Err(_) => too_late(),
            Ok(Ok(result)) => match write_attempt(result, |e| forward_error(e.to_string())) {
                // The leader is stopping or failed; another one will be elected.
                Attempt::Failed(why @ StoreError::Forward { .. }) => {
                    Attempt::Retry { next: None, why }
                }
                other => other,
            },
            Ok(Err(status)) => match status.code() {
                tonic::Code::DeadlineExceeded => too_late(),
                // Not reached: safe to retry. A write that reached the leader may have been
                // applied, and applying it twice is not harmless (a delete would report
                // "not found"), so other failures are returned.
                tonic::Code::Unavailable => Attempt::Retry {
                    next: None,
                    why: forward_error(status.to_string()),
                },
                _ => Attempt::Failed(forward_error(status.to_string())),
            },
        }
    }

    /// The leader and its address, waiting (until `deadline`) while there is none.
    async fn wait_for_leader(
        &self,
        metrics: &mut watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
        deadline: Instant,
    ) -> Result<(NodeId, String), StoreError> {
        let found = timeout_at(
            deadline,
            metrics.wait_for(|m| leader_of(m).is_some() || m.running_state.is_err()),
        )
        .await;
        match found {
            Err(_) => Err(StoreError::NoLeader),
            Ok(Err(_)) => Err(StoreError::Fatal("Raft has stopped".into())),
            Ok(Ok(m)) => match &m.running_state {
                Err(fatal) => Err(StoreError::Fatal(fatal.to_string())),
                Ok(()) => leader_of(&m).ok_or(StoreError::NoLeader),
            },
        }
    }

    /// Resolves once a probe finds a majority of the voters unreachable; never otherwise.
    async fn quorum_lost(&self) -> StoreError {
        tokio::time::sleep(QUORUM_GRACE).await;
        loop {
            let seen = self.reachability().await;
            if !seen.has_quorum() {
                return StoreError::QuorumLost {
                    reachable: seen.reachable,
                    voters: seen.voters,
                };
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// How many voters (this node included) answer a status probe now. Concurrent callers
    /// share one probe.
    pub(super) async fn reachability(&self) -> Reachability {
        let mut last = self.inner.reachability.lock().await;
        if let Some((at, seen)) = *last {
            if at.elapsed() < PROBE_EVERY {
                return seen;
            }
        }
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let peers: Vec<String> = membership
            .voter_ids()
            .filter(|id| *id != self.inner.node_id)
            .filter_map(|id| membership.get_node(&id).map(|n| n.addr.clone()))
            .collect();
        let voters = membership.voter_ids().count();
        let me = usize::from(membership.voter_ids().any(|id| id == self.inner.node_id));
        let probes = peers.iter().map(|addr| {
            peer::call(
                &self.inner.connections,
                addr,
                &PeerRequest::Status,
                PROBE_TIMEOUT,
            )
        });
        let answered = futures::future::join_all(probes)
            .await
            .into_iter()
            .filter(|answer| matches!(answer, Ok(Ok(_))))
            .count();
        let seen = Reachability {
            reachable: me + answered,
            voters,
        };
        debug!(?seen, "probed the voters");
        *last = Some((Instant::now(), seen));
        seen
    }
}

/// A write's result at the leader as a retry decision; `failed` words other Raft errors.
fn write_attempt(
    result: ClientWriteResult,
    failed: impl FnOnce(RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> StoreError,
) -> Attempt<CommandResponse> {
    match result {
        Ok(response) => Attempt::Done(response.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => Attempt::Retry {
            next: forward_target(&to),
            why: StoreError::NoLeader,
        },
        Err(e) => Attempt::Failed(failed(e)),
    }
}

fn peer_attempt(answer: PeerResult) -> Attempt<PeerAnswer> {
    match answer {
        Ok(answer) => Attempt::Done(answer),
        Err(PeerError::NotLeader { leader }) => Attempt::Retry {
            next: leader,
            why: StoreError::NoLeader,
        },
        Err(PeerError::Failed { detail }) => Attempt::Failed(StoreError::Unavailable(detail)),
    }
}

fn forward_target(to: &ForwardToLeader<NodeId, BasicNode>) -> Option<(NodeId, String)> {
    Some((to.leader_id?, to.leader_node.as_ref()?.addr.clone()))
}
