//! The Nacos messages the adapter reads and writes, as JSON: the service and
//! instance records shared by the v1 HTTP API and the v2 gRPC push, and the
//! gRPC requests and responses of the naming subscription.
//!
//! Field names follow the public protocol (the Nacos server's
//! `com.alibaba.nacos.api` classes, which rnacos mirrors). Reading is lenient
//! where servers differ (missing fields take the Nacos defaults) and strict
//! where a value would change the endpoint set (a malformed document is an
//! error naming what was being read).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// One service instance, as `instance/list` and `ServiceInfo.hosts` list it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Instance {
    #[serde(default)]
    pub(crate) instance_id: Option<String>,
    #[serde(default)]
    pub(crate) ip: Option<String>,
    #[serde(default)]
    pub(crate) port: Option<i64>,
    #[serde(default = "one")]
    pub(crate) weight: f64,
    #[serde(default = "yes")]
    pub(crate) healthy: bool,
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    #[serde(default = "yes")]
    pub(crate) ephemeral: bool,
    #[serde(default)]
    pub(crate) cluster_name: Option<String>,
    #[serde(default)]
    pub(crate) metadata: Option<BTreeMap<String, String>>,
}

/// A service with its instances: the `instance/list` answer and the
/// `serviceInfo` of a subscription or push.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceInfo {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) group_name: Option<String>,
    #[serde(default)]
    pub(crate) hosts: Option<Vec<Instance>>,
}

/// The fields every gRPC response carries.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResponseHead {
    #[serde(default)]
    pub(crate) result_code: i64,
    #[serde(default)]
    pub(crate) error_code: i64,
    #[serde(default)]
    pub(crate) message: Option<String>,
}

/// `SubscribeServiceResponse`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscribeResponse {
    #[serde(default)]
    pub(crate) service_info: Option<ServiceInfo>,
}

/// A request the server sends on the bi-directional stream; only its id and,
/// for `NotifySubscriberRequest`, its service matter.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerRequest {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    #[serde(default)]
    pub(crate) service_name: Option<String>,
    #[serde(default)]
    pub(crate) group_name: Option<String>,
    #[serde(default)]
    pub(crate) service_info: Option<ServiceInfo>,
}

/// The answer to a server's request on the stream.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ack {
    pub(crate) result_code: i64,
    pub(crate) error_code: i64,
    pub(crate) request_id: String,
}

/// `ConnectionSetupRequest`, the first message on the stream.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConnectionSetup {
    pub(crate) client_version: String,
    pub(crate) tenant: String,
    pub(crate) labels: HashMap<String, String>,
    pub(crate) abilities: serde_json::Value,
    pub(crate) module: &'static str,
    pub(crate) headers: HashMap<String, String>,
}

/// `SubscribeServiceRequest`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Subscribe {
    pub(crate) namespace: String,
    pub(crate) service_name: String,
    pub(crate) group_name: String,
    pub(crate) clusters: String,
    pub(crate) subscribe: bool,
    pub(crate) module: &'static str,
    pub(crate) request_id: String,
    pub(crate) headers: HashMap<String, String>,
}

/// A request without fields of its own (`ServerCheckRequest`,
/// `HealthCheckRequest`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Bare {
    pub(crate) module: &'static str,
    pub(crate) request_id: String,
    pub(crate) headers: HashMap<String, String>,
}

/// A page of `GET /nacos/v1/ns/service/list`.
#[derive(Debug, Deserialize)]
pub(crate) struct ServicePage {
    #[serde(default)]
    pub(crate) count: u64,
    #[serde(default)]
    pub(crate) doms: Vec<String>,
}

/// The login answer of `POST /nacos/v1/auth/login`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Login {
    pub(crate) access_token: String,
    #[serde(default)]
    pub(crate) token_ttl: Option<u64>,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

