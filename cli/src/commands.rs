//! The API commands: apply, get, describe, delete, info.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use hansa_federator::api::policies::PolicyView;
use hansa_federator::api::views::{
    ClusterView, PeerView, PlacementView, WorkloadDescription, WorkloadView,
};
use hansa_policies::{format_bytes, format_cpu};
use hansa_proto::v1::{
    ApplyRequest, DeleteRequest, DescribeRequest, GetRequest, InfoRequest, ManifestFile,
    UpdateClusterRequest,
};

use crate::client::{status_error, Client};
use crate::output::{age, duration, print, Format, Table};

/// Reads the manifests named by `-f`: files, directories (their .yaml/.yml/.json files, sorted)
/// or `-` for standard input.
pub fn read_manifests(paths: &[PathBuf]) -> anyhow::Result<Vec<ManifestFile>> {
    let mut files = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut content = String::new();
            std::io::stdin()
                .read_to_string(&mut content)
                .context("read standard input")?;
            files.push(ManifestFile {
                name: "<stdin>".into(),
                content,
            });
        } else if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot list", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            entries.sort();
            if entries.is_empty() {
                bail!("{}: holds no .yaml, .yml or .json files", path.display());
            }
            for entry in entries {
                files.push(read_file(&entry)?);
            }
        } else {
            files.push(read_file(path)?);
        }
    }
    Ok(files)
}

fn read_file(path: &Path) -> anyhow::Result<ManifestFile> {
    let content = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(ManifestFile {
        name: path.display().to_string(),
        content,
    })
}

/// What `apply -o json|yaml` prints.
#[derive(serde::Serialize)]
struct Applied {
    results: Vec<AppliedObject>,
    warnings: Vec<String>,
}

#[derive(serde::Serialize)]
struct AppliedObject {
    kind: String,
    namespace: String,
    name: String,
    action: String,
    placement: String,
    pending: bool,
}

pub async fn apply(
    client: &mut Client,
    paths: &[PathBuf],
    dry_run: bool,
    format: Format,
) -> anyhow::Result<()> {
    let files = read_manifests(paths)?;
    let response = client
        .apply(ApplyRequest { files, dry_run })
        .await
        .map_err(status_error)?
        .into_inner();
    let applied = Applied {
        results: response
            .results
            .into_iter()
            .map(|r| AppliedObject {
                kind: r.kind,
                namespace: r.namespace,
                name: r.name,
                action: r.action,
                placement: r.placement,
                pending: r.pending,
            })
            .collect(),
        warnings: response.warnings,
    };
    if format == Format::Table {
        for warning in &applied.warnings {
            eprintln!("warning: {warning}");
        }
    }
    print(format, &applied, || {
        let mut out = String::new();
        for r in &applied.results {
            let ns = if r.namespace == hansa_core::DEFAULT_NAMESPACE {
                String::new()
            } else {
                format!(" -n {}", r.namespace)
            };
            out.push_str(&format!(
                "{}/{}{} {}: {}\n",
                r.kind, r.name, ns, r.action, r.placement
            ));
        }
        out
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "workload", alias = "wl")]
    Workloads,
    #[value(alias = "cluster")]
    Clusters,
    #[value(alias = "placement")]
    Placements,
    /// Placement and override policies.
    #[value(alias = "policy")]
    Policies,
    /// Peer mode: every peer, its cluster and state, as the federator asked sees them.
    #[value(alias = "peer")]
    Peers,
}

impl Kind {
    fn wire(self) -> &'static str {
        match self {
            Kind::Workloads => "workloads",
            Kind::Clusters => "clusters",
            Kind::Placements => "placements",
            Kind::Policies => "policies",
            Kind::Peers => "peers",
        }
    }
}

