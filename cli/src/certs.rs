//! `hansa certs`: the federation CA and the certificates of federators, clusters and users.

use std::path::Path;

use anyhow::Context as _;
use hansa_federator::security::{certs, Authority, Role};

pub fn init(dir: &Path, trust_domain: &str) -> anyhow::Result<()> {
    if dir.join("ca.key").exists() {
        anyhow::bail!(
            "{}: a CA already exists here; refusing to overwrite it (remove ca.key and ca.crt first)",
            dir.display()
        );
    }
    if trust_domain.is_empty() || !trust_domain.split('.').all(hansa_core::is_dns_label) {
        anyhow::bail!("--trust-domain: must be a DNS name (got {trust_domain:?})");
    }
    let ca = Authority::generate(trust_domain)?;
    ca.write(dir)?;
    println!(
        "CA for trust domain {trust_domain} written to {}/ca.crt (key: ca.key, keep it secret)",
        dir.display()
    );
    Ok(())
}

pub fn issue(dir: &Path, role: &str, name: &str, hosts: &[String]) -> anyhow::Result<()> {
    let role = Role::parse(role)
        .with_context(|| format!("role: must be federator, cluster or user (got {role:?})"))?;
    if !hansa_core::is_dns_label(name) {
        anyhow::bail!("name: must be a DNS label (got {name:?})");
    }
    let ca = Authority::load(dir).context("load the CA (run `hansa certs init` first)")?;
    let mut hosts = hosts.to_vec();
    if role == Role::Federator && hosts.is_empty() {
        hosts = vec!["localhost".into(), "127.0.0.1".into(), name.to_string()];
    }
    let issued = ca.issue(role, name, &hosts)?;
    let (cert, key) = certs::write_leaf(dir, role, name, &issued)?;
    println!(
        "spiffe://{}/{role}/{name}: {} (key: {})",
        ca.trust_domain,
        cert.display(),
        key.display()
    );
    Ok(())
}
