//! Raft between federators over gRPC (`hansa.v1.Raft`), mutual TLS only.
//!
//! Every message is one of openraft's request or response types as JSON in a `RaftPayload`.
//! A response carries the whole `Result`, so a Raft-level error on the remote node (a higher
//! vote, "forward to the leader") arrives as a `RemoteError`, while transport failures become
//! `Unreachable` (openraft backs off) or `NetworkError` (openraft retries).

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hansa_proto::v1::raft_client::RaftClient;
use hansa_proto::v1::raft_server::{Raft as RaftService, RaftServer};
use hansa_proto::v1::{RaftFrame, RaftFrameKind, RaftPayload};
use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::debug;

use super::peer::{Local, PeerRequest};
use super::pipe::{self, Pipe};
use super::state::Command;
use super::{NodeId, TypeConfig};

/// Large enough for a snapshot chunk or a batch of entries as JSON.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// A peer that does not even accept a connection within this is treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The leader's answer to a forwarded write.
pub(crate) type ClientWriteResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;

/// Decides whether a caller of the Raft service may call it (the lead passes a check that the
/// peer certificate is a federator's).
pub type Authorize =
    Arc<dyn Fn(&Request<RaftPayload>) -> Result<(), Status> + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
#[error("peer address {addr:?}: {detail}")]
pub(crate) struct AddressError {
    addr: String,
    detail: String,
}

/// One lazily connecting, TLS-only channel per peer address, shared by replication and
/// write forwarding, and on it a [`Pipe`] for AppendEntries and forwarded writes.
pub(crate) struct Connections {
    tls: ClientTlsConfig,
    channels: Mutex<HashMap<String, Channel>>,
    /// Per address: the open pipe, behind a lock held while one is being opened (so a dead
    /// peer's connection attempt holds up calls to that peer only).
    pipes: Mutex<HashMap<String, PipeSlot>>,
}

type PipeSlot = Arc<tokio::sync::Mutex<Option<Arc<Pipe>>>>;

impl Connections {
    pub(crate) fn new(tls: ClientTlsConfig) -> Connections {
        Connections {
            tls,
            channels: Mutex::new(HashMap::new()),
            pipes: Mutex::new(HashMap::new()),
        }
    }

    /// Sends a request over the pipe to `addr`, opening one when there is none.
    pub(crate) async fn pipe_call(
        &self,
        addr: &str,
        kind: RaftFrameKind,
        json: Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        let slot = self
            .pipes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(addr.to_string())
            .or_default()
            .clone();
        let pipe = {
            let mut slot = slot.lock().await;
            match slot.as_ref().filter(|p| p.is_open()) {
                Some(pipe) => pipe.clone(),
                None => {
                    let client = self
                        .client(addr)
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                    let pipe = Arc::new(Pipe::open(client).await?);
                    *slot = Some(pipe.clone());
                    pipe
                }
            }
        };
        pipe.call(kind, json).await
    }

    pub(crate) fn client(&self, addr: &str) -> Result<RaftClient<Channel>, AddressError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let channel = self.connect_lazy(addr)?;
                channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    fn connect_lazy(&self, addr: &str) -> Result<Channel, AddressError> {
        let error = |detail: String| AddressError {
            addr: addr.to_string(),
            detail,
        };
        // tonic silently skips TLS for http:// even with a TLS config; every peer link is mTLS.
        if !addr.starts_with("https://") {
            return Err(error(
                "must be an https:// URL (peer links are mutual TLS)".into(),
            ));
        }
        let endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| error(e.to_string()))?
            .tls_config(self.tls.clone())
            .map_err(|e| error(format!("TLS settings: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        Ok(endpoint.connect_lazy())
    }
}

/// Creates a `PeerConnection` per Raft target.
pub struct NetworkFactory {
    pub(crate) node_id: NodeId,
    pub(crate) connections: Arc<Connections>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            node_id: self.node_id,
            target,
            node: node.clone(),
            connections: self.connections.clone(),
        }
    }
}

