//! Nacos instances to endpoints: weights scaled to integers, health and
//! enabled folded into one health view, the zone and id chosen, and the
//! watch's cluster and health filters applied on this side (servers such as
//! rnacos ignore the cluster filter of a query).

use std::collections::BTreeMap;

use discovery_core::{Endpoint, Health};

use crate::{model::Instance, target::ServiceKey};

/// Largest power of ten a weight set is scaled by: three decimals are kept.
const MAX_SCALE_DIGITS: u32 = 3;

/// How instances become endpoints; from the adapter's flags.
#[derive(Clone, Debug, Default)]
pub struct EndpointOptions {
    /// Take the zone from this metadata key instead of the cluster name.
    pub zone_metadata_key: Option<String>,
    /// Use the Nacos `instanceId` as the endpoint id instead of `ip:port`.
    pub instance_id_as_id: bool,
}

/// Converts the instances of one answer, applying the watch's filters.
pub(crate) fn endpoints(
    instances: &[Instance],
    key: &ServiceKey,
    opts: &EndpointOptions,
) -> Vec<Endpoint> {
    let kept: Vec<&Instance> = instances
        .iter()
        .filter(|i| key.clusters.is_empty() || key.clusters.contains(cluster(i)))
        .filter(|i| !key.healthy_only || health(i) == Health::Healthy)
        .collect();
    let factor = scale_factor(kept.iter().map(|i| i.weight));
    kept.into_iter()
        .map(|i| endpoint(i, factor, opts))
        .collect()
}

/// The power of ten that makes every weight of a set an integer, up to
/// three decimals: integral weights stay as they are, `0.5` and `1` become
/// `5` and `10`. The ratios between endpoints are what a balancer uses.
pub(crate) fn scale_factor(weights: impl Iterator<Item = f64>) -> f64 {
    let weights: Vec<f64> = weights.filter(|w| w.is_finite() && *w > 0.0).collect();
    (0..=MAX_SCALE_DIGITS)
        .map(|d| 10f64.powi(d as i32))
        .find(|f| {
            weights.iter().all(|w| {
                let x = w * f;
                (x - x.round()).abs() < 1e-6
            })
        })
        .unwrap_or(10f64.powi(MAX_SCALE_DIGITS as i32))
}

/// One weight, scaled: 0 stays 0 (no traffic), a positive weight is never
/// rounded down to 0, a negative one is passed on for the runtime to refuse.
pub(crate) fn scale(weight: f64, factor: f64) -> i64 {
    if !weight.is_finite() {
        return -1;
    }
    if weight == 0.0 {
        return 0;
    }
    let w = (weight * factor).round();
    if weight > 0.0 {
        (w as i64).max(1)
    } else {
        w as i64
    }
}

/// Disabled or unhealthy: no traffic.
pub(crate) fn health(i: &Instance) -> Health {
    if i.enabled && i.healthy {
        Health::Healthy
    } else {
        Health::Unhealthy
    }
}

fn cluster(i: &Instance) -> &str {
    match i.cluster_name.as_deref() {
        None | Some("") => "DEFAULT",
        Some(c) => c,
    }
}

