//! Watch arguments: which Nacos service a target names (namespace, group,
//! service, clusters) and how its instances are filtered.

use std::collections::BTreeSet;

use discovery_core::{InvalidTarget, Target};

/// The namespace Nacos uses when none is given.
pub(crate) const DEFAULT_NAMESPACE: &str = "public";

/// The group Nacos uses when none is given.
pub(crate) const DEFAULT_GROUP: &str = "DEFAULT_GROUP";

/// One watched Nacos service, from a validated [`Target`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceKey {
    /// Namespace id; `public` for the default namespace.
    pub(crate) namespace: String,
    /// Group name.
    pub(crate) group: String,
    /// Service name, without group.
    pub(crate) service: String,
    /// Only instances of these clusters; empty: every cluster.
    pub(crate) clusters: BTreeSet<String>,
    /// Drop instances that are unhealthy or disabled.
    pub(crate) healthy_only: bool,
}

// === impl ServiceKey ===

impl ServiceKey {
    /// Reads a target's arguments; unknown arguments and bad values are
    /// refused with a message naming them.
    pub(crate) fn from_target(target: &Target) -> Result<Self, InvalidTarget> {
        let bad = |m: String| InvalidTarget(m);
        if target.service.contains("@@") {
            return Err(bad(format!(
                "service name {:?} contains \"@@\" (give the group as group_name)",
                target.service
            )));
        }
        check_name("service name", &target.service).map_err(bad)?;
        let mut key = Self {
            namespace: DEFAULT_NAMESPACE.into(),
            group: DEFAULT_GROUP.into(),
            service: target.service.clone(),
            clusters: BTreeSet::new(),
            healthy_only: false,
        };
        let mut seen = BTreeSet::new();
        for (k, v) in &target.args {
            let name = match k.as_str() {
                "namespace_id" | "namespaceId" => "namespace_id",
                "group_name" | "groupName" => "group_name",
                "clusters" => "clusters",
                "healthy_only" | "healthyOnly" => "healthy_only",
                _ => {
                    return Err(bad(format!(
                        "unknown watch argument {k:?} (known: namespace_id, group_name, \
                         clusters, healthy_only)"
                    )));
                }
            };
            if !seen.insert(name) {
                return Err(bad(format!("watch argument {name} given twice")));
            }
            match name {
                "namespace_id" if v.is_empty() => {}
                "namespace_id" => {
                    check_name("namespace_id", v).map_err(bad)?;
                    key.namespace = v.clone();
                }
                "group_name" => {
                    check_name("group_name", v).map_err(bad)?;
                    key.group = v.clone();
                }
                "clusters" => {
                    for c in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                        check_name("clusters", c).map_err(bad)?;
                        key.clusters.insert(c.to_string());
                    }
                }
                _ => {
                    key.healthy_only = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(bad(format!(
                                "healthy_only must be true or false, not {v:?}"
                            )));
                        }
                    }
                }
            }
        }
        Ok(key)
    }

    /// The clusters as Nacos writes them: a comma-separated list.
    pub(crate) fn clusters_param(&self) -> String {
        self.clusters.iter().cloned().collect::<Vec<_>>().join(",")
    }

    /// `namespace/group/service`, for messages.
    pub(crate) fn label(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.group, self.service)
    }
}

/// Nacos names: letters, digits and `-_.:`, 1 to 256 characters.
fn check_name(what: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 256
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {v:?} is not a Nacos name (1 to 256 letters, digits or -_.:)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(service: &str, args: &[(&str, &str)]) -> Target {
        Target {
            service: service.into(),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn defaults_and_both_spellings() {
        let k = ServiceKey::from_target(&target("web", &[])).unwrap();
        assert_eq!(
            (k.namespace.as_str(), k.group.as_str()),
            ("public", "DEFAULT_GROUP")
        );
        assert!(!k.healthy_only && k.clusters.is_empty());
        let k = ServiceKey::from_target(&target(
            "web",
            &[
                ("namespaceId", "dev"),
                ("groupName", "G"),
                ("clusters", "b, a"),
                ("healthyOnly", "true"),
            ],
        ))
        .unwrap();
        assert_eq!(k.label(), "dev/G/web");
        assert_eq!(k.clusters_param(), "a,b");
        assert!(k.healthy_only);
        let k = ServiceKey::from_target(&target("web", &[("namespace_id", "")])).unwrap();
        assert_eq!(k.namespace, "public");
    }

    #[test]
    fn bad_arguments_are_named() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            ("web", &[("zone", "a")], "unknown watch argument \"zone\""),
            ("web", &[("healthy_only", "yes")], "healthy_only must be"),
            ("web", &[("group_name", "a b")], "group_name \"a b\""),
            (
                "web",
                &[("group_name", "G"), ("groupName", "H")],
                "given twice",
            ),
            ("G@@web", &[], "contains \"@@\""),
            ("web", &[("clusters", "a,b c")], "clusters \"b c\""),
        ];
        for (service, args, want) in cases {
            let err = ServiceKey::from_target(&target(service, args))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        }
    }
}
