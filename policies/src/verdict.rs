//! What the phases decide about one cluster, in a form that costs nothing to build.
//!
//! A decision looks at every member cluster, and most are filtered. Reasons and notes here
//! borrow what they name (the workload's selectors, the cluster's taints, a rule's text shared
//! by many clusters) and become strings only when the explanation shows them: a thousand
//! filtered clusters allocate nothing.

use std::fmt;
use std::rc::Rc;

use hansa_core::{Cluster, ClusterHealth, Requirement, RuntimeKind, Taint};

use crate::constraints::{ClusterTest, Test};
use crate::divide::Share;
use crate::reason::{Filter, ResourceKind};

/// One cluster on its way through the phases.
pub(crate) struct Considered<'a> {
    pub cluster: &'a Cluster,
    /// The cluster's position in the index.
    pub at: usize,
    pub verdict: Verdict<'a>,
}

/// Which clusters a decision keeps in its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    Every,
    /// Those that pass the filter: enough for a summary of a complete placement, which names
    /// no filtered cluster.
    Eligible,
}

pub(crate) enum Verdict<'a> {
    Filtered(FilterRef<'a>),
    Selected {
        share: Share,
        replicas: u32,
        note: Note<'a>,
        /// The cluster only keeps what it runs; if it ends with none, it is filtered by this.
        keeps_only: Option<FilterRef<'a>>,
        /// The untolerated PreferNoSchedule taint, if any.
        avoided: Option<&'a Taint>,
    },
}

/// A [`Filter`] that borrows what it names; [`FilterRef::to_filter`] renders it. Kept small
/// (a borrowed `String` is one word, a `&str` two): one is built and moved for every cluster.
#[derive(Debug, Clone)]
pub(crate) enum FilterRef<'a> {
    Plain(Plain),
    NotInClusterNames(&'a [String]),
    LabelMismatch {
        key: &'a String,
        required: &'a String,
        found: Option<&'a str>,
    },
    Requirement {
        requirement: &'a Requirement,
        field: bool,
        found: Option<&'a str>,
    },
    Untolerated {
        taint: &'a Taint,
        expired_after: Option<u64>,
    },
    Constraint {
        test: &'a ClusterTest,
        found: Option<&'a str>,
    },
    Avoided(&'a Taint),
    /// One reason for many clusters: a group or spread rule leaves them out together.
    Shared(Rc<Filter>),
}

/// The reasons that name nothing but small values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plain {
    Excluded,
    Unhealthy(ClusterHealth),
    Cordoned,
    MissingRuntime(RuntimeKind),
    Insufficient {
        resource: ResourceKind,
        need: u64,
        free: u64,
    },
    DuplicateName,
}

impl From<Plain> for FilterRef<'_> {
    fn from(plain: Plain) -> Self {
        FilterRef::Plain(plain)
    }
}

impl Plain {
    fn to_filter(self) -> Filter {
        match self {
            Plain::Excluded => Filter::Excluded,
            Plain::Unhealthy(health) => Filter::Unhealthy { health },
            Plain::Cordoned => Filter::Cordoned,
            Plain::MissingRuntime(needed) => Filter::MissingRuntime { needed },
            Plain::Insufficient {
                resource,
                need,
                free,
            } => Filter::Insufficient {
                resource,
                need,
                free,
            },
            Plain::DuplicateName => Filter::DuplicateName,
        }
    }
}

impl FilterRef<'_> {
    pub fn to_filter(&self) -> Filter {
        match self {
            FilterRef::Plain(plain) => plain.to_filter(),
            FilterRef::NotInClusterNames(names) => Filter::NotInClusterNames {
                names: names.to_vec(),
            },
            FilterRef::LabelMismatch {
                key,
                required,
                found,
            } => Filter::LabelMismatch {
                key: key.to_string(),
                required: required.to_string(),
                found: found.map(str::to_string),
            },
            FilterRef::Requirement {
                requirement,
                field,
                found,
            } => Filter::Requirement {
                requirement: (*requirement).clone(),
                field: *field,
                found: found.map(str::to_string),
            },
            FilterRef::Untolerated {
                taint,
                expired_after,
            } => Filter::Untolerated {
                taint: (*taint).clone(),
                expired_after: *expired_after,
            },
            FilterRef::Constraint { test, found } => Filter::Constraint {
                constraint: match &test.test {
                    Test::Invalid(e) => format!("{} (invalid pattern: {e})", test.written),
                    _ => test.written.clone(),
                },
                found: found.map(str::to_string),
            },
            FilterRef::Avoided(taint) => Filter::Avoided {
                taint: taint.to_string(),
            },
            FilterRef::Shared(filter) => (**filter).clone(),
        }
    }

    /// Whether two reasons certainly read alike in a summary (same `Filter::group_label`).
    /// `false` only costs a second look: summaries merge equal labels after rendering.
    pub fn same_group(&self, other: &FilterRef<'_>) -> bool {
        let same_taint =
            |a: &Taint, b: &Taint| a.effect == b.effect && a.key == b.key && a.value == b.value;
        match (self, other) {
            (
                FilterRef::Plain(Plain::Insufficient {
                    resource: a,
                    need: x,
                    ..
                }),
                FilterRef::Plain(Plain::Insufficient {
                    resource: b,
                    need: y,
                    ..
                }),
            ) => a == b && x == y,
            (FilterRef::Plain(a), FilterRef::Plain(b)) => a == b,
            (FilterRef::NotInClusterNames(_), FilterRef::NotInClusterNames(_)) => true,
            (
                FilterRef::LabelMismatch {
                    key: a,
                    required: x,
                    ..
                },
                FilterRef::LabelMismatch {
                    key: b,
                    required: y,
                    ..
                },
            ) => a == b && x == y,
            (
                FilterRef::Requirement { requirement: a, .. },
                FilterRef::Requirement { requirement: b, .. },
            ) => a == b,
            (FilterRef::Untolerated { taint: a, .. }, FilterRef::Untolerated { taint: b, .. })
            | (FilterRef::Avoided(a), FilterRef::Avoided(b)) => same_taint(a, b),
            (FilterRef::Constraint { test: a, .. }, FilterRef::Constraint { test: b, .. }) => {
                std::ptr::eq(*a, *b)
            }
            (FilterRef::Shared(a), FilterRef::Shared(b)) => Rc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// What an eligible cluster's decision adds in words: why it keeps or avoids, which group.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Note<'a> {
    pub because: Because<'a>,
    /// The clusterAffinities group the cluster is used in.
    pub group: Option<&'a String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum Because<'a> {
    #[default]
    Nothing,
    Cordoned,
    /// A NoExecute taint tolerated for this many seconds.
    ToleratedFor(&'a Taint, u64),
    /// An untolerated NoSchedule taint.
    KeepsFor(&'a Taint),
    /// An untolerated PreferNoSchedule taint.
    Avoids(&'a Taint),
}

impl fmt::Display for Note<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.because {
            Because::Nothing => {}
            Because::Cordoned => f.write_str("cordoned: keeps what it runs, takes no more")?,
            Because::ToleratedFor(taint, seconds) => write!(
                f,
                "taint {taint} tolerated for {seconds}s: keeps what it runs"
            )?,
            Because::KeepsFor(taint) => {
                write!(f, "taint {taint}: keeps what it runs, takes no more")?
            }
            Because::Avoids(taint) => {
                write!(f, "taint {taint}: used only when the others are full")?
            }
        }
        if let Some(group) = self.group {
            if !matches!(self.because, Because::Nothing) {
                f.write_str("; ")?;
            }
            write!(f, "clusterAffinities group {group}")?;
        }
        Ok(())
    }
}
