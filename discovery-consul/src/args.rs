//! Watch arguments: the `WatchRequest.args` a Consul watch accepts, checked
//! once when a watch opens, and the query parameters they become.

use std::collections::BTreeMap;

use discovery_core::InvalidTarget;

/// Every key a watch accepts, for error messages.
const KEYS: &str = "dc, tag, passing, warning, ns, partition, filter, near, consistency, \
                    zone_key, address";

/// Keys `ListServices` accepts.
const LIST_KEYS: &str = "dc, ns, partition, consistency";

/// A checked set of watch arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WatchArgs {
    /// `dc`: the datacenter; the agent's own when empty.
    pub(crate) dc: Option<String>,
    /// `tag`: instances must carry every one of these tags.
    pub(crate) tags: Vec<String>,
    /// `passing`: ask Consul for instances whose checks all pass.
    pub(crate) passing: bool,
    /// `warning`: what an instance whose worst check is `warning` becomes.
    pub(crate) warning: WarningAs,
    /// `ns` (Enterprise).
    pub(crate) ns: Option<String>,
    /// `partition` (Enterprise).
    pub(crate) partition: Option<String>,
    /// `filter`: a Consul filter expression, passed through.
    pub(crate) filter: Option<String>,
    /// `near`: sort by round-trip time from this node (`_agent`: the agent).
    pub(crate) near: Option<String>,
    /// `consistency`; `None` takes the adapter's default.
    pub(crate) consistency: Option<Consistency>,
    /// `zone_key`: the node meta key that holds the zone; `None` takes the
    /// adapter's default.
    pub(crate) zone_key: Option<String>,
    /// `address`: which address an endpoint gets.
    pub(crate) address: AddressChoice,
}

/// What a `warning` check makes of an instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum WarningAs {
    /// Still takes traffic (Consul's own DNS interface does the same).
    #[default]
    Healthy,
    /// Takes no new requests.
    Draining,
}

/// Consul's read consistency modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// The leader answers, without a quorum check.
    #[default]
    Default,
    /// Any server answers, possibly a little behind.
    Stale,
    /// The leader answers after confirming it still leads.
    Consistent,
}

/// Which of an instance's addresses becomes the endpoint address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum AddressChoice {
    /// `Service.Address`, or `Node.Address` when the service has none.
    #[default]
    Service,
    /// A tagged address: the service's, else the node's, else as `Service`.
    Tagged(&'static str),
}

/// The tagged addresses `address` may name.
const TAGGED: [&str; 6] = ["lan", "wan", "lan_ipv4", "lan_ipv6", "wan_ipv4", "wan_ipv6"];

// === impl WatchArgs ===

