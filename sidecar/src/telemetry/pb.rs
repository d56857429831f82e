//! A minimal protobuf writer and reader for the OTLP messages the exporter
//! sends and the answers it reads: fields written straight into one reused
//! buffer, nested messages by reserving room for their length and patching
//! it after (no intermediate allocation, no size pass).

use std::fmt::{self, Write as _};

use bytes::{BufMut, BytesMut};

const VARINT: u32 = 0;
const I64: u32 = 1;
const LEN: u32 = 2;
const I32: u32 = 5;

/// Room reserved for a nested message's length: five varint bytes cover
/// lengths below 2^35.
const LEN_ROOM: usize = 5;

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

    /// A string field formatted in place.
    pub(crate) fn fmt(&mut self, field: u32, args: fmt::Arguments<'_>) {
        self.message(field, |w| {
            let _ = w.write_fmt(args);
        });
    }

    /// A nested message (or any length-delimited field) written by `f`.
    pub(crate) fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer<'_>)) {
        self.key(field, LEN);
        let at = self.0.len();
        self.0.put_bytes(0, LEN_ROOM);
        f(&mut Writer(&mut *self.0));
        let len = self.0.len() - at - LEN_ROOM;
        let mut head = [0u8; LEN_ROOM];
        let mut n = 0;
        let mut v = len as u64;
        while v >= 0x80 {
            head[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        head[n] = v as u8;
        n += 1;
        self.0[at..at + n].copy_from_slice(&head[..n]);
        if n < LEN_ROOM {
            self.0.copy_within(at + LEN_ROOM.., at + n);
            self.0.truncate(self.0.len() - (LEN_ROOM - n));
        }
    }
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
    fn nested_lengths_are_patched_and_read_back() {
        for len in [0usize, 1, 127, 128, 300, 20_000] {
            let mut buf = BytesMut::new();
            let mut w = Writer(&mut buf);
            w.uint(1, 150);
            w.message(2, |w| {
                w.bytes(1, &vec![7u8; len]);
            });
            w.fmt(3, format_args!("{}-{}", "a", 1));
            let got: Vec<_> = fields(&buf).collect::<Result<_, _>>().expect("well formed");
            assert!(matches!(got[0], (1, Field::Varint(150))));
            let (2, Field::Bytes(inner)) = got[1] else {
                panic!("field 2")
            };
            let inner: Vec<_> = fields(inner).collect::<Result<_, _>>().expect("inner");
            assert!(matches!(inner[0], (1, Field::Bytes(b)) if b.len() == len));
            assert!(matches!(got[2], (3, Field::Bytes(b"a-1"))));
        }
        assert!(fields(&[0x0a, 5, 1]).any(|f| f.is_err()));
    }
}
