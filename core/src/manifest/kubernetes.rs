//! Kubernetes `apps/v1` Deployments and `v1` Services. A Deployment becomes a workload; a
//! Service joins the Deployment (same namespace) whose pod template labels it selects, across
//! all files of one call. Fields Hansa does not use are accepted and listed as warnings.

mod service;

pub(super) use service::{join, read_service, Service};

use std::collections::BTreeMap;

use serde_json::Value;

use super::quantity;
use super::walk::{describe, Diag, Obj};
use super::Origin;
use crate::model::{
    Amount, EnvConvention, HealthCheck, ManifestFormat, PlacementSpec, PortSpec, Probe, Protocol,
    Resources, TaskTemplate, UpdateStrategy, Workload, DEFAULT_NAMESPACE,
};
use crate::validate::{
    check_dns_label, check_env_name, check_label_key, check_label_value, check_port_name,
};

/// A Deployment read into a workload, waiting for its Service.
pub(crate) struct Deployment {
    pub workload: Workload,
    /// What Services select.
    template_labels: BTreeMap<String, String>,
    /// The Service already joined, to report a second one.
    joined: Option<(Origin, String)>,
}

/// Kubernetes' IntOrString port reference.
enum PortRef {
    Number(u16),
    Name(String),
}

/// `{app: web, tier: front}`, as a user would write it.
fn show_labels(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// The annotation that stages a Deployment's rollouts across clusters: the fields of a native
/// workload's `spec.update.clusters`, in YAML or JSON.
pub const ROLLOUT_ANNOTATION: &str = "hansa.dev/rollout-clusters";

struct Metadata {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    /// From [`ROLLOUT_ANNOTATION`].
    rollout: Option<crate::rollout::ClusterRollout>,
}

/// A Deployment's annotations: Hansa reads its own (`hansa.dev/...`); the others are not used
/// (one warning).
fn annotations(m: &mut Obj<'_>, d: &mut Diag) -> Option<crate::rollout::ClusterRollout> {
    let path = m.path_of("annotations");
    let annotations = m.string_map(d, "annotations");
    let mut rollout = None;
    let mut others = false;
    for (key, value) in &annotations {
        let at = format!("{path}[{key:?}]");
        if key == ROLLOUT_ANNOTATION {
            rollout = super::native::cluster_rollout_text(d, &at, value);
        } else if key.starts_with("hansa.dev/") {
            d.error(
                at,
                format!("unknown Hansa annotation (known: {ROLLOUT_ANNOTATION})"),
            );
        } else {
            others = true;
        }
    }
    if others {
        d.warn(path, "is not used by Hansa (ignored)");
    }
    rollout
}

fn metadata(root: &mut Obj<'_>, d: &mut Diag, use_labels: bool) -> Option<Metadata> {
    let mut m = root.required_obj(d, "metadata")?;
    let name = m.string(d, "name");
    match &name {
        Some(name) => d.check("metadata.name", check_dns_label(name)),
        None if !m.has("name") => d.error("metadata.name", "missing"),
        None => {}
    }
    let namespace = m
        .string(d, "namespace")
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    d.check("metadata.namespace", check_dns_label(&namespace));
    let (labels, rollout) = if use_labels {
        (labels(&mut m, d, "labels"), annotations(&mut m, d))
    } else {
        (BTreeMap::new(), None)
    };
    m.finish(d);
    Some(Metadata {
        name: name?,
        namespace,
        labels,
        rollout,
    })
}

fn labels(o: &mut Obj<'_>, d: &mut Diag, key: &str) -> BTreeMap<String, String> {
    let labels = o.string_map(d, key);
    for (k, v) in &labels {
        let path = format!("{}.{k}", o.path_of(key));
        d.check(path.clone(), check_label_key(k));
        d.check(path, check_label_value(k, v));
    }
    labels
}

/// Reads a Deployment; `None` (with errors in `d`) when it cannot become a workload.
pub(super) fn read_deployment(value: &Value, d: &mut Diag) -> Option<Deployment> {
    let errors_before = d.errors.len();
    let mut root = Obj::new(value, "", d)?;
    root.skip("apiVersion");
    root.skip("kind");
    let meta = metadata(&mut root, d, true);
    let mut spec = root.required_obj(d, "spec")?;
    let replicas = if spec.has("replicas") {
        spec.int_in(d, "replicas", 0, u32::MAX.into())
    } else {
        Some(1)
    };
    let selector = spec.obj(d, "selector").map(|mut s| {
        let match_labels = s.string_map(d, "matchLabels");
        let expressions = s.list(d, "matchExpressions");
        s.finish(d);
        (match_labels, expressions)
    });
    // An empty selector is as good as none: derive it too.
    let selector =
        selector.filter(|(labels, expressions)| !labels.is_empty() || !expressions.is_empty());
    let mut template_labels = BTreeMap::new();
    let mut task = None;
    if let Some(mut template) = spec.required_obj(d, "template") {
        if let Some(mut m) = template.obj(d, "metadata") {
            template_labels = labels(&mut m, d, "labels");
            m.finish(d);
        }
        if let Some(mut pod) = template.required_obj(d, "spec") {
            task = pod_spec(&mut pod, d);
            pod.finish(d);
        }
        template.finish(d);
    }
    check_selector(selector, &template_labels, d);
    let update = match spec.obj(d, "strategy") {
        Some(st) => strategy(st, d),
        None => UpdateStrategy::default(),
    };
    let mut rollout = crate::rollout::RolloutSpec::default();
    if spec.has("revisionHistoryLimit") {
        if let Some(n) = spec.int_in::<u32>(d, "revisionHistoryLimit", 0, 1000) {
            rollout.revision_history_limit = n;
        }
    }
    spec.finish(d);
    root.finish(d);

    let (meta, template, replicas) = (meta?, task?, replicas?);
    if d.errors.len() != errors_before {
        return None;
    }
    rollout.clusters = meta.rollout;
    let labels = if meta.labels.is_empty() {
        template_labels.clone()
    } else {
        meta.labels
    };
    Some(Deployment {
        workload: Workload {
            name: meta.name,
            namespace: meta.namespace,
            labels,
            format: ManifestFormat::Kubernetes,
            replicas,
            template,
            placement: PlacementSpec::default(),
            service: None,
            update,
            rollout,
        },
        template_labels,
        joined: None,
    })
}

/// A Deployment's `strategy`: `RollingUpdate` with `maxSurge`/`maxUnavailable` (Kubernetes'
/// defaults, 25% each), or `Recreate` (every old replica stops before new ones start).
fn strategy(mut st: Obj<'_>, d: &mut Diag) -> UpdateStrategy {
    let mut out = UpdateStrategy::default();
    match st.str(d, "type") {
        None | Some("RollingUpdate") => {
            if let Some(mut r) = st.obj(d, "rollingUpdate") {
                for (key, slot) in [
                    ("maxSurge", &mut out.max_surge),
                    ("maxUnavailable", &mut out.max_unavailable),
                ] {
                    if let Some(v) = r.get(key) {
                        match Amount::parse(v) {
                            Ok(a) => *slot = a,
                            Err(e) => d.error(r.path_of(key), e),
                        }
                    }
                }
                if out.max_surge.is_zero() && out.max_unavailable.is_zero() {
                    d.error(
                        r.path_of("maxUnavailable"),
                        "may not be 0 when maxSurge is 0",
                    );
                }
                r.finish(d);
            }
        }
        Some("Recreate") => {
            out = UpdateStrategy {
                max_surge: Amount::Count(0),
                max_unavailable: Amount::Percent(100),
            };
        }
        Some(other) => d.error(
            st.path_of("type"),
            format!("must be RollingUpdate or Recreate (got {other:?})"),
        ),
    }
    st.finish(d);
    out
}

type Selector<'v> = (BTreeMap<String, String>, Vec<(String, &'v Value)>);