impl WatchArgs {
    /// Checks the arguments of a watch.
    pub(crate) fn parse(args: &BTreeMap<String, String>) -> Result<Self, InvalidTarget> {
        let mut out = Self::default();
        for (key, value) in args {
            let v = value.trim();
            let bad = |what: &str| InvalidTarget(format!("watch argument {key}={value:?}: {what}"));
            match key.as_str() {
                "dc" => out.dc = Some(non_empty(v).ok_or_else(|| bad("empty"))?),
                "tag" => {
                    out.tags = v.split(',').map(|t| t.trim().to_string()).collect();
                    if out.tags.iter().any(String::is_empty) {
                        return Err(bad("a tag is empty (use tag=a,b for several)"));
                    }
                }
                "passing" => out.passing = parse_bool(v).ok_or_else(|| bad("not true or false"))?,
                "warning" => {
                    out.warning = match v {
                        "healthy" => WarningAs::Healthy,
                        "draining" => WarningAs::Draining,
                        _ => return Err(bad("use healthy or draining")),
                    }
                }
                "ns" => out.ns = Some(non_empty(v).ok_or_else(|| bad("empty"))?),
                "partition" => out.partition = Some(non_empty(v).ok_or_else(|| bad("empty"))?),
                "filter" => out.filter = Some(non_empty(v).ok_or_else(|| bad("empty"))?),
                "near" => out.near = Some(non_empty(v).ok_or_else(|| bad("empty"))?),
                "consistency" => {
                    out.consistency = Some(
                        parse_consistency(v)
                            .ok_or_else(|| bad("use default, stale or consistent"))?,
                    )
                }
                "zone_key" => out.zone_key = Some(non_empty(v).ok_or_else(|| bad("empty"))?),
                "address" => out.address = match v {
                    "service" => AddressChoice::Service,
                    _ => AddressChoice::Tagged(TAGGED.into_iter().find(|t| *t == v).ok_or_else(
                        || bad("use service, lan, wan, lan_ipv4, lan_ipv6, wan_ipv4 or wan_ipv6"),
                    )?),
                },
                _ => {
                    return Err(InvalidTarget(format!(
                        "unknown watch argument {key:?} (known: {KEYS})"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Query parameters of `/v1/health/service/<name>` (without the
    /// blocking `index` and `wait`).
    pub(crate) fn health_query(&self, default: Consistency) -> Vec<(&'static str, String)> {
        let mut q = self.scope_query(default);
        for t in &self.tags {
            q.push(("tag", t.clone()));
        }
        if self.passing {
            q.push(("passing", "true".into()));
        }
        if let Some(f) = &self.filter {
            q.push(("filter", f.clone()));
        }
        if let Some(n) = &self.near {
            q.push(("near", n.clone()));
        }
        q
    }

    /// Query parameters that choose where to read: datacenter, namespace,
    /// partition and consistency. `/v1/catalog/services` takes these.
    pub(crate) fn scope_query(&self, default: Consistency) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        for (k, v) in [
            ("dc", &self.dc),
            ("ns", &self.ns),
            ("partition", &self.partition),
        ] {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        match self.consistency.unwrap_or(default) {
            Consistency::Default => {}
            Consistency::Stale => q.push(("stale", String::new())),
            Consistency::Consistent => q.push(("consistent", String::new())),
        }
        q
    }
}

/// Checks the arguments of `ListServices`: the scope keys only.
pub(crate) fn parse_list_args(args: &BTreeMap<String, String>) -> Result<WatchArgs, InvalidTarget> {
    if let Some(k) = args
        .keys()
        .find(|k| !matches!(k.as_str(), "dc" | "ns" | "partition" | "consistency"))
    {
        return Err(InvalidTarget(format!(
            "unknown ListServices argument {k:?} (known: {LIST_KEYS})"
        )));
    }
    WatchArgs::parse(args)
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn parse_consistency(v: &str) -> Option<Consistency> {
    match v {
        "default" => Some(Consistency::Default),
        "stale" => Some(Consistency::Stale),
        "consistent" => Some(Consistency::Consistent),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn good_arguments_become_query_parameters() {
        let a = WatchArgs::parse(&args(&[
            ("dc", "eu"),
            ("tag", "v2, blue"),
            ("passing", "true"),
            ("warning", "draining"),
            ("filter", "Service.Meta.x == y"),
            ("near", "_agent"),
            ("consistency", "stale"),
            ("address", "wan"),
        ]))
        .unwrap();
        assert_eq!(a.warning, WarningAs::Draining);
        assert_eq!(a.address, AddressChoice::Tagged("wan"));
        let q = a.health_query(Consistency::Default);
        let has = |k: &str, v: &str| q.iter().any(|(qk, qv)| *qk == k && qv == v);
        assert!(
            has("dc", "eu") && has("tag", "v2") && has("tag", "blue"),
            "{q:?}"
        );
        assert!(has("passing", "true") && has("stale", "") && has("near", "_agent"));
        assert!(has("filter", "Service.Meta.x == y"));
        // The adapter's default applies when the watch names none.
        let q = WatchArgs::default().scope_query(Consistency::Consistent);
        assert_eq!(q, vec![("consistent", String::new())]);
    }

    #[test]
    fn bad_arguments_name_the_key() {
        for (k, v, want) in [
            ("tags", "x", "unknown watch argument \"tags\""),
            ("tag", "a,,b", "tag is empty"),
            ("passing", "maybe", "passing=\"maybe\""),
            ("warning", "sick", "healthy or draining"),
            ("consistency", "eventual", "default, stale or consistent"),
            ("address", "public", "lan_ipv6"),
            ("dc", "", "dc=\"\": empty"),
        ] {
            let err = WatchArgs::parse(&args(&[(k, v)])).unwrap_err().to_string();
            assert!(err.contains(want), "{k}={v}: {err}");
        }
        let err = parse_list_args(&args(&[("tag", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ListServices argument \"tag\""), "{err}");
        assert!(parse_list_args(&args(&[("dc", "x")])).is_ok());
    }
}
