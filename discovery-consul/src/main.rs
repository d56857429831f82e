//! The `discovery-consul` adapter binary.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use discovery_consul::{ClientConfig, Consistency, ConsulRegistry, Token, WatchOptions};
use discovery_core::{Adapter, CommonArgs, exit_with, init_logging, parse_duration};

/// Serves Consul's service health as discovery.v1 streams.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Consul agent address(es): `host:port`, `http://…` or `https://…`;
    /// several (comma-separated or repeated) are tried in turn.
    #[arg(
        long = "consul-addr",
        env = "CONSUL_HTTP_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:8500"
    )]
    consul_addr: Vec<String>,

    /// File holding the ACL token (else the CONSUL_HTTP_TOKEN environment
    /// variable; neither: no token).
    #[arg(long, env = "CONSUL_HTTP_TOKEN_FILE")]
    token_file: Option<PathBuf>,

    /// PEM file of the CA(s) that sign the agents' certificates; only these
    /// are trusted when set.
    #[arg(long, env = "CONSUL_CACERT")]
    ca_file: Option<PathBuf>,

    /// PEM client certificate, for agents that verify clients.
    #[arg(long, env = "CONSUL_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(long, env = "CONSUL_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,

    /// Longest wait of a blocking query (Consul's `wait`, at most 10m); up to
    /// a sixteenth more is added at random.
    #[arg(long, env = "TRIBUTARY_CONSUL_WAIT", default_value = "5m", value_parser = parse_wait)]
    wait: Duration,

    /// Timeout of a query that does not block; a blocking query gets its
    /// wait on top.
    #[arg(long, env = "TRIBUTARY_CONSUL_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,

    /// Least time between two queries of one watch when the first answered
    /// at once without a new index.
    #[arg(long, env = "TRIBUTARY_CONSUL_MIN_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    min_interval: Duration,

    /// Largest answer body read, in bytes.
    #[arg(long, env = "TRIBUTARY_CONSUL_MAX_BODY", default_value_t = 16 << 20)]
    max_body: usize,

    /// Consistency mode of watches that name none.
    #[arg(long, env = "TRIBUTARY_CONSUL_CONSISTENCY", value_enum, default_value_t = Consistency::Default)]
    consistency: Consistency,

    /// Node meta key holding the zone, for watches that name none; without
    /// it (or when a node lacks the key) the zone is the datacenter.
    #[arg(long, env = "TRIBUTARY_CONSUL_ZONE_KEY")]
    zone_key: Option<String>,

    #[command(flatten)]
    common: CommonArgs,
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) || d > Duration::from_secs(600) {
        return Err(format!("{s:?} is not between 1ms and 10m"));
    }
    Ok(d)
}

/// The token from --token-file, else from CONSUL_HTTP_TOKEN.
fn token(args: &Args) -> Result<Option<Token>, String> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        return Ok(Some(Token::new(&text)));
    }
    Ok(std::env::var("CONSUL_HTTP_TOKEN")
        .ok()
        .map(|t| Token::new(&t)))
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    init_logging(&args.common);
    let registry = token(&args).and_then(|token| {
        let client = ClientConfig {
            addresses: args.consul_addr.clone(),
            token,
            ca_file: args.ca_file.clone(),
            client_cert: args.client_cert.clone(),
            client_key: args.client_key.clone(),
            request_timeout: args.request_timeout,
            max_body: args.max_body,
        };
        let opts = WatchOptions {
            wait: args.wait,
            min_interval: args.min_interval,
            consistency: args.consistency,
            zone_key: args.zone_key.clone(),
            retry_max: args.common.backoff_max,
        };
        ConsulRegistry::new(&client, opts).map_err(|e| e.to_string())
    });
    let registry = match registry {
        Ok(r) => r,
        Err(e) => return exit_with("discovery-consul", 2, &e),
    };
    tracing::info!(consul = ?args.consul_addr, wait = ?args.wait, "watching Consul");
    let metrics = registry.metrics().clone();
    let mut adapter = Adapter::new(registry, args.common);
    metrics.register(adapter.metrics_registry());
    adapter.run_to_exit("discovery-consul").await
}
