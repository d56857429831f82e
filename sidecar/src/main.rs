//! The `sidecar` binary: parses flags, loads the config, runs the proxy, and
//! reloads on SIGHUP (or file change with `--watch-config`).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use sidecar::{App, Config, Telemetry, serve_admin};
use tokio::signal::unix::{SignalKind, signal};

/// Tributary's per-pod proxy.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The YAML config file (see docs/config.md).
    #[arg(long, short, env = "TRIBUTARY_CONFIG")]
    config: PathBuf,

    /// Reload when the config file changes, as well as on SIGHUP.
    #[arg(long, env = "TRIBUTARY_WATCH_CONFIG")]
    watch_config: bool,

    /// Longest wait for requests in flight at shutdown (for example `30s`).
    #[arg(long, env = "TRIBUTARY_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_secs)]
    drain_timeout: Duration,

    /// Threads that serve requests; 0 means one per CPU this process may
    /// use (its affinity and cgroup quota). With one, the proxy runs on a
    /// single-threaded runtime: no work-stealing and no cross-thread wake-ups,
    /// which is what a sidecar limited to one core wants.
    #[arg(long, env = "TRIBUTARY_WORKERS", default_value_t = 0)]
    workers: usize,

    /// Check the config and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (config, text) = match load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    sidecar::init_logging(&config.telemetry);
    let workers = match args.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, config, text)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps a timer due within half a second. tokio's time driver wakes the
/// runtime's parked thread (an eventfd write, and one more epoll round)
/// whenever a new timer is due before all pending ones, even when that
/// thread is the one registering it; every request arms one or two
/// (response timeout, header read timeout), so without a nearer timer about
/// four requests in ten paid for two extra system calls.
async fn timer_anchor() {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
    }
}

fn load(path: &PathBuf) -> Result<(Config, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config = Config::from_yaml(&text).map_err(|e| format!("{}:{e}", path.display()))?;
    Ok((config, text))
}

async fn run(args: Args, config: Config, text: String) -> Result<(), String> {
    // Before anything listens: a signal that arrives once the listening line
    // is out must be handled, not end the process with requests in flight.
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    let admin_addr = config.admin.address;
    let admin = tokio::net::TcpListener::bind(admin_addr)
        .await
        .map_err(|e| format!("admin: cannot listen on {admin_addr}: {e}"))?;
    tokio::spawn(timer_anchor());
    let telemetry = Telemetry::start(&config.telemetry)?;
    let app = App::start(config, text, args.drain_timeout, telemetry.clone()).await?;
    let admin_bound = admin.local_addr().unwrap_or(admin_addr);
    tokio::spawn(serve_admin(admin, app.clone()));
    print_listening(&app, admin_bound);

    let mut poll = tokio::time::interval(Duration::from_secs(1));
    let mut stamp = file_stamp(&args.config);
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&app, &args.config).await,
            _ = poll.tick(), if args.watch_config => {
                let now = file_stamp(&args.config);
                if now != stamp {
                    stamp = now;
                    reload(&app, &args.config).await;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: draining requests in flight");
    app.shutdown().await;
    telemetry.shutdown();
    tracing::info!("stopped");
    Ok(())
}

async fn reload(app: &App, path: &PathBuf) {
    match load(path) {
        Ok((config, text)) => match app.apply(config, text).await {
            Ok(()) => tracing::info!(path = %path.display(), "config reloaded"),
            Err(e) => tracing::error!(error = %e, "reload refused; the running config stays"),
        },
        Err(e) => tracing::error!(error = %e, "reload refused; the running config stays"),
    }
}

fn file_stamp(path: &PathBuf) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn print_listening(app: &App, admin: std::net::SocketAddr) {
    use std::io::Write;
    let mut line = format!("listening admin={admin}");
    for (name, addr) in &app.current().listeners {
        line.push_str(&format!(" {name}={addr}"));
    }
    let mut out = std::io::stdout().lock();
    // Scripts and tests read this line; a closed stdout is not fatal.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (n, mult) = if let Some(ms) = t.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(sec) = t.strip_suffix('s') {
        (sec, 1.0)
    } else if let Some(m) = t.strip_suffix('m') {
        (m, 60.0)
    } else {
        (t, 1.0)
    };
    n.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v * mult).ok())
        .ok_or_else(|| format!("{s:?} is not a duration (for example 500ms, 30s, 2m)"))
}
