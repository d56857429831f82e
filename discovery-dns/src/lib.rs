//! DNS discovery adapter: A/AAAA and SRV records, refreshed by TTL, served as
//! the `discovery.v1` endpoint stream.
//!
//! Not built yet: the resolver loop and adapter binary come with their own
//! issue. The crate exists so that the workspace has its final shape.

#![warn(missing_docs)]
