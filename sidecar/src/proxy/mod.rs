//! The data plane: HTTP and TCP listeners, routing, forwarding to upstream
//! endpoints, and the bodies and headers in between.

mod body;
mod client;
mod error;
mod h1;
mod hash;
mod headers;
mod http;
mod pool;
mod route;
mod server;
mod tcp;

pub(crate) use self::{
    client::{ConnectionStats, UpstreamClients},
    http::HttpProxy,
    pool::IdleConns,
    route::{Route, RouteTable},
    server::{bound, serve_http},
    tcp::serve_tcp,
};
