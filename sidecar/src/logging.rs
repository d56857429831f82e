//! Log setup from the config's `telemetry` block.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Telemetry};

/// Sets up `tracing` logging to standard error. `RUST_LOG`, when set, wins
/// over the config's level.
pub fn init_logging(t: &Telemetry) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&t.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match t.log_format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}
