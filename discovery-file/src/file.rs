//! The endpoint file: its YAML format, parsing and whole-file validation.
//!
//! A file is accepted whole or not at all: it is a user's configuration, so a
//! single bad entry is reported with its place and the last good file stays in
//! force.

use std::collections::{BTreeMap, BTreeSet};

use discovery_core::{Endpoint, Health};
use serde::Deserialize;

/// The services of one good file, by name.
pub(crate) type Services = BTreeMap<String, Vec<Endpoint>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    /// Services by name.
    #[serde(default)]
    services: BTreeMap<String, Vec<FileEndpoint>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEndpoint {
    #[serde(default)]
    id: Option<String>,
    address: String,
    port: i64,
    #[serde(default)]
    weight: Option<i64>,
    #[serde(default)]
    health: Option<FileHealth>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FileHealth {
    Healthy,
    Unhealthy,
    Draining,
    Unknown,
}

/// Parses and validates a whole endpoint file.
pub(crate) fn parse(text: &str) -> Result<Services, String> {
    if text.trim().is_empty() {
        // An editor truncating the file before writing it must not look like
        // "every service is gone".
        return Err("file is empty".into());
    }
    let doc: Doc = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let mut services = Services::new();
    for (name, entries) in doc.services {
        let mut ids = BTreeSet::new();
        let mut endpoints = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let place = format!("services.{name}[{i}]");
            let port = u32::try_from(e.port)
                .map_err(|_| format!("{place}.port: {} is not in 1..=65535", e.port))?;
            let endpoint = Endpoint {
                id: e.id.unwrap_or_default(),
                address: e.address,
                port,
                weight: e.weight,
                health: match e.health {
                    Some(FileHealth::Healthy) => Health::Healthy,
                    Some(FileHealth::Unhealthy) => Health::Unhealthy,
                    Some(FileHealth::Draining) => Health::Draining,
                    None | Some(FileHealth::Unknown) => Health::Unknown,
                },
                zone: e.zone.unwrap_or_default(),
                metadata: e.metadata,
            };
            endpoint
                .validate()
                .map_err(|err| format!("{place}: {}", err.reason))?;
            let id = endpoint.effective_id();
            if !ids.insert(id.clone()) {
                return Err(format!(
                    "{place}: duplicate endpoint id {id:?} in service {name:?}"
                ));
            }
            endpoints.push(endpoint);
        }
        services.insert(name, endpoints);
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_parses() {
        let s = parse(
            "services:\n  web:\n    - address: 127.0.0.1\n      port: 8081\n      weight: 2\n      zone: a\n    - id: w2\n      address: ::1\n      port: 8082\n      health: draining\n      metadata: {v: '2'}\n  empty: []\n",
        )
        .unwrap();
        let web = &s["web"];
        assert_eq!(web.len(), 2);
        assert_eq!(web[0].effective_id(), "127.0.0.1:8081");
        assert_eq!(web[0].weight, Some(2));
        assert_eq!(web[1].id, "w2");
        assert_eq!(web[1].health, Health::Draining);
        assert_eq!(web[1].metadata["v"], "2");
        assert!(s["empty"].is_empty());
    }

    #[test]
    fn bad_files_name_the_problem() {
        let cases = [
            ("", "empty"),
            ("services: [", "line"),
            (
                "services:\n  web:\n    - address: 1.2.3.4\n      port: 0\n",
                "services.web[0]: port 0",
            ),
            (
                "services:\n  web:\n    - address: 1.2.3.4\n      port: 70000\n",
                "port 70000",
            ),
            (
                "services:\n  web:\n    - address: 1.2.3.4\n      port: -5\n",
                "services.web[0].port",
            ),
            (
                "services:\n  web:\n    - address: 1.2.3.4\n      port: 80\n      weight: -1\n",
                "weight -1 is negative",
            ),
            (
                "services:\n  web:\n    - {address: 1.2.3.4, port: 80}\n    - {address: 1.2.3.4, port: 80}\n",
                "services.web[1]: duplicate endpoint id",
            ),
            (
                "services:\n  web:\n    - {address: 1.2.3.4, port: 80, wieght: 3}\n",
                "wieght",
            ),
            (
                "services:\n  web:\n    - {address: 'not an address', port: 80}\n",
                "neither",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }
}
