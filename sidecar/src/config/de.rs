//! Serde helpers for the config's scalar shapes.
//!
//! Each helper rejects a bad value while the YAML deserializer still stands on
//! it, so the error carries that value's line and column: integers in a range
//! (`0 is not in 1..=65535`), seconds written as APISIX numbers (`5`, `0.5`),
//! status lists, header maps and HTTP methods.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};

/// The largest `u32`, as the `i64` bound the integer helpers take.
pub(super) const U32_MAX: i64 = u32::MAX as i64;

/// The methods APISIX accepts in a route's `methods` (its `method_schema`).
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

/// A value, or its default when written empty (`routes:` with nothing under it).
pub(super) fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// An integer in `MIN..=MAX`; accepts `2` and `2.0`, rejects `2.5` and `"2"`.
pub(super) fn int<'de, D, T, const MIN: i64, const MAX: i64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let value = d.deserialize_any(IntVisitor)?;
    in_range::<D::Error, T>(value, MIN, MAX)
}

/// Like [`int`], for an optional field (absent is `None`).
pub(super) fn opt_int<'de, D, T, const MIN: i64, const MAX: i64>(
    d: D,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    int::<D, T, MIN, MAX>(d).map(Some)
}

/// A duration in seconds, `0` or more: APISIX's `retry_timeout`, `idle_timeout`.
pub(super) fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = d.deserialize_any(NumberVisitor)?;
    if secs < 0.0 {
        return Err(de::Error::custom(format!("{secs} seconds is negative")));
    }
    to_duration(secs)
}

/// A duration in seconds, more than `0`: timeouts, probe intervals.
pub(super) fn pos_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = d.deserialize_any(NumberVisitor)?;
    if secs <= 0.0 {
        return Err(de::Error::custom(format!(
            "{secs} seconds is not a positive duration"
        )));
    }
    to_duration(secs)
}

/// Like [`pos_secs`], for an optional field (absent is `None`).
pub(super) fn opt_pos_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    pos_secs(d).map(Some)
}

/// An `IP:port` socket address, such as `127.0.0.1:8080` or `[::1]:8080`.
pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        de::Error::custom(format!(
            "`{}` is not an IP:port address such as 127.0.0.1:8080 or [::1]:8080",
            text.escape_debug()
        ))
    })
}

/// A ratio in `0..=1`, such as a sampling ratio.
pub(super) fn ratio<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let value = d.deserialize_any(NumberVisitor)?;
    if !(0.0..=1.0).contains(&value) {
        return Err(de::Error::custom(format!("{value} is not in 0..=1")));
    }
    Ok(value)
}

/// Like [`ratio`], for an optional field (absent is `None`).
pub(super) fn opt_ratio<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    ratio(d).map(Some)
}

/// A list of HTTP status codes in `MIN..=MAX`, each given once.
pub(super) fn statuses<'de, D, const MIN: i64, const MAX: i64>(d: D) -> Result<Vec<u16>, D::Error>
where
    D: Deserializer<'de>,
{
    struct StatusVisitor<const MIN: i64, const MAX: i64>;

    impl<'de, const MIN: i64, const MAX: i64> Visitor<'de> for StatusVisitor<MIN, MAX> {
        type Value = Vec<u16>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of HTTP statuses in {MIN}..={MAX}")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<u16> = Vec::new();
            while let Some(Status(code)) = seq.next_element::<Status<MIN, MAX>>()? {
                if out.contains(&code) {
                    return Err(de::Error::custom(format!("status {code} is listed twice")));
                }
                out.push(code);
            }
            Ok(out)
        }
    }

    d.deserialize_seq(StatusVisitor::<MIN, MAX>)
}

/// A map of header names to exact values, in the order written.
pub(super) fn header_map<'de, D>(d: D) -> Result<Vec<(HeaderName, String)>, D::Error>
where
    D: Deserializer<'de>,
{
    struct HeaderMap;

    impl<'de> Visitor<'de> for HeaderMap {
        type Value = Vec<(HeaderName, String)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of header names to values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(HeaderName, String)> = Vec::new();
            while let Some(name) = map.next_key::<String>()? {
                let value: String = map.next_value()?;
                push_header(&mut out, &name, value)?;
            }
            Ok(out)
        }
    }

    d.deserialize_map(HeaderMap)
}