fn endpoint(i: &Instance, factor: f64, opts: &EndpointOptions) -> Endpoint {
    let mut metadata: BTreeMap<String, String> = i.metadata.clone().unwrap_or_default();
    let zone = match &opts.zone_metadata_key {
        Some(k) => metadata.get(k).cloned().unwrap_or_default(),
        None => cluster(i).to_string(),
    };
    metadata.insert("nacos.cluster".into(), cluster(i).to_string());
    metadata.insert("nacos.ephemeral".into(), i.ephemeral.to_string());
    metadata.insert("nacos.enabled".into(), i.enabled.to_string());
    metadata.insert("nacos.healthy".into(), i.healthy.to_string());
    if let Some(id) = &i.instance_id {
        metadata.insert("nacos.instance_id".into(), id.clone());
    }
    let id = match (&i.instance_id, opts.instance_id_as_id) {
        (Some(id), true) if !id.is_empty() => id.clone(),
        _ => String::new(),
    };
    Endpoint {
        id,
        address: i.ip.clone().unwrap_or_default(),
        // Out-of-range ports become 0, which the runtime refuses by name.
        port: i.port.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        weight: Some(scale(i.weight, factor)),
        health: health(i),
        zone,
        metadata,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn inst(ip: &str, weight: f64, cluster: &str) -> Instance {
        Instance {
            instance_id: Some(format!("{ip}#80#{cluster}#DEFAULT_GROUP@@web")),
            ip: Some(ip.into()),
            port: Some(80),
            weight,
            healthy: true,
            enabled: true,
            ephemeral: true,
            cluster_name: Some(cluster.into()),
            metadata: Some([("az".to_string(), "z1".to_string())].into()),
        }
    }

    fn key(clusters: &[&str], healthy_only: bool) -> ServiceKey {
        ServiceKey {
            namespace: "public".into(),
            group: "DEFAULT_GROUP".into(),
            service: "web".into(),
            clusters: clusters
                .iter()
                .map(|c| c.to_string())
                .collect::<BTreeSet<_>>(),
            healthy_only,
        }
    }

    #[test]
    fn weights_keep_their_ratios() {
        let f = |ws: &[f64]| -> Vec<i64> {
            let factor = scale_factor(ws.iter().copied());
            ws.iter().map(|w| scale(*w, factor)).collect()
        };
        assert_eq!(f(&[1.0, 5.0, 100.0]), [1, 5, 100]);
        assert_eq!(f(&[0.5, 1.0]), [5, 10]);
        assert_eq!(f(&[0.25, 1.5]), [25, 150]);
        assert_eq!(f(&[0.1, 0.3]), [1, 3]);
        assert_eq!(f(&[0.0, 2.0]), [0, 2]);
        // Beyond three decimals: rounded, but never to 0.
        assert_eq!(f(&[0.0001, 1.0]), [1, 1000]);
        assert_eq!(f(&[-1.0]), [-1]);
        assert_eq!(f(&[f64::NAN]), [-1]);
    }

    proptest::proptest! {
        /// Weights with up to three decimals keep their exact ratios.
        #[test]
        fn scaling_keeps_ratios(thousandths in proptest::collection::vec(0u32..10_000_000, 1..20)) {
            let weights: Vec<f64> = thousandths.iter().map(|t| f64::from(*t) / 1000.0).collect();
            let factor = scale_factor(weights.iter().copied());
            let scaled: Vec<i64> = weights.iter().map(|w| scale(*w, factor)).collect();
            for (i, a) in thousandths.iter().enumerate() {
                for (j, b) in thousandths.iter().enumerate() {
                    // a/b == sa/sb, cross-multiplied.
                    proptest::prop_assert_eq!(
                        i128::from(*a) * i128::from(scaled[j]),
                        i128::from(*b) * i128::from(scaled[i])
                    );
                }
            }
        }
    }

    #[test]
    fn disabled_or_unhealthy_is_unhealthy() {
        let mut i = inst("10.0.0.1", 1.0, "DEFAULT");
        assert_eq!(health(&i), Health::Healthy);
        i.enabled = false;
        assert_eq!(health(&i), Health::Unhealthy);
        i.enabled = true;
        i.healthy = false;
        assert_eq!(health(&i), Health::Unhealthy);
    }

    #[test]
    fn fields_map_and_filters_apply() {
        let mut sick = inst("10.0.0.3", 1.0, "east");
        sick.healthy = false;
        let all = [
            inst("10.0.0.1", 0.5, "DEFAULT"),
            inst("10.0.0.2", 1.0, "east"),
            sick,
        ];
        let opts = EndpointOptions::default();
        let eps = endpoints(&all, &key(&[], false), &opts);
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].effective_id(), "10.0.0.1:80");
        assert_eq!((eps[0].weight, eps[1].weight), (Some(5), Some(10)));
        assert_eq!(eps[1].zone, "east");
        assert_eq!(eps[1].metadata["az"], "z1");
        assert_eq!(eps[1].metadata["nacos.ephemeral"], "true");
        assert_eq!(
            eps[1].metadata["nacos.instance_id"],
            "10.0.0.2#80#east#DEFAULT_GROUP@@web"
        );
        assert_eq!(eps[2].health, Health::Unhealthy);

        let east = endpoints(&all, &key(&["east"], false), &opts);
        assert_eq!(east.len(), 2);
        let healthy_east = endpoints(&all, &key(&["east"], true), &opts);
        assert_eq!(healthy_east.len(), 1);
        // The weight scale follows the endpoints kept.
        assert_eq!(healthy_east[0].weight, Some(1));

        let opts = EndpointOptions {
            zone_metadata_key: Some("az".into()),
            instance_id_as_id: true,
        };
        let eps = endpoints(&all[..1], &key(&[], false), &opts);
        assert_eq!(eps[0].zone, "z1");
        assert_eq!(eps[0].id, "10.0.0.1#80#DEFAULT#DEFAULT_GROUP@@web");
    }

    #[test]
    fn an_instance_without_address_or_port_is_refused_by_the_runtime() {
        let mut i = inst("10.0.0.1", 1.0, "DEFAULT");
        i.ip = None;
        i.port = Some(70000);
        let e = &endpoints(&[i], &key(&[], false), &EndpointOptions::default())[0];
        assert!(e.validate().is_err());
    }
}
