//! Raft's busiest messages between two federators over one long-lived stream
//! (`hansa.v1.Raft/Pipe`): AppendEntries from a leader, client writes forwarded to it.
//!
//! A unary gRPC call opens an HTTP/2 stream with headers both ways, trailers, and a task on
//! the server; for the small messages Raft sends per write that is most of their cost (twice
//! the CPU of a frame on an open stream, measured on loopback with mutual TLS). Here each
//! request is a frame with an id, answered by a frame with the same id, and many may be in
//! flight. The JSON inside is what the unary calls carry, and they remain for the rest (votes,
//! snapshots, peer requests).
//!
//! A request whose answer never came because the stream broke may have been carried out: the
//! caller hears `Unknown`, not `Unavailable`, so a forwarded write is not sent twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hansa_proto::v1::raft_client::RaftClient;
use hansa_proto::v1::{RaftFrame, RaftFrameKind};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::network::ClientWriteResult;
use super::peer::Local;
use super::state::Command;
use super::TypeConfig;

/// Frames queued for a stream before callers wait.
const QUEUE: usize = 1024;

type Answer = Result<Vec<u8>, Status>;

/// The caller's side of one stream.
pub(crate) struct Pipe {
    /// Feeds the request stream; dropping the pipe ends it, and the stream with it.
    requests: mpsc::Sender<RaftFrame>,
    waiting: Arc<Waiting>,
    next_id: AtomicU64,
}

/// The requests in flight, shared with the task that reads the answers.
#[derive(Default)]
struct Waiting {
    calls: Mutex<Calls>,
}

#[derive(Default)]
struct Calls {
    by_id: HashMap<u64, oneshot::Sender<Answer>>,
    /// The answer stream ended: no more answers will come.
    closed: bool,
}

impl Waiting {
    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the pipe: every caller still waiting hears that its answer is lost.
    fn close(&self, why: &str) {
        let mut calls = self.calls();
        calls.closed = true;
        for (_, caller) in calls.by_id.drain() {
            let _ = caller.send(Err(Status::unknown(format!(
                "the stream to the peer broke before it answered ({why}); the request may have been carried out"
            ))));
        }
    }
}

/// Removes a call's entry when the caller stops waiting (a timeout), answered or not.
struct Forget<'a> {
    waiting: &'a Waiting,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiting.calls().by_id.remove(&self.id);
    }
}

impl Pipe {
    /// Opens the stream on `client`'s connection.
    pub(crate) async fn open(mut client: RaftClient<Channel>) -> Result<Pipe, Status> {
        let (requests, queued) = mpsc::channel(QUEUE);
        let mut answers = client.pipe(ReceiverStream::new(queued)).await?.into_inner();
        let waiting = Arc::new(Waiting::default());
        let reader = waiting.clone();
        tokio::spawn(async move {
            loop {
                match answers.message().await {
                    Ok(Some(frame)) => {
                        let caller = reader.calls().by_id.remove(&frame.id);
                        if let Some(caller) = caller {
                            let answer = if frame.error.is_empty() {
                                Ok(frame.json)
                            } else {
                                Err(Status::invalid_argument(frame.error))
                            };
                            let _ = caller.send(answer);
                        }
                    }
                    Ok(None) => return reader.close("the peer ended it"),
                    Err(status) => return reader.close(status.message()),
                }
            }
        });
        Ok(Pipe {
            requests,
            waiting,
            next_id: AtomicU64::new(1),
        })
    }

    /// False once the stream has ended: open another.
    pub(crate) fn is_open(&self) -> bool {
        !self.waiting.calls().closed && !self.requests.is_closed()
    }

    /// Sends one request and waits for its answer (the caller bounds the wait).
    pub(crate) async fn call(&self, kind: RaftFrameKind, json: Vec<u8>) -> Answer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut calls = self.waiting.calls();
            if calls.closed {
                return Err(Status::unavailable("the stream to the peer has ended"));
            }
            calls.by_id.insert(id, answer);
        }
        let _forget = Forget {
            waiting: &self.waiting,
            id,
        };
        let frame = RaftFrame {
            id,
            kind: kind.into(),
            json,
            error: String::new(),
        };
        if self.requests.send(frame).await.is_err() {
            return Err(Status::unavailable("the stream to the peer has ended"));
        }
        answered.await.unwrap_or_else(|_| {
            Err(Status::unknown(
                "the stream to the peer broke before it answered; the request may have been carried out",
            ))
        })
    }
}

/// The peer's side: carries out each request frame and answers it on the returned stream.
/// AppendEntries are handled in the order they arrive (a leader sends one at a time to each
/// follower); forwarded writes concurrently. Ends with the request stream, or at `stop`.
pub(crate) fn serve(
    raft: openraft::Raft<TypeConfig>,
    local: Arc<Local>,
    mut inbound: Streaming<RaftFrame>,
    stop: CancellationToken,
) -> ReceiverStream<Result<RaftFrame, Status>> {
    let (answers, stream) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                frame = inbound.message() => frame,
                () = stop.cancelled() => return,
            };
            let Ok(Some(frame)) = frame else {
                return;
            };
            let id = frame.id;
            match RaftFrameKind::try_from(frame.kind) {
                Ok(RaftFrameKind::AppendEntries) => {
                    let result = match serde_json::from_slice(&frame.json) {
                        Ok(rpc) => tokio::select! {
                            appended = raft.append_entries(rpc) => encode(&appended),
                            () = stop.cancelled() => return,
                        },
                        Err(e) => Err(format!("malformed AppendEntries: {e}")),
                    };
                    if answers.send(Ok(answer(id, result))).await.is_err() {
                        return;
                    }
                }
                Ok(RaftFrameKind::ClientWrite) => {
                    let command: Result<Command, _> = serde_json::from_slice(&frame.json);
                    let local = local.clone();
                    let answers = answers.clone();
                    let stop = stop.clone();
                    // Ends at `stop` too: the server waits for this stream when it shuts down.
                    tokio::spawn(async move {
                        let result = match command {
                            Ok(command) => {
                                let written: ClientWriteResult = tokio::select! {
                                    written = local.proposer.write(command) => written,
                                    () = stop.cancelled() => return,
                                };
                                encode(&written)
                            }
                            Err(e) => Err(format!("malformed client write: {e}")),
                        };
                        let _ = answers.send(Ok(answer(id, result))).await;
                    });
                }
                Ok(RaftFrameKind::Answer) | Err(_) => {
                    let kind = frame.kind;
                    if answers
                        .send(Ok(answer(
                            id,
                            Err(format!("not a request frame (kind {kind})")),
                        )))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    ReceiverStream::new(stream)
}

/// The answer frame to request `id`.
fn answer(id: u64, result: Result<Vec<u8>, String>) -> RaftFrame {
    let (json, error) = match result {
        Ok(json) => (json, String::new()),
        Err(error) => (Vec::new(), error),
    };
    RaftFrame {
        id,
        kind: RaftFrameKind::Answer.into(),
        json,
        error,
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| format!("encode the answer: {e}"))
}
