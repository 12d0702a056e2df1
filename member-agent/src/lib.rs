//! hansa-agent: the member agent. It registers its cluster with the federation, receives
//! the cluster's assignments over the Sync stream and makes them so with the local
//! scheduler and runtime (DESIGN.md §5).

pub mod agent;
pub mod config;
pub mod connect;
pub mod demo;
pub mod health;
pub mod logs;
pub mod runtime;
pub mod scheduler;
pub mod state;

pub use agent::{Agent, AgentError};
