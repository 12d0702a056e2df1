//! Placement policy objects: Hansa's `hansa.dev/v1` `PlacementPolicy`, and Karmada's
//! `policy.karmada.io/v1alpha1` `PropagationPolicy` and `ClusterPropagationPolicy` read with
//! Karmada's own field names. Both resolve to a [`PlacementSpec`] and the workloads they select.
//!
//! Karmada fields Hansa does not support become warnings naming the field; Karmada's defaults
//! hold (no `replicaScheduling` means Duplicated, as in Karmada).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::native;
use super::walk::{Diag, Obj};
use crate::model::{
    ClusterAffinity, ManifestFormat, PlacementSpec, ReplicaScheduling, StaticWeight, Weighting,
    Workload, DEFAULT_NAMESPACE,
};
use crate::policy::{
    AffinityGroup, Requirement, SelectorOperator, SpreadConstraint, SpreadKey, TaintEffect,
    Toleration, TolerationOperator,
};
use crate::validate::{check_dns_label, check_requirement};

/// A policy object as read from a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyObject {
    /// `PlacementPolicy`, `PropagationPolicy` or `ClusterPropagationPolicy`.
    pub kind: String,
    pub name: String,
    /// None: cluster-scoped (selects workloads in every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub selectors: Vec<ResourceSelector>,
    /// Higher wins when several policies select a workload.
    pub priority: i32,
    pub placement: PlacementSpec,
}

impl PolicyObject {
    /// `PropagationPolicy default/web`, as explanations name it.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// How specifically the policy selects `w` (None: not at all): by name 2, by labels 1,
    /// by kind only 0.
    pub fn selects(&self, w: &Workload) -> Option<u8> {
        if self.namespace.as_ref().is_some_and(|ns| *ns != w.namespace) {
            return None;
        }
        self.selectors.iter().filter_map(|s| s.selects(w)).max()
    }
}

/// Karmada's resourceSelector (and Hansa's workload selector).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSelector {
    /// `Deployment` (Kubernetes workloads) or `Workload` (native ones); None: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl ResourceSelector {
    /// How specifically this selects `w` (None: not at all): by name 2, by labels 1, else 0.
    pub fn selects(&self, w: &Workload) -> Option<u8> {
        let kind_ok = match self.kind.as_deref() {
            None => true,
            Some("Deployment") => w.format == ManifestFormat::Kubernetes,
            Some("Workload") => w.format == ManifestFormat::Native,
            Some(_) => false,
        };
        let labels_ok = self
            .match_labels
            .iter()
            .all(|(k, v)| w.labels.get(k) == Some(v))
            && self
                .match_expressions
                .iter()
                .all(|r| r.matches(w.labels.get(&r.key).map(String::as_str)));
        let ok = kind_ok
            && labels_ok
            && self.name.as_ref().is_none_or(|n| *n == w.name)
            && self.namespace.as_ref().is_none_or(|ns| *ns == w.namespace);
        let by_labels = !self.match_labels.is_empty() || !self.match_expressions.is_empty();
        ok.then_some(if self.name.is_some() {
            2
        } else {
            u8::from(by_labels)
        })
    }
}

/// The placement policy that governs `w`: none when `w` has an inline placement (it takes
/// precedence); otherwise the policy that selects it best: higher priority, then namespaced
/// over cluster-scoped, then the more specific selector (name over labels over kind), then the
/// policy's name.
pub fn governing<'p>(
    w: &Workload,
    policies: impl IntoIterator<Item = &'p PolicyObject>,
) -> Option<&'p PolicyObject> {
    if w.placement != PlacementSpec::default() {
        return None;
    }
    policies
        .into_iter()
        .filter_map(|p| Some((p, p.selects(w)?)))
        .max_by(|(a, sa), (b, sb)| {
            a.priority
                .cmp(&b.priority)
                .then(a.namespace.is_some().cmp(&b.namespace.is_some()))
                .then(sa.cmp(sb))
                .then(b.name.cmp(&a.name))
                .then(b.kind.cmp(&a.kind))
        })
        .map(|(p, _)| p)
}

