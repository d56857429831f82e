//! Nacos discovery adapter: Nacos 2 push subscriptions (with the v1 HTTP query
//! as fall-back) served as the `discovery.v1` endpoint stream.
//!
//! Not built yet: the Nacos client and adapter binary come with their own
//! issue. The crate exists so that the workspace has its final shape.

#![warn(missing_docs)]
