//! Override policy objects: Hansa's `hansa.dev/v1` `OverridePolicy` and Karmada's
//! `policy.karmada.io/v1alpha1` `OverridePolicy` / `ClusterOverridePolicy`, read with
//! Karmada's field names. Both become an [`OverrideObject`].
//!
//! Karmada's overriders address the Kubernetes object; Hansa applies them to the workload's task
//! template (its only container). `plaintext` paths under `/spec/template/spec/containers/0/`
//! (image, command, args) and `/spec/replicas` are translated; other paths, and overriders Hansa
//! has no counterpart for (annotations), are warnings naming the field.

use std::collections::BTreeMap;

use serde_json::Value;

use super::policies::{karmada_metadata, karmada_selectors, read_affinity, requirements_list};
use super::walk::{Diag, Obj};
use super::ResourceSelector;
use crate::model::{ClusterAffinity, DEFAULT_NAMESPACE};
use crate::overrides::{ImageComponent, OverrideObject, OverrideOp, OverrideRule, Overrider};
use crate::validate::{check_dns_label, check_label_key, check_label_value};

/// `hansa.dev/v1` `OverridePolicy`:
///
/// ```yaml
/// spec:
///   selector: {names: [web], matchLabels: {...}, matchExpressions: [...]}
///   priority: 0
///   rules:
///   - clusters: {clusterNames: [...], exclude, matchLabels, matchExpressions, fieldSelector}
///     image: {registry: mirror.eu, repository: web/api, tag: v2}   # replaces those parts
///     replicas: 2
///     env: {LOG_LEVEL: debug}
///     removeEnv: [DEBUG]
///     command: [/bin/api]          # replaces the command
///     args: [--region=eu]          # replaces the args
///     labels: {tier: edge}
///     patch: [{op: replace, path: /resources/memory, value: 268435456}]
/// ```
pub(super) fn read_native(value: &Value, d: &mut Diag) -> Option<OverrideObject> {
    let errors_before = d.errors.len();
    let mut root = Obj::new(value, "", d)?;
    root.skip("apiVersion");
    root.skip("kind");
    let mut meta = root.required_obj(d, "metadata")?;
    let name = required_name(&mut meta, d);
    let namespace = meta
        .string(d, "namespace")
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    d.check("metadata.namespace", check_dns_label(&namespace));
    strict(meta, d);

    let mut spec = root.required_obj(d, "spec")?;
    let selectors = match spec.obj(d, "selector") {
        Some(mut s) => {
            let names = s.string_list(d, "names");
            let (match_labels, match_expressions) = label_selector_inline(&mut s, d);
            strict(s, d);
            let base = ResourceSelector {
                match_labels,
                match_expressions,
                ..Default::default()
            };
            if names.is_empty() {
                vec![base]
            } else {
                names
                    .into_iter()
                    .map(|name| ResourceSelector {
                        name: Some(name),
                        ..base.clone()
                    })
                    .collect()
            }
        }
        None => vec![ResourceSelector::default()],
    };
    let priority = spec
        .int_in(d, "priority", i32::MIN.into(), i32::MAX.into())
        .unwrap_or(0);
    let mut rules = Vec::new();
    for (path, item) in spec.list(d, "rules") {
        let Some(mut r) = Obj::new(item, path.clone(), d) else {
            continue;
        };
        let target = r.obj(d, "clusters").map(|mut c| {
            let a = read_affinity(&mut c, d, false);
            strict(c, d);
            a
        });
        let mut overriders = Vec::new();
        if let Some(mut i) = r.obj(d, "image") {
            for (key, component) in [
                ("registry", ImageComponent::Registry),
                ("repository", ImageComponent::Repository),
                ("tag", ImageComponent::Tag),
            ] {
                if let Some(value) = i.string(d, key) {
                    overriders.push(Overrider::Image {
                        component,
                        op: OverrideOp::Replace,
                        value,
                    });
                }
            }
            strict(i, d);
        }
        if let Some(value) = r.int_in(d, "replicas", 0, u32::MAX.into()) {
            overriders.push(Overrider::Replicas { value });
        }
        let env = r.string_map(d, "env");
        if !env.is_empty() {
            overriders.push(Overrider::Env {
                op: OverrideOp::Add,
                values: env,
            });
        }
        let remove_env = r.string_list(d, "removeEnv");
        if !remove_env.is_empty() {
            overriders.push(Overrider::Env {
                op: OverrideOp::Remove,
                values: remove_env.into_iter().map(|k| (k, String::new())).collect(),
            });
        }
        if r.has("command") {
            overriders.push(Overrider::Command {
                op: OverrideOp::Replace,
                values: r.string_list(d, "command"),
            });
        }
        if r.has("args") {
            overriders.push(Overrider::Args {
                op: OverrideOp::Replace,
                values: r.string_list(d, "args"),
            });
        }
        let labels = r.string_map(d, "labels");
        check_labels(d, &r.path_of("labels"), &labels);
        if !labels.is_empty() {
            overriders.push(Overrider::Labels {
                op: OverrideOp::Add,
                values: labels,
            });
        }
        for (ppath, p) in r.list(d, "patch") {
            let Some(mut p) = Obj::new(p, ppath, d) else {
                continue;
            };
            let op = operator(&mut p, d, "op");
            let path = p.string(d, "path");
            let value = p.get("value").cloned();
            if path.is_none() {
                d.error(p.path_of("path"), "missing");
            }
            if let (Some(op), Some(path)) = (op, path) {
                patch_checks(d, &p, op, &path, value.as_ref());
                overriders.push(Overrider::Patch { op, path, value });
            }
            strict(p, d);
        }
        if overriders.is_empty() {
            d.error(
                path.clone(),
                "a rule needs at least one of image, replicas, env, removeEnv, command, args, \
                 labels or patch",
            );
        }
        strict(r, d);
        rules.push(OverrideRule { target, overriders });
    }
    if rules.is_empty() {
        d.error("spec.rules", "needs at least one rule");
    }
    strict(spec, d);
    strict(root, d);
    (d.errors.len() == errors_before).then_some(OverrideObject {
        kind: "OverridePolicy".into(),
        name: name?,
        namespace: Some(namespace),
        selectors,
        priority,
        rules,
    })
}

