//! Per-cluster overrides: `OverridePolicy` objects (Hansa's and Karmada's) change the task
//! template a cluster runs (image parts, env, command, args, labels, a JSON patch) or the
//! replicas it receives. Pure: the caller decides which rules target a cluster.
//!
//! Rendering order: policies by ascending priority, then cluster-scoped before namespaced, then
//! by name, so the most specific policy is applied last and wins; within a policy, rules and
//! their overriders in the order written.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::ResourceSelector;
use crate::model::{ClusterAffinity, TaskTemplate, Workload};

/// An override policy as read from a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverrideObject {
    /// `OverridePolicy` or `ClusterOverridePolicy`.
    pub kind: String,
    pub name: String,
    /// None: cluster-scoped (selects workloads in every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub selectors: Vec<ResourceSelector>,
    /// Higher is applied later, so it wins where two policies change the same thing.
    #[serde(default)]
    pub priority: i32,
    pub rules: Vec<OverrideRule>,
}

impl OverrideObject {
    /// `OverridePolicy default/eu-mirror`, as explanations name it.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// Whether the policy selects `w` (an empty selector list selects every workload of its
    /// namespace, as Karmada's nil resourceSelectors do).
    pub fn selects(&self, w: &Workload) -> bool {
        if self.namespace.as_ref().is_some_and(|ns| *ns != w.namespace) {
            return false;
        }
        self.selectors.is_empty() || self.selectors.iter().any(|s| s.selects(w).is_some())
    }

    /// The order in which policies are applied (see the module documentation).
    pub fn apply_order(&self) -> (i32, bool, &str, &str) {
        (
            self.priority,
            self.namespace.is_some(),
            self.namespace.as_deref().unwrap_or(""),
            &self.name,
        )
    }
}

/// Overriders for the clusters `target` selects (None: every cluster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverrideRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ClusterAffinity>,
    pub overriders: Vec<Overrider>,
}

/// How an overrider changes its part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverrideOp {
    Add,
    Remove,
    Replace,
}

impl fmt::Display for OverrideOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OverrideOp::Add => "add",
            OverrideOp::Remove => "remove",
            OverrideOp::Replace => "replace",
        })
    }
}

/// The parts of `[registry/]repository[:tag]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageComponent {
    Registry,
    Repository,
    Tag,
}

/// One change. Karmada's semantics: `add` appends to a part (image parts, command, args) or
/// inserts keys (labels, env), `remove` clears a part or deletes values/keys, `replace` sets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Overrider {
    Image {
        component: ImageComponent,
        op: OverrideOp,
        #[serde(default)]
        value: String,
    },
    /// The replicas a cluster receives, when placement gave it any.
    Replicas {
        value: u32,
    },
    Env {
        op: OverrideOp,
        values: BTreeMap<String, String>,
    },
    Command {
        op: OverrideOp,
        values: Vec<String>,
    },
    Args {
        op: OverrideOp,
        values: Vec<String>,
    },
    Labels {
        op: OverrideOp,
        values: BTreeMap<String, String>,
    },
    /// A JSON patch operation on the task template's JSON form (`/image`, `/env/LOG_LEVEL`,
    /// `/args/0`, `/resources/memory`).
    Patch {
        op: OverrideOp,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
    },
}

/// What a cluster runs after overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub template: TaskTemplate,
    /// None: what placement decided.
    pub replicas: Option<u32>,
}

/// Applies `overriders` in order to `template`. An error names the overrider that cannot apply
/// (a patch path that does not exist, a patch that leaves an invalid template).
pub fn render<'a>(
    template: &TaskTemplate,
    overriders: impl IntoIterator<Item = &'a Overrider>,
) -> Result<Rendered, String> {
    let mut out = Rendered {
        template: template.clone(),
        replicas: None,
    };
    for o in overriders {
        apply(&mut out, o)?;
    }
    Ok(out)
}

