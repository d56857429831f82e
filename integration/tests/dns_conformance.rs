//! The adapter conformance suite against `discovery-dns` serving SRV
//! records of a real BIND 9, changed with `nsupdate` (TTL 1 s).

use anyhow::{Result, ensure};
use integration::{
    Bind, DNS_CONTROL_RECORDS, DnsControl, SuiteOptions, run_suite, start_dns_adapter,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_adapter_passes_the_conformance_suite() -> Result<()> {
    let bind = Bind::start(DNS_CONTROL_RECORDS).await?;
    let adapter = start_dns_adapter(bind.addr(), &[]).await?;
    let control = DnsControl::new(&bind);
    let options = SuiteOptions {
        metrics: Some(adapter.metrics()),
        ..SuiteOptions::default()
    };
    let report = adapter.explain(run_suite(adapter.grpc(), &control, &options).await)?;
    println!("{report}");
    ensure!(report.skipped() == 0, "checks were skipped:\n{report}");
    adapter
        .explain(bind.explain(report.into_result()))
        .map(drop)
}