/// A list of `"Name: value"` lines, APISIX's `checks.active.req_headers`.
pub(super) fn header_lines<'de, D>(d: D) -> Result<Vec<(HeaderName, String)>, D::Error>
where
    D: Deserializer<'de>,
{
    struct HeaderLines;

    impl<'de> Visitor<'de> for HeaderLines {
        type Value = Vec<(HeaderName, String)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of \"Name: value\" header lines")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(line) = seq.next_element::<String>()? {
                let Some((name, value)) = line.split_once(':') else {
                    return Err(de::Error::custom(format!(
                        "`{line}` is not a \"Name: value\" header line"
                    )));
                };
                push_header(&mut out, name.trim(), value.trim().to_owned())?;
            }
            Ok(out)
        }
    }

    d.deserialize_seq(HeaderLines)
}

/// A list of distinct HTTP methods among those APISIX accepts.
pub(super) fn methods<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Method>, D::Error> {
    struct Methods;

    impl<'de> Visitor<'de> for Methods {
        type Value = Vec<Method>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of HTTP methods")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<Method> = Vec::new();
            while let Some(ApisixMethod(method)) = seq.next_element()? {
                if out.contains(&method) {
                    return Err(de::Error::custom(format!(
                        "method {method} is listed twice"
                    )));
                }
                out.push(method);
            }
            Ok(out)
        }
    }

    d.deserialize_seq(Methods)
}

/// One HTTP method among those APISIX accepts, such as a probe's `http_method`.
pub(super) fn method<'de, D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
    ApisixMethod::deserialize(d).map(|m| m.0)
}

/// A status code read through [`int`].
struct Status<const MIN: i64, const MAX: i64>(u16);

/// An HTTP method from APISIX's list, in upper case.
struct ApisixMethod(Method);

/// Reads any YAML integer (or integral float) as `i64`.
struct IntVisitor;

/// Reads any YAML number as a finite `f64`.
struct NumberVisitor;

// === impl Status ===

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Status<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int::<D, u16, MIN, MAX>(d).map(Status)
    }
}

// === impl ApisixMethod ===

impl<'de> Deserialize<'de> for ApisixMethod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if !METHODS.contains(&name.as_str()) {
            let hint = if METHODS.contains(&name.to_ascii_uppercase().as_str()) {
                " (methods are written in upper case)"
            } else {
                ""
            };
            return Err(de::Error::custom(format!(
                "unknown method `{name}`{hint}, expected one of {}",
                METHODS.join(", ")
            )));
        }
        Method::from_bytes(name.as_bytes())
            .map(ApisixMethod)
            .map_err(|e| de::Error::custom(format!("method `{name}`: {e}")))
    }
}

// === impl IntVisitor ===

impl Visitor<'_> for IntVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // An integral float in i64's range converts exactly; anything else is not an integer.
        if v.fract() == 0.0 && v.abs() < 9.0e18 {
            Ok(v as i64)
        } else {
            Err(E::invalid_type(Unexpected::Float(v), &self))
        }
    }
}

// === impl NumberVisitor ===

impl Visitor<'_> for NumberVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of seconds, such as 5 or 0.5")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(E::custom(format!("{v} is not a finite number")))
        }
    }
}

/// Checks `value` against `min..=max` and converts it to `T`. A range whose
/// top is a type's limit reads better as a bare minimum or maximum.
fn in_range<E: de::Error, T: TryFrom<i64>>(value: i64, min: i64, max: i64) -> Result<T, E> {
    if value < min || value > max {
        return Err(E::custom(match (max >= U32_MAX, value < min) {
            (true, true) => format!("{value} is less than {min}"),
            (true, false) => format!("{value} is more than {max}"),
            (false, _) => format!("{value} is not in {min}..={max}"),
        }));
    }
    T::try_from(value).map_err(|_| E::custom(format!("{value} does not fit the field's type")))
}

/// Converts non-negative, finite seconds to a [`Duration`].
fn to_duration<E: de::Error>(secs: f64) -> Result<Duration, E> {
    Duration::try_from_secs_f64(secs).map_err(|_| E::custom(format!("{secs} seconds is too long")))
}

/// Validates one header name and value and appends it, refusing a repeated name.
fn push_header<E: de::Error>(
    out: &mut Vec<(HeaderName, String)>,
    name: &str,
    value: String,
) -> Result<(), E> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| E::custom(format!("`{name}` is not a valid header name")))?;
    if HeaderValue::from_str(&value).is_err() {
        return Err(E::custom(format!(
            "the value of header `{name}` is not a valid header value"
        )));
    }
    if out.iter().any(|(n, _)| *n == name) {
        return Err(E::custom(format!("header `{name}` is given twice")));
    }
    out.push((name, value));
    Ok(())
}
