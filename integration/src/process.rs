//! Child processes for end-to-end tests: a workspace binary or any command,
//! its standard output read line by line with a deadline, its standard error
//! kept in a file for diagnostics, and the process stopped (SIGTERM, then
//! SIGKILL) by its own pid when the handle is dropped.
//!
//! [`Adapter`] adds what every discovery adapter does at start: it prints
//! `listening grpc=ADDR metrics=ADDR` once both of its servers listen.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::mpsc;

/// How long a stopping process gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// How long an adapter gets to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How much of the standard error file a diagnostic shows.
const TAIL_LINES: usize = 40;

/// A running child process, stopped when dropped.
///
/// Only this process is ever signalled, by the pid it was started with, and
/// only while it has not been reaped (so the pid cannot belong to another
/// process yet). Dropping blocks the thread for up to 3 s while the child
/// stops: use a multi-thread runtime in tests, so that the test's own gRPC
/// connections can still close meanwhile.
#[derive(Debug)]
pub struct Process {
    name: String,
    pid: u32,
    child: Mutex<Child>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr_path: PathBuf,
    // Holds the standard error file; removed on drop.
    _stderr_dir: tempfile::TempDir,
}

/// A discovery adapter process that announced its listening addresses.
#[derive(Debug)]
pub struct Adapter {
    process: Process,
    grpc: SocketAddr,
    metrics: SocketAddr,
}

/// The path of a binary of this workspace, built next to the running test.
///
/// Test executables live in `target/<profile>/deps/`, binaries in
/// `target/<profile>/`; a binary of this package (such as `conformance`)
/// looks in its own directory.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "binary {name:?} not found at {}: build it first with \
             `cargo build --workspace --bins` (or run `scripts/test`)",
            path.display()
        );
    }
    Ok(path)
}

// === impl Process ===

impl Process {
    /// Starts `cmd` with standard output piped (read it with
    /// [`next_line`](Self::next_line)) and standard error sent to a file.
    /// `name` names the process in messages.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self> {
        let stderr_dir = tempfile::Builder::new()
            .prefix(&format!("tributary-{name}-"))
            .tempdir()
            .context("cannot create a directory for standard error")?;
        let stderr_path = stderr_dir.path().join("stderr.log");
        let stderr = File::create(&stderr_path)
            .with_context(|| format!("cannot create {}", stderr_path.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::unbounded_channel();
        // A plain thread: reading a pipe blocks, and it ends with the pipe.
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("cannot start the stdout reader thread")?;
        Ok(Self {
            name: name.to_string(),
            pid,
            child: Mutex::new(child),
            stdout: rx,
            stderr_path,
            _stderr_dir: stderr_dir,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next line the process wrote to standard output.
    pub async fn next_line(&mut self, timeout: Duration) -> Result<String> {
        match tokio::time::timeout(timeout, self.stdout.recv()).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(anyhow!(
                "{} closed its standard output (exit: {}){}",
                self.name,
                self.exit_description(),
                self.stderr_tail_block()
            )),
            Err(_) => Err(anyhow!(
                "{} wrote no line to standard output within {timeout:?}{}",
                self.name,
                self.stderr_tail_block()
            )),
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&self) -> Result<Option<ExitStatus>> {
        let mut child = self.child.lock().expect("child lock poisoned");
        Ok(child.try_wait()?)
    }

    /// Waits until the process exits, polling until `timeout`.
    pub async fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM, if the process still runs.
    pub fn terminate(&self) -> Result<()> {
        self.signal("TERM")
    }

    /// Sends SIGHUP, if the process still runs (a sidecar reloads its
    /// config on it).
    pub fn hangup(&self) -> Result<()> {
        self.signal("HUP")
    }

    /// Sends SIGKILL, if the process still runs.
    pub fn kill(&self) -> Result<()> {
        let mut child = self.child.lock().expect("child lock poisoned");
        match child.try_wait()? {
            Some(_) => Ok(()),
            None => Ok(child.kill()?),
        }
    }

    /// The last lines of the process's standard error.
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.stderr_path, lines)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.stderr_path.display()))
    }

