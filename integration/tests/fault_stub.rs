//! The fault stub itself: each fault reaches a client as documented, so that
//! adapter tests built on it test the adapter, not the stub.

use anyhow::Result;
use integration::{Fault, FaultStub, HttpClient, empty_body, http_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_reaches_the_client_as_documented() -> Result<()> {
    let upstream = FaultStub::start(None, |_| Fault::json("[1]")).await?;
    let stub = FaultStub::start(Some(upstream.addr()), |parts| match parts.uri.path() {
        "/reply" => Fault::Reply {
            status: 500,
            headers: vec![("x-why".into(), "test".into())],
            body: "boom".into(),
        },
        "/truncate" => Fault::Truncate {
            status: 200,
            headers: vec![],
            body: "0123456789".into(),
            cut: 4,
        },
        "/huge" => Fault::Huge {
            headers: vec![],
            size: 300_000,
        },
        "/hang" => Fault::Hang,
        _ => Fault::Forward {
            set_headers: vec![("x-consul-index".into(), "7".into())],
        },
    })
    .await?;
    let client = HttpClient::http1();
    let at = stub.addr();

    let r = client.get(at, "/reply").await?;
    assert_eq!(r.status, 500);
    assert_eq!(r.headers["x-why"], "test");
    assert_eq!(r.body, "boom");

    let truncated = client.get(at, "/truncate").await;
    assert!(truncated.is_err(), "a short body must fail: {truncated:?}");

    let huge = client.get(at, "/huge").await?;
    assert_eq!(huge.body.len(), 300_000);
    let parsed: Vec<String> = serde_json::from_slice(&huge.body)?;
    assert_eq!(parsed.len(), 1);

    let forwarded = client.get(at, "/v1/anything").await?;
    assert_eq!(forwarded.body, "[1]");
    assert_eq!(forwarded.headers["x-consul-index"], "7");

    let hung = client
        .with_timeout(std::time::Duration::from_millis(300))
        .send(http_request(hyper::Method::GET, at, "/hang").body(empty_body())?)
        .await;
    assert!(hung.is_err(), "a hang must time out: {hung:?}");
    assert_eq!(stub.requests(), 5);
    assert!(stub.max_in_flight() >= 1);
    Ok(())
}
