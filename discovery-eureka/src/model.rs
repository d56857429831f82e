//! Eureka's JSON as real servers emit it, read leniently into plain
//! [`Instance`] values.
//!
//! Eureka's Jackson codecs grew over the years: a lone `application` or
//! `instance` may be an object instead of a one-element array, ports are
//! `{"$": 8080, "@enabled": "true"}` objects (or bare numbers), numbers and
//! booleans may arrive as strings, and the overridden status is spelled
//! `overriddenStatus` or `overriddenstatus`. Unknown fields are ignored. Only a
//! body that is not such a document at all is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::Value;

/// An instance's status as Eureka's `InstanceInfo.InstanceStatus` knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Status {
    /// `UP`.
    Up,
    /// `DOWN`.
    Down,
    /// `STARTING`.
    Starting,
    /// `OUT_OF_SERVICE`.
    OutOfService,
    /// `UNKNOWN`, and any value Eureka does not know (as its client reads it).
    #[default]
    Unknown,
}

/// What a delta says happened to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Added,
    Modified,
    Deleted,
}

/// A port and whether the instance says it is enabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Port {
    /// The number, if there was a readable one.
    pub(crate) number: Option<i64>,
    /// `@enabled`, if given.
    pub(crate) enabled: Option<bool>,
}

/// One instance as the adapter keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Instance {
    /// The key Eureka files it under in its application (`InstanceInfo.getId()`):
    /// `instanceId`, else an AWS `instance-id`, else `hostName`.
    pub(crate) key: String,
    /// The application, upper-cased as Eureka does.
    pub(crate) app: String,
    /// `instanceId`, if set.
    pub(crate) instance_id: Option<String>,
    pub(crate) host_name: String,
    pub(crate) ip_addr: String,
    pub(crate) status: Status,
    /// `overriddenStatus`; [`Status::Unknown`] when there is no override.
    pub(crate) overridden: Status,
    pub(crate) port: Port,
    pub(crate) secure_port: Port,
    pub(crate) vip_address: String,
    pub(crate) secure_vip_address: String,
    /// `dataCenterInfo.metadata.availability-zone` (AWS).
    pub(crate) availability_zone: String,
    /// `metadata`, without Jackson's `@class` marker.
    pub(crate) metadata: BTreeMap<String, String>,
    /// `actionType`; only deltas' instances carry one the adapter uses.
    pub(crate) action: Option<Action>,
}

/// A parsed `/apps` or `/apps/delta` body.
#[derive(Debug, Default)]
pub(crate) struct AppsDoc {
    /// `apps__hashcode`.
    pub(crate) hash_code: String,
    /// Every instance of every application, in document order.
    pub(crate) instances: Vec<Instance>,
    /// Instances that could not be filed (no id of any kind), as messages.
    pub(crate) skipped: Vec<String>,
}

#[derive(Deserialize)]
struct Envelope {
    applications: Option<WireApps>,
}

#[derive(Deserialize)]
struct WireApps {
    #[serde(default, rename = "apps__hashcode", deserialize_with = "text")]
    hash_code: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    application: Vec<WireApp>,
}

#[derive(Deserialize)]
struct WireApp {
    #[serde(default, deserialize_with = "text")]
    name: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    instance: Vec<WireInstance>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireInstance {
    #[serde(default, deserialize_with = "text")]
    instance_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    host_name: Option<String>,
    #[serde(default, deserialize_with = "text")]
    app: Option<String>,
    #[serde(default, deserialize_with = "text")]
    ip_addr: Option<String>,
    #[serde(default, deserialize_with = "text")]
    status: Option<String>,
    #[serde(default, alias = "overriddenstatus", deserialize_with = "text")]
    overridden_status: Option<String>,
    #[serde(default)]
    port: Option<Value>,
    #[serde(default)]
    secure_port: Option<Value>,
    #[serde(default, deserialize_with = "text")]
    vip_address: Option<String>,
    #[serde(default, deserialize_with = "text")]
    secure_vip_address: Option<String>,
    #[serde(default)]
    data_center_info: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default, deserialize_with = "text")]
    action_type: Option<String>,
}

