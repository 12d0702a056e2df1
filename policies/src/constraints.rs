//! Marathon constraints (`[field, OPERATOR, value]`) applied to cluster attributes instead of
//! agent attributes. `hostname` (and `cluster`) is the cluster's name; `region`, `zone` and
//! `provider` are the cluster's fields; anything else is a cluster label.
//!
//! Per-cluster operators (CLUSTER with a value, LIKE, UNLIKE, IS) filter clusters. The others
//! shape how replicas spread: UNIQUE and MAX_PER cap the replicas per attribute value,
//! GROUP_BY balances them over the values, CLUSTER without a value keeps them on one value.
//! Marathon picks offers as they come; here the same inputs always give the same answer.

use hansa_core::{Cluster, SpreadKey};
use regex::Regex;

/// A cluster attribute a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attr {
    Name,
    Region,
    Zone,
    Provider,
    Label(String),
}

impl Attr {
    pub fn parse(field: &str) -> Attr {
        match field.trim_start_matches('@') {
            "hostname" | "cluster" | "name" => Attr::Name,
            "region" => Attr::Region,
            "zone" => Attr::Zone,
            "provider" => Attr::Provider,
            _ => Attr::Label(field.to_string()),
        }
    }

    /// `Attr::parse(field).value(cluster)` without building the `Attr`.
    pub fn field_value<'c>(field: &str, cluster: &'c Cluster) -> Option<&'c str> {
        let v = match field.trim_start_matches('@') {
            "hostname" | "cluster" | "name" => cluster.name.as_str(),
            "region" => cluster.region.as_str(),
            "zone" => cluster.zone.as_str(),
            "provider" => cluster.provider.as_str(),
            _ => return cluster.labels.get(field).map(String::as_str),
        };
        (!v.is_empty()).then_some(v)
    }

    pub fn of_spread(key: &SpreadKey) -> Attr {
        match key {
            SpreadKey::Region => Attr::Region,
            SpreadKey::Zone => Attr::Zone,
            SpreadKey::Provider => Attr::Provider,
            SpreadKey::Cluster => Attr::Name,
            SpreadKey::Label(key) => Attr::Label(key.clone()),
        }
    }

    /// The cluster's value; an empty field counts as absent.
    pub fn value<'c>(&self, cluster: &'c Cluster) -> Option<&'c str> {
        let v = match self {
            Attr::Name => cluster.name.as_str(),
            Attr::Region => cluster.region.as_str(),
            Attr::Zone => cluster.zone.as_str(),
            Attr::Provider => cluster.provider.as_str(),
            Attr::Label(key) => return cluster.labels.get(key).map(String::as_str),
        };
        (!v.is_empty()).then_some(v)
    }
}

/// A per-cluster test.
#[derive(Debug)]
pub(crate) enum Test {
    Equals(String),
    /// UNLIKE a pattern without special characters.
    NotEquals(String),
    Matches(Regex),
    NotMatches(Regex),
    /// The pattern did not compile: no cluster passes, and the reason says so.
    Invalid(String),
}

/// A constraint that filters clusters one by one.
#[derive(Debug)]
pub(crate) struct ClusterTest {
    pub attr: Attr,
    pub test: Test,
    /// As written, for explanations: `["region", "LIKE", "eu-.*"]`.
    pub written: String,
}

impl ClusterTest {
    /// `Err(found)` when the cluster fails.
    pub fn check<'c>(&self, cluster: &'c Cluster) -> Result<(), Option<&'c str>> {
        let found = self.attr.value(cluster);
        let ok = match (&self.test, found) {
            (Test::Equals(v), Some(f)) => v == f,
            (Test::NotEquals(_), None) => true,
            (Test::NotEquals(v), Some(f)) => v != f,
            (Test::Matches(r), Some(f)) => r.is_match(f),
            // Marathon: UNLIKE passes agents without the attribute.
            (Test::NotMatches(_), None) => true,
            (Test::NotMatches(r), Some(f)) => !r.is_match(f),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(found)
        }
    }
}

/// A constraint on how replicas spread over the values of an attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupRule {
    pub attr: Attr,
    /// At most this many replicas per value (UNIQUE: 1, MAX_PER n).
    pub cap: Option<u32>,
    /// Keep values within one replica of each other (GROUP_BY, spread maxSkew).
    pub balance: bool,
    /// At least / at most this many values take replicas.
    pub min_groups: u32,
    pub max_groups: Option<u32>,
    /// The largest difference between used values that is acceptable.
    pub max_skew: Option<u32>,
    /// For explanations: `region` or `constraint ["rack", "GROUP_BY", "3"]`.
    pub written: String,
}

/// The constraints of one workload, compiled.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    pub tests: Vec<ClusterTest>,
    pub groups: Vec<GroupRule>,
}

