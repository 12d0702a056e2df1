//! hickory-server's request handler over the zone view: one lock-free view load per query,
//! answers ordered by the querier's locality, negative answers with the SOA, forwarding.

use std::borrow::Cow;
use std::time::Instant;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::debug;

use super::forward::Forwarder;
use super::metrics::QueryLabels;
use super::view::Answer;
use super::{DnsMetrics, Views};

/// The largest UDP payload this server sends, whatever the client advertises (the DNS flag
/// day 2020 value: no fragmentation on common paths).
const MAX_UDP_PAYLOAD: u16 = 1232;

pub struct DnsHandler {
    views: Views,
    forwarder: Forwarder,
    metrics: DnsMetrics,
}

impl DnsHandler {
    pub(super) fn new(views: Views, forwarder: Forwarder, metrics: DnsMetrics) -> DnsHandler {
        DnsHandler {
            views,
            forwarder,
            metrics,
        }
    }

    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: &mut R,
    ) -> (ResponseInfo, Option<RecordType>) {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let mut edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns
        });
        fn builder<'q>(request: &'q Request, edns: &'q Option<Edns>) -> MessageResponseBuilder<'q> {
            let mut b = MessageResponseBuilder::new(&request.queries, None);
            if let Some(edns) = edns {
                b.edns(edns);
            }
            b
        }
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            metadata.response_code = ResponseCode::NotImp;
            let response = builder(request, &None).build_no_records(metadata);
            return (send(handle, response, metadata).await, None);
        }
        let Ok(info) = request.request_info() else {
            metadata.response_code = ResponseCode::FormErr;
            let response = builder(request, &None).build_no_records(metadata);
            return (send(handle, response, metadata).await, None);
        };
        let query = info.query;
        let qtype = query.query_type();
        if let Some(asked) = &request.edns {
            if asked.version() > 0 {
                // RFC 6891 6.1.3: BADVERS, with an OPT of version 0.
                let code = ResponseCode::BADVERS;
                metadata.response_code = code;
                if let Some(edns) = edns.as_mut() {
                    edns.set_rcode_high(code.high());
                }
                let response = builder(request, &edns).build_no_records(metadata);
                return (send(handle, response, metadata).await, Some(qtype));
            }
        }

        let view = self.views.load_full();
        let name = query.name();
        if !view.contains(name) {
            return (
                self.forward(request, handle, metadata, edns).await,
                Some(qtype),
            );
        }
        metadata.authoritative = true;
        if query.query_class() != DNSClass::IN && query.query_class() != DNSClass::ANY {
            metadata.response_code = ResponseCode::Refused;
            let response = builder(request, &edns).build_no_records(metadata);
            return (send(handle, response, metadata).await, Some(qtype));
        }

        let ecs = request
            .edns
            .as_ref()
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(subnet)) => Some(*subnet),
                _ => None,
            });
        let (querier, scope) =
            view.locate(ecs.as_ref().map(ClientSubnet::addr), request.src().ip());
        if let (Some(subnet), Some(edns)) = (&ecs, edns.as_mut()) {
            // RFC 7871 7.2.1: echo the option with the scope the answer is valid for.
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(
                    subnet.addr(),
                    subnet.source_prefix(),
                    scope.unwrap_or(0),
                )));
        }
        debug!(
            name = %name,
            %qtype,
            querier = querier.and_then(|q| view.cluster_name(q)).unwrap_or("-"),
            "DNS query"
        );
        let soa = [view.negative_soa()];
        let none: [&Record; 0] = [];
        let info = match view.lookup(name, qtype, querier) {
            Answer::Records {
                answers,
                additionals,
            } => {
                let response =
                    builder(request, &edns).build(metadata, answers, none, none, additionals);
                send(handle, response, metadata).await
            }
            Answer::NoData | Answer::NotInZone => {
                let response = builder(request, &edns).build(metadata, none, none, soa, none);
                send(handle, response, metadata).await
            }
            Answer::NxDomain => {
                metadata.response_code = ResponseCode::NXDomain;
                let response = builder(request, &edns).build(metadata, none, none, soa, none);
                send(handle, response, metadata).await
            }
        };
        (info, Some(qtype))
    }

    async fn forward<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: &mut R,
        mut metadata: Metadata,
        edns: Option<Edns>,
    ) -> ResponseInfo {
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let Ok(info) = request.request_info() else {
            metadata.response_code = ResponseCode::FormErr;
            return send(handle, builder.build_no_records(metadata), metadata).await;
        };
        let query = info.query;
        match self
            .forwarder
            .forward(query.name(), query.query_type())
            .await
        {
            None => {
                metadata.response_code = ResponseCode::Refused;
                send(handle, builder.build_no_records(metadata), metadata).await
            }
            Some(forwarded) => {
                metadata.recursion_available = true;
                metadata.response_code = forwarded.code;
                let none: [&Record; 0] = [];
                let response = builder.build(
                    metadata,
                    forwarded.answers.iter(),
                    forwarded.authorities.iter(),
                    none,
                    none,
                );
                send(handle, response, metadata).await
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    metadata: Metadata,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            debug!(error = %e, "DNS response not sent");
            let mut failed = metadata;
            failed.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata: failed,
                counts: HeaderCounts::default(),
            })
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let (info, qtype) = self.respond(request, &mut response_handle).await;
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        if info.truncation {
            self.metrics.truncated.inc();
        }
        let labels = QueryLabels {
            qtype: qtype
                .map(|t| Cow::Borrowed(<&'static str>::from(t)))
                .unwrap_or(Cow::Borrowed("none")),
            rcode: Cow::Borrowed(rcode_name(info.response_code)),
            transport: if request.protocol() == Protocol::Udp {
                "udp"
            } else {
                "tcp"
            },
        };
        self.metrics.queries.get_or_create(&labels).inc();
        info
    }
}

fn rcode_name(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}
