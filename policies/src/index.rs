//! The member clusters as placement reads them, worked out once per federation snapshot.
//!
//! A decision looks at every cluster, and the same clusters serve every workload of a batch.
//! So their names, regions, zones, providers and labels are numbered once ([`Sym`]), and what
//! a workload asks for (selectors, constraint values, spread keys) is numbered once per
//! decision: filtering and grouping then compare numbers instead of strings.

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;

use hansa_core::{
    Cluster, ClusterAffinity, ClusterHealth, Requirement, Resources, RuntimeKind, SelectorOperator,
};
use rustc_hash::FxHashMap;

use crate::constraints::Attr;
use crate::verdict::{FilterRef, Plain};

/// The number of a string that some cluster uses as a name, field, label key or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Sym(NonZeroU32);

impl Sym {
    /// Where the string is in tables of [`ClusterIndex::strings`] entries.
    pub fn position(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// Whether cluster names are strictly increasing: then clusters are already in name order
/// and no two share a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Names {
    Ordered,
    Unordered,
}

/// What placement reads from one cluster, numbered. An empty field counts as absent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub name: Option<Sym>,
    pub region: Option<Sym>,
    pub zone: Option<Sym>,
    pub provider: Option<Sym>,
    /// This cluster's labels: `ClusterIndex::labels[start..end]`, by key number.
    labels: (u32, u32),
    /// The runtimes offered, one bit per [`RuntimeKind`].
    runtimes: u8,
    pub health: ClusterHealth,
    pub cordoned: bool,
    /// Whether the cluster has taints (most have none: then they are not looked at).
    pub tainted: bool,
    pub available: Resources,
}

/// Member clusters indexed for placement: build one with [`ClusterIndex::new`] when many
/// workloads are placed on the same clusters (as [`crate::place_all`] does per batch), and
/// hand it to each decision with [`crate::Problem::indexed`].
pub struct ClusterIndex<'a> {
    clusters: &'a [Cluster],
    /// Cluster positions in name order (equal names by position).
    order: Vec<usize>,
    names: Names,
    numbers: FxHashMap<&'a str, Sym>,
    /// The strings by number (`Sym(n)` is `text[n - 1]`).
    text: Vec<&'a str>,
    /// Per cluster position.
    facts: Vec<Facts>,
    labels: Vec<(Sym, Sym)>,
    /// Cluster positions, ascending, by name, field value or label: where the clusters a
    /// selector may pick are found without looking at every cluster.
    postings: FxHashMap<(Key, Sym), Vec<usize>>,
}

impl<'a> ClusterIndex<'a> {
    pub fn new(clusters: &'a [Cluster]) -> Self {
        let names = if clusters.windows(2).all(|w| w[0].name < w[1].name) {
            Names::Ordered
        } else {
            Names::Unordered
        };
        let mut order: Vec<usize> = (0..clusters.len()).collect();
        if names == Names::Unordered {
            order.sort_by(|&a, &b| clusters[a].name.cmp(&clusters[b].name).then(a.cmp(&b)));
        }
        let mut index = ClusterIndex {
            clusters,
            order,
            names,
            numbers: FxHashMap::default(),
            text: Vec::new(),
            facts: Vec::with_capacity(clusters.len()),
            labels: Vec::new(),
            postings: FxHashMap::default(),
        };
        for (at, cluster) in clusters.iter().enumerate() {
            let start = index.labels.len();
            for (key, value) in &cluster.labels {
                let pair = (index.number(key), index.number(value));
                index.labels.push(pair);
            }
            index.labels[start..].sort_unstable_by_key(|&(key, _)| key);
            let field =
                |index: &mut Self, value: &'a str| (!value.is_empty()).then(|| index.number(value));
            let facts = Facts {
                name: field(&mut index, &cluster.name),
                region: field(&mut index, &cluster.region),
                zone: field(&mut index, &cluster.zone),
                provider: field(&mut index, &cluster.provider),
                labels: (offset(start), offset(index.labels.len())),
                runtimes: cluster.runtimes.iter().fold(0, |bits, &r| bits | bit(r)),
                health: cluster.health,
                cordoned: cluster.cordoned,
                tainted: !cluster.taints.is_empty(),
                available: cluster.available,
            };
            let fields = [
                (Key::Name, facts.name),
                (Key::Region, facts.region),
                (Key::Zone, facts.zone),
                (Key::Provider, facts.provider),
            ];
            let labels = index.labels[start..].iter();
            let values = fields
                .into_iter()
                .chain(labels.map(|&(key, value)| (Key::Label(Some(key)), Some(value))));
            for (key, value) in values {
                if let Some(value) = value {
                    index.postings.entry((key, value)).or_default().push(at);
                }
            }
            index.facts.push(facts);
        }
        index
    }

