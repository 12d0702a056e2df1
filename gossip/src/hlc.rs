//! Hybrid logical clock (Kulkarni et al.): wall-clock milliseconds plus a logical
//! counter, so timestamps follow causality even when peers' clocks disagree a little,
//! and stay close to real time so that "newest" means what an operator expects.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A point in hybrid logical time. Ordered by physical time, then logical counter,
/// then node id, so two timestamps from different nodes never compare equal.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch, as seen by the clock that issued it (or later).
    pub physical_ms: u64,
    /// Orders events within the same millisecond.
    pub logical: u32,
    /// The issuing node: breaks ties between nodes that issued the same (ms, counter).
    pub node: NodeId,
}

/// A stable 64-bit id derived from a peer name (SHA-256 prefix, identical on every
/// platform and build, unlike `std`'s hasher).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl NodeId {
    pub fn from_name(name: &str) -> Self {
        let hash = Sha256::digest(name.as_bytes());
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&hash[..8]);
        NodeId(u64::from_be_bytes(prefix))
    }
}

/// A remote timestamp was too far ahead of our wall clock to adopt.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("remote clock of node {node:x} is {ahead_ms} ms ahead of ours (max drift {max_drift_ms} ms); check NTP on that peer")]
pub struct ClockDrift {
    pub node: u64,
    pub ahead_ms: u64,
    pub max_drift_ms: u64,
}

type WallClock = Box<dyn Fn() -> u64 + Send + Sync>;

/// A monotonic hybrid logical clock for one node. Cheap to share behind an `Arc`.
pub struct Clock {
    node: NodeId,
    max_drift: Duration,
    wall: WallClock,
    last: Mutex<Timestamp>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("node", &self.node)
            .field("last", &self.last())
            .finish()
    }
}

/// How far ahead of our wall clock a remote timestamp may be before we refuse to
/// jump to it (a peer with a broken clock must not drag everyone into the future).
pub const DEFAULT_MAX_DRIFT: Duration = Duration::from_secs(60);

impl Clock {
    pub fn new(node: NodeId) -> Self {
        Self::with_wall_clock(node, DEFAULT_MAX_DRIFT, system_time_ms)
    }

