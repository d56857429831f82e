//! Eureka discovery adapter: full and delta fetches of `/eureka/apps` served as
//! the `discovery.v1` endpoint stream.
//!
//! Not built yet: the Eureka client and adapter binary come with their own
//! issue. The crate exists so that the workspace has its final shape.

#![warn(missing_docs)]
