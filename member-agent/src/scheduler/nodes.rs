//! Which node a new replica goes to: a pure function of the nodes, what is placed on them and
//! the replica's runtime and requests.
//!
//! Bin-packing: among the nodes that offer the replica's runtime and have room for its cpu,
//! memory and disk requests, the one that would be the most allocated after placing it wins
//! (the sum of its cpu and memory shares), ties going to the node whose name sorts first. So
//! replicas fill one node before spilling to the next, and the same state always gives the
//! same answer. A replica stays where it was placed: restarts and adoption never call this.

use std::collections::BTreeMap;
use std::fmt;

use hansa_core::{Resources, RuntimeKind};
use hansa_policies::{format_bytes, format_cpu};

/// One node the local scheduler places replicas on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    /// Where replicas bind and their endpoints point, e.g. `127.0.1.1`.
    pub address: String,
    pub allocatable: Resources,
    /// The runtimes the node offers; empty: whatever the agent's runtime offers (tests, and
    /// agents built around a single runtime).
    pub runtimes: Vec<RuntimeKind>,
}

impl NodeSpec {
    pub fn offers(&self, kind: RuntimeKind) -> bool {
        self.runtimes.is_empty() || self.runtimes.contains(&kind)
    }
}

/// Why a replica fits no node; reads like `no node has room: needs cpu 500m memory 256Mi;
/// largest free: node-b (cpu 250m memory 1Gi)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoNode {
    NoRoom {
        needs: Resources,
        /// The node with the most free room among those offering the runtime, and that room.
        largest_free: Option<(String, Resources)>,
    },
}

impl fmt::Display for NoNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoNode::NoRoom {
                needs,
                largest_free,
            } => {
                write!(f, "no node has room: needs {}", describe(needs))?;
                match largest_free {
                    Some((node, free)) => {
                        write!(f, "; largest free: {node} ({})", describe(free))
                    }
                    None => f.write_str("; no node offers its runtime"),
                }
            }
        }
    }
}

/// `cpu 500m memory 256Mi` (and disk when requested).
pub fn describe(r: &Resources) -> String {
    let mut text = format!(
        "cpu {} memory {}",
        format_cpu(r.cpu_millis),
        format_bytes(r.memory_bytes)
    );
    if r.disk_bytes > 0 {
        text.push_str(&format!(" disk {}", format_bytes(r.disk_bytes)));
    }
    text
}

/// The node for a new replica of runtime `kind` requesting `requests`, given the requests
/// already placed on each node (`in_use`, by node name; absent: nothing).
///
/// When no node offers `kind` at all, the runtime kinds are not considered (the first node
/// with room gets it, and its runtime's start error tells the user which runtime is missing).
pub fn choose(
    nodes: &[NodeSpec],
    in_use: &BTreeMap<String, Resources>,
    kind: RuntimeKind,
    requests: &Resources,
) -> Result<String, NoNode> {
    let any_offers = nodes.iter().any(|n| n.offers(kind));
    let used = |node: &NodeSpec| in_use.get(&node.name).copied().unwrap_or_default();
    let candidates: Vec<&NodeSpec> = nodes
        .iter()
        .filter(|n| !any_offers || n.offers(kind))
        .collect();
    let best = candidates
        .iter()
        .filter(|n| n.allocatable.saturating_sub(&used(n)).fits(requests) > 0)
        .map(|n| (share(&n.allocatable, &used(n).saturating_add(requests)), *n))
        // Highest share first; among equals, the first name.
        .min_by(|(a, na), (b, nb)| b.cmp(a).then_with(|| na.name.cmp(&nb.name)));
    if let Some((_, node)) = best {
        return Ok(node.name.clone());
    }
    let largest_free = candidates
        .iter()
        .map(|n| (n.allocatable.saturating_sub(&used(n)), *n))
        .max_by(|(a, na), (b, nb)| {
            (a.cpu_millis, a.memory_bytes)
                .cmp(&(b.cpu_millis, b.memory_bytes))
                .then_with(|| nb.name.cmp(&na.name))
        })
        .map(|(free, n)| (n.name.clone(), free));
    Err(NoNode::NoRoom {
        needs: *requests,
        largest_free,
    })
}

