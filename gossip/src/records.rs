//! Versioned records and the rule that decides between two versions of one key.
//!
//! Every peer must pick the same winner whatever order versions arrive in, so the
//! rule is a total order on versions: higher `generation`, then higher hybrid logical
//! clock, then greater `origin`, then greater content fingerprint. The last step only
//! matters when a peer misbehaves (two different contents under one timestamp), but it
//! keeps merging commutative, associative and idempotent even then.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::hlc::Timestamp;

/// What a record describes. The store keeps one namespace of keys per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Workload,
    Policy,
    Placement,
    ClusterFact,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Workload,
        Kind::Policy,
        Kind::Placement,
        Kind::ClusterFact,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Workload => "workload",
            Kind::Policy => "policy",
            Kind::Placement => "placement",
            Kind::ClusterFact => "cluster-fact",
        }
    }

    /// Stable one-byte code, part of the fingerprint: never renumber.
    fn code(self) -> u8 {
        match self {
            Kind::Workload => 1,
            Kind::Policy => 2,
            Kind::Placement => 3,
            Kind::ClusterFact => 4,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = InvalidRecord;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| InvalidRecord::UnknownKind(s.to_owned()))
    }
}

/// The identity of a record: its kind and its key within that kind
/// (for example `default/web` for a workload).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    pub kind: Kind,
    pub key: String,
}

impl RecordKey {
    pub fn new(kind: Kind, key: impl Into<String>) -> Self {
        Self {
            kind,
            key: key.into(),
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key)
    }
}

/// Longest key accepted from anyone.
pub const MAX_KEY_LEN: usize = 512;
/// Longest peer name accepted as an origin.
pub const MAX_ORIGIN_LEN: usize = 253;
/// Largest body accepted; bigger documents do not belong in the federation store.
pub const MAX_BODY_LEN: usize = 4 << 20;

/// One version of one document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub kind: Kind,
    pub key: String,
    /// Bumped by every write to the key (including deletes), on whichever peer.
    pub generation: u64,
    /// When the write happened, in hybrid logical time.
    pub hlc: Timestamp,
    /// Name of the peer that made the write.
    pub origin: String,
    /// The document (JSON by convention); `None` marks a tombstone.
    pub body: Option<Bytes>,
    /// For tombstones: wall-clock ms of the delete, which drives garbage collection.
    pub deleted_at: Option<u64>,
}

/// A 128-bit hash of a record's whole content.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    pub(crate) fn xor(self, other: Fingerprint) -> Fingerprint {
        let mut out = self.0;
        out.iter_mut().zip(other.0).for_each(|(a, b)| *a ^= b);
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// What a peer tells another about one record during anti-entropy: enough to decide
/// which side's version wins, without the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub kind: Kind,
    pub key: String,
    pub generation: u64,
    pub hlc: Timestamp,
    pub origin: String,
    pub fingerprint: Fingerprint,
}

impl Version {
    pub fn record_key(&self) -> RecordKey {
        RecordKey::new(self.kind, self.key.clone())
    }

    /// Compares two versions of the same key by the merge rule.
    pub fn precedence(&self, other: &Version) -> Ordering {
        rank(self.generation, &self.hlc, &self.origin, &self.fingerprint).cmp(&rank(
            other.generation,
            &other.hlc,
            &other.origin,
            &other.fingerprint,
        ))
    }
}

fn rank<'a>(
    generation: u64,
    hlc: &'a Timestamp,
    origin: &'a str,
    fingerprint: &'a Fingerprint,
) -> (u64, &'a Timestamp, &'a str, &'a Fingerprint) {
    (generation, hlc, origin, fingerprint)
}

/// Why a record from the network was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidRecord {
    #[error("record key must not be empty")]
    EmptyKey,
    #[error("record key {key:.40}...: longer than {MAX_KEY_LEN} bytes")]
    KeyTooLong { key: String },
    #[error("{key}: origin must be a peer name of 1 to {MAX_ORIGIN_LEN} bytes")]
    BadOrigin { key: RecordKey },
    #[error("{key}: body of {len} bytes is over the {MAX_BODY_LEN}-byte limit")]
    BodyTooLarge { key: RecordKey, len: usize },
    #[error("{key}: a tombstone must have deleted_at set and no body, a live record neither")]
    TombstoneMismatch { key: RecordKey },
    #[error("unknown record kind {0:?}; expected workload, policy, placement or cluster-fact")]
    UnknownKind(String),
}

impl Record {
    /// A live record.
    pub fn live(
        kind: Kind,
        key: impl Into<String>,
        generation: u64,
        hlc: Timestamp,
        origin: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Self {
        Self {
            kind,
            key: key.into(),
            generation,
            hlc,
            origin: origin.into(),
            body: Some(body.into()),
            deleted_at: None,
        }
    }

    /// A tombstone, deleted at the wall-clock part of `hlc`.
    pub fn tombstone(
        kind: Kind,
        key: impl Into<String>,
        generation: u64,
        hlc: Timestamp,
        origin: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            key: key.into(),
            generation,
            hlc,
            origin: origin.into(),
            body: None,
            deleted_at: Some(hlc.physical_ms),
        }
    }