    /// Everything the process wrote to standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Adds the tail of standard error to an error, for a test's failure
    /// message.
    pub fn explain<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|e| anyhow!("{e:#}{}", self.stderr_tail_block()))
    }

    fn stderr_tail_block(&self) -> String {
        format!(
            "\n--- last lines of {}'s standard error ---\n{}",
            self.name,
            self.stderr_tail(TAIL_LINES)
        )
    }

    fn exit_description(&self) -> String {
        match self.try_exit() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => "still running".into(),
            Err(e) => format!("unknown: {e}"),
        }
    }

    /// Signals the process by pid. The lock keeps it from being reaped
    /// meanwhile, so the pid is still ours.
    fn signal(&self, signal: &str) -> Result<()> {
        let mut child = self.child.lock().expect("child lock poisoned");
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid.to_string()])
            .stdin(Stdio::null())
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -s {signal} {} failed: {status}", self.pid);
        }
        Ok(())
    }

    /// SIGTERM, a bounded wait, then SIGKILL; for `Drop`, which cannot await.
    #[expect(
        clippy::disallowed_methods,
        reason = "Drop cannot await: a bounded pause between exit checks while the child stops"
    )]
    fn stop_blocking(&self) {
        if let Err(e) = self.terminate() {
            eprintln!("{}: {e:#}", self.name);
        }
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if !matches!(self.try_exit(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "{} (pid {}) ignored SIGTERM for {TERM_GRACE:?}; sending SIGKILL",
            self.name, self.pid
        );
        let mut child = self.child.lock().expect("child lock poisoned");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop_blocking();
        if std::thread::panicking() {
            eprintln!("{}", self.stderr_tail_block());
        }
    }
}

// === impl Adapter ===

impl Adapter {
    /// Starts the workspace binary `bin` with `args`, then
    /// `--listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0`, and waits for its
    /// `listening` line.
    pub async fn start_binary(bin: &str, args: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(workspace_binary(bin)?);
        cmd.args(args).args(loopback_args());
        Self::start(bin, cmd).await
    }

    /// Starts `cmd` as it is (it must already choose its listen addresses)
    /// and waits for its `listening grpc=ADDR metrics=ADDR` line.
    pub async fn start(name: &str, mut cmd: Command) -> Result<Self> {
        // Plain log lines in the standard error file.
        cmd.env("NO_COLOR", "1");
        let mut process = Process::spawn(name, cmd)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = process.next_line(left).await?;
            if let Some((grpc, metrics)) = parse_listening(&line)? {
                return Ok(Self {
                    process,
                    grpc,
                    metrics,
                });
            }
        }
    }

    /// The address of the gRPC server.
    pub fn grpc(&self) -> SocketAddr {
        self.grpc
    }

    /// The address of the metrics server.
    pub fn metrics(&self) -> SocketAddr {
        self.metrics
    }

    /// The process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Adds the tail of the adapter's standard error to an error.
    pub fn explain<T>(&self, result: Result<T>) -> Result<T> {
        self.process.explain(result)
    }
}

/// Runs `scripts/<name>` from the workspace root and returns the path it
/// prints (the installers print their tool's path and nothing else).
pub fn install_tool(script: &str) -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the integration crate has no parent directory")?;
    let out = Command::new(root.join("scripts").join(script))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run scripts/{script}"))?;
    if !out.status.success() {
        bail!(
            "scripts/{script} failed ({}); see its output above",
            out.status
        );
    }
    let path = String::from_utf8(out.stdout)
        .with_context(|| format!("scripts/{script} printed a non-UTF-8 path"))?;
    let path = PathBuf::from(path.trim());
    if !path.is_file() {
        bail!("scripts/{script} printed {path:?}, which is not a file");
    }
    Ok(path)
}

/// The flags that make an adapter listen on ports the OS chooses.
pub fn loopback_args() -> [&'static str; 4] {
    ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
}

/// Reads `listening grpc=ADDR metrics=ADDR`; `None` for any other line.
fn parse_listening(line: &str) -> Result<Option<(SocketAddr, SocketAddr)>> {
    let Some(rest) = line.trim().strip_prefix("listening ") else {
        return Ok(None);
    };
    let (mut grpc, mut metrics) = (None, None);
    for part in rest.split_whitespace() {
        let addr = |v: &str| -> Result<SocketAddr> {
            v.parse()
                .with_context(|| format!("bad address {v:?} in {line:?}"))
        };
        if let Some(v) = part.strip_prefix("grpc=") {
            grpc = Some(addr(v)?);
        } else if let Some(v) = part.strip_prefix("metrics=") {
            metrics = Some(addr(v)?);
        }
    }
    match (grpc, metrics) {
        (Some(g), Some(m)) => Ok(Some((g, m))),
        _ => bail!("incomplete listening line {line:?}"),
    }
}

fn tail(path: &Path, lines: usize) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    // The end of a long log is enough.
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_parse() {
        let (g, m) = parse_listening("listening grpc=127.0.0.1:4000 metrics=127.0.0.1:4001")
            .unwrap()
            .unwrap();
        assert_eq!(g.port(), 4000);
        assert_eq!(m.port(), 4001);
        assert!(parse_listening("starting").unwrap().is_none());
        assert!(parse_listening("listening grpc=nope metrics=1.2.3.4:5").is_err());
        assert!(parse_listening("listening grpc=127.0.0.1:1").is_err());
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let err = workspace_binary("no-such-binary").unwrap_err().to_string();
        assert!(err.contains("cargo build --workspace --bins"), "{err}");
    }
}
