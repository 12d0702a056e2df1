//! The native `hansa.dev/v1` `Workload` manifest. Strict: unknown fields are errors, reported
//! with their path.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::quantity;
use super::walk::Diag;
use crate::model::{
    Amount, ClusterAffinity, EnvConvention, HealthCheck, ManifestFormat, PlacementSpec, PortSpec,
    Probe, Protocol, ReplicaScheduling, Resources, ServicePort, ServiceSpec, StaticWeight,
    TaskTemplate, UpdateStrategy, Weighting, Workload, DEFAULT_NAMESPACE,
};
use crate::policy::{AffinityGroup, Requirement, SpreadConstraint, SpreadKey, Toleration};
use crate::rollout::{ClusterOrder, ClusterRollout, OnFailure, RolloutSpec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Manifest {
    #[allow(dead_code)] // checked before this document was chosen
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Metadata {
    name: String,
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    /// Signed so that `-1` is reported as out of range rather than as a type error.
    #[serde(default = "one")]
    replicas: i64,
    template: Template,
    placement: Option<Placement>,
    service: Option<Service>,
    update: Option<Update>,
}

/// `spec.update`: Kubernetes' rolling-update bounds within a cluster, the staged rollout
/// across clusters, and the revisions kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Update {
    max_surge: Option<Value>,
    max_unavailable: Option<Value>,
    clusters: Option<Clusters>,
    revision_history_limit: Option<i64>,
}

/// `spec.update.clusters`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Clusters {
    max_parallel: Option<i64>,
    order: Option<Value>,
    min_healthy_seconds: Option<i64>,
    on_failure: Option<String>,
    progress_deadline_seconds: Option<i64>,
    #[serde(default)]
    auto_revert: bool,
}

