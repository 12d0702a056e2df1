//! One DNS message in, one response out, over the zone view: one lock-free view load per
//! query, answers ordered by the querier's locality, negative answers with the SOA.
//!
//! Sans-IO: `handle` answers names in the zone synchronously, so the UDP loop never leaves
//! its thread for them; only names outside the zone go through the async `forward`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Instant;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tracing::{debug, error};

use prometheus_client::metrics::counter::Counter;

use super::cache::AnswerCache;
use super::forward::Forwarder;
use super::metrics::QueryLabels;
use super::view::Answer;
use super::{DnsMetrics, Views, ZoneView};

/// The largest UDP payload this server sends, whatever the client advertises (the DNS flag
/// day 2020 value: no fragmentation on common paths).
const MAX_UDP_PAYLOAD: u16 = 1232;

pub struct DnsHandler {
    views: Views,
    forwarder: Forwarder,
    metrics: DnsMetrics,
}

/// What to do with one received message.
pub(super) enum Handled {
    /// Send nothing: not a DNS query one may answer (shorter than a header, a response, a
    /// source address replies cannot go to).
    Silent,
    /// Send this response.
    Reply(Vec<u8>),
    /// A name outside the zone: `DnsHandler::forward` answers it.
    Forward(Box<Pending>),
}

/// What to do with one datagram.
pub(super) enum UdpHandled {
    Silent,
    /// Send the reply `handle_udp` wrote.
    Reply,
    Forward(Box<Pending>),
}

/// A query waiting for upstream.
pub(super) struct Pending {
    request: Request,
    metadata: Metadata,
    edns: Option<Edns>,
    qtype: RecordType,
    started: Instant,
}

/// A message answered, but not yet counted in the metrics.
enum Answered {
    Silent,
    Done(Done),
    /// A malformed message's FORMERR, which the metrics do not count.
    Unrecorded(Vec<u8>),
    Forward(Box<Pending>),
}

struct Done {
    info: ResponseInfo,
    bytes: Vec<u8>,
    qtype: Option<RecordType>,
    started: Instant,
}

/// The first step of a query: done, or to forward.
enum Step {
    Done(ResponseInfo, Vec<u8>, Option<RecordType>),
    Forward(Metadata, Option<Edns>, RecordType),
}

impl DnsHandler {
    pub(super) fn new(views: Views, forwarder: Forwarder, metrics: DnsMetrics) -> DnsHandler {
        DnsHandler {
            views,
            forwarder,
            metrics,
        }
    }

    /// Answers one message received over `protocol` from `src`.
    pub(super) fn handle(&self, raw: Vec<u8>, src: SocketAddr, protocol: Protocol) -> Handled {
        let view = self.views.load_full();
        match self.answer(raw, src, protocol, &view) {
            Answered::Silent => Handled::Silent,
            Answered::Done(done) => {
                self.record(done.started, &done.info, done.qtype, protocol);
                Handled::Reply(done.bytes)
            }
            Answered::Unrecorded(bytes) => Handled::Reply(bytes),
            Answered::Forward(pending) => Handled::Forward(pending),
        }
    }

    /// Answers one datagram into `out`, from `cache` when the same question came from the
    /// same locality since the view last changed.
    pub(super) fn handle_udp(
        &self,
        raw: &[u8],
        src: SocketAddr,
        cache: &mut AnswerCache,
        out: &mut Vec<u8>,
    ) -> UdpHandled {
        let started = Instant::now();
        let view = self.views.load_full();
        let (querier, _) = view.locate(None, src.ip());
        cache.prepare(&view, raw, querier);
        if let (Some(id), true) = (raw.get(..2), answerable(src)) {
            if let Some(cached) = cache.hit([id[0], id[1]]) {
                out.clear();
                out.extend_from_slice(cached.response());
                self.metrics
                    .latency
                    .observe(started.elapsed().as_secs_f64());
                if cached.truncated {
                    self.metrics.truncated.inc();
                }
                cached.counter.inc();
                return UdpHandled::Reply;
            }
        }
        match self.answer(raw.to_vec(), src, Protocol::Udp, &view) {
            Answered::Silent => UdpHandled::Silent,
            Answered::Done(done) => {
                let counter = self.record(done.started, &done.info, done.qtype, Protocol::Udp);
                cache.insert(&done.bytes, counter, done.info.truncation);
                *out = done.bytes;
                UdpHandled::Reply
            }
            Answered::Unrecorded(bytes) => {
                *out = bytes;
                UdpHandled::Reply
            }
            Answered::Forward(pending) => UdpHandled::Forward(pending),
        }
    }

    fn answer(
        &self,
        raw: Vec<u8>,
        src: SocketAddr,
        protocol: Protocol,
        view: &ZoneView,
    ) -> Answered {
        if !answerable(src) {
            debug!(%src, "DNS message from an address replies cannot go to");
            return Answered::Silent;
        }
        let Ok(header) = Header::read(&mut BinDecoder::new(&raw)) else {
            return Answered::Silent;
        };
        // No answer to responses: no reflection.
        if header.metadata.message_type == MessageType::Response {
            return Answered::Silent;
        }
        let request = match Request::from_bytes(raw, src, protocol) {
            Ok(request) => request,
            Err(e) => return malformed(&header, protocol, &e),
        };
        let started = Instant::now();
        match self.respond(&request, view) {
            Step::Done(info, bytes, qtype) => Answered::Done(Done {
                info,
                bytes,
                qtype,
                started,
            }),
            Step::Forward(metadata, edns, qtype) => Answered::Forward(Box::new(Pending {
                request,
                metadata,
                edns,
                qtype,
                started,
            })),
        }
    }

