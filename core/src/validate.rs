//! Validation of a [`Workload`] with field paths in the native manifest's vocabulary
//! (`spec.template.ports[1].name`), so errors point at what a user wrote.
//!
//! The single-value checks (`check_*`) are shared with the Kubernetes and Marathon readers,
//! which report them at their own paths.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::model::{ClusterAffinity, HealthCheck, Probe, ReplicaScheduling, Weighting, Workload};
use crate::policy::{Requirement, SelectorOperator, TolerationOperator};

/// Field path and message of every problem found; empty when the workload is valid.
pub fn validate_workload(w: &Workload) -> Vec<(String, String)> {
    let mut v = Problems::default();
    v.check("metadata.name", check_dns_label(&w.name));
    v.check("metadata.namespace", check_dns_label(&w.namespace));
    v.labels("metadata.labels", &w.labels);
    template(&mut v, w);
    placement(&mut v, w);
    service(&mut v, w);
    v.0
}

/// RFC 1123 label: 1 to 63 of `a-z`, `0-9` and `-`, starting and ending with a letter or digit.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let inner_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let edge_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(inner_ok)
        && b.first().is_some_and(edge_ok)
        && b.last().is_some_and(edge_ok)
}

pub fn check_dns_label(s: &str) -> Result<(), String> {
    if is_dns_label(s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS label (1-63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
        ))
    }
}

/// A port name: a DNS label of at most 15 characters with at least one letter (as Kubernetes
/// requires), so that it can never be mistaken for a port number or index.
pub fn check_port_name(s: &str) -> Result<(), String> {
    check_dns_label(s)?;
    if s.len() > 15 {
        return Err(format!("port name {s:?} is longer than 15 characters"));
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        return Err(format!("port name {s:?} needs at least one letter"));
    }
    Ok(())
}

/// A label key: `name` or `prefix/name`, Kubernetes-style.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(is_dns_label) {
            return Err(format!(
                "label key {key:?}: the prefix before '/' must be a DNS subdomain like example.com"
            ));
        }
    }
    if name.is_empty() || !is_label_text(name) {
        return Err(format!(
            "label key {key:?}: the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

pub fn check_label_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_text(value) {
        Ok(())
    } else {
        Err(format!(
            "label {key}: value {value:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_label_text(s: &str) -> bool {
    let b = s.as_bytes();
    let edge_ok = |c: &u8| c.is_ascii_alphanumeric();
    b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b.first().is_some_and(edge_ok)
        && b.last().is_some_and(edge_ok)
}

/// An environment variable name: anything a process environment can hold.
pub fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        Err(format!(
            "environment variable name {name:?} must be non-empty and contain neither '=' nor NUL"
        ))
    } else {
        Ok(())
    }
}

/// Marathon's constraint operators; `value` says whether the operator takes one.
const CONSTRAINT_OPERATORS: &[(&str, Value)] = &[
    ("UNIQUE", Value::None),
    ("CLUSTER", Value::Optional),
    ("GROUP_BY", Value::Optional),
    ("LIKE", Value::Required),
    ("UNLIKE", Value::Required),
    ("MAX_PER", Value::Required),
    ("IS", Value::Required),
];

#[derive(Clone, Copy, PartialEq)]
enum Value {
    None,
    Optional,
    Required,
}

/// A Marathon-style constraint: `[field, OPERATOR]` or `[field, OPERATOR, value]`.
pub fn check_constraint(c: &[String]) -> Result<(), String> {
    let (field, op, value) = match c {
        [field, op] => (field, op, None),
        [field, op, value] => (field, op, Some(value)),
        _ => {
            return Err(format!(
                "a constraint is [field, OPERATOR] or [field, OPERATOR, value] (got {} items)",
                c.len()
            ))
        }
    };
    if field.is_empty() {
        return Err("the constraint's field must not be empty".to_string());
    }
    let Some((_, takes)) = CONSTRAINT_OPERATORS.iter().find(|(name, _)| name == op) else {
        let known: Vec<&str> = CONSTRAINT_OPERATORS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "unknown constraint operator {op:?} (use one of {})",
            known.join(", ")
        ));
    };
    match (takes, value) {
        (Value::None, Some(_)) => Err(format!("operator {op} takes no value")),
        (Value::Required, None) => Err(format!("operator {op} needs a value")),
        _ => Ok(()),
    }
}

#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn check(&mut self, path: impl Into<String>, r: Result<(), String>) {
        if let Err(message) = r {
            self.0.push((path.into(), message));
        }
    }

    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push((path.into(), message.into()));
    }

    fn labels(&mut self, path: &str, labels: &BTreeMap<String, String>) {
        for (key, value) in labels {
            self.check(format!("{path}.{key}"), check_label_key(key));
            self.check(format!("{path}.{key}"), check_label_value(key, value));
        }
    }

    fn affinity(&mut self, path: &str, a: &ClusterAffinity) {
        for (i, name) in a.cluster_names.iter().enumerate() {
            self.check(format!("{path}.clusterNames[{i}]"), check_dns_label(name));
        }
        for (i, name) in a.exclude.iter().enumerate() {
            self.check(format!("{path}.exclude[{i}]"), check_dns_label(name));
        }
        self.labels(&format!("{path}.matchLabels"), &a.match_labels);
        for (i, r) in a.match_expressions.iter().enumerate() {
            self.check(
                format!("{path}.matchExpressions[{i}]"),
                check_requirement(r),
            );
        }
        for (i, r) in a.field_selector.iter().enumerate() {
            let at = format!("{path}.fieldSelector[{i}]");
            if !CLUSTER_FIELDS.contains(&r.key.as_str()) {
                self.push(
                    format!("{at}.key"),
                    format!(
                        "unknown cluster field {:?} (use one of {})",
                        r.key,
                        CLUSTER_FIELDS.join(", ")
                    ),
                );
            }
            self.check(at, check_requirement(r));
        }
    }
}