/// Karmada's `OverridePolicy` (namespaced) and `ClusterOverridePolicy`.
pub(super) fn read_karmada(
    value: &Value,
    d: &mut Diag,
    cluster_scoped: bool,
) -> Option<OverrideObject> {
    let errors_before = d.errors.len();
    let mut root = Obj::new(value, "", d)?;
    root.skip("apiVersion");
    root.skip("kind");
    let (name, namespace) =
        karmada_metadata(&mut root, d, cluster_scoped, "ClusterOverridePolicy")?;
    let mut spec = root.required_obj(d, "spec")?;
    let selectors = karmada_selectors(&mut spec, d);
    let mut rules = Vec::new();
    for (path, item) in spec.list(d, "overrideRules") {
        let Some(mut r) = Obj::new(item, path, d) else {
            continue;
        };
        let target = target_cluster(&mut r, d);
        let overriders = match r.required_obj(d, "overriders") {
            Some(o) => karmada_overriders(o, d),
            None => Vec::new(),
        };
        r.finish(d);
        rules.push(OverrideRule { target, overriders });
    }
    // The deprecated single-rule form: spec.targetCluster + spec.overriders.
    if spec.has("overriders") {
        let target = target_cluster(&mut spec, d);
        let overriders = match spec.obj(d, "overriders") {
            Some(o) => karmada_overriders(o, d),
            None => Vec::new(),
        };
        rules.push(OverrideRule { target, overriders });
    }
    if rules.is_empty() {
        d.error("spec.overrideRules", "needs at least one override rule");
    }
    spec.finish(d);
    root.finish(d);
    if d.errors.len() != errors_before {
        return None;
    }
    Some(OverrideObject {
        kind: if cluster_scoped {
            "ClusterOverridePolicy"
        } else {
            "OverridePolicy"
        }
        .into(),
        name: name?,
        namespace,
        selectors,
        priority: 0,
        rules,
    })
}

