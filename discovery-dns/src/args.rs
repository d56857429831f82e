//! Watch arguments: which records a watch asks for and how they become
//! endpoints.
//!
//! `type` picks the records (`srv`, `a`, `aaaa` or `a+aaaa`; by default `srv`
//! for names whose first label starts with `_`, else `a+aaaa`). Address
//! records carry no port, so `port` is required for them and `weight` may set
//! the weight of each address; SRV records carry both, and `target_type` picks
//! the address records their targets resolve to.

use discovery_core::{InvalidTarget, Target};

/// What one watch resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Query {
    /// SRV records; targets resolved to addresses of these families.
    Srv { targets: Families },
    /// Address records of the name itself, served on one port.
    Addresses {
        families: Families,
        port: u16,
        weight: Option<u32>,
    },
}

/// The DNS side of a watch: what its resolution loop asks for. Watches
/// that differ only in `port` or `weight` share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Lookup {
    /// SRV records, targets resolved to these families.
    Srv(Families),
    /// Address records of these families.
    Addresses(Families),
}

/// Which address records to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Families {
    pub(crate) v4: bool,
    pub(crate) v6: bool,
}

const KNOWN: [&str; 4] = ["type", "port", "weight", "target_type"];

// === impl Query ===

impl Query {
    /// Reads and checks a target's arguments.
    pub(crate) fn parse(target: &Target) -> Result<Self, InvalidTarget> {
        let bad = |msg: String| InvalidTarget(msg);
        if let Some(k) = target.args.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown watch argument {k:?} (known: type, port, weight, target_type)"
            )));
        }
        check_name(&target.service).map_err(bad)?;
        let arg = |k: &str| target.args.get(k).map(String::as_str);
        let srv = match arg("type") {
            Some("srv") => true,
            Some(t) if Families::parse(t).is_some() => false,
            Some(t) => {
                return Err(bad(format!(
                    "watch argument type={t:?}: expected srv, a, aaaa or a+aaaa"
                )));
            }
            None => target.service.starts_with('_'),
        };
        if srv {
            for k in ["port", "weight"] {
                if arg(k).is_some() {
                    return Err(bad(format!(
                        "watch argument {k:?} is for address records; SRV records carry their own"
                    )));
                }
            }
            let targets = match arg("target_type") {
                None => Families::BOTH,
                Some(t) => Families::parse(t).ok_or_else(|| {
                    bad(format!(
                        "watch argument target_type={t:?}: expected a, aaaa or a+aaaa"
                    ))
                })?,
            };
            return Ok(Query::Srv { targets });
        }
        if arg("target_type").is_some() {
            return Err(bad(
                "watch argument \"target_type\" is for SRV records (type=srv)".into(),
            ));
        }
        let families = arg("type")
            .and_then(Families::parse)
            .unwrap_or(Families::BOTH);
        let port =
            match arg("port") {
                None => {
                    return Err(bad(format!(
                        "watch of {:?} (address records) needs the watch argument \"port\"",
                        target.service
                    )));
                }
                Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    bad(format!("watch argument port={p:?}: expected 1 to 65535"))
                })?,
            };
        let weight = arg("weight")
            .map(|w| {
                w.parse::<u32>().map_err(|_| {
                    bad(format!(
                        "watch argument weight={w:?}: expected a whole number from 0 to {}",
                        u32::MAX
                    ))
                })
            })
            .transpose()?;
        Ok(Query::Addresses {
            families,
            port,
            weight,
        })
    }

    /// What the resolution loop of this watch asks for.
    pub(crate) fn lookup(self) -> Lookup {
        match self {
            Query::Srv { targets } => Lookup::Srv(targets),
            Query::Addresses { families, .. } => Lookup::Addresses(families),
        }
    }
}

/// Refuses names that cannot be a DNS name, before any query is sent.
fn check_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err("the service name is empty: give the DNS name to watch".into());
    }
    if bare.len() > 253 || bare.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(format!("{name:?} is not a valid DNS name"));
    }
    if bare.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{name:?} is not a valid DNS name"));
    }
    Ok(())
}

// === impl Families ===

impl Families {
    pub(crate) const BOTH: Self = Self { v4: true, v6: true };

    fn parse(s: &str) -> Option<Self> {
        match s {
            "a" => Some(Self {
                v4: true,
                v6: false,
            }),
            "aaaa" => Some(Self {
                v4: false,
                v6: true,
            }),
            "a+aaaa" => Some(Self::BOTH),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, args: &[(&str, &str)]) -> Target {
        Target {
            service: name.into(),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_type_defaults_from_the_name() {
        assert_eq!(
            Query::parse(&target("_web._tcp.example.", &[])).unwrap(),
            Query::Srv {
                targets: Families::BOTH
            }
        );
        assert_eq!(
            Query::parse(&target("web.example.", &[("port", "80")])).unwrap(),
            Query::Addresses {
                families: Families::BOTH,
                port: 80,
                weight: None
            }
        );
        assert_eq!(
            Query::parse(&target(
                "web",
                &[("type", "aaaa"), ("port", "8080"), ("weight", "3")]
            ))
            .unwrap(),
            Query::Addresses {
                families: Families {
                    v4: false,
                    v6: true
                },
                port: 8080,
                weight: Some(3)
            }
        );
        assert_eq!(
            Query::parse(&target(
                "web.service.consul",
                &[("type", "srv"), ("target_type", "a")]
            ))
            .unwrap(),
            Query::Srv {
                targets: Families {
                    v4: true,
                    v6: false
                }
            }
        );
    }

    #[test]
    fn bad_arguments_name_the_problem() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            ("web.example.", &[], "needs the watch argument \"port\""),
            ("web.example.", &[("port", "0")], "port=\"0\""),
            ("web.example.", &[("port", "70000")], "port=\"70000\""),
            (
                "web.example.",
                &[("port", "80"), ("weight", "-1")],
                "weight=\"-1\"",
            ),
            ("web.example.", &[("type", "mx")], "type=\"mx\""),
            (
                "web.example.",
                &[("prot", "80")],
                "unknown watch argument \"prot\"",
            ),
            (
                "_web._tcp.example.",
                &[("port", "80")],
                "\"port\" is for address records",
            ),
            (
                "_web._tcp.example.",
                &[("target_type", "cname")],
                "target_type=\"cname\"",
            ),
            (
                "web.example.",
                &[("port", "80"), ("target_type", "a")],
                "for SRV records",
            ),
            ("", &[], "empty"),
            ("a..b", &[("port", "1")], "not a valid DNS name"),
            ("a b.c", &[("port", "1")], "not a valid DNS name"),
        ];
        for (name, args, want) in cases {
            let err = Query::parse(&target(name, args)).unwrap_err().0;
            assert!(
                err.contains(want),
                "{name:?} {args:?}: {err:?} lacks {want:?}"
            );
        }
    }
}