pub async fn get(
    client: &mut Client,
    kind: Kind,
    name: Option<String>,
    namespace: Option<String>,
    stale: bool,
    format: Format,
) -> anyhow::Result<()> {
    let response = client
        .get(GetRequest {
            kind: kind.wire().into(),
            namespace: namespace.unwrap_or_default(),
            name: name.unwrap_or_default(),
            stale,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match kind {
        Kind::Workloads => {
            let items: Vec<WorkloadView> = decode(&response.items_json)?;
            print(format, &items, || workloads_table(&items))
        }
        Kind::Clusters => {
            let items: Vec<ClusterView> = decode(&response.items_json)?;
            print(format, &items, || match nodes_table(&items) {
                Some(nodes) => format!("{}\n{nodes}", clusters_table(&items)),
                None => clusters_table(&items),
            })
        }
        Kind::Placements => {
            let items: Vec<PlacementView> = decode(&response.items_json)?;
            print(format, &items, || placements_table(&items))
        }
        Kind::Policies => {
            let items: Vec<PolicyView> = decode(&response.items_json)?;
            print(format, &items, || policies_table(&items))
        }
        Kind::Peers => {
            let items: Vec<PeerView> = decode(&response.items_json)?;
            print(format, &items, || peers_table(&items))
        }
    }
}

fn peers_table(items: &[PeerView]) -> String {
    let mut t = Table::new(&["NAME", "CLUSTER", "STATE", "ADDRESS", "VIEW AGE", "RECORDS"]);
    for p in items {
        t.row(vec![
            p.name.clone(),
            p.cluster.clone(),
            p.state.clone(),
            p.address.clone(),
            match p.age_ms {
                Some(_) if p.state == "self" => "-".into(),
                Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
                None => "never heard".into(),
            },
            p.records.to_string(),
        ]);
    }
    t.render()
}

fn policies_table(items: &[PolicyView]) -> String {
    let mut t = Table::new(&["KIND", "NAMESPACE", "NAME", "PRIORITY", "WORKLOADS"]);
    for p in items {
        t.row(vec![
            p.kind.clone(),
            dash(&p.namespace),
            p.name.clone(),
            p.priority.to_string(),
            if p.workloads.is_empty() {
                "-".into()
            } else {
                p.workloads.join(",")
            },
        ]);
    }
    t.render()
}

/// What `hansa delete` removes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DeleteKind {
    #[value(alias = "workloads", alias = "wl")]
    Workload,
    #[value(name = "placementpolicy")]
    PlacementPolicy,
    #[value(name = "propagationpolicy", alias = "pp")]
    PropagationPolicy,
    #[value(name = "clusterpropagationpolicy", alias = "cpp")]
    ClusterPropagationPolicy,
    #[value(name = "overridepolicy", alias = "op")]
    OverridePolicy,
    #[value(name = "clusteroverridepolicy", alias = "cop")]
    ClusterOverridePolicy,
}

impl DeleteKind {
    fn wire(self) -> &'static str {
        match self {
            DeleteKind::Workload => "workload",
            DeleteKind::PlacementPolicy => "PlacementPolicy",
            DeleteKind::PropagationPolicy => "PropagationPolicy",
            DeleteKind::ClusterPropagationPolicy => "ClusterPropagationPolicy",
            DeleteKind::OverridePolicy => "OverridePolicy",
            DeleteKind::ClusterOverridePolicy => "ClusterOverridePolicy",
        }
    }
}