/// Kubernetes requires a selector that matches the pod template's labels. A missing one is
/// derived from the labels (with a warning), as older API versions did.
fn check_selector(selector: Option<Selector<'_>>, labels: &BTreeMap<String, String>, d: &mut Diag) {
    let Some((match_labels, expressions)) = selector else {
        if labels.is_empty() {
            d.error(
                "spec.selector",
                "missing (required by apps/v1 Deployment), and spec.template.metadata.labels is empty too; add labels to the pod template and a selector matching them",
            );
        } else {
            d.warn(
                "spec.selector",
                format!(
                    "missing (required by apps/v1 Deployment); derived from spec.template.metadata.labels {}",
                    show_labels(labels)
                ),
            );
        }
        return;
    };
    let mut mismatches = Vec::new();
    for (k, v) in &match_labels {
        if labels.get(k) != Some(v) {
            mismatches.push(format!("matchLabels {k}: {v}"));
        }
    }
    for (path, e) in expressions {
        let Some(mut e) = Obj::new(e, path, d) else {
            continue;
        };
        let key = e.string(d, "key").unwrap_or_default();
        let op = e.string(d, "operator").unwrap_or_default();
        let values = e.string_list(d, "values");
        let have = labels.get(&key);
        let ok = match op.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => have.is_none_or(|h| !values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => {
                d.error(
                    e.path_of("operator"),
                    format!("unknown operator {op:?} (use In, NotIn, Exists or DoesNotExist)"),
                );
                true
            }
        };
        if !ok {
            mismatches.push(format!("matchExpressions {key} {op} {values:?}"));
        }
        e.finish(d);
    }
    if !mismatches.is_empty() {
        d.error(
            "spec.selector",
            format!(
                "does not match spec.template.metadata.labels {} ({}); Kubernetes rejects such a Deployment",
                show_labels(labels),
                mismatches.join(", ")
            ),
        );
    }
}

