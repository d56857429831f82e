//! A minimal protobuf writer and reader for the OTLP messages the exporter
//! sends and the answers it reads: fields written straight into one reused
//! buffer, nested messages by reserving the room their length is expected
//! to take and patching it after (no intermediate buffer, no size pass;
//! the body moves only when the guess was wrong).

use std::fmt::{self, Write as _};

use bytes::{BufMut, BytesMut};

const VARINT: u32 = 0;
const I64: u32 = 1;
const LEN: u32 = 2;
const I32: u32 = 5;

/// Writes protobuf fields into a buffer.
pub(crate) struct Writer<'a>(pub(crate) &'a mut BytesMut);

impl Writer<'_> {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.put_u8(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from((field << 3) | wire));
    }

    pub(crate) fn uint(&mut self, field: u32, v: u64) {
        self.key(field, VARINT);
        self.varint(v);
    }

    pub(crate) fn int(&mut self, field: u32, v: i64) {
        self.uint(field, v as u64);
    }

    pub(crate) fn bool(&mut self, field: u32, v: bool) {
        self.uint(field, u64::from(v));
    }

    pub(crate) fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, I64);
        self.0.put_u64_le(v);
    }

    pub(crate) fn fixed32(&mut self, field: u32, v: u32) {
        self.key(field, I32);
        self.0.put_u32_le(v);
    }

    pub(crate) fn double(&mut self, field: u32, v: f64) {
        self.fixed64(field, v.to_bits());
    }

    pub(crate) fn bytes(&mut self, field: u32, v: &[u8]) {
        self.key(field, LEN);
        self.varint(v.len() as u64);
        self.0.put_slice(v);
    }

    pub(crate) fn str(&mut self, field: u32, v: &str) {
        self.bytes(field, v.as_bytes());
    }

    /// A string field made of `parts`, concatenated.
    pub(crate) fn concat(&mut self, field: u32, parts: &[&[u8]]) {
        self.key(field, LEN);
        self.varint(parts.iter().map(|p| p.len() as u64).sum());
        for p in parts {
            self.0.put_slice(p);
        }
    }

    /// A `KeyValue` with a string value, as field `field`; its lengths
    /// are known up front, so nothing is reserved or moved.
    pub(crate) fn kv_str(&mut self, field: u32, key: &str, v: &[u8]) {
        let any = 1 + varint_len(v.len() as u64) + v.len();
        self.kv_head(field, key, any);
        self.bytes(1, v);
    }

    /// A `KeyValue` with an integer value.
    pub(crate) fn kv_int(&mut self, field: u32, key: &str, v: i64) {
        self.kv_head(field, key, 1 + varint_len(v as u64));
        self.uint(3, v as u64);
    }

    /// A `KeyValue` with a boolean value.
    pub(crate) fn kv_bool(&mut self, field: u32, key: &str, v: bool) {
        self.kv_head(field, key, 2);
        self.bool(2, v);
    }

    /// A `KeyValue`'s tag and length, its key, and the head of its
    /// `AnyValue` of `any` bytes, which the caller writes next.
    fn kv_head(&mut self, field: u32, key: &str, any: usize) {
        let kv = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any as u64) + any;
        self.key(field, LEN);
        self.varint(kv as u64);
        self.str(1, key);
        self.key(2, LEN);
        self.varint(any as u64);
    }

    /// A string field formatted in place.
    pub(crate) fn fmt(&mut self, field: u32, args: fmt::Arguments<'_>) {
        self.message(field, |w| {
            let _ = w.write_fmt(args);
        });
    }

    /// A nested message (or any length-delimited field) written by `f`,
    /// expected to be shorter than 128 bytes (attributes, mostly).
    pub(crate) fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer<'_>)) {
        self.message_sized(field, 1, f);
    }

    /// A nested message whose length is expected to take `guess` varint
    /// bytes: that much room is reserved before `f` writes, and the body is
    /// moved only when the guess was wrong.
    pub(crate) fn message_sized(
        &mut self,
        field: u32,
        guess: usize,
        f: impl FnOnce(&mut Writer<'_>),
    ) {
        self.key(field, LEN);
        let at = self.0.len();
        for _ in 0..guess {
            self.0.put_u8(0);
        }
        f(&mut Writer(&mut *self.0));
        let len = self.0.len() - at - guess;
        let need = varint_len(len as u64);
        if need != guess {
            let end = self.0.len();
            if need > guess {
                self.0.put_bytes(0, need - guess);
            }
            self.0.copy_within(at + guess..end, at + need);
            self.0.truncate(end - guess + need);
        }
        let mut v = len as u64;
        for b in &mut self.0[at..at + need] {
            *b = (v as u8) | 0x80;
            v >>= 7;
        }
        self.0[at + need - 1] &= 0x7f;
    }
}

