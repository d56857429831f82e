//! The adapter conformance suite against `discovery-eureka` and the real
//! Eureka server, fetching every second.

use anyhow::{Result, ensure};
use integration::{Adapter, EurekaServer, SuiteOptions, run_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eureka_adapter_passes_the_conformance_suite() -> Result<()> {
    let server = EurekaServer::start().await?;
    let control = server.control("web", "no-such-app").await?;
    let url = server.url();
    let adapter = Adapter::start_binary(
        "discovery-eureka",
        &["--eureka-url", &url, "--fetch-interval", "1s"],
    )
    .await?;
    let options = SuiteOptions {
        metrics: Some(adapter.metrics()),
        ..SuiteOptions::default()
    };
    let report = adapter.explain(run_suite(adapter.grpc(), &control, &options).await)?;
    println!("{report}");
    ensure!(report.skipped() == 0, "checks were skipped:\n{report}");
    adapter.explain(report.into_result()).map(drop)
}
