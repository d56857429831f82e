//! The `discovery-file` adapter binary.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use discovery_core::{Adapter, CommonArgs, RegistryMetrics, init_logging, parse_duration};
use discovery_file::FileRegistry;

/// Serves the services of a YAML endpoint file as discovery.v1 streams.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The endpoint file to serve.
    #[arg(long, env = "TRIBUTARY_FILE")]
    file: PathBuf,

    /// How often to check the file when change notifications are missed.
    #[arg(long, env = "TRIBUTARY_FILE_POLL", default_value = "1s", value_parser = parse_duration)]
    poll_interval: Duration,

    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.common);
    let metrics = RegistryMetrics::new();
    let registry = FileRegistry::start_with_metrics(args.file, args.poll_interval, metrics.clone());
    let adapter = Adapter::new(registry, args.common).with_registry_metrics(metrics);
    adapter.run_to_exit("discovery-file").await
}
