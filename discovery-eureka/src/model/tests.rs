//! Parsing real and legacy Eureka bodies.

use super::*;

#[test]
fn a_captured_full_fetch_parses() {
    let doc = parse_apps(include_bytes!("../../testdata/apps-full.json")).unwrap();
    assert_eq!(doc.hash_code, "STARTING_1_UP_1_");
    assert!(doc.skipped.is_empty());
    let [a, b] = &doc.instances[..] else {
        panic!("two instances expected: {:?}", doc.instances);
    };
    assert_eq!(a.key, "127.0.0.1:8081");
    assert_eq!(a.app, "WEB");
    assert_eq!(a.ip_addr, "127.0.0.1");
    assert_eq!(a.status, Status::Up);
    assert_eq!(a.overridden, Status::Unknown);
    assert_eq!(
        a.port,
        Port {
            number: Some(8081),
            enabled: Some(true)
        }
    );
    assert_eq!(
        a.secure_port,
        Port {
            number: Some(8443),
            enabled: Some(false)
        }
    );
    assert_eq!(a.vip_address, "web.vip");
    assert_eq!(a.secure_vip_address, "web.svip");
    assert_eq!(a.metadata["weight"], "3");
    assert_eq!(a.metadata["zone"], "z1");
    assert_eq!(a.action, Some(Action::Added));
    // An AWS dataCenterInfo gives the zone; Jackson's empty-map marker is no
    // metadata.
    assert_eq!(b.status, Status::Starting);
    assert_eq!(b.availability_zone, "us-east-1a");
    assert!(b.metadata.is_empty(), "{:?}", b.metadata);
}

#[test]
fn a_captured_delta_carries_actions() {
    let doc = parse_apps(include_bytes!("../../testdata/apps-delta.json")).unwrap();
    let actions: Vec<_> = doc
        .instances
        .iter()
        .map(|i| (i.key.as_str(), i.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("127.0.0.1:8082", Some(Action::Added)),
            ("127.0.0.1:8081", Some(Action::Modified)),
            // No instanceId: filed under its host name, as Eureka does.
            ("api.local", Some(Action::Deleted)),
        ]
    );
    assert_eq!(doc.instances[1].overridden, Status::OutOfService);
}

/// The shape older servers write: a lone application and instance as
/// objects, numbers as strings, `overriddenstatus` in lower case.
#[test]
fn a_one_instance_application_in_object_form_parses() {
    let doc = parse_apps(include_bytes!("../../testdata/apps-one-object.json")).unwrap();
    let [i] = &doc.instances[..] else {
        panic!("one instance expected: {:?}", doc.instances);
    };
    assert_eq!(i.key, "127.0.0.1:8081");
    assert_eq!(
        i.port,
        Port {
            number: Some(8081),
            enabled: Some(true)
        }
    );
    assert_eq!(i.status, Status::OutOfService);
    assert_eq!(i.overridden, Status::OutOfService);
}

#[test]
fn lenient_shapes_parse() {
    let body = br#"{"applications": {"apps__hashcode": "UP_2_", "application": [
        {"name": "a", "instance": {"hostName": "h1", "status": "up", "port": 80,
          "dataCenterInfo": {"name": "Amazon", "metadata": {"instance-id": "i-1"}},
          "metadata": {"n": 5, "b": true, "gone": null}}},
        {"name": "B", "instance": [{"hostName": "h2", "port": "81", "status": "BOGUS",
          "securePort": {"$": "443", "@enabled": true}}]},
        {"name": "C"},
        {"name": "D", "instance": null}
    ], "future_field": {"x": 1}}}"#;
    let doc = parse_apps(body).unwrap();
    let [a, b] = &doc.instances[..] else {
        panic!("{:?}", doc.instances);
    };
    assert_eq!(
        (a.key.as_str(), a.app.as_str(), a.status),
        ("i-1", "A", Status::Up)
    );
    assert_eq!(
        a.port,
        Port {
            number: Some(80),
            enabled: None
        }
    );
    assert_eq!(a.metadata.get("n").map(String::as_str), Some("5"));
    assert_eq!(a.metadata.get("b").map(String::as_str), Some("true"));
    assert!(!a.metadata.contains_key("gone"));
    assert_eq!(b.status, Status::Unknown);
    assert_eq!(b.port.number, Some(81));
    assert_eq!(
        b.secure_port,
        Port {
            number: Some(443),
            enabled: Some(true)
        }
    );
}

#[test]
fn an_instance_without_any_id_is_skipped_by_name() {
    let body = br#"{"applications": {"application": {"name": "WEB", "instance": [
        {"ipAddr": "10.0.0.1", "port": 80}, {"hostName": "ok", "port": 80}]}}}"#;
    let doc = parse_apps(body).unwrap();
    assert_eq!(doc.instances.len(), 1);
    assert_eq!(doc.skipped.len(), 1);
    assert!(
        doc.skipped[0].contains("\"WEB\" has no instanceId"),
        "{:?}",
        doc.skipped
    );
}

#[test]
fn bodies_that_are_not_registries_are_refused_by_name() {
    let cases: [(&[u8], &str); 5] = [
        (b"{\"applications\": {\"application\": [", "malformed JSON"),
        (b"<applications><application/></applications>", "XML"),
        (b"{\"status\": 404}", "no \"applications\""),
        (b"[\"xxxx\"]", "malformed JSON"),
        (
            b"{\"applications\": {\"application\": 7}}",
            "expected an object or an array",
        ),
    ];
    for (body, want) in cases {
        let err = parse_apps(body).unwrap_err();
        assert!(
            err.contains(want),
            "{}: {err:?} lacks {want:?}",
            String::from_utf8_lossy(body)
        );
    }
}

proptest::proptest! {
    /// A cut or damaged body never panics the parser: it parses or is refused.
    #[test]
    fn damaged_bodies_never_panic(
        cut in 0usize..3000,
        flips in proptest::collection::vec((0usize..3000, proptest::num::u8::ANY), 0..8),
    ) {
        let mut body = include_bytes!("../../testdata/apps-full.json").to_vec();
        body.truncate(cut.min(body.len()));
        for (at, byte) in flips {
            if let Some(b) = body.get_mut(at) {
                *b = byte;
            }
        }
        let _ = parse_apps(&body);
    }
}
