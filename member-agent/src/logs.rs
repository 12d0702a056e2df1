//! The agent's side of `hansa logs`: the federator sends a `LogRequest` down the Sync stream;
//! the agent reads the replica's output from its runtime and sends it up as `LogChunk`s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use hansa_proto::v1::{self, agent_message, AgentMessage};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::scheduler::SchedulerHandle;

/// Bytes per chunk at most, so one chunk stays far below gRPC's message limit.
const CHUNK_BYTES: usize = 64 * 1024;

/// Serves the log requests of one Sync stream; dropping it ends every request in flight.
pub struct LogServer {
    scheduler: SchedulerHandle,
    tx: mpsc::Sender<AgentMessage>,
    running: Arc<Mutex<HashMap<u64, AbortHandle>>>,
}

impl LogServer {
    pub fn new(scheduler: SchedulerHandle, tx: mpsc::Sender<AgentMessage>) -> Self {
        Self {
            scheduler,
            tx,
            running: Arc::default(),
        }
    }

    /// Starts answering `request` (or cancels the request it names).
    pub fn handle(&self, request: v1::LogRequest) {
        let id = request.id;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if request.cancel {
            if let Some(task) = running.remove(&id) {
                task.abort();
            }
            return;
        }
        let runtime = self.scheduler.runtime();
        let known = self
            .scheduler
            .statuses()
            .iter()
            .any(|s| s.id == request.replica);
        let tx = self.tx.clone();
        let done = Arc::downgrade(&self.running);
        let task = tokio::spawn(async move {
            let error = if !known {
                format!("no replica {} on this cluster", request.replica)
            } else {
                match runtime
                    .logs(&request.replica, request.follow, request.tail)
                    .await
                {
                    Err(e) => e.to_string(),
                    Ok(mut output) => {
                        let mut error = String::new();
                        while let Some(chunk) = output.next().await {
                            match chunk {
                                Ok(data) => {
                                    for piece in data.chunks(CHUNK_BYTES) {
                                        if tx
                                            .send(chunk_message(
                                                id,
                                                piece.to_vec(),
                                                false,
                                                String::new(),
                                            ))
                                            .await
                                            .is_err()
                                        {
                                            return;
                                        }
                                    }
                                }
                                Err(e) => {
                                    error = e;
                                    break;
                                }
                            }
                        }
                        error
                    }
                }
            };
            let _ = tx.send(chunk_message(id, Vec::new(), true, error)).await;
            if let Some(done) = done.upgrade() {
                done.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            }
        });
        running.insert(id, task.abort_handle());
    }
}

impl Drop for LogServer {
    fn drop(&mut self) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for task in running.values() {
            task.abort();
        }
    }
}

fn chunk_message(id: u64, data: Vec<u8>, eof: bool, error: String) -> AgentMessage {
    AgentMessage {
        kind: Some(agent_message::Kind::LogChunk(v1::LogChunk {
            id,
            data,
            eof,
            error,
        })),
    }
}
