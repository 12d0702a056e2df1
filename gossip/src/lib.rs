//! Peer mode's foundation: a gossip pool of federators (SWIM membership and failure
//! detection with foca, over UDP datagrams sealed with the federation's gossip key) and
//! a replicated document store kept in step by gossip and anti-entropy.
//!
//! # Records and the merge rule
//!
//! The store holds workloads, policies, placements and cluster facts as [`Record`]s:
//! `(kind, key)` identifies one; each write produces a new version with
//! `generation` = previous + 1 (on whichever peer writes), a hybrid logical clock
//! timestamp, the writing peer as `origin`, and a body (`None` for a tombstone, which
//! also carries `deleted_at`).
//!
//! Per key the winner is the version with the greatest
//! `(generation, hlc, origin, content fingerprint)`, compared in that order. The rule is
//! a total order, so merging is commutative, associative and idempotent: every peer
//! ends with the same records whatever order or how often versions arrive. The
//! fingerprint step only breaks ties a misbehaving peer could create (two contents
//! under one timestamp). Concurrent writes at the same generation go to the later
//! clock; a delete (a tombstone, generation + 1) beats the version it deleted, and a
//! re-create after it beats the tombstone.
//!
//! Tombstones are dropped once older than the tombstone TTL and older than the
//! anti-entropy horizon given by the caller; a peer away longer than that must rejoin
//! with an empty store, or it could bring deleted records back.
//!
//! Small records ride on SWIM messages ([`Membership::broadcast`]); a periodic
//! [`anti_entropy::pull`] (digest, differing versions, fetch) catches up the rest.
//!
//! # Ownership
//!
//! A workload is owned by its origin (the peer it was applied on) while that peer is
//! alive (alive or suspect). When the origin is down, the owner is the live peer with
//! the highest rendezvous weight for the workload's key ([`ownership::owner`]): every
//! peer that sees the same live set picks the same owner, and a peer's death only moves
//! the workloads that peer owned.

pub mod anti_entropy;
pub mod crypto;
pub mod hlc;
pub mod membership;
pub mod ownership;
pub mod records;
pub mod store;

pub use crypto::GossipKey;
pub use hlc::{Clock, NodeId, Timestamp};
pub use membership::{
    BroadcastOutcome, Member, MemberState, Membership, MembershipConfig, MembershipError,
    MembershipEvent, MemoryNetwork, PeerId,
};
pub use records::{Kind, Record, RecordKey, Version};
pub use store::{Change, ChangeSource, Digest, MergeReport, RecordStore, StoreConfig};
