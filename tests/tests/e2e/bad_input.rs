//! Bad input gets a clear error, a non-zero exit and no change; a workload nothing can take
//! is accepted as Pending and placed once a cluster can take it.

use std::time::Duration;

use hansa_tests::{wait_for, Federation};

const LIMIT: Duration = Duration::from_secs(60);

fn workload_names(fed: &Federation) -> Vec<String> {
    fed.hansa_json(&["get", "workloads"])
        .expect("get workloads")
        .as_array()
        .expect("a list")
        .iter()
        .map(|w| w["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn bad_manifests_are_refused_with_their_file_doc_and_field() {
    let fed = Federation::new();
    let _hub = fed.start_hub("fed-1");

    let good = "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {name: good}\nspec:\n  replicas: 1\n  template: {command: [sleep, '1000']}\n";
    let cases: &[(&str, String, &[&str])] = &[
        ("malformed.yaml", "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {name: [\n".into(), &["malformed.yaml doc 1"]),
        ("unknown.yaml", "apiVersion: hansa.dev/v1\nkind: Gizmo\nmetadata: {name: g}\n".into(), &["unknown.yaml doc 1", "Gizmo"]),
        (
            "negative.yaml",
            format!("{good}---\napiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {{name: web}}\nspec:\n  replicas: -1\n  template: {{command: [sleep, '1']}}\n"),
            &["negative.yaml doc 2: spec.replicas: must be >= 0 (got -1)"],
        ),
        (
            "badname.yaml",
            "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {name: Web_App}\nspec:\n  replicas: 1\n  template: {command: [sleep, '1']}\n".into(),
            &["badname.yaml doc 1: metadata.name", "Web_App"],
        ),
        ("broken.json", "{\"id\": \"app\", \"instances\": ".into(), &["broken.json doc 1"]),
    ];
    for (name, content, expected) in cases {
        let path = fed.path(name);
        std::fs::write(&path, content).expect("write manifest");
        let out = fed.hansa(&["apply", "-f", path.to_str().expect("path")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: apply must fail");
        for part in *expected {
            assert!(
                stderr.contains(part),
                "{name}: expected {part:?} in: {stderr}"
            );
        }
        // All or nothing: the good document of a file with a bad one is not applied either.
        assert!(
            workload_names(&fed).is_empty(),
            "{name}: nothing may change"
        );
    }
}

#[test]
fn a_workload_nothing_fits_is_pending_until_a_cluster_can_take_it() {
    let fed = Federation::new();
    let hub = fed.start_hub("fed-1");
    let api = hub.api.clone();
    let small = fed.issue("cluster", "small-1");
    let small_config = fed.agent_config("small-1", "eu", "127.0.20.1", &api, (&small.0, &small.1));
    let _small = fed.start_agent("small-1", &small_config);
    wait_for("the cluster to register", LIMIT, || {
        let c = fed.hansa_json(&["get", "clusters"]).ok()?;
        (c.as_array()?.len() == 1).then_some(())
    });

    // The Kubernetes fixture needs a container runtime; these clusters only run processes.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/tests/fixtures/hello-kubernetes.yaml"
    );
    let out = fed.hansa(&["apply", "-f", fixture]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("workload/hello-world created: Pending"),
        "{stdout}"
    );
    assert!(stdout.contains("no container runtime"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.selector"),
        "the missing selector is reported"
    );

    // More memory than any cluster has: Pending, and the reason says so.
    let big = fed.path("big.yaml");
    std::fs::write(
        &big,
        "apiVersion: hansa.dev/v1\nkind: Workload\nmetadata: {name: big}\nspec:\n  replicas: 1\n  template:\n    command: [sleep, '1000']\n    resources: {memory: 6Gi}\n",
    )
    .expect("manifest");
    let out = fed.hansa_ok(&["apply", "-f", big.to_str().expect("path")]);
    assert!(out.contains("workload/big created: Pending"), "{out}");
    assert!(out.contains("insufficient memory"), "{out}");
    let phase = |name: &str| -> Option<String> {
        let w = fed.hansa_json(&["get", "workloads", name]).ok()?;
        Some(w.as_array()?.first()?["phase"].as_str()?.to_string())
    };
    assert_eq!(phase("big").as_deref(), Some("Pending"));

    // A cluster that can take it joins: the workload is placed there without another apply.
    let large = fed.issue("cluster", "large-1");
    let large_config = fed.agent_config("large-1", "us", "127.0.21.1", &api, (&large.0, &large.1));
    let text = std::fs::read_to_string(&large_config)
        .expect("config")
        .replace("memory = \"4Gi\"", "memory = \"16Gi\"");
    std::fs::write(&large_config, text).expect("config");
    let _large = fed.start_agent("large-1", &large_config);
    wait_for("big to be placed on large-1", LIMIT, || {
        let p = fed.hansa_json(&["get", "placements", "big"]).ok()?;
        (p.as_array()?.first()?["clusters"]["large-1"] == 1).then_some(())
    });
    wait_for("big to run", LIMIT, || {
        (phase("big")? == "Running").then_some(())
    });
    fed.hansa_ok(&["delete", "workload", "big"]);
}

#[test]
fn broken_config_files_are_refused_naming_the_key() {
    let fed = Federation::new();
    let path = fed.path("broken.toml");
    std::fs::write(&path, "name = \"fed-1\"\nlisten = \"127.0.0.1:1\"\npeer_listen = \"127.0.0.1:2\"\ndata_dir = \"/tmp/x\"\nlisten_typo = 3\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n").expect("config");
    let mut federator = fed.start_federator("broken", &path);
    assert!(!federator.wait_exit(LIMIT).success());
    assert!(
        federator.log_text().contains("listen_typo"),
        "{}",
        federator.log_text()
    );

    let agent_path = fed.path("broken-agent.toml");
    std::fs::write(&agent_path, "cluster = \"eu-1\"\nfederators = []\nnode_address = \"127.0.0.1\"\ndata_dir = \"/tmp/x\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n").expect("config");
    let mut agent = fed.start_agent("broken", &agent_path);
    assert!(!agent.wait_exit(LIMIT).success());
    assert!(
        agent
            .log_text()
            .contains("federators: must name at least one federator"),
        "{}",
        agent.log_text()
    );
}
