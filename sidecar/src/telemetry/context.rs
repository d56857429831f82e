//! W3C trace context by hand: trace and span ids, `traceparent` parsed and
//! written as the Trace Context spec says, and the samplers that
//! `OTEL_TRACES_SAMPLER` names. Ids come from the thread's fast generator:
//! no lock, no syscall.

use std::fmt;

use http::HeaderValue;

use super::otel::SamplerChoice;
use crate::balance::with_thread_rng;

/// A trace id: 16 bytes, never all zero. Kept as bytes: a `u128` would
/// make every future that holds one 16-byte aligned, which costs the
/// request path copies even with traces off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceId([u8; 16]);

/// A span id: 8 bytes, never all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpanId(pub(crate) u64);

/// The remote parent a request's `traceparent` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parent {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) sampled: bool,
}

// === impl TraceId / SpanId ===

impl TraceId {
    /// A new random id.
    pub(crate) fn random() -> Self {
        with_thread_rng(|r| {
            let id = (u128::from(r.next_u64()) << 64) | u128::from(r.next_u64());
            Self::from_u128(id.max(1))
        })
    }

    pub(crate) fn from_u128(id: u128) -> Self {
        Self(id.to_be_bytes())
    }

    pub(crate) fn to_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    pub(crate) fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// A new random id.
    pub(crate) fn random() -> Self {
        with_thread_rng(|r| Self(r.next_u64().max(1)))
    }

    pub(crate) fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.to_u128())
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

// === traceparent ===

/// Parses a `traceparent` value: `VV-<32 hex>-<16 hex>-<2 hex>`, lowercase
/// hex, non-zero ids. Version `00` must be exactly that long; a later
/// version may append `-…` fields, which are ignored (the spec's forward
/// compatibility); version `ff` is invalid. `None` when invalid: the request
/// then starts a new trace.
pub(crate) fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_u8(&v[0..2])?;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace_id = (u128::from(hex_u64(&v[3..19])?) << 64) | u128::from(hex_u64(&v[19..35])?);
    let span_id = hex_u64(&v[36..52])?;
    let flags = hex_u8(&v[53..55])?;
    (trace_id != 0 && span_id != 0).then_some(Parent {
        trace_id: TraceId::from_u128(trace_id),
        span_id: SpanId(span_id),
        sampled: flags & 1 == 1,
    })
}

/// The `traceparent` of a span: version 00, sampled flag only.
pub(crate) fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> HeaderValue {
    HeaderValue::from_bytes(&traceparent_bytes(trace_id, span_id, sampled))
        .expect("hex digits and dashes are a valid header value")
}

/// A span's `traceparent` field as a line of an HTTP/1.1 request head
/// (`traceparent: …\r\n`), formatted on the stack.
pub(crate) struct TraceparentLine([u8; TRACEPARENT_LINE]);

const TRACEPARENT_LINE: usize = b"traceparent: ".len() + 55 + 2;

impl TraceparentLine {
    pub(crate) fn new(trace_id: TraceId, span_id: SpanId, sampled: bool) -> Self {
        let mut out = [0; TRACEPARENT_LINE];
        out[..13].copy_from_slice(b"traceparent: ");
        out[13..68].copy_from_slice(&traceparent_bytes(trace_id, span_id, sampled));
        out[68..].copy_from_slice(b"\r\n");
        Self(out)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn traceparent_bytes(trace_id: TraceId, span_id: SpanId, sampled: bool) -> [u8; 55] {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let id = trace_id.to_u128();
    out[3..19].copy_from_slice(&hex16((id >> 64) as u64));
    out[19..35].copy_from_slice(&hex16(id as u64));
    out[36..52].copy_from_slice(&hex16(span_id.0));
    if sampled {
        out[54] = b'1';
    }
    out
}

/// `v` as 16 lowercase hex digits, most significant first. Eight digits
/// at a time in a `u64` (a nibble per byte, then each nibble to its
/// character) rather than a table lookup per digit: this runs for every
/// traced request's upstream attempt.
fn hex16(v: u64) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&hex8((v >> 32) as u32));
    out[8..].copy_from_slice(&hex8(v as u32));
    out
}

