//! Who is on the other end of a connection: the SPIFFE-style URI in its certificate.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use tonic::Status;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a certificate holder is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A control-plane node (API, Raft peer).
    Federator,
    /// A member cluster's agent.
    Cluster,
    /// A person or automation using the CLI.
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Federator => "federator",
            Role::Cluster => "cluster",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "federator" => Some(Role::Federator),
            "cluster" => Some(Role::Cluster),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spiffe://<trust-domain>/<role>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub trust_domain: String,
    pub role: Role,
    pub name: String,
}

impl Identity {
    pub fn new(trust_domain: impl Into<String>, role: Role, name: impl Into<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            role,
            name: name.into(),
        }
    }

    pub fn uri(&self) -> String {
        format!("spiffe://{}/{}/{}", self.trust_domain, self.role, self.name)
    }

    /// Parses a SPIFFE URI of Hansa's shape; anything else is `None`.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let trust_domain = parts.next().filter(|s| !s.is_empty())?;
        let role = Role::parse(parts.next()?)?;
        let name = parts.next().filter(|s| !s.is_empty())?;
        if parts.next().is_some() {
            return None;
        }
        Some(Identity::new(trust_domain, role, name))
    }

    /// Reads the identity from a DER certificate's SAN URIs.
    pub fn from_certificate_der(der: &[u8]) -> Option<Identity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|name| match name {
            GeneralName::URI(uri) => Identity::from_uri(uri),
            _ => None,
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

type Chain = Vec<tonic::transport::CertificateDer<'static>>;
type PeerCerts = Arc<Chain>;

/// The identities of the connections that made calls, by their certificate chain: the TLS
/// layer hands every request of a connection the same chain, and parsing the X.509
/// certificate again for each request was a few percent of a busy federator's CPU.
///
/// Keyed by the chain's address: the `Weak` kept with it holds the allocation, so no other
/// chain can take that address while the entry exists.
struct Known {
    by_chain: Mutex<HashMap<usize, (Weak<Chain>, Identity)>>,
}

static CONNECTIONS: LazyLock<Known> = LazyLock::new(|| Known {
    by_chain: Mutex::new(HashMap::new()),
});

impl Known {
    /// The identity in the leaf certificate of `certs`, parsed once per connection.
    fn identity(&self, certs: &PeerCerts) -> Option<Identity> {
        let address = Arc::as_ptr(certs) as usize;
        let mut known = self.by_chain.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, identity)) = known.get(&address) {
            return Some(identity.clone());
        }
        let identity = Identity::from_certificate_der(certs.first()?.as_ref())?;
        // The chains of closed connections are gone: forget them.
        known.retain(|_, (chain, _)| chain.strong_count() > 0);
        known.insert(address, (Arc::downgrade(certs), identity.clone()));
        Some(identity)
    }
}

/// The verified identity of a gRPC caller. The TLS layer has already checked the chain against
/// the federation CA; this reads who the certificate says the caller is and checks the trust
/// domain and role.
pub fn caller<T>(
    request: &tonic::Request<T>,
    trust_domain: &str,
    allowed: &[Role],
) -> Result<Identity, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate presented"))?;
    let identity = CONNECTIONS.identity(&certs).ok_or_else(|| {
        Status::unauthenticated("client certificate carries no spiffe:// identity URI")
    })?;
    if identity.trust_domain != trust_domain {
        return Err(Status::permission_denied(format!(
            "{identity} is not in trust domain {trust_domain}"
        )));
    }
    if !allowed.contains(&identity.role) {
        return Err(Status::permission_denied(format!(
            "{identity}: a {} may not call this",
            identity.role
        )));
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trip() {
        let id = Identity::new("hansa.local", Role::Cluster, "eu-1");
        assert_eq!(id.uri(), "spiffe://hansa.local/cluster/eu-1");
        assert_eq!(Identity::from_uri(&id.uri()), Some(id));
    }

    #[test]
    fn rejects_foreign_shapes() {
        for uri in [
            "https://hansa.local/cluster/eu-1",
            "spiffe://hansa.local/robot/eu-1",
            "spiffe://hansa.local/cluster/",
            "spiffe://hansa.local/cluster/eu-1/extra",
            "spiffe:///cluster/eu-1",
        ] {
            assert_eq!(Identity::from_uri(uri), None, "{uri}");
        }
    }

    /// Each connection's chain is read once, and a chain is never taken for another's.
    #[test]
    fn a_connections_identity_is_read_once_per_chain() {
        let ca = super::super::certs::Authority::generate("hansa.local").unwrap();
        let chain = |name: &str| -> PeerCerts {
            use rustls::pki_types::pem::PemObject;
            let pem = ca.issue(Role::Cluster, name, &[]).unwrap().cert_pem;
            let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            Arc::new(vec![der])
        };
        let known = Known {
            by_chain: Mutex::new(HashMap::new()),
        };
        let (eu, us) = (chain("eu-1"), chain("us-1"));
        for _ in 0..3 {
            assert_eq!(known.identity(&eu).unwrap().name, "eu-1");
            assert_eq!(known.identity(&us).unwrap().name, "us-1");
        }
        assert_eq!(known.by_chain.lock().unwrap().len(), 2);
        // A closed connection's entry goes once another connection comes.
        drop(eu);
        let ap = chain("ap-1");
        assert_eq!(known.identity(&ap).unwrap().name, "ap-1");
        assert_eq!(known.by_chain.lock().unwrap().len(), 2);
    }
}
