//! Names outside the zone: forwarded to upstream servers with hickory-resolver, or refused.

use std::net::SocketAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tracing::warn;

use super::{DnsConfig, DnsMetrics};

pub struct Forwarder {
    /// `None`: forwarding is off, or no upstream is left.
    resolver: Option<TokioResolver>,
    metrics: DnsMetrics,
}

/// What upstream said.
pub struct Forwarded {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
}

impl Forwarder {
    pub fn new(config: &DnsConfig, metrics: DnsMetrics) -> Forwarder {
        let resolver = if config.forward {
            let upstreams = upstreams(config);
            if upstreams.is_empty() {
                warn!("DNS forwarding is on but there is no upstream server: names outside the zone are refused");
                None
            } else {
                build(&upstreams)
            }
        } else {
            None
        };
        Forwarder { resolver, metrics }
    }

    /// Refuses every name outside the zone.
    pub fn disabled(metrics: DnsMetrics) -> Forwarder {
        Forwarder {
            resolver: None,
            metrics,
        }
    }

    /// `None`: refused (forwarding off).
    pub async fn forward(&self, name: &LowerName, qtype: RecordType) -> Option<Forwarded> {
        let resolver = self.resolver.as_ref()?;
        self.metrics.forwarded.inc();
        let name = Name::from(name.clone());
        Some(match resolver.lookup(name, qtype).await {
            Ok(lookup) => Forwarded {
                code: ResponseCode::NoError,
                answers: lookup.answers().to_vec(),
                authorities: Vec::new(),
            },
            Err(e) if e.is_nx_domain() => Forwarded {
                code: ResponseCode::NXDomain,
                answers: Vec::new(),
                authorities: Vec::new(),
            },
            Err(e) if e.is_no_records_found() => Forwarded {
                code: ResponseCode::NoError,
                answers: Vec::new(),
                authorities: Vec::new(),
            },
            Err(e) => {
                warn!(error = %e, "forwarding failed");
                Forwarded {
                    code: ResponseCode::ServFail,
                    answers: Vec::new(),
                    authorities: Vec::new(),
                }
            }
        })
    }
}

/// The configured upstreams, or those of /etc/resolv.conf, never this server itself.
fn upstreams(config: &DnsConfig) -> Vec<SocketAddr> {
    let configured = config.upstream_addresses();
    let candidates = if configured.is_empty() {
        match hickory_resolver::system_conf::read_system_conf() {
            Ok((system, _)) => system
                .name_servers()
                .iter()
                .flat_map(|ns| {
                    ns.connections
                        .iter()
                        .map(move |c| SocketAddr::new(ns.ip, c.port))
                })
                .collect(),
            Err(e) => {
                warn!(error = %e, "cannot read /etc/resolv.conf for DNS upstreams");
                Vec::new()
            }
        }
    } else {
        configured
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for candidate in candidates {
        let is_self = candidate.port() == config.listen.port()
            && (candidate.ip() == config.listen.ip() || config.listen.ip().is_unspecified());
        if !is_self && !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out
}

fn build(upstreams: &[SocketAddr]) -> Option<TokioResolver> {
    let servers = upstreams
        .iter()
        .map(|address| {
            let mut udp = ConnectionConfig::udp();
            udp.port = address.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = address.port();
            NameServerConfig::new(address.ip(), true, vec![udp, tcp])
        })
        .collect();
    let config = ResolverConfig::from_parts(None, Vec::new(), servers);
    match TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).build() {
        Ok(resolver) => Some(resolver),
        Err(e) => {
            warn!(error = %e, "cannot build the DNS forwarder: names outside the zone are refused");
            None
        }
    }
}
