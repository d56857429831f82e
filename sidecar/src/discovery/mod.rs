//! The discovery client: one gRPC channel per configured adapter, one `Watch`
//! stream per distinct discovered service, each publishing its current
//! endpoint set for the upstreams that use it.

mod backoff;
mod source;
mod stream;

pub(crate) use self::{
    source::{SourceEndpoint, SourceKey, SourceState},
    stream::{Discovery, Source},
};
