//! A node's remote Docker Engine over TCP with TLS, as `[[nodes]] docker = "tcp://..."` with
//! `docker_tls` reaches it. A mutual-TLS proxy in front of the local engine's socket stands in
//! for a remote dockerd started with `--tlsverify`: it accepts only clients whose certificate
//! its CA signed, and the agent accepts only a server its CA signed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hansa_federator::security::certs::write_leaf;
use hansa_federator::security::{Authority, Role};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, UnixStream};

use super::docker::DockerEndpoint;
use crate::config::AgentConfig;

const SOCKET: &str = "/var/run/docker.sock";

/// Whether the local engine is there to stand behind the proxy; in CI its absence fails.
fn engine_or_skip(test: &str) -> bool {
    if Path::new(SOCKET).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: no Docker Engine at {SOCKET} (CI requires one; run scripts/docker-engine)"
    );
    eprintln!("SKIPPED {test}: no Docker Engine at {SOCKET}; run scripts/docker-engine");
    false
}

struct Pki {
    dir: tempfile::TempDir,
    /// The engine's certificate and key (SAN 127.0.0.1), signed by `ca.crt`.
    server: (PathBuf, PathBuf),
    /// The agent's client certificate and key, signed by `ca.crt`.
    client: (PathBuf, PathBuf),
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::generate("docker.hansa.test").expect("CA");
        ca.write(dir.path()).expect("write CA");
        let server = ca
            .issue(Role::Federator, "engine", &["127.0.0.1".to_string()])
            .expect("server certificate");
        let server = write_leaf(dir.path(), Role::Federator, "engine", &server).expect("write");
        let client = ca.issue(Role::Cluster, "eu-1", &[]).expect("client");
        let client = write_leaf(dir.path(), Role::Cluster, "eu-1", &client).expect("write");
        Pki {
            dir,
            server,
            client,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }
}

/// A TLS listener on 127.0.0.1 that requires a client certificate signed by `pki`'s CA and
/// forwards each connection to the local engine. Returns its port and a count of the
/// connections it accepted.
async fn tls_engine(pki: &Pki) -> (u16, Arc<AtomicUsize>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.ca()).expect("ca") {
        roots.add(cert.expect("ca pem")).expect("add ca");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server.0)
        .expect("server cert")
        .collect::<Result<_, _>>()
        .expect("server cert pem");
    let key = PrivateKeyDer::from_pem_file(&pki.server.1).expect("server key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(mut engine) = UnixStream::connect(SOCKET).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
            });
        }
    });
    (port, accepted)
}

/// A `[[nodes]]` config for one remote docker node at `port` with the given TLS files.
fn node_endpoint(port: u16, ca: &Path, cert: &Path, key: &Path) -> DockerEndpoint {
    let text = format!(
        r#"
cluster = "eu-1"
federators = ["127.0.0.1:7070"]
data_dir = "/tmp/agent"
[[nodes]]
name = "remote"
address = "127.0.0.1"
docker = "tcp://127.0.0.1:{port}"
docker_tls = {{ ca = "{}", cert = "{}", key = "{}" }}
capacity = {{ cpu = "2", memory = "2Gi" }}
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"
"#,
        ca.display(),
        cert.display(),
        key.display()
    );
    let config = AgentConfig::parse(Path::new("agent.toml"), &text).expect("config");
    config.check_files(Path::new("agent.toml")).expect("files");
    config.node_plans()[0]
        .docker
        .clone()
        .expect("docker endpoint")
}

#[tokio::test]
async fn a_remote_engine_is_reached_over_mutual_tls() {
    if !engine_or_skip("a_remote_engine_is_reached_over_mutual_tls") {
        return;
    }
    let pki = Pki::new();
    let (port, accepted) = tls_engine(&pki).await;
    let endpoint = node_endpoint(port, &pki.ca(), &pki.client.0, &pki.client.1);
    let docker = endpoint.connect().await.expect("connect over TLS");
    let version = docker.version().await.expect("engine version over TLS");
    assert!(version.api_version.is_some(), "{version:?}");
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "the engine was reached through the TLS listener"
    );
}

#[tokio::test]
async fn an_engine_refuses_a_client_its_ca_did_not_sign() {
    if !engine_or_skip("an_engine_refuses_a_client_its_ca_did_not_sign") {
        return;
    }
    let pki = Pki::new();
    let (port, accepted) = tls_engine(&pki).await;
    // A client certificate from another CA: the engine must refuse the handshake.
    let other = Pki::new();
    let endpoint = node_endpoint(port, &pki.ca(), &other.client.0, &other.client.1);
    let err = endpoint
        .connect()
        .await
        .expect_err("a foreign client certificate");
    assert!(
        err.to_string().contains(&format!(
            "connect to the Docker Engine at tcp://127.0.0.1:{port}"
        )),
        "{err}"
    );
    // And an agent that trusts another CA refuses the engine.
    let endpoint = node_endpoint(port, &other.ca(), &pki.client.0, &pki.client.1);
    endpoint
        .connect()
        .await
        .expect_err("an engine signed by an untrusted CA");
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no handshake succeeded");
}
