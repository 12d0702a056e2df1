//! What each cluster must run, derived from workloads, placements and override policies. Pure.

use hansa_core::overrides::render;
use hansa_core::{Assignment, Cluster, OverrideObject, WorkloadKey};
use hansa_policies::selects;
use tracing::warn;

use crate::store::FederationState;

/// The assignment set of `cluster`, sorted by workload: for each workload, the revision a
/// staged rollout has reached there (the latest without one), its template with the override
/// rules that target this cluster applied (see [`hansa_core::overrides`]).
pub fn for_cluster(state: &FederationState, cluster: &str) -> Vec<Assignment> {
    state
        .placements
        .keys()
        .filter_map(|key| assignment(state, key, cluster))
        .collect()
}

/// What `cluster` must run of the workload `key`, if anything.
pub fn assignment(state: &FederationState, key: &WorkloadKey, cluster: &str) -> Option<Assignment> {
    let facts = state.clusters.get(cluster);
    let placed = *state.placements.get(key)?.clusters.get(cluster)?;
    let record = state.workloads.get(key)?;
    if placed == 0 {
        return None;
    }
    let revision = record.revision_for(cluster);
    let (base, kept) = record.template_of(revision);
    // An older revision renders with the override policies of its time.
    let overrides: Vec<&OverrideObject> = match kept {
        Some(kept) => kept.iter().collect(),
        None => state.overrides_for(&record.workload),
    };
    let (template, replicas) = if overrides.is_empty() {
        (base.clone(), placed)
    } else {
        match render(base, overriders_for(&overrides, facts)) {
            Ok(r) => (r.template, r.replicas.unwrap_or(placed)),
            Err(e) => {
                // The API renders every override before storing it, so this needs a
                // template and an override stored by an older federator.
                warn!(workload = %key, %cluster, error = %e, "cannot apply overrides; running the template as written");
                (base.clone(), placed)
            }
        }
    };
    (replicas > 0).then(|| Assignment {
        workload: key.clone(),
        revision,
        replicas,
        template,
        update: record.workload.update,
    })
}

/// For every registered cluster, the override rules that apply to `workload` there, named
/// as `hansa describe` and `hansa explain` show them.
pub fn override_rules(
    state: &FederationState,
    workload: &hansa_core::Workload,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let overrides = state.overrides_for(workload);
    state
        .clusters
        .values()
        .filter_map(|c| {
            let rules: Vec<String> = overrides
                .iter()
                .flat_map(|o| {
                    o.rules
                        .iter()
                        .enumerate()
                        .filter(|(_, rule)| {
                            rule.target.as_ref().is_none_or(|t| selects(t, c).is_ok())
                        })
                        .map(move |(i, _)| format!("{} rule {}", o.display_name(), i + 1))
                })
                .collect();
            (!rules.is_empty()).then(|| (c.name.clone(), rules))
        })
        .collect()
}

