//! From the registry to one watch's answer: which instances a watch selects
//! (an application, or a VIP address across applications) and how each
//! becomes an endpoint (address, port, health, weight, zone).

use std::collections::BTreeMap;

use discovery_core::{Answer, Endpoint, Health, InvalidTarget};

use crate::{
    apps::Apps,
    config::Mapping,
    model::{Instance, Status},
};

/// A watch's arguments, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WatchSpec {
    /// What the watched name is.
    pub(crate) by: By,
    /// Use the secure port (instances without one enabled are left out).
    pub(crate) secure: bool,
    /// Which instance field is the endpoint's address.
    pub(crate) address: AddressFrom,
}

/// What the watched name is matched against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum By {
    /// The application name.
    #[default]
    App,
    /// Any of an instance's `vipAddress` values.
    Vip,
    /// Any of an instance's `secureVipAddress` values.
    SecureVip,
}

/// Where an endpoint's address comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum AddressFrom {
    /// `ipAddr`, else `hostName`.
    #[default]
    Ip,
    /// `hostName`, else `ipAddr`.
    Hostname,
}

// === impl WatchSpec ===

impl WatchSpec {
    /// Reads a watch's arguments: `by`, `secure`, `address`.
    pub(crate) fn parse(args: &BTreeMap<String, String>) -> Result<Self, InvalidTarget> {
        let mut spec = Self::default();
        for (k, v) in args {
            let bad = |allowed: &str| {
                InvalidTarget(format!(
                    "watch argument {k:?}: {v:?} is not one of {allowed}"
                ))
            };
            match k.as_str() {
                "by" => {
                    spec.by = match v.as_str() {
                        "app" => By::App,
                        "vip" => By::Vip,
                        "secure_vip" => By::SecureVip,
                        _ => return Err(bad("app, vip, secure_vip")),
                    }
                }
                "secure" => {
                    spec.secure = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad("true, false")),
                    }
                }
                "address" => {
                    spec.address = match v.as_str() {
                        "ip" => AddressFrom::Ip,
                        "hostname" => AddressFrom::Hostname,
                        _ => return Err(bad("ip, hostname")),
                    }
                }
                _ => {
                    return Err(InvalidTarget(format!(
                        "unknown watch argument {k:?} (known: by, secure, address)"
                    )));
                }
            }
        }
        Ok(spec)
    }
}

/// The answer for watching `name` as `spec` says. An application or VIP
/// address no instance has is not found, as Eureka knows neither without
/// instances.
pub(crate) fn answer(apps: &Apps, name: &str, spec: &WatchSpec, mapping: &Mapping) -> Answer {
    let selected: Vec<&Instance> = match spec.by {
        By::App => match apps.app(name) {
            Some(instances) => instances.collect(),
            None => return Answer::NotFound,
        },
        By::Vip => apps
            .instances()
            .filter(|i| has_vip(&i.vip_address, name))
            .collect(),
        By::SecureVip => apps
            .instances()
            .filter(|i| has_vip(&i.secure_vip_address, name))
            .collect(),
    };
    if selected.is_empty() && spec.by != By::App {
        return Answer::NotFound;
    }
    Answer::Found(
        selected
            .into_iter()
            .filter_map(|i| endpoint(i, spec, mapping))
            .collect(),
    )
}

/// Eureka's VIP field is a comma-separated list, matched without case.
fn has_vip(list: &str, name: &str) -> bool {
    list.split(',').any(|v| v.trim().eq_ignore_ascii_case(name))
}

/// The endpoint of one instance; `None` (logged) when its port for this
/// watch is not enabled or not a number.
pub(crate) fn endpoint(i: &Instance, spec: &WatchSpec, mapping: &Mapping) -> Option<Endpoint> {
    // Eureka's defaults when `@enabled` is absent: port on, secure port off.
    let (port, enabled, which) = if spec.secure {
        (
            i.secure_port,
            i.secure_port.enabled.unwrap_or(false),
            "securePort",
        )
    } else {
        (i.port, i.port.enabled.unwrap_or(true), "port")
    };
    if !enabled {
        tracing::debug!(app = %i.app, instance = %i.key, "{which} not enabled: instance left out");
        return None;
    }
    let Some(port) = port.number else {
        tracing::warn!(app = %i.app, instance = %i.key, "instance has no readable {which}: left out");
        return None;
    };
    // Out-of-range ports are kept for the runtime to refuse by name.
    let port = u32::try_from(port).unwrap_or(0);
    let (first, second) = match spec.address {
        AddressFrom::Ip => (&i.ip_addr, &i.host_name),
        AddressFrom::Hostname => (&i.host_name, &i.ip_addr),
    };
    let address = if first.is_empty() { second } else { first };
    let id = match &i.instance_id {
        Some(id) => id.clone(),
        None => format!("{}:{port}", i.host_name),
    };
    let weight = i.metadata.get(&mapping.weight_key).and_then(|w| {
        let parsed = w.trim().parse::<i64>().ok();
        if parsed.is_none() {
            tracing::warn!(
                app = %i.app, instance = %i.key, key = %mapping.weight_key, value = %w,
                "weight metadata is not an integer: default weight used"
            );
        }
        parsed
    });
    let zone = i
        .metadata
        .get(&mapping.zone_key)
        .filter(|z| !z.is_empty())
        .unwrap_or(&i.availability_zone)
        .clone();
    Some(Endpoint {
        id,
        address: address.clone(),
        port,
        weight,
        health: health(i, mapping),
        zone,
        metadata: i.metadata.clone(),
    })
}