fn one() -> i64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Template {
    image: Option<String>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    ports: Vec<Port>,
    resources: Option<ResourceRequests>,
    health_check: Option<Health>,
    #[serde(default)]
    image_pull_policy: crate::model::ImagePullPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Port {
    name: String,
    container_port: Option<i64>,
    host_port: Option<i64>,
    #[serde(default)]
    protocol: Protocol,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ResourceRequests {
    cpu: Option<Scalar>,
    memory: Option<Scalar>,
    disk: Option<Scalar>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Health {
    http: Option<HttpProbe>,
    tcp: Option<TcpProbe>,
    exec: Option<ExecProbe>,
    grace_period_seconds: Option<i64>,
    interval_seconds: Option<i64>,
    timeout_seconds: Option<i64>,
    failure_threshold: Option<i64>,
    success_threshold: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HttpProbe {
    port: Option<Scalar>,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TcpProbe {
    port: Option<Scalar>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExecProbe {
    command: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Placement {
    cluster_affinity: Option<Affinity>,
    #[serde(default)]
    cluster_affinities: Vec<Group>,
    #[serde(default)]
    overflow: bool,
    replica_scheduling: Option<Scheduling>,
    #[serde(default)]
    spread_constraints: Vec<Spread>,
    #[serde(default)]
    tolerations: Vec<Toleration>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    preemption: bool,
    #[serde(default)]
    constraints: Vec<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Affinity {
    #[serde(default)]
    cluster_names: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Requirement>,
    #[serde(default)]
    field_selector: Vec<Requirement>,
}

impl From<Affinity> for ClusterAffinity {
    fn from(a: Affinity) -> Self {
        ClusterAffinity {
            cluster_names: a.cluster_names,
            exclude: a.exclude,
            match_labels: a.match_labels,
            match_expressions: a.match_expressions,
            field_selector: a.field_selector,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Group {
    name: String,
    #[serde(flatten)]
    affinity: Affinity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spread {
    spread_by: Option<SpreadField>,
    spread_by_label: Option<String>,
    #[serde(default)]
    min_groups: u32,
    max_groups: Option<u32>,
    max_skew: Option<u32>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
enum SpreadField {
    Region,
    Zone,
    Provider,
    Cluster,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Scheduling {
    #[serde(rename = "type")]
    kind: Option<SchedulingKind>,
    weighting: Option<WeightingKind>,
    static_weights: Option<Vec<Weight>>,
    #[serde(default)]
    min_per_cluster: u32,
    max_per_cluster: Option<u32>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
enum SchedulingKind {
    Divided,
    Duplicated,
    Aggregated,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
enum WeightingKind {
    Equal,
    Static,
    AvailableCapacity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Weight {
    clusters: Affinity,
    weight: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Service {
    name: Option<String>,
    #[serde(default)]
    ports: Vec<ServicePortManifest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServicePortManifest {
    name: String,
    port: i64,
    target_port: Option<Scalar>,
    #[serde(default)]
    protocol: Protocol,
}

/// A value users write either as a string or as a number: `cpu: 0.5` or `cpu: 500m`,
/// `port: 0` or `port: http`. Kept as text.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// Reads a native document; `None` (with errors in `d`) when it is not a valid manifest.
pub(super) fn read(value: &Value, d: &mut Diag) -> Option<Workload> {
    let manifest: Manifest = match serde_path_to_error::deserialize(value) {
        Ok(m) => m,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            // Counts are read as i64 so that negatives get a range error; say it plainly.
            let message = e
                .into_inner()
                .to_string()
                .replace("expected i64", "expected an integer");
            d.error(path, message);
            return None;
        }
    };
    let errors_before = d.errors.len();
    let Manifest { metadata, spec, .. } = manifest;
    let replicas = range(d, "spec.replicas", spec.replicas, 0, u32::MAX.into());
    let template = template(d, spec.template);
    let placement = spec
        .placement
        .map(|p| placement(d, "spec.placement", p))
        .unwrap_or_default();
    let service = spec
        .service
        .map(|s| service(d, s, &metadata.name, &template.ports));
    let (update, rollout) = spec.update.map(|u| update(d, u)).unwrap_or_default();
    (d.errors.len() == errors_before).then(|| Workload {
        name: metadata.name,
        namespace: metadata
            .namespace
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        labels: metadata.labels,
        format: ManifestFormat::Native,
        replicas: replicas.unwrap_or_default(),
        template,
        placement,
        service,
        update,
        rollout,
    })
}

fn update(d: &mut Diag, u: Update) -> (UpdateStrategy, RolloutSpec) {
    let mut rollout = RolloutSpec::default();
    if let Some(limit) = u.revision_history_limit {
        if let Some(n) = range(d, "spec.update.revisionHistoryLimit", limit, 1, 1000) {
            rollout.revision_history_limit = n;
        }
    }
    rollout.clusters = u.clusters.map(|c| clusters(d, c, "spec.update.clusters"));
    let mut out = UpdateStrategy::default();
    for (key, value, slot) in [
        ("maxSurge", u.max_surge, &mut out.max_surge),
        (
            "maxUnavailable",
            u.max_unavailable,
            &mut out.max_unavailable,
        ),
    ] {
        if let Some(v) = value {
            match Amount::parse(&v) {
                Ok(a) => *slot = a,
                Err(e) => d.error(format!("spec.update.{key}"), e),
            }
        }
    }
    if out.max_surge.is_zero() && out.max_unavailable.is_zero() {
        d.error(
            "spec.update.maxUnavailable",
            "may not be 0 when maxSurge is 0",
        );
    }
    (out, rollout)
}

/// A staged rollout written as text, where Kubernetes and Marathon manifests have no field for
/// it (an annotation, a label): the fields of `spec.update.clusters`, in YAML or JSON
/// (`{maxParallel: 1, order: byRegion, autoRevert: true}`). Errors name `path`.
pub(super) fn cluster_rollout_text(d: &mut Diag, path: &str, text: &str) -> Option<ClusterRollout> {
    match serde_norway::from_str::<Option<Clusters>>(text) {
        Ok(Some(c)) => Some(clusters(d, c, path)),
        Ok(None) => Some(ClusterRollout::default()),
        Err(e) => {
            d.error(
                path,
                format!(
                    "must hold the fields of spec.update.clusters in YAML or JSON \
                     (maxParallel, order, minHealthySeconds, onFailure, \
                     progressDeadlineSeconds, autoRevert): {e}"
                ),
            );
            None
        }
    }
}

fn clusters(d: &mut Diag, c: Clusters, base: &str) -> ClusterRollout {
    let mut out = ClusterRollout::default();
    let day = 86_400;
    if let Some(v) = c.max_parallel {
        out.max_parallel = range(d, &format!("{base}.maxParallel"), v, 1, 10_000).unwrap_or(1);
    }
    if let Some(v) = c.min_healthy_seconds {
        out.min_healthy_seconds =
            range(d, &format!("{base}.minHealthySeconds"), v, 0, day).unwrap_or_default();
    }
    if let Some(v) = c.progress_deadline_seconds {
        out.progress_deadline_seconds =
            range(d, &format!("{base}.progressDeadlineSeconds"), v, 1, 7 * day).unwrap_or(1);
    }
    match c.on_failure.as_deref() {
        None | Some("pause") => {}
        Some("rollback") => out.on_failure = OnFailure::Rollback,
        Some(other) => d.error(
            format!("{base}.onFailure"),
            format!("must be pause or rollback (got {other:?})"),
        ),
    }
    out.auto_revert = c.auto_revert;
    match c.order {
        None => {}
        Some(Value::String(s)) if s == "byRegion" => out.order = ClusterOrder::ByRegion,
        Some(Value::Array(items)) => {
            let mut names: Vec<String> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let path = format!("{base}.order[{i}]");
                match item.as_str() {
                    Some(name) if names.iter().any(|n| n == name) => {
                        d.error(path, format!("cluster {name} is listed twice"));
                    }
                    Some(name) if !name.is_empty() => names.push(name.to_string()),
                    _ => d.error(path, format!("must be a cluster name (got {item})")),
                }
            }
            if items.is_empty() {
                d.error(format!("{base}.order"), "an empty list names no cluster");
            }
            out.order = ClusterOrder::Names(names);
        }
        Some(other) => d.error(
            format!("{base}.order"),
            format!("must be a list of cluster names or \"byRegion\" (got {other})"),
        ),
    }
    out
}

/// `value` as a `T` within `min..=max`, or an error at `path`.
fn range<T: TryFrom<i64>>(d: &mut Diag, path: &str, value: i64, min: i64, max: i64) -> Option<T> {
    if value < min {
        d.error(path, format!("must be >= {min} (got {value})"));
        None
    } else if value > max {
        d.error(path, format!("must be <= {max} (got {value})"));
        None
    } else {
        T::try_from(value).ok()
    }
}

fn port_number(d: &mut Diag, path: String, value: Option<i64>) -> Option<u16> {
    let value = value?;
    if !(1..=65535).contains(&value) {
        d.error(path, format!("must be between 1 and 65535 (got {value})"));
        return None;
    }
    u16::try_from(value).ok()
}

fn template(d: &mut Diag, t: Template) -> TaskTemplate {
    let ports = t
        .ports
        .into_iter()
        .enumerate()
        .map(|(i, p)| PortSpec {
            container_port: port_number(
                d,
                format!("spec.template.ports[{i}].containerPort"),
                p.container_port,
            ),
            host_port: port_number(d, format!("spec.template.ports[{i}].hostPort"), p.host_port),
            name: p.name,
            protocol: p.protocol,
        })
        .collect();
    let mut resources = Resources::ZERO;
    if let Some(r) = t.resources {
        let base = "spec.template.resources";
        let mut read = |field: &str, q: Option<Scalar>, parse: quantity::Reader| {
            let q = q?;
            parse(&q.0)
                .map_err(|e| d.error(format!("{base}.{field}"), e.to_string()))
                .ok()
        };
        resources.cpu_millis = read("cpu", r.cpu, quantity::cpu_millis).unwrap_or(0);
        resources.memory_bytes = read("memory", r.memory, quantity::bytes).unwrap_or(0);
        resources.disk_bytes = read("disk", r.disk, quantity::bytes).unwrap_or(0);
    }
    TaskTemplate {
        image: t.image,
        command: t.command,
        args: t.args,
        env: t.env,
        ports,
        resources,
        health_check: t.health_check.and_then(|h| health_check(d, h)),
        env_convention: EnvConvention::Hansa,
        image_pull_policy: t.image_pull_policy,
        labels: Default::default(),
    }
}

fn health_check(d: &mut Diag, h: Health) -> Option<HealthCheck> {
    let base = "spec.template.healthCheck";
    let mut probes = Vec::new();
    if let Some(p) = h.http {
        probes.push(Probe::Http {
            port: p.port.map(|s| s.0).unwrap_or_default(),
            path: p.path.unwrap_or_else(Probe::default_path),
        });
    }
    if let Some(p) = h.tcp {
        probes.push(Probe::Tcp {
            port: p.port.map(|s| s.0).unwrap_or_default(),
        });
    }
    if let Some(p) = h.exec {
        probes.push(Probe::Exec { command: p.command });
    }
    if probes.len() != 1 {
        d.error(
            base,
            format!(
                "needs exactly one of http, tcp or exec (got {})",
                probes.len()
            ),
        );
        return None;
    }
    let mut hc = HealthCheck::with_probe(probes.pop()?);
    let mut time = |field: &str, value: Option<i64>, min: i64, default: u32| match value {
        Some(v) => range(d, &format!("{base}.{field}"), v, min, u32::MAX.into()).unwrap_or(default),
        None => default,
    };
    hc.grace_seconds = time(
        "gracePeriodSeconds",
        h.grace_period_seconds,
        0,
        hc.grace_seconds,
    );
    hc.interval_seconds = time(
        "intervalSeconds",
        h.interval_seconds,
        1,
        hc.interval_seconds,
    );
    hc.timeout_seconds = time("timeoutSeconds", h.timeout_seconds, 1, hc.timeout_seconds);
    hc.failure_threshold = time(
        "failureThreshold",
        h.failure_threshold,
        1,
        hc.failure_threshold,
    );
    hc.success_threshold = time(
        "successThreshold",
        h.success_threshold,
        1,
        hc.success_threshold,
    );
    Some(hc)
}

/// Reads a native `placement` block; `root` is its path (`spec.placement`, or a policy's).
pub(super) fn placement(d: &mut Diag, root: &str, p: Placement) -> PlacementSpec {
    let base = format!("{root}.replicaScheduling");
    let base = base.as_str();
    let (mut min_per_cluster, mut max_per_cluster) = (0, None);
    let replica_scheduling = match p.replica_scheduling {
        None => ReplicaScheduling::default(),
        Some(s) => {
            min_per_cluster = s.min_per_cluster;
            max_per_cluster = s.max_per_cluster;
            if max_per_cluster.is_some_and(|max| max < min_per_cluster) {
                d.error(
                    format!("{base}.maxPerCluster"),
                    format!("must be >= minPerCluster ({min_per_cluster})"),
                );
            }
            let kind = s.kind.unwrap_or(SchedulingKind::Divided);
            let weighting = s.weighting.unwrap_or(WeightingKind::Equal);
            if kind != SchedulingKind::Divided && s.weighting.is_some() {
                d.error(
                    format!("{base}.weighting"),
                    format!("weighting divides replicas, so it needs type: Divided (got {kind:?})"),
                );
            }
            let weights = s.static_weights.map(|ws| {
                ws.into_iter()
                    .enumerate()
                    .map(|(i, w)| StaticWeight {
                        weight: range(
                            d,
                            &format!("{base}.staticWeights[{i}].weight"),
                            w.weight,
                            0,
                            u32::MAX.into(),
                        )
                        .unwrap_or(0),
                        clusters: w.clusters.into(),
                    })
                    .collect::<Vec<_>>()
            });
            match (weighting, weights) {
                (WeightingKind::Static, Some(weights)) if !weights.is_empty() => {
                    ReplicaScheduling::Divided {
                        weighting: Weighting::Static { weights },
                    }
                }
                (WeightingKind::Static, _) => {
                    d.error(
                        format!("{base}.staticWeights"),
                        "weighting: Static needs staticWeights",
                    );
                    ReplicaScheduling::default()
                }
                (other, Some(_)) => {
                    d.error(
                        format!("{base}.staticWeights"),
                        format!("staticWeights need weighting: Static (got {other:?})"),
                    );
                    ReplicaScheduling::default()
                }
                (_, None) if kind == SchedulingKind::Duplicated => ReplicaScheduling::Duplicated,
                (_, None) if kind == SchedulingKind::Aggregated => ReplicaScheduling::Aggregated,
                (WeightingKind::Equal, None) => ReplicaScheduling::Divided {
                    weighting: Weighting::Equal,
                },
                (WeightingKind::AvailableCapacity, None) => ReplicaScheduling::Divided {
                    weighting: Weighting::AvailableCapacity,
                },
            }
        }
    };
    let spread_constraints = p
        .spread_constraints
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let path = format!("{root}.spreadConstraints[{i}]");
            let spread_by = match (s.spread_by, s.spread_by_label) {
                (Some(field), None) => match field {
                    SpreadField::Region => SpreadKey::Region,
                    SpreadField::Zone => SpreadKey::Zone,
                    SpreadField::Provider => SpreadKey::Provider,
                    SpreadField::Cluster => SpreadKey::Cluster,
                },
                (None, Some(label)) => SpreadKey::Label(label),
                _ => {
                    d.error(path, "needs exactly one of spreadBy or spreadByLabel");
                    return None;
                }
            };
            if s.max_groups.is_some_and(|max| max < s.min_groups) {
                d.error(
                    format!("{path}.maxGroups"),
                    format!("must be >= minGroups ({})", s.min_groups),
                );
            }
            Some(SpreadConstraint {
                spread_by,
                min_groups: s.min_groups,
                max_groups: s.max_groups,
                max_skew: s.max_skew,
            })
        })
        .collect();
    PlacementSpec {
        cluster_affinity: p.cluster_affinity.map(Into::into),
        cluster_affinities: p
            .cluster_affinities
            .into_iter()
            .map(|g| AffinityGroup {
                name: g.name,
                affinity: g.affinity.into(),
            })
            .collect(),
        overflow: p.overflow,
        replica_scheduling,
        spread_constraints,
        tolerations: p.tolerations,
        min_per_cluster,
        max_per_cluster,
        priority: p.priority,
        preemption: p.preemption,
        constraints: p.constraints,
        policy: String::new(),
    }
}

fn service(d: &mut Diag, s: Service, workload: &str, ports: &[PortSpec]) -> ServiceSpec {
    let ports = s
        .ports
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let path = format!("spec.service.ports[{i}]");
            let target_port = match p.target_port {
                None => p.name.clone(),
                Some(Scalar(t)) => match t.parse::<u16>() {
                    Ok(number) => ports
                        .iter()
                        .find(|tp| tp.container_port == Some(number))
                        .or_else(|| ports.iter().find(|tp| tp.host_port == Some(number)))
                        .map(|tp| tp.name.clone())
                        .unwrap_or_else(|| {
                            d.error(
                                format!("{path}.targetPort"),
                                format!("no template port has containerPort or hostPort {number}"),
                            );
                            t
                        }),
                    Err(_) => t,
                },
            };
            ServicePort {
                port: port_number(d, format!("{path}.port"), Some(p.port)).unwrap_or(0),
                name: p.name,
                target_port,
                protocol: p.protocol,
            }
        })
        .collect();
    ServiceSpec {
        name: s.name.unwrap_or_else(|| workload.to_string()),
        ports,
    }
}
