//! The agent configuration: parsing, validation and the shipped examples.

use super::*;

#[test]
fn the_shipped_example_loads() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/member-agent.toml"
    ));
    let config = AgentConfig::load(path).expect("deploy/member-agent.toml");
    assert_eq!(config.cluster, "eu-1");
    assert_eq!(config.allocatable().memory_bytes, 8 << 30);
}

#[test]
fn the_shipped_docker_example_loads() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/member-agent-docker.toml"
    ));
    let config = AgentConfig::load(path).expect("deploy/member-agent-docker.toml");
    assert_eq!(config.runtimes, [RuntimeKind::Process, RuntimeKind::Docker]);
    let docker = config.docker.expect("[docker]");
    assert_eq!(docker.address, "tcp://10.2.0.11:2376");
    assert!(docker.ca.is_some() && docker.cert.is_some() && docker.key.is_some());
}

#[test]
fn the_shipped_nodes_example_parses() {
    // Parsed, not loaded: its TLS files live on the operator's host, not in the repo.
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/member-agent-nodes.toml"
    ));
    let text = std::fs::read_to_string(path).expect("deploy/member-agent-nodes.toml");
    let config = AgentConfig::parse(path, &text).expect("deploy/member-agent-nodes.toml");
    let plans = config.node_plans();
    let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"]);
    assert_eq!(
        plans[0].runtimes,
        [RuntimeKind::Process, RuntimeKind::Docker]
    );
    let remote = plans[1].docker.as_ref().expect("node-b's engine");
    assert_eq!(remote.address, "tcp://10.2.0.12:2376");
    assert!(remote.ca.is_some() && remote.cert.is_some() && remote.key.is_some());
    assert_eq!(config.allocatable().cpu_millis, 24_000);
    let err = config
        .check_files(path)
        .expect_err("the example's TLS files are not here");
    assert!(
        err.to_string()
            .contains("nodes[1].docker_tls.ca: cannot read"),
        "{err}"
    );
}

#[test]
fn unreachable_nodes_are_replaced_after_a_minute_unless_told_otherwise() {
    let base = "cluster = \"eu-1\"\nfederators = [\"127.0.0.1:7070\"]\nnode_address = \"127.0.1.1\"\ndata_dir = \"/tmp/agent\"\n";
    let tls = "[tls]\nca = \"ca.crt\"\ncert = \"c.crt\"\nkey = \"c.key\"\n";
    let parse = |extra: &str| {
        AgentConfig::parse(Path::new("a.toml"), &format!("{base}{extra}{tls}")).unwrap()
    };
    assert_eq!(
        parse("").replace_unreachable_after(),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        parse("replace_unreachable_seconds = 15\n").replace_unreachable_after(),
        Some(Duration::from_secs(15))
    );
    assert_eq!(
        parse("replace_unreachable_seconds = 0\n").replace_unreachable_after(),
        None
    );
}

#[test]
fn a_bad_quantity_names_its_key() {
    let text = r#"
cluster = "eu-1"
federators = ["127.0.0.1:7070"]
node_address = "127.0.1.1"
data_dir = "/tmp/agent"
[capacity]
memory = "lots"
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"
"#;
    let err = AgentConfig::parse(Path::new("a.toml"), text).expect_err("bad quantity");
    assert!(
        err.to_string().starts_with("a.toml: capacity.memory: "),
        "{err}"
    );
}

const HEAD: &str = r#"
cluster = "eu-1"
federators = ["127.0.0.1:7070"]
data_dir = "/tmp/agent"
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"
"#;

fn with_nodes(nodes: &str) -> Result<AgentConfig, ConfigError> {
    AgentConfig::parse(Path::new("a.toml"), &format!("{HEAD}{nodes}"))
}

fn error(nodes: &str) -> String {
    with_nodes(nodes).expect_err("invalid").to_string()
}

/// Loads like the agent does: parse, then check the files it names.
fn load_nodes(dir: &Path, nodes: &str) -> Result<AgentConfig, ConfigError> {
    let path = dir.join("agent.toml");
    std::fs::write(&path, format!("{HEAD}{nodes}")).expect("write config");
    AgentConfig::load(&path)
}

#[test]
fn nodes_have_their_own_address_capacity_and_runtimes() {
    let config = with_nodes(
        r#"
[[nodes]]
name = "node-a"
address = "127.0.0.41"
process = true
capacity = { cpu = "2", memory = "1Gi" }
[[nodes]]
name = "node-b"
address = "10.2.0.12"
docker = "tcp://10.2.0.12:2376"
capacity = { cpu = "500m", memory = "512Mi", disk = "10Gi" }
"#,
    )
    .expect("valid");
    let plans = config.node_plans();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[0].name, "node-a");
    assert_eq!(plans[0].runtimes, [RuntimeKind::Process]);
    assert_eq!(plans[0].docker, None);
    assert_eq!(plans[1].runtimes, [RuntimeKind::Docker]);
    let docker = plans[1].docker.as_ref().expect("docker endpoint");
    assert_eq!(docker.address, "tcp://10.2.0.12:2376");
    assert_eq!(docker.ca, None);
    let b = config.node_allocatable(&plans[1]);
    assert_eq!(
        (b.cpu_millis, b.memory_bytes, b.disk_bytes),
        (500, 512 << 20, 10 << 30)
    );
    let total = config.allocatable();
    assert_eq!(total.cpu_millis, 2500);
    assert_eq!(total.memory_bytes, (1 << 30) + (512 << 20));
    assert_eq!(config.cluster_addresses(), ["127.0.0.41", "10.2.0.12"]);
}

