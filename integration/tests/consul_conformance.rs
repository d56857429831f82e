//! The adapter conformance suite against the real `discovery-consul` binary
//! and a real Consul agent.

use anyhow::Result;
use integration::{Adapter, Consul, ConsulControl, SuiteOptions, run_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_adapter_passes_the_conformance_suite() -> Result<()> {
    let consul = Consul::start().await?;
    let control = ConsulControl::new(&consul, "web", "no-such-service").await?;
    let adapter =
        Adapter::start_binary("discovery-consul", &["--consul-addr", &consul.url()]).await?;
    let options = SuiteOptions {
        metrics: Some(adapter.metrics()),
        ..SuiteOptions::default()
    };
    let report = adapter.explain(run_suite(adapter.grpc(), &control, &options).await)?;
    println!("{report}");
    anyhow::ensure!(report.skipped() == 0, "checks were skipped:\n{report}");
    adapter.explain(report.into_result()).map(drop)
}
