//! Kubernetes `v1` Services, and how they join Deployments: a Service belongs to the
//! Deployment in its namespace whose pod template carries every label it selects.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{metadata, port_ref, protocol, show_labels, show_ports, Deployment, PortRef};
use crate::manifest::walk::{Diag, Obj};
use crate::manifest::{Origin, Report};
use crate::model::{Protocol, ServicePort, ServiceSpec, Workload};
use crate::validate::check_port_name;

pub(crate) struct Service {
    name: String,
    namespace: String,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePortRef>,
}

struct ServicePortRef {
    path: String,
    name: Option<String>,
    port: u16,
    /// `None`: the same number as `port`, as in Kubernetes.
    target: Option<PortRef>,
    protocol: Protocol,
}

/// Reads a Service; `None` when it is invalid or cannot select a Deployment.
pub(crate) fn read_service(value: &Value, d: &mut Diag) -> Option<Service> {
    let errors_before = d.errors.len();
    let mut root = Obj::new(value, "", d)?;
    root.skip("apiVersion");
    root.skip("kind");
    let meta = metadata(&mut root, d, false);
    let mut spec = root.required_obj(d, "spec")?;
    let selector = spec.string_map(d, "selector");
    let mut ports = Vec::new();
    for (path, item) in spec.list(d, "ports") {
        let Some(mut p) = Obj::new(item, path.clone(), d) else {
            continue;
        };
        let name = p.string(d, "name");
        if let Some(name) = &name {
            d.check(p.path_of("name"), check_port_name(name));
        }
        let port = p.int_in::<u16>(d, "port", 1, 65535);
        if !p.has("port") {
            d.error(p.path_of("port"), "missing");
        }
        let target_path = p.path_of("targetPort");
        let target = p
            .get("targetPort")
            .and_then(|v| port_ref(v, &target_path, d));
        let protocol = protocol(&mut p, d);
        p.finish(d);
        if let Some(port) = port {
            ports.push(ServicePortRef {
                path,
                name,
                port,
                target,
                protocol,
            });
        }
    }
    spec.finish(d);
    root.finish(d);
    let meta = meta?;
    if d.errors.len() != errors_before {
        return None;
    }
    if selector.is_empty() {
        d.warn(
            "spec.selector",
            format!("missing: Service {} selects no pods, so Hansa cannot join it to a Deployment (ignored)", meta.name),
        );
        return None;
    }
    Some(Service {
        name: meta.name,
        namespace: meta.namespace,
        selector,
        ports,
    })
}

/// Gives each Deployment the Service that selects its pod template.
pub(crate) fn join(
    deployments: &mut [(&Origin, &mut Deployment)],
    services: &[(Origin, Service)],
    report: &mut Report,
) {
    for (origin, svc) in services {
        let selected: Vec<usize> = (0..deployments.len())
            .filter(|&i| {
                let dep = &deployments[i].1;
                dep.workload.namespace == svc.namespace
                    && svc
                        .selector
                        .iter()
                        .all(|(k, v)| dep.template_labels.get(k) == Some(v))
            })
            .collect();
        let index = match selected.as_slice() {
            [] => {
                let message = format!(
                    "{} matches no Deployment's pod template labels in namespace {}; Service {} is ignored",
                    show_labels(&svc.selector),
                    svc.namespace,
                    svc.name
                );
                report.warn(origin, "spec.selector", &message);
                continue;
            }
            [one] => *one,
            many => {
                let names: Vec<&str> = many
                    .iter()
                    .map(|&i| deployments[i].1.workload.name.as_str())
                    .collect();
                report.error(
                    origin,
                    "spec.selector",
                    format!(
                        "{} matches the pods of several Deployments ({}); a Service must select exactly one",
                        show_labels(&svc.selector),
                        names.join(", ")
                    ),
                );
                continue;
            }
        };
        let dep = &mut *deployments[index].1;
        if let Some((first, first_name)) = &dep.joined {
            report.error(
                origin,
                "spec.selector",
                format!(
                    "Deployment {} already has Service {first_name} ({} doc {}); Hansa gives a workload one Service",
                    dep.workload.name, first.file, first.doc
                ),
            );
            continue;
        }
        if let Some(spec) = service_spec(origin, svc, &dep.workload, report) {
            dep.workload.service = Some(spec);
            dep.joined = Some((origin.clone(), svc.name.clone()));
        }
    }
}

fn service_spec(
    origin: &Origin,
    svc: &Service,
    w: &Workload,
    report: &mut Report,
) -> Option<ServiceSpec> {
    let template_ports = &w.template.ports;
    let mut ports = Vec::new();
    let mut ok = true;
    for p in &svc.ports {
        let target = match p.target.as_ref().unwrap_or(&PortRef::Number(p.port)) {
            PortRef::Number(n) => template_ports
                .iter()
                .find(|tp| tp.container_port == Some(*n)),
            PortRef::Name(name) => template_ports.iter().find(|tp| tp.name == *name),
        };
        let Some(target) = target else {
            let wanted = match &p.target {
                Some(PortRef::Name(name)) => format!("port {name:?}"),
                Some(PortRef::Number(n)) => format!("containerPort {n}"),
                None => format!("containerPort {} (targetPort defaults to port)", p.port),
            };
            let message = format!(
                "Deployment {} has no {wanted} (its ports: {})",
                w.name,
                show_ports(template_ports)
            );
            report.error(origin, format!("{}.targetPort", p.path), message);
            ok = false;
            continue;
        };
        ports.push(ServicePort {
            name: p.name.clone().unwrap_or_else(|| target.name.clone()),
            port: p.port,
            target_port: target.name.clone(),
            protocol: p.protocol,
        });
    }
    ok.then(|| ServiceSpec {
        name: svc.name.clone(),
        ports,
    })
}