fn hex8(v: u32) -> [u8; 8] {
    // Each nibble of `v` into a byte of its own, the most significant
    // nibble in the most significant byte.
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in each byte whose nibble is 10 or more: those become 'a'..'f'
    // (39 past where '0' + nibble would land).
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn hex_u8(s: &[u8]) -> Option<u8> {
    Some((hex_digit(s[0])? << 4) | hex_digit(s[1])?)
}

fn hex_u64(s: &[u8]) -> Option<u64> {
    s.iter()
        .try_fold(0u64, |acc, &b| Some((acc << 4) | u64::from(hex_digit(b)?)))
}

// === impl SamplerChoice ===

impl SamplerChoice {
    /// Whether a span of `trace_id` is sampled, given its remote parent.
    /// The parent-based samplers follow a parent's sampled flag; the ratio
    /// compares the trace id's last 8 bytes (shifted right by one) with
    /// `ratio × 2^63`, as the OpenTelemetry SDKs do, so every service with
    /// the same ratio makes the same decision for a trace.
    pub(crate) fn sample(self, parent: Option<&Parent>, trace_id: TraceId) -> bool {
        match (self, parent) {
            (Self::AlwaysOn, _) | (Self::ParentOn, None) => true,
            (Self::AlwaysOff, _) | (Self::ParentOff, None) => false,
            (Self::Ratio(r), _) | (Self::ParentRatio(r), None) => by_ratio(r, trace_id),
            (Self::ParentOn | Self::ParentOff | Self::ParentRatio(_), Some(p)) => p.sampled,
        }
    }
}

fn by_ratio(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    ((trace_id.to_u128() as u64) >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn hex_digits_match_the_formatter() {
        for v in [
            0,
            1,
            0x9,
            0xa,
            0xf,
            0x10,
            0x0123_4567_89ab_cdef,
            u64::MAX,
            0xfedc_ba98_7654_3210,
        ] {
            assert_eq!(hex16(v), *format!("{v:016x}").as_bytes(), "{v:#x}");
        }
        let mut v = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..1000 {
            v = v.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            assert_eq!(hex16(v), *format!("{v:016x}").as_bytes(), "{v:#x}");
        }
    }

    #[test]
    fn traceparent_round_trips() {
        let p = parse_traceparent(GOOD.as_bytes()).expect("valid");
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_string(), "00f067aa0ba902b7");
        assert!(p.sampled);
        assert_eq!(traceparent(p.trace_id, p.span_id, true), GOOD);
        assert_eq!(
            TraceparentLine::new(p.trace_id, p.span_id, true).as_bytes(),
            format!("traceparent: {GOOD}\r\n").as_bytes()
        );
        let unsampled = traceparent(p.trace_id, p.span_id, false);
        assert_eq!(&unsampled.as_bytes()[53..], b"00");
        assert!(!parse_traceparent(unsampled.as_bytes()).unwrap().sampled);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for b in bad {
            assert_eq!(parse_traceparent(b.as_bytes()), None, "{b:?}");
        }
    }

    #[test]
    fn future_versions_keep_the_known_fields() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes";
        let p = parse_traceparent(v.as_bytes()).expect("forward compatible");
        assert!(p.sampled);
        assert!(parse_traceparent(&v.as_bytes()[..55]).is_some());
    }

    #[test]
    fn random_ids_are_never_zero_and_differ() {
        let (a, b) = (TraceId::random(), TraceId::random());
        assert!(a.to_u128() != 0 && a != b);
        assert_ne!(SpanId::random().0, 0);
    }

    #[test]
    fn samplers_follow_their_names() {
        let id = |low: u64| TraceId::from_u128(u128::from(low));
        let parent = |sampled| Parent {
            trace_id: id(1),
            span_id: SpanId(1),
            sampled,
        };
        assert!(SamplerChoice::AlwaysOn.sample(Some(&parent(false)), id(0)));
        assert!(!SamplerChoice::AlwaysOff.sample(Some(&parent(true)), id(0)));
        assert!(SamplerChoice::ParentOn.sample(None, id(u64::MAX)));
        assert!(!SamplerChoice::ParentOn.sample(Some(&parent(false)), id(0)));
        assert!(SamplerChoice::ParentOff.sample(Some(&parent(true)), id(0)));
        assert!(!SamplerChoice::ParentOff.sample(None, id(0)));
        // Ratio 0.25: the trace id's low 63 bits below 2^61 are sampled.
        let r = SamplerChoice::Ratio(0.25);
        assert!(r.sample(None, id((1 << 62) - 2)));
        assert!(!r.sample(None, id(1 << 62)));
        assert!(r.sample(Some(&parent(false)), id(0)));
        let pr = SamplerChoice::ParentRatio(0.25);
        assert!(!pr.sample(None, id(u64::MAX)));
        assert!(pr.sample(Some(&parent(true)), id(u64::MAX)));
        assert!(!SamplerChoice::Ratio(0.0).sample(None, id(0)));
        // About a quarter of random traces.
        let n = (0..10_000)
            .filter(|_| r.sample(None, TraceId::random()))
            .count();
        assert!((2_000..3_000).contains(&n), "{n} of 10000");
    }
}