fn template(v: &mut Problems, w: &Workload) {
    let t = &w.template;
    match &t.image {
        Some(image) if image.trim().is_empty() || image.contains(char::is_whitespace) => {
            v.push(
                "spec.template.image",
                format!("{image:?} is not an image reference"),
            );
        }
        Some(_) => {}
        None if t.command.first().is_none_or(|c| c.is_empty()) => v.push(
            "spec.template.command",
            "a template without an image needs a command (the program to run)",
        ),
        None => {}
    }
    for name in t.env.keys() {
        v.check(format!("spec.template.env.{name}"), check_env_name(name));
    }
    let mut names = BTreeSet::new();
    let mut host_ports = HashSet::new();
    for (i, p) in t.ports.iter().enumerate() {
        let path = format!("spec.template.ports[{i}]");
        v.check(format!("{path}.name"), check_port_name(&p.name));
        if !names.insert(p.name.as_str()) {
            v.push(
                format!("{path}.name"),
                format!("duplicate port name {:?}", p.name),
            );
        }
        if p.container_port == Some(0) {
            v.push(
                format!("{path}.containerPort"),
                "must be between 1 and 65535 (got 0)",
            );
        }
        match p.host_port {
            Some(0) => v.push(
                format!("{path}.hostPort"),
                "must be between 1 and 65535 (got 0)",
            ),
            Some(port) if !host_ports.insert((port, p.protocol)) => v.push(
                format!("{path}.hostPort"),
                format!(
                    "host port {port}/{} is used by another port of this template",
                    p.protocol
                ),
            ),
            _ => {}
        }
    }
    if let Some(hc) = &t.health_check {
        health_check(v, w, hc);
    }
}

/// Resolves a probe's port reference (a name, an index, or empty for the first port).
pub fn probe_port_exists(w: &Workload, port: &str) -> Result<(), String> {
    let ports = &w.template.ports;
    let found = if port.is_empty() {
        !ports.is_empty()
    } else if let Ok(index) = port.parse::<usize>() {
        index < ports.len()
    } else {
        ports.iter().any(|p| p.name == port)
    };
    if found {
        return Ok(());
    }
    let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
    let what = if port.is_empty() {
        "the first port".to_string()
    } else {
        format!("port {port:?}")
    };
    if names.is_empty() {
        Err(format!("{what} does not exist: the template has no ports"))
    } else {
        Err(format!(
            "{what} does not exist (the template's ports: {})",
            names.join(", ")
        ))
    }
}

