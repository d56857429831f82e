//! The adapter conformance suite against the real `discovery-file` binary,
//! once through the library and once through the generic `conformance`
//! runner with shell commands as the registry control.

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use integration::{Adapter, FileControl, Process, SuiteOptions, run_suite, workspace_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_adapter_passes_the_conformance_suite() -> Result<()> {
    let control = FileControl::new("web", "no-such-service")?;
    let path = control
        .file()
        .path()
        .to_str()
        .context("non-UTF-8 temp path")?;
    let adapter = Adapter::start_binary("discovery-file", &["--file", path]).await?;
    let options = SuiteOptions {
        metrics: Some(adapter.metrics()),
        ..SuiteOptions::default()
    };
    let report = adapter.explain(run_suite(adapter.grpc(), &control, &options).await)?;
    println!("{report}");
    ensure!(report.skipped() == 0, "checks were skipped:\n{report}");
    adapter.explain(report.into_result()).map(drop)
}

/// The runner binary, as a user would call it: it starts the adapter itself
/// and edits the file with shell commands that get the endpoint in `EP_*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_runner_passes_against_the_file_adapter() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path().to_str().context("non-UTF-8 temp path")?;
    // One fragment per endpoint; every command rebuilds the file from them
    // and renames it into place.
    let rebuild = format!(
        "{{ echo 'services:'; echo '  other: []'; echo '  web:'; cat {d}/eps/*; }} > {d}/tmp \
         && mv {d}/tmp {d}/endpoints.yaml"
    );
    let put = format!(
        "printf '    - {{id: \"%s\", address: \"%s\", port: %s, weight: %s}}\\n' \
         \"$EP_ID\" \"$EP_ADDRESS\" \"$EP_PORT\" \"$EP_WEIGHT\" > \"{d}/eps/$EP_ID\" && {rebuild}"
    );
    let setup = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkdir {d}/eps && printf '    - {{id: seed, address: 127.0.0.1, port: 9001}}\\n' \
             > {d}/eps/seed && {rebuild}"
        ))
        .status()?;
    ensure!(setup.success(), "setting up the endpoint file failed");

    let adapter = format!(
        "{} --file {d}/endpoints.yaml",
        shell_quote(&workspace_binary("discovery-file")?)
    );
    let mut cmd = Command::new(workspace_binary("conformance")?);
    cmd.args(["--adapter", &adapter])
        .args(["--service", "web", "--missing-service", "no-such-service"])
        .args(["--add-cmd", &put, "--change-cmd", &put])
        .args([
            "--remove-cmd",
            &format!("rm \"{d}/eps/$EP_ID\" && {rebuild}"),
        ])
        .args(["--subscribers", "10"]);
    let mut runner = Process::spawn("conformance", cmd)?;
    let mut lines = Vec::new();
    let summary = loop {
        let line = runner.next_line(Duration::from_secs(60)).await?;
        println!("{line}");
        if line.contains(" passed, ") {
            break line;
        }
        lines.push(line);
    };
    let status = runner.wait_exit(Duration::from_secs(10)).await?;
    runner.explain((|| {
        ensure!(
            summary == "6 passed, 0 failed",
            "runner said {summary:?}: {lines:#?}"
        );
        ensure!(status.success(), "runner exited with {status}");
        ensure!(
            lines.len() == 6 && lines.iter().all(|l| l.starts_with("ok ")),
            "{lines:#?}"
        );
        Ok(())
    })())
}

fn shell_quote(path: &std::path::Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
