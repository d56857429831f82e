//! The Nacos 2 gRPC messages and clients generated from
//! `proto/nacos_grpc_service.proto` (a proto without a package, so the
//! service paths are `/Request/request` and `/BiRequestStream/requestBiStream`).

#![allow(missing_docs, unreachable_pub, dead_code, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/_.rs"));