/// Parses a JSON document, naming `what` in the error.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
        format!("malformed {what}: {e} (body starts {head:?})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /nacos/v1/ns/instance/list?serviceName=web&healthyOnly=false`,
    /// captured from rnacos 0.8.8 with one ephemeral instance in cluster
    /// `east` and one persistent instance with metadata.
    const INSTANCE_LIST: &str = r#"{"name":"DEFAULT_GROUP@@web","clusters":"","cacheMillis":10000,"hosts":[{"service":"DEFAULT_GROUP@@web","ip":"10.0.0.2","port":8080,"clusterName":"east","weight":0.5,"healthy":true,"instanceId":"10.0.0.2#8080","metadata":{},"marked":true,"enabled":true,"serviceName":"DEFAULT_GROUP@@web","ephemeral":true},{"service":"DEFAULT_GROUP@@web","ip":"127.0.0.1","port":47001,"clusterName":"DEFAULT","weight":1.0,"healthy":true,"instanceId":"127.0.0.1#47001","metadata":{"version":"2"},"marked":true,"enabled":true,"serviceName":"DEFAULT_GROUP@@web","ephemeral":false}],"lastRefTime":1796171488436,"checksum":"1796171488436","useSpecifiedURL":false,"env":"","protectThreshold":null,"reachLocalSiteCallThreshold":null,"dom":"web","metadata":null}"#;

    /// A `NotifySubscriberRequest` body shaped as rnacos 0.8.8 serializes it.
    const PUSH: &str = r#"{"module":"naming","requestId":"7","headers":{},"namespace":"public","serviceName":"web","groupName":"DEFAULT_GROUP","serviceInfo":{"name":"web","groupName":"DEFAULT_GROUP","clusters":"","cacheMillis":10000,"hosts":[{"instanceId":"127.0.0.1#47001#DEFAULT#DEFAULT_GROUP@@web","ip":"127.0.0.1","port":47001,"weight":5.0,"healthy":true,"enabled":true,"ephemeral":false,"clusterName":"DEFAULT","serviceName":"DEFAULT_GROUP@@web","metadata":{}}],"lastRefTime":1764631000000,"checksum":"","allIPs":false,"reachProtectionThreshold":false}}"#;

    #[test]
    fn an_instance_list_parses() {
        let s: ServiceInfo = parse("instance list", INSTANCE_LIST.as_bytes()).unwrap();
        let hosts = s.hosts.unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(hosts[0].weight, 0.5);
        assert_eq!(hosts[0].cluster_name.as_deref(), Some("east"));
        assert!(hosts[0].ephemeral && hosts[0].healthy && hosts[0].enabled);
        assert_eq!(hosts[1].port, Some(47001));
        assert_eq!(hosts[1].instance_id.as_deref(), Some("127.0.0.1#47001"));
        assert!(!hosts[1].ephemeral);
        assert_eq!(hosts[1].metadata.as_ref().unwrap()["version"], "2");
    }

    #[test]
    fn a_push_parses() {
        let r: ServerRequest = parse("push", PUSH.as_bytes()).unwrap();
        assert_eq!(r.request_id.as_deref(), Some("7"));
        assert_eq!(r.service_name.as_deref(), Some("web"));
        let hosts = r.service_info.unwrap().hosts.unwrap();
        assert_eq!(hosts[0].weight, 5.0);
    }

    #[test]
    fn missing_fields_take_nacos_defaults() {
        let i: Instance = parse("instance", br#"{"ip":"1.2.3.4","port":80}"#).unwrap();
        assert_eq!(i.weight, 1.0);
        assert!(i.healthy && i.enabled && i.ephemeral);
    }

    #[test]
    fn malformed_documents_name_what_was_read() {
        let err = parse::<ServiceInfo>("instance list of web", b"{\"hosts\": 3}").unwrap_err();
        assert!(err.contains("malformed instance list of web"), "{err}");
        assert!(err.contains("body starts"), "{err}");
    }
}
