//! The placement vocabulary beyond names and labels: selector expressions, taints and
//! tolerations, spread constraints and ordered affinity groups.
//!
//! Policy objects (`PlacementPolicy`, Karmada's `PropagationPolicy`) resolve to these same
//! structures inside a workload's [`PlacementSpec`](crate::PlacementSpec).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::ClusterAffinity;

/// How a selector requirement compares a label (or a cluster field) with its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl fmt::Display for SelectorOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SelectorOperator::In => "In",
            SelectorOperator::NotIn => "NotIn",
            SelectorOperator::Exists => "Exists",
            SelectorOperator::DoesNotExist => "DoesNotExist",
        })
    }
}

/// `key operator [values]`, as Kubernetes' matchExpressions. For field selectors `key` is one
/// of `region`, `zone`, `provider`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether a cluster whose value for `key` is `value` (None: absent) satisfies this.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operator {
            SelectorOperator::In | SelectorOperator::NotIn => write!(
                f,
                "{} {} [{}]",
                self.key,
                self.operator,
                self.values.join(", ")
            ),
            _ => write!(f, "{} {}", self.key, self.operator),
        }
    }
}

/// One group of Karmada's `clusterAffinities`: tried in order, the next only when the previous
/// cannot take the workload (or, with overflow, takes what it can and spills the rest).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AffinityGroup {
    pub name: String,
    pub affinity: ClusterAffinity,
}

/// What a taint does to workloads that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaintEffect {
    /// Nothing new is placed; replicas already there stay.
    NoSchedule,
    /// Placed there only when no other cluster can take the replicas.
    PreferNoSchedule,
    /// Replicas already there are moved away (after the toleration's `tolerationSeconds`).
    NoExecute,
}

impl fmt::Display for TaintEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        })
    }
}

/// A cluster taint: `key=value:Effect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    pub effect: TaintEffect,
    /// When the taint was set (the proposer's clock); `tolerationSeconds` count from here.
    #[serde(default)]
    pub added_ms: u64,
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect)
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect)
        }
    }
}

impl Taint {
    /// Reads `key=value:Effect` or `key:Effect`, as `kubectl taint` writes them.
    pub fn parse(s: &str) -> Result<Taint, String> {
        let (kv, effect) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("taint {s:?}: expected key=value:Effect or key:Effect"))?;
        let effect = TaintEffect::parse(effect).map_err(|e| format!("taint {s:?}: {e}"))?;
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if key.is_empty() {
            return Err(format!("taint {s:?}: the key is empty"));
        }
        crate::validate::check_label_key(key).map_err(|e| format!("taint {s:?}: {e}"))?;
        Ok(Taint {
            key: key.to_string(),
            value: value.to_string(),
            effect,
            added_ms: 0,
        })
    }

    /// Whether `pattern` (`key`, `key:Effect` or `key=value:Effect`) names this taint.
    pub fn matches(&self, pattern: &str) -> bool {
        let (kv, effect) = match pattern.rsplit_once(':') {
            Some((kv, effect)) => (kv, Some(effect)),
            None => (pattern, None),
        };
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (kv, None),
        };
        self.key == key
            && value.is_none_or(|v| v == self.value)
            && effect.is_none_or(|e| e == self.effect.to_string())
    }
}

impl TaintEffect {
    pub fn parse(s: &str) -> Result<TaintEffect, String> {
        match s {
            "NoSchedule" => Ok(TaintEffect::NoSchedule),
            "PreferNoSchedule" => Ok(TaintEffect::PreferNoSchedule),
            "NoExecute" => Ok(TaintEffect::NoExecute),
            other => Err(format!(
                "the effect must be NoSchedule, PreferNoSchedule or NoExecute (got {other:?})"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

/// A workload's toleration of taints, as Kubernetes writes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// Empty with `Exists`: tolerates every taint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default)]
    pub operator: TolerationOperator,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// None: every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// For NoExecute: how long replicas may stay after the taint appears (None: forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<u64>,
}

impl Toleration {
    /// Whether this toleration covers `taint` at all (ignoring `toleration_seconds`).
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => self.key.is_empty() || self.key == taint.key,
            TolerationOperator::Equal => self.key == taint.key && self.value == taint.value,
        }
    }
}

/// What a spread constraint groups clusters by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "key")]
pub enum SpreadKey {
    Region,
    Zone,
    Provider,
    Cluster,
    /// A cluster label.
    Label(String),
}

impl fmt::Display for SpreadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpreadKey::Region => f.write_str("region"),
            SpreadKey::Zone => f.write_str("zone"),
            SpreadKey::Provider => f.write_str("provider"),
            SpreadKey::Cluster => f.write_str("cluster"),
            SpreadKey::Label(key) => write!(f, "label {key}"),
        }
    }
}

/// Spread replicas over groups of clusters (regions, zones, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpreadConstraint {
    pub spread_by: SpreadKey,
    /// At least this many groups must take replicas, or nothing is placed.
    #[serde(default)]
    pub min_groups: u32,
    /// At most this many groups are used (None: any number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_groups: Option<u32>,
    /// The replicas of two used groups differ by at most this much, while capacity allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_skew: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect,
            added_ms: 0,
        }
    }

    #[test]
    fn requirements_match_like_kubernetes() {
        let r = |operator, values: &[&str]| Requirement {
            key: "region".into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        assert!(r(SelectorOperator::In, &["eu", "us"]).matches(Some("eu")));
        assert!(!r(SelectorOperator::In, &["eu"]).matches(None));
        assert!(r(SelectorOperator::NotIn, &["eu"]).matches(None));
        assert!(!r(SelectorOperator::NotIn, &["eu"]).matches(Some("eu")));
        assert!(r(SelectorOperator::Exists, &[]).matches(Some("")));
        assert!(r(SelectorOperator::DoesNotExist, &[]).matches(None));
        assert_eq!(
            r(SelectorOperator::In, &["eu", "us"]).to_string(),
            "region In [eu, us]"
        );
    }

    #[test]
    fn tolerations_match_key_value_and_effect() {
        let gpu = taint("dedicated", "gpu", TaintEffect::NoSchedule);
        assert_eq!(gpu.to_string(), "dedicated=gpu:NoSchedule");
        let equal = Toleration {
            key: "dedicated".into(),
            value: "gpu".into(),
            ..Default::default()
        };
        assert!(equal.tolerates(&gpu));
        assert!(!equal.tolerates(&taint("dedicated", "db", TaintEffect::NoSchedule)));
        let exists_all = Toleration {
            operator: TolerationOperator::Exists,
            ..Default::default()
        };
        assert!(exists_all.tolerates(&gpu));
        let other_effect = Toleration {
            effect: Some(TaintEffect::NoExecute),
            ..equal
        };
        assert!(!other_effect.tolerates(&gpu));
    }
}
