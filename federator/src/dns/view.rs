//! The zone as DNS answers it: an immutable, precomputed view of the federation's healthy
//! replicas, built from the store and the soft state, swapped whole when either changes. The
//! query path reads it without locks; it only orders precomputed records by locality.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use hansa_core::{ClusterHealth, Protocol, ReplicaState, ReplicaStatus, Workload, WorkloadKey};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::locality::{Subnet, SubnetTable};
use crate::store::FederationState;

/// What shapes the zone besides the federation's state.
#[derive(Debug, Clone)]
pub struct ZoneSettings {
    /// The zone apex, fully qualified, e.g. `hansa.internal.`.
    pub zone: Name,
    /// TTL of positive answers, seconds.
    pub ttl: u32,
    /// TTL of negative answers (the SOA minimum), seconds.
    pub negative_ttl: u32,
    /// Addresses of `ns.<zone>`, the zone's name server (this DNS server).
    pub ns_addresses: Vec<IpAddr>,
    /// The cluster this federator runs in: the locality of queriers no cluster claims.
    pub own_cluster: Option<String>,
}

/// The soft state of one cluster, as the view needs it.
#[derive(Debug, Clone, Default)]
pub struct LiveCluster {
    /// An agent stream is open: without one, nothing it reported can be trusted.
    pub connected: bool,
    pub replicas: Vec<ReplicaStatus>,
}

/// Locality tiers, nearest first; also the SRV priority of each tier.
const TIERS: usize = 3;

/// One cluster's records for one name.
#[derive(Debug, Default, PartialEq)]
struct Group {
    cluster: u16,
    /// A and AAAA records.
    addresses: Vec<Record>,
    /// SRV records, one copy per tier: the priority depends on who asks.
    srv: [Vec<Record>; TIERS],
    /// Addresses of SRV targets, for the additional section.
    glue: Vec<Record>,
}

#[derive(Debug, Default, PartialEq)]
struct Node {
    /// Records every querier gets (SOA, NS, TXT, the name server's address).
    fixed: Vec<Record>,
    /// Per-cluster records, answered nearest first.
    groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq)]
struct ClusterInfo {
    name: String,
    region: String,
}

/// The answer to one question.
#[derive(Debug)]
pub enum Answer<'a> {
    /// The name exists and has records of the type: answers and additional records.
    Records {
        answers: Vec<&'a Record>,
        additionals: Vec<&'a Record>,
    },
    /// The name exists but has no record of the type (NOERROR, empty answer, SOA).
    NoData,
    /// The name does not exist in the zone (NXDOMAIN, SOA).
    NxDomain,
    /// The name is outside the zone.
    NotInZone,
}

/// An immutable snapshot of the zone.
#[derive(Debug)]
pub struct ZoneView {
    origin: LowerName,
    serial: u32,
    /// The SOA as negative answers carry it: TTL and minimum are the negative TTL.
    negative_soa: Record,
    names: HashMap<LowerName, Node>,
    clusters: Vec<ClusterInfo>,
    own_cluster: Option<u16>,
    subnets: SubnetTable,
}

/// Where a workload's names come from: its service name (a Kubernetes Service's name, a
/// Marathon app id) or else its own name, and its service ports by template port.
struct WorkloadNames {
    label: String,
    namespace: String,
    /// Template port name -> the SRV service labels (`_<name>._<proto>`) that reach it.
    srv_labels: HashMap<String, Vec<(String, Protocol)>>,
    /// No service ports: SRV names use the template port names.
    ports_by_template: bool,
}

impl WorkloadNames {
    fn of(workload: &Workload) -> Option<WorkloadNames> {
        let label = workload
            .service
            .as_ref()
            .map(|s| s.name.to_ascii_lowercase())
            .filter(|n| hansa_core::is_dns_label(n))
            .unwrap_or_else(|| workload.name.to_ascii_lowercase());
        let namespace = workload.namespace.to_ascii_lowercase();
        if !hansa_core::is_dns_label(&label) || !hansa_core::is_dns_label(&namespace) {
            return None;
        }
        let mut srv_labels: HashMap<String, Vec<(String, Protocol)>> = HashMap::new();
        let service_ports = workload
            .service
            .as_ref()
            .map(|s| s.ports.as_slice())
            .unwrap_or(&[]);
        for port in service_ports {
            if port.name.is_empty() {
                continue;
            }
            srv_labels
                .entry(port.target_port.clone())
                .or_default()
                .push((port.name.to_ascii_lowercase(), port.protocol));
        }
        Some(WorkloadNames {
            label,
            namespace,
            srv_labels,
            ports_by_template: service_ports.is_empty(),
        })
    }
}