fn varint_len(v: u64) -> usize {
    // 1 + floor(bits / 7), with 0 taking one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// One field read from a message.
pub(crate) enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed-width field (its value is not needed).
    Fixed,
}

/// Reads the fields of one message, in order; `Err` on malformed input.
pub(crate) fn fields(mut buf: &[u8]) -> impl Iterator<Item = Result<(u32, Field<'_>), ()>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let mut next = || -> Result<(u32, Field<'_>), ()> {
            let key = read_varint(&mut buf)?;
            let field = u32::try_from(key >> 3).map_err(|_| ())?;
            let value = match (key & 7) as u32 {
                VARINT => Field::Varint(read_varint(&mut buf)?),
                I64 | I32 => {
                    let n = if key & 7 == u64::from(I64) { 8 } else { 4 };
                    buf = buf.get(n..).ok_or(())?;
                    Field::Fixed
                }
                LEN => {
                    let n = usize::try_from(read_varint(&mut buf)?).map_err(|_| ())?;
                    let (v, rest) = (buf.get(..n).ok_or(())?, buf.get(n..).ok_or(())?);
                    buf = rest;
                    Field::Bytes(v)
                }
                _ => return Err(()),
            };
            Ok((field, value))
        };
        let item = next();
        if item.is_err() {
            buf = &[];
        }
        Some(item)
    })
}

fn read_varint(buf: &mut &[u8]) -> Result<u64, ()> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(())?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_match_their_nested_form() {
        for key in ["k", "http.response.status_code", &"x".repeat(200)] {
            for v in [0i64, 1, 300, -1] {
                let (mut fast, mut slow) = (BytesMut::new(), BytesMut::new());
                Writer(&mut fast).kv_int(9, key, v);
                Writer(&mut slow).message(9, |w| {
                    w.str(1, key);
                    w.message(2, |w| w.int(3, v));
                });
                assert_eq!(fast, slow, "{key} = {v}");
            }
            for v in [&b""[..], b"GET", &[b'a'; 200]] {
                let (mut fast, mut slow) = (BytesMut::new(), BytesMut::new());
                Writer(&mut fast).kv_str(9, key, v);
                Writer(&mut slow).message(9, |w| {
                    w.str(1, key);
                    w.message(2, |w| w.bytes(1, v));
                });
                assert_eq!(fast, slow, "{key} = {} bytes", v.len());
            }
            let (mut fast, mut slow) = (BytesMut::new(), BytesMut::new());
            Writer(&mut fast).kv_bool(9, key, true);
            Writer(&mut slow).message(9, |w| {
                w.str(1, key);
                w.message(2, |w| w.bool(2, true));
            });
            assert_eq!(fast, slow, "{key} = true");
        }
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
        }
    }

    #[test]
    fn nested_lengths_are_patched_and_read_back() {
        for len in [0usize, 1, 127, 128, 300, 20_000] {
            let mut buf = BytesMut::new();
            let mut w = Writer(&mut buf);
            w.uint(1, 150);
            w.message(2, |w| {
                w.bytes(1, &vec![7u8; len]);
            });
            w.fmt(3, format_args!("{}-{}", "a", 1));
            w.message_sized(4, 3, |w| w.uint(1, len as u64));
            let got: Vec<_> = fields(&buf).collect::<Result<_, _>>().expect("well formed");
            assert!(matches!(got[0], (1, Field::Varint(150))));
            let (2, Field::Bytes(inner)) = got[1] else {
                panic!("field 2")
            };
            let inner: Vec<_> = fields(inner).collect::<Result<_, _>>().expect("inner");
            assert!(matches!(inner[0], (1, Field::Bytes(b)) if b.len() == len));
            assert!(matches!(got[2], (3, Field::Bytes(b"a-1"))));
            let (4, Field::Bytes(last)) = got[3] else {
                panic!("field 4")
            };
            assert!(
                matches!(fields(last).next(), Some(Ok((1, Field::Varint(n)))) if n == len as u64)
            );
        }
        assert!(fields(&[0x0a, 5, 1]).any(|f| f.is_err()));
    }
}
