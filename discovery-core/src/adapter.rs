//! Running an adapter: the common command-line flags, logging, and the gRPC
//! and metrics servers around a [`Registry`].

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::TcpListenerStream;
use tributary_proto::v1::endpoint_discovery_server::EndpointDiscoveryServer;

use crate::{
    Backoff, Registry,
    hub::Hub,
    metrics::{CoreMetrics, RegistryMetrics, local, serve_metrics},
    server::Service,
    watch::WatchConfig,
};

/// Flags every adapter binary accepts; each also reads an environment variable.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Address of the gRPC server (discovery.v1, grpc.health.v1, reflection).
    #[arg(long, env = "TRIBUTARY_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Address of the HTTP server for /metrics (Prometheus text), /live and /ready.
    #[arg(
        long,
        env = "TRIBUTARY_METRICS_LISTEN",
        default_value = "127.0.0.1:7071"
    )]
    pub metrics_listen: SocketAddr,

    /// Log filter, in `tracing` syntax (for example `info` or `discovery_core=debug`).
    #[arg(long, env = "TRIBUTARY_LOG", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, env = "TRIBUTARY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Hold back an answer that removes more than this share (0 to 1) of a
    /// service's endpoints, or all of them, for the grace period. Off unless set.
    #[arg(long, env = "TRIBUTARY_EMPTY_GUARD_SHARE", value_parser = parse_share)]
    pub empty_guard_share: Option<f64>,

    /// How long the emptying guard holds an answer back (for example `30s`).
    #[arg(long, env = "TRIBUTARY_EMPTY_GUARD_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub empty_guard_grace: Duration,

    /// Longest wait between restarts of a failed registry watch (for example `30s`).
    #[arg(long, env = "TRIBUTARY_BACKOFF_MAX", default_value = "30s", value_parser = parse_duration)]
    pub backoff_max: Duration,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object a line.
    Json,
}

/// Why an adapter could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Signal handlers could not be installed.
    #[error("cannot handle SIGINT/SIGTERM: {0}")]
    Signals(std::io::Error),
    /// Span export is misconfigured (an `OTEL_*` variable).
    #[error("traces: {0}")]
    Tracing(String),
    /// Reflection could not load the contract's descriptors.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// An adapter: a registry and the servers around it.
pub struct Adapter<R> {
    registry: R,
    args: CommonArgs,
    metrics: MetricsRegistry,
    registry_metrics: RegistryMetrics,
}

// === impl Adapter ===

impl<R: Registry> Adapter<R> {
    /// An adapter serving `registry` with the given flags.
    pub fn new(registry: R, args: CommonArgs) -> Self {
        Self {
            registry,
            args,
            metrics: MetricsRegistry::default(),
            registry_metrics: RegistryMetrics::new(),
        }
    }

    /// Serves `metrics` (a clone of the handle the registry client times its
    /// calls with) as `discovery_registry_request_duration_seconds`. Without
    /// it the series is listed empty.
    pub fn with_registry_metrics(mut self, metrics: RegistryMetrics) -> Self {
        self.registry_metrics = metrics;
        self
    }

    /// The metrics registry, for the registry crate's own series.
    pub fn metrics_registry(&mut self) -> &mut MetricsRegistry {
        &mut self.metrics
    }

    /// [`run`](Self::run) as an adapter binary's `main` ends: success, or
    /// the error logged and printed after `program:` with exit status 1.
    pub async fn run_to_exit(self, program: &str) -> ExitCode {
        match self.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => exit_with(program, 1, &e),
        }
    }

    /// Serves until SIGINT or SIGTERM.
    ///
    /// Once both servers listen, prints one line to standard output:
    /// `listening grpc=<addr> metrics=<addr>` (useful with port 0).
    pub async fn run(mut self) -> Result<(), ServeError> {
        let service = std::env::args()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "tributary-adapter".to_owned());
        let _tracing = crate::telemetry::init(&service).map_err(ServeError::Tracing)?;
        let grpc = bind(self.args.listen).await?;
        let metrics_listener = bind(self.args.metrics_listen).await?;
        let grpc_addr = grpc.local_addr().ok();

        let core_metrics = CoreMetrics::default();
        core_metrics.register(&mut self.metrics);
        self.registry_metrics.register(&mut self.metrics);
        let cfg = WatchConfig {
            guard_share: self.args.empty_guard_share,
            guard_grace: self.args.empty_guard_grace,
            backoff: Backoff::new(Duration::from_millis(200), self.args.backoff_max),
        };
        let hub = Arc::new(Hub::new(Arc::new(self.registry), cfg, core_metrics.clone()));

        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<EndpointDiscoveryServer<Service<R>>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tributary_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;

        let signals = Signals::install().map_err(ServeError::Signals)?;
        let (stop_tx, stop) = watch::channel(false);
        let shutdown = async move {
            signals.recv().await;
            // Watch streams never end by themselves: end them, so that the
            // server's graceful shutdown can finish.
            let _ = stop_tx.send(true);
        };
        let metrics_addr = local(&metrics_listener);
        let metrics_task = tokio::spawn(serve_metrics(metrics_listener, Arc::new(self.metrics)));
        print_listening(grpc_addr, metrics_addr);
        tracing::info!(grpc = ?grpc_addr, metrics = ?metrics_addr, "adapter serving");

        let result = tonic::transport::Server::builder()
            .add_service(EndpointDiscoveryServer::new(Service::new(
                hub,
                core_metrics,
                stop,
            )))
            .add_service(health)
            .add_service(reflection)
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), shutdown)
            .await;
        metrics_task.abort();
        tracing::info!("adapter stopped");
        Ok(result?)
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

fn print_listening(grpc: Option<SocketAddr>, metrics: Option<SocketAddr>) {
    use std::io::Write;
    let fmt = |a: Option<SocketAddr>| a.map_or_else(|| "?".to_string(), |a| a.to_string());
    let mut out = std::io::stdout().lock();
    // Tests and scripts read this line; a closed stdout is not our concern.
    let _ = writeln!(out, "listening grpc={} metrics={}", fmt(grpc), fmt(metrics));
    let _ = out.flush();
}

/// SIGINT and SIGTERM listeners, installed before the adapter says it is
/// listening so that an early signal still stops it cleanly.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        tracing::info!("shutdown signal received");
    }
}

/// Sets up `tracing` logging to standard error from the common flags.
pub fn init_logging(args: &CommonArgs) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|e| {
        eprintln!("invalid --log-level {:?} ({e}); using info", args.log_level);
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Parses a duration such as `500ms`, `30s`, `2m` or `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (for example 500ms, 30s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share between 0 and 1")),
    }
}

/// Logs `message`, prints it to standard error after `program:`, and
/// returns exit status `code`: how an adapter binary stops on a bad flag or
/// a failed start.
pub fn exit_with(program: &str, code: u8, message: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("{program}: {message}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