impl ZoneView {
    /// Builds the view: only replicas that run and pass their health checks, in clusters that
    /// are connected and not Unreachable, of workloads the store still holds.
    pub fn build(
        settings: &ZoneSettings,
        state: &FederationState,
        live: &HashMap<String, LiveCluster>,
        serial: u32,
    ) -> ZoneView {
        let zone = settings.zone.to_lowercase();
        let mut builder = Builder {
            zone: zone.clone(),
            ttl: settings.ttl,
            names: HashMap::new(),
        };

        let clusters: Vec<ClusterInfo> = state
            .clusters
            .values()
            .map(|c| ClusterInfo {
                name: c.name.clone(),
                region: c.region.clone(),
            })
            .collect();
        let mut subnets = Vec::new();
        for (index, cluster) in state.clusters.values().enumerate() {
            for address in &cluster.addresses {
                if let Some(subnet) = Subnet::parse(address) {
                    subnets.push((subnet, index as u16));
                }
            }
        }
        let own_cluster = settings
            .own_cluster
            .as_ref()
            .and_then(|own| clusters.iter().position(|c| &c.name == own))
            .map(|i| i as u16);

        let workloads: BTreeMap<&WorkloadKey, WorkloadNames> = state
            .workloads
            .iter()
            .filter_map(|(key, record)| WorkloadNames::of(&record.workload).map(|n| (key, n)))
            .collect();

        for (index, cluster) in state.clusters.values().enumerate() {
            let index = index as u16;
            let Some(cluster_live) = live.get(&cluster.name) else {
                continue;
            };
            if !cluster_live.connected || cluster.health == ClusterHealth::Unreachable {
                continue;
            }
            let cluster_label = cluster.name.to_ascii_lowercase();
            if !hansa_core::is_dns_label(&cluster_label) {
                continue;
            }
            for replica in &cluster_live.replicas {
                if !(replica.healthy && replica.state == ReplicaState::Running) {
                    continue;
                }
                if let Some(names) = workloads.get(&replica.workload) {
                    builder.add_replica(index, &cluster_label, names, replica);
                }
            }
        }

        let ns_name = builder.child(&zone, "ns");
        let soa = |ttl: u32| {
            let hostmaster = Name::from_ascii("hostmaster")
                .and_then(|h| h.append_domain(&zone))
                .unwrap_or_else(|_| zone.clone());
            Record::from_rdata(
                zone.clone(),
                ttl,
                RData::SOA(SOA::new(
                    ns_name.clone(),
                    hostmaster,
                    serial,
                    3600,
                    600,
                    86400,
                    settings.negative_ttl,
                )),
            )
        };
        let apex = builder.node(&zone);
        apex.fixed.push(soa(settings.ttl));
        apex.fixed.push(Record::from_rdata(
            zone.clone(),
            settings.ttl,
            RData::NS(NS(ns_name.clone())),
        ));
        let negative_soa = soa(settings.negative_ttl);
        let ns_node = builder.node(&ns_name);
        for address in &settings.ns_addresses {
            ns_node
                .fixed
                .push(address_record(ns_name.clone(), settings.ttl, *address));
        }
        let version_name = builder.child(&zone, "dns-version");
        builder.node(&version_name).fixed.push(Record::from_rdata(
            version_name.clone(),
            settings.ttl,
            RData::TXT(TXT::new(vec![format!(
                "hansa {}",
                env!("CARGO_PKG_VERSION")
            )])),
        ));
        let svc = builder.child(&zone, "svc");
        builder.node(&svc);
        builder.add_empty_non_terminals();

        ZoneView {
            origin: LowerName::new(&zone),
            serial,
            negative_soa,
            names: builder.names,
            clusters,
            own_cluster,
            subnets: SubnetTable::new(subnets),
        }
    }

