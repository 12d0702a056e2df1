//! Marathon app definitions (JSON): one app, a list of apps, or a group (`{"apps": [...]}`,
//! nested `groups`). An app id `/prod/web` becomes workload `web` in namespace `prod`; deeper
//! paths join their folders with `-` (`/a/b/web` -> namespace `a-b`).

use std::collections::BTreeMap;

use serde_json::{Number, Value};

use super::quantity;
use super::walk::{Diag, Obj};
use super::Read;
use crate::model::{
    EnvConvention, HealthCheck, ManifestFormat, PlacementSpec, PortSpec, Probe, Protocol,
    Resources, ServicePort, ServiceSpec, TaskTemplate, UpdateStrategy, Workload, DEFAULT_NAMESPACE,
};
use crate::validate::{
    check_constraint, check_dns_label, check_env_name, check_label_key, check_label_value,
    check_port_name,
};

/// A document with an `id`, or a group with `apps`/`groups`.
pub(super) fn read(value: &Value, d: &mut Diag) -> Vec<Read> {
    let Some(obj) = Obj::new(value, "", d) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if obj.has("apps") || obj.has("groups") {
        group(obj, "/", d, &mut out);
    } else {
        out.extend(app(obj, "/", d));
    }
    out.into_iter().map(Read::Workload).collect()
}

/// A top-level JSON list of apps.
pub(super) fn read_list(value: &Value, d: &mut Diag) -> Vec<Read> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(obj) = Obj::new(item, format!("[{i}]"), d) {
            out.extend(app(obj, "/", d));
        }
    }
    out.into_iter().map(Read::Workload).collect()
}

/// `id` resolved against the enclosing group's id, as Marathon does for relative ids.
fn absolute(id: &str, parent: &str) -> String {
    if id.starts_with('/') {
        id.to_string()
    } else {
        format!("{}/{id}", parent.trim_end_matches('/'))
    }
}

fn group(mut g: Obj<'_>, parent: &str, d: &mut Diag, out: &mut Vec<Workload>) {
    let id = absolute(g.str(d, "id").unwrap_or(""), parent);
    for (path, item) in g.list(d, "apps") {
        if let Some(obj) = Obj::new(item, path, d) {
            out.extend(app(obj, &id, d));
        }
    }
    for (path, item) in g.list(d, "groups") {
        if let Some(obj) = Obj::new(item, path, d) {
            group(obj, &id, d, out);
        }
    }
    g.finish(d);
}

