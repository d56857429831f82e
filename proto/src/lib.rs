//! The `discovery.v1` endpoint-stream contract: generated messages, client and
//! server for `EndpointDiscovery`. The rules of the stream are documented in
//! `proto/discovery/v1/discovery.proto`.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Generated code of package `discovery.v1`.
pub mod v1 {
    tonic::include_proto!("discovery.v1");
}

/// The encoded `FileDescriptorSet` of `discovery.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/discovery_v1_descriptor.bin"));

/// The `.proto` source of the contract, for subscribers in other languages.
pub const PROTO_SOURCE: &str = include_str!("../proto/discovery/v1/discovery.proto");