/// The Raft client side towards one peer.
pub struct PeerConnection {
    node_id: NodeId,
    target: NodeId,
    node: BasicNode,
    connections: Arc<Connections>,
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        kind: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let json = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .connections
            .client(&self.node.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let ttl = option.hard_ttl();
        let connections = &self.connections;
        let addr = &self.node.addr;
        let call = async move {
            let mut request = Request::new(RaftPayload { json });
            request.set_timeout(ttl);
            match kind {
                RPCTypes::AppendEntries => connections
                    .pipe_call(
                        addr,
                        RaftFrameKind::AppendEntries,
                        request.into_inner().json,
                    )
                    .await
                    .map(|json| Response::new(RaftPayload { json })),
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let timeout = || {
            RPCError::Timeout(Timeout {
                action: kind,
                id: self.node_id,
                target: self.target,
                timeout: ttl,
            })
        };
        let payload = match tokio::time::timeout(ttl, call).await {
            Err(_) => return Err(timeout()),
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                debug!(target_node = self.target, addr = %self.node.addr, rpc = %kind, %status, "Raft RPC failed");
                return Err(match status.code() {
                    Code::DeadlineExceeded => timeout(),
                    // Down, refusing us, or not speaking our protocol: back off before retrying.
                    Code::Unavailable
                    | Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::Unimplemented => RPCError::Unreachable(Unreachable::new(&status)),
                    _ => RPCError::Network(NetworkError::new(&status)),
                });
            }
        };
        let result: Result<Resp, E> = serde_json::from_slice(&payload.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RPCTypes::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RPCTypes::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, &rpc, &option).await
    }

    /// 100 ms doubling up to 2 s: a restarting peer is retried quickly, a dead one rarely.
    fn backoff(&self) -> Backoff {
        Backoff::new(
            (0u32..).map(|attempt| Duration::from_millis((100u64 << attempt.min(5)).min(2000))),
        )
    }
}

/// Sends a write to the leader at `addr` over the pipe to it; the caller bounds the wait.
pub(crate) async fn forward_client_write(
    connections: &Connections,
    addr: &str,
    cmd: &Command,
) -> Result<ClientWriteResult, Status> {
    let json = serde_json::to_vec(cmd).map_err(|e| Status::internal(format!("encode: {e}")))?;
    let answer = connections
        .pipe_call(addr, RaftFrameKind::ClientWrite, json)
        .await?;
    serde_json::from_slice(&answer)
        .map_err(|e| Status::internal(format!("the leader's answer does not decode: {e}")))
}

/// The server side of `hansa.v1.Raft`: hands peers' messages to the local Raft node.
pub struct RaftGrpc {
    raft: openraft::Raft<TypeConfig>,
    local: Arc<Local>,
    authorize: Authorize,
    /// Ends the long-lived pipes, which the server would otherwise wait for when it stops.
    stop: CancellationToken,
}

impl RaftGrpc {
    pub(crate) fn new(
        raft: openraft::Raft<TypeConfig>,
        local: Arc<Local>,
        authorize: Authorize,
        stop: CancellationToken,
    ) -> RaftGrpc {
        RaftGrpc {
            raft,
            local,
            authorize,
            stop,
        }
    }

    pub(crate) fn server(self) -> RaftServer<RaftGrpc> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn accept<T: DeserializeOwned>(&self, request: &Request<RaftPayload>) -> Result<T, Status> {
        (self.authorize)(request)?;
        serde_json::from_slice(&request.get_ref().json)
            .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))
    }
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let json = serde_json::to_vec(value).map_err(|e| Status::internal(format!("encode: {e}")))?;
    Ok(Response::new(RaftPayload { json }))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.accept(&request)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = self.accept(&request)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = self.accept(&request)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn client_write(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let cmd: Command = self.accept(&request)?;
        let result: ClientWriteResult = self.local.proposer.write(cmd).await;
        reply(&result)
    }

    async fn peer(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let peer_request: PeerRequest = self.accept(&request)?;
        reply(&self.local.answer(peer_request).await)
    }

    type PipeStream = tokio_stream::wrappers::ReceiverStream<Result<RaftFrame, Status>>;

    async fn pipe(
        &self,
        request: Request<Streaming<RaftFrame>>,
    ) -> Result<Response<Self::PipeStream>, Status> {
        // The same check as every other call, on the stream's connection.
        let mut credentials = Request::new(RaftPayload::default());
        *credentials.extensions_mut() = request.extensions().clone();
        (self.authorize)(&credentials)?;
        Ok(Response::new(pipe::serve(
            self.raft.clone(),
            self.local.clone(),
            request.into_inner(),
            self.stop.clone(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plaintext_peer_addresses_are_refused() {
        let connections = Connections::new(ClientTlsConfig::new());
        let err = connections.client("http://127.0.0.1:7001").unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        assert!(connections.client("https://127.0.0.1:7001").is_ok());
    }

    fn connection_to(addr: String) -> PeerConnection {
        PeerConnection {
            node_id: 1,
            target: 2,
            node: BasicNode::new(addr),
            connections: Arc::new(Connections::new(ClientTlsConfig::new())),
        }
    }

    fn vote() -> VoteRequest<NodeId> {
        VoteRequest::new(openraft::Vote::new(1, 1), None)
    }

    /// No TLS session is ever established here: the port is closed, or the peer never answers
    /// the handshake.
    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut peer = connection_to(format!("https://127.0.0.1:{port}"));
        let err = peer
            .vote(vote(), RPCOption::new(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let mut peer = connection_to(format!("https://{addr}"));
        let ttl = Duration::from_millis(300);
        let err = peer.vote(vote(), RPCOption::new(ttl)).await.unwrap_err();
        assert!(
            matches!(&err, RPCError::Timeout(t) if t.timeout == ttl && t.target == 2),
            "{err:?}"
        );
        held.abort();
    }

    #[tokio::test]
    async fn a_plaintext_address_is_unreachable_without_dialling() {
        let mut peer = connection_to("http://127.0.0.1:1".into());
        let err = peer
            .vote(vote(), RPCOption::new(Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RPCError::Unreachable(_)) && err.to_string().contains("https://"),
            "{err}"
        );
    }

    #[test]
    fn backoff_grows_to_two_seconds() {
        let connection = connection_to("https://127.0.0.1:1".into());
        let delays: Vec<Duration> = connection.backoff().take(8).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[3], Duration::from_millis(800));
        assert_eq!(delays[7], Duration::from_secs(2));
    }
}
