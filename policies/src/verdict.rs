//! What the phases decide about one cluster, in a form that costs nothing to build.
//!
//! A decision looks at every member cluster, and most are filtered. Reasons and notes here
//! borrow what they name (the workload's selectors, the cluster's taints, a rule's text shared
//! by many clusters) and become strings only when the explanation shows them: a thousand
//! filtered clusters allocate nothing.

use std::fmt;
use std::rc::Rc;

use hansa_core::{ClusterHealth, Requirement, RuntimeKind, Taint};

use crate::constraints::{ClusterTest, Test};
use crate::divide::Share;
use crate::reason::{Filter, ResourceKind};

/// One cluster on its way through the phases: what the select and divide phases read, kept
/// to 32 bytes because a decision passes over a thousand of these several times. What only
/// the explanation reads (reasons, notes) is kept aside, in its [`Decision`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Considered {
    /// The cluster's position in the index.
    at: u32,
    /// Where the cluster's reason or note is in [`Decision::aside`] (`NOTHING_ASIDE`: none).
    aside: u32,
    /// Replicas it receives (always 0 when filtered).
    pub replicas: u32,
    /// What [`Share`] says, for a selected cluster.
    pub fits: u32,
    pub previous: u32,
    pub weight: u64,
    pub avoid: bool,
    pub pinned: bool,
    /// Passed the filter, and no group or spread rule has left it out.
    pub selected: bool,
}

const NOTHING_ASIDE: u32 = u32::MAX;

impl Considered {
    pub fn at(&self) -> usize {
        self.at as usize
    }

    /// How the divide phase sees the cluster (nothing, when filtered).
    pub fn share(&self) -> Share {
        if !self.selected {
            return Share::default();
        }
        Share {
            weight: self.weight,
            fits: self.fits,
            previous: self.previous,
            avoid: self.avoid,
            pinned: self.pinned,
        }
    }
}

/// A decision's clusters: their compact records, and beside them the reasons and notes, which
/// only some records have and only the explanation reads.
pub(crate) struct Decision<'a> {
    pub considered: Vec<Considered>,
    aside: Vec<Aside<'a>>,
}

/// What a record keeps aside.
#[derive(Clone)]
enum Aside<'a> {
    Reason(FilterRef<'a>),
    /// Only for a selected cluster with something to say.
    Selected {
        note: Note<'a>,
        /// The cluster only keeps what it runs; if it ends with none, it is filtered by this.
        keeps_only: Option<FilterRef<'a>>,
        /// The untolerated PreferNoSchedule taint, if any.
        avoided: Option<&'a Taint>,
    },
}

impl<'a> Decision<'a> {
    pub fn with_capacity(clusters: usize) -> Self {
        Decision {
            considered: Vec::with_capacity(clusters),
            aside: Vec::new(),
        }
    }

    /// Adds the cluster at index position `at`. Always inlined (one call per cluster per
    /// decision): the verdict then folds into the record instead of being copied through the
    /// stack, which LLVM's heuristics left to a call.
    #[inline(always)]
    pub fn push(&mut self, at: usize, verdict: Verdict<'a>) {
        let at = u32::try_from(at).expect("an index holds fewer than 2^32 clusters");
        let record = match verdict {
            Verdict::Filtered(reason) => Considered {
                at,
                aside: self.put_aside(Aside::Reason(reason)),
                ..Considered::default()
            },
            Verdict::Selected {
                share,
                note,
                keeps_only,
                avoided,
            } => {
                let says_something = keeps_only.is_some()
                    || avoided.is_some()
                    || note.group.is_some()
                    || !matches!(note.because, Because::Nothing);
                Considered {
                    at,
                    aside: if says_something {
                        self.put_aside(Aside::Selected {
                            note,
                            keeps_only,
                            avoided,
                        })
                    } else {
                        NOTHING_ASIDE
                    },
                    replicas: 0,
                    fits: share.fits,
                    previous: share.previous,
                    weight: share.weight,
                    avoid: share.avoid,
                    pinned: share.pinned,
                    selected: true,
                }
            }
        };
        self.considered.push(record);
    }

