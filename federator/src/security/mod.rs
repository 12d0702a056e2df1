//! Mutual TLS for every connection (DESIGN.md §8): the federation CA, certificates with
//! SPIFFE identities, and the TLS configurations servers and clients use.

pub mod certs;
pub mod identity;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, ServerTlsConfig};

pub use certs::{Authority, CertifiedKey};
pub use identity::{caller, Identity, Role};

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a usable PEM certificate or key: {detail}")]
    BadPem { path: PathBuf, detail: String },
    #[error("{path}: the certificate carries no spiffe://<trust-domain>/<role>/<name> URI")]
    NoIdentity { path: PathBuf },
    #[error("certificate authority: {what}: {detail}")]
    Rcgen { what: &'static str, detail: String },
    #[error("invalid address {address}: {detail}")]
    BadAddress { address: String, detail: String },
}

impl SecurityError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecurityError + '_ {
        move |source| SecurityError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn rcgen<E: std::fmt::Display>(
        what: &'static str,
    ) -> impl FnOnce(E) -> SecurityError {
        move |e| SecurityError::Rcgen {
            what,
            detail: e.to_string(),
        }
    }
}

/// Paths of the PEM files a node presents and trusts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The federation CA certificate: the only issuer trusted.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Loaded TLS material, and this node's own identity read from its certificate.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub identity: Identity,
}

impl TlsMaterial {
    pub fn load(files: &TlsFiles) -> Result<TlsMaterial, SecurityError> {
        let ca_pem = certs::read(&files.ca)?;
        let cert_pem = certs::read(&files.cert)?;
        let key_pem = certs::read(&files.key)?;
        let identity = identity_of_pem(&cert_pem).ok_or_else(|| SecurityError::NoIdentity {
            path: files.cert.clone(),
        })?;
        Ok(TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
            identity,
        })
    }

    /// In-memory material, e.g. for `hansa dev`'s ephemeral CA.
    pub fn from_issued(
        ca: &Authority,
        issued: &CertifiedKey,
    ) -> Result<TlsMaterial, SecurityError> {
        let identity =
            identity_of_pem(&issued.cert_pem).ok_or_else(|| SecurityError::NoIdentity {
                path: PathBuf::from("<issued>"),
            })?;
        Ok(TlsMaterial {
            ca_pem: ca.cert_pem.clone(),
            cert_pem: issued.cert_pem.clone(),
            key_pem: issued.key_pem.clone(),
            identity,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.identity.trust_domain
    }

    /// Server side: present our certificate, require a client certificate from the CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// Client side: present our certificate, trust only the federation CA.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
    }

    /// A lazily connecting channel to one federator address (`https://host:port`, or
    /// `host:port`), with mutual TLS and bounded connect time.
    pub fn channel(&self, address: &str) -> Result<Channel, SecurityError> {
        Ok(self.endpoint(address)?.connect_lazy())
    }

    pub fn endpoint(&self, address: &str) -> Result<Endpoint, SecurityError> {
        let url = normalize_url(address);
        let bad = |detail: String| SecurityError::BadAddress {
            address: address.to_string(),
            detail,
        };
        Ok(Endpoint::from_shared(url)
            .map_err(|e| bad(e.to_string()))?
            .tls_config(self.client_config())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5)))
    }
}

/// `host:port` becomes `https://host:port`; a URL is kept as written.
pub fn normalize_url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("https://{address}")
    }
}

/// The identity in a PEM certificate, if it has one.
pub fn identity_of_pem(pem: &str) -> Option<Identity> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    Identity::from_certificate_der(der.as_ref())
}