    /// Whether `other` answers every question as this view does, the SOA serial aside: a
    /// rebuild that changes nothing keeps the old view and its serial.
    pub fn same_answers(&self, other: &ZoneView) -> bool {
        self.origin == other.origin
            && self.clusters == other.clusters
            && self.own_cluster == other.own_cluster
            && self.subnets == other.subnets
            && self.names.len() == other.names.len()
            && self
                .names
                .iter()
                .all(|(name, node)| name == &self.origin || other.names.get(name) == Some(node))
    }

    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The SOA record negative answers carry in their authority section.
    pub fn negative_soa(&self) -> &Record {
        &self.negative_soa
    }

    pub fn contains(&self, name: &LowerName) -> bool {
        self.origin.zone_of(name)
    }

    /// The cluster a querier is in: by ECS address if given, else by its source address,
    /// else the serving federator's own cluster. Returns the cluster's index and, when an
    /// address matched a block, that block's prefix length (the ECS scope).
    pub fn locate(&self, ecs: Option<IpAddr>, source: IpAddr) -> (Option<u16>, Option<u8>) {
        if let Some((cluster, prefix)) = ecs.and_then(|a| self.subnets.lookup(a)) {
            return (Some(cluster), Some(prefix));
        }
        if let Some((cluster, _)) = self.subnets.lookup(source) {
            return (Some(cluster), None);
        }
        (self.own_cluster, None)
    }

    pub fn cluster_name(&self, index: u16) -> Option<&str> {
        self.clusters
            .get(usize::from(index))
            .map(|c| c.name.as_str())
    }

    /// Answers one question for a querier in cluster `querier` (an index from `locate`).
    pub fn lookup(&self, name: &LowerName, qtype: RecordType, querier: Option<u16>) -> Answer<'_> {
        if !self.origin.zone_of(name) {
            return Answer::NotInZone;
        }
        let Some(node) = self.names.get(name) else {
            return Answer::NxDomain;
        };
        let wants = |record: &Record| qtype == RecordType::ANY || record.record_type() == qtype;
        let mut answers: Vec<&Record> = node.fixed.iter().filter(|r| wants(r)).collect();
        let mut additionals = Vec::new();
        if !node.groups.is_empty() {
            let tier_of = |cluster: u16| self.tier(cluster, querier);
            for tier in 0..TIERS {
                for group in node.groups.iter().filter(|g| tier_of(g.cluster) == tier) {
                    if qtype == RecordType::SRV || qtype == RecordType::ANY {
                        answers.extend(group.srv[tier].iter());
                        additionals.extend(group.glue.iter());
                    }
                    if qtype != RecordType::SRV {
                        answers.extend(group.addresses.iter().filter(|r| wants(r)));
                    }
                }
            }
        }
        if answers.is_empty() {
            Answer::NoData
        } else {
            Answer::Records {
                answers,
                additionals,
            }
        }
    }

    /// Every record of the zone as a master file (RFC 1035), as a querier in `querier` would
    /// see SRV priorities; the SOA first. Used to give another server the same zone.
    pub fn to_zone_file(&self, querier: Option<u16>) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut names: Vec<&LowerName> = self.names.keys().collect();
        names.sort_by_key(|n| (n != &&self.origin, n.to_string()));
        for name in names {
            if let Answer::Records { answers, .. } = self.lookup(name, RecordType::ANY, querier) {
                for record in answers {
                    let _ = writeln!(out, "{record}");
                }
            }
        }
        out
    }

    fn tier(&self, cluster: u16, querier: Option<u16>) -> usize {
        let Some(querier) = querier else {
            return TIERS - 1;
        };
        if cluster == querier {
            return 0;
        }
        let region = |i: u16| self.clusters.get(usize::from(i)).map(|c| c.region.as_str());
        match (region(cluster), region(querier)) {
            (Some(a), Some(b)) if !a.is_empty() && a == b => 1,
            _ => 2,
        }
    }
}

struct Builder {
    zone: Name,
    ttl: u32,
    names: HashMap<LowerName, Node>,
}

