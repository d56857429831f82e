//! Snapshot-to-delta diffing: registries report whole sets, subscribers get
//! only what changed.

use std::collections::BTreeMap;

use tributary_proto::v1 as pb;

/// An endpoint set keyed by endpoint id.
pub(crate) type Set = BTreeMap<String, pb::Endpoint>;

/// The changes that turn `old` into `new`: endpoints added or changed in any
/// field, and ids removed. Both lists are sorted by id.
pub(crate) fn diff(old: &Set, new: &Set) -> pb::Delta {
    let upserts = new
        .iter()
        .filter(|(id, e)| old.get(*id) != Some(*e))
        .map(|(_, e)| e.clone())
        .collect();
    let removals = old
        .keys()
        .filter(|id| !new.contains_key(*id))
        .cloned()
        .collect();
    pb::Delta { upserts, removals }
}

/// Applies a delta to a set, as a subscriber does.
#[cfg(test)]
pub(crate) fn apply(set: &mut Set, delta: &pb::Delta) {
    for id in &delta.removals {
        set.remove(id);
    }
    for e in &delta.upserts {
        set.insert(e.id.clone(), e.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set_strategy() -> impl Strategy<Value = Set> {
        prop::collection::btree_map(0u8..20, (1u32..4, 0i32..3), 0..12).prop_map(|m| {
            m.into_iter()
                .map(|(id, (w, h))| {
                    let id = format!("e{id}");
                    let e = pb::Endpoint {
                        id: id.clone(),
                        address: "10.0.0.1".into(),
                        port: 80,
                        weight: Some(w),
                        health: h,
                        ..Default::default()
                    };
                    (id, e)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn applying_the_diff_gives_the_new_set(old in set_strategy(), new in set_strategy()) {
            let d = diff(&old, &new);
            let mut got = old.clone();
            apply(&mut got, &d);
            prop_assert_eq!(&got, &new);
            // Nothing unchanged is sent, and no id is in both lists.
            for e in &d.upserts {
                prop_assert!(old.get(&e.id) != Some(e));
                prop_assert!(!d.removals.contains(&e.id));
            }
        }
    }

    #[test]
    fn equal_sets_give_an_empty_delta() {
        let s: Set = [(
            "a".to_string(),
            pb::Endpoint {
                id: "a".into(),
                ..Default::default()
            },
        )]
        .into();
        let d = diff(&s, &s);
        assert!(d.upserts.is_empty() && d.removals.is_empty());
    }
}