/// The instance's health: its override if it has one, else its status.
pub(crate) fn health(i: &Instance, mapping: &Mapping) -> Health {
    let status = match i.overridden {
        Status::Unknown => i.status,
        overridden => overridden,
    };
    match status {
        Status::Up => Health::Healthy,
        Status::Down => Health::Unhealthy,
        Status::OutOfService => Health::Draining,
        Status::Starting => mapping.starting,
        Status::Unknown => mapping.unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Port, parse_apps};

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn captured() -> Apps {
        Apps::from_full(parse_apps(include_bytes!("../testdata/apps-full.json")).unwrap())
    }

    fn found(a: Answer) -> Vec<Endpoint> {
        match a {
            Answer::Found(e) => e,
            Answer::NotFound => panic!("not found"),
        }
    }

    #[test]
    fn statuses_map_to_health_and_overrides_win() {
        let m = Mapping::default();
        let cases = [
            (Status::Up, Status::Unknown, Health::Healthy),
            (Status::Down, Status::Unknown, Health::Unhealthy),
            (Status::OutOfService, Status::Unknown, Health::Draining),
            (Status::Starting, Status::Unknown, Health::Unhealthy),
            (Status::Unknown, Status::Unknown, Health::Unhealthy),
            (Status::Up, Status::OutOfService, Health::Draining),
            (Status::Down, Status::Up, Health::Healthy),
        ];
        for (status, overridden, want) in cases {
            let i = Instance {
                status,
                overridden,
                ..Instance::default()
            };
            assert_eq!(health(&i, &m), want, "{status:?} overridden {overridden:?}");
        }
        let lenient = Mapping {
            starting: Health::Draining,
            unknown: Health::Unknown,
            ..Mapping::default()
        };
        let i = |status| Instance {
            status,
            ..Instance::default()
        };
        assert_eq!(health(&i(Status::Starting), &lenient), Health::Draining);
        assert_eq!(health(&i(Status::Unknown), &lenient), Health::Unknown);
    }

    #[test]
    fn an_application_maps_to_endpoints() {
        let apps = captured();
        let eps = found(answer(
            &apps,
            "web",
            &WatchSpec::default(),
            &Mapping::default(),
        ));
        let [a, b] = &eps[..] else { panic!("{eps:?}") };
        assert_eq!(
            (
                a.id.as_str(),
                a.address.as_str(),
                a.port,
                a.weight,
                a.health,
                a.zone.as_str()
            ),
            (
                "127.0.0.1:8081",
                "127.0.0.1",
                8081,
                Some(3),
                Health::Healthy,
                "z1"
            )
        );
        assert_eq!(a.metadata["weight"], "3");
        assert_eq!(
            (b.health, b.zone.as_str(), b.weight),
            (Health::Unhealthy, "us-east-1a", None)
        );
        assert_eq!(
            answer(&apps, "nope", &WatchSpec::default(), &Mapping::default()),
            Answer::NotFound
        );
    }

    #[test]
    fn watch_arguments_select_vips_ports_and_addresses() {
        let apps = captured();
        let m = Mapping::default();
        let spec = |pairs: &[(&str, &str)]| WatchSpec::parse(&args(pairs)).unwrap();
        // Only the first instance carries the VIPs.
        let vip = found(answer(&apps, "WEB.VIP", &spec(&[("by", "vip")]), &m));
        assert_eq!(vip.len(), 1);
        let svip = spec(&[("by", "secure_vip")]);
        assert_eq!(found(answer(&apps, "web.svip", &svip, &m)).len(), 1);
        assert_eq!(answer(&apps, "web.vip", &svip, &m), Answer::NotFound);
        // Its secure port is not enabled: a secure watch leaves it out.
        let secure = spec(&[("secure", "true")]);
        assert!(found(answer(&apps, "web", &secure, &m)).is_empty());
        let host = found(answer(&apps, "web", &spec(&[("address", "hostname")]), &m));
        assert_eq!(host[0].address, "localhost");
    }

    #[test]
    fn ids_weights_and_ports_fall_back_sensibly() {
        let m = Mapping::default();
        let spec = WatchSpec {
            secure: true,
            ..WatchSpec::default()
        };
        let mut i = Instance {
            key: "h1".into(),
            host_name: "h1".into(),
            secure_port: Port {
                number: Some(8443),
                enabled: Some(true),
            },
            ..Instance::default()
        };
        i.metadata.insert("weight".into(), "heavy".into());
        let e = endpoint(&i, &spec, &m).unwrap();
        assert_eq!(
            (e.id.as_str(), e.address.as_str(), e.port),
            ("h1:8443", "h1", 8443)
        );
        assert_eq!(e.weight, None, "an unreadable weight is the default weight");
        // A port missing from the instance leaves it out.
        assert!(endpoint(&i, &WatchSpec::default(), &m).is_none());
    }

    #[test]
    fn bad_watch_arguments_are_named() {
        for (pairs, want) in [
            (
                &[("by", "name")][..],
                "\"by\": \"name\" is not one of app, vip, secure_vip",
            ),
            (
                &[("secure", "yes")][..],
                "\"secure\": \"yes\" is not one of true, false",
            ),
            (&[("address", "dns")][..], "is not one of ip, hostname"),
            (&[("zone", "a")][..], "unknown watch argument \"zone\""),
        ] {
            let err = WatchSpec::parse(&args(pairs)).unwrap_err().0;
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }
}