/// Reads a `/apps` or `/apps/delta` body.
pub(crate) fn parse_apps(body: &[u8]) -> Result<AppsDoc, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'<') {
        return Err("the body is XML; this adapter reads Eureka's JSON only".into());
    }
    let env: Envelope = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let apps = env
        .applications
        .ok_or("the body has no \"applications\" object")?;
    let mut doc = AppsDoc {
        hash_code: apps.hash_code.unwrap_or_default(),
        ..AppsDoc::default()
    };
    for app in apps.application {
        let app_name = app.name.unwrap_or_default();
        for wire in app.instance {
            match Instance::from_wire(wire, &app_name) {
                Ok(i) => doc.instances.push(i),
                Err(e) => doc.skipped.push(e),
            }
        }
    }
    Ok(doc)
}

// === impl Status ===

impl Status {
    /// Reads a status the way Eureka's `InstanceStatus.toEnum` does: case
    /// insensitive, anything else is `UNKNOWN`.
    pub(crate) fn parse(s: &str) -> Self {
        match s.to_ascii_uppercase().as_str() {
            "UP" => Self::Up,
            "DOWN" => Self::Down,
            "STARTING" => Self::Starting,
            "OUT_OF_SERVICE" => Self::OutOfService,
            _ => Self::Unknown,
        }
    }

    /// The name Eureka writes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Up => "UP",
            Self::Down => "DOWN",
            Self::Starting => "STARTING",
            Self::OutOfService => "OUT_OF_SERVICE",
            Self::Unknown => "UNKNOWN",
        }
    }
}

// === impl Instance ===

impl Instance {
    fn from_wire(w: WireInstance, app_name: &str) -> Result<Self, String> {
        let app = w
            .app
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| app_name.to_string())
            .to_uppercase();
        let dc = w.data_center_info.unwrap_or(Value::Null);
        let dc_meta = |k: &str| {
            dc.get("metadata")
                .and_then(|m| m.get(k))
                .and_then(scalar)
                .filter(|v| !v.is_empty())
        };
        let aws_id = match dc.get("name").and_then(scalar).as_deref() {
            Some("Amazon") => dc_meta("instance-id"),
            _ => None,
        };
        let instance_id = w.instance_id.filter(|i| !i.is_empty());
        let host_name = w.host_name.unwrap_or_default();
        let key = instance_id
            .clone()
            .or(aws_id)
            .or_else(|| Some(host_name.clone()).filter(|h| !h.is_empty()))
            .ok_or_else(|| {
                format!("an instance of application {app:?} has no instanceId and no hostName")
            })?;
        let mut metadata = BTreeMap::new();
        if let Some(Value::Object(m)) = w.metadata {
            for (k, v) in m {
                if k == "@class" {
                    continue;
                }
                if let Some(v) = scalar(&v) {
                    metadata.insert(k, v);
                }
            }
        }
        Ok(Self {
            key,
            app,
            instance_id,
            host_name,
            ip_addr: w.ip_addr.unwrap_or_default(),
            status: Status::parse(w.status.as_deref().unwrap_or("")),
            overridden: Status::parse(w.overridden_status.as_deref().unwrap_or("")),
            port: Port::from_wire(w.port.as_ref()),
            secure_port: Port::from_wire(w.secure_port.as_ref()),
            vip_address: w.vip_address.unwrap_or_default(),
            secure_vip_address: w.secure_vip_address.unwrap_or_default(),
            availability_zone: dc_meta("availability-zone").unwrap_or_default(),
            metadata,
            action: match w
                .action_type
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                Some("ADDED") => Some(Action::Added),
                Some("MODIFIED") => Some(Action::Modified),
                Some("DELETED") => Some(Action::Deleted),
                _ => None,
            },
        })
    }
}

// === impl Port ===

impl Port {
    /// `{"$": 8080, "@enabled": "true"}`, `8080` or `"8080"`.
    fn from_wire(v: Option<&Value>) -> Self {
        let Some(v) = v else {
            return Self::default();
        };
        let (number, enabled) = match v {
            Value::Object(o) => (o.get("$"), o.get("@enabled").or_else(|| o.get("enabled"))),
            other => (Some(other), None),
        };
        Self {
            number: number.and_then(scalar).and_then(|n| n.trim().parse().ok()),
            enabled: enabled
                .and_then(scalar)
                .and_then(|e| e.trim().parse::<bool>().ok()),
        }
    }
}

/// A JSON string, number or boolean as text; `None` for anything else.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A field that should be text but may be a number, a boolean or null.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(scalar(&Value::deserialize(d)?))
}

/// A list that Eureka writes as an object when it has one element (and
/// older servers as null or absent when empty).
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let v = Value::deserialize(d)?;
    let items = match v {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected an object or an array, found {other}"
            )));
        }
    };
    items
        .into_iter()
        .map(|i| serde_json::from_value(i).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests;