    fn respond(&self, request: &Request, view: &ZoneView) -> Step {
        let protocol = request.protocol();
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
            let (info, bytes) =
                encode(builder(request, &None).build_no_records(metadata), protocol);
            return Step::Done(info, bytes, None);
        }
        let Ok(info) = request.request_info() else {
            metadata.response_code = ResponseCode::FormErr;
            let (info, bytes) =
                encode(builder(request, &None).build_no_records(metadata), protocol);
            return Step::Done(info, bytes, None);
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
                let (info, bytes) =
                    encode(builder(request, &edns).build_no_records(metadata), protocol);
                return Step::Done(info, bytes, Some(qtype));
            }
        }

        let name = query.name();
        if !view.contains(name) {
            return Step::Forward(metadata, edns, qtype);
        }
        metadata.authoritative = true;
        if query.query_class() != DNSClass::IN && query.query_class() != DNSClass::ANY {
            metadata.response_code = ResponseCode::Refused;
            let (info, bytes) =
                encode(builder(request, &edns).build_no_records(metadata), protocol);
            return Step::Done(info, bytes, Some(qtype));
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
        let (info, bytes) = match view.lookup(name, qtype, querier) {
            Answer::Records {
                answers,
                additionals,
            } => encode(
                builder(request, &edns).build(metadata, answers, none, none, additionals),
                protocol,
            ),
            Answer::NoData | Answer::NotInZone => encode(
                builder(request, &edns).build(metadata, none, none, soa, none),
                protocol,
            ),
            Answer::NxDomain => {
                metadata.response_code = ResponseCode::NXDomain;
                encode(
                    builder(request, &edns).build(metadata, none, none, soa, none),
                    protocol,
                )
            }
        };
        Step::Done(info, bytes, Some(qtype))
    }

    /// Answers a name outside the zone from upstream, or refuses it.
    pub(super) async fn forward(&self, pending: Pending) -> Vec<u8> {
        let Pending {
            request,
            mut metadata,
            edns,
            qtype,
            started,
        } = pending;
        let protocol = request.protocol();
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let forwarded = match request.request_info() {
            Ok(info) => {
                self.forwarder
                    .forward(info.query.name(), info.query.query_type())
                    .await
            }
            Err(_) => {
                metadata.response_code = ResponseCode::FormErr;
                None
            }
        };
        let (info, bytes) = match forwarded {
            None => {
                if metadata.response_code != ResponseCode::FormErr {
                    metadata.response_code = ResponseCode::Refused;
                }
                encode(builder.build_no_records(metadata), protocol)
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
                encode(response, protocol)
            }
        };
        self.record(started, &info, Some(qtype), protocol);
        bytes
    }

    fn record(
        &self,
        started: Instant,
        info: &ResponseInfo,
        qtype: Option<RecordType>,
        protocol: Protocol,
    ) -> Counter {
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
            transport: if protocol == Protocol::Udp {
                "udp"
            } else {
                "tcp"
            },
        };
        let counter = self.metrics.queries.get_or_create(&labels).clone();
        counter.inc();
        counter
    }
}

/// Replies may not go to port 0, an unspecified or the broadcast address.
fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && !src.ip().is_unspecified()
        && !matches!(src.ip(), std::net::IpAddr::V4(v4) if v4.is_broadcast())
}

/// A query with a header that does not parse further: FORMERR.
fn malformed(header: &Header, protocol: Protocol, error: &dyn std::fmt::Display) -> Answered {
    debug!(id = header.metadata.id, %error, "malformed DNS message");
    let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
        return Answered::Silent;
    };
    let response = MessageResponseBuilder::new(&queries, None)
        .error_msg(&header.metadata, ResponseCode::FormErr);
    Answered::Unrecorded(encode(response, protocol).1)
}

/// Serializes a response: over UDP within the client's payload size (512 without EDNS),
/// truncated with the TC bit when it does not fit; SERVFAIL if it cannot be encoded.
fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    protocol: Protocol,
) -> (ResponseInfo, Vec<u8>) {
    let id = response.metadata().id;
    let max_size = match protocol {
        Protocol::Udp => response.edns().map_or(512, |edns| edns.max_payload()),
        _ => u16::MAX,
    };
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max_size);
    let failed = match response.destructive_emit(&mut encoder) {
        Ok(info) => return (info, bytes),
        Err(e) => e,
    };
    error!(error = %failed, "cannot encode a DNS response");
    bytes.clear();
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut encoder = BinEncoder::new(&mut bytes);
    if header.emit(&mut encoder).is_err() {
        bytes.clear();
    }
    (ResponseInfo::from(header), bytes)
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
