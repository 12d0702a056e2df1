//! Group commit on the leader: writes that arrive while earlier ones are in flight are proposed
//! together as one `Command::Batch` log entry.
//!
//! openraft 0.9 appends (and fsyncs) each `client_write` as its own log write, one after the
//! other, so concurrent writers would each pay a whole fsync round. Here at most
//! `MAX_IN_FLIGHT` entries are in flight; whatever queues behind them goes out together. A lone
//! writer never waits: with a free slot its command is proposed at once, unwrapped.

use std::sync::Arc;

use openraft::error::{Fatal, RaftError};
use openraft::raft::ClientWriteResponse;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::network::ClientWriteResult;
use super::state::{Command, CommandResponse};
use super::TypeConfig;

/// Log entries proposed but not yet applied; more writers than this share entries.
const MAX_IN_FLIGHT: usize = 4;
/// Commands in one batch entry: keeps an entry (and a replication message of many entries)
/// far below the gRPC message limit.
const MAX_BATCH: usize = 64;

struct Pending {
    command: Command,
    done: oneshot::Sender<ClientWriteResult>,
}

/// Proposes commands to the local Raft node, batching concurrent ones.
#[derive(Clone)]
pub(crate) struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Starts the batching task; it ends when the last `Proposer` is dropped.
    pub(crate) fn start(raft: openraft::Raft<TypeConfig>) -> Proposer {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, pending));
        Proposer { queue }
    }

    /// Like `Raft::client_write`: "forward to the leader" when this node does not lead.
    pub(crate) async fn write(&self, command: Command) -> ClientWriteResult {
        let (done, result) = oneshot::channel();
        if self.queue.send(Pending { command, done }).is_err() {
            return Err(RaftError::Fatal(Fatal::Stopped));
        }
        result
            .await
            .unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
    }
}

async fn run(raft: openraft::Raft<TypeConfig>, mut pending: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        // Take a slot first: while none is free, writes queue up and leave together.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = pending.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch).await;
            drop(slot);
        });
    }
}

async fn propose(raft: &openraft::Raft<TypeConfig>, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let Pending { command, done } = batch.remove(0);
        let _ = done.send(raft.client_write(command).await);
        return;
    }
    let (commands, waiters): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.done)).unzip();
    match raft.client_write(Command::Batch { commands }).await {
        Ok(response) => {
            let responses = match response.data {
                CommandResponse::Batch(responses) => responses,
                other => vec![other],
            };
            let mut responses = responses.into_iter();
            for done in waiters {
                let data = responses.next().unwrap_or_else(|| {
                    CommandResponse::Ignored("the batch's response has no entry for this".into())
                });
                let _ = done.send(Ok(ClientWriteResponse {
                    log_id: response.log_id,
                    data,
                    membership: None,
                }));
            }
        }
        Err(e) => {
            for done in waiters {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_applies_like_its_commands_one_by_one() {
        use super::super::state::FederationState;
        let key = hansa_core::WorkloadKey::new("default", "gone");
        let commands = vec![
            Command::DeleteWorkload { key: key.clone() },
            Command::DeleteWorkload { key },
        ];
        let mut one_by_one = FederationState::default();
        let expected: Vec<CommandResponse> = commands.iter().map(|c| one_by_one.apply(c)).collect();
        let mut batched = FederationState::default();
        let response = batched.apply(&Command::Batch { commands });
        assert_eq!(response, CommandResponse::Batch(expected));
        assert_eq!(batched, one_by_one);
    }
}
