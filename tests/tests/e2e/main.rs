//! End-to-end tests: real federator, member-agent and hansa processes on loopback.
//! One test binary with a module per area, so it links once.

mod bad_input;
mod dev;
mod dns;
mod docker;
mod ha;
mod lifecycle;
mod nodes;
mod peer;
mod policies;
mod refusals;
mod rollout;
mod staged_rollout;
