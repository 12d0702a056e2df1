use super::{parse_err, parse_ok};
use crate::manifest::{parse_manifests, ManifestError, ManifestFile};

const NATIVE: &str = "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {name: web}\nspec:\n  template: {command: [app]}\n";

#[test]
fn malformed_yaml_names_the_document_and_position() {
    let content = format!("{NATIVE}---\nkind: [unclosed\n");
    let errors = parse_err("web.yaml", &content);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("web.yaml doc 2: invalid YAML: "),
        "{errors:?}"
    );
    assert!(errors[0].contains("line 7 column"), "{errors:?}");
}

#[test]
fn empty_documents_are_skipped_but_counted() {
    let content = format!("---\n---\n{NATIVE}---\n");
    assert_eq!(parse_ok("web.yaml", &content).workloads.len(), 1);
    let content = format!("---\n# nothing\n---\n{}", NATIVE.replace("web", "Web"));
    assert!(parse_err("web.yaml", &content)[0].starts_with("web.yaml doc 2: metadata.name"));
    assert!(parse_ok("empty.yaml", "").workloads.is_empty());
}

#[test]
fn unknown_kind_is_an_error_naming_it() {
    assert_eq!(
        parse_err("job.yaml", "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x}\n"),
        ["job.yaml doc 1: unknown apiVersion batch/v1 kind CronJob: Hansa reads hansa.dev/v1 Workload, PlacementPolicy and OverridePolicy, apps/v1 Deployment, v1 Service, policy.karmada.io/v1alpha1 PropagationPolicy, ClusterPropagationPolicy, OverridePolicy and ClusterOverridePolicy, and Marathon app JSON"]
    );
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec: {containers: [{name: api, image: api:1, ports: [{name: http, containerPort: 80}]}]}\n";
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec: {selector: {app: api}, ports: [{port: 80, targetPort: http}]}\n";
const MARATHON_YAML: &str = "id: /jobs/batch\ncmd: ./batch\ninstances: 2\n";

#[test]
fn one_file_may_mix_kinds() {
    let content = format!("{NATIVE}---\n{SERVICE}---\n{MARATHON_YAML}---\n{DEPLOYMENT}");
    let parsed = parse_ok("all.yaml", &content);
    let keys: Vec<String> = parsed
        .workloads
        .iter()
        .map(|w| w.key().to_string())
        .collect();
    assert_eq!(keys, ["default/web", "jobs/batch", "default/api"]);
    assert_eq!(
        parsed.workloads[2]
            .service
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("api")
    );
    assert_eq!(parsed.warnings, Vec::<String>::new());
}

#[test]
fn json_files_are_read_as_json() {
    let json = r#"{"apiVersion": "hansa.dev/v1", "kind": "Workload", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "template": {"command": ["app"], "resources": {"cpu": 0.5}}}}"#;
    let w = &parse_ok("web.json", json).workloads[0];
    assert_eq!((w.replicas, w.template.resources.cpu_millis), (2, 500));
    // Whatever the name, content that starts like JSON is JSON; a stream of values is numbered.
    let two = format!("{json}\n{}", json.replace("\"web\"", "\"api\""));
    assert_eq!(parse_ok("manifest", &two).workloads.len(), 2);
    assert!(parse_err("web.json", &format!("{json}\n{{"))
        .iter()
        .all(|e| e.starts_with("web.json doc 2: invalid JSON: ")));
}

#[test]
fn one_bad_document_fails_the_whole_call() {
    let bad = NATIVE.replace(
        "command: [app]",
        "command: [app], ports: [{name: http, hostPort: 0}]",
    );
    let content = format!("{NATIVE}---\n{DEPLOYMENT}---\n{bad}");
    assert_eq!(
        parse_err("web.yaml", &content),
        ["web.yaml doc 3: spec.template.ports[0].hostPort: must be between 1 and 65535 (got 0)"]
    );
    let files = [
        ManifestFile {
            name: "good.yaml",
            content: NATIVE,
        },
        ManifestFile {
            name: "bad.yaml",
            content: "kind: Pod\n",
        },
    ];
    let err = parse_manifests(&files).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].file, "bad.yaml");
}

#[test]
fn every_error_is_reported_one_per_line() {
    let files = [
        ManifestFile {
            name: "a.yaml",
            content: "kind: Pod\n",
        },
        ManifestFile {
            name: "b.yaml",
            content: &NATIVE.replace("web", "Web"),
        },
    ];
    let err = parse_manifests(&files).unwrap_err();
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), 2);
    assert!(shown.starts_with("a.yaml doc 1: unknown apiVersion <missing> kind Pod: "));
    let as_error: &dyn std::error::Error = &err;
    assert_eq!(as_error.to_string(), shown);
    let e = ManifestError {
        file: "web.yaml".into(),
        doc: 2,
        path: String::new(),
        message: "boom".into(),
    };
    assert_eq!(e.to_string(), "web.yaml doc 2: boom");
}

#[test]
fn a_workload_may_be_defined_once() {
    let files = [
        ManifestFile {
            name: "a.yaml",
            content: NATIVE,
        },
        ManifestFile {
            name: "b.json",
            content: r#"{"id": "/web", "cmd": "x"}"#,
        },
    ];
    assert_eq!(
        parse_manifests(&files).unwrap_err().to_string(),
        "b.json doc 1: workload default/web is already defined in a.yaml doc 1"
    );
}

#[test]
fn yaml_conveniences_work() {
    // A byte order mark, merge keys, and flow style that looks like JSON.
    let merged = "\u{feff}apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {name: web}\nspec:\n  template:\n    <<: {command: [app]}\n    args: [x]\n";
    assert_eq!(
        parse_ok("web.yaml", merged).workloads[0].template.command,
        ["app"]
    );
    let flow = "{apiVersion: hansa.dev/v1, kind: Workload, metadata: {name: web}, spec: {template: {command: [app]}}}";
    assert_eq!(parse_ok("web.yaml", flow).workloads.len(), 1);
    assert_eq!(
        parse_err("web.yaml", "a: 1\na: 2\n"),
        ["web.yaml doc 1: invalid YAML: duplicate entry with key \"a\""]
    );
}

/// Straight to JSON reads every document as the YAML value tree does: the examples shipped in
/// the repository, a user's fixture, and the corners (numbers, nulls, quoting, anchors,
/// block scalars, several documents).
#[test]
fn yaml_reads_the_same_straight_to_json_as_through_the_value_tree() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut texts: Vec<(String, String)> = ["policies/examples", "core/tests/fixtures", "deploy"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).into_iter().flatten())
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|path| {
            (
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            )
        })
        .collect();
    assert!(texts.len() >= 10, "found only {} YAML files", texts.len());
    texts.push((
        "corners".into(),
        "a: 1\nb: -2.5\nc: 1e3\nd: ~\ne: null\nf: \"quoted: yes\"\ng: 'single'\nh: true\n\
         i: [1, two, {three: 3}]\nj: &anchor {k: v}\nl: *anchor\nm: |\n  line one\n  line two\n\
         n: >\n  folded\n  text\no: 0x1f\np: 10m\nq: 16Mi\nr: \"\"\n---\nsecond: doc\n---\n"
            .into(),
    ));
    for (name, text) in &texts {
        if text.contains("<<") || text.contains('!') {
            continue;
        }
        assert_eq!(
            super::super::read_yaml(text, false),
            super::super::read_yaml(text, true),
            "{name}"
        );
    }
}