/// How allocated a node is with `used` placed on it: its cpu share plus its memory share, in
/// millionths (integers, so that ties are exact).
fn share(allocatable: &Resources, used: &Resources) -> u64 {
    let part = |used: u64, total: u64| {
        u64::try_from(u128::from(used) * 1_000_000 / u128::from(total.max(1))).unwrap_or(u64::MAX)
    };
    part(used.cpu_millis, allocatable.cpu_millis)
        .saturating_add(part(used.memory_bytes, allocatable.memory_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;

    fn node(name: &str, cpu_millis: u64, memory_bytes: u64, runtimes: &[RuntimeKind]) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            address: format!("10.0.0.{}", name.len()),
            allocatable: Resources {
                cpu_millis,
                memory_bytes,
                disk_bytes: 100 * GI,
            },
            runtimes: runtimes.to_vec(),
        }
    }

    fn req(cpu_millis: u64, memory_bytes: u64) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes,
            disk_bytes: 0,
        }
    }

    const PROCESS: &[RuntimeKind] = &[RuntimeKind::Process];

    /// Places `n` replicas one after the other, as the scheduler does.
    fn place_many(nodes: &[NodeSpec], n: usize, each: Resources) -> Vec<String> {
        let mut in_use: BTreeMap<String, Resources> = BTreeMap::new();
        (0..n)
            .map(|_| {
                let chosen = choose(nodes, &in_use, RuntimeKind::Process, &each).expect("fits");
                let used = in_use.entry(chosen.clone()).or_default();
                *used = used.saturating_add(&each);
                chosen
            })
            .collect()
    }

    #[test]
    fn replicas_fill_the_first_node_before_the_next() {
        let nodes = [node("b", 1000, GI, PROCESS), node("a", 1000, GI, PROCESS)];
        let placed = place_many(&nodes, 6, req(250, 64 * MI));
        assert_eq!(placed, ["a", "a", "a", "a", "b", "b"]);
    }

    #[test]
    fn the_most_allocated_node_that_fits_wins() {
        let nodes = [node("a", 1000, GI, PROCESS), node("b", 1000, GI, PROCESS)];
        let in_use = BTreeMap::from([
            ("a".to_string(), req(200, 0)),
            ("b".to_string(), req(600, 0)),
        ]);
        assert_eq!(
            choose(&nodes, &in_use, RuntimeKind::Process, &req(300, MI)),
            Ok("b".to_string())
        );
        // b is fuller but has no room for 500m: a takes it.
        assert_eq!(
            choose(&nodes, &in_use, RuntimeKind::Process, &req(500, MI)),
            Ok("a".to_string())
        );
    }

    #[test]
    fn memory_counts_as_much_as_cpu() {
        let nodes = [
            node("a", 4000, 4 * GI, PROCESS),
            node("b", 4000, 4 * GI, PROCESS),
        ];
        let in_use = BTreeMap::from([
            ("a".to_string(), req(1000, 0)),
            ("b".to_string(), req(0, 3 * GI)),
        ]);
        assert_eq!(
            choose(&nodes, &in_use, RuntimeKind::Process, &req(100, 100 * MI)),
            Ok("b".to_string()),
            "b is 75% allocated by memory, a 25% by cpu"
        );
        assert_eq!(
            choose(&nodes, &in_use, RuntimeKind::Process, &req(100, 2 * GI)),
            Ok("a".to_string()),
            "b has no memory left for 2Gi"
        );
    }

    #[test]
    fn only_nodes_offering_the_runtime_are_considered() {
        let nodes = [
            node("a", 1000, GI, PROCESS),
            node("b", 1000, GI, &[RuntimeKind::Docker]),
        ];
        let in_use = BTreeMap::from([("a".to_string(), req(900, 0))]);
        assert_eq!(
            choose(&nodes, &in_use, RuntimeKind::Docker, &req(100, MI)),
            Ok("b".to_string())
        );
        let err = choose(&nodes, &in_use, RuntimeKind::Process, &req(200, MI)).expect_err("full");
        assert_eq!(
            err.to_string(),
            "no node has room: needs cpu 200m memory 1Mi; largest free: a (cpu 100m memory 1Gi disk 100Gi)"
        );
    }

    #[test]
    fn a_runtime_no_node_offers_goes_where_there_is_room() {
        let nodes = [node("a", 1000, GI, PROCESS), node("b", 1000, GI, PROCESS)];
        assert_eq!(
            choose(&nodes, &BTreeMap::new(), RuntimeKind::Docker, &req(100, MI)),
            Ok("a".to_string())
        );
    }

    #[test]
    fn a_replica_larger_than_every_node_names_the_largest_free() {
        let nodes = [node("a", 1000, GI, PROCESS), node("b", 2000, GI, PROCESS)];
        let in_use = BTreeMap::from([("b".to_string(), req(1500, 0))]);
        let err = choose(&nodes, &in_use, RuntimeKind::Process, &req(1500, 256 * MI))
            .expect_err("too big");
        assert_eq!(
            err,
            NoNode::NoRoom {
                needs: req(1500, 256 * MI),
                largest_free: Some((
                    "a".to_string(),
                    Resources {
                        cpu_millis: 1000,
                        memory_bytes: GI,
                        disk_bytes: 100 * GI
                    }
                )),
            }
        );
        assert!(err.to_string().starts_with(
            "no node has room: needs cpu 1500m memory 256Mi; largest free: a (cpu 1 "
        ));
    }

    #[test]
    fn capacity_is_never_exceeded_and_the_answer_is_stable() {
        let nodes = [
            node("a", 1000, GI, PROCESS),
            node("b", 1500, 2 * GI, PROCESS),
            node("c", 500, GI, PROCESS),
        ];
        let each = req(300, 200 * MI);
        let mut in_use: BTreeMap<String, Resources> = BTreeMap::new();
        let mut placed = 0;
        while let Ok(chosen) = choose(&nodes, &in_use, RuntimeKind::Process, &each) {
            let again = choose(&nodes, &in_use, RuntimeKind::Process, &each);
            assert_eq!(again, Ok(chosen.clone()), "same state, same answer");
            let used = in_use.entry(chosen).or_default();
            *used = used.saturating_add(&each);
            placed += 1;
        }
        for n in &nodes {
            let used = in_use.get(&n.name).copied().unwrap_or_default();
            assert!(used.cpu_millis <= n.allocatable.cpu_millis, "{}", n.name);
            assert!(
                used.memory_bytes <= n.allocatable.memory_bytes,
                "{}",
                n.name
            );
        }
        // 3 + 5 + 1 replicas of 300m fit.
        assert_eq!(placed, 9);
    }
}
