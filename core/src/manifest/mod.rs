//! Manifest parsing: native `hansa.dev/v1` Workloads, Kubernetes `apps/v1` Deployments joined
//! with `v1` Services, and Marathon app JSON, all normalised to [`Workload`]s and validated.
//!
//! Files may hold several YAML documents (`---`) or JSON values; documents are numbered from 1
//! per file, empty ones included. Problems are reported as `file doc N: path: message`.

mod kubernetes;
mod marathon;
mod native;
mod overrides;
mod policies;
pub mod quantity;
mod walk;

use std::fmt;

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::model::{ManifestFormat, Workload};
use crate::overrides::OverrideObject;
use crate::validate::validate_workload;
pub use policies::{bind, bound, governing, PolicyObject, ResourceSelector};
use walk::Diag;

/// One manifest file as the user handed it over.
#[derive(Debug, Clone, Copy)]
pub struct ManifestFile<'a> {
    /// Shown in errors and warnings, e.g. `web.yaml`; a `.json` name selects the JSON parser.
    pub name: &'a str,
    pub content: &'a str,
}

/// Everything the files declare, and what the user should know about how it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// In the order the files and documents declare them, placement as written (policies are
    /// bound when the federation solves: see [`bind`]).
    pub workloads: Vec<Workload>,
    /// Placement policy objects (native and Karmada), in declaration order.
    pub policies: Vec<PolicyObject>,
    /// Override policy objects (native and Karmada), in declaration order.
    pub overrides: Vec<OverrideObject>,
    /// `file doc N: path: message`, e.g. fields of foreign formats that Hansa ignores.
    pub warnings: Vec<String>,
}

