//! DNS metrics: queries by type and response code, and answer latency.

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// The question's type (`A`, `SRV`, ...); `none` for a message without a question.
    pub qtype: Cow<'static, str>,
    /// `NOERROR`, `NXDOMAIN`, `REFUSED`, ...
    pub rcode: Cow<'static, str>,
    /// `udp` or `tcp`.
    pub transport: &'static str,
}

#[derive(Clone)]
pub struct DnsMetrics {
    pub queries: Family<QueryLabels, Counter>,
    pub latency: Histogram,
    pub truncated: Counter,
    pub forwarded: Counter,
    pub view_rebuilds: Counter,
    pub view_serial: Gauge,
}

impl DnsMetrics {
    /// Creates the metrics and registers them under `hansa_dns_`.
    pub fn register(registry: &mut Registry) -> DnsMetrics {
        let metrics = DnsMetrics {
            queries: Family::default(),
            // 20 µs .. ~0.3 s
            latency: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00002, 2.0, 15,
            )),
            truncated: Counter::default(),
            forwarded: Counter::default(),
            view_rebuilds: Counter::default(),
            view_serial: Gauge::default(),
        };
        let dns = registry.sub_registry_with_prefix("hansa_dns");
        dns.register(
            "queries",
            "DNS queries answered, by question type, response code and transport",
            metrics.queries.clone(),
        );
        dns.register(
            "response_seconds",
            "Time from a parsed query to its response handed to the socket",
            metrics.latency.clone(),
        );
        dns.register(
            "truncated_responses",
            "UDP responses sent with the TC bit because the answer did not fit",
            metrics.truncated.clone(),
        );
        dns.register(
            "forwarded_queries",
            "Queries for names outside the zone sent to upstream servers",
            metrics.forwarded.clone(),
        );
        dns.register(
            "view_rebuilds",
            "Times the zone view was rebuilt after the store or replica health changed",
            metrics.view_rebuilds.clone(),
        );
        dns.register(
            "view_serial",
            "The zone's current SOA serial",
            metrics.view_serial.clone(),
        );
        metrics
    }
}
