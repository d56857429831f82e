//! The adapter conformance suite: checks that a running adapter, whatever its
//! registry or language, serves `discovery.v1.EndpointDiscovery/Watch` as the
//! contract in `discovery.proto` says.
//!
//! The suite drives the registry through a [`RegistryControl`] (add, change
//! and remove one endpoint of one test service) and watches the adapter's
//! streams. The test service must exist when the suite starts (it may be
//! empty); the suite leaves its endpoints as it found them. Checks run one
//! after another, each within a bounded time, and a failed check does not stop
//! the others.
//!
//! Metric checks read the adapter's `discovery_watches` gauge (and, where the
//! adapter has it, `discovery_subscribers{service}`); they assume that no other
//! client opens or closes watches on that adapter while the suite runs.

mod checks;

use std::{
    fmt,
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Result;

/// Changes the adapter's registry, for the suite.
///
/// All changes apply to one test service, [`service`](Self::service). An
/// implementation returns once the registry has accepted the change; the
/// suite then waits for the adapter to report it.
pub trait RegistryControl: Sync {
    /// The test service: it exists in the registry, possibly without endpoints.
    fn service(&self) -> &str;

    /// A service the registry does not know.
    fn missing_service(&self) -> &str;

    /// Registers a new endpoint of the test service.
    fn add(&self, endpoint: &TestEndpoint) -> impl Future<Output = Result<()>> + Send;

    /// Changes an endpoint registered with [`add`](Self::add): same id and
    /// address, another weight.
    fn change(&self, endpoint: &TestEndpoint) -> impl Future<Output = Result<()>> + Send;

    /// Deregisters the endpoint with this id.
    fn remove(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// The id the adapter gives `endpoint` in its stream. By default its
    /// `address:port`; a registry with instance ids of its own (such as
    /// Consul's `node/service-id`) says here what becomes of `endpoint.id`.
    fn endpoint_id(&self, endpoint: &TestEndpoint) -> String {
        endpoint.id.clone()
    }
}

/// An endpoint the suite registers. Its id is `address:port`, which is also
/// the id the contract asks of registries that have no instance ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestEndpoint {
    /// `address:port`.
    pub id: String,
    /// An IPv4 loopback address.
    pub address: String,
    /// A port (nothing listens there; it is data).
    pub port: u16,
    /// The weight.
    pub weight: u32,
}

/// How the suite runs.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// The adapter's metrics server; metric checks are skipped without it.
    pub metrics: Option<SocketAddr>,
    /// How many subscribers the sharing check opens.
    pub subscribers: usize,
    /// How long the adapter gets to show one change.
    pub deadline: Duration,
}

/// The outcome of every check.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One entry per check, in the order they ran.
    pub checks: Vec<CheckResult>,
}

/// The outcome of one check.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// What the check verifies.
    pub name: String,
    /// Passed, failed or skipped.
    pub outcome: Outcome,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Whether a check passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed, for this reason.
    Failed(String),
    /// It did not run, for this reason.
    Skipped(String),
}

/// Runs every check against the adapter serving gRPC at `adapter`.
///
/// Fails only if the suite cannot run at all (the adapter cannot be reached);
/// check failures are in the [`Report`].
pub async fn run_suite(
    adapter: SocketAddr,
    control: &impl RegistryControl,
    options: &SuiteOptions,
) -> Result<Report> {
    crate::subscriber::connect(adapter).await?;
    let suite = checks::Suite::new(adapter, control, options).await?;
    let mut report = Report::default();
    for check in checks::ALL {
        let started = Instant::now();
        let outcome = suite.run(check).await;
        report.checks.push(CheckResult {
            name: check.name(options),
            outcome,
            elapsed: started.elapsed(),
        });
    }
    Ok(report)
}

// === impl TestEndpoint ===

impl TestEndpoint {
    /// An endpoint at `127.0.0.1:port` with weight `weight`.
    pub fn new(port: u16, weight: u32) -> Self {
        let address = "127.0.0.1".to_string();
        Self {
            id: format!("{address}:{port}"),
            address,
            port,
            weight,
        }
    }

    /// The same endpoint with another weight.
    pub fn with_weight(&self, weight: u32) -> Self {
        Self {
            weight,
            ..self.clone()
        }
    }
}

// === impl SuiteOptions ===

impl Default for SuiteOptions {
    fn default() -> Self {
        Self {
            metrics: None,
            subscribers: 50,
            deadline: Duration::from_secs(10),
        }
    }
}

// === impl Report ===

impl Report {
    /// How many checks passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    /// How many checks failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    /// How many checks were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }

    /// Whether no check failed.
    pub fn is_success(&self) -> bool {
        self.failed() == 0
    }

    /// The report as an error if a check failed, for tests.
    pub fn into_result(self) -> Result<Self> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(anyhow::anyhow!("conformance suite failed:\n{self}"))
        }
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.checks.iter().filter(|c| f(&c.outcome)).count()
    }
}

/// One line per check, then `N passed, M failed` (and `, K skipped`).
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let ms = c.elapsed.as_millis();
            match &c.outcome {
                Outcome::Passed => writeln!(f, "ok   {} ({ms} ms)", c.name)?,
                Outcome::Failed(why) => writeln!(f, "FAIL {} ({ms} ms): {why}", c.name)?,
                Outcome::Skipped(why) => writeln!(f, "skip {}: {why}", c.name)?,
            }
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())?;
        if self.skipped() > 0 {
            write!(f, ", {} skipped", self.skipped())?;
        }
        Ok(())
    }
}
