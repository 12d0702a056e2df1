//! hansa-federator: the control-plane node. It stores desired state in Raft, places
//! workloads, serves the API and the agents' Sync streams (DESIGN.md §2–§3).

pub mod api;
pub mod config;
pub mod controllers;
pub mod dns;
pub mod http;
pub mod liveness;
pub mod logs;
pub mod peer;
pub mod relay;
pub mod security;
pub mod store;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;

use hansa_proto::v1::replica_logs_server::ReplicaLogsServer;
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
    /// The DNS server's address (UDP and TCP), when `[dns]` is enabled.
    pub dns_addr: Option<SocketAddr>,
    /// The `/metrics` and `/healthz` address, when `http_listen` is set.
    pub http_addr: Option<SocketAddr>,
    pub store: Store,
    /// Peer mode's gossip membership, when `mode = "peer"`.
    pub peer: Option<Arc<peer::PeerMode>>,
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
        let api_url = config.api_url(api_addr);
        let peer_addr = local_addr(&peer_listener, config.peer_listen);

        let mut store_config = StoreConfig::new(
            config.node_id,
            config.data_dir.clone(),
            config.peer_url(peer_addr),
            config.bootstrap && config.join.is_none(),
            tls.client_config(),
        );
        store_config.initial_members = config.peers.iter().map(|p| (p.id, p.url.clone())).collect();
        store_config.heartbeat_interval =
            std::time::Duration::from_millis(config.raft.heartbeat_ms);
        store_config.election_timeout_min =
            std::time::Duration::from_millis(config.raft.election_timeout_min_ms);
        store_config.election_timeout_max =
            std::time::Duration::from_millis(config.raft.election_timeout_max_ms);
        let store = Store::open(store_config).await?;
        let live = Arc::new(Liveness::new());
        store.set_relay_handler(relay::handler(live.clone(), api_url.clone()));
        let mut tasks = JoinSet::new();
        let peer = match (&config.mode, &config.peer) {
            (config::Mode::Peer, Some(peer_config)) => Some(
                peer::PeerMode::start(
                    &config.name,
                    peer_config,
                    store.clone(),
                    live.clone(),
                    api_url.clone(),
                    config.peer_url(peer_addr),
                    &mut tasks,
                    shutdown.clone(),
                )
                .await?,
            ),
            _ => None,
        };

        let raft_td = trust_domain.clone();
        let raft_service = store.grpc_service(
            Arc::new(move |request| {
                security::caller(request, &raft_td, &[Role::Federator]).map(|_| ())
            }),
            shutdown.clone(),
        );
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
                    without_delay(peer_listener),
                    peer_shutdown.cancelled_owned(),
                )
                .await
                .map_err(|e| FederatorError::Serve {
                    what: "peer",
                    detail: e.to_string(),
                })
        });

        let admin = api::admin::AdminService {
            store: store.clone(),
            trust_domain: trust_domain.clone(),
        }
        .server();
        let federation = FederationService {
            name: config.name.clone(),
            store: store.clone(),
            live: live.clone(),
            trust_domain: trust_domain.clone(),
            peer: peer.clone(),
        };
        let log_router = Arc::new(logs::LogRouter::new());
        let replica_logs = logs::LogsService {
            router: log_router.clone(),
            live: live.clone(),
            store: store.clone(),
            trust_domain: trust_domain.clone(),
            tls: tls.clone(),
        };
        let sync = SyncService {
            store: store.clone(),
            live: live.clone(),
            trust_domain,
            shutdown: shutdown.clone(),
            logs: log_router,
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
                .add_service(ReplicaLogsServer::new(replica_logs))
                .add_service(admin)
                .serve_with_incoming_shutdown(
                    without_delay(api_listener),
                    api_shutdown.cancelled_owned(),
                )
                .await
                .map_err(|e| FederatorError::Serve {
                    what: "API",
                    detail: e.to_string(),
                })
        });

        let mut registry = prometheus_client::registry::Registry::default();
        let dns_metrics = dns::DnsMetrics::register(&mut registry);
        if let Some(peer) = &peer {
            registry.register_collector(Box::new(peer.collector()));
        }
        let dns_addr = if let Some(dns_config) = config.dns() {
            let (addr, serve) = dns::start(
                &dns_config,
                store.clone(),
                live.clone(),
                dns_metrics,
                shutdown.clone(),
            )
            .await
            .map_err(|e| FederatorError::Serve {
                what: "DNS",
                detail: e.to_string(),
            })?;
            tasks.spawn(async move {
                serve.await.map_err(|e| FederatorError::Serve {
                    what: "DNS",
                    detail: e.to_string(),
                })
            });
            Some(addr)
        } else {
            None
        };
        let http_addr = match config.http_listen {
            Some(listen) => {
                let (addr, serve) = http::bind(listen, Arc::new(registry), shutdown.clone())
                    .await
                    .map_err(|source| FederatorError::Bind {
                        what: "HTTP",
                        address: listen,
                        source,
                    })?;
                tasks.spawn(async move {
                    serve.await.map_err(|e| FederatorError::Serve {
                        what: "HTTP",
                        detail: e.to_string(),
                    })
                });
                Some(addr)
            }
            None => None,
        };

        tasks.spawn(relay::run(
            store.clone(),
            live.clone(),
            api_url.clone(),
            shutdown.clone(),
        ));
        if let Some(join) = config.join.clone() {
            let joining = api::admin::Join {
                store: store.clone(),
                tls: tls.clone(),
                address: join,
                peer_url: config.peer_url(peer_addr),
            };
            tasks.spawn(joining.run(shutdown.clone()));
        }
        let controller_store = store.clone();
        let grace = config.cluster_grace();
        let controller_shutdown = shutdown.clone();
        let controller_peer = peer.clone();
        tasks.spawn(async move {
            controllers::run_on_leadership(
                controller_store,
                live,
                controller_peer,
                grace,
                controller_shutdown,
            )
            .await;
            Ok(())
        });
        info!(name = %config.name, api = %api_addr, peer = %peer_addr, "federator serving");
        Ok(Federator {
            api_addr,
            peer_addr,
            dns_addr,
            http_addr,
            store,
            peer,
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

/// Accepted connections with Nagle's algorithm off: small gRPC answers (Raft acks, applies)
/// must not wait for the peer's delayed ACK.
fn without_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            // Best effort: a socket that refuses the option still works, only slower.
            let _ = stream.set_nodelay(true);
        }
        accepted
    })
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
