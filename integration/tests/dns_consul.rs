//! `discovery-dns` serving a service from Consul's DNS interface: the real
//! Consul agent (`-dev`, every port chosen for it), services registered over
//! its HTTP API, `<service>.service.consul` SRV records (TTL 0) read from
//! its DNS port, and a registration change followed.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Result, ensure};
use integration::{Subscriber, start_dns_adapter};
use tokio::time::Instant;

use self::consul::Consul;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_service_through_consul_dns() -> Result<()> {
    let consul = Consul::start().await?;
    consul.register("web-1", "web", 9001, 5).await?;
    consul.register("web-2", "web", 9002, 1).await?;
    let adapter = start_dns_adapter(consul.dns(), &[]).await?;
    let result = async {
        let srv = BTreeMap::from([("type".to_string(), "srv".to_string())]);
        let mut sub =
            Subscriber::watch_with(adapter.grpc(), "web.service.consul.", srv.clone()).await?;
        sub.recv_change(Duration::from_secs(10)).await?;
        let weights = |s: &Subscriber| -> Vec<(String, u32)> {
            s.set()
                .values()
                .map(|e| (e.id.clone(), e.weight.unwrap_or(1)))
                .collect()
        };
        ensure!(
            weights(&sub)
                == [
                    ("127.0.0.1:9001".to_string(), 5),
                    ("127.0.0.1:9002".to_string(), 1)
                ],
            "{:?}",
            sub.set()
        );
        // TTL 0: the adapter asks again after --min-ttl (1 s).
        consul.register("web-3", "web", 9003, 1).await?;
        let started = Instant::now();
        sub.wait_for(Duration::from_secs(5), true, "web-3", |s| {
            s.contains_key("127.0.0.1:9003")
        })
        .await?;
        println!("registration seen after {:?}", started.elapsed());
        consul.deregister("web-1").await?;
        let started = Instant::now();
        sub.wait_for(Duration::from_secs(5), true, "web-1 gone", |s| {
            !s.contains_key("127.0.0.1:9001")
        })
        .await?;
        println!("deregistration seen after {:?}", started.elapsed());
        ensure!(sub.set().len() == 2, "{:?}", sub.set().keys());
        // A service Consul does not know: NXDOMAIN, not found.
        let mut missing =
            Subscriber::watch_with(adapter.grpc(), "nosuch.service.consul.", srv).await?;
        missing.recv_change(Duration::from_secs(10)).await?;
        ensure!(missing.not_found(), "{:?}", missing.set());
        Ok(())
    };
    adapter.explain(consul.explain(result.await))
}

/// The Consul agent, local to this test file.
mod consul {
    use std::{
        net::{SocketAddr, TcpListener, UdpSocket},
        process::Command,
        time::Duration,
    };

    use anyhow::{Context, Result, bail};
    use integration::{Process, install_tool};
    use tokio::time::Instant;

    /// A `consul agent -dev` on loopback ports of its own.
    pub(super) struct Consul {
        process: Process,
        http: SocketAddr,
        dns: SocketAddr,
        client: reqwest::Client,
        _dir: tempfile::TempDir,
    }

    impl Consul {
        pub(super) async fn start() -> Result<Self> {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let bin = install_tool("install-consul")?;
            let dir = tempfile::tempdir()?;
            let [http, dns, server, serf_lan, serf_wan] = free_ports()?;
            let config = serde_json::json!({
                "disable_update_check": true,
                "ports": {
                    "http": http, "dns": dns, "server": server,
                    "serf_lan": serf_lan, "serf_wan": serf_wan, "grpc": -1
                }
            });
            let conf = dir.path().join("consul.json");
            std::fs::write(&conf, config.to_string())?;
            let mut cmd = Command::new(bin);
            cmd.args([
                "agent",
                "-dev",
                "-bind",
                "127.0.0.1",
                "-client",
                "127.0.0.1",
            ])
            .args(["-node", "tributary-test", "-config-file"])
            .arg(&conf);
            let process = Process::spawn("consul", cmd)?;
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()?;
            let consul = Self {
                process,
                http: SocketAddr::from(([127, 0, 0, 1], http)),
                dns: SocketAddr::from(([127, 0, 0, 1], dns)),
                client,
                _dir: dir,
            };
            consul.wait_for_leader().await?;
            Ok(consul)
        }

        /// The agent's DNS address (UDP and TCP).
        pub(super) fn dns(&self) -> SocketAddr {
            self.dns
        }

        pub(super) async fn register(
            &self,
            id: &str,
            name: &str,
            port: u16,
            weight: u32,
        ) -> Result<()> {
            let body = serde_json::json!({
                "ID": id, "Name": name, "Address": "127.0.0.1", "Port": port,
                "Weights": {"Passing": weight, "Warning": 1}
            });
            self.put("/v1/agent/service/register", Some(body)).await
        }

        pub(super) async fn deregister(&self, id: &str) -> Result<()> {
            self.put(&format!("/v1/agent/service/deregister/{id}"), None)
                .await
        }

        pub(super) fn explain<T>(&self, result: Result<T>) -> Result<T> {
            self.process.explain(result)
        }

        async fn put(&self, path: &str, body: Option<serde_json::Value>) -> Result<()> {
            let mut req = self.client.put(format!("http://{}{path}", self.http));
            if let Some(b) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let resp = req.send().await.with_context(|| format!("PUT {path}"))?;
            let status = resp.status();
            if !status.is_success() {
                bail!(
                    "PUT {path}: {status}: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
            Ok(())
        }

        async fn wait_for_leader(&self) -> Result<()> {
            let deadline = Instant::now() + Duration::from_secs(30);
            let url = format!("http://{}/v1/status/leader", self.http);
            loop {
                if let Ok(r) = self.client.get(&url).send().await
                    && let Ok(text) = r.text().await
                    && text.contains(':')
                {
                    return Ok(());
                }
                if let Some(status) = self.process.try_exit()? {
                    return self.explain(Err(anyhow::anyhow!("consul exited ({status})")));
                }
                if Instant::now() >= deadline {
                    return self.explain(Err(anyhow::anyhow!("consul elected no leader in 30 s")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Five distinct loopback ports, each free for UDP and TCP (all held
    /// until the five are found, then released).
    fn free_ports() -> Result<[u16; 5]> {
        let mut held = Vec::new();
        while held.len() < 5 {
            let udp = UdpSocket::bind("127.0.0.1:0")?;
            let port = udp.local_addr()?.port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
                held.push((port, udp, tcp));
            }
        }
        let ports: Vec<u16> = held.iter().map(|h| h.0).collect();
        ports
            .try_into()
            .map_err(|_| anyhow::anyhow!("five ports expected"))
    }
}