impl Builder {
    fn node(&mut self, name: &Name) -> &mut Node {
        self.names.entry(LowerName::new(name)).or_default()
    }

    fn group(&mut self, name: &Name, cluster: u16) -> &mut Group {
        let node = self.node(name);
        let at = match node.groups.iter().position(|g| g.cluster == cluster) {
            Some(at) => at,
            None => {
                node.groups.push(Group {
                    cluster,
                    ..Group::default()
                });
                node.groups.len() - 1
            }
        };
        &mut node.groups[at]
    }

    /// `label.parent`; labels were checked to be DNS labels, so this cannot fail in practice.
    fn child(&self, parent: &Name, label: &str) -> Name {
        parent
            .prepend_label(label)
            .unwrap_or_else(|_| parent.clone())
    }

    fn add_replica(
        &mut self,
        cluster: u16,
        cluster_label: &str,
        names: &WorkloadNames,
        replica: &ReplicaStatus,
    ) {
        let svc = self.child(&self.zone.clone(), "svc");
        let namespace = self.child(&svc, &names.namespace);
        let service = self.child(&namespace, &names.label);
        let in_cluster = self.child(&service, cluster_label);
        let replica_label = replica.id.to_ascii_lowercase();
        let replica_name = hansa_core::is_dns_label(&replica_label)
            .then(|| self.child(&in_cluster, &replica_label));

        let mut addresses: Vec<IpAddr> = Vec::new();
        for endpoint in &replica.endpoints {
            if let Ok(address) = endpoint.address.parse::<IpAddr>() {
                if !addresses.contains(&address) {
                    addresses.push(address);
                }
            }
        }
        let ttl = self.ttl;
        for name in [&service, &in_cluster] {
            let group = self.group(name, cluster);
            for address in &addresses {
                let record = address_record(name.clone(), ttl, *address);
                // Replicas on one node share its address: an RRset holds each record once.
                if !group.addresses.contains(&record) {
                    group.addresses.push(record);
                }
            }
        }
        let Some(replica_name) = replica_name else {
            return;
        };
        let glue: Vec<Record> = addresses
            .iter()
            .map(|a| address_record(replica_name.clone(), ttl, *a))
            .collect();
        self.group(&replica_name, cluster).addresses = glue.clone();

        for endpoint in &replica.endpoints {
            let mut labels = Vec::new();
            if names.ports_by_template {
                labels.push((endpoint.name.to_ascii_lowercase(), endpoint.protocol));
            } else if let Some(found) = names.srv_labels.get(&endpoint.name) {
                labels.extend(found.iter().cloned());
            }
            for (port_label, protocol) in labels {
                let port_label = format!("_{port_label}");
                let proto_label = format!("_{protocol}");
                let Ok(srv_name) = service
                    .prepend_label(proto_label.as_str())
                    .and_then(|n| n.prepend_label(port_label.as_str()))
                else {
                    continue;
                };
                let group = self.group(&srv_name, cluster);
                for (tier, records) in group.srv.iter_mut().enumerate() {
                    // Weight 1 per replica: within a priority, a cluster draws traffic in
                    // proportion to its healthy replicas.
                    records.push(Record::from_rdata(
                        srv_name.clone(),
                        ttl,
                        RData::SRV(SRV::new(
                            tier as u16,
                            1,
                            endpoint.port,
                            replica_name.clone(),
                        )),
                    ));
                }
                for record in &glue {
                    if !group.glue.contains(record) {
                        group.glue.push(record.clone());
                    }
                }
            }
        }
    }

    /// Every name between a record's owner and the apex exists (RFC 8020): such names answer
    /// NODATA, not NXDOMAIN.
    fn add_empty_non_terminals(&mut self) {
        let zone = LowerName::new(&self.zone);
        let owners: Vec<LowerName> = self.names.keys().cloned().collect();
        for owner in owners {
            let mut name = owner.base_name();
            while zone.zone_of(&name) && !self.names.contains_key(&name) {
                let parent = name.base_name();
                self.names.insert(name, Node::default());
                name = parent;
            }
        }
    }
}

fn address_record(name: Name, ttl: u32, address: IpAddr) -> Record {
    let rdata = match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, rdata)
}

#[cfg(test)]
mod tests;