fn target_cluster(o: &mut Obj<'_>, d: &mut Diag) -> Option<ClusterAffinity> {
    o.obj(d, "targetCluster").map(|mut t| {
        let a = read_affinity(&mut t, d, true);
        t.finish(d);
        a
    })
}

fn karmada_overriders(mut o: Obj<'_>, d: &mut Diag) -> Vec<Overrider> {
    let mut out = Vec::new();
    for (path, item) in o.list(d, "imageOverrider") {
        let Some(mut i) = Obj::new(item, path, d) else {
            continue;
        };
        if let Some(mut p) = i.obj(d, "predicate") {
            d.warn(
                p.path_of("path"),
                "Hansa workloads have one image; the predicate is not needed (ignored)",
            );
            p.skip("path");
            p.finish(d);
        }
        let component = match i.str(d, "component") {
            Some("Registry") => Some(ImageComponent::Registry),
            Some("Repository") => Some(ImageComponent::Repository),
            Some("Tag") => Some(ImageComponent::Tag),
            other => {
                d.error(
                    i.path_of("component"),
                    format!("must be Registry, Repository or Tag (got {other:?})"),
                );
                None
            }
        };
        let op = operator(&mut i, d, "operator");
        let value = i.string(d, "value").unwrap_or_default();
        if let (Some(component), Some(op)) = (component, op) {
            out.push(Overrider::Image {
                component,
                op,
                value,
            });
        }
        i.finish(d);
    }
    for (key, is_args) in [("commandOverrider", false), ("argsOverrider", true)] {
        for (path, item) in o.list(d, key) {
            let Some(mut c) = Obj::new(item, path, d) else {
                continue;
            };
            c.skip("containerName");
            let op = operator(&mut c, d, "operator");
            if op == Some(OverrideOp::Replace) {
                d.error(
                    c.path_of("operator"),
                    "must be add or remove (got \"replace\")",
                );
            }
            let values = c.string_list(d, "value");
            if let Some(op) = op {
                out.push(if is_args {
                    Overrider::Args { op, values }
                } else {
                    Overrider::Command { op, values }
                });
            }
            c.finish(d);
        }
    }
    for (path, item) in o.list(d, "labelsOverrider") {
        let Some(mut l) = Obj::new(item, path, d) else {
            continue;
        };
        let op = operator(&mut l, d, "operator");
        let values = l.string_map(d, "value");
        check_labels(d, &l.path_of("value"), &values);
        if let Some(op) = op {
            out.push(Overrider::Labels { op, values });
        }
        l.finish(d);
    }
    for (path, item) in o.list(d, "plaintext") {
        let Some(mut p) = Obj::new(item, path, d) else {
            continue;
        };
        let op = operator(&mut p, d, "operator");
        let path = p.string(d, "path").unwrap_or_default();
        let value = p.get("value").cloned();
        if let Some(op) = op {
            match plaintext(op, &path, value.clone()) {
                Ok(o) => out.push(o),
                Err(why) => d.warn(p.path_of("path"), format!("{path}: {why} (ignored)")),
            }
        }
        p.finish(d);
    }
    if o.has("annotationsOverrider") {
        let v = o
            .get("annotationsOverrider")
            .cloned()
            .unwrap_or(Value::Null);
        d.warn(
            o.path_of("annotationsOverrider"),
            format!(
                "Hansa workloads have no annotations; {} annotation overrider(s) ignored",
                v.as_array().map_or(1, Vec::len)
            ),
        );
    }
    o.finish(d);
    out
}

