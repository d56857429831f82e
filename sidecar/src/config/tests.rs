//! Whole-config tests: the reference example parses to what it says, and
//! errors read the way `docs/config.md` promises. Bad inputs are in
//! `tests/bad_input.rs`.

mod bad_input;

use std::time::Duration;

use http::{HeaderName, Method};

use super::*;

/// The example of `docs/config.md`.
pub(super) const EXAMPLE: &str = r#"listeners:
  - name: http
    address: 127.0.0.1:8080
  - name: db
    address: 127.0.0.1:15432
    protocol: tcp
    upstream: pg
adapters:
  file:
    address: http://127.0.0.1:7070
routes:
  - name: api
    uri: /api/*
    hosts: [example.com]
    methods: [GET, POST]
    headers: {x-env: prod}
    upstream_id: web
  - name: default
    uri: /*
    upstream: web
upstreams:
  - name: web
    type: chash
    hash_on: header
    key: x-user
    discovery_type: file
    service_name: web
    retries: 2
    retry_timeout: 5
    timeout: {connect: 1, send: 5, read: 5}
    checks:
      active:
        type: http
        http_path: /health
        healthy: {interval: 2, successes: 2}
        unhealthy: {interval: 1, http_failures: 3}
  - name: pg
    nodes:
      "127.0.0.1:5432": 1
"#;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn example_listeners_adapters_and_routes() {
    let config = Config::from_yaml(EXAMPLE).expect("the example is valid");
    let [http, db] = &config.listeners[..] else {
        panic!("two listeners: {:?}", config.listeners)
    };
    assert_eq!(http.name, "http");
    assert_eq!(http.address, "127.0.0.1:8080".parse().expect("address"));
    assert_eq!(
        (http.protocol, &http.upstream),
        (ListenerProtocol::Http, &None)
    );
    assert_eq!(
        (db.protocol, db.upstream.as_deref()),
        (ListenerProtocol::Tcp, Some("pg"))
    );

    let file = &config.adapters["file"];
    assert_eq!(file.address, "http://127.0.0.1:7070");
    assert_eq!(file.connect_timeout, secs(5));

    let [api, default] = &config.routes[..] else {
        panic!("two routes: {:?}", config.routes)
    };
    assert_eq!(api.name, "api");
    assert_eq!(api.uris, vec![UriMatch::Prefix("/api/".into())]);
    assert_eq!(api.hosts, vec!["example.com".to_owned()]);
    assert_eq!(api.methods, vec![Method::GET, Method::POST]);
    assert_eq!(
        api.headers,
        vec![(HeaderName::from_static("x-env"), "prod".to_owned())]
    );
    assert_eq!((api.upstream.as_str(), api.priority), ("web", 0));
    assert!(api.listeners.is_empty());
    assert_eq!(default.uris, vec![UriMatch::Prefix("/".into())]);
    assert_eq!(default.upstream, "web");
    assert!(default.hosts.is_empty() && default.methods.is_empty() && default.headers.is_empty());

    assert_eq!(config.admin, Admin::default());
    assert_eq!(config.telemetry, Telemetry::default());
}

#[test]
fn example_upstreams() {
    let config = Config::from_yaml(EXAMPLE).expect("the example is valid");
    let web = config.upstream("web").expect("web");
    assert_eq!(web.r#type, BalancerType::Chash);
    assert_eq!((web.hash_on, web.key.as_str()), (HashOn::Header, "x-user"));
    assert!(web.nodes.is_empty());
    assert_eq!(
        web.discovery,
        vec![Source {
            discovery_type: "file".into(),
            service_name: "web".into(),
            discovery_args: Default::default(),
            priority: 0,
        }]
    );
    assert_eq!((web.retries, web.retry_timeout), (Some(2), secs(5)));
    assert_eq!(
        web.timeout,
        Timeouts {
            connect: secs(1),
            send: secs(5),
            read: secs(5)
        }
    );
    assert_eq!(
        (web.scheme, web.protocol),
        (Scheme::Http, UpstreamProtocol::Http1)
    );
    assert_eq!(web.pass_host, PassHost::Pass);
    assert_eq!(web.keepalive_pool, KeepalivePool::default());

    let checks = web.checks.as_ref().expect("checks");
    let active = checks.active.as_ref().expect("active");
    assert_eq!(
        (active.r#type, active.http_path.as_str()),
        (ActiveCheckType::Http, "/health")
    );
    assert_eq!(
        (active.healthy.interval, active.healthy.successes),
        (secs(2), 2)
    );
    assert_eq!(
        (active.unhealthy.interval, active.unhealthy.http_failures),
        (secs(1), 3)
    );
    // Fields left out keep APISIX's defaults.
    assert_eq!(active.timeout, secs(1));
    assert_eq!(active.healthy.http_statuses, vec![200, 302]);
    assert_eq!(
        (active.unhealthy.tcp_failures, active.unhealthy.timeouts),
        (2, 3)
    );
    assert_eq!(checks.passive, None);

    let pg = config.upstream("pg").expect("pg");
    let node = Node {
        host: "127.0.0.1".into(),
        port: 5432,
        weight: 1,
        priority: 0,
    };
    assert_eq!(pg.nodes, vec![node]);
    assert_eq!(pg.r#type, BalancerType::RoundRobin);
    assert_eq!(pg.key, "remote_addr");
}

#[test]
fn discovery_list_with_priorities_and_nodes() {
    let yaml = r#"
adapters:
  consul: {address: "http://127.0.0.1:7001"}
  nacos: {address: "https://nacos.local:7002", connect_timeout: 0.5}
upstreams:
  - name: web
    nodes:
      - {host: 10.0.0.9, port: 80, weight: 0, priority: -1}
    discovery:
      - {discovery_type: consul, service_name: web, priority: 1}
      - discovery_type: nacos
        service_name: web
        discovery_args: {namespace_id: prod, group_name: DEFAULT_GROUP}
"#;
    let config = Config::from_yaml(yaml).expect("valid");
    let web = &config.upstreams[0];
    assert_eq!(web.nodes[0].priority, -1);
    assert_eq!(web.discovery.len(), 2);
    assert_eq!(
        (web.discovery[0].priority, web.discovery[1].priority),
        (1, 0)
    );
    assert_eq!(web.discovery[1].discovery_args["namespace_id"], "prod");
    assert_eq!(
        config.adapters["nacos"].connect_timeout,
        Duration::from_millis(500)
    );
}

#[test]
fn a_config_of_defaults() {
    let config = Config::from_yaml("{}").expect("valid");
    assert_eq!(config, Config::default());
    assert_eq!(config.admin.address, DEFAULT_ADMIN_ADDRESS);
    // A section left empty, say with its entries commented out, is empty.
    let yaml = "listeners:\nroutes: ~\nupstreams:\nadapters:\nadmin:\ntelemetry:\n";
    assert_eq!(Config::from_yaml(yaml).expect("valid"), Config::default());
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sidecar.yaml");
    let text = "upstreams:\n  - name: web\n    nodes:\n      - host: a\n        port: 0\n";
    std::fs::write(&path, text).expect("write");
    let err = Config::load(&path).expect_err("port 0");
    let shown = err.to_string();
    let expected = format!(
        "{}:5:15: upstreams[0].nodes[0].port: 0 is not in 1..=65535",
        path.display()
    );
    assert_eq!(shown, expected);
    assert_eq!(err.file(), Some(path.as_path()));

    std::fs::write(&path, EXAMPLE).expect("write");
    assert_eq!(
        Config::load(&path).expect("valid"),
        Config::from_yaml(EXAMPLE).expect("valid")
    );

    let missing = dir.path().join("missing.yaml");
    let err = Config::load(&missing).expect_err("missing");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", missing.display()))
    );
    assert!(err.problems().is_empty());
}

#[test]
fn every_problem_is_reported_in_line_order() {
    let yaml = "\
listeners:
  - name: a
    address: 127.0.0.1:1
  - name: a
    address: 127.0.0.1:1
routes:
  - name: r
    upstream: nowhere
";
    let err = Config::from_yaml(yaml).expect_err("three problems");
    let got: Vec<(String, Option<u64>)> = err
        .problems()
        .iter()
        .map(|p| (p.path().to_owned(), p.line()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("listeners[1].name".to_owned(), Some(4)),
            ("listeners[1].address".to_owned(), Some(5)),
            ("routes[0].upstream".to_owned(), Some(8)),
        ]
    );
    assert_eq!(err.to_string().lines().count(), 3);
}
