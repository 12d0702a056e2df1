//! Group commit on the leader: writes that arrive while earlier ones are in flight are proposed
//! together as one `Command::Batch` log entry.
//!
//! openraft 0.9 appends (and fsyncs) each `client_write` as its own log write, one after the
//! other, so concurrent writers would each pay a whole fsync round. Here at most
//! `MAX_IN_FLIGHT` entries are in flight; whatever queues behind them goes out together. A
//! lone writer never waits: with a free slot and nothing queued, it proposes its command
//! itself, unwrapped, with no hand-off to the batching task.
//!
//! (Followers do not batch the writes they forward: on the pipe to the leader each is one
//! frame, and a batching stage there cost more than it saved, measured with 64 clients.)

// openraft's write error is large; it is what `Raft::client_write` returns, moved once.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use openraft::error::{Fatal, RaftError};
use openraft::raft::ClientWriteResponse;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::network::ClientWriteResult;
use super::state::{Command, CommandResponse};
use super::TypeConfig;

/// Batches sent but not yet answered; more writers than this share batches. Each batch is a
/// log entry, a write and fsync on every federator, and a message to each follower, so under
/// load fewer, larger batches cost less per write: with 64 clients 2 gave 8% more writes/s
/// than 4 (at the same latency), while 1 would queue a lone writer behind a controller's
/// write.
const MAX_IN_FLIGHT: usize = 2;
/// Commands in one batch: keeps an entry (and a replication message of many entries) far
/// below the gRPC message limit.
const MAX_BATCH: usize = 64;

/// The answer to each of `n` commands proposed together as one `Command::Batch` (or, when
/// `n` is 1, as it was: its answer is its own, even when it is itself a batch).
fn split(answer: ClientWriteResult, n: usize) -> Vec<ClientWriteResult> {
    if n == 1 {
        return vec![answer];
    }
    match answer {
        Ok(response) => {
            let responses = match response.data {
                CommandResponse::Batch(responses) => responses,
                other => vec![other],
            };
            let mut responses = responses.into_iter();
            (0..n)
                .map(|_| {
                    let data = responses.next().unwrap_or_else(|| {
                        CommandResponse::Ignored(
                            "the batch's response has no entry for this".into(),
                        )
                    });
                    Ok(ClientWriteResponse {
                        log_id: response.log_id,
                        data,
                        membership: None,
                    })
                })
                .collect()
        }
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
    }
}

fn stopped() -> ClientWriteResult {
    Err(RaftError::Fatal(Fatal::Stopped))
}

struct Pending {
    command: Command,
    done: oneshot::Sender<ClientWriteResult>,
}

type Sender = Arc<dyn Fn(Command) -> BoxFuture<'static, ClientWriteResult> + Send + Sync>;

/// Proposes commands, batching concurrent ones: like `Raft::client_write`, "forward to the
/// leader" when this node does not lead.
#[derive(Clone)]
pub(crate) struct Proposer {
    send: Sender,
    slots: Arc<Semaphore>,
    /// Commands queued and not yet taken into a batch.
    queued: Arc<AtomicUsize>,
    queue: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Proposes to the local Raft node.
    pub(crate) fn local(raft: openraft::Raft<TypeConfig>) -> Proposer {
        Proposer::start(move |command| {
            let raft = raft.clone();
            async move { raft.client_write(command.into()).await }
        })
    }

    /// Proposes through `send`; starts the batching task, which ends with the last handle.
    fn start<S, F>(send: S) -> Proposer
    where
        S: Fn(Command) -> F + Send + Sync + 'static,
        F: Future<Output = ClientWriteResult> + Send + 'static,
    {
        let send: Sender = Arc::new(move |command| send(command).boxed());
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let queued = Arc::new(AtomicUsize::new(0));
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(send.clone(), slots.clone(), queued.clone(), pending));
        Proposer {
            send,
            slots,
            queued,
            queue,
        }
    }

    /// Proposes `command` (with whatever else is waiting) and waits for its answer.
    pub(crate) async fn write(&self, command: Command) -> ClientWriteResult {
        // Nothing waiting and room in flight: send it from here, with no hand-off to the
        // batching task (a hop that costs a lone writer more than the batching saves it).
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                let answer = (self.send)(command).await;
                drop(slot);
                return answer;
            }
        }
        let (done, answer) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(Pending { command, done }).is_err() {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
    }
}