/// A Karmada plaintext override on the Deployment, as an overrider of the task template.
fn plaintext(op: OverrideOp, path: &str, value: Option<Value>) -> Result<Overrider, String> {
    const CONTAINER: &str = "/spec/template/spec/containers/0";
    if path == "/spec/replicas" {
        let replicas = value
            .as_ref()
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok());
        return match (op, replicas) {
            (OverrideOp::Add | OverrideOp::Replace, Some(value)) => {
                Ok(Overrider::Replicas { value })
            }
            _ => Err("replicas take add or replace with a non-negative integer".into()),
        };
    }
    let Some(rest) = path.strip_prefix(CONTAINER) else {
        return Err(format!(
            "Hansa translates /spec/replicas and {CONTAINER}/{{image,command,args}} only"
        ));
    };
    let field = rest.trim_start_matches('/');
    let top = field.split('/').next().unwrap_or("");
    if !["image", "command", "args"].contains(&top) {
        return Err(format!(
            "Hansa translates {CONTAINER}/{{image,command,args}} only"
        ));
    }
    Ok(Overrider::Patch {
        op,
        path: format!("/{field}"),
        value,
    })
}

fn operator(o: &mut Obj<'_>, d: &mut Diag, key: &str) -> Option<OverrideOp> {
    let present = o.has(key);
    match o.str(d, key) {
        Some("add") => Some(OverrideOp::Add),
        Some("remove") => Some(OverrideOp::Remove),
        Some("replace") => Some(OverrideOp::Replace),
        Some(other) => {
            d.error(
                o.path_of(key),
                format!("must be add, remove or replace (got {other:?})"),
            );
            None
        }
        None => {
            if !present {
                d.error(o.path_of(key), "missing: add, remove or replace");
            }
            None
        }
    }
}

fn patch_checks(d: &mut Diag, p: &Obj<'_>, op: OverrideOp, path: &str, value: Option<&Value>) {
    if !path.starts_with('/') {
        d.error(
            p.path_of("path"),
            format!("a JSON pointer starts with / (got {path:?})"),
        );
    }
    if op != OverrideOp::Remove && value.is_none() {
        d.error(p.path_of("value"), format!("{op} needs a value"));
    }
}

fn check_labels(d: &mut Diag, path: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        d.check(format!("{path}.{k}"), check_label_key(k));
        d.check(format!("{path}.{k}"), check_label_value(k, v));
    }
}

fn required_name(meta: &mut Obj<'_>, d: &mut Diag) -> Option<String> {
    let name = meta.string(d, "name");
    match &name {
        None if !meta.has("name") => d.error("metadata.name", "missing"),
        Some(name) => d.check("metadata.name", check_dns_label(name)),
        None => {}
    }
    name
}

/// `matchLabels` and `matchExpressions` read inline (the native selector's form).
fn label_selector_inline(
    o: &mut Obj<'_>,
    d: &mut Diag,
) -> (BTreeMap<String, String>, Vec<crate::policy::Requirement>) {
    let labels = o.string_map(d, "matchLabels");
    let expressions = requirements_list(d, o, "matchExpressions");
    (labels, expressions)
}

