//! The `[dns]` section of the federator's configuration.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::Name;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// UDP and TCP address (the same port for both); port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The federation's zone.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// TTL of answers, seconds.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// TTL of NXDOMAIN and NODATA answers (the SOA minimum), seconds.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: u32,
    /// Forward names outside the zone to `upstreams`; when false they are REFUSED.
    #[serde(default = "default_enabled")]
    pub forward: bool,
    /// Upstream servers, `ip` or `ip:port`. Empty: the name servers of /etc/resolv.conf,
    /// except this server itself.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// The member cluster this federator runs in: the locality of queriers whose address no
    /// cluster claims. A peer-mode federator defaults to its `[peer] cluster`.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Addresses published for `ns.<zone>`. Empty: the listen address, unless unspecified.
    #[serde(default)]
    pub advertise: Vec<IpAddr>,
}

fn default_enabled() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5353))
}
fn default_zone() -> String {
    "hansa.internal.".into()
}
fn default_ttl() -> u32 {
    5
}
fn default_negative_ttl() -> u32 {
    2
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: default_listen(),
            zone: default_zone(),
            ttl: default_ttl(),
            negative_ttl: default_negative_ttl(),
            forward: default_enabled(),
            upstreams: Vec::new(),
            cluster: None,
            advertise: Vec::new(),
        }
    }
}

impl DnsConfig {
    /// Checks values serde cannot: returns the key (under `dns.`) and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let zone = Name::from_ascii(&self.zone).map_err(|e| {
            (
                "dns.zone",
                format!("not a domain name ({:?}): {e}", self.zone),
            )
        })?;
        if zone.is_root() || zone.num_labels() == 0 {
            return Err(("dns.zone", "must not be the root".into()));
        }
        if self.ttl == 0 {
            return Err(("dns.ttl", "must be >= 1 (got 0)".into()));
        }
        if self.negative_ttl == 0 {
            return Err(("dns.negative_ttl", "must be >= 1 (got 0)".into()));
        }
        for upstream in &self.upstreams {
            if parse_upstream(upstream).is_none() {
                return Err((
                    "dns.upstreams",
                    format!("{upstream:?} is not an address or address:port"),
                ));
            }
        }
        if let Some(cluster) = &self.cluster {
            if !hansa_core::is_dns_label(cluster) {
                return Err((
                    "dns.cluster",
                    format!("must be a DNS label (got {cluster:?})"),
                ));
            }
        }
        Ok(())
    }

    /// The zone as a fully qualified, lower-case name (validated by `validate`).
    pub fn zone_name(&self) -> Name {
        let mut name = Name::from_ascii(&self.zone)
            .unwrap_or_else(|_| Name::from_ascii(default_zone()).unwrap_or_default())
            .to_lowercase();
        name.set_fqdn(true);
        name
    }

    pub fn upstream_addresses(&self) -> Vec<SocketAddr> {
        self.upstreams
            .iter()
            .filter_map(|u| parse_upstream(u))
            .collect()
    }
}

fn parse_upstream(text: &str) -> Option<SocketAddr> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Some(address);
    }
    text.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let config: DnsConfig = toml::from_str("").expect("empty section");
        assert_eq!(config.zone_name().to_string(), "hansa.internal.");
        assert_eq!(config.ttl, 5);
        assert!(config.forward);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn bad_values_name_the_key() {
        let config: DnsConfig = toml::from_str("upstreams = [\"nope\"]").expect("parses");
        assert_eq!(config.validate().map_err(|e| e.0), Err("dns.upstreams"));
        let config: DnsConfig = toml::from_str("ttl = 0").expect("parses");
        assert_eq!(config.validate().map_err(|e| e.0), Err("dns.ttl"));
        let err = toml::from_str::<DnsConfig>("colour = 1").expect_err("unknown key");
        assert!(err.to_string().contains("colour"), "{err}");
        let config: DnsConfig =
            toml::from_str("upstreams = [\"10.0.0.2\", \"[::1]:5300\"]").expect("parses");
        assert_eq!(
            config.upstream_addresses(),
            vec![
                "10.0.0.2:53".parse().expect("address"),
                "[::1]:5300".parse().expect("address")
            ]
        );
    }
}
