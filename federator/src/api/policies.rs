//! Policy objects in the API: what an apply does to them, checking override policies against the
//! workloads they select before anything is stored, and the `get policies` view.

use std::collections::BTreeMap;

use hansa_core::manifest::{governing, PolicyObject};
use hansa_core::overrides::render;
use hansa_core::{OverrideObject, Workload};
use serde::{Deserialize, Serialize};

use crate::store::{policy_key, FederationState};

/// The placement and override policies in force once an apply's own are stored: the apply's
/// replace stored ones of the same kind, namespace and name. Costs O(policies) to build; only
/// questions about every workload (what a policy governs, what an override selects) walk the
/// stored workloads, and only when the apply holds policies.
pub struct Effective<'a> {
    pub placement: Vec<&'a PolicyObject>,
    pub overrides: Vec<&'a OverrideObject>,
    state: &'a FederationState,
    /// The apply's own workloads, which replace stored ones with the same key.
    applied: &'a [Workload],
}

impl<'a> Effective<'a> {
    pub fn new(
        state: &'a FederationState,
        workloads: &'a [Workload],
        policies: &'a [PolicyObject],
        overrides: &'a [OverrideObject],
    ) -> Effective<'a> {
        let mut placement: BTreeMap<String, &PolicyObject> = state
            .policies
            .iter()
            .map(|(k, r)| (k.clone(), &r.policy))
            .collect();
        for p in policies {
            placement.insert(policy_key(&p.kind, p.namespace.as_deref(), &p.name), p);
        }
        let mut over: BTreeMap<String, &OverrideObject> = state
            .overrides
            .iter()
            .map(|(k, r)| (k.clone(), &r.policy))
            .collect();
        for o in overrides {
            over.insert(policy_key(&o.kind, o.namespace.as_deref(), &o.name), o);
        }
        Effective {
            placement: placement.into_values().collect(),
            overrides: over.into_values().collect(),
            state,
            applied: workloads,
        }
    }

    /// Every workload once the apply's are stored.
    pub fn workloads(&self) -> impl Iterator<Item = &'a Workload> + '_ {
        let applied = self.applied;
        self.state
            .workloads
            .iter()
            .filter(move |(k, _)| {
                !applied
                    .iter()
                    .any(|w| w.name == k.name && w.namespace == k.namespace)
            })
            .map(|(_, r)| &r.workload)
            .chain(applied.iter())
    }

    /// The workloads `p` governs (it is their best-matching policy and they have no inline
    /// placement).
    pub fn governed_by(&self, p: &PolicyObject) -> Vec<&'a Workload> {
        self.workloads()
            .filter(|w| {
                governing(w, self.placement.iter().copied()).is_some_and(|g| {
                    g.kind == p.kind && g.name == p.name && g.namespace == p.namespace
                })
            })
            .collect()
    }

    /// Checks that every override policy renders on every workload it selects, for the
    /// workloads and policies this apply changes: a patch path that does not exist is refused
    /// here rather than discovered by an agent. Errors name the policy, the rule and the
    /// workload.
    pub fn check_overrides(&self, changed_overrides: &[OverrideObject]) -> Result<(), String> {
        if self.overrides.is_empty() {
            return Ok(());
        }
        let mut problems = Vec::new();
        let mut check = |o: &OverrideObject, w: &Workload| {
            for (i, rule) in o.rules.iter().enumerate() {
                if let Err(e) = render(&w.template, &rule.overriders) {
                    problems.push(format!(
                        "{} rule {}: cannot apply to workload {}: {e}",
                        o.display_name(),
                        i + 1,
                        w.key()
                    ));
                }
            }
        };
        // The apply's workloads against every override in force...
        for w in self.applied {
            for o in self.overrides.iter().filter(|o| o.selects(w)) {
                check(o, w);
            }
        }
        // ...and the apply's overrides against the stored workloads they select.
        if !changed_overrides.is_empty() {
            for w in self.workloads().filter(|w| !self.applied.contains(w)) {
                for o in changed_overrides.iter().filter(|o| o.selects(w)) {
                    check(o, w);
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

/// `created`, `configured` or `unchanged`, comparing with what is stored under `key`.
pub fn action<T: PartialEq>(stored: Option<&T>, new: &T, dry_run: bool) -> String {
    let action = match stored {
        None => "created",
        Some(s) if s == new => "unchanged",
        Some(_) => "configured",
    };
    if dry_run {
        match action {
            "created" => "would be created (dry run)".into(),
            "unchanged" => "unchanged (dry run)".into(),
            _ => "would be configured (dry run)".into(),
        }
    } else {
        action.into()
    }
}

/// `hansa get policies`: one row per placement or override policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    pub priority: i32,
    pub generation: u64,
    /// The workloads it governs (placement) or selects (overrides), `namespace/name`.
    pub workloads: Vec<String>,
    /// The policy as stored.
    pub spec: serde_json::Value,
}

pub fn views(state: &FederationState) -> Vec<PolicyView> {
    let effective = Effective::new(state, &[], &[], &[]);
    let names =
        |ws: Vec<&Workload>| -> Vec<String> { ws.iter().map(|w| w.key().to_string()).collect() };
    let mut out: Vec<PolicyView> = state
        .policies
        .values()
        .map(|r| PolicyView {
            kind: r.policy.kind.clone(),
            namespace: r.policy.namespace.clone().unwrap_or_default(),
            name: r.policy.name.clone(),
            priority: r.policy.priority,
            generation: r.generation,
            workloads: names(effective.governed_by(&r.policy)),
            spec: serde_json::to_value(&r.policy).unwrap_or_default(),
        })
        .collect();
    out.extend(state.overrides.values().map(|r| {
        PolicyView {
            kind: r.policy.kind.clone(),
            namespace: r.policy.namespace.clone().unwrap_or_default(),
            name: r.policy.name.clone(),
            priority: r.policy.priority,
            generation: r.generation,
            workloads: names(
                effective
                    .workloads()
                    .filter(|w| r.policy.selects(w))
                    .collect(),
            ),
            spec: serde_json::to_value(&r.policy).unwrap_or_default(),
        }
    }));
    out
}

/// The canonical kind of a policy kind as a user types it (`propagationpolicy`, `pp`, ...).
pub fn policy_kind(kind: &str) -> Option<&'static str> {
    Some(match kind.to_ascii_lowercase().as_str() {
        "placementpolicy" | "placementpolicies" => "PlacementPolicy",
        "propagationpolicy" | "propagationpolicies" | "pp" => "PropagationPolicy",
        "clusterpropagationpolicy" | "clusterpropagationpolicies" | "cpp" => {
            "ClusterPropagationPolicy"
        }
        "overridepolicy" | "overridepolicies" | "op" => "OverridePolicy",
        "clusteroverridepolicy" | "clusteroverridepolicies" | "cop" => "ClusterOverridePolicy",
        _ => return None,
    })
}

/// Whether policies of `kind` are cluster-scoped.
pub fn cluster_scoped(kind: &str) -> bool {
    kind.starts_with("Cluster")
}