/// Native manifests are strict: a field Hansa does not know is an error.
fn strict(mut o: Obj<'_>, d: &mut Diag) {
    for (k, _) in o.rest() {
        d.error(o.path_of(k), "unknown field");
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::{parse_manifests, ManifestFile};
    use crate::overrides::{ImageComponent, OverrideOp, Overrider};

    fn parse(content: &str) -> crate::Parsed {
        parse_manifests(&[ManifestFile {
            name: "o.yaml",
            content,
        }])
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(content: &str) -> String {
        parse_manifests(&[ManifestFile {
            name: "o.yaml",
            content,
        }])
        .expect_err("must fail")
        .to_string()
    }

    #[test]
    fn native_override_policy() {
        let p = parse(
            r#"
apiVersion: hansa.dev/v1
kind: OverridePolicy
metadata: {name: eu-mirror}
spec:
  selector: {names: [web]}
  rules:
  - clusters: {fieldSelector: [{key: region, operator: In, values: [eu]}]}
    image: {registry: mirror.eu}
    env: {REGION: eu}
    replicas: 2
    patch: [{op: add, path: /labels/tier, value: edge}]
"#,
        );
        let o = &p.overrides[0];
        assert_eq!(o.display_name(), "OverridePolicy default/eu-mirror");
        assert_eq!(o.selectors[0].name.as_deref(), Some("web"));
        let rule = &o.rules[0];
        assert_eq!(
            rule.target.as_ref().unwrap().field_selector[0].key,
            "region"
        );
        assert_eq!(
            rule.overriders[0],
            Overrider::Image {
                component: ImageComponent::Registry,
                op: OverrideOp::Replace,
                value: "mirror.eu".into()
            }
        );
        assert!(rule.overriders.contains(&Overrider::Replicas { value: 2 }));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn native_errors_name_the_field() {
        let e = errors(
            r#"
apiVersion: hansa.dev/v1
kind: OverridePolicy
metadata: {name: x}
spec:
  rules:
  - imag: {tag: v2}
  - patch: [{op: move, path: /image}, {op: add, path: image}]
"#,
        );
        assert!(
            e.contains("o.yaml doc 1: spec.rules[0].imag: unknown field"),
            "{e}"
        );
        assert!(
            e.contains("spec.rules[1].patch[0].op: must be add, remove or replace (got \"move\")"),
            "{e}"
        );
        assert!(
            e.contains("spec.rules[1].patch[1].path: a JSON pointer starts with / (got \"image\")"),
            "{e}"
        );
        assert!(
            e.contains("spec.rules[1].patch[1].value: add needs a value"),
            "{e}"
        );
    }

    #[test]
    fn karmada_override_policy_as_written() {
        let p = parse(
            r#"
apiVersion: policy.karmada.io/v1alpha1
kind: OverridePolicy
metadata: {name: example, namespace: default}
spec:
  resourceSelectors:
  - {apiVersion: apps/v1, kind: Deployment, name: nginx}
  overrideRules:
  - targetCluster: {clusterNames: [member1]}
    overriders:
      imageOverrider:
      - {component: Registry, operator: replace, value: fictional.registry.us}
      argsOverrider:
      - {containerName: nginx, operator: add, value: [--cluster=member1]}
      labelsOverrider:
      - {operator: add, value: {env: prod}}
      plaintext:
      - {path: /spec/replicas, operator: replace, value: 3}
      - {path: /spec/template/spec/containers/0/image, operator: replace, value: "nginx:1.27"}
      - {path: /metadata/annotations, operator: add, value: {a: b}}
      annotationsOverrider:
      - {operator: add, value: {a: b}}
"#,
        );
        let o = &p.overrides[0];
        assert_eq!(o.display_name(), "OverridePolicy default/example");
        let os = &o.rules[0].overriders;
        assert!(os.contains(&Overrider::Replicas { value: 3 }));
        assert!(os.contains(&Overrider::Patch {
            op: OverrideOp::Replace,
            path: "/image".into(),
            value: Some(serde_json::json!("nginx:1.27"))
        }));
        assert!(os.contains(&Overrider::Args {
            op: OverrideOp::Add,
            values: vec!["--cluster=member1".into()]
        }));
        let w = p.warnings.join("\n");
        assert!(
            w.contains("spec.overrideRules[0].overriders.plaintext[2].path: /metadata/annotations"),
            "{w}"
        );
        assert!(
            w.contains("annotationsOverrider: Hansa workloads have no annotations"),
            "{w}"
        );
    }
}
