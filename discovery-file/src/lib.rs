//! Discovery adapter over a YAML file of services and endpoints, re-read when
//! the file changes. It serves the demo and tests, and users with static
//! fleets. The format is documented in `docs/adapters/file.md`.

#![warn(missing_docs)]

mod file;
mod registry;

pub use self::registry::FileRegistry;
