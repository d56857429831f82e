//! The `discovery-nacos` adapter binary.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use discovery_core::{Adapter, CommonArgs, exit_with, init_logging, parse_duration};
use discovery_nacos::{Credentials, EndpointOptions, Mode, NacosConfig, NacosRegistry, ServerAddr};

/// Serves Nacos services as discovery.v1 endpoint streams.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A Nacos server, `host:port` of its HTTP API (or `http://host:port`,
    /// `https://host:port`). Repeat or separate with commas for fail-over.
    #[arg(
        long = "nacos-addr",
        env = "TRIBUTARY_NACOS_ADDR",
        required = true,
        value_delimiter = ','
    )]
    servers: Vec<ServerAddr>,

    /// The gRPC port of each server is its HTTP port plus this offset.
    #[arg(
        long,
        env = "TRIBUTARY_NACOS_GRPC_PORT_OFFSET",
        default_value_t = 1000,
        allow_negative_numbers = true
    )]
    grpc_port_offset: i32,

    /// User name for the Nacos login (needs --password-file).
    #[arg(long, env = "TRIBUTARY_NACOS_USERNAME")]
    username: Option<String>,

    /// File holding the password for --username (one line).
    #[arg(long, env = "TRIBUTARY_NACOS_PASSWORD_FILE")]
    password_file: Option<PathBuf>,

    /// `push`: Nacos 2 gRPC subscriptions; `poll`: the v1 HTTP query.
    #[arg(long, env = "TRIBUTARY_NACOS_MODE", value_enum, default_value_t = Mode::Push)]
    mode: Mode,

    /// Time between two HTTP queries when polling (also the fall-back while
    /// no push session can be had).
    #[arg(long, env = "TRIBUTARY_NACOS_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    poll_interval: Duration,

    /// Time between two health checks of a push session.
    #[arg(long, env = "TRIBUTARY_NACOS_HEALTH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    health_interval: Duration,

    /// Time between two re-reads of a pushed service, in case the server
    /// missed a push.
    #[arg(long, env = "TRIBUTARY_NACOS_RESYNC_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    resync_interval: Duration,

    /// Bound on connecting and on every request to Nacos.
    #[arg(long, env = "TRIBUTARY_NACOS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    request_timeout: Duration,

    /// Largest response body or gRPC message read from Nacos, in bytes.
    #[arg(long, env = "TRIBUTARY_NACOS_MAX_BODY_SIZE", default_value_t = 16 << 20)]
    max_body_size: usize,

    /// Take each endpoint's zone from this instance metadata key instead of
    /// its cluster name.
    #[arg(long, env = "TRIBUTARY_NACOS_ZONE_METADATA_KEY")]
    zone_metadata_key: Option<String>,

    /// Endpoint ids: `address` (`ip:port`) or `instance-id` (Nacos' instanceId).
    #[arg(long, env = "TRIBUTARY_NACOS_ENDPOINT_ID", value_enum, default_value_t = IdSource::Address)]
    endpoint_id: IdSource,

    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum IdSource {
    Address,
    InstanceId,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.common);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let credentials = match credentials(&args) {
        Ok(c) => c,
        Err(e) => return exit_with("discovery-nacos", 2, &e),
    };
    let cfg = NacosConfig {
        servers: args.servers,
        grpc_port_offset: args.grpc_port_offset,
        credentials,
        mode: args.mode,
        poll_interval: args.poll_interval.max(Duration::from_millis(100)),
        health_interval: args.health_interval.max(Duration::from_millis(100)),
        resync_interval: args.resync_interval.max(Duration::from_millis(100)),
        request_timeout: args.request_timeout,
        max_body: args.max_body_size,
        backoff_max: args.common.backoff_max,
        endpoints: EndpointOptions {
            zone_metadata_key: args.zone_metadata_key,
            instance_id_as_id: args.endpoint_id == IdSource::InstanceId,
        },
    };
    let login = cfg.credentials.is_some();
    let registry = match NacosRegistry::new(cfg) {
        Ok(r) => r,
        Err(e) => return exit_with("discovery-nacos", 2, &e),
    };
    if login {
        // A wrong password is reported at once; the adapter keeps serving
        // (watches retry with back-off), so it does not crash-loop.
        let r = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = r.check_login().await {
                tracing::error!("nacos login failed: {e}");
            }
        });
    }
    Adapter::new(registry, args.common)
        .run_to_exit("discovery-nacos")
        .await
}

fn credentials(args: &Args) -> Result<Option<Credentials>, String> {
    match (&args.username, &args.password_file) {
        (None, None) => Ok(None),
        (Some(_), None) => Err("--username needs --password-file".into()),
        (None, Some(_)) => Err("--password-file needs --username".into()),
        (Some(user), Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?;
            let password = text.trim_end_matches(['\n', '\r']).to_string();
            if password.is_empty() {
                return Err(format!("--password-file {} is empty", path.display()));
            }
            Ok(Some(Credentials {
                username: user.clone(),
                password,
            }))
        }
    }
}
