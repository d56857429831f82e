//! `conformance`: runs the adapter conformance suite against any adapter.
//!
//! The adapter is started from a command (or reached at `--grpc`), and the
//! registry is driven by shell commands that get the endpoint in `EP_ID`,
//! `EP_ADDRESS`, `EP_PORT` and `EP_WEIGHT`. Prints one line per check and a
//! final `N passed, M failed`; exits non-zero if a check failed. See
//! `integration/README.md`.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::Parser;
use integration::{Adapter, RegistryControl, SuiteOptions, TestEndpoint, loopback_args, run_suite};

/// How long one registry command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Checks that an adapter serves discovery.v1 as its contract says.
#[derive(Parser, Debug)]
#[command(name = "conformance")]
struct Args {
    /// The adapter command, run with `sh`; the runner appends
    /// `--listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0` and reads its
    /// `listening grpc=… metrics=…` line.
    #[arg(long, env = "CONFORMANCE_ADAPTER", required_unless_present = "grpc")]
    adapter: Option<String>,

    /// The gRPC address of an adapter that is already running (instead of
    /// `--adapter`).
    #[arg(long, env = "CONFORMANCE_GRPC", conflicts_with = "adapter")]
    grpc: Option<SocketAddr>,

    /// The metrics address of the running adapter given with `--grpc`;
    /// without it the metric checks are skipped.
    #[arg(long, env = "CONFORMANCE_METRICS", requires = "grpc")]
    metrics: Option<SocketAddr>,

    /// The test service; it must exist in the registry (it may be empty).
    #[arg(long, env = "CONFORMANCE_SERVICE")]
    service: String,

    /// A service the registry does not know.
    #[arg(long, env = "CONFORMANCE_MISSING_SERVICE")]
    missing_service: String,

    /// Shell command that registers the endpoint `EP_ID`, `EP_ADDRESS`,
    /// `EP_PORT`, `EP_WEIGHT` in the test service `EP_SERVICE`.
    #[arg(long, env = "CONFORMANCE_ADD_CMD")]
    add_cmd: String,

    /// Shell command that changes the weight of endpoint `EP_ID` to `EP_WEIGHT`.
    #[arg(long, env = "CONFORMANCE_CHANGE_CMD")]
    change_cmd: String,

    /// Shell command that deregisters endpoint `EP_ID` (only `EP_SERVICE` and
    /// `EP_ID` are set).
    #[arg(long, env = "CONFORMANCE_REMOVE_CMD")]
    remove_cmd: String,

    /// How many subscribers the sharing check opens.
    #[arg(long, env = "CONFORMANCE_SUBSCRIBERS", default_value_t = 50)]
    subscribers: usize,

    /// How long the adapter gets to show one change, in seconds.
    #[arg(long, env = "CONFORMANCE_DEADLINE_SECS", default_value_t = 10)]
    deadline_secs: u64,
}

/// Registry changes as shell commands.
struct ShellControl {
    service: String,
    missing: String,
    add: String,
    change: String,
    remove: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("conformance: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    let control = ShellControl {
        service: args.service,
        missing: args.missing_service,
        add: args.add_cmd,
        change: args.change_cmd,
        remove: args.remove_cmd,
    };
    let mut options = SuiteOptions {
        metrics: args.metrics,
        subscribers: args.subscribers,
        deadline: Duration::from_secs(args.deadline_secs),
    };
    let (grpc, adapter) = match (args.grpc, args.adapter) {
        (Some(grpc), _) => (grpc, None),
        (None, Some(command)) => {
            let adapter = start(&command).await?;
            options.metrics = Some(adapter.metrics());
            (adapter.grpc(), Some(adapter))
        }
        (None, None) => bail!("give --adapter or --grpc"),
    };
    let report = run_suite(grpc, &control, &options).await;
    let report = match &adapter {
        Some(a) => a.explain(report)?,
        None => report?,
    };
    println!("{report}");
    if let (Some(a), false) = (&adapter, report.is_success()) {
        eprintln!(
            "--- last lines of the adapter's standard error ---\n{}",
            a.process().stderr_tail(40)
        );
    }
    Ok(report.is_success())
}

/// Starts the adapter command with loopback listen flags. `exec` makes the
/// adapter itself the child, so stopping the child stops the adapter.
async fn start(command: &str) -> Result<Adapter> {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec {command} \"$@\""))
        .arg("sh")
        .args(loopback_args());
    Adapter::start("adapter", cmd)
        .await
        .with_context(|| format!("cannot start the adapter `{command}`"))
}

// === impl ShellControl ===

impl ShellControl {
    async fn sh(&self, what: &str, command: &str, env: &[(&str, String)]) -> Result<()> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
            .await
            .with_context(|| format!("{what} command ran longer than {COMMAND_TIMEOUT:?}"))?
            .with_context(|| format!("cannot run the {what} command"))?;
        if !out.status.success() {
            bail!(
                "{what} command failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

fn endpoint_env(service: &str, e: &TestEndpoint) -> [(&'static str, String); 5] {
    [
        ("EP_SERVICE", service.to_string()),
        ("EP_ID", e.id.clone()),
        ("EP_ADDRESS", e.address.clone()),
        ("EP_PORT", e.port.to_string()),
        ("EP_WEIGHT", e.weight.to_string()),
    ]
}

impl RegistryControl for ShellControl {
    fn service(&self) -> &str {
        &self.service
    }

    fn missing_service(&self) -> &str {
        &self.missing
    }

    async fn add(&self, endpoint: &TestEndpoint) -> Result<()> {
        self.sh("add", &self.add, &endpoint_env(&self.service, endpoint))
            .await
    }

    async fn change(&self, endpoint: &TestEndpoint) -> Result<()> {
        self.sh(
            "change",
            &self.change,
            &endpoint_env(&self.service, endpoint),
        )
        .await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.sh(
            "remove",
            &self.remove,
            &[
                ("EP_SERVICE", self.service.clone()),
                ("EP_ID", id.to_string()),
            ],
        )
        .await
    }
}
