//! The `discovery-eureka` adapter binary.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use discovery_core::{Adapter, CommonArgs, Health, exit_with, init_logging, parse_duration};
use discovery_eureka::{Credentials, EurekaConfig, EurekaRegistry, Mapping};

/// The environment variable that may hold the basic-auth password.
const PASSWORD_ENV: &str = "TRIBUTARY_EUREKA_PASSWORD";

/// Serves the applications of a Eureka registry as discovery.v1 streams.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Eureka server base URL, path included (`/eureka`, or `/eureka/v2` for
    /// Netflix's own server). Repeat it, or separate with commas, for the
    /// servers of a cluster: they are tried in turn when one fails.
    #[arg(
        long = "eureka-url",
        env = "TRIBUTARY_EUREKA_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8761/eureka",
        // A URL may carry a password: --help must not show the variable's value.
        hide_env_values = true
    )]
    eureka_urls: Vec<String>,

    /// Time between two fetches of the registry changes (at least 1s).
    #[arg(long, env = "TRIBUTARY_EUREKA_FETCH_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    fetch_interval: Duration,

    /// Basic-auth user name. The password comes from --password-file or the
    /// TRIBUTARY_EUREKA_PASSWORD environment variable.
    #[arg(long, env = "TRIBUTARY_EUREKA_USERNAME")]
    username: Option<String>,

    /// File holding the basic-auth password (one trailing newline is ignored).
    #[arg(long, env = "TRIBUTARY_EUREKA_PASSWORD_FILE")]
    password_file: Option<PathBuf>,

    /// Health of an instance whose status is STARTING.
    #[arg(long, env = "TRIBUTARY_EUREKA_STARTING_HEALTH", value_enum, default_value_t = HealthArg::Unhealthy)]
    starting_health: HealthArg,

    /// Health of an instance whose status is UNKNOWN.
    #[arg(long, env = "TRIBUTARY_EUREKA_UNKNOWN_HEALTH", value_enum, default_value_t = HealthArg::Unhealthy)]
    unknown_health: HealthArg,

    /// Instance metadata key holding the endpoint's weight (an integer).
    #[arg(long, env = "TRIBUTARY_EUREKA_WEIGHT_KEY", default_value = "weight")]
    weight_key: String,

    /// Instance metadata key holding the endpoint's zone; without it, the
    /// AWS availability zone of the instance's dataCenterInfo.
    #[arg(long, env = "TRIBUTARY_EUREKA_ZONE_KEY", default_value = "zone")]
    zone_key: String,

    /// Largest registry response read (for example 32MiB or 500KiB).
    #[arg(long, env = "TRIBUTARY_EUREKA_MAX_BODY_SIZE", default_value = "32MiB", value_parser = parse_size)]
    max_body_size: usize,

    /// Bound on one request to Eureka, connecting included.
    #[arg(long, env = "TRIBUTARY_EUREKA_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,

    #[command(flatten)]
    common: CommonArgs,
}

/// A registry health, as a flag value.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum HealthArg {
    Healthy,
    Unhealthy,
    Draining,
    Unknown,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    init_logging(&args.common);
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => return exit_with("discovery-eureka", 2, &e),
    };
    let registry = match EurekaRegistry::start(config) {
        Ok(r) => r,
        Err(e) => return exit_with("discovery-eureka", 2, &e),
    };
    let metrics = registry.metrics();
    let mut adapter = Adapter::new(registry, args.common);
    metrics.register(adapter.metrics_registry());
    adapter.run_to_exit("discovery-eureka").await
}

fn config(args: &Args) -> Result<EurekaConfig, String> {
    let password = match &args.password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => std::env::var(PASSWORD_ENV).ok(),
    };
    let credentials = match (&args.username, password) {
        (Some(user), Some(password)) => Some(Credentials::new(user, password)),
        (Some(_), None) => {
            return Err(format!(
                "--username needs a password: --password-file or {PASSWORD_ENV}"
            ));
        }
        (None, Some(_)) => return Err("a password was given without --username".into()),
        (None, None) => None,
    };
    Ok(EurekaConfig {
        servers: args.eureka_urls.clone(),
        credentials,
        fetch_interval: args.fetch_interval,
        request_timeout: args.request_timeout,
        max_body_bytes: args.max_body_size,
        mapping: Mapping {
            starting: args.starting_health.into(),
            unknown: args.unknown_health.into(),
            weight_key: args.weight_key.clone(),
            zone_key: args.zone_key.clone(),
        },
    })
}

impl From<HealthArg> for Health {
    fn from(h: HealthArg) -> Self {
        match h {
            HealthArg::Healthy => Health::Healthy,
            HealthArg::Unhealthy => Health::Unhealthy,
            HealthArg::Draining => Health::Draining,
            HealthArg::Unknown => Health::Unknown,
        }
    }
}

/// Parses a size such as `32MiB`, `500KiB`, `1GiB` or a number of bytes.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (for example 32MiB)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (use B, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("500KiB"), Ok(500 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }
}