#[test]
fn without_nodes_the_agent_runs_one_implicit_node() {
    let text = HEAD.replace(
        "data_dir",
        "node_address = \"127.0.1.1\"\nruntimes = [\"process\", \"docker\"]\ndata_dir",
    );
    let config = AgentConfig::parse(Path::new("a.toml"), &text).expect("valid");
    let plans = config.node_plans();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].name, IMPLICIT_NODE);
    assert_eq!(plans[0].address.to_string(), "127.0.1.1");
    assert_eq!(
        plans[0].runtimes,
        [RuntimeKind::Process, RuntimeKind::Docker]
    );
    assert_eq!(
        plans[0].docker.as_ref().map(|d| d.address.as_str()),
        Some("unix:///var/run/docker.sock")
    );
}

#[test]
fn a_docker_tls_node_names_its_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::write(dir.path().join(file), "pem").expect("write");
    }
    let d = dir.path().display();
    let config = load_nodes(
        dir.path(),
        &format!(
            r#"
[[nodes]]
name = "remote"
address = "10.2.0.12"
docker = "tcp://10.2.0.12:2376"
docker_tls = {{ ca = "{d}/ca.pem", cert = "{d}/cert.pem", key = "{d}/key.pem" }}
capacity = {{ cpu = "4", memory = "8Gi" }}
"#
        ),
    )
    .expect("valid");
    let docker = config.node_plans()[0].docker.clone().expect("docker");
    assert_eq!(docker.ca, Some(dir.path().join("ca.pem")));
    assert_eq!(docker.cert, Some(dir.path().join("cert.pem")));
    assert_eq!(docker.key, Some(dir.path().join("key.pem")));

    let missing = load_nodes(
        dir.path(),
        &format!(
            r#"
[[nodes]]
name = "remote"
address = "10.2.0.12"
docker = "tcp://10.2.0.12:2376"
docker_tls = {{ ca = "{d}/ca.pem", cert = "{d}/nope.pem", key = "{d}/key.pem" }}
capacity = {{ cpu = "4", memory = "8Gi" }}
"#
        ),
    )
    .expect_err("a missing file")
    .to_string();
    assert!(
        missing.contains("agent.toml: nodes[0].docker_tls.cert: cannot read ")
            && missing.contains("nope.pem"),
        "{missing}"
    );
    let partial = error(
        r#"
[[nodes]]
name = "remote"
address = "10.2.0.12"
docker = "tcp://10.2.0.12:2376"
docker_tls = { ca = "ca.pem", cert = "cert.pem" }
"#,
    );
    assert!(partial.contains("missing field `key`"), "{partial}");
}

#[test]
fn bad_nodes_are_errors_naming_the_key() {
    let cases = [
        (
            "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\nprocess = true\n[[nodes]]\nname = \"a\"\naddress = \"127.0.0.42\"\nprocess = true\n",
            "a.toml: nodes[1].name: \"a\" is listed twice",
        ),
        (
            "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\n",
            "a.toml: nodes[0]: node \"a\" offers no runtime",
        ),
        (
            "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\nprocess = true\n[[nodes]]\nname = \"b\"\naddress = \"127.0.0.41\"\nprocess = true\n",
            "a.toml: nodes[1].address: 127.0.0.41 is also node \"a\"'s",
        ),
        (
            "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\nprocess = true\ncapacity = { memory = \"lots\" }\n",
            "a.toml: nodes[0].capacity.memory: ",
        ),
        (
            "[[nodes]]\nname = \"r\"\naddress = \"10.0.0.9\"\ndocker = \"tcp://10.0.0.9:2376\"\n",
            "a.toml: nodes[0].capacity: a node with a remote docker engine needs cpu and memory",
        ),
        (
            "[[nodes]]\nname = \"r\"\naddress = \"10.0.0.9\"\ndocker = \"10.0.0.9:2376\"\ncapacity = { cpu = \"1\", memory = \"1Gi\" }\n",
            "a.toml: nodes[0].docker: must be unix:///path or tcp://host:port",
        ),
        (
            "[[nodes]]\nname = \"l\"\naddress = \"127.0.0.41\"\ndocker = \"unix:///var/run/docker.sock\"\ndocker_tls = { ca = \"a\", cert = \"b\", key = \"c\" }\n",
            "a.toml: nodes[0].docker_tls: only for a tcp:// engine",
        ),
        (
            "[[nodes]]\nname = \"l\"\naddress = \"127.0.0.41\"\nprocess = true\ndocker_tls = { ca = \"a\", cert = \"b\", key = \"c\" }\n",
            "a.toml: nodes[0].docker_tls: set docker = ",
        ),
        (
            "[[nodes]]\nname = \"Node_A\"\naddress = \"127.0.0.41\"\nprocess = true\n",
            "a.toml: nodes[0].name: must be a DNS label",
        ),
        (
            "[capacity]\ncpu = \"2\"\n[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\nprocess = true\n",
            "a.toml: capacity: set it per node in [[nodes]]",
        ),
        (
            "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.41\"\nprocess = true\nruntime = \"process\"\n",
            "unknown field `runtime`",
        ),
    ];
    for (nodes, expected) in cases {
        let err = error(nodes);
        assert!(
            err.contains(expected),
            "{nodes}\n=> {err}\nexpected {expected}"
        );
    }
}

#[test]
fn node_address_is_required_without_nodes() {
    let err = AgentConfig::parse(Path::new("a.toml"), HEAD).expect_err("no address");
    assert!(
        err.to_string()
            .starts_with("a.toml: node_address: required"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_errors() {
    let text = r#"
cluster = "eu-1"
federators = ["127.0.0.1:7070"]
node_address = "127.0.1.1"
data_dir = "/tmp/agent"
regoin = "eu"
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"
"#;
    let err = AgentConfig::parse(Path::new("a.toml"), text).expect_err("typo");
    assert!(err.to_string().contains("regoin"), "{err}");
}