/// `w` with the placement of its governing policy (see [`governing`]), named in
/// `placement.policy`; `w` itself when no policy governs it.
pub fn bound<'w, 'p>(
    w: &'w Workload,
    policies: impl IntoIterator<Item = &'p PolicyObject>,
) -> Cow<'w, Workload> {
    match governing(w, policies) {
        None => Cow::Borrowed(w),
        Some(p) => {
            let mut w = w.clone();
            w.placement = p.placement.clone();
            w.placement.policy = p.display_name();
            Cow::Owned(w)
        }
    }
}

/// Binds every workload to its governing policy in place, as the federation does when it
/// solves (stored workloads keep their placement as written).
pub fn bind(workloads: &mut [Workload], policies: &[PolicyObject]) {
    for w in workloads.iter_mut() {
        if let Cow::Owned(b) = bound(w, policies) {
            *w = b;
        }
    }
}

// ---- hansa.dev/v1 PlacementPolicy ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NativePolicy {
    #[allow(dead_code)] // checked before this document was chosen
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: NativeMetadata,
    spec: NativeSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NativeMetadata {
    name: String,
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NativeSpec {
    #[serde(default)]
    selector: NativeSelector,
    #[serde(default)]
    priority: i32,
    placement: native::Placement,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NativeSelector {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Requirement>,
}

pub(super) fn read_native(value: &Value, d: &mut Diag) -> Option<PolicyObject> {
    let policy: NativePolicy = match serde_path_to_error::deserialize(value) {
        Ok(p) => p,
        Err(e) => {
            let path = e.path().to_string();
            d.error(
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            );
            return None;
        }
    };
    let errors_before = d.errors.len();
    let NativePolicy { metadata, spec, .. } = policy;
    d.check("metadata.name", check_dns_label(&metadata.name));
    let namespace = metadata
        .namespace
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    d.check("metadata.namespace", check_dns_label(&namespace));
    for (i, r) in spec.selector.match_expressions.iter().enumerate() {
        d.check(
            format!("spec.selector.matchExpressions[{i}]"),
            check_requirement(r),
        );
    }
    let placement = native::placement(d, "spec.placement", spec.placement);
    let base = ResourceSelector {
        match_labels: spec.selector.match_labels,
        match_expressions: spec.selector.match_expressions,
        ..Default::default()
    };
    let selectors = if spec.selector.names.is_empty() {
        vec![base]
    } else {
        spec.selector
            .names
            .into_iter()
            .map(|name| ResourceSelector {
                name: Some(name),
                ..base.clone()
            })
            .collect()
    };
    (d.errors.len() == errors_before).then(|| PolicyObject {
        kind: "PlacementPolicy".into(),
        name: metadata.name,
        namespace: Some(namespace),
        selectors,
        priority: spec.priority,
        placement,
    })
}

// ---- Karmada PropagationPolicy / ClusterPropagationPolicy ----

pub(super) fn read_karmada(
    value: &Value,
    d: &mut Diag,
    cluster_scoped: bool,
) -> Option<PolicyObject> {
    let errors_before = d.errors.len();
    let mut root = Obj::new(value, "", d)?;
    root.skip("apiVersion");
    root.skip("kind");
    let (name, namespace) =
        karmada_metadata(&mut root, d, cluster_scoped, "ClusterPropagationPolicy")?;
    let mut spec = root.required_obj(d, "spec")?;
    let selectors = karmada_selectors(&mut spec, d);
    if selectors.is_empty() {
        d.error(
            "spec.resourceSelectors",
            "needs at least one resource selector",
        );
    }
    let priority = spec
        .int_in(d, "priority", i32::MIN.into(), i32::MAX.into())
        .unwrap_or(0);
    let preemption = spec.string(d, "preemption").as_deref() == Some("Always");
    let mut placement = match spec.required_obj(d, "placement") {
        Some(p) => karmada_placement(p, d),
        None => PlacementSpec::default(),
    };
    placement.priority = priority;
    placement.preemption = preemption;
    spec.finish(d);
    root.finish(d);
    if d.errors.len() != errors_before {
        return None;
    }
    Some(PolicyObject {
        kind: if cluster_scoped {
            "ClusterPropagationPolicy"
        } else {
            "PropagationPolicy"
        }
        .into(),
        name: name?,
        namespace,
        selectors,
        priority,
        placement,
    })
}

/// Karmada policy metadata: `(name, namespace)`; the namespace is None for cluster-scoped kinds
/// (`kind` names the kind in the warning when one is given anyway). `name` is None (with an
/// error) when it is missing or invalid.
pub(super) fn karmada_metadata(
    root: &mut Obj<'_>,
    d: &mut Diag,
    cluster_scoped: bool,
    kind: &str,
) -> Option<(Option<String>, Option<String>)> {
    let mut meta = root.required_obj(d, "metadata")?;
    let name = meta.string(d, "name");
    if name.is_none() && !meta.has("name") {
        d.error("metadata.name", "missing");
    }
    if let Some(name) = &name {
        d.check("metadata.name", check_dns_label(name));
    }
    let namespace = if cluster_scoped {
        if meta.has("namespace") {
            d.warn(
                "metadata.namespace",
                format!("a {kind} is cluster-scoped; the namespace is ignored"),
            );
            meta.skip("namespace");
        }
        None
    } else {
        let ns = meta
            .string(d, "namespace")
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        d.check("metadata.namespace", check_dns_label(&ns));
        Some(ns)
    };
    meta.skip("labels");
    meta.skip("annotations");
    meta.finish(d);
    Some((name, namespace))
}

/// Karmada's `resourceSelectors`; a kind Hansa does not place is a warning.
pub(super) fn karmada_selectors(spec: &mut Obj<'_>, d: &mut Diag) -> Vec<ResourceSelector> {
    let mut selectors = Vec::new();
    for (path, item) in spec.list(d, "resourceSelectors") {
        let Some(mut s) = Obj::new(item, path, d) else {
            continue;
        };
        s.skip("apiVersion");
        let kind = s.string(d, "kind");
        if let Some(kind) = &kind {
            if kind != "Deployment" && kind != "Workload" {
                d.warn(
                    s.path_of("kind"),
                    format!("{kind} is not a workload Hansa places (Deployment, Workload); this selector selects nothing"),
                );
            }
        }
        let name = s.string(d, "name");
        let namespace = s.string(d, "namespace");
        let (match_labels, match_expressions) = match s.obj(d, "labelSelector") {
            Some(l) => label_selector(l, d),
            None => (BTreeMap::new(), Vec::new()),
        };
        s.finish(d);
        selectors.push(ResourceSelector {
            kind,
            name,
            namespace,
            match_labels,
            match_expressions,
        });
    }
    selectors
}

pub(super) fn requirements_list(d: &mut Diag, o: &mut Obj<'_>, key: &str) -> Vec<Requirement> {
    let mut out = Vec::new();
    for (path, item) in o.list(d, key) {
        let Some(mut r) = Obj::new(item, path.clone(), d) else {
            continue;
        };
        let key = r.string(d, "key").unwrap_or_default();
        let operator = match r.str(d, "operator") {
            Some("In") => SelectorOperator::In,
            Some("NotIn") => SelectorOperator::NotIn,
            Some("Exists") => SelectorOperator::Exists,
            Some("DoesNotExist") => SelectorOperator::DoesNotExist,
            other => {
                d.error(
                    r.path_of("operator"),
                    format!("must be In, NotIn, Exists or DoesNotExist (got {other:?})"),
                );
                continue;
            }
        };
        let values = r.string_list(d, "values");
        r.finish(d);
        let req = Requirement {
            key,
            operator,
            values,
        };
        d.check(path, check_requirement(&req));
        out.push(req);
    }
    out
}

pub(super) fn label_selector(
    mut l: Obj<'_>,
    d: &mut Diag,
) -> (BTreeMap<String, String>, Vec<Requirement>) {
    let labels = l.string_map(d, "matchLabels");
    let expressions = requirements_list(d, &mut l, "matchExpressions");
    l.finish(d);
    (labels, expressions)
}

/// Karmada's ClusterAffinity: clusterNames, exclude, labelSelector, fieldSelector.
fn affinity(o: &mut Obj<'_>, d: &mut Diag) -> ClusterAffinity {
    read_affinity(o, d, true)
}

/// A cluster affinity: Karmada's form (`labelSelector: {matchLabels, matchExpressions}`,
/// `fieldSelector: {matchExpressions}`) or Hansa's (`matchLabels`, `matchExpressions` and a
/// `fieldSelector` list inline).
pub(super) fn read_affinity(o: &mut Obj<'_>, d: &mut Diag, karmada: bool) -> ClusterAffinity {
    let cluster_names = o.string_list(d, "clusterNames");
    let exclude = o.string_list(d, "exclude");
    if !karmada {
        let match_labels = o.string_map(d, "matchLabels");
        let match_expressions = requirements_list(d, o, "matchExpressions");
        let field_selector = requirements_list(d, o, "fieldSelector");
        for (i, req) in field_selector.iter().enumerate() {
            if !crate::validate::CLUSTER_FIELDS.contains(&req.key.as_str()) {
                d.error(
                    format!("{}[{i}].key", o.path_of("fieldSelector")),
                    format!(
                        "field selectors take provider, region or zone (got {:?})",
                        req.key
                    ),
                );
            }
        }
        return ClusterAffinity {
            cluster_names,
            exclude,
            match_labels,
            match_expressions,
            field_selector,
        };
    }
    let (match_labels, match_expressions) = match o.obj(d, "labelSelector") {
        Some(l) => label_selector(l, d),
        None => (BTreeMap::new(), Vec::new()),
    };
    let field_selector = match o.obj(d, "fieldSelector") {
        Some(mut f) => {
            let r = requirements_list(d, &mut f, "matchExpressions");
            for (i, req) in r.iter().enumerate() {
                if !crate::validate::CLUSTER_FIELDS.contains(&req.key.as_str()) {
                    d.error(
                        format!("{}.matchExpressions[{i}].key", f.path),
                        format!(
                            "Karmada field selectors take provider, region or zone (got {:?})",
                            req.key
                        ),
                    );
                }
            }
            f.finish(d);
            r
        }
        None => Vec::new(),
    };
    ClusterAffinity {
        cluster_names,
        exclude,
        match_labels,
        match_expressions,
        field_selector,
    }
}

fn karmada_placement(mut p: Obj<'_>, d: &mut Diag) -> PlacementSpec {
    let mut out = PlacementSpec {
        // Karmada's default when replicaScheduling is absent.
        replica_scheduling: ReplicaScheduling::Duplicated,
        ..Default::default()
    };
    if let Some(mut a) = p.obj(d, "clusterAffinity") {
        out.cluster_affinity = Some(affinity(&mut a, d));
        a.finish(d);
    }
    for (path, item) in p.list(d, "clusterAffinities") {
        let Some(mut a) = Obj::new(item, path, d) else {
            continue;
        };
        let name = a.string(d, "affinityName").unwrap_or_default();
        let affinity = affinity(&mut a, d);
        a.finish(d);
        out.cluster_affinities
            .push(AffinityGroup { name, affinity });
    }
    for (path, item) in p.list(d, "clusterTolerations") {
        let Some(mut t) = Obj::new(item, path, d) else {
            continue;
        };
        let key = t.string(d, "key").unwrap_or_default();
        let operator = match t.str(d, "operator") {
            None | Some("Equal") => TolerationOperator::Equal,
            Some("Exists") => TolerationOperator::Exists,
            Some(other) => {
                d.error(
                    t.path_of("operator"),
                    format!("must be Equal or Exists (got {other:?})"),
                );
                TolerationOperator::Equal
            }
        };
        let value = t.string(d, "value").unwrap_or_default();
        let effect = match t.str(d, "effect") {
            None | Some("") => None,
            Some("NoSchedule") => Some(TaintEffect::NoSchedule),
            Some("PreferNoSchedule") => Some(TaintEffect::PreferNoSchedule),
            Some("NoExecute") => Some(TaintEffect::NoExecute),
            Some(other) => {
                d.error(
                    t.path_of("effect"),
                    format!("must be NoSchedule, PreferNoSchedule or NoExecute (got {other:?})"),
                );
                None
            }
        };
        let toleration_seconds = t.int_in(d, "tolerationSeconds", 0, i64::MAX);
        t.finish(d);
        out.tolerations.push(Toleration {
            key,
            operator,
            value,
            effect,
            toleration_seconds,
        });
    }
    for (path, item) in p.list(d, "spreadConstraints") {
        let Some(mut s) = Obj::new(item, path.clone(), d) else {
            continue;
        };
        let field = s.string(d, "spreadByField");
        let label = s.string(d, "spreadByLabel");
        let spread_by = match (field.as_deref(), label) {
            (Some("cluster"), None) => SpreadKey::Cluster,
            (Some("region"), None) => SpreadKey::Region,
            (Some("zone"), None) => SpreadKey::Zone,
            (Some("provider"), None) => SpreadKey::Provider,
            (None, Some(label)) => SpreadKey::Label(label),
            (Some(other), None) => {
                d.error(
                    s.path_of("spreadByField"),
                    format!("must be cluster, region, zone or provider (got {other:?})"),
                );
                continue;
            }
            _ => {
                d.error(path, "needs exactly one of spreadByField or spreadByLabel");
                continue;
            }
        };
        let max_groups = s.int_in(d, "maxGroups", 0, u32::MAX.into());
        let min_groups = s.int_in(d, "minGroups", 0, u32::MAX.into()).unwrap_or(0);
        s.finish(d);
        out.spread_constraints.push(SpreadConstraint {
            spread_by,
            min_groups,
            max_groups,
            max_skew: None,
        });
    }
    if let Some(mut r) = p.obj(d, "replicaScheduling") {
        let kind = r.string(d, "replicaSchedulingType");
        let preference = r.string(d, "replicaDivisionPreference");
        let mut weighting = Weighting::Equal;
        if let Some(mut w) = r.obj(d, "weightPreference") {
            let mut weights = Vec::new();
            for (path, item) in w.list(d, "staticWeightList") {
                let Some(mut e) = Obj::new(item, path, d) else {
                    continue;
                };
                let clusters = match e.obj(d, "targetCluster") {
                    Some(mut t) => {
                        let a = affinity(&mut t, d);
                        t.finish(d);
                        a
                    }
                    None => ClusterAffinity::default(),
                };
                let weight = e.int_in(d, "weight", 0, u32::MAX.into()).unwrap_or(0);
                e.finish(d);
                weights.push(StaticWeight { clusters, weight });
            }
            match w.string(d, "dynamicWeight").as_deref() {
                None => {}
                Some("AvailableReplicas") => weighting = Weighting::AvailableCapacity,
                Some(other) => d.error(
                    w.path_of("dynamicWeight"),
                    format!("must be AvailableReplicas (got {other:?})"),
                ),
            }
            if !weights.is_empty() {
                if weighting == Weighting::AvailableCapacity {
                    d.error(
                        w.path.clone(),
                        "staticWeightList and dynamicWeight exclude each other",
                    );
                }
                weighting = Weighting::Static { weights };
            }
            w.finish(d);
        }
        out.replica_scheduling = match (kind.as_deref(), preference.as_deref()) {
            (None | Some("Duplicated"), _) => ReplicaScheduling::Duplicated,
            (Some("Divided"), Some("Aggregated")) => ReplicaScheduling::Aggregated,
            (Some("Divided"), None | Some("Weighted")) => ReplicaScheduling::Divided { weighting },
            (Some("Divided"), Some(other)) => {
                d.error(
                    r.path_of("replicaDivisionPreference"),
                    format!("must be Aggregated or Weighted (got {other:?})"),
                );
                ReplicaScheduling::Divided { weighting }
            }
            (Some(other), _) => {
                d.error(
                    r.path_of("replicaSchedulingType"),
                    format!("must be Duplicated or Divided (got {other:?})"),
                );
                ReplicaScheduling::Duplicated
            }
        };
        r.finish(d);
    }
    p.finish(d);
    out
}