/// Takes what queued up behind the writes in flight, as batches, whenever a slot frees.
async fn run(
    send: Sender,
    slots: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
) {
    loop {
        let Some(first) = pending.recv().await else {
            return;
        };
        // Wait for a slot with the first command in hand: meanwhile others queue behind it.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        let (mut commands, waiters): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.done)).unzip();
        let sent = if commands.len() == 1 {
            send(commands.remove(0))
        } else {
            send(Command::Batch { commands })
        };
        tokio::spawn(async move {
            let answers = split(sent.await, waiters.len());
            for (done, answer) in waiters.into_iter().zip(answers) {
                let _ = done.send(answer);
            }
            drop(slot);
        });
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

    /// Writers that queue behind the ones in flight share one batch, and each hears its own
    /// command's answer; a lone writer's command goes out as it is.
    #[tokio::test]
    async fn queued_writes_go_out_together_and_each_gets_its_answer() {
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sent.clone();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let open = gate.clone();
        let batcher = Proposer::start(move |command: Command| {
            let seen = seen.clone();
            let gate = gate.clone();
            async move {
                let _pass = gate.acquire().await;
                let mut state = super::super::state::FederationState::default();
                let data = state.apply(&command);
                seen.lock().unwrap().push(command);
                Ok(ClientWriteResponse {
                    log_id: Default::default(),
                    data,
                    membership: None,
                })
            }
        });
        let delete = |name: &str| Command::DeleteWorkload {
            key: hansa_core::WorkloadKey::new("default", name),
        };
        // Four single writes fill the slots (held at the gate); ten more queue behind them.
        let mut writes = Vec::new();
        for i in 0..14 {
            let batcher = batcher.clone();
            let command = delete(&format!("w{i}"));
            writes.push(tokio::spawn(async move { batcher.write(command).await }));
            tokio::task::yield_now().await;
        }
        open.add_permits(100);
        for write in writes {
            let answer = write.await.unwrap().unwrap();
            assert_eq!(answer.data, CommandResponse::Deleted(false));
        }
        let sent = sent.lock().unwrap();
        assert!(sent.len() < 14, "nothing was batched: {} sends", sent.len());
        assert!(sent
            .iter()
            .any(|c| matches!(c, Command::DeleteWorkload { .. })));
        assert!(sent.iter().any(|c| matches!(c, Command::Batch { .. })));
    }

    /// A batch that queues and goes out alone (a follower's forwarded batch reaching the
    /// leader's batcher) gets its whole answer back, not its first part.
    #[tokio::test]
    async fn a_lone_batch_keeps_its_whole_answer() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let open = gate.clone();
        let batcher = Proposer::start(move |command: Command| {
            let gate = gate.clone();
            async move {
                let _pass = gate.acquire().await;
                let mut state = super::super::state::FederationState::default();
                Ok(ClientWriteResponse {
                    log_id: Default::default(),
                    data: state.apply(&command),
                    membership: None,
                })
            }
        });
        let delete = Command::DeleteWorkload {
            key: hansa_core::WorkloadKey::new("default", "gone"),
        };
        // Every slot taken, so the batch queues.
        let mut held = Vec::new();
        for _ in 0..MAX_IN_FLIGHT {
            let batcher = batcher.clone();
            let delete = delete.clone();
            held.push(tokio::spawn(async move { batcher.write(delete).await }));
            tokio::task::yield_now().await;
        }
        let lone = {
            let batcher = batcher.clone();
            let commands = vec![delete.clone(), delete];
            tokio::spawn(async move { batcher.write(Command::Batch { commands }).await })
        };
        tokio::task::yield_now().await;
        open.add_permits(100);
        let answer = lone.await.unwrap().unwrap();
        assert_eq!(
            answer.data,
            CommandResponse::Batch(vec![CommandResponse::Deleted(false); 2])
        );
        for write in held {
            write.await.unwrap().unwrap();
        }
    }
}
