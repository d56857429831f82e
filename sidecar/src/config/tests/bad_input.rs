//! Bad configs: each is refused with its field path, its line and a message
//! that says what is wrong; and no input at all makes the parser panic.

use proptest::prelude::*;

use super::super::Config;
use super::EXAMPLE;

/// A valid base for cases that need an upstream and an adapter to refer to.
const BASE: &str = "\
adapters:
  file: {address: \"http://127.0.0.1:7070\"}
listeners:
  - {name: http, address: \"127.0.0.1:8080\"}
upstreams:
  - name: web
    nodes: {\"127.0.0.1:9000\": 1}
";

/// The same, with the listeners last, for cases that add listeners.
const LISTENERS_LAST: &str = "\
adapters:
  file: {address: \"http://127.0.0.1:7070\"}
upstreams:
  - name: web
    nodes: {\"127.0.0.1:9000\": 1}
listeners:
  - {name: http, address: \"127.0.0.1:8080\"}
";

/// `(yaml, field path, line, part of the message)`. A case that starts with
/// `+` follows `BASE` (line 8 is its first), with `=` follows `LISTENERS_LAST`.
const CASES: &[(&str, &str, u64, &str)] = &[
    // Unknown fields, wherever they are.
    ("listners: []\n", "", 1, "unknown field `listners`"),
    (
        "+  - name: w\n    nodes: {\"a:1\": 1}\n    retires: 2\n",
        "upstreams[1]",
        10,
        "`retires`",
    ),
    (
        "+    checks: {active: {http_pth: /}}\n",
        "upstreams[0].checks.active",
        8,
        "`http_pth`",
    ),
    // Values wrong on their own, refused while parsing.
    (
        "upstreams:\n  - name: w\n    nodes:\n      - {host: a, port: 80}\n      - host: b\n        port: 0\n",
        "upstreams[0].nodes[1].port",
        6,
        "0 is not in 1..=65535",
    ),
    (
        "+    scheme: http\n  - name: w\n    nodes: {\"a:70000\": 1}\n",
        "upstreams[1].nodes",
        10,
        "not in 1..=65535",
    ),
    (
        "upstreams:\n  - name: w\n    nodes: [{host: a, weight: -1}]\n",
        "upstreams[0].nodes[0].weight",
        3,
        "-1 is less than 0",
    ),
    (
        "+    timeout: {connect: 0}\n",
        "upstreams[0].timeout.connect",
        8,
        "not a positive duration",
    ),
    (
        "+    timeout: {read: 5s}\n",
        "upstreams[0].timeout.read",
        8,
        "number of seconds",
    ),
    (
        "+    retry_timeout: -1\n",
        "upstreams[0].retry_timeout",
        8,
        "negative",
    ),
    (
        "+    retry_on_status: [503, 200]\n",
        "upstreams[0].retry_on_status[1]",
        8,
        "200 is not in 400..=599",
    ),
    (
        "+    hash_on: consumer\n",
        "upstreams[0].hash_on",
        8,
        "not supported",
    ),
    (
        "+    scheme: https\n",
        "upstreams[0].scheme",
        8,
        "not supported yet",
    ),
    (
        "+    type: random\n",
        "upstreams[0].type",
        8,
        "unknown balancer type \"random\"",
    ),
    (
        "+    checks:\n      active: {type: https}\n",
        "upstreams[0].checks.active.type",
        9,
        "not supported yet",
    ),
    (
        "+    checks: {}\n",
        "upstreams[0].checks",
        8,
        "needs `active`, `passive` or both",
    ),
    (
        "+    checks:\n      active:\n        healthy: {successes: 0}\n",
        "upstreams[0].checks.active.healthy.successes",
        10,
        "0 is not in 1..=254",
    ),
    (
        "telemetry: {sampling_ratio: 2}\n",
        "telemetry.sampling_ratio",
        1,
        "not in 0..=1",
    ),
    (
        "listeners:\n  - {name: a, address: localhost:80}\n",
        "listeners[0].address",
        2,
        "not an IP:port address",
    ),
    (
        "routes:\n  - name: r\n    upstream: w\n    uri: /users/:id\n",
        "routes[0].uri",
        4,
        ":parameter",
    ),
    (
        "routes:\n  - name: r\n    upstream: w\n    methods: [GET, get]\n",
        "routes[0].methods[1]",
        4,
        "upper case",
    ),
    (
        "routes:\n  - name: r\n    uri: /a\n    uris: [/b]\n    upstream: w\n",
        "routes[0]",
        2,
        "not both",
    ),
    ("routes:\n  - name: r\n", "routes[0]", 2, "`upstream`"),
    (
        "+    discovery_type: file\n    discovery: []\n",
        "upstreams[0]",
        6,
        "not both",
    ),
    // Problems between fields, found by validation.
    (
        "+  - name: web\n    nodes: {\"a:1\": 1}\n",
        "upstreams[1].name",
        8,
        "also the name of upstreams[0]",
    ),
    (
        "+routes:\n  - {name: r, upstream_id: foo}\n",
        "routes[0].upstream_id",
        9,
        "unknown upstream `foo`",
    ),
    (
        "+routes:\n  - {name: r, upstream: web, listeners: [nope]}\n",
        "routes[0].listeners[0]",
        9,
        "unknown listener `nope`",
    ),
    (
        "=  - {name: db, address: \"127.0.0.1:5432\", protocol: tcp, upstream: web}\nroutes:\n  - {name: r, upstream: web, listeners: [db]}\n",
        "routes[0].listeners[0]",
        10,
        "tcp listener",
    ),
    (
        "=  - {name: db, address: \"127.0.0.1:5432\", protocol: tcp}\n",
        "listeners[1].upstream",
        8,
        "needs an `upstream`",
    ),
    (
        "=  - {name: h, address: \"127.0.0.1:81\", upstream: web}\n",
        "listeners[1].upstream",
        8,
        "through routes",
    ),
    (
        "=  - {name: h2, address: \"0.0.0.0:8080\"}\n",
        "listeners[1].address",
        8,
        "conflicts with the address of listeners[0]",
    ),
    (
        "+admin: {address: \"127.0.0.1:8080\"}\n",
        "listeners[0].address",
        4,
        "admin address",
    ),
    (
        "+    discovery_type: consul\n    service_name: web\n",
        "upstreams[0].discovery_type",
        8,
        "unknown adapter `consul`",
    ),
    (
        "+  - name: w2\n    discovery:\n      - {discovery_type: file, service_name: a}\n      - {discovery_type: dns, service_name: b}\n",
        "upstreams[1].discovery[1].discovery_type",
        11,
        "unknown adapter `dns`",
    ),
    (
        "+    discovery_args: {a: b}\n",
        "upstreams[0].discovery_type",
        6,
        "is missing",
    ),
    (
        "upstreams:\n  - name: w\n",
        "upstreams[0]",
        2,
        "no `nodes` and no discovery source",
    ),
    (
        "+    type: chash\n    hash_on: header\n",
        "upstreams[0].key",
        6,
        "needs a `key`",
    ),
    (
        "+    type: chash\n    key: server_port\n",
        "upstreams[0].key",
        9,
        "not a supported variable",
    ),
    (
        "+    type: chash\n    hash_on: vars_combinations\n    key: $host$nope\n",
        "upstreams[0].key",
        10,
        "`nope`",
    ),
    (
        "+    pass_host: rewrite\n",
        "upstreams[0].pass_host",
        8,
        "needs an `upstream_host`",
    ),
    (
        "+    scheme: grpc\n    protocol: http1\n",
        "upstreams[0].protocol",
        9,
        "HTTP/2",
    ),
    (
        "+    checks:\n      active: {http_path: health}\n",
        "upstreams[0].checks.active.http_path",
        9,
        "start with `/`",
    ),
    (
        "+    checks:\n      active:\n        healthy: {http_statuses: []}\n",
        "upstreams[0].checks.active.healthy.http_statuses",
        10,
        "is empty",
    ),
    (
        "adapters:\n  file: {address: \"127.0.0.1:7070\"}\n",
        "adapters.file.address",
        2,
        "http://",
    ),
    (
        "telemetry:\n  log_level: infoo\n",
        "telemetry.log_level",
        2,
        "`infoo` is not a level",
    ),
    // Not YAML at all, or not a config.
    ("listeners: [\n", "", 1, ""),
    ("- a\n- b\n", "", 1, ""),
    ("admin: {}\n---\nadmin: {}\n", "", 3, "multiple"),
];

#[test]
fn each_bad_input_names_its_field_and_line() {
    for (case, path, line, fragment) in CASES {
        let yaml = if let Some(rest) = case.strip_prefix('+') {
            format!("{BASE}{rest}")
        } else if let Some(rest) = case.strip_prefix('=') {
            format!("{LISTENERS_LAST}{rest}")
        } else {
            (*case).to_owned()
        };
        let err = Config::from_yaml(&yaml).expect_err(&yaml);
        let found = err
            .problems()
            .iter()
            .find(|p| p.path() == *path && p.line() == Some(*line));
        let Some(problem) = found else {
            panic!("expected {path} at line {line} in:\n{yaml}\ngot:\n{err}");
        };
        assert!(
            problem.message().contains(fragment),
            "expected {fragment:?} in {problem}\nfor:\n{yaml}"
        );
        // The displayed error carries the same facts.
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("{line}:")) && shown.contains(path),
            "{shown}"
        );
    }
}

#[test]
fn an_empty_file_says_so() {
    for text in ["", "\n", "# only a comment\n"] {
        let err = Config::from_yaml(text).expect_err("empty");
        assert!(err.to_string().contains("empty"), "{err}");
    }
}

proptest! {
    #[test]
    fn any_text_gives_a_config_or_an_error(text in "\\PC{0,300}") {
        if let Err(err) = Config::from_yaml(&text) {
            prop_assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn a_mangled_example_gives_a_config_or_an_error(
        at in 0..EXAMPLE.len(),
        cut in 0usize..40,
        insert in "[ :,\\-\\[\\]{}a-z0-9\"'*&!|>\n]{0,12}",
    ) {
        // EXAMPLE is ASCII, so every index is a char boundary.
        let end = (at + cut).min(EXAMPLE.len());
        let text = format!("{}{insert}{}", &EXAMPLE[..at], &EXAMPLE[end..]);
        if let Err(err) = Config::from_yaml(&text) {
            prop_assert!(!err.to_string().is_empty());
        }
    }
}
