//! The adapter conformance suite against `discovery-nacos` in push mode and a
//! real Nacos server (rnacos), changed through its v1 open API.

use anyhow::Result;
use integration::{Adapter, Nacos, NacosControl, SuiteOptions, run_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacos_adapter_passes_the_conformance_suite() -> Result<()> {
    let nacos = Nacos::start(&[]).await?;
    let control = NacosControl::new(&nacos, "web", "no-such-service").await?;
    let args = nacos.adapter_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let adapter = Adapter::start_binary("discovery-nacos", &args).await?;
    let options = SuiteOptions {
        metrics: Some(adapter.metrics()),
        ..SuiteOptions::default()
    };
    let report = adapter.explain(run_suite(adapter.grpc(), &control, &options).await)?;
    println!("{report}");
    anyhow::ensure!(report.skipped() == 0, "checks were skipped:\n{report}");
    adapter.explain(report.into_result()).map(drop)
}
