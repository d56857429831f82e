//! DNS lookups over hickory-resolver, reduced to what a watch needs: the
//! records with their TTLs, and failures sorted into "does not exist", "bad
//! data" (a CNAME loop) and "could not ask" (timeouts, server failures).
//!
//! hickory's own cache is off: every round asks the servers, so that the
//! TTLs seen are the servers' and a change shows when the TTL says.

use std::{collections::HashMap, net::IpAddr, net::SocketAddr, time::Duration};

use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts},
    net::{DnsError, NetError, runtime::TokioRuntimeProvider},
    proto::{
        op::ResponseCode,
        rr::{Name, RData, Record, RecordType},
    },
    system_conf,
};

use crate::{args::Families, select::SrvRecord};

/// How to reach DNS: servers, search list and query limits.
#[derive(Clone, Debug)]
pub struct ResolverSettings {
    /// Servers to ask (UDP, and TCP for truncated answers); empty: the
    /// system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Search domains for names without a final dot; empty: the system's
    /// when the system's servers are used, none otherwise.
    pub search: Vec<String>,
    /// Names with fewer dots are tried with the search domains first;
    /// `None`: the system's (1 without it).
    pub ndots: Option<usize>,
    /// How long one query may take.
    pub timeout: Duration,
    /// How many times a failed query is sent again.
    pub attempts: usize,
}

/// A resolver that always asks the servers.
pub(crate) struct Resolver {
    inner: TokioResolver,
    /// Search domains (the system's `domain` last), for relative names.
    search: Vec<Name>,
    ndots: usize,
}

/// Address records of one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Addrs {
    pub(crate) ips: Vec<IpAddr>,
    /// The smallest TTL of the records on the way (CNAMEs included).
    pub(crate) ttl: u32,
}

/// An SRV answer: its records and the addresses of their targets that came
/// with it (additional section), by lower-case target name.
#[derive(Clone, Debug)]
pub(crate) struct SrvAnswer {
    pub(crate) records: Vec<SrvRecord>,
    pub(crate) ttl: u32,
    pub(crate) additional: HashMap<String, Addrs>,
}

/// Why a lookup gave no records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LookupError {
    /// NXDOMAIN, or the name has no records of the type (NODATA).
    NotFound {
        nxdomain: bool,
        /// How long the server says the answer holds (from its SOA).
        negative_ttl: Option<u32>,
    },
    /// The answer is unusable for good (a CNAME loop).
    Bad(String),
    /// The servers could not be asked or failed (timeout, SERVFAIL).
    Failed(String),
    /// The server refused the query (REFUSED): a failure for the name asked,
    /// but for one candidate of a search list only "not here".
    Refused(String),
}

// === impl Resolver ===