/// Reads one app; `None` (with errors in `d`) when it cannot become a workload.
fn app(mut a: Obj<'_>, parent: &str, d: &mut Diag) -> Option<Workload> {
    let errors_before = d.errors.len();
    let id_path = a.path_of("id");
    let key = match a.str(d, "id") {
        Some(id) => workload_key(&absolute(id, parent), &id_path, d),
        None => {
            if !a.has("id") {
                d.error(id_path, "missing: a Marathon app needs an id");
            }
            None
        }
    };

    let cmd = a.string(d, "cmd");
    let args = a.string_list(d, "args");
    if cmd.is_some() && !args.is_empty() {
        d.error(
            a.path_of("args"),
            "cmd and args cannot be used together (Marathon rejects both)",
        );
    }
    let mut container = a.obj(d, "container");
    let mut docker = container.as_mut().and_then(|c| c.obj(d, "docker"));
    let image = docker.as_mut().and_then(|k| k.string(d, "image"));
    let (command, args) = match (cmd, &image) {
        (Some(cmd), _) => (
            vec!["/bin/sh".to_string(), "-c".to_string(), cmd],
            Vec::new(),
        ),
        (None, None) if !args.is_empty() => (args, Vec::new()),
        (None, None) => {
            d.error(
                a.path_of("cmd"),
                "missing: an app without container.docker.image needs cmd or args",
            );
            (Vec::new(), Vec::new())
        }
        (None, Some(_)) => (Vec::new(), args),
    };

    let resources = Resources {
        cpu_millis: amount(&mut a, d, "cpus", quantity::cpu_millis, 1000),
        memory_bytes: amount(&mut a, d, "mem", quantity::mebibytes, 128 << 20),
        disk_bytes: amount(&mut a, d, "disk", quantity::mebibytes, 0),
    };
    let replicas = if a.has("instances") {
        a.int_in(d, "instances", 0, u32::MAX.into())
    } else {
        Some(1)
    };

    // Container networking names its ports in portMappings (Marathon 1.5+, or the legacy
    // container.docker.portMappings); host networking in portDefinitions, or legacy `ports`.
    let mut mappings = container
        .as_mut()
        .map(|c| c.list(d, "portMappings"))
        .unwrap_or_default();
    if mappings.is_empty() {
        mappings = docker
            .as_mut()
            .map(|k| k.list(d, "portMappings"))
            .unwrap_or_default();
    }
    let require_ports = a.bool(d, "requirePorts").unwrap_or(false);
    let mut ports = Ports::default();
    for (path, item) in mappings {
        if let Some(mut m) = Obj::new(item, path, d) {
            ports.mapping(&mut m, d);
            m.finish(d);
        }
    }
    for (path, item) in a.list(d, "portDefinitions") {
        if let Some(mut p) = Obj::new(item, path, d) {
            let port = p.int_in::<u16>(d, "port", 0, 65535).unwrap_or(0);
            ports.definition(&mut p, d, port, require_ports);
            p.finish(d);
        }
    }
    for (path, item) in a.list(d, "ports") {
        match item.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(port) => ports.push(
                None,
                None,
                (require_ports && port != 0).then_some(port),
                port,
                Protocol::Tcp,
            ),
            None => d.error(
                path,
                format!(
                    "expected a port number, got {}",
                    super::walk::describe(item)
                ),
            ),
        }
    }
    // Marathon gives an app that declares no ports one dynamic port, and apps use its $PORT0.
    if ports.specs.is_empty() && !a.has("portDefinitions") && !a.has("ports") {
        ports.push(None, None, None, 0, Protocol::Tcp);
    }
    if let Some(docker) = docker {
        docker.finish(d);
    }
    if let Some(container) = container {
        container.finish(d);
    }

    let env = env(&mut a, d);
    let health_check = health_checks(&mut a, d, &ports.specs);
    let mut constraints = Vec::new();
    for (path, item) in a.list(d, "constraints") {
        let Value::Array(parts) = item else {
            d.error(
                path,
                "expected a constraint like [\"hostname\", \"UNIQUE\"]",
            );
            continue;
        };
        let parts: Vec<String> = parts
            .iter()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        if parts.len() != item.as_array().map_or(0, Vec::len) {
            d.error(path, "every part of a constraint must be a string");
            continue;
        }
        d.check(path, check_constraint(&parts));
        constraints.push(parts);
    }
    let (labels, staged) = labels(&mut a, d);
    let update = match a.obj(d, "upgradeStrategy") {
        Some(mut u) => {
            let mut fraction = |key: &str| match u.get(key) {
                None => 1.0,
                Some(v) => match v.as_f64().filter(|f| (0.0..=1.0).contains(f)) {
                    Some(f) => f,
                    None => {
                        d.error(
                            u.path_of(key),
                            format!("expected a number from 0 to 1, got {v}"),
                        );
                        1.0
                    }
                },
            };
            let health = fraction("minimumHealthCapacity");
            let over = fraction("maximumOverCapacity");
            u.finish(d);
            UpdateStrategy::marathon(health, over)
        }
        // Marathon's defaults: start every new instance before stopping any old one.
        None => UpdateStrategy::marathon(1.0, 1.0),
    };
    a.finish(d);

    let ((namespace, name, app_id), replicas) = (key?, replicas?);
    if d.errors.len() != errors_before {
        return None;
    }
    let service_ports = ports.service_ports();
    Some(Workload {
        name: name.clone(),
        namespace,
        labels,
        format: ManifestFormat::Marathon,
        replicas,
        template: TaskTemplate {
            image,
            command,
            args,
            env,
            ports: ports.specs,
            resources,
            health_check,
            env_convention: EnvConvention::Marathon { app_id },
            image_pull_policy: Default::default(),
            labels: Default::default(),
        },
        placement: PlacementSpec {
            constraints,
            ..PlacementSpec::default()
        },
        service: Some(ServiceSpec {
            name,
            ports: service_ports,
        }),
        update,
        rollout: crate::rollout::RolloutSpec {
            clusters: staged,
            ..Default::default()
        },
    })
}

/// `/prod/web` -> (`prod`, `web`, `/prod/web`); `web` -> (`default`, `web`, `/web`).
fn workload_key(id: &str, path: &str, d: &mut Diag) -> Option<(String, String, String)> {
    let segments: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    let Some((name, folders)) = segments.split_last() else {
        d.error(path, format!("{id:?} does not name an app"));
        return None;
    };
    let mut ok = true;
    for segment in &segments {
        if let Err(e) = check_dns_label(segment) {
            d.error(
                path,
                format!("{e}; Hansa makes DNS names from Marathon ids"),
            );
            ok = false;
        }
    }
    let namespace = if folders.is_empty() {
        DEFAULT_NAMESPACE.to_string()
    } else {
        folders.join("-")
    };
    if ok && namespace.len() > 63 {
        d.error(
            path,
            format!("the folders of {id} make namespace {namespace:?}, longer than 63 characters"),
        );
        ok = false;
    }
    ok.then(|| {
        (
            namespace,
            name.to_string(),
            format!("/{}", segments.join("/")),
        )
    })
}

