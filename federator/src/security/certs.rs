//! The federation's certificate authority: make a CA, issue certificates whose SAN URI is the
//! holder's SPIFFE identity (DESIGN.md §8).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use super::identity::{Identity, Role};
use super::SecurityError;

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The federation CA, able to issue certificates.
pub struct Authority {
    pub trust_domain: String,
    params: CertificateParams,
    key: KeyPair,
    pub cert_pem: String,
}

impl Authority {
    /// A new self-signed CA for `trust_domain`.
    pub fn generate(trust_domain: &str) -> Result<Authority, SecurityError> {
        let key = KeyPair::generate().map_err(SecurityError::rcgen("generate CA key"))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(SecurityError::rcgen("CA parameters"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Hansa");
        dn.push(DnType::CommonName, format!("Hansa CA {trust_domain}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}")
                .try_into()
                .map_err(SecurityError::rcgen("trust domain URI"))?,
        )];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params
            .clone()
            .self_signed(&key)
            .map_err(SecurityError::rcgen("self-sign CA"))?;
        Ok(Authority {
            trust_domain: trust_domain.to_string(),
            params,
            key,
            cert_pem: cert.pem(),
        })
    }

    /// Loads a CA made by `generate` (and written by `write`).
    pub fn load(dir: &Path) -> Result<Authority, SecurityError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| SecurityError::BadPem {
            path: key_path.clone(),
            detail: e.to_string(),
        })?;
        let params =
            CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| SecurityError::BadPem {
                path: cert_path.clone(),
                detail: e.to_string(),
            })?;
        let trust_domain = params
            .subject_alt_names
            .iter()
            .find_map(|san| match san {
                SanType::URI(uri) => uri.as_str().strip_prefix("spiffe://").map(str::to_string),
                _ => None,
            })
            .ok_or_else(|| SecurityError::BadPem {
                path: cert_path.clone(),
                detail: "CA certificate has no spiffe://<trust-domain> URI".into(),
            })?;
        Ok(Authority {
            trust_domain,
            params,
            key,
            cert_pem,
        })
    }

    /// Writes `ca.crt` and `ca.key` (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), SecurityError> {
        std::fs::create_dir_all(dir).map_err(SecurityError::io(dir))?;
        write_file(&dir.join("ca.crt"), &self.cert_pem, false)?;
        write_file(&dir.join("ca.key"), &self.key.serialize_pem(), true)
    }

    /// Issues a certificate for `role/name`. Federators also get `hosts` (DNS names and IP
    /// addresses) as SANs, so clients can verify the server they dialled.
    pub fn issue(
        &self,
        role: Role,
        name: &str,
        hosts: &[String],
    ) -> Result<CertifiedKey, SecurityError> {
        let identity = Identity::new(&self.trust_domain, role, name);
        let key = KeyPair::generate().map_err(SecurityError::rcgen("generate key"))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(SecurityError::rcgen("certificate parameters"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Hansa");
        dn.push(DnType::CommonName, format!("{role} {name}"));
        params.distinguished_name = dn;
        params.subject_alt_names.push(SanType::URI(
            identity
                .uri()
                .try_into()
                .map_err(SecurityError::rcgen("identity URI"))?,
        ));
        for host in hosts {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.clone()
                        .try_into()
                        .map_err(SecurityError::rcgen("DNS name"))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match role {
            Role::Federator => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Cluster | Role::User => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let issuer = self
            .params
            .clone()
            .self_signed(&self.key)
            .map_err(SecurityError::rcgen("CA certificate"))?;
        let cert = params
            .signed_by(&key, &issuer, &self.key)
            .map_err(SecurityError::rcgen("sign certificate"))?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Where `hansa certs issue` writes a holder's files: `<dir>/<role>-<name>.{crt,key}`.
pub fn leaf_paths(dir: &Path, role: Role, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{role}-{name}.crt")),
        dir.join(format!("{role}-{name}.key")),
    )
}

/// Writes a certificate and key issued by `issue`.
pub fn write_leaf(
    dir: &Path,
    role: Role,
    name: &str,
    certified: &CertifiedKey,
) -> Result<(PathBuf, PathBuf), SecurityError> {
    std::fs::create_dir_all(dir).map_err(SecurityError::io(dir))?;
    let (cert, key) = leaf_paths(dir, role, name);
    write_file(&cert, &certified.cert_pem, false)?;
    write_file(&key, &certified.key_pem, true)?;
    Ok((cert, key))
}

pub(super) fn read(path: &Path) -> Result<String, SecurityError> {
    std::fs::read_to_string(path).map_err(SecurityError::io(path))
}

fn write_file(path: &Path, content: &str, secret: bool) -> Result<(), SecurityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(SecurityError::io(path))?;
    file.write_all(content.as_bytes())
        .map_err(SecurityError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_carries_identity_and_hosts() {
        let ca = Authority::generate("hansa.test").expect("CA");
        let leaf = ca
            .issue(Role::Cluster, "eu-1", &["127.0.0.1".into()])
            .expect("issue");
        let der = rustls_pemfile_der(&leaf.cert_pem);
        let id = Identity::from_certificate_der(&der).expect("identity");
        assert_eq!(id, Identity::new("hansa.test", Role::Cluster, "eu-1"));
    }

    #[test]
    fn a_written_ca_loads_and_keeps_its_trust_domain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::generate("fed.example").expect("CA");
        ca.write(dir.path()).expect("write");
        let loaded = Authority::load(dir.path()).expect("load");
        assert_eq!(loaded.trust_domain, "fed.example");
        let leaf = loaded.issue(Role::User, "alice", &[]).expect("issue");
        let id = Identity::from_certificate_der(&rustls_pemfile_der(&leaf.cert_pem)).expect("id");
        assert_eq!(id.uri(), "spiffe://fed.example/user/alice");
    }

    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("pem")
            .to_vec()
    }
}