impl Resolver {
    /// A resolver for these settings; fails when no server is known.
    pub(crate) fn new(s: &ResolverSettings) -> Result<Self, String> {
        let (config, mut opts) = if s.nameservers.is_empty() {
            system_conf::read_system_conf().map_err(|e| {
                format!(
                    "cannot read the system's DNS configuration (/etc/resolv.conf): {e}; \
                     give --nameserver"
                )
            })?
        } else {
            let servers = s.nameservers.iter().map(|a| server(*a)).collect();
            (
                ResolverConfig::from_name_servers(servers),
                ResolverOpts::default(),
            )
        };
        let (mut domain, mut search, servers) = config.into_parts();
        if servers.is_empty() {
            return Err("/etc/resolv.conf names no nameserver; give --nameserver".into());
        }
        if !s.search.is_empty() {
            search = s
                .search
                .iter()
                .map(|d| {
                    let mut n = Name::from_utf8(d).map_err(|e| format!("--search {d:?}: {e}"))?;
                    n.set_fqdn(true);
                    Ok(n)
                })
                .collect::<Result<_, String>>()?;
            // Given search domains replace the system's list, `domain` too.
            domain = None;
        }
        if let Some(n) = s.ndots {
            opts.ndots = n;
        }
        opts.timeout = s.timeout;
        opts.attempts = s.attempts;
        // Every round asks the servers: their TTLs drive the refresh.
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = true;
        let ndots = opts.ndots;
        let mut suffixes = search;
        if let Some(d) = domain
            && !suffixes.contains(&d)
        {
            suffixes.push(d);
        }
        // The search list is applied here, name by name (see `search`).
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| format!("cannot build the DNS resolver: {e}"))?;
        Ok(Self {
            inner,
            search: suffixes,
            ndots,
        })
    }

    /// Forgets anything a lookup left behind, so that the next ones ask the
    /// servers.
    pub(crate) fn forget(&self) {
        self.inner.clear_cache();
    }

    /// The addresses of `name` in the given families.
    pub(crate) async fn addresses(
        &self,
        name: &Name,
        families: Families,
    ) -> Result<Addrs, LookupError> {
        self.search(
            name,
            |n| async move { self.addresses_of(&n, families).await },
        )
        .await
    }

    /// The SRV records of `name`.
    pub(crate) async fn srv(&self, name: &Name) -> Result<SrvAnswer, LookupError> {
        self.search(name, |n| async move { self.srv_of(&n).await })
            .await
    }

    /// Looks a name up as the system's resolver does: a name with a final
    /// dot as it is; a relative one with each search domain, and as it is
    /// (first when it has more labels than `ndots`, else last). The first
    /// candidate with records wins; NXDOMAIN, NODATA and REFUSED move on to
    /// the next; a timeout or SERVFAIL stops there (the set is kept rather
    /// than another name served). Unlike hickory's own search, which returns
    /// the last candidate's error, a NODATA before a REFUSED stays NODATA.
    async fn search<T, F, Fut>(&self, name: &Name, lookup: F) -> Result<T, LookupError>
    where
        F: Fn(Name) -> Fut,
        Fut: std::future::Future<Output = Result<T, LookupError>>,
    {
        let mut not_found = None;
        let mut refused = None;
        for candidate in self.candidates(name) {
            match lookup(candidate).await {
                Ok(t) => return Ok(t),
                Err(e @ LookupError::NotFound { .. }) => {
                    not_found.get_or_insert(e);
                }
                Err(e @ LookupError::Refused(_)) => {
                    refused.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(not_found
            .or(refused)
            .unwrap_or_else(|| LookupError::Failed(format!("{name} gives no name to ask"))))
    }

    /// The names to ask for `name`, in order.
    fn candidates(&self, name: &Name) -> Vec<Name> {
        let mut absolute = name.clone();
        absolute.set_fqdn(true);
        if name.is_fqdn() || self.search.is_empty() {
            return vec![absolute];
        }
        let mut names: Vec<Name> = self
            .search
            .iter()
            .filter_map(|d| name.clone().append_domain(d).ok())
            .collect();
        if usize::from(name.num_labels()) > self.ndots {
            names.insert(0, absolute);
        } else {
            names.push(absolute);
        }
        names
    }

    async fn addresses_of(&self, name: &Name, families: Families) -> Result<Addrs, LookupError> {
        match (families.v4, families.v6) {
            (true, false) => self.address_type(name, RecordType::A).await,
            (false, true) => self.address_type(name, RecordType::AAAA).await,
            _ => {
                let (a, aaaa) = tokio::join!(
                    self.address_type(name, RecordType::A),
                    self.address_type(name, RecordType::AAAA)
                );
                merge(a, aaaa)
            }
        }
    }

    async fn srv_of(&self, name: &Name) -> Result<SrvAnswer, LookupError> {
        let lookup = match self.inner.lookup(name.clone(), RecordType::SRV).await {
            Ok(l) => l,
            Err(e) => return Err(self.classify(name, RecordType::SRV, e).await),
        };
        let mut records = Vec::new();
        let mut ttl = u32::MAX;
        for r in lookup.answers() {
            ttl = ttl.min(r.ttl);
            if let RData::SRV(srv) = &r.data {
                records.push(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_string(),
                });
            }
        }
        if records.is_empty() {
            return Err(LookupError::NotFound {
                nxdomain: false,
                negative_ttl: None,
            });
        }
        let mut additional: HashMap<String, Addrs> = HashMap::new();
        for r in lookup.additionals() {
            if let Some(ip) = address(r) {
                let a = additional.entry(key(&r.name)).or_insert(Addrs {
                    ips: Vec::new(),
                    ttl: u32::MAX,
                });
                // Consul repeats a target's record once per SRV record.
                if !a.ips.contains(&ip) {
                    a.ips.push(ip);
                }
                a.ttl = a.ttl.min(r.ttl);
            }
        }
        Ok(SrvAnswer {
            records,
            ttl,
            additional,
        })
    }

    async fn address_type(&self, name: &Name, rt: RecordType) -> Result<Addrs, LookupError> {
        let lookup = match self.inner.lookup(name.clone(), rt).await {
            Ok(l) => l,
            Err(e) => return Err(self.classify(name, rt, e).await),
        };
        let mut ips: Vec<IpAddr> = lookup.answers().iter().filter_map(address).collect();
        ips.sort_unstable();
        ips.dedup();
        if ips.is_empty() {
            return Err(LookupError::NotFound {
                nxdomain: false,
                negative_ttl: None,
            });
        }
        let ttl = lookup.answers().iter().map(|r| r.ttl).min().unwrap_or(0);
        Ok(Addrs { ips, ttl })
    }

    /// Sorts a failed lookup. A CNAME loop shows as "no records" (hickory
    /// follows the chain to its depth limit) or as SERVFAIL (BIND stops at
    /// its own limit): both are checked for a loop before they count as
    /// NODATA or a server failure.
    async fn classify(&self, name: &Name, rt: RecordType, e: NetError) -> LookupError {
        match e {
            NetError::Dns(DnsError::NoRecordsFound(nr)) => {
                let nxdomain = nr.response_code == ResponseCode::NXDomain;
                if !nxdomain && let Some(chain) = self.cname_loop(name).await {
                    return LookupError::Bad(format!("CNAME loop: {chain}"));
                }
                LookupError::NotFound {
                    nxdomain,
                    negative_ttl: nr.negative_ttl,
                }
            }
            // BIND answers a CNAME loop in its own zone with SERVFAIL.
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail))
                if let Some(chain) = self.cname_loop(name).await =>
            {
                LookupError::Bad(format!("CNAME loop: {chain}"))
            }
            NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
                LookupError::Refused(format!("{rt} lookup of {name} refused by the server"))
            }
            e => LookupError::Failed(format!("{rt} lookup of {name} failed: {e}")),
        }
    }

    /// Follows CNAME records from `name` one query at a time; the chain
    /// (`a -> b -> a`) if it comes back to a name it passed.
    async fn cname_loop(&self, name: &Name) -> Option<String> {
        const MAX_HOPS: usize = 16;
        let mut chain = vec![name.clone()];
        for _ in 0..MAX_HOPS {
            let current = chain.last()?.clone();
            let lookup = self
                .inner
                .lookup(current.clone(), RecordType::CNAME)
                .await
                .ok()?;
            let next = lookup.answers().iter().find_map(|r| match &r.data {
                RData::CNAME(c) if key(&r.name) == key(&current) => Some(c.0.clone()),
                _ => None,
            })?;
            let seen = chain.iter().any(|n| key(n) == key(&next));
            chain.push(next);
            if seen {
                let names: Vec<String> = chain.iter().map(Name::to_string).collect();
                return Some(names.join(" -> "));
            }
        }
        None
    }
}