    /// A clock reading physical time from `wall` (milliseconds since the epoch);
    /// tests pass a fake one.
    pub fn with_wall_clock(
        node: NodeId,
        max_drift: Duration,
        wall: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        Self {
            node,
            max_drift,
            wall: Box::new(wall),
            last: Mutex::new(Timestamp {
                physical_ms: 0,
                logical: 0,
                node,
            }),
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A timestamp strictly greater than every one this clock issued or observed.
    pub fn now(&self) -> Timestamp {
        let wall = (self.wall)();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = if wall > last.physical_ms {
            Timestamp {
                physical_ms: wall,
                logical: 0,
                node: self.node,
            }
        } else {
            tick(last.physical_ms, last.logical, self.node)
        };
        *last = next;
        next
    }

    /// Merges a timestamp received from another node; the result is greater than both
    /// it and everything issued before. A timestamp more than the maximum drift ahead
    /// of our wall clock is not adopted (our clock does not move) and is reported.
    pub fn observe(&self, remote: Timestamp) -> Result<Timestamp, ClockDrift> {
        let wall = (self.wall)();
        let max_drift_ms = u64::try_from(self.max_drift.as_millis()).unwrap_or(u64::MAX);
        if remote.physical_ms > wall.saturating_add(max_drift_ms) {
            return Err(ClockDrift {
                node: remote.node.0,
                ahead_ms: remote.physical_ms - wall,
                max_drift_ms,
            });
        }
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let physical = wall.max(last.physical_ms).max(remote.physical_ms);
        let next = if physical == last.physical_ms && physical == remote.physical_ms {
            tick(physical, last.logical.max(remote.logical), self.node)
        } else if physical == last.physical_ms {
            tick(physical, last.logical, self.node)
        } else if physical == remote.physical_ms {
            tick(physical, remote.logical, self.node)
        } else {
            Timestamp {
                physical_ms: physical,
                logical: 0,
                node: self.node,
            }
        };
        *last = next;
        Ok(next)
    }
}

/// The successor of (physical, logical); on counter overflow it borrows a millisecond.
fn tick(physical_ms: u64, logical: u32, node: NodeId) -> Timestamp {
    match logical.checked_add(1) {
        Some(logical) => Timestamp {
            physical_ms,
            logical,
            node,
        },
        None => Timestamp {
            physical_ms: physical_ms + 1,
            logical: 0,
            node,
        },
    }
}

/// Milliseconds since the Unix epoch (0 if the system clock is before 1970).
pub fn system_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn fake_clock(node: u64) -> (Clock, Arc<AtomicU64>) {
        let wall = Arc::new(AtomicU64::new(1_000));
        let reader = wall.clone();
        let clock = Clock::with_wall_clock(NodeId(node), Duration::from_secs(60), move || {
            reader.load(Ordering::SeqCst)
        });
        (clock, wall)
    }

    #[test]
    fn now_is_monotonic_when_wall_clock_stalls_or_goes_back() {
        let (clock, wall) = fake_clock(1);
        let a = clock.now();
        let b = clock.now();
        wall.store(500, Ordering::SeqCst);
        let c = clock.now();
        assert!(a < b && b < c, "{a:?} {b:?} {c:?}");
        assert_eq!(c.physical_ms, 1_000);
        wall.store(2_000, Ordering::SeqCst);
        let d = clock.now();
        assert_eq!((d.physical_ms, d.logical), (2_000, 0));
    }

    #[test]
    fn observe_moves_past_a_remote_clock_that_is_slightly_ahead() {
        let (clock, _wall) = fake_clock(1);
        let remote = Timestamp {
            physical_ms: 5_000,
            logical: 7,
            node: NodeId(2),
        };
        let merged = clock.observe(remote).expect("within drift");
        assert!(merged > remote);
        assert!(clock.now() > merged);
    }

    #[test]
    fn observe_refuses_a_remote_clock_far_in_the_future() {
        let (clock, _wall) = fake_clock(1);
        let before = clock.now();
        let remote = Timestamp {
            physical_ms: 1_000 + 61_000,
            logical: 0,
            node: NodeId(2),
        };
        let err = clock.observe(remote).expect_err("too far ahead");
        assert_eq!(err.ahead_ms, 61_000);
        assert!(clock.now().physical_ms < remote.physical_ms);
        assert!(clock.last() > before);
    }

    #[test]
    fn logical_overflow_borrows_a_millisecond() {
        let t = tick(10, u32::MAX, NodeId(1));
        assert_eq!((t.physical_ms, t.logical), (11, 0));
    }

    #[test]
    fn node_ids_are_stable() {
        // Pinned: every peer, on every build, must derive the same id from a name.
        assert_eq!(NodeId::from_name("eu-1"), NodeId::from_name("eu-1"));
        assert_ne!(NodeId::from_name("eu-1"), NodeId::from_name("eu-2"));
        assert_eq!(NodeId::from_name(""), NodeId(0xe3b0_c442_98fc_1c14));
    }

    proptest! {
        #[test]
        fn every_issued_timestamp_exceeds_all_earlier_ones(
            steps in proptest::collection::vec((0u64..3_000, any::<bool>(), 0u64..3_000, 0u32..5), 1..60)
        ) {
            let (clock, wall) = fake_clock(1);
            let mut seen = Timestamp::default();
            for (wall_ms, receive, remote_ms, remote_logical) in steps {
                wall.store(wall_ms, Ordering::SeqCst);
                let next = if receive {
                    let remote = Timestamp { physical_ms: remote_ms, logical: remote_logical, node: NodeId(2) };
                    let merged = clock.observe(remote).expect("within drift");
                    prop_assert!(merged > remote);
                    merged
                } else {
                    clock.now()
                };
                prop_assert!(next > seen, "{next:?} <= {seen:?}");
                seen = next;
            }
        }
    }
}
