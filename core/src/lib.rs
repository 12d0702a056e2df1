//! hansa-core: the model and manifest parsing. Pure: no I/O, no async.

pub mod manifest;
pub mod model;
pub mod overrides;
pub mod policy;
pub mod rollout;
pub mod validate;

pub use manifest::{parse_manifests, ManifestError, ManifestErrors, ManifestFile, Parsed};
pub use model::*;
pub use overrides::{OverrideObject, OverrideRule, Overrider};
pub use policy::*;
pub use validate::{is_dns_label, validate_workload};