pub(crate) fn written(c: &[String]) -> String {
    let quoted: Vec<String> = c.iter().map(|p| format!("{p:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Compiles validated constraints; an operator the validator would reject is ignored.
pub(crate) fn compile(constraints: &[Vec<String>]) -> Compiled {
    let mut out = Compiled::default();
    for c in constraints {
        let (field, op, value) = match c.as_slice() {
            [field, op] => (field, op.as_str(), None),
            [field, op, value] => (field, op.as_str(), Some(value.as_str())),
            _ => continue,
        };
        let attr = Attr::parse(field);
        let text = written(c);
        let group = |cap, balance, min_groups, max_groups| GroupRule {
            attr: attr.clone(),
            cap,
            balance,
            min_groups,
            max_groups,
            max_skew: balance.then_some(1),
            written: format!("constraint {text}"),
        };
        let regex = |pattern: &str| Regex::new(&format!("^(?:{pattern})$"));
        // A pattern of letters, digits, `-` and `_` matches only itself: no regex to build.
        let literal = |pattern: &str| {
            !pattern.is_empty()
                && pattern
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        let test = match (op, value) {
            ("CLUSTER", Some(v)) | ("IS", Some(v)) => Test::Equals(v.to_string()),
            ("LIKE", Some(p)) if literal(p) => Test::Equals(p.to_string()),
            ("UNLIKE", Some(p)) if literal(p) => Test::NotEquals(p.to_string()),
            ("LIKE", Some(p)) => {
                regex(p).map_or_else(|e| Test::Invalid(e.to_string()), Test::Matches)
            }
            ("UNLIKE", Some(p)) => {
                regex(p).map_or_else(|e| Test::Invalid(e.to_string()), Test::NotMatches)
            }
            ("CLUSTER", None) => {
                out.groups.push(group(None, false, 0, Some(1)));
                continue;
            }
            ("UNIQUE", _) => {
                out.groups.push(group(Some(1), false, 0, None));
                continue;
            }
            ("MAX_PER", Some(n)) => {
                out.groups
                    .push(group(Some(n.parse().unwrap_or(0)), false, 0, None));
                continue;
            }
            ("GROUP_BY", n) => {
                let min = n.and_then(|n| n.parse().ok()).unwrap_or(0);
                out.groups.push(group(None, true, min, None));
                continue;
            }
            _ => continue,
        };
        out.tests.push(ClusterTest {
            attr,
            test,
            written: text,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::cluster;

    fn strings(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn per_cluster_operators() {
        let compiled = compile(&[
            strings(&["region", "LIKE", "eu-.*"]),
            strings(&["tier", "UNLIKE", "bronze"]),
            strings(&["hostname", "IS", "eu-1"]),
        ]);
        let mut eu = cluster("eu-1");
        eu.region = "eu-west".into();
        assert!(compiled.tests.iter().all(|t| t.check(&eu).is_ok()));
        let mut us = cluster("us-1");
        us.region = "us-east".into();
        assert_eq!(compiled.tests[0].check(&us), Err(Some("us-east")));
        assert_eq!(compiled.tests[2].check(&us), Err(Some("us-1")));
        eu.labels.insert("tier".into(), "bronze".into());
        assert_eq!(compiled.tests[1].check(&eu), Err(Some("bronze")));
    }

    #[test]
    fn literal_patterns_match_as_their_regex_would() {
        let compiled = compile(&[
            strings(&["region", "LIKE", "eu-west"]),
            strings(&["provider", "UNLIKE", "onprem"]),
        ]);
        let mut c = cluster("a");
        c.region = "eu-west".into();
        c.provider = "onprem".into();
        assert!(compiled.tests[0].check(&c).is_ok());
        assert_eq!(compiled.tests[1].check(&c), Err(Some("onprem")));
        c.region = "eu-west-2".into();
        c.provider = String::new();
        assert_eq!(compiled.tests[0].check(&c), Err(Some("eu-west-2")));
        assert!(compiled.tests[1].check(&c).is_ok());
    }

    #[test]
    fn like_matches_the_whole_value_as_marathon_does() {
        let compiled = compile(&[strings(&["region", "LIKE", "eu"])]);
        let mut c = cluster("a");
        c.region = "eu-west".into();
        assert!(compiled.tests[0].check(&c).is_err());
    }

    #[test]
    fn spreading_operators_become_group_rules() {
        let compiled = compile(&[
            strings(&["hostname", "UNIQUE"]),
            strings(&["zone", "MAX_PER", "2"]),
            strings(&["rack", "GROUP_BY", "3"]),
            strings(&["region", "CLUSTER"]),
        ]);
        let caps: Vec<_> = compiled.groups.iter().map(|g| g.cap).collect();
        assert_eq!(caps, [Some(1), Some(2), None, None]);
        assert!(compiled.groups[2].balance);
        assert_eq!(compiled.groups[2].min_groups, 3);
        assert_eq!(compiled.groups[3].max_groups, Some(1));
        assert_eq!(compiled.groups[2].attr, Attr::Label("rack".into()));
    }
}