fn pod_spec(pod: &mut Obj<'_>, d: &mut Diag) -> Option<TaskTemplate> {
    let containers = pod.list(d, "containers");
    let Some((path, first)) = containers.first() else {
        d.error(
            "spec.template.spec.containers",
            "missing: a Deployment needs one container",
        );
        return None;
    };
    if let Some((path, _)) = containers.get(1) {
        d.error(
            path.clone(),
            "a second container is not supported: Hansa runs one task per replica; put each container in a Deployment of its own",
        );
    }
    let mut c = Obj::new(first, path.clone(), d)?;
    let template = container(&mut c, d);
    c.finish(d);
    template
}

fn container(c: &mut Obj<'_>, d: &mut Diag) -> Option<TaskTemplate> {
    c.skip("name");
    let image = c.string(d, "image");
    if image.is_none() && !c.has("image") {
        d.error(
            c.path_of("image"),
            "missing: a Deployment's container needs an image",
        );
    }
    let command = c.string_list(d, "command");
    let args = c.string_list(d, "args");
    let mut env = BTreeMap::new();
    for (path, item) in c.list(d, "env") {
        let Some(mut e) = Obj::new(item, path, d) else {
            continue;
        };
        let name = e.string(d, "name").unwrap_or_default();
        d.check(e.path_of("name"), check_env_name(&name));
        if e.get("valueFrom").is_some() {
            d.warn(
                e.path_of("valueFrom"),
                format!("is not supported by Hansa; {name} is not set (ignored)"),
            );
        } else {
            env.insert(name, e.string(d, "value").unwrap_or_default());
        }
        e.finish(d);
    }
    let ports = container_ports(c, d);
    let resources = c
        .obj(d, "resources")
        .map(|r| resources(r, d))
        .unwrap_or_default();
    let health_check = probes(c, d, &ports);
    Some(TaskTemplate {
        image: Some(image?),
        command,
        args,
        env,
        ports,
        resources,
        health_check,
        env_convention: EnvConvention::Hansa,
        image_pull_policy: Default::default(),
        labels: Default::default(),
    })
}

fn protocol(o: &mut Obj<'_>, d: &mut Diag) -> Protocol {
    match o.str(d, "protocol") {
        None => Protocol::Tcp,
        Some(p) if p.eq_ignore_ascii_case("tcp") => Protocol::Tcp,
        Some(p) if p.eq_ignore_ascii_case("udp") => Protocol::Udp,
        Some(p) => {
            d.error(
                o.path_of("protocol"),
                format!("{p} is not supported by Hansa (use TCP or UDP)"),
            );
            Protocol::Tcp
        }
    }
}

fn container_ports(c: &mut Obj<'_>, d: &mut Diag) -> Vec<PortSpec> {
    let mut ports: Vec<PortSpec> = Vec::new();
    for (path, item) in c.list(d, "ports") {
        let Some(mut p) = Obj::new(item, path, d) else {
            continue;
        };
        let container_port = p.int_in::<u16>(d, "containerPort", 1, 65535);
        if !p.has("containerPort") {
            d.error(p.path_of("containerPort"), "missing");
        }
        // hostPort 0 means none in Kubernetes.
        let host_port = p.int_in::<u16>(d, "hostPort", 0, 65535).filter(|&h| h != 0);
        let name = match p.string(d, "name") {
            Some(name) => {
                d.check(p.path_of("name"), check_port_name(&name));
                name
            }
            None => format!("p{}", container_port.unwrap_or(0)),
        };
        if ports.iter().any(|other| other.name == name) {
            d.error(p.path_of("name"), format!("duplicate port name {name:?}"));
        }
        let protocol = protocol(&mut p, d);
        p.finish(d);
        ports.push(PortSpec {
            name,
            container_port,
            host_port,
            protocol,
        });
    }
    ports
}

