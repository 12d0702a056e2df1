//! Requests between federators other than Raft's own messages and forwarded writes: the
//! leader's read index, membership changes a follower hands to the leader, a node's status,
//! and agent soft state relayed to the leader (DESIGN.md §2). They travel as JSON over the
//! Raft service's `Peer` RPC, on the peer port, with mutual TLS like everything else.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tonic::Request;

use hansa_proto::v1::RaftPayload;

use super::network::Connections;
use super::state_machine::Shared;
use super::{NodeId, TypeConfig};

/// A request one federator makes of another.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum PeerRequest {
    /// The log index a linearizable read must wait for, confirmed by a quorum.
    ReadIndex,
    /// A membership change; only the leader makes it.
    Membership { change: MembershipChange },
    /// The answering node's view of itself.
    Status,
    /// Agent soft state received by a follower, for the leader's controllers; answered with
    /// the leader's view of the other clusters, for the follower's own views.
    Relay {
        from: NodeId,
        report: serde_json::Value,
    },
    /// Peer mode: an anti-entropy exchange with the gossip layer (any node answers).
    Gossip { request: serde_json::Value },
}

/// A change to the Raft group, through joint consensus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MembershipChange {
    /// Adds a non-voting member and waits until it has caught up with the leader.
    AddLearner { id: NodeId, addr: String },
    /// Makes learners voters.
    Promote { ids: Vec<NodeId> },
    /// Removes members, voters or learners.
    Remove { ids: Vec<NodeId> },
}

/// One node's view of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    /// leader | follower | learner | candidate | shutdown
    pub role: String,
    pub term: u64,
    pub last_applied: u64,
    pub last_log_index: u64,
    pub current_leader: Option<NodeId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum PeerAnswer {
    ReadIndex {
        index: u64,
    },
    Done,
    /// The leader's soft state of every cluster but the relaying follower's own.
    Relayed {
        view: serde_json::Value,
    },
    Status {
        status: NodeStatus,
    },
    Gossip {
        answer: serde_json::Value,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "type")]
pub(crate) enum PeerError {
    /// Ask the leader instead (its id and peer URL, when known).
    #[error("not the leader")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("{detail}")]
    Failed { detail: String },
}

pub(crate) type PeerResult = Result<PeerAnswer, PeerError>;

/// Receives agent soft state relayed by followers and answers with the leader's view (set by
/// the federator).
pub type RelayHandler = Arc<dyn Fn(NodeId, serde_json::Value) -> serde_json::Value + Send + Sync>;

/// Answers other peers' anti-entropy requests (set by peer mode).
pub type GossipHandler =
    Arc<dyn Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync>;

/// What the `Peer` RPC needs on the answering node.
pub(crate) struct Local {
    pub(crate) raft: openraft::Raft<TypeConfig>,
    pub(crate) shared: Shared,
    pub(crate) relay: RwLock<Option<RelayHandler>>,
    pub(crate) gossip: RwLock<Option<GossipHandler>>,
    /// How long the leader waits for a quorum to confirm its read index.
    pub(crate) read_timeout: Duration,
    /// Writes proposed here, this node's own and those forwarded to it, batched.
    pub(crate) proposer: super::batch::Proposer,
}

impl Local {
    pub(crate) async fn answer(&self, request: PeerRequest) -> PeerResult {
        match request {
            PeerRequest::ReadIndex => self.read_index().await,
            PeerRequest::Membership { change } => self.change_membership(change).await,
            PeerRequest::Status => Ok(PeerAnswer::Status {
                status: self.status(),
            }),
            PeerRequest::Relay { from, report } => {
                if self.raft.metrics().borrow().state != ServerState::Leader {
                    return Err(self.not_leader());
                }
                let handler = self
                    .relay
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let view = match handler {
                    Some(handler) => handler(from, report),
                    None => serde_json::Value::Null,
                };
                Ok(PeerAnswer::Relayed { view })
            }
            PeerRequest::Gossip { request } => {
                let handler = self
                    .gossip
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                match handler {
                    Some(handler) => handler(request)
                        .map(|answer| PeerAnswer::Gossip { answer })
                        .map_err(|detail| PeerError::Failed { detail }),
                    None => Err(PeerError::Failed {
                        detail: "this federator is not in peer mode".into(),
                    }),
                }
            }
        }
    }

    pub(crate) fn not_leader(&self) -> PeerError {
        let metrics = self.raft.metrics().borrow().clone();
        PeerError::NotLeader {
            leader: super::leader_of(&metrics),
        }
    }

    /// The leader's read index: confirmed with a quorum, and applied here.
    pub(crate) async fn read_index(&self) -> PeerResult {
        let confirmed = tokio::time::timeout(self.read_timeout, self.raft.ensure_linearizable())
            .await
            .map_err(|_| PeerError::Failed {
                detail: format!(
                    "no quorum: a majority of federators did not confirm this leader within {:?}",
                    self.read_timeout
                ),
            })?;
        match confirmed {
            Ok(index) => Ok(PeerAnswer::ReadIndex {
                index: index.map(|l| l.index).unwrap_or(0),
            }),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
                Err(PeerError::NotLeader {
                    leader: to.leader_id.zip(to.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => Err(PeerError::Failed {
                detail: format!("no quorum: {e}"),
            }),
        }
    }

    pub(crate) async fn change_membership(&self, change: MembershipChange) -> PeerResult {
        let result = match change {
            MembershipChange::AddLearner { id, addr } => {
                self.raft.add_learner(id, BasicNode::new(addr), true).await
            }
            MembershipChange::Promote { ids } => {
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(ids.into_iter().collect()), false)
                    .await
            }
            MembershipChange::Remove { ids } => {
                let ids: BTreeSet<NodeId> = ids.into_iter().collect();
                let voters: BTreeSet<NodeId> = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                // Voters leave through joint consensus (`retain = false` drops them entirely);
                // learners need no consensus round.
                let (voting, learning): (BTreeSet<NodeId>, BTreeSet<NodeId>) =
                    ids.into_iter().partition(|id| voters.contains(id));
                if voting.is_empty() {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(learning), false)
                        .await
                } else {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(voting), false)
                        .await
                }
            }
        };
        match result {
            Ok(_) => Ok(PeerAnswer::Done),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                Err(PeerError::NotLeader {
                    leader: to.leader_id.zip(to.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => Err(PeerError::Failed {
                detail: e.to_string(),
            }),
        }
    }

    pub(crate) fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let is_voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == m.id);
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Follower if is_voter => "follower",
            ServerState::Follower | ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        NodeStatus {
            id: m.id,
            role: role.into(),
            term: m.current_term,
            last_applied: *self.shared.applied_index.borrow(),
            last_log_index: m.last_log_index.unwrap_or(0),
            current_leader: m.current_leader,
        }
    }
}

/// Sends `request` to the federator whose peer URL is `addr`.
pub(crate) async fn call(
    connections: &Connections,
    addr: &str,
    request: &PeerRequest,
    timeout: Duration,
) -> Result<PeerResult, tonic::Status> {
    let json =
        serde_json::to_vec(request).map_err(|e| tonic::Status::internal(format!("encode: {e}")))?;
    let mut client = connections
        .client(addr)
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = Request::new(RaftPayload { json });
    request.set_timeout(timeout);
    let payload = tokio::time::timeout(timeout, client.peer(request))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded(format!("{addr} did not answer in time")))??
        .into_inner();
    serde_json::from_slice(&payload.json)
        .map_err(|e| tonic::Status::internal(format!("{addr}'s answer does not decode: {e}")))
}
