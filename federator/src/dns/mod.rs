//! Cross-cluster DNS (DESIGN.md §7): every federator serves the federation's zone from its
//! own state, on UDP and TCP, with hickory-proto's messages and hickory-server's response
//! encoding.
//!
//! - `view`: the zone as an immutable snapshot (`ZoneView`), rebuilt when the store or the
//!   soft state changes and swapped whole; queries read it without locks.
//! - `handler`: one message in, one response out (sans-IO), plus forwarding.
//! - `udp`, `tcp`: the transports, on a thread and single-threaded runtime of their own.
//! - `locality`: which cluster a querier is in, from its address or EDNS Client Subnet.
//! - `metrics`: queries by type and response code, latency.

mod cache;
mod config;
mod forward;
mod handler;
pub mod locality;
pub mod metrics;
pub mod synthetic;
mod tcp;
mod udp;
pub mod view;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub use config::DnsConfig;
pub use handler::DnsHandler;
pub use hickory_proto::rr::Name as ZoneName;
pub use metrics::DnsMetrics;
pub use view::{LiveCluster, ZoneSettings, ZoneView};

use crate::liveness::Liveness;
use crate::store::Store;

/// The current zone view, swapped whole on every rebuild.
pub type Views = Arc<ArcSwap<ZoneView>>;

/// How long the view waits after a change for more changes before it rebuilds: bursts of
/// heartbeats and applies cost one rebuild, well inside the 1 s the answers may lag.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// How long an idle TCP client may keep its connection.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("bind DNS {transport} {address}: {source}")]
    Bind {
        transport: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("DNS server: {0}")]
    Serve(String),
}

/// A bound DNS server: its address (UDP and TCP share the port), and what `run` serves.
pub struct DnsServer {
    pub addr: SocketAddr,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    handler: Arc<DnsHandler>,
    shutdown: CancellationToken,
}

impl DnsServer {
    /// Binds UDP and TCP on `listen` (port 0: a free port, the same for both).
    pub async fn bind(
        listen: SocketAddr,
        handler: DnsHandler,
        shutdown: CancellationToken,
    ) -> Result<DnsServer, DnsError> {
        let (udp, tcp) = bind_pair(listen)?;
        let addr = udp.local_addr().unwrap_or(listen);
        Ok(DnsServer {
            addr,
            udp,
            tcp,
            handler: Arc::new(handler),
            shutdown,
        })
    }

    /// Serves until `shutdown` is cancelled, then stops.
    ///
    /// The server runs on a thread of its own with a single-threaded runtime: queries in the
    /// zone are answered without leaving it, whatever else the process's runtime is doing.
    pub async fn run(mut self) -> Result<(), DnsError> {
        // Dropping this future stops the server too, as it would stop tasks on this runtime.
        self.shutdown = self.shutdown.child_token();
        let _stop_when_dropped = self.shutdown.clone().drop_guard();
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("hansa-dns".into())
            .spawn(move || {
                let _ = done.send(self.serve());
            })
            .map_err(|e| DnsError::Serve(format!("start the DNS thread: {e}")))?;
        finished
            .await
            .unwrap_or_else(|_| Err(DnsError::Serve("the DNS thread panicked".into())))
    }

    fn serve(self) -> Result<(), DnsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DnsError::Serve(format!("start the DNS runtime: {e}")))?;
        let DnsServer {
            udp,
            tcp,
            handler,
            shutdown,
            ..
        } = self;
        runtime.block_on(async move {
            let udp = UdpSocket::from_std(udp).map_err(|e| DnsError::Serve(e.to_string()))?;
            let tcp = TcpListener::from_std(tcp).map_err(|e| DnsError::Serve(e.to_string()))?;
            let tcp = tokio::spawn(tcp::serve(tcp, handler.clone(), TCP_IDLE, shutdown.clone()));
            let served = udp::serve(udp, handler, shutdown.clone()).await;
            if served.is_err() {
                shutdown.cancel();
            }
            let _ = tcp.await;
            match served {
                Ok(()) => Ok(()),
                Err(e) => Err(DnsError::Serve(format!("UDP: {e}"))),
            }
        })
    }
}

fn bind_pair(listen: SocketAddr) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let mut attempts = 0;
    loop {
        let udp = std::net::UdpSocket::bind(listen).map_err(|source| DnsError::Bind {
            transport: "UDP",
            address: listen,
            source,
        })?;
        let bound = udp.local_addr().unwrap_or(listen);
        match std::net::TcpListener::bind(bound) {
            Ok(tcp) => {
                let nonblocking = |e| DnsError::Bind {
                    transport: "UDP and TCP",
                    address: bound,
                    source: e,
                };
                udp.set_nonblocking(true).map_err(nonblocking)?;
                tcp.set_nonblocking(true).map_err(nonblocking)?;
                return Ok((udp, tcp));
            }
            // With port 0, the UDP port may be taken on TCP: try another.
            Err(_) if listen.port() == 0 && attempts < 10 => attempts += 1,
            Err(source) => {
                return Err(DnsError::Bind {
                    transport: "TCP",
                    address: bound,
                    source,
                })
            }
        }
    }
}

