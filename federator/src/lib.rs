//! hansa-federator: the control-plane node. It stores desired state in Raft, places
//! workloads, serves the API and the agents' Sync streams (DESIGN.md §2–§3).

pub mod api;
pub mod config;
pub mod controllers;
pub mod liveness;
pub mod security;
pub mod store;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;

use hansa_proto::v1::{agent_sync_server::AgentSyncServer, federation_server::FederationServer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tracing::{error, info};

use crate::api::sync::SyncService;
use crate::api::FederationService;
use crate::config::Config;
use crate::liveness::Liveness;
use crate::security::{Role, SecurityError, TlsMaterial};
use crate::store::{Store, StoreConfig, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FederatorError {
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("bind {what} {address}: {source}")]
    Bind {
        what: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the certificate is for {found}, but this federator is named {expected:?}")]
    WrongIdentity { expected: String, found: String },
    #[error("{what} server: {detail}")]
    Serve { what: &'static str, detail: String },
}

/// A started federator: where it listens, and the tasks that serve it.
pub struct Federator {
    pub api_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub store: Store,
    tasks: JoinSet<Result<(), FederatorError>>,
}

impl Federator {
    /// Starts serving; returns once the listeners are bound and the store is open.
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<Federator, FederatorError> {
        let tls = TlsMaterial::load(&config.tls)?;
        if tls.identity.role != Role::Federator || tls.identity.name != config.name {
            return Err(FederatorError::WrongIdentity {
                expected: config.name.clone(),
                found: tls.identity.uri(),
            });
        }
        let trust_domain = tls.trust_domain().to_string();
        let bind = |what, address| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| FederatorError::Bind {
                    what,
                    address,
                    source,
                })
        };
        let api_listener = bind("API", config.listen).await?;
        let peer_listener = bind("peer", config.peer_listen).await?;
        let api_addr = local_addr(&api_listener, config.listen);
        let peer_addr = local_addr(&peer_listener, config.peer_listen);

        let store = Store::open(StoreConfig::new(
            config.node_id,
            config.data_dir.clone(),
            config.peer_url(peer_addr),
            config.bootstrap,
            tls.client_config(),
        ))
        .await?;
        let live = Arc::new(Liveness::new());
        let mut tasks = JoinSet::new();

        let raft_td = trust_domain.clone();
        let raft_service = store.grpc_service(Arc::new(move |request| {
            security::caller(request, &raft_td, &[Role::Federator]).map(|_| ())
        }));
        let peer_tls = tls.server_config();
        let peer_shutdown = shutdown.clone();
        tasks.spawn(async move {
            Server::builder()
                .tls_config(peer_tls)
                .map_err(|e| FederatorError::Serve {
                    what: "peer",
                    detail: e.to_string(),
                })?
                .add_service(raft_service)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(peer_listener),
                    peer_shutdown.cancelled_owned(),
                )
                .await
                .map_err(|e| FederatorError::Serve {
                    what: "peer",
                    detail: e.to_string(),
                })
        });

        let federation = FederationService {
            name: config.name.clone(),
            store: store.clone(),
            live: live.clone(),
            trust_domain: trust_domain.clone(),
        };
        let sync = SyncService {
            store: store.clone(),
            live: live.clone(),
            trust_domain,
            shutdown: shutdown.clone(),
        };
        let api_tls = tls.server_config();
        let api_shutdown = shutdown.clone();
        tasks.spawn(async move {
            Server::builder()
                .tls_config(api_tls)
                .map_err(|e| FederatorError::Serve {
                    what: "API",
                    detail: e.to_string(),
                })?
                .add_service(FederationServer::new(federation))
                .add_service(AgentSyncServer::new(sync))
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(api_listener),
                    api_shutdown.cancelled_owned(),
                )
                .await
                .map_err(|e| FederatorError::Serve {
                    what: "API",
                    detail: e.to_string(),
                })
        });

        let controller_store = store.clone();
        let grace = config.cluster_grace();
        let controller_shutdown = shutdown.clone();
        tasks.spawn(async move {
            controllers::run_on_leadership(controller_store, live, grace, controller_shutdown)
                .await;
            Ok(())
        });
        info!(name = %config.name, api = %api_addr, peer = %peer_addr, "federator serving");
        Ok(Federator {
            api_addr,
            peer_addr,
            store,
            tasks,
        })
    }

    /// Waits until every task has finished (after `shutdown` is cancelled, or a server fails),
    /// then closes the store.
    pub async fn wait(mut self, shutdown: CancellationToken) -> Result<(), FederatorError> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = match joined {
                Ok(r) => r,
                Err(e) => Err(FederatorError::Serve {
                    what: "task",
                    detail: e.to_string(),
                }),
            };
            if let Err(e) = outcome {
                error!(error = %e, "federator task failed; shutting down");
                shutdown.cancel();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        self.store.shutdown().await?;
        info!("federator stopped");
        result
    }
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

/// Runs a federator until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), FederatorError> {
    Federator::start(config, shutdown.clone())
        .await?
        .wait(shutdown)
        .await
}