/// One server, asked over UDP and, for truncated answers, TCP.
fn server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

fn address(r: &Record) -> Option<IpAddr> {
    match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

/// A name as a map key: lower case, with its final dot.
pub(crate) fn key(name: &Name) -> String {
    let mut n = name.to_lowercase();
    n.set_fqdn(true);
    n.to_string()
}

/// A and AAAA answers together: either family's addresses are enough; a
/// failure of either is a failure (the set is kept rather than halved).
fn merge(
    a: Result<Addrs, LookupError>,
    aaaa: Result<Addrs, LookupError>,
) -> Result<Addrs, LookupError> {
    use LookupError::*;
    match (a, aaaa) {
        (Err(e @ Failed(_)), _) | (_, Err(e @ Failed(_))) => Err(e),
        (Err(e @ Bad(_)), _) | (_, Err(e @ Bad(_))) => Err(e),
        (Err(e @ Refused(_)), _) | (_, Err(e @ Refused(_))) => Err(e),
        (Ok(mut x), Ok(y)) => {
            x.ips.extend(y.ips);
            x.ttl = x.ttl.min(y.ttl);
            Ok(x)
        }
        (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(x),
        (
            Err(NotFound {
                nxdomain: n1,
                negative_ttl: t1,
            }),
            Err(NotFound {
                nxdomain: n2,
                negative_ttl: t2,
            }),
        ) => Err(NotFound {
            nxdomain: n1 && n2,
            negative_ttl: match (t1, t2) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(ips: &[&str], ttl: u32) -> Result<Addrs, LookupError> {
        Ok(Addrs {
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            ttl,
        })
    }

    fn nodata(ttl: Option<u32>) -> Result<Addrs, LookupError> {
        Err(LookupError::NotFound {
            nxdomain: false,
            negative_ttl: ttl,
        })
    }

    #[test]
    fn a_and_aaaa_answers_merge() {
        assert_eq!(
            merge(addrs(&["10.0.0.1"], 30), addrs(&["::1"], 10)),
            addrs(&["10.0.0.1", "::1"], 10)
        );
        assert_eq!(
            merge(addrs(&["10.0.0.1"], 30), nodata(None)),
            addrs(&["10.0.0.1"], 30)
        );
        assert_eq!(merge(nodata(Some(5)), nodata(Some(3))), nodata(Some(3)));
        let failed = Err(LookupError::Failed("timed out".into()));
        assert_eq!(merge(addrs(&["10.0.0.1"], 30), failed.clone()), failed);
        let bad = Err(LookupError::Bad("CNAME loop".into()));
        assert_eq!(merge(bad.clone(), addrs(&["::1"], 1)), bad);
    }

    #[tokio::test]
    async fn relative_names_get_the_search_domains_as_the_system_gives_them() {
        let settings = ResolverSettings {
            nameservers: vec!["127.0.0.1:9".parse().unwrap()],
            search: vec!["svc.example".into(), "example".into()],
            ndots: Some(1),
            timeout: Duration::from_secs(1),
            attempts: 0,
        };
        let r = Resolver::new(&settings).unwrap();
        let names = |n: &str| -> Vec<String> {
            r.candidates(&Name::from_utf8(n).unwrap())
                .iter()
                .map(Name::to_string)
                .collect()
        };
        assert_eq!(names("web."), ["web."]);
        assert_eq!(names("web"), ["web.svc.example.", "web.example.", "web."]);
        assert_eq!(
            names("_http._tcp"),
            [
                "_http._tcp.",
                "_http._tcp.svc.example.",
                "_http._tcp.example."
            ]
        );
        let bad = ResolverSettings {
            search: vec!["a..b".into()],
            ..settings
        };
        let err = Resolver::new(&bad).err().unwrap();
        assert!(err.contains("--search \"a..b\""), "{err}");
    }

    #[test]
    fn keys_ignore_case_and_the_final_dot() {
        let a = Name::from_ascii("Web.Example.COM").unwrap();
        let b = Name::from_ascii("web.example.com.").unwrap();
        assert_eq!(key(&a), key(&b));
    }
}