    fn number(&mut self, text: &'a str) -> Sym {
        let next = self.text.len() + 1;
        *self.numbers.entry(text).or_insert_with(|| {
            self.text.push(text);
            Sym(NonZeroU32::new(u32::try_from(next).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MAX))
        })
    }

    /// The clusters indexed, in the order given.
    pub fn clusters(&self) -> &'a [Cluster] {
        self.clusters
    }

    pub(crate) fn order(&self) -> &[usize] {
        &self.order
    }

    pub(crate) fn names(&self) -> Names {
        self.names
    }

    pub(crate) fn facts(&self, at: usize) -> &Facts {
        &self.facts[at]
    }

    /// The number of `text`, if any cluster uses it.
    pub(crate) fn sym(&self, text: &str) -> Option<Sym> {
        self.numbers.get(text).copied()
    }

    pub(crate) fn text(&self, sym: Sym) -> &'a str {
        self.text[sym.position()]
    }

    /// How many strings are numbered.
    pub(crate) fn strings(&self) -> usize {
        self.text.len()
    }

    pub(crate) fn label(&self, at: usize, key: Sym) -> Option<Sym> {
        let (start, end) = self.facts[at].labels;
        let labels = &self.labels[start as usize..end as usize];
        labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, value)| value)
    }

    pub(crate) fn offers(&self, at: usize, runtime: RuntimeKind) -> bool {
        self.facts[at].runtimes & bit(runtime) != 0
    }

    /// The cluster's value of `key`.
    pub(crate) fn value(&self, at: usize, key: Key) -> Option<Sym> {
        let facts = &self.facts[at];
        match key {
            Key::Name => facts.name,
            Key::Region => facts.region,
            Key::Zone => facts.zone,
            Key::Provider => facts.provider,
            Key::Label(key) => self.label(at, key?),
        }
    }
}

impl fmt::Debug for ClusterIndex<'_> {
    /// The clusters' names: every number and posting would drown a `Problem`'s debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.order.iter().map(|&i| &self.clusters[i].name);
        f.debug_struct("ClusterIndex")
            .field("clusters", &names.collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn bit(runtime: RuntimeKind) -> u8 {
    match runtime {
        RuntimeKind::Process => 1,
        RuntimeKind::Docker => 2,
    }
}

/// A cluster attribute, numbered against an index: `Label(None)` is a label no cluster has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Name,
    Region,
    Zone,
    Provider,
    Label(Option<Sym>),
}

impl Key {
    pub fn of(attr: &Attr, index: &ClusterIndex<'_>) -> Key {
        match attr {
            Attr::Name => Key::Name,
            Attr::Region => Key::Region,
            Attr::Zone => Key::Zone,
            Attr::Provider => Key::Provider,
            Attr::Label(key) => Key::Label(index.sym(key)),
        }
    }

    /// A fieldSelector key: `region`, `zone`, `provider`, `name` (`@` in front allowed), or
    /// else a label.
    fn field(field: &str, index: &ClusterIndex<'_>) -> Key {
        match field.trim_start_matches('@') {
            "hostname" | "cluster" | "name" => Key::Name,
            "region" => Key::Region,
            "zone" => Key::Zone,
            "provider" => Key::Provider,
            _ => Key::Label(index.sym(field)),
        }
    }
}

/// A matchExpressions or fieldSelector requirement, numbered.
#[derive(Debug)]
struct Numbered<'w> {
    requirement: &'w Requirement,
    key: Key,
    /// The values some cluster has (the others match no cluster).
    values: Vec<Sym>,
}

impl Numbered<'_> {
    fn matches(&self, found: Option<Sym>) -> bool {
        let listed = |v: Sym| self.values.contains(&v);
        match self.requirement.operator {
            SelectorOperator::In => found.is_some_and(listed),
            SelectorOperator::NotIn => found.is_none_or(|v| !listed(v)),
            SelectorOperator::Exists => found.is_some(),
            SelectorOperator::DoesNotExist => found.is_none(),
        }
    }
}

/// A [`ClusterAffinity`] numbered against an index, checked without comparing strings.
#[derive(Debug)]
pub(crate) struct Selector<'w> {
    affinity: &'w ClusterAffinity,
    /// `clusterNames` that some cluster has, sorted (checked only when the list is not empty).
    names: Vec<Sym>,
    exclude: Vec<Sym>,
    /// Per `matchLabels` entry: the numbers of its key and value.
    labels: Vec<(Option<Sym>, Option<Sym>)>,
    expressions: Vec<Numbered<'w>>,
    fields: Vec<Numbered<'w>>,
}