/// Serves one fixed view, forwarding nothing: for the benchmark and tests that generate a
/// federation instead of running one.
pub async fn serve_view(
    listen: SocketAddr,
    view: ZoneView,
    metrics: DnsMetrics,
    shutdown: CancellationToken,
) -> Result<DnsServer, DnsError> {
    let views: Views = Arc::new(ArcSwap::from_pointee(view));
    let handler = DnsHandler::new(
        views,
        forward::Forwarder::disabled(metrics.clone()),
        metrics,
    );
    DnsServer::bind(listen, handler, shutdown).await
}

/// The zone settings a federator derives from its `[dns]` section.
pub fn settings(config: &DnsConfig, bound: SocketAddr) -> ZoneSettings {
    let mut ns_addresses = config.advertise.clone();
    if ns_addresses.is_empty() && !bound.ip().is_unspecified() {
        ns_addresses.push(bound.ip());
    }
    ZoneSettings {
        zone: config.zone_name(),
        ttl: config.ttl,
        negative_ttl: config.negative_ttl,
        ns_addresses,
        own_cluster: config.cluster.clone(),
    }
}

/// The federation's state and soft state, as one view.
pub fn build_view(
    settings: &ZoneSettings,
    store: &Store,
    live: &Liveness,
    serial: u32,
) -> ZoneView {
    let names: Vec<String> = store.read(|state| state.clusters.keys().cloned().collect());
    let live: HashMap<String, LiveCluster> = names
        .into_iter()
        .filter_map(|name| {
            live.get(&name).map(|l| {
                (
                    name,
                    LiveCluster {
                        connected: l.connected,
                        replicas: l.replicas,
                    },
                )
            })
        })
        .collect();
    store.read(|state| ZoneView::build(settings, state, &live, serial))
}

/// Starts a federator's DNS: binds, builds the first view, and returns the bound address
/// and the future that serves and keeps the view current until `shutdown`.
pub async fn start(
    config: &DnsConfig,
    store: Store,
    live: Arc<Liveness>,
    metrics: DnsMetrics,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, impl Future<Output = Result<(), DnsError>>), DnsError> {
    // The view needs the bound address (for ns.<zone>) and the handler needs the view:
    // start with an empty one and replace it before the first query can matter.
    let placeholder = ZoneSettings {
        zone: config.zone_name(),
        ttl: config.ttl,
        negative_ttl: config.negative_ttl,
        ns_addresses: Vec::new(),
        own_cluster: None,
    };
    let views: Views = Arc::new(ArcSwap::from_pointee(ZoneView::build(
        &placeholder,
        &Default::default(),
        &HashMap::new(),
        0,
    )));
    let forwarder = forward::Forwarder::new(config, metrics.clone());
    let handler = DnsHandler::new(views.clone(), forwarder, metrics.clone());
    let server = DnsServer::bind(config.listen, handler, shutdown.clone()).await?;
    let addr = server.addr;
    let settings = settings(config, addr);
    let mut serial = initial_serial();
    views.store(Arc::new(build_view(&settings, &store, &live, serial)));
    metrics.view_serial.set(i64::from(serial));
    info!(%addr, zone = %settings.zone, "DNS serving");

    let follow = async move {
        let mut store_changes = store.subscribe();
        let mut live_changes = live.subscribe();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = store_changes.changed() => if changed.is_err() { return },
                changed = live_changes.changed() => if changed.is_err() { return },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(DEBOUNCE) => {}
            }
            store_changes.borrow_and_update();
            live_changes.borrow_and_update();
            let next = build_view(&settings, &store, &live, serial.wrapping_add(1));
            metrics.view_rebuilds.inc();
            // Heartbeats that change nothing keep the view, and the SOA serial with it.
            if views.load().same_answers(&next) {
                continue;
            }
            serial = serial.wrapping_add(1);
            views.store(Arc::new(next));
            metrics.view_serial.set(i64::from(serial));
            debug!(serial, "DNS view changed");
        }
    };
    Ok((addr, async move {
        let (served, ()) = tokio::join!(server.run(), follow);
        served
    }))
}

/// SOA serials grow across restarts: start from the clock.
fn initial_serial() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs as u32
}
