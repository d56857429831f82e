//! The adapter's copy of the Eureka registry: built from a full fetch,
//! advanced by deltas, and checked against the server's hash code exactly as
//! Eureka's own client (`DiscoveryClient.updateDelta`,
//! `Applications.getReconcileHashCode`) does.

use std::collections::BTreeMap;

use crate::model::{Action, AppsDoc, Instance};

/// Every application and its instances, by upper-case name and Eureka id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Apps {
    apps: BTreeMap<String, BTreeMap<String, Instance>>,
}

/// What applying a delta did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DeltaOutcome {
    /// Whether any instance was added, changed or removed.
    pub(crate) changed: bool,
    /// The hash code of the registry after the delta.
    pub(crate) hash_code: String,
}

// === impl Apps ===

impl Apps {
    /// The registry of a full fetch.
    pub(crate) fn from_full(doc: AppsDoc) -> Self {
        let mut apps = Self::default();
        for mut i in doc.instances {
            i.action = None;
            apps.apps
                .entry(i.app.clone())
                .or_default()
                .insert(i.key.clone(), i);
        }
        apps
    }

    /// Applies a delta's instances: `ADDED` and `MODIFIED` replace the
    /// instance, `DELETED` removes it (and an application left empty), an
    /// instance without an action is ignored, as Eureka's client does.
    pub(crate) fn apply_delta(&mut self, delta: AppsDoc) -> DeltaOutcome {
        let mut changed = false;
        for mut i in delta.instances {
            match i.action.take() {
                Some(Action::Added | Action::Modified) => {
                    let app = self.apps.entry(i.app.clone()).or_default();
                    if app.get(&i.key) != Some(&i) {
                        app.insert(i.key.clone(), i);
                        changed = true;
                    }
                }
                Some(Action::Deleted) => {
                    if let Some(app) = self.apps.get_mut(&i.app) {
                        changed |= app.remove(&i.key).is_some();
                        if app.is_empty() {
                            self.apps.remove(&i.app);
                        }
                    }
                }
                None => {}
            }
        }
        DeltaOutcome {
            changed,
            hash_code: self.hash_code(),
        }
    }

    /// Eureka's reconcile hash code: each status with its instance count,
    /// sorted by status name, as `DOWN_1_UP_2_` (empty for no instances).
    pub(crate) fn hash_code(&self) -> String {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for i in self.instances() {
            *counts.entry(i.status.name()).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(status, n)| format!("{status}_{n}_"))
            .collect()
    }

    /// The instances of one application (name in any case), if it exists.
    pub(crate) fn app(&self, name: &str) -> Option<impl Iterator<Item = &Instance>> {
        self.apps.get(&name.to_uppercase()).map(|a| a.values())
    }

