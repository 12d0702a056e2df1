//! Which member cluster a querier is in: its address matched against the node addresses and
//! CIDRs each agent registered for its cluster, longest prefix first.

use std::net::IpAddr;

/// An address block: `10.0.0.0/8`, or one address (`10.0.0.7` is `10.0.0.7/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: IpAddr,
    prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n`, `a::b/n` or a bare address. `None` when it is neither.
    pub fn parse(text: &str) -> Option<Subnet> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        Some(Subnet { network, prefix })
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        // An IPv4 client may arrive as an IPv4-mapped IPv6 address on a dual-stack socket.
        let address = match address {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), self.prefix, 32)
                    == masked(u32::from(a).into(), self.prefix, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), self.prefix, 128) == masked(u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = u32::from(width - prefix);
    (bits >> keep) << keep
}

/// Cluster address blocks, most specific first, so the first match is the longest prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubnetTable {
    entries: Vec<(Subnet, u16)>,
}

impl SubnetTable {
    pub fn new(mut entries: Vec<(Subnet, u16)>) -> SubnetTable {
        entries.sort_by_key(|e| std::cmp::Reverse(e.0.prefix));
        SubnetTable { entries }
    }

    /// The cluster (by index) whose block holds `address`, and that block's prefix length.
    pub fn lookup(&self, address: IpAddr) -> Option<(u16, u8)> {
        self.entries
            .iter()
            .find(|(subnet, _)| subnet.contains(address))
            .map(|(subnet, cluster)| (*cluster, subnet.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_and_bare_addresses() {
        assert_eq!(Subnet::parse("127.0.1.0/24").map(|s| s.prefix()), Some(24));
        assert_eq!(Subnet::parse("127.0.1.1").map(|s| s.prefix()), Some(32));
        assert_eq!(Subnet::parse("fd00::/8").map(|s| s.prefix()), Some(8));
        assert_eq!(Subnet::parse("10.0.0.0/33"), None);
        assert_eq!(Subnet::parse("node-1.example"), None);
    }

    #[test]
    fn the_longest_prefix_wins() {
        let table = SubnetTable::new(vec![
            (Subnet::parse("10.0.0.0/8").expect("block"), 0),
            (Subnet::parse("10.1.0.0/16").expect("block"), 1),
            (Subnet::parse("10.1.2.3").expect("address"), 2),
        ]);
        let at = |a: &str| table.lookup(a.parse().expect("address")).map(|m| m.0);
        assert_eq!(at("10.9.9.9"), Some(0));
        assert_eq!(at("10.1.9.9"), Some(1));
        assert_eq!(at("10.1.2.3"), Some(2));
        assert_eq!(at("192.168.0.1"), None);
        assert_eq!(at("::ffff:10.1.9.9"), Some(1));
        assert_eq!(at("fd00::1"), None);
    }
}