/// A resource amount (a JSON number) read with `parse`, or `default` when absent.
fn amount(a: &mut Obj<'_>, d: &mut Diag, key: &str, parse: quantity::Reader, default: u64) -> u64 {
    let Some(n): Option<&Number> = a.number(d, key) else {
        return default;
    };
    parse(&n.to_string())
        .map_err(|e| d.error(a.path_of(key), e.to_string()))
        .unwrap_or(default)
}

/// The app's ports, named `port0`, `port1`, ... unless named, and their service ports.
#[derive(Default)]
struct Ports {
    specs: Vec<PortSpec>,
    /// The service port of each spec (0: none known).
    service: Vec<u16>,
}

impl Ports {
    fn push(
        &mut self,
        name: Option<String>,
        container: Option<u16>,
        host: Option<u16>,
        service: u16,
        protocol: Protocol,
    ) {
        let name = name.unwrap_or_else(|| format!("port{}", self.specs.len()));
        self.specs.push(PortSpec {
            name,
            container_port: container,
            host_port: host,
            protocol,
        });
        self.service.push(service);
    }

    /// Pushes one port per protocol of `"udp,tcp"`; the second gets the protocol as a suffix.
    fn push_protocols(
        &mut self,
        o: &mut Obj<'_>,
        d: &mut Diag,
        container: Option<u16>,
        host: Option<u16>,
        service: u16,
    ) {
        let name = o.string(d, "name");
        if let Some(name) = &name {
            d.check(o.path_of("name"), check_port_name(name));
            if self.specs.iter().any(|p| p.name == *name) {
                d.error(o.path_of("name"), format!("duplicate port name {name:?}"));
            }
        }
        let protocols = o.string(d, "protocol").unwrap_or_else(|| "tcp".to_string());
        for (i, p) in protocols.split(',').enumerate() {
            let protocol = match p.trim() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => {
                    d.error(
                        o.path_of("protocol"),
                        format!("{other:?} is not supported (use tcp, udp or \"udp,tcp\")"),
                    );
                    continue;
                }
            };
            let name = match (&name, i) {
                (name, 0) => name.clone(),
                (Some(name), _) => Some(format!("{name}-{protocol}")),
                (None, _) => None,
            };
            self.push(name, container, host, service, protocol);
        }
    }

    /// A `portMappings` entry: container port, host port (0: dynamic), service port.
    fn mapping(&mut self, m: &mut Obj<'_>, d: &mut Diag) {
        let container = m
            .int_in::<u16>(d, "containerPort", 0, 65535)
            .filter(|&p| p != 0);
        let host = m.int_in::<u16>(d, "hostPort", 0, 65535).filter(|&p| p != 0);
        let service = m.int_in::<u16>(d, "servicePort", 0, 65535).unwrap_or(0);
        let service = if service != 0 {
            service
        } else {
            container.or(host).unwrap_or(0)
        };
        self.push_protocols(m, d, container, host, service);
    }

    /// A `portDefinitions` entry. As in Marathon, `port` is the service port and the host port
    /// is dynamic, unless `requirePorts` makes it the fixed host port; 0 is always dynamic.
    fn definition(&mut self, p: &mut Obj<'_>, d: &mut Diag, port: u16, require_ports: bool) {
        let host = (require_ports && port != 0).then_some(port);
        self.push_protocols(p, d, None, host, port);
    }

    /// One service port per port with a known number; dynamic ones are reached by SRV only.
    fn service_ports(&self) -> Vec<ServicePort> {
        self.specs
            .iter()
            .zip(&self.service)
            .filter(|(_, &service)| service != 0)
            .map(|(spec, &service)| ServicePort {
                name: spec.name.clone(),
                port: service,
                target_port: spec.name.clone(),
                protocol: spec.protocol,
            })
            .collect()
    }
}

fn env(a: &mut Obj<'_>, d: &mut Diag) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let Some(mut e) = a.obj(d, "env") else {
        return env;
    };
    for (name, value) in e.rest() {
        let path = e.path_of(name);
        d.check(path.clone(), check_env_name(name));
        match value {
            Value::String(s) => {
                env.insert(name.to_string(), s.clone());
            }
            Value::Object(o) if o.contains_key("secret") => {
                d.warn(
                    path,
                    format!("secrets are not supported by Hansa; {name} is not set (ignored)"),
                );
            }
            other => d.error(
                path,
                format!("expected a string, got {}", super::walk::describe(other)),
            ),
        }
    }
    env
}

/// The label that stages an app's rollouts across clusters: the fields of a native workload's
/// `spec.update.clusters`, in JSON (or YAML).
pub const ROLLOUT_LABEL: &str = "HANSA_ROLLOUT_CLUSTERS";