/// A problem in one document, at a field path (empty: the document as a whole).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file} doc {doc}: {}{message}", path_prefix(.path))]
pub struct ManifestError {
    pub file: String,
    /// 1-based, counting empty documents too.
    pub doc: usize,
    pub path: String,
    pub message: String,
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// Every problem found, in file and document order; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Parses every document of every file, joins Kubernetes Deployments with their Services across
/// all files, validates everything. All or nothing: any error means no workloads.
pub fn parse_manifests(files: &[ManifestFile<'_>]) -> Result<Parsed, ManifestErrors> {
    let mut report = Report::default();
    let mut entries: Vec<(Origin, Entry)> = Vec::new();
    let mut services: Vec<(Origin, kubernetes::Service)> = Vec::new();
    let mut policies: Vec<(Origin, PolicyObject)> = Vec::new();
    let mut overrides: Vec<(Origin, OverrideObject)> = Vec::new();

    for file in files {
        for (i, doc) in documents(file).into_iter().enumerate() {
            let origin = Origin {
                file: file.name.to_string(),
                doc: i + 1,
            };
            let value = match doc {
                Ok(Value::Null) => continue,
                Ok(value) => value,
                Err(message) => {
                    report.error(&origin, "", message);
                    continue;
                }
            };
            let mut d = Diag::default();
            for read in read_document(&value, &mut d) {
                match read {
                    Read::Workload(w) => entries.push((origin.clone(), Entry::Ready(w))),
                    Read::Deployment(dep) => entries.push((origin.clone(), Entry::Deployment(dep))),
                    Read::Service(svc) => services.push((origin.clone(), svc)),
                    Read::Policy(p) => policies.push((origin.clone(), p)),
                    Read::Override(o) => overrides.push((origin.clone(), o)),
                }
            }
            report.absorb(&origin, d);
        }
    }

    let mut deployments: Vec<(&Origin, &mut kubernetes::Deployment)> = entries
        .iter_mut()
        .filter_map(|(origin, entry)| match entry {
            Entry::Deployment(dep) => Some((&*origin, dep)),
            Entry::Ready(_) => None,
        })
        .collect();
    kubernetes::join(&mut deployments, &services, &mut report);

    for (i, (origin, p)) in policies.iter().enumerate() {
        if let Some((first, _)) = policies[..i]
            .iter()
            .find(|(_, q)| q.kind == p.kind && q.name == p.name && q.namespace == p.namespace)
        {
            report.error(
                origin,
                "",
                format!(
                    "{} is already defined in {} doc {}",
                    p.display_name(),
                    first.file,
                    first.doc
                ),
            );
        }
    }
    for (i, (origin, o)) in overrides.iter().enumerate() {
        if let Some((first, _)) = overrides[..i]
            .iter()
            .find(|(_, q)| q.kind == o.kind && q.name == o.name && q.namespace == o.namespace)
        {
            report.error(
                origin,
                "",
                format!(
                    "{} is already defined in {} doc {}",
                    o.display_name(),
                    first.file,
                    first.doc
                ),
            );
        }
    }
    let policy_objects: Vec<PolicyObject> = policies.iter().map(|(_, p)| p.clone()).collect();
    let made: Vec<Workload> = entries
        .iter()
        .map(|(_, entry)| match entry {
            Entry::Ready(w) => w.clone(),
            Entry::Deployment(dep) => dep.workload.clone(),
        })
        .collect();

    let mut workloads: Vec<Workload> = Vec::with_capacity(entries.len());
    let mut seen: Vec<(&Origin, crate::model::WorkloadKey)> = Vec::new();
    for ((origin, _), w) in entries.iter().zip(&made) {
        let key = w.key();
        if let Some((first, _)) = seen.iter().find(|(_, k)| *k == key) {
            report.error(
                origin,
                "",
                format!(
                    "workload {key} is already defined in {} doc {}",
                    first.file, first.doc
                ),
            );
        }
        seen.push((origin, key));
        for (path, message) in validate_workload(w) {
            if w.format == ManifestFormat::Native {
                report.error(origin, path, message);
            } else {
                report.error(
                    origin,
                    path,
                    format!("{message} (in the Hansa workload made from this document)"),
                );
            }
        }
        workloads.push(w.clone());
    }

    if report.errors.is_empty() {
        Ok(Parsed {
            workloads,
            policies: policy_objects,
            overrides: overrides.into_iter().map(|(_, o)| o).collect(),
            warnings: report.warnings,
        })
    } else {
        Err(ManifestErrors(report.errors))
    }
}

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub file: String,
    pub doc: usize,
}

/// Errors and warnings of the whole call, with their origins.
#[derive(Debug, Default)]
pub(crate) struct Report {
    errors: Vec<ManifestError>,
    warnings: Vec<String>,
}

impl Report {
    pub fn error(&mut self, at: &Origin, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ManifestError {
            file: at.file.clone(),
            doc: at.doc,
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, at: &Origin, path: &str, message: &str) {
        self.warnings.push(format!(
            "{} doc {}: {}{message}",
            at.file,
            at.doc,
            path_prefix(path)
        ));
    }

    fn absorb(&mut self, at: &Origin, d: Diag) {
        for (path, message) in d.errors {
            self.error(at, path, message);
        }
        for (path, message) in d.warnings {
            self.warn(at, &path, &message);
        }
    }
}

/// A document's contribution before Deployments and Services are joined.
enum Entry {
    Ready(Workload),
    Deployment(kubernetes::Deployment),
}

pub(crate) enum Read {
    Workload(Workload),
    Deployment(kubernetes::Deployment),
    Service(kubernetes::Service),
    Policy(PolicyObject),
    Override(OverrideObject),
}

const KNOWN_KINDS: &str = "Hansa reads hansa.dev/v1 Workload, PlacementPolicy and \
     OverridePolicy, apps/v1 Deployment, v1 Service, policy.karmada.io/v1alpha1 \
     PropagationPolicy, ClusterPropagationPolicy, OverridePolicy and ClusterOverridePolicy, and \
     Marathon app JSON";

/// Recognises a document's format and reads it.
fn read_document(value: &Value, d: &mut Diag) -> Vec<Read> {
    let Value::Object(map) = value else {
        if value.is_array() {
            return marathon::read_list(value, d);
        }
        d.error(
            "",
            format!(
                "expected a manifest object, got {}; {KNOWN_KINDS}",
                walk::describe(value)
            ),
        );
        return Vec::new();
    };
    if map.contains_key("apiVersion") || map.contains_key("kind") {
        let field = |key: &str| match map.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "<missing>".to_string(),
        };
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        return match (api_version.as_str(), kind.as_str()) {
            ("hansa.dev/v1", "Workload") => native::read(value, d)
                .map(Read::Workload)
                .into_iter()
                .collect(),
            ("apps/v1", "Deployment") => kubernetes::read_deployment(value, d)
                .map(Read::Deployment)
                .into_iter()
                .collect(),
            ("v1", "Service") => kubernetes::read_service(value, d)
                .map(Read::Service)
                .into_iter()
                .collect(),
            ("hansa.dev/v1", "PlacementPolicy") => policies::read_native(value, d)
                .map(Read::Policy)
                .into_iter()
                .collect(),
            ("policy.karmada.io/v1alpha1", "PropagationPolicy") => {
                policies::read_karmada(value, d, false)
                    .map(Read::Policy)
                    .into_iter()
                    .collect()
            }
            ("policy.karmada.io/v1alpha1", "ClusterPropagationPolicy") => {
                policies::read_karmada(value, d, true)
                    .map(Read::Policy)
                    .into_iter()
                    .collect()
            }
            ("hansa.dev/v1", "OverridePolicy") => overrides::read_native(value, d)
                .map(Read::Override)
                .into_iter()
                .collect(),
            ("policy.karmada.io/v1alpha1", "OverridePolicy") => {
                overrides::read_karmada(value, d, false)
                    .map(Read::Override)
                    .into_iter()
                    .collect()
            }
            ("policy.karmada.io/v1alpha1", "ClusterOverridePolicy") => {
                overrides::read_karmada(value, d, true)
                    .map(Read::Override)
                    .into_iter()
                    .collect()
            }
            _ => {
                d.error(
                    "",
                    format!("unknown apiVersion {api_version} kind {kind}: {KNOWN_KINDS}"),
                );
                Vec::new()
            }
        };
    }
    if map.contains_key("id") || map.contains_key("apps") || map.contains_key("groups") {
        return marathon::read(value, d);
    }
    d.error(
        "",
        format!("not a manifest: no apiVersion and kind, and no Marathon app id; {KNOWN_KINDS}"),
    );
    Vec::new()
}

/// The documents of a file, as JSON values; parsing stops at the first malformed document.
fn documents(file: &ManifestFile<'_>) -> Vec<Result<Value, String>> {
    let content = file
        .content
        .strip_prefix('\u{feff}')
        .unwrap_or(file.content);
    let named_json = file.name.to_ascii_lowercase().ends_with(".json");
    let looks_json = content.trim_start().starts_with(['{', '[']);
    if named_json || looks_json {
        let docs = json_documents(content);
        // YAML flow style (`{kind: Service}`) looks like JSON too.
        if !named_json && docs.iter().any(Result::is_err) {
            let yaml = yaml_documents(content);
            if yaml.iter().all(Result::is_ok) {
                return yaml;
            }
        }
        return docs;
    }
    yaml_documents(content)
}

fn json_documents(content: &str) -> Vec<Result<Value, String>> {
    let mut docs = Vec::new();
    for doc in serde_json::Deserializer::from_str(content).into_iter::<Value>() {
        match doc {
            Ok(v) => docs.push(Ok(v)),
            Err(e) => {
                docs.push(Err(format!("invalid JSON: {e}")));
                break;
            }
        }
    }
    docs
}

/// A YAML document read straight into JSON values, refusing a mapping that repeats a key
/// (which `serde_json::Value` would let the last one win).
struct Document(Value);

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor).map(Document)
    }
}