/// `hansa cordon|uncordon|taint CLUSTER`: taints as `kubectl taint` writes them, `key-`,
/// `key:Effect-` or `key=value:Effect-` to remove.
pub async fn update_cluster(
    client: &mut Client,
    name: String,
    cordoned: Option<bool>,
    taints: &[String],
) -> anyhow::Result<()> {
    let (remove, add): (Vec<&String>, Vec<&String>) = taints.iter().partition(|t| t.ends_with('-'));
    let view = client
        .update_cluster(UpdateClusterRequest {
            name: name.clone(),
            cordoned,
            add_taints: add.into_iter().cloned().collect(),
            remove_taints: remove
                .into_iter()
                .map(|t| t.trim_end_matches('-').to_string())
                .collect(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let view: ClusterView =
        serde_json::from_str(&view.cluster_json).context("decode the federator's answer")?;
    match cordoned {
        Some(true) => println!("cluster/{name} cordoned"),
        Some(false) => println!("cluster/{name} uncordoned"),
        None => {
            let taints: Vec<String> = view
                .cluster
                .taints
                .iter()
                .map(ToString::to_string)
                .collect();
            println!(
                "cluster/{name} tainted: {}",
                if taints.is_empty() {
                    "no taints".to_string()
                } else {
                    taints.join(", ")
                }
            );
        }
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(items: &[String]) -> anyhow::Result<Vec<T>> {
    items
        .iter()
        .map(|i| serde_json::from_str(i).context("decode the federator's answer"))
        .collect()
}

fn clusters_summary(clusters: &std::collections::BTreeMap<String, u32>) -> String {
    if clusters.is_empty() {
        return "-".into();
    }
    clusters
        .iter()
        .map(|(c, n)| format!("{c}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn workloads_table(items: &[WorkloadView]) -> String {
    let mut t = Table::new(&[
        "NAMESPACE",
        "NAME",
        "FORMAT",
        "READY",
        "PHASE",
        "CLUSTERS",
        "REVISION",
        "AGE",
    ]);
    for w in items {
        t.row(vec![
            w.namespace.clone(),
            w.name.clone(),
            format!("{:?}", w.format).to_lowercase(),
            format!("{}/{}", w.healthy, w.desired),
            format!("{:?}", w.phase),
            clusters_summary(&w.clusters),
            w.revision.to_string(),
            age(w.created_ms),
        ]);
    }
    t.render()
}

fn clusters_table(items: &[ClusterView]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "REGION",
        "ZONE",
        "HEALTH",
        "AGENT",
        "RUNTIMES",
        "CPU FREE",
        "MEMORY FREE",
        "REPLICAS",
        "TAINTS",
        "LAST SEEN",
    ]);
    for c in items {
        let available = c.live_available.unwrap_or(c.cluster.available);
        let total = c.cluster.allocatable;
        t.row(vec![
            c.cluster.name.clone(),
            dash(&c.cluster.region),
            dash(&c.cluster.zone),
            format!(
                "{}{}",
                c.cluster.health,
                if c.cluster.cordoned { ",Cordoned" } else { "" }
            ),
            if c.connected {
                "connected"
            } else {
                "disconnected"
            }
            .into(),
            c.cluster
                .runtimes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            format!(
                "{}/{}",
                format_cpu(available.cpu_millis),
                format_cpu(total.cpu_millis)
            ),
            format!(
                "{}/{}",
                format_bytes(available.memory_bytes),
                format_bytes(total.memory_bytes)
            ),
            c.replicas.to_string(),
            if c.cluster.taints.is_empty() {
                "-".into()
            } else {
                c.cluster
                    .taints
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            },
            c.last_seen_ms
                .map_or_else(|| "never".into(), |ms| format!("{} ago", duration(ms))),
        ]);
    }
    t.render()
}

/// The nodes of clusters that have several, one row each (free capacity as last recorded).
/// Empty when every cluster runs a single node.
fn nodes_table(items: &[ClusterView]) -> Option<String> {
    if items.iter().all(|c| c.cluster.nodes.len() <= 1) {
        return None;
    }
    let mut t = Table::new(&[
        "CLUSTER",
        "NODE",
        "ADDRESS",
        "RUNTIMES",
        "CPU FREE",
        "MEMORY FREE",
    ]);
    for c in items.iter().filter(|c| c.cluster.nodes.len() > 1) {
        for n in &c.cluster.nodes {
            t.row(vec![
                c.cluster.name.clone(),
                n.name.clone(),
                n.address.clone(),
                n.runtimes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                format!(
                    "{}/{}",
                    format_cpu(n.available.cpu_millis),
                    format_cpu(n.allocatable.cpu_millis)
                ),
                format!(
                    "{}/{}",
                    format_bytes(n.available.memory_bytes),
                    format_bytes(n.allocatable.memory_bytes)
                ),
            ]);
        }
    }
    Some(t.render())
}

fn placements_table(items: &[PlacementView]) -> String {
    let mut t = Table::new(&["NAMESPACE", "WORKLOAD", "PLACED", "CLUSTERS", "EXPLANATION"]);
    for p in items {
        t.row(vec![
            p.placement.namespace.clone(),
            p.placement.workload.clone(),
            format!("{}/{}", p.placement.total(), p.desired),
            clusters_summary(&p.placement.clusters),
            p.placement.explanation.summary.clone(),
        ]);
    }
    t.render()
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

pub async fn describe(
    client: &mut Client,
    name: String,
    namespace: Option<String>,
    stale: bool,
    format: Format,
) -> anyhow::Result<()> {
    let response = client
        .describe(DescribeRequest {
            namespace: namespace.unwrap_or_default(),
            name,
            stale,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let description: WorkloadDescription = serde_json::from_str(&response.description_json)
        .context("decode the federator's answer")?;
    print(format, &description, || describe_text(&description))
}

fn describe_text(d: &WorkloadDescription) -> String {
    use std::fmt::Write;
    let w = &d.workload;
    let s = &d.summary;
    let mut out = String::new();
    let _ = writeln!(out, "Name:        {}", w.name);
    let _ = writeln!(out, "Namespace:   {}", w.namespace);
    let _ = writeln!(out, "Format:      {:?}", w.format);
    let _ = writeln!(
        out,
        "Revision:    {} (generation {})",
        s.revision, s.generation
    );
    let _ = writeln!(
        out,
        "Replicas:    {} desired, {} placed, {} healthy ({:?})",
        s.desired, s.placed, s.healthy, s.phase
    );
    let t = &w.template;
    if let Some(image) = &t.image {
        let _ = writeln!(out, "Image:       {image}");
    }
    let argv: Vec<&str> = t
        .command
        .iter()
        .chain(&t.args)
        .map(String::as_str)
        .collect();
    if !argv.is_empty() {
        let _ = writeln!(out, "Command:     {}", argv.join(" "));
    }
    let _ = writeln!(
        out,
        "Requests:    cpu {}, memory {}",
        format_cpu(t.resources.cpu_millis),
        format_bytes(t.resources.memory_bytes)
    );
    if let Some(service) = &w.service {
        let ports: Vec<String> = service
            .ports
            .iter()
            .map(|p| format!("{} {}->{}", p.name, p.port, p.target_port))
            .collect();
        let _ = writeln!(out, "Service:     {} ({})", service.name, ports.join(", "));
    }
    match &d.explanation {
        Some(e) => {
            let _ = writeln!(out, "Placement:   {}", e.summary);
            let mut t = Table::new(&["  CLUSTER", "DECISION", "REPLICAS", "DETAIL"]);
            for c in &e.clusters {
                match &c.outcome {
                    hansa_core::DecisionOutcome::Selected {
                        replicas,
                        score,
                        fits,
                        ..
                    } => t.row(vec![
                        format!("  {}", c.cluster),
                        "selected".into(),
                        replicas.to_string(),
                        format!(
                            "weight {score}, fits {}",
                            if *fits == u32::MAX {
                                "any".to_string()
                            } else {
                                fits.to_string()
                            }
                        ),
                    ]),
                    hansa_core::DecisionOutcome::Filtered { rule, reason } => t.row(vec![
                        format!("  {}", c.cluster),
                        "filtered".into(),
                        "-".into(),
                        format!("{rule}: {reason}"),
                    ]),
                }
            }
            out.push_str(&t.render());
        }
        None => {
            let _ = writeln!(out, "Placement:   not decided yet");
        }
    }
    let _ = writeln!(out, "Replicas:");
    let mut t = Table::new(&[
        "  CLUSTER",
        "REPLICA",
        "REVISION",
        "STATE",
        "HEALTHY",
        "RESTARTS",
        "ENDPOINTS",
        "MESSAGE",
    ]);
    let mut any = false;
    for c in &d.clusters {
        for r in &c.replicas {
            any = true;
            t.row(vec![
                format!("  {}", c.cluster),
                r.id.clone(),
                r.revision.to_string(),
                r.state.to_string(),
                if r.healthy { "yes" } else { "no" }.into(),
                r.restarts.to_string(),
                r.endpoints
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                r.message.clone(),
            ]);
        }
    }
    if any {
        out.push_str(&t.render());
    } else {
        let _ = writeln!(out, "  none reported yet");
    }
    for c in &d.clusters {
        if let Some(u) = &c.unplaced {
            let _ = writeln!(
                out,
                "  {}: {} replica(s) not placed: {}",
                c.cluster, u.replicas, u.reason
            );
        }
    }
    let _ = writeln!(out, "Endpoints (healthy):");
    if d.endpoints.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for e in &d.endpoints {
        let _ = writeln!(
            out,
            "  {:<8} {:<16} {:<6} {}",
            e.cluster, e.replica, e.endpoint.name, e.endpoint
        );
    }
    out
}

/// `hansa explain workload NAME`: the engine's decision for every cluster, solved now.
pub async fn explain(
    client: &mut Client,
    name: String,
    namespace: Option<String>,
    format: Format,
) -> anyhow::Result<()> {
    let response = client
        .describe(DescribeRequest {
            namespace: namespace.unwrap_or_default(),
            name,
            stale: false,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let d: WorkloadDescription = serde_json::from_str(&response.description_json)
        .context("decode the federator's answer")?;
    let explanation = d
        .detailed
        .clone()
        .context("the federator sent no explanation (is it older than this CLI?)")?;
    print(format, &explanation, || explain_text(&d, &explanation))
}

fn explain_text(d: &WorkloadDescription, e: &hansa_core::Explanation) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let w = &d.workload;
    let _ = writeln!(out, "Workload:  {}/{}", w.namespace, w.name);
    let policy = if e.policy.is_empty() {
        "the workload's own placement".to_string()
    } else {
        e.policy.clone()
    };
    let _ = writeln!(out, "Policy:    {policy}");
    let _ = writeln!(out, "Decision:  {}", e.summary);
    let stored = &d.summary.clusters;
    if stored != &d.detailed_clusters {
        let _ = writeln!(
            out,
            "           (in force: {}; the controller is about to change it)",
            clusters_summary(stored)
        );
    }
    for decision in &e.clusters {
        let _ = writeln!(out, "  {}", hansa_policies::describe_decision(decision));
    }
    if !d.overrides.is_empty() {
        let _ = writeln!(out, "Overrides:");
        for (cluster, rules) in &d.overrides {
            let _ = writeln!(out, "  {cluster}: {}", rules.join(", "));
        }
    }
    out
}

pub async fn delete(
    client: &mut Client,
    kind: DeleteKind,
    name: String,
    namespace: Option<String>,
) -> anyhow::Result<()> {
    client
        .delete(DeleteRequest {
            kind: kind.wire().into(),
            namespace: namespace.clone().unwrap_or_default(),
            name: name.clone(),
        })
        .await
        .map_err(status_error)?;
    println!("{}/{name} deleted", kind.wire().to_ascii_lowercase());
    Ok(())
}

pub async fn info(client: &mut Client, format: Format) -> anyhow::Result<()> {
    let i = client
        .info(InfoRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    #[derive(serde::Serialize)]
    struct Info {
        federator: String,
        mode: String,
        trust_domain: String,
        caller: String,
        leader_id: u64,
        leader_address: String,
        term: u64,
        last_applied: u64,
    }
    let info = Info {
        federator: i.federator,
        mode: i.mode,
        trust_domain: i.trust_domain,
        caller: i.caller,
        leader_id: i.leader_id,
        leader_address: i.leader_address,
        term: i.term,
        last_applied: i.last_applied,
    };
    print(format, &info, || {
        format!(
            "federator:     {}\nmode:          {}\ntrust domain:  {}\nyou are:       {}\nleader:        {} ({})\nterm:          {}\nlast applied:  {}\n",
            info.federator, info.mode, info.trust_domain, info.caller, info.leader_id,
            info.leader_address, info.term, info.last_applied
        )
    })
}
