//! The `discovery-dns` adapter binary.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use clap::Parser;
use discovery_core::{Adapter, CommonArgs, exit_with, init_logging, parse_duration};
use discovery_dns::{DnsRegistry, ResolverSettings};

/// Serves endpoints from DNS (SRV, A and AAAA records) as discovery.v1 streams.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A DNS server to ask, as IP:PORT (UDP, and TCP for truncated answers);
    /// repeat for more. Without it: the servers of /etc/resolv.conf.
    #[arg(
        long = "nameserver",
        env = "TRIBUTARY_DNS_NAMESERVERS",
        value_delimiter = ','
    )]
    nameservers: Vec<SocketAddr>,

    /// A search domain for names without a final dot; repeat for more.
    /// Without it: /etc/resolv.conf's when its servers are used, else none.
    #[arg(long, env = "TRIBUTARY_DNS_SEARCH", value_delimiter = ',')]
    search: Vec<String>,

    /// Names with fewer dots than this are tried with the search domains
    /// first. Without it: /etc/resolv.conf's, else 1.
    #[arg(long, env = "TRIBUTARY_DNS_NDOTS")]
    ndots: Option<usize>,

    /// How long one DNS query may take.
    #[arg(long, env = "TRIBUTARY_DNS_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    query_timeout: Duration,

    /// How many times a failed query is sent again.
    #[arg(long, env = "TRIBUTARY_DNS_ATTEMPTS", default_value_t = 2)]
    attempts: usize,

    /// Shortest wait between two queries of a name (a TTL below it, such as
    /// Consul's 0, counts as this).
    #[arg(long, env = "TRIBUTARY_DNS_MIN_TTL", default_value = "1s", value_parser = parse_duration)]
    min_ttl: Duration,

    /// Longest wait between two queries of a name, whatever its TTL.
    #[arg(long, env = "TRIBUTARY_DNS_MAX_TTL", default_value = "300s", value_parser = parse_duration)]
    max_ttl: Duration,

    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.common);
    let settings = ResolverSettings {
        nameservers: args.nameservers,
        search: args.search,
        ndots: args.ndots,
        timeout: args.query_timeout,
        attempts: args.attempts,
    };
    let registry = match DnsRegistry::new(&settings, args.min_ttl, args.max_ttl) {
        Ok(r) => r,
        Err(e) => return exit_with("discovery-dns", 2, &e),
    };
    let metrics = registry.metrics();
    let mut adapter = Adapter::new(registry, args.common);
    metrics.register(adapter.metrics_registry());
    adapter.run_to_exit("discovery-dns").await
}
