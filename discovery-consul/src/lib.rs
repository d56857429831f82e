//! Consul discovery adapter: watches `/v1/health/service/<name>` with blocking
//! queries and serves it as the `discovery.v1` endpoint stream.
//!
//! Not built yet: the Consul client and adapter binary come with their own
//! issue. The crate exists so that the workspace has its final shape.

#![warn(missing_docs)]
