//! Only certificates from the federation's CA get in.

use std::time::Duration;

use hansa_tests::{wait_for, Federation};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn an_agent_with_a_certificate_from_another_ca_is_refused() {
    let fed = Federation::new();
    let hub = fed.start_hub("fed-1");
    let api = hub.api.clone();

    // A second federation's CA issues a perfectly shaped certificate for eu-1.
    let other = Federation::new();
    let foreign = other.issue("cluster", "eu-1");
    // The agent trusts our CA (so it would accept the server) but presents the foreign cert.
    let config = fed.agent_config("eu-1", "eu", "127.0.30.1", &api, (&foreign.0, &foreign.1));
    let agent = fed.start_agent("eu-1", &config);
    wait_for("the agent to log its refusal", LIMIT, || {
        let log = agent.log_text();
        (log.contains("unreachable") || log.contains("refused")).then_some(())
    });
    let clusters = fed.hansa_json(&["get", "clusters"]).expect("get clusters");
    assert_eq!(
        clusters.as_array().map(Vec::len),
        Some(0),
        "no cluster may register"
    );

    // And a CLI user from the other CA cannot read anything.
    let (cert, key) = other.issue("user", "mallory");
    let out = fed.hansa(&[
        "--federator",
        &api,
        "--ca",
        fed.pki.join("ca.crt").to_str().expect("path"),
        "--cert",
        cert.to_str().expect("path"),
        "--key",
        key.to_str().expect("path"),
        "get",
        "workloads",
    ]);
    assert!(!out.status.success());
}
