//! The `hansa.v1.Admin` service: control-plane membership (`hansa federators`, `federator
//! --join`) and backups (`hansa snapshot save`). Users and federators only.

use std::time::Duration;

use hansa_proto::v1::admin_client::AdminClient;
use hansa_proto::v1::admin_server::{Admin, AdminServer};
use hansa_proto::v1::{
    AddFederatorRequest, AddFederatorResponse, FederatorStatus, ListFederatorsRequest,
    ListFederatorsResponse, RemoveFederatorRequest, RemoveFederatorResponse, SaveSnapshotRequest,
    SaveSnapshotResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::security::{caller, Role, TlsMaterial};
use crate::store::{MembershipChange, NodeStatus, Store};
use crate::FederatorError;

use super::ApiError;

const ADMIN_ROLES: &[Role] = &[Role::User, Role::Federator];
/// How long `ListFederators` waits for each member's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Large enough for a whole federation state in one backup message.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

pub struct AdminService {
    pub store: Store,
    pub trust_domain: String,
}

impl AdminService {
    pub fn server(self) -> AdminServer<AdminService> {
        AdminServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_federators(
        &self,
        request: Request<ListFederatorsRequest>,
    ) -> Result<Response<ListFederatorsResponse>, Status> {
        caller(&request, &self.trust_domain, ADMIN_ROLES)?;
        let own = self.store.status();
        let members = self.store.members();
        let own_ref = &own;
        let statuses = futures::future::join_all(members.iter().map(|(id, addr, _)| async move {
            if *id == own_ref.id {
                Ok(own_ref.clone())
            } else {
                self.store.peer_status(addr, STATUS_TIMEOUT).await
            }
        }))
        .await;
        let answered: Vec<&NodeStatus> = statuses.iter().filter_map(|s| s.as_ref().ok()).collect();
        let leader = answered.iter().find(|s| s.role == "leader");
        let head = leader
            .map(|l| l.last_log_index)
            .unwrap_or_else(|| answered.iter().map(|s| s.last_applied).max().unwrap_or(0));
        let federators = members
            .iter()
            .zip(&statuses)
            .map(|((id, addr, voter), status)| match status {
                Ok(s) => FederatorStatus {
                    id: *id,
                    address: addr.clone(),
                    role: s.role.clone(),
                    voter: *voter,
                    term: s.term,
                    last_applied: s.last_applied,
                    lag: head.saturating_sub(s.last_applied),
                    error: String::new(),
                },
                Err(e) => FederatorStatus {
                    id: *id,
                    address: addr.clone(),
                    role: "unreachable".into(),
                    voter: *voter,
                    error: e.clone(),
                    ..Default::default()
                },
            })
            .collect();
        Ok(Response::new(ListFederatorsResponse {
            leader_id: leader.map(|l| l.id).or(own.current_leader).unwrap_or(0),
            term: leader.map(|l| l.term).unwrap_or(own.term),
            federators,
        }))
    }

    async fn add_federator(
        &self,
        request: Request<AddFederatorRequest>,
    ) -> Result<Response<AddFederatorResponse>, Status> {
        let who = caller(&request, &self.trust_domain, ADMIN_ROLES)?;
        let request = request.into_inner();
        if request.id == 0 {
            return Err(ApiError::InvalidArgument("id: must be >= 1 (got 0)".into()).into());
        }
        if !request.address.starts_with("https://") {
            return Err(ApiError::InvalidArgument(format!(
                "address: must be the federator's https:// peer URL (got {:?})",
                request.address
            ))
            .into());
        }
        if let Some((_, addr, _)) = self
            .store
            .members()
            .into_iter()
            .find(|(id, addr, _)| *id != request.id && *addr == request.address)
        {
            return Err(ApiError::InvalidArgument(format!(
                "address {addr} already belongs to another federator"
            ))
            .into());
        }
        info!(caller = %who, id = request.id, address = %request.address, "adding a federator as a learner");
        self.store
            .change_membership(MembershipChange::AddLearner {
                id: request.id,
                addr: request.address.clone(),
            })
            .await?;
        if !request.learner_only {
            info!(
                id = request.id,
                "the new federator caught up; making it a voter"
            );
            self.store
                .change_membership(MembershipChange::Promote {
                    ids: vec![request.id],
                })
                .await?;
        }
        Ok(Response::new(AddFederatorResponse {
            leader_id: self.store.metrics().current_leader.unwrap_or(0),
        }))
    }

    async fn remove_federator(
        &self,
        request: Request<RemoveFederatorRequest>,
    ) -> Result<Response<RemoveFederatorResponse>, Status> {
        let who = caller(&request, &self.trust_domain, ADMIN_ROLES)?;
        let id = request.into_inner().id;
        if !self.store.members().iter().any(|(m, _, _)| *m == id) {
            return Err(ApiError::NotFound(format!("federator {id} is not a member")).into());
        }
        info!(caller = %who, id, "removing a federator");
        self.store
            .change_membership(MembershipChange::Remove { ids: vec![id] })
            .await?;
        Ok(Response::new(RemoveFederatorResponse {}))
    }

    async fn save_snapshot(
        &self,
        request: Request<SaveSnapshotRequest>,
    ) -> Result<Response<SaveSnapshotResponse>, Status> {
        let who = caller(&request, &self.trust_domain, ADMIN_ROLES)?;
        let (last_applied, data) = self.store.backup().await?;
        info!(caller = %who, last_applied, bytes = data.len(), "backup taken");
        Ok(Response::new(SaveSnapshotResponse { last_applied, data }))
    }
}

/// `federator --join ADDR`: asks a running federator to add this one, until it is a member.
pub struct Join {
    pub store: Store,
    pub tls: TlsMaterial,
    /// The API address of a running federator.
    pub address: String,
    /// This federator's Raft peer URL.
    pub peer_url: String,
}

impl Join {
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), FederatorError> {
        let id = self.store.node_id();
        let mut pause = Duration::from_millis(250);
        loop {
            if self
                .store
                .members()
                .iter()
                .any(|(m, _, voter)| *m == id && *voter)
            {
                info!(id, "this federator is a voting member");
                return Ok(());
            }
            match self.ask().await {
                Ok(()) => {}
                Err(e) => warn!(address = %self.address, error = %e, "joining failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    async fn ask(&self) -> Result<(), String> {
        let channel = self
            .tls
            .endpoint(&self.address)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        AdminClient::new(channel)
            .add_federator(AddFederatorRequest {
                id: self.store.node_id(),
                address: self.peer_url.clone(),
                learner_only: false,
            })
            .await
            .map_err(|s| s.message().to_string())?;
        Ok(())
    }
}