/// Labels that are valid Hansa labels; Marathon allows any text, so others are only warned
/// about. [`ROLLOUT_LABEL`] is read, not kept.
fn labels(
    a: &mut Obj<'_>,
    d: &mut Diag,
) -> (
    BTreeMap<String, String>,
    Option<crate::rollout::ClusterRollout>,
) {
    let path = a.path_of("labels");
    let mut labels = a.string_map(d, "labels");
    let rollout = labels.remove(ROLLOUT_LABEL).and_then(|text| {
        super::native::cluster_rollout_text(d, &format!("{path}.{ROLLOUT_LABEL}"), &text)
    });
    labels.retain(
        |k, v| match check_label_key(k).and_then(|()| check_label_value(k, v)) {
            Ok(()) => true,
            Err(e) => {
                d.warn(
                    format!("{path}.{k}"),
                    format!("{e}; not kept as a label (ignored)"),
                );
                false
            }
        },
    );
    (labels, rollout)
}

/// The first health check; Hansa runs one.
fn health_checks(a: &mut Obj<'_>, d: &mut Diag, ports: &[PortSpec]) -> Option<HealthCheck> {
    let checks = a.list(d, "healthChecks");
    for (path, _) in checks.iter().skip(1) {
        d.warn(
            path.clone(),
            "Hansa runs one health check per app, the first (ignored)",
        );
    }
    let (path, first) = checks.into_iter().next()?;
    let mut h = Obj::new(first, path, d)?;
    let protocol = h
        .string(d, "protocol")
        .unwrap_or_else(|| "HTTP".to_string());
    let probe = match protocol.as_str() {
        "HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS" => {
            if protocol.ends_with('S') {
                d.warn(
                    h.path_of("protocol"),
                    format!("{protocol}: Hansa probes over plain HTTP"),
                );
            }
            let port = check_port(&mut h, d, ports);
            let path = h.string(d, "path").unwrap_or_else(Probe::default_path);
            port.map(|port| Probe::Http { port, path })
        }
        "TCP" | "MESOS_TCP" => check_port(&mut h, d, ports).map(|port| Probe::Tcp { port }),
        "COMMAND" => {
            let value = h.obj(d, "command").and_then(|mut c| {
                let value = c.string(d, "value");
                c.finish(d);
                value
            });
            if value.is_none() {
                d.error(
                    h.path_of("command.value"),
                    "missing: a COMMAND health check needs a command",
                );
            }
            value.map(|v| Probe::Exec {
                command: vec!["/bin/sh".to_string(), "-c".to_string(), v],
            })
        }
        other => {
            d.error(
                h.path_of("protocol"),
                format!("{other:?} is not a Marathon health check protocol (use HTTP, HTTPS, TCP, COMMAND or their MESOS_ forms)"),
            );
            None
        }
    };
    let mut hc = HealthCheck::with_probe(probe?);
    let max = i64::from(u32::MAX);
    hc.grace_seconds = h
        .int_in(d, "gracePeriodSeconds", 0, max)
        .unwrap_or(hc.grace_seconds);
    hc.interval_seconds = h
        .int_in(d, "intervalSeconds", 1, max)
        .unwrap_or(hc.interval_seconds);
    hc.timeout_seconds = h
        .int_in(d, "timeoutSeconds", 1, max)
        .unwrap_or(hc.timeout_seconds);
    // Marathon's 0 means "never give up on the task".
    hc.failure_threshold = match h.int_in::<u32>(d, "maxConsecutiveFailures", 0, max) {
        Some(0) => u32::MAX,
        Some(n) => n,
        None => hc.failure_threshold,
    };
    h.finish(d);
    Some(hc)
}

/// `http, port1`, or `none`.
fn names(ports: &[PortSpec]) -> String {
    if ports.is_empty() {
        return "none".to_string();
    }
    let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
    names.join(", ")
}

/// The port a health check probes: `port` (a number) or `portIndex` (default 0), as a name.
fn check_port(h: &mut Obj<'_>, d: &mut Diag, ports: &[PortSpec]) -> Option<String> {
    if let Some(number) = h.int_in::<u16>(d, "port", 1, 65535) {
        let found = ports
            .iter()
            .find(|p| p.host_port == Some(number) || p.container_port == Some(number));
        if found.is_none() {
            d.error(
                h.path_of("port"),
                format!("{number} is not one of the app's fixed ports"),
            );
        }
        return found.map(|p| p.name.clone());
    }
    let index = if h.has("portIndex") {
        h.int_in::<usize>(d, "portIndex", 0, i64::from(u16::MAX))?
    } else {
        0
    };
    match ports.get(index) {
        Some(p) => Some(p.name.clone()),
        None => {
            d.error(
                h.path_of("portIndex"),
                format!(
                    "{index} is not a port of this app (its ports: {})",
                    names(ports)
                ),
            );
            None
        }
    }
}