fn apply(out: &mut Rendered, o: &Overrider) -> Result<(), String> {
    let t = &mut out.template;
    match o {
        Overrider::Image {
            component,
            op,
            value,
        } => {
            let Some(image) = &t.image else {
                return Err("image overrider: the template has no image".into());
            };
            let mut parts = ImageRef::parse(image);
            let part = match component {
                ImageComponent::Registry => &mut parts.registry,
                ImageComponent::Repository => &mut parts.repository,
                ImageComponent::Tag => &mut parts.tag,
            };
            match op {
                OverrideOp::Add => part.push_str(value),
                OverrideOp::Remove => part.clear(),
                OverrideOp::Replace => *part = value.clone(),
            }
            if parts.repository.is_empty() {
                return Err(format!(
                    "image overrider: {op} {component:?} leaves {image:?} without a repository"
                ));
            }
            t.image = Some(parts.to_string());
        }
        Overrider::Replicas { value } => out.replicas = Some(*value),
        Overrider::Env { op, values } => map_op(&mut t.env, *op, values),
        Overrider::Labels { op, values } => map_op(&mut t.labels, *op, values),
        Overrider::Command { op, values } => list_op(&mut t.command, *op, values),
        Overrider::Args { op, values } => list_op(&mut t.args, *op, values),
        Overrider::Patch { op, path, value } => {
            let mut doc = serde_json::to_value(&*t).map_err(|e| e.to_string())?;
            json_patch(&mut doc, *op, path, value.as_ref())
                .map_err(|e| format!("patch {op} {path}: {e}"))?;
            *t = serde_json::from_value(doc)
                .map_err(|e| format!("patch {op} {path}: the template becomes invalid: {e}"))?;
        }
    }
    Ok(())
}

fn map_op(map: &mut BTreeMap<String, String>, op: OverrideOp, values: &BTreeMap<String, String>) {
    match op {
        OverrideOp::Add => map.extend(values.clone()),
        OverrideOp::Remove => map.retain(|k, _| !values.contains_key(k)),
        // Karmada's replace changes keys that exist and leaves the rest alone.
        OverrideOp::Replace => {
            for (k, v) in values {
                if let Some(old) = map.get_mut(k) {
                    *old = v.clone();
                }
            }
        }
    }
}

fn list_op(list: &mut Vec<String>, op: OverrideOp, values: &[String]) {
    match op {
        OverrideOp::Add => list.extend(values.iter().cloned()),
        OverrideOp::Remove => list.retain(|v| !values.contains(v)),
        OverrideOp::Replace => *list = values.to_vec(),
    }
}

/// RFC 6902 add/remove/replace at a JSON pointer. `add` on an object member sets it, on an
/// array index inserts (`-` appends); `remove` and `replace` need the target to exist.
fn json_patch(
    doc: &mut Value,
    op: OverrideOp,
    path: &str,
    value: Option<&Value>,
) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("a path starts with /".into());
    }
    let (parent_path, last) = path.rsplit_once('/').unwrap_or(("", path));
    let last = last.replace("~1", "/").replace("~0", "~");
    let value = || value.cloned().ok_or_else(|| format!("{op} needs a value"));
    if parent_path.is_empty() && last.is_empty() {
        return Err("cannot patch the whole template".into());
    }
    let parent = match doc.pointer_mut(parent_path) {
        Some(p) => p,
        // Optional template fields are omitted when empty: add creates the object.
        None if op == OverrideOp::Add && !parent_path.is_empty() => {
            let (gp, key) = parent_path.rsplit_once('/').unwrap_or(("", parent_path));
            let grand = doc
                .pointer_mut(gp)
                .and_then(Value::as_object_mut)
                .ok_or_else(|| format!("{parent_path} does not exist"))?;
            grand
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Default::default()))
        }
        None => return Err(format!("{parent_path} does not exist")),
    };
    match parent {
        Value::Object(map) => match op {
            OverrideOp::Add => {
                map.insert(last, value()?);
            }
            OverrideOp::Remove => {
                map.remove(&last)
                    .ok_or_else(|| format!("{path} does not exist"))?;
            }
            OverrideOp::Replace => {
                let slot = map
                    .get_mut(&last)
                    .ok_or_else(|| format!("{path} does not exist"))?;
                *slot = value()?;
            }
        },
        Value::Array(list) => {
            let index = if last == "-" && op == OverrideOp::Add {
                list.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("{last:?} is not an index of {parent_path}"))?
            };
            let bound = if op == OverrideOp::Add {
                list.len()
            } else {
                list.len().saturating_sub(1)
            };
            if index > bound || (op != OverrideOp::Add && list.is_empty()) {
                return Err(format!("{path} is out of range"));
            }
            match op {
                OverrideOp::Add => list.insert(index, value()?),
                OverrideOp::Remove => {
                    list.remove(index);
                }
                OverrideOp::Replace => list[index] = value()?,
            }
        }
        other => {
            return Err(format!(
                "{parent_path} is a {}, not an object or a list",
                match other {
                    Value::String(_) => "string",
                    Value::Number(_) => "number",
                    Value::Bool(_) => "boolean",
                    _ => "null",
                }
            ))
        }
    }
    Ok(())
}