fn health_check(v: &mut Problems, w: &Workload, hc: &HealthCheck) {
    let base = "spec.template.healthCheck";
    match &hc.probe {
        Probe::Http { port, path } => {
            v.check(format!("{base}.http.port"), probe_port_exists(w, port));
            if !path.starts_with('/') {
                v.push(
                    format!("{base}.http.path"),
                    format!("must start with '/' (got {path:?})"),
                );
            }
        }
        Probe::Tcp { port } => v.check(format!("{base}.tcp.port"), probe_port_exists(w, port)),
        Probe::Exec { command } => {
            if command.first().is_none_or(|c| c.is_empty()) {
                v.push(
                    format!("{base}.exec.command"),
                    "must name the program to run",
                );
            }
        }
    }
    for (field, value) in [
        ("intervalSeconds", hc.interval_seconds),
        ("timeoutSeconds", hc.timeout_seconds),
        ("failureThreshold", hc.failure_threshold),
        ("successThreshold", hc.success_threshold),
    ] {
        if value == 0 {
            v.push(format!("{base}.{field}"), "must be >= 1 (got 0)");
        }
    }
}

/// The cluster fields a field selector may name.
pub const CLUSTER_FIELDS: [&str; 3] = ["region", "zone", "provider"];

/// In and NotIn need values; Exists and DoesNotExist take none.
pub fn check_requirement(r: &Requirement) -> Result<(), String> {
    match (r.operator, r.values.is_empty()) {
        (SelectorOperator::In | SelectorOperator::NotIn, true) => {
            Err(format!("operator {} needs values", r.operator))
        }
        (SelectorOperator::Exists | SelectorOperator::DoesNotExist, false) => {
            Err(format!("operator {} takes no values", r.operator))
        }
        _ => Ok(()),
    }
}

fn placement(v: &mut Problems, w: &Workload) {
    let p = &w.placement;
    if let Some(a) = &p.cluster_affinity {
        v.affinity("spec.placement.clusterAffinity", a);
    }
    for (i, g) in p.cluster_affinities.iter().enumerate() {
        v.affinity(
            &format!("spec.placement.clusterAffinities[{i}]"),
            &g.affinity,
        );
    }
    if p.overflow && p.cluster_affinities.is_empty() {
        v.push(
            "spec.placement.overflow",
            "overflow spills from one clusterAffinities group into the next, so it needs clusterAffinities",
        );
    }
    for (i, t) in p.tolerations.iter().enumerate() {
        let at = format!("spec.placement.tolerations[{i}]");
        if t.operator == TolerationOperator::Exists && !t.value.is_empty() {
            v.push(format!("{at}.value"), "operator Exists takes no value");
        }
        if t.operator == TolerationOperator::Equal && t.key.is_empty() {
            v.push(format!("{at}.key"), "operator Equal needs a key");
        }
    }
    if let ReplicaScheduling::Divided {
        weighting: Weighting::Static { weights },
    } = &p.replica_scheduling
    {
        let base = "spec.placement.replicaScheduling.staticWeights";
        for (i, sw) in weights.iter().enumerate() {
            v.affinity(&format!("{base}[{i}].clusters"), &sw.clusters);
        }
        if !weights.is_empty() && weights.iter().all(|sw| sw.weight == 0) {
            v.push(base, "at least one weight must be > 0");
        }
    }
    for (i, c) in p.constraints.iter().enumerate() {
        v.check(
            format!("spec.placement.constraints[{i}]"),
            check_constraint(c),
        );
    }
}