    /// Every instance of every application.
    pub(crate) fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.apps.values().flat_map(|a| a.values())
    }

    /// The application names.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.apps.keys().map(String::as_str)
    }

    /// How many instances there are in all.
    pub(crate) fn len(&self) -> usize {
        self.apps.values().map(BTreeMap::len).sum()
    }

    /// The status of one instance.
    #[cfg(test)]
    pub(crate) fn status_of(&self, app: &str, key: &str) -> Option<crate::model::Status> {
        self.apps.get(app)?.get(key).map(|i| i.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Port, Status, parse_apps};

    fn inst(app: &str, key: &str, status: Status, action: Option<Action>) -> Instance {
        Instance {
            key: key.into(),
            app: app.into(),
            instance_id: Some(key.into()),
            host_name: "h".into(),
            ip_addr: "10.0.0.1".into(),
            status,
            port: Port {
                number: Some(80),
                enabled: Some(true),
            },
            action,
            ..Instance::default()
        }
    }

    fn doc(instances: Vec<Instance>) -> AppsDoc {
        AppsDoc {
            instances,
            ..AppsDoc::default()
        }
    }

    #[test]
    fn hash_code_counts_statuses_sorted_by_name() {
        assert_eq!(Apps::default().hash_code(), "");
        let apps = Apps::from_full(doc(vec![
            inst("B", "b1", Status::Up, None),
            inst("A", "a1", Status::Up, None),
            inst("A", "a2", Status::Down, None),
            inst("A", "a3", Status::OutOfService, None),
            inst("C", "c1", Status::Starting, None),
        ]));
        assert_eq!(apps.hash_code(), "DOWN_1_OUT_OF_SERVICE_1_STARTING_1_UP_2_");
    }

    #[test]
    fn the_hash_code_of_captured_bodies_matches_the_servers() {
        for file in [
            include_str!("../testdata/apps-full.json"),
            include_str!("../testdata/apps-one-object.json"),
        ] {
            let d = parse_apps(file.as_bytes()).unwrap();
            let want = d.hash_code.clone();
            assert_eq!(Apps::from_full(d).hash_code(), want);
        }
    }

    #[test]
    fn deltas_add_modify_and_delete() {
        let mut apps = Apps::from_full(doc(vec![
            inst("WEB", "w1", Status::Up, None),
            inst("OLD", "o1", Status::Up, None),
        ]));
        let out = apps.apply_delta(doc(vec![
            inst("WEB", "w2", Status::Up, Some(Action::Added)),
            inst("WEB", "w1", Status::OutOfService, Some(Action::Modified)),
            inst("OLD", "o1", Status::Up, Some(Action::Deleted)),
            // No action: ignored, as Eureka's client ignores it.
            inst("WEB", "w9", Status::Up, None),
            // Deleting what is not there changes nothing.
            inst("NONE", "n1", Status::Up, Some(Action::Deleted)),
        ]));
        assert_eq!(
            out,
            DeltaOutcome {
                changed: true,
                hash_code: "OUT_OF_SERVICE_1_UP_1_".into()
            }
        );
        assert!(apps.app("old").is_none(), "an emptied application is gone");
        assert_eq!(apps.app("web").unwrap().count(), 2);
        assert_eq!(apps.status_of("WEB", "w1"), Some(Status::OutOfService));

        // The same delta again (Eureka repeats changes for minutes): no change.
        let again = apps.apply_delta(doc(vec![inst(
            "WEB",
            "w2",
            Status::Up,
            Some(Action::Added),
        )]));
        assert!(!again.changed);
    }

    proptest::proptest! {
        /// Whatever the instances, a delta that adds them all to an empty
        /// registry builds what a full fetch of them builds, and the hash
        /// code counts every instance once.
        #[test]
        fn a_delta_of_additions_equals_a_full_fetch(
            specs in proptest::collection::vec((0u8..3, 0u8..6, 0u8..5), 0..30),
        ) {
            let statuses = [Status::Up, Status::Down, Status::Starting, Status::OutOfService, Status::Unknown];
            let instances: Vec<Instance> = specs
                .iter()
                .map(|(a, k, s)| inst(&format!("APP{a}"), &format!("i{k}"), statuses[*s as usize], Some(Action::Added)))
                .collect();
            let full = Apps::from_full(doc(instances.clone()));
            let mut delta = Apps::default();
            delta.apply_delta(doc(instances));
            proptest::prop_assert_eq!(&delta, &full);
            let counted: usize = full
                .hash_code()
                .split('_')
                .filter_map(|p| p.parse::<usize>().ok())
                .sum();
            proptest::prop_assert_eq!(counted, full.len());
        }
    }

    #[test]
    fn the_captured_delta_applies_to_the_captured_registry() {
        let mut apps = Apps::from_full(
            parse_apps(include_str!("../testdata/apps-full.json").as_bytes()).unwrap(),
        );
        let delta = parse_apps(include_str!("../testdata/apps-delta.json").as_bytes()).unwrap();
        let want = delta.hash_code.clone();
        let out = apps.apply_delta(delta);
        assert!(out.changed);
        assert_eq!(out.hash_code, want, "OUT_OF_SERVICE_1_STARTING_1_");
        assert_eq!(apps.names().collect::<Vec<_>>(), ["WEB"]);
        assert_eq!(apps.len(), 2);
    }
}