    pub fn record_key(&self) -> RecordKey {
        RecordKey::new(self.kind, self.key.clone())
    }

    pub fn is_tombstone(&self) -> bool {
        self.body.is_none()
    }

    pub fn validate(&self) -> Result<(), InvalidRecord> {
        if self.key.is_empty() {
            return Err(InvalidRecord::EmptyKey);
        }
        if self.key.len() > MAX_KEY_LEN {
            return Err(InvalidRecord::KeyTooLong {
                key: self.key.clone(),
            });
        }
        if self.origin.is_empty() || self.origin.len() > MAX_ORIGIN_LEN {
            return Err(InvalidRecord::BadOrigin {
                key: self.record_key(),
            });
        }
        if let Some(body) = &self.body {
            if body.len() > MAX_BODY_LEN {
                return Err(InvalidRecord::BodyTooLarge {
                    key: self.record_key(),
                    len: body.len(),
                });
            }
        }
        if self.body.is_none() != self.deleted_at.is_some() {
            return Err(InvalidRecord::TombstoneMismatch {
                key: self.record_key(),
            });
        }
        Ok(())
    }

    /// Hash of a canonical encoding of every field (length-prefixed, big-endian), so it
    /// is the same on every peer and build and does not depend on a serde format.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut hash = Sha256::new();
        hash.update([1u8, self.kind.code()]);
        hash.update((self.key.len() as u64).to_be_bytes());
        hash.update(self.key.as_bytes());
        hash.update(self.generation.to_be_bytes());
        hash.update(self.hlc.physical_ms.to_be_bytes());
        hash.update(self.hlc.logical.to_be_bytes());
        hash.update(self.hlc.node.0.to_be_bytes());
        hash.update((self.origin.len() as u64).to_be_bytes());
        hash.update(self.origin.as_bytes());
        match &self.body {
            Some(body) => {
                hash.update([1u8]);
                hash.update((body.len() as u64).to_be_bytes());
                hash.update(body);
            }
            None => hash.update([0u8]),
        }
        match self.deleted_at {
            Some(at) => {
                hash.update([1u8]);
                hash.update(at.to_be_bytes());
            }
            None => hash.update([0u8]),
        }
        let digest = hash.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        Fingerprint(out)
    }

    pub fn version(&self) -> Version {
        self.version_with(self.fingerprint())
    }

    pub(crate) fn version_with(&self, fingerprint: Fingerprint) -> Version {
        Version {
            kind: self.kind,
            key: self.key.clone(),
            generation: self.generation,
            hlc: self.hlc,
            origin: self.origin.clone(),
            fingerprint,
        }
    }

    /// Compares two versions of the same key by the merge rule; `Greater` means `self`
    /// wins.
    pub fn precedence(&self, other: &Record) -> Ordering {
        let (mine, theirs) = (self.fingerprint(), other.fingerprint());
        rank(self.generation, &self.hlc, &self.origin, &mine).cmp(&rank(
            other.generation,
            &other.hlc,
            &other.origin,
            &theirs,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::NodeId;

    fn ts(ms: u64) -> Timestamp {
        Timestamp {
            physical_ms: ms,
            logical: 0,
            node: NodeId(1),
        }
    }

    #[test]
    fn higher_generation_wins_over_a_newer_clock() {
        let old_clock = Record::live(Kind::Workload, "default/web", 3, ts(10), "a", "x");
        let new_clock = Record::live(Kind::Workload, "default/web", 2, ts(99), "b", "y");
        assert_eq!(old_clock.precedence(&new_clock), Ordering::Greater);
    }

    #[test]
    fn clock_then_origin_break_generation_ties() {
        let early = Record::live(Kind::Workload, "k", 2, ts(10), "z", "x");
        let late = Record::live(Kind::Workload, "k", 2, ts(11), "a", "x");
        assert_eq!(late.precedence(&early), Ordering::Greater);
        let from_a = Record::live(Kind::Workload, "k", 2, ts(10), "a", "x");
        let from_b = Record::live(Kind::Workload, "k", 2, ts(10), "b", "x");
        assert_eq!(from_b.precedence(&from_a), Ordering::Greater);
    }

    #[test]
    fn fingerprint_covers_body_and_tombstone() {
        let a = Record::live(Kind::Policy, "p", 1, ts(1), "a", "{}");
        let b = Record::live(Kind::Policy, "p", 1, ts(1), "a", "[]");
        let gone = Record::tombstone(Kind::Policy, "p", 1, ts(1), "a");
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), gone.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.precedence(&b), Ordering::Equal);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut r = Record::live(Kind::Workload, "", 1, ts(1), "a", "{}");
        assert_eq!(r.validate(), Err(InvalidRecord::EmptyKey));
        r.key = "default/web".into();
        r.deleted_at = Some(5);
        let err = r.validate().expect_err("live record with deleted_at");
        assert_eq!(
            err.to_string(),
            "workload default/web: a tombstone must have deleted_at set and no body, a live record neither"
        );
        r.origin.clear();
        assert!(matches!(r.validate(), Err(InvalidRecord::BadOrigin { .. })));
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
        assert!("job".parse::<Kind>().is_err());
    }
}