/// `[registry/]repository[:tag]`; a first path component with a `.` or `:`, or `localhost`,
/// is a registry (Docker's rule). Digests stay part of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageRef {
    registry: String,
    repository: String,
    tag: String,
}

impl ImageRef {
    fn parse(image: &str) -> ImageRef {
        let (registry, rest) = match image.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest)
            }
            _ => (String::new(), image),
        };
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') && !repo.contains('@') => {
                (repo.to_string(), tag.to_string())
            }
            _ => (rest.to_string(), String::new()),
        };
        ImageRef {
            registry,
            repository,
            tag,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.registry.is_empty() {
            write!(f, "{}/", self.registry)?;
        }
        f.write_str(&self.repository)?;
        if !self.tag.is_empty() {
            write!(f, ":{}", self.tag)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> TaskTemplate {
        TaskTemplate {
            image: Some(image.into()),
            args: vec!["-f".into(), "-p".into(), "8080".into()],
            env: BTreeMap::from([("MODE".into(), "prod".into())]),
            ..Default::default()
        }
    }

    fn image(component: ImageComponent, op: OverrideOp, value: &str) -> Overrider {
        Overrider::Image {
            component,
            op,
            value: value.into(),
        }
    }

    #[test]
    fn image_parts_follow_dockers_rules() {
        for (image, registry, repository, tag) in [
            ("nginx", "", "nginx", ""),
            ("nginx:1.27", "", "nginx", "1.27"),
            ("library/nginx:1.27", "", "library/nginx", "1.27"),
            (
                "registry.eu:5000/web/api:v2",
                "registry.eu:5000",
                "web/api",
                "v2",
            ),
            ("localhost/busybox", "localhost", "busybox", ""),
        ] {
            let parsed = ImageRef::parse(image);
            assert_eq!(
                (
                    parsed.registry.as_str(),
                    parsed.repository.as_str(),
                    parsed.tag.as_str()
                ),
                (registry, repository, tag),
                "{image}"
            );
            assert_eq!(parsed.to_string(), image);
        }
    }

    #[test]
    fn image_overriders_have_karmadas_semantics() {
        let t = template("docker.io/web/api:v1");
        let cases = [
            (
                image(ImageComponent::Registry, OverrideOp::Replace, "mirror.eu"),
                "mirror.eu/web/api:v1",
            ),
            (
                image(ImageComponent::Registry, OverrideOp::Add, "-eu"),
                "docker.io-eu/web/api:v1",
            ),
            (
                image(ImageComponent::Registry, OverrideOp::Remove, ""),
                "web/api:v1",
            ),
            (
                image(
                    ImageComponent::Repository,
                    OverrideOp::Replace,
                    "web/api-slim",
                ),
                "docker.io/web/api-slim:v1",
            ),
            (
                image(ImageComponent::Tag, OverrideOp::Replace, "v2"),
                "docker.io/web/api:v2",
            ),
            (
                image(ImageComponent::Tag, OverrideOp::Add, "-debug"),
                "docker.io/web/api:v1-debug",
            ),
        ];
        for (o, want) in cases {
            let r = render(&t, [&o]).unwrap();
            assert_eq!(r.template.image.as_deref(), Some(want), "{o:?}");
        }
        let err = render(
            &t,
            [&image(ImageComponent::Repository, OverrideOp::Remove, "")],
        )
        .unwrap_err();
        assert!(err.contains("without a repository"), "{err}");
        let no_image = TaskTemplate::default();
        assert!(render(
            &no_image,
            [&image(ImageComponent::Tag, OverrideOp::Replace, "v2")]
        )
        .is_err());
    }

    #[test]
    fn lists_maps_and_replicas() {
        let t = template("api:v1");
        let os = [
            Overrider::Args {
                op: OverrideOp::Remove,
                values: vec!["-f".into()],
            },
            Overrider::Args {
                op: OverrideOp::Add,
                values: vec!["--region=eu".into()],
            },
            Overrider::Command {
                op: OverrideOp::Replace,
                values: vec!["/bin/api".into()],
            },
            Overrider::Env {
                op: OverrideOp::Add,
                values: BTreeMap::from([("REGION".into(), "eu".into())]),
            },
            Overrider::Env {
                op: OverrideOp::Replace,
                values: BTreeMap::from([
                    ("MODE".into(), "canary".into()),
                    ("ABSENT".into(), "x".into()),
                ]),
            },
            Overrider::Labels {
                op: OverrideOp::Add,
                values: BTreeMap::from([("tier".into(), "edge".into())]),
            },
            Overrider::Replicas { value: 5 },
        ];
        let r = render(&t, &os).unwrap();
        assert_eq!(r.template.args, ["-p", "8080", "--region=eu"]);
        assert_eq!(r.template.command, ["/bin/api"]);
        assert_eq!(
            r.template.env,
            BTreeMap::from([
                ("MODE".into(), "canary".into()),
                ("REGION".into(), "eu".into())
            ])
        );
        assert_eq!(r.template.labels["tier"], "edge");
        assert_eq!(r.replicas, Some(5));
    }

    #[test]
    fn json_patches_address_the_template() {
        let t = template("api:v1");
        let patch = |op, path: &str, value: Option<Value>| Overrider::Patch {
            op,
            path: path.into(),
            value,
        };
        let r = render(
            &t,
            &[
                patch(OverrideOp::Replace, "/image", Some(json!("api:v9"))),
                patch(OverrideOp::Add, "/env/LOG", Some(json!("debug"))),
                patch(OverrideOp::Remove, "/env/MODE", None),
                patch(OverrideOp::Replace, "/args/2", Some(json!("9090"))),
                patch(OverrideOp::Add, "/args/-", Some(json!("-v"))),
                patch(OverrideOp::Add, "/labels/team", Some(json!("core"))),
            ],
        )
        .unwrap();
        assert_eq!(r.template.image.as_deref(), Some("api:v9"));
        assert_eq!(
            r.template.env,
            BTreeMap::from([("LOG".into(), "debug".into())])
        );
        assert_eq!(r.template.args, ["-f", "-p", "9090", "-v"]);
        assert_eq!(r.template.labels["team"], "core");

        for (o, want) in [
            (
                patch(OverrideOp::Replace, "/nope", Some(json!(1))),
                "patch replace /nope: /nope does not exist",
            ),
            (
                patch(OverrideOp::Remove, "/args/7", None),
                "patch remove /args/7: /args/7 is out of range",
            ),
            (
                patch(OverrideOp::Replace, "/image", Some(json!(3))),
                "patch replace /image: the template becomes invalid",
            ),
            (
                patch(OverrideOp::Add, "image", Some(json!("x"))),
                "patch add image: a path starts with /",
            ),
            (
                patch(OverrideOp::Add, "/env/X", None),
                "patch add /env/X: add needs a value",
            ),
        ] {
            let err = render(&t, [&o]).unwrap_err();
            assert!(err.starts_with(want), "{err} (wanted {want})");
        }
    }
}