impl<'w> Selector<'w> {
    pub fn new(affinity: &'w ClusterAffinity, index: &ClusterIndex<'_>) -> Self {
        let syms = |texts: &[String]| -> Vec<Sym> {
            let mut syms: Vec<Sym> = texts.iter().filter_map(|t| index.sym(t)).collect();
            syms.sort_unstable();
            syms
        };
        let numbered = |requirement: &'w Requirement, key: Key| Numbered {
            requirement,
            key,
            values: syms(&requirement.values),
        };
        Selector {
            affinity,
            names: syms(&affinity.cluster_names),
            exclude: syms(&affinity.exclude),
            labels: affinity
                .match_labels
                .iter()
                .map(|(key, value)| (index.sym(key), index.sym(value)))
                .collect(),
            expressions: affinity
                .match_expressions
                .iter()
                .map(|r| numbered(r, Key::Label(index.sym(&r.key))))
                .collect(),
            fields: affinity
                .field_selector
                .iter()
                .map(|r| numbered(r, Key::field(&r.key, index)))
                .collect(),
        }
    }

    /// The positions, ascending, of the clusters the selector may pick (and perhaps others),
    /// found without looking at every cluster; `None` when no part of it narrows them down.
    pub fn candidates<'i>(&self, index: &'i ClusterIndex<'_>) -> Option<Cow<'i, [usize]>> {
        let posting = |key: Key, value: Sym| -> &'i [usize] {
            index.postings.get(&(key, value)).map_or(&[], Vec::as_slice)
        };
        let any_of = |key: Key, values: &[Sym]| -> Cow<'i, [usize]> {
            match values {
                [] => Cow::Borrowed(&[]),
                [value] => Cow::Borrowed(posting(key, *value)),
                _ => {
                    let mut all: Vec<usize> = values
                        .iter()
                        .flat_map(|&value| posting(key, value))
                        .copied()
                        .collect();
                    // Postings are ascending: a stable sort merges the runs in linear time.
                    all.sort();
                    all.dedup();
                    Cow::Owned(all)
                }
            }
        };
        let affinity = self.affinity;
        if !affinity.cluster_names.is_empty() {
            // An empty name is not numbered, so it has no posting.
            if affinity.cluster_names.iter().any(String::is_empty) {
                return None;
            }
            return Some(any_of(Key::Name, &self.names));
        }
        if let Some(&(key, value)) = self.labels.first() {
            return Some(match (key, value) {
                (Some(key), Some(value)) => Cow::Borrowed(posting(Key::Label(Some(key)), value)),
                _ => Cow::Borrowed(&[]),
            });
        }
        self.expressions
            .iter()
            .chain(&self.fields)
            .find(|r| r.requirement.operator == SelectorOperator::In)
            .map(|r| any_of(r.key, &r.values))
    }

    /// Whether the selector picks the cluster at `at`: all given parts must match (an empty
    /// affinity selects every cluster). The reason borrows what it names.
    pub fn check<'a>(&self, index: &ClusterIndex<'a>, at: usize) -> Result<(), FilterRef<'w>>
    where
        'a: 'w,
    {
        let affinity = self.affinity;
        // An empty name is numbered as absent: only an empty entry lists it.
        let listed = |syms: &[Sym], texts: &[String]| match index.facts[at].name {
            Some(name) => syms.binary_search(&name).is_ok(),
            None => texts.iter().any(String::is_empty),
        };
        if !affinity.cluster_names.is_empty() && !listed(&self.names, &affinity.cluster_names) {
            return Err(FilterRef::NotInClusterNames(&affinity.cluster_names));
        }
        if listed(&self.exclude, &affinity.exclude) {
            return Err(Plain::Excluded.into());
        }
        for ((key, required), &(key_sym, value_sym)) in
            affinity.match_labels.iter().zip(&self.labels)
        {
            let found = key_sym.and_then(|k| index.label(at, k));
            if found.is_none() || found != value_sym {
                return Err(FilterRef::LabelMismatch {
                    key,
                    required,
                    found: found.map(|v| index.text(v)),
                });
            }
        }
        for (r, field) in self
            .expressions
            .iter()
            .map(|r| (r, false))
            .chain(self.fields.iter().map(|r| (r, true)))
        {
            let found = index.value(at, r.key);
            if !r.matches(found) {
                return Err(FilterRef::Requirement {
                    requirement: r.requirement,
                    field,
                    found: found.map(|v| index.text(v)),
                });
            }
        }
        Ok(())
    }
}
