//! A Nacos server with open-API auth on (`RNACOS_ENABLE_OPEN_API_AUTH`): a
//! wrong password gives a clear error and a paced retry, not a crash loop nor
//! a leaked password; the right one works in push mode, and in poll mode for
//! several token lifetimes (the token is refreshed before it expires).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use integration::{Adapter, Fault, FaultStub, Nacos, NacosInstance, Subscriber, workspace_binary};

const DEADLINE: Duration = Duration::from_secs(10);
const ADMIN: &str = "admin";
const PASSWORD: &str = "s3cret-Pa55";
/// rnacos' token lifetime here, in seconds.
const TOKEN_TTL: u64 = 3;

async fn nacos() -> Result<Nacos> {
    let ttl = TOKEN_TTL.to_string();
    Nacos::start(&[
        ("RNACOS_ENABLE_OPEN_API_AUTH", "true"),
        ("RNACOS_INIT_ADMIN_USERNAME", ADMIN),
        ("RNACOS_INIT_ADMIN_PASSWORD", PASSWORD),
        ("RNACOS_API_LOGIN_TIMEOUT", ttl.as_str()),
    ])
    .await
}

fn password_file(dir: &Path, password: &str) -> Result<String> {
    let path = dir.join("password");
    std::fs::write(&path, format!("{password}\n"))?;
    Ok(path.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_error_not_a_crash_loop() -> Result<()> {
    let nacos = nacos().await?;
    nacos
        .register(&NacosInstance::new("web", "127.0.0.1", 44_001))
        .await?;
    // The adapter's HTTP calls go through a counting proxy.
    let stub = FaultStub::start(Some(nacos.http()), |_| Fault::forward()).await?;
    let dir = tempfile::tempdir()?;
    let wrong = "not-the-Pa55word";
    let file = password_file(dir.path(), wrong)?;
    let offset =
        nacos.grpc_port_offset() + i32::from(nacos.http().port()) - i32::from(stub.addr().port());
    let mut cmd = Command::new(workspace_binary("discovery-nacos")?);
    cmd.args(["--nacos-addr", &stub.addr().to_string()])
        .arg(format!("--grpc-port-offset={offset}"))
        .args(["--username", ADMIN, "--password-file", &file])
        .args(["--backoff-max", "2s"])
        .args(integration::loopback_args());
    let adapter = Adapter::start("discovery-nacos", cmd).await?;
    let result = async {
        let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
        let window = Duration::from_secs(6);
        let started = Instant::now();
        let got = sub.recv(window).await;
        ensure!(
            got.is_err(),
            "a subscriber got {got:?} with a wrong password"
        );
        let requests = stub.requests();
        let log = adapter.process().stderr();
        println!("{requests} requests to nacos in {:?}", started.elapsed());
        // The server's own word for it, passed on.
        ensure!(
            log.contains("refused by") && log.contains("unknown user"),
            "no clear login error in the log"
        );
        ensure!(!log.contains(wrong), "the password appears in the log");
        ensure!(
            adapter.process().try_exit()?.is_none(),
            "the adapter exited on a wrong password"
        );
        // Paced: a handful of logins per second at most, not a busy loop.
        ensure!(
            requests <= 30,
            "{requests} requests in {window:?}: not backing off"
        );
        Ok(())
    };
    adapter.explain(result.await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_password_works_across_token_lifetimes() -> Result<()> {
    let nacos = nacos().await?;
    nacos
        .register(&NacosInstance::new("web", "127.0.0.1", 44_001))
        .await?;
    let dir = tempfile::tempdir()?;
    let file = password_file(dir.path(), PASSWORD)?;
    let mut base = nacos.adapter_args();
    base.extend(["--username", ADMIN, "--password-file", &file].map(String::from));

    // Push: the token goes with the gRPC subscription.
    let args: Vec<&str> = base.iter().map(String::as_str).collect();
    let push = Adapter::start_binary("discovery-nacos", &args).await?;
    let mut push_sub = Subscriber::watch(push.grpc(), "web").await?;
    push.explain(push_sub.recv_change(DEADLINE).await.map(drop))?;
    ensure!(push_sub.set().len() == 1, "push: {:?}", push_sub.set());

    // Poll: every query carries the token; run past several lifetimes.
    let mut args = base.clone();
    args.extend(["--mode", "poll", "--poll-interval", "500ms"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let poll = Adapter::start_binary("discovery-nacos", &args).await?;
    let mut poll_sub = Subscriber::watch(poll.grpc(), "web").await?;
    poll.explain(poll_sub.recv_change(DEADLINE).await.map(drop))?;
    // Wait until the poll adapter has logged in three times: its first
    // tokens expired and were replaced.
    let deadline = Instant::now() + Duration::from_secs(10 * TOKEN_TTL);
    while poll
        .process()
        .stderr()
        .matches("logged in to nacos")
        .count()
        < 3
    {
        ensure!(
            Instant::now() < deadline,
            "the poll adapter did not log in again as its token aged:\n{}",
            poll.process().stderr_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = NacosInstance::new("web", "127.0.0.1", 44_002);
    nacos.register(&late).await?;
    for (adapter, sub) in [(&push, &mut push_sub), (&poll, &mut poll_sub)] {
        adapter.explain(
            sub.wait_for(
                DEADLINE,
                true,
                "an instance registered after the first tokens expired",
                |s| s.contains_key(&late.id()),
            )
            .await,
        )?;
        ensure!(
            sub.statuses().is_empty(),
            "statuses while logged in: {:?}",
            sub.statuses()
        );
        ensure!(
            !adapter.process().stderr().contains(PASSWORD),
            "the password is in the log"
        );
    }
    Ok(())
}