/// The overriders of every rule that targets `cluster`, in application order.
fn overriders_for<'a>(
    overrides: &'a [&'a OverrideObject],
    cluster: Option<&'a Cluster>,
) -> impl Iterator<Item = &'a hansa_core::Overrider> + 'a {
    overrides
        .iter()
        .flat_map(|o| o.rules.iter())
        .filter(move |rule| match (&rule.target, cluster) {
            (None, _) => true,
            (Some(target), Some(c)) => selects(target, c).is_ok(),
            (Some(_), None) => false,
        })
        .flat_map(|rule| rule.overriders.iter())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hansa_core::manifest::{parse_manifests, ManifestFile};
    use hansa_core::{Placement, WorkloadKey};

    use super::*;
    use crate::store::Command;

    fn cluster(name: &str, region: &str) -> hansa_core::Cluster {
        crate::dns::synthetic::cluster(name, region, &[])
    }

    const WEB: &str = r#"
apiVersion: hansa.dev/v1
kind: Workload
metadata: {name: web}
spec:
  replicas: 2
  template: {image: "docker.io/shop/web:v1", env: {MODE: prod}}
"#;

    const EU_OVERRIDE: &str = r#"
apiVersion: hansa.dev/v1
kind: OverridePolicy
metadata: {name: eu}
spec:
  selector: {names: [web]}
  rules:
  - clusters: {fieldSelector: [{key: region, operator: In, values: [eu]}]}
    image: {registry: mirror.eu}
    env: {REGION: eu}
    replicas: 3
"#;

    fn apply(state: &mut FederationState, content: &str) {
        let parsed = parse_manifests(&[ManifestFile {
            name: "t.yaml",
            content,
        }])
        .unwrap();
        state.apply(&Command::PutWorkloads {
            workloads: parsed.workloads,
            now_ms: 1,
            policies: parsed.policies,
            overrides: parsed.overrides,
        });
    }

    fn placed(state: &mut FederationState) {
        state.apply(&Command::SetPlacement {
            placement: Placement {
                workload: "web".into(),
                namespace: "default".into(),
                generation: state.workloads[&WorkloadKey::new("default", "web")].generation,
                clusters: BTreeMap::from([("eu-1".into(), 1), ("us-1".into(), 1)]),
                explanation: Default::default(),
            },
        });
    }

    /// `policies/examples/karmada-override.yaml`, applied as a Karmada user wrote it.
    #[test]
    fn karmada_override_example_renders_member1_only() {
        let mut state = FederationState::default();
        for name in ["member1", "member2"] {
            state.apply(&Command::UpsertCluster {
                cluster: cluster(name, "eu"),
            });
        }
        apply(
            &mut state,
            include_str!("../../../policies/examples/karmada-override.yaml"),
        );
        let key = WorkloadKey::new("default", "nginx");
        // Duplicated (Karmada's default): both clusters run 2.
        let bound = crate::controllers::placement::bound(&state, &state.workloads[&key].workload);
        assert_eq!(
            bound.placement.policy,
            "PropagationPolicy default/nginx-propagation"
        );
        state.apply(&Command::SetPlacement {
            placement: Placement {
                workload: "nginx".into(),
                namespace: "default".into(),
                generation: state.workloads[&key].generation,
                clusters: BTreeMap::from([("member1".into(), 2), ("member2".into(), 2)]),
                explanation: Default::default(),
            },
        });
        let m1 = &for_cluster(&state, "member1")[0];
        assert_eq!(
            m1.template.image.as_deref(),
            Some("registry.member1.example/library/nginx:1.27")
        );
        assert_eq!(m1.template.args, ["-g", "daemon off;", "-e", "stderr"]);
        assert_eq!(m1.template.labels["cluster"], "member1");
        assert_eq!(m1.replicas, 3);
        let m2 = &for_cluster(&state, "member2")[0];
        assert_eq!(m2.template, state.workloads[&key].workload.template);
        assert_eq!(m2.replicas, 2);
    }

    #[test]
    fn overrides_render_per_cluster_and_move_the_revision() {
        let mut state = FederationState::default();
        for (name, region) in [("eu-1", "eu"), ("us-1", "us")] {
            state.apply(&Command::UpsertCluster {
                cluster: cluster(name, region),
            });
        }
        apply(&mut state, WEB);
        placed(&mut state);
        let key = WorkloadKey::new("default", "web");
        assert_eq!(state.workloads[&key].revision, 1);

        apply(&mut state, EU_OVERRIDE);
        // The override changes what eu-1 runs: a new revision.
        assert_eq!(state.workloads[&key].revision, 2);
        let eu = for_cluster(&state, "eu-1");
        assert_eq!(eu[0].replicas, 3);
        assert_eq!(
            eu[0].template.image.as_deref(),
            Some("mirror.eu/shop/web:v1")
        );
        assert_eq!(eu[0].template.env["REGION"], "eu");
        assert_eq!(eu[0].revision, 2);
        let us = for_cluster(&state, "us-1");
        assert_eq!(us[0].replicas, 1);
        assert_eq!(
            us[0].template.image.as_deref(),
            Some("docker.io/shop/web:v1")
        );

        // Applying the same override again changes nothing; deleting it is a new revision.
        apply(&mut state, EU_OVERRIDE);
        assert_eq!(state.workloads[&key].revision, 2);
        state.apply(&Command::DeletePolicy {
            key: crate::store::policy_key("OverridePolicy", Some("default"), "eu"),
        });
        assert_eq!(state.workloads[&key].revision, 3);
        assert_eq!(
            for_cluster(&state, "eu-1")[0].template.image.as_deref(),
            Some("docker.io/shop/web:v1")
        );
    }
}