    /// Adds `record` of `other`, with what it keeps aside.
    pub fn push_from(&mut self, other: &Decision<'a>, record: &Considered) {
        let aside = match other.aside_of(record) {
            Some(aside) => self.put_aside(aside.clone()),
            None => NOTHING_ASIDE,
        };
        self.considered.push(Considered { aside, ..*record });
    }

    fn put_aside(&mut self, aside: Aside<'a>) -> u32 {
        self.aside.push(aside);
        u32::try_from(self.aside.len() - 1).expect("fewer than 2^32 records")
    }

    fn aside_of(&self, record: &Considered) -> Option<&Aside<'a>> {
        match record.aside {
            NOTHING_ASIDE => None,
            i => self.aside.get(i as usize),
        }
    }

    fn aside_mut(&mut self, i: usize) -> Option<&mut Aside<'a>> {
        match self.considered[i].aside {
            NOTHING_ASIDE => None,
            at => self.aside.get_mut(at as usize),
        }
    }

    /// Why a filtered record was filtered.
    pub fn reason(&self, record: &Considered) -> Option<&FilterRef<'a>> {
        match self.aside_of(record) {
            Some(Aside::Reason(reason)) if !record.selected => Some(reason),
            _ => None,
        }
    }

    /// What a selected record adds in words.
    pub fn note(&self, record: &Considered) -> Note<'a> {
        match self.aside_of(record) {
            Some(Aside::Selected { note, .. }) => *note,
            _ => Note::default(),
        }
    }

    /// The filter of a selected record that only keeps what it runs.
    pub fn keeps_only(&self, record: &Considered) -> Option<&FilterRef<'a>> {
        match self.aside_of(record) {
            Some(Aside::Selected { keeps_only, .. }) => keeps_only.as_ref(),
            _ => None,
        }
    }

    /// The untolerated PreferNoSchedule taint of a selected record.
    pub fn avoided(&self, record: &Considered) -> Option<&'a Taint> {
        match self.aside_of(record) {
            Some(Aside::Selected { avoided, .. }) => *avoided,
            _ => None,
        }
    }

    /// Takes the filter of record `i` that only keeps what it runs: it keeps no more.
    pub fn take_keeps_only(&mut self, i: usize) -> Option<FilterRef<'a>> {
        match self.aside_mut(i) {
            Some(Aside::Selected { keeps_only, .. }) => keeps_only.take(),
            _ => None,
        }
    }

    /// Record `i` is used in the clusterAffinities group `group`.
    pub fn set_group(&mut self, i: usize, group: &'a String) {
        match self.aside_mut(i) {
            Some(Aside::Selected { note, .. }) => note.group = Some(group),
            _ => {
                let note = Note {
                    group: Some(group),
                    ..Note::default()
                };
                self.considered[i].aside = self.put_aside(Aside::Selected {
                    note,
                    keeps_only: None,
                    avoided: None,
                });
            }
        }
    }

    /// Leaves record `i` out, filtered by `reason`.
    pub fn filter(&mut self, i: usize, reason: FilterRef<'a>) {
        let aside = match self.aside_mut(i) {
            Some(aside) => {
                *aside = Aside::Reason(reason);
                self.considered[i].aside
            }
            None => self.put_aside(Aside::Reason(reason)),
        };
        let at = self.considered[i].at;
        self.considered[i] = Considered {
            at,
            aside,
            ..Considered::default()
        };
    }
}

/// Which clusters a decision keeps in its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    Every,
    /// Those that pass the filter: enough for a summary of a complete placement, which names
    /// no filtered cluster.
    Eligible,
}

/// What the filter and weigh phases say about one cluster, before [`Decision::push`] files it.
pub(crate) enum Verdict<'a> {
    Filtered(FilterRef<'a>),
    Selected {
        share: Share,
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
