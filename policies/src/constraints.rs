//! Marathon constraints (`[field, OPERATOR, value]`) applied to cluster attributes instead of
//! agent attributes. `hostname` (and `cluster`) is the cluster's name; `region`, `zone` and
//! `provider` are the cluster's fields; anything else is a cluster label.
//!
//! Per-cluster operators (CLUSTER with a value, LIKE, UNLIKE, IS) filter clusters. The others
//! shape how replicas spread: UNIQUE and MAX_PER cap the replicas per attribute value,
//! GROUP_BY balances them over the values, CLUSTER without a value keeps them on one value.
//! Marathon picks offers as they come; here the same inputs always give the same answer.

use hansa_core::SpreadKey;
use regex::Regex;

use crate::index::{ClusterIndex, Key, Sym};

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

    pub fn of_spread(key: &SpreadKey) -> Attr {
        match key {
            SpreadKey::Region => Attr::Region,
            SpreadKey::Zone => Attr::Zone,
            SpreadKey::Provider => Attr::Provider,
            SpreadKey::Cluster => Attr::Name,
            SpreadKey::Label(key) => Attr::Label(key.clone()),
        }
    }
}

/// A per-cluster test.
#[derive(Debug)]
pub(crate) enum Test {
    /// The value's number (`None`: no cluster has it).
    Equals(Option<Sym>),
    /// UNLIKE a pattern without special characters.
    NotEquals(Option<Sym>),
    Matches(Regex),
    NotMatches(Regex),
    /// The pattern did not compile: no cluster passes, and the reason says so.
    Invalid(String),
}

/// A constraint that filters clusters one by one.
#[derive(Debug)]
pub(crate) struct ClusterTest {
    pub key: Key,
    pub test: Test,
    /// As written, for explanations: `["region", "LIKE", "eu-.*"]`.
    pub written: String,
}

impl ClusterTest {
    /// Whether the cluster at `at` passes; `Err(found)` when it fails.
    pub fn check<'c>(&self, index: &ClusterIndex<'c>, at: usize) -> Result<(), Option<&'c str>> {
        let found = index.value(at, self.key);
        let ok = match (&self.test, found) {
            (Test::Equals(v), Some(f)) => *v == Some(f),
            (Test::NotEquals(_), None) => true,
            (Test::NotEquals(v), Some(f)) => *v != Some(f),
            (Test::Matches(r), Some(f)) => r.is_match(index.text(f)),
            // Marathon: UNLIKE passes agents without the attribute.
            (Test::NotMatches(_), None) => true,
            (Test::NotMatches(r), Some(f)) => !r.is_match(index.text(f)),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(found.map(|f| index.text(f)))
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

/// Compiles validated constraints, numbering values against `index`; an operator the
/// validator would reject is ignored.
pub(crate) fn compile(constraints: &[Vec<String>], index: &ClusterIndex<'_>) -> Compiled {
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
            ("CLUSTER", Some(v)) | ("IS", Some(v)) => Test::Equals(index.sym(v)),
            ("LIKE", Some(p)) if literal(p) => Test::Equals(index.sym(p)),
            ("UNLIKE", Some(p)) if literal(p) => Test::NotEquals(index.sym(p)),
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
            key: Key::of(&attr, index),
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
    use hansa_core::Cluster;

    fn strings(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| p.to_string()).collect()
    }

    /// Each per-cluster test's verdict on `cluster`, with the value it found when it fails.
    fn checks(constraints: &[Vec<String>], cluster: &Cluster) -> Vec<Result<(), Option<String>>> {
        let index = ClusterIndex::new(std::slice::from_ref(cluster));
        let compiled = compile(constraints, &index);
        compiled
            .tests
            .iter()
            .map(|t| {
                t.check(&index, 0)
                    .map_err(|found| found.map(str::to_string))
            })
            .collect()
    }

    fn found(value: &str) -> Result<(), Option<String>> {
        Err(Some(value.to_string()))
    }

    #[test]
    fn per_cluster_operators() {
        let constraints = [
            strings(&["region", "LIKE", "eu-.*"]),
            strings(&["tier", "UNLIKE", "bronze"]),
            strings(&["hostname", "IS", "eu-1"]),
        ];
        let mut eu = cluster("eu-1");
        eu.region = "eu-west".into();
        assert!(checks(&constraints, &eu).iter().all(Result::is_ok));
        let mut us = cluster("us-1");
        us.region = "us-east".into();
        let us = checks(&constraints, &us);
        assert_eq!(us[0], found("us-east"));
        assert_eq!(us[2], found("us-1"));
        eu.labels.insert("tier".into(), "bronze".into());
        assert_eq!(checks(&constraints, &eu)[1], found("bronze"));
    }

    #[test]
    fn literal_patterns_match_as_their_regex_would() {
        let constraints = [
            strings(&["region", "LIKE", "eu-west"]),
            strings(&["provider", "UNLIKE", "onprem"]),
        ];
        let mut c = cluster("a");
        c.region = "eu-west".into();
        c.provider = "onprem".into();
        assert_eq!(checks(&constraints, &c), [Ok(()), found("onprem")]);
        c.region = "eu-west-2".into();
        c.provider = String::new();
        assert_eq!(checks(&constraints, &c), [found("eu-west-2"), Ok(())]);
    }

    #[test]
    fn like_matches_the_whole_value_as_marathon_does() {
        let mut c = cluster("a");
        c.region = "eu-west".into();
        assert_eq!(
            checks(&[strings(&["region", "LIKE", "eu"])], &c),
            [found("eu-west")]
        );
    }

    #[test]
    fn spreading_operators_become_group_rules() {
        let index = ClusterIndex::new(&[]);
        let compiled = compile(
            &[
                strings(&["hostname", "UNIQUE"]),
                strings(&["zone", "MAX_PER", "2"]),
                strings(&["rack", "GROUP_BY", "3"]),
                strings(&["region", "CLUSTER"]),
            ],
            &index,
        );
        let caps: Vec<_> = compiled.groups.iter().map(|g| g.cap).collect();
        assert_eq!(caps, [Some(1), Some(2), None, None]);
        assert!(compiled.groups[2].balance);
        assert_eq!(compiled.groups[2].min_groups, 3);
        assert_eq!(compiled.groups[3].max_groups, Some(1));
        assert_eq!(compiled.groups[2].attr, Attr::Label("rack".into()));
    }
}