struct DocumentVisitor;

impl<'de> serde::de::Visitor<'de> for DocumentVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a number JSON can hold")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Document::deserialize(d).map(|d| d.0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Document(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Document(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate entry with key {key:?}"
                )));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn yaml_documents(content: &str) -> Vec<Result<Value, String>> {
    // Merge keys (`<<: *defaults`) are common in hand-written Kubernetes YAML; they and tags
    // (`!tag`) need the YAML value tree. Without either, each document goes straight to JSON,
    // a third faster.
    let tree = content.contains("<<") || content.contains('!');
    read_yaml(content, tree)
}

/// The documents of `content`, through the YAML value tree or straight to JSON.
fn read_yaml(content: &str, tree: bool) -> Vec<Result<Value, String>> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(content) {
        let parsed = if tree {
            serde_norway::Value::deserialize(doc)
                .map_err(|e| format!("invalid YAML: {e}"))
                .and_then(|mut v| {
                    v.apply_merge()
                        .map_err(|e| format!("invalid YAML merge key: {e}"))?;
                    serde_json::to_value(v).map_err(|e| format!("unsupported YAML: {e}"))
                })
        } else {
            Document::deserialize(doc)
                .map(|d| d.0)
                .map_err(|e| format!("invalid YAML: {e}"))
        };
        let failed = parsed.is_err();
        docs.push(parsed);
        // The parser cannot resynchronise after an error.
        if failed {
            break;
        }
    }
    docs
}

#[cfg(test)]
mod tests;