/// Requests, with limits standing in for missing requests (as Kubernetes defaults them).
fn resources(mut r: Obj<'_>, d: &mut Diag) -> Resources {
    let requests = r.obj(d, "requests");
    let limits = r.obj(d, "limits");
    if let Some(l) = &limits {
        d.warn(
            l.path.clone(),
            "are not enforced by Hansa (placement uses requests; a limit stands in for a missing request)",
        );
    }
    let mut out = Resources::ZERO;
    let fields: [(&str, quantity::Reader, &mut u64); 3] = [
        ("cpu", quantity::cpu_millis, &mut out.cpu_millis),
        ("memory", quantity::bytes, &mut out.memory_bytes),
        ("ephemeral-storage", quantity::bytes, &mut out.disk_bytes),
    ];
    let (mut requests, mut limits) = (requests, limits);
    for (key, parse, slot) in fields {
        let mut read = |o: &mut Option<Obj<'_>>| -> Option<u64> {
            let o = o.as_mut()?;
            let path = o.path_of(key);
            let text = match o.get(key)? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    d.error(
                        path,
                        format!(
                            "expected a quantity like 100m or 64Mi, got {}",
                            describe(other)
                        ),
                    );
                    return None;
                }
            };
            parse(&text).map_err(|e| d.error(path, e.to_string())).ok()
        };
        let request = read(&mut requests);
        let limit = read(&mut limits);
        *slot = request.or(limit).unwrap_or(0);
    }
    for o in [requests, limits].into_iter().flatten() {
        o.finish(d);
    }
    r.finish(d);
    out
}

/// The readiness probe (it gates traffic), else the liveness probe.
fn probes(c: &mut Obj<'_>, d: &mut Diag, ports: &[PortSpec]) -> Option<HealthCheck> {
    let readiness = c.obj(d, "readinessProbe");
    let liveness = c.obj(d, "livenessProbe");
    let (mut chosen, other) = match (readiness, liveness) {
        (Some(r), l) => (r, l),
        (None, Some(l)) => (l, None),
        (None, None) => return None,
    };
    if let Some(l) = other {
        d.warn(
            l.path.clone(),
            "is not used by Hansa: the readinessProbe is the health check (ignored)",
        );
    }
    let hc = probe(&mut chosen, d, ports);
    chosen.finish(d);
    hc
}

fn probe(p: &mut Obj<'_>, d: &mut Diag, ports: &[PortSpec]) -> Option<HealthCheck> {
    let probe = if let Some(mut h) = p.obj(d, "httpGet") {
        let port = probe_port(&mut h, d, ports);
        let path = h.string(d, "path").unwrap_or_else(Probe::default_path);
        h.finish(d);
        Probe::Http { port: port?, path }
    } else if let Some(mut t) = p.obj(d, "tcpSocket") {
        let port = probe_port(&mut t, d, ports);
        t.finish(d);
        Probe::Tcp { port: port? }
    } else if let Some(mut e) = p.obj(d, "exec") {
        let command = e.string_list(d, "command");
        e.finish(d);
        Probe::Exec { command }
    } else {
        if !p.has("grpc") {
            d.error(p.path.clone(), "needs one of httpGet, tcpSocket or exec");
        }
        return None;
    };
    let mut hc = HealthCheck::with_probe(probe);
    let max = i64::from(u32::MAX);
    let mut time =
        |key: &str, min: i64, default: u32| p.int_in(d, key, min, max).unwrap_or(default);
    hc.grace_seconds = time("initialDelaySeconds", 0, hc.grace_seconds);
    hc.interval_seconds = time("periodSeconds", 1, hc.interval_seconds);
    hc.timeout_seconds = time("timeoutSeconds", 1, hc.timeout_seconds);
    hc.failure_threshold = time("failureThreshold", 1, hc.failure_threshold);
    hc.success_threshold = time("successThreshold", 1, hc.success_threshold);
    Some(hc)
}

fn show_ports(ports: &[PortSpec]) -> String {
    if ports.is_empty() {
        return "none".to_string();
    }
    let shown: Vec<String> = ports
        .iter()
        .map(|p| match p.container_port {
            Some(n) => format!("{} {n}", p.name),
            None => p.name.clone(),
        })
        .collect();
    shown.join(", ")
}

/// A probe's `port` (a number or a name) as the name of a container port.
fn probe_port(o: &mut Obj<'_>, d: &mut Diag, ports: &[PortSpec]) -> Option<String> {
    let path = o.path_of("port");
    let Some(v) = o.get("port") else {
        d.error(path, "missing");
        return None;
    };
    let found = match port_ref(v, &path, d)? {
        PortRef::Number(n) => ports.iter().find(|p| p.container_port == Some(n)),
        PortRef::Name(name) => ports.iter().find(|p| p.name == name),
    };
    match found {
        Some(p) => Some(p.name.clone()),
        None => {
            d.error(
                path,
                format!(
                    "{} is not a port of this container (its ports: {})",
                    v,
                    show_ports(ports)
                ),
            );
            None
        }
    }
}

fn port_ref(v: &Value, path: &str, d: &mut Diag) -> Option<PortRef> {
    match v {
        Value::String(s) => Some(PortRef::Name(s.clone())),
        Value::Number(n) => match n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&n| n != 0)
        {
            Some(n) => Some(PortRef::Number(n)),
            None => {
                d.error(path, format!("must be between 1 and 65535 (got {n})"));
                None
            }
        },
        other => {
            d.error(
                path,
                format!("expected a port number or name, got {}", describe(other)),
            );
            None
        }
    }
}