fn service(v: &mut Problems, w: &Workload) {
    let Some(s) = &w.service else { return };
    v.check("spec.service.name", check_dns_label(&s.name));
    let mut names = BTreeSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        let path = format!("spec.service.ports[{i}]");
        v.check(format!("{path}.name"), check_port_name(&p.name));
        if !names.insert(p.name.as_str()) {
            v.push(
                format!("{path}.name"),
                format!("duplicate service port name {:?}", p.name),
            );
        }
        if p.port == 0 {
            v.push(
                format!("{path}.port"),
                "must be between 1 and 65535 (got 0)",
            );
        }
        if !w.template.ports.iter().any(|tp| tp.name == p.target_port) {
            let names: Vec<&str> = w.template.ports.iter().map(|tp| tp.name.as_str()).collect();
            v.push(
                format!("{path}.targetPort"),
                format!(
                    "no template port named {:?} (the template's ports: {})",
                    p.target_port,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn workload() -> Workload {
        Workload {
            name: "web".into(),
            namespace: DEFAULT_NAMESPACE.into(),
            labels: BTreeMap::from([("app.kubernetes.io/name".into(), "web".into())]),
            format: ManifestFormat::Native,
            replicas: 2,
            template: TaskTemplate {
                command: vec!["web".into()],
                ports: vec![PortSpec {
                    name: "http".into(),
                    ..Default::default()
                }],
                health_check: Some(HealthCheck::with_probe(Probe::Tcp { port: "0".into() })),
                ..Default::default()
            },
            placement: PlacementSpec::default(),
            service: Some(ServiceSpec {
                name: "web".into(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 80,
                    target_port: "http".into(),
                    protocol: Protocol::Tcp,
                }],
            }),
            update: UpdateStrategy::default(),
            rollout: Default::default(),
        }
    }

    #[test]
    fn a_workload_built_in_code_is_valid() {
        assert_eq!(
            validate_workload(&workload()),
            Vec::<(String, String)>::new()
        );
    }

    #[test]
    fn problems_come_with_their_field_paths() {
        let mut w = workload();
        w.namespace = "Prod".into();
        w.template.command.clear();
        w.template.ports.push(PortSpec {
            name: "http".into(),
            container_port: Some(0),
            ..Default::default()
        });
        w.template.health_check = Some(HealthCheck::with_probe(Probe::Http {
            port: "admin".into(),
            path: "health".into(),
        }));
        w.placement.replica_scheduling = ReplicaScheduling::Divided {
            weighting: Weighting::Static {
                weights: vec![StaticWeight {
                    clusters: ClusterAffinity {
                        cluster_names: vec!["EU".into()],
                        ..Default::default()
                    },
                    weight: 0,
                }],
            },
        };
        w.placement.constraints = vec![vec!["hostname".into(), "UNIQUE".into(), "x".into()]];
        if let Some(s) = &mut w.service {
            s.ports[0].target_port = "metrics".into();
        }
        let paths: Vec<String> = validate_workload(&w).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "metadata.namespace",
                "spec.template.command",
                "spec.template.ports[1].name",
                "spec.template.ports[1].containerPort",
                "spec.template.healthCheck.http.port",
                "spec.template.healthCheck.http.path",
                "spec.placement.replicaScheduling.staticWeights[0].clusters.clusterNames[0]",
                "spec.placement.replicaScheduling.staticWeights",
                "spec.placement.constraints[0]",
                "spec.service.ports[0].targetPort",
            ]
        );
        let w2 = Workload {
            template: TaskTemplate {
                health_check: Some(HealthCheck::with_probe(Probe::Tcp { port: "3".into() })),
                ..workload().template
            },
            ..workload()
        };
        assert_eq!(
            validate_workload(&w2),
            [(
                "spec.template.healthCheck.tcp.port".to_string(),
                "port \"3\" does not exist (the template's ports: http)".to_string()
            )]
        );
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "web", "eu-1", "0", "a-b-c", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok:?}");
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", "ä", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn port_names_and_labels() {
        assert!(check_port_name("http").is_ok());
        assert!(check_port_name("8080").is_err(), "would read as an index");
        assert!(check_port_name("a-very-long-port-name").is_err());
        assert!(check_label_key("app").is_ok());
        assert!(check_label_key("example.com/tier").is_ok());
        assert!(check_label_key("HAPROXY_GROUP").is_ok());
        assert!(check_label_key("/x").is_err());
        assert!(check_label_key("a b").is_err());
        assert!(check_label_value("k", "").is_ok());
        assert!(check_label_value("k", "has space").is_err());
        assert!(check_constraint(&["region".into(), "LIKE".into()]).is_err());
        assert!(check_constraint(&["region".into(), "GROUP_BY".into()]).is_ok());
        assert!(check_env_name("A=B").is_err());
    }
}
