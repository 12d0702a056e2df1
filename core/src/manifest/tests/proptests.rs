//! parse_manifests must never panic, whatever a user hands over.

use proptest::prelude::*;

use crate::manifest::{parse_manifests, ManifestFile};
use crate::validate::is_dns_label;

const SEEDS: &[(&str, &str)] = &[
    ("hello-kubernetes.yaml", include_str!("../../../tests/fixtures/hello-kubernetes.yaml")),
    ("hello-marathon.json", include_str!("../../../tests/fixtures/hello-marathon.json")),
    (
        "web.yaml",
        "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {name: web, labels: {app: web}}\nspec:\n  replicas: 4\n  template:\n    image: nginx\n    ports: [{name: http, containerPort: 8080}]\n    resources: {cpu: 100m, memory: 64Mi}\n    healthCheck: {http: {port: http, path: /}}\n  placement:\n    replicaScheduling: {weighting: Static, staticWeights: [{clusters: {clusterNames: [eu-1]}, weight: 3}]}\n  service: {ports: [{name: http, port: 80}]}\n",
    ),
];

fn parse_one(name: &str, content: &str) {
    let _ = parse_manifests(&[ManifestFile { name, content }]);
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(content in "\\PC{0,300}", json in any::<bool>()) {
        parse_one(if json { "x.json" } else { "x.yaml" }, &content);
    }

    #[test]
    fn mutated_manifests_never_panic(
        seed in 0..SEEDS.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..4u8, "[ -~\\n\\t]{0,8}"), 1..6),
    ) {
        let (name, original) = SEEDS[seed];
        let mut bytes = original.as_bytes().to_vec();
        for (at, kind, text) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 => { bytes.splice(i..i, text.bytes()); }
                1 => { let end = (i + text.len()).min(bytes.len()); bytes.drain(i..end); }
                2 => { let end = (i + text.len()).min(bytes.len()); bytes.splice(i..end, text.bytes()); }
                _ => { if i < bytes.len() { bytes[i] = bytes[i].wrapping_add(1) % 128; } }
            }
        }
        parse_one(name, &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn dns_labels_are_accepted_and_round_trip(name in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
        prop_assert!(is_dns_label(&name));
        let content = format!("apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {{name: '{name}'}}\nspec: {{template: {{command: [app]}}}}\n");
        let parsed = parse_manifests(&[ManifestFile { name: "n.yaml", content: &content }]);
        prop_assert_eq!(parsed.map(|p| p.workloads[0].name.clone()), Ok(name));
    }

    #[test]
    fn anything_else_is_rejected(name in "\\PC{0,70}") {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        prop_assert_eq!(is_dns_label(&name), valid);
    }
}
